//! The crate's one error type.

use dynamo_core::BoxError;

use crate::local::START_TIMEOUT;

/// What can go wrong in this crate's own parts: frames on the request plane, messages on the
/// event plane, registries, engines' KV event messages, and local servers.
///
/// What reaches an engine or a router stays a [`dynamo_core::Error`]: the [`Transport`]
/// trait, [`RemoteEngine`](crate::tcp::RemoteEngine) and
/// [`EventPlane::publish`](crate::events::EventPlane::publish) / `subscribe` return one. This
/// type is for the streams and registrations around them, whose items a caller logs, counts
/// ([`name`](Error::name)) or skips ([`is_recoverable`](Error::is_recoverable)).
///
/// Lower-level causes (I/O, JSON, ZMQ) are kept as [`std::error::Error::source`], boxed, so
/// no dependency's type is part of this one.
///
/// [`Transport`]: crate::Transport
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A TCP connection failed or closed while a frame was read or written.
    #[error("connection: {source}")]
    Connection {
        /// The I/O error.
        source: BoxError,
    },
    /// A frame is longer than the limit. Its bytes were skipped: the connection goes on.
    #[error("a frame of {length} bytes is over the limit of {limit}")]
    FrameTooLarge {
        /// The frame's length.
        length: u32,
        /// The limit.
        limit: u32,
    },
    /// A frame's bytes are not a frame. The connection goes on.
    #[error("a malformed frame: {source}")]
    MalformedFrame {
        /// Why it does not parse.
        source: BoxError,
    },
    /// A message on the event plane does not parse; it is skipped and the subscription goes
    /// on.
    #[error("a message on {subject} is not a {topic} message: {source}")]
    MalformedMessage {
        /// The subject it came on.
        subject: String,
        /// The topic expected there.
        topic: &'static str,
        /// Why it does not parse.
        source: BoxError,
    },
    /// A subscriber fell behind and this many messages were dropped for it; the subscription
    /// goes on.
    #[error("the subscriber fell behind and missed {missed} messages")]
    Lagged {
        /// How many.
        missed: u64,
    },
    /// A record in a registry is not a
    /// [`WorkerRecord`](crate::discovery::WorkerRecord); it is skipped.
    #[error("{origin} is not a worker record: {reason}")]
    BadRecord {
        /// Where it was: a file, an etcd key.
        origin: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A registry cannot be reached or refused the operation. A watch carries on and
    /// retries.
    #[error("the registry at {registry} is unavailable: {reason}")]
    RegistryUnavailable {
        /// The registry: a directory, an etcd endpoint.
        registry: String,
        /// What went wrong.
        reason: String,
    },
    /// A registry's address is not one this client can use.
    #[error("{endpoint} is not a registry address this client can use (expected http://HOST:PORT)")]
    BadEndpoint {
        /// The address given.
        endpoint: String,
    },
    /// A deployment's name cannot name Kubernetes objects (the Leases of
    /// `KubernetesRegistry`).
    #[error(
        "{name:?} cannot name a deployment in Kubernetes: use 1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
    )]
    BadDeploymentName {
        /// The name given.
        name: String,
    },
    /// An engine's KV event message does not have the three frames.
    #[error("a KV event message has {count} frames, not 3")]
    EngineEventFrames {
        /// The frames it has.
        count: usize,
    },
    /// An engine's KV event message has a sequence number frame that is not 8 bytes.
    #[error("the sequence number frame has {length} bytes, not 8")]
    EngineEventSequence {
        /// The frame's length.
        length: usize,
    },
    /// An engine's KV event payload is not msgpack, or not a batch of events of the
    /// documented shape.
    #[error("malformed KV event payload: {reason}")]
    MalformedEngineEvent {
        /// What is wrong with it.
        reason: String,
    },
    /// An engine's KV event messages were lost and could not be replayed (no replay socket,
    /// or it did not answer): the index may lack their blocks, or keep blocks they removed.
    #[error("KV event messages {expected}..{received} were lost")]
    EngineEventsLost {
        /// The first sequence number missing.
        expected: i64,
        /// The sequence number that arrived instead.
        received: i64,
    },
    /// The engine's block size is not the router's.
    #[error("the engine stores blocks of {engine} tokens; the router expects {ours}")]
    BlockSizeMismatch {
        /// The engine's.
        engine: u64,
        /// Ours.
        ours: u32,
    },
    /// A ZMQ socket failed, or a ZMQ address cannot be used.
    #[error("ZMQ: {source}")]
    Socket {
        /// What went wrong.
        source: BoxError,
    },
    /// A local server's program could not be run (most often: it is not installed).
    #[error("cannot run {program} (is it installed and on PATH?): {source}")]
    CannotRun {
        /// The program.
        program: &'static str,
        /// Why.
        source: BoxError,
    },
    /// A local server ran but did not open its port in time, or exited.
    #[error(
        "{program} did not start listening on port {port} within {START_TIMEOUT:?}; it wrote:\n{log}"
    )]
    NotListening {
        /// The program.
        program: &'static str,
        /// The port it was given.
        port: u16,
        /// The end of what it wrote to stdout and stderr.
        log: String,
    },
    /// A part of the request plane's TLS set-up cannot be used: a file that cannot be read,
    /// PEM without a certificate or key, a key that does not match.
    #[error("TLS: {what} cannot be used: {reason}")]
    BadTls {
        /// Which part.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// No free loopback port could be found for a local server.
    #[error("no free loopback port: {source}")]
    NoFreePort {
        /// Why.
        source: BoxError,
    },
}

impl Error {
    /// A stable snake_case name for the kind of error, fit for a metric label. It names the
    /// variant (`frame_too_large`, `lagged`, `registry_unavailable`, …) and never changes
    /// with the message.
    ///
    /// ```
    /// let error = dynamo_transport::Error::Lagged { missed: 3 };
    /// assert_eq!(error.name(), "lagged");
    /// ```
    pub fn name(&self) -> &'static str {
        match self {
            Error::Connection { .. } => "connection",
            Error::FrameTooLarge { .. } => "frame_too_large",
            Error::MalformedFrame { .. } => "malformed_frame",
            Error::MalformedMessage { .. } => "malformed_message",
            Error::Lagged { .. } => "lagged",
            Error::BadRecord { .. } => "bad_record",
            Error::RegistryUnavailable { .. } => "registry_unavailable",
            Error::BadEndpoint { .. } => "bad_endpoint",
            Error::BadDeploymentName { .. } => "bad_deployment_name",
            Error::EngineEventFrames { .. } => "engine_event_frames",
            Error::EngineEventSequence { .. } => "engine_event_sequence",
            Error::MalformedEngineEvent { .. } => "malformed_engine_event",
            Error::EngineEventsLost { .. } => "engine_events_lost",
            Error::BlockSizeMismatch { .. } => "block_size_mismatch",
            Error::Socket { .. } => "socket",
            Error::CannotRun { .. } => "cannot_run",
            Error::NotListening { .. } => "not_listening",
            Error::NoFreePort { .. } => "no_free_port",
            Error::BadTls { .. } => "bad_tls",
        }
    }

    /// Whether the error concerns one item only — a frame, a message, a record, messages
    /// missed — which was skipped, so that the connection, subscription or decoder that
    /// reported it is unaffected and can still be used. It is `false` for a failure of the
    /// connection, socket or registry itself, an address that cannot be used, and a local
    /// server that did not start.
    ///
    /// The request plane keeps a connection open after a recoverable error and closes it
    /// after any other. The streams of this crate (subscriptions, membership watches, engine
    /// events) go on after either kind: a watch retries a registry it lost.
    ///
    /// ```
    /// use dynamo_transport::Error;
    ///
    /// assert!(Error::FrameTooLarge { length: 20, limit: 10 }.is_recoverable());
    /// assert!(!Error::BadEndpoint { endpoint: "etcd:2379".into() }.is_recoverable());
    /// ```
    pub fn is_recoverable(&self) -> bool {
        match self {
            Error::FrameTooLarge { .. }
            | Error::MalformedFrame { .. }
            | Error::MalformedMessage { .. }
            | Error::Lagged { .. }
            | Error::BadRecord { .. }
            | Error::EngineEventFrames { .. }
            | Error::EngineEventSequence { .. }
            | Error::MalformedEngineEvent { .. }
            | Error::EngineEventsLost { .. }
            | Error::BlockSizeMismatch { .. } => true,
            Error::Connection { .. }
            | Error::RegistryUnavailable { .. }
            | Error::BadEndpoint { .. }
            | Error::BadDeploymentName { .. }
            | Error::Socket { .. }
            | Error::CannotRun { .. }
            | Error::NotListening { .. }
            | Error::NoFreePort { .. }
            | Error::BadTls { .. } => false,
        }
    }

    /// A failed or closed connection.
    pub(crate) fn connection(source: std::io::Error) -> Self {
        Error::Connection {
            source: source.into(),
        }
    }

    /// A ZMQ failure, from the socket library or in words.
    #[cfg(feature = "zmq")]
    pub(crate) fn socket(source: impl Into<BoxError>) -> Self {
        Error::Socket {
            source: source.into(),
        }
    }

    /// A malformed engine event payload.
    pub(crate) fn malformed_engine_event(reason: impl Into<String>) -> Self {
        Error::MalformedEngineEvent {
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn names_are_stable() {
        let io = || std::io::Error::other("broken");
        let errors = [
            Error::connection(io()),
            Error::FrameTooLarge {
                length: 2,
                limit: 1,
            },
            Error::MalformedFrame { source: "x".into() },
            Error::MalformedMessage {
                subject: "ns.kv_events".into(),
                topic: "kv_events",
                source: "x".into(),
            },
            Error::Lagged { missed: 1 },
            Error::BadRecord {
                origin: "a.json".into(),
                reason: "x".into(),
            },
            Error::RegistryUnavailable {
                registry: "dir".into(),
                reason: "x".into(),
            },
            Error::BadEndpoint {
                endpoint: "x".into(),
            },
            Error::EngineEventFrames { count: 2 },
            Error::EngineEventSequence { length: 2 },
            Error::malformed_engine_event("x"),
            Error::EngineEventsLost {
                expected: 1,
                received: 3,
            },
            Error::BlockSizeMismatch {
                engine: 16,
                ours: 4,
            },
            Error::Socket { source: "x".into() },
            Error::CannotRun {
                program: "etcd",
                source: io().into(),
            },
            Error::NotListening {
                program: "etcd",
                port: 1,
                log: String::new(),
            },
            Error::NoFreePort {
                source: io().into(),
            },
            Error::BadTls {
                what: "the key",
                reason: "x".into(),
            },
        ];
        let names: Vec<&str> = errors.iter().map(Error::name).collect();
        assert_eq!(
            names,
            [
                "connection",
                "frame_too_large",
                "malformed_frame",
                "malformed_message",
                "lagged",
                "bad_record",
                "registry_unavailable",
                "bad_endpoint",
                "engine_event_frames",
                "engine_event_sequence",
                "malformed_engine_event",
                "engine_events_lost",
                "block_size_mismatch",
                "socket",
                "cannot_run",
                "not_listening",
                "no_free_port",
                "bad_tls",
            ]
        );
    }

    #[test]
    fn causes_are_kept_as_sources_and_in_the_message() {
        let error = Error::connection(std::io::Error::other("reset by peer"));
        assert_eq!(error.to_string(), "connection: reset by peer");
        assert_eq!(
            error.source().map(ToString::to_string).as_deref(),
            Some("reset by peer")
        );
        assert!(!error.is_recoverable());
        let lagged = Error::Lagged { missed: 7 };
        assert_eq!(
            lagged.to_string(),
            "the subscriber fell behind and missed 7 messages"
        );
        assert!(lagged.is_recoverable());
        assert!(lagged.source().is_none());
    }
}
