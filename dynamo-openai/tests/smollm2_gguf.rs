//! The real model's preprocessing: SmolLM2-135M-Instruct's tokenizer and chat template, read
//! from its GGUF file (fetched once into the cache by `dynamo-assets`).

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::sync::OnceLock;

use dynamo_core::{BoxEngine, EchoEngine};
use dynamo_openai::{GgufMetadata, GgufValue, ModelEntry};

fn model() -> &'static ModelEntry {
    static MODEL: OnceLock<ModelEntry> = OnceLock::new();
    MODEL.get_or_init(|| {
        let cache = dynamo_assets::cache_dir().unwrap();
        let path = dynamo_assets::SMOLLM2_135M_INSTRUCT.fetch(&cache).unwrap();
        let metadata = GgufMetadata::open(path).unwrap();
        assert_eq!(
            metadata
                .get("general.architecture")
                .and_then(GgufValue::as_str),
            Some("llama")
        );
        ModelEntry::from_gguf("smollm2", BoxEngine::new(EchoEngine::new()), &metadata).unwrap()
    })
}

#[test]
fn the_gguf_tokenizer_round_trips_and_knows_the_special_tokens() {
    let tokenizer = model().tokenizer();
    assert_eq!(tokenizer.vocab_size(), 49152);
    let im_start = tokenizer.token_to_id("<|im_start|>").unwrap();
    let im_end = tokenizer.token_to_id("<|im_end|>").unwrap();
    assert_eq!(tokenizer.encode("<|im_start|>user").unwrap()[0], im_start);
    assert!(tokenizer.eos_token_ids().contains(&im_end));
    for text in [
        "What is the capital of France?",
        "  naïve café 🦀\n\tend",
        "x = 12345;",
    ] {
        let ids = tokenizer.encode(text).unwrap();
        assert_eq!(tokenizer.decode(&ids, false).unwrap(), text);
    }
    // Digits are split one by one.
    let digits = tokenizer.encode("12345").unwrap();
    assert_eq!(digits.len(), 5);
    // Special tokens are left out of answers.
    let ids = tokenizer.encode("Paris.<|im_end|>").unwrap();
    assert_eq!(tokenizer.decode(&ids, true).unwrap(), "Paris.");
}

#[test]
fn the_gguf_chat_template_renders_chatml_with_the_default_system_prompt() {
    let template = model().chat_template().unwrap();
    let messages =
        [serde_json::json!({"role": "user", "content": "What is the capital of France?"})];
    let prompt = template.render(&messages, None, true).unwrap();
    assert!(prompt.starts_with("<|im_start|>system\n"), "{prompt}");
    assert!(
        prompt.ends_with(
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        ),
        "{prompt}"
    );
}
