//! Files of Hugging Face Hub repositories, through the `hf-hub` crate and its cache.

use std::path::PathBuf;

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use crate::{FetchError, Progress};

/// A file of a Hugging Face Hub model repository, named `ORG/REPO/FILE` or
/// `ORG/REPO@REVISION/FILE` (the revision defaults to `main`).
///
/// ```
/// use dynamo_assets::HubFile;
///
/// let file = HubFile::parse("HuggingFaceTB/SmolLM2-135M-Instruct@v1/model.gguf").unwrap();
/// assert_eq!(file.repo, "HuggingFaceTB/SmolLM2-135M-Instruct");
/// assert_eq!(file.revision, "v1");
/// assert_eq!(file.file, "model.gguf");
/// assert!(HubFile::parse("model.gguf").is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubFile {
    /// `ORG/REPO`.
    pub repo: String,
    /// A branch, tag or commit.
    pub revision: String,
    /// The path of the file inside the repository.
    pub file: String,
}

impl HubFile {
    /// Read `ORG/REPO[@REVISION]/FILE`; `None` for anything else.
    pub fn parse(spec: &str) -> Option<Self> {
        let mut parts = spec.splitn(3, '/');
        let (org, repo, file) = (parts.next()?, parts.next()?, parts.next()?);
        let (repo, revision) = match repo.split_once('@') {
            Some((repo, revision)) => (repo, revision),
            None => (repo, "main"),
        };
        if [org, repo, revision, file]
            .iter()
            .any(|part| part.is_empty())
        {
            return None;
        }
        Some(HubFile {
            repo: format!("{org}/{repo}"),
            revision: revision.to_owned(),
            file: file.to_owned(),
        })
    }

    /// Download the file once into the Hugging Face cache (`HF_HOME`, else
    /// `~/.cache/huggingface`), from `HF_ENDPOINT` (else `https://huggingface.co`), with the
    /// token in `HF_TOKEN` (else the one `huggingface-cli login` saved) if any, and return its
    /// path; later calls find it there without the network.
    ///
    /// # Errors
    ///
    /// [`FetchError::Download`] when the Hub cannot be reached or has no such file.
    pub fn fetch(&self) -> Result<PathBuf, FetchError> {
        self.fetch_with_progress(&mut |_| {})
    }

    /// [`HubFile::fetch`], telling `progress` how much of the file has arrived while it
    /// downloads (nothing when the file is cached).
    ///
    /// # Errors
    ///
    /// As [`HubFile::fetch`].
    pub fn fetch_with_progress(
        &self,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<PathBuf, FetchError> {
        let cache = Cache::from_env();
        let builder = ApiBuilder::from_cache(cache.clone());
        let var = |name| std::env::var(name).ok().filter(|value| !value.is_empty());
        let builder = match var("HF_ENDPOINT") {
            Some(endpoint) => builder.with_endpoint(endpoint),
            None => builder,
        };
        // hf-hub reads the token `huggingface-cli login` saved, but not `HF_TOKEN`.
        let builder = match var("HF_TOKEN") {
            Some(token) => builder.with_token(Some(token)),
            None => builder,
        };
        self.fetch_with(&cache, builder, progress)
    }

    /// [`HubFile::fetch`] from another endpoint into another cache, for mirrors and tests.
    ///
    /// # Errors
    ///
    /// As [`HubFile::fetch`].
    pub fn fetch_from(&self, endpoint: &str, cache: PathBuf) -> Result<PathBuf, FetchError> {
        self.fetch_from_with_progress(endpoint, cache, &mut |_| {})
    }

    /// [`HubFile::fetch_from`], telling `progress` how much of the file has arrived.
    ///
    /// # Errors
    ///
    /// As [`HubFile::fetch`].
    pub fn fetch_from_with_progress(
        &self,
        endpoint: &str,
        cache: PathBuf,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<PathBuf, FetchError> {
        let cache = Cache::new(cache);
        let builder = ApiBuilder::from_cache(cache.clone()).with_endpoint(endpoint.to_owned());
        self.fetch_with(&cache, builder, progress)
    }

    fn fetch_with(
        &self,
        cache: &Cache,
        builder: ApiBuilder,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<PathBuf, FetchError> {
        let failed = |message: String| FetchError::Download {
            url: format!("hf://{}@{}/{}", self.repo, self.revision, self.file),
            message,
        };
        let repo = Repo::with_revision(self.repo.clone(), RepoType::Model, self.revision.clone());
        // As `ApiRepo::get`: the cache first, and the network only when the file is not there.
        if let Some(path) = cache.repo(repo.clone()).get(&self.file) {
            return Ok(path);
        }
        let api = builder
            .with_progress(false)
            .build()
            .map_err(|error| failed(error.to_string()))?;
        api.repo(repo)
            .download_with_progress(
                &self.file,
                Hook {
                    progress,
                    done: 0,
                    total: None,
                },
            )
            .map_err(|error| failed(error.to_string()))
    }
}

/// hf-hub's progress calls, passed on to a [`Progress`] hook.
struct Hook<'a> {
    progress: &'a mut dyn FnMut(Progress),
    done: u64,
    total: Option<u64>,
}

impl hf_hub::api::Progress for Hook<'_> {
    fn init(&mut self, size: usize, _filename: &str) {
        self.total = Some(size as u64);
        self.done = 0;
        (self.progress)(Progress::new(0, self.total));
    }

    fn update(&mut self, size: usize) {
        self.done += size as u64;
        (self.progress)(Progress::new(self.done, self.total));
    }

    fn finish(&mut self) {}
}
