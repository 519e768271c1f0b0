#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dynamo_fuzz::transport::engine_events(data));
