//! Worker health: stalled streams end, failing workers leave routing, canaries bring them back.
//!
//! A worker can fail without closing its connection: a wedged GPU, a deadlocked scheduler, a
//! process stopped by a debugger. Discovery still lists it and its socket stays open, so
//! nothing else notices. The [`RouterService`](crate::RouterService) watches every attempt it
//! dispatches:
//!
//! - **Stall detection.** An attempt that produces no chunk for
//!   [`HealthConfig::stall_timeout`] (waiting for the first token or between two tokens) ends
//!   with an [`Error::Unavailable`](dynamo_core::Error::Unavailable) whose source is a
//!   [`Stalled`] naming the worker and the deadline, and its stream is dropped, which cancels
//!   the work on the worker. Behind [`Migrate`](crate::migrate::Migrate) the request continues
//!   on another worker with the tokens already streamed. A request whose client reads the
//!   answer whole ([`Delivery::Whole`](dynamo_core::Delivery::Whole)) is watched only until its
//!   engine call returns: an engine may then send the whole answer as one chunk, after any
//!   time.
//! - **Passive ejection.** A worker whose attempts fail with `unavailable` (or end without a
//!   last chunk) [`eject_after`](HealthConfig::eject_after) times in a row, or stall once, is
//!   withdrawn from routing. What the router knows of its cache is kept. The log says
//!   `worker X ejected: ...` and `dynamo_router_ejections_total{reason}` counts it, with
//!   `reason` one of `stalled`, `failed`, `canary`.
//! - **A cap on ejection.** [`max_ejected_percent`](HealthConfig::max_ejected_percent) (as
//!   Envoy's `max_ejection_percent`) keeps a share of the workers routed whatever happens: a
//!   worker is ejected only while fewer than that share of the workers are ejected (one always
//!   may be). Without a cap, an overload that makes every worker slow can eject them one after
//!   the other, each ejection loading the others more, until none is left; with one, a worker
//!   due for ejection past the cap stays routed (logged `worker X would be ejected ... it stays
//!   routed`, counted in `dynamo_router_ejections_capped_total{reason}`), and its next failure
//!   tries again, once another worker has returned. 100 (the default) lets every worker go.
//! - **Return.** The future of [`RouterService::health_checks`](crate::RouterService::health_checks)
//!   (spawn it; the library starts no task of its own) sends every ejected worker a canary each
//!   [`probe_interval`](HealthConfig::probe_interval): a generate request of one prompt token and
//!   one output token, with [`probe_timeout`](HealthConfig::probe_timeout) as its deadline. A
//!   worker that answers (any answer but `unavailable`) returns to routing.
//! - **Idle canaries.** The same future probes a routed worker that has had no request for
//!   `probe_interval`, so a worker that hangs while idle is ejected before a client's
//!   request finds it. A canary that times out ejects it at once, unless the worker's engine
//!   is shared with other clients and says it is busy: when its fresh [`ReportedLoad`]
//!   (given to [`RouterService::report_load`](crate::RouterService::report_load)) counts
//!   more requests than the canary itself (a report read after the canary was sent may
//!   count it), the canary was queued behind that work, and the worker stays routed (logged
//!   at info, counted in `dynamo_router_canaries_excused_total`). A worker with no report,
//!   a stale one, or one that says it is idle is ejected as before.
//!
//! A fresh [`ReportedLoad`] also raises the worker's booked load before the busy thresholds
//! and the policy see it; see [`ReportedLoad`].
//!
//! Without a cap, every worker may be ejected, the last one too: a router whose workers all
//! hang refuses requests with `unavailable` at once rather than letting them wait for a
//! deadline.

mod probe;
mod report;
mod tracker;
mod watch;

use std::time::Duration;

use dynamo_core::WorkerId;

pub use report::ReportedLoad;
pub(crate) use tracker::HealthTracker;
pub(crate) use watch::Watched;

/// How the router watches its workers; see [the module](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// The longest an attempt may go without a chunk (the first one or the next one) before
    /// it ends as stalled; `None` turns stall detection off.
    pub stall_timeout: Option<Duration>,
    /// How many attempts in a row may fail with `unavailable` before their worker is
    /// ejected; a stall ejects at once. 0 turns passive ejection off.
    pub eject_after: u32,
    /// How often ejected and idle workers get a canary.
    pub probe_interval: Duration,
    /// A canary's deadline.
    pub probe_timeout: Duration,
    /// The model name canaries carry.
    pub canary_model: String,
    /// Whether routed workers with no request for `probe_interval` get canaries too.
    pub probe_idle: bool,
    /// A worker is ejected only while fewer than this share of the workers, in percent, are
    /// ejected; one always may be. 100 lets every worker be ejected.
    pub max_ejected_percent: u32,
}

impl Default for HealthConfig {
    /// Stalls after 30 s, ejection after 3 failures in a row, canaries each 5 s with a 5 s
    /// deadline, idle workers probed, no cap on the share ejected.
    fn default() -> Self {
        HealthConfig {
            stall_timeout: Some(Duration::from_secs(30)),
            eject_after: 3,
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(5),
            canary_model: "canary".to_owned(),
            probe_idle: true,
            max_ejected_percent: 100,
        }
    }
}

impl HealthConfig {
    /// End an attempt that produces no chunk for `timeout`; `None` turns it off.
    pub fn stall_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.stall_timeout = timeout;
        self
    }

    /// Eject a worker after `failures` failed attempts in a row; 0 turns it off.
    pub fn eject_after(mut self, failures: u32) -> Self {
        self.eject_after = failures;
        self
    }

    /// Probe ejected and idle workers every `interval`, each canary with `timeout` to answer.
    pub fn probe(mut self, interval: Duration, timeout: Duration) -> Self {
        self.probe_interval = interval;
        self.probe_timeout = timeout;
        self
    }

    /// The model name canaries carry (a worker may refuse other models' requests).
    pub fn canary_model(mut self, model: impl Into<String>) -> Self {
        self.canary_model = model.into();
        self
    }

    /// Whether idle routed workers get canaries.
    pub fn probe_idle(mut self, probe: bool) -> Self {
        self.probe_idle = probe;
        self
    }

    /// Eject a worker only while fewer than `percent`% of the workers are ejected (one always
    /// may be); 100 or more lets every worker be ejected.
    ///
    /// ```
    /// use dynamo_router::health::HealthConfig;
    ///
    /// let config = HealthConfig::default().max_ejected_percent(50);
    /// // Of four workers, a second may be ejected (1 of 4 is below 50%), a third may not.
    /// assert!(config.may_eject(1, 4));
    /// assert!(!config.may_eject(2, 4));
    /// // The first always may, however few workers there are.
    /// assert!(HealthConfig::default().max_ejected_percent(10).may_eject(0, 3));
    /// ```
    pub fn max_ejected_percent(mut self, percent: u32) -> Self {
        self.max_ejected_percent = percent;
        self
    }

    /// Whether one more worker may be ejected when `ejected` of `workers` are.
    pub fn may_eject(&self, ejected: usize, workers: usize) -> bool {
        ejected == 0
            || (ejected as u128) * 100 < (workers as u128) * u128::from(self.max_ejected_percent)
    }
}

/// Why an attempt ended: its worker produced no chunk within the deadline. The source of the
/// [`Error::Unavailable`](dynamo_core::Error::Unavailable) the attempt's stream ends with.
///
/// ```
/// use dynamo_core::Error;
/// use dynamo_router::health::Stalled;
///
/// assert!(Stalled::of(&Error::unavailable("down")).is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("worker {worker} produced no token for {timeout:?}")]
pub struct Stalled {
    /// The worker that stalled.
    pub worker: WorkerId,
    /// The deadline it missed.
    pub timeout: Duration,
}

impl Stalled {
    /// The [`Stalled`] behind `error`, if it ended a stalled attempt.
    pub fn of(error: &dynamo_core::Error) -> Option<&Stalled> {
        std::error::Error::source(error)?.downcast_ref()
    }

    /// This as the error the attempt's stream ends with.
    pub(crate) fn into_error(self) -> dynamo_core::Error {
        dynamo_core::Error::unavailable(self.to_string()).with_source(self)
    }
}
