//! The settings of the `sentence_embedding` preset: from the spec's `preprocess_params`,
//! checked against the sentence-transformers files, else from those files, else defaults.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::SENTENCE_EMBEDDING;
use super::pooling::Pooling;
use crate::artifacts::{ArtifactFiles, agree};
use crate::error::PresetError;

/// Maximum sequence length when neither the spec nor the model's files give one (BERT's).
pub const DEFAULT_MAX_LENGTH: usize = 512;

/// The settings of a [`super::SentenceEmbedding`], once resolved.
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
    /// The settings as canonical `preprocess_params` (what the preprocess signature hashes).
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

    /// Resolves the settings: `preprocess_params` first (checked against the files), then
    /// the model's files, then defaults.
    pub(crate) fn resolve(files: &ArtifactFiles<'_>) -> Result<Self, PresetError> {
        let spec = files.spec;
        let params = &spec.preprocess_params;

        let file_max_length = match files.json("sentence_bert_config.json")? {
            Some((path, json)) => match json.get("max_seq_length") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_u64()
                        .and_then(|n| usize::try_from(n).ok())
                        .map(|n| (n, path.clone()))
                        .ok_or_else(|| {
                            files.file_error(&path, "max_seq_length is not a positive integer")
                        })?,
                ),
            },
            None => None,
        };
        let file_pooling = match files.json("1_Pooling/config.json")? {
            Some((path, json)) => Some((pooling_of(files, &path, &json)?, path)),
            None => None,
        };
        let file_normalize = match files.json("modules.json")? {
            Some((path, json)) => {
                let modules = json
                    .as_array()
                    .ok_or_else(|| files.file_error(&path, "is not a JSON array of modules"))?;
                let normalize = modules.iter().any(|m| {
                    m.get("type").and_then(Value::as_str)
                        == Some("sentence_transformers.models.Normalize")
                });
                Some((normalize, path))
            }
            None => None,
        };

        let max_length = match params.get("max_length") {
            Some(v) => {
                let n = v
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| files.param_error("max_length", "a positive integer"))?;
                agree(spec, "max_length", &n, file_max_length.as_ref())?;
                n
            }
            None => file_max_length.map_or(DEFAULT_MAX_LENGTH, |(n, _)| n),
        };
        let pooling = match params.get("pooling") {
            Some(v) => {
                let p = v.as_str().and_then(Pooling::parse).ok_or_else(|| {
                    files.param_error("pooling", "\"mean\", \"cls\", \"max\" or \"last_token\"")
                })?;
                agree(spec, "pooling", &p, file_pooling.as_ref())?;
                p
            }
            None => file_pooling.map_or(Pooling::Mean, |(p, _)| p),
        };
        let normalize = match params.get("normalize") {
            Some(v) => {
                let n = v
                    .as_bool()
                    .ok_or_else(|| files.param_error("normalize", "true or false"))?;
                agree(spec, "normalize", &n, file_normalize.as_ref())?;
                n
            }
            None => file_normalize.is_some_and(|(n, _)| n),
        };
        let query_prefix = match params.get("query_prefix") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(files.param_error("query_prefix", "a string")),
        };
        if let Some(unknown) = params
            .keys()
            .find(|k| !["max_length", "pooling", "normalize", "query_prefix"].contains(&k.as_str()))
        {
            return Err(files.param_error(
                unknown,
                "one of max_length, pooling, normalize, query_prefix (preset sentence_embedding \
                 takes no other parameter)",
            ));
        }
        Ok(Self {
            max_length,
            pooling,
            normalize,
            query_prefix,
        })
    }
}

/// The pooling a sentence-transformers `1_Pooling/config.json` asks for.
fn pooling_of(
    files: &ArtifactFiles<'_>,
    path: &Path,
    json: &Value,
) -> Result<Pooling, PresetError> {
    let on = |key: &str| json.get(key).and_then(Value::as_bool).unwrap_or(false);
    let modes = [
        ("pooling_mode_mean_tokens", Some(Pooling::Mean)),
        ("pooling_mode_cls_token", Some(Pooling::Cls)),
        ("pooling_mode_max_tokens", Some(Pooling::Max)),
        ("pooling_mode_mean_sqrt_len_tokens", None),
        ("pooling_mode_weightedmean_tokens", None),
        ("pooling_mode_lasttoken", Some(Pooling::LastToken)),
    ];
    let active: Vec<_> = modes.iter().filter(|(key, _)| on(key)).collect();
    match active.as_slice() {
        [(_, Some(pooling))] => Ok(*pooling),
        [(key, None)] => Err(files.file_error(
            path,
            &format!(
                "{key} is not supported by preset {SENTENCE_EMBEDDING} (mean, cls, max, last_token)"
            ),
        )),
        [] => Err(files.file_error(path, "enables no pooling mode")),
        _ => Err(files.file_error(
            path,
            "enables several pooling modes; preset sentence_embedding supports exactly one",
        )),
    }
}
