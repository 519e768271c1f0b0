//! API keys: `Authorization: Bearer <key>` on every route but the health probes.

use std::fmt;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::ApiError;

/// The API keys a [`Gateway`](crate::Gateway) accepts. Empty (the default): no key is asked for.
///
/// Only the SHA-256 digests of the keys are kept, and a presented key is compared with every
/// one of them in constant time, so neither the time an answer takes nor a memory dump tells
/// the keys. `Debug` prints how many keys there are, never a key.
///
/// ```
/// use dynamo_openai::ApiKeys;
///
/// let keys = ApiKeys::new(["sk-first", "sk-second"]);
/// assert_eq!(keys.len(), 2);
/// assert!(keys.accepts("sk-second"));
/// assert!(!keys.accepts("sk-third"));
/// assert_eq!(format!("{keys:?}"), "ApiKeys(2 keys)");
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ApiKeys {
    digests: Arc<[[u8; 32]]>,
}

impl ApiKeys {
    /// These keys; blank ones are skipped and surrounding whitespace is trimmed.
    pub fn new<K: AsRef<str>>(keys: impl IntoIterator<Item = K>) -> Self {
        let mut digests: Vec<[u8; 32]> = keys
            .into_iter()
            .map(|key| key.as_ref().trim().to_owned())
            .filter(|key| !key.is_empty())
            .map(|key| digest(&key))
            .collect();
        digests.sort_unstable();
        digests.dedup();
        ApiKeys {
            digests: digests.into(),
        }
    }

    /// The number of distinct keys.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether no key is set, so the gateway is open.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `key` is one of the keys. Takes the same time whichever key matches, if any.
    pub fn accepts(&self, key: &str) -> bool {
        let presented = digest(key);
        let mut found = 0u8;
        for known in self.digests.iter() {
            let mut difference = 0u8;
            for (a, b) in known.iter().zip(presented.iter()) {
                difference |= a ^ b;
            }
            found |= u8::from(difference == 0);
        }
        std::hint::black_box(found) == 1
    }
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeys({} keys)", self.len())
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// What the key check needs: the keys, and whether `/metrics` is open.
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    pub(crate) keys: ApiKeys,
    pub(crate) open_metrics: bool,
}

impl Guard {
    /// Whether `path` is served without a key: the health probes (orchestrators call them
    /// without credentials) and `/metrics` when it was opened.
    fn is_open(&self, path: &str) -> bool {
        matches!(path, "/health" | "/live" | "/ready") || (self.open_metrics && path == "/metrics")
    }
}

/// Who sent a request: the digest of its API key, or `None` on an open gateway. Stored
/// responses belong to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Caller(pub(crate) Option<[u8; 32]>);

/// Refuse a request without a valid key with a 401 (and `WWW-Authenticate: Bearer`), as OpenAI
/// does. The presented key is never logged nor echoed back. A request let through carries its
/// [`Caller`].
pub(crate) async fn require_key(
    State(guard): State<Arc<Guard>>,
    mut request: Request,
    next: Next,
) -> Response {
    if guard.keys.is_empty() || guard.is_open(request.uri().path()) {
        request.extensions_mut().insert(Caller(None));
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, key) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
        });
    let refusal = match presented {
        Some(key) if guard.keys.accepts(key) => {
            let caller = Caller(Some(digest(key)));
            request.extensions_mut().insert(caller);
            return next.run(request).await;
        }
        Some(_) => ApiError::invalid_api_key(),
        None => ApiError::missing_api_key(),
    };
    tracing::debug!("refused: no valid API key");
    let mut response = refusal.into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_and_repeated_keys_are_dropped() {
        let keys = ApiKeys::new(["a", " a ", "", "  ", "b"]);
        assert_eq!(keys.len(), 2);
        assert!(keys.accepts("a") && keys.accepts("b"));
        assert!(!keys.accepts("") && !keys.accepts(" a"));
        assert!(ApiKeys::default().is_empty());
    }

    #[test]
    fn probes_and_opened_metrics_need_no_key() {
        let guard = Guard {
            keys: ApiKeys::new(["k"]),
            open_metrics: false,
        };
        assert!(guard.is_open("/health") && guard.is_open("/ready") && guard.is_open("/live"));
        assert!(!guard.is_open("/metrics") && !guard.is_open("/v1/models"));
        let opened = Guard {
            open_metrics: true,
            ..guard
        };
        assert!(opened.is_open("/metrics"));
    }
}
