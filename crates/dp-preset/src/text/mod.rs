//! The text presets' parts: tokenizing ([`TextTokenizer`]), pooling ([`pool`]) and the
//! `sentence_embedding` preset ([`SentenceEmbedding`]) built from them.
//!
//! `sentence_embedding`:
//! 1. tokenization with the `tokenizers` crate from the model's `tokenizer.json`,
//!    truncated to the model's maximum length and padded to the longest text of each batch;
//! 2. the provider runs the model on `input_ids`, `attention_mask` and `token_type_ids`
//!    (int64, `[batch, seq]`; only those the spec's `input_schema` names, when it names
//!    any) and returns `last_hidden_state` (fp32, `[batch, seq, hidden]`);
//! 3. pooling over the real (unpadded) tokens: `mean`, `cls`, `max` or `last_token`;
//! 4. L2 normalization, when asked.
//!
//! Named prompts (sentence-transformers' `prompts` in `config_sentence_transformers.json`,
//! plus any the spec's `preprocess_params.prompts` adds) are prepended to the texts of a
//! call that names one ([`Preset::with_prompt`]), or the default prompt
//! (`default_prompt_name`) when it names none; the prompt used is part of the preprocess
//! signature.
//!
//! Each setting comes from `preprocess_params` when the spec gives it, otherwise from the
//! sentence-transformers files listed among the artifacts (`sentence_bert_config.json`
//! `max_seq_length`, `1_Pooling/config.json`, `modules.json` listing
//! `sentence_transformers.models.Normalize`), otherwise from a default (512 tokens, mean,
//! no normalization). When both give a setting and disagree, loading fails with
//! `invalid_spec`.

mod config;
pub mod cross_encoder;
pub mod generation;
mod pooling;
mod tokenize;

use std::collections::BTreeMap;
use std::fmt;

use dp_spec::tensor_names::{LAST_HIDDEN_STATE, TEXT_INPUTS};
use dp_spec::{ModelSpec, NamedTensors, Tensor, TensorData, VerifiedArtifacts};
use serde_json::Value;

pub use self::config::{DEFAULT_MAX_LENGTH, SentenceEmbeddingConfig};
pub use self::cross_encoder::{CROSS_ENCODER, CrossEncoder, ScoreActivation};
pub use self::generation::{TEXT_GENERATION, TextGeneration};
pub use self::pooling::{Pooling, pool};
pub use self::tokenize::{TextTokenizer, TokenizedBatch};
use crate::artifacts::ArtifactFiles;
use crate::error::PresetError;
use crate::{
    BatchContext, EncodedBatch, InputKind, Preset, PresetInputs, PresetOutput, l2_normalize,
};

/// The name of the sentence-embedding preset in specs.
pub const SENTENCE_EMBEDDING: &str = "sentence_embedding";

/// Texts per model call when the spec sets no `resource_requirements.max_batch_size`.
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// Pad tokens tried, in order, when a `tokenizer.json` sets no padding.
pub(crate) const PAD_TOKENS: [&str; 3] = ["[PAD]", "<pad>", "<PAD>"];

/// The `sentence_embedding` preset of one model: its tokenizer, built once when the model
/// is loaded, and its pooling settings.
///
/// ```
/// use dp_preset::text::{Pooling, SentenceEmbedding, SentenceEmbeddingConfig};
///
/// // A word-level tokenizer with three words; real models list a `tokenizer.json`.
/// let json = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
///   "normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,
///   "decoder":null,"model":{"type":"WordLevel","vocab":{"[PAD]":0,"[UNK]":1,"hello":2,
///   "world":3},"unk_token":"[UNK]"}}"#;
/// let config = SentenceEmbeddingConfig::new(8, Pooling::Mean, true);
/// let preset = SentenceEmbedding::from_tokenizer_json(json.as_bytes(), "tokenizer.json", config)?;
/// let batch = preset.tokenize(&["hello world", "world"])?;
/// assert_eq!(batch.input_ids, vec![2, 3, 3, 0]);
/// assert_eq!(batch.attention_mask, vec![1, 1, 1, 0]);
/// assert_eq!((batch.batch, batch.seq_len), (2, 2));
/// # Ok::<(), dp_preset::PresetError>(())
/// ```
pub struct SentenceEmbedding {
    tokenizer: TextTokenizer,
    config: SentenceEmbeddingConfig,
    params: BTreeMap<String, Value>,
    /// Which of [`TEXT_INPUTS`] the model takes.
    inputs: [bool; 3],
    batch_size: usize,
    /// The spec's `max_batch_tokens`.
    max_batch_tokens: Option<usize>,
    signature: String,
}

impl SentenceEmbedding {
    /// The preset of `spec`, reading its files from the model's verified artifacts (never
    /// from disk again: the bytes parsed are the bytes verified).
    ///
    /// # Errors
    /// `invalid_spec` (naming the file) when the tokenizer or a sentence-transformers file is
    /// missing from the artifacts or malformed, when a setting is invalid, or when
    /// `preprocess_params` contradict the model's files.
    pub fn from_spec(spec: &ModelSpec, artifacts: &VerifiedArtifacts) -> Result<Self, PresetError> {
        let files = ArtifactFiles::new(spec, artifacts);
        let tokenizer = files.require(SENTENCE_EMBEDDING, "tokenizer.json")?;
        let config = SentenceEmbeddingConfig::resolve(&files)?;
        let mut preset =
            Self::from_tokenizer_json(tokenizer.bytes(), files.display(tokenizer), config)?;
        if !spec.input_schema.is_empty() {
            let wanted: Vec<&str> = spec.input_schema.iter().map(|t| t.name.as_str()).collect();
            if let Some(unknown) = wanted.iter().find(|name| !TEXT_INPUTS.contains(name)) {
                return Err(PresetError::InvalidConfig {
                    message: format!(
                        "model {}: input_schema names {unknown:?}, but preset \
                         {SENTENCE_EMBEDDING} only produces {TEXT_INPUTS:?}",
                        spec.model_name
                    ),
                    file: None,
                });
            }
            preset.inputs = TEXT_INPUTS.map(|name| wanted.contains(&name));
        }
        preset.batch_size = batch_size_of(spec, DEFAULT_BATCH_SIZE);
        preset.max_batch_tokens = max_batch_tokens_of(spec);
        Ok(preset)
    }

    /// A preset from the bytes of a `tokenizer.json` (`path` names it in errors).
    ///
    /// # Errors
    /// `invalid_spec`, naming `path`, when the bytes are not a tokenizer this build can run.
    pub fn from_tokenizer_json(
        bytes: &[u8],
        path: impl AsRef<std::path::Path>,
        config: SentenceEmbeddingConfig,
    ) -> Result<Self, PresetError> {
        let tokenizer = TextTokenizer::from_json(bytes, path, config.max_length, &PAD_TOKENS)?;
        Ok(Self {
            tokenizer,
            signature: config.preprocess_signature(),
            params: config.params(),
            config,
            inputs: [true; 3],
            batch_size: DEFAULT_BATCH_SIZE,
            max_batch_tokens: None,
        })
    }

    /// The resolved settings.
    #[must_use]
    pub const fn config(&self) -> &SentenceEmbeddingConfig {
        &self.config
    }

    /// The tokenizer.
    #[must_use]
    pub const fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Tokenizes one batch (with the default prompt, if any): truncated, padded to its
    /// longest text.
    ///
    /// # Errors
    /// `invalid_input` when the tokenizer fails on a text.
    pub fn tokenize(&self, texts: &[&str]) -> Result<TokenizedBatch, PresetError> {
        self.tokenizer.encode(texts, self.config.default_prefix())
    }

    /// Encodes texts with `prefix` prepended to each.
    fn encode_texts(
        &self,
        inputs: PresetInputs<'_>,
        prefix: Option<&str>,
    ) -> Result<EncodedBatch, PresetError> {
        let PresetInputs::Texts(texts) = inputs else {
            return Err(crate::refused(SENTENCE_EMBEDDING, inputs.kind()));
        };
        // s-t prepends an empty prompt as nothing at all.
        let prefix = prefix.filter(|p| !p.is_empty());
        let batch = self.tokenizer.encode(texts, prefix)?;
        Ok(EncodedBatch {
            tensors: self.tensors(&batch)?,
            len: batch.batch,
            context: BatchContext::Text {
                seq_len: batch.seq_len,
                attention_mask: batch.attention_mask,
            },
        })
    }

    /// Tokens each text takes with `prefix` prepended (see [`Preset::input_lengths`]).
    fn text_lengths(
        &self,
        inputs: &PresetInputs<'_>,
        prefix: Option<&str>,
    ) -> Result<Option<Vec<usize>>, PresetError> {
        let PresetInputs::Texts(texts) = inputs else {
            return Ok(None);
        };
        let prefix = prefix.filter(|p| !p.is_empty());
        self.tokenizer.token_counts(texts, prefix).map(Some)
    }

    /// The named tensors of a batch, as the model takes them.
    ///
    /// # Errors
    /// Never in practice (the shapes are built to match).
    pub fn tensors(&self, batch: &TokenizedBatch) -> Result<NamedTensors, PresetError> {
        text_tensors(batch, self.inputs)
    }
}

/// The named text tensors of a batch: those of [`TEXT_INPUTS`] that `wanted` marks.
pub(crate) fn text_tensors(
    batch: &TokenizedBatch,
    wanted: [bool; 3],
) -> Result<NamedTensors, PresetError> {
    let shape = vec![batch.batch, batch.seq_len];
    let columns = [
        &batch.input_ids,
        &batch.attention_mask,
        &batch.token_type_ids,
    ];
    let mut tensors = NamedTensors::new();
    for ((name, wanted), data) in TEXT_INPUTS.iter().zip(wanted).zip(columns) {
        if wanted {
            let tensor = Tensor::new(shape.clone(), TensorData::Int64(data.clone()))
                .map_err(|err| PresetError::output(err.message))?;
            tensors.insert((*name).to_owned(), tensor);
        }
    }
    Ok(tensors)
}

/// Inputs per model call: the spec's `max_batch_size`, else `default`.
pub(crate) fn batch_size_of(spec: &ModelSpec, default: usize) -> usize {
    spec.resource_requirements
        .max_batch_size
        .map_or(default, |max| {
            usize::try_from(max).unwrap_or(usize::MAX).max(1)
        })
}

/// Padded tokens per model call: the spec's `max_batch_tokens`, if any.
pub(crate) fn max_batch_tokens_of(spec: &ModelSpec) -> Option<usize> {
    spec.resource_requirements
        .max_batch_tokens
        .map(|max| usize::try_from(max).unwrap_or(usize::MAX).max(1))
}

impl Preset for SentenceEmbedding {
    fn name(&self) -> &'static str {
        SENTENCE_EMBEDDING
    }

    fn params(&self) -> &BTreeMap<String, Value> {
        &self.params
    }

    fn preprocess_signature(&self) -> &str {
        &self.signature
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn max_batch_tokens(&self) -> Option<usize> {
        self.max_batch_tokens
    }

    fn accepts(&self, kind: InputKind) -> bool {
        kind == InputKind::Texts
    }

    fn prompt_name(&self) -> Option<&str> {
        self.config.default_prompt_name.as_deref()
    }

    fn with_prompt(&self, name: &str) -> Result<Box<dyn Preset + '_>, PresetError> {
        let (name, prompt) = self.config.prompts.get_key_value(name).ok_or_else(|| {
            PresetError::input(
                "unknown_prompt",
                format!(
                    "unknown prompt name {name:?}: this model's prompts are {}; name one of \
                     them, or add the prompt to the spec's preprocess_params.prompts",
                    config::prompt_list(&self.config.prompts)
                ),
            )
        })?;
        let params = self.config.params_with_prompt(name, prompt);
        Ok(Box::new(PromptedSentenceEmbedding {
            base: self,
            name,
            prompt,
            signature: dp_signature::preprocess_signature(Some(SENTENCE_EMBEDDING), &params),
            params,
        }))
    }

    fn input_lengths(&self, inputs: &PresetInputs<'_>) -> Result<Option<Vec<usize>>, PresetError> {
        self.text_lengths(inputs, self.config.default_prefix())
    }

    fn encode(&self, inputs: PresetInputs<'_>) -> Result<EncodedBatch, PresetError> {
        self.encode_texts(inputs, self.config.default_prefix())
    }

    fn decode(
        &self,
        batch: &EncodedBatch,
        outputs: NamedTensors,
    ) -> Result<PresetOutput, PresetError> {
        self.decode_hidden(batch, &outputs)
    }
}

impl SentenceEmbedding {
    /// Pools (and normalizes) the model's `last_hidden_state` for a batch it encoded.
    fn decode_hidden(
        &self,
        batch: &EncodedBatch,
        outputs: &NamedTensors,
    ) -> Result<PresetOutput, PresetError> {
        let BatchContext::Text {
            seq_len,
            attention_mask,
        } = &batch.context
        else {
            return Err(PresetError::output(
                "sentence_embedding decodes only the batches it encoded",
            ));
        };
        let hidden = outputs.get(LAST_HIDDEN_STATE).ok_or_else(|| {
            let names: Vec<&str> = outputs.keys().map(String::as_str).collect();
            PresetError::output(format!(
                "the model returned {names:?} but preset {SENTENCE_EMBEDDING} needs \
                 {LAST_HIDDEN_STATE:?}; fix the spec's output_schema or the model"
            ))
        })?;
        let mut vectors = pooling::pool_tensor(
            self.config.pooling,
            hidden,
            batch.len,
            *seq_len,
            attention_mask,
        )?;
        if self.config.normalize {
            vectors.iter_mut().for_each(|v| l2_normalize(v));
        }
        Ok(PresetOutput::Vectors(vectors))
    }
}

/// A [`SentenceEmbedding`] that prepends one of the model's named prompts (see
/// [`Preset::with_prompt`]); everything else is the model's preset.
#[derive(Debug)]
struct PromptedSentenceEmbedding<'a> {
    base: &'a SentenceEmbedding,
    name: &'a str,
    prompt: &'a str,
    params: BTreeMap<String, Value>,
    signature: String,
}

impl Preset for PromptedSentenceEmbedding<'_> {
    fn name(&self) -> &'static str {
        SENTENCE_EMBEDDING
    }

    fn params(&self) -> &BTreeMap<String, Value> {
        &self.params
    }

    fn preprocess_signature(&self) -> &str {
        &self.signature
    }

    fn batch_size(&self) -> usize {
        self.base.batch_size
    }

    fn max_batch_tokens(&self) -> Option<usize> {
        self.base.max_batch_tokens
    }

    fn accepts(&self, kind: InputKind) -> bool {
        self.base.accepts(kind)
    }

    fn prompt_name(&self) -> Option<&str> {
        Some(self.name)
    }

    fn with_prompt(&self, name: &str) -> Result<Box<dyn Preset + '_>, PresetError> {
        self.base.with_prompt(name)
    }

    fn input_lengths(&self, inputs: &PresetInputs<'_>) -> Result<Option<Vec<usize>>, PresetError> {
        self.base.text_lengths(inputs, Some(self.prompt))
    }

    fn encode(&self, inputs: PresetInputs<'_>) -> Result<EncodedBatch, PresetError> {
        self.base.encode_texts(inputs, Some(self.prompt))
    }

    fn decode(
        &self,
        batch: &EncodedBatch,
        outputs: NamedTensors,
    ) -> Result<PresetOutput, PresetError> {
        self.base.decode_hidden(batch, &outputs)
    }
}

impl fmt::Debug for SentenceEmbedding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentenceEmbedding")
            .field("tokenizer", &self.tokenizer)
            .field("config", &self.config)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod truncation_tests;
