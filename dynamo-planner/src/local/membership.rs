//! [`Membership`]: which workers discovery lists, so the scaler counts a worker ready once the
//! frontend can route to it.

use std::path::{Path, PathBuf};

use dynamo_core::{WorkerId, WorkerRole};
use futures::future::BoxFuture;
use serde::Deserialize;

use crate::Error;

/// The workers of a pool that the deployment's discovery lists now.
///
/// The [`LocalProcesses`](super::LocalProcesses) scaler counts a worker it started as ready
/// once its id is listed here: that is the view the frontend routes on, so a worker counted
/// ready is one requests can reach. [`RegistryDirectory`] reads a directory registry; a
/// deployment on etcd implements this over its discovery client.
pub trait Membership: Send + Sync {
    /// The ids of the `pool` workers listed now.
    fn members(&self, pool: WorkerRole) -> BoxFuture<'_, Result<Vec<WorkerId>, Error>>;
}

/// The directory registry of `dynamo-serve --registry DIR` (`dynamo_transport`'s
/// `DirectoryDiscovery`): every `*.json` file not starting with `.` is one worker's record,
/// with its `id` and `role` (a record without a role is aggregated).
///
/// ```no_run
/// # async fn run() -> Result<(), dynamo_planner::Error> {
/// use dynamo_core::WorkerRole;
/// use dynamo_planner::local::{Membership, RegistryDirectory};
///
/// let registry = RegistryDirectory::new("/tmp/dynamo-registry");
/// let listed = registry.members(WorkerRole::Aggregated).await?;
/// tracing::info!("{} workers joined", listed.len());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RegistryDirectory {
    directory: PathBuf,
}

impl RegistryDirectory {
    /// Read the registry in `directory` (which need not exist yet: then nobody has joined).
    pub fn new(directory: impl Into<PathBuf>) -> Self {
        RegistryDirectory {
            directory: directory.into(),
        }
    }

    /// The registry's directory.
    pub fn directory(&self) -> &Path {
        &self.directory
    }
}

/// The fields of a worker record the scaler reads; the others are ignored.
#[derive(Deserialize)]
struct Record {
    id: WorkerId,
    #[serde(default)]
    role: WorkerRole,
}

impl Membership for RegistryDirectory {
    fn members(&self, pool: WorkerRole) -> BoxFuture<'_, Result<Vec<WorkerId>, Error>> {
        Box::pin(async move {
            let unreadable = |error: std::io::Error| Error::Scale {
                pool,
                message: format!("cannot read the registry {}", self.directory.display()),
                source: Some(error.into()),
            };
            let mut entries = match tokio::fs::read_dir(&self.directory).await {
                Ok(entries) => entries,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(Vec::new());
                }
                Err(error) => return Err(unreadable(error)),
            };
            let mut members = Vec::new();
            while let Some(entry) = entries.next_entry().await.map_err(unreadable)? {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') || !name.ends_with(".json") {
                    continue;
                }
                // A record removed between listing and reading has left; one that does not
                // parse is not routed to either (the frontend logs it).
                let Ok(text) = tokio::fs::read_to_string(entry.path()).await else {
                    continue;
                };
                match serde_json::from_str::<Record>(&text) {
                    Ok(record) if record.role == pool => members.push(record.id),
                    Ok(_) => {}
                    Err(error) => tracing::debug!(file = %name, %error, "unreadable worker record"),
                }
            }
            Ok(members)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_are_listed_by_role() {
        let dir = std::env::temp_dir().join(format!("planner-membership-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let registry = RegistryDirectory::new(&dir);
        assert!(
            registry
                .members(WorkerRole::Aggregated)
                .await
                .is_ok_and(|m| m.is_empty())
        );
        std::fs::create_dir_all(&dir).expect("a directory");
        let record = |id: u64, role: &str| {
            format!(r#"{{"id": {{"worker": {id}, "dp_rank": 0}}, "address": "a", {role} "x": 1}}"#)
        };
        std::fs::write(dir.join("worker-1-0.json"), record(1, "")).expect("written");
        std::fs::write(
            dir.join("worker-2-0.json"),
            record(2, r#""role": "decode","#),
        )
        .expect("written");
        std::fs::write(dir.join(".worker-3-0.json.tmp"), record(3, "")).expect("written");
        std::fs::write(dir.join("worker-4-0.json"), "{half").expect("written");
        let aggregated = registry
            .members(WorkerRole::Aggregated)
            .await
            .expect("read");
        assert_eq!(aggregated, [WorkerId::new(1)]);
        let decode = registry.members(WorkerRole::Decode).await.expect("read");
        assert_eq!(decode, [WorkerId::new(2)]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
