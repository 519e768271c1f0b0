//! The TCP request plane.
//!
//! Every message is a *frame*: a 4-byte big-endian length, then that many bytes of JSON (see
//! [`Frame`]). A client opens a stream with a `request` frame under a stream id of its choosing;
//! the server answers with `chunk` frames, the last one final, or an `error` frame; a `cancel`
//! frame from the client stops the remote generation. Frames of different streams interleave
//! freely on one connection.
//!
//! The connections can run over TLS, optionally mutual ([`PlaneTls`]): set
//! [`ServeConfig::tls`] on the serving side and connect with [`RemoteEngine::connect_tls`], or
//! give both to [`Tcp::tls`](crate::Tcp::tls).

mod client;
mod frame;
mod server;
mod tls;

pub use client::RemoteEngine;
#[doc(hidden)]
pub use frame::read_frame;
pub use frame::{DEFAULT_MAX_FRAME, ErrorBody, Frame};
pub use server::{ServeConfig, serve, serve_with_shutdown};
pub use tls::PlaneTls;
#[cfg(feature = "etcd")]
pub(crate) use tls::client_config;
