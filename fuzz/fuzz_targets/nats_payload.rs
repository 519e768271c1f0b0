#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dynamo_fuzz::transport::nats_payload(data));
