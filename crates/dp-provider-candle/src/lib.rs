//! `dp-provider-candle` implements [`dp_spec::ModelProvider`] for `runtime: inprocess`,
//! `engine: candle`, on named tensors, dispatching on `config.json`'s `model_type`:
//!
//! - `bert` (or none), `roberta`, `xlm-roberta`: BERT-family encoders (RoBERTa's differ
//!   in their position ids) saved in the sentence-transformers layout (`config.json`,
//!   `model.safetensors`, `modules.json`): `input_ids`, `attention_mask`,
//!   `token_type_ids` (optional, zeros when absent) → `last_hidden_state`
//!   `[batch, seq, hidden]`;
//! - the same with a sequence-classification head, when `config.json`'s `architectures`
//!   names a `…ForSequenceClassification` class (cross-encoders, saved by Hugging Face,
//!   without `modules.json`): the same inputs → `logits` `[batch, num_labels]`, raw (the
//!   preset applies any activation);
//! - `clip`: CLIP in the Hugging Face layout (`config.json`, `model.safetensors`), both
//!   towers written here: `pixel_values` → `image_embeds`, `input_ids`
//!   (+ `attention_mask`) → `text_embeds`, and `logit_scale` with either (see
//!   [`dp_spec::tensor_names`]).
//!
//! - `t5`: T5 v1.0 / v1.1 / flan in the Hugging Face layout, as a generator
//!   ([`dp_spec::Seq2SeqGenerator`]): `input_ids` and `attention_mask` start a decoding
//!   session whose steps return next-token logits; `infer` is refused;
//! - `whisper`: Whisper in the Hugging Face layout, as a generator: `input_features`
//!   (log-mel features of 30-second chunks) start a decoding session; `infer` is refused.
//!
//! Every file is read from the model's verified artifacts, never from disk again.
//!
//! It owns loading and running the encoder only: tokenization, pooling and normalization
//! are the manager's shared presets, and digest verification happens before a load.
//! It may depend on `dp-spec` only among dp-models crates; never on the manager or another
//! provider. CPU is always available; CUDA needs the `cuda` cargo feature (off by default),
//! and asking for CUDA without it is a `device_unavailable` error.
//!
//! ```
//! use dp_spec::ModelProvider;
//! use dp_provider_candle::CandleProvider;
//!
//! let provider = CandleProvider::new();
//! assert_eq!(provider.name(), "candle");
//! ```

mod artifacts;
mod bert;
mod clip;
mod cpu_kernels;
mod decoding;
mod error;
mod layers;
mod t5;
mod threads;
mod whisper;

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use candle_core::{DType, Device};
use dp_spec::TensorDType;
use dp_spec::tensor_names::{ATTENTION_MASK, INPUT_IDS, TOKEN_TYPE_IDS};
use dp_spec::{
    LoadRequest, LoadedModel, ModelError, ModelProvider, ModelSpec, NamedTensors, Precision,
    ResolvedDevice, Tensor, TensorData, VerifiedArtifacts, WorkerSlot, provider_serves,
};

use crate::artifacts::{
    BertConfig, Head, ModelFiles, Weights, check_modules, model_type, unsupported_model_type,
};
use crate::bert::{Bert, EncoderInput};
use crate::clip::{Clip, ClipConfig};
pub use crate::error::CandleError;
use crate::t5::{T5, T5Config, T5Generator};
use crate::threads::CpuThreads;
use crate::whisper::{Whisper, WhisperConfig, WhisperGenerator};

/// The output tensor names of text encoders and of sequence classifiers (defined once, in
/// dp-spec).
pub use dp_spec::tensor_names::{LAST_HIDDEN_STATE, LOGITS};

/// Settings of a [`CandleProvider`].
#[derive(Debug, Clone, Default)]
pub struct CandleProviderConfig {
    /// Worker threads for the CPU kernels; `None` means one per available core.
    pub threads: Option<NonZeroUsize>,
}

/// The in-process candle provider (`runtime: inprocess`, `engine: candle`).
///
/// Models loaded by one provider share its worker threads, so the thread count bounds the
/// CPU the provider uses however many models it holds. A model the manager runs with N
/// workers (`num_workers`) on the CPU gives each worker its own share of those threads
/// ([`LoadedModel::infer_on`]).
#[derive(Clone, Default)]
pub struct CandleProvider {
    config: CandleProviderConfig,
    threads: Arc<OnceLock<Arc<CpuThreads>>>,
    /// Models loaded so far: each starts its workers at the next share of the threads.
    seats: Arc<AtomicUsize>,
}

impl std::fmt::Debug for CandleProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CandleProvider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl CandleProvider {
    /// A provider with default settings (one thread per core).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A provider with explicit settings.
    ///
    /// ```
    /// use std::num::NonZeroUsize;
    /// use dp_provider_candle::{CandleProvider, CandleProviderConfig};
    ///
    /// let provider = CandleProvider::with_config(CandleProviderConfig {
    ///     threads: NonZeroUsize::new(2),
    /// });
    /// assert_eq!(provider.threads(), 2);
    /// ```
    #[must_use]
    pub fn with_config(config: CandleProviderConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// The number of worker threads models of this provider run on.
    #[must_use]
    pub fn threads(&self) -> usize {
        self.config
            .threads
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(1, NonZeroUsize::get)
    }

    /// The provider's thread pools, shared by its models.
    fn cpu_threads(&self) -> Arc<CpuThreads> {
        Arc::clone(
            self.threads
                .get_or_init(|| Arc::new(CpuThreads::new(self.threads()))),
        )
    }

    /// Everything `validate_local_artifacts` checks, returning the pieces a load needs.
    fn open(
        spec: &ModelSpec,
        artifacts: &VerifiedArtifacts,
    ) -> Result<(ModelFiles, Architecture, Weights), CandleError> {
        let files = ModelFiles::locate(spec, artifacts)?;
        let architecture = match model_type(&files.config)?.as_deref() {
            Some("clip") => Architecture::Clip(ClipConfig::read(&files.config)?),
            Some("t5") => Architecture::T5(T5Config::read(&files.config)?),
            Some("whisper") => Architecture::Whisper(WhisperConfig::read(&files.config)?),
            kind if BertConfig::is_bert_family(kind) => {
                let config = BertConfig::read(&files.config)?;
                // Only sentence-transformers encoders have a module list; cross-encoders
                // are saved by Hugging Face without one, and the provider runs their head.
                if config.head() == Head::Encoder {
                    if let Some(file) = &files.modules_missing {
                        return Err(CandleError::FileMissing { file: file.clone() });
                    }
                    if let Some(modules) = &files.modules {
                        check_modules(modules)?;
                    }
                }
                Architecture::Bert(config)
            }
            other => {
                return Err(unsupported_model_type(
                    &files.config.path,
                    other.unwrap_or_default(),
                ));
            }
        };
        let weights = Weights::open(&files.weights)?;
        Ok((files, architecture, weights))
    }
}

/// Checks a sequence classifier's spec `output_schema` against what it returns: `logits`
/// only, fp32 `[batch, num_labels]` (`-1` in the spec is any size). Encoders are not
/// checked here: they return their single declared output.
fn check_classifier_schema(config: &BertConfig, spec: &ModelSpec) -> Result<(), CandleError> {
    let Head::SequenceClassification { num_labels } = config.head() else {
        return Ok(());
    };
    let mismatch = |problem: String| CandleError::SchemaMismatch {
        model: spec.model_name.clone(),
        problem,
    };
    let labels = i64::try_from(num_labels).unwrap_or(i64::MAX);
    for tensor in &spec.output_schema {
        if tensor.name != LOGITS {
            return Err(mismatch(format!(
                "output_schema declares '{}', but a sequence classifier (config.json's \
                 architectures) returns only '{LOGITS}'",
                tensor.name
            )));
        }
        if tensor.dtype != TensorDType::Fp32 {
            return Err(mismatch(format!(
                "output '{LOGITS}' is {:?} in the spec, but the model's is Fp32",
                tensor.dtype
            )));
        }
        let fits = matches!(tensor.shape.as_slice(), [_, n] if *n < 0 || *n == labels);
        if !fits {
            return Err(mismatch(format!(
                "output '{LOGITS}' has shape {:?} in the spec, but config.json implies \
                 [-1, {num_labels}] (-1 = dynamic)",
                tensor.shape
            )));
        }
    }
    Ok(())
}

/// The architectures this provider runs, from `config.json`'s `model_type`.
enum Architecture {
    /// A BERT-family text encoder (sentence-transformers layout), or a cross-encoder
    /// (Hugging Face `…ForSequenceClassification` layout).
    Bert(BertConfig),
    /// CLIP (Hugging Face `CLIPModel` layout).
    Clip(ClipConfig),
    /// T5 (Hugging Face `T5ForConditionalGeneration` layout): a generator.
    T5(T5Config),
    /// Whisper (Hugging Face `WhisperForConditionalGeneration` layout): a generator.
    Whisper(WhisperConfig),
}

/// The CUDA devices this process can use, as the driver reports them (index, name, compute
/// capability, total and free memory): empty in a build without the `cuda` feature and on a
/// machine whose driver sees no GPU.
///
/// ```
/// let devices = dp_provider_candle::cuda_devices()?;
/// # #[cfg(not(feature = "cuda"))]
/// assert!(devices.is_empty(), "a CPU build sees no CUDA device");
/// # Ok::<(), dp_provider_candle::CandleError>(())
/// ```
///
/// # Errors
/// `device_unavailable` when the driver is there but refuses to start (a driver older than
/// the CUDA release this build was compiled for, a broken installation), with its own words.
pub fn cuda_devices() -> Result<Vec<dp_spec::CudaDeviceInfo>, CandleError> {
    #[cfg(feature = "cuda")]
    {
        cuda_probe::devices()
    }
    #[cfg(not(feature = "cuda"))]
    {
        Ok(Vec::new())
    }
}

/// The driver queries behind [`cuda_devices`].
#[cfg(feature = "cuda")]
mod cuda_probe {
    use candle_core::cuda_backend::cudarc::driver::{CudaContext, DriverError, sys::CUresult};

    use crate::CandleError;

    pub(crate) fn devices() -> Result<Vec<dp_spec::CudaDeviceInfo>, CandleError> {
        let count = match CudaContext::device_count() {
            Ok(count) => count,
            // A driver with no GPU behind it (or all hidden by CUDA_VISIBLE_DEVICES).
            Err(DriverError(CUresult::CUDA_ERROR_NO_DEVICE)) => return Ok(Vec::new()),
            Err(err) => return Err(driver_refused("cannot start the CUDA driver", &err)),
        };
        (0..count.max(0))
            .map(|ordinal| {
                let failed = |err: DriverError| {
                    driver_refused(&format!("cannot query CUDA device {ordinal}"), &err)
                };
                let index = u16::try_from(ordinal).map_err(|_| {
                    CandleError::DeviceUnavailable(format!(
                        "the driver reports {count} CUDA devices; at most {} are addressable",
                        u16::MAX
                    ))
                })?;
                // The primary context, the one candle's `Device::new_cuda` retains too: free
                // memory is a per-context query, and this adds no context of its own.
                let context = CudaContext::new(usize::from(index)).map_err(failed)?;
                let (free, total) = context.mem_get_info().map_err(failed)?;
                let (major, minor) = context.compute_capability().map_err(failed)?;
                Ok(dp_spec::CudaDeviceInfo {
                    index,
                    name: context.name().map_err(failed)?,
                    compute_capability: (
                        u32::try_from(major).unwrap_or(0),
                        u32::try_from(minor).unwrap_or(0),
                    ),
                    total_bytes: total as u64,
                    free_bytes: free as u64,
                })
            })
            .collect()
    }

    fn driver_refused(what: &str, err: &DriverError) -> CandleError {
        CandleError::DeviceUnavailable(format!(
            "{what}: {err}; check `nvidia-smi`, and that the driver supports the CUDA release \
             this build was compiled for (docs/gpu.md)"
        ))
    }
}

/// The candle device for a resolved device, or why it is unavailable.
fn candle_device(device: ResolvedDevice) -> Result<Device, CandleError> {
    match device {
        ResolvedDevice::Cpu => Ok(Device::Cpu),
        #[cfg(feature = "cuda")]
        ResolvedDevice::Cuda(index) => Device::new_cuda(usize::from(index)).map_err(|e| {
            CandleError::DeviceUnavailable(format!("cannot open CUDA device {index}: {e}"))
        }),
        #[cfg(not(feature = "cuda"))]
        ResolvedDevice::Cuda(index) => Err(CandleError::DeviceUnavailable(format!(
            "CUDA device {index} was requested, but dp-provider-candle was built without its \
             `cuda` feature; rebuild with it, or set device_policy: cpu"
        ))),
    }
}

fn candle_dtype(precision: Precision) -> Result<DType, CandleError> {
    match precision {
        Precision::Fp32 => Ok(DType::F32),
        Precision::Fp16 => Ok(DType::F16),
        Precision::Bf16 => Ok(DType::BF16),
        // Spec validation refuses int8 on candle; a caller building a request by hand
        // gets the same answer here.
        Precision::Int8 => Err(CandleError::InvalidInput(
            "precision int8 is a quantized graph's, which candle does not run; use engine \
             onnx with an int8 model, or precision fp32, fp16 or bf16"
                .to_owned(),
        )),
    }
}

impl ModelProvider for CandleProvider {
    fn name(&self) -> &'static str {
        "candle"
    }

    fn supports(&self, spec: &ModelSpec) -> bool {
        provider_serves(self.name(), spec)
    }

    fn validate_local_artifacts(
        &self,
        spec: &ModelSpec,
        artifacts: &VerifiedArtifacts,
    ) -> Result<(), ModelError> {
        let (_, architecture, weights) = Self::open(spec, artifacts)?;
        // Check every tensor's name and shape without copying any weights.
        let view = weights.view()?;
        match &architecture {
            Architecture::Bert(config) => {
                check_classifier_schema(config, spec)?;
                bert::check_tensors(config, &view, weights.path())?;
            }
            Architecture::Clip(config) => {
                clip::check_schema(config, spec)?;
                clip::check_tensors(config, &view, weights.path())?;
            }
            Architecture::T5(config) => {
                t5::check_schema(spec)?;
                t5::check_tensors(config, &view, weights.path())?;
            }
            Architecture::Whisper(config) => {
                whisper::check_schema(config, spec)?;
                whisper::check_tensors(config, &view, weights.path())?;
            }
        }
        Ok(())
    }

    fn runs_on_cuda(&self, _spec: &ModelSpec, _models_root: &std::path::Path) -> bool {
        cfg!(feature = "cuda")
    }

    fn load(&self, request: &LoadRequest<'_>) -> Result<Box<dyn LoadedModel>, ModelError> {
        let device = candle_device(request.device)?;
        let (files, architecture, weights) = Self::open(request.spec, request.artifacts)?;
        let threads = self.cpu_threads();
        let pool = threads.whole()?;
        // Workers split the threads only where the model computes on them.
        let workers = device.is_cpu().then(|| Workers {
            threads,
            seat: self.seats.fetch_add(1, Ordering::Relaxed),
        });
        let dtype = candle_dtype(request.precision)?;
        let config = match architecture {
            Architecture::Bert(config) => config,
            Architecture::Clip(config) => {
                clip::check_schema(&config, request.spec)?;
                let clip = pool.install(|| {
                    Clip::load(&config, weights.bytes(), weights.path(), dtype, &device)
                })?;
                return Ok(Box::new(ClipModel {
                    clip,
                    pool,
                    workers,
                }));
            }
            Architecture::T5(config) => {
                t5::check_schema(request.spec)?;
                let t5 = pool.install(|| {
                    T5::load(&config, weights.bytes(), weights.path(), dtype, &device)
                })?;
                return Ok(Box::new(T5Generator { t5, pool }));
            }
            Architecture::Whisper(config) => {
                whisper::check_schema(&config, request.spec)?;
                let whisper = pool.install(|| {
                    Whisper::load(&config, weights.bytes(), weights.path(), dtype, &device)
                })?;
                return Ok(Box::new(WhisperGenerator { whisper, pool }));
            }
        };
        check_classifier_schema(&config, request.spec)?;
        let view = weights.view()?;
        // Converting weights (fp16/bf16) is parallel work: do it on the provider's threads.
        let bert = pool.install(|| {
            Bert::load(
                &config,
                &files.config.path,
                &view,
                weights.path(),
                dtype,
                &device,
            )
        })?;
        let output_name = match (config.head(), request.spec.output_schema.as_slice()) {
            // The schema was checked to name nothing else.
            (Head::SequenceClassification { .. }, _) => LOGITS.to_owned(),
            (Head::Encoder, [only]) => only.name.clone(),
            (Head::Encoder, _) => LAST_HIDDEN_STATE.to_owned(),
        };
        Ok(Box::new(CandleModel {
            bert,
            pool,
            workers,
            output_name,
        }))
    }
}

/// Where the workers of a CPU model run: their shares of the provider's threads.
struct Workers {
    threads: Arc<CpuThreads>,
    /// The share this model's first worker takes.
    seat: usize,
}

/// The pool a call of worker `worker` runs on: its share of the threads on the CPU, else
/// the whole pool (on a GPU the threads only drive the device).
fn pool_for(
    pool: &Arc<rayon::ThreadPool>,
    workers: Option<&Workers>,
    worker: WorkerSlot,
) -> Result<Arc<rayon::ThreadPool>, CandleError> {
    match workers {
        Some(w) => w.threads.for_worker(worker, w.seat),
        None => Ok(Arc::clone(pool)),
    }
}

/// A loaded BERT-family model (encoder, or encoder and classifier).
struct CandleModel {
    bert: Bert,
    pool: Arc<rayon::ThreadPool>,
    workers: Option<Workers>,
    output_name: String,
}

impl LoadedModel for CandleModel {
    fn infer(&self, inputs: &NamedTensors) -> Result<NamedTensors, ModelError> {
        self.infer_on(inputs, WorkerSlot::ALONE)
    }

    fn infer_on(
        &self,
        inputs: &NamedTensors,
        worker: WorkerSlot,
    ) -> Result<NamedTensors, ModelError> {
        let input = self.encoder_input(inputs)?;
        let (batch, seq) = (input.batch, input.seq);
        let values = if batch == 0 {
            Vec::new()
        } else if seq == 0 {
            if self.bert.num_labels().is_some() {
                // The head reads the first token's state: there is none to read.
                return Err(CandleError::InvalidInput(format!(
                    "{INPUT_IDS} has no tokens ([{batch}, 0]); a sequence classifier needs at \
                     least one token per row"
                ))
                .into());
            }
            Vec::new()
        } else {
            pool_for(&self.pool, self.workers.as_ref(), worker)?
                .install(|| self.bert.forward(&input))?
        };
        let output = Tensor::new(self.bert.output_shape(batch, seq), TensorData::Fp32(values))?;
        Ok(NamedTensors::from([(self.output_name.clone(), output)]))
    }
}

impl LoadedModel for T5Generator {
    fn infer(&self, _: &NamedTensors) -> Result<NamedTensors, ModelError> {
        Err(CandleError::InvalidInput(
            "a T5 model generates text: run it with task text_generation (`dp generate`), \
             not as one tensor call"
                .to_owned(),
        )
        .into())
    }

    fn generator(&self) -> Option<&dyn dp_spec::Seq2SeqGenerator> {
        Some(self)
    }
}

impl LoadedModel for WhisperGenerator {
    fn infer(&self, _: &NamedTensors) -> Result<NamedTensors, ModelError> {
        Err(CandleError::InvalidInput(
            "a Whisper model transcribes speech: run it with task transcribe \
             (`dp transcribe`), not as one tensor call"
                .to_owned(),
        )
        .into())
    }

    fn generator(&self) -> Option<&dyn dp_spec::Seq2SeqGenerator> {
        Some(self)
    }
}

/// A loaded CLIP model.
struct ClipModel {
    clip: Clip,
    pool: Arc<rayon::ThreadPool>,
    workers: Option<Workers>,
}

impl LoadedModel for ClipModel {
    fn infer(&self, inputs: &NamedTensors) -> Result<NamedTensors, ModelError> {
        self.infer_on(inputs, WorkerSlot::ALONE)
    }

    fn infer_on(
        &self,
        inputs: &NamedTensors,
        worker: WorkerSlot,
    ) -> Result<NamedTensors, ModelError> {
        pool_for(&self.pool, self.workers.as_ref(), worker)?.install(|| self.clip.infer(inputs))
    }
}

impl CandleModel {
    /// Checks the named inputs against the model and converts them to indices.
    fn encoder_input(&self, inputs: &NamedTensors) -> Result<EncoderInput, CandleError> {
        let ids = inputs.get(INPUT_IDS).ok_or_else(|| {
            CandleError::InvalidInput(format!(
                "the input '{INPUT_IDS}' is missing (got {:?}); a text encoder takes \
                 {INPUT_IDS}, {ATTENTION_MASK} and {TOKEN_TYPE_IDS}",
                inputs.keys().collect::<Vec<_>>()
            ))
        })?;
        let [batch, seq] = *ids.shape() else {
            return Err(CandleError::InvalidInput(format!(
                "{INPUT_IDS} must be [batch, seq], got shape {:?}",
                ids.shape()
            )));
        };
        if seq > self.bert.max_positions() {
            return Err(CandleError::InvalidInput(format!(
                "sequences of {seq} tokens exceed the model's {} positions; truncate them",
                self.bert.max_positions()
            )));
        }
        let input_ids = indices(INPUT_IDS, ids, self.bert.vocab_size())?;
        let token_type_ids = match inputs.get(TOKEN_TYPE_IDS) {
            Some(t) => {
                same_shape(TOKEN_TYPE_IDS, t, ids)?;
                indices(TOKEN_TYPE_IDS, t, self.bert.type_vocab_size())?
            }
            None => vec![0; batch * seq],
        };
        let attention_mask = match inputs.get(ATTENTION_MASK) {
            Some(t) => {
                same_shape(ATTENTION_MASK, t, ids)?;
                indices(ATTENTION_MASK, t, 2)?
                    .into_iter()
                    .map(|m| m == 1)
                    .collect()
            }
            None => vec![true; batch * seq],
        };
        Ok(EncoderInput {
            input_ids,
            token_type_ids,
            attention_mask,
            batch,
            seq,
        })
    }
}

pub(crate) fn same_shape(name: &str, t: &Tensor, ids: &Tensor) -> Result<(), CandleError> {
    if t.shape() == ids.shape() {
        Ok(())
    } else {
        Err(CandleError::InvalidInput(format!(
            "{name} has shape {:?} but {INPUT_IDS} has {:?}; they must match",
            t.shape(),
            ids.shape()
        )))
    }
}

/// The elements of an integer tensor as `u32` indices below `limit`.
pub(crate) fn indices(name: &str, t: &Tensor, limit: usize) -> Result<Vec<u32>, CandleError> {
    let out_of_range = |v: i64| {
        CandleError::InvalidInput(format!(
            "{name} holds {v}, outside 0..{limit} for this model"
        ))
    };
    let convert = |v: i64| {
        usize::try_from(v)
            .ok()
            .filter(|&u| u < limit)
            .and_then(|u| u32::try_from(u).ok())
            .ok_or_else(|| out_of_range(v))
    };
    match t.data() {
        TensorData::Int64(values) => values.iter().map(|&v| convert(v)).collect(),
        TensorData::Int32(values) => values.iter().map(|&v| convert(i64::from(v))).collect(),
        other => Err(CandleError::InvalidInput(format!(
            "{name} must be int64 (or int32), got {:?}",
            other.dtype()
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests;
