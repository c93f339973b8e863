//! The shared pre/post-processing presets: what turns a request's data (texts, images)
//! into the named tensors a model takes, and the model's outputs back into results
//! (vectors, probabilities). They live here, once, so the candle, ONNX Runtime and Triton
//! providers only move tensors (the Triton client runs them client-side) and a model gives
//! the same result whichever runtime serves it.
//!
//! A preset is built from a spec and the model's verified files ([`load`]): every setting
//! comes from the model's own files (`tokenizer.json`, `preprocessor_config.json`,
//! `config.json`, sentence-transformers files), and the spec's `preprocess_params` may only
//! restate them: a disagreement is `invalid_spec` naming both values, because the
//! parameters are part of the model signature, which must never describe a computation
//! other than the one that ran. [`Preset::preprocess_signature`] is the identity of the
//! resolved settings.
//!
//! This crate owns the [`Preset`] trait, the [`registry`] from preset names to
//! constructors, and every preset. It depends on `dp-spec` (specs, tensors, errors),
//! `dp-digest` (verified files) and `dp-signature` (the `pp1` signature) only: never on
//! a provider or on the manager.

mod artifacts;
pub mod audio;
pub mod batch_plan;
pub mod clip;
mod error;
pub mod image;
mod input;
pub mod pixels;
pub mod registry;
pub mod text;

use std::collections::BTreeMap;
use std::fmt;

use dp_spec::{LoadedModel, ModelError, NamedTensors};
use serde_json::Value;

pub use crate::clip::ImageClip;
pub use crate::error::PresetError;
pub use crate::input::{AudioInput, ImageInput, InputKind, PresetInputs, PresetOutput};
pub use crate::pixels::ImagePixels;
pub use crate::registry::{PresetStatus, load, status};
pub use crate::text::{
    CrossEncoder, Pooling, SentenceEmbedding, SentenceEmbeddingConfig, TextGeneration,
};

/// A batch of inputs made into the tensors a model takes, plus what the preset needs to
/// read the model's outputs back (an attention mask, the number of images…).
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedBatch {
    /// The model's inputs, by name.
    pub tensors: NamedTensors,
    /// Inputs in the batch (texts or images).
    pub len: usize,
    pub(crate) context: BatchContext,
}

/// What a preset keeps of a batch to decode its outputs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BatchContext {
    /// Tokenized texts: the attention mask (`[batch, seq]`), for pooling.
    Text {
        /// Tokens per text after padding.
        seq_len: usize,
        /// 1 for real tokens.
        attention_mask: Vec<i64>,
    },
    /// Images, texts or both, as the request's kind says (the tensors hold the rest).
    Kind(InputKind),
    /// Letterboxed images: where each image went in its square, to map boxes back.
    Letterbox(Vec<crate::image::LetterboxGeometry>),
    /// Images resized to a fixed size: nothing to map back.
    Resized,
}

/// One preprocessing preset of one loaded model: the preprocess → infer → postprocess
/// step, the same for every provider.
pub trait Preset: Send + Sync + fmt::Debug {
    /// The preset's name in specs (`sentence_embedding`, `image_clip`, …).
    fn name(&self) -> &'static str;

    /// The resolved settings, as canonical `preprocess_params` (what the signature hashes).
    fn params(&self) -> &BTreeMap<String, Value>;

    /// The identity of the resolved settings (`pp1:…`, see
    /// `dp_signature::preprocess_signature`).
    fn preprocess_signature(&self) -> &str;

    /// Inputs per model call.
    fn batch_size(&self) -> usize;

    /// Padded tokens per model call (inputs times the longest one's tokens), for presets
    /// with [`Self::input_lengths`]: the spec's `resource_requirements.max_batch_tokens`.
    /// `None` (the default): calls are bounded by [`Self::batch_size`] alone.
    fn max_batch_tokens(&self) -> Option<usize> {
        None
    }

    /// Whether the preset serves this kind of request.
    fn accepts(&self, kind: InputKind) -> bool;

    /// Whether texts and images become one vector each ([`PresetOutput::Vectors`]), which
    /// callers may cache per input; `false` for presets returning the model's tensors.
    fn makes_vectors(&self) -> bool {
        true
    }

    /// The name of the prompt this preset prepends to texts: the model's default prompt,
    /// or the one chosen with [`Self::with_prompt`]; `None` when it prepends none by name.
    fn prompt_name(&self) -> Option<&str> {
        None
    }

    /// This preset as it runs with the model's prompt `name` (E5's `query` or `passage`):
    /// the same settings, that prompt prepended to every text, and a preprocess signature
    /// that names it.
    ///
    /// # Errors
    /// `invalid_input` (reason `unknown_prompt`) when the model defines no such prompt or
    /// the preset takes none.
    fn with_prompt(&self, name: &str) -> Result<Box<dyn Preset + '_>, PresetError> {
        Err(PresetError::input(
            "unknown_prompt",
            format!(
                "preset {} takes no prompt (asked for {name:?}); call without a prompt name",
                self.name()
            ),
        ))
    }

    /// What the preset does for a generating model (encoder inputs in, token ids back to
    /// text); `None` (the default) for presets of one-shot models.
    fn seq2seq(&self) -> Option<&dyn Seq2SeqPreset> {
        None
    }

    /// What the preset does for a speech-recognition model (audio into encoder inputs,
    /// the decoder prompt, token ids back to text); `None` (the default) for others.
    fn speech_to_text(&self) -> Option<&dyn audio::SpeechToTextPreset> {
        None
    }

    /// Tokens each input takes in the model (truncated, prompt and special tokens
    /// included), for presets whose calls pad their inputs to the longest: [`Self::run`]
    /// then groups inputs of close lengths (see [`batch_plan`]). `None` (the default)
    /// runs the inputs in their order.
    ///
    /// # Errors
    /// As [`Self::encode`] on the same inputs.
    fn input_lengths(&self, inputs: &PresetInputs<'_>) -> Result<Option<Vec<usize>>, PresetError> {
        let _ = inputs;
        Ok(None)
    }

    /// Makes one batch (at most [`Self::batch_size`] inputs) into the model's tensors.
    ///
    /// # Errors
    /// `invalid_input` (with a `reason`) for an input the preset cannot prepare or a kind of
    /// request it does not serve.
    fn encode(&self, inputs: PresetInputs<'_>) -> Result<EncodedBatch, PresetError>;

    /// Reads the model's outputs for `batch` back into results, one row per input.
    ///
    /// # Errors
    /// `invalid_input` when the outputs lack a tensor the preset needs or have the wrong
    /// dtype or shape.
    fn decode(
        &self,
        batch: &EncodedBatch,
        outputs: NamedTensors,
    ) -> Result<PresetOutput, PresetError>;

    /// Runs `inputs` through `model` in calls of at most [`Self::batch_size`] inputs:
    /// encode, infer, decode, results in input order. Inputs with
    /// [`Self::input_lengths`] run in length-ordered groups when the padding that saves
    /// outweighs the model's [`LoadedModel::call_overhead_tokens`], or when
    /// [`Self::max_batch_tokens`] bounds a call (then, for a model that keeps one call
    /// when it can, in as few calls as the budget allows); others in their order.
    ///
    /// # Errors
    /// As [`Self::encode`], the model's `infer` and [`Self::decode`]; an empty request is
    /// `invalid_input`.
    fn run(
        &self,
        model: &dyn LoadedModel,
        inputs: PresetInputs<'_>,
    ) -> Result<PresetOutput, ModelError> {
        if !self.accepts(inputs.kind()) {
            return Err(refused(self.name(), inputs.kind()).into());
        }
        let step = self.batch_size().max(1);
        let limits = batch_plan::CallLimits {
            max_inputs: step,
            max_tokens: self.max_batch_tokens(),
        };
        // No overhead of its own (a remote model): one call more always costs more than
        // any padding, so the plan splits only where the token budget must.
        let overhead = match (model.call_overhead_tokens(), limits.max_tokens) {
            (Some(overhead), _) => Some(overhead),
            (None, Some(_)) => Some(usize::MAX),
            (None, None) => None,
        };
        let groups = match overhead {
            Some(overhead) if inputs.len() > 1 => match self.input_lengths(&inputs)? {
                Some(lengths) if lengths.len() == inputs.len() => {
                    batch_plan::length_ordered_batches(&lengths, limits, overhead)
                }
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        if groups.len() > 1 {
            return run_groups(self, model, &inputs, &groups);
        }
        let mut results = PresetResults::default();
        let mut start = 0;
        while start < inputs.len() {
            let end = (start + step).min(inputs.len());
            let batch = self.encode(inputs.slice(start..end))?;
            let outputs = model.infer(&batch.tensors)?;
            results.push(self.decode(&batch, outputs)?);
            start = end;
        }
        Ok(results.finish())
    }
}

/// What the calls of one [`Preset::run`] returned, in call order.
#[derive(Default)]
struct PresetResults {
    rows: Vec<Vec<f32>>,
    probabilities: bool,
    scores: Vec<f32>,
    tensors: Vec<NamedTensors>,
}

impl PresetResults {
    fn push(&mut self, output: PresetOutput) {
        match output {
            PresetOutput::Vectors(v) => self.rows.extend(v),
            PresetOutput::Probabilities(p) => {
                self.probabilities = true;
                self.rows.extend(p);
            }
            PresetOutput::Scores(s) => self.scores.extend(s),
            PresetOutput::Tensors(t) => self.tensors.extend(t),
        }
    }

    fn finish(self) -> PresetOutput {
        if !self.tensors.is_empty() {
            PresetOutput::Tensors(self.tensors)
        } else if !self.scores.is_empty() {
            PresetOutput::Scores(self.scores)
        } else if self.probabilities {
            PresetOutput::Probabilities(self.rows)
        } else {
            PresetOutput::Vectors(self.rows)
        }
    }
}

/// [`Preset::run`] over length-ordered `groups` of input indices: each group one call,
/// every row or score put back at its input's place.
fn run_groups<P: Preset + ?Sized>(
    preset: &P,
    model: &dyn LoadedModel,
    inputs: &PresetInputs<'_>,
    groups: &[Vec<usize>],
) -> Result<PresetOutput, ModelError> {
    let mut rows: Vec<Option<Vec<f32>>> = vec![None; inputs.len()];
    let mut scores: Vec<Option<f32>> = vec![None; inputs.len()];
    let mut probabilities = false;
    let mut texts = Vec::new();
    for group in groups {
        let batch = preset.encode(inputs.gather(group, &mut texts)?)?;
        let outputs = model.infer(&batch.tensors)?;
        match preset.decode(&batch, outputs)? {
            PresetOutput::Vectors(v) if v.len() == group.len() => {
                place(&mut rows, group, v);
            }
            PresetOutput::Probabilities(p) if p.len() == group.len() => {
                probabilities = true;
                place(&mut rows, group, p);
            }
            PresetOutput::Scores(s) if s.len() == group.len() => place(&mut scores, group, s),
            _ => {
                return Err(PresetError::output(format!(
                    "preset {} returned no row per input for a call of {} inputs",
                    preset.name(),
                    group.len()
                ))
                .into());
            }
        }
    }
    Ok(if scores.iter().all(Option::is_some) {
        PresetOutput::Scores(scores.into_iter().flatten().collect())
    } else if probabilities {
        PresetOutput::Probabilities(rows.into_iter().flatten().collect())
    } else {
        PresetOutput::Vectors(rows.into_iter().flatten().collect())
    })
}

/// Puts each of a call's results at the place of its input.
fn place<T>(slots: &mut [Option<T>], group: &[usize], values: Vec<T>) {
    for (&i, value) in group.iter().zip(values) {
        slots[i] = Some(value);
    }
}

/// A batch of inputs made into a generating model's encoder inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceBatch {
    /// The encoder's inputs, by name.
    pub tensors: NamedTensors,
    /// Inputs in the batch.
    pub len: usize,
    /// Per input, whether it was truncated to the encoder's maximum.
    pub truncated: Vec<bool>,
}

/// The preset side of generation: what an encoder–decoder's encoder takes, and the text of
/// the token ids its decoder produced. The search between them is the manager's.
pub trait Seq2SeqPreset: Send + Sync {
    /// Makes one batch (at most the preset's batch size) into encoder inputs.
    ///
    /// # Errors
    /// `invalid_input` (with a `reason`) for an input the preset cannot prepare.
    fn encode_sources(&self, inputs: PresetInputs<'_>) -> Result<SourceBatch, PresetError>;

    /// The text of generated ids (special tokens skipped).
    ///
    /// # Errors
    /// `invalid_input` when the ids cannot be decoded.
    fn decode_tokens(&self, ids: &[u32]) -> Result<String, PresetError>;

    /// The most encoder tokens an input keeps.
    fn max_source_tokens(&self) -> usize;
}

/// The error for a request kind a preset does not serve.
#[must_use]
pub fn refused(preset: &str, kind: InputKind) -> PresetError {
    let reason = match kind {
        InputKind::Texts => "texts_unsupported",
        InputKind::Images | InputKind::ImagesWithLabels => "images_unsupported",
        InputKind::QueryWithDocuments => "rerank_unsupported",
        InputKind::Audio => "audio_unsupported",
    };
    PresetError::input(
        reason,
        format!(
            "preset {preset} does not take {}; use a model whose preset does (see `dp list`)",
            kind.as_str()
        ),
    )
}

/// Scales `v` to unit L2 norm (a zero vector stays zero), like
/// `torch.nn.functional.normalize` with its `eps` of 1e-12.
///
/// ```
/// let mut v = [3.0_f32, 4.0];
/// dp_preset::l2_normalize(&mut v);
/// assert_eq!(v, [0.6, 0.8]);
/// ```
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}
