//! A multi-tier KV cache block manager.
//!
//! (Front page in progress.)

mod error;
mod store;

pub use error::Error;
pub use store::BlockStore;
