//! The retry policy behind [`Retry`](super::Retry): which failures are retried, how often, and
//! against which budget.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tower::retry::Policy;
use tower::retry::budget::{Budget, TpsBudget};

use crate::error::{Error, ErrorClass};
use crate::request::GenerateRequest;
use crate::stream::TokenStream;

use super::RetryConfig;

/// The counter of retries decided, labelled `outcome`: `retried` when one is sent, `no_budget`
/// when a failure that would have been retried was not, the retry budget being spent.
const RETRIES: &str = "dynamo_retries_total";

/// Whether a failure before the first token is worth another attempt: the engine was
/// overloaded or unavailable. Invalid requests, cancellations, timeouts (the deadline has
/// passed), missing models and internal errors are not retried.
///
/// ```
/// use dynamo_core::Error;
/// use dynamo_core::layers::is_retried;
///
/// assert!(is_retried(&Error::unavailable("worker 3 is gone")));
/// assert!(!is_retried(&Error::invalid_request("max_tokens must be at least 1")));
/// ```
pub fn is_retried(error: &Error) -> bool {
    matches!(
        error.class(),
        ErrorClass::Overloaded | ErrorClass::Unavailable
    )
}

/// The per-request state of a retried request; cloned from the layer's template for each
/// request, sharing the budget.
#[derive(Clone)]
pub(crate) struct RetryPolicy {
    budget: Arc<TpsBudget>,
    max_attempts: u32,
    backoff: Duration,
    /// Attempts made so far for this request (0 before the first).
    attempts: u32,
    /// The request's own cancellation token; each attempt watches a child of it.
    root: Option<CancellationToken>,
}

impl std::fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl RetryPolicy {
    pub(crate) fn new(config: &RetryConfig) -> Self {
        // TpsBudget asserts its ranges; clamp what the caller configured into them.
        let window = config
            .budget_window
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        let ratio = if config.budget_ratio.is_finite() {
            config.budget_ratio.clamp(0.0, 1000.0)
        } else {
            0.0
        };
        let floor = config.min_retries_per_sec.min(i32::MAX as u32 - 1);
        RetryPolicy {
            budget: Arc::new(TpsBudget::new(window, floor, ratio)),
            max_attempts: config.max_attempts.max(1),
            backoff: config.backoff,
            attempts: 0,
            root: None,
        }
    }

    /// This template's policy for one request, and the request as its first attempt sends it:
    /// with a child of its token, so that a failed attempt's work, cancelled when its stream is
    /// dropped, is that attempt's alone.
    pub(crate) fn for_request(&self, request: GenerateRequest) -> (Self, GenerateRequest) {
        let root = request.cancellation().clone();
        let first = request.with_cancellation(root.child_token());
        let policy = RetryPolicy {
            root: Some(root),
            ..self.clone()
        };
        (policy, first)
    }

    fn is_cancelled(&self, request: &GenerateRequest) -> bool {
        self.root
            .as_ref()
            .map_or_else(|| request.is_cancelled(), CancellationToken::is_cancelled)
    }
}

impl Policy<GenerateRequest, TokenStream, Error> for RetryPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        request: &mut GenerateRequest,
        result: &mut Result<TokenStream, Error>,
    ) -> Option<Self::Future> {
        let error = result.as_ref().err()?;
        if !is_retried(error) || self.is_cancelled(request) || self.attempts >= self.max_attempts {
            return None;
        }
        if !self.budget.withdraw() {
            metrics::counter!(RETRIES, "outcome" => "no_budget").increment(1);
            return None;
        }
        metrics::counter!(RETRIES, "outcome" => "retried").increment(1);
        // The engine's own `retry_after` hint is meant for clients; retries stay on the
        // configured backoff, bounded by the budget rather than by waiting.
        Some(tokio::time::sleep(self.backoff))
    }

    fn clone_request(&mut self, request: &GenerateRequest) -> Option<GenerateRequest> {
        if self.attempts == 0 {
            // Every request earns the budget a share of a retry.
            self.budget.deposit();
        }
        self.attempts += 1;
        if self.attempts >= self.max_attempts {
            return None;
        }
        // Each attempt watches a child of the request's token: a failed attempt's stream cancels
        // only its own work when dropped, and cancelling the request still stops every attempt.
        let token = match &self.root {
            Some(root) => root.child_token(),
            None => request.cancellation().child_token(),
        };
        Some(request.clone().with_cancellation(token))
    }
}
