//! [`ObjectConfig`]: where an object-store tier keeps its blocks and how many requests it runs.

/// How an [`ObjectStoreBlocks`](super::ObjectStoreBlocks) is made.
///
/// ```
/// use dynamo_kvbm::ObjectConfig;
///
/// let config = ObjectConfig::new("kv/llama-70b", 20_971_520, 100_000).concurrency(16);
/// assert_eq!(config.prefix(), "kv/llama-70b");
/// ```
#[derive(Debug, Clone)]
pub struct ObjectConfig {
    pub(super) prefix: String,
    pub(super) block_bytes: usize,
    pub(super) capacity: usize,
    pub(super) concurrency: usize,
    pub(super) worker_threads: usize,
    pub(super) recover: bool,
}

impl ObjectConfig {
    /// Requests of one batch in flight at once, to start with.
    pub const DEFAULT_CONCURRENCY: usize = 8;

    /// Blocks of `block_bytes` bytes, at most `capacity` of them, one object each under
    /// `prefix` (`{prefix}/{hash:016x}`); with
    /// [`DEFAULT_CONCURRENCY`](Self::DEFAULT_CONCURRENCY), two runtime threads, and recovery
    /// of the blocks already under the prefix.
    pub fn new(prefix: impl Into<String>, block_bytes: usize, capacity: usize) -> Self {
        ObjectConfig {
            prefix: prefix.into(),
            block_bytes,
            capacity,
            concurrency: Self::DEFAULT_CONCURRENCY,
            worker_threads: 2,
            recover: true,
        }
    }

    /// How many requests of one batch ([`put_many`](crate::BlockStore::put_many),
    /// [`get_many`](crate::BlockStore::get_many)) are in flight at once; at least 1.
    pub fn concurrency(mut self, requests: usize) -> Self {
        self.concurrency = requests.max(1);
        self
    }

    /// Threads of the store's own async runtime, which runs the object store's requests; at
    /// least 1.
    pub fn worker_threads(mut self, threads: usize) -> Self {
        self.worker_threads = threads.max(1);
        self
    }

    /// Whether opening the store lists its prefix and takes the blocks found there as held
    /// (on by default). Off, the store starts empty and leaves what is there alone (a put of
    /// the same hash overwrites it).
    pub fn recover(mut self, on: bool) -> Self {
        self.recover = on;
        self
    }

    /// The key prefix of the store's objects.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}
