//! KV hand-overs over NIXL: the prefill side stages blocks in a registered slab
//! ([`NixlSource`]); the decode side READs them one-sided into registered landing memory
//! ([`NixlFetch`]). The block server's TCP connection carries the control: the stage request,
//! the prefill agent's metadata and the blocks' addresses, and the release.

mod fetch;
mod landed;
mod source;

pub use fetch::NixlFetch;
pub use source::NixlSource;
