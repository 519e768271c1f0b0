//! Policies by name, for command lines and settings files.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{
    DynamoSla, DynamoSlaConfig, LoadConfig, LoadPolicy, Policy, SlaConfig, SlaPolicy, SlaTargets,
};
use crate::Error;
use crate::perf::PerfProfile;

/// Which policy to plan with: `dynamo_sla` ([`DynamoSla`]), `sla` ([`SlaPolicy`]) or `load`
/// ([`LoadPolicy`]), each with its default settings.
///
/// ```
/// use dynamo_planner::policy::{PolicyKind, SlaTargets};
///
/// let kind: PolicyKind = "load".parse()?;
/// let policy = kind.build(None, SlaTargets::default())?;
/// assert_eq!(policy.name(), "load");
/// // The SLA policies need a profile.
/// assert!(PolicyKind::Sla.build(None, SlaTargets::default()).is_err());
/// # Ok::<(), dynamo_planner::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// [`DynamoSla`]: NVIDIA Dynamo's throughput-based SLA planner.
    DynamoSla,
    /// [`SlaPolicy`]: ours.
    Sla,
    /// [`LoadPolicy`]: queues and KV usage with hysteresis.
    Load,
}

impl PolicyKind {
    /// Every kind's name, for help texts.
    pub const NAMES: [&'static str; 3] = ["dynamo_sla", "sla", "load"];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::DynamoSla => "dynamo_sla",
            PolicyKind::Sla => "sla",
            PolicyKind::Load => "load",
        }
    }

    /// Whether it plans from a [`PerfProfile`].
    pub fn needs_profile(self) -> bool {
        self != PolicyKind::Load
    }

    /// A fresh policy of this kind, aiming at `targets`.
    ///
    /// # Errors
    ///
    /// [`Error::Setting`] for an SLA policy without a `profile`.
    pub fn build(
        self,
        profile: Option<PerfProfile>,
        targets: SlaTargets,
    ) -> Result<Box<dyn Policy>, Error> {
        let profile = match (self.needs_profile(), profile) {
            (false, _) => None,
            (true, Some(profile)) => Some(profile),
            (true, None) => {
                return Err(Error::Setting {
                    setting: "policy",
                    reason: format!("`{self}` plans from a performance profile; none was given"),
                });
            }
        };
        Ok(match (self, profile) {
            (PolicyKind::DynamoSla, Some(p)) => {
                Box::new(DynamoSla::new(p, DynamoSlaConfig { targets }))
            }
            (PolicyKind::Sla, Some(p)) => Box::new(SlaPolicy::new(
                p,
                SlaConfig {
                    targets,
                    ..SlaConfig::default()
                },
            )),
            _ => Box::new(LoadPolicy::new(LoadConfig::default())),
        })
    }
}

impl FromStr for PolicyKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim() {
            "dynamo_sla" => Ok(PolicyKind::DynamoSla),
            "sla" => Ok(PolicyKind::Sla),
            "load" => Ok(PolicyKind::Load),
            other => Err(Error::Setting {
                setting: "policy",
                reason: format!("`{other}` is not one of {}", PolicyKind::NAMES.join(", ")),
            }),
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf::tests::sample;

    #[test]
    fn every_name_builds_its_policy() -> Result<(), Error> {
        for name in PolicyKind::NAMES {
            let kind: PolicyKind = name.parse()?;
            assert_eq!(kind.to_string(), name);
            let policy = kind.build(Some(sample()?), SlaTargets::default())?;
            assert_eq!(policy.name(), name);
        }
        assert!("arima".parse::<PolicyKind>().is_err());
        assert!(matches!(
            PolicyKind::DynamoSla.build(None, SlaTargets::default()),
            Err(Error::Setting { .. })
        ));
        Ok(())
    }
}
