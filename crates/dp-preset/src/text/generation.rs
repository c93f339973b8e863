//! The `text_generation` preset: texts into an encoder–decoder's encoder inputs, and
//! generated token ids back into texts (T5, flan-T5).
//!
//! 1. each text (after the spec's optional `prefix`, T5's task prefix such as
//!    `"summarize: "`) is tokenized with the model's `tokenizer.json`, which appends `</s>`,
//!    truncated to the encoder's maximum (`tokenizer_config.json` `model_max_length`, else
//!    512) as transformers does with `truncation=True` (a truncated text is said so, never
//!    refused) and padded to the longest text of the batch: `input_ids` and
//!    `attention_mask`, int64 `[batch, seq]`;
//! 2. the manager's search runs the model's decoder;
//! 3. the generated ids are decoded with special tokens skipped and, when
//!    `tokenizer_config.json` asks for it (`clean_up_tokenization_spaces`), transformers'
//!    clean-up of spaces before punctuation and contractions.
//!
//! Settings: `max_length`, `prefix` and `clean_up_tokenization_spaces` in
//! `preprocess_params`; the first and last may only restate the model's files.

use std::collections::BTreeMap;

use dp_spec::tensor_names::{ATTENTION_MASK, INPUT_IDS};
use dp_spec::{ModelSpec, NamedTensors, Tensor, TensorData, VerifiedArtifacts};
use serde_json::Value;

use super::cross_encoder::file_max_length;
use super::{PAD_TOKENS, TextTokenizer, batch_size_of};
use crate::artifacts::{ArtifactFiles, agree};
use crate::error::PresetError;
use crate::{
    BatchContext, EncodedBatch, InputKind, Preset, PresetInputs, PresetOutput, Seq2SeqPreset,
    SourceBatch,
};

/// The name of the text-generation preset in specs.
pub const TEXT_GENERATION: &str = "text_generation";

/// Texts per encoder call when the spec sets no `resource_requirements.max_batch_size`.
pub const DEFAULT_GENERATION_BATCH_SIZE: usize = 8;

/// The `text_generation` preset of one model.
pub struct TextGeneration {
    tokenizer: TextTokenizer,
    prefix: Option<String>,
    clean_up_spaces: bool,
    batch_size: usize,
    params: BTreeMap<String, Value>,
    signature: String,
}

impl TextGeneration {
    /// The preset of `spec`, from the model's verified files.
    ///
    /// # Errors
    /// `invalid_spec` (naming the file) when `tokenizer.json` is missing or malformed, or
    /// `preprocess_params` are unknown, mistyped or contradict the files.
    pub fn from_spec(spec: &ModelSpec, artifacts: &VerifiedArtifacts) -> Result<Self, PresetError> {
        let files = ArtifactFiles::new(spec, artifacts);
        let tokenizer_file = files.require(TEXT_GENERATION, "tokenizer.json")?;
        let params = &spec.preprocess_params;
        if let Some(unknown) = params.keys().find(|k| {
            !["max_length", "prefix", "clean_up_tokenization_spaces"].contains(&k.as_str())
        }) {
            return Err(files.param_error(
                unknown,
                "max_length, prefix or clean_up_tokenization_spaces (preset text_generation \
                 takes no other parameter)",
            ));
        }
        let max_length = super::config::resolve_max_length(&files, file_max_length(&files)?)?;
        let prefix = match params.get("prefix") {
            None => None,
            Some(Value::String(p)) if p.is_empty() => None,
            Some(Value::String(p)) => Some(p.clone()),
            Some(_) => return Err(files.param_error("prefix", "a string")),
        };
        let file_clean_up = file_clean_up(&files)?;
        let clean_up_spaces = match params.get("clean_up_tokenization_spaces") {
            Some(v) => {
                let flag = v.as_bool().ok_or_else(|| {
                    files.param_error("clean_up_tokenization_spaces", "a boolean")
                })?;
                agree(
                    spec,
                    "clean_up_tokenization_spaces",
                    &flag,
                    file_clean_up.as_ref(),
                )?;
                flag
            }
            None => file_clean_up.is_some_and(|(flag, _)| flag),
        };
        let tokenizer = TextTokenizer::from_json(
            tokenizer_file.bytes(),
            files.display(tokenizer_file),
            max_length,
            &PAD_TOKENS,
        )?;
        let mut resolved = BTreeMap::from([
            ("max_length".to_owned(), Value::from(max_length)),
            (
                "clean_up_tokenization_spaces".to_owned(),
                Value::from(clean_up_spaces),
            ),
        ]);
        if let Some(prefix) = &prefix {
            resolved.insert("prefix".to_owned(), Value::from(prefix.as_str()));
        }
        Ok(Self {
            tokenizer,
            prefix,
            clean_up_spaces,
            batch_size: batch_size_of(spec, DEFAULT_GENERATION_BATCH_SIZE),
            signature: dp_signature::preprocess_signature(Some(TEXT_GENERATION), &resolved),
            params: resolved,
        })
    }

    /// The tokenizer.
    #[must_use]
    pub const fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }
}

/// `clean_up_tokenization_spaces` of `tokenizer_config.json`, if it says.
pub(crate) fn file_clean_up(
    files: &ArtifactFiles<'_>,
) -> Result<Option<(bool, std::path::PathBuf)>, PresetError> {
    let Some((path, json)) = files.json("tokenizer_config.json")? else {
        return Ok(None);
    };
    match json.get("clean_up_tokenization_spaces") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(flag)) => Ok(Some((*flag, path))),
        Some(_) => Err(files.file_error(
            &path,
            "has clean_up_tokenization_spaces that is not a boolean",
        )),
    }
}

/// transformers' `clean_up_tokenization`: no space before punctuation and English
/// contractions.
pub(crate) fn clean_up_tokenization(text: &str) -> String {
    [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ]
    .iter()
    .fold(text.to_owned(), |text, (from, to)| text.replace(from, to))
}

impl std::fmt::Debug for TextGeneration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextGeneration")
            .field("tokenizer", &self.tokenizer)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl Seq2SeqPreset for TextGeneration {
    fn encode_sources(&self, inputs: PresetInputs<'_>) -> Result<SourceBatch, PresetError> {
        let PresetInputs::Texts(texts) = inputs else {
            return Err(crate::refused(TEXT_GENERATION, inputs.kind()));
        };
        if let Some(empty) = texts.iter().position(|t| t.trim().is_empty()) {
            return Err(PresetError::input(
                "empty_text",
                format!(
                    "text {empty} is empty: there is nothing to generate from; remove it or \
                     give it content"
                ),
            ));
        }
        let (batch, truncated) = self
            .tokenizer
            .encode_reporting(texts, self.prefix.as_deref())?;
        let shape = vec![batch.batch, batch.seq_len];
        let tensor = |data: Vec<i64>| {
            Tensor::new(shape.clone(), TensorData::Int64(data))
                .map_err(|err| PresetError::output(err.message))
        };
        let tensors = NamedTensors::from([
            (INPUT_IDS.to_owned(), tensor(batch.input_ids)?),
            (ATTENTION_MASK.to_owned(), tensor(batch.attention_mask)?),
        ]);
        Ok(SourceBatch {
            tensors,
            len: batch.batch,
            truncated,
        })
    }

    fn decode_tokens(&self, ids: &[u32]) -> Result<String, PresetError> {
        let text = self.tokenizer.decode(ids)?;
        Ok(if self.clean_up_spaces {
            clean_up_tokenization(&text)
        } else {
            text
        })
    }

    fn max_source_tokens(&self) -> usize {
        self.tokenizer.max_length()
    }
}

impl Preset for TextGeneration {
    fn name(&self) -> &'static str {
        TEXT_GENERATION
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

    fn accepts(&self, kind: InputKind) -> bool {
        kind == InputKind::Texts
    }

    fn makes_vectors(&self) -> bool {
        false
    }

    fn seq2seq(&self) -> Option<&dyn Seq2SeqPreset> {
        Some(self)
    }

    fn encode(&self, inputs: PresetInputs<'_>) -> Result<EncodedBatch, PresetError> {
        let sources = self.encode_sources(inputs)?;
        Ok(EncodedBatch {
            tensors: sources.tensors,
            len: sources.len,
            context: BatchContext::Kind(InputKind::Texts),
        })
    }

    fn decode(&self, _: &EncodedBatch, _: NamedTensors) -> Result<PresetOutput, PresetError> {
        Err(PresetError::input(
            "generation_only",
            "preset text_generation makes texts by decoding step by step: run the model with \
             task text_generation (`dp generate`), not as one tensor call",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::clean_up_tokenization;

    #[test]
    fn clean_up_matches_transformers() {
        assert_eq!(
            clean_up_tokenization("it is n't so , is it ? yes . I 'm here"),
            "it isn't so, is it? yes. I'm here"
        );
        assert_eq!(clean_up_tokenization("no change"), "no change");
    }
}
