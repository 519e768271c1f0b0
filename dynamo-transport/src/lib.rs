//! Engines across processes and machines: the same engines and router as in one process,
//! joined by infrastructure users already run — plain TCP for requests, NATS for events, etcd
//! (or a shared directory) for discovery. `dynamo-serve worker` and `dynamo-serve frontend` are
//! built from these parts; `docs/transport.md` walks through them with their figures.
//!
//! **The event plane** ([`events`]): KV events and load reports from workers to routers, in
//! process ([`events::LocalBus`]) or over NATS ([`events::NatsEvents`]).
//! [`engine_events`] subscribes to the KV events vLLM and SGLang publish over ZMQ (three
//! frames, msgpack batches), replays what was lost from the engine's replay socket, and turns
//! them into ours.
//!
//! **Discovery** ([`discovery`]): workers register a record (etcd under a lease, or a file in a
//! shared directory, or a fixed list), and [`discovery::follow`] keeps a router's workers equal
//! to the registered ones over the request plane. [`local`] starts throwaway `nats-server` and
//! `etcd` processes for tests and trials.
//!
//! **The request plane** ([`tcp`]): serve any [`Engine`](dynamo_core::Engine) on a TCP
//! endpoint with [`tcp::serve`], and get an Engine for a remote endpoint with
//! [`tcp::RemoteEngine::connect`] (or a pool of connections with
//! [`tcp::RemoteEngine::connect_pooled`]). One connection carries many concurrent streams, each
//! request's tokens come back as they are produced, dropping a stream cancels the remote work,
//! a slow reader slows its producer instead of filling memory, a frame over the size limit is a
//! clear error that leaves the other streams alone, and a lost connection ends every stream on
//! it with [`ErrorClass::Unavailable`](dynamo_core::ErrorClass::Unavailable).
//!
//! ```
//! use dynamo_core::{EchoEngine, EngineExt, GenerateRequest};
//! use dynamo_transport::tcp::{RemoteEngine, ServeConfig, serve};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let address = listener.local_addr()?;
//! tokio::spawn(serve(listener, EchoEngine::new(), ServeConfig::default()));
//!
//! let mut remote = RemoteEngine::connect(address).await?;
//! let generation = remote
//!     .generate_all(GenerateRequest::new("r1", "echo", vec![7, 8, 9]).with_max_tokens(2))
//!     .await?;
//! assert_eq!(generation.tokens, [7, 8]);
//! # Ok(())
//! # }
//! ```

pub mod discovery;
pub mod engine_events;
pub mod events;
pub mod local;
pub mod tcp;
