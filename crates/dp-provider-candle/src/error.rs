//! The crate's error type and its mapping onto the shared [`ModelError`] vocabulary.

use std::path::PathBuf;

use dp_spec::{ErrorCode, ModelError};

/// Everything that can go wrong loading or running a model with candle.
#[derive(Debug, thiserror::Error)]
pub enum CandleError {
    /// A file the model needs is absent.
    #[error("{file} is missing: run `cargo xtask setup` or check the spec's local_artifacts")]
    FileMissing {
        /// The absent file.
        file: PathBuf,
    },
    /// A file is present but its content is wrong (bad JSON, truncated weights, a missing
    /// or mis-shaped tensor, an unsupported setting).
    #[error("{file} is malformed: {problem}; replace it with the file the spec pins")]
    Malformed {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// `config.json` names an architecture this provider does not run.
    #[error(
        "{file}: model_type '{model_type}' is not an architecture the candle provider runs \
         (supported: {supported}); serve this model with engine onnx (an exported graph) or \
         through Triton, or fix model_type if the file is wrong"
    )]
    UnsupportedArchitecture {
        /// The `config.json`.
        file: PathBuf,
        /// The `model_type` it names (empty when absent).
        model_type: String,
        /// The architectures this build runs.
        supported: &'static str,
    },
    /// The spec does not say where the weights are.
    #[error(
        "spec '{model}' lists no .safetensors file (or folder holding model.safetensors) in local_artifacts"
    )]
    NoWeightsArtifact {
        /// The model name.
        model: String,
    },
    /// The spec's input or output schema disagrees with the model.
    #[error("spec '{model}': {problem}; fix the spec's input_schema/output_schema")]
    SchemaMismatch {
        /// The model name.
        model: String,
        /// What disagrees.
        problem: String,
    },
    /// The requested device is not compiled in or not present.
    #[error("{0}")]
    DeviceUnavailable(String),
    /// The inputs do not fit the model.
    #[error("{0}")]
    InvalidInput(String),
    /// The tensor library failed while running the model.
    #[error("candle failed while running the model: {0}")]
    Runtime(#[from] candle_core::Error),
    /// The worker threads could not be started.
    #[error("cannot start {threads} candle worker threads: {reason}")]
    ThreadPool {
        /// How many threads were asked for.
        threads: usize,
        /// Why it failed.
        reason: String,
    },
}

impl CandleError {
    /// A [`CandleError::Malformed`] for `file`.
    pub(crate) fn malformed(file: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        Self::Malformed {
            file: file.into(),
            problem: problem.into(),
        }
    }

    /// The shared code for this error.
    #[must_use]
    pub const fn code(&self) -> ErrorCode {
        match self {
            Self::FileMissing { .. } => ErrorCode::WeightsMissing,
            // A broken artifact makes the spec unusable as written; digest verification
            // (done by the manager before loading) catches altered bytes earlier.
            Self::Malformed { .. }
            | Self::UnsupportedArchitecture { .. }
            | Self::NoWeightsArtifact { .. }
            | Self::SchemaMismatch { .. } => ErrorCode::InvalidSpec,
            Self::DeviceUnavailable(_) => ErrorCode::DeviceUnavailable,
            Self::ThreadPool { .. } => ErrorCode::ProviderUnavailable,
            Self::InvalidInput(_) => ErrorCode::InvalidInput,
            Self::Runtime(_) => ErrorCode::ProviderUnavailable,
        }
    }
}

impl From<CandleError> for ModelError {
    fn from(err: CandleError) -> Self {
        let mut model_error = Self::new(err.code(), err.to_string());
        match &err {
            CandleError::FileMissing { file } | CandleError::Malformed { file, .. } => {
                model_error = model_error.with_detail("file", file.display().to_string());
            }
            CandleError::UnsupportedArchitecture {
                file, model_type, ..
            } => {
                model_error = model_error
                    .with_detail("file", file.display().to_string())
                    .with_detail("model_type", model_type.as_str());
            }
            CandleError::NoWeightsArtifact { model }
            | CandleError::SchemaMismatch { model, .. } => {
                model_error = model_error.with_detail("model", model.as_str());
            }
            _ => {}
        }
        model_error.with_detail("provider", "candle")
    }
}
