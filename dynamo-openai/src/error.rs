//! The crate's error: why a model, a tokenizer or a chat template could not be loaded, or why
//! preprocessing failed.
//!
//! Errors sent to HTTP clients are a different thing, [`ApiError`](crate::ApiError): the
//! handlers turn an [`Error`] into one where a request caused it.

use std::path::{Path, PathBuf};

/// The error of a library's own, boxed: what a tokenizer or template library reported, kept as
/// the [`source`](std::error::Error::source) without naming the library's type.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why loading a model, its tokenizer or its chat template failed, or why text could not be
/// tokenized or a conversation rendered.
///
/// Returned by [`GgufMetadata::open`](crate::GgufMetadata::open) and
/// [`read`](crate::GgufMetadata::read), [`Tokenizer`](crate::Tokenizer)'s constructors,
/// [`encode`](crate::Tokenizer::encode) and [`decode`](crate::Tokenizer::decode),
/// [`ChatTemplate::new`](crate::ChatTemplate::new) and [`render`](crate::ChatTemplate::render),
/// [`IncrementalDecoder`](crate::IncrementalDecoder), and
/// [`ModelEntry::from_gguf`](crate::ModelEntry::from_gguf), which can fail in all of these ways.
///
/// New variants and fields may be added: match with `..` and a wildcard arm.
///
/// ```
/// use dynamo_openai::{ChatTemplate, Error};
///
/// let error = ChatTemplate::new("{% if %}").expect_err("an `if` without a condition");
/// assert!(matches!(error, Error::Template { .. }));
/// assert!(error.to_string().starts_with("chat template: "));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be opened or read; for a GGUF file, also one that ends inside its
    /// metadata.
    #[error("cannot read `{}`: {source}", path.display())]
    #[non_exhaustive]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system reported.
        source: std::io::Error,
    },
    /// GGUF metadata given as a reader ([`GgufMetadata::read`](crate::GgufMetadata::read))
    /// could not be read: the reader failed or the data ended early.
    #[error("cannot read the GGUF metadata: {source}")]
    #[non_exhaustive]
    GgufRead {
        /// What the reader reported.
        source: std::io::Error,
    },
    /// The file is not GGUF, or a GGUF version this crate does not read (it reads 2 and 3).
    #[error("not a GGUF file (magic {magic:#010x}, version {version})")]
    #[non_exhaustive]
    NotGguf {
        /// The first four bytes, little-endian.
        magic: u32,
        /// The version field.
        version: u32,
    },
    /// A GGUF metadata value has a type tag outside the GGUF specification.
    #[error("GGUF metadata `{key}` has unknown value type {tag}")]
    #[non_exhaustive]
    GgufUnknownType {
        /// The key being read.
        key: String,
        /// The type tag.
        tag: u32,
    },
    /// A GGUF string or array claims a length beyond this crate's limits (64 MiB strings,
    /// 16 M-item arrays).
    #[error("GGUF metadata `{key}` is too long ({len} items)")]
    #[non_exhaustive]
    GgufTooLong {
        /// The key being read.
        key: String,
        /// The claimed length.
        len: u64,
    },
    /// A GGUF array nests arrays deeper than this crate reads (8 levels; real files nest at
    /// most one).
    #[error("GGUF metadata `{key}` nests arrays more than {limit} deep")]
    #[non_exhaustive]
    GgufTooDeep {
        /// The key being read.
        key: String,
        /// The deepest nesting read.
        limit: usize,
    },
    /// A GGUF string is not UTF-8.
    #[error("GGUF metadata `{key}` holds a string that is not UTF-8")]
    #[non_exhaustive]
    GgufNotUtf8 {
        /// The key being read.
        key: String,
    },
    /// The GGUF metadata lacks a key the tokenizer needs, or holds it with the wrong type.
    #[error("the GGUF metadata has no usable `{key}`")]
    #[non_exhaustive]
    GgufMissingKey {
        /// The key, for example `tokenizer.ggml.tokens`.
        key: String,
    },
    /// The GGUF tokenizer is of a kind this crate cannot build (only byte-level BPE, `gpt2`).
    #[error("GGUF tokenizer model `{model}` is not supported (only `gpt2` byte-level BPE is)")]
    #[non_exhaustive]
    UnsupportedTokenizer {
        /// The `tokenizer.ggml.model` of the file.
        model: String,
    },
    /// The tokenizer could not be built, or could not encode or decode: a `tokenizer.json` that
    /// does not parse, a vocabulary the tokenizer library refuses, or the failure of a
    /// [`Decode`](crate::Decode) implementation (see [`Error::tokenizer`]).
    #[error("tokenizer: {source}")]
    #[non_exhaustive]
    Tokenizer {
        /// What the tokenizer reported.
        source: BoxError,
    },
    /// A chat template does not compile, or failed to render a conversation (for a template
    /// that calls `raise_exception`, `message` is the template's own message).
    #[error("chat template: {message}")]
    #[non_exhaustive]
    Template {
        /// What went wrong and where, for a person.
        message: String,
        /// The template engine's error.
        source: BoxError,
    },
}

impl Error {
    /// A tokenizer failure: for implementations of [`Decode`](crate::Decode) whose tokenizer
    /// reports an error.
    ///
    /// ```
    /// use dynamo_openai::Error;
    ///
    /// let error = Error::tokenizer("id 70000 is outside the vocabulary");
    /// assert_eq!(error.to_string(), "tokenizer: id 70000 is outside the vocabulary");
    /// ```
    pub fn tokenizer(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Tokenizer {
            source: source.into(),
        }
    }

    /// A chat-template failure, with the template engine's message.
    pub(crate) fn template(source: minijinja::Error) -> Self {
        Error::Template {
            message: source.to_string(),
            source: Box::new(source),
        }
    }

    /// A file at `path` could not be read.
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_owned(),
            source,
        }
    }
}
