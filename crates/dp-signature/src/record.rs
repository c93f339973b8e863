//! The records a run writes: one [`ModelsUsedEntry`] per model an output used, and the
//! [`ResolvedModelMapping`] of every request the run resolved, for its manifest.
//!
//! Readers must ignore fields they do not know: later releases may add informational
//! fields to these records without changing the signature version.

use dp_spec::{Engine, ModelSpec, Precision, Runtime, WeightsDigest};
use dp_spec::{MODEL_NAME_PATTERN, ROLE_PATTERN};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::resolution::{Placement, Resolution};
use crate::signature::{
    ArtifactIdentity, SignatureVersion, model_signature_with, preprocess_signature,
};

/// What a pipeline output records about one model it used: its identity fields as
/// resolved, and its signatures.
///
/// ```
/// use dp_signature::{ModelsUsedEntry, Resolution};
/// use dp_spec::ModelSpec;
///
/// let spec: ModelSpec = serde_json::from_value(serde_json::json!({
///     "model_name": "m", "model_version": "1", "role": "text_embedding",
///     "runtime": "inprocess", "engine": "onnx", "local_artifacts": ["m.onnx"],
///     "weights_digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000"
/// }))?;
/// let entry = ModelsUsedEntry::new(&spec, &Resolution::for_cpu_build(&spec)?);
/// let json = serde_json::to_value(&entry)?;
/// assert_eq!(json["device"], "cpu");
/// assert_eq!(json["signature_version"], "dp2");
/// assert_eq!(json["model_signature_short"], entry.model_signature_short.as_str());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "ModelsUsedEntry")]
pub struct ModelsUsedEntry {
    /// Name of the model in the catalog.
    #[schemars(pattern(MODEL_NAME_PATTERN))]
    pub model_name: String,
    /// Version of the model configuration.
    pub model_version: String,
    /// The model's primary role (`role`, else the first of `roles`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(ROLE_PATTERN))]
    pub role: Option<String>,
    /// Where the model ran: in process or on a Triton server.
    pub runtime: Runtime,
    /// The engine that executed it.
    pub engine: Engine,
    /// The precision it ran at, as resolved.
    pub precision: Precision,
    /// The device it ran on, as resolved.
    pub device: Placement,
    /// The shared pre/post-processing preset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(ROLE_PATTERN))]
    pub preprocess_preset: Option<String>,
    /// `pp1:<16 hex>`: the identity of the preset and its parameters.
    #[schemars(pattern(r"^pp1:[0-9a-f]{16}$"))]
    pub preprocess_signature: String,
    /// The named prompt the preset prepended to the texts (`query`, `passage`…), when it
    /// used one; its text is part of `preprocess_signature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_name: Option<String>,
    /// The options a generation ran with (`max_new_tokens`, `num_beams`…, defaults
    /// filled in), when the output is generated text: they shape the output but are not
    /// part of the model signature, which names the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    /// The pinned digest of the weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_digest: Option<WeightsDigest>,
    /// The aggregate digest of every local file of the model (weights, tokenizer, configs,
    /// preprocessor files) as verified when it was loaded; absent for a model with no local
    /// files (and in `dp1` records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts_digest: Option<WeightsDigest>,
    /// The canonical model signature (`dp2:model_name=…`).
    #[schemars(pattern(r"^dp[12]:model_name="))]
    pub model_signature: String,
    /// `dp2-<16 hex>`: the short form of `model_signature`.
    #[schemars(pattern(r"^dp[12]-[0-9a-f]{16}$"))]
    pub model_signature_short: String,
    /// The signature format of this entry.
    pub signature_version: SignatureVersion,
}

impl ModelsUsedEntry {
    /// The entry for `spec` as resolved by `resolved`.
    #[must_use]
    pub fn new(spec: &ModelSpec, resolved: &Resolution) -> Self {
        Self::with_identity(spec, resolved, &ArtifactIdentity::declared(spec))
    }

    /// The entry of `spec` resolved as `resolved`, whose verified files and resolved
    /// preprocessing are `identity`: what a loaded model records.
    #[must_use]
    pub fn with_identity(
        spec: &ModelSpec,
        resolved: &Resolution,
        identity: &ArtifactIdentity,
    ) -> Self {
        let signature = model_signature_with(spec, resolved, identity);
        let params = identity
            .preprocess_params
            .as_ref()
            .unwrap_or(&spec.preprocess_params);
        Self {
            model_name: spec.model_name.clone(),
            model_version: spec.model_version.clone(),
            role: spec.all_roles().next().map(str::to_owned),
            runtime: spec.runtime,
            engine: spec.engine,
            precision: resolved.precision,
            device: resolved.placement,
            preprocess_preset: spec.preprocess_preset.clone(),
            preprocess_signature: preprocess_signature(spec.preprocess_preset.as_deref(), params),
            prompt_name: params
                .get("prompt_name")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
            generation: None,
            weights_digest: spec.weights_digest,
            artifacts_digest: identity.artifacts_digest,
            model_signature_short: signature.short().to_owned(),
            signature_version: signature.version(),
            model_signature: signature.into_canonical(),
        }
    }
}

/// One request of a run and the model it resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ResolvedRequest {
    /// What the caller asked for, as it asked: a model name or alias, or a role request
    /// such as `role:text_embedding`.
    pub request: String,
    /// The model it resolved to.
    pub model: ModelsUsedEntry,
}

/// Every model a run resolved, for its manifest.
///
/// Requests are kept sorted by request text, then by model signature, so the same run
/// writes the same mapping whatever order its stages resolved in. Recording a request
/// again with a model of the same signature is a no-op; a request that resolved to two
/// different models in one run (e.g. after a reload) keeps both, since both were used.
///
/// ```
/// use dp_signature::{ModelsUsedEntry, Resolution, ResolvedModelMapping};
/// use dp_spec::ModelSpec;
///
/// let spec: ModelSpec = serde_json::from_value(serde_json::json!({
///     "model_name": "m", "model_version": "1", "role": "text_embedding",
///     "runtime": "inprocess", "engine": "onnx", "local_artifacts": ["m.onnx"],
///     "weights_digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000"
/// }))?;
/// let entry = ModelsUsedEntry::new(&spec, &Resolution::for_cpu_build(&spec)?);
/// let mut mapping = ResolvedModelMapping::new();
/// assert!(mapping.record("role:text_embedding", entry.clone()));
/// assert!(mapping.record("m", entry.clone()));
/// assert!(!mapping.record("m", entry));
/// let requests: Vec<_> = mapping.models().iter().map(|r| r.request.as_str()).collect();
/// assert_eq!(requests, ["m", "role:text_embedding"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[schemars(title = "ResolvedModelMapping")]
pub struct ResolvedModelMapping {
    /// The signature format of every entry.
    signature_version: SignatureVersion,
    /// The requests, sorted by `request`, then by `model.model_signature`; no two share
    /// both.
    models: Vec<ResolvedRequest>,
}

impl ResolvedModelMapping {
    /// An empty mapping.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `request` resolved to `model`. Returns whether it was new: `false`
    /// when the same request was already recorded with a model of the same signature.
    pub fn record(&mut self, request: impl Into<String>, model: ModelsUsedEntry) -> bool {
        let entry = ResolvedRequest {
            request: request.into(),
            model,
        };
        match self
            .models
            .binary_search_by(|probe| sort_key(probe).cmp(&sort_key(&entry)))
        {
            Ok(_) => false,
            Err(at) => {
                self.models.insert(at, entry);
                true
            }
        }
    }

    /// The recorded requests, in their canonical order.
    #[must_use]
    pub fn models(&self) -> &[ResolvedRequest] {
        &self.models
    }

    /// The signature format of the entries.
    #[must_use]
    pub const fn signature_version(&self) -> SignatureVersion {
        self.signature_version
    }

    /// Number of recorded requests.
    #[must_use]
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// Whether nothing was recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

/// The order and identity of mapping entries: a model's signature is its identity, so
/// two entries with the same request and signature are one.
fn sort_key(entry: &ResolvedRequest) -> (&str, &str) {
    (&entry.request, &entry.model.model_signature)
}

/// The mapping as a file spells it, before its entries are put in canonical order.
#[derive(Deserialize)]
struct MappingFile {
    signature_version: SignatureVersion,
    models: Vec<ResolvedRequest>,
}

impl<'de> Deserialize<'de> for ResolvedModelMapping {
    /// Reads a mapping and restores the invariants `record` relies on (sorted, no
    /// duplicates), whatever order the file lists its entries in.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let file = MappingFile::deserialize(deserializer)?;
        let mut models = file.models;
        models.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
        models.dedup_by(|a, b| sort_key(a) == sort_key(b));
        Ok(Self {
            signature_version: file.signature_version,
            models,
        })
    }
}

#[cfg(test)]
mod tests {
    use dp_spec::ResolvedDevice;
    use serde_json::json;

    use super::*;

    const DIGEST: &str = "sha256:53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";

    fn minilm() -> ModelSpec {
        serde_json::from_value(json!({
            "model_name": "all-minilm-l6-v2", "model_version": "1.0.0",
            "display_name": "all-MiniLM-L6-v2", "role": "text_embedding",
            "runtime": "inprocess", "engine": "candle", "precision": "fp32",
            "device_policy": "auto",
            "local_artifacts": ["all-minilm-l6-v2/model.safetensors"],
            "weights_digest": DIGEST,
            "preprocess_preset": "sentence_embedding",
            "preprocess_params": {"max_length": 256, "pooling": "mean", "normalize": true}
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn cpu() -> Resolution {
        Resolution::new(Placement::Local(ResolvedDevice::Cpu), Precision::Fp32)
    }

    #[test]
    fn entry_serializes_every_field_in_order() {
        let entry = ModelsUsedEntry::new(&minilm(), &cpu());
        let text = serde_json::to_string(&entry).unwrap_or_else(|e| panic!("{e}"));
        let expected = concat!(
            r#"{"model_name":"all-minilm-l6-v2","model_version":"1.0.0","role":"text_embedding","#,
            r#""runtime":"inprocess","engine":"candle","precision":"fp32","device":"cpu","#,
            r#""preprocess_preset":"sentence_embedding","preprocess_signature":"pp1:8ede604613e9fa5d","#,
            r#""weights_digest":"sha256:53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db","#,
            r#""model_signature":"dp2:model_name=all-minilm-l6-v2;model_version=1.0.0;role=text_embedding;"#,
            r#"runtime=inprocess;engine=candle;precision=fp32;device=cpu;preprocess_preset=sentence_embedding;"#,
            r#"preprocess_params={\"max_length\":256,\"normalize\":true,\"pooling\":\"mean\"};"#,
            r#"weights_digest=sha256:53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db;"#,
            r#"artifacts_digest=-","#,
            r#""model_signature_short":"dp2-05790e3d2d170ce2","signature_version":"dp2"}"#
        );
        assert_eq!(text, expected);
        let back: ModelsUsedEntry = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, entry);
    }

    #[test]
    fn entry_omits_absent_optional_fields() {
        let spec: ModelSpec = serde_json::from_value(json!({
            "model_name": "whisper-small-triton", "model_version": "1.0.0",
            "roles": ["speech_recognition", "speech_translation"],
            "runtime": "triton", "engine": "torch",
            "triton": {"endpoint": "http://127.0.0.1:8000", "model_name": "whisper_small"}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let entry =
            ModelsUsedEntry::new(&spec, &Resolution::new(Placement::Triton, Precision::Fp16));
        let json = serde_json::to_value(&entry).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json["role"], "speech_recognition");
        assert_eq!(json["device"], "triton");
        assert_eq!(json["precision"], "fp16");
        assert!(json.get("weights_digest").is_none());
        assert!(json.get("preprocess_preset").is_none());
        // pp1:preset=-;params={} hashed outside Rust.
        assert_eq!(json["preprocess_signature"], "pp1:7714b1deb4198c91");
    }

    #[test]
    fn mapping_is_sorted_and_deduplicated() {
        let on_cpu = ModelsUsedEntry::new(&minilm(), &cpu());
        let on_gpu = ModelsUsedEntry::new(
            &minilm(),
            &Resolution::new(Placement::Local(ResolvedDevice::Cuda(0)), Precision::Fp16),
        );
        let mut mapping = ResolvedModelMapping::new();
        assert!(mapping.is_empty());
        assert!(mapping.record("role:text_embedding", on_cpu.clone()));
        assert!(mapping.record("minilm", on_cpu.clone()));
        assert!(!mapping.record("role:text_embedding", on_cpu.clone()));
        // The same request resolved to a different model later in the run: both were used.
        assert!(mapping.record("minilm", on_gpu.clone()));
        assert_eq!(mapping.len(), 3);
        let order: Vec<(&str, String)> = mapping
            .models()
            .iter()
            .map(|r| (r.request.as_str(), r.model.device.to_string()))
            .collect();
        // Within "minilm", by canonical signature: "…precision=fp16;device=cuda:0…" sorts
        // before "…precision=fp32;device=cpu…".
        assert_eq!(
            order,
            [
                ("minilm", "cuda:0".to_owned()),
                ("minilm", "cpu".to_owned()),
                ("role:text_embedding", "cpu".to_owned())
            ]
        );
        assert_eq!(mapping.signature_version(), SignatureVersion::Dp2);
    }

    #[test]
    fn mapping_reads_back_in_canonical_order_whatever_the_file_order() {
        let entry = ModelsUsedEntry::new(&minilm(), &cpu());
        let mut mapping = ResolvedModelMapping::new();
        mapping.record("b", entry.clone());
        mapping.record("a", entry.clone());
        let json = serde_json::to_value(&mapping).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json["signature_version"], "dp2");
        assert_eq!(json["models"][0]["request"], "a");
        assert_eq!(json["models"][1]["request"], "b");
        assert_eq!(
            json["models"][0]["model"],
            serde_json::to_value(&entry).unwrap_or_default()
        );

        let shuffled = json!({
            "signature_version": "dp2",
            "models": [json["models"][1], json["models"][0], json["models"][1]]
        });
        let back: ResolvedModelMapping =
            serde_json::from_value(shuffled).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, mapping);
        assert!(
            serde_json::from_value::<ResolvedModelMapping>(
                json!({"signature_version": "dp9", "models": []})
            )
            .is_err()
        );
    }
}
