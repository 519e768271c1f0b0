//! [`Listed`]: the workers a deployment's discovery lists, with their roles, as a
//! [`Membership`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use dynamo_core::{WorkerId, WorkerRole};
use dynamo_transport::discovery::{Discovery, MembershipStream};
use futures::StreamExt;
use futures::future::BoxFuture;
use tower::discover::Change;

use super::Membership;

/// The workers a registry (any [`Discovery`]: etcd, a directory, Kubernetes Leases) lists now,
/// by id, with the role each registered with; a task follows the registry's changes for as
/// long as a clone lives.
///
/// The [`LocalProcesses`](super::LocalProcesses) scaler counts a worker it started as ready once
/// it is listed here, and `dynamo-serve planner` reads each worker's pool from it (load reports
/// carry no role). Needs a Tokio runtime.
///
/// ```
/// use dynamo_core::{WorkerId, WorkerRole};
/// use dynamo_planner::local::{Listed, Membership};
/// use dynamo_transport::discovery::{StaticDiscovery, WorkerRecord};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let record = WorkerRecord {
///     id: WorkerId::new(7),
///     address: "127.0.0.1:9000".into(),
///     model: "smollm2".into(),
///     block_size: 16,
///     role: WorkerRole::Decode,
///     kv_layout: None,
/// };
/// let listed = Listed::follow(&StaticDiscovery::new(vec![record]));
/// while listed.role(WorkerId::new(7)).is_none() {
///     tokio::task::yield_now().await; // the follower task takes the registry's changes
/// }
/// assert_eq!(listed.members(WorkerRole::Decode).await.unwrap(), [WorkerId::new(7)]);
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Listed {
    roles: Arc<Mutex<HashMap<WorkerId, WorkerRole>>>,
}

impl Listed {
    /// Follow `discovery` from now on.
    pub fn follow(discovery: &dyn Discovery) -> Self {
        let listed = Listed::default();
        tokio::spawn(apply(discovery.watch(), Arc::downgrade(&listed.roles)));
        listed
    }

    /// A fixed list, followed by nothing.
    pub fn of(workers: impl IntoIterator<Item = (WorkerId, WorkerRole)>) -> Self {
        Listed {
            roles: Arc::new(Mutex::new(workers.into_iter().collect())),
        }
    }

    /// The role `worker` registered with, while it is listed.
    pub fn role(&self, worker: WorkerId) -> Option<WorkerRole> {
        self.roles().get(&worker).copied()
    }

    fn roles(&self) -> std::sync::MutexGuard<'_, HashMap<WorkerId, WorkerRole>> {
        self.roles.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Membership for Listed {
    fn members(&self, pool: WorkerRole) -> BoxFuture<'_, Result<Vec<WorkerId>, crate::Error>> {
        let members = self
            .roles()
            .iter()
            .filter(|&(_, &role)| role == pool)
            .map(|(&worker, _)| worker)
            .collect();
        Box::pin(std::future::ready(Ok(members)))
    }
}

/// Apply the registry's changes to `roles` until the last [`Listed`] is dropped. A change that
/// cannot be read is logged and skipped: the registry stream goes on after it.
async fn apply(mut changes: MembershipStream, roles: Weak<Mutex<HashMap<WorkerId, WorkerRole>>>) {
    while let Some(change) = changes.next().await {
        let Some(roles) = roles.upgrade() else {
            return;
        };
        let mut roles = roles.lock().unwrap_or_else(PoisonError::into_inner);
        match change {
            Ok(Change::Insert(worker, record)) => {
                roles.insert(worker, record.role);
            }
            Ok(Change::Remove(worker)) => {
                roles.remove(&worker);
            }
            Err(error) => tracing::warn!(%error, "a registry change could not be read"),
        }
    }
}

#[cfg(test)]
mod tests {
    use dynamo_transport::discovery::{StaticDiscovery, WorkerRecord};

    use super::*;

    fn record(id: u64, role: WorkerRole) -> WorkerRecord {
        WorkerRecord {
            id: WorkerId::new(id),
            address: format!("127.0.0.1:{}", 9000 + id),
            model: "smollm2".into(),
            block_size: 16,
            role,
            kv_layout: None,
        }
    }

    #[tokio::test]
    async fn each_pool_lists_the_workers_registered_in_its_role() {
        let registry = StaticDiscovery::new(vec![
            record(1, WorkerRole::Prefill),
            record(2, WorkerRole::Decode),
            record(3, WorkerRole::Decode),
        ]);
        let listed = Listed::follow(&registry);
        // The registry's changes arrive on the follower task.
        let decode = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                let mut decode = listed.members(WorkerRole::Decode).await.expect("listed");
                if decode.len() == 2 {
                    decode.sort();
                    break decode;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("both decode workers listed");
        assert_eq!(decode, [WorkerId::new(2), WorkerId::new(3)]);
        let prefill = listed.members(WorkerRole::Prefill).await.expect("listed");
        assert_eq!(prefill, [WorkerId::new(1)]);
        assert!(
            listed
                .members(WorkerRole::Aggregated)
                .await
                .expect("listed")
                .is_empty()
        );
        assert_eq!(listed.role(WorkerId::new(1)), Some(WorkerRole::Prefill));
        assert_eq!(listed.role(WorkerId::new(4)), None);
    }
}
