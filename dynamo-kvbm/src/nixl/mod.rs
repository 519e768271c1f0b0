//! NIXL, the transfer library for moving KV blocks between GPUs, hosts and storage across
//! nodes: whether it is there, and host memory it can move ([`NixlRegion`]).
//!
//! `nixl-sys` is built with its stub API: a C++ shim that opens `libnixl_capi.so` on its first
//! call and forwards every NIXL function to it. Where the library cannot be opened, any NIXL
//! call but one aborts the process (an `abort()` in C++, which no Rust code can catch). That one
//! is the stub check behind [`is_nixl_loaded`], and every NIXL call this crate makes must come
//! after it answers `true`.
//!
//! The libraries of PyPI's `nixl-cu12` wheel load this way on a machine without a GPU, and the
//! crate's `nixl_transfer` tests and `nixl` bench move host memory between two NIXL agents over
//! UCX with them (docs/kvbm.md, "GPU and NIXL", says how).

mod agent;
mod region;

pub use agent::NixlAgent;
pub(crate) use agent::nixl_error;
pub use region::NixlRegion;

/// Whether the real NIXL library (`libnixl_capi.so`, found through the dynamic loader's path,
/// for example `LD_LIBRARY_PATH`) is loaded in this process.
///
/// The first call tries to open it; the answer is then fixed for the life of the process. It
/// never aborts and never panics.
///
/// ```
/// // Without NIXL, blocks move through the local tiers only.
/// let over_nixl = dynamo_kvbm::is_nixl_loaded();
/// # let _ = over_nixl;
/// ```
pub fn is_nixl_loaded() -> bool {
    !nixl_sys::is_stub()
}
