//! The errors of this crate, mapped onto the shared vocabulary ([`ErrorCode`]).

use dp_spec::{DevicePolicy, ErrorCode, ModelError};

/// What can go wrong while resolving a spec for a signature or reading a record.
///
/// Computing a signature itself never fails: it is a pure function of values that are
/// already valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The spec pins a CUDA device, and this build has no CUDA support.
    #[error(
        "model {model_name:?} asks for device_policy {policy}, but CUDA is not available in \
         this build; set device_policy to cpu or auto, or use a build with CUDA support"
    )]
    CudaUnavailable {
        /// The model whose spec asks for CUDA.
        model_name: String,
        /// The policy it asks for (`cuda` or `cuda:N`).
        policy: DevicePolicy,
    },
    /// A text that names no placement (expected `cpu`, `cuda:N` or `triton`).
    #[error(
        "{text:?} is not a placement; expected cpu, cuda:N (N without leading zeros) or triton"
    )]
    InvalidPlacement {
        /// The rejected text.
        text: String,
    },
}

impl SignatureError {
    /// The stable code of the shared error vocabulary.
    ///
    /// ```
    /// let err = "gpu0".parse::<dp_signature::Placement>().unwrap_err();
    /// assert_eq!(err.code(), dp_spec::ErrorCode::InvalidInput);
    /// ```
    #[must_use]
    pub const fn code(&self) -> ErrorCode {
        match self {
            // The device is part of a compiled-out provider's domain: the same spec works
            // with a build that has it.
            Self::CudaUnavailable { .. } => ErrorCode::DeviceUnavailable,
            Self::InvalidPlacement { .. } => ErrorCode::InvalidInput,
        }
    }
}

impl From<SignatureError> for ModelError {
    fn from(err: SignatureError) -> Self {
        let base = Self::new(err.code(), err.to_string());
        match err {
            SignatureError::CudaUnavailable { model_name, policy } => base
                .with_detail("model_name", model_name)
                .with_detail("device_policy", policy.to_string()),
            SignatureError::InvalidPlacement { text } => base.with_detail("placement", text),
        }
    }
}
