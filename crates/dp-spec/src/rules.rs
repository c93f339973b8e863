//! Semantic rules: what a spec must satisfy beyond its JSON Schema, each with the precise
//! error code a caller can act on.

use std::collections::HashSet;

use crate::error::ErrorCode;
use crate::model_spec::{ModelSpec, Runtime, TensorSpec};

/// One broken rule, located by a JSON pointer into the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleViolation {
    /// Where in the spec (`""` for the whole spec, e.g. a missing field).
    pub pointer: String,
    /// The stable code.
    pub error_code: ErrorCode,
    /// What is wrong and what to do.
    pub message: String,
}

impl RuleViolation {
    fn new(pointer: impl Into<String>, error_code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            error_code,
            message: message.into(),
        }
    }
}

/// Why an artifact path is refused, if it is.
///
/// Paths are checked lexically here; whether a path that passes escapes the models root
/// through a symbolic link is checked where the file system is read.
///
/// ```
/// use dp_spec::{ErrorCode, rules::check_artifact_path};
///
/// assert!(check_artifact_path("minilm/model.safetensors").is_none());
/// assert_eq!(check_artifact_path("s3://bucket/w").map(|(c, _)| c), Some(ErrorCode::NetworkForbidden));
/// assert_eq!(check_artifact_path("../etc/passwd").map(|(c, _)| c), Some(ErrorCode::InvalidSpec));
/// ```
#[must_use]
pub fn check_artifact_path(path: &str) -> Option<(ErrorCode, String)> {
    if let Some(scheme) = url_scheme(path) {
        return Some((
            ErrorCode::NetworkForbidden,
            format!(
                "artifact {path:?} is a {scheme}: URL; dp-models never downloads: copy the files under \
                 DP_MODELS_ROOT and list their relative path"
            ),
        ));
    }
    let invalid = |why: &str| {
        Some((
            ErrorCode::InvalidSpec,
            format!("artifact {path:?} {why}; list a path relative to DP_MODELS_ROOT"),
        ))
    };
    if path.is_empty() {
        return invalid("is empty");
    }
    if path.chars().any(char::is_control) {
        return invalid("contains a control character");
    }
    if path.contains('\\') {
        return invalid("contains a backslash (use `/` separators)");
    }
    if path.starts_with('/') {
        return invalid("is absolute");
    }
    if path.split('/').any(|segment| segment == "..") {
        return invalid("climbs out with `..`");
    }
    None
}

/// The URL scheme a path starts with (`http`, `s3`, `file`, `hf`…), if any. Matches
/// `schema::URL_SCHEME_PATTERN`.
fn url_scheme(path: &str) -> Option<&str> {
    let (scheme, _) = path.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-')))
    .then_some(scheme)
}

/// Checks every semantic rule of one spec.
#[must_use]
pub fn check_spec(spec: &ModelSpec) -> Vec<RuleViolation> {
    let mut out = Vec::new();
    if spec.all_roles().next().is_none() {
        out.push(RuleViolation::new(
            "",
            ErrorCode::InvalidSpec,
            "the spec declares no role; add `role: <role>` (or a non-empty `roles` list)",
        ));
    }
    let engines = spec.runtime.supported_engines();
    if !engines.contains(&spec.engine) {
        let names: Vec<&str> = engines.iter().map(|e| e.as_str()).collect();
        out.push(RuleViolation::new(
            "/engine",
            ErrorCode::UnsupportedEngine,
            format!(
                "engine {} cannot run on runtime {}; that runtime supports {}",
                spec.engine.as_str(),
                spec.runtime.as_str(),
                names.join(", ")
            ),
        ));
    }
    match spec.runtime {
        Runtime::Inprocess => {
            if spec.weights_digest.is_none() {
                out.push(RuleViolation::new(
                    "",
                    ErrorCode::InvalidSpec,
                    "runtime inprocess requires weights_digest (sha256:<hex> or blake3:<hex>); \
                     compute it with `sha256sum` on the weights file",
                ));
            }
            if spec.local_artifacts.is_empty() {
                out.push(RuleViolation::new(
                    "",
                    ErrorCode::InvalidSpec,
                    "runtime inprocess requires at least one entry in local_artifacts",
                ));
            }
            if spec.triton.is_some() {
                out.push(RuleViolation::new(
                    "/triton",
                    ErrorCode::InvalidSpec,
                    "a triton section only applies to runtime triton; remove it or set runtime: triton",
                ));
            }
        }
        Runtime::Triton => match &spec.triton {
            None => out.push(RuleViolation::new(
                "",
                ErrorCode::InvalidSpec,
                "runtime triton requires a triton section with endpoint and model_name",
            )),
            Some(triton) => {
                let scheme = triton.endpoint.split_once("://").map(|(s, _)| s);
                if !matches!(scheme, Some("http" | "https")) {
                    out.push(RuleViolation::new(
                        "/triton/endpoint",
                        ErrorCode::InvalidSpec,
                        format!(
                            "triton endpoint {:?} must be an http:// or https:// base URL",
                            triton.endpoint
                        ),
                    ));
                }
            }
        },
    }
    for (i, path) in spec.local_artifacts.iter().enumerate() {
        if let Some((code, message)) = check_artifact_path(path) {
            out.push(RuleViolation::new(
                format!("/local_artifacts/{i}"),
                code,
                message,
            ));
        }
    }
    check_tensor_names(&spec.input_schema, "/input_schema", &mut out);
    check_tensor_names(&spec.output_schema, "/output_schema", &mut out);
    let mut seen_aliases = HashSet::new();
    for (i, alias) in spec.aliases.iter().enumerate() {
        if alias == &spec.model_name || !seen_aliases.insert(alias.as_str()) {
            out.push(RuleViolation::new(
                format!("/aliases/{i}"),
                ErrorCode::InvalidSpec,
                format!("alias {alias:?} repeats the model's name or another alias; remove it"),
            ));
        }
    }
    if !spec.preprocess_params.is_empty() && spec.preprocess_preset.is_none() {
        out.push(RuleViolation::new(
            "/preprocess_params",
            ErrorCode::InvalidSpec,
            "preprocess_params are given without a preprocess_preset to apply them to",
        ));
    }
    out
}

fn check_tensor_names(tensors: &[TensorSpec], base: &str, out: &mut Vec<RuleViolation>) {
    let mut seen = HashSet::new();
    for (i, tensor) in tensors.iter().enumerate() {
        if !seen.insert(tensor.name.as_str()) {
            out.push(RuleViolation::new(
                format!("{base}/{i}/name"),
                ErrorCode::InvalidSpec,
                format!("tensor {:?} is declared twice", tensor.name),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_paths() {
        let code = |p: &str| check_artifact_path(p).map(|(c, _)| c);
        assert_eq!(code("a/b.safetensors"), None);
        assert_eq!(code("a/..b/c"), None);
        assert_eq!(code("./a"), None);
        for url in [
            "http://x/y",
            "https://x",
            "file:///etc",
            "s3://b/k",
            "hf:org/model",
            "gs://b",
        ] {
            assert_eq!(code(url), Some(ErrorCode::NetworkForbidden), "{url}");
        }
        for bad in ["", "/abs", "..", "a/../b", "a/..", "a\\b", "a\u{0}b"] {
            assert_eq!(code(bad), Some(ErrorCode::InvalidSpec), "{bad:?}");
        }
    }
}
