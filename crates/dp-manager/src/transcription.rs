//! Speech recognition ([`ModelManager::transcribe`]): audio through Whisper and the
//! manager's search, one text per input.
//!
//! The model's preset (`speech_recognition`) cuts each audio into 30-second chunks, makes
//! their log-mel features and knows Whisper's prompt; the provider computes logits; the
//! search is the one text generation uses ([`crate::search`]), started from the prompt.
//! Each chunk is decoded on its own and an input's text is the decoding of all its chunks'
//! tokens, in order.
//!
//! Without a language, each input's language is detected as transformers' Whisper
//! `generate` does: the decoder's logits after the start-of-transcript token, restricted to
//! the language tokens, argmax. That step is the prompt's own first step, so detection
//! costs no extra model call; an input's later chunks use the language of its first chunk.

use std::collections::BTreeMap;

use dp_preset::AudioInput;
use dp_preset::audio::{SpeechTask, SpeechToTextPreset};
use dp_signature::ModelsUsedEntry;
use dp_spec::{DecoderInfo, DecodingSession, ModelError};
use serde::Serialize;
use serde_json::Value;

use crate::error::ManagerError;
use crate::generation::{GenerationOptions, bad_option};
use crate::manager::ModelManager;
use crate::search::{self, SearchStart};

/// The options of a transcription: task options of `transcribe`, `dp transcribe` flags.
///
/// ```
/// use std::collections::BTreeMap;
/// use dp_manager::TranscriptionOptions;
///
/// let options = BTreeMap::from([
///     ("language".to_owned(), serde_json::json!("de")),
///     ("num_beams".to_owned(), serde_json::json!(4)),
/// ]);
/// let parsed = TranscriptionOptions::from_task_options(&options)?;
/// assert_eq!(parsed.language.as_deref(), Some("de"));
/// assert_eq!(parsed.generation.num_beams, 4);
/// # Ok::<(), dp_spec::ModelError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TranscriptionOptions {
    /// The spoken language (`en`, `<|en|>`); `None`: detected per input.
    pub language: Option<String>,
    /// Transcribe (the default) or translate into English.
    pub task: SpeechTask,
    /// The search: greedy or beam, `max_new_tokens` per 30-second chunk (default: as
    /// many as the decoder has positions after the prompt, as transformers).
    pub generation: GenerationOptions,
}

impl TranscriptionOptions {
    /// Reads task options: `language` (a string), `task` (`transcribe` or `translate`) and
    /// those of [`GenerationOptions`]; anything else is refused.
    ///
    /// # Errors
    /// `invalid_input` (reason `invalid_option` or `unknown_option`).
    pub fn from_task_options(options: &BTreeMap<String, Value>) -> Result<Self, ModelError> {
        let mut rest = options.clone();
        let mut parsed = Self::default();
        if let Some(value) = rest.remove("language") {
            let language = value.as_str().filter(|l| !l.is_empty()).ok_or_else(|| {
                bad_option(
                    "language",
                    format!("option language must be a language code such as \"en\", got {value}"),
                )
            })?;
            parsed.language = Some(language.to_owned());
        }
        if let Some(value) = rest.remove("task") {
            parsed.task = value
                .as_str()
                .and_then(|t| SpeechTask::parse(t).ok())
                .ok_or_else(|| {
                    bad_option(
                        "task",
                        format!("option task must be \"transcribe\" or \"translate\", got {value}"),
                    )
                })?;
        }
        parsed.generation = GenerationOptions::from_task_options(&rest)?;
        Ok(parsed)
    }
}

/// One input's transcript.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transcript {
    /// The text of all its chunks.
    pub text: String,
    /// The language decoded with (given or detected), as a code (`en`); `None` for an
    /// English-only model.
    pub language: Option<String>,
    /// The audio's length in seconds.
    pub duration_seconds: f64,
    /// The generated token ids of each 30-second chunk (no prompt; end of text when one
    /// was produced).
    pub chunk_token_ids: Vec<Vec<u32>>,
}

/// The result of [`ModelManager::transcribe`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TranscriptionOutput {
    /// One transcript per input, in input order.
    pub transcripts: Vec<Transcript>,
    /// The largest key/value cache one batch held, in bytes.
    pub kv_cache_peak_bytes: u64,
    /// The model, as resolved, with its signatures and the decoding options used.
    pub models_used: Vec<ModelsUsedEntry>,
    /// The canonical signature of that model.
    pub model_signature: String,
}

fn no_transcription(model: &str, why: &str) -> ModelError {
    ModelError::from(ManagerError::BadTask {
        message: format!(
            "model {model} cannot transcribe speech: {why}; use a model whose preset is \
             speech_recognition (see `dp list`)"
        ),
    })
    .with_detail("reason", "transcription_unsupported")
    .with_detail("model", model)
}

/// One chunk to decode: its input, and its features.
struct Chunk<'a> {
    input: usize,
    features: &'a [f32],
}

impl ModelManager {
    /// Transcribes (or translates) each audio with the Whisper `model` (a name or alias
    /// whose preset is `speech_recognition`).
    ///
    /// # Errors
    /// `invalid_input` for no audio, audio that cannot be decoded (`audio_*` reasons), an
    /// unknown language or task, options out of range, or a model that does not
    /// transcribe; `insufficient_memory` when the decoding cache does not fit the budget;
    /// as [`Self::get`].
    pub fn transcribe(
        &self,
        model: &str,
        audio: &[AudioInput],
        options: &TranscriptionOptions,
    ) -> Result<TranscriptionOutput, ModelError> {
        if audio.is_empty() {
            return Err(ModelError::from(ManagerError::BadTask {
                message: format!("transcribe with model {model} needs at least one audio"),
            })
            .with_detail("reason", "audio_missing"));
        }
        let handle = self.get(model)?;
        let name = handle.spec().model_name.clone();
        let preset = handle
            .preset()
            .ok_or_else(|| no_transcription(&name, "it has no preset"))?;
        let codec = preset.speech_to_text().ok_or_else(|| {
            no_transcription(
                &name,
                &format!("its preset is {}, not speech_recognition", preset.name()),
            )
        })?;
        let generator = handle
            .model()
            .generator()
            .ok_or_else(|| no_transcription(&name, "it has no decoder"))?;
        let info = generator.decoder_info();
        let prompting = codec.prompting();
        let fixed_language = options
            .language
            .as_deref()
            .map(|l| prompting.language_token(l))
            .transpose()
            .map_err(|e| ModelError::from(e).with_detail("model_name", name.as_str()))?;
        // Checked before any audio is decoded.
        let prompt_len = prompting
            .prompt(
                fixed_language.or(prompting.languages.first().map(|(_, id)| *id)),
                options.task,
            )
            .map_err(|e| ModelError::from(e).with_detail("model_name", name.as_str()))?
            .len();
        let positions = info.max_target_positions.unwrap_or(usize::MAX);
        let limit = positions.saturating_sub(prompt_len);
        let mut generation = options.generation;
        generation.max_new_tokens = Some(generation.max_new_tokens.unwrap_or(limit));
        let search_options = generation.resolve(limit, &name)?;
        let mut entry = handle.models_used().clone();
        let mut record = search_options.record();
        record.insert("task".to_owned(), Value::from(options.task.as_str()));
        if let Some(language) = &options.language {
            record.insert("language".to_owned(), Value::from(language.as_str()));
        }
        entry.generation = Some(record);

        let chunks = codec
            .chunk_audio(audio)
            .map_err(|e| ModelError::from(e).with_detail("model_name", name.as_str()))?;
        let mut first_chunks = Vec::with_capacity(audio.len());
        let mut later_chunks = Vec::new();
        let mut features = chunks.features.iter();
        for (input, &count) in chunks.chunks_per_input.iter().enumerate() {
            for k in 0..count {
                let chunk = Chunk {
                    input,
                    features: features.next().map_or(&[], Vec::as_slice),
                };
                if k == 0 {
                    first_chunks.push(chunk);
                } else {
                    later_chunks.push(chunk);
                }
            }
        }
        let mut languages: Vec<Option<u32>> = vec![fixed_language; audio.len()];
        let mut tokens: Vec<Vec<Vec<u32>>> = chunks
            .chunks_per_input
            .iter()
            .map(|&n| Vec::with_capacity(n))
            .collect();
        let mut kv_peak = 0;
        let batch_size = preset.batch_size().max(1);
        // Every chunk's encoder output has the model's source positions; its decoder runs
        // the prompt and at most max_new_tokens more.
        let source_len = info.max_source_positions.unwrap_or(0);
        let decoded_len = prompt_len + search_options.max_new_tokens;
        // First chunks first: they fix each input's language for the later ones.
        for pass in [&first_chunks, &later_chunks] {
            for batch in pass.chunks(batch_size) {
                let rows = batch.len() * search_options.num_beams;
                let _reservation = self.reserve_generation(
                    &name,
                    handle.key().device,
                    rows,
                    source_len,
                    decoded_len,
                    info.kv_cache_bytes(rows, source_len, decoded_len),
                )?;
                let slices: Vec<&[f32]> = batch.iter().map(|c| c.features).collect();
                let inputs = codec
                    .encoder_inputs(&slices)
                    .map_err(|e| ModelError::from(e).with_detail("model_name", name.as_str()))?;
                let mut session = generator.start(&inputs)?;
                let start = Self::start_chunks(
                    session.as_mut(),
                    info,
                    codec,
                    batch,
                    &mut languages,
                    options.task,
                    &mut kv_peak,
                )
                .map_err(|e| e.with_detail("model_name", name.as_str()))?;
                let generated = search::search(
                    session.as_mut(),
                    info,
                    &search_options,
                    &start,
                    &mut |_, _| {},
                    &mut kv_peak,
                )?;
                for (chunk, result) in batch.iter().zip(generated) {
                    tokens[chunk.input].push(result.tokens);
                }
            }
        }
        let mut transcripts = Vec::with_capacity(audio.len());
        for (input, chunk_ids) in tokens.into_iter().enumerate() {
            let all: Vec<u32> = chunk_ids.concat();
            let text = codec
                .decode_tokens(&all)
                .map_err(|e| ModelError::from(e).with_detail("model_name", name.as_str()))?;
            transcripts.push(Transcript {
                text,
                language: languages[input]
                    .and_then(|id| prompting.language_code(id))
                    .map(str::to_owned),
                duration_seconds: chunks.seconds[input],
                chunk_token_ids: chunk_ids,
            });
        }
        Ok(TranscriptionOutput {
            transcripts,
            kv_cache_peak_bytes: kv_peak,
            model_signature: entry.model_signature.clone(),
            models_used: vec![entry],
        })
    }

    /// Feeds the start-of-transcript token to every row, detects the language of the
    /// rows whose input has none yet (argmax of the logits over the language tokens, as
    /// transformers' `detect_language`), and returns the prompts the search goes on from.
    fn start_chunks(
        session: &mut dyn DecodingSession,
        info: &DecoderInfo,
        codec: &dyn SpeechToTextPreset,
        batch: &[Chunk<'_>],
        languages: &mut [Option<u32>],
        task: SpeechTask,
        kv_peak: &mut u64,
    ) -> Result<SearchStart, ModelError> {
        let prompting = codec.prompting();
        let sot = prompting.start_of_transcript;
        let logits = session.step(&vec![sot; batch.len()])?;
        *kv_peak = (*kv_peak).max(session.kv_cache_bytes());
        let vocab = info.vocab_size;
        let mut prompts = Vec::with_capacity(batch.len());
        for (row, chunk) in batch.iter().enumerate() {
            if prompting.is_multilingual() && languages[chunk.input].is_none() {
                let scores = &logits[row * vocab..(row + 1) * vocab];
                // The first of equal maxima, as torch's argmax over the masked logits.
                let mut best: Option<(u32, f32)> = None;
                for &(_, id) in &prompting.languages {
                    let score = scores
                        .get(id as usize)
                        .copied()
                        .unwrap_or(f32::NEG_INFINITY);
                    if best.is_none_or(|(b, s)| score > s || (score == s && id < b)) {
                        best = Some((id, score));
                    }
                }
                languages[chunk.input] = best.map(|(id, _)| id);
            }
            prompts.push(prompting.prompt(languages[chunk.input], task)?);
        }
        Ok(SearchStart {
            prompts,
            fed: 1,
            suppress: prompting.suppress_tokens.clone(),
            begin_suppress: prompting.begin_suppress_tokens.clone(),
        })
    }
}
