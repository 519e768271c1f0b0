//! The bytes of every token of the model, read from the GGUF tokenizer metadata, for the
//! grammar engine.

use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use serde_json::json;

/// GGUF's token type of control tokens (`<|im_end|>`, say): never text, so grammars never
/// allow them.
const CONTROL: i64 = 3;

/// The bytes each token id stands for; control tokens carry llguidance's special-token marker
/// byte (`0xFF`) first, so no grammar matches them as text.
pub(crate) type TokenBytes = Arc<[Vec<u8>]>;

/// The token bytes of a model, or why there are none (kept with the weights).
#[derive(Clone)]
pub(crate) struct Vocabulary(pub(crate) Result<TokenBytes, String>);

impl std::fmt::Debug for Vocabulary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Ok(bytes) => write!(f, "Vocabulary({} tokens)", bytes.len()),
            Err(reason) => write!(f, "Vocabulary(none: {reason})"),
        }
    }
}

/// The token bytes of a GGUF file's tokenizer, or why there are none.
///
/// The GGUF keys are turned into the `tokenizer.json` shape that llguidance reads
/// ([`llguidance::token_bytes_from_tokenizer_json`]): byte-level BPE (`gpt2`, SmolLM2's) maps
/// each character back to its byte, SentencePiece (`llama`) reads `<0xNN>` byte tokens and `▁`
/// as a space.
pub(crate) fn from_gguf(content: &Content) -> Result<TokenBytes, String> {
    let strings = |key: &str| -> Result<Vec<String>, String> {
        match content.metadata.get(key) {
            Some(Value::Array(values)) => values
                .iter()
                .map(|value| value.to_string().cloned().map_err(|e| e.to_string()))
                .collect(),
            _ => Err(format!("the GGUF metadata lacks {key}")),
        }
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let kinds: Vec<i64> = match content.metadata.get("tokenizer.ggml.token_type") {
        Some(Value::Array(values)) => values.iter().map(as_i64).collect(),
        _ => Vec::new(),
    };
    let model = content
        .metadata
        .get("tokenizer.ggml.model")
        .and_then(|value| value.to_string().ok())
        .map_or("gpt2", String::as_str);
    let decoder = match model {
        "gpt2" => json!({"type": "ByteLevel"}),
        "llama" => json!({"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
            {"type": "ByteFallback"},
        ]}),
        other => return Err(format!("tokenizer model `{other}` is not supported")),
    };
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (id, token) in tokens.iter().enumerate() {
        if kinds.get(id) == Some(&CONTROL) {
            added.push(json!({"id": id, "content": token, "special": true}));
        } else {
            vocab.insert(token.clone(), json!(id));
        }
    }
    let tokenizer = json!({"decoder": decoder, "added_tokens": added, "model": {"vocab": vocab}});
    // llguidance asserts on malformed byte tokens; a bad file is an error, not a crash.
    let read = std::panic::catch_unwind(|| llguidance::token_bytes_from_tokenizer_json(&tokenizer));
    let mut bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) => return Err(error.to_string()),
        Err(_) => return Err("malformed tokenizer tokens".to_owned()),
    };
    bytes.resize(tokens.len().max(bytes.len()), Vec::new());
    Ok(bytes.into())
}

fn as_i64(value: &Value) -> i64 {
    match value {
        Value::I32(v) => i64::from(*v),
        Value::U32(v) => i64::from(*v),
        Value::I64(v) => *v,
        Value::U8(v) => i64::from(*v),
        Value::I8(v) => i64::from(*v),
        Value::U16(v) => i64::from(*v),
        Value::I16(v) => i64::from(*v),
        _ => 0,
    }
}
