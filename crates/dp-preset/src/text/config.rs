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
    /// Text prepended to every input that names no prompt (an older spelling of a default
    /// prompt; `prompts` with `default_prompt_name` say the same more precisely).
    pub query_prefix: Option<String>,
    /// Named prompts (sentence-transformers' `prompts`, e.g. E5's `query` → `"query: "`):
    /// a call may name one, whose text is then prepended to each of its inputs.
    pub prompts: BTreeMap<String, String>,
    /// The prompt used when a call names none.
    pub default_prompt_name: Option<String>,
}

/// The parameter keys `sentence_embedding` takes in `preprocess_params`.
const PARAM_KEYS: [&str; 6] = [
    "max_length",
    "pooling",
    "normalize",
    "query_prefix",
    "prompts",
    "default_prompt_name",
];

impl SentenceEmbeddingConfig {
    /// The settings without prompts: `max_length` tokens, no prefix.
    #[must_use]
    pub const fn new(max_length: usize, pooling: Pooling, normalize: bool) -> Self {
        Self {
            max_length,
            pooling,
            normalize,
            query_prefix: None,
            prompts: BTreeMap::new(),
            default_prompt_name: None,
        }
    }

    /// The settings of a call that names no prompt, as canonical `preprocess_params` (what
    /// the preprocess signature hashes).
    #[must_use]
    pub fn params(&self) -> BTreeMap<String, Value> {
        match &self.default_prompt_name {
            Some(name) => {
                self.params_with_prompt(name, self.prompts.get(name).map_or("", String::as_str))
            }
            None => {
                let mut params = self.base_params();
                if let Some(prefix) = &self.query_prefix {
                    params.insert("query_prefix".to_owned(), Value::from(prefix.as_str()));
                }
                params
            }
        }
    }

    /// The settings of a call that uses the prompt `name`, whose text is `prompt`: the
    /// prompt's name and text are part of what the signature hashes, since they change
    /// every vector.
    #[must_use]
    pub fn params_with_prompt(&self, name: &str, prompt: &str) -> BTreeMap<String, Value> {
        let mut params = self.base_params();
        params.insert("prompt_name".to_owned(), Value::from(name));
        params.insert("prompt".to_owned(), Value::from(prompt));
        params
    }

    fn base_params(&self) -> BTreeMap<String, Value> {
        BTreeMap::from([
            ("max_length".to_owned(), Value::from(self.max_length)),
            ("pooling".to_owned(), Value::from(self.pooling.as_str())),
            ("normalize".to_owned(), Value::from(self.normalize)),
        ])
    }

    /// The text prepended to the inputs of a call that names no prompt.
    #[must_use]
    pub fn default_prefix(&self) -> Option<&str> {
        match &self.default_prompt_name {
            Some(name) => self.prompts.get(name).map(String::as_str),
            None => self.query_prefix.as_deref(),
        }
    }

    /// The identity of this configuration for a call that names no prompt (`pp1:…`, see
    /// `dp_signature::preprocess_signature`): it is the same for a spec that gives these
    /// settings in `preprocess_params` and for one whose settings come from the model's
    /// files.
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

        let max_length = resolve_max_length(files, file_max_length)?;
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
        if let Some(unknown) = params.keys().find(|k| !PARAM_KEYS.contains(&k.as_str())) {
            return Err(files.param_error(
                unknown,
                &format!(
                    "one of {} (preset sentence_embedding takes no other parameter)",
                    PARAM_KEYS.join(", ")
                ),
            ));
        }
        let (prompts, default_prompt_name) = resolve_prompts(files)?;
        if default_prompt_name.is_some() && query_prefix.is_some() {
            return Err(files.param_error(
                "query_prefix",
                "absent when a default prompt is set (default_prompt_name already says what \
                 a call without a prompt prepends); drop query_prefix",
            ));
        }
        Ok(Self {
            max_length,
            pooling,
            normalize,
            query_prefix,
            prompts,
            default_prompt_name,
        })
    }
}

/// The maximum length: `preprocess_params.max_length` (checked against what the model's
/// file says), else the file's, else [`DEFAULT_MAX_LENGTH`].
pub(super) fn resolve_max_length(
    files: &ArtifactFiles<'_>,
    from_file: Option<(usize, std::path::PathBuf)>,
) -> Result<usize, PresetError> {
    match files.spec.preprocess_params.get("max_length") {
        Some(v) => {
            let n = v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| files.param_error("max_length", "a positive integer"))?;
            agree(files.spec, "max_length", &n, from_file.as_ref())?;
            Ok(n)
        }
        None => Ok(from_file.map_or(DEFAULT_MAX_LENGTH, |(n, _)| n)),
    }
}

/// The named prompts and the default one: those of `config_sentence_transformers.json`,
/// plus any the spec adds. The spec may add prompts the file lacks (older models ship none)
/// but never give another text for a prompt the file has, nor another default.
fn resolve_prompts(
    files: &ArtifactFiles<'_>,
) -> Result<(BTreeMap<String, String>, Option<String>), PresetError> {
    let spec = files.spec;
    let mut prompts = BTreeMap::new();
    let mut file_default = None;
    if let Some((path, json)) = files.json("config_sentence_transformers.json")? {
        match json.get("prompts") {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (name, text) in map {
                    let text = text.as_str().ok_or_else(|| {
                        files
                            .file_error(&path, &format!("has prompt {name:?} that is not a string"))
                    })?;
                    prompts.insert(name.clone(), (text.to_owned(), Some(path.clone())));
                }
            }
            Some(_) => {
                return Err(files.file_error(&path, "has \"prompts\" that is not an object"));
            }
        }
        match json.get("default_prompt_name") {
            None | Some(Value::Null) => {}
            Some(Value::String(name)) => file_default = Some((name.clone(), path.clone())),
            Some(_) => {
                return Err(
                    files.file_error(&path, "has a default_prompt_name that is not a string")
                );
            }
        }
    }
    match spec.preprocess_params.get("prompts") {
        None => {}
        Some(Value::Object(map)) => {
            for (name, text) in map {
                let text = text.as_str().ok_or_else(|| {
                    files.param_error("prompts", "an object of prompt names to strings")
                })?;
                match prompts.get(name) {
                    Some((from_file, Some(path))) if from_file != text => {
                        return Err(PresetError::config(
                            path.display().to_string(),
                            format!(
                                "model {}: preprocess_params.prompts.{name} is {text:?} but {} \
                                 says {from_file:?}; make them agree (the spec may add prompts, \
                                 not change the model's)",
                                spec.model_name,
                                path.display()
                            ),
                        ));
                    }
                    Some(_) => {}
                    None => {
                        prompts.insert(name.clone(), (text.to_owned(), None));
                    }
                }
            }
        }
        Some(_) => return Err(files.param_error("prompts", "an object of prompt names to strings")),
    }
    let default = match spec.preprocess_params.get("default_prompt_name") {
        None | Some(Value::Null) => file_default.map(|(name, _)| name),
        Some(Value::String(name)) => {
            agree(spec, "default_prompt_name", name, file_default.as_ref())?;
            Some(name.clone())
        }
        Some(_) => return Err(files.param_error("default_prompt_name", "a prompt name (a string)")),
    };
    let prompts: BTreeMap<String, String> = prompts
        .into_iter()
        .map(|(name, (text, _))| (name, text))
        .collect();
    if let Some(name) = &default
        && !prompts.contains_key(name)
    {
        return Err(PresetError::InvalidConfig {
            message: format!(
                "model {}: the default prompt {name:?} is not among its prompts ({}); name one \
                 of them or add it to preprocess_params.prompts",
                spec.model_name,
                prompt_list(&prompts)
            ),
            file: None,
        });
    }
    Ok((prompts, default))
}

/// The prompt names, for messages.
pub(crate) fn prompt_list(prompts: &BTreeMap<String, String>) -> String {
    if prompts.is_empty() {
        "it defines none".to_owned()
    } else {
        prompts
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The pooling a sentence-transformers `1_Pooling/config.json` asks for.
fn pooling_of(
    files: &ArtifactFiles<'_>,
    path: &Path,
    json: &Value,
) -> Result<Pooling, PresetError> {
    let on = |key: &str| json.get(key).and_then(Value::as_bool).unwrap_or(false);
    if json.get("include_prompt").and_then(Value::as_bool) == Some(false) {
        return Err(files.file_error(
            path,
            &format!(
                "sets include_prompt false (prompt tokens left out of the pooling), which preset \
                 {SENTENCE_EMBEDDING} does not support; use a model that pools its prompt"
            ),
        ));
    }
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
