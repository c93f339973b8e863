//! The crate's one error enum, [`ManagerError`], and its conversion into the shared
//! [`ModelError`] vocabulary (stable [`ErrorCode`]s).
//!
//! Public APIs return [`ModelError`] directly: the single-flight cache hands one failure to
//! every waiter, which needs a `Clone` error, and callers (the CLI, the task API) match on
//! the stable code, not on this enum. The enum exists so each failure is built in one place
//! with one message and one set of details.

use dp_spec::{DevicePolicy, Engine, ErrorCode, ModelError, ResolvedDevice, Runtime};

/// Everything the manager itself can report (provider failures pass through unchanged).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// No catalog entry has this name or alias.
    #[error("no model named {name:?}; run `dp list` to see the catalog")]
    ModelNotFound {
        /// The name or alias asked for.
        name: String,
    },

    /// No non-deprecated model has the role and every capability asked for.
    #[error(
        "no non-deprecated model has role {role:?} with capabilities [{}]; {}",
        capabilities.join(", "),
        describe_lacking(lacking)
    )]
    RoleUnresolved {
        /// The role asked for.
        role: String,
        /// The capabilities asked for.
        capabilities: Vec<String>,
        /// Every model with the role, in catalog order, and why it was not chosen.
        lacking: Vec<(String, String)>,
    },

    /// The spec pins CUDA but this build or machine has none. The manager never falls back to
    /// the CPU silently: a model asked for on a GPU and run on a CPU is a different run.
    #[error(
        "model {model} asks for {policy} but CUDA is not available in this build/machine{}; \
         set device_policy: cpu or auto, or run a CUDA build (`cargo xtask gpu-build`) on a \
         machine with an NVIDIA GPU",
        reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
    )]
    CudaUnavailable {
        /// The model.
        model: String,
        /// Its device policy (`cuda` or `cuda:N`).
        policy: DevicePolicy,
        /// Why the driver could not be asked, when it is installed but refused to start.
        reason: Option<String>,
    },

    /// The spec pins `cuda:N` and this machine has fewer devices.
    #[error(
        "model {model} asks for cuda:{index} but this machine has {count} CUDA devices \
         (cuda:0 to cuda:{}); set device_policy to one of them, or cuda / auto",
        count - 1
    )]
    CudaDeviceMissing {
        /// The model.
        model: String,
        /// The device index asked for.
        index: u16,
        /// How many devices the driver reports (at least one).
        count: usize,
    },

    /// No registered provider supports the spec.
    #[error("{}", no_provider_message(model, *runtime, *engine, feature.as_deref(), *feature_enabled))]
    NoProvider {
        /// The model.
        model: String,
        /// Its runtime.
        runtime: Runtime,
        /// Its engine.
        engine: Engine,
        /// The cargo feature of `dp-manager` that compiles the matching provider in.
        feature: Option<String>,
        /// Whether that feature is enabled in this build.
        feature_enabled: bool,
    },

    /// The RAM budget or `max_loaded` cannot make room, even after evicting every idle model.
    #[error(
        "model {model} needs {need} {unit} but the {limit} is {budget} and {in_use} {unit} are \
         held by models in use or loading; drop handles, release models or raise the limit"
    )]
    InsufficientMemory {
        /// The model.
        model: String,
        /// `bytes of RAM` or `model slot(s)`.
        unit: &'static str,
        /// `RAM budget` or `max_loaded limit`.
        limit: &'static str,
        /// What the model needs.
        need: u64,
        /// The configured limit.
        budget: u64,
        /// What live handles and in-flight loads hold now.
        in_use: u64,
    },

    /// The VRAM budget cannot make room, even after evicting every idle model.
    #[error(
        "model {model} needs {need} bytes of GPU memory on {device} but the VRAM budget is \
         {budget} and {in_use} bytes are held by models in use or loading; drop handles, \
         release models or raise the budget"
    )]
    InsufficientGpuMemory {
        /// The model.
        model: String,
        /// Where it would be placed.
        device: ResolvedDevice,
        /// What the model needs.
        need: u64,
        /// The configured budget.
        budget: u64,
        /// What live handles and in-flight loads hold now.
        in_use: u64,
    },

    /// A generation's key/value cache does not fit the memory budget next to what is held.
    #[error(
        "generating with model {model} needs up to {need} bytes of key/value cache on \
         {device} ({rows} decoder rows × {positions} positions) but the {limit} is {budget} \
         and {in_use} bytes are held; lower max_new_tokens, num_beams or the number of texts \
         per call, or raise the budget"
    )]
    GenerationOverBudget {
        /// The model.
        model: String,
        /// Where it runs.
        device: ResolvedDevice,
        /// Decoder rows (inputs × beams) of one batch.
        rows: usize,
        /// Encoder plus decoder positions each row holds at most.
        positions: usize,
        /// `RAM budget` or `VRAM budget`.
        limit: &'static str,
        /// The cache at its largest.
        need: u64,
        /// The configured budget.
        budget: u64,
        /// What models and other requests hold now.
        in_use: u64,
    },

    /// The provider unwound (panicked) in the middle of a load.
    #[error(
        "provider {provider} stopped (panicked) while loading model {model}; the failure is \
         not cached and the next request retries"
    )]
    LoadAbandoned {
        /// The model.
        model: String,
        /// The provider's name.
        provider: &'static str,
    },

    /// The catalog has more entries than a cache key can index (2³²).
    #[error("the catalog has {len} models; the manager indexes at most {max}")]
    CatalogTooLarge {
        /// Number of entries.
        len: usize,
        /// The limit.
        max: u64,
    },

    /// The operating system refused the keep-alive reaper thread.
    #[error(
        "cannot start the keep-alive reaper thread: {reason}; build with reaper(false) and \
         call reap_idle() periodically instead"
    )]
    ReaperSpawn {
        /// The OS error, as text (`std::io::Error` is not `Clone`).
        reason: String,
    },

    /// A spec would need the network: an artifact given as a URL, or a Triton endpoint on a
    /// host the manager is not allowed to reach.
    #[error("model {model}: {what}; dp-models never reaches the network at run time")]
    NetworkForbidden {
        /// The model.
        model: String,
        /// What would reach out, and how to fix it.
        what: String,
    },

    /// A task request the manager cannot serve (unsupported task type, data of the wrong
    /// kind for the task, a model without the preset the task needs, unknown options).
    #[error("{message}")]
    BadTask {
        /// What is wrong and what to do.
        message: String,
    },

    /// Artifacts the spec lists are not under the models root (checked before a load).
    #[error(
        "model {model}: {} missing under {}; put the files there (dp-models never downloads \
         anything) or fix the spec's local_artifacts",
        missing.join(", "), models_root
    )]
    ArtifactsMissing {
        /// The model.
        model: String,
        /// The models root.
        models_root: String,
        /// The missing artifacts, relative to the root.
        missing: Vec<String>,
    },

    /// Entries under the artifacts that cannot be verified (a symbolic link leaving the
    /// models root, a special file, a name `sha256sum` would escape): loading them would
    /// read bytes nobody pinned.
    #[error("model {model}: refusing to load unverifiable artifacts: {}", problems.join("; "))]
    ArtifactsRefused {
        /// The model.
        model: String,
        /// One sentence per refused entry, naming it and saying what to do.
        problems: Vec<String>,
    },

    /// The bytes of the pinned artifact differ from the spec's `weights_digest`.
    #[error(
        "model {model}: the bytes of {artifact} do not match weights_digest: the spec pins \
         {expected}, the file is {}; restore the pinned files, or re-pin with `dp digest \
         <models root>/{artifact}` if the change is intended",
        actual.as_deref().unwrap_or("unverifiable")
    )]
    DigestMismatch {
        /// The model.
        model: String,
        /// The pinned artifact, relative to the models root.
        artifact: String,
        /// The spec's digest.
        expected: String,
        /// The digest of the bytes on disk, when computable.
        actual: Option<String>,
    },

    /// The model's files together differ from the spec's `artifacts_digest`: a weights,
    /// tokenizer, config or preprocessor file changed.
    #[error(
        "model {model}: its files do not match artifacts_digest: the spec pins {expected}, the \
         files together are {}; restore them (a changed tokenizer or config counts), or re-pin \
         with `dp digest` over the model's artifacts if the change is intended",
        actual.as_deref().unwrap_or("unverifiable")
    )]
    ArtifactsDigestMismatch {
        /// The model.
        model: String,
        /// The spec's aggregate digest.
        expected: String,
        /// The aggregate of the files on disk, when computable.
        actual: Option<String>,
    },

    /// A locked model's files differ from its lock entry, or the entry was written for
    /// another version or pin of the model.
    #[error(
        "model {model}: its files differ from the lock entry{}{}; restore them, or run \
         `dp verify {model} --lock` to accept the new bytes",
        describe_drift(drift),
        describe_conflicts(conflicts)
    )]
    Drift {
        /// The model.
        model: String,
        /// Which files changed.
        drift: dp_digest::ManifestDiff,
        /// Where the entry itself disagrees with the spec.
        conflicts: Vec<String>,
    },

    /// Verifying the artifacts failed (an unreadable file, an invalid path): the
    /// `dp-digest` error in the shared vocabulary.
    #[error(transparent)]
    Verification(ModelError),

    /// A provider's own error, unchanged (its code is already the right one).
    #[error(transparent)]
    Provider(ModelError),
}

fn describe_drift(drift: &dp_digest::ManifestDiff) -> String {
    let mut parts = Vec::new();
    for (label, paths) in [
        ("changed", &drift.changed),
        ("added", &drift.added),
        ("removed", &drift.removed),
    ] {
        if !paths.is_empty() {
            parts.push(format!("{label}: {}", paths.join(", ")));
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    }
}

fn describe_conflicts(conflicts: &[String]) -> String {
    if conflicts.is_empty() {
        String::new()
    } else {
        format!("; {}", conflicts.join("; "))
    }
}

fn describe_lacking(lacking: &[(String, String)]) -> String {
    if lacking.is_empty() {
        return "no model in the catalog has this role".to_owned();
    }
    let list: Vec<String> = lacking
        .iter()
        .map(|(name, why)| format!("{name} ({why})"))
        .collect();
    format!("candidates lacking: {}", list.join(", "))
}

fn no_provider_message(
    model: &str,
    runtime: Runtime,
    engine: Engine,
    feature: Option<&str>,
    feature_enabled: bool,
) -> String {
    let what = format!(
        "model {model} (runtime {}, engine {})",
        runtime.as_str(),
        engine.as_str()
    );
    match (feature, feature_enabled) {
        (Some(feature), false) => format!(
            "no provider for {what} is compiled into this build; rebuild dp-manager with the \
             cargo feature `{feature}` (e.g. `cargo build --features {feature}`)"
        ),
        (Some(feature), true) => format!(
            "the cargo feature `{feature}` is enabled but no registered provider supports \
             {what}; register one with ManagerBuilder::provider"
        ),
        (None, _) => format!("no provider of dp-models can run {what}"),
    }
}

/// The cargo feature whose provider serves a runtime/engine pair, as
/// [`dp_spec::PROVIDER_MATRIX`] states it; `None` for a pair no provider can run.
pub(crate) fn provider_feature(runtime: Runtime, engine: Engine) -> Option<&'static str> {
    dp_spec::provider_route(runtime, engine).map(|route| route.cargo_feature)
}

/// Whether the cargo feature named by [`provider_feature`] is on in this build.
pub(crate) fn feature_enabled(feature: &str) -> bool {
    const ENABLED: [(&str, bool); 3] = [
        ("candle", cfg!(feature = "candle")),
        ("onnx", cfg!(feature = "onnx")),
        ("triton", cfg!(feature = "triton")),
    ];
    ENABLED.iter().any(|&(name, on)| on && name == feature)
}

impl ManagerError {
    /// The stable code this error is reported under.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::ModelNotFound { .. } => ErrorCode::ModelNotFound,
            Self::RoleUnresolved { .. } => ErrorCode::RoleUnresolved,
            Self::CudaUnavailable { .. } | Self::CudaDeviceMissing { .. } => {
                ErrorCode::DeviceUnavailable
            }
            Self::NoProvider { .. } | Self::LoadAbandoned { .. } => ErrorCode::ProviderUnavailable,
            // A refused thread is the OS running out of a resource (threads, memory).
            Self::InsufficientMemory { .. } | Self::ReaperSpawn { .. } => {
                ErrorCode::InsufficientMemory
            }
            Self::InsufficientGpuMemory { .. } => ErrorCode::InsufficientGpuMemory,
            Self::GenerationOverBudget { device, .. } => match device {
                ResolvedDevice::Cpu => ErrorCode::InsufficientMemory,
                ResolvedDevice::Cuda(_) => ErrorCode::InsufficientGpuMemory,
            },
            Self::CatalogTooLarge { .. } => ErrorCode::InvalidSpec,
            Self::NetworkForbidden { .. } => ErrorCode::NetworkForbidden,
            Self::BadTask { .. } => ErrorCode::InvalidInput,
            Self::ArtifactsMissing { .. } => ErrorCode::WeightsMissing,
            Self::ArtifactsRefused { .. }
            | Self::DigestMismatch { .. }
            | Self::ArtifactsDigestMismatch { .. } => ErrorCode::WeightsDigestMismatch,
            Self::Drift { .. } => ErrorCode::VersionDrift,
            Self::Verification(err) | Self::Provider(err) => err.error_code,
        }
    }
}

impl From<ManagerError> for ModelError {
    fn from(err: ManagerError) -> Self {
        let code = err.code();
        let message = err.to_string();
        match err {
            ManagerError::Provider(inner) | ManagerError::Verification(inner) => inner,
            ManagerError::ArtifactsMissing {
                model,
                models_root,
                missing,
            } => {
                // `file`, as the providers' `weights_missing` errors have it: the first
                // absent path, in full.
                let file = missing.first().map(|m| format!("{models_root}/{m}"));
                Self::new(code, message)
                    .with_detail("model", model)
                    .with_detail("file", file)
                    .with_detail("models_root", models_root)
                    .with_detail("missing", missing)
            }
            ManagerError::ArtifactsRefused { model, problems } => Self::new(code, message)
                .with_detail("model", model)
                .with_detail("refused", problems),
            ManagerError::DigestMismatch {
                model,
                artifact,
                expected,
                actual,
            } => Self::new(code, message)
                .with_detail("model", model)
                .with_detail("artifact", artifact)
                .with_detail("expected", expected)
                .with_detail("actual", actual),
            ManagerError::ArtifactsDigestMismatch {
                model,
                expected,
                actual,
            } => Self::new(code, message)
                .with_detail("model", model)
                .with_detail("expected", expected)
                .with_detail("actual", actual),
            ManagerError::Drift {
                model,
                drift,
                conflicts,
            } => Self::new(code, message)
                .with_detail("model", model)
                .with_detail("changed", drift.changed)
                .with_detail("added", drift.added)
                .with_detail("removed", drift.removed)
                .with_detail("lock_conflicts", conflicts),
            ManagerError::ModelNotFound { name } => {
                Self::new(code, message).with_detail("model", name)
            }
            ManagerError::RoleUnresolved {
                role,
                capabilities,
                lacking,
            } => {
                let candidates: Vec<serde_json::Value> = lacking
                    .into_iter()
                    .map(|(name, why)| serde_json::json!({ "model": name, "lacking": why }))
                    .collect();
                Self::new(code, message)
                    .with_detail("role", role)
                    .with_detail("capabilities", capabilities)
                    .with_detail("candidates", candidates)
            }
            ManagerError::CudaUnavailable { model, policy, .. } => Self::new(code, message)
                .with_detail("model", model)
                .with_detail("device_policy", policy.to_string()),
            ManagerError::CudaDeviceMissing {
                model,
                index,
                count,
            } => Self::new(code, message)
                .with_detail("model", model)
                .with_detail("device_policy", format!("cuda:{index}"))
                .with_detail("cuda_devices", count),
            ManagerError::NoProvider {
                model,
                runtime,
                engine,
                feature,
                ..
            } => Self::new(code, message)
                .with_detail("model", model)
                .with_detail("runtime", runtime.as_str())
                .with_detail("engine", engine.as_str())
                .with_detail("cargo_feature", feature),
            ManagerError::InsufficientMemory {
                model,
                need,
                budget,
                in_use,
                unit,
                ..
            } => Self::new(code, message)
                .with_detail("model", model)
                .with_detail(
                    "resource",
                    if unit.starts_with("bytes") {
                        "ram"
                    } else {
                        "slots"
                    },
                )
                .with_detail("need", need)
                .with_detail("budget", budget)
                .with_detail("in_use", in_use),
            ManagerError::GenerationOverBudget {
                model,
                device,
                need,
                budget,
                in_use,
                ..
            } => Self::new(code, message)
                .with_detail("model", model)
                .with_detail(
                    "resource",
                    if device == ResolvedDevice::Cpu {
                        "ram"
                    } else {
                        "vram"
                    },
                )
                .with_detail("need", need)
                .with_detail("budget", budget)
                .with_detail("in_use", in_use)
                .with_detail("reason", "kv_cache_over_budget"),
            ManagerError::InsufficientGpuMemory {
                model,
                device,
                need,
                budget,
                in_use,
            } => Self::new(code, message)
                .with_detail("model", model)
                .with_detail("device", device.to_string())
                .with_detail("need", need)
                .with_detail("budget", budget)
                .with_detail("in_use", in_use),
            ManagerError::LoadAbandoned { model, provider } => Self::new(code, message)
                .with_detail("model", model)
                .with_detail("provider", provider),
            ManagerError::NetworkForbidden { model, .. } => {
                Self::new(code, message).with_detail("model", model)
            }
            ManagerError::CatalogTooLarge { .. }
            | ManagerError::ReaperSpawn { .. }
            | ManagerError::BadTask { .. } => Self::new(code, message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_unresolved_lists_candidates() {
        let err = ManagerError::RoleUnresolved {
            role: "text_embedding".into(),
            capabilities: vec!["text".into(), "vision".into()],
            lacking: vec![
                ("m1".into(), "missing vision".into()),
                ("m2".into(), "deprecated".into()),
            ],
        };
        let model: ModelError = err.into();
        assert_eq!(model.error_code, ErrorCode::RoleUnresolved);
        assert_eq!(
            model.message,
            "no non-deprecated model has role \"text_embedding\" with capabilities [text, vision]; \
             candidates lacking: m1 (missing vision), m2 (deprecated)"
        );
        assert_eq!(model.details["candidates"][1]["model"], "m2");
    }

    #[test]
    fn no_provider_names_the_feature() {
        let err = ManagerError::NoProvider {
            model: "m".into(),
            runtime: Runtime::Inprocess,
            engine: Engine::Onnx,
            feature: provider_feature(Runtime::Inprocess, Engine::Onnx).map(str::to_owned),
            feature_enabled: false,
        };
        let model: ModelError = err.into();
        assert_eq!(model.error_code, ErrorCode::ProviderUnavailable);
        assert!(
            model.message.contains("cargo feature `onnx`"),
            "{}",
            model.message
        );
        assert_eq!(model.details["cargo_feature"], "onnx");
        assert_eq!(
            provider_feature(Runtime::Triton, Engine::Tensorrt),
            Some("triton")
        );
    }

    #[test]
    fn provider_errors_pass_through() {
        let original = ModelError::new(ErrorCode::WeightsMissing, "gone").with_detail("f", "x");
        let back: ModelError = ManagerError::Provider(original.clone()).into();
        assert_eq!(back, original);
    }
}
