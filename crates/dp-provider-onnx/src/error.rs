//! The crate's error type and its mapping onto the shared [`ModelError`] vocabulary.

use std::path::PathBuf;

use dp_spec::{ErrorCode, ModelError};

/// Everything that can go wrong in this provider.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// No ONNX Runtime library where the configuration, `ORT_DYLIB_PATH` or setup point.
    #[error(
        "ONNX Runtime library not found at {path} (from {source_of_path}); run \
         `cargo xtask setup` (it places libonnxruntime.so 1.31.1 in .dp-assets/onnxruntime/), \
         or set ORT_DYLIB_PATH to a libonnxruntime.so of version 1.31 or later"
    )]
    LibraryMissing {
        /// Where it was looked for.
        path: PathBuf,
        /// Which rule gave that path.
        source_of_path: &'static str,
    },
    /// The library exists but could not be loaded (wrong file, wrong version…).
    #[error(
        "cannot load ONNX Runtime from {path}: {reason}; point ORT_DYLIB_PATH at a libonnxruntime.so of version 1.31 or later"
    )]
    LibraryUnusable {
        /// The library.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// This process already uses another ONNX Runtime library: one per process.
    #[error(
        "ONNX Runtime is already loaded from {loaded} in this process, so {requested} cannot \
         be used too; configure every ONNX provider of a process with the same library"
    )]
    OtherLibraryLoaded {
        /// The library in use.
        loaded: PathBuf,
        /// The one asked for.
        requested: PathBuf,
    },
    /// The spec asks for a device whose execution provider the library does not offer.
    #[error("{0}")]
    DeviceUnavailable(String),
    /// The spec and the model file disagree, or the model file is unsafe to open.
    #[error("{0}")]
    InvalidSpec(String),
    /// A spec artifact is absent.
    #[error("{0}")]
    WeightsMissing(String),
    /// Request tensors that do not fit the model.
    #[error("{0}")]
    InvalidInput(String),
    /// ONNX Runtime failed while creating a session or running it.
    #[error("ONNX Runtime failed: {0}")]
    Runtime(String),
}

impl From<OnnxError> for ModelError {
    fn from(err: OnnxError) -> Self {
        let code = match &err {
            OnnxError::LibraryMissing { .. }
            | OnnxError::LibraryUnusable { .. }
            | OnnxError::OtherLibraryLoaded { .. } => ErrorCode::ProviderUnavailable,
            OnnxError::DeviceUnavailable(_) => ErrorCode::DeviceUnavailable,
            OnnxError::InvalidSpec(_) => ErrorCode::InvalidSpec,
            OnnxError::WeightsMissing(_) => ErrorCode::WeightsMissing,
            OnnxError::InvalidInput(_) => ErrorCode::InvalidInput,
            // A failing run is a provider fault the caller cannot fix by changing input.
            OnnxError::Runtime(_) => ErrorCode::ProviderUnavailable,
        };
        let message = err.to_string();
        let mut model_error = Self::new(code, message);
        if let OnnxError::LibraryMissing { path, .. } | OnnxError::LibraryUnusable { path, .. } =
            &err
        {
            model_error = model_error.with_detail("library_path", path.display().to_string());
        }
        model_error
    }
}
