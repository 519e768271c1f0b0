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
        error: WireError,
    },
    /// Client to server: stop `stream`.
    Cancel {
        /// The stream.
        stream: u64,
    },
}

/// An [`Error`] as it travels: its class and its words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "class", rename_all = "snake_case")]
#[non_exhaustive]
pub enum WireError {
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

impl From<&Error> for WireError {
    fn from(error: &Error) -> Self {
        let millis = |d: &Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        match error {
            Error::InvalidRequest { message } => WireError::InvalidRequest {
                message: message.clone(),
            },
            Error::NotFound { what } => WireError::NotFound { what: what.clone() },
            Error::Overloaded {
                message,
                retry_after,
            } => WireError::Overloaded {
                message: message.clone(),
                retry_after_ms: retry_after.as_ref().map(millis),
            },
            Error::Unavailable { message, .. } => WireError::Unavailable {
                message: message.clone(),
            },
            Error::Cancelled => WireError::Cancelled,
            Error::Timeout { after } => WireError::Timeout {
                after_ms: after.as_ref().map(millis),
            },
            other => WireError::Internal {
                message: other.to_string(),
            },
        }
    }
}

impl From<WireError> for Error {
    fn from(error: WireError) -> Self {
        match error {
            WireError::InvalidRequest { message } => Error::invalid_request(message),
            WireError::NotFound { what } => Error::not_found(what),
            WireError::Overloaded {
                message,
                retry_after_ms,
            } => Error::Overloaded {
                message,
                retry_after: retry_after_ms.map(Duration::from_millis),
            },
            WireError::Unavailable { message } => Error::unavailable(message),
            WireError::Cancelled => Error::Cancelled,
            WireError::Timeout { after_ms } => Error::Timeout {
                after: after_ms.map(Duration::from_millis),
            },
            WireError::Internal { message } => Error::internal(message),
        }
    }
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The frame is longer than the limit. Its bytes were skipped: the connection goes on.
    #[error("a frame of {length} bytes is over the limit of {limit}")]
    TooLarge {
        /// The frame's length.
        length: u32,
        /// The limit.
        limit: u32,
    },
    /// The frame's bytes are not a frame. The connection goes on.
    #[error("a malformed frame: {0}")]
    Malformed(#[source] serde_json::Error),
}

impl FrameError {
    /// Whether the connection can still be used after this error.
    pub fn is_recoverable(&self) -> bool {
        !matches!(self, FrameError::Io(_))
    }
}

/// Read one frame; `Ok(None)` at a clean end of the connection.
///
/// # Errors
///
/// [`FrameError::Io`] when the connection fails; [`FrameError::TooLarge`] and
/// [`FrameError::Malformed`] for a bad frame whose bytes were consumed, so the next frame can
/// be read.
pub(crate) async fn read_frame(
    reader: &mut (impl AsyncRead + Unpin),
    limit: u32,
) -> Result<Option<Frame>, FrameError> {
    let mut length = [0u8; 4];
    match reader.read_exact(&mut length).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error.into()),
    }
    let length = u32::from_be_bytes(length);
    if length > limit {
        let skipped =
            tokio::io::copy(&mut reader.take(u64::from(length)), &mut tokio::io::sink()).await?;
        if skipped < u64::from(length) {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        return Err(FrameError::TooLarge { length, limit });
    }
    let mut bytes = vec![0u8; length as usize];
    reader.read_exact(&mut bytes).await?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(FrameError::Malformed)
}

/// Encode a frame with its length prefix.
///
/// # Errors
///
/// [`FrameError::TooLarge`] when it would be over `limit`.
pub(crate) fn encode_frame(frame: &Frame, limit: u32) -> Result<Vec<u8>, FrameError> {
    let mut bytes = vec![0u8; 4];
    serde_json::to_writer(&mut bytes, frame).map_err(FrameError::Malformed)?;
    let length = u32::try_from(bytes.len() - 4).unwrap_or(u32::MAX);
    if length > limit {
        return Err(FrameError::TooLarge { length, limit });
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
        if writer.write_all(&batch).await.is_err() {
            return;
        }
    }
}
