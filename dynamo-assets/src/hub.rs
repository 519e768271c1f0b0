//! Files of Hugging Face Hub repositories, through the `hf-hub` crate and its cache.

use std::path::PathBuf;

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Repo, RepoType};

use crate::FetchError;

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
    /// token in `HF_TOKEN` if any, and return its path; later calls find it there.
    ///
    /// # Errors
    ///
    /// [`FetchError::Download`] when the Hub cannot be reached or has no such file.
    pub fn fetch(&self) -> Result<PathBuf, FetchError> {
        let builder = ApiBuilder::from_env().with_progress(false);
        let builder = match std::env::var("HF_ENDPOINT") {
            Ok(endpoint) if !endpoint.is_empty() => builder.with_endpoint(endpoint),
            _ => builder,
        };
        self.fetch_with(builder)
    }

    /// [`HubFile::fetch`] from another endpoint into another cache, for mirrors and tests.
    ///
    /// # Errors
    ///
    /// As [`HubFile::fetch`].
    pub fn fetch_from(&self, endpoint: &str, cache: PathBuf) -> Result<PathBuf, FetchError> {
        let builder = ApiBuilder::new()
            .with_progress(false)
            .with_endpoint(endpoint.to_owned())
            .with_cache_dir(cache);
        self.fetch_with(builder)
    }

    fn fetch_with(&self, builder: ApiBuilder) -> Result<PathBuf, FetchError> {
        let failed = |message: String| FetchError::Download {
            url: format!("hf://{}@{}/{}", self.repo, self.revision, self.file),
            message,
        };
        let api = builder.build().map_err(|error| failed(error.to_string()))?;
        let repo = Repo::with_revision(self.repo.clone(), RepoType::Model, self.revision.clone());
        api.repo(repo)
            .get(&self.file)
            .map_err(|error| failed(error.to_string()))
    }
}
