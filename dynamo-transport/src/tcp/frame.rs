//! Frames on the wire: length-prefixed JSON.

use std::time::Duration;

use dynamo_core::{Error, GenerateRequest, TokenChunk};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The largest frame either side accepts unless configured otherwise: 16 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 16 << 20;

/// One message of the request plane.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Frame {
    /// Client to server: start a generation under `stream`.
    Request {
        /// The stream id, chosen by the client, unique on its connection.
        stream: u64,
        /// The request (boxed: it is much larger than the other frames).
        request: Box<GenerateRequest>,
    },
    /// Server to client: the next chunk of `stream` (the final one ends it).
    Chunk {
        /// The stream.
        stream: u64,
        /// The chunk.
        chunk: TokenChunk,
    },
    /// Server to client: `stream` failed and is over. Stream 0 reports a frame that could not
    /// be read at all.
    Error {
        /// The stream, or 0.
        stream: u64,
        /// What went wrong.
        error: ErrorBody,
    },
    /// Client to server: stop `stream`.
    Cancel {
        /// The stream.
        stream: u64,
    },
}

/// The body of a [`Frame::Error`]: a [`dynamo_core::Error`] as it travels, its class and its
/// words. Not an error type of its own: it converts from and into [`dynamo_core::Error`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "class", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorBody {
    /// [`Error::InvalidRequest`].
    InvalidRequest {
        /// The message.
        message: String,
    },
    /// [`Error::NotFound`].
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// [`Error::Overloaded`].
    Overloaded {
        /// The message.
        message: String,
        /// The retry hint, in milliseconds.
        retry_after_ms: Option<u64>,
    },
    /// [`Error::Unavailable`] (its source stays on the server).
    Unavailable {
        /// The message.
        message: String,
    },
    /// [`Error::Cancelled`].
    Cancelled,
    /// [`Error::Timeout`].
    Timeout {
        /// The deadline, in milliseconds, when known.
        #[serde(default)]
        after_ms: Option<u64>,
    },
    /// [`Error::Internal`] (its source stays on the server).
    Internal {
        /// The message.
        message: String,
    },
}

impl From<&Error> for ErrorBody {
    fn from(error: &Error) -> Self {
        let millis = |d: &Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        match error {
            Error::InvalidRequest { message } => ErrorBody::InvalidRequest {
                message: message.clone(),
            },
            Error::NotFound { what } => ErrorBody::NotFound { what: what.clone() },
            Error::Overloaded {
                message,
                retry_after,
            } => ErrorBody::Overloaded {
                message: message.clone(),
                retry_after_ms: retry_after.as_ref().map(millis),
            },
            Error::Unavailable { message, .. } => ErrorBody::Unavailable {
                message: message.clone(),
            },
            Error::Cancelled => ErrorBody::Cancelled,
            Error::Timeout { after } => ErrorBody::Timeout {
                after_ms: after.as_ref().map(millis),
            },
            other => ErrorBody::Internal {
                message: other.to_string(),
            },
        }
    }
}

impl From<ErrorBody> for Error {
    fn from(error: ErrorBody) -> Self {
        match error {
            ErrorBody::InvalidRequest { message } => Error::invalid_request(message),
            ErrorBody::NotFound { what } => Error::not_found(what),
            ErrorBody::Overloaded {
                message,
                retry_after_ms,
            } => Error::Overloaded {
                message,
                retry_after: retry_after_ms.map(Duration::from_millis),
            },
            ErrorBody::Unavailable { message } => Error::unavailable(message),
            ErrorBody::Cancelled => Error::Cancelled,
            ErrorBody::Timeout { after_ms } => Error::Timeout {
                after: after_ms.map(Duration::from_millis),
            },
            ErrorBody::Internal { message } => Error::internal(message),
        }
    }
}

/// Read one frame; `Ok(None)` at a clean end of the connection.
///
/// Public (hidden) so that the fuzz targets in `fuzz/` and the corpus replay test reach the
/// decoder the request plane uses.
///
/// # Errors
///
/// [`crate::Error::Connection`] when the connection fails; [`crate::Error::FrameTooLarge`]
/// and [`crate::Error::MalformedFrame`] for a bad frame whose bytes were consumed, so the next
/// frame can be read ([`crate::Error::is_recoverable`]).
pub async fn read_frame(
    reader: &mut (impl AsyncRead + Unpin),
    limit: u32,
) -> Result<Option<Frame>, crate::Error> {
    let mut length = [0u8; 4];
    match reader.read_exact(&mut length).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(crate::Error::connection(error)),
    }
    let length = u32::from_be_bytes(length);
    if length > limit {
        let skipped = tokio::io::copy(&mut reader.take(u64::from(length)), &mut tokio::io::sink())
            .await
            .map_err(crate::Error::connection)?;
        if skipped < u64::from(length) {
            let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
            return Err(crate::Error::connection(eof));
        }
        return Err(crate::Error::FrameTooLarge { length, limit });
    }
    let mut bytes = vec![0u8; length as usize];
    reader
        .read_exact(&mut bytes)
        .await
        .map_err(crate::Error::connection)?;
    serde_json::from_slice(&bytes).map(Some).map_err(malformed)
}

fn malformed(error: serde_json::Error) -> crate::Error {
    crate::Error::MalformedFrame {
        source: error.into(),
    }
}

/// Encode a frame with its length prefix.
///
/// # Errors
///
/// [`crate::Error::FrameTooLarge`] when it would be over `limit`.
pub(crate) fn encode_frame(frame: &Frame, limit: u32) -> Result<Vec<u8>, crate::Error> {
    let mut bytes = vec![0u8; 4];
    serde_json::to_writer(&mut bytes, frame).map_err(malformed)?;
    let length = u32::try_from(bytes.len() - 4).unwrap_or(u32::MAX);
    if length > limit {
        return Err(crate::Error::FrameTooLarge { length, limit });
    }
    bytes[..4].copy_from_slice(&length.to_be_bytes());
    Ok(bytes)
}

/// Write encoded frames as they come, until the queue closes or the connection fails. Frames
/// that are already waiting go out together, in one write.
pub(crate) async fn write_frames(
    writer: &mut (impl AsyncWrite + Unpin),
    frames: &mut mpsc::Receiver<Vec<u8>>,
) {
    let mut batch = Vec::new();
    while let Some(first) = frames.recv().await {
        batch.clear();
        batch.extend_from_slice(&first);
        while batch.len() < 64 * 1024 {
            match frames.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        // A TLS stream sends what it holds only when flushed; for plain TCP this is free.
        if writer.write_all(&batch).await.is_err() || writer.flush().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut bytes = u32::try_from(payload.len())
            .expect("small")
            .to_be_bytes()
            .to_vec();
        bytes.extend_from_slice(payload);
        bytes
    }

    #[tokio::test]
    async fn bad_frames_are_recoverable_and_a_cut_connection_is_not() {
        let cancel = encode_frame(&Frame::Cancel { stream: 3 }, 64).expect("encoded");
        let mut input = framed(&[b' '; 100]);
        input.extend(framed(b"{not json"));
        input.extend(&cancel);
        input.extend(&framed(b"{}")[..5]);
        let mut reader = &input[..];

        let too_large = read_frame(&mut reader, 64).await.expect_err("too large");
        assert!(
            matches!(
                too_large,
                crate::Error::FrameTooLarge {
                    length: 100,
                    limit: 64
                }
            ),
            "{too_large}"
        );
        assert!(too_large.is_recoverable());
        let malformed = read_frame(&mut reader, 64).await.expect_err("malformed");
        assert!(
            matches!(malformed, crate::Error::MalformedFrame { .. }),
            "{malformed}"
        );
        assert!(malformed.is_recoverable());
        let next = read_frame(&mut reader, 64).await.expect("read");
        assert!(
            matches!(next, Some(Frame::Cancel { stream: 3 })),
            "{next:?}"
        );
        let cut = read_frame(&mut reader, 64).await.expect_err("cut short");
        assert_eq!(cut.name(), "connection");
        assert!(!cut.is_recoverable());
        assert!(
            read_frame(&mut reader, 64)
                .await
                .expect("the end")
                .is_none()
        );
    }

    #[tokio::test]
    async fn choices_cross_the_wire() {
        let request = GenerateRequest::new("r", "m", vec![1, 2]).with_n(3);
        let frame = Frame::Request {
            stream: 1,
            request: Box::new(request),
        };
        let bytes = encode_frame(&frame, DEFAULT_MAX_FRAME).expect("encoded");
        let back = read_frame(&mut &bytes[..], DEFAULT_MAX_FRAME).await;
        assert!(
            matches!(back, Ok(Some(Frame::Request { ref request, .. })) if request.n == 3),
            "{back:?}"
        );
        let chunk = TokenChunk {
            index: 2,
            more_choices: true,
            ..TokenChunk::finish(dynamo_core::FinishReason::Stop, None)
        };
        let frame = Frame::Chunk {
            stream: 1,
            chunk: chunk.clone(),
        };
        let bytes = encode_frame(&frame, DEFAULT_MAX_FRAME).expect("encoded");
        let back = read_frame(&mut &bytes[..], DEFAULT_MAX_FRAME).await;
        assert!(
            matches!(back, Ok(Some(Frame::Chunk { chunk: ref got, .. })) if *got == chunk),
            "{back:?}"
        );
        assert!(
            !chunk.is_final(),
            "a choice's finish does not end the stream"
        );
    }

    #[test]
    fn an_error_body_keeps_the_class_and_words() {
        let error = Error::invalid_request("max_tokens must be at least 1");
        let body = ErrorBody::from(&error);
        let json = serde_json::to_value(&body).expect("JSON");
        assert_eq!(json["class"], "invalid_request");
        let back = Error::from(body);
        assert_eq!(back.to_string(), error.to_string());
    }
}
