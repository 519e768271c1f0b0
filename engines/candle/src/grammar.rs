//! Output formats enforced while sampling, by [llguidance](https://docs.rs/llguidance): each
//! step masks the tokens that would leave the format before the sampler (and the
//! log-probabilities) see the logits, and each sampled token advances the grammar.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynamo_core::{Error, OutputFormat};
use llguidance::toktrie::{ApproximateTokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};

use crate::vocab::TokenBytes;

/// What the engine needs to build grammars: the vocabulary's bytes, and llguidance's parser
/// factory built from them on the first request with a format (it precomputes token slices,
/// which takes a moment that requests without a format need not pay).
pub(crate) struct Grammars {
    vocabulary: Result<(TokenBytes, u32), String>,
    vocab_size: usize,
    factory: Option<Arc<ParserFactory>>,
}

impl Grammars {
    /// Grammars over `vocabulary` (or the reason there is none), for a model with
    /// `vocab_size` logits whose end-of-sequence token is `eos`.
    pub(crate) fn new(
        vocabulary: Result<TokenBytes, String>,
        vocab_size: usize,
        eos: Option<u32>,
    ) -> Self {
        let vocabulary = vocabulary.and_then(|bytes| match eos {
            Some(eos) => Ok((bytes, eos)),
            None => Err("the model names no end-of-sequence token".to_owned()),
        });
        Grammars {
            vocabulary,
            vocab_size,
            factory: None,
        }
    }

    /// A grammar that holds generation to `format`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] when the format does not compile (naming its field), or when
    /// the model's vocabulary could not be read.
    pub(crate) fn start(&mut self, format: &OutputFormat) -> Result<Grammar, Error> {
        let factory = self.factory()?;
        let grammar = format.grammar()?;
        let matcher = Matcher::new(factory.create_parser(grammar));
        if let Some(error) = matcher.get_error() {
            return Err(Error::invalid_request(format!(
                "{}: {error}",
                format.field()
            )));
        }
        Ok(Grammar {
            matcher,
            eos: factory.tok_env().tok_trie().eos_token(),
            spent: Duration::ZERO,
        })
    }

    fn factory(&mut self) -> Result<Arc<ParserFactory>, Error> {
        if let Some(factory) = &self.factory {
            return Ok(Arc::clone(factory));
        }
        let (bytes, eos) = self.vocabulary.as_ref().map_err(|reason| {
            Error::invalid_request(format!(
                "response_format: this model's vocabulary cannot be read ({reason})"
            ))
        })?;
        let mut words = bytes.to_vec();
        words.resize(words.len().max(self.vocab_size), Vec::new());
        let info = TokRxInfo::new(u32::try_from(words.len()).unwrap_or(u32::MAX), *eos);
        let env = Arc::new(ApproximateTokEnv::new(TokTrie::from(&info, &words)));
        let mut factory = ParserFactory::new_simple(&(env as _))
            .map_err(|error| Error::internal(format!("the grammar engine: {error}")))?;
        // The library's own log lines would go to stderr; ours go through tracing.
        factory.quiet();
        let factory = Arc::new(factory);
        self.factory = Some(Arc::clone(&factory));
        Ok(factory)
    }
}

/// The grammar of one sequence.
pub(crate) struct Grammar {
    matcher: Matcher,
    eos: u32,
    /// Time spent masking and advancing, for the record the sequence leaves when it ends.
    spent: Duration,
}

impl Grammar {
    /// Mask in `logits` every token the grammar does not allow next. Where the grammar allows
    /// the end of the sequence, every token of `stop` is allowed too (chat models end a turn
    /// with their own token).
    ///
    /// # Errors
    ///
    /// When the grammar is in error, or allows no token at all.
    pub(crate) fn mask(&mut self, logits: &mut [f32], stop: &HashSet<u32>) -> Result<(), Error> {
        let started = Instant::now();
        let mask = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|error| Error::internal(format!("the grammar engine: {error}")))?;
        let ends = mask.is_allowed(self.eos);
        let allowed = |id: usize| {
            (id < mask.len() && mask.get(id))
                || (ends && u32::try_from(id).is_ok_and(|id| stop.contains(&id)))
        };
        let mut any = false;
        for (id, logit) in logits.iter_mut().enumerate() {
            if allowed(id) {
                any = true;
            } else {
                *logit = f32::NEG_INFINITY;
            }
        }
        self.spent += started.elapsed();
        if any {
            Ok(())
        } else {
            Err(Error::internal("the grammar allows no token of this model"))
        }
    }

    /// Advance the grammar over `tokens` generated before (a continuation's output so far).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] when the format does not allow them.
    pub(crate) fn resume(&mut self, tokens: &[u32]) -> Result<(), Error> {
        self.matcher.consume_tokens(tokens).map_err(|error| {
            Error::invalid_request(format!(
                "response_format: the output so far does not follow the format: {error}"
            ))
        })
    }

    /// Advance the grammar by a sampled `token`; whether the format is complete, with nothing
    /// but the end of the sequence left to sample.
    ///
    /// # Errors
    ///
    /// When the grammar does not accept the token (the mask should have prevented it).
    pub(crate) fn accept(&mut self, token: u32) -> Result<bool, Error> {
        let started = Instant::now();
        self.matcher
            .consume_token(token)
            .map_err(|error| Error::internal(format!("the grammar engine: {error}")))?;
        let stopped = self.matcher.is_stopped();
        self.spent += started.elapsed();
        Ok(stopped)
    }

    /// Time spent masking logits and advancing the grammar so far.
    pub(crate) fn spent(&self) -> Duration {
        self.spent
    }
}
