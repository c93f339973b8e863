//! The audio presets.
//!
//! - `audio_log_mel`: each audio decoded to mono at the model's rate, cut into 30-second
//!   chunks, each chunk's Whisper log-mel features ([`super::log_mel`]): `input_features`,
//!   fp32 `[chunks, n_mels, nb_max_frames]` (a 65-second file is three rows). Settings from
//!   `preprocessor_config.json` (`feature_size`, `sampling_rate`, `n_fft`, `hop_length`,
//!   `n_samples`, `nb_max_frames`), which the spec's `preprocess_params` (`n_mels`,
//!   `sample_rate`, `n_fft`, `hop_length`) may restate; without the file (a Triton model),
//!   the parameters and Whisper's defaults.
//! - `audio_waveform`: each audio decoded to mono at the model's rate, optionally
//!   normalized to zero mean and unit variance (`do_normalize`, as transformers'
//!   `Wav2Vec2FeatureExtractor`), padded with zeros to the longest of the batch:
//!   `input_values` fp32 `[batch, samples]` and `attention_mask` int64 `[batch, samples]`.
//!
//! Both return the model's outputs as they are ([`PresetOutput::Tensors`]).

use std::collections::BTreeMap;

use dp_spec::{ModelSpec, NamedTensors, Tensor, TensorData, VerifiedArtifacts};
use serde_json::Value;

use super::decode::{AudioLimits, decode_mono, stream_mono_bytes};
use super::log_mel::{LogMelConfig, LogMelExtractor};
use crate::artifacts::{ArtifactFiles, agree};
use crate::error::PresetError;
use crate::{
    AudioInput, BatchContext, EncodedBatch, InputKind, Preset, PresetInputs, PresetOutput,
};

/// The name of the log-mel preset in specs.
pub const AUDIO_LOG_MEL: &str = "audio_log_mel";
/// The name of the waveform preset in specs.
pub const AUDIO_WAVEFORM: &str = "audio_waveform";

/// The log-mel features' tensor (Whisper's input).
pub const INPUT_FEATURES: &str = dp_spec::tensor_names::INPUT_FEATURES;
/// The waveform's tensor (wav2vec2-style models' input).
pub const INPUT_VALUES: &str = "input_values";

/// Audio inputs per model call when the spec sets no `max_batch_size`.
pub const DEFAULT_AUDIO_BATCH_SIZE: usize = 8;

/// `err` naming the input it is about.
fn with_index(err: PresetError, index: usize) -> PresetError {
    match err {
        PresetError::InvalidInput { reason, message } => PresetError::InvalidInput {
            reason,
            message: format!("audio {index}: {message}"),
        },
        other => other,
    }
}

/// Mono samples at `rate` for one input.
fn samples_at(input: &AudioInput, rate: u32, index: usize) -> Result<Vec<f32>, PresetError> {
    match input {
        AudioInput::Encoded(bytes) => decode_mono(bytes, rate, &AudioLimits::default())
            .map(|(samples, _)| samples)
            .map_err(|e| with_index(e, index)),
        AudioInput::Samples {
            sample_rate,
            samples,
        } => {
            if let Some(bad) = samples.iter().position(|s| !s.is_finite()) {
                return Err(PresetError::input(
                    "audio_nan",
                    format!("audio {index}: sample {bad} is not a finite number"),
                ));
            }
            if *sample_rate == 0 {
                return Err(PresetError::input(
                    "audio_bad_sample_rate",
                    format!("audio {index}: a sample rate of 0 Hz"),
                ));
            }
            if *sample_rate == rate {
                Ok(samples.clone())
            } else {
                super::resample::resample_mono(samples, *sample_rate, rate)
                    .map_err(|e| with_index(e, index))
            }
        }
    }
}

fn usize_param(files: &ArtifactFiles<'_>, key: &str) -> Result<Option<usize>, PresetError> {
    files
        .spec
        .preprocess_params
        .get(key)
        .map(|v| {
            v.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| files.param_error(key, "a positive integer"))
        })
        .transpose()
}

/// The `audio_log_mel` preset of one model.
pub struct AudioLogMel {
    extractor: LogMelExtractor,
    batch_size: usize,
    params: BTreeMap<String, Value>,
    signature: String,
}

impl std::fmt::Debug for AudioLogMel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioLogMel")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl AudioLogMel {
    /// The preset of `spec`, from `preprocessor_config.json` when the model has one.
    ///
    /// # Errors
    /// `invalid_spec` for a malformed file, unknown or mistyped parameters, parameters that
    /// contradict the file, or settings no Whisper extractor has.
    pub fn from_spec(spec: &ModelSpec, artifacts: &VerifiedArtifacts) -> Result<Self, PresetError> {
        let files = ArtifactFiles::new(spec, artifacts);
        let known = ["n_mels", "sample_rate", "n_fft", "hop_length"];
        if let Some(unknown) = spec
            .preprocess_params
            .keys()
            .find(|k| !known.contains(&k.as_str()))
        {
            return Err(files.param_error(
                unknown,
                "n_mels, sample_rate, n_fft or hop_length (preset audio_log_mel takes no other \
                 parameter)",
            ));
        }
        let mut config = LogMelConfig::default();
        let file = files.json("preprocessor_config.json")?;
        let from_file = |key: &str| -> Result<Option<(usize, std::path::PathBuf)>, PresetError> {
            let Some((path, json)) = &file else {
                return Ok(None);
            };
            match json.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .map(|n| Some((n, path.clone())))
                    .ok_or_else(|| {
                        files.file_error(path, &format!("has {key} that is not an integer"))
                    }),
            }
        };
        // (file key, parameter, setting)
        let resolve =
            |file_key: &str, param: Option<&str>, setting: &mut usize| -> Result<(), PresetError> {
                let file_value = from_file(file_key)?;
                let param_value = match param {
                    Some(key) => usize_param(&files, key)?,
                    None => None,
                };
                if let (Some(key), Some(p)) = (param, param_value) {
                    agree(spec, key, &p, file_value.as_ref())?;
                }
                if let Some(v) = param_value.or(file_value.map(|(v, _)| v)) {
                    *setting = v;
                }
                Ok(())
            };
        resolve("feature_size", Some("n_mels"), &mut config.n_mels)?;
        resolve("n_fft", Some("n_fft"), &mut config.n_fft)?;
        resolve("hop_length", Some("hop_length"), &mut config.hop_length)?;
        resolve("n_samples", None, &mut config.n_samples)?;
        resolve("nb_max_frames", None, &mut config.nb_max_frames)?;
        let mut rate = usize::try_from(config.sampling_rate).unwrap_or(usize::MAX);
        resolve("sampling_rate", Some("sample_rate"), &mut rate)?;
        config.sampling_rate =
            u32::try_from(rate).map_err(|_| files.param_error("sample_rate", "a rate in Hz"))?;
        let extractor = LogMelExtractor::new(config)?;
        let params = BTreeMap::from([
            ("n_mels".to_owned(), Value::from(config.n_mels)),
            ("sample_rate".to_owned(), Value::from(config.sampling_rate)),
            ("n_fft".to_owned(), Value::from(config.n_fft)),
            ("hop_length".to_owned(), Value::from(config.hop_length)),
            ("n_samples".to_owned(), Value::from(config.n_samples)),
        ]);
        Ok(Self {
            extractor,
            batch_size: crate::text::batch_size_of(spec, DEFAULT_AUDIO_BATCH_SIZE),
            signature: dp_signature::preprocess_signature(Some(AUDIO_LOG_MEL), &params),
            params,
        })
    }

    /// The feature extractor.
    #[must_use]
    pub const fn extractor(&self) -> &LogMelExtractor {
        &self.extractor
    }

    /// The features of every 30-second chunk of each input, and how many chunks each
    /// input made.
    ///
    /// # Errors
    /// As the decoding of each input (`audio_*` reasons).
    pub fn chunk_features(
        &self,
        inputs: &[AudioInput],
    ) -> Result<(Vec<Vec<f32>>, Vec<usize>), PresetError> {
        let chunks = self.chunks(inputs)?;
        Ok((chunks.features, chunks.chunks_per_input))
    }

    /// The features of every 30-second chunk of each input, how many chunks each input
    /// made, and how long each input is.
    ///
    /// # Errors
    /// As the decoding of each input (`audio_*` reasons).
    pub fn chunks(&self, inputs: &[AudioInput]) -> Result<AudioChunks, PresetError> {
        let rate = self.extractor.config().sampling_rate;
        let mut rows = Vec::new();
        let mut counts = Vec::with_capacity(inputs.len());
        let mut seconds = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.iter().enumerate() {
            let before = rows.len();
            let mut samples_seen = 0_u64;
            match input {
                // Files are decoded 30 seconds at a time: hours of audio never exist whole
                // as samples, only as their features.
                AudioInput::Encoded(bytes) => {
                    let mut on_chunk = |chunk: &[f32]| {
                        samples_seen += chunk.len() as u64;
                        rows.push(self.extractor.features(chunk));
                        Ok(())
                    };
                    stream_mono_bytes(
                        bytes,
                        rate,
                        self.extractor.config().n_samples,
                        &AudioLimits::default(),
                        &mut on_chunk,
                    )
                    .map_err(|e| with_index(e, i))?;
                }
                AudioInput::Samples { .. } => {
                    let samples = samples_at(input, rate, i)?;
                    samples_seen = samples.len() as u64;
                    rows.extend(
                        samples
                            .chunks(self.extractor.config().n_samples)
                            .map(|chunk| self.extractor.features(chunk)),
                    );
                }
            }
            if rows.len() == before {
                return Err(PresetError::input(
                    "audio_empty",
                    format!("audio {i} has no samples; give at least one"),
                ));
            }
            counts.push(rows.len() - before);
            #[allow(
                clippy::cast_precision_loss,
                reason = "sample counts are far below 2^52"
            )]
            seconds.push(samples_seen as f64 / f64::from(rate));
        }
        Ok(AudioChunks {
            features: rows,
            chunks_per_input: counts,
            seconds,
        })
    }

    /// Inputs per model call.
    #[must_use]
    pub const fn batch_size(&self) -> usize {
        self.batch_size
    }
}

/// Audio inputs cut into 30-second chunks and made into log-mel features.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioChunks {
    /// Each chunk's features (`n_mels × frames` values), inputs in order.
    pub features: Vec<Vec<f32>>,
    /// How many chunks each input made (at least one).
    pub chunks_per_input: Vec<usize>,
    /// Each input's length in seconds, at the model's rate.
    pub seconds: Vec<f64>,
}

impl Preset for AudioLogMel {
    fn name(&self) -> &'static str {
        AUDIO_LOG_MEL
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
        kind == InputKind::Audio
    }

    fn makes_vectors(&self) -> bool {
        false
    }

    fn encode(&self, inputs: PresetInputs<'_>) -> Result<EncodedBatch, PresetError> {
        let PresetInputs::Audio(audio) = inputs else {
            return Err(crate::refused(AUDIO_LOG_MEL, inputs.kind()));
        };
        let (rows, _) = self.chunk_features(audio)?;
        let c = self.extractor.config();
        let shape = vec![rows.len(), c.n_mels, c.nb_max_frames];
        let tensor = Tensor::new(shape, TensorData::Fp32(rows.concat()))
            .map_err(|err| PresetError::output(err.message))?;
        Ok(EncodedBatch {
            tensors: NamedTensors::from([(INPUT_FEATURES.to_owned(), tensor)]),
            len: audio.len(),
            context: BatchContext::Kind(InputKind::Audio),
        })
    }

    fn decode(&self, _: &EncodedBatch, outputs: NamedTensors) -> Result<PresetOutput, PresetError> {
        Ok(PresetOutput::Tensors(vec![outputs]))
    }
}

/// The `audio_waveform` preset of one model.
#[derive(Debug)]
pub struct AudioWaveform {
    sample_rate: u32,
    normalize: bool,
    batch_size: usize,
    params: BTreeMap<String, Value>,
    signature: String,
}

impl AudioWaveform {
    /// The preset of `spec`: `sampling_rate` and `do_normalize` from
    /// `preprocessor_config.json` when the model has one, restated or given by
    /// `preprocess_params` (`sample_rate`, `normalize`; 16 kHz and no normalization by
    /// default).
    ///
    /// # Errors
    /// `invalid_spec` for unknown or mistyped parameters and parameters that contradict the
    /// file.
    pub fn from_spec(spec: &ModelSpec, artifacts: &VerifiedArtifacts) -> Result<Self, PresetError> {
        let files = ArtifactFiles::new(spec, artifacts);
        let params = &spec.preprocess_params;
        if let Some(unknown) = params
            .keys()
            .find(|k| !["sample_rate", "normalize"].contains(&k.as_str()))
        {
            return Err(files.param_error(
                unknown,
                "sample_rate or normalize (preset audio_waveform takes no other parameter)",
            ));
        }
        let file = files.json("preprocessor_config.json")?;
        let file_rate = match &file {
            Some((path, json)) => match json.get("sampling_rate") {
                None | Some(Value::Null) => None,
                Some(v) => Some((
                    v.as_u64()
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| {
                            files.file_error(path, "has a sampling_rate that is not an integer")
                        })?,
                    path.clone(),
                )),
            },
            None => None,
        };
        let file_normalize = match &file {
            Some((path, json)) => match json.get("do_normalize") {
                None | Some(Value::Null) => None,
                Some(Value::Bool(b)) => Some((*b, path.clone())),
                Some(_) => {
                    return Err(files.file_error(path, "has a do_normalize that is not a boolean"));
                }
            },
            None => None,
        };
        let rate = match usize_param(&files, "sample_rate")? {
            Some(r) => {
                agree(spec, "sample_rate", &r, file_rate.as_ref())?;
                r
            }
            None => file_rate.map_or(16_000, |(r, _)| r),
        };
        let normalize = match params.get("normalize") {
            Some(v) => {
                let b = v
                    .as_bool()
                    .ok_or_else(|| files.param_error("normalize", "a boolean"))?;
                agree(spec, "normalize", &b, file_normalize.as_ref())?;
                b
            }
            None => file_normalize.is_some_and(|(b, _)| b),
        };
        let sample_rate = u32::try_from(rate)
            .ok()
            .filter(|r| (1..=768_000).contains(r))
            .ok_or_else(|| files.param_error("sample_rate", "a rate from 1 Hz to 768 kHz"))?;
        let resolved = BTreeMap::from([
            ("sample_rate".to_owned(), Value::from(sample_rate)),
            ("normalize".to_owned(), Value::from(normalize)),
        ]);
        Ok(Self {
            sample_rate,
            normalize,
            batch_size: crate::text::batch_size_of(spec, DEFAULT_AUDIO_BATCH_SIZE),
            signature: dp_signature::preprocess_signature(Some(AUDIO_WAVEFORM), &resolved),
            params: resolved,
        })
    }
}

/// Zero mean, unit variance (transformers' `zero_mean_unit_var_norm`, epsilon 1e-7).
fn normalize(samples: &mut [f32]) {
    if samples.is_empty() {
        return;
    }
    #[allow(clippy::cast_precision_loss, reason = "a mean over samples")]
    let n = samples.len() as f64;
    let mean = samples.iter().map(|&s| f64::from(s)).sum::<f64>() / n;
    let var = samples
        .iter()
        .map(|&s| (f64::from(s) - mean).powi(2))
        .sum::<f64>()
        / n;
    let scale = 1.0 / (var + 1e-7).sqrt();
    #[allow(clippy::cast_possible_truncation, reason = "samples are f32")]
    for s in samples.iter_mut() {
        *s = ((f64::from(*s) - mean) * scale) as f32;
    }
}

impl Preset for AudioWaveform {
    fn name(&self) -> &'static str {
        AUDIO_WAVEFORM
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
        kind == InputKind::Audio
    }

    fn makes_vectors(&self) -> bool {
        false
    }

    fn encode(&self, inputs: PresetInputs<'_>) -> Result<EncodedBatch, PresetError> {
        let PresetInputs::Audio(audio) = inputs else {
            return Err(crate::refused(AUDIO_WAVEFORM, inputs.kind()));
        };
        let mut rows = Vec::with_capacity(audio.len());
        for (i, input) in audio.iter().enumerate() {
            let mut samples = samples_at(input, self.sample_rate, i)?;
            if samples.is_empty() {
                return Err(PresetError::input(
                    "audio_empty",
                    format!("audio {i} has no samples; give at least one"),
                ));
            }
            if self.normalize {
                normalize(&mut samples);
            }
            rows.push(samples);
        }
        let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut values = Vec::with_capacity(rows.len() * longest);
        let mut mask = Vec::with_capacity(rows.len() * longest);
        for row in &rows {
            values.extend_from_slice(row);
            values.resize(values.len() + longest - row.len(), 0.0);
            mask.extend(std::iter::repeat_n(1_i64, row.len()));
            mask.extend(std::iter::repeat_n(0_i64, longest - row.len()));
        }
        let shape = vec![rows.len(), longest];
        let tensor =
            |data| Tensor::new(shape.clone(), data).map_err(|err| PresetError::output(err.message));
        Ok(EncodedBatch {
            tensors: NamedTensors::from([
                (INPUT_VALUES.to_owned(), tensor(TensorData::Fp32(values))?),
                (
                    dp_spec::tensor_names::ATTENTION_MASK.to_owned(),
                    tensor(TensorData::Int64(mask))?,
                ),
            ]),
            len: audio.len(),
            context: BatchContext::Kind(InputKind::Audio),
        })
    }

    fn decode(&self, _: &EncodedBatch, outputs: NamedTensors) -> Result<PresetOutput, PresetError> {
        Ok(PresetOutput::Tensors(vec![outputs]))
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn normalization_gives_zero_mean_unit_variance() {
        let mut samples = vec![1.0_f32, 2.0, 3.0, 4.0];
        normalize(&mut samples);
        let mean: f32 = samples.iter().sum::<f32>() / 4.0;
        let var: f32 = samples.iter().map(|s| (s - mean).powi(2)).sum::<f32>() / 4.0;
        assert!(
            mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5,
            "{mean} {var}"
        );
    }
}
