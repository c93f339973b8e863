//! The `cross_encoder` preset: reranking with a sequence-classification model, as
//! sentence-transformers' `CrossEncoder` does it.
//!
//! 1. the query is paired with each document and the pair tokenized with the model's
//!    `tokenizer.json` (`[CLS] query [SEP] document [SEP]`, or `<s> query </s></s> document
//!    </s>`), truncated longest-first to the model's maximum length (a truncated pair is said
//!    so in a log line, never refused) and padded to the longest pair of the batch;
//! 2. the provider runs the model (BERT or XLM-RoBERTa with its classification head) and
//!    returns `logits`, fp32 `[batch, 1]`;
//! 3. each logit goes through the model's activation: `sigmoid` or `identity` (raw logits).
//!
//! Settings, from the spec's `preprocess_params` (checked against the files) or the model's
//! files: `max_length` (`sentence_bert_config.json` `max_seq_length`, else
//! `tokenizer_config.json` `model_max_length`, else 512) and `activation`
//! (`config.json` `sentence_transformers.activation_fn`, or the older
//! `sbert_ce_default_activation_function`, else sigmoid for a model with one label). The
//! model must be a sequence classifier with exactly one label (`config.json`
//! `architectures`, `id2label`/`num_labels`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use dp_spec::tensor_names::{LOGITS, TEXT_INPUTS};
use dp_spec::{ModelSpec, NamedTensors, TensorData, VerifiedArtifacts};
use serde_json::Value;

use super::{PAD_TOKENS, TextTokenizer, batch_size_of, max_batch_tokens_of, text_tensors};
use crate::artifacts::{ArtifactFiles, agree};
use crate::error::PresetError;
use crate::{BatchContext, EncodedBatch, InputKind, Preset, PresetInputs, PresetOutput};

/// The name of the reranking preset in specs.
pub const CROSS_ENCODER: &str = "cross_encoder";

/// Pairs per model call when the spec sets no `resource_requirements.max_batch_size`
/// (sentence-transformers' `CrossEncoder.predict` default).
pub const DEFAULT_PAIR_BATCH_SIZE: usize = 32;

/// What turns a logit into a score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreActivation {
    /// `1 / (1 + e^-x)`: a relevance probability.
    Sigmoid,
    /// The raw logit.
    Identity,
}

impl ScoreActivation {
    /// The name in `preprocess_params.activation`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Sigmoid => "sigmoid",
            Self::Identity => "identity",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        match name {
            "sigmoid" => Some(Self::Sigmoid),
            "identity" => Some(Self::Identity),
            _ => None,
        }
    }

    /// The activation a sentence-transformers config names by its torch class.
    fn from_torch_class(class: &str) -> Option<Self> {
        match class {
            "torch.nn.modules.activation.Sigmoid" => Some(Self::Sigmoid),
            "torch.nn.modules.linear.Identity" => Some(Self::Identity),
            _ => None,
        }
    }

    /// The score of one logit.
    #[must_use]
    pub fn apply(self, logit: f32) -> f32 {
        match self {
            Self::Sigmoid => 1.0 / (1.0 + (-logit).exp()),
            Self::Identity => logit,
        }
    }
}

/// The `cross_encoder` preset of one model: its tokenizer and its activation.
pub struct CrossEncoder {
    tokenizer: TextTokenizer,
    activation: ScoreActivation,
    /// Which of [`TEXT_INPUTS`] the model takes.
    inputs: [bool; 3],
    batch_size: usize,
    /// The spec's `max_batch_tokens`.
    max_batch_tokens: Option<usize>,
    params: BTreeMap<String, Value>,
    signature: String,
    model_name: String,
}

impl CrossEncoder {
    /// The preset of `spec`, from the model's verified files.
    ///
    /// # Errors
    /// `invalid_spec` (naming the file) when the tokenizer or `config.json` is missing or
    /// malformed, when the model is not a one-label sequence classifier, or when
    /// `preprocess_params` contradict the files.
    pub fn from_spec(spec: &ModelSpec, artifacts: &VerifiedArtifacts) -> Result<Self, PresetError> {
        let files = ArtifactFiles::new(spec, artifacts);
        let tokenizer_file = files.require(CROSS_ENCODER, "tokenizer.json")?;
        let (config_path, config) = files.require_json(CROSS_ENCODER, "config.json")?;
        check_classifier(&files, &config_path, &config)?;
        let params = &spec.preprocess_params;
        if let Some(unknown) = params
            .keys()
            .find(|k| !["max_length", "activation"].contains(&k.as_str()))
        {
            return Err(files.param_error(
                unknown,
                "max_length or activation (preset cross_encoder takes no other parameter)",
            ));
        }
        let max_length = super::config::resolve_max_length(&files, file_max_length(&files)?)?;
        let file_activation = file_activation(&files, &config_path, &config)?;
        let activation = match params.get("activation") {
            Some(v) => {
                let a = v.as_str().and_then(ScoreActivation::parse).ok_or_else(|| {
                    files.param_error("activation", "\"sigmoid\" or \"identity\"")
                })?;
                agree(spec, "activation", &a, file_activation.as_ref())?;
                a
            }
            // CrossEncoder's default for a one-label model.
            None => file_activation.map_or(ScoreActivation::Sigmoid, |(a, _)| a),
        };
        let tokenizer = TextTokenizer::from_json(
            tokenizer_file.bytes(),
            files.display(tokenizer_file),
            max_length,
            &PAD_TOKENS,
        )?;
        let inputs = if spec.input_schema.is_empty() {
            [true; 3]
        } else {
            let wanted: Vec<&str> = spec.input_schema.iter().map(|t| t.name.as_str()).collect();
            if let Some(unknown) = wanted.iter().find(|name| !TEXT_INPUTS.contains(name)) {
                return Err(PresetError::InvalidConfig {
                    message: format!(
                        "model {}: input_schema names {unknown:?}, but preset {CROSS_ENCODER} \
                         only produces {TEXT_INPUTS:?}",
                        spec.model_name
                    ),
                    file: None,
                });
            }
            TEXT_INPUTS.map(|name| wanted.contains(&name))
        };
        let resolved = BTreeMap::from([
            ("max_length".to_owned(), Value::from(max_length)),
            ("activation".to_owned(), Value::from(activation.as_str())),
        ]);
        Ok(Self {
            tokenizer,
            activation,
            inputs,
            batch_size: batch_size_of(spec, DEFAULT_PAIR_BATCH_SIZE),
            max_batch_tokens: max_batch_tokens_of(spec),
            signature: dp_signature::preprocess_signature(Some(CROSS_ENCODER), &resolved),
            params: resolved,
            model_name: spec.model_name.clone(),
        })
    }

    /// The activation applied to the logits.
    #[must_use]
    pub const fn activation(&self) -> ScoreActivation {
        self.activation
    }

    /// The tokenizer.
    #[must_use]
    pub const fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }
}

/// Fails unless `config.json` describes a sequence classifier with one label.
fn check_classifier(
    files: &ArtifactFiles<'_>,
    path: &std::path::Path,
    config: &Value,
) -> Result<(), PresetError> {
    let architectures: Vec<&str> = config
        .get("architectures")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !architectures
        .iter()
        .any(|a| a.ends_with("ForSequenceClassification"))
    {
        return Err(files.file_error(
            path,
            &format!(
                "names architectures {architectures:?}, not a sequence classifier: a \
                 {CROSS_ENCODER} model needs a classification head (e.g. \
                 BertForSequenceClassification); use a cross-encoder, or the \
                 sentence_embedding preset for an embedding model"
            ),
        ));
    }
    let labels = config
        .get("id2label")
        .and_then(Value::as_object)
        .map(serde_json::Map::len)
        .or_else(|| {
            config
                .get("num_labels")
                .and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
        })
        // transformers' default.
        .unwrap_or(2);
    if labels != 1 {
        return Err(files.file_error(
            path,
            &format!(
                "gives the classifier {labels} labels; reranking needs one relevance logit per \
                 pair (num_labels 1)"
            ),
        ));
    }
    Ok(())
}

/// The maximum pair length the model's files give.
pub(super) fn file_max_length(
    files: &ArtifactFiles<'_>,
) -> Result<Option<(usize, PathBuf)>, PresetError> {
    for (file, key) in [
        ("sentence_bert_config.json", "max_seq_length"),
        ("tokenizer_config.json", "model_max_length"),
    ] {
        let Some((path, json)) = files.json(file)? else {
            continue;
        };
        match json.get(key) {
            None | Some(Value::Null) => {}
            Some(v) => {
                // transformers writes 1e30 for "no limit": no limit is no answer.
                match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
                    Some(n) if n > 0 && n <= 1 << 20 => return Ok(Some((n, path))),
                    Some(_) => {}
                    None if v.is_f64() => {}
                    None => {
                        return Err(files.file_error(&path, &format!("{key} is not an integer")));
                    }
                }
            }
        }
    }
    Ok(None)
}

/// The activation `config.json` names, if any.
fn file_activation(
    files: &ArtifactFiles<'_>,
    path: &std::path::Path,
    config: &Value,
) -> Result<Option<(ScoreActivation, PathBuf)>, PresetError> {
    let named = config
        .get("sentence_transformers")
        .and_then(|st| st.get("activation_fn"))
        .or_else(|| config.get("sbert_ce_default_activation_function"));
    match named {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(class)) => ScoreActivation::from_torch_class(class)
            .map(|a| Some((a, path.to_path_buf())))
            .ok_or_else(|| {
                files.file_error(
                    path,
                    &format!(
                        "names the activation {class:?}; preset {CROSS_ENCODER} supports \
                         torch.nn.modules.activation.Sigmoid and torch.nn.modules.linear.Identity"
                    ),
                )
            }),
        Some(_) => Err(files.file_error(path, "names an activation that is not a string")),
    }
}

impl Preset for CrossEncoder {
    fn name(&self) -> &'static str {
        CROSS_ENCODER
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
        kind == InputKind::QueryWithDocuments
    }

    fn makes_vectors(&self) -> bool {
        false
    }

    fn input_lengths(&self, inputs: &PresetInputs<'_>) -> Result<Option<Vec<usize>>, PresetError> {
        let PresetInputs::QueryWithDocuments { query, documents } = inputs else {
            return Ok(None);
        };
        self.tokenizer.pair_token_counts(query, documents).map(Some)
    }

    fn encode(&self, inputs: PresetInputs<'_>) -> Result<EncodedBatch, PresetError> {
        let PresetInputs::QueryWithDocuments { query, documents } = inputs else {
            return Err(crate::refused(CROSS_ENCODER, inputs.kind()));
        };
        let (batch, truncated) = self.tokenizer.encode_pairs(query, documents)?;
        let cut = truncated.iter().filter(|t| **t).count();
        if cut > 0 {
            tracing::warn!(
                model = %self.model_name,
                pairs = cut,
                max_length = self.tokenizer.max_length(),
                "query and document pairs longer than the model's maximum were truncated, as \
                 sentence-transformers truncates them (longest first)"
            );
        }
        Ok(EncodedBatch {
            tensors: text_tensors(&batch, self.inputs)?,
            len: batch.batch,
            context: BatchContext::Kind(InputKind::QueryWithDocuments),
        })
    }

    fn decode(
        &self,
        batch: &EncodedBatch,
        outputs: NamedTensors,
    ) -> Result<PresetOutput, PresetError> {
        let logits = outputs.get(LOGITS).ok_or_else(|| {
            let names: Vec<&str> = outputs.keys().map(String::as_str).collect();
            PresetError::output(format!(
                "the model returned {names:?} but preset {CROSS_ENCODER} needs {LOGITS:?} \
                 (a sequence classifier's output); fix the spec's output_schema or the model"
            ))
        })?;
        let TensorData::Fp32(values) = logits.data() else {
            return Err(PresetError::output(format!(
                "{LOGITS} must be fp32, got {:?}",
                logits.dtype()
            )));
        };
        if logits.shape() != [batch.len, 1] {
            return Err(PresetError::output(format!(
                "{LOGITS} has shape {:?}; preset {CROSS_ENCODER} needs [{}, 1] (one relevance \
                 logit per pair)",
                logits.shape(),
                batch.len
            )));
        }
        Ok(PresetOutput::Scores(
            values.iter().map(|&x| self.activation.apply(x)).collect(),
        ))
    }
}

impl std::fmt::Debug for CrossEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossEncoder")
            .field("tokenizer", &self.tokenizer)
            .field("activation", &self.activation)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}
