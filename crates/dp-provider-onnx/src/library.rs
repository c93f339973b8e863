//! Finding and loading the ONNX Runtime library: one library and one ort `Environment` per
//! process, because ONNX Runtime's API table is process-global.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;

use crate::error::OnnxError;

/// The environment variable ort itself reads; honoured so that deployments need no config.
pub const ORT_DYLIB_PATH: &str = "ORT_DYLIB_PATH";

/// The setup folder's library, relative to the parent of the models root: `cargo xtask
/// setup` puts models in `.dp-assets/models` and the library in `.dp-assets/onnxruntime`.
pub const SETUP_LIBRARY: &str = "onnxruntime/libonnxruntime.so";

/// The library in use and its environment, set once.
static ENVIRONMENT: OnceLock<(PathBuf, Environment)> = OnceLock::new();

/// Serializes the first load so two threads cannot load two libraries.
static INIT: Mutex<()> = Mutex::new(());

/// Where to look for the library: configuration, then `ORT_DYLIB_PATH`, then the setup
/// folder next to the models root. Returns the path and the rule that gave it.
#[must_use]
pub fn resolve_library_path(
    configured: Option<&Path>,
    models_root: &Path,
) -> (PathBuf, &'static str) {
    if let Some(path) = configured {
        return (path.to_path_buf(), "the provider configuration");
    }
    if let Some(path) = std::env::var_os(ORT_DYLIB_PATH).filter(|p| !p.is_empty()) {
        return (PathBuf::from(path), "ORT_DYLIB_PATH");
    }
    let base = models_root.parent().unwrap_or(models_root);
    (
        base.join(SETUP_LIBRARY),
        "the setup folder next to the models root",
    )
}

/// The process's environment, loading the library at `path` the first time.
pub(crate) fn environment(
    path: &Path,
    source_of_path: &'static str,
) -> Result<&'static Environment, OnnxError> {
    if !path.is_file() {
        return Err(OnnxError::LibraryMissing {
            path: path.to_path_buf(),
            source_of_path,
        });
    }
    // Compare canonical paths so `a/../lib.so` and `lib.so` count as one library.
    let requested = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let loaded = match ENVIRONMENT.get() {
        Some(entry) => entry,
        None => {
            let _guard = INIT
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match ENVIRONMENT.get() {
                Some(entry) => entry,
                None => {
                    let unusable = |reason: String| OnnxError::LibraryUnusable {
                        path: requested.clone(),
                        reason,
                    };
                    let environment = ort::init_from(&requested)
                        .map_err(|e| unusable(e.to_string()))?
                        .with_name("dp-models")
                        .build()
                        .map_err(|e| unusable(e.to_string()))?;
                    ENVIRONMENT.get_or_init(|| (requested.clone(), environment))
                }
            }
        }
    };
    if loaded.0 != requested {
        return Err(OnnxError::OtherLibraryLoaded {
            loaded: loaded.0.clone(),
            requested,
        });
    }
    Ok(&loaded.1)
}
