//! The shared error vocabulary: a stable [`ErrorCode`] and the serializable [`ModelError`]
//! every crate converts its own error enum into.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code.
///
/// The serialized names (`model_not_found`, …) are part of the public contract: other
/// languages match on them, so a variant is never renamed or reused for another meaning.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No model with that name or alias is in the catalog.
    ModelNotFound,
    /// A local artifact a spec names is absent under the models root.
    WeightsMissing,
    /// The bytes on disk (or the digest a deployment declares) differ from the pinned digest.
    WeightsDigestMismatch,
    /// A Triton endpoint refused, timed out or failed.
    TritonUnavailable,
    /// A model does not fit in GPU memory, even after evicting every idle model.
    InsufficientGpuMemory,
    /// A model does not fit in the RAM budget, even after evicting every idle model.
    InsufficientMemory,
    /// The spec asks for a runtime this build does not know.
    UnsupportedRuntime,
    /// The spec asks for an engine its runtime cannot run.
    UnsupportedEngine,
    /// Something would need the network (a URL artifact, a non-allowed endpoint).
    NetworkForbidden,
    /// A spec, profile or override is malformed.
    InvalidSpec,
    /// No catalog entry has the requested role and capabilities.
    RoleUnresolved,
    /// A locked model's bytes no longer match its lock entry.
    VersionDrift,
    /// The provider is not compiled in, or its runtime library cannot be found.
    ProviderUnavailable,
    /// A request's data does not fit the model (tensor names, shapes, element types).
    InvalidInput,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [Self; 14] = [
        Self::ModelNotFound,
        Self::WeightsMissing,
        Self::WeightsDigestMismatch,
        Self::TritonUnavailable,
        Self::InsufficientGpuMemory,
        Self::InsufficientMemory,
        Self::UnsupportedRuntime,
        Self::UnsupportedEngine,
        Self::NetworkForbidden,
        Self::InvalidSpec,
        Self::RoleUnresolved,
        Self::VersionDrift,
        Self::ProviderUnavailable,
        Self::InvalidInput,
    ];

    /// The stable snake_case name, identical to the serialized form.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ModelNotFound => "model_not_found",
            Self::WeightsMissing => "weights_missing",
            Self::WeightsDigestMismatch => "weights_digest_mismatch",
            Self::TritonUnavailable => "triton_unavailable",
            Self::InsufficientGpuMemory => "insufficient_gpu_memory",
            Self::InsufficientMemory => "insufficient_memory",
            Self::UnsupportedRuntime => "unsupported_runtime",
            Self::UnsupportedEngine => "unsupported_engine",
            Self::NetworkForbidden => "network_forbidden",
            Self::InvalidSpec => "invalid_spec",
            Self::RoleUnresolved => "role_unresolved",
            Self::VersionDrift => "version_drift",
            Self::ProviderUnavailable => "provider_unavailable",
            Self::InvalidInput => "invalid_input",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The serializable form of every error dp-models reports: `{error_code, message, details}`.
///
/// `message` says what happened and what to do; `details` carries structured context
/// (file, pointer, endpoint, expected and actual digests…) for programs.
///
/// ```
/// use dp_spec::{ErrorCode, ModelError};
///
/// let err = ModelError::new(ErrorCode::ModelNotFound, "no model named 'x'; run 'dp list'");
/// let json = serde_json::to_value(&err)?;
/// assert_eq!(json["error_code"], "model_not_found");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, thiserror::Error)]
#[error("{error_code}: {message}")]
pub struct ModelError {
    /// The stable code.
    pub error_code: ErrorCode,
    /// What happened and what to do about it.
    pub message: String,
    /// Structured context; an empty object when there is none.
    #[serde(default = "empty_details")]
    pub details: serde_json::Value,
}

fn empty_details() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

impl ModelError {
    /// An error with no details.
    pub fn new(error_code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error_code,
            message: message.into(),
            details: empty_details(),
        }
    }

    /// Adds one detail field (replacing an existing one of that name).
    #[must_use]
    pub fn with_detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        if let serde_json::Value::Object(map) = &mut self.details {
            map.insert(key.to_owned(), value.into());
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_names_match_as_str() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).expect("serializes");
            assert_eq!(json, serde_json::Value::String(code.as_str().to_owned()));
            let back: ErrorCode = serde_json::from_value(json).expect("deserializes");
            assert_eq!(back, code);
        }
    }

    #[test]
    fn model_error_round_trips() {
        let err = ModelError::new(ErrorCode::WeightsMissing, "gone").with_detail("file", "a/b");
        let text = serde_json::to_string(&err).expect("serializes");
        assert_eq!(
            text,
            r#"{"error_code":"weights_missing","message":"gone","details":{"file":"a/b"}}"#
        );
        let back: ModelError = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back, err);
    }
}
