//! Workers registered in etcd under leases, watched through etcd's JSON gateway.
//!
//! etcd serves its v3 API as JSON over HTTP next to gRPC on the same client port (the
//! grpc-gateway, on by default since etcd 3.4). Speaking it keeps the dependency list to an
//! HTTP client: keys and values travel base64-encoded, 64-bit integers as strings, and a
//! watch is one long response with one JSON message per line.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use tower::discover::Change;

use super::{Discovery, Gone, MembershipStream, WorkerChange, WorkerRecord, spawn_watcher};
use crate::Error;

mod client;

pub use client::EtcdAccess;
use client::{Etcd, key_value};

/// How long the watcher waits before it reconnects after losing etcd.
const RETRY: Duration = Duration::from_millis(500);

fn workers_prefix(namespace: &str) -> String {
    format!("{namespace}/workers/")
}

/// Watches the workers registered in etcd under `{namespace}/workers/`.
///
/// The watcher reads the registered workers, then watches from that revision, so no change
/// falls between the two. When etcd is lost it reports [`Error::RegistryUnavailable`],
/// retries every 500 ms, and on reconnecting reads the workers again and reports the
/// difference.
#[derive(Debug, Clone)]
pub struct EtcdDiscovery {
    etcd: Etcd,
    prefix: String,
}

impl EtcdDiscovery {
    /// Watch the workers of `namespace` in the etcd at `endpoint` (`http://HOST:PORT`).
    ///
    /// # Errors
    ///
    /// [`Error::BadEndpoint`] when `endpoint` is not an `http://` address.
    pub fn new(endpoint: &str, namespace: &str) -> Result<Self, Error> {
        Self::new_with(endpoint, namespace, &EtcdAccess::default())
    }

    /// [`new`](Self::new) for an etcd that asks for a user (in `endpoint`) or serves HTTPS.
    ///
    /// # Errors
    ///
    /// [`Error::BadEndpoint`] when `endpoint` is neither `http://` nor `https://` with a root
    /// certificate; [`Error::BadTls`] when the certificate files cannot be used.
    pub fn new_with(endpoint: &str, namespace: &str, access: &EtcdAccess) -> Result<Self, Error> {
        Ok(EtcdDiscovery {
            etcd: Etcd::new(endpoint, access)?,
            prefix: workers_prefix(namespace),
        })
    }
}

impl Discovery for EtcdDiscovery {
    fn watch(&self) -> MembershipStream {
        let (etcd, prefix) = (self.etcd.clone(), self.prefix.clone());
        spawn_watcher(|changes| {
            Watcher {
                etcd,
                prefix,
                known: HashMap::new(),
                changes,
            }
            .run()
        })
    }
}

/// The watcher's task: what it has reported, and where it reports.
struct Watcher {
    etcd: Etcd,
    prefix: String,
    /// The records reported as joined, by key.
    known: HashMap<String, WorkerRecord>,
    changes: mpsc::Sender<Result<WorkerChange, Error>>,
}

impl Watcher {
    async fn run(mut self) {
        loop {
            let error = match self.sync_and_watch().await {
                Ok(error) => error,
                Err(Gone) => return,
            };
            if self.changes.send(Err(error)).await.is_err() {
                return;
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Read the registered workers, report the difference, then follow the watch until it
    /// fails; the error says why.
    async fn sync_and_watch(&mut self) -> Result<Error, Gone> {
        let (revision, pairs) = match self.etcd.range(&self.prefix).await {
            Ok(found) => found,
            Err(error) => return Ok(error),
        };
        let present: Vec<String> = pairs.iter().map(|(key, _)| key.clone()).collect();
        let departed: Vec<String> = self
            .known
            .keys()
            .filter(|key| !present.contains(key))
            .cloned()
            .collect();
        for key in departed {
            self.delete(&key).await?;
        }
        for (key, value) in pairs {
            self.put(key, &value).await?;
        }
        let mut body = match self.etcd.watch(&self.prefix, revision + 1).await {
            Ok(body) => body,
            Err(error) => return Ok(error),
        };
        let mut buffer = BytesMut::new();
        loop {
            let frame = match body.frame().await {
                Some(Ok(frame)) => frame,
                Some(Err(error)) => return Ok(self.etcd.unavailable(format!("watch: {error}"))),
                None => return Ok(self.etcd.unavailable("the watch ended")),
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buffer.extend_from_slice(&data);
            while let Some(end) = buffer.iter().position(|&byte| byte == b'\n') {
                let line = buffer.split_to(end + 1);
                let Ok(message) = serde_json::from_slice::<Value>(&line) else {
                    return Ok(self.etcd.unavailable("watch: a message is not JSON"));
                };
                let result = &message["result"];
                if result["canceled"].as_bool() == Some(true) {
                    return Ok(self.etcd.unavailable(format!(
                        "watch cancelled: {}",
                        result["cancel_reason"]
                            .as_str()
                            .unwrap_or("no reason given")
                    )));
                }
                for event in result["events"].as_array().into_iter().flatten() {
                    let Some((key, value)) = key_value(&event["kv"]) else {
                        continue;
                    };
                    if event["type"].as_str() == Some("DELETE") {
                        self.delete(&key).await?;
                    } else {
                        self.put(key, &value).await?;
                    }
                }
            }
        }
    }

    async fn send(&self, change: Result<WorkerChange, Error>) -> Result<(), Gone> {
        self.changes.send(change).await.map_err(|_| Gone)
    }

    async fn put(&mut self, key: String, value: &[u8]) -> Result<(), Gone> {
        match serde_json::from_slice::<WorkerRecord>(value) {
            Ok(record) => {
                if self.known.get(&key) == Some(&record) {
                    return Ok(());
                }
                if let Some(old) = self.known.insert(key, record.clone()) {
                    self.send(Ok(Change::Remove(old.id))).await?;
                }
                self.send(Ok(Change::Insert(record.id, record))).await
            }
            Err(error) => {
                self.delete(&key).await?;
                self.send(Err(Error::BadRecord {
                    origin: format!("etcd key {key}"),
                    reason: error.to_string(),
                }))
                .await
            }
        }
    }

    async fn delete(&mut self, key: &str) -> Result<(), Gone> {
        match self.known.remove(key) {
            Some(old) => self.send(Ok(Change::Remove(old.id))).await,
            None => Ok(()),
        }
    }
}

/// A worker's record in etcd, under a lease that a background task keeps alive.
///
/// If the process dies, the lease expires after its TTL and etcd deletes the record: watchers
/// see the worker leave. If the lease expires while the process lives (etcd was out of reach
/// for longer than the TTL), the keeper grants a new lease and writes the record again.
/// [`deregister`](Self::deregister) revokes the lease at once; dropping the registration only
/// stops the keep-alive, so the record lasts until the TTL runs out.
#[derive(Debug)]
pub struct EtcdRegistration {
    etcd: Etcd,
    lease: Arc<AtomicI64>,
    keeper: JoinHandle<()>,
}

impl EtcdRegistration {
    /// Register `record` in the etcd at `endpoint` under `{namespace}/workers/`, with a lease
    /// of `ttl` (whole seconds, at least one) renewed every third of it.
    ///
    /// # Errors
    ///
    /// [`Error::BadEndpoint`] for an address that is not `http://HOST:PORT`;
    /// [`Error::RegistryUnavailable`] when etcd cannot be reached.
    pub async fn register(
        endpoint: &str,
        namespace: &str,
        record: &WorkerRecord,
        ttl: Duration,
    ) -> Result<Self, Error> {
        Self::register_with(endpoint, namespace, record, ttl, &EtcdAccess::default()).await
    }

    /// [`register`](Self::register) in an etcd that asks for a user (in `endpoint`) or serves
    /// HTTPS.
    ///
    /// # Errors
    ///
    /// As [`register`](Self::register), and [`Error::BadTls`] when the certificate files
    /// cannot be used.
    pub async fn register_with(
        endpoint: &str,
        namespace: &str,
        record: &WorkerRecord,
        ttl: Duration,
        access: &EtcdAccess,
    ) -> Result<Self, Error> {
        let etcd = Etcd::new(endpoint, access)?;
        let key = format!(
            "{}{}-{}",
            workers_prefix(namespace),
            record.id.worker,
            record.id.dp_rank
        );
        let value = serde_json::to_vec(record).map_err(|error| Error::BadRecord {
            origin: key.clone(),
            reason: error.to_string(),
        })?;
        let first = etcd.grant(ttl).await?;
        etcd.put(&key, &value, first).await?;
        let lease = Arc::new(AtomicI64::new(first));
        let keeper = tokio::spawn(keep_alive(
            etcd.clone(),
            key,
            value,
            ttl,
            Arc::clone(&lease),
        ));
        Ok(EtcdRegistration {
            etcd,
            lease,
            keeper,
        })
    }

    /// The lease the record lives under now.
    pub fn lease(&self) -> i64 {
        self.lease.load(Ordering::Relaxed)
    }

    /// Remove the record now: watchers see the worker leave at once.
    ///
    /// # Errors
    ///
    /// [`Error::RegistryUnavailable`] when etcd cannot be reached (the record then expires
    /// with its lease).
    pub async fn deregister(self) -> Result<(), Error> {
        self.keeper.abort();
        self.etcd.revoke(self.lease()).await
    }
}

impl Drop for EtcdRegistration {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

async fn keep_alive(etcd: Etcd, key: String, value: Vec<u8>, ttl: Duration, lease: Arc<AtomicI64>) {
    let period = (ttl.max(Duration::from_secs(1))) / 3;
    loop {
        tokio::time::sleep(period).await;
        let current = lease.load(Ordering::Relaxed);
        if let Ok(true) = etcd.keep_alive(current).await {
            continue;
        }
        // Expired, or etcd out of reach: register afresh as soon as etcd answers.
        if let Ok(fresh) = etcd.grant(ttl).await
            && etcd.put(&key, &value, fresh).await.is_ok()
        {
            lease.store(fresh, Ordering::Relaxed);
        }
    }
}
