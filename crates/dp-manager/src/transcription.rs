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
//!
//! A model served whole (a Triton deployment whose spec declares a `BYTES` `transcript`
//! output) decodes on the server: the client runs the same preset (chunks, features, the
//! language and task checks), sends each chunk's features with its language (a code, or
//! empty to detect), task and `max_new_tokens` when the spec's `input_schema` declares
//! those inputs, and joins the returned UTF-8 texts of each input's chunks. The language
//! the server reports for an input's first chunk (output `transcript_language`) is sent
//! with its later chunks. The server decodes greedily, so beam options are refused.

use std::collections::BTreeMap;

use dp_preset::audio::{AudioChunks, SpeechTask, SpeechToTextPreset, WhisperPrompting};
use dp_preset::{AudioInput, PresetError};
use dp_signature::ModelsUsedEntry;
use dp_spec::tensor_names::{LANGUAGE, MAX_NEW_TOKENS, TASK, TRANSCRIPT, TRANSCRIPT_LANGUAGE};
use dp_spec::{
    DecoderInfo, DecodingSession, ModelError, ModelSpec, NamedTensors, Tensor, TensorDType,
    TensorData,
};
use serde::Serialize;
use serde_json::Value;

use crate::cache::ModelHandle;
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
    /// was produced); empty when a served model decoded and returned text.
    pub chunk_token_ids: Vec<Vec<u32>>,
}

/// The result of [`ModelManager::transcribe`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TranscriptionOutput {
    /// One transcript per input, in input order.
    pub transcripts: Vec<Transcript>,
    /// The largest key/value cache one batch held, in bytes (0 when the model's server
    /// decoded).
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

/// Each input's first chunk, then the later ones: the first fix each input's language.
fn first_and_later(chunks: &AudioChunks) -> [Vec<Chunk<'_>>; 2] {
    let mut first = Vec::with_capacity(chunks.chunks_per_input.len());
    let mut later = Vec::new();
    let mut features = chunks.features.iter();
    for (input, &count) in chunks.chunks_per_input.iter().enumerate() {
        for k in 0..count {
            let chunk = Chunk {
                input,
                features: features.next().map_or(&[], Vec::as_slice),
            };
            if k == 0 {
                first.push(chunk);
            } else {
                later.push(chunk);
            }
        }
    }
    [first, later]
}

/// The language token the options give (`None`: detect) and the prompt's length, after
/// the language and task rules (an English-only model neither translates nor takes another
/// language): checked before any audio is decoded or sent.
fn checked_prompt(
    prompting: &WhisperPrompting,
    options: &TranscriptionOptions,
) -> Result<(Option<u32>, usize), PresetError> {
    let fixed_language = options
        .language
        .as_deref()
        .map(|l| prompting.language_token(l))
        .transpose()?;
    // Any language stands in for a detected one: every language token makes a prompt of
    // the same length.
    let prompt = prompting.prompt(
        fixed_language.or(prompting.languages.first().map(|(_, id)| *id)),
        options.task,
    )?;
    Ok((fixed_language, prompt.len()))
}

/// Whether the model's spec says it answers with text (a served recognizer).
fn serves_transcripts(spec: &ModelSpec) -> bool {
    spec.output_schema
        .iter()
        .any(|t| t.name == TRANSCRIPT && t.dtype == TensorDType::Bytes)
}

/// The UTF-8 strings of the `BYTES` output `name`, one per row.
fn text_rows(outputs: &NamedTensors, name: &str, rows: usize) -> Result<Vec<String>, PresetError> {
    let tensor = outputs
        .get(name)
        .ok_or_else(|| PresetError::output(format!("the model returned no {name} output")))?;
    let TensorData::Bytes(items) = tensor.data() else {
        return Err(PresetError::output(format!(
            "output {name} is {:?}, not BYTES",
            tensor.dtype()
        )));
    };
    if items.len() != rows {
        return Err(PresetError::output(format!(
            "output {name} has {} rows for {rows} chunks",
            items.len()
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(row, bytes)| {
            String::from_utf8(bytes.clone()).map_err(|err| {
                PresetError::output(format!("output {name} row {row} is not UTF-8 ({err})"))
            })
        })
        .collect()
}

/// One string per row, as a `BYTES` tensor `[rows]`.
fn bytes_tensor<'a>(rows: impl Iterator<Item = &'a str>) -> Result<Tensor, ModelError> {
    let items: Vec<Vec<u8>> = rows.map(|r| r.as_bytes().to_vec()).collect();
    Tensor::new(vec![items.len()], TensorData::Bytes(items))
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
        let Some(generator) = handle.model().generator() else {
            if serves_transcripts(handle.spec()) {
                return self.transcribe_served(&handle, codec, preset.batch_size(), audio, options);
            }
            return Err(no_transcription(
                &name,
                "it has no decoder, and its spec declares no BYTES transcript output",
            ));
        };
        let info = generator.decoder_info();
        let prompting = codec.prompting();
        let (fixed_language, prompt_len) = checked_prompt(prompting, options)
            .map_err(|e| ModelError::from(e).with_detail("model_name", name.as_str()))?;
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
        let [first_chunks, later_chunks] = first_and_later(&chunks);
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

    /// [`Self::transcribe`] with a model that decodes on its server and returns text.
    fn transcribe_served(
        &self,
        handle: &ModelHandle,
        codec: &dyn SpeechToTextPreset,
        batch_size: usize,
        audio: &[AudioInput],
        options: &TranscriptionOptions,
    ) -> Result<TranscriptionOutput, ModelError> {
        let spec = handle.spec();
        let name = spec.model_name.as_str();
        let named = |err: PresetError| ModelError::from(err).with_detail("model_name", name);
        let takes = |input: &str| spec.input_schema.iter().any(|t| t.name == input);
        let generation = &options.generation;
        for (option, given) in [
            ("num_beams", generation.num_beams != 1),
            ("min_new_tokens", generation.min_new_tokens != 0),
            ("no_repeat_ngram_size", generation.no_repeat_ngram_size != 0),
        ] {
            if given {
                return Err(bad_option(
                    option,
                    format!(
                        "model {name} decodes greedily on its server, which takes no \
                         {option}; leave the option out or use an in-process model"
                    ),
                ));
            }
        }
        // The option names are the input names of the served contract.
        for (input, given) in [
            (LANGUAGE, options.language.is_some()),
            (TASK, options.task != SpeechTask::Transcribe),
            (MAX_NEW_TOKENS, generation.max_new_tokens.is_some()),
        ] {
            if given && !takes(input) {
                return Err(bad_option(
                    input,
                    format!(
                        "the deployment of model {name} takes no {input} input (see the \
                         spec's input_schema); leave the option out"
                    ),
                ));
            }
        }
        let max_new_tokens = match generation.max_new_tokens {
            None => 0,
            Some(n) => i32::try_from(n).map_err(|_| {
                bad_option(
                    MAX_NEW_TOKENS,
                    format!("max_new_tokens {n} is far beyond any decoder's positions"),
                )
            })?,
        };
        let prompting = codec.prompting();
        let (fixed_language, _) = checked_prompt(prompting, options).map_err(named)?;
        let mut entry = handle.models_used().clone();
        let mut record = BTreeMap::from([
            ("decoding".to_owned(), Value::from("greedy")),
            ("decoded_by".to_owned(), Value::from("server")),
            (
                "max_new_tokens".to_owned(),
                generation.max_new_tokens.map_or(Value::Null, Value::from),
            ),
            ("task".to_owned(), Value::from(options.task.as_str())),
        ]);
        if let Some(language) = &options.language {
            record.insert("language".to_owned(), Value::from(language.as_str()));
        }
        entry.generation = Some(record);

        let chunks = codec.chunk_audio(audio).map_err(named)?;
        let [first_chunks, later_chunks] = first_and_later(&chunks);
        let mut languages: Vec<Option<u32>> = vec![fixed_language; audio.len()];
        let mut texts = vec![String::new(); audio.len()];
        for pass in [&first_chunks, &later_chunks] {
            for batch in pass.chunks(batch_size.max(1)) {
                let rows = batch.len();
                let slices: Vec<&[f32]> = batch.iter().map(|c| c.features).collect();
                let mut inputs = codec.encoder_inputs(&slices).map_err(named)?;
                if takes(LANGUAGE) {
                    let codes = batch.iter().map(|c| {
                        languages[c.input]
                            .and_then(|id| prompting.language_code(id))
                            .unwrap_or("")
                    });
                    inputs.insert(LANGUAGE.to_owned(), bytes_tensor(codes)?);
                }
                if takes(TASK) {
                    let tasks = std::iter::repeat_n(options.task.as_str(), rows);
                    inputs.insert(TASK.to_owned(), bytes_tensor(tasks)?);
                }
                if takes(MAX_NEW_TOKENS) {
                    let limits = TensorData::Int32(vec![max_new_tokens; rows]);
                    inputs.insert(MAX_NEW_TOKENS.to_owned(), Tensor::new(vec![rows], limits)?);
                }
                let outputs = handle.model().infer(&inputs)?;
                let transcripts = text_rows(&outputs, TRANSCRIPT, rows).map_err(named)?;
                let used = if outputs.contains_key(TRANSCRIPT_LANGUAGE) {
                    Some(text_rows(&outputs, TRANSCRIPT_LANGUAGE, rows).map_err(named)?)
                } else {
                    None
                };
                for (row, chunk) in batch.iter().enumerate() {
                    texts[chunk.input].push_str(&transcripts[row]);
                    let reported = used.as_ref().map_or("", |u| u[row].as_str());
                    if languages[chunk.input].is_none() && !reported.is_empty() {
                        let token = prompting.language_token(reported).map_err(|err| {
                            named(PresetError::output(format!(
                                "the server decoded with language {reported:?}, which the \
                                 model's generation_config.json does not list ({err})"
                            )))
                        })?;
                        languages[chunk.input] = Some(token);
                    }
                }
            }
        }
        let transcripts = texts
            .into_iter()
            .enumerate()
            .map(|(input, text)| Transcript {
                text,
                language: languages[input]
                    .and_then(|id| prompting.language_code(id))
                    .map(str::to_owned),
                duration_seconds: chunks.seconds[input],
                chunk_token_ids: Vec::new(),
            })
            .collect();
        Ok(TranscriptionOutput {
            transcripts,
            kv_cache_peak_bytes: 0,
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
