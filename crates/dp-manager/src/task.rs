//! The unified task API: one entry point, [`ModelManager::task`], for what pipeline modules
//! ask of models (embed texts, run tensors, or just preload).

use std::collections::BTreeMap;
use std::time::Duration;

use dp_preset::{AudioInput, ImageInput, PresetInputs, PresetOutput};
use dp_signature::ModelsUsedEntry;
use dp_spec::{ModelError, NamedTensors};
use serde::{Deserialize, Serialize};

use crate::error::ManagerError;
use crate::manager::ModelManager;
use crate::rerank::RankedDocument;
use crate::transcription::{Transcript, TranscriptionOptions};

/// What a task asks the model to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TaskType {
    /// Texts → one vector each (`sentence_embedding`, or a CLIP model's text tower).
    Embedding,
    /// Images → one vector each (`image_clip`).
    ImageEmbedding,
    /// Images and candidate labels → one probability per image and label (`image_clip`).
    ZeroShotClassification,
    /// A query and documents → one relevance score per document (`cross_encoder`).
    Rerank,
    /// Named tensors in, named tensors out, no pre/post-processing.
    Infer,
    /// Texts → one generated text each, through an encoder–decoder (`text_generation`).
    TextGeneration,
    /// Audio → one transcript each (text, language, duration), through Whisper
    /// (`speech_recognition`).
    Transcribe,
}

impl TaskType {
    /// The snake_case name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Embedding => "embedding",
            Self::ImageEmbedding => "image_embedding",
            Self::ZeroShotClassification => "zero_shot_classification",
            Self::Rerank => "rerank",
            Self::Infer => "infer",
            Self::TextGeneration => "text_generation",
            Self::Transcribe => "transcribe",
        }
    }
}

/// The data of a task.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskData {
    /// Texts (for `embedding` and `text_generation`).
    Texts(Vec<String>),
    /// Images (for `image_embedding`).
    Images(Vec<ImageInput>),
    /// Images and the labels to classify them among (for `zero_shot_classification`).
    ImagesWithLabels {
        /// The images.
        images: Vec<ImageInput>,
        /// The candidate labels.
        labels: Vec<String>,
    },
    /// A query and the documents to score against it (for `rerank`).
    QueryWithDocuments {
        /// The query.
        query: String,
        /// The documents, scored in this order.
        documents: Vec<String>,
    },
    /// Named tensors (for `infer`).
    Tensors(NamedTensors),
    /// Audio files or samples (for `transcribe`).
    Audio(Vec<AudioInput>),
}

/// A request to [`ModelManager::task`].
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRequest {
    /// What to do.
    pub task_type: TaskType,
    /// The model, by name or alias.
    pub model: String,
    /// The input; `None` only preloads the model.
    pub data: Option<TaskData>,
    /// How long the model stays loaded once idle (default: the manager's).
    pub keep_alive: Option<Duration>,
    /// Task options: `prompt_name` (a string; `embedding`: the model's named prompt to
    /// prepend, e.g. `query`), `num_workers` (1 to 64; `embedding`: the calls the model's
    /// batching queue runs at once from this request on, in place of the spec's), `top_k` (a positive integer; `rerank`: return the best
    /// `top_k` documents, sorted), and for `text_generation` those of
    /// [`crate::GenerationOptions`] (`max_new_tokens`, `num_beams`…). Any other option, or
    /// one the task type does not take, is refused rather than ignored.
    pub options: BTreeMap<String, serde_json::Value>,
    /// The caller's way to give up (`None`: it waits to the end). Cancelled before the
    /// task's model call starts, the task ends with `cancelled`; an `embedding` task waiting
    /// in its model's batching queue leaves it at once, and nothing is run for it.
    pub cancel: Option<crate::CancelToken>,
}

impl TaskRequest {
    /// A request with no keep-alive and no options.
    #[must_use]
    pub fn new(task_type: TaskType, model: impl Into<String>, data: Option<TaskData>) -> Self {
        Self {
            task_type,
            model: model.into(),
            data,
            keep_alive: None,
            options: BTreeMap::new(),
            cancel: None,
        }
    }
}

/// What a task produced.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutput {
    /// The model is loaded (a request without data).
    Preloaded,
    /// One vector per text or image, in input order.
    Embeddings(Vec<Vec<f32>>),
    /// One row per image, one probability per label (in the labels' order).
    Probabilities(Vec<Vec<f32>>),
    /// One score per document, in input order (`rerank`).
    Scores(Vec<f32>),
    /// The best documents, best first (`rerank` with `top_k`).
    Ranking(Vec<RankedDocument>),
    /// One generated text per input, in input order (`text_generation`).
    Texts(Vec<String>),
    /// One transcript per audio, in input order (`transcribe`).
    Transcripts(Vec<Transcript>),
    /// The model's named outputs.
    Tensors(NamedTensors),
    /// The model's named outputs per batch, for presets whose results are the model's own
    /// tensors (`image_resize_normalize`, `image_letterbox`, which adds `letterbox_geometry`).
    TensorBatches(Vec<NamedTensors>),
}

/// The answer to a [`TaskRequest`].
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResponse {
    /// The task type asked for.
    pub task_type: TaskType,
    /// The result.
    pub output: TaskOutput,
    /// The model used, as resolved, for the output's records.
    pub models_used: Vec<ModelsUsedEntry>,
    /// Its canonical signature.
    pub model_signature: String,
}

fn bad(message: String) -> ModelError {
    ManagerError::BadTask { message }.into()
}

/// The options of a task, checked against its type.
#[derive(Debug, Default)]
struct TaskOptions {
    prompt_name: Option<String>,
    top_k: Option<usize>,
    num_workers: Option<usize>,
}

/// The most calls a model's batching queue may run at once (as the spec's `num_workers`).
const MAX_WORKERS: u64 = 64;

impl TaskOptions {
    fn parse(
        task_type: TaskType,
        options: &BTreeMap<String, serde_json::Value>,
    ) -> Result<Self, ModelError> {
        let mut parsed = Self::default();
        for (name, value) in options {
            match (name.as_str(), task_type) {
                ("prompt_name", TaskType::Embedding) => {
                    let name = value.as_str().ok_or_else(|| {
                        bad(format!(
                            "option prompt_name must be a prompt name (a string), got {value}"
                        ))
                    })?;
                    parsed.prompt_name = Some(name.to_owned());
                }
                ("num_workers", TaskType::Embedding) => {
                    let n = value
                        .as_u64()
                        .filter(|n| (1..=MAX_WORKERS).contains(n))
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| {
                            bad(format!(
                                "option num_workers must be an integer from 1 to \
                                 {MAX_WORKERS}, got {value}"
                            ))
                        })?;
                    parsed.num_workers = Some(n);
                }
                ("top_k", TaskType::Rerank) => {
                    let k = value
                        .as_u64()
                        .filter(|k| *k > 0)
                        .and_then(|k| usize::try_from(k).ok())
                        .ok_or_else(|| {
                            bad(format!(
                                "option top_k must be a positive integer, got {value}"
                            ))
                        })?;
                    parsed.top_k = Some(k);
                }
                (_, TaskType::TextGeneration | TaskType::Transcribe) => {}
                _ => {
                    let takes = match task_type {
                        TaskType::Embedding => "only prompt_name and num_workers",
                        TaskType::Rerank => "only top_k",
                        _ => "no options",
                    };
                    return Err(bad(format!(
                        "task {} takes {takes}, got option {name:?}",
                        task_type.as_str()
                    )));
                }
            }
        }
        Ok(parsed)
    }
}

impl ModelManager {
    /// Runs a task: with `data: None`, preloads the model (kept for `keep_alive`);
    /// otherwise embeds texts (`embedding`) or runs named tensors (`infer`).
    ///
    /// ```
    /// use dp_manager::{ModelManager, TaskRequest, TaskType};
    ///
    /// # fn main() -> Result<(), dp_spec::ModelError> {
    /// let manager = ModelManager::builder(dp_spec::Catalog::default(), "/srv/models")
    ///     .reaper(false)
    ///     .build()?;
    /// let mut request = TaskRequest::new(TaskType::TextGeneration, "any", None);
    /// request.options.insert("num_beams".into(), serde_json::json!(0));
    /// let err = manager.task(request).unwrap_err();
    /// assert_eq!(err.error_code, dp_spec::ErrorCode::InvalidInput);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `invalid_input` for data that does not fit the task type and for options; otherwise
    /// as [`Self::get`], [`Self::embed`], [`Self::generate`] and the model's `infer`.
    pub fn task(&self, request: TaskRequest) -> Result<TaskResponse, ModelError> {
        let TaskRequest {
            task_type,
            model,
            data,
            keep_alive,
            options,
            cancel,
        } = request;
        let check_cancel = || cancel.as_ref().map_or(Ok(()), crate::CancelToken::check);
        check_cancel()?;
        let transcription = if task_type == TaskType::Transcribe {
            Some(TranscriptionOptions::from_task_options(&options)?)
        } else {
            None
        };
        let generation = if task_type == TaskType::TextGeneration {
            let parsed = crate::GenerationOptions::from_task_options(&options)?;
            if parsed.num_beams == 0 || parsed.num_beams > crate::MAX_BEAMS {
                // Checked again against the model; refused here before any load.
                return Err(bad(format!(
                    "option num_beams is {}; use 1 (greedy) to {}",
                    parsed.num_beams,
                    crate::MAX_BEAMS
                )));
            }
            Some(parsed)
        } else {
            None
        };
        let options = TaskOptions::parse(task_type, &options)?;
        let Some(data) = data else {
            self.preload(&model, keep_alive)?;
            let entry = self.models_used(&model)?;
            return Ok(TaskResponse {
                task_type,
                output: TaskOutput::Preloaded,
                model_signature: entry.model_signature.clone(),
                models_used: vec![entry],
            });
        };
        if let Some(keep_alive) = keep_alive {
            // Loads it if needed, and sets its keep-alive for after this task.
            self.preload(&model, Some(keep_alive))?;
        }
        // Embeddings check the token themselves, up to their model call (queued included);
        // every other task once, before it starts.
        if !matches!(task_type, TaskType::Embedding) {
            check_cancel()?;
        }
        let run = |inputs: PresetInputs<'_>| self.run_preset(&model, inputs);
        let (output, model_signature, models_used) = match (task_type, data) {
            (TaskType::Embedding, TaskData::Texts(texts)) => {
                let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                preset_output(self.run_preset_as(
                    &model,
                    PresetInputs::Texts(&texts),
                    &crate::embedding::PresetCall {
                        prompt_name: options.prompt_name.as_deref(),
                        cancel: cancel.as_ref(),
                        num_workers: options.num_workers,
                    },
                )?)
            }
            (TaskType::Rerank, TaskData::QueryWithDocuments { query, documents }) => {
                let documents: Vec<&str> = documents.iter().map(String::as_str).collect();
                let reranked = self.rerank(&model, &query, &documents)?;
                let output = match options.top_k {
                    Some(top_k) => TaskOutput::Ranking(reranked.top_k(top_k)),
                    None => TaskOutput::Scores(reranked.scores),
                };
                (output, reranked.model_signature, reranked.models_used)
            }
            (TaskType::TextGeneration, TaskData::Texts(texts)) => {
                let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                let generated = self.generate(&model, &texts, &generation.unwrap_or_default())?;
                (
                    TaskOutput::Texts(generated.texts),
                    generated.model_signature,
                    generated.models_used,
                )
            }
            (TaskType::Transcribe, TaskData::Audio(audio)) => {
                let out = self.transcribe(&model, &audio, &transcription.unwrap_or_default())?;
                (
                    TaskOutput::Transcripts(out.transcripts),
                    out.model_signature,
                    out.models_used,
                )
            }
            (TaskType::ImageEmbedding, TaskData::Images(images)) => {
                preset_output(run(PresetInputs::Images(&images))?)
            }
            (TaskType::ZeroShotClassification, TaskData::ImagesWithLabels { images, labels }) => {
                let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
                preset_output(run(PresetInputs::ImagesWithLabels {
                    images: &images,
                    labels: &labels,
                })?)
            }
            (TaskType::Infer, TaskData::Tensors(tensors)) => {
                let handle = self.get(&model)?;
                let outputs = handle.infer(&tensors)?;
                let entry = handle.models_used().clone();
                (
                    TaskOutput::Tensors(outputs),
                    entry.model_signature.clone(),
                    vec![entry],
                )
            }
            (task_type, data) => {
                let want = match task_type {
                    TaskType::Embedding | TaskType::TextGeneration => "texts",
                    TaskType::ImageEmbedding => "images",
                    TaskType::ZeroShotClassification => "images with labels",
                    TaskType::Rerank => "a query with documents",
                    TaskType::Transcribe => "audio",
                    _ => "named tensors",
                };
                let got = match data {
                    TaskData::Texts(_) => "texts",
                    TaskData::Images(_) => "images",
                    TaskData::ImagesWithLabels { .. } => "images with labels",
                    TaskData::QueryWithDocuments { .. } => "a query with documents",
                    TaskData::Tensors(_) => "tensors",
                    TaskData::Audio(_) => "audio",
                };
                return Err(bad(format!(
                    "a {} task takes {want}, not {got} (model {model})",
                    task_type.as_str()
                )));
            }
        };
        Ok(TaskResponse {
            task_type,
            output,
            models_used,
            model_signature,
        })
    }
}

/// A preset's run as a task's output, signature and record.
fn preset_output(
    run: crate::PresetRun,
) -> (TaskOutput, String, Vec<dp_signature::ModelsUsedEntry>) {
    let output = match run.output {
        PresetOutput::Vectors(rows) => TaskOutput::Embeddings(rows),
        PresetOutput::Probabilities(rows) => TaskOutput::Probabilities(rows),
        PresetOutput::Scores(scores) => TaskOutput::Scores(scores),
        PresetOutput::Tensors(batches) => TaskOutput::TensorBatches(batches),
    };
    (output, run.model_signature, run.models_used)
}
