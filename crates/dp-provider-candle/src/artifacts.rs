//! Reading a model folder from the model's verified artifacts: `config.json`,
//! `model.safetensors` and, for sentence-transformers encoders, `modules.json` (mapped once
//! by `dp-digest`, which hashed exactly those bytes), each failure naming its file.

use std::path::{Path, PathBuf};

use dp_spec::{ArtifactBytes, ModelSpec, VerifiedArtifacts};
use safetensors::SafeTensors;
use serde::Deserialize;

use crate::error::CandleError;
use crate::layers::Activation;

/// The files of one model, found among its verified artifacts.
#[derive(Debug, Clone)]
pub(crate) struct ModelFiles {
    /// The weights.
    pub(crate) weights: ModelFile,
    /// The Hugging Face `config.json` beside the weights.
    pub(crate) config: ModelFile,
    /// `modules.json` beside the weights, if there is one.
    pub(crate) modules: Option<ModelFile>,
    /// `modules.json` when the spec implies one (it lists it, or lists the folder) but it
    /// is not among the verified files: an error for sentence-transformers encoders only.
    pub(crate) modules_missing: Option<PathBuf>,
}

/// One verified file and where it lives (for messages; it is never opened again).
#[derive(Debug, Clone)]
pub(crate) struct ModelFile {
    pub(crate) path: PathBuf,
    pub(crate) bytes: ArtifactBytes,
}

impl ModelFiles {
    /// Finds the weights among the spec's artifacts: a `.safetensors` file, or a folder
    /// holding `model.safetensors`. `config.json` and `modules.json` are the ones beside it,
    /// as sentence-transformers saves them; the weights and `config.json` must be among the
    /// verified files (whether `modules.json` must be depends on the architecture).
    pub(crate) fn locate(
        spec: &ModelSpec,
        artifacts: &VerifiedArtifacts,
    ) -> Result<Self, CandleError> {
        let mut weights = None;
        let mut modules_listed = false;
        for listed in &spec.local_artifacts {
            let artifact = listed.trim_start_matches("./").trim_end_matches('/');
            let relative = Path::new(artifact);
            if relative.file_name().is_some_and(|n| n == "modules.json") {
                modules_listed = true;
            }
            if weights.is_none() {
                if relative.extension().is_some_and(|e| e == "safetensors") {
                    weights = Some(artifact.to_owned());
                } else if artifacts.get(artifact).is_none() && artifacts.contains(artifact) {
                    // A directory artifact: the weights inside it.
                    weights = Some(format!("{artifact}/model.safetensors"));
                    modules_listed = true;
                }
            }
        }
        let weights = weights.ok_or_else(|| CandleError::NoWeightsArtifact {
            model: spec.model_name.clone(),
        })?;
        let dir = weights
            .rsplit_once('/')
            .map_or(String::new(), |(dir, _)| format!("{dir}/"));
        let file = |path: &str| -> Result<ModelFile, CandleError> {
            artifacts
                .get(path)
                .map(|f| ModelFile {
                    path: artifacts.display_path(f.path()),
                    bytes: f.bytes().clone(),
                })
                .ok_or_else(|| CandleError::FileMissing {
                    file: artifacts.display_path(path),
                })
        };
        let modules_path = format!("{dir}modules.json");
        let modules = file(&modules_path).ok();
        let modules_missing =
            (modules_listed && modules.is_none()).then(|| artifacts.display_path(&modules_path));
        Ok(Self {
            weights: file(&weights)?,
            config: file(&format!("{dir}config.json"))?,
            modules,
            modules_missing,
        })
    }
}

/// The architecture `config.json` names (`model_type`), `None` when it names none.
pub(crate) fn model_type(file: &ModelFile) -> Result<Option<String>, CandleError> {
    #[derive(Deserialize)]
    struct Head {
        #[serde(default)]
        model_type: Option<String>,
    }
    let head: Head = serde_json::from_slice(small(file)?)
        .map_err(|e| CandleError::malformed(&file.path, format!("not a model config: {e}")))?;
    Ok(head.model_type)
}

/// The `model_type`s this provider runs, for error messages.
pub(crate) const SUPPORTED_MODEL_TYPES: &str = "bert, roberta, xlm-roberta, clip, t5, whisper";

/// The error for a `model_type` this provider does not run.
pub(crate) fn unsupported_model_type(file: &Path, model_type: &str) -> CandleError {
    CandleError::UnsupportedArchitecture {
        file: file.to_path_buf(),
        model_type: model_type.to_owned(),
        supported: SUPPORTED_MODEL_TYPES,
    }
}

/// The fields of a Hugging Face BERT-family `config.json` (BERT, RoBERTa, XLM-RoBERTa) the
/// encoder and its optional classification head need.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct BertConfig {
    /// Rows of the word embedding table.
    pub(crate) vocab_size: usize,
    /// Width of every hidden state.
    pub(crate) hidden_size: usize,
    /// Encoder layers.
    pub(crate) num_hidden_layers: usize,
    /// Attention heads per layer.
    pub(crate) num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub(crate) intermediate_size: usize,
    /// The feed-forward activation.
    #[serde(default = "default_act")]
    pub(crate) hidden_act: String,
    /// Rows of the position embedding table (for RoBERTa this includes the
    /// `pad_token_id + 1` rows below the first real position).
    pub(crate) max_position_embeddings: usize,
    /// Rows of the token type table.
    #[serde(default = "default_type_vocab")]
    pub(crate) type_vocab_size: usize,
    /// Layer-norm epsilon.
    #[serde(default = "default_eps")]
    pub(crate) layer_norm_eps: f64,
    /// Only absolute positions are implemented.
    #[serde(default = "default_position_embedding_type")]
    pub(crate) position_embedding_type: String,
    /// The architecture family.
    #[serde(default)]
    pub(crate) model_type: Option<String>,
    /// The padding token: RoBERTa-family position ids count from it.
    #[serde(default)]
    pub(crate) pad_token_id: Option<usize>,
    /// The classes the checkpoint was saved from (`BertModel`,
    /// `XLMRobertaForSequenceClassification`, …): they pick the head.
    #[serde(default)]
    pub(crate) architectures: Option<Vec<String>>,
    /// The classifier's labels; their count is the number of logits.
    #[serde(default)]
    pub(crate) id2label: Option<serde_json::Map<String, serde_json::Value>>,
    /// The number of logits, when `id2label` is absent.
    #[serde(default)]
    pub(crate) num_labels: Option<usize>,
}

fn default_act() -> String {
    "gelu".into()
}
const fn default_type_vocab() -> usize {
    2
}
const fn default_eps() -> f64 {
    1e-12
}
fn default_position_embedding_type() -> String {
    "absolute".into()
}

/// The label count Hugging Face gives a classifier whose config names none.
const DEFAULT_NUM_LABELS: usize = 2;

/// `pad_token_id` when a RoBERTa config names none (Hugging Face's `RobertaConfig` default).
const DEFAULT_ROBERTA_PAD: usize = 1;

/// The two weight layouts of the BERT family: they differ in tensor prefixes, position ids
/// and the classification head, not in the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// `model_type` `bert` (or none): positions `0..seq`; `bert.` prefix in task heads;
    /// classification through the pooler (`bert.pooler.dense`) and `classifier`.
    Bert,
    /// `model_type` `roberta` or `xlm-roberta`: positions offset past `pad_token_id`;
    /// `roberta.` prefix in task heads; classification through `classifier.dense` and
    /// `classifier.out_proj`, with no pooler.
    Roberta,
}

/// How the encoder numbers positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Positions {
    /// BERT: token `i` of every row is at position `i`, padding included.
    Absolute,
    /// RoBERTa: real tokens (ids other than `padding_idx`) are at `padding_idx + 1`,
    /// `padding_idx + 2`, … in order; padding tokens are at `padding_idx`.
    Roberta {
        /// `pad_token_id`.
        padding_idx: u32,
    },
}

/// What the model returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Head {
    /// The encoder alone: the last hidden state.
    Encoder,
    /// A `…ForSequenceClassification` head (a cross-encoder): one logit per label.
    SequenceClassification {
        /// Logits per row.
        num_labels: usize,
    },
}

impl BertConfig {
    /// Parses and checks `config.json`.
    pub(crate) fn read(file: &ModelFile) -> Result<Self, CandleError> {
        let path = &file.path;
        let bytes = small(file)?;
        let config: Self = serde_json::from_slice(bytes)
            .map_err(|e| CandleError::malformed(path, format!("not a BERT config: {e}")))?;
        config.check(path)?;
        Ok(config)
    }

    fn check(&self, path: &Path) -> Result<(), CandleError> {
        let family = Self::family_of(self.model_type.as_deref()).ok_or_else(|| {
            unsupported_model_type(path, self.model_type.as_deref().unwrap_or_default())
        })?;
        if self.position_embedding_type != "absolute" {
            return Err(CandleError::malformed(
                path,
                format!(
                    "position_embedding_type '{}' is not supported (only 'absolute')",
                    self.position_embedding_type
                ),
            ));
        }
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
            ("num_labels", self.num_labels.unwrap_or(1)),
        ];
        // Bounds keep a hostile config from asking for absurd allocations before the
        // weights are even compared with it.
        for (name, value) in sizes {
            if value == 0 || value > 1 << 24 {
                return Err(CandleError::malformed(
                    path,
                    format!("{name} = {value} is out of range (1..=16777216)"),
                ));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(CandleError::malformed(
                path,
                format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    self.hidden_size, self.num_attention_heads
                ),
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(CandleError::malformed(path, "layer_norm_eps must be > 0"));
        }
        if family == Family::Roberta {
            let pad = self.pad_token_id.unwrap_or(DEFAULT_ROBERTA_PAD);
            // Real tokens start at pad + 1: the table needs at least that row.
            if pad + 1 >= self.max_position_embeddings {
                return Err(CandleError::malformed(
                    path,
                    format!(
                        "pad_token_id {pad} leaves no position for a real token in \
                         max_position_embeddings {} (RoBERTa positions start at \
                         pad_token_id + 1)",
                        self.max_position_embeddings
                    ),
                ));
            }
        }
        if let (Some(labels), Some(count)) = (&self.id2label, self.num_labels)
            && labels.len() != count
        {
            return Err(CandleError::malformed(
                path,
                format!(
                    "id2label has {} labels but num_labels is {count}; make them agree",
                    labels.len()
                ),
            ));
        }
        if let Head::SequenceClassification { num_labels } = self.head()
            && !(1..=1 << 24).contains(&num_labels)
        {
            return Err(CandleError::malformed(
                path,
                format!(
                    "id2label has {num_labels} labels; a sequence classifier needs                      1..=16777216"
                ),
            ));
        }
        self.activation(path).map(|_| ())
    }

    /// The family of a `model_type`, `None` when it is not one of the BERT family's.
    fn family_of(model_type: Option<&str>) -> Option<Family> {
        match model_type {
            None | Some("bert") => Some(Family::Bert),
            Some("roberta" | "xlm-roberta") => Some(Family::Roberta),
            Some(_) => None,
        }
    }

    /// Whether `model_type` names a BERT-family encoder this config type reads.
    pub(crate) fn is_bert_family(model_type: Option<&str>) -> bool {
        Self::family_of(model_type).is_some()
    }

    /// The weight layout (checked by [`Self::read`]).
    pub(crate) fn family(&self) -> Family {
        Self::family_of(self.model_type.as_deref()).unwrap_or(Family::Bert)
    }

    /// How positions are numbered.
    pub(crate) fn positions(&self) -> Positions {
        match self.family() {
            Family::Bert => Positions::Absolute,
            Family::Roberta => Positions::Roberta {
                // Below max_position_embeddings (checked), itself at most 2^24.
                padding_idx: u32::try_from(self.pad_token_id.unwrap_or(DEFAULT_ROBERTA_PAD))
                    .unwrap_or(u32::MAX),
            },
        }
    }

    /// The longest sequence the model takes: every position embedding for BERT, those past
    /// `pad_token_id` for RoBERTa.
    pub(crate) fn max_sequence(&self) -> usize {
        match self.positions() {
            Positions::Absolute => self.max_position_embeddings,
            Positions::Roberta { padding_idx } => self
                .max_position_embeddings
                .saturating_sub(padding_idx as usize + 1),
        }
    }

    /// The head: sequence classification when `architectures` names a
    /// `…ForSequenceClassification` class (as cross-encoders are saved), else the encoder.
    pub(crate) fn head(&self) -> Head {
        let classifies = self
            .architectures
            .iter()
            .flatten()
            .any(|a| a.ends_with("ForSequenceClassification"));
        if !classifies {
            return Head::Encoder;
        }
        // Hugging Face derives num_labels from id2label, which save_pretrained writes.
        let num_labels = self
            .id2label
            .as_ref()
            .map(serde_json::Map::len)
            .or(self.num_labels)
            .unwrap_or(DEFAULT_NUM_LABELS);
        Head::SequenceClassification { num_labels }
    }

    /// The feed-forward activation.
    pub(crate) fn activation(&self, path: &Path) -> Result<Activation, CandleError> {
        Activation::from_config_name(&self.hidden_act).ok_or_else(|| {
            CandleError::malformed(
                path,
                format!(
                    "hidden_act '{}' is not supported ({})",
                    self.hidden_act,
                    Activation::NAMES
                ),
            )
        })
    }
}

/// One entry of `modules.json`.
#[derive(Debug, Deserialize)]
struct ModuleEntry {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

/// Checks that `modules.json` starts with the Transformer module at the folder's root: the
/// provider runs that module only (pooling and normalization are the manager's presets).
pub(crate) fn check_modules(file: &ModelFile) -> Result<(), CandleError> {
    let path = &file.path;
    let bytes = small(file)?;
    let modules: Vec<ModuleEntry> = serde_json::from_slice(bytes).map_err(|e| {
        CandleError::malformed(
            path,
            format!("not a sentence-transformers module list: {e}"),
        )
    })?;
    match modules.first() {
        Some(first)
            if first.kind.ends_with(".Transformer") && matches!(first.path.as_str(), "" | ".") =>
        {
            Ok(())
        }
        Some(first) => Err(CandleError::malformed(
            path,
            format!(
                "the first module is {} at '{}', expected sentence_transformers.models.Transformer at ''",
                first.kind, first.path
            ),
        )),
        None => Err(CandleError::malformed(path, "the module list is empty")),
    }
}

/// The bytes of a small JSON file, refusing anything over 16 MiB.
pub(crate) fn small(file: &ModelFile) -> Result<&[u8], CandleError> {
    const LIMIT: usize = 16 << 20;
    if file.bytes.len() > LIMIT {
        return Err(CandleError::malformed(
            &file.path,
            format!("{} bytes is too large for a config file", file.bytes.len()),
        ));
    }
    Ok(&file.bytes)
}

/// The bytes of a safetensors file whose header has been validated.
pub(crate) struct Weights {
    path: PathBuf,
    bytes: ArtifactBytes,
}

impl Weights {
    /// Validates the header of the verified weights (length, JSON, offsets covering the
    /// file).
    pub(crate) fn open(file: &ModelFile) -> Result<Self, CandleError> {
        SafeTensors::deserialize(&file.bytes)
            .map_err(|e| CandleError::malformed(&file.path, describe_safetensors_error(&e)))?;
        Ok(Self {
            path: file.path.clone(),
            bytes: file.bytes.clone(),
        })
    }

    /// The validated view over the bytes.
    pub(crate) fn view(&self) -> Result<SafeTensors<'_>, CandleError> {
        SafeTensors::deserialize(&self.bytes)
            .map_err(|e| CandleError::malformed(&self.path, describe_safetensors_error(&e)))
    }

    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The verified bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// A sentence naming what is wrong with a safetensors file.
fn describe_safetensors_error(err: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match err {
        E::HeaderTooLarge => {
            "its header claims more than 100 MB (not a safetensors file, or corrupt)".into()
        }
        E::HeaderTooSmall => {
            "it is shorter than the 8-byte header length (truncated or empty)".into()
        }
        E::InvalidHeaderLength => {
            "its header length runs past the end of the file (truncated)".into()
        }
        E::MetadataIncompleteBuffer => {
            "the tensor data does not match the file length (truncated or padded)".into()
        }
        E::InvalidHeader(e) => format!("its header is not UTF-8 ({e})"),
        E::InvalidHeaderDeserialization(e) | E::JsonError(e) => {
            format!("its header is not valid safetensors JSON ({e})")
        }
        other => format!("not a valid safetensors file ({other})"),
    }
}

/// Checks that the safetensors file holds `name` with `shape` and a float dtype (F32, F16,
/// BF16), without copying it: the check every architecture runs on each weight it reads.
pub(crate) fn check_tensor(
    tensors: &safetensors::SafeTensors<'_>,
    name: &str,
    shape: &[usize],
    file: &std::path::Path,
) -> Result<(), CandleError> {
    let view = tensors
        .tensor(name)
        .map_err(|_| CandleError::malformed(file, format!("tensor '{name}' is missing")))?;
    if view.shape() != shape {
        return Err(CandleError::malformed(
            file,
            format!(
                "tensor '{name}' has shape {:?}, but config.json implies {shape:?}",
                view.shape()
            ),
        ));
    }
    if !matches!(
        view.dtype(),
        safetensors::Dtype::F32 | safetensors::Dtype::F16 | safetensors::Dtype::BF16
    ) {
        return Err(CandleError::malformed(
            file,
            format!(
                "tensor '{name}' has dtype {:?}; expected F32, F16 or BF16",
                view.dtype()
            ),
        ));
    }
    Ok(())
}

/// A candle `VarBuilder` over verified safetensors bytes (tensors are copied out of them;
/// no file is opened again), and the dtype the model computes in. CPU kernels lack bf16
/// convolutions and are slow at bf16 matmuls: a bf16 model on the CPU keeps bf16-rounded
/// weights in f32 and computes in f32.
pub(crate) fn verified_var_builder<'a>(
    bytes: &'a [u8],
    dtype: candle_core::DType,
    device: &candle_core::Device,
) -> Result<(candle_nn::VarBuilder<'a>, candle_core::DType), CandleError> {
    use candle_core::DType;
    let tensors = candle_core::safetensors::SliceSafetensors::new(bytes)?;
    let (dtype, rounding) = if dtype == DType::BF16 && device.is_cpu() {
        (DType::F32, Some(DType::BF16))
    } else {
        (dtype, None)
    };
    let vb = candle_nn::VarBuilder::from_backend(
        Box::new(RoundedWeights { tensors, rounding }),
        dtype,
        device.clone(),
    );
    Ok((vb, dtype))
}

/// The safetensors view, each tensor optionally rounded through a narrower dtype.
struct RoundedWeights<'a> {
    tensors: candle_core::safetensors::SliceSafetensors<'a>,
    rounding: Option<candle_core::DType>,
}

impl candle_nn::var_builder::SimpleBackend for RoundedWeights<'_> {
    fn get(
        &self,
        shape: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: candle_core::DType,
        device: &candle_core::Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        let tensor = self.get_unchecked(name, dtype, device)?;
        if tensor.shape() != &shape {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: shape,
                got: tensor.shape().clone(),
            });
        }
        Ok(tensor)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: candle_core::DType,
        device: &candle_core::Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        let tensor = self.tensors.load(name, device)?;
        match self.rounding {
            Some(narrow) => tensor.to_dtype(narrow)?.to_dtype(dtype),
            None => tensor.to_dtype(dtype),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.get(name).is_ok()
    }
}
