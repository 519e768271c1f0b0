//! Writes the starting corpus of every target into `corpus/<target>/`, built from our own
//! types so that the fuzzer starts from what the network carries.
//!
//! `cargo +nightly fuzz build -s none -a seeds && target/x86_64-unknown-linux-gnu/release/seeds`
//! (from `fuzz/`); then `cargo fuzz cmin <target>` keeps it small.

use std::path::Path;

// Links libFuzzer's runtime, which the instrumented dependencies call into.
use libfuzzer_sys as _;

use dynamo_core::{
    BlockHasher, BlockSize, GenerateRequest, KvEvent, KvEventData, ResyncRequest, StorageTier,
    WorkerId,
};
use dynamo_transport::discovery::WorkerRecord;
use dynamo_transport::events::LoadReport;
use dynamo_transport::tcp::{ErrorBody, Frame};
use rmpv::Value;

type Seeds = Vec<(&'static str, Vec<u8>)>;

fn main() -> std::io::Result<()> {
    for (target, seeds) in [
        ("request_frame", request_frame()),
        ("engine_events", engine_events()),
        ("nats_payload", nats_payload()),
        ("discovery_record", discovery_record()),
        ("openai_request", openai_request()),
        ("gguf_metadata", gguf_metadata()),
    ] {
        let directory = Path::new("corpus").join(target);
        std::fs::create_dir_all(&directory)?;
        for (name, bytes) in seeds {
            std::fs::write(directory.join(format!("seed-{name}")), bytes)?;
        }
    }
    Ok(())
}

fn json(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn framed(frame: &Frame) -> Vec<u8> {
    let body = json(frame);
    let mut bytes = u32::try_from(body.len())
        .unwrap_or(0)
        .to_be_bytes()
        .to_vec();
    bytes.extend(body);
    bytes
}

fn request_frame() -> Seeds {
    let request = GenerateRequest::new("r1", "smollm2", vec![1, 2, 3, 4]);
    let request = Frame::Request {
        stream: 1,
        request: Box::new(request),
    };
    let cancel = Frame::Cancel { stream: 1 };
    let error = Frame::Error {
        stream: 2,
        error: ErrorBody::from(&dynamo_core::Error::invalid_request("bad")),
    };
    let chunk = br#"{"type":"chunk","stream":1,"chunk":{"tokens":[5,6],"text":"hi","finish_reason":"length"}}"#;
    let mut chunk_frame = u32::try_from(chunk.len())
        .unwrap_or(0)
        .to_be_bytes()
        .to_vec();
    chunk_frame.extend(chunk);
    let mut all = framed(&request);
    all.extend(framed(&cancel));
    all.extend(framed(&error));
    vec![
        ("request", framed(&request)),
        ("cancel", framed(&cancel)),
        ("error", framed(&error)),
        ("chunk", chunk_frame),
        ("all", all),
    ]
}

fn msgpack(value: &Value) -> Vec<u8> {
    let mut bytes = Vec::new();
    let _ = rmpv::encode::write_value(&mut bytes, value);
    bytes
}

/// One engine-event message in the target's input layout.
fn message(sequence: i64, payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![3];
    bytes.extend(sequence.to_be_bytes());
    bytes.extend(u16::try_from(payload.len()).unwrap_or(0).to_le_bytes());
    bytes.extend(payload);
    bytes
}

fn engine_events() -> Seeds {
    let ints = |values: &[u64]| Value::Array(values.iter().map(|&v| Value::from(v)).collect());
    let stored = Value::Array(vec![
        "BlockStored".into(),
        ints(&[11, 12]),
        Value::Nil,
        ints(&[1, 2, 3, 4, 5, 6, 7, 8]),
        4.into(),
        Value::Nil,
        "GPU".into(),
    ]);
    let child = Value::Array(vec![
        "BlockStored".into(),
        Value::Array(vec![Value::Binary(vec![1, 2, 3])]),
        12.into(),
        ints(&[9, 10, 11, 12]),
        4.into(),
        3.into(),
        Value::Nil,
    ]);
    let removed = Value::Array(vec!["BlockRemoved".into(), ints(&[12, 11]), Value::Nil]);
    let cleared = Value::Array(vec!["AllBlocksCleared".into()]);
    let batch = |events: Vec<Value>| {
        msgpack(&Value::Array(vec![
            Value::F64(1.5),
            Value::Array(events),
            0.into(),
        ]))
    };
    // Block size byte 3: blocks of 4 tokens.
    let mut store_then_remove = vec![3];
    store_then_remove.extend(message(0, &batch(vec![stored.clone(), child])));
    store_then_remove.extend(message(1, &batch(vec![removed])));
    store_then_remove.extend(message(5, &batch(vec![cleared])));
    let mut single = vec![3];
    single.extend(message(0, &batch(vec![stored])));
    vec![("store-remove-clear", store_then_remove), ("store", single)]
}

fn nats_payload() -> Seeds {
    let block_size = BlockSize::new(4).unwrap_or_else(|_| unreachable!());
    let blocks = BlockHasher::new(block_size).hash_blocks(&[1, 2, 3, 4, 5, 6, 7, 8]);
    let removed = blocks.iter().map(|block| block.sequence).collect();
    let event = |event_id, data| KvEvent {
        worker: WorkerId::new(3),
        event_id,
        tier: StorageTier::Device,
        data,
    };
    let stored = event(
        0,
        KvEventData::Stored {
            parent: None,
            block_size,
            blocks,
        },
    );
    let removed = event(1, KvEventData::Removed { blocks: removed });
    let cleared = event(2, KvEventData::Cleared);
    let topic = |byte: u8, body: Vec<u8>| {
        let mut bytes = vec![byte];
        bytes.extend(body);
        bytes
    };
    let load = LoadReport {
        worker: WorkerId::new(3),
        active_requests: 2,
        waiting_requests: 1,
        kv_blocks_in_use: 10,
        kv_blocks_total: 100,
        preemptions: 0,
    };
    let resync = ResyncRequest {
        worker: WorkerId::new(3),
        expected: 4,
        received: 9,
    };
    vec![
        ("stored", topic(0, json(&stored))),
        ("removed", topic(0, json(&removed))),
        ("cleared", topic(0, json(&cleared))),
        ("load", topic(1, json(&load))),
        ("resync", topic(2, json(&resync))),
    ]
}

fn discovery_record() -> Seeds {
    let record = WorkerRecord {
        id: WorkerId::new(1),
        address: "127.0.0.1:9000".into(),
        model: "smollm2".into(),
        block_size: 16,
        role: dynamo_core::WorkerRole::Aggregated,
        kv_layout: None,
    };
    let prefill = br#"{"id":2,"address":"10.0.0.2:9000","model":"m","block_size":16,"role":"prefill","kv_layout":{"model":"m","block_size":16,"layers":30,"kv_heads":3,"head_dim":64,"dtype":"bf16"}}"#;
    vec![("aggregated", json(&record)), ("prefill", prefill.to_vec())]
}

fn openai_request() -> Seeds {
    let body = |route: u8, text: &str| {
        let mut bytes = vec![route];
        bytes.extend(text.as_bytes());
        bytes
    };
    vec![
        (
            "chat",
            body(
                0,
                r#"{"model":"test","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],"max_tokens":4,"temperature":0.5,"stop":["x"]}"#,
            ),
        ),
        (
            "chat-stream",
            body(
                0,
                r#"{"model":"test","messages":[{"role":"user","content":[{"type":"text","text":"Hi"}]}],"stream":true,"stream_options":{"include_usage":true},"logprobs":true,"top_logprobs":2}"#,
            ),
        ),
        (
            "chat-tools",
            body(
                0,
                r#"{"model":"test","messages":[{"role":"user","content":"w"},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c1","content":"ok"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"tool_choice":"auto"}"#,
            ),
        ),
        (
            "chat-json",
            body(
                0,
                r#"{"model":"test","messages":[{"role":"user","content":"j"}],"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"type":"object","properties":{"a":{"type":"integer"}}}}},"max_completion_tokens":6}"#,
            ),
        ),
        (
            "completion",
            body(
                1,
                r#"{"model":"test","prompt":"Once","max_tokens":3,"n":1,"echo":true,"logprobs":1,"seed":7,"top_p":0.9,"top_k":5,"min_tokens":1}"#,
            ),
        ),
        (
            "completion-tokens",
            body(1, r#"{"model":"test","prompt":[72,105],"stream":true}"#),
        ),
        (
            "tokenize",
            body(
                2,
                r#"{"model":"test","prompt":"Hello","add_special_tokens":true}"#,
            ),
        ),
        (
            "tokenize-chat",
            body(
                2,
                r#"{"model":"test","messages":[{"role":"user","content":"Hi"}]}"#,
            ),
        ),
        (
            "detokenize",
            body(3, r#"{"model":"test","tokens":[72,105]}"#),
        ),
    ]
}

fn gguf_string(bytes: &mut Vec<u8>, text: &str) {
    bytes.extend((text.len() as u64).to_le_bytes());
    bytes.extend(text.as_bytes());
}

fn gguf_metadata() -> Seeds {
    let mut entries: Vec<Vec<u8>> = Vec::new();
    let mut entry = |key: &str, tag: u32, value: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = Vec::new();
        gguf_string(&mut bytes, key);
        bytes.extend(tag.to_le_bytes());
        value(&mut bytes);
        entries.push(bytes);
    };
    let strings = |items: &'static [&'static str]| {
        move |bytes: &mut Vec<u8>| {
            bytes.extend(8u32.to_le_bytes());
            bytes.extend((items.len() as u64).to_le_bytes());
            for item in items {
                gguf_string(bytes, item);
            }
        }
    };
    entry("general.architecture", 8, &|b| gguf_string(b, "llama"));
    entry("llama.context_length", 4, &|b| {
        b.extend(64u32.to_le_bytes())
    });
    entry("tokenizer.ggml.model", 8, &|b| gguf_string(b, "gpt2"));
    entry("tokenizer.ggml.pre", 8, &|b| gguf_string(b, "smollm"));
    entry(
        "tokenizer.ggml.tokens",
        9,
        &strings(&[
            "<|im_start|>",
            "<|im_end|>",
            "H",
            "e",
            "l",
            "o",
            "He",
            "ll",
            "Ġ",
            "1",
        ]),
    );
    entry("tokenizer.ggml.merges", 9, &strings(&["H e", "l l"]));
    entry("tokenizer.ggml.token_type", 9, &|b| {
        b.extend(5u32.to_le_bytes());
        b.extend(10u64.to_le_bytes());
        for kind in [3i32, 3, 1, 1, 1, 1, 1, 1, 1, 1] {
            b.extend(kind.to_le_bytes());
        }
    });
    entry("tokenizer.ggml.bos_token_id", 4, &|b| {
        b.extend(0u32.to_le_bytes())
    });
    entry("tokenizer.ggml.eos_token_id", 4, &|b| {
        b.extend(1u32.to_le_bytes())
    });
    entry("tokenizer.chat_template", 8, &|b| {
        gguf_string(
            b,
            "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        )
    });
    entry("x.flag", 7, &|b| b.push(1));
    entry("x.float", 12, &|b| b.extend(1.5f64.to_le_bytes()));
    let mut file = b"GGUF".to_vec();
    file.extend(3u32.to_le_bytes());
    file.extend(0u64.to_le_bytes());
    file.extend((entries.len() as u64).to_le_bytes());
    for entry in &entries {
        file.extend(entry);
    }
    let mut header_only = b"GGUF".to_vec();
    header_only.extend(2u32.to_le_bytes());
    header_only.extend([0; 16]);
    vec![("tokenizer", file), ("empty", header_only)]
}
