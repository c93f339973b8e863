//! The generation capability of a loaded model: what an encoder–decoder (T5, Whisper)
//! offers so that the manager can run a search over it.
//!
//! `LoadedModel::infer` is one-shot and stateless; generation needs per-request state. A
//! [`Seq2SeqGenerator`] runs the encoder once per request and hands back a
//! [`DecodingSession`], which owns that request's key/value cache and runs the decoder one
//! token per row at a time. The search itself (greedy, beam search, stop rules, logits
//! processors), detokenization and the memory budget are the manager's: a provider only
//! computes logits, so every runtime decodes the same way.
//!
//! Rows are what the decoder runs on: one per input for greedy search, `num_beams` per
//! input for beam search. [`DecodingSession::select_rows`] rebuilds the rows from existing
//! ones (expanding an input into beams, following the beams a step kept, dropping inputs
//! that finished), which is how the caches follow the search without the provider knowing
//! which search runs.

use crate::error::ModelError;
use crate::provider::NamedTensors;

/// The token ids and limits of a generating model, from its own files
/// (`config.json`, `generation_config.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecoderInfo {
    /// The token every row's decoder input starts with.
    pub decoder_start_token_id: u32,
    /// Tokens that end a row (end of sequence).
    pub eos_token_ids: Vec<u32>,
    /// The token finished rows are padded with in a batch's output.
    pub pad_token_id: u32,
    /// The width of the logits: the model's output vocabulary (it may exceed the
    /// tokenizer's, as T5's 32,128 rows for 32,100 tokens).
    pub vocab_size: usize,
    /// The most decoder positions the model has (`None`: relative positions, no limit).
    pub max_target_positions: Option<usize>,
    /// The most encoder input positions the model takes (`None`: no fixed limit).
    pub max_source_positions: Option<usize>,
    /// Bytes of self-attention key/value cache one row adds per decoded token, over all
    /// layers.
    pub self_kv_bytes_per_token: u64,
    /// Bytes of cross-attention keys/values one row holds per encoder position, over all
    /// layers.
    pub cross_kv_bytes_per_source_token: u64,
}

impl DecoderInfo {
    /// The key/value cache, in bytes, of `rows` rows over `source_len` encoder positions
    /// after `decoded` decoder steps: what a running request holds at most.
    ///
    /// ```
    /// use dp_spec::DecoderInfo;
    ///
    /// let info = DecoderInfo {
    ///     decoder_start_token_id: 0,
    ///     eos_token_ids: vec![1],
    ///     pad_token_id: 0,
    ///     vocab_size: 100,
    ///     max_target_positions: None,
    ///     max_source_positions: None,
    ///     self_kv_bytes_per_token: 1024,
    ///     cross_kv_bytes_per_source_token: 512,
    /// };
    /// assert_eq!(info.kv_cache_bytes(4, 10, 20), 4 * (10 * 512 + 20 * 1024));
    /// ```
    #[must_use]
    pub fn kv_cache_bytes(&self, rows: usize, source_len: usize, decoded: usize) -> u64 {
        let rows = rows as u64;
        rows.saturating_mul(
            (source_len as u64)
                .saturating_mul(self.cross_kv_bytes_per_source_token)
                .saturating_add((decoded as u64).saturating_mul(self.self_kv_bytes_per_token)),
        )
    }
}

/// A loaded encoder–decoder that can start decoding sessions.
pub trait Seq2SeqGenerator: Send + Sync {
    /// The model's token ids and limits.
    fn decoder_info(&self) -> &DecoderInfo;

    /// Runs the encoder on `encoder_inputs` (for a text model `input_ids` and
    /// `attention_mask`, `[batch, seq]`) and returns a session with one row per input and
    /// an empty decoder cache.
    ///
    /// # Errors
    /// `invalid_input` for inputs that do not fit the model; a runtime failure.
    fn start(
        &self,
        encoder_inputs: &NamedTensors,
    ) -> Result<Box<dyn DecodingSession + '_>, ModelError>;
}

/// One request's decoding state: the encoder's output and the decoder's key/value cache.
pub trait DecodingSession: Send {
    /// The rows the next [`Self::step`] runs on.
    fn rows(&self) -> usize;

    /// Feeds one token per row (`tokens.len() == rows()`) and returns the logits for the
    /// next position, fp32 `[rows, vocab_size]` row-major, before any softmax.
    ///
    /// # Errors
    /// `invalid_input` when `tokens` does not hold one valid id per row, or the model's
    /// positions are used up; a runtime failure.
    fn step(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ModelError>;

    /// Makes row `i` a copy of the current row `rows[i]`: duplicates expand (an input into
    /// its beams), a permutation follows the beams a search kept, omissions drop finished
    /// rows. Encoder outputs and caches follow.
    ///
    /// # Errors
    /// `invalid_input` for an index that is not a current row.
    fn select_rows(&mut self, rows: &[usize]) -> Result<(), ModelError>;

    /// The key/value cache this session holds now, in bytes.
    fn kv_cache_bytes(&self) -> u64;
}
