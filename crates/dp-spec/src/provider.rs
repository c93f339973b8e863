//! The provider contract: what every runtime (candle, ONNX Runtime, Triton) implements so
//! the manager can load and run a model without knowing which runtime serves it.
//!
//! It lives here, in the lowest crate that both the providers and the manager depend on,
//! so that a provider crate never depends on the manager and the manager never depends on
//! a provider it was compiled without. Providers move named tensors only: tokenization,
//! pooling and normalization are the manager's shared presets.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use dp_digest::VerifiedArtifacts;

use crate::error::{ErrorCode, ModelError};
use crate::model_spec::{Engine, ModelSpec, Precision, Runtime, TensorDType};

/// The tensor names a text encoder's inputs and outputs go by, shared by the manager's
/// presets (which build and read them) and the providers (which feed them to a runtime), so
/// a renamed tensor cannot leave one side behind.
pub mod tensor_names {
    /// Token ids, int64 `[batch, seq]`.
    pub const INPUT_IDS: &str = "input_ids";
    /// 1 for a real token, 0 for padding, int64 `[batch, seq]`.
    pub const ATTENTION_MASK: &str = "attention_mask";
    /// Segment ids (0 for a single sentence), int64 `[batch, seq]`.
    pub const TOKEN_TYPE_IDS: &str = "token_type_ids";
    /// The encoder's per-token vectors, fp32 `[batch, seq, hidden]`.
    pub const LAST_HIDDEN_STATE: &str = "last_hidden_state";
    /// A sequence classifier's raw scores (cross-encoder rerankers), fp32
    /// `[batch, num_labels]`, before any activation.
    pub const LOGITS: &str = "logits";
    /// The inputs a text encoder takes, in the order the presets build them.
    pub const TEXT_INPUTS: [&str; 3] = [INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS];
    /// Images already resized, cropped and normalized, fp32 `[batch, 3, height, width]`.
    pub const PIXEL_VALUES: &str = "pixel_values";
    /// CLIP image embeddings, fp32 `[batch, projection_dim]`: the visual projection of the
    /// post-layer-normed class token, not L2-normalized.
    pub const IMAGE_EMBEDS: &str = "image_embeds";
    /// CLIP text embeddings, fp32 `[batch, projection_dim]`: the text projection of the
    /// final-layer-normed hidden state at the pooled (end-of-text) position, not
    /// L2-normalized.
    pub const TEXT_EMBEDS: &str = "text_embeds";
    /// CLIP's temperature, fp32 `[1]`: `exp` of the learned `logit_scale` parameter.
    pub const LOGIT_SCALE: &str = "logit_scale";
    /// Log-mel features of 30-second audio chunks, fp32 `[chunks, n_mels, frames]`
    /// (Whisper's encoder input, made by the `audio_log_mel` preset).
    pub const INPUT_FEATURES: &str = "input_features";
    /// A served speech recognizer's text per chunk, UTF-8 `BYTES` `[chunks]`.
    pub const TRANSCRIPT: &str = "transcript";
    /// The language a served speech recognizer decoded each chunk with, a code (`en`;
    /// empty for an English-only model), `BYTES` `[chunks]`.
    pub const TRANSCRIPT_LANGUAGE: &str = "transcript_language";
    /// The language to decode each chunk with, a code (`en`) or empty to detect it,
    /// `BYTES` `[chunks]` (input of a served speech recognizer).
    pub const LANGUAGE: &str = "language";
    /// `transcribe` or `translate`, `BYTES` `[chunks]` (input of a served speech
    /// recognizer).
    pub const TASK: &str = "task";
    /// New tokens at most per chunk, int32 `[chunks]`; 0: as many as the decoder's
    /// positions allow after the prompt (input of a served speech recognizer).
    pub const MAX_NEW_TOKENS: &str = "max_new_tokens";
}

/// One row of [`PROVIDER_MATRIX`]: a runtime/engine pair and who serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderRoute {
    /// Where the model runs.
    pub runtime: Runtime,
    /// The engine that executes it.
    pub engine: Engine,
    /// The [`ModelProvider::name`] of the provider that serves the pair.
    pub provider: &'static str,
    /// The cargo feature of dp-manager that compiles that provider in.
    pub cargo_feature: &'static str,
}

/// Every runtime/engine pair dp-models can run, the provider that serves it and the cargo
/// feature that compiles that provider in. It is the one statement of that matrix:
/// [`Runtime::supported_engines`], each provider's [`ModelProvider::supports`] and the
/// manager's "rebuild with feature …" advice all read it. Triton models are served by the
/// Triton client whatever engine the server runs. Rows of one runtime keep the order
/// `supported_engines` lists them in.
pub const PROVIDER_MATRIX: &[ProviderRoute] = &[
    ProviderRoute {
        runtime: Runtime::Inprocess,
        engine: Engine::Candle,
        provider: "candle",
        cargo_feature: "candle",
    },
    ProviderRoute {
        runtime: Runtime::Inprocess,
        engine: Engine::Onnx,
        provider: "onnx",
        cargo_feature: "onnx",
    },
    ProviderRoute {
        runtime: Runtime::Triton,
        engine: Engine::Onnx,
        provider: "triton",
        cargo_feature: "triton",
    },
    ProviderRoute {
        runtime: Runtime::Triton,
        engine: Engine::Tensorrt,
        provider: "triton",
        cargo_feature: "triton",
    },
    ProviderRoute {
        runtime: Runtime::Triton,
        engine: Engine::Torch,
        provider: "triton",
        cargo_feature: "triton",
    },
];

/// The [`PROVIDER_MATRIX`] row for a runtime/engine pair, if dp-models can run it.
///
/// ```
/// use dp_spec::{Engine, Runtime, provider_route};
///
/// let route = provider_route(Runtime::Triton, Engine::Tensorrt).map(|r| r.cargo_feature);
/// assert_eq!(route, Some("triton"));
/// assert!(provider_route(Runtime::Inprocess, Engine::Torch).is_none());
/// ```
#[must_use]
pub fn provider_route(runtime: Runtime, engine: Engine) -> Option<&'static ProviderRoute> {
    PROVIDER_MATRIX
        .iter()
        .find(|route| route.runtime == runtime && route.engine == engine)
}

/// Whether the provider named `provider` serves the spec's runtime and engine: what
/// [`ModelProvider::supports`] answers for the providers of dp-models.
#[must_use]
pub fn provider_serves(provider: &str, spec: &ModelSpec) -> bool {
    provider_route(spec.runtime, spec.engine).is_some_and(|route| route.provider == provider)
}

/// The device a model is actually placed on, once its [`crate::DevicePolicy`] is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResolvedDevice {
    /// The host CPU.
    Cpu,
    /// A CUDA device, by index.
    Cuda(u16),
}

impl fmt::Display for ResolvedDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// One CUDA device as its driver reports it, when the manager is built: what decides
/// `device_policy: auto`, which `cuda:N` exist, and the GPU memory budget.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CudaDeviceInfo {
    /// The device index (`cuda:N`), in the driver's order (`CUDA_VISIBLE_DEVICES` applied).
    pub index: u16,
    /// The driver's name for it (`NVIDIA H200`).
    pub name: String,
    /// Compute capability, major and minor (`(9, 0)` on Hopper).
    pub compute_capability: (u32, u32),
    /// Its memory, in bytes.
    pub total_bytes: u64,
    /// Its free memory when it was probed, in bytes (other processes' allocations excluded).
    pub free_bytes: u64,
}

/// Everything a provider needs to load one model.
#[derive(Debug, Clone, Copy)]
pub struct LoadRequest<'a> {
    /// The validated spec.
    pub spec: &'a ModelSpec,
    /// The model's files, opened once and verified against its pins and lock entry: the
    /// ONLY way a provider reads them. Opening an artifact again by path would load bytes
    /// nobody verified (a file swapped by `rename` in between).
    pub artifacts: &'a VerifiedArtifacts,
    /// `${DP_MODELS_ROOT}`: for runtime files that are not the model's (the ONNX Runtime
    /// library beside the models root), never for the model's own artifacts.
    pub models_root: &'a Path,
    /// Where to place the model.
    pub device: ResolvedDevice,
    /// The precision to run at.
    pub precision: Precision,
}

/// A runtime that can load models (candle, ONNX Runtime, a Triton client…).
pub trait ModelProvider: Send + Sync {
    /// Short name for logs and `status()` (`candle`, `onnx`, `triton`).
    fn name(&self) -> &'static str;

    /// Whether this provider can serve the spec (runtime and engine).
    fn supports(&self, spec: &ModelSpec) -> bool;

    /// Checks, without loading, that the model's verified files are the ones this runtime
    /// needs and are well-formed (`weights_missing`, `invalid_spec`…).
    ///
    /// # Errors
    /// The first problem found.
    fn validate_local_artifacts(
        &self,
        spec: &ModelSpec,
        artifacts: &VerifiedArtifacts,
    ) -> Result<(), ModelError>;

    /// Loads the model, ready to run.
    ///
    /// # Errors
    /// Missing or corrupt artifacts, an unavailable device or runtime, a schema mismatch.
    fn load(&self, request: &LoadRequest<'_>) -> Result<Box<dyn LoadedModel>, ModelError>;

    /// Reports, without loading the model, whether this provider's runtime is usable for
    /// the spec (the ONNX Runtime library found, a Triton server reachable) and, where the
    /// runtime can tell, whether the model itself is ready (a Triton model loaded on its
    /// server). It must contact nothing but the spec's configured (and allowed) endpoint.
    ///
    /// The default reports the runtime found and says nothing of the model: right for a
    /// runtime compiled into the binary.
    fn health(&self, spec: &ModelSpec, models_root: &Path) -> ProviderHealth {
        let _ = (spec, models_root);
        ProviderHealth::runtime_found()
    }

    /// Whether this provider can run the spec's model on a CUDA device, in this build and
    /// with the runtime it would load (candle compiled with `cuda`; an ONNX Runtime library
    /// with the CUDA execution provider). Asked only when `device_policy: auto` meets a
    /// machine with a GPU: `false` sends the model to the CPU, and its records say `cpu`,
    /// rather than recording a GPU the model never ran on. The default: `false`.
    fn runs_on_cuda(&self, spec: &ModelSpec, models_root: &Path) -> bool {
        let _ = (spec, models_root);
        false
    }
}

/// What [`ModelProvider::health`] reports.
///
/// ```
/// let ok = dp_spec::ProviderHealth::runtime_found();
/// assert!(ok.runtime_found && ok.model_ready.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProviderHealth {
    /// The runtime the provider needs is there (library found, server answering).
    pub runtime_found: bool,
    /// Whether the model is ready on the runtime, when the runtime can tell (Triton's
    /// model readiness); `None` when that is only known by loading it.
    pub model_ready: Option<bool>,
    /// What is wrong and what to do, when something is.
    pub detail: Option<String>,
}

impl ProviderHealth {
    /// The runtime is there; nothing is known about the model without loading it.
    #[must_use]
    pub const fn runtime_found() -> Self {
        Self {
            runtime_found: true,
            model_ready: None,
            detail: None,
        }
    }

    /// The runtime is missing or unreachable, and why.
    #[must_use]
    pub fn runtime_missing(detail: impl Into<String>) -> Self {
        Self {
            runtime_found: false,
            model_ready: None,
            detail: Some(detail.into()),
        }
    }
}

/// A model loaded by a provider.
pub trait LoadedModel: Send + Sync {
    /// Runs the model on named input tensors and returns its named outputs.
    ///
    /// # Errors
    /// Inputs that do not fit the model (`invalid_input`) or a runtime failure.
    fn infer(&self, inputs: &NamedTensors) -> Result<NamedTensors, ModelError>;

    /// [`Self::infer`] as worker `worker.index` of a pool of `worker.count` that run this
    /// model side by side (the manager's `num_workers`). A runtime that computes on the CPU
    /// can give each worker its own share of its threads while other workers' calls run
    /// (`worker.running` > 1), so that concurrent calls do not contend for one pool; the
    /// default ignores the worker and calls [`Self::infer`]. The outputs must not depend on
    /// the worker.
    ///
    /// # Errors
    /// As [`Self::infer`].
    fn infer_on(
        &self,
        inputs: &NamedTensors,
        worker: WorkerSlot,
    ) -> Result<NamedTensors, ModelError> {
        let _ = worker;
        self.infer(inputs)
    }

    /// The model's generation capability, when it is an encoder–decoder that can generate
    /// (T5, Whisper); `None` (the default) for every other model.
    fn generator(&self) -> Option<&dyn crate::Seq2SeqGenerator> {
        None
    }

    /// The fixed cost of one call, in padded tokens of work: a preset splits a batch of
    /// texts into calls of close lengths only where the padding this saves is worth more
    /// (`dp_preset::batch_plan`); `None` keeps the inputs in their order. The default, 64,
    /// suits in-process runtimes: on MiniLM at 2 threads a call of one short text costs
    /// what 7 (ONNX Runtime) to 33 (candle) more tokens in a batch of 32 do, and calls
    /// much smaller than that lose in the matrix products what they save in padding (16
    /// instead of 64 was no faster with ONNX Runtime on MiniLM, XLM-R or the reranker).
    fn call_overhead_tokens(&self) -> Option<usize> {
        Some(DEFAULT_CALL_OVERHEAD_TOKENS)
    }
}

/// Which worker of a model's pool runs a call: `index` of `count`, with `running` calls of
/// the pool under way as it starts (see [`LoadedModel::infer_on`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSlot {
    /// The worker, `0..count`.
    pub index: usize,
    /// The workers in the pool, at least 1.
    pub count: usize,
    /// The pool's calls running when this one started, itself included: 1 when it runs
    /// alone (and may take every thread), up to `count`.
    pub running: usize,
}

impl WorkerSlot {
    /// The one worker of a pool of one: what [`LoadedModel::infer`] runs as.
    pub const ALONE: Self = Self {
        index: 0,
        count: 1,
        running: 1,
    };

    /// Where this call runs on a runtime with `threads` CPU threads: `None` when it takes
    /// them all (it starts alone, its pool has one worker, or there is one thread); else
    /// `(share, shares)`: the threads split into `shares = min(count, threads)` parts as
    /// evenly as they go ([`thread_share_size`]), this call on share `(index + seat) mod
    /// shares`. `seat` lets a runtime whose shares serve several models start each model's
    /// workers on a different share.
    ///
    /// ```
    /// use dp_spec::WorkerSlot;
    ///
    /// let busy = WorkerSlot { index: 1, count: 2, running: 2 };
    /// assert_eq!(busy.thread_share(8, 0), Some((1, 2)));
    /// assert_eq!(busy.thread_share(8, 1), Some((0, 2)));
    /// assert_eq!(WorkerSlot { running: 1, ..busy }.thread_share(8, 0), None);
    /// ```
    #[must_use]
    pub const fn thread_share(self, threads: usize, seat: usize) -> Option<(usize, usize)> {
        let shares = if self.count < threads {
            self.count
        } else {
            threads
        };
        if shares <= 1 || self.running <= 1 {
            return None;
        }
        Some((self.index.wrapping_add(seat) % shares, shares))
    }
}

/// Threads of share `share` when `threads` are split into `shares` as evenly as they go:
/// the first `threads % shares` shares get one more (3 threads in 2 shares: 2 and 1).
#[must_use]
pub const fn thread_share_size(threads: usize, shares: usize, share: usize) -> usize {
    threads / shares + if share < threads % shares { 1 } else { 0 }
}

impl dyn LoadedModel + '_ {
    /// This model as seen by worker `worker` of its pool: a [`LoadedModel`] whose
    /// [`LoadedModel::infer`] is this model's [`LoadedModel::infer_on`] `worker`, for code
    /// that takes any model (a preset) to run on one worker's share.
    ///
    /// ```
    /// use dp_spec::{ErrorCode, LoadedModel, ModelError, NamedTensors, WorkerSlot};
    ///
    /// /// Answers with nothing, and says which worker asked in its error.
    /// struct Echo;
    /// impl LoadedModel for Echo {
    ///     fn infer(&self, inputs: &NamedTensors) -> Result<NamedTensors, ModelError> {
    ///         self.infer_on(inputs, WorkerSlot::ALONE)
    ///     }
    ///     fn infer_on(&self, _: &NamedTensors, w: WorkerSlot) -> Result<NamedTensors, ModelError> {
    ///         let message = format!("worker {} of {}", w.index, w.count);
    ///         Err(ModelError::new(ErrorCode::InvalidInput, message))
    ///     }
    /// }
    ///
    /// let model: &dyn LoadedModel = &Echo;
    /// let second = model.on_worker(WorkerSlot { index: 1, count: 2, running: 2 });
    /// let err = second.infer(&NamedTensors::new()).unwrap_err();
    /// assert!(err.message.contains("worker 1 of 2"));
    /// ```
    #[must_use]
    pub fn on_worker(&self, worker: WorkerSlot) -> OnWorker<'_> {
        OnWorker {
            model: self,
            worker,
        }
    }
}

/// A loaded model bound to one worker of its pool ([`<dyn LoadedModel>::on_worker`]).
pub struct OnWorker<'a> {
    model: &'a dyn LoadedModel,
    worker: WorkerSlot,
}

impl LoadedModel for OnWorker<'_> {
    fn infer(&self, inputs: &NamedTensors) -> Result<NamedTensors, ModelError> {
        self.model.infer_on(inputs, self.worker)
    }

    fn infer_on(
        &self,
        inputs: &NamedTensors,
        _worker: WorkerSlot,
    ) -> Result<NamedTensors, ModelError> {
        // Bound already: the worker it was made for decides.
        self.model.infer_on(inputs, self.worker)
    }

    fn generator(&self) -> Option<&dyn crate::Seq2SeqGenerator> {
        self.model.generator()
    }

    fn call_overhead_tokens(&self) -> Option<usize> {
        self.model.call_overhead_tokens()
    }
}

/// [`LoadedModel::call_overhead_tokens`] of in-process models.
pub const DEFAULT_CALL_OVERHEAD_TOKENS: usize = 64;

/// Tensors by name.
pub type NamedTensors = BTreeMap<String, Tensor>;

/// The elements of a tensor, in row-major order. Half-precision values are kept as their
/// IEEE / bfloat16 bit patterns so this crate needs no float16 dependency.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// 32-bit floats.
    Fp32(Vec<f32>),
    /// IEEE half-precision bit patterns.
    Fp16(Vec<u16>),
    /// bfloat16 bit patterns.
    Bf16(Vec<u16>),
    /// 64-bit signed integers.
    Int64(Vec<i64>),
    /// 32-bit signed integers.
    Int32(Vec<i32>),
    /// 8-bit signed integers.
    Int8(Vec<i8>),
    /// 8-bit unsigned integers.
    Uint8(Vec<u8>),
    /// Booleans.
    Bool(Vec<bool>),
    /// Variable-length byte strings.
    Bytes(Vec<Vec<u8>>),
}

impl TensorData {
    /// The element type.
    #[must_use]
    pub const fn dtype(&self) -> TensorDType {
        match self {
            Self::Fp32(_) => TensorDType::Fp32,
            Self::Fp16(_) => TensorDType::Fp16,
            Self::Bf16(_) => TensorDType::Bf16,
            Self::Int64(_) => TensorDType::Int64,
            Self::Int32(_) => TensorDType::Int32,
            Self::Int8(_) => TensorDType::Int8,
            Self::Uint8(_) => TensorDType::Uint8,
            Self::Bool(_) => TensorDType::Bool,
            Self::Bytes(_) => TensorDType::Bytes,
        }
    }

    /// Number of elements.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Self::Fp32(v) => v.len(),
            Self::Fp16(v) | Self::Bf16(v) => v.len(),
            Self::Int64(v) => v.len(),
            Self::Int32(v) => v.len(),
            Self::Int8(v) => v.len(),
            Self::Uint8(v) => v.len(),
            Self::Bool(v) => v.len(),
            Self::Bytes(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A dense tensor: a shape and as many elements as the shape holds.
///
/// ```
/// use dp_spec::{Tensor, TensorData};
///
/// let t = Tensor::new(vec![2, 3], TensorData::Int64(vec![0; 6]))?;
/// assert_eq!(t.shape(), &[2, 3]);
/// assert!(Tensor::new(vec![2, 3], TensorData::Int64(vec![0; 5])).is_err());
/// # Ok::<(), dp_spec::ModelError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

impl Tensor {
    /// A tensor, if `data` holds exactly the number of elements `shape` implies.
    ///
    /// # Errors
    /// `invalid_input` when the counts differ or the shape overflows.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Self, ModelError> {
        let expected = shape.iter().try_fold(1_usize, |acc, &d| acc.checked_mul(d));
        match expected {
            Some(n) if n == data.len() => Ok(Self { shape, data }),
            _ => Err(ModelError::new(
                ErrorCode::InvalidInput,
                format!(
                    "tensor of shape {shape:?} needs {} elements but {} were given",
                    expected.map_or_else(|| "more than usize::MAX".to_owned(), |n| n.to_string()),
                    data.len()
                ),
            )),
        }
    }

    /// The dimensions.
    #[must_use]
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements.
    #[must_use]
    pub const fn data(&self) -> &TensorData {
        &self.data
    }

    /// The element type.
    #[must_use]
    pub const fn dtype(&self) -> TensorDType {
        self.data.dtype()
    }

    /// Takes the elements out without copying.
    #[must_use]
    pub fn into_parts(self) -> (Vec<usize>, TensorData) {
        (self.shape, self.data)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_threads_and_differ_by_at_most_one() {
        for threads in 1..=17 {
            for shares in 1..=threads {
                let sizes: Vec<usize> = (0..shares)
                    .map(|s| thread_share_size(threads, shares, s))
                    .collect();
                assert_eq!(sizes.iter().sum::<usize>(), threads, "{threads}/{shares}");
                let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                assert!(*min >= 1 && max - min <= 1, "{threads}/{shares}: {sizes:?}");
            }
        }
    }
}
