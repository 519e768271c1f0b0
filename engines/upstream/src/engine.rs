//! [`CompletionsEngine`]: an [`Engine`](dynamo_core::Engine) over a server's
//! `/v1/completions`, streamed, or in one answer when the client reads it whole.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use dynamo_core::{
    Delivery, Error, FinishReason, GenerateRequest, TokenChunk, TokenStream, Tokens, Usage,
};
use futures::future::BoxFuture;
use tower::Service;

use crate::client::{HttpClient, read_body};
use crate::codec::OutputTokens;
use crate::dialect::Dialect;
use crate::status::{error_of_answer, error_of_event};
use crate::stream::{EventHandler, event_stream, whole_answer};
use crate::wire::{Choice, Chunk, LogProbsWire, chosen_beside_ids, prompt_log_probs};

/// The largest server-sent event accepted (1 MiB).
const MAX_EVENT_BYTES: usize = 1 << 20;

/// The largest error body read (64 KiB).
const MAX_ERROR_BODY: usize = 64 << 10;

/// The largest whole (non-streamed) answer accepted (16 MiB: a long answer with
/// log-probabilities).
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// Whether a server has answered without the token ids asked for, and the answer's text was
/// tokenized instead ([`OutputTokens::TokenIdsOrRetokenize`]); said once a process.
static RETOKENIZED: AtomicBool = AtomicBool::new(false);

/// An [`Engine`](dynamo_core::Engine) that sends each request to a server's `/v1/completions`
/// and streams its answer back as token chunks; cheap to clone.
///
/// Each call posts one streamed completion (`"stream": true`, with the usage in the last
/// event) built field by field from the request as its [`Dialect`] allows, then parses the
/// server-sent events as they arrive. A request whose client reads the answer whole
/// ([`Delivery::Whole`]) is posted with `"stream": false` instead and its answer read in one
/// body, which costs both sides less, and comes back as one chunk. The last chunk carries the
/// tokens of the event that finished the answer with the finish reason and the usage, with
/// the cached prompt tokens from `usage.prompt_tokens_details.cached_tokens` (held until
/// `data: [DONE]`: a reader that stops at a stop token, as the gateway does, still gets the
/// usage that the server sends after it).
///
/// Errors: the answer's HTTP status becomes an error class (see [`error_from_status`]); a
/// connection that cannot be made is `unavailable`; an error event mid-stream is mapped by its
/// `code`; a stream that ends before `data: [DONE]` (cut mid-event or between events), or a
/// whole answer cut before its end, ends with `unavailable`, so a router may continue the
/// request elsewhere.
///
/// # Cancel safety
///
/// Dropping the returned [`TokenStream`], or cancelling the request's token, drops the
/// response body, which closes its connection, and the server (vLLM, SGLang, TensorRT-LLM,
/// llama.cpp alike) aborts a request whose client has gone.
///
/// ```no_run
/// use dynamo_core::{EngineExt, GenerateRequest};
/// use dynamo_upstream::{CompletionsEngine, Dialect, HttpClient, HttpConfig};
///
/// # async fn run() -> Result<(), dynamo_core::Error> {
/// let client = HttpClient::new("http://127.0.0.1:8000", HttpConfig::default())?;
/// let mut engine = CompletionsEngine::new(client, Dialect::openai()).model("my-model");
/// let request = GenerateRequest::new("r1", "my-model", vec![1, 2, 3]).with_max_tokens(8);
/// let answer = engine.generate_all(request).await?;
/// tracing::info!(text = ?answer.text, usage = ?answer.usage, "done");
/// # Ok(())
/// # }
/// ```
///
/// [`error_from_status`]: crate::error_from_status
#[derive(Debug, Clone)]
pub struct CompletionsEngine {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    client: HttpClient,
    dialect: Dialect,
    model: Option<String>,
    path: String,
    default_max_tokens: Option<u32>,
}

impl CompletionsEngine {
    /// An engine over `client`'s server, speaking `dialect`.
    pub fn new(client: HttpClient, dialect: Dialect) -> Self {
        CompletionsEngine {
            inner: Arc::new(Inner {
                client,
                dialect,
                model: None,
                path: "/v1/completions".to_owned(),
                default_max_tokens: None,
            }),
        }
    }

    /// Send this model name instead of the request's (the server's `--served-model-name`).
    pub fn model(self, model: impl Into<String>) -> Self {
        self.map(|inner| inner.model = Some(model.into()))
    }

    /// Post to this path instead of `/v1/completions`.
    pub fn path(self, path: impl Into<String>) -> Self {
        self.map(|inner| inner.path = path.into())
    }

    /// The `max_tokens` sent for a request that sets none. Without it the field is left out
    /// and the server's default applies (OpenAI's and recent vLLM's: 16).
    pub fn default_max_tokens(self, max_tokens: u32) -> Self {
        self.map(|inner| inner.default_max_tokens = Some(max_tokens))
    }

    /// Take the generated tokens' ids from `output` instead of the dialect's choice (for
    /// example [`OutputTokens::TokenIdsOrRetokenize`] for a server that may not return ids).
    pub fn output(self, output: OutputTokens) -> Self {
        self.map(|inner| inner.dialect = inner.dialect.clone().output(output))
    }

    /// The server's HTTP client.
    pub fn client(&self) -> &HttpClient {
        &self.inner.client
    }

    /// The same engine, sending its requests through `client` (for example one from
    /// [`HttpClient::header`]).
    pub fn with_client(self, client: HttpClient) -> Self {
        self.map(|inner| inner.client = client)
    }

    fn map(self, change: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Arc::unwrap_or_clone(self.inner);
        change(&mut inner);
        CompletionsEngine {
            inner: Arc::new(inner),
        }
    }
}

impl Service<GenerateRequest> for CompletionsEngine {
    type Response = TokenStream;
    type Error = Error;
    type Future = BoxFuture<'static, Result<TokenStream, Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // The pool opens connections on demand; the server says when it is full (503).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: GenerateRequest) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.start(request).await })
    }
}

impl Inner {
    async fn start(&self, request: GenerateRequest) -> Result<TokenStream, Error> {
        request.validate()?;
        let model = self.model.as_deref().unwrap_or(&request.model);
        let body = self
            .dialect
            .encode(&request, model, self.default_max_tokens)?;
        let cancel = request.cancellation().child_token();
        let response = tokio::select! {
            response = self.client.post_json(&self.path, Bytes::from(body)) => response?,
            () = cancel.cancelled() => return Err(Error::Cancelled),
        };
        let (head, body) = response.into_parts();
        if !head.status.is_success() {
            let bytes = read_body(body, MAX_ERROR_BODY).await?;
            return Err(error_of_answer(head.status, &head.headers, &bytes));
        }
        let events = CompletionEvents {
            output: self.dialect.output_tokens().clone(),
            scores_beside_ids: self.dialect.scores_beside_ids(&request),
            finish: None,
            usage: None,
            last: None,
            prompt: request
                .sampling
                .prompt_logprobs
                .map(|top| (request.tokens.clone(), top as usize)),
        };
        Ok(match request.delivery {
            Delivery::Whole => whole_answer(body, events, MAX_ANSWER_BYTES, cancel),
            Delivery::Streamed => event_stream(body, events, MAX_EVENT_BYTES, cancel),
        })
    }
}

/// What a `/v1/completions` answer's events say, as they arrive.
struct CompletionEvents {
    output: OutputTokens,
    /// The answer's `logprobs` write tokens as text: read each chosen token's score beside
    /// the choice's `token_ids` (`Extensions::chosen_logprobs`).
    scores_beside_ids: bool,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    /// The tokens of the event that carried the finish reason, held until `[DONE]` so that
    /// they go out with the finish and the usage, which comes in an event of its own: the
    /// gateway stops reading at a stop token (vLLM's end-of-sequence token is in that
    /// event's `token_ids`), so a usage sent after it would be lost.
    last: Option<TokenChunk>,
    /// The prompt and the alternatives asked for, when the request asks for the prompt's
    /// log-probabilities (`prompt_logprobs`).
    prompt: Option<(Tokens, usize)>,
}

impl EventHandler for CompletionEvents {
    fn on_event(&mut self, data: &str, out: &mut VecDeque<TokenChunk>) -> Result<bool, Error> {
        if data.trim() == "[DONE]" {
            let mut last = self.last.take().unwrap_or_default();
            last.finish_reason = Some(self.finish.unwrap_or(FinishReason::Stop));
            last.usage = self.usage;
            out.push_back(last);
            return Ok(true);
        }
        if let Err(error) = self.on_chunk(data, out) {
            // The tokens that came go out before the error, as they would have without the
            // hold.
            out.extend(self.last.take());
            return Err(error);
        }
        Ok(false)
    }

    fn on_end(&mut self, out: &mut VecDeque<TokenChunk>) -> Result<(), Error> {
        out.extend(self.last.take());
        Err(Error::unavailable(
            "the upstream stream ended before [DONE]",
        ))
    }

    /// A whole completion has the shape of one event, with its usage: that event, then the
    /// end the `[DONE]` of a stream stands for.
    fn on_whole(&mut self, body: &str, out: &mut VecDeque<TokenChunk>) -> Result<(), Error> {
        self.on_event(body, out)?;
        self.on_event("[DONE]", out).map(|_| ())
    }
}

impl CompletionEvents {
    /// One event that is not `[DONE]`.
    fn on_chunk(&mut self, data: &str, out: &mut VecDeque<TokenChunk>) -> Result<(), Error> {
        let chunk: Chunk<'_> = serde_json::from_str(data).map_err(|error| {
            Error::internal("the upstream sent an event that is not a completion chunk")
                .with_source(error)
        })?;
        if let Some(error) = &chunk.error {
            return Err(error_of_event(error));
        }
        if chunk.object.as_deref() == Some("error") {
            let message = chunk.message.as_deref().unwrap_or("unknown error");
            return Err(error_of_event(&serde_json::json!({ "message": message })));
        }
        if let Some(usage) = &chunk.usage {
            self.usage = Some(usage.to_usage());
        }
        // One prompt and `n` = 1: only choice 0 exists.
        for choice in chunk.choices.into_iter().filter(|choice| choice.index == 0) {
            self.on_choice(choice, out)?;
        }
        Ok(())
    }

    fn on_choice(
        &mut self,
        mut choice: Choice<'_>,
        out: &mut VecDeque<TokenChunk>,
    ) -> Result<(), Error> {
        if let Some((prompt, top)) = &self.prompt {
            let entries = choice.prompt_logprobs.take().ok_or_else(|| {
                Error::internal("the upstream sent no prompt log-probabilities, though asked")
            })?;
            let scored = prompt_log_probs(&entries, prompt.as_slice(), *top)?;
            // Once: on the first choice's chunk before its tokens.
            self.prompt = None;
            out.push_back(TokenChunk {
                prompt_log_probs: Some(scored),
                ..TokenChunk::default()
            });
        }
        let ids = choice.token_ids.take();
        let mut log_probs = if self.scores_beside_ids {
            chosen_beside_ids(choice.logprobs.as_ref(), ids.as_deref().unwrap_or_default())?
        } else {
            choice
                .logprobs
                .as_ref()
                .map(LogProbsWire::to_log_probs)
                .transpose()?
        };
        let mut tokens = match (&self.output, ids) {
            (OutputTokens::TokenIdsField | OutputTokens::TokenIdsOrRetokenize(_), Some(ids)) => ids,
            (_, _) if choice.text.is_empty() => Vec::new(),
            (OutputTokens::TokenIdsField, None) => {
                return Err(Error::internal(
                    "the upstream returned text without token_ids: it does not support \
                     return_token_ids (vLLM 0.10.2 or later does)",
                ));
            }
            (OutputTokens::TokenIdsOrRetokenize(codec), None) => {
                // A load first: the flag's cache line is only written once.
                if !RETOKENIZED.load(Ordering::Relaxed)
                    && !RETOKENIZED.swap(true, Ordering::Relaxed)
                {
                    tracing::warn!(
                        "the upstream returns text without token_ids (vLLM before 0.10.2, or \
                         a server that only looks like vLLM): tokenizing its text with the \
                         gateway's tokenizer"
                    );
                }
                encode(codec.as_ref(), &choice.text)?
            }
            (OutputTokens::Retokenize(codec), _) => encode(codec.as_ref(), &choice.text)?,
            (OutputTokens::TextOnly, _) => Vec::new(),
        };
        // A matched stop token (vLLM's `stop_reason` as an id) is not part of the answer.
        let stop_token = choice
            .stop_reason
            .as_ref()
            .and_then(serde_json::Value::as_u64);
        if stop_token.is_some_and(|stop| tokens.last().map(|&id| u64::from(id)) == Some(stop)) {
            tokens.pop();
            // Its log-probability goes with it (a whole answer lists every token's).
            if let Some(scores) = &mut log_probs
                && scores.len() == tokens.len() + 1
            {
                scores.pop();
            }
        }
        let finish = choice.finish();
        if !tokens.is_empty() || !choice.text.is_empty() {
            let chunk = TokenChunk {
                tokens,
                text: (!choice.text.is_empty()).then(|| choice.text.into_owned()),
                log_probs,
                ..TokenChunk::default()
            };
            // Tokens after a finish (no server sends them) keep their order.
            out.extend(self.last.take());
            if finish.is_some() {
                self.last = Some(chunk);
            } else {
                out.push_back(chunk);
            }
        }
        if finish.is_some() {
            self.finish = finish;
        }
        Ok(())
    }
}

/// The ids of a text the server sent, by the gateway's tokenizer.
fn encode(codec: &dyn crate::TextCodec, text: &str) -> Result<Vec<dynamo_core::Token>, Error> {
    codec
        .encode(text)
        .map_err(|error| Error::internal("cannot tokenize the upstream's text").with_source(error))
}
