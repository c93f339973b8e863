//! Tokenizing texts for a model: a `tokenizer.json` set up to truncate to the model's
//! maximum length and pad each batch to its longest text, without ever tokenizing more of
//! a huge text than truncation keeps.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::error::PresetError;

/// A tokenized batch, padded to its longest text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedBatch {
    /// Texts in the batch.
    pub batch: usize,
    /// Tokens per text after padding.
    pub seq_len: usize,
    /// Token ids, `[batch, seq_len]` row-major.
    pub input_ids: Vec<i64>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<i64>,
    /// Segment ids.
    pub token_type_ids: Vec<i64>,
}

/// A model's tokenizer, truncating to `max_length` and padding to the longest text.
pub struct TextTokenizer {
    pub(super) tokenizer: Tokenizer,
    max_length: usize,
    path: PathBuf,
    /// A copy that neither truncates nor pads, made at the first long text and kept: it
    /// counts a prefix's tokens (see [`Self::truncation_prefix`]).
    untruncated: OnceLock<Tokenizer>,
}

impl TextTokenizer {
    /// A tokenizer from the bytes of a `tokenizer.json` (`path` names it in errors).
    /// `pad_tokens` are tried in order when the file sets no padding (the model's pad
    /// token first); the first one the vocabulary has pads, else id 0.
    ///
    /// # Errors
    /// `invalid_spec`, naming `path`, when the bytes are not a tokenizer this build can
    /// run or `max_length` is 0.
    pub fn from_json(
        bytes: &[u8],
        path: impl AsRef<Path>,
        max_length: usize,
        pad_tokens: &[&str],
    ) -> Result<Self, PresetError> {
        let path = path.as_ref();
        let bad = |what: String| {
            PresetError::config(
                path.display().to_string(),
                format!(
                    "{}: {what}; replace it with the model's tokenizer.json",
                    path.display()
                ),
            )
        };
        if max_length == 0 {
            return Err(bad("max_length is 0".to_owned()));
        }
        let mut tokenizer = Tokenizer::from_bytes(bytes)
            .map_err(|err| bad(format!("not a valid tokenizer: {err}")))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                ..TruncationParams::default()
            }))
            .map_err(|err| bad(format!("cannot truncate to {max_length}: {err}")))?;
        // Keep the file's pad token if it sets one; else the first known name.
        let padding = match tokenizer.get_padding() {
            Some(params) => PaddingParams {
                strategy: PaddingStrategy::BatchLongest,
                ..params.clone()
            },
            None => {
                let (pad_token, pad_id) = pad_tokens
                    .iter()
                    .find_map(|t| tokenizer.token_to_id(t).map(|id| ((*t).to_owned(), id)))
                    .unwrap_or_else(|| ("[PAD]".to_owned(), 0));
                PaddingParams {
                    strategy: PaddingStrategy::BatchLongest,
                    pad_id,
                    pad_token,
                    ..PaddingParams::default()
                }
            }
        };
        tokenizer.with_padding(Some(padding));
        Ok(Self {
            tokenizer,
            max_length,
            path: path.to_path_buf(),
            untruncated: OnceLock::new(),
        })
    }

    /// The longest token sequence kept (special tokens included).
    #[must_use]
    pub const fn max_length(&self) -> usize {
        self.max_length
    }

    /// The tokenizer file it was built from.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The id of `token`, if the vocabulary has it.
    #[must_use]
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// Tokenizes one batch: truncated, padded to its longest text. `prefix` is prepended
    /// to every text (E5's `"query: "`).
    ///
    /// A long text is cut before it is tokenized (see `truncation_prefix`), so its cost
    /// follows `max_length`, not its size; the ids are those of the whole text, truncated.
    ///
    /// # Errors
    /// `invalid_input` when the tokenizer fails on a text.
    pub fn encode(
        &self,
        texts: &[&str],
        prefix: Option<&str>,
    ) -> Result<TokenizedBatch, PresetError> {
        self.encode_reporting(texts, prefix).map(|(batch, _)| batch)
    }

    /// As [`Self::encode`], and says which texts truncation shortened.
    ///
    /// # Errors
    /// `invalid_input` when the tokenizer fails on a text.
    pub fn encode_reporting(
        &self,
        texts: &[&str],
        prefix: Option<&str>,
    ) -> Result<(TokenizedBatch, Vec<bool>), PresetError> {
        let failed = |err: tokenizers::Error| {
            PresetError::input(
                "tokenizer_failed",
                format!("tokenizer {} failed: {err}", self.path.display()),
            )
        };
        let mut inputs = Vec::with_capacity(texts.len());
        let mut cut = Vec::with_capacity(texts.len());
        for text in texts {
            let whole = match prefix {
                Some(prefix) => std::borrow::Cow::Owned(format!("{prefix}{text}")),
                None => std::borrow::Cow::Borrowed(*text),
            };
            let used = self.truncation_prefix(&whole).map_err(failed)?;
            cut.push(used.len() < whole.len());
            inputs.push(used.to_owned());
        }
        let encodings = self.tokenizer.encode_batch(inputs, true).map_err(failed)?;
        let truncated = encodings
            .iter()
            .zip(cut)
            .map(|(encoding, cut)| cut || !encoding.get_overflowing().is_empty())
            .collect();
        Ok((batch_of(&encodings), truncated))
    }

    /// Tokens each text takes after truncation (`prefix` and special tokens included,
    /// padding not): what a batch of it costs, for grouping texts of close lengths.
    ///
    /// # Errors
    /// `invalid_input` when the tokenizer fails on a text.
    pub fn token_counts(
        &self,
        texts: &[&str],
        prefix: Option<&str>,
    ) -> Result<Vec<usize>, PresetError> {
        self.encode_reporting(texts, prefix)
            .map(|(batch, _)| real_lengths(&batch))
    }

    /// Tokens each pair of `first` with one of `seconds` takes after truncation, as
    /// [`Self::token_counts`] counts them.
    ///
    /// # Errors
    /// `invalid_input` when the tokenizer fails on a text.
    pub fn pair_token_counts(
        &self,
        first: &str,
        seconds: &[&str],
    ) -> Result<Vec<usize>, PresetError> {
        self.encode_pairs(first, seconds)
            .map(|(batch, _)| real_lengths(&batch))
    }

    /// The text of `ids`, special tokens left out, as the tokenizer's decoder joins them.
    ///
    /// # Errors
    /// `invalid_input` when the tokenizer cannot decode the ids.
    pub fn decode(&self, ids: &[u32]) -> Result<String, PresetError> {
        self.tokenizer.decode(ids, true).map_err(|err| {
            PresetError::input(
                "tokenizer_failed",
                format!(
                    "tokenizer {} cannot decode {ids:?}: {err}",
                    self.path.display()
                ),
            )
        })
    }

    /// Tokenizes `first` paired with each of `seconds` (a query with its documents, as
    /// cross-encoders take them): the pair truncated longest-first to `max_length`, padded to
    /// the longest pair. Also says which pairs were truncated.
    ///
    /// # Errors
    /// `invalid_input` when the tokenizer fails on a text.
    pub fn encode_pairs(
        &self,
        first: &str,
        seconds: &[&str],
    ) -> Result<(TokenizedBatch, Vec<bool>), PresetError> {
        let failed = |err: tokenizers::Error| {
            PresetError::input(
                "tokenizer_failed",
                format!("tokenizer {} failed: {err}", self.path.display()),
            )
        };
        // Truncation keeps at most `max_length` tokens of either text, so each may be cut as
        // a single text would be.
        let first_used = self.truncation_prefix(first).map_err(failed)?;
        let mut inputs = Vec::with_capacity(seconds.len());
        let mut cut = Vec::with_capacity(seconds.len());
        for second in seconds {
            let used = self.truncation_prefix(second).map_err(failed)?;
            cut.push(used.len() < second.len() || first_used.len() < first.len());
            inputs.push(tokenizers::EncodeInput::Dual(
                first_used.to_owned().into(),
                used.to_owned().into(),
            ));
        }
        let encodings = self.tokenizer.encode_batch(inputs, true).map_err(failed)?;
        let truncated = encodings
            .iter()
            .zip(cut)
            .map(|(encoding, cut)| cut || !encoding.get_overflowing().is_empty())
            .collect();
        Ok((batch_of(&encodings), truncated))
    }

    /// The part of `text` to tokenize: tokenizing it and truncating gives the same tokens as
    /// tokenizing the whole `text` and truncating, without tokenizing all of a huge text
    /// (a 10 MB line used to cost over a gigabyte and seconds inside the tokenizer).
    ///
    /// A short text is used whole. A longer one is cut on a character boundary, first at
    /// 64 bytes per token of `max_length`, doubling, until the prefix's tokens that come from
    /// words the cut cannot have touched (all but its last two words: the tokenizer splits
    /// the text into words and tokenizes each on its own, so only the word the cut falls in
    /// can change) outnumber `max_length` plus a margin. Every token truncation keeps then
    /// comes from those words, so the cut changes only tokens truncation drops anyway. A
    /// text whose prefixes never get there (one endless word) is used whole.
    pub(crate) fn truncation_prefix<'t>(
        &self,
        text: &'t str,
    ) -> Result<&'t str, tokenizers::Error> {
        const FIRST_CUT_BYTES_PER_TOKEN: usize = 64;
        const MARGIN_TOKENS: usize = 16;
        let max_length = self.max_length;
        let mut len = max_length.saturating_mul(FIRST_CUT_BYTES_PER_TOKEN);
        while len < text.len() {
            let mut cut = len;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            let prefix = &text[..cut];
            let counter = match self.untruncated.get() {
                Some(counter) => counter,
                None => {
                    let mut untruncated = self.tokenizer.clone();
                    untruncated.with_truncation(None)?.with_padding(None);
                    // Another thread may have set it first; either copy is the same.
                    self.untruncated.get_or_init(|| untruncated)
                }
            };
            let encoding = counter.encode(prefix, false)?;
            let words = encoding.get_word_ids();
            let last = words.iter().flatten().max().copied().unwrap_or(0);
            let untouched = words
                .iter()
                .flatten()
                .filter(|&&word| word.saturating_add(1) < last)
                .count();
            if untouched > max_length.saturating_add(MARGIN_TOKENS) {
                return Ok(prefix);
            }
            len = len.saturating_mul(2);
        }
        Ok(text)
    }
}

/// The real (unpadded) tokens of each row of a batch.
fn real_lengths(batch: &TokenizedBatch) -> Vec<usize> {
    if batch.seq_len == 0 {
        return vec![0; batch.batch];
    }
    batch
        .attention_mask
        .chunks(batch.seq_len)
        .map(|row| row.iter().filter(|&&m| m != 0).count())
        .collect()
}

/// The ids, masks and segment ids of padded encodings, row-major.
fn batch_of(encodings: &[tokenizers::Encoding]) -> TokenizedBatch {
    let seq_len = encodings.first().map_or(0, tokenizers::Encoding::len);
    let mut batch = TokenizedBatch {
        batch: encodings.len(),
        seq_len,
        input_ids: Vec::with_capacity(encodings.len() * seq_len),
        attention_mask: Vec::with_capacity(encodings.len() * seq_len),
        token_type_ids: Vec::with_capacity(encodings.len() * seq_len),
    };
    for encoding in encodings {
        batch
            .input_ids
            .extend(encoding.get_ids().iter().map(|&v| i64::from(v)));
        batch
            .attention_mask
            .extend(encoding.get_attention_mask().iter().map(|&v| i64::from(v)));
        batch
            .token_type_ids
            .extend(encoding.get_type_ids().iter().map(|&v| i64::from(v)));
    }
    batch
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("path", &self.path)
            .field("max_length", &self.max_length)
            .finish_non_exhaustive()
    }
}
