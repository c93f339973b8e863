//! The [`ModelSpec`] type: one model, as a spec file declares it.
//!
//! Field names are snake_case and match the pipeline's existing documentation. The JSON
//! Schema in `specs/schema/model-spec.schema.json` is generated from these types
//! (`cargo xtask schema`), so a doc comment here is also the schema's description.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use dp_digest::WeightsDigest;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Pattern for model names and aliases: lowercase, digits, `.`, `_`, `-`; starts with a
/// letter or digit; at most 128 characters. Names are used in file names and signatures.
pub const MODEL_NAME_PATTERN: &str = "^[a-z0-9][a-z0-9._-]{0,127}$";

/// Pattern for role names (`text_embedding`, `speech_recognition`…).
pub const ROLE_PATTERN: &str = "^[a-z][a-z0-9_]{0,63}$";

/// Pattern for a device policy: `cpu`, `cuda`, `auto` or `cuda:N`.
pub const DEVICE_POLICY_PATTERN: &str = "^(cpu|cuda|auto|cuda:(0|[1-9][0-9]{0,3}))$";

/// One model, as declared by its spec file.
///
/// ```
/// let yaml = r#"
/// model_name: tiny-embedder
/// model_version: "1.0.0"
/// role: text_embedding
/// capabilities: { text: true, embedding: true }
/// runtime: inprocess
/// engine: candle
/// local_artifacts: [tiny-embedder]
/// weights_digest: sha256:0000000000000000000000000000000000000000000000000000000000000000
/// "#;
/// let doc = dp_spec::SourceDocument::parse_str("tiny.yaml", yaml, dp_spec::SourceFormat::Yaml)?;
/// let spec = dp_spec::validate_document(&doc).map_err(|d| d[0].clone())?;
/// assert_eq!(spec.model_name, "tiny-embedder");
/// assert!(spec.has_role("text_embedding"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "ModelSpec", transform = crate::schema::add_model_spec_rules)]
pub struct ModelSpec {
    /// Unique, stable name of the model in the catalog (lowercase, digits, `.`, `_`, `-`).
    #[schemars(pattern(MODEL_NAME_PATTERN))]
    pub model_name: String,
    /// Version of the model configuration (free text, e.g. `1.0.0` or an upstream revision).
    #[schemars(length(min = 1, max = 128))]
    pub model_version: String,
    /// Human-readable name, for listings only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Primary role this model serves (e.g. `text_embedding`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(ROLE_PATTERN))]
    pub role: Option<String>,
    /// Further roles this model can serve; the model's roles are `role` plus these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(pattern(ROLE_PATTERN)))]
    pub roles: Vec<String>,
    /// What the model can do, as booleans (`text`, `vision`, `audio`, `embedding`…).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capabilities: BTreeMap<String, bool>,
    /// Where the model runs: in this process or behind a Triton server.
    pub runtime: Runtime,
    /// The engine that executes the model.
    pub engine: Engine,
    /// Numeric precision of the weights and activations.
    #[serde(default)]
    pub precision: Precision,
    /// Which device to run on: `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when present, else CPU).
    #[serde(default)]
    pub device_policy: DevicePolicy,
    /// Files or directories, relative to `${DP_MODELS_ROOT}`, that the model needs. Never
    /// URLs, never absolute, never leaving the models root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(length(min = 1, max = 4096)))]
    pub local_artifacts: Vec<String>,
    /// Digest of the weights. Required for `inprocess`; for `triton` it is compared with the
    /// `weights_digest` parameter the deployment declares in the model's config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_digest: Option<WeightsDigest>,
    /// Digest of ALL local artifacts together: the aggregate of their manifest, paths
    /// relative to `${DP_MODELS_ROOT}` (what `dp digest` prints for them, and the lock
    /// entry's `aggregate`). Pins the tokenizer, configs and preprocessor files as well as
    /// the weights; optional, since a lock entry (`dp verify --lock`) pins them too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts_digest: Option<WeightsDigest>,
    /// Name of the shared pre/post-processing preset (e.g. `sentence_embedding`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(ROLE_PATTERN))]
    pub preprocess_preset: Option<String>,
    /// Parameters of the preset (e.g. `max_length`, `pooling`, `normalize`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub preprocess_params: BTreeMap<String, serde_json::Value>,
    /// Tensors the model takes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_schema: Vec<TensorSpec>,
    /// Tensors the model returns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_schema: Vec<TensorSpec>,
    /// Memory the loaded model needs and the largest batch it accepts.
    #[serde(default)]
    pub resource_requirements: ResourceRequirements,
    /// Where and how to reach the model on a Triton server; required for `runtime: triton`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triton: Option<TritonSettings>,
    /// ONNX Runtime session settings for `runtime: inprocess`, `engine: onnx`; absent means
    /// ONNX Runtime's defaults with every graph optimization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onnx: Option<OnnxSettings>,
    /// Readiness tier: 0 = must be ready at start-up, 1 = expected (health reports it),
    /// 2 = on demand.
    #[serde(default = "default_tier")]
    #[schemars(range(max = 2))]
    pub tier: u8,
    /// Deprecated models stay loadable by name (with a warning) but are never chosen by role.
    #[serde(default)]
    pub deprecated: bool,
    /// Other names that resolve to this model; unique across the catalog.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(pattern(MODEL_NAME_PATTERN)))]
    pub aliases: Vec<String>,
    /// Licence of the weights (SPDX identifier where one exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// Where the weights came from (informational only; never fetched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Free-form data for people and tools; never part of the model's identity.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
}

const fn default_tier() -> u8 {
    2
}

impl ModelSpec {
    /// Every role of the model: `role` first, then `roles`, without duplicates.
    pub fn all_roles(&self) -> impl Iterator<Item = &str> {
        let primary = self.role.as_deref();
        primary.into_iter().chain(
            self.roles
                .iter()
                .map(String::as_str)
                .filter(move |r| Some(*r) != primary),
        )
    }

    /// Whether the model serves `role`.
    #[must_use]
    pub fn has_role(&self, role: &str) -> bool {
        self.all_roles().any(|r| r == role)
    }

    /// Whether the capability is declared `true`.
    #[must_use]
    pub fn has_capability(&self, capability: &str) -> bool {
        self.capabilities.get(capability).copied().unwrap_or(false)
    }
}

/// Where a model runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Runtime {
    /// Loaded into this process by an in-process provider (candle, ONNX Runtime).
    Inprocess,
    /// Served by an NVIDIA Triton Inference Server (KServe v2 HTTP).
    Triton,
}

impl Runtime {
    /// The serialized name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Inprocess => "inprocess",
            Self::Triton => "triton",
        }
    }

    /// The engines that can work with this runtime: the rows of
    /// [`crate::PROVIDER_MATRIX`] for it, in the table's order.
    #[must_use]
    pub const fn supported_engines(self) -> &'static [Engine] {
        match self {
            Self::Inprocess => &INPROCESS_ENGINES,
            Self::Triton => &TRITON_ENGINES,
        }
    }
}

/// The engines [`crate::PROVIDER_MATRIX`] lists for the in-process runtime.
const INPROCESS_ENGINES: [Engine; engine_count(Runtime::Inprocess)] =
    engines_of(Runtime::Inprocess);

/// The engines [`crate::PROVIDER_MATRIX`] lists for Triton.
const TRITON_ENGINES: [Engine; engine_count(Runtime::Triton)] = engines_of(Runtime::Triton);

/// How many rows of the provider matrix are for `runtime`. A `const fn` so the engine lists
/// above are computed from the table at compile time and `supported_engines` stays `const`.
const fn engine_count(runtime: Runtime) -> usize {
    let mut count = 0;
    let mut i = 0;
    while i < crate::PROVIDER_MATRIX.len() {
        // `==` is not callable in a const fn; comparing the discriminants is the same test.
        if crate::PROVIDER_MATRIX[i].runtime as u8 == runtime as u8 {
            count += 1;
        }
        i += 1;
    }
    count
}

/// The engines of the provider matrix's rows for `runtime`, in order; `N` must be
/// [`engine_count`] of it (a mismatch fails the build).
const fn engines_of<const N: usize>(runtime: Runtime) -> [Engine; N] {
    let mut engines = [Engine::Candle; N];
    let mut filled = 0;
    let mut i = 0;
    while i < crate::PROVIDER_MATRIX.len() {
        let route = crate::PROVIDER_MATRIX[i];
        if route.runtime as u8 == runtime as u8 {
            engines[filled] = route.engine;
            filled += 1;
        }
        i += 1;
    }
    assert!(
        filled == N,
        "the engine list must hold every row of its runtime"
    );
    engines
}

/// The engine that executes a model.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// candle (pure Rust), safetensors weights.
    Candle,
    /// ONNX Runtime.
    Onnx,
    /// TensorRT plans (Triton only).
    Tensorrt,
    /// TorchScript / PyTorch (Triton only).
    Torch,
}

impl Engine {
    /// The serialized name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Candle => "candle",
            Self::Onnx => "onnx",
            Self::Tensorrt => "tensorrt",
            Self::Torch => "torch",
        }
    }
}

/// Numeric precision.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// 32-bit float (the default).
    #[default]
    Fp32,
    /// 16-bit IEEE float.
    Fp16,
    /// bfloat16.
    Bf16,
    /// 8-bit integer weights: a quantized graph (engine `onnx`, or a Triton deployment),
    /// whose inputs and outputs keep their own types.
    Int8,
}

impl Precision {
    /// The serialized name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Fp16 => "fp16",
            Self::Bf16 => "bf16",
            Self::Int8 => "int8",
        }
    }
}

/// Which device a model may run on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DevicePolicy {
    /// CPU only.
    Cpu,
    /// The default CUDA device; an error when CUDA is not available.
    Cuda,
    /// A given CUDA device; an error when it is not available.
    CudaIndex(u16),
    /// CUDA when compiled in and present, else CPU (the default).
    #[default]
    Auto,
}

impl fmt::Display for DevicePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda => f.write_str("cuda"),
            Self::CudaIndex(n) => write!(f, "cuda:{n}"),
            Self::Auto => f.write_str("auto"),
        }
    }
}

/// A device policy text that is not `cpu`, `cuda`, `auto` or `cuda:N`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device policy {0:?} is not one of cpu, cuda, auto, cuda:N (N a device index below 10000)")]
pub struct DevicePolicyError(pub String);

impl FromStr for DevicePolicy {
    type Err = DevicePolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || DevicePolicyError(s.to_owned());
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            "auto" => Ok(Self::Auto),
            _ => {
                let index = s.strip_prefix("cuda:").ok_or_else(bad)?;
                // Same shape as DEVICE_POLICY_PATTERN: no sign, no leading zero, ≤ 4 digits.
                let canonical = !index.is_empty()
                    && index.len() <= 4
                    && index.bytes().all(|b| b.is_ascii_digit())
                    && (index == "0" || !index.starts_with('0'));
                if !canonical {
                    return Err(bad());
                }
                index.parse().map(Self::CudaIndex).map_err(|_| bad())
            }
        }
    }
}

impl Serialize for DevicePolicy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DevicePolicy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for DevicePolicy {
    fn schema_name() -> Cow<'static, str> {
        "DevicePolicy".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DEVICE_POLICY_PATTERN,
            "description": "`cpu`, `cuda`, `cuda:N` or `auto` (CUDA when compiled in and present, else CPU).",
            "default": "auto"
        })
    }
}

/// Element type of a tensor.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TensorDType {
    /// 32-bit float.
    Fp32,
    /// 16-bit IEEE float.
    Fp16,
    /// bfloat16.
    Bf16,
    /// 64-bit signed integer.
    Int64,
    /// 32-bit signed integer.
    Int32,
    /// 8-bit signed integer.
    Int8,
    /// 8-bit unsigned integer.
    Uint8,
    /// Boolean.
    Bool,
    /// Variable-length byte strings (Triton `BYTES`).
    Bytes,
}

/// Name, element type and shape of one model input or output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    /// Tensor name as the model knows it.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// Element type.
    pub dtype: TensorDType,
    /// Dimensions; `-1` marks a dynamic dimension.
    #[schemars(inner(range(min = -1)))]
    pub shape: Vec<i64>,
}

/// Resources a loaded model needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceRequirements {
    /// Host memory the loaded model needs, in bytes (0 = negligible or unknown).
    #[serde(default)]
    pub ram_bytes: u64,
    /// GPU memory the loaded model needs, in bytes (0 = none or unknown).
    #[serde(default)]
    pub vram_bytes: u64,
    /// Largest batch the model accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_batch_size: Option<u32>,
    /// The most padded tokens of one model call (texts times the longest one's tokens), for
    /// presets that tokenize: a batch past it runs as several calls of close lengths; a
    /// single longer text still runs, alone. Bounds a call's activations: 32 texts of 512
    /// tokens hold 16 times the memory of 32 texts of 32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_batch_tokens: Option<u32>,
    /// How many model calls one loaded instance runs at once for concurrent callers (1 when
    /// absent): the workers of its batching queue. On the CPU, calls that run together each
    /// get a share of the provider's threads (a call that starts alone gets them all); a
    /// model placed by `auto` or `cuda` on a machine with several GPUs runs its workers
    /// round robin over them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub num_workers: Option<u32>,
}

/// How to reach a model on a Triton server.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TritonSettings {
    /// Base URL of the server's HTTP endpoint, `http://HOST[:PORT]`, e.g.
    /// `http://127.0.0.1:8000`: no `https` (the client has no TLS stack), no user info, no
    /// path; PORT from 1 to 65535.
    #[schemars(pattern(
        "^http://(\\[[0-9A-Fa-f:.]+\\]|[A-Za-z0-9._-]+)(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?/?$"
    ))]
    pub endpoint: String,
    /// Name under which the server serves the model.
    #[schemars(length(min = 1, max = 256))]
    pub model_name: String,
    /// Served version; absent means the server's latest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern("^[1-9][0-9]{0,18}$"))]
    pub model_version: Option<String>,
    /// Time allowed to open a connection, in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    #[schemars(range(min = 1))]
    pub connect_timeout_ms: u64,
    /// Time allowed for one request, in milliseconds.
    #[serde(default = "default_request_timeout_ms")]
    #[schemars(range(min = 1))]
    pub request_timeout_ms: u64,
}

/// ONNX Runtime session settings of an in-process ONNX model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OnnxSettings {
    /// Threads one inference may use (ONNX Runtime's intra-op pool); absent means one per
    /// physical core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub intra_op_threads: Option<u16>,
    /// How far ONNX Runtime rewrites the graph before running it.
    #[serde(default)]
    pub graph_optimization_level: OnnxGraphOptimization,
}

/// ONNX Runtime's graph optimization levels.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OnnxGraphOptimization {
    /// No rewrite.
    Disable,
    /// Semantics-preserving rewrites that remove redundant nodes (constant folding…).
    Basic,
    /// Also fusions of common operator patterns (attention, GELU, layer normalization…).
    Extended,
    /// Also memory layout rewrites.
    Layout,
    /// Every optimization (the default).
    #[default]
    All,
}

const fn default_connect_timeout_ms() -> u64 {
    1_000
}

const fn default_request_timeout_ms() -> u64 {
    30_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_engines_are_the_provider_matrix_rows() {
        assert_eq!(
            Runtime::Inprocess.supported_engines(),
            &[Engine::Candle, Engine::Onnx]
        );
        assert_eq!(
            Runtime::Triton.supported_engines(),
            &[Engine::Onnx, Engine::Tensorrt, Engine::Torch]
        );
        for runtime in [Runtime::Inprocess, Runtime::Triton] {
            let rows: Vec<Engine> = crate::PROVIDER_MATRIX
                .iter()
                .filter(|route| route.runtime == runtime)
                .map(|route| route.engine)
                .collect();
            assert_eq!(runtime.supported_engines(), rows.as_slice(), "{runtime:?}");
        }
    }

    #[test]
    fn device_policy_parses_and_prints() {
        for text in ["cpu", "cuda", "auto", "cuda:0", "cuda:7", "cuda:9999"] {
            let policy: DevicePolicy = text.parse().expect(text);
            assert_eq!(policy.to_string(), text);
        }
        for bad in [
            "",
            "gpu",
            "cuda:",
            "cuda:-1",
            "cuda:01",
            "cuda:10000",
            "CUDA",
            "cuda:1a",
        ] {
            assert!(
                bad.parse::<DevicePolicy>().is_err(),
                "{bad:?} must be rejected"
            );
        }
    }

    #[test]
    fn roles_merge_primary_first_without_duplicates() {
        let spec: ModelSpec = serde_json::from_value(serde_json::json!({
            "model_name": "m", "model_version": "1", "role": "a", "roles": ["b", "a", "c"],
            "runtime": "triton", "engine": "onnx"
        }))
        .expect("valid");
        assert_eq!(spec.all_roles().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert!(spec.has_role("c"));
        assert!(!spec.has_role("d"));
    }
}
