//! HTTP statuses and error bodies of upstream servers, as our error classes.
//!
//! | upstream answer | class |
//! |---|---|
//! | 400, 413, 422 and other 4xx not below | `invalid_request` (the body's message is kept) |
//! | 404 | `not_found` (vLLM answers it for an unknown model or LoRA adapter) |
//! | 408, 504 | `timeout` |
//! | 429, 503 | `overloaded`, with the `Retry-After` seconds as the retry hint |
//! | 401, 403 | `unavailable`: our credentials for that server are wrong, not the client's request |
//! | 500 | `internal` |
//! | 502 and other 5xx | `unavailable` |
//!
//! The message comes from the body when it is JSON in one of the shapes engines use
//! (`{"error": {"message": …}}` as OpenAI and vLLM ≥ 0.9 send it, `{"object": "error",
//! "message": …}` as older vLLM did, `{"detail": …}` as FastAPI does), else from its text.

use std::time::Duration;

use dynamo_core::Error;
use hyper::StatusCode;
use hyper::header::{HeaderMap, RETRY_AFTER};
use serde_json::Value;

/// Longest part of an error body kept in a message.
const MESSAGE_LIMIT: usize = 512;

/// The error an upstream's non-success answer stands for.
///
/// ```
/// use std::time::Duration;
/// use dynamo_core::ErrorClass;
/// use dynamo_upstream::error_from_status;
///
/// let error = error_from_status(503, Some(Duration::from_secs(2)), b"busy");
/// assert_eq!(error.class(), ErrorClass::Overloaded);
/// assert_eq!(error.retry_after(), Some(Duration::from_secs(2)));
/// let body = br#"{"error":{"message":"max_tokens is too large","type":"BadRequestError","code":400}}"#;
/// let error = error_from_status(400, None, body);
/// assert_eq!(error.to_string(), "invalid request: max_tokens is too large");
/// ```
pub fn error_from_status(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Error {
    let message = message_of(body).unwrap_or_else(|| format!("HTTP status {status}"));
    match status {
        404 => Error::not_found(message),
        408 | 504 => Error::Timeout { after: None },
        429 | 503 => Error::Overloaded {
            message,
            retry_after,
        },
        401 | 403 => Error::unavailable(format!(
            "the upstream refused our credentials ({status}): {message}"
        )),
        500 => Error::internal(message),
        400..=499 => Error::invalid_request(message),
        _ => Error::unavailable(format!("upstream status {status}: {message}")),
    }
}

/// The `Retry-After` of a response, when given in seconds (the HTTP-date form is ignored).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The error of a whole answer whose status is not a success.
pub(crate) fn error_of_answer(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Error {
    error_from_status(status.as_u16(), retry_after(headers), body)
}

/// The error an `{"error": {...}}` object inside a stream stands for: its `code` is the HTTP
/// status vLLM would have answered with.
pub(crate) fn error_of_event(error: &Value) -> Error {
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .or_else(|| error.as_str())
        .unwrap_or("the upstream reported an error mid-stream");
    let status = error
        .get("code")
        .and_then(Value::as_u64)
        .filter(|code| (400..600).contains(code));
    match status {
        Some(status) => {
            let body = serde_json::json!({ "message": message }).to_string();
            error_from_status(status as u16, None, body.as_bytes())
        }
        None => Error::internal(format!("the upstream failed mid-stream: {message}")),
    }
}

fn message_of(body: &[u8]) -> Option<String> {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(json) => json_message(&json)?,
        Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
    };
    if text.is_empty() {
        return None;
    }
    Some(truncate(text))
}

fn json_message(json: &Value) -> Option<String> {
    let error = json.get("error");
    let candidates = [
        error.and_then(|error| error.get("message")),
        error,
        json.get("message"),
        json.get("detail"),
    ];
    candidates
        .into_iter()
        .flatten()
        .find_map(|value| match value {
            Value::String(text) => Some(text.clone()),
            Value::Null | Value::Object(_) => None,
            other => Some(other.to_string()),
        })
}

fn truncate(mut text: String) -> String {
    if text.len() > MESSAGE_LIMIT {
        let mut end = MESSAGE_LIMIT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use dynamo_core::ErrorClass;

    use super::*;

    #[test]
    fn statuses_map_to_classes() {
        let cases = [
            (400, ErrorClass::InvalidRequest),
            (413, ErrorClass::InvalidRequest),
            (422, ErrorClass::InvalidRequest),
            (404, ErrorClass::NotFound),
            (408, ErrorClass::Timeout),
            (429, ErrorClass::Overloaded),
            (503, ErrorClass::Overloaded),
            (401, ErrorClass::Unavailable),
            (500, ErrorClass::Internal),
            (502, ErrorClass::Unavailable),
            (504, ErrorClass::Timeout),
        ];
        for (status, class) in cases {
            assert_eq!(
                error_from_status(status, None, b"").class(),
                class,
                "{status}"
            );
        }
    }

    #[test]
    fn messages_come_from_every_known_body_shape() {
        let bodies: [&[u8]; 4] = [
            br#"{"error":{"message":"bad prompt","type":"BadRequestError","param":null,"code":400}}"#,
            br#"{"object":"error","message":"bad prompt","type":"BadRequestError","param":null,"code":400}"#,
            br#"{"detail":"bad prompt"}"#,
            b"bad prompt\n",
        ];
        for body in bodies {
            let error = error_from_status(400, None, body);
            assert_eq!(error.to_string(), "invalid request: bad prompt");
        }
        let long = "x".repeat(2000);
        assert!(
            error_from_status(400, None, long.as_bytes())
                .to_string()
                .len()
                < 600
        );
    }

    #[test]
    fn stream_errors_use_their_code_as_the_status() {
        let error =
            serde_json::json!({"message": "too long", "type": "BadRequestError", "code": 400});
        assert_eq!(error_of_event(&error).class(), ErrorClass::InvalidRequest);
        let error = serde_json::json!({"message": "engine died"});
        assert_eq!(error_of_event(&error).class(), ErrorClass::Internal);
    }
}
