//! Text to token ids and back: a Hugging Face `tokenizer.json`, or the byte-level BPE
//! vocabulary stored in a GGUF file's metadata.

use std::path::Path;
use std::sync::Arc;

use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper};

use super::fast_bpe::{FastBpe, byte_level_char};
use super::gguf::{GgufMetadata, GgufValue};
use crate::Error;

/// A tokenizer with the model's end-of-sequence tokens.
///
/// ```no_run
/// use dynamo_openai::Tokenizer;
///
/// let tokenizer = Tokenizer::from_file("tokenizer.json")?;
/// let ids = tokenizer.encode("Hello!")?;
/// assert_eq!(tokenizer.decode(&ids, true)?, "Hello!");
/// # Ok::<(), dynamo_openai::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    eos_token_ids: Vec<u32>,
    /// The fast path of GGUF byte-level BPE tokenizers.
    fast: Option<Arc<FastBpe>>,
    /// Counted once: the library counts its vocabulary on every call.
    vocab_size: usize,
}

/// GGUF `token_type` of control tokens (`<|im_start|>`, `<|endoftext|>`, …).
const CONTROL_TOKEN: u64 = 3;

impl Tokenizer {
    /// Load a Hugging Face `tokenizer.json`. End-of-sequence ids are not known from the file
    /// alone: add them with [`Tokenizer::with_eos_token_ids`].
    ///
    /// A file that cannot be read gives [`Error::Io`] with the path; one that does not parse,
    /// [`Error::Tokenizer`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let json = std::fs::read(path).map_err(|source| Error::io(path, source))?;
        let inner = tokenizers::Tokenizer::from_bytes(json).map_err(Error::tokenizer)?;
        Ok(Tokenizer::wrap(inner, None))
    }

    /// Build the byte-level BPE tokenizer a GGUF file describes (`tokenizer.ggml.tokens`,
    /// `.merges`, `.token_type`, `.eos_token_id`, `.pre`). Control tokens become special
    /// tokens; the `smollm`, `qwen2` and `llama-bpe` pre-tokenizers split digits one by one.
    ///
    /// Metadata without a usable key gives [`Error::GgufMissingKey`]; a tokenizer model other
    /// than `gpt2`, [`Error::UnsupportedTokenizer`].
    pub fn from_gguf(metadata: &GgufMetadata) -> Result<Self, Error> {
        let model = metadata
            .get("tokenizer.ggml.model")
            .and_then(GgufValue::as_str)
            .ok_or_else(|| missing_key("tokenizer.ggml.model"))?;
        if model != "gpt2" {
            return Err(Error::UnsupportedTokenizer {
                model: model.to_owned(),
            });
        }
        let tokens = strings(metadata, "tokenizer.ggml.tokens")?;
        let merges = strings(metadata, "tokenizer.ggml.merges")?;
        let types = metadata
            .get("tokenizer.ggml.token_type")
            .and_then(GgufValue::as_array)
            .unwrap_or_default();
        let control: Vec<bool> = types
            .iter()
            .map(|kind| kind.as_u64() == Some(CONTROL_TOKEN))
            .collect();
        let pre = metadata
            .get("tokenizer.ggml.pre")
            .and_then(GgufValue::as_str);
        let split_digits = matches!(pre, Some("smollm" | "qwen2" | "llama-bpe" | "llama3"));
        let eos_token_ids = metadata
            .get("tokenizer.ggml.eos_token_id")
            .and_then(GgufValue::as_u64)
            .and_then(|id| u32::try_from(id).ok());
        Ok(
            Tokenizer::byte_level_bpe(&tokens, &merges, &control, split_digits)?
                .with_eos_token_ids(eos_token_ids),
        )
    }

    /// A byte-level BPE tokenizer from its vocabulary (ids in order), its merges (`"left right"`),
    /// which tokens are control tokens, and whether digits are split one by one.
    fn byte_level_bpe(
        tokens: &[&str],
        merges: &[&str],
        control: &[bool],
        split_digits: bool,
    ) -> Result<Self, Error> {
        let merges = merges
            .iter()
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
            .map_err(Error::tokenizer)?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        let byte_level = ByteLevel::new(false, true, true);
        let pre_tokenizer: PreTokenizerWrapper = if split_digits {
            Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
        } else {
            byte_level.into()
        };
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(byte_level));
        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(control)
            .filter(|(_, is_control)| **is_control)
            .map(|(token, _)| AddedToken::from(token.to_string(), true))
            .collect();
        inner.add_special_tokens(added).map_err(Error::tokenizer)?;
        let fast = FastBpe::new(tokens, control, split_digits);
        Ok(Tokenizer::wrap(inner, Some(Arc::new(fast))))
    }

    /// A byte-level tokenizer with one token per byte (id = the byte's value) and no merges:
    /// any text round-trips, multi-byte characters span several tokens. For tests, demos and
    /// engines that work on bytes, such as the echo engine.
    ///
    /// ```
    /// let tokenizer = dynamo_openai::Tokenizer::bytes();
    /// assert_eq!(tokenizer.encode("hé")?, [104, 195, 169]);
    /// assert_eq!(tokenizer.decode(&[104, 195, 169], true)?, "hé");
    /// # Ok::<(), dynamo_openai::Error>(())
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
        Tokenizer::wrap(inner, None)
    }

    fn wrap(inner: tokenizers::Tokenizer, fast: Option<Arc<FastBpe>>) -> Self {
        Tokenizer {
            vocab_size: inner.get_vocab_size(true),
            inner,
            eos_token_ids: Vec::new(),
            fast,
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
    ///
    /// ASCII text given to a GGUF tokenizer takes a fast path that splits words without the
    /// library's regex and offset tables, then asks the same BPE model; the ids are the same.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, Error> {
        let fast = self.fast.as_ref();
        match fast.and_then(|fast| fast.encode(self.inner.get_model(), text)) {
            Some(ids) => ids,
            None => self.encode_with_library(text),
        }
    }

    fn encode_with_library(&self, text: &str) -> Result<Vec<u32>, Error> {
        let encoding = self.inner.encode(text, false).map_err(Error::tokenizer)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Decode ids to text, leaving special tokens out when `skip_special` is set.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, Error> {
        if let Some(fast) = &self.fast {
            return Ok(fast.decode(ids, skip_special));
        }
        self.decode_with_library(ids, skip_special)
    }

    fn decode_with_library(&self, ids: &[u32], skip_special: bool) -> Result<String, Error> {
        self.inner
            .decode(ids, skip_special)
            .map_err(Error::tokenizer)
    }

    /// The bytes one token stands for, which may be part of a UTF-8 character (as OpenAI's
    /// `logprobs.content[].bytes` reports them). Byte-level vocabularies map the token's
    /// characters back to bytes; others give the UTF-8 of the token decoded alone.
    pub fn token_bytes(&self, id: u32) -> Result<Vec<u8>, Error> {
        if let Some(piece) = self.fast.as_ref().and_then(|fast| fast.piece(id)) {
            return Ok(piece.to_vec());
        }
        let decoded = self.decode_with_library(&[id], false)?;
        if !decoded.contains(char::REPLACEMENT_CHARACTER) {
            return Ok(decoded.into_bytes());
        }
        Ok(match self.inner.id_to_token(id) {
            Some(token) => super::fast_bpe::token_bytes(&token, false).into_vec(),
            None => decoded.into_bytes(),
        })
    }

    /// The id of `token`, if the vocabulary has it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// How many ids the vocabulary has, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }
}

fn strings<'a>(metadata: &'a GgufMetadata, key: &'static str) -> Result<Vec<&'a str>, Error> {
    metadata
        .get(key)
        .and_then(GgufValue::as_array)
        .ok_or_else(|| missing_key(key))?
        .iter()
        .map(|value| value.as_str().ok_or_else(|| missing_key(key)))
        .collect()
}

fn missing_key(key: &str) -> Error {
    Error::GgufMissingKey {
        key: key.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A small byte-level BPE vocabulary: the 256 byte characters, a few merges of common
    /// English pieces, and two control tokens.
    fn small_tokenizer(split_digits: bool) -> Tokenizer {
        let mut tokens: Vec<String> = (0..=255u8)
            .map(|b| byte_level_char(b).to_string())
            .collect();
        let merges = [
            "h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "' s", "1 2",
        ];
        for merge in merges {
            tokens.push(merge.replace(' ', ""));
        }
        tokens.extend(["<|im_start|>".to_owned(), "<|im_end|>".to_owned()]);
        let control: Vec<bool> = (0..tokens.len()).map(|id| id >= tokens.len() - 2).collect();
        let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
        match Tokenizer::byte_level_bpe(&tokens, &merges, &control, split_digits) {
            Ok(tokenizer) => tokenizer,
            Err(error) => panic!("the small vocabulary builds: {error}"),
        }
    }

    fn library_ids(tokenizer: &Tokenizer, text: &str) -> Vec<u32> {
        match tokenizer.encode_with_library(text) {
            Ok(ids) => ids,
            Err(error) => panic!("the library encodes {text:?}: {error}"),
        }
    }

    #[test]
    fn the_fast_path_merges_and_finds_special_tokens() {
        let tokenizer = small_tokenizer(true);
        let text = "<|im_start|>hello world's 12<|im_end|>";
        let ids = tokenizer.encode(text).ok();
        assert_eq!(ids.as_deref(), Some(&library_ids(&tokenizer, text)[..]));
        assert_eq!(
            tokenizer
                .decode(ids.as_deref().unwrap_or_default(), false)
                .ok()
                .as_deref(),
            Some(text)
        );
    }

    proptest! {
        /// On any ASCII text, with or without digit splitting, the fast path gives the ids the
        /// library's pipeline gives.
        #[test]
        fn the_fast_path_agrees_with_the_library(
            text in r"([ -~\t\n\r\x0b\x0c]|<\|im_start\|>|<\|im_end\|>|'s|'ll| world|hello|12){0,40}",
            split_digits in any::<bool>(),
        ) {
            let tokenizer = small_tokenizer(split_digits);
            let library = Some(library_ids(&tokenizer, &text));
            // The second time, the words come from the fast path's cache.
            prop_assert_eq!(&tokenizer.encode(&text).ok(), &library);
            prop_assert_eq!(&tokenizer.encode(&text).ok(), &library);
        }

        /// Any ids, known or not, special or not, with or without skipping special tokens,
        /// decode to the library's text.
        #[test]
        fn the_fast_decoder_agrees_with_the_library(
            ids in proptest::collection::vec(0u32..280, 0..30),
            skip_special in any::<bool>(),
        ) {
            let tokenizer = small_tokenizer(true);
            let library = tokenizer.decode_with_library(&ids, skip_special).ok();
            prop_assert_eq!(tokenizer.decode(&ids, skip_special).ok(), library);
        }
    }
}
