//! Text generation ([`ModelManager::generate`]): texts through an encoder–decoder (T5) and
//! the manager's search, one generated text per input.
//!
//! The provider computes logits ([`dp_spec::Seq2SeqGenerator`]); the model's preset makes
//! the encoder inputs and reads the ids back into text ([`dp_preset::Seq2SeqPreset`]); the
//! search, its options and the memory its key/value cache needs are the manager's. Before a
//! batch starts decoding, its cache at its largest (every row kept to the last token) is
//! reserved against the RAM or VRAM budget, evicting idle models if that makes room, and
//! given back when the batch ends: running requests and loaded models share one budget.

use std::collections::BTreeMap;

use dp_preset::PresetInputs;
use dp_signature::ModelsUsedEntry;
use dp_spec::tensor_names::INPUT_IDS;
use dp_spec::{ModelError, ResolvedDevice};
use serde::Serialize;
use serde_json::Value;

use crate::budget::{Demand, Reservation};
use crate::error::ManagerError;
use crate::manager::ModelManager;
use crate::search::{self, SearchOptions};

pub use crate::search::EarlyStopping;

/// New tokens per text when a call does not say (`max_new_tokens`).
pub const DEFAULT_MAX_NEW_TOKENS: usize = 64;

/// The most new tokens a call may ask of a model that declares no decoder limit.
pub const MAX_NEW_TOKENS_LIMIT: usize = 4096;

/// The most beams a call may ask for.
pub const MAX_BEAMS: usize = 64;

/// The options a generation call takes: task options of `text_generation`, `dp generate`
/// flags. Defaults are transformers' `generate` defaults except `max_new_tokens`.
///
/// ```
/// use std::collections::BTreeMap;
/// use dp_manager::GenerationOptions;
///
/// let options = BTreeMap::from([
///     ("num_beams".to_owned(), serde_json::json!(4)),
///     ("max_new_tokens".to_owned(), serde_json::json!(32)),
/// ]);
/// let parsed = GenerationOptions::from_task_options(&options)?;
/// assert_eq!((parsed.num_beams, parsed.max_new_tokens), (4, Some(32)));
/// let unknown = BTreeMap::from([("temperature".to_owned(), serde_json::json!(0.7))]);
/// assert!(GenerationOptions::from_task_options(&unknown).is_err());
/// # Ok::<(), dp_spec::ModelError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerationOptions {
    /// New tokens at most per text (end of sequence included); `None`:
    /// [`DEFAULT_MAX_NEW_TOKENS`].
    pub max_new_tokens: Option<usize>,
    /// New tokens before the end of sequence may be chosen.
    pub min_new_tokens: usize,
    /// 1 for greedy search, more for beam search.
    pub num_beams: usize,
    /// Beam scores are divided by `length^length_penalty` (above 0 favours longer texts).
    pub length_penalty: f32,
    /// No n-gram of this size appears twice (0: off).
    pub no_repeat_ngram_size: usize,
    /// When beam search stops.
    pub early_stopping: EarlyStopping,
}

impl Default for GenerationOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: None,
            min_new_tokens: 0,
            num_beams: 1,
            length_penalty: 1.0,
            no_repeat_ngram_size: 0,
            early_stopping: EarlyStopping::Heuristic,
        }
    }
}

/// The names of the options, for messages.
const OPTION_NAMES: &str = "max_new_tokens, min_new_tokens, num_beams, length_penalty, \
                            no_repeat_ngram_size, early_stopping";

pub(crate) fn bad_option(name: &str, message: String) -> ModelError {
    ModelError::from(ManagerError::BadTask { message })
        .with_detail("reason", "invalid_option")
        .with_detail("option", name)
}

impl GenerationOptions {
    /// Reads task options; any other option, or a value of the wrong type, is refused
    /// (`invalid_input`, reason `invalid_option`) rather than ignored.
    ///
    /// # Errors
    /// As said.
    pub fn from_task_options(options: &BTreeMap<String, Value>) -> Result<Self, ModelError> {
        let mut parsed = Self::default();
        for (name, value) in options {
            let count = |min: u64| {
                value
                    .as_u64()
                    .filter(|n| *n >= min)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        let what = if min == 0 {
                            "a non-negative"
                        } else {
                            "a positive"
                        };
                        bad_option(
                            name,
                            format!("option {name} must be {what} integer, got {value}"),
                        )
                    })
            };
            match name.as_str() {
                "max_new_tokens" => parsed.max_new_tokens = Some(count(1)?),
                "min_new_tokens" => parsed.min_new_tokens = count(0)?,
                "num_beams" => parsed.num_beams = count(1)?,
                "no_repeat_ngram_size" => parsed.no_repeat_ngram_size = count(0)?,
                "length_penalty" => {
                    #[allow(clippy::cast_possible_truncation, reason = "a penalty, checked finite")]
                    let penalty = value
                        .as_f64()
                        .map(|p| p as f32)
                        .filter(|p| p.is_finite())
                        .ok_or_else(|| {
                            bad_option(
                                name,
                                format!(
                                    "option length_penalty must be a finite number, got {value}"
                                ),
                            )
                        })?;
                    parsed.length_penalty = penalty;
                }
                "early_stopping" => {
                    parsed.early_stopping = match value {
                        Value::Bool(false) => EarlyStopping::Heuristic,
                        Value::Bool(true) => EarlyStopping::WhenFull,
                        Value::String(s) if s == "never" => EarlyStopping::Never,
                        _ => {
                            return Err(bad_option(
                                name,
                                format!(
                                    "option early_stopping must be true, false or \"never\", got \
                                     {value}"
                                ),
                            ));
                        }
                    };
                }
                _ => {
                    return Err(ModelError::from(ManagerError::BadTask {
                        message: format!(
                            "task text_generation takes the options {OPTION_NAMES}; got \
                             {name:?} (sampling is not offered: generation here is \
                             deterministic)"
                        ),
                    })
                    .with_detail("reason", "unknown_option")
                    .with_detail("option", name.as_str()));
                }
            }
        }
        Ok(parsed)
    }

    /// The options checked against the model's limits.
    pub(crate) fn resolve(&self, limit: usize, model: &str) -> Result<SearchOptions, ModelError> {
        let max_new_tokens = self
            .max_new_tokens
            .unwrap_or(DEFAULT_MAX_NEW_TOKENS.min(limit));
        if max_new_tokens == 0 || max_new_tokens > limit {
            return Err(bad_option(
                "max_new_tokens",
                format!(
                    "max_new_tokens is {max_new_tokens}, but model {model} generates 1 to \
                     {limit} tokens per text"
                ),
            ));
        }
        if self.min_new_tokens > max_new_tokens {
            return Err(bad_option(
                "min_new_tokens",
                format!(
                    "min_new_tokens {} exceeds max_new_tokens {max_new_tokens}",
                    self.min_new_tokens
                ),
            ));
        }
        if self.num_beams == 0 || self.num_beams > MAX_BEAMS {
            return Err(bad_option(
                "num_beams",
                format!(
                    "num_beams is {}; use 1 (greedy) to {MAX_BEAMS}",
                    self.num_beams
                ),
            ));
        }
        if !self.length_penalty.is_finite() {
            return Err(bad_option(
                "length_penalty",
                format!("length_penalty must be finite, got {}", self.length_penalty),
            ));
        }
        Ok(SearchOptions {
            max_new_tokens,
            min_new_tokens: self.min_new_tokens,
            num_beams: self.num_beams,
            length_penalty: self.length_penalty,
            no_repeat_ngram_size: self.no_repeat_ngram_size,
            early_stopping: self.early_stopping,
        })
    }
}

impl SearchOptions {
    /// The record of these options in `models_used.generation`.
    pub(crate) fn record(&self) -> BTreeMap<String, Value> {
        let early_stopping = match self.early_stopping {
            EarlyStopping::Heuristic => Value::from(false),
            EarlyStopping::WhenFull => Value::from(true),
            EarlyStopping::Never => Value::from("never"),
        };
        let decoding = if self.num_beams > 1 {
            "beam_search"
        } else {
            "greedy"
        };
        BTreeMap::from([
            ("decoding".to_owned(), Value::from(decoding)),
            (
                "max_new_tokens".to_owned(),
                Value::from(self.max_new_tokens),
            ),
            (
                "min_new_tokens".to_owned(),
                Value::from(self.min_new_tokens),
            ),
            ("num_beams".to_owned(), Value::from(self.num_beams)),
            (
                "length_penalty".to_owned(),
                Value::from(self.length_penalty),
            ),
            (
                "no_repeat_ngram_size".to_owned(),
                Value::from(self.no_repeat_ngram_size),
            ),
            ("early_stopping".to_owned(), early_stopping),
        ])
    }
}

/// The texts of a [`ModelManager::generate`] call and what made them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerationOutput {
    /// One generated text per input, in input order.
    pub texts: Vec<String>,
    /// The generated token ids per input (no decoder start; the end-of-sequence token
    /// when one was produced).
    pub token_ids: Vec<Vec<u32>>,
    /// The inputs (by index) truncated to the encoder's maximum before generating.
    pub truncated: Vec<usize>,
    /// The largest key/value cache one batch held, in bytes.
    pub kv_cache_peak_bytes: u64,
    /// The model, as resolved, with its signatures and the generation options used.
    pub models_used: Vec<ModelsUsedEntry>,
    /// The canonical signature of that model.
    pub model_signature: String,
}

/// Text as generation fixes it, for streaming ([`ModelManager::generate_streaming`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedPiece<'a> {
    /// The input (by index) the text belongs to.
    pub input: usize,
    /// The text added since the input's previous piece.
    pub text: &'a str,
    /// The token that completed it (greedy search); `None` when the piece is a whole
    /// beam-search result, which is only known at its end.
    pub token_id: Option<u32>,
}

/// A callback receiving generated text as it comes.
pub type OnPiece<'a> = dyn FnMut(GeneratedPiece<'_>) + 'a;

fn no_generation(model: &str, why: &str) -> ModelError {
    ModelError::from(ManagerError::BadTask {
        message: format!(
            "model {model} cannot generate text: {why}; use a model whose role is \
             text_generation (see `dp list`)"
        ),
    })
    .with_detail("reason", "generation_unsupported")
    .with_detail("model", model)
}

impl ModelManager {
    /// Generates one text per input with the encoder–decoder `model` (a name or alias
    /// whose preset is `text_generation`), by greedy search (`num_beams` 1) or beam search.
    ///
    /// # Errors
    /// `invalid_input` for no texts (reason `texts_missing`), an empty text (`empty_text`),
    /// options out of range (`invalid_option`) and a model that cannot generate
    /// (`generation_unsupported`); `insufficient_memory` (or `insufficient_gpu_memory`)
    /// when the key/value cache does not fit the budget; as [`Self::get`] and the model.
    pub fn generate(
        &self,
        model: &str,
        texts: &[&str],
        options: &GenerationOptions,
    ) -> Result<GenerationOutput, ModelError> {
        self.generate_inner(model, texts, options, None)
    }

    /// [`Self::generate`], calling `on_piece` with text as it is fixed: token by token for
    /// greedy search, each whole text for beam search (whose tokens are only final at its
    /// end).
    ///
    /// # Errors
    /// As [`Self::generate`].
    pub fn generate_streaming(
        &self,
        model: &str,
        texts: &[&str],
        options: &GenerationOptions,
        on_piece: &mut OnPiece<'_>,
    ) -> Result<GenerationOutput, ModelError> {
        self.generate_inner(model, texts, options, Some(on_piece))
    }

    fn generate_inner(
        &self,
        model: &str,
        texts: &[&str],
        options: &GenerationOptions,
        mut on_piece: Option<&mut OnPiece<'_>>,
    ) -> Result<GenerationOutput, ModelError> {
        if texts.is_empty() {
            return Err(ModelError::from(ManagerError::BadTask {
                message: format!("text_generation with model {model} needs at least one text"),
            })
            .with_detail("reason", "texts_missing"));
        }
        let handle = self.get(model)?;
        let name = handle.spec().model_name.clone();
        let preset = handle
            .preset()
            .ok_or_else(|| no_generation(&name, "it has no text_generation preset"))?;
        let codec = preset.seq2seq().ok_or_else(|| {
            no_generation(
                &name,
                &format!("its preset is {}, not text_generation", preset.name()),
            )
        })?;
        let generator = handle
            .model()
            .generator()
            .ok_or_else(|| no_generation(&name, "it has no decoder"))?;
        let info = generator.decoder_info();
        let limit = info.max_target_positions.unwrap_or(MAX_NEW_TOKENS_LIMIT);
        let search_options = options.resolve(limit, &name)?;
        let mut entry = handle.models_used().clone();
        entry.generation = Some(search_options.record());

        let mut out = GenerationOutput {
            texts: Vec::with_capacity(texts.len()),
            token_ids: Vec::with_capacity(texts.len()),
            truncated: Vec::new(),
            kv_cache_peak_bytes: 0,
            model_signature: entry.model_signature.clone(),
            models_used: vec![entry],
        };
        let batch_size = preset.batch_size().max(1);
        for (chunk_index, chunk) in texts.chunks(batch_size).enumerate() {
            let offset = chunk_index * batch_size;
            let sources = codec
                .encode_sources(PresetInputs::Texts(chunk))
                .map_err(|e| ModelError::from(e).with_detail("model_name", name.as_str()))?;
            for (i, _) in sources.truncated.iter().enumerate().filter(|(_, t)| **t) {
                tracing::warn!(
                    model = %name,
                    input = offset + i,
                    max_tokens = codec.max_source_tokens(),
                    "input truncated to the encoder's maximum before generating"
                );
                out.truncated.push(offset + i);
            }
            let source_len = sources
                .tensors
                .get(INPUT_IDS)
                .and_then(|t| t.shape().get(1).copied())
                .unwrap_or(0);
            let rows = chunk.len() * search_options.num_beams;
            let _reservation = self.reserve_generation(
                &name,
                handle.key().device,
                rows,
                source_len,
                search_options.max_new_tokens,
                info.kv_cache_bytes(rows, source_len, search_options.max_new_tokens),
            )?;
            let mut session = generator.start(&sources.tensors)?;
            // Streaming: per input, the ids so far and the text already sent.
            let mut streamed: Vec<(Vec<u32>, String)> =
                vec![(Vec::new(), String::new()); chunk.len()];
            let mut decode_error = None;
            let generated = {
                let mut on_token = |input: usize, token: u32| {
                    let Some(on_piece) = on_piece.as_deref_mut() else {
                        return;
                    };
                    let (ids, sent) = &mut streamed[input];
                    ids.push(token);
                    match codec.decode_tokens(ids) {
                        // Text can change before a token completes a character or word:
                        // only what extends the text sent is sent.
                        Ok(text) if text.len() > sent.len() && text.starts_with(sent.as_str()) => {
                            on_piece(GeneratedPiece {
                                input: offset + input,
                                text: &text[sent.len()..],
                                token_id: Some(token),
                            });
                            *sent = text;
                        }
                        Ok(_) => {}
                        Err(err) => decode_error = Some(err),
                    }
                };
                search::search(
                    session.as_mut(),
                    info,
                    &search_options,
                    &search::SearchStart::decoder_start(info, chunk.len()),
                    &mut on_token,
                    &mut out.kv_cache_peak_bytes,
                )?
            };
            if let Some(err) = decode_error {
                return Err(ModelError::from(err).with_detail("model_name", name.as_str()));
            }
            for (i, result) in generated.into_iter().enumerate() {
                let text = codec
                    .decode_tokens(&result.tokens)
                    .map_err(|e| ModelError::from(e).with_detail("model_name", name.as_str()))?;
                if let Some(on_piece) = on_piece.as_deref_mut() {
                    let sent = &streamed[i].1;
                    let rest = text.strip_prefix(sent.as_str()).unwrap_or(&text);
                    if !rest.is_empty() {
                        on_piece(GeneratedPiece {
                            input: offset + i,
                            text: rest,
                            token_id: None,
                        });
                    }
                }
                out.texts.push(text);
                out.token_ids.push(result.tokens);
            }
        }
        Ok(out)
    }

    /// Reserves a batch's key/value cache against the budget of `device`, evicting idle
    /// models if that makes room.
    pub(crate) fn reserve_generation(
        &self,
        model: &str,
        device: ResolvedDevice,
        rows: usize,
        source_len: usize,
        max_new_tokens: usize,
        bytes: u64,
    ) -> Result<Reservation, ModelError> {
        let inner = self.inner();
        let demand = match device {
            ResolvedDevice::Cpu => Demand {
                ram: bytes,
                vram: 0,
            },
            ResolvedDevice::Cuda(_) => Demand {
                ram: 0,
                vram: bytes,
            },
        };
        loop {
            match inner.accounting.try_reserve_transient(demand) {
                Ok(reservation) => return Ok(reservation),
                Err(shortfall) => {
                    if inner.evict_one(&shortfall) {
                        continue;
                    }
                    let budgets = inner.accounting.budgets;
                    let (limit, budget, in_use) = if shortfall.vram {
                        ("VRAM budget", budgets.vram_bytes, shortfall.usage.vram)
                    } else {
                        ("RAM budget", budgets.ram_bytes, shortfall.usage.ram)
                    };
                    return Err(ManagerError::GenerationOverBudget {
                        model: model.to_owned(),
                        device,
                        rows,
                        positions: source_len + max_new_tokens,
                        limit,
                        need: bytes,
                        budget: budget.unwrap_or(u64::MAX),
                        in_use,
                    }
                    .into());
                }
            }
        }
    }
}
