//! Engines across processes and machines: the same engines and router as in one process,
//! joined by infrastructure users already run — plain TCP for requests, NATS for events, etcd
//! (or Kubernetes Leases, or a shared directory) for discovery. `dynamo-serve` assembles both of its deployments,
//! one process or many, from these parts; `docs/transport.md` walks through them with their
//! figures.
//!
//! The crate yields plain things and leaves the wiring to you (or to `dynamo-serve`): engines,
//! streams of events, and a `tower::discover::Discover` of workers. It depends on
//! `dynamo-core` only, so a router (`dynamo-router`) consumes what it yields without either
//! crate knowing the other.
//!
//! | part | trait | implementations |
//! |---|---|---|
//! | request plane | [`Transport`]: serve an engine at an address, reach one as an engine | [`InProcess`] (one process), [`Tcp`] (framed TCP, [`tcp`]; TLS and mutual TLS with [`tcp::PlaneTls`]) |
//! | event plane | [`events::EventPlane`]: publish and subscribe to KV events, workers' load reports, frontends' traffic reports, resync requests and router replicas' messages | [`events::LocalBus`] (in process), `events::NatsEvents` (feature `nats`) |
//! | discovery | [`discovery::Discovery`]: the registered workers, as tower `Change`s | [`discovery::StaticDiscovery`], [`discovery::DirectoryDiscovery`], `discovery::EtcdDiscovery` (feature `etcd`), `discovery::KubernetesRegistry` (feature `kube`) |
//! | engine events | — | [`engine_events`]: vLLM / SGLang KV events decoded from their msgpack batches; `engine_events::EngineEventSource` reads them over ZMQ with replay (feature `zmq`) |
//!
//! [`discovery::connect`] joins the last two ends: it watches a registry and connects to each
//! worker through a transport, reconnecting when a connection drops, and yields the workers'
//! engines as a `Discover` stream for `dynamo_router::RouterService::discover`. [`local`]
//! starts throwaway `nats-server` and `etcd` processes for tests and trials.
//!
//! Nothing here spawns a task behind your back except the TCP client's (each connection's
//! reader and writer, and a cancellation watcher per stream: [`tcp::RemoteEngine`]), the etcd
//! watch and lease keep-alive, and the ZMQ subscriber behind
//! `engine_events::EngineEventSource::subscribe`; every other background job is a future you
//! run ([`Served::serving`], [`events::publish_all`], [`discovery::Connected`]).
//!
//! # Example
//!
//! Serve an engine over TCP and call it from elsewhere, exactly as through [`InProcess`]:
//!
//! ```
//! use dynamo_core::{EchoEngine, EngineExt, GenerateRequest};
//! use dynamo_transport::{Tcp, Transport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let transport = Tcp::new();
//! let served = transport.serve(EchoEngine::new().boxed_engine()).await?;
//! tokio::spawn(served.serving);
//!
//! let mut remote = transport.connect(&served.address).await?;
//! let generation = remote
//!     .generate_all(GenerateRequest::new("r1", "echo", vec![7, 8, 9]).with_max_tokens(2))
//!     .await?;
//! assert_eq!(generation.tokens, [7, 8]);
//! # Ok(())
//! # }
//! ```
//!
//! On the wire, one TCP connection carries many concurrent streams, each request's tokens come
//! back as they are produced, dropping a stream cancels the remote work, a slow reader slows
//! its producer instead of filling memory, a frame over the size limit is a clear error that
//! leaves the other streams alone, and a lost connection ends every stream on it with
//! [`ErrorClass::Unavailable`](dynamo_core::ErrorClass::Unavailable).
//!
//! # Errors
//!
//! Whatever reaches an engine or a router is a [`dynamo_core::Error`]: [`Transport`]'s
//! methods, a remote engine's streams, [`events::EventPlane`]'s `publish` and `subscribe`.
//! Everything else fails with this crate's one [`Error`]: the items of a subscription
//! ([`events::Subscription`]), of a membership watch ([`discovery::MembershipStream`]) and of
//! an engine's KV events, registrations, and [`local`] servers. Its variants say what went
//! wrong ([`Error::Lagged`], [`Error::BadRecord`], [`Error::RegistryUnavailable`],
//! [`Error::FrameTooLarge`], …); [`Error::name`] is a stable snake_case name for metric
//! labels, and [`Error::is_recoverable`] tells an error about one skipped item (a frame, a
//! message, a record), after which the connection or stream that reported it goes on, from
//! a failure of the connection, socket or registry itself.
//!
//! An error on the request plane travels to the client as the body of an error frame
//! ([`tcp::ErrorBody`]), which keeps a [`dynamo_core::Error`]'s class and message.
//!
//! # Features
//!
//! | feature | what it enables | default |
//! |---|---|---|
//! | `nats` | `events::NatsEvents`, the event plane over NATS (async-nats) | no |
//! | `etcd` | `discovery::EtcdDiscovery` and `EtcdRegistration`, over etcd's JSON gateway (hyper) | no |
//! | `zmq` | `engine_events::EngineEventSource`, vLLM / SGLang events over ZMQ (zeromq) | no |
//! | `kube` | `discovery::KubernetesRegistry` and `KubernetesRegistration`, workers as Kubernetes Leases (kube) | no |
//! | `libzmq` | only a test: `tests/zmq.rs`'s subscriber against libzmq (a Python with pyzmq) | no |

pub mod discovery;
pub mod engine_events;
mod error;
pub mod events;
pub mod local;
pub mod tcp;
mod transport;

pub use error::Error;
pub use transport::{InProcess, InProcessEngine, Served, Tcp, Transport};
