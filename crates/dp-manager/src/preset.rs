//! The shared pre/post-processing presets: what turns a request's data into the named
//! tensors a provider moves, and the provider's outputs back into results. They live here,
//! once, so the candle, ONNX Runtime and Triton providers only move tensors and a model
//! gives the same result whichever runtime serves it.
//!
//! One preset exists today, `sentence_embedding` ([`SentenceEmbedding`]):
//!
//! 1. tokenization with the `tokenizers` crate from the `tokenizer.json` listed in the
//!    spec's `local_artifacts` (an artifact whose file name is `tokenizer.json`, or a listed
//!    directory holding one), truncated to the model's maximum length and padded to the
//!    longest text of each batch;
//! 2. the provider runs the model on `input_ids`, `attention_mask` and `token_type_ids`
//!    (int64, `[batch, seq]`; only those the spec's `input_schema` names, when it names
//!    any) and returns `last_hidden_state` (fp32, `[batch, seq, hidden]`);
//! 3. pooling over the real (unpadded) tokens: `mean`, `cls` or `max`;
//! 4. L2 normalization, when asked.
//!
//! Each setting comes from `preprocess_params` when the spec gives it, otherwise from the
//! sentence-transformers files listed among the artifacts (`sentence_bert_config.json`
//! `max_seq_length`, `1_Pooling/config.json`, `modules.json` listing
//! `sentence_transformers.models.Normalize`), otherwise from a default (512 tokens, mean,
//! no normalization). When both give a setting and disagree, loading fails with
//! `invalid_spec`: the spec's parameters are part of the model signature, and a signature
//! must never describe a computation other than the one that ran.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dp_spec::tensor_names::{LAST_HIDDEN_STATE, TEXT_INPUTS};
use dp_spec::{
    ErrorCode, LoadedModel, ModelError, ModelSpec, NamedTensors, Tensor, TensorData,
    VerifiedArtifacts, VerifiedFile,
};
use serde_json::Value;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// The name of the sentence-embedding preset in specs.
pub const SENTENCE_EMBEDDING: &str = "sentence_embedding";

/// Maximum sequence length when neither the spec nor the model's files give one (BERT's).
pub const DEFAULT_MAX_LENGTH: usize = 512;

/// Texts per model call when the spec sets no `resource_requirements.max_batch_size`.
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pooling {
    /// The mean of the real tokens' vectors.
    Mean,
    /// The first token's vector (`[CLS]`).
    Cls,
    /// The element-wise maximum over the real tokens.
    Max,
}

impl Pooling {
    /// The name used in `preprocess_params.pooling`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Cls => "cls",
            Self::Max => "max",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "mean" => Some(Self::Mean),
            "cls" => Some(Self::Cls),
            "max" => Some(Self::Max),
            _ => None,
        }
    }
}

/// The settings of a [`SentenceEmbedding`], once resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentenceEmbeddingConfig {
    /// Longest token sequence (special tokens included); longer texts are truncated.
    pub max_length: usize,
    /// How token vectors are pooled.
    pub pooling: Pooling,
    /// Whether sentence vectors are scaled to unit L2 norm.
    pub normalize: bool,
    /// Text prepended to every input (e.g. E5's `"query: "`).
    pub query_prefix: Option<String>,
}

impl SentenceEmbeddingConfig {
    /// The settings as canonical `preprocess_params` (what [`Self::preprocess_signature`]
    /// hashes).
    #[must_use]
    pub fn params(&self) -> BTreeMap<String, Value> {
        let mut params = BTreeMap::from([
            ("max_length".to_owned(), Value::from(self.max_length)),
            ("pooling".to_owned(), Value::from(self.pooling.as_str())),
            ("normalize".to_owned(), Value::from(self.normalize)),
        ]);
        if let Some(prefix) = &self.query_prefix {
            params.insert("query_prefix".to_owned(), Value::from(prefix.as_str()));
        }
        params
    }

    /// The identity of this configuration (`pp1:…`, see `dp_signature::preprocess_signature`):
    /// it is the same for a spec that gives these settings in `preprocess_params` and for
    /// one whose settings come from the model's files.
    #[must_use]
    pub fn preprocess_signature(&self) -> String {
        dp_signature::preprocess_signature(Some(SENTENCE_EMBEDDING), &self.params())
    }
}

/// The `sentence_embedding` preset of one model: its tokenizer, built once when the model
/// is loaded, and its pooling settings.
///
/// ```
/// use dp_manager::preset::{Pooling, SentenceEmbedding, SentenceEmbeddingConfig};
///
/// // A word-level tokenizer with three words; real models list a `tokenizer.json`.
/// let json = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
///   "normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,
///   "decoder":null,"model":{"type":"WordLevel","vocab":{"[PAD]":0,"[UNK]":1,"hello":2,
///   "world":3},"unk_token":"[UNK]"}}"#;
/// let config = SentenceEmbeddingConfig {
///     max_length: 8, pooling: Pooling::Mean, normalize: true, query_prefix: None,
/// };
/// let preset = SentenceEmbedding::from_tokenizer_json(json.as_bytes(), "tokenizer.json", config)?;
/// let batch = preset.encode(&["hello world", "world"])?;
/// assert_eq!(batch.input_ids, vec![2, 3, 3, 0]);
/// assert_eq!(batch.attention_mask, vec![1, 1, 1, 0]);
/// assert_eq!((batch.batch, batch.seq_len), (2, 2));
/// # Ok::<(), dp_spec::ModelError>(())
/// ```
pub struct SentenceEmbedding {
    tokenizer: Tokenizer,
    config: SentenceEmbeddingConfig,
    /// Which of [`TEXT_INPUTS`](dp_spec::tensor_names::TEXT_INPUTS) the model takes.
    inputs: [bool; 3],
    batch_size: usize,
    tokenizer_path: PathBuf,
    signature: String,
    /// A copy of the tokenizer that neither truncates nor pads, made at the first long text
    /// and kept: it counts a prefix's tokens (see [`Self::truncation_prefix`]).
    untruncated: OnceLock<Tokenizer>,
}

/// A tokenized batch, padded to its longest text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    /// Texts in the batch.
    pub batch: usize,
    /// Tokens per text after padding.
    pub seq_len: usize,
    /// Token ids, `[batch, seq_len]` row-major.
    pub input_ids: Vec<i64>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<i64>,
    /// Segment ids.
    pub token_type_ids: Vec<i64>,
}

impl SentenceEmbedding {
    /// The preset of `spec`, reading its files from the model's verified artifacts (never
    /// from disk again: the bytes parsed are the bytes verified).
    ///
    /// # Errors
    /// `invalid_spec` (naming the file) when the tokenizer or a sentence-transformers file is
    /// missing from the artifacts or malformed, when a setting is invalid, or when
    /// `preprocess_params` contradict the model's files.
    pub fn from_spec(spec: &ModelSpec, artifacts: &VerifiedArtifacts) -> Result<Self, ModelError> {
        let files = ArtifactFiles { spec, artifacts };
        let tokenizer = files.find("tokenizer.json").ok_or_else(|| {
            invalid(
                spec,
                format!(
                    "preset {SENTENCE_EMBEDDING} needs a tokenizer.json among local_artifacts \
                     (or inside a listed directory) under {}; add it to the spec",
                    artifacts.root().display()
                ),
            )
        })?;
        let config = resolve_config(spec, &files)?;
        let tokenizer_path = artifacts.display_path(tokenizer.path());
        let mut preset = Self::from_tokenizer_json(tokenizer.bytes(), &tokenizer_path, config)
            .map_err(|err| err.with_detail("model_name", spec.model_name.as_str()))?;
        if !spec.input_schema.is_empty() {
            let wanted: Vec<&str> = spec.input_schema.iter().map(|t| t.name.as_str()).collect();
            if let Some(unknown) = wanted.iter().find(|name| !TEXT_INPUTS.contains(name)) {
                return Err(invalid(
                    spec,
                    format!(
                        "input_schema names {unknown:?}, but preset {SENTENCE_EMBEDDING} only \
                         produces {TEXT_INPUTS:?}"
                    ),
                ));
            }
            preset.inputs = TEXT_INPUTS.map(|name| wanted.contains(&name));
        }
        if let Some(max) = spec.resource_requirements.max_batch_size {
            preset.batch_size = usize::try_from(max).unwrap_or(usize::MAX).max(1);
        }
        Ok(preset)
    }

    /// A preset from the bytes of a `tokenizer.json` (`path` names it in errors).
    ///
    /// # Errors
    /// `invalid_spec`, naming `path`, when the bytes are not a tokenizer this build can run.
    pub fn from_tokenizer_json(
        bytes: &[u8],
        path: impl AsRef<Path>,
        config: SentenceEmbeddingConfig,
    ) -> Result<Self, ModelError> {
        let path = path.as_ref();
        let bad = |what: String| {
            ModelError::new(
                ErrorCode::InvalidSpec,
                format!(
                    "{}: {what}; replace it with the model's tokenizer.json",
                    path.display()
                ),
            )
            .with_detail("file", path.display().to_string())
        };
        if config.max_length == 0 {
            return Err(bad("max_length is 0".to_owned()));
        }
        let mut tokenizer = Tokenizer::from_bytes(bytes)
            .map_err(|err| bad(format!("not a valid tokenizer: {err}")))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: config.max_length,
                ..TruncationParams::default()
            }))
            .map_err(|err| bad(format!("cannot truncate to {}: {err}", config.max_length)))?;
        // Keep the file's pad token if it sets one; else find the usual names.
        let padding = match tokenizer.get_padding() {
            Some(params) => PaddingParams {
                strategy: PaddingStrategy::BatchLongest,
                ..params.clone()
            },
            None => {
                let (pad_token, pad_id) = ["[PAD]", "<pad>", "<PAD>"]
                    .iter()
                    .find_map(|t| tokenizer.token_to_id(t).map(|id| ((*t).to_owned(), id)))
                    .unwrap_or_else(|| ("[PAD]".to_owned(), 0));
                PaddingParams {
                    strategy: PaddingStrategy::BatchLongest,
                    pad_id,
                    pad_token,
                    ..PaddingParams::default()
                }
            }
        };
        tokenizer.with_padding(Some(padding));
        let signature = config.preprocess_signature();
        Ok(Self {
            tokenizer,
            config,
            inputs: [true; 3],
            batch_size: DEFAULT_BATCH_SIZE,
            tokenizer_path: path.to_path_buf(),
            signature,
            untruncated: OnceLock::new(),
        })
    }

    /// The resolved settings.
    #[must_use]
    pub const fn config(&self) -> &SentenceEmbeddingConfig {
        &self.config
    }

    /// The identity of the resolved settings (`pp1:…`).
    #[must_use]
    pub fn preprocess_signature(&self) -> &str {
        &self.signature
    }

    /// The tokenizer file it was built from.
    #[must_use]
    pub fn tokenizer_path(&self) -> &Path {
        &self.tokenizer_path
    }

    /// Texts per model call.
    #[must_use]
    pub const fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Tokenizes one batch: truncated, padded to its longest text.
    ///
    /// A long text is cut before it is tokenized (see `truncation_prefix`), so its
    /// cost follows `max_length`, not its size; the ids are those of the whole text,
    /// truncated.
    ///
    /// # Errors
    /// `invalid_input` when the tokenizer fails on a text.
    pub fn encode(&self, texts: &[&str]) -> Result<EncodedBatch, ModelError> {
        let failed = |err: tokenizers::Error| {
            ModelError::new(
                ErrorCode::InvalidInput,
                format!("tokenizer {} failed: {err}", self.tokenizer_path.display()),
            )
        };
        let mut inputs = Vec::with_capacity(texts.len());
        for text in texts {
            let whole = match &self.config.query_prefix {
                Some(prefix) => std::borrow::Cow::Owned(format!("{prefix}{text}")),
                None => std::borrow::Cow::Borrowed(*text),
            };
            let used = self.truncation_prefix(&whole).map_err(failed)?;
            inputs.push(used.to_owned());
        }
        let encodings = self.tokenizer.encode_batch(inputs, true).map_err(failed)?;
        let seq_len = encodings.first().map_or(0, tokenizers::Encoding::len);
        let mut batch = EncodedBatch {
            batch: encodings.len(),
            seq_len,
            input_ids: Vec::with_capacity(encodings.len() * seq_len),
            attention_mask: Vec::with_capacity(encodings.len() * seq_len),
            token_type_ids: Vec::with_capacity(encodings.len() * seq_len),
        };
        for encoding in &encodings {
            batch
                .input_ids
                .extend(encoding.get_ids().iter().map(|&v| i64::from(v)));
            batch
                .attention_mask
                .extend(encoding.get_attention_mask().iter().map(|&v| i64::from(v)));
            batch
                .token_type_ids
                .extend(encoding.get_type_ids().iter().map(|&v| i64::from(v)));
        }
        Ok(batch)
    }

    /// The part of `text` to tokenize: tokenizing it and truncating gives the same tokens as
    /// tokenizing the whole `text` and truncating, without tokenizing all of a huge text
    /// (a 10 MB line used to cost over a gigabyte and seconds inside the tokenizer).
    ///
    /// A short text is used whole. A longer one is cut on a character boundary, first at
    /// 64 bytes per token of `max_length`, doubling, until the prefix's tokens that come from
    /// words the cut cannot have touched (all but its last two words: the tokenizer splits
    /// the text into words and tokenizes each on its own, so only the word the cut falls in
    /// can change) outnumber `max_length` plus a margin. Every token truncation keeps then
    /// comes from those words, so the cut changes only tokens truncation drops anyway. A
    /// text whose prefixes never get there (one endless word) is used whole.
    fn truncation_prefix<'t>(&self, text: &'t str) -> Result<&'t str, tokenizers::Error> {
        const FIRST_CUT_BYTES_PER_TOKEN: usize = 64;
        const MARGIN_TOKENS: usize = 16;
        let max_length = self.config.max_length;
        let mut len = max_length.saturating_mul(FIRST_CUT_BYTES_PER_TOKEN);
        while len < text.len() {
            let mut cut = len;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            let prefix = &text[..cut];
            let counter = match self.untruncated.get() {
                Some(counter) => counter,
                None => {
                    let mut untruncated = self.tokenizer.clone();
                    untruncated.with_truncation(None)?.with_padding(None);
                    // Another thread may have set it first; either copy is the same.
                    self.untruncated.get_or_init(|| untruncated)
                }
            };
            let encoding = counter.encode(prefix, false)?;
            let words = encoding.get_word_ids();
            let last = words.iter().flatten().max().copied().unwrap_or(0);
            let untouched = words
                .iter()
                .flatten()
                .filter(|&&word| word.saturating_add(1) < last)
                .count();
            if untouched > max_length.saturating_add(MARGIN_TOKENS) {
                return Ok(prefix);
            }
            len = len.saturating_mul(2);
        }
        Ok(text)
    }

    /// The named tensors of a batch, as the model takes them.
    ///
    /// # Errors
    /// Never in practice (the shapes are built to match).
    pub fn tensors(&self, batch: &EncodedBatch) -> Result<NamedTensors, ModelError> {
        let shape = vec![batch.batch, batch.seq_len];
        let columns = [
            &batch.input_ids,
            &batch.attention_mask,
            &batch.token_type_ids,
        ];
        let mut tensors = NamedTensors::new();
        for ((name, wanted), data) in TEXT_INPUTS.iter().zip(self.inputs).zip(columns) {
            if wanted {
                let tensor = Tensor::new(shape.clone(), TensorData::Int64(data.clone()))?;
                tensors.insert((*name).to_owned(), tensor);
            }
        }
        Ok(tensors)
    }

    /// Embeds `texts` with `model`, in batches of [`Self::batch_size`]: one vector per
    /// text, in input order.
    ///
    /// # Errors
    /// The model's errors; `invalid_input` when its output is not a `[batch, seq, hidden]`
    /// fp32 `last_hidden_state` matching the batch.
    pub fn embed(
        &self,
        model: &dyn LoadedModel,
        texts: &[&str],
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.batch_size) {
            let batch = self.encode(chunk)?;
            let outputs = model.infer(&self.tensors(&batch)?)?;
            let hidden = hidden_state(&outputs)?;
            let mut vectors = pool_tensor(self.config.pooling, hidden, &batch)?;
            if self.config.normalize {
                vectors.iter_mut().for_each(|v| l2_normalize(v));
            }
            out.extend(vectors);
        }
        Ok(out)
    }
}

impl fmt::Debug for SentenceEmbedding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentenceEmbedding")
            .field("tokenizer_path", &self.tokenizer_path)
            .field("config", &self.config)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

/// The preset of a spec, if the manager implements it: `Ok(None)` for a spec without
/// preset or with a preset this crate does not implement yet (such models still serve
/// `infer` tasks).
///
/// # Errors
/// As [`SentenceEmbedding::from_spec`].
pub fn load_preset(
    spec: &ModelSpec,
    artifacts: &VerifiedArtifacts,
) -> Result<Option<SentenceEmbedding>, ModelError> {
    match spec.preprocess_preset.as_deref() {
        Some(SENTENCE_EMBEDDING) => SentenceEmbedding::from_spec(spec, artifacts).map(Some),
        _ => Ok(None),
    }
}

/// The `last_hidden_state` among a model's outputs.
fn hidden_state(outputs: &NamedTensors) -> Result<&Tensor, ModelError> {
    outputs.get(LAST_HIDDEN_STATE).ok_or_else(|| {
        let names: Vec<&str> = outputs.keys().map(String::as_str).collect();
        ModelError::new(
            ErrorCode::InvalidInput,
            format!(
                "the model returned {names:?} but preset {SENTENCE_EMBEDDING} needs \
                 {LAST_HIDDEN_STATE:?}; fix the spec's output_schema or the model"
            ),
        )
    })
}

fn pool_tensor(
    pooling: Pooling,
    hidden: &Tensor,
    batch: &EncodedBatch,
) -> Result<Vec<Vec<f32>>, ModelError> {
    let TensorData::Fp32(values) = hidden.data() else {
        return Err(ModelError::new(
            ErrorCode::InvalidInput,
            format!(
                "{LAST_HIDDEN_STATE} is {:?}; preset {SENTENCE_EMBEDDING} needs fp32",
                hidden.dtype()
            ),
        ));
    };
    match *hidden.shape() {
        [b, s, h] if b == batch.batch && s == batch.seq_len => {
            Ok(pool(pooling, values, [b, s, h], &batch.attention_mask))
        }
        _ => Err(ModelError::new(
            ErrorCode::InvalidInput,
            format!(
                "{LAST_HIDDEN_STATE} has shape {:?} but the batch is [{}, {}, hidden]",
                hidden.shape(),
                batch.batch,
                batch.seq_len
            ),
        )),
    }
}

/// Pools `hidden` (`[batch, seq, hidden]` row-major) over the tokens whose `mask`
/// (`[batch, seq]`) is non-zero, as sentence-transformers does: the mean divides by the
/// number of real tokens (at least 1e-9), the maximum ignores padding, `cls` takes token 0.
///
/// ```
/// use dp_manager::preset::{Pooling, pool};
///
/// // One text, three tokens (the last is padding), two dimensions.
/// let hidden = [1.0, 2.0, 3.0, 6.0, 100.0, 100.0];
/// let mask = [1, 1, 0];
/// assert_eq!(pool(Pooling::Mean, &hidden, [1, 3, 2], &mask), vec![vec![2.0, 4.0]]);
/// assert_eq!(pool(Pooling::Max, &hidden, [1, 3, 2], &mask), vec![vec![3.0, 6.0]]);
/// assert_eq!(pool(Pooling::Cls, &hidden, [1, 3, 2], &mask), vec![vec![1.0, 2.0]]);
/// ```
///
/// # Panics
/// When `hidden` or `mask` is shorter than the shape says.
#[must_use]
pub fn pool(pooling: Pooling, hidden: &[f32], shape: [usize; 3], mask: &[i64]) -> Vec<Vec<f32>> {
    let [batch, seq, dim] = shape;
    (0..batch)
        .map(|b| {
            let tokens = &hidden[b * seq * dim..(b + 1) * seq * dim];
            let mask = &mask[b * seq..(b + 1) * seq];
            match pooling {
                Pooling::Cls => tokens[..dim].to_vec(),
                Pooling::Mean => {
                    let mut sum = vec![0.0_f32; dim];
                    let mut count = 0.0_f32;
                    for (token, &m) in tokens.chunks_exact(dim).zip(mask) {
                        if m != 0 {
                            count += 1.0;
                            sum.iter_mut().zip(token).for_each(|(s, v)| *s += v);
                        }
                    }
                    let count = count.max(1e-9);
                    sum.iter_mut().for_each(|s| *s /= count);
                    sum
                }
                Pooling::Max => {
                    // sentence-transformers sets padding to -1e9 before the maximum.
                    let mut max = vec![-1e9_f32; dim];
                    for (token, &m) in tokens.chunks_exact(dim).zip(mask) {
                        if m != 0 {
                            max.iter_mut().zip(token).for_each(|(x, v)| *x = x.max(*v));
                        }
                    }
                    max
                }
            }
        })
        .collect()
}

/// Scales `v` to unit L2 norm (a zero vector stays zero), like `torch.nn.functional.normalize`
/// with its `eps` of 1e-12.
///
/// ```
/// let mut v = [3.0_f32, 4.0];
/// dp_manager::preset::l2_normalize(&mut v);
/// assert_eq!(v, [0.6, 0.8]);
/// ```
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

/// Finds the preset's files among a model's verified artifacts.
struct ArtifactFiles<'a> {
    spec: &'a ModelSpec,
    artifacts: &'a VerifiedArtifacts,
}

impl ArtifactFiles<'_> {
    /// The artifact whose path ends with `/suffix` (or is `suffix`), else `suffix` inside
    /// a listed directory; `None` when neither is among the verified files.
    fn find(&self, suffix: &str) -> Option<&VerifiedFile> {
        let artifacts = self.artifacts.artifacts();
        let listed = artifacts
            .iter()
            .find(|a| *a == suffix || a.ends_with(&format!("/{suffix}")))
            .and_then(|a| self.artifacts.get(a));
        if listed.is_some() {
            return listed;
        }
        artifacts
            .iter()
            .find_map(|a| self.artifacts.get(&format!("{a}/{suffix}")))
    }

    /// The JSON of an optional file.
    fn json(&self, suffix: &str) -> Result<Option<(PathBuf, Value)>, ModelError> {
        let Some(file) = self.find(suffix) else {
            return Ok(None);
        };
        let path = self.artifacts.display_path(file.path());
        let value = serde_json::from_slice(file.bytes()).map_err(|err| {
            invalid(
                self.spec,
                format!("{} is not valid JSON: {err}", path.display()),
            )
            .with_detail("file", path.display().to_string())
        })?;
        Ok(Some((path, value)))
    }
}

/// Resolves the settings: `preprocess_params` first, then the model's files, then defaults.
fn resolve_config(
    spec: &ModelSpec,
    files: &ArtifactFiles<'_>,
) -> Result<SentenceEmbeddingConfig, ModelError> {
    let params = &spec.preprocess_params;
    let param_error = |key: &str, want: &str| {
        invalid(
            spec,
            format!(
                "preprocess_params.{key} is {}; it must be {want}",
                params.get(key).map_or_else(String::new, Value::to_string)
            ),
        )
    };

    // From the files.
    let file_max_length = match files.json("sentence_bert_config.json")? {
        Some((path, json)) => match json.get("max_seq_length") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .map(|n| (n, path.clone()))
                    .ok_or_else(|| {
                        file_error(spec, &path, "max_seq_length is not a positive integer")
                    })?,
            ),
        },
        None => None,
    };
    let file_pooling = match files.json("1_Pooling/config.json")? {
        Some((path, json)) => Some((pooling_of(spec, &path, &json)?, path)),
        None => None,
    };
    let file_normalize = match files.json("modules.json")? {
        Some((path, json)) => {
            let modules = json
                .as_array()
                .ok_or_else(|| file_error(spec, &path, "is not a JSON array of modules"))?;
            let normalize = modules.iter().any(|m| {
                m.get("type").and_then(Value::as_str)
                    == Some("sentence_transformers.models.Normalize")
            });
            Some((normalize, path))
        }
        None => None,
    };

    // From the spec, checked against the files.
    let max_length = match params.get("max_length") {
        Some(v) => {
            let n = v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| param_error("max_length", "a positive integer"))?;
            agree(spec, "max_length", n, file_max_length.as_ref())?;
            n
        }
        None => file_max_length.map_or(DEFAULT_MAX_LENGTH, |(n, _)| n),
    };
    let pooling = match params.get("pooling") {
        Some(v) => {
            let p = v
                .as_str()
                .and_then(Pooling::parse)
                .ok_or_else(|| param_error("pooling", "\"mean\", \"cls\" or \"max\""))?;
            agree(spec, "pooling", p, file_pooling.as_ref())?;
            p
        }
        None => file_pooling.map_or(Pooling::Mean, |(p, _)| p),
    };
    let normalize = match params.get("normalize") {
        Some(v) => {
            let n = v
                .as_bool()
                .ok_or_else(|| param_error("normalize", "true or false"))?;
            agree(spec, "normalize", n, file_normalize.as_ref())?;
            n
        }
        None => file_normalize.is_some_and(|(n, _)| n),
    };
    let query_prefix = match params.get("query_prefix") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(param_error("query_prefix", "a string")),
    };
    Ok(SentenceEmbeddingConfig {
        max_length,
        pooling,
        normalize,
        query_prefix,
    })
}

/// The pooling a sentence-transformers `1_Pooling/config.json` asks for.
fn pooling_of(spec: &ModelSpec, path: &Path, json: &Value) -> Result<Pooling, ModelError> {
    let on = |key: &str| json.get(key).and_then(Value::as_bool).unwrap_or(false);
    let modes = [
        ("pooling_mode_mean_tokens", Some(Pooling::Mean)),
        ("pooling_mode_cls_token", Some(Pooling::Cls)),
        ("pooling_mode_max_tokens", Some(Pooling::Max)),
        ("pooling_mode_mean_sqrt_len_tokens", None),
        ("pooling_mode_weightedmean_tokens", None),
        ("pooling_mode_lasttoken", None),
    ];
    let active: Vec<_> = modes.iter().filter(|(key, _)| on(key)).collect();
    match active.as_slice() {
        [(_, Some(pooling))] => Ok(*pooling),
        [(key, None)] => Err(file_error(
            spec,
            path,
            &format!("{key} is not supported by preset {SENTENCE_EMBEDDING} (mean, cls, max)"),
        )),
        [] => Err(file_error(spec, path, "enables no pooling mode")),
        _ => Err(file_error(
            spec,
            path,
            "enables several pooling modes; preset sentence_embedding supports exactly one",
        )),
    }
}

/// Fails when a spec parameter contradicts the model's file.
fn agree<T: PartialEq + fmt::Debug>(
    spec: &ModelSpec,
    key: &str,
    param: T,
    file: Option<&(T, PathBuf)>,
) -> Result<(), ModelError> {
    match file {
        Some((from_file, path)) if *from_file != param => Err(invalid(
            spec,
            format!(
                "preprocess_params.{key} is {param:?} but {} says {from_file:?}; make them agree",
                path.display()
            ),
        )
        .with_detail("file", path.display().to_string())),
        _ => Ok(()),
    }
}

fn file_error(spec: &ModelSpec, path: &Path, what: &str) -> ModelError {
    invalid(spec, format!("{} {what}", path.display()))
        .with_detail("file", path.display().to_string())
}

fn invalid(spec: &ModelSpec, message: String) -> ModelError {
    ModelError::new(
        ErrorCode::InvalidSpec,
        format!("model {}: {message}", spec.model_name),
    )
    .with_detail("model_name", spec.model_name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BERT-like tokenizer: lowercase, whitespace split, word-level vocabulary, `[CLS] …
    /// [SEP]` around each text.
    fn tokenizer_json() -> String {
        serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [
                {"id": 0, "content": "[PAD]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 1, "content": "[UNK]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 2, "content": "[CLS]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 3, "content": "[SEP]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
            ],
            "normalizer": {"type": "Lowercase"},
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {
                    "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                    "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
                }
            },
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "the": 4, "cat": 5, "sat": 6, "on": 7, "mat": 8}, "unk_token": "[UNK]"}
        })
        .to_string()
    }

    fn config(max_length: usize, pooling: Pooling, normalize: bool) -> SentenceEmbeddingConfig {
        SentenceEmbeddingConfig {
            max_length,
            pooling,
            normalize,
            query_prefix: None,
        }
    }

    fn preset(max_length: usize) -> SentenceEmbedding {
        SentenceEmbedding::from_tokenizer_json(
            tokenizer_json().as_bytes(),
            "t/tokenizer.json",
            config(max_length, Pooling::Mean, true),
        )
        .expect("valid tokenizer")
    }

    #[test]
    fn tokenizes_pads_to_the_longest_and_truncates() {
        let p = preset(16);
        let batch = p.encode(&["The cat sat", "mat", "dog"]).expect("encodes");
        assert_eq!((batch.batch, batch.seq_len), (3, 5));
        #[rustfmt::skip]
        assert_eq!(batch.input_ids, vec![
            2, 4, 5, 6, 3,
            2, 8, 3, 0, 0,
            2, 1, 3, 0, 0,
        ]);
        #[rustfmt::skip]
        assert_eq!(batch.attention_mask, vec![
            1, 1, 1, 1, 1,
            1, 1, 1, 0, 0,
            1, 1, 1, 0, 0,
        ]);
        assert_eq!(batch.token_type_ids, vec![0; 15]);

        // max_length counts the special tokens: [CLS] the cat [SEP].
        let short = preset(4)
            .encode(&["the cat sat on the mat"])
            .expect("encodes");
        assert_eq!(short.input_ids, vec![2, 4, 5, 3]);
    }

    #[test]
    fn tensors_follow_the_input_schema() {
        let mut p = preset(8);
        let batch = p.encode(&["the cat", "on"]).expect("encodes");
        let tensors = p.tensors(&batch).expect("tensors");
        assert_eq!(
            tensors.keys().collect::<Vec<_>>(),
            ["attention_mask", "input_ids", "token_type_ids"]
        );
        assert_eq!(tensors["input_ids"].shape(), &[2, 4]);
        p.inputs = [true, true, false];
        assert!(
            !p.tensors(&batch)
                .expect("tensors")
                .contains_key("token_type_ids")
        );
    }

    #[test]
    fn pooling_matches_hand_computed_values() {
        // Two texts, three tokens, two dims; the second text has one padding token.
        #[rustfmt::skip]
        let hidden = [
            1.0, -2.0,   3.0, 4.0,   5.0, 0.0,
            2.0, 2.0,   -4.0, 8.0,   99.0, 99.0,
        ];
        let mask = [1, 1, 1, 1, 1, 0];
        assert_eq!(
            pool(Pooling::Mean, &hidden, [2, 3, 2], &mask),
            vec![vec![3.0, 2.0 / 3.0], vec![-1.0, 5.0]]
        );
        assert_eq!(
            pool(Pooling::Max, &hidden, [2, 3, 2], &mask),
            vec![vec![5.0, 4.0], vec![2.0, 8.0]]
        );
        assert_eq!(
            pool(Pooling::Cls, &hidden, [2, 3, 2], &mask),
            vec![vec![1.0, -2.0], vec![2.0, 2.0]]
        );
        // All padding: the mean is 0, not NaN.
        assert_eq!(
            pool(Pooling::Mean, &[7.0, 7.0], [1, 1, 2], &[0]),
            vec![vec![0.0, 0.0]]
        );
    }

    #[test]
    fn normalization_gives_unit_vectors_and_keeps_zero() {
        let mut v = [1.0_f32, 2.0, 2.0];
        l2_normalize(&mut v);
        assert_eq!(v, [1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0]);
        let mut zero = [0.0_f32; 3];
        l2_normalize(&mut zero);
        assert_eq!(zero, [0.0; 3]);
    }

    /// A model whose `last_hidden_state` is token id and position: [id, pos].
    struct Echo;

    impl LoadedModel for Echo {
        fn infer(&self, inputs: &NamedTensors) -> Result<NamedTensors, ModelError> {
            let ids = &inputs["input_ids"];
            let [b, s] = *ids.shape() else {
                panic!("rank 2")
            };
            let TensorData::Int64(ids) = ids.data() else {
                panic!("int64")
            };
            #[allow(clippy::cast_precision_loss)]
            let data = ids
                .iter()
                .enumerate()
                .flat_map(|(i, &id)| [id as f32, (i % s) as f32])
                .collect();
            let t = Tensor::new(vec![b, s, 2], TensorData::Fp32(data))?;
            Ok(NamedTensors::from([(LAST_HIDDEN_STATE.to_owned(), t)]))
        }
    }

    #[test]
    fn embed_pools_real_tokens_normalizes_and_batches() {
        let mut p = SentenceEmbedding::from_tokenizer_json(
            tokenizer_json().as_bytes(),
            "tokenizer.json",
            config(8, Pooling::Mean, false),
        )
        .expect("valid");
        p.batch_size = 1;
        // "mat": ids [2, 8, 3] at positions 0..3 → mean [13/3, 1]. "the cat": [2,4,5,3] →
        // mean [14/4, 1.5].
        let out = p.embed(&Echo, &["mat", "the cat"]).expect("embeds");
        assert_eq!(out, vec![vec![13.0 / 3.0, 1.0], vec![3.5, 1.5]]);
        p.config.normalize = true;
        let out = p.embed(&Echo, &["the cat"]).expect("embeds");
        let norm = 3.5_f32.hypot(1.5);
        assert_eq!(out, vec![vec![3.5 / norm, 1.5 / norm]]);
    }

    #[test]
    fn a_bad_tokenizer_is_invalid_spec_naming_the_file() {
        let err = SentenceEmbedding::from_tokenizer_json(
            b"{not json",
            "m/tokenizer.json",
            config(8, Pooling::Mean, true),
        )
        .expect_err("bad json");
        assert_eq!(err.error_code, ErrorCode::InvalidSpec);
        assert!(err.message.contains("m/tokenizer.json"), "{}", err.message);
        assert_eq!(err.details["file"], "m/tokenizer.json");
    }

    fn spec_with(params: Value, artifacts: &[&str]) -> ModelSpec {
        serde_json::from_value(serde_json::json!({
            "model_name": "m", "model_version": "1", "role": "text_embedding",
            "runtime": "inprocess", "engine": "onnx", "local_artifacts": artifacts,
            "preprocess_preset": "sentence_embedding", "preprocess_params": params,
        }))
        .expect("valid spec")
    }

    fn write(root: &Path, path: &str, text: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn settings_come_from_params_then_files_and_must_agree() {
        /// The preset over the files as verified (unpinned): what a load does.
        fn from_spec(spec: &ModelSpec, root: &Path) -> Result<SentenceEmbedding, ModelError> {
            let opened = dp_digest::open_verified(
                root,
                &spec.local_artifacts,
                &dp_digest::ArtifactPins::default(),
                &dp_digest::VerifyOptions::default(),
            )
            .expect("walk");
            let artifacts = opened
                .artifacts
                .unwrap_or_else(|| VerifiedArtifacts::empty(root));
            SentenceEmbedding::from_spec(spec, &artifacts)
        }

        let root = tempfile::tempdir().expect("tempdir");
        let root = root.path();
        write(root, "m/tokenizer.json", &tokenizer_json());
        write(
            root,
            "m/sentence_bert_config.json",
            r#"{"max_seq_length": 6}"#,
        );
        write(
            root,
            "m/1_Pooling/config.json",
            r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#,
        );
        write(
            root,
            "m/modules.json",
            r#"[{"type": "sentence_transformers.models.Transformer"},
                {"type": "sentence_transformers.models.Normalize"}]"#,
        );
        // Files only: a directory artifact is searched.
        let from_files = from_spec(&spec_with(serde_json::json!({}), &["m"]), root).expect("loads");
        assert_eq!(from_files.config(), &config(6, Pooling::Cls, true));
        // Params that agree give the same signature.
        let params = serde_json::json!({"max_length": 6, "pooling": "cls", "normalize": true});
        let listed = [
            "m/tokenizer.json",
            "m/sentence_bert_config.json",
            "m/1_Pooling/config.json",
            "m/modules.json",
        ];
        let both = from_spec(&spec_with(params, &listed), root).expect("loads");
        assert_eq!(
            both.preprocess_signature(),
            from_files.preprocess_signature()
        );
        // Params that contradict a file name it.
        let err = from_spec(
            &spec_with(serde_json::json!({"pooling": "mean"}), &listed),
            root,
        )
        .expect_err("disagrees");
        assert_eq!(err.error_code, ErrorCode::InvalidSpec);
        assert!(
            err.message.contains("1_Pooling/config.json"),
            "{}",
            err.message
        );
        // A bad parameter.
        let err = from_spec(
            &spec_with(
                serde_json::json!({"pooling": "median"}),
                &["m/tokenizer.json"],
            ),
            root,
        )
        .expect_err("bad pooling");
        assert!(
            err.message.contains("preprocess_params.pooling"),
            "{}",
            err.message
        );
        // No tokenizer.
        let err =
            from_spec(&spec_with(serde_json::json!({}), &["x"]), root).expect_err("no tokenizer");
        assert!(err.message.contains("tokenizer.json"), "{}", err.message);
        // A malformed pooling file.
        write(root, "n/tokenizer.json", &tokenizer_json());
        write(root, "n/1_Pooling/config.json", "{");
        let err = from_spec(&spec_with(serde_json::json!({}), &["n"]), root).expect_err("bad json");
        assert_eq!(
            err.details["file"],
            root.join("n/1_Pooling/config.json").display().to_string()
        );
    }
}

/// The cut of long texts before tokenization, against real tokenizers.
#[cfg(test)]
mod truncation_tests;
