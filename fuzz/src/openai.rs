//! Harnesses for the decoders of `dynamo-openai`: the OpenAI request bodies, through the
//! gateway's own routes, and the GGUF metadata reader with what a model entry builds from it.
//!
//! Errors are fine; a panic, a hang, or a 500 for a request body (bad input must get a 4xx
//! that says what is wrong) is a bug. The same functions replay the corpus in
//! `dynamo-openai/tests/fuzz_corpus.rs`.

use std::cell::RefCell;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use dynamo_core::{BoxEngine, EchoEngine};
use dynamo_openai::{
    ChatTemplate, Gateway, GatewayConfig, GgufMetadata, ModelEntry, ModelRegistry, Tokenizer,
};
use tower::ServiceExt;

/// ChatML, as SmolLM2 and Qwen use.
const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n\
                      {% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// The routes that take a JSON body; the first input byte picks one.
const ROUTES: [&str; 4] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/tokenize",
    "/detokenize",
];

struct Harness {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
}

fn harness() -> Harness {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap_or_else(|error| panic!("a runtime: {error}"));
    let registry = ModelRegistry::default();
    let template =
        ChatTemplate::new(CHATML).unwrap_or_else(|error| panic!("the template: {error}"));
    let engine = BoxEngine::new(EchoEngine::new());
    registry.insert(
        ModelEntry::new("test", engine, Tokenizer::bytes())
            .with_chat_template(template)
            .with_context_length(512),
    );
    // A default output limit keeps the echo short for requests that give none.
    let config = GatewayConfig::default()
        .with_body_limit(1 << 20)
        .with_default_max_tokens(8);
    let router = Gateway::new(registry, config).into_router();
    Harness { runtime, router }
}

thread_local! {
    static HARNESS: RefCell<Option<Harness>> = const { RefCell::new(None) };
}

/// An OpenAI request body, posted to the route the first byte picks, on a gateway serving a
/// byte-tokenizer model through the echo engine; the whole answer (streamed or not) is read.
pub fn openai_request(data: &[u8]) {
    let Some((&route, body)) = data.split_first() else {
        return;
    };
    let route = ROUTES[usize::from(route) % ROUTES.len()];
    HARNESS.with(|cell| {
        let mut cell = cell.borrow_mut();
        let harness = cell.get_or_insert_with(harness);
        let request = Request::post(route)
            .header("content-type", "application/json")
            .body(Body::from(body.to_vec()))
            .unwrap_or_else(|error| panic!("a request: {error}"));
        let router = harness.router.clone();
        harness.runtime.block_on(async move {
            let response = router
                .oneshot(request)
                .await
                .unwrap_or_else(|error| match error {});
            let status = response.status();
            let answer = axum::body::to_bytes(response.into_body(), 16 << 20).await;
            assert!(
                status != StatusCode::INTERNAL_SERVER_ERROR,
                "{route} answered 500 to {}: {answer:?}",
                String::from_utf8_lossy(body)
            );
        });
    });
}

/// GGUF metadata as a model file holds it; metadata that reads is made into a model entry
/// (tokenizer, chat template, context length), whose template then renders a conversation and
/// whose tokenizer encodes and decodes text.
pub fn gguf_metadata(data: &[u8]) {
    let Ok(metadata) = GgufMetadata::read(&mut &data[..]) else {
        return;
    };
    let _ = metadata.keys().count();
    let engine = BoxEngine::new(EchoEngine::new());
    let Ok(entry) = ModelEntry::from_gguf("fuzz", engine, &metadata) else {
        return;
    };
    let tokenizer = entry.tokenizer();
    if let Ok(tokens) = tokenizer.encode("Hello, <|im_start|> world") {
        let _ = tokenizer.decode(&tokens, false);
        let _ = tokenizer.decode(&tokens, true);
    }
    let _ = tokenizer.decode(&[0, 1, 2, u32::MAX], false);
    if let Some(template) = entry.chat_template() {
        let messages = [serde_json::json!({"role": "user", "content": "Hi"})];
        let _ = template.render(&messages, None, true);
    }
}
