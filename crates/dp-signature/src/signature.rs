//! The canonical model signature and the preprocess signature.
//!
//! Format, field by field, in `docs/signatures.md`. The short version: a model signature is
//! `dp2:` followed by eleven `key=value` fields in a fixed order, separated by `;`, each
//! value percent-escaped so the string splits back unambiguously; its short form is `dp2-`
//! and the first 16 hex digits of the SHA-256 of the canonical string. `dp2` adds, to the
//! ten fields of `dp1`, the digest of all the model's files (`artifacts_digest`), and signs
//! the preprocessing parameters that actually run (resolved from the model's files).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use dp_spec::{ModelSpec, WeightsDigest};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::canonical::{FieldWriter, canonical_params, short_hash};
use crate::resolution::Resolution;

/// The version of the signature format.
///
/// Any change that can alter the canonical string of an unchanged spec and resolution (a
/// field added, removed or reordered, a new escaping or number rule) is a new version;
/// records carry the version so readers never compare signatures across formats.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum SignatureVersion {
    /// The first format: `dp1:…`, short form `dp1-…`, preprocess signatures `pp1:…`. Its
    /// weights digest covered the first artifact only; read, never written any more.
    #[serde(rename = "dp1")]
    Dp1,
    /// The current format: `dp1`'s fields plus `artifacts_digest` (every local file of the
    /// model), with the preprocessing parameters as resolved from the model's files.
    #[default]
    #[serde(rename = "dp2")]
    Dp2,
}

impl SignatureVersion {
    /// The version this crate writes.
    pub const CURRENT: Self = Self::Dp2;

    /// The serialized name, also the prefix of canonical strings (`dp2`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Dp1 => "dp1",
            Self::Dp2 => "dp2",
        }
    }
}

impl fmt::Display for SignatureVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl JsonSchema for SignatureVersion {
    fn schema_name() -> Cow<'static, str> {
        "SignatureVersion".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "enum": [Self::Dp1.as_str(), Self::Dp2.as_str()],
            "description": "Version of the signature format; see docs/signatures.md."
        })
    }
}

/// The prefix of the preprocess signature format that goes with [`SignatureVersion::Dp1`].
const PREPROCESS_PREFIX: &str = "pp1";

/// The canonical identity of a resolved model, and its short hash.
///
/// Two signatures are equal exactly when the identity fields are: `model_name`,
/// `model_version`, the primary role, `runtime`, `engine`, the resolved precision, the
/// resolved device, `preprocess_preset`, `preprocess_params` and `weights_digest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelSignature {
    canonical: String,
    short: String,
}

impl ModelSignature {
    /// The canonical string (`dp2:model_name=…`).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.canonical
    }

    /// The short form: `dp2-` and the first 16 lowercase hex digits of the SHA-256 of the
    /// canonical string.
    #[must_use]
    pub fn short(&self) -> &str {
        &self.short
    }

    /// The format version.
    #[must_use]
    pub const fn version(&self) -> SignatureVersion {
        SignatureVersion::CURRENT
    }

    /// Takes the canonical string.
    #[must_use]
    pub fn into_canonical(self) -> String {
        self.canonical
    }
}

impl fmt::Display for ModelSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

/// What a model's signature covers beyond its spec and resolution: what only its own
/// files tell, known once they are verified (and the preset read from them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArtifactIdentity {
    /// The aggregate digest of every local artifact of the model as verified (paths
    /// relative to the models root); `None` for a model with no local files.
    pub artifacts_digest: Option<WeightsDigest>,
    /// The preprocessing parameters that actually run, resolved from the spec and the
    /// model's files (a `tokenizer.json`'s truncation, a pooling config…); `None` for the
    /// spec's own `preprocess_params` (a model without a preset).
    pub preprocess_params: Option<BTreeMap<String, serde_json::Value>>,
}

impl ArtifactIdentity {
    /// The identity a spec declares without its files being read: its `artifacts_digest`
    /// pin and its own `preprocess_params`.
    #[must_use]
    pub fn declared(spec: &ModelSpec) -> Self {
        Self {
            artifacts_digest: spec.artifacts_digest,
            preprocess_params: None,
        }
    }
}

/// The canonical signature of `spec` resolved as `resolved`, with the identity the spec
/// declares ([`ArtifactIdentity::declared`]). A loaded model's signature comes from
/// [`model_signature_with`], which signs what its files really are.
///
/// The spec's own `precision` and `device_policy` do not enter it: what counts is what the
/// run resolved them to. The primary role is `role`, or the first of `roles` when `role`
/// is absent.
///
/// ```
/// use dp_signature::{Placement, Resolution, model_signature_for};
/// use dp_spec::{ModelSpec, Precision};
///
/// let spec: ModelSpec = serde_json::from_value(serde_json::json!({
///     "model_name": "whisper-small-triton", "model_version": "1.0.0",
///     "roles": ["speech_recognition"], "runtime": "triton", "engine": "torch",
///     "triton": { "endpoint": "http://127.0.0.1:8000", "model_name": "whisper_small" }
/// }))?;
/// let signature = model_signature_for(&spec, &Resolution::new(Placement::Triton, Precision::Fp16));
/// assert_eq!(
///     signature.to_string(),
///     "dp2:model_name=whisper-small-triton;model_version=1.0.0;role=speech_recognition;\
///      runtime=triton;engine=torch;precision=fp16;device=triton;preprocess_preset=-;\
///      preprocess_params={};weights_digest=-;artifacts_digest=-"
/// );
/// # Ok::<(), serde_json::Error>(())
/// ```
#[must_use]
pub fn model_signature_for(spec: &ModelSpec, resolved: &Resolution) -> ModelSignature {
    model_signature_with(spec, resolved, &ArtifactIdentity::declared(spec))
}

/// The canonical signature of `spec` resolved as `resolved`, whose files are `identity`.
/// Two models whose bytes or resolved preprocessing differ never share a signature.
#[must_use]
pub fn model_signature_with(
    spec: &ModelSpec,
    resolved: &Resolution,
    identity: &ArtifactIdentity,
) -> ModelSignature {
    let device = resolved.placement.to_string();
    let params = canonical_params(
        identity
            .preprocess_params
            .as_ref()
            .unwrap_or(&spec.preprocess_params),
    );
    let digest = spec.weights_digest.map(|d| d.to_string());
    let artifacts = identity.artifacts_digest.map(|d| d.to_string());
    let version = SignatureVersion::CURRENT.as_str();
    let mut writer = FieldWriter::new(version);
    // The order of these fields is part of the format: never reorder within a version.
    writer
        .field("model_name", Some(&spec.model_name))
        .field("model_version", Some(&spec.model_version))
        .field("role", spec.all_roles().next())
        .field("runtime", Some(spec.runtime.as_str()))
        .field("engine", Some(spec.engine.as_str()))
        .field("precision", Some(resolved.precision.as_str()))
        .field("device", Some(&device))
        .field("preprocess_preset", spec.preprocess_preset.as_deref())
        .field("preprocess_params", Some(&params))
        .field("weights_digest", digest.as_deref())
        .field("artifacts_digest", artifacts.as_deref());
    let canonical = writer.finish();
    let short = short_hash(&format!("{version}-"), &canonical);
    ModelSignature { canonical, short }
}

/// The canonical string a [`preprocess_signature`] hashes:
/// `pp1:preset=<preset or ->;params=<canonical JSON object>`, values escaped as in model
/// signatures.
///
/// ```
/// use std::collections::BTreeMap;
///
/// let params: BTreeMap<String, serde_json::Value> =
///     serde_json::from_str(r#"{"pooling": "mean", "max_length": 256.0}"#)?;
/// assert_eq!(
///     dp_signature::preprocess_canonical(Some("sentence_embedding"), &params),
///     r#"pp1:preset=sentence_embedding;params={"max_length":256,"pooling":"mean"}"#
/// );
/// # Ok::<(), serde_json::Error>(())
/// ```
#[must_use]
pub fn preprocess_canonical(
    preset: Option<&str>,
    params: &BTreeMap<String, serde_json::Value>,
) -> String {
    let params = canonical_params(params);
    let mut writer = FieldWriter::new(PREPROCESS_PREFIX);
    writer
        .field("preset", preset)
        .field("params", Some(&params));
    writer.finish()
}

/// The identity of a pre/post-processing configuration: `pp1:` and the first 16 lowercase
/// hex digits of the SHA-256 of [`preprocess_canonical`]. Equal parameters give equal
/// signatures whatever their key order or number spelling.
///
/// ```
/// use std::collections::BTreeMap;
///
/// let a: BTreeMap<String, serde_json::Value> =
///     serde_json::from_str(r#"{"max_length": 256, "pooling": "mean"}"#)?;
/// let b: BTreeMap<String, serde_json::Value> =
///     serde_json::from_str(r#"{"pooling": "mean", "max_length": 256.0}"#)?;
/// let signature = dp_signature::preprocess_signature(Some("sentence_embedding"), &a);
/// assert_eq!(signature, dp_signature::preprocess_signature(Some("sentence_embedding"), &b));
/// assert!(signature.starts_with("pp1:") && signature.len() == 4 + 16);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[must_use]
pub fn preprocess_signature(
    preset: Option<&str>,
    params: &BTreeMap<String, serde_json::Value>,
) -> String {
    short_hash("pp1:", &preprocess_canonical(preset, params))
}

#[cfg(test)]
mod tests {
    use dp_spec::{Precision, ResolvedDevice, SourceDocument, SourceFormat};

    use super::*;
    use crate::resolution::Placement;

    /// The catalog's `specs/catalog/text_embedding/all-minilm-l6-v2.yaml`, as of this test.
    const MINILM: &str = r#"
model_name: all-minilm-l6-v2
model_version: "1.0.0"
display_name: "all-MiniLM-L6-v2 (sentence-transformers, candle)"
role: text_embedding
capabilities: { text: true, embedding: true }
runtime: inprocess
engine: candle
precision: fp32
device_policy: auto
local_artifacts:
  - all-minilm-l6-v2/model.safetensors
  - all-minilm-l6-v2/tokenizer.json
weights_digest: sha256:53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
preprocess_preset: sentence_embedding
preprocess_params:
  max_length: 256
  pooling: mean
  normalize: true
tier: 1
aliases: [minilm, all-minilm]
license: Apache-2.0
metadata: { embedding_dim: 384 }
"#;

    /// The canonical string of MINILM on the CPU, written by hand from docs/signatures.md.
    const MINILM_CPU: &str = "dp2:model_name=all-minilm-l6-v2;model_version=1.0.0;\
        role=text_embedding;runtime=inprocess;engine=candle;precision=fp32;device=cpu;\
        preprocess_preset=sentence_embedding;\
        preprocess_params={\"max_length\":256,\"normalize\":true,\"pooling\":\"mean\"};\
        weights_digest=sha256:53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db;\
        artifacts_digest=-";

    fn parse(yaml: &str) -> ModelSpec {
        let doc = SourceDocument::parse_str("test.yaml", yaml, SourceFormat::Yaml)
            .unwrap_or_else(|e| panic!("{e}"));
        dp_spec::validate_document(&doc).unwrap_or_else(|d| panic!("{d:?}"))
    }

    #[test]
    fn minilm_on_cpu_has_the_documented_signature() {
        let spec = parse(MINILM);
        let resolution = Resolution::for_cpu_build(&spec).unwrap_or_else(|e| panic!("{e}"));
        let signature = model_signature_for(&spec, &resolution);
        assert_eq!(signature.as_str(), MINILM_CPU);
        assert_eq!(signature.to_string(), MINILM_CPU);
        // sha256 of MINILM_CPU, computed outside Rust (Python hashlib).
        assert_eq!(signature.short(), "dp2-05790e3d2d170ce2");
        assert_eq!(signature.version(), SignatureVersion::Dp2);
    }

    #[test]
    fn the_files_and_the_resolved_preprocessing_are_signed() {
        let spec = parse(MINILM);
        let resolution = Resolution::for_cpu_build(&spec).unwrap_or_else(|e| panic!("{e}"));
        let digest: WeightsDigest = format!("sha256:{}", "ab".repeat(32))
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let identity = ArtifactIdentity {
            artifacts_digest: Some(digest),
            preprocess_params: None,
        };
        let signature = model_signature_with(&spec, &resolution, &identity);
        assert_eq!(
            signature.as_str(),
            MINILM_CPU.replace("artifacts_digest=-", &format!("artifacts_digest={digest}"))
        );
        // sha256 of the string above, computed outside Rust.
        assert_eq!(signature.short(), "dp2-4bef677f8ace739e");

        // Other bytes, another signature.
        let other = ArtifactIdentity {
            artifacts_digest: Some(
                format!("sha256:{}", "cd".repeat(32))
                    .parse()
                    .unwrap_or_else(|e| panic!("{e}")),
            ),
            preprocess_params: None,
        };
        assert_ne!(model_signature_with(&spec, &resolution, &other), signature);

        // A spec that leaves its parameters to the model's files signs what they resolve
        // to: the same as a spec that restates them.
        let mut bare = spec.clone();
        bare.preprocess_params.clear();
        let resolved = ArtifactIdentity {
            artifacts_digest: Some(digest),
            preprocess_params: Some(spec.preprocess_params.clone()),
        };
        assert_eq!(
            model_signature_with(&bare, &resolution, &resolved),
            model_signature_with(&spec, &resolution, &resolved)
        );
        assert_eq!(
            model_signature_with(&spec, &resolution, &resolved),
            signature
        );
    }

    #[test]
    fn minilm_preprocess_signature_is_the_documented_one() {
        let spec = parse(MINILM);
        let preset = spec.preprocess_preset.as_deref();
        assert_eq!(
            preprocess_canonical(preset, &spec.preprocess_params),
            r#"pp1:preset=sentence_embedding;params={"max_length":256,"normalize":true,"pooling":"mean"}"#
        );
        // sha256 of the line above, computed outside Rust.
        assert_eq!(
            preprocess_signature(preset, &spec.preprocess_params),
            "pp1:8ede604613e9fa5d"
        );
        assert_eq!(
            preprocess_canonical(None, &BTreeMap::new()),
            "pp1:preset=-;params={}"
        );
    }

    #[test]
    fn device_and_precision_come_from_the_resolution() {
        let spec = parse(MINILM);
        let on_gpu = model_signature_for(
            &spec,
            &Resolution::new(Placement::Local(ResolvedDevice::Cuda(1)), Precision::Fp16),
        );
        assert_eq!(
            on_gpu.as_str(),
            MINILM_CPU
                .replace("precision=fp32;device=cpu", "precision=fp16;device=cuda:1")
                .as_str()
        );
        assert_ne!(on_gpu.short(), "dp2-05790e3d2d170ce2");
    }

    #[test]
    fn awkward_values_are_escaped_and_absent_fields_spelled_out() {
        let spec = parse(
            r#"
model_name: odd-model
model_version: "-rc 1;x=y%zé"
roles: [speech_recognition, speech_translation]
runtime: triton
engine: tensorrt
precision: fp32
device_policy: cuda:2
preprocess_preset: audio_log_mel
preprocess_params:
  n_mels: 80.0
  "a b": { z: -2, y: [1.0, 0.5, "q\";"] }
triton: { endpoint: "http://127.0.0.1:8000", model_name: odd }
"#,
        );
        let resolution = Resolution::for_cpu_build(&spec).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resolution.placement, Placement::Triton);
        let resolution = Resolution::new(resolution.placement, Precision::Bf16);
        let signature = model_signature_for(&spec, &resolution);
        assert_eq!(
            signature.as_str(),
            "dp2:model_name=odd-model;model_version=%2Drc%201%3Bx%3Dy%25z%C3%A9;\
             role=speech_recognition;runtime=triton;engine=tensorrt;precision=bf16;\
             device=triton;preprocess_preset=audio_log_mel;\
             preprocess_params={\"a%20b\":{\"y\":[1,0.5,\"q\\\"%3B\"],\"z\":-2},\"n_mels\":80};\
             weights_digest=-;artifacts_digest=-"
        );
        // sha256 of the string above, computed outside Rust.
        assert_eq!(signature.short(), "dp2-e01500c517afe04e");
    }

    #[test]
    fn a_spec_without_any_role_spells_role_absent() {
        let mut spec = parse(MINILM);
        spec.role = None;
        let resolution = Resolution::for_cpu_build(&spec).unwrap_or_else(|e| panic!("{e}"));
        let signature = model_signature_for(&spec, &resolution);
        assert!(
            signature.as_str().contains(";role=-;runtime="),
            "{signature}"
        );
    }
}
