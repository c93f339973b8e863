//! The `speech_recognition` preset: audio into Whisper's log-mel features, Whisper's
//! decoder prompt, and generated token ids back into text.
//!
//! 1. each audio is decoded to mono at the model's rate and cut into 30-second chunks, each
//!    chunk's log-mel features made exactly as `audio_log_mel` makes them (the same
//!    `preprocessor_config.json` settings and `preprocess_params`);
//! 2. the manager runs the search from the prompt this preset builds: start of transcript,
//!    the language, the task (`transcribe` or `translate`), no timestamps — the prompt
//!    transformers' Whisper `generate` feeds — with the model's `suppress_tokens` never and
//!    `begin_suppress_tokens` not first chosen; an English-only model's prompt has no
//!    language or task;
//! 3. the ids are decoded with special tokens skipped and, when `tokenizer_config.json` asks
//!    for it, transformers' clean-up of spaces.
//!
//! The token ids come from `generation_config.json` (`decoder_start_token_id`,
//! `lang_to_id`, `task_to_id`, `no_timestamps_token_id`, `suppress_tokens`,
//! `begin_suppress_tokens`, `is_multilingual`), each checked against `tokenizer.json`, so a
//! file that names a token the tokenizer spells differently is `invalid_spec`.

use std::collections::BTreeMap;

use dp_spec::{ModelSpec, NamedTensors, Tensor, TensorData, VerifiedArtifacts};
use serde_json::Value;

use super::presets::{AudioChunks, AudioLogMel, INPUT_FEATURES};
use crate::artifacts::ArtifactFiles;
use crate::error::PresetError;
use crate::text::TextTokenizer;
use crate::{AudioInput, EncodedBatch, InputKind, Preset, PresetInputs, PresetOutput};

/// The name of the speech-recognition preset in specs.
pub const SPEECH_RECOGNITION: &str = "speech_recognition";

/// What the decoder is asked to do with the speech.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpeechTask {
    /// Text in the spoken language.
    #[default]
    Transcribe,
    /// English text, whatever the spoken language.
    Translate,
}

impl SpeechTask {
    /// The task's name in `generation_config.json`'s `task_to_id` and in options.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Transcribe => "transcribe",
            Self::Translate => "translate",
        }
    }

    /// The task named `name` (`transcribe` or `translate`).
    ///
    /// # Errors
    /// `invalid_input` (reason `unknown_task`) for any other name.
    pub fn parse(name: &str) -> Result<Self, PresetError> {
        match name {
            "transcribe" => Ok(Self::Transcribe),
            "translate" => Ok(Self::Translate),
            other => Err(PresetError::input(
                "unknown_task",
                format!("speech task {other:?} is neither transcribe nor translate"),
            )),
        }
    }
}

/// Whisper's decoder prompt and token rules, from `generation_config.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhisperPrompting {
    /// `<|startoftranscript|>`, the first token of every prompt.
    pub start_of_transcript: u32,
    /// `<|notimestamps|>`, the prompt's last token.
    pub no_timestamps: u32,
    /// Language code (`en`) → its token (`<|en|>`), in id order; empty for English-only
    /// models.
    pub languages: Vec<(String, u32)>,
    /// Task tokens: `transcribe`, `translate` (absent for English-only models).
    pub transcribe: Option<u32>,
    /// See [`Self::transcribe`].
    pub translate: Option<u32>,
    /// Tokens never generated.
    pub suppress_tokens: Vec<u32>,
    /// Tokens not generated first.
    pub begin_suppress_tokens: Vec<u32>,
}

impl WhisperPrompting {
    /// Whether the model takes a language and a task.
    #[must_use]
    pub fn is_multilingual(&self) -> bool {
        !self.languages.is_empty()
    }

    /// The token of `language`, given as a code (`de`) or a token (`<|de|>`).
    ///
    /// # Errors
    /// `invalid_input`: reason `unknown_language` for a language the model lacks,
    /// `language_unsupported` for an English-only model.
    pub fn language_token(&self, language: &str) -> Result<u32, PresetError> {
        if !self.is_multilingual() {
            return Err(PresetError::input(
                "language_unsupported",
                format!(
                    "this model is English-only: it takes no language (asked for {language:?}); \
                     leave the language out"
                ),
            ));
        }
        let code = language
            .strip_prefix("<|")
            .and_then(|l| l.strip_suffix("|>"))
            .unwrap_or(language)
            .to_ascii_lowercase();
        self.languages
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, id)| *id)
            .ok_or_else(|| {
                let known: Vec<&str> = self.languages.iter().map(|(c, _)| c.as_str()).collect();
                PresetError::input(
                    "unknown_language",
                    format!(
                        "language {language:?} is not one the model knows; use a code among {}",
                        known.join(", ")
                    ),
                )
            })
    }

    /// The code of a language token (`<|de|>` → `de`).
    #[must_use]
    pub fn language_code(&self, token: u32) -> Option<&str> {
        self.languages
            .iter()
            .find(|(_, id)| *id == token)
            .map(|(c, _)| c.as_str())
    }

    /// The decoder prompt: start of transcript, language and task (multilingual models),
    /// no timestamps.
    ///
    /// # Errors
    /// `invalid_input` (reason `language_missing`) when a multilingual model is given no
    /// language token, or (`task_unsupported`) the model lacks the task.
    pub fn prompt(&self, language: Option<u32>, task: SpeechTask) -> Result<Vec<u32>, PresetError> {
        if !self.is_multilingual() {
            if task == SpeechTask::Translate {
                return Err(PresetError::input(
                    "task_unsupported",
                    "this model is English-only: it transcribes, it does not translate",
                ));
            }
            return Ok(vec![self.start_of_transcript, self.no_timestamps]);
        }
        let language = language.ok_or_else(|| {
            PresetError::input(
                "language_missing",
                "a multilingual model's prompt needs a language (given or detected)",
            )
        })?;
        let task_token = match task {
            SpeechTask::Transcribe => self.transcribe,
            SpeechTask::Translate => self.translate,
        }
        .ok_or_else(|| {
            PresetError::input(
                "task_unsupported",
                format!("the model's task_to_id has no {}", task.as_str()),
            )
        })?;
        Ok(vec![
            self.start_of_transcript,
            language,
            task_token,
            self.no_timestamps,
        ])
    }
}

/// The preset side of speech recognition: audio into encoder inputs, the prompt rules, and
/// the text of generated ids. The search between them is the manager's.
pub trait SpeechToTextPreset: Send + Sync {
    /// The log-mel features of every 30-second chunk of each input, with how many chunks
    /// each input made and how long it is.
    ///
    /// # Errors
    /// As the decoding of each input (`audio_*` reasons).
    fn chunk_audio(&self, inputs: &[AudioInput]) -> Result<AudioChunks, PresetError>;

    /// Encoder inputs for some chunks' features (each `n_mels × frames` values):
    /// `input_features` fp32 `[chunks, n_mels, frames]`.
    ///
    /// # Errors
    /// A feature row of the wrong size.
    fn encoder_inputs(&self, features: &[&[f32]]) -> Result<NamedTensors, PresetError>;

    /// The prompt and token rules.
    fn prompting(&self) -> &WhisperPrompting;

    /// The text of generated ids (special tokens skipped).
    ///
    /// # Errors
    /// `invalid_input` when the ids cannot be decoded.
    fn decode_tokens(&self, ids: &[u32]) -> Result<String, PresetError>;
}

/// The `speech_recognition` preset of one model.
pub struct SpeechRecognition {
    log_mel: AudioLogMel,
    tokenizer: TextTokenizer,
    prompting: WhisperPrompting,
    clean_up_spaces: bool,
    params: BTreeMap<String, Value>,
    signature: String,
}

impl std::fmt::Debug for SpeechRecognition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpeechRecognition")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// A token id field of `generation_config.json`.
fn id_field(
    files: &ArtifactFiles<'_>,
    path: &std::path::Path,
    json: &Value,
    key: &str,
) -> Result<Option<u32>, PresetError> {
    match json.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| files.file_error(path, &format!("has {key} that is not a token id"))),
    }
}

/// A list of token ids in `generation_config.json` (absent: empty).
fn id_list(
    files: &ArtifactFiles<'_>,
    path: &std::path::Path,
    json: &Value,
    key: &str,
) -> Result<Vec<u32>, PresetError> {
    match json.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        files.file_error(
                            path,
                            &format!("has {key} with an entry {v} that is not a token id"),
                        )
                    })
            })
            .collect(),
        Some(_) => Err(files.file_error(path, &format!("has {key} that is not a list"))),
    }
}

impl SpeechRecognition {
    /// The preset of `spec`, from the model's verified files.
    ///
    /// # Errors
    /// `invalid_spec` (naming the file) when `tokenizer.json` or `generation_config.json`
    /// is missing or malformed, a token id of one disagrees with the other, or the log-mel
    /// settings are invalid (as `audio_log_mel`).
    pub fn from_spec(spec: &ModelSpec, artifacts: &VerifiedArtifacts) -> Result<Self, PresetError> {
        let log_mel = AudioLogMel::from_spec(spec, artifacts)?;
        let files = ArtifactFiles::new(spec, artifacts);
        let tokenizer_file = files.require(SPEECH_RECOGNITION, "tokenizer.json")?;
        let tokenizer = TextTokenizer::from_json(
            tokenizer_file.bytes(),
            files.display(tokenizer_file),
            usize::MAX >> 1,
            &["<|endoftext|>"],
        )?;
        let (path, json) = files.require_json(SPEECH_RECOGNITION, "generation_config.json")?;
        let required = |key: &str| -> Result<u32, PresetError> {
            id_field(&files, &path, &json, key)?.ok_or_else(|| {
                files.file_error(
                    &path,
                    &format!("has no {key}; a Whisper model's file has one"),
                )
            })
        };
        let start_of_transcript = required("decoder_start_token_id")?;
        let no_timestamps = required("no_timestamps_token_id")?;
        // The token each id must be in the tokenizer.
        let mut expected: Vec<(String, u32)> = vec![
            ("<|startoftranscript|>".to_owned(), start_of_transcript),
            ("<|notimestamps|>".to_owned(), no_timestamps),
        ];
        let multilingual = json
            .get("is_multilingual")
            .and_then(Value::as_bool)
            .unwrap_or_else(|| json.get("lang_to_id").is_some());
        let mut languages = Vec::new();
        let (mut transcribe, mut translate) = (None, None);
        if multilingual {
            let Some(Value::Object(lang_to_id)) = json.get("lang_to_id") else {
                return Err(
                    files.file_error(&path, "says is_multilingual but has no lang_to_id object")
                );
            };
            for (token, id) in lang_to_id {
                let id = id
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        files.file_error(
                            &path,
                            &format!("has lang_to_id.{token} that is not a token id"),
                        )
                    })?;
                let code = token
                    .strip_prefix("<|")
                    .and_then(|t| t.strip_suffix("|>"))
                    .ok_or_else(|| {
                        files.file_error(
                            &path,
                            &format!("has a lang_to_id key {token:?} that is not <|code|>"),
                        )
                    })?;
                languages.push((code.to_owned(), id));
                expected.push((token.clone(), id));
            }
            languages.sort_by_key(|(_, id)| *id);
            let Some(Value::Object(task_to_id)) = json.get("task_to_id") else {
                return Err(
                    files.file_error(&path, "says is_multilingual but has no task_to_id object")
                );
            };
            for (task, slot) in [
                ("transcribe", &mut transcribe),
                ("translate", &mut translate),
            ] {
                if let Some(id) = task_to_id.get(task) {
                    let id = id
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| {
                            files.file_error(
                                &path,
                                &format!("has task_to_id.{task} that is not a token id"),
                            )
                        })?;
                    expected.push((format!("<|{task}|>"), id));
                    *slot = Some(id);
                }
            }
        }
        for (token, id) in &expected {
            let actual = tokenizer.token_id(token);
            if actual != Some(*id) {
                return Err(files.file_error(
                    &path,
                    &format!(
                        "gives {token} the id {id}, but {} has {}; the two files are not from \
                         one model",
                        files.display(tokenizer_file),
                        actual.map_or_else(|| "no such token".to_owned(), |a| format!("id {a}"))
                    ),
                ));
            }
        }
        let prompting = WhisperPrompting {
            start_of_transcript,
            no_timestamps,
            languages,
            transcribe,
            translate,
            suppress_tokens: id_list(&files, &path, &json, "suppress_tokens")?,
            begin_suppress_tokens: id_list(&files, &path, &json, "begin_suppress_tokens")?,
        };
        let clean_up_spaces =
            crate::text::generation::file_clean_up(&files)?.is_some_and(|(flag, _)| flag);
        let mut params = log_mel.params().clone();
        params.insert(
            "clean_up_tokenization_spaces".to_owned(),
            Value::from(clean_up_spaces),
        );
        params.insert("timestamps".to_owned(), Value::from(false));
        Ok(Self {
            log_mel,
            tokenizer,
            prompting,
            clean_up_spaces,
            signature: dp_signature::preprocess_signature(Some(SPEECH_RECOGNITION), &params),
            params,
        })
    }
}

impl SpeechToTextPreset for SpeechRecognition {
    fn chunk_audio(&self, inputs: &[AudioInput]) -> Result<AudioChunks, PresetError> {
        self.log_mel.chunks(inputs)
    }

    fn encoder_inputs(&self, features: &[&[f32]]) -> Result<NamedTensors, PresetError> {
        let c = self.log_mel.extractor().config();
        let row = c.n_mels * c.nb_max_frames;
        if let Some(bad) = features.iter().position(|f| f.len() != row) {
            return Err(PresetError::output(format!(
                "feature row {bad} has {} values, expected {row}",
                features[bad].len()
            )));
        }
        let tensor = Tensor::new(
            vec![features.len(), c.n_mels, c.nb_max_frames],
            TensorData::Fp32(features.concat()),
        )
        .map_err(|err| PresetError::output(err.message))?;
        Ok(NamedTensors::from([(INPUT_FEATURES.to_owned(), tensor)]))
    }

    fn prompting(&self) -> &WhisperPrompting {
        &self.prompting
    }

    fn decode_tokens(&self, ids: &[u32]) -> Result<String, PresetError> {
        let text = self.tokenizer.decode(ids)?;
        Ok(if self.clean_up_spaces {
            crate::text::generation::clean_up_tokenization(&text)
        } else {
            text
        })
    }
}

impl Preset for SpeechRecognition {
    fn name(&self) -> &'static str {
        SPEECH_RECOGNITION
    }

    fn params(&self) -> &BTreeMap<String, Value> {
        &self.params
    }

    fn preprocess_signature(&self) -> &str {
        &self.signature
    }

    fn batch_size(&self) -> usize {
        self.log_mel.batch_size()
    }

    fn accepts(&self, kind: InputKind) -> bool {
        kind == InputKind::Audio
    }

    fn makes_vectors(&self) -> bool {
        false
    }

    fn speech_to_text(&self) -> Option<&dyn SpeechToTextPreset> {
        Some(self)
    }

    fn encode(&self, inputs: PresetInputs<'_>) -> Result<EncodedBatch, PresetError> {
        self.log_mel.encode(inputs)
    }

    fn decode(&self, _: &EncodedBatch, _: NamedTensors) -> Result<PresetOutput, PresetError> {
        Err(PresetError::input(
            "generation_only",
            "preset speech_recognition makes texts by decoding step by step: run the model \
             with task transcribe (`dp transcribe`), not as one tensor call",
        ))
    }
}
