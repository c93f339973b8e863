//! `dp-provider-onnx` implements [`dp_spec::ModelProvider`] for `runtime: inprocess`,
//! `engine: onnx` on ONNX Runtime, loaded dynamically from a local library (never
//! downloaded): it finds the library, builds sessions from the model's verified bytes (the
//! `.onnx` files and their external data, never opened again by path) with the spec's
//! settings and device, checks the model's real tensors against the spec, and runs named
//! tensors.
//!
//! A model may have several graphs: every `.onnx` file of `local_artifacts` is a session
//! of its own (a CLIP model is `vision_model.onnx` and `text_model.onnx`). An inference
//! runs each graph whose inputs are all given and merges their outputs (a name two graphs
//! return, like CLIP's `logit_scale`, is taken from the first in `local_artifacts` order).
//!
//! It may depend on `dp-spec` only among dp-models crates; never on the manager or another
//! provider. Tokenization, pooling and normalization are the manager's presets, not here.
//!
//! The library is found, in order, at [`OnnxProviderConfig::library_path`], at
//! `ORT_DYLIB_PATH`, or at `<models root>/../onnxruntime/libonnxruntime.so` (where
//! `cargo xtask setup` puts it); when absent, loading fails with `provider_unavailable`.

mod error;
mod external_data;
mod library;
mod model;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dp_spec::{
    LoadRequest, LoadedModel, ModelError, ModelProvider, ModelSpec, NamedTensors,
    OnnxGraphOptimization, ProviderHealth, ResolvedDevice, VerifiedArtifacts, VerifiedFile,
    WorkerSlot, provider_serves,
};
use ort::ep::{self, ExecutionProvider};
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

pub use error::OnnxError;
pub use library::{ORT_DYLIB_PATH, SETUP_LIBRARY, resolve_library_path};

use crate::model::OnnxModel;

/// Settings of the ONNX Runtime provider.
///
/// ```
/// use dp_provider_onnx::{OnnxProvider, OnnxProviderConfig};
/// use dp_spec::ModelProvider;
///
/// let provider = OnnxProvider::new(OnnxProviderConfig::default());
/// assert_eq!(provider.name(), "onnx");
/// ```
#[derive(Debug, Clone, Default)]
pub struct OnnxProviderConfig {
    /// Path of `libonnxruntime.so`; `None` falls back to `ORT_DYLIB_PATH`, then to the setup
    /// folder next to the models root.
    pub library_path: Option<PathBuf>,
}

/// The in-process ONNX Runtime provider (`runtime: inprocess`, `engine: onnx`).
#[derive(Debug, Clone, Default)]
pub struct OnnxProvider {
    config: OnnxProviderConfig,
}

impl OnnxProvider {
    /// A provider with the given settings. Nothing is loaded until the first model is.
    #[must_use]
    pub const fn new(config: OnnxProviderConfig) -> Self {
        Self { config }
    }

    /// The library this provider would load for models under `models_root`, and the rule
    /// that chose it.
    #[must_use]
    pub fn library_path(&self, models_root: &Path) -> (PathBuf, &'static str) {
        resolve_library_path(self.config.library_path.as_deref(), models_root)
    }

    /// The graphs of a spec: its `.onnx` artifacts (relative to the models root), in
    /// `local_artifacts` order, each once.
    fn model_artifacts(spec: &ModelSpec) -> Result<Vec<&str>, OnnxError> {
        let mut graphs: Vec<&str> = Vec::new();
        for artifact in &spec.local_artifacts {
            let rel = artifact.trim_start_matches("./");
            if Path::new(rel).extension().is_some_and(|e| e == "onnx") && !graphs.contains(&rel) {
                graphs.push(rel);
            }
        }
        if graphs.is_empty() {
            return Err(OnnxError::InvalidSpec(format!(
                "model '{}': local_artifacts lists no .onnx file; list the model file first",
                spec.model_name
            )));
        }
        Ok(graphs)
    }

    fn load_model(&self, request: &LoadRequest<'_>) -> Result<OnnxModel, OnnxError> {
        let spec = request.spec;
        let files = Self::model_files(spec, request.artifacts)?;
        // Every graph's external data is checked before the library is even loaded.
        let mut graphs = Vec::with_capacity(files.len());
        for (rel, file) in files {
            let external = external_data::external_files(rel, file.bytes(), request.artifacts)?;
            graphs.push(GraphSource {
                path: request.artifacts.display_path(rel),
                model: file.clone(),
                external,
            });
        }
        let (library, source_of_path) = self.library_path(request.models_root);
        let environment = library::environment(&library, source_of_path)?;
        let on_cpu = request.device == ResolvedDevice::Cpu;
        let recipe = SessionRecipe {
            environment,
            spec: spec.clone(),
            device: request.device,
            graphs,
        };
        let sessions = recipe.sessions(None)?;
        OnnxModel::new(
            &spec.model_name,
            sessions,
            &spec.input_schema,
            &spec.output_schema,
            on_cpu.then_some(recipe),
        )
    }

    /// The spec's `.onnx` files among the verified artifacts.
    fn model_files<'a>(
        spec: &'a ModelSpec,
        artifacts: &'a VerifiedArtifacts,
    ) -> Result<Vec<(&'a str, &'a VerifiedFile)>, OnnxError> {
        Self::model_artifacts(spec)?
            .into_iter()
            .map(|rel| {
                let file = artifacts.get(rel).ok_or_else(|| {
                    OnnxError::WeightsMissing(format!(
                        "model '{}': {} is missing; place the model's files under the models \
                         root ({})",
                        spec.model_name,
                        artifacts.display_path(rel).display(),
                        artifacts.root().display()
                    ))
                })?;
                Ok((rel, file))
            })
            .collect()
    }

    fn validate(spec: &ModelSpec, artifacts: &VerifiedArtifacts) -> Result<(), OnnxError> {
        for (rel, model) in Self::model_files(spec, artifacts)? {
            external_data::external_files(rel, model.bytes(), artifacts)?;
        }
        Ok(())
    }
}

/// One graph of a model, as its sessions are built from it.
struct GraphSource {
    /// Its file, for messages.
    path: PathBuf,
    /// The verified `.onnx` file.
    model: VerifiedFile,
    /// Its external-data files, as verified (mapped, not copied: each session gets its
    /// own copy while it is built).
    external: Vec<external_data::ExternalFile>,
}

/// Everything a model's sessions are built from, kept by a CPU model so that each of its
/// workers can build sessions of its own later (with its share of the threads).
pub(crate) struct SessionRecipe {
    environment: &'static ort::environment::Environment,
    spec: ModelSpec,
    device: ResolvedDevice,
    graphs: Vec<GraphSource>,
}

impl SessionRecipe {
    /// Intra-op threads of the model's first sessions: the spec's, else one per available
    /// core (what ONNX Runtime picks, near enough, when left to itself).
    pub(crate) fn threads(&self) -> usize {
        self.spec
            .onnx
            .as_ref()
            .and_then(|o| o.intra_op_threads)
            .map(usize::from)
            .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
            .unwrap_or(1)
    }

    /// One session per graph, with the spec's settings and device; `intra_threads`
    /// replaces the spec's `intra_op_threads`.
    pub(crate) fn sessions(
        &self,
        intra_threads: Option<usize>,
    ) -> Result<Vec<(PathBuf, Session)>, OnnxError> {
        self.graphs
            .iter()
            .map(|graph| Ok((graph.path.clone(), self.session(graph, intra_threads)?)))
            .collect()
    }

    fn session(
        &self,
        graph: &GraphSource,
        intra_threads: Option<usize>,
    ) -> Result<Session, OnnxError> {
        let spec = &self.spec;
        let runtime = |e: String| OnnxError::Runtime(format!("model '{}': {e}", spec.model_name));
        let settings = spec.onnx.clone().unwrap_or_default();
        let mut builder = Session::builder(self.environment)
            .map_err(|e| runtime(e.to_string()))?
            .with_optimization_level(optimization_level(settings.graph_optimization_level))
            .map_err(|e| runtime(e.to_string()))?;
        if let Some(threads) = intra_threads.or_else(|| settings.intra_op_threads.map(usize::from))
        {
            builder = builder
                .with_intra_threads(threads)
                .map_err(|e| runtime(e.to_string()))?;
        }
        let providers = execution_providers(spec, self.device)?;
        if !providers.is_empty() {
            builder = builder
                .with_execution_providers(providers)
                .map_err(|e| runtime(e.to_string()))?;
        }
        // External data from the verified bytes too: the runtime opens no file of the model.
        for file in &graph.external {
            builder = builder
                .with_external_initializer_file_in_memory(&file.location, Arc::from(&*file.bytes))
                .map_err(|e| runtime(e.to_string()))?;
        }
        // From the verified bytes, never from the path: a file swapped since it was
        // verified is never what the session is built from.
        builder
            .commit_from_memory(graph.model.bytes())
            .map_err(|e| session_error(&spec.model_name, &graph.path, &e))
    }
}

/// Why ONNX Runtime could not create a session from a model file. The library is loaded
/// and the file was read, so a malformed file or graph (ONNX Runtime reports most of those
/// as a generic failure: a missing operator set, an unknown node input…) is the file's
/// fault, `invalid_spec` like any other broken artifact; only failures of the runtime
/// itself (execution provider, engine, unimplemented operator) stay `provider_unavailable`.
fn session_error(model: &str, path: &Path, err: &ort::Error) -> OnnxError {
    use ort::ErrorCode as Ort;
    match err.code() {
        Ort::GenericFailure
        | Ort::InvalidArgument
        | Ort::InvalidProtobuf
        | Ort::InvalidGraph
        | Ort::NoModel
        | Ort::NoSuchFile
        | Ort::NotFound => OnnxError::InvalidSpec(format!(
            "model '{model}': ONNX Runtime cannot load {}: {}; replace it with the file the \
             spec pins",
            path.display(),
            err.message()
        )),
        _ => OnnxError::Runtime(format!("model '{model}': {err}")),
    }
}

const fn optimization_level(level: OnnxGraphOptimization) -> GraphOptimizationLevel {
    match level {
        OnnxGraphOptimization::Disable => GraphOptimizationLevel::Disable,
        OnnxGraphOptimization::Basic => GraphOptimizationLevel::Level1,
        OnnxGraphOptimization::Extended => GraphOptimizationLevel::Level2,
        OnnxGraphOptimization::Layout => GraphOptimizationLevel::Level3,
        OnnxGraphOptimization::All => GraphOptimizationLevel::All,
    }
}

/// The execution providers for the device: none (ONNX Runtime's CPU) for the CPU;
/// TensorRT (when offered) then CUDA for a GPU. A GPU the library cannot drive is an error,
/// whatever the policy: the manager sends `auto` to a GPU only when
/// [`ModelProvider::runs_on_cuda`] said this library can, and a session that quietly ran on
/// the CPU would be recorded as a GPU run.
fn execution_providers(
    spec: &ModelSpec,
    device: ResolvedDevice,
) -> Result<Vec<ep::ExecutionProviderDispatch>, OnnxError> {
    let ResolvedDevice::Cuda(index) = device else {
        return Ok(Vec::new());
    };
    if !ep::CUDA::is_available().unwrap_or(false) {
        return Err(OnnxError::DeviceUnavailable(format!(
            "model '{}' asks for {device} (device_policy {}) but the loaded ONNX Runtime \
             library offers no CUDAExecutionProvider; install the onnxruntime-gpu library (and \
             point ORT_DYLIB_PATH at it) or set device_policy: cpu",
            spec.model_name, spec.device_policy
        )));
    }
    let mut providers = Vec::new();
    if ep::TensorRT::is_available().unwrap_or(false) {
        providers.push(
            ep::TensorRT::default()
                .with_device_id(i32::from(index))
                .build(),
        );
    }
    providers.push(
        ep::CUDA::default()
            .with_device_id(i32::from(index))
            .build()
            .error_on_failure(),
    );
    Ok(providers)
}

/// A loaded ONNX model, as the manager sees it.
struct Loaded(OnnxModel);

impl LoadedModel for Loaded {
    fn infer(&self, inputs: &NamedTensors) -> Result<NamedTensors, ModelError> {
        self.0.infer(inputs).map_err(ModelError::from)
    }

    fn infer_on(
        &self,
        inputs: &NamedTensors,
        worker: WorkerSlot,
    ) -> Result<NamedTensors, ModelError> {
        self.0.infer_on(inputs, worker).map_err(ModelError::from)
    }
}

impl ModelProvider for OnnxProvider {
    fn name(&self) -> &'static str {
        "onnx"
    }

    fn supports(&self, spec: &ModelSpec) -> bool {
        provider_serves(self.name(), spec)
    }

    fn validate_local_artifacts(
        &self,
        spec: &ModelSpec,
        artifacts: &VerifiedArtifacts,
    ) -> Result<(), ModelError> {
        Self::validate(spec, artifacts).map_err(ModelError::from)
    }

    fn load(&self, request: &LoadRequest<'_>) -> Result<Box<dyn LoadedModel>, ModelError> {
        let model = self.load_model(request)?;
        Ok(Box::new(Loaded(model)))
    }

    fn runs_on_cuda(&self, _spec: &ModelSpec, models_root: &Path) -> bool {
        // Loads the library (once per process) to ask it: only `auto` on a GPU machine does.
        let (path, source_of_path) = self.library_path(models_root);
        library::environment(&path, source_of_path).is_ok()
            && ep::CUDA::is_available().unwrap_or(false)
    }

    fn health(&self, _spec: &ModelSpec, models_root: &Path) -> ProviderHealth {
        let (path, source_of_path) = self.library_path(models_root);
        if path.is_file() {
            ProviderHealth::runtime_found()
        } else {
            ProviderHealth::runtime_missing(
                OnnxError::LibraryMissing {
                    path,
                    source_of_path,
                }
                .to_string(),
            )
        }
    }
}
