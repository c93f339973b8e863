//! The providers compiled into `dp` (cargo features `candle`, `onnx`, `triton`, all on by
//! default), registered with their default configurations, and the manager the model
//! commands (`resolve`, `embed`, `health`) share.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use dp_manager::ModelManager;
use dp_spec::{ErrorCode, ModelError, ModelProvider};

use crate::{Cli, EXIT_INVALID, EXIT_NOT_READY, load_resolved, report_diagnostics};

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

/// The models root: `--models-root`, else `DP_MODELS_ROOT`, else `.dp-assets/models` (the
/// setup folder) when it exists.
fn models_root(cli: &Cli) -> PathBuf {
    cli.models_root
        .clone()
        .unwrap_or_else(|| PathBuf::from(".dp-assets/models"))
}

/// Loads the layered catalog and builds a manager with the compiled providers; on failure,
/// reports and returns the exit code.
pub(crate) fn manager(cli: &Cli, verify_cache: Option<PathBuf>) -> Result<ModelManager, ExitCode> {
    let resolved = match load_resolved(cli) {
        Ok(resolved) => resolved,
        Err(diagnostics) => {
            return Err(report_diagnostics(cli, &diagnostics).unwrap_or(ExitCode::FAILURE));
        }
    };
    let mut builder = ModelManager::builder(resolved.catalog, models_root(cli))
        .providers(compiled())
        // A short command: no background thread.
        .reaper(false);
    if let Some(path) = verify_cache {
        builder = builder.verification_cache(path);
    }
    builder.build().map_err(|err| report_model_error(cli, &err))
}

/// The exit code of a model error: 2 for what the user asked or wrote (unknown model,
/// invalid spec or input, a spec needing the network), 3 for a model that is not ready on
/// this machine (weights, digest, provider, runtime, memory), 1 for the operating system.
pub(crate) const fn exit_code_for(code: ErrorCode) -> u8 {
    match code {
        ErrorCode::ModelNotFound
        | ErrorCode::RoleUnresolved
        | ErrorCode::InvalidSpec
        | ErrorCode::InvalidInput
        | ErrorCode::NetworkForbidden
        | ErrorCode::UnsupportedRuntime
        | ErrorCode::UnsupportedEngine => EXIT_INVALID,
        ErrorCode::Io => 1,
        _ => EXIT_NOT_READY,
    }
}

/// Prints one model error (`{"errors":[…]}` on stdout with `--json`, a line on stderr
/// otherwise) and returns its exit code.
pub(crate) fn report_model_error(cli: &Cli, err: &ModelError) -> ExitCode {
    if cli.json {
        println!("{}", serde_json::json!({ "errors": [err] }));
    } else {
        eprintln!("dp: {err}");
    }
    ExitCode::from(exit_code_for(err.error_code))
}
