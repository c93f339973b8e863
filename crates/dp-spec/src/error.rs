//! The shared error vocabulary: a stable [`ErrorCode`] and the serializable [`ModelError`]
//! every crate converts its own error enum into.

use std::fmt;

use dp_digest::{DigestError, DigestErrorKind, VerifyStatus};

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
    /// A request's data does not fit the model (tensor names, shapes, element types), or a
    /// machine-written file (a lock file) is malformed.
    InvalidInput,
    /// The operating system refused a read, write or lock (permissions, full disk): an
    /// unexpected failure, not a problem with the specs or the weights.
    Io,
    /// The model's request queue is full: retry after a moment (nothing was run).
    Overloaded,
    /// A model's outputs on its probe inputs differ from the golden outputs pinned in the
    /// lock file beyond their tolerance (the bytes may all match: a runtime, device or
    /// preprocessing change).
    OutputDrift,
    /// The device a spec asks for is not on this machine or not usable by this build
    /// (`cuda` without a CUDA build or a GPU, `cuda:N` past the last device, a runtime library
    /// without a CUDA execution provider). Never answered by running on another device.
    DeviceUnavailable,
    /// The caller gave up on the request (its cancellation token was cancelled) before it
    /// ran: nothing was run for it; ask again if the result is still wanted.
    Cancelled,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [Self; 19] = [
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
        Self::Io,
        Self::Overloaded,
        Self::OutputDrift,
        Self::DeviceUnavailable,
        Self::Cancelled,
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
            Self::Io => "io",
            Self::Overloaded => "overloaded",
            Self::OutputDrift => "output_drift",
            Self::DeviceUnavailable => "device_unavailable",
            Self::Cancelled => "cancelled",
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

impl ErrorCode {
    /// The code of a [`dp_digest::DigestError`], from its stable classification (never from
    /// its message).
    ///
    /// ```
    /// use dp_digest::DigestErrorKind;
    /// use dp_spec::ErrorCode;
    ///
    /// assert_eq!(ErrorCode::of_digest_error(DigestErrorKind::WeightsMissing), ErrorCode::WeightsMissing);
    /// assert_eq!(ErrorCode::of_digest_error(DigestErrorKind::Io), ErrorCode::Io);
    /// ```
    #[must_use]
    pub const fn of_digest_error(kind: DigestErrorKind) -> Self {
        match kind {
            DigestErrorKind::InvalidDigest | DigestErrorKind::InvalidInput => Self::InvalidSpec,
            DigestErrorKind::WeightsMissing => Self::WeightsMissing,
            DigestErrorKind::UnverifiableWeights => Self::WeightsDigestMismatch,
            DigestErrorKind::MalformedLockFile | DigestErrorKind::UnsuitableFile => {
                Self::InvalidInput
            }
            DigestErrorKind::Io => Self::Io,
        }
    }

    /// The code of a verification outcome; `None` when the model is verified.
    ///
    /// ```
    /// use dp_digest::VerifyStatus;
    /// use dp_spec::ErrorCode;
    ///
    /// assert_eq!(ErrorCode::of_verify_status(VerifyStatus::Drift), Some(ErrorCode::VersionDrift));
    /// assert_eq!(ErrorCode::of_verify_status(VerifyStatus::Ok), None);
    /// ```
    #[must_use]
    pub const fn of_verify_status(status: VerifyStatus) -> Option<Self> {
        match status {
            VerifyStatus::Ok => None,
            VerifyStatus::Missing => Some(Self::WeightsMissing),
            VerifyStatus::DigestMismatch => Some(Self::WeightsDigestMismatch),
            VerifyStatus::Drift => Some(Self::VersionDrift),
        }
    }
}

impl From<DigestError> for ModelError {
    /// Maps a digest error onto the shared vocabulary: the code comes from
    /// [`DigestError::kind`], the message is the error's own (it says what to do), and the
    /// paths it names go into `details`.
    fn from(err: DigestError) -> Self {
        let code = ErrorCode::of_digest_error(err.kind());
        let path = |p: &std::path::Path| serde_json::Value::from(p.display().to_string());
        let mut model_error = Self::new(code, err.to_string());
        match &err {
            DigestError::Read { path: p, .. }
            | DigestError::Write { path: p, .. }
            | DigestError::Lock { path: p, .. } => {
                model_error = model_error.with_detail("path", path(p));
            }
            DigestError::MalformedLockFile { path: p, .. }
            | DigestError::UnsupportedLockVersion { path: p, .. } => {
                model_error = model_error.with_detail("file", path(p));
            }
            DigestError::WeightsMissing { root, missing } => {
                model_error = model_error
                    .with_detail("models_root", path(root))
                    .with_detail("missing", missing.clone());
            }
            DigestError::InvalidArtifactPath { artifact, .. }
            | DigestError::ArtifactEscapesRoot { artifact, .. } => {
                model_error = model_error.with_detail("artifact", artifact.clone());
            }
            DigestError::SymlinkEscapesTree { link, target, .. }
            | DigestError::BrokenSymlink { link, target, .. } => {
                model_error = model_error
                    .with_detail("path", link.clone())
                    .with_detail("target", path(target));
            }
            DigestError::SymlinkLoop { path: p, .. }
            | DigestError::SpecialFile { path: p, .. }
            | DigestError::UnsupportedFileName { path: p, .. } => {
                model_error = model_error.with_detail("path", p.clone());
            }
            _ => {}
        }
        model_error
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

    fn digest_error(kind: DigestErrorKind) -> DigestError {
        let root = std::path::PathBuf::from("/models");
        match kind {
            DigestErrorKind::InvalidDigest => "md5:00"
                .parse::<dp_digest::WeightsDigest>()
                .expect_err("md5 is refused"),
            DigestErrorKind::InvalidInput => DigestError::InvalidArtifactPath {
                artifact: "../x".into(),
                reason: "has a `..` segment",
            },
            DigestErrorKind::WeightsMissing => DigestError::WeightsMissing {
                root,
                missing: vec!["tiny/model.onnx".into()],
            },
            DigestErrorKind::UnverifiableWeights => DigestError::SymlinkEscapesTree {
                link: "tiny/model.onnx".into(),
                target: "/etc/passwd".into(),
                root,
            },
            DigestErrorKind::MalformedLockFile => DigestError::MalformedLockFile {
                path: "specs/catalog.lock".into(),
                detail: "expected value at line 1 column 1".into(),
            },
            DigestErrorKind::Io => DigestError::Write {
                path: "specs/catalog.lock".into(),
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            },
            DigestErrorKind::UnsuitableFile => DigestError::NotARegularFile {
                path: "specs/catalog.lock".into(),
                role: "lock file",
                found: "FIFO (named pipe)",
            },
        }
    }

    #[test]
    fn every_digest_error_kind_maps_to_its_documented_code() {
        let expected = [
            (DigestErrorKind::InvalidDigest, "invalid_spec"),
            (DigestErrorKind::InvalidInput, "invalid_spec"),
            (DigestErrorKind::WeightsMissing, "weights_missing"),
            (
                DigestErrorKind::UnverifiableWeights,
                "weights_digest_mismatch",
            ),
            (DigestErrorKind::MalformedLockFile, "invalid_input"),
            (DigestErrorKind::Io, "io"),
            (DigestErrorKind::UnsuitableFile, "invalid_input"),
        ];
        for (kind, code) in expected {
            let err = digest_error(kind);
            assert_eq!(err.kind(), kind, "fixture of {kind:?}");
            let message = err.to_string();
            let model_error = ModelError::from(err);
            assert_eq!(model_error.error_code.as_str(), code, "{kind:?}");
            assert_eq!(model_error.message, message, "the message is kept as is");
        }
    }

    #[test]
    fn digest_errors_carry_their_paths_in_details() {
        let missing = ModelError::from(digest_error(DigestErrorKind::WeightsMissing));
        assert_eq!(missing.details["models_root"], "/models");
        assert_eq!(
            missing.details["missing"],
            serde_json::json!(["tiny/model.onnx"])
        );
        let escaping = ModelError::from(digest_error(DigestErrorKind::UnverifiableWeights));
        assert_eq!(escaping.details["path"], "tiny/model.onnx");
        assert_eq!(escaping.details["target"], "/etc/passwd");
        let lock = ModelError::from(digest_error(DigestErrorKind::MalformedLockFile));
        assert_eq!(lock.details["file"], "specs/catalog.lock");
    }

    #[test]
    fn verify_statuses_map_to_the_codes_dp_digest_names() {
        for status in [
            VerifyStatus::Ok,
            VerifyStatus::Missing,
            VerifyStatus::DigestMismatch,
            VerifyStatus::Drift,
        ] {
            assert_eq!(
                ErrorCode::of_verify_status(status).map(ErrorCode::as_str),
                status.error_code(),
                "{status:?}"
            );
        }
    }
}
