//! The providers compiled into `dp` (cargo features `candle`, `onnx`, `triton`, all on by
//! default), registered with their default configurations, and the manager the model
//! commands (`resolve`, `embed`, `health`) share.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use dp_digest::{LockFile, VerificationCache};
use dp_manager::{ModelManager, integrity};
use dp_spec::{ErrorCode, ModelError, ModelProvider};

use crate::output::{report_diagnostics, report_model_error};
use crate::{Cli, load_resolved};

/// Every provider this build compiled in, in the order the manager tries them.
pub(crate) fn compiled() -> Vec<Arc<dyn ModelProvider>> {
    #[allow(unused_mut)] // empty when built with no provider feature
    let mut providers: Vec<Arc<dyn ModelProvider>> = Vec::new();
    #[cfg(feature = "candle")]
    providers.push(Arc::new(
        dp_manager::providers::candle::CandleProvider::new(),
    ));
    #[cfg(feature = "onnx")]
    {
        use dp_manager::providers::onnx::{OnnxProvider, OnnxProviderConfig};
        providers.push(Arc::new(OnnxProvider::new(OnnxProviderConfig::default())));
    }
    #[cfg(feature = "triton")]
    {
        use dp_manager::providers::triton::{TritonProvider, TritonProviderConfig};
        providers.push(Arc::new(TritonProvider::new(
            TritonProviderConfig::default(),
        )));
    }
    providers
}

/// The environment variable that sets the models root when `--models-root` is not given.
const MODELS_ROOT_ENV: &str = "DP_MODELS_ROOT";

/// The models root when neither `--models-root` nor `DP_MODELS_ROOT` is given: where
/// `cargo xtask setup` puts the assets, relative to the current folder.
const DEFAULT_MODELS_ROOT: &str = ".dp-assets/models";

/// The models root of every command: `--models-root`, else `DP_MODELS_ROOT`, else
/// `.dp-assets/models`.
///
/// # Errors
///
/// `invalid_input` when `DP_MODELS_ROOT` is set but empty (clap is not asked to read it,
/// so that the message names the variable rather than a flag the user never passed).
pub(crate) fn models_root(cli: &Cli) -> Result<PathBuf, ModelError> {
    if let Some(root) = &cli.models_root {
        return Ok(root.clone());
    }
    match std::env::var_os(MODELS_ROOT_ENV) {
        None => Ok(PathBuf::from(DEFAULT_MODELS_ROOT)),
        Some(value) if value.is_empty() => Err(ModelError::new(
            ErrorCode::InvalidInput,
            format!(
                "the environment variable {MODELS_ROOT_ENV} is set but empty; set it to the \
                 folder that holds the model artifacts, or unset it to use \
                 {DEFAULT_MODELS_ROOT} (or pass --models-root DIR)"
            ),
        )
        .with_detail("variable", MODELS_ROOT_ENV)),
        Some(value) => Ok(PathBuf::from(value)),
    }
}

/// Checks the verification cache `cache` against the models root: a regular file (or not
/// there yet), outside the models root. The refusal says how to choose another file.
pub(crate) fn check_cache(cache: &Path, models_root: &Path) -> Result<(), ModelError> {
    VerificationCache::check_location(cache, models_root).map_err(|err| {
        let mut err = ModelError::from(err).with_detail("cache", cache.display().to_string());
        err.message
            .push_str("; choose the cache file with --cache FILE or DP_VERIFY_CACHE");
        err
    })
}

/// Loads the layered catalog and builds a manager with the compiled providers and the
/// verification cache `verify_cache` (checked with [`check_cache`]); on failure, reports
/// and returns the exit code.
pub(crate) fn manager(cli: &Cli, verify_cache: Option<PathBuf>) -> Result<ModelManager, ExitCode> {
    let models_root = models_root(cli).map_err(|err| report_model_error(cli, &err))?;
    if let Some(cache) = &verify_cache {
        check_cache(cache, &models_root).map_err(|err| report_model_error(cli, &err))?;
    }
    let resolved = match load_resolved(cli) {
        Ok(resolved) => resolved,
        Err(diagnostics) => {
            return Err(report_diagnostics(cli, &diagnostics).unwrap_or(ExitCode::FAILURE));
        }
    };
    // The catalog's lock, as `dp verify --lock` wrote it: a locked model loads only as
    // locked (every file), and its health says so.
    let lock_path = integrity::default_lock_path(&cli.catalog);
    let lock = LockFile::read(&lock_path).map_err(|err| {
        report_model_error(
            cli,
            &ModelError::from(err).with_detail("lock_file", lock_path.display().to_string()),
        )
    })?;
    let embedding_cache =
        embedding_cache_dir(cli, &models_root).map_err(|err| report_model_error(cli, &err))?;
    // Asking the driver starts CUDA (a context on each device): only in a CUDA build, and
    // only when some in-process spec may use a GPU.
    let may_use_gpu = resolved.catalog.entries().iter().any(|e| {
        e.spec.runtime == dp_spec::Runtime::Inprocess
            && e.spec.device_policy != dp_spec::DevicePolicy::Cpu
    });
    let devices = if cfg!(feature = "cuda") && may_use_gpu {
        dp_manager::DeviceInventory::probe()
    } else {
        dp_manager::DeviceInventory::cpu_only()
    };
    let mut builder = ModelManager::builder(resolved.catalog, models_root)
        .providers(compiled())
        .devices(devices)
        .lock_file(lock)
        // A short command: no background thread.
        .reaper(false);
    if let Some(path) = verify_cache {
        builder = builder.verification_cache(path);
    }
    if let Some(dir) = embedding_cache {
        builder = builder.persistent_embedding_cache(dp_manager::PersistentCacheConfig::new(dir));
    }
    builder.build().map_err(|err| report_model_error(cli, &err))
}

/// The folder of `--embedding-cache` / `DP_EMBEDDING_CACHE` (an empty value is none),
/// refused inside the models root, where its files would change the digests of models
/// listed as directories.
pub(crate) fn embedding_cache_dir(
    cli: &Cli,
    models_root: &Path,
) -> Result<Option<PathBuf>, ModelError> {
    let Some(dir) = cli
        .embedding_cache
        .as_ref()
        .filter(|d| !d.as_os_str().is_empty())
    else {
        return Ok(None);
    };
    VerificationCache::check_location(&dir.join(dp_manager::CACHE_FILE), models_root).map_err(
        |err| {
            let mut err =
                ModelError::from(err).with_detail("embedding_cache", dir.display().to_string());
            err.message.push_str(
                "; choose another folder with --embedding-cache DIR or DP_EMBEDDING_CACHE",
            );
            err
        },
    )?;
    Ok(Some(dir.clone()))
}
