//! Two NIXL agents with UCX backends in one process, for the `nixl` tests and bench.
//!
//! NIXL reads and writes only memory registered with an agent, and `nixl-sys` lets safe code
//! register only its own `SystemStorage`, which safe code can fill with one byte (`memset`) and
//! read (`as_slice`) but not write otherwise: so these blocks hold one repeated byte each.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use nixl_sys::{
    Agent, AgentConfig, MemType, NixlError, NixlRegistration, OptArgs, SystemStorage, XferDescList,
    XferOp, XferRequest, XferStatus,
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

    /// A registered host allocation of `bytes`, every byte `fill`.
    pub(crate) fn storage(&self, bytes: usize, fill: u8) -> SystemStorage {
        let mut storage = SystemStorage::new(bytes).expect("allocated");
        storage.memset(fill);
        storage
            .register(&self.agent, Some(&self.args))
            .expect("registered");
        storage
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

/// The address NIXL knows `storage` by.
pub(crate) fn addr(storage: &SystemStorage) -> usize {
    storage.as_slice().as_ptr() as usize
}
