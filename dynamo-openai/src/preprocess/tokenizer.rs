//! Text to token ids and back: a Hugging Face `tokenizer.json`, or the byte-level BPE
//! vocabulary stored in a GGUF file's metadata.

use std::path::Path;

use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper};

use super::gguf::{GgufMetadata, GgufValue};

/// Why a tokenizer could not be built or could not encode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// The `tokenizers` library refused the input.
    #[error("tokenizer: {0}")]
    Library(#[source] tokenizers::Error),
    /// A GGUF file lacks a key the tokenizer needs, or holds it with the wrong type.
    #[error("the GGUF metadata has no usable `{0}`")]
    MissingKey(&'static str),
    /// The GGUF tokenizer is of a kind this crate cannot build (only byte-level BPE, `gpt2`).
    #[error("GGUF tokenizer model `{0}` is not supported (only `gpt2` byte-level BPE is)")]
    UnsupportedModel(String),
}

/// A tokenizer with the model's end-of-sequence tokens.
///
/// ```no_run
/// use dynamo_openai::Tokenizer;
///
/// let tokenizer = Tokenizer::from_file("tokenizer.json")?;
/// let ids = tokenizer.encode("Hello!")?;
/// assert_eq!(tokenizer.decode(&ids, true)?, "Hello!");
/// # Ok::<(), dynamo_openai::TokenizerError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    eos_token_ids: Vec<u32>,
}

/// GGUF `token_type` of control tokens (`<|im_start|>`, `<|endoftext|>`, …).
const CONTROL_TOKEN: u64 = 3;

impl Tokenizer {
    /// Load a Hugging Face `tokenizer.json`. End-of-sequence ids are not known from the file
    /// alone: add them with [`Tokenizer::with_eos_token_ids`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(TokenizerError::Library)?;
        Ok(Tokenizer {
            inner,
            eos_token_ids: Vec::new(),
        })
    }

    /// Build the byte-level BPE tokenizer a GGUF file describes (`tokenizer.ggml.tokens`,
    /// `.merges`, `.token_type`, `.eos_token_id`, `.pre`). Control tokens become special
    /// tokens; the `smollm`, `qwen2` and `llama-bpe` pre-tokenizers split digits one by one.
    pub fn from_gguf(metadata: &GgufMetadata) -> Result<Self, TokenizerError> {
        let model = metadata
            .get("tokenizer.ggml.model")
            .and_then(GgufValue::as_str)
            .ok_or(TokenizerError::MissingKey("tokenizer.ggml.model"))?;
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(model.to_owned()));
        }
        let tokens = strings(metadata, "tokenizer.ggml.tokens")?;
        let merges = strings(metadata, "tokenizer.ggml.merges")?
            .into_iter()
            .filter_map(|merge| {
                let (left, right) = merge.split_once(' ')?;
                Some((left.to_owned(), right.to_owned()))
            })
            .collect();
        let vocab: Vocab = tokens
            .iter()
            .zip(0..)
            .map(|(token, id)| (token.to_string(), id))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(TokenizerError::Library)?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        let byte_level = ByteLevel::new(false, true, true);
        let pre = metadata
            .get("tokenizer.ggml.pre")
            .and_then(GgufValue::as_str);
        let pre_tokenizer: PreTokenizerWrapper = match pre {
            Some("smollm" | "qwen2" | "llama-bpe" | "llama3") => {
                Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
            }
            _ => byte_level.into(),
        };
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(byte_level));
        let types = metadata
            .get("tokenizer.ggml.token_type")
            .and_then(GgufValue::as_array)
            .unwrap_or_default();
        let special: Vec<AddedToken> = types
            .iter()
            .zip(&tokens)
            .filter(|(kind, _)| kind.as_u64() == Some(CONTROL_TOKEN))
            .map(|(_, token)| AddedToken::from(token.to_string(), true))
            .collect();
        inner
            .add_special_tokens(special)
            .map_err(TokenizerError::Library)?;
        let eos_token_ids = metadata
            .get("tokenizer.ggml.eos_token_id")
            .and_then(GgufValue::as_u64)
            .and_then(|id| u32::try_from(id).ok())
            .into_iter()
            .collect();
        Ok(Tokenizer {
            inner,
            eos_token_ids,
        })
    }

    /// A byte-level tokenizer with one token per byte (id = the byte's value) and no merges:
    /// any text round-trips, multi-byte characters span several tokens. For tests, demos and
    /// engines that work on bytes, such as the echo engine.
    ///
    /// ```
    /// let tokenizer = dynamo_openai::Tokenizer::bytes();
    /// assert_eq!(tokenizer.encode("hé")?, [104, 195, 169]);
    /// assert_eq!(tokenizer.decode(&[104, 195, 169], true)?, "hé");
    /// # Ok::<(), dynamo_openai::TokenizerError>(())
    /// ```
    pub fn bytes() -> Self {
        let vocab: Vocab = (0..=255u8)
            .map(|byte| (byte_level_char(byte).to_string(), u32::from(byte)))
            .collect();
        let built = BPE::builder().vocab_and_merges(vocab, Vec::new()).build();
        let mut inner = match built {
            Ok(bpe) => tokenizers::Tokenizer::new(bpe),
            // A vocabulary without merges always builds; keep an empty model rather than panic.
            Err(_) => tokenizers::Tokenizer::new(BPE::default()),
        };
        let byte_level = ByteLevel::new(false, true, false);
        inner.with_pre_tokenizer(Some(byte_level));
        inner.with_decoder(Some(byte_level));
        Tokenizer {
            inner,
            eos_token_ids: Vec::new(),
        }
    }

    /// Also treat these ids as end-of-sequence.
    pub fn with_eos_token_ids(mut self, ids: impl IntoIterator<Item = u32>) -> Self {
        self.eos_token_ids.extend(ids);
        self.eos_token_ids.sort_unstable();
        self.eos_token_ids.dedup();
        self
    }

    /// The end-of-sequence token ids.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }

    /// Encode text. Special tokens written in the text (`<|im_start|>`) become their ids, as
    /// chat templates need; no BOS or EOS is added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(TokenizerError::Library)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Decode ids to text, leaving special tokens out when `skip_special` is set.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special)
            .map_err(TokenizerError::Library)
    }

    /// The id of `token`, if the vocabulary has it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// How many ids the vocabulary has, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// The character GPT-2's byte-level encoding writes for `byte`: printable Latin-1 bytes stand
/// for themselves, the other 68 are shifted to U+0100 and up, in order.
fn byte_level_char(byte: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(byte) {
        return char::from(byte);
    }
    let shifted = (0..byte).filter(|&b| !printable(b)).count() as u32;
    char::from_u32(256 + shifted).unwrap_or(char::REPLACEMENT_CHARACTER)
}

fn strings<'a>(
    metadata: &'a GgufMetadata,
    key: &'static str,
) -> Result<Vec<&'a str>, TokenizerError> {
    metadata
        .get(key)
        .and_then(GgufValue::as_array)
        .ok_or(TokenizerError::MissingKey(key))?
        .iter()
        .map(|value| value.as_str().ok_or(TokenizerError::MissingKey(key)))
        .collect()
}
