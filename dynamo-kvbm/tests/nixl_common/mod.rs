//! Two NIXL agents with UCX backends in one process, for the `nixl` tests and bench.
//!
//! NIXL reads and writes only memory registered with an agent: the crate's [`NixlRegion`], whose
//! blocks here hold pseudo-random bytes ([`random_bytes`]), so that a misplaced or partial copy
//! shows.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use dynamo_kvbm::NixlRegion;
use nixl_sys::{
    Agent, AgentConfig, MemType, NixlError, OptArgs, XferDescList, XferOp, XferRequest, XferStatus,
};

/// Whether NIXL is loaded; `false` means skip. Panics where `DYNAMO_REQUIRE_NIXL=1` and it is
/// not, so that CI, which sets it, cannot skip silently.
pub(crate) fn nixl_or_skip(test: &str) -> bool {
    if dynamo_kvbm::is_nixl_loaded() {
        return true;
    }
    assert!(
        std::env::var("DYNAMO_REQUIRE_NIXL").as_deref() != Ok("1"),
        "DYNAMO_REQUIRE_NIXL=1 but NIXL is not loaded: is libnixl_capi.so on LD_LIBRARY_PATH?"
    );
    eprintln!("{test}: NIXL is not loaded in this process; skipped");
    false
}

/// How a transfer failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum XferError {
    /// NIXL would not build the request (a range outside the peer's registered memory, an agent
    /// whose metadata is not loaded).
    #[error("NIXL refused the request: {0}")]
    Refused(NixlError),
    /// Posting or polling failed.
    #[error("NIXL failed the transfer: {0}")]
    Failed(NixlError),
    #[error("the transfer did not complete in {0:?}")]
    TimedOut(Duration),
}

/// An agent with a UCX backend.
pub(crate) struct Peer {
    pub(crate) agent: Agent,
    pub(crate) args: OptArgs,
}

impl Peer {
    /// Needs NIXL loaded (see [`nixl_or_skip`]) and its UCX plugin in `NIXL_PLUGIN_DIR`.
    ///
    /// The agent's progress thread waits 1 ms between polls: with NIXL's default (no wait, as
    /// `Agent::new` makes it), every idle agent keeps a core busy (two idle agents used 1.99
    /// cores here, against 0.05 with the wait).
    pub(crate) fn ucx(name: &str) -> Peer {
        let config = AgentConfig {
            pthr_delay_us: 1_000,
            ..AgentConfig::default()
        };
        let agent = Agent::new_configured(name, &config).expect("an agent");
        let (_mems, params) = agent
            .get_plugin_params("UCX")
            .expect("UCX (NIXL_PLUGIN_DIR)");
        let backend = agent.create_backend("UCX", &params).expect("a UCX backend");
        let mut args = OptArgs::new().expect("options");
        args.add_backend(&backend).expect("backend chosen");
        Peer { agent, args }
    }

    /// A registered host region of `bytes`, holding [`random_bytes`]`(bytes, seed)`, or zeros
    /// for seed 0.
    pub(crate) fn storage(&self, bytes: usize, seed: u64) -> NixlRegion {
        let mut region = NixlRegion::new(&self.agent, Some(&self.args), bytes).expect("registered");
        if seed != 0 {
            region
                .as_mut_slice()
                .copy_from_slice(&random_bytes(bytes, seed));
        }
        region
    }

    /// Loads `other`'s current metadata, forgetting what was loaded before.
    pub(crate) fn load(&self, other: &Peer) {
        let name = other.agent.name();
        if self.agent.check_remote_metadata(&name, None) {
            self.agent.invalidate_remote_md(&name).expect("forgotten");
        }
        let md = other.agent.get_local_md().expect("metadata");
        assert_eq!(self.agent.load_remote_md(&md).expect("loaded"), name);
    }

    /// A request of `op` over the pairs of ranges `(local address, remote address, bytes)`,
    /// built but not posted.
    pub(crate) fn request(
        &self,
        op: XferOp,
        remote: &str,
        ranges: &[(usize, usize, usize)],
    ) -> Result<XferRequest, XferError> {
        let mut local = XferDescList::new(MemType::Dram).map_err(XferError::Refused)?;
        let mut far = XferDescList::new(MemType::Dram).map_err(XferError::Refused)?;
        for &(here, there, bytes) in ranges {
            local.add_desc(here, bytes, 0);
            far.add_desc(there, bytes, 0);
        }
        self.agent
            .create_xfer_req(op, &local, &far, remote, Some(&self.args))
            .map_err(XferError::Refused)
    }

    /// [`Peer::request`], posted and waited for, at most `limit`.
    pub(crate) fn transfer(
        &self,
        op: XferOp,
        remote: &str,
        ranges: &[(usize, usize, usize)],
        limit: Duration,
    ) -> Result<(), XferError> {
        let req = self.request(op, remote, ranges)?;
        let started = Instant::now();
        let mut pending = self
            .agent
            .post_xfer_req(&req, Some(&self.args))
            .map_err(XferError::Failed)?;
        while pending {
            if started.elapsed() > limit {
                return Err(XferError::TimedOut(limit));
            }
            std::thread::yield_now();
            pending = self
                .agent
                .get_xfer_status(&req)
                .map_err(XferError::Failed)?
                == XferStatus::InProgress;
        }
        Ok(())
    }
}

/// The address NIXL knows `region` by.
pub(crate) fn addr(region: &NixlRegion) -> usize {
    region.address()
}

/// `len` pseudo-random bytes from `seed` (splitmix64): block contents that differ byte by byte.
pub(crate) fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        bytes.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}
