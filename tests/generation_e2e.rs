//! Text generation end to end: T5 on the candle provider through the manager's search,
//! token for token against transformers' `generate`.
//!
//! `tiny-t5` (T5 v1.1 layout: gated GELU, untied head) and `tiny-t5-v1` (v1.0: ReLU, tied
//! head, other sizes and bucket counts) are made by `cargo xtask setup`; the references in
//! `tests/data/reference/generation/` are what transformers computed on the very same files
//! (`make_reference.py` there), for greedy and beam search with several options, each text
//! alone and all of them in one padded batch. Parity is exact: the same token ids, the same
//! texts. Fails under CI=true when the assets are missing.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::collections::BTreeMap;
use std::sync::Arc;

use dp_manager::preset::PresetInputs;
use dp_manager::{
    EarlyStopping, GenerationOptions, ModelManager, TaskData, TaskOutput, TaskRequest, TaskType,
};
use dp_provider_candle::CandleProvider;
use dp_spec::{Catalog, ErrorCode, TensorData};
use serde::Deserialize;
use serde_json::{Value, json};

/// The generating models of the catalog, each with its reference.
const MODELS: [&str; 2] = ["tiny-t5", "tiny-t5-v1"];

#[derive(Deserialize)]
struct Reference {
    generate_common: BTreeMap<String, Value>,
    options: BTreeMap<String, BTreeMap<String, Value>>,
    inputs: Vec<Input>,
    single: BTreeMap<String, Outputs>,
    batched: BTreeMap<String, Outputs>,
}

#[derive(Deserialize)]
struct Input {
    text: String,
    input_ids: Vec<i64>,
    truncated: bool,
}

#[derive(Deserialize)]
struct Outputs {
    sequences: Vec<Vec<u32>>,
    texts: Vec<String>,
}

fn reference(model: &str) -> Reference {
    let path = dp_tests::data_dir().join(format!("reference/generation/{model}.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The options of the reference's option set `name`, as a generation call takes them.
fn options(reference: &Reference, name: &str) -> GenerationOptions {
    let mut all = reference.generate_common.clone();
    all.extend(reference.options[name].clone());
    let count = |key: &str| usize::try_from(all[key].as_u64().unwrap()).unwrap();
    #[allow(clippy::cast_possible_truncation, reason = "small test values")]
    GenerationOptions {
        max_new_tokens: Some(count("max_new_tokens")),
        min_new_tokens: count("min_new_tokens"),
        num_beams: count("num_beams"),
        length_penalty: all["length_penalty"].as_f64().unwrap() as f32,
        no_repeat_ngram_size: count("no_repeat_ngram_size"),
        early_stopping: match &all["early_stopping"] {
            Value::Bool(false) => EarlyStopping::Heuristic,
            Value::Bool(true) => EarlyStopping::WhenFull,
            _ => EarlyStopping::Never,
        },
    }
}

/// The catalog over `.dp-assets/models` with the candle provider, or `None` (not in CI)
/// when setup has not made the assets.
fn manager(test: &str) -> Option<ModelManager> {
    for model in MODELS {
        dp_tests::asset(&format!("models/{model}"), test)?;
    }
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

/// What the reference's `sequences` hold: the decoder start, then the generated ids.
fn with_start(ids: &[u32]) -> Vec<u32> {
    std::iter::once(0).chain(ids.iter().copied()).collect()
}

#[test]
fn each_text_alone_gives_transformers_token_ids() {
    let Some(manager) = manager("each_text_alone_gives_transformers_token_ids") else {
        return;
    };
    let mut checked = 0;
    for model in MODELS {
        let reference = reference(model);
        for (name, want) in &reference.single {
            let options = options(&reference, name);
            for (i, input) in reference.inputs.iter().enumerate() {
                let out = manager.generate(model, &[&input.text], &options).unwrap();
                assert_eq!(
                    with_start(&out.token_ids[0]),
                    want.sequences[i],
                    "{model} {name}: text {i} ({:?})",
                    &input.text[..input.text.len().min(40)]
                );
                assert_eq!(out.texts[0], want.texts[i], "{model} {name}: text {i}");
                assert_eq!(
                    out.truncated,
                    if input.truncated { vec![0] } else { vec![] }
                );
                checked += 1;
            }
        }
        // Both searches and every option ran on this model.
        assert!(reference.single.len() >= 6, "{model}");
    }
    eprintln!("generation parity: {checked} (model, options, text) cases, all token-identical");
}

#[test]
fn a_padded_batch_gives_the_same_ids_as_transformers_batched() {
    let Some(manager) = manager("a_padded_batch_gives_the_same_ids_as_transformers_batched") else {
        return;
    };
    for model in MODELS {
        let reference = reference(model);
        let texts: Vec<&str> = reference.inputs.iter().map(|i| i.text.as_str()).collect();
        for (name, want) in &reference.batched {
            let out = manager
                .generate(model, &texts, &options(&reference, name))
                .unwrap();
            let got: Vec<Vec<u32>> = out.token_ids.iter().map(|ids| with_start(ids)).collect();
            assert_eq!(got, want.sequences, "{model} {name}");
            assert_eq!(out.texts, want.texts, "{model} {name}");
            let long: Vec<usize> = (0..texts.len())
                .filter(|&i| reference.inputs[i].truncated)
                .collect();
            assert!(!long.is_empty(), "the references include a truncated text");
            assert_eq!(out.truncated, long, "{model}");
            assert!(out.kv_cache_peak_bytes > 0);
        }
    }
}

#[test]
fn encoder_inputs_are_the_tokenizer_s() {
    let Some(manager) = manager("encoder_inputs_are_the_tokenizer_s") else {
        return;
    };
    for model in MODELS {
        let reference = reference(model);
        let handle = manager.get(model).unwrap();
        let preset = handle.preset().unwrap().seq2seq().unwrap();
        for input in &reference.inputs {
            let batch = preset
                .encode_sources(PresetInputs::Texts(&[&input.text]))
                .unwrap();
            let TensorData::Int64(ids) = batch.tensors["input_ids"].data() else {
                panic!("int64 ids")
            };
            assert_eq!(ids, &input.input_ids, "{model}: {:?}", input.text);
            assert_eq!(batch.truncated, [input.truncated]);
        }
    }
}

#[test]
fn the_task_api_records_the_options_and_streams() {
    let Some(manager) = manager("the_task_api_records_the_options_and_streams") else {
        return;
    };
    let reference = reference("tiny-t5");
    let texts: Vec<String> = reference.inputs[..3]
        .iter()
        .map(|i| i.text.clone())
        .collect();
    let mut request = TaskRequest::new(
        TaskType::TextGeneration,
        "tiny-t5",
        Some(TaskData::Texts(texts.clone())),
    );
    request.options = BTreeMap::from([
        ("num_beams".to_owned(), json!(4)),
        ("max_new_tokens".to_owned(), json!(20)),
    ]);
    let response = manager.task(request).unwrap();
    let TaskOutput::Texts(generated) = response.output else {
        panic!("texts expected")
    };
    assert_eq!(generated, reference.single["beam4"].texts[..3]);
    let entry = &response.models_used[0];
    let recorded = entry.generation.as_ref().unwrap();
    assert_eq!(recorded["num_beams"], json!(4));
    assert_eq!(recorded["max_new_tokens"], json!(20));
    assert_eq!(recorded["decoding"], json!("beam_search"));
    assert_eq!(recorded["early_stopping"], json!(false));
    // Options shape the output, not the model's identity.
    assert_eq!(
        response.model_signature,
        manager.models_used("tiny-t5").unwrap().model_signature
    );

    // Greedy streaming: pieces arrive token by token and add up to the texts.
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let greedy = options(&reference, "greedy");
    let mut pieces: Vec<String> = vec![String::new(); refs.len()];
    let mut count = 0;
    let out = manager
        .generate_streaming("tiny-t5", &refs, &greedy, &mut |piece| {
            assert!(
                piece.token_id.is_some(),
                "greedy pieces come with their token"
            );
            pieces[piece.input].push_str(piece.text);
            count += 1;
        })
        .unwrap();
    assert_eq!(pieces, out.texts);
    assert_eq!(out.texts, reference.single["greedy"].texts[..3]);
    assert!(count > refs.len(), "{count} pieces: more than one per text");
}

#[test]
fn bad_requests_get_stable_codes() {
    let Some(manager) = manager("bad_requests_get_stable_codes") else {
        return;
    };
    let reason = |err: &dp_spec::ModelError| err.details["reason"].as_str().unwrap().to_owned();
    let generate = |options: GenerationOptions| manager.generate("tiny-t5", &["Hello"], &options);
    for (options, option) in [
        (
            GenerationOptions {
                max_new_tokens: Some(0),
                ..GenerationOptions::default()
            },
            "max_new_tokens",
        ),
        (
            GenerationOptions {
                // Above the model's 512 positions (n_positions).
                max_new_tokens: Some(513),
                ..GenerationOptions::default()
            },
            "max_new_tokens",
        ),
        (
            GenerationOptions {
                num_beams: 0,
                ..GenerationOptions::default()
            },
            "num_beams",
        ),
        (
            GenerationOptions {
                min_new_tokens: 30,
                max_new_tokens: Some(20),
                ..GenerationOptions::default()
            },
            "min_new_tokens",
        ),
    ] {
        let err = generate(options).unwrap_err();
        assert_eq!(err.error_code, ErrorCode::InvalidInput, "{option}: {err}");
        assert_eq!(reason(&err), "invalid_option");
        assert_eq!(err.details["option"], json!(option), "{err}");
    }
    let mut request = TaskRequest::new(
        TaskType::TextGeneration,
        "tiny-t5",
        Some(TaskData::Texts(vec!["Hello".to_owned()])),
    );
    request.options.insert("temperature".to_owned(), json!(0.7));
    let err = manager.task(request).unwrap_err();
    assert_eq!(reason(&err), "unknown_option", "{err}");

    let err = manager
        .generate("tiny-t5", &[], &GenerationOptions::default())
        .unwrap_err();
    assert_eq!(reason(&err), "texts_missing");
    let err = manager
        .generate("tiny-t5", &["ok", "  "], &GenerationOptions::default())
        .unwrap_err();
    assert_eq!(reason(&err), "empty_text", "{err}");

    // A model without a decoder, asked to generate.
    let err = manager
        .generate("tiny-bert-cls", &["Hello"], &GenerationOptions::default())
        .unwrap_err();
    assert_eq!(err.error_code, ErrorCode::InvalidInput);
    assert_eq!(reason(&err), "generation_unsupported", "{err}");
    // And a generator asked for embeddings.
    let err = manager.embed("tiny-t5", &["Hello"]).unwrap_err();
    assert_eq!(err.error_code, ErrorCode::InvalidInput, "{err}");
}

#[test]
fn the_kv_cache_counts_against_the_ram_budget() {
    if dp_tests::asset(
        "models/tiny-t5",
        "the_kv_cache_counts_against_the_ram_budget",
    )
    .is_none()
    {
        return;
    }
    let catalog = Catalog::load(&dp_tests::sample_catalog()).unwrap();
    let spec_ram = catalog
        .get("tiny-t5")
        .unwrap()
        .spec
        .resource_requirements
        .ram_bytes;
    // Room for the model and a small cache, not for 8 beams × 512 new tokens.
    let manager = ModelManager::builder(
        catalog,
        dp_tests::workspace_root().join(".dp-assets/models"),
    )
    .provider(Arc::new(CandleProvider::new()))
    .ram_budget_bytes(spec_ram + 200_000)
    .reaper(false)
    .build()
    .unwrap();
    let small = GenerationOptions {
        max_new_tokens: Some(8),
        ..GenerationOptions::default()
    };
    let out = manager
        .generate("tiny-t5", &["Hello world."], &small)
        .unwrap();
    assert!(out.kv_cache_peak_bytes > 0 && out.kv_cache_peak_bytes < 200_000);
    let large = GenerationOptions {
        max_new_tokens: Some(512),
        num_beams: 8,
        ..GenerationOptions::default()
    };
    let err = manager
        .generate("tiny-t5", &["Hello world."; 8], &large)
        .unwrap_err();
    assert_eq!(err.error_code, ErrorCode::InsufficientMemory, "{err}");
    assert_eq!(err.details["reason"], json!("kv_cache_over_budget"));
    // Nothing is left reserved: the small request still fits.
    manager
        .generate("tiny-t5", &["Hello world."], &small)
        .unwrap();
}
