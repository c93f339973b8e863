//! Speech recognition end to end: Whisper on the candle provider through the
//! `speech_recognition` preset and the manager's search, token for token against
//! transformers' Whisper `generate`.
//!
//! `tiny-whisper` (80 mel bins) and `tiny-whisper-128` (128 mel bins, large-v3 style, other
//! widths, heads and depths) are made by `cargo xtask setup`, as is the test audio (tones,
//! noise, a chirp, a 65-second file and 30 seconds of real speech); the references in
//! `tests/data/reference/speech/` are what transformers computed on the very same files
//! (`make_reference.py` there): language detection, forced languages, translation, beam
//! search, 30-second chunks of long audio, and a batch. Parity is exact: the same token
//! ids, the same languages, the same texts. Fails under CI=true when the assets are missing.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::collections::BTreeMap;
use std::sync::Arc;

use dp_manager::preset::AudioInput;
use dp_manager::preset::audio::SpeechTask;
use dp_manager::{
    GenerationOptions, ModelManager, TaskData, TaskOutput, TaskRequest, TaskType,
    TranscriptionOptions,
};
use dp_provider_candle::CandleProvider;
use dp_spec::{Catalog, ErrorCode};
use serde::Deserialize;
use serde_json::{Value, json};

/// The Whisper models of the catalog, each with its reference.
const MODELS: [&str; 2] = ["tiny-whisper", "tiny-whisper-128"];

#[derive(Deserialize)]
struct Reference {
    special: Special,
    cases: Vec<Case>,
    batched: Batched,
}

#[derive(Deserialize)]
struct Special {
    lang_to_id: BTreeMap<String, u32>,
}

#[derive(Deserialize, Clone)]
struct CaseOptions {
    language: Option<String>,
    task: String,
    num_beams: usize,
    max_new_tokens: usize,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    audio: String,
    options: CaseOptions,
    chunks: Vec<Chunk>,
    text: String,
    language: String,
}

#[derive(Deserialize)]
struct Chunk {
    prompt_ids: Vec<u32>,
    generated_ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Batched {
    audio: Vec<String>,
    runs: BTreeMap<String, BatchedRun>,
}

#[derive(Deserialize)]
struct BatchedRun {
    options: CaseOptions,
    generated_ids: Vec<Vec<u32>>,
    prompt_ids: Vec<Vec<u32>>,
}

fn reference(model: &str) -> Reference {
    let path = dp_tests::data_dir().join(format!("reference/speech/{model}.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn options(case: &CaseOptions) -> TranscriptionOptions {
    TranscriptionOptions {
        language: case.language.clone(),
        task: SpeechTask::parse(&case.task).unwrap(),
        generation: GenerationOptions {
            max_new_tokens: Some(case.max_new_tokens),
            num_beams: case.num_beams,
            ..GenerationOptions::default()
        },
    }
}

fn audio(name: &str) -> AudioInput {
    let path = dp_tests::workspace_root()
        .join(".dp-assets/audio")
        .join(name);
    AudioInput::Encoded(std::fs::read(path).unwrap())
}

/// The catalog over `.dp-assets/models` with the candle provider, or `None` (not in CI)
/// when setup has not made the assets.
fn manager(test: &str) -> Option<ModelManager> {
    for model in MODELS {
        dp_tests::asset(&format!("models/{model}"), test)?;
    }
    dp_tests::asset("audio/speech_16k_s16.wav", test)?;
    let catalog = Catalog::load(&dp_tests::sample_catalog()).unwrap();
    let manager = ModelManager::builder(
        catalog,
        dp_tests::workspace_root().join(".dp-assets/models"),
    )
    .provider(Arc::new(CandleProvider::new()))
    .reaper(false)
    .build()
    .unwrap();
    Some(manager)
}

/// The language code of a prompt (its second token), by the reference's table.
fn prompt_language(reference: &Reference, prompt: &[u32]) -> String {
    reference
        .special
        .lang_to_id
        .iter()
        .find(|(_, id)| **id == prompt[1])
        .map(|(code, _)| code.clone())
        .unwrap()
}

#[test]
fn each_audio_gives_transformers_token_ids_languages_and_text() {
    let Some(manager) = manager("each_audio_gives_transformers_token_ids_languages_and_text")
    else {
        return;
    };
    let mut checked = 0;
    for model in MODELS {
        let reference = reference(model);
        for case in &reference.cases {
            let what = format!("{model} {}", case.name);
            let out = manager
                .transcribe(model, &[audio(&case.audio)], &options(&case.options))
                .unwrap();
            let transcript = &out.transcripts[0];
            let want: Vec<&Vec<u32>> = case.chunks.iter().map(|c| &c.generated_ids).collect();
            let got: Vec<&Vec<u32>> = transcript.chunk_token_ids.iter().collect();
            assert_eq!(got, want, "{what}: token ids per 30-second chunk");
            assert_eq!(
                transcript.language.as_deref(),
                Some(case.language.as_str()),
                "{what}"
            );
            for chunk in &case.chunks {
                assert_eq!(
                    prompt_language(&reference, &chunk.prompt_ids),
                    case.language
                );
            }
            assert_eq!(transcript.text, case.text, "{what}");
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} cases");
}

#[test]
fn a_batch_gives_the_same_ids_as_transformers_batch() {
    let Some(manager) = manager("a_batch_gives_the_same_ids_as_transformers_batch") else {
        return;
    };
    for model in MODELS {
        let reference = reference(model);
        let inputs: Vec<AudioInput> = reference.batched.audio.iter().map(|a| audio(a)).collect();
        for (name, run) in &reference.batched.runs {
            let out = manager
                .transcribe(model, &inputs, &options(&run.options))
                .unwrap();
            for (i, transcript) in out.transcripts.iter().enumerate() {
                assert_eq!(
                    transcript.chunk_token_ids,
                    vec![run.generated_ids[i].clone()],
                    "{model} {name}: input {i}"
                );
                assert_eq!(
                    transcript.language.as_deref(),
                    Some(prompt_language(&reference, &run.prompt_ids[i]).as_str()),
                    "{model} {name}: input {i}"
                );
            }
        }
    }
}

#[test]
fn the_task_api_transcribes_and_records_how() {
    let Some(manager) = manager("the_task_api_transcribes_and_records_how") else {
        return;
    };
    let reference = reference("tiny-whisper");
    let case = reference
        .cases
        .iter()
        .find(|c| c.audio.starts_with("long_65s") && c.options.language.is_none())
        .unwrap();
    let mut request = TaskRequest::new(
        TaskType::Transcribe,
        "tiny-whisper",
        Some(TaskData::Audio(vec![audio(&case.audio)])),
    );
    request.options = BTreeMap::from([
        (
            "max_new_tokens".to_owned(),
            json!(case.options.max_new_tokens),
        ),
        ("task".to_owned(), json!(case.options.task)),
    ]);
    let response = manager.task(request).unwrap();
    let TaskOutput::Transcripts(transcripts) = response.output else {
        panic!("transcripts expected")
    };
    assert_eq!(transcripts[0].text, case.text);
    assert_eq!(transcripts[0].chunk_token_ids.len(), 3, "65 s is 3 chunks");
    assert!((transcripts[0].duration_seconds - 65.0).abs() < 1e-9);
    let entry = &response.models_used[0];
    assert_eq!(entry.model_name, "tiny-whisper");
    let generation = entry.generation.as_ref().unwrap();
    assert_eq!(generation["task"], json!("transcribe"));
    assert_eq!(generation["decoding"], json!("greedy"));
    assert_eq!(
        generation["max_new_tokens"],
        json!(case.options.max_new_tokens)
    );
    assert_eq!(response.model_signature, entry.model_signature);
    assert!(entry.preprocess_signature.starts_with("pp1:"), "{entry:?}");
}

/// The reason detail of an error.
fn reason(err: &dp_spec::ModelError) -> String {
    err.details["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn bad_requests_are_refused_with_stable_reasons() {
    let Some(manager) = manager("bad_requests_are_refused_with_stable_reasons") else {
        return;
    };
    let speech = audio("speech_16k_s16.wav");
    let refuse = |model: &str, audio: Vec<AudioInput>, options: Value| {
        let mut request =
            TaskRequest::new(TaskType::Transcribe, model, Some(TaskData::Audio(audio)));
        request.options = serde_json::from_value(options).unwrap();
        manager.task(request).expect_err("refused")
    };
    let cases: Vec<(&str, Vec<AudioInput>, Value, &str)> = vec![
        ("tiny-whisper", vec![], json!({}), "audio_missing"),
        (
            "tiny-whisper",
            vec![speech.clone()],
            json!({"language": "xx"}),
            "unknown_language",
        ),
        (
            "tiny-whisper",
            vec![speech.clone()],
            json!({"task": "summarize"}),
            "invalid_option",
        ),
        (
            "tiny-whisper",
            vec![speech.clone()],
            json!({"max_new_tokens": 445}),
            "invalid_option",
        ),
        (
            "tiny-whisper",
            vec![speech.clone()],
            json!({"temperature": 0.2}),
            "unknown_option",
        ),
        (
            "tiny-whisper",
            vec![AudioInput::Encoded(
                b"RIFF\x10\x00\x00\x00WAVEjunk".to_vec(),
            )],
            json!({}),
            "",
        ),
        (
            "tiny-t5",
            vec![speech.clone()],
            json!({}),
            "transcription_unsupported",
        ),
    ];
    for (model, audio, options, want) in cases {
        let err = refuse(model, audio, options.clone());
        assert_eq!(err.error_code, ErrorCode::InvalidInput, "{options}: {err}");
        let got = reason(&err);
        if want.is_empty() {
            assert!(got.starts_with("audio_"), "{options}: {err}");
        } else {
            assert_eq!(got, want, "{options}: {err}");
        }
    }
    // The limit is the decoder's positions after the 4-token prompt: 444 is allowed.
    let err = refuse(
        "tiny-whisper",
        vec![speech.clone()],
        json!({"max_new_tokens": 445}),
    );
    assert!(err.message.contains("1 to 444"), "{err}");
    // A Whisper model neither generates from text nor runs as one tensor call.
    let err = manager
        .generate("tiny-whisper", &["hello"], &GenerationOptions::default())
        .expect_err("no text generation");
    assert_eq!(reason(&err), "generation_unsupported", "{err}");
}

#[test]
fn a_config_the_weights_do_not_fit_is_invalid_spec_naming_what_differs() {
    let test = "a_config_the_weights_do_not_fit_is_invalid_spec_naming_what_differs";
    let Some(model_dir) = dp_tests::asset("models/tiny-whisper", test) else {
        return;
    };
    let Some(_) = manager(test) else {
        return;
    };
    for (key, value, needle) in [
        ("decoder_layers", json!(3), "model.decoder.layers.2"),
        (
            "decoder_attention_heads",
            json!(5),
            "not a multiple of decoder_attention_heads",
        ),
        // The spec's input_schema says 80 mel bins: caught before the weights.
        (
            "num_mel_bins",
            json!(128),
            "config.json implies [-1, 128, 3000]",
        ),
    ] {
        let scratch = tempfile::tempdir().unwrap();
        let models = scratch.path().join("models");
        dp_tests::copy_dir(&model_dir, &models.join("tiny-whisper")).unwrap();
        let config_path = models.join("tiny-whisper/config.json");
        let mut config: Value =
            serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
        config[key] = value;
        std::fs::write(&config_path, config.to_string()).unwrap();
        let catalog_dir = scratch.path().join("catalog");
        std::fs::create_dir_all(catalog_dir.join("speech_recognition")).unwrap();
        std::fs::copy(
            dp_tests::sample_catalog().join("speech_recognition/tiny-whisper.yaml"),
            catalog_dir.join("speech_recognition/tiny-whisper.yaml"),
        )
        .unwrap();
        let manager = ModelManager::builder(Catalog::load(&catalog_dir).unwrap(), &models)
            .provider(Arc::new(CandleProvider::new()))
            .reaper(false)
            .build()
            .unwrap();
        let err = manager
            .transcribe(
                "tiny-whisper",
                &[audio("two_tone_16k_s16.wav")],
                &TranscriptionOptions::default(),
            )
            .expect_err(key);
        assert_eq!(err.error_code, ErrorCode::InvalidSpec, "{key}: {err}");
        assert!(err.message.contains(needle), "{key}: {err}");
        assert!(err.message.contains("tiny-whisper"), "{key}: {err}");
    }
}

/// What the stand-in server answers (see [`ServedFaults`]).
#[derive(Clone, Copy, Debug)]
enum Reply {
    /// `chunk <row>` and language `de` for every row.
    Good,
    /// A transcript that is not UTF-8.
    NotUtf8,
    /// One transcript fewer than the rows sent.
    MissingRow,
    /// No `transcript` output at all.
    NoTranscript,
    /// A language the model's generation_config.json does not list.
    UnknownLanguage,
}

/// A stand-in for a served recognizer, to inject answers the real server of
/// `tests/triton_e2e.rs` (which always answers well) cannot be made to give; it records
/// every request.
struct ServedFaults {
    reply: Reply,
    requests: Arc<std::sync::Mutex<Vec<dp_spec::NamedTensors>>>,
}

impl dp_spec::LoadedModel for ServedFaults {
    fn infer(
        &self,
        inputs: &dp_spec::NamedTensors,
    ) -> Result<dp_spec::NamedTensors, dp_spec::ModelError> {
        use dp_spec::{Tensor, TensorData};
        self.requests.lock().unwrap().push(inputs.clone());
        let rows = inputs["input_features"].shape()[0];
        let mut texts: Vec<Vec<u8>> = (0..rows)
            .map(|r| format!(" chunk {r}").into_bytes())
            .collect();
        let mut language = "de";
        match self.reply {
            Reply::Good | Reply::NoTranscript => {}
            Reply::NotUtf8 => texts[0] = vec![b'a', 0xff, 0xfe],
            Reply::MissingRow => {
                texts.pop();
            }
            Reply::UnknownLanguage => language = "xx",
        }
        let bytes = |items: Vec<Vec<u8>>| Tensor::new(vec![items.len()], TensorData::Bytes(items));
        let mut out = dp_spec::NamedTensors::new();
        if !matches!(self.reply, Reply::NoTranscript) {
            out.insert("transcript".to_owned(), bytes(texts)?);
        }
        out.insert(
            "transcript_language".to_owned(),
            bytes(vec![language.as_bytes().to_vec(); rows])?,
        );
        Ok(out)
    }
}

struct ServedFaultsProvider {
    reply: Reply,
    requests: Arc<std::sync::Mutex<Vec<dp_spec::NamedTensors>>>,
}

impl dp_spec::ModelProvider for ServedFaultsProvider {
    fn name(&self) -> &'static str {
        "served-faults"
    }

    fn supports(&self, spec: &dp_spec::ModelSpec) -> bool {
        spec.runtime == dp_spec::Runtime::Triton
    }

    fn validate_local_artifacts(
        &self,
        _spec: &dp_spec::ModelSpec,
        _artifacts: &dp_spec::VerifiedArtifacts,
    ) -> Result<(), dp_spec::ModelError> {
        Ok(())
    }

    fn load(
        &self,
        _request: &dp_spec::LoadRequest<'_>,
    ) -> Result<Box<dyn dp_spec::LoadedModel>, dp_spec::ModelError> {
        Ok(Box::new(ServedFaults {
            reply: self.reply,
            requests: Arc::clone(&self.requests),
        }))
    }
}

#[test]
fn served_transcripts_follow_the_contract_and_bad_answers_are_clear_errors() {
    let test = "served_transcripts_follow_the_contract_and_bad_answers_are_clear_errors";
    if dp_tests::asset("models/tiny-whisper", test).is_none()
        || dp_tests::asset("audio/long_65s_16k_s16.wav", test).is_none()
    {
        return;
    }
    let served = |reply: Reply| {
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let catalog = Catalog::load(&dp_tests::sample_catalog()).unwrap();
        let manager = ModelManager::builder(
            catalog,
            dp_tests::workspace_root().join(".dp-assets/models"),
        )
        .provider(Arc::new(ServedFaultsProvider {
            reply,
            requests: Arc::clone(&requests),
        }))
        .reaper(false)
        .build()
        .unwrap();
        (manager, requests)
    };
    let detect = TranscriptionOptions::default();
    let inputs = [audio("long_65s_16k_s16.wav"), audio("chirp_16k_s16.wav")];

    // The requests: first chunks first, language empty (detect), the task, and 0 for "as
    // many tokens as the decoder allows"; then the long file's later chunks with the
    // language the server reported; the chunks' texts joined per input.
    let (manager, requests) = served(Reply::Good);
    let out = manager
        .transcribe("tiny-whisper-triton", &inputs, &detect)
        .unwrap();
    let texts: Vec<&str> = out.transcripts.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(texts, [" chunk 0 chunk 0 chunk 1", " chunk 1"]);
    assert_eq!(out.transcripts[0].language.as_deref(), Some("de"));
    let requests = requests.lock().unwrap();
    assert_eq!(requests.len(), 2);
    let strings = |request: &dp_spec::NamedTensors, name: &str| -> Vec<String> {
        match request[name].data() {
            dp_spec::TensorData::Bytes(items) => items
                .iter()
                .map(|b| String::from_utf8(b.clone()).unwrap())
                .collect(),
            other => panic!("{name}: {other:?}"),
        }
    };
    assert_eq!(requests[0]["input_features"].shape(), [2, 80, 3000]);
    assert_eq!(strings(&requests[0], "language"), ["", ""]);
    assert_eq!(strings(&requests[0], "task"), ["transcribe", "transcribe"]);
    assert_eq!(
        requests[0]["max_new_tokens"].data(),
        &dp_spec::TensorData::Int32(vec![0, 0])
    );
    assert_eq!(requests[1]["input_features"].shape(), [2, 80, 3000]);
    assert_eq!(strings(&requests[1], "language"), ["de", "de"]);
    drop(requests);

    for (reply, says) in [
        (Reply::NotUtf8, "row 0 is not UTF-8"),
        (Reply::MissingRow, "has 1 rows for 2 chunks"),
        (Reply::NoTranscript, "no transcript output"),
        (Reply::UnknownLanguage, "does not list"),
    ] {
        let (manager, _) = served(reply);
        let err = manager
            .transcribe("tiny-whisper-triton", &inputs, &detect)
            .unwrap_err();
        assert_eq!(err.error_code, ErrorCode::InvalidInput, "{reply:?}: {err}");
        assert!(err.message.contains(says), "{reply:?}: {err}");
        assert_eq!(
            err.details["model_name"], "tiny-whisper-triton",
            "{reply:?}"
        );
    }
}
