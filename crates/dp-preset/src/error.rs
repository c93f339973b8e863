//! The one error type of the presets, and how it maps onto the shared [`ErrorCode`].

use dp_spec::{ErrorCode, ModelError};

/// Why a preset could not be built, could not prepare an input, or could not read a
/// model's outputs.
///
/// Every variant maps onto a stable [`ErrorCode`] (see [`PresetError::code`]); input errors
/// also carry a stable `reason` (`image_decode_failed`, `image_too_large`, …) that callers
/// and the bad-input table match on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PresetError {
    /// The spec names a preset this crate does not know.
    #[error("unknown preprocess_preset {name:?}; known presets: {known}")]
    UnknownPreset {
        /// The name in the spec.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// The model's files or the spec's `preprocess_params` do not configure the preset
    /// (a missing or malformed file, a contradiction between the two).
    #[error("{message}")]
    InvalidConfig {
        /// What is wrong and what to do.
        message: String,
        /// The file at fault, when one is.
        file: Option<String>,
    },
    /// An input the preset cannot prepare.
    #[error("{message}")]
    InvalidInput {
        /// A stable, machine-readable reason (`image_decode_failed`, …).
        reason: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
    /// The model returned outputs the preset cannot read (a wrong name, dtype or shape).
    #[error("{message}")]
    BadOutput {
        /// What is wrong and what to do.
        message: String,
    },
}

impl PresetError {
    /// The shared error code: `invalid_spec` for configuration, `invalid_input` otherwise.
    #[must_use]
    pub const fn code(&self) -> ErrorCode {
        match self {
            Self::UnknownPreset { .. } | Self::InvalidConfig { .. } => ErrorCode::InvalidSpec,
            Self::InvalidInput { .. } | Self::BadOutput { .. } => ErrorCode::InvalidInput,
        }
    }

    /// An [`PresetError::InvalidInput`].
    pub fn input(reason: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidInput {
            reason,
            message: message.into(),
        }
    }

    /// An [`PresetError::InvalidConfig`] about `file`.
    pub fn config(file: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidConfig {
            message: message.into(),
            file: Some(file.into()),
        }
    }

    /// A [`PresetError::BadOutput`].
    pub fn output(message: impl Into<String>) -> Self {
        Self::BadOutput {
            message: message.into(),
        }
    }
}

impl From<PresetError> for ModelError {
    fn from(err: PresetError) -> Self {
        let code = err.code();
        let mut out = Self::new(code, err.to_string());
        match &err {
            PresetError::InvalidInput { reason, .. } => out = out.with_detail("reason", *reason),
            PresetError::InvalidConfig {
                file: Some(file), ..
            } => out = out.with_detail("file", file.as_str()),
            _ => {}
        }
        out
    }
}
