//! `dp_models.ModelManager` (the Rust [`dp_manager::ModelManager`], built like the `dp`
//! command line builds it) and `TaskResult`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dp_digest::LockFile;
use dp_manager::{
    BatchingConfig, EmbeddingCacheConfig, TaskData, TaskOutput, TaskRequest, TaskType, integrity,
};
use dp_spec::{ModelError, ModelProvider};
use pyo3::IntoPyObjectExt as _;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList, PyString, PyTuple};

use crate::convert::{
    audio, f32_matrix, f32_vector, images, json_to_py, tensors_from_py, tensors_to_py, texts, to_py,
};
use crate::error::Error;
use crate::settings::{Settings, verify_cache};

/// Every task type, as `task_type` takes it.
const TASK_TYPES: [TaskType; 7] = [
    TaskType::Embedding,
    TaskType::ImageEmbedding,
    TaskType::ZeroShotClassification,
    TaskType::Rerank,
    TaskType::Infer,
    TaskType::TextGeneration,
    TaskType::Transcribe,
];

/// The task type names `ModelManager.task` knows.
#[pyfunction]
pub(crate) fn task_types() -> Vec<&'static str> {
    TASK_TYPES.iter().map(|t| t.as_str()).collect()
}

/// Every provider: candle, ONNX Runtime (its library from `ORT_DYLIB_PATH`, else
/// `<models root>/../onnxruntime/libonnxruntime.so`) and Triton, with their default
/// configurations, in the order `dp` tries them.
fn providers() -> Vec<Arc<dyn ModelProvider>> {
    use dp_manager::providers::{candle, onnx, triton};
    vec![
        Arc::new(candle::CandleProvider::new()),
        Arc::new(onnx::OnnxProvider::new(onnx::OnnxProviderConfig::default())),
        Arc::new(triton::TritonProvider::new(
            triton::TritonProviderConfig::default(),
        )),
    ]
}

/// Seconds (a Python number) as a duration; negative, NaN or infinite values are refused.
fn seconds(value: Option<f64>, what: &str) -> Result<Option<Duration>, Error> {
    value
        .map(|secs| {
            Duration::try_from_secs_f64(secs).map_err(|_| {
                Error::invalid(format!(
                    "{what} must be a non-negative number of seconds, got {secs}"
                ))
            })
        })
        .transpose()
}

/// The embedding cache configuration: `None`/`True` the default (100 000 vectors, 1 h),
/// `False` off, or a dict with `max_entries` (int) and `ttl_s` (seconds, or `None` for no
/// expiry).
fn embedding_cache_config(value: Option<&Bound<'_, PyAny>>) -> Result<EmbeddingCacheConfig, Error> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(EmbeddingCacheConfig::default());
    };
    if let Ok(flag) = value.cast::<PyBool>() {
        return Ok(if flag.is_true() {
            EmbeddingCacheConfig::default()
        } else {
            EmbeddingCacheConfig::disabled()
        });
    }
    let dict = value.cast::<PyDict>().map_err(|_| {
        Error::invalid("embedding_cache must be None, a bool, or a dict {max_entries, ttl_s}")
    })?;
    let mut config = EmbeddingCacheConfig::default();
    for (key, item) in dict.iter() {
        let key: String = key.extract()?;
        match key.as_str() {
            "max_entries" => config.max_entries = item.extract()?,
            "ttl_s" => config.ttl = seconds(item.extract()?, "embedding_cache ttl_s")?,
            "enabled" => config.enabled = item.extract()?,
            other => {
                return Err(Error::invalid(format!(
                    "embedding_cache takes max_entries, ttl_s and enabled, not {other:?}"
                )));
            }
        }
    }
    Ok(config)
}

/// The batching of concurrent embedding requests: `None`/`True` the default (on, no added
/// delay), `False` off, or a dict with `enabled` (bool), `max_delay_s` (seconds a batch
/// waits for more texts) and `max_queued_texts` (past it a request is refused with
/// `Overloaded`).
fn batching_config(value: Option<&Bound<'_, PyAny>>) -> Result<BatchingConfig, Error> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(BatchingConfig::default());
    };
    if let Ok(flag) = value.cast::<PyBool>() {
        return Ok(if flag.is_true() {
            BatchingConfig::default()
        } else {
            BatchingConfig::disabled()
        });
    }
    let dict = value.cast::<PyDict>().map_err(|_| {
        Error::invalid(
            "batching must be None, a bool, or a dict {enabled, max_delay_s, max_queued_texts}",
        )
    })?;
    let mut config = BatchingConfig::default();
    for (key, item) in dict.iter() {
        let key: String = key.extract()?;
        match key.as_str() {
            "enabled" => config.enabled = item.extract()?,
            "max_delay_s" => {
                config.max_delay =
                    seconds(Some(item.extract()?), "batching max_delay_s")?.unwrap_or_default();
            }
            "max_queued_texts" => config.max_queued_texts = item.extract()?,
            other => {
                return Err(Error::invalid(format!(
                    "batching takes enabled, max_delay_s and max_queued_texts, not {other:?}"
                )));
            }
        }
    }
    Ok(config)
}

/// The model manager: resolves models by name, alias or role, loads each once (verifying
/// every file against its pins), keeps them within budgets and releases idle ones after
/// their keep-alive, and runs tasks.
///
/// Built as `dp` builds it: the catalog (`catalog`, else `$DP_CATALOG`, else
/// `specs/catalog`) with `profiles` then `overrides` layered on it, the models root
/// (`models_root`, else `$DP_MODELS_ROOT`, else `.dp-assets/models`), the catalog's lock
/// file (`<catalog>.lock`), the verification cache (`verify_cache`, else
/// `$DP_VERIFY_CACHE`, else `~/.cache/dp-models/verify-cache.json`), and the candle, ONNX
/// Runtime and Triton providers. Keyword-only: `batching` (see [`batching_config`]),
/// budgets `max_loaded` instances, `ram_budget_bytes`, `vram_budget_bytes` (none by
/// default); `cuda_available` says whether
/// `device_policy: auto|cuda` may place models on CUDA (default `False`, as `dp`). Safe to
/// share between threads; the GIL is released while models load and run.
/// A caller's way to give up on a `task` from another thread (its `cancel=` argument):
/// cancelled, a request still queued for a batch leaves the queue with `Cancelled`.
/// `ModelManager.atask` makes one per call and cancels it when the awaiting task is.
#[pyclass(module = "dp_models._native", name = "CancelToken", frozen)]
#[derive(Default)]
pub(crate) struct CancelToken(dp_manager::CancelToken);

#[pymethods]
impl CancelToken {
    /// A token not cancelled yet.
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// Gives the requests waiting on the token up. Idempotent.
    fn cancel(&self) {
        self.0.cancel();
    }

    /// Whether `cancel` was called.
    #[getter]
    fn cancelled(&self) -> bool {
        self.0.is_cancelled()
    }
}

#[pyclass(module = "dp_models._native", name = "ModelManager", subclass, frozen)]
pub(crate) struct ModelManager {
    inner: dp_manager::ModelManager,
}

#[pymethods]
impl ModelManager {
    #[new]
    #[pyo3(signature = (catalog=None, models_root=None, profiles=Vec::new(), overrides=None, embedding_cache=None, keep_alive=None, *, verify_cache=None, batching=None, max_loaded=None, ram_budget_bytes=None, vram_budget_bytes=None, cuda_available=false))]
    #[allow(
        clippy::too_many_arguments,
        reason = "the Python constructor's keyword arguments"
    )]
    fn new(
        py: Python<'_>,
        catalog: Option<PathBuf>,
        models_root: Option<PathBuf>,
        profiles: Vec<PathBuf>,
        overrides: Option<&Bound<'_, PyAny>>,
        embedding_cache: Option<&Bound<'_, PyAny>>,
        keep_alive: Option<f64>,
        verify_cache: Option<PathBuf>,
        batching: Option<&Bound<'_, PyAny>>,
        max_loaded: Option<usize>,
        ram_budget_bytes: Option<u64>,
        vram_budget_bytes: Option<u64>,
        cuda_available: bool,
    ) -> Result<Self, Error> {
        let settings = Settings::from_py(catalog, models_root, profiles, overrides)?;
        let cache_config = embedding_cache_config(embedding_cache)?;
        let batching = batching_config(batching)?;
        let keep_alive = seconds(keep_alive, "keep_alive")?;
        let verify_cache_path = verify_cache_path(verify_cache, &settings)?;
        let inner = py.detach(|| -> Result<_, Error> {
            let resolved = settings.load_resolved()?;
            let lock_path = integrity::default_lock_path(&settings.catalog);
            let lock = LockFile::read(&lock_path).map_err(|err| {
                ModelError::from(err).with_detail("lock_file", lock_path.display().to_string())
            })?;
            let mut builder =
                dp_manager::ModelManager::builder(resolved.catalog, settings.models_root)
                    .providers(providers())
                    .lock_file(lock)
                    .embedding_cache(cache_config)
                    .batching(batching)
                    .max_loaded(max_loaded)
                    .ram_budget_bytes(ram_budget_bytes)
                    .vram_budget_bytes(vram_budget_bytes)
                    .cuda_available(cuda_available);
            if let Some(keep_alive) = keep_alive {
                builder = builder.default_keep_alive(keep_alive);
            }
            if let Some(path) = verify_cache_path {
                builder = builder.verification_cache(path);
            }
            Ok(builder.build()?)
        })?;
        Ok(Self { inner })
    }

    /// Runs a task and returns a `TaskResult`.
    ///
    /// `task_type` and `task_data`: `"embedding"` a list of str (options `prompt_name`,
    /// `num_workers`);
    /// `"image_embedding"` a list of encoded images (bytes); `"zero_shot_classification"`
    /// `{"images": [bytes], "labels": [str]}`; `"rerank"` `{"query": str, "documents":
    /// [str]}` (option `top_k`); `"text_generation"` a list of str (options `max_new_tokens`,
    /// `num_beams`…); `"transcribe"` a list of encoded audio files (bytes; options
    /// `language`, `task`, `max_new_tokens`, `num_beams`…); `"infer"` a dict of input name →
    /// NumPy array. `None` data
    /// only preloads the model. `keep_alive` (seconds) is how long the model stays loaded
    /// once idle. `cancel`, a `CancelToken` another thread may cancel, gives the request up
    /// (`Cancelled`) while it waits. Raises a `ModelError` subclass.
    #[pyo3(signature = (task_data, task_type, model_name, keep_alive=None, *, cancel=None, **options))]
    #[allow(
        clippy::too_many_arguments,
        reason = "the Python signature: positional data, task and model, then keywords"
    )]
    fn task(
        &self,
        py: Python<'_>,
        task_data: &Bound<'_, PyAny>,
        task_type: &str,
        model_name: String,
        keep_alive: Option<f64>,
        cancel: Option<PyRef<'_, CancelToken>>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> Result<TaskResult, Error> {
        let task_type = parse_task_type(task_type)?;
        let data = task_data_from_py(task_type, task_data).map_err(|err| match err {
            Error::Model(err) => Error::Model(with_model(err, &model_name)),
            other @ Error::Python(_) => other,
        })?;
        let mut request = TaskRequest::new(task_type, model_name.clone(), data);
        request.keep_alive = seconds(keep_alive, "keep_alive")?;
        request.cancel = cancel.map(|token| token.0.clone());
        if let Some(options) = options {
            let mut parsed = BTreeMap::new();
            for (key, value) in options.iter() {
                parsed.insert(
                    key.extract::<String>()?,
                    crate::convert::py_to_json(&value)?,
                );
            }
            request.options = parsed;
        }
        let response = py
            .detach(|| self.inner.task(request))
            .map_err(|err| with_model(err, &model_name))?;
        TaskResult::from_response(py, response)
    }

    /// Loads `model` (a name or alias) now, verifying its files, without running it; it
    /// stays loaded for `keep_alive` seconds once idle (default: the manager's).
    #[pyo3(signature = (model, keep_alive=None))]
    fn preload(&self, py: Python<'_>, model: String, keep_alive: Option<f64>) -> Result<(), Error> {
        let keep_alive = seconds(keep_alive, "keep_alive")?;
        py.detach(|| self.inner.preload(&model, keep_alive))
            .map_err(|err| Error::Model(with_model(err, &model)))
    }

    /// Forgets a loaded model now (tasks running on it finish). Returns whether it was
    /// loaded.
    fn release_model(&self, py: Python<'_>, model: String) -> bool {
        py.detach(|| self.inner.release(&model))
    }

    /// What is loaded, who holds it, the counters and the embedding cache's figures, as a
    /// dict.
    fn get_model_status<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyAny>, Error> {
        let status = py.detach(|| self.inner.status());
        to_py(py, &status)
    }

    /// Empties the embedding cache (in memory, and on disk when the manager has a
    /// persistent cache): every text is embedded again.
    fn clear_embedding_cache(&self, py: Python<'_>) -> Result<(), Error> {
        py.detach(|| self.inner.clear_embedding_cache())
            .map_err(Error::Model)
    }

    /// The model a name, alias or role resolves to, as `dp resolve --json` prints it:
    /// `{"request", "reason" (role only), "models_used": [record]}`. With `role`, `name` is
    /// the preferred model and every capability in `capabilities` is required. The record
    /// signs the model's files, so they are verified (without loading the model).
    #[pyo3(signature = (name=None, *, role=None, capabilities=Vec::new()))]
    fn resolve<'py>(
        &self,
        py: Python<'py>,
        name: Option<String>,
        role: Option<String>,
        capabilities: Vec<String>,
    ) -> Result<Bound<'py, PyAny>, Error> {
        let doc = py.detach(|| -> Result<serde_json::Value, Error> {
            let (request, name, reason) = match (&role, &name) {
                (Some(role), preferred) => {
                    let caps: Vec<&str> = capabilities.iter().map(String::as_str).collect();
                    let resolution = self.inner.resolve_role(role, &caps, preferred.as_deref())?;
                    (
                        format!("role:{role}"),
                        resolution.entry.spec.model_name.clone(),
                        Some(resolution.reason.as_str()),
                    )
                }
                (None, Some(name)) => (name.clone(), name.clone(), None),
                (None, None) => {
                    return Err(Error::invalid(
                        "give a model name or role= (see help(ModelManager.resolve))",
                    ));
                }
            };
            self.inner.resolve(&name)?;
            let entry = self.inner.models_used(&name)?;
            let mut doc = serde_json::Map::new();
            doc.insert("request".into(), request.into());
            if let Some(reason) = reason {
                doc.insert("reason".into(), reason.into());
            }
            doc.insert(
                "models_used".into(),
                serde_json::to_value([&entry]).unwrap_or(serde_json::Value::Null),
            );
            Ok(serde_json::Value::Object(doc))
        })?;
        Ok(json_to_py(py, &doc)?)
    }

    /// Whether each model could serve now, without loading any (`dp health --json`): a
    /// dict with `models` and the `tier0` summary.
    fn health<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyAny>, Error> {
        let report = py.detach(|| self.inner.health());
        to_py(py, &report)
    }

    fn __repr__(&self) -> String {
        format!(
            "ModelManager(models_root={:?}, models={})",
            self.inner.models_root().display().to_string(),
            self.inner.catalog().len()
        )
    }
}

/// The verification cache of a manager (see [`verify_cache`]).
fn verify_cache_path(
    explicit: Option<PathBuf>,
    settings: &Settings,
) -> Result<Option<PathBuf>, Error> {
    verify_cache(explicit, &settings.models_root)
}

/// Adds `model` to an error's details when it names none, so that `ModelError.model` is
/// always the model asked for.
fn with_model(err: ModelError, model: &str) -> ModelError {
    if err.details.get("model").is_some() {
        err
    } else {
        err.with_detail("model", model)
    }
}

/// The task type of its snake_case name.
fn parse_task_type(name: &str) -> Result<TaskType, Error> {
    TASK_TYPES
        .iter()
        .copied()
        .find(|t| t.as_str() == name)
        .ok_or_else(|| {
            Error::invalid(format!(
                "unknown task_type {name:?}; use one of {}",
                task_types().join(", ")
            ))
        })
}

/// A required key of a task's dict data.
fn required<'py>(
    dict: &Bound<'py, PyDict>,
    key: &str,
    task: TaskType,
) -> Result<Bound<'py, PyAny>, Error> {
    dict.get_item(key)?.ok_or_else(|| {
        Error::invalid(format!(
            "a {} task's data needs the key {key:?}",
            task.as_str()
        ))
    })
}

/// The task's data from Python, checked against its type.
fn task_data_from_py(task: TaskType, value: &Bound<'_, PyAny>) -> Result<Option<TaskData>, Error> {
    if value.is_none() {
        return Ok(None);
    }
    let as_dict = || {
        value.cast::<PyDict>().map_err(|_| {
            Error::invalid(format!(
                "a {} task takes a dict as task_data",
                task.as_str()
            ))
        })
    };
    Ok(Some(match task {
        TaskType::Embedding | TaskType::TextGeneration => {
            TaskData::Texts(texts(value, "task_data")?)
        }
        TaskType::ImageEmbedding => TaskData::Images(images(value, "task_data")?),
        TaskType::ZeroShotClassification => {
            let dict = as_dict()?;
            TaskData::ImagesWithLabels {
                images: images(&required(dict, "images", task)?, "task_data['images']")?,
                labels: texts(&required(dict, "labels", task)?, "task_data['labels']")?,
            }
        }
        TaskType::Rerank => {
            let dict = as_dict()?;
            let query = required(dict, "query", task)?;
            let query = query
                .cast::<PyString>()
                .map_err(|_| Error::invalid("task_data['query'] must be a str"))?
                .to_cow()?
                .into_owned();
            TaskData::QueryWithDocuments {
                query,
                documents: texts(
                    &required(dict, "documents", task)?,
                    "task_data['documents']",
                )?,
            }
        }
        TaskType::Infer => TaskData::Tensors(tensors_from_py(value)?),
        TaskType::Transcribe => TaskData::Audio(audio(value, "task_data")?),
        // A task type added to the manager but not yet to the bindings.
        other => {
            return Err(Error::invalid(format!(
                "task type {} is not served by this build of dp_models",
                other.as_str()
            )));
        }
    }))
}

/// The result of `ModelManager.task`: the output in the attribute of its kind (the others
/// are `None`), and what produced it.
#[pyclass(module = "dp_models._native", name = "TaskResult", frozen, get_all)]
pub(crate) struct TaskResult {
    /// The task type asked for.
    task_type: String,
    /// `embedding`, `image_embedding`: a `float32` array, one row per input.
    embeddings: Option<Py<PyAny>>,
    /// `zero_shot_classification`: a `float32` array, one row per image, one column per label.
    probabilities: Option<Py<PyAny>>,
    /// `rerank` without `top_k`: a 1-D `float32` array, one score per document in input order.
    scores: Option<Py<PyAny>>,
    /// `rerank` with `top_k`: a list of `(index, score)`, best first.
    ranking: Option<Py<PyAny>>,
    /// `text_generation`: a list of generated texts, one per input; `transcribe`: the
    /// transcripts' texts.
    texts: Option<Vec<String>>,
    /// `transcribe`: a list of dicts (`text`, `language`, `duration_seconds`,
    /// `chunk_token_ids`), one per audio.
    transcripts: Option<Py<PyAny>>,
    /// `infer`: a dict of output name → NumPy array.
    tensors: Option<Py<PyAny>>,
    /// Presets whose results are the model's own tensors: a list of such dicts, per batch.
    tensor_batches: Option<Py<PyAny>>,
    /// The models used, as dicts (specs/schema/models-used-entry.schema.json).
    models_used: Py<PyAny>,
    /// The canonical model signature.
    model_signature: String,
    /// Whether the request only preloaded the model (no data).
    preloaded: bool,
}

impl TaskResult {
    /// The Python form of a response.
    fn from_response(py: Python<'_>, response: dp_manager::TaskResponse) -> Result<Self, Error> {
        let mut result = Self {
            task_type: response.task_type.as_str().to_owned(),
            embeddings: None,
            probabilities: None,
            scores: None,
            ranking: None,
            texts: None,
            transcripts: None,
            tensors: None,
            tensor_batches: None,
            models_used: to_py(py, &response.models_used)?.unbind(),
            model_signature: response.model_signature,
            preloaded: false,
        };
        match response.output {
            TaskOutput::Preloaded => result.preloaded = true,
            TaskOutput::Embeddings(rows) => {
                result.embeddings = Some(f32_matrix(py, &rows)?.unbind());
            }
            TaskOutput::Probabilities(rows) => {
                result.probabilities = Some(f32_matrix(py, &rows)?.unbind());
            }
            TaskOutput::Scores(scores) => result.scores = Some(f32_vector(py, &scores)?.unbind()),
            TaskOutput::Ranking(ranked) => {
                let list = PyList::empty(py);
                for doc in ranked {
                    list.append(PyTuple::new(
                        py,
                        [
                            doc.index.into_bound_py_any(py)?,
                            doc.score.into_bound_py_any(py)?,
                        ],
                    )?)?;
                }
                result.ranking = Some(list.into_any().unbind());
            }
            TaskOutput::Texts(texts) => result.texts = Some(texts),
            TaskOutput::Transcripts(transcripts) => {
                result.texts = Some(transcripts.iter().map(|t| t.text.clone()).collect());
                result.transcripts = Some(to_py(py, &transcripts)?.unbind());
            }
            TaskOutput::Tensors(tensors) => {
                result.tensors = Some(tensors_to_py(py, &tensors)?.unbind());
            }
            TaskOutput::TensorBatches(batches) => {
                let list = PyList::empty(py);
                for batch in &batches {
                    list.append(tensors_to_py(py, batch)?)?;
                }
                result.tensor_batches = Some(list.into_any().unbind());
            }
        }
        Ok(result)
    }
}

#[pymethods]
impl TaskResult {
    fn __repr__(&self) -> String {
        format!(
            "TaskResult(task_type={:?}, model_signature={:?})",
            self.task_type, self.model_signature
        )
    }
}
