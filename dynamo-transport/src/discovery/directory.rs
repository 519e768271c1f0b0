//! Workers registered as JSON files in a shared directory.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use dynamo_core::WorkerId;

use tower::discover::Change;

use super::{Discovery, MembershipStream, WorkerChange, WorkerRecord};
use crate::Error;

/// How often [`DirectoryDiscovery`] looks at the directory unless told otherwise.
const DEFAULT_POLL: Duration = Duration::from_millis(250);

/// Watches a directory in which every `*.json` file is one [`WorkerRecord`].
///
/// The directory is read every poll interval (250 ms by default): a new file is a join, a
/// removed file a departure, a changed file a departure and a join. Files whose names start
/// with `.` are ignored, so writers can write a hidden file and rename it into place. A
/// worker that dies without removing its file stays listed: use etcd where that matters.
#[derive(Debug, Clone)]
pub struct DirectoryDiscovery {
    directory: PathBuf,
    poll: Duration,
}

impl DirectoryDiscovery {
    /// Watch `directory` (which need not exist yet).
    pub fn new(directory: impl Into<PathBuf>) -> Self {
        DirectoryDiscovery {
            directory: directory.into(),
            poll: DEFAULT_POLL,
        }
    }

    /// Look at the directory every `poll` instead.
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }
}

/// What the watcher remembers between two looks at the directory.
#[derive(Debug, Default)]
struct Seen {
    /// Parsed files, by file name.
    records: HashMap<PathBuf, WorkerRecord>,
    /// Files that did not parse, with the text that did not, so each is reported once.
    bad: HashMap<PathBuf, String>,
}

impl Discovery for DirectoryDiscovery {
    fn watch(&self) -> MembershipStream {
        let state = (self.clone(), Seen::default(), VecDeque::new(), true);
        Box::pin(futures::stream::unfold(
            state,
            |(this, mut seen, mut queue, mut first)| async move {
                loop {
                    if let Some(item) = queue.pop_front() {
                        return Some((item, (this, seen, queue, first)));
                    }
                    if !first {
                        tokio::time::sleep(this.poll).await;
                    }
                    first = false;
                    queue.extend(scan(&this.directory, &mut seen).await);
                }
            },
        ))
    }
}

/// Compare the directory with what was seen last time; the changes, errors included.
async fn scan(directory: &Path, seen: &mut Seen) -> Vec<Result<WorkerChange, Error>> {
    let mut changes = Vec::new();
    let mut now: HashMap<PathBuf, String> = HashMap::new();
    match tokio::fs::read_dir(directory).await {
        Ok(mut entries) => {
            while let Ok(Some(entry)) = entries.next_entry().await {
                let path = entry.path();
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') || !name.ends_with(".json") {
                    continue;
                }
                // A file removed between listing and reading is simply gone.
                if let Ok(text) = tokio::fs::read_to_string(&path).await {
                    now.insert(path, text);
                }
            }
        }
        // No directory yet means no workers yet.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return vec![Err(Error::RegistryUnavailable {
                registry: directory.display().to_string(),
                reason: error.to_string(),
            })];
        }
    }
    let gone: Vec<PathBuf> = seen
        .records
        .keys()
        .filter(|path| !now.contains_key(*path))
        .cloned()
        .collect();
    for path in gone {
        if let Some(record) = seen.records.remove(&path) {
            changes.push(Ok(Change::Remove(record.id)));
        }
    }
    seen.bad.retain(|path, _| now.contains_key(path));
    for (path, text) in now {
        match super::decode_record(&path.display().to_string(), text.as_bytes()) {
            Ok(record) => {
                seen.bad.remove(&path);
                match seen.records.get(&path) {
                    Some(old) if *old == record => {}
                    Some(old) => {
                        changes.push(Ok(Change::Remove(old.id)));
                        changes.push(Ok(Change::Insert(record.id, record.clone())));
                        seen.records.insert(path, record);
                    }
                    None => {
                        changes.push(Ok(Change::Insert(record.id, record.clone())));
                        seen.records.insert(path, record);
                    }
                }
            }
            Err(error) => {
                if let Some(old) = seen.records.remove(&path) {
                    changes.push(Ok(Change::Remove(old.id)));
                }
                if seen.bad.get(&path) != Some(&text) {
                    changes.push(Err(error));
                    seen.bad.insert(path, text);
                }
            }
        }
    }
    changes
}

/// A worker's record written into a [`DirectoryDiscovery`] directory; dropping it removes
/// the file, so the worker leaves.
#[derive(Debug)]
pub struct DirectoryRegistration {
    path: PathBuf,
}

impl DirectoryRegistration {
    /// Write `record` into `directory` (created if missing), atomically: a watcher never reads
    /// half a record.
    ///
    /// # Errors
    ///
    /// [`Error::RegistryUnavailable`] when the file cannot be written.
    pub fn register(directory: impl AsRef<Path>, record: &WorkerRecord) -> Result<Self, Error> {
        let directory = directory.as_ref();
        let unavailable = |error: std::io::Error| Error::RegistryUnavailable {
            registry: directory.display().to_string(),
            reason: error.to_string(),
        };
        std::fs::create_dir_all(directory).map_err(unavailable)?;
        let name = file_name(record.id);
        let path = directory.join(&name);
        let hidden = directory.join(format!(".{name}.tmp"));
        let text = serde_json::to_string_pretty(record).map_err(|error| Error::BadRecord {
            origin: path.display().to_string(),
            reason: error.to_string(),
        })?;
        std::fs::write(&hidden, text).map_err(unavailable)?;
        std::fs::rename(&hidden, &path).map_err(unavailable)?;
        Ok(DirectoryRegistration { path })
    }

    /// The record's file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DirectoryRegistration {
    fn drop(&mut self) {
        // Already gone is fine: someone cleaned up for us.
        let _ = std::fs::remove_file(&self.path);
    }
}

fn file_name(id: WorkerId) -> String {
    format!("worker-{}-{}.json", id.worker, id.dp_rank)
}
