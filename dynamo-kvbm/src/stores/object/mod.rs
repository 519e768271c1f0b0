//! [`ObjectStoreBlocks`]: blocks as objects in an object store, S3 or any other backend of the
//! `object_store` crate (tier G4).

mod config;
mod requests;

pub use config::ObjectConfig;

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use dynamo_core::{SequenceHash, StorageTier};
use futures::StreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use parking_lot::Mutex;
use tokio::runtime::{Handle, Runtime};

use super::{check_shape, check_size};
use crate::{BlockStore, Error};

const TIER: StorageTier = StorageTier::Remote;

/// Blocks in an object store, one object per block under a key prefix
/// (`{prefix}/{hash:016x}`), at most a configured number of them.
///
/// The store keeps the set of hashes it holds in memory, so `contains` and a get of a missing
/// block cost no request. It assumes it is the only writer under its prefix: when it opens it
/// lists the prefix and takes every object named like a block and of the block size as held
/// (up to its capacity; see [`ObjectConfig::recover`]), and a block that disappears behind its
/// back reads as missing and is forgotten.
///
/// `object_store` is async and this trait is not: the store owns a small multi-threaded tokio
/// runtime, made when it opens, and every call hands its requests to that runtime and blocks
/// the calling thread until they finish. Call it from a thread that may block (your own, or
/// `tokio::task::spawn_blocking`), never from inside an async task, where it would hold up that
/// task's runtime thread for the length of the requests. A batch
/// ([`put_many`](BlockStore::put_many), [`get_many`](BlockStore::get_many)) keeps up to
/// [`ObjectConfig::concurrency`] requests in flight.
///
/// ```
/// use std::sync::Arc;
///
/// use dynamo_core::SequenceHash;
/// use dynamo_kvbm::{BlockStore, ObjectConfig, ObjectStoreBlocks};
/// use object_store::local::LocalFileSystem;
///
/// let dir = std::env::temp_dir().join(format!("kvbm-doc-objects-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).expect("a temporary directory");
/// let backend = Arc::new(LocalFileSystem::new_with_prefix(&dir).expect("a directory"));
/// let store = ObjectStoreBlocks::open(backend, ObjectConfig::new("blocks", 16, 100))?;
///
/// store.put(SequenceHash(42), &[3; 16])?;
/// let mut block = [0; 16];
/// assert!(store.get(SequenceHash(42), &mut block)?);
/// assert_eq!(block, [3; 16]);
/// # drop(store);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), dynamo_kvbm::Error>(())
/// ```
pub struct ObjectStoreBlocks {
    backend: Arc<dyn ObjectStore>,
    prefix: Path,
    block_bytes: usize,
    capacity: usize,
    concurrency: usize,
    held: Mutex<Held>,
    handle: Handle,
    /// Taken on drop, to shut down without blocking (a drop may happen in an async context).
    runtime: Option<Runtime>,
}

/// The blocks the store holds, and how many puts are under way (each counts against the
/// capacity until it ends).
struct Held {
    hashes: HashSet<SequenceHash>,
    reserved: usize,
}

impl Held {
    /// Count one more put against `capacity`, or say there is no room.
    fn reserve(&mut self, capacity: usize) -> Result<(), Error> {
        if self.hashes.len() + self.reserved >= capacity {
            return Err(Error::Full {
                tier: TIER,
                capacity,
            });
        }
        self.reserved += 1;
        Ok(())
    }
}

impl ObjectStoreBlocks {
    /// A store over `backend`, with its own runtime; unless turned off in `config`, lists the
    /// prefix to recover the blocks already there.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a block size of zero, [`Error::Open`] when the runtime cannot be
    /// started, [`Error::Remote`] when listing the prefix fails.
    pub fn open(backend: Arc<dyn ObjectStore>, config: ObjectConfig) -> Result<Self, Error> {
        check_shape(TIER, config.block_bytes, 1)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads)
            .thread_name("kvbm-object-store")
            .enable_all()
            .build()
            .map_err(|source| Error::Open {
                tier: TIER,
                path: config.prefix.clone().into(),
                source,
            })?;
        let store = ObjectStoreBlocks {
            backend,
            prefix: Path::from(config.prefix.as_str()),
            block_bytes: config.block_bytes,
            capacity: config.capacity,
            concurrency: config.concurrency,
            held: Mutex::new(Held {
                hashes: HashSet::new(),
                reserved: 0,
            }),
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        };
        if config.recover {
            store.recover()?;
        }
        Ok(store)
    }

    /// The object store below.
    pub fn backend(&self) -> &Arc<dyn ObjectStore> {
        &self.backend
    }

    /// The key prefix of the store's objects.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// The key of the object of `hash`.
    pub fn key(&self, hash: SequenceHash) -> Path {
        self.prefix.clone().join(format!("{:016x}", hash.0))
    }

    /// Take the blocks found under the prefix as held, up to the capacity.
    fn recover(&self) -> Result<(), Error> {
        let listing = requests::list(self.backend.clone(), self.prefix.clone(), self.block_bytes);
        let found = self.run(self.prefix.as_ref(), listing)?;
        let mut held = self.held.lock();
        let total = found.len();
        held.hashes.extend(found.into_iter().take(self.capacity));
        if total > self.capacity {
            tracing::warn!(
                prefix = %self.prefix,
                found = total,
                capacity = self.capacity,
                "more blocks under the prefix than the store holds; the rest are left untracked"
            );
        }
        Ok(())
    }

    /// Run `task` on the store's runtime and wait for it on this thread.
    fn run<T: Send + 'static>(
        &self,
        key: &str,
        task: impl Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> Result<T, Error> {
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            // The caller waits for this answer; it cannot have gone.
            let _ = answer.send(task.await);
        });
        let result = answered.recv().unwrap_or_else(|_| {
            Err(object_store::Error::Generic {
                store: "kvbm",
                source: "the store's runtime stopped before the request finished".into(),
            })
        });
        result.map_err(|source| Error::Remote {
            key: key.to_owned(),
            source,
        })
    }

    /// The bytes of a fetched block, checked; `None` when the object is gone (and then the
    /// store forgets it).
    fn check_fetched(
        &self,
        hash: SequenceHash,
        fetched: Option<bytes::Bytes>,
    ) -> Result<Option<bytes::Bytes>, Error> {
        let Some(bytes) = fetched else {
            self.held.lock().hashes.remove(&hash);
            return Ok(None);
        };
        if bytes.len() != self.block_bytes {
            return Err(Error::Io {
                tier: TIER,
                hash,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "the object holds {} bytes, not a block of {}",
                        bytes.len(),
                        self.block_bytes
                    ),
                ),
            });
        }
        Ok(Some(bytes))
    }
}

impl BlockStore for ObjectStoreBlocks {
    fn tier(&self) -> StorageTier {
        TIER
    }

    fn block_bytes(&self) -> usize {
        self.block_bytes
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn len(&self) -> usize {
        self.held.lock().hashes.len()
    }

    fn contains(&self, hash: SequenceHash) -> bool {
        self.held.lock().hashes.contains(&hash)
    }

    fn put(&self, hash: SequenceHash, block: &[u8]) -> Result<(), Error> {
        self.put_many(&[(hash, block)])
    }

    fn get(&self, hash: SequenceHash, into: &mut [u8]) -> Result<bool, Error> {
        Ok(self.get_many(&[hash], into)?[0])
    }

    fn remove(&self, hash: SequenceHash) -> Result<bool, Error> {
        if !self.contains(hash) {
            return Ok(false);
        }
        let key = self.key(hash);
        let deleting = requests::delete(self.backend.clone(), key.clone());
        self.run(key.as_ref(), deleting)?;
        Ok(self.held.lock().hashes.remove(&hash))
    }

    fn put_many(&self, blocks: &[(SequenceHash, &[u8])]) -> Result<(), Error> {
        // Count every new block against the capacity, in order, up to the first that cannot be
        // stored; copy it into a payload the request owns.
        let mut refused = None;
        let mut uploads = Vec::with_capacity(blocks.len());
        {
            let mut held = self.held.lock();
            let mut batch = HashSet::with_capacity(blocks.len());
            for &(hash, block) in blocks {
                let checked = check_size(TIER, self.block_bytes, block.len());
                if checked.is_ok() && (held.hashes.contains(&hash) || !batch.insert(hash)) {
                    continue;
                }
                if let Err(error) = checked.and_then(|()| held.reserve(self.capacity)) {
                    refused = Some(error);
                    break;
                }
                uploads.push((hash, self.key(hash), block.to_vec()));
            }
        }
        let hashes: Vec<SequenceHash> = uploads.iter().map(|(hash, ..)| *hash).collect();
        let keys: Vec<Path> = uploads.iter().map(|(_, key, _)| key.clone()).collect();
        let backend = self.backend.clone();
        let requests = uploads
            .into_iter()
            .map(move |(_, key, block)| requests::put(backend.clone(), key, block));
        let concurrency = self.concurrency;
        let results = self.run(self.prefix.as_ref(), async move {
            Ok(futures::stream::iter(requests)
                .buffered(concurrency)
                .collect::<Vec<_>>()
                .await)
        });
        // Every block uploaded is held; the first failure (or refusal) is the answer.
        let mut held = self.held.lock();
        let results = match results {
            Ok(results) => results,
            Err(error) => {
                held.reserved -= hashes.len();
                return Err(error);
            }
        };
        let mut failed = None;
        for ((hash, key), result) in hashes.into_iter().zip(keys).zip(results) {
            held.reserved -= 1;
            match result {
                Ok(()) => {
                    held.hashes.insert(hash);
                }
                Err(source) => {
                    failed.get_or_insert(Error::Remote {
                        key: key.to_string(),
                        source,
                    });
                }
            }
        }
        match failed.or(refused) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn get_many(&self, hashes: &[SequenceHash], into: &mut [u8]) -> Result<Vec<bool>, Error> {
        check_size(TIER, hashes.len() * self.block_bytes, into.len())?;
        let wanted: Vec<Option<Path>> = {
            let held = self.held.lock();
            hashes
                .iter()
                .map(|hash| held.hashes.contains(hash).then(|| self.key(*hash)))
                .collect()
        };
        let backend = self.backend.clone();
        let requests = wanted.into_iter().map(move |key| {
            let backend = backend.clone();
            async move {
                match key {
                    Some(key) => requests::fetch(backend, key).await,
                    None => Ok(None),
                }
            }
        });
        let concurrency = self.concurrency;
        let fetched = self.run(self.prefix.as_ref(), async move {
            futures::stream::iter(requests)
                .buffered(concurrency)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<object_store::Result<Vec<_>>>()
        })?;
        hashes
            .iter()
            .zip(fetched)
            .zip(into.chunks_exact_mut(self.block_bytes))
            .map(|((&hash, fetched), chunk)| {
                let Some(bytes) = self.check_fetched(hash, fetched)? else {
                    return Ok(false);
                };
                chunk.copy_from_slice(&bytes);
                Ok(true)
            })
            .collect()
    }
}

impl Drop for ObjectStoreBlocks {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl fmt::Debug for ObjectStoreBlocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStoreBlocks")
            .field("backend", &format_args!("{}", self.backend))
            .field("prefix", &self.prefix)
            .field("block_bytes", &self.block_bytes)
            .field("capacity", &self.capacity)
            .field("concurrency", &self.concurrency)
            .field("len", &self.len())
            .finish()
    }
}
