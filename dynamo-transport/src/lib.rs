//! Engines across processes and machines.
//!
//! **The event plane** ([`events`]): KV events over NATS, from workers' engines to routers'
//! indexes. [`engine_events`] decodes the KV events vLLM and SGLang publish (ZMQ frames,
//! msgpack batches) into ours.
//!
//! **The request plane** ([`tcp`]): serve any [`Engine`](dynamo_core::Engine) on a TCP
//! endpoint with [`tcp::serve`], and get an Engine for a remote endpoint with
//! [`tcp::RemoteEngine::connect`]. One connection carries many concurrent streams, each
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
