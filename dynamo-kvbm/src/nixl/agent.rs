//! [`NixlAgent`]: a NIXL agent with a UCX backend, as this crate's NIXL transfers use.

use std::fmt;

use nixl_sys::{Agent, AgentConfig, Backend, OptArgs};

use crate::Error;

/// A NIXL agent with a UCX backend: what owns registered memory ([`NixlRegion`](crate::NixlRegion))
/// and runs transfers. Its name must be unique among the agents that load each other's metadata.
///
/// Its progress thread waits 1 ms between polls: with NIXL's default (no wait), every idle
/// agent keeps a core busy.
pub struct NixlAgent {
    agent: Agent,
    backend: Backend,
}

/// [`Error::Nixl`] for `operation`.
pub(crate) fn nixl_error(operation: &'static str) -> impl FnOnce(nixl_sys::NixlError) -> Error {
    move |source| Error::Nixl { operation, source }
}

impl NixlAgent {
    /// An agent named `name` with a UCX backend (NIXL finds its plugins through
    /// `NIXL_PLUGIN_DIR`).
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when NIXL is not loaded ([`crate::is_nixl_loaded`]), and
    /// [`Error::Nixl`] when the agent or its backend cannot be made.
    pub fn ucx(name: &str) -> Result<Self, Error> {
        if !crate::is_nixl_loaded() {
            return Err(Error::Unavailable {
                tier: dynamo_core::StorageTier::Host,
                reason: "NIXL (libnixl_capi.so) is not loaded".into(),
            });
        }
        let config = AgentConfig {
            pthr_delay_us: 1_000,
            ..AgentConfig::default()
        };
        let agent = Agent::new_configured(name, &config).map_err(nixl_error("make an agent"))?;
        let (_mems, params) = agent
            .get_plugin_params("UCX")
            .map_err(nixl_error("find the UCX plugin"))?;
        let backend = agent
            .create_backend("UCX", &params)
            .map_err(nixl_error("make a UCX backend"))?;
        Ok(NixlAgent { agent, backend })
    }

    /// The agent.
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// Options that name this agent's backend, for registrations and transfers.
    ///
    /// # Errors
    ///
    /// [`Error::Nixl`] when NIXL cannot make them.
    pub fn args(&self) -> Result<OptArgs, Error> {
        let mut args = OptArgs::new().map_err(nixl_error("make options"))?;
        args.add_backend(&self.backend)
            .map_err(nixl_error("choose the backend"))?;
        Ok(args)
    }

    /// The agent's name.
    pub fn name(&self) -> String {
        self.agent.name()
    }
}

impl fmt::Debug for NixlAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NixlAgent")
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}
