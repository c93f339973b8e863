//! Text models beyond MiniLM, end to end through the manager, on every in-process provider
//! that serves them (candle, ONNX Runtime): XLM-RoBERTa with E5's `query: `/`passage: `
//! prompts (`tiny-xlmr-e5`), BERT with CLS pooling and a query prompt (`tiny-bert-cls`), and
//! cross-encoder reranking with a BERT head (`tiny-reranker`, sigmoid) and an XLM-R head
//! (`tiny-xlmr-reranker`, raw logits).
//!
//! The references are what sentence-transformers 6.0.1 (`SentenceTransformer`,
//! `CrossEncoder`) computed on the very files `cargo xtask setup` makes
//! (`tests/data/reference/text/`, made by `make_reference.py`). Parity: cosine ≥ 0.99999 and
//! max |Δ| ≤ 1e-4 per embedding, |Δscore| ≤ 1e-4 per document, token ids equal. Fails under
//! CI=true when the assets are missing.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::collections::BTreeMap;
use std::sync::Arc;

use dp_manager::preset::PresetInputs;
use dp_manager::{ModelManager, TaskData, TaskOutput, TaskRequest, TaskType};
use dp_provider_candle::CandleProvider;
use dp_provider_onnx::{OnnxProvider, OnnxProviderConfig};
use dp_spec::{Catalog, ErrorCode, TensorData};
use dp_tests::cosine;
use serde::Deserialize;

/// The embedding models and the reference each is checked against.
const EMBEDDERS: [(&str, &str); 4] = [
    ("tiny-xlmr-e5", "tiny-xlmr-e5"),
    ("tiny-xlmr-e5-onnx", "tiny-xlmr-e5"),
    ("tiny-bert-cls", "tiny-bert-cls"),
    ("tiny-bert-cls-onnx", "tiny-bert-cls"),
];

/// The rerankers and their references.
const RERANKERS: [(&str, &str); 4] = [
    ("tiny-reranker", "tiny-reranker"),
    ("tiny-reranker-onnx", "tiny-reranker"),
    ("tiny-xlmr-reranker", "tiny-xlmr-reranker"),
    ("tiny-xlmr-reranker-onnx", "tiny-xlmr-reranker"),
];

#[derive(Deserialize)]
struct EmbeddingReference {
    texts: Vec<String>,
    pooling: String,
    outputs: BTreeMap<String, PromptOutputs>,
}

#[derive(Deserialize)]
struct PromptOutputs {
    prompt: String,
    token_ids: Vec<TokenIds>,
    embeddings: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct TokenIds {
    input_ids: Vec<i64>,
    #[serde(default)]
    token_type_ids: Option<Vec<i64>>,
}

#[derive(Deserialize)]
struct RerankReference {
    query: String,
    documents: Vec<String>,
    pair_token_ids: Vec<TokenIds>,
    scores: Vec<f32>,
    logits: Vec<f32>,
    rank: Vec<Ranked>,
}

#[derive(Deserialize)]
struct Ranked {
    corpus_id: usize,
    score: f32,
}

fn reference<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = dp_tests::data_dir().join(format!("reference/text/{name}.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The catalog over `.dp-assets/models` with the candle and ONNX providers, or `None` (not
/// in CI) when setup has not made the assets.
fn manager(test: &str) -> Option<ModelManager> {
    for (model, _) in EMBEDDERS.iter().chain(&RERANKERS) {
        dp_tests::asset(&format!("models/{model}"), test)?;
    }
    let onnx_library = dp_tests::asset("onnxruntime/libonnxruntime.so", test)?;
    let catalog = Catalog::load(&dp_tests::workspace_root().join("specs/catalog")).unwrap();
    let manager = ModelManager::builder(
        catalog,
        dp_tests::workspace_root().join(".dp-assets/models"),
    )
    .provider(Arc::new(CandleProvider::new()))
    .provider(Arc::new(OnnxProvider::new(OnnxProviderConfig {
        library_path: Some(onnx_library),
    })))
    .reaper(false)
    .build()
    .unwrap();
    Some(manager)
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn int64(data: &TensorData) -> &[i64] {
    let TensorData::Int64(v) = data else {
        panic!("int64 tensor expected")
    };
    v
}

/// The row `row` of a `[batch, seq]` tensor, without its padding (`mask` 0).
fn unpadded(values: &[i64], mask: &[i64], seq: usize, row: usize) -> Vec<i64> {
    values[row * seq..(row + 1) * seq]
        .iter()
        .zip(&mask[row * seq..(row + 1) * seq])
        .filter(|(_, m)| **m == 1)
        .map(|(v, _)| *v)
        .collect()
}

#[test]
fn embeddings_with_each_prompt_match_sentence_transformers() {
    let Some(manager) = manager("embeddings_with_each_prompt_match_sentence_transformers") else {
        return;
    };
    let mut worst = (1.0_f64, 0.0_f32);
    for (model, reference_name) in EMBEDDERS {
        let reference: EmbeddingReference = reference(reference_name);
        let texts: Vec<&str> = reference.texts.iter().map(String::as_str).collect();
        let mut signatures = Vec::new();
        for (key, want) in &reference.outputs {
            let prompt = (key != "none").then_some(key.as_str());
            let out = manager.embed_with_prompt(model, &texts, prompt).unwrap();
            let entry = &out.models_used[0];
            assert_eq!(entry.prompt_name.as_deref(), prompt, "{model}");
            signatures.push(entry.preprocess_signature.clone());
            for ((text, got), expected) in texts.iter().zip(&out.embeddings).zip(&want.embeddings) {
                let c = cosine(got, expected);
                let d = max_abs(got, expected);
                assert!(
                    c >= 0.99999 && d <= 1e-4,
                    "{model} prompt {key}: {text:?}: cosine {c}, max abs {d}"
                );
                worst = (worst.0.min(c), worst.1.max(d));
            }

            // The tokens are sentence-transformers' (prompt included, truncated alike).
            let handle = manager.get(model).unwrap();
            let base = handle.preset().unwrap();
            let prompted;
            let preset = match prompt {
                Some(name) => {
                    prompted = base.with_prompt(name).unwrap();
                    prompted.as_ref()
                }
                None => base,
            };
            let batch = preset.encode(PresetInputs::Texts(&texts)).unwrap();
            let ids = int64(batch.tensors["input_ids"].data());
            let mask = int64(batch.tensors["attention_mask"].data());
            let seq = batch.tensors["input_ids"].shape()[1];
            for (row, expected) in want.token_ids.iter().enumerate() {
                assert_eq!(
                    unpadded(ids, mask, seq, row),
                    expected.input_ids,
                    "{model} prompt {key:?} ({:?}): text {row}",
                    want.prompt
                );
            }
        }
        // Each prompt is its own preprocessing: the signatures tell them apart.
        let distinct: std::collections::BTreeSet<_> = signatures.iter().collect();
        assert_eq!(distinct.len(), signatures.len(), "{model}: {signatures:?}");
        assert!(!reference.pooling.is_empty());
    }
    eprintln!(
        "text embeddings vs sentence-transformers: worst cosine {:.8}, worst max abs {:.2e}",
        worst.0, worst.1
    );
}

#[test]
fn prompts_through_the_task_api_and_their_errors() {
    let Some(manager) = manager("prompts_through_the_task_api_and_their_errors") else {
        return;
    };
    let reference: EmbeddingReference = reference("tiny-xlmr-e5");
    let mut request = TaskRequest::new(
        TaskType::Embedding,
        "tiny-xlmr-e5",
        Some(TaskData::Texts(reference.texts[..3].to_vec())),
    );
    request
        .options
        .insert("prompt_name".to_owned(), serde_json::json!("passage"));
    let response = manager.task(request.clone()).unwrap();
    let TaskOutput::Embeddings(vectors) = response.output else {
        panic!("embeddings")
    };
    for (got, want) in vectors.iter().zip(&reference.outputs["passage"].embeddings) {
        assert!(cosine(got, want) >= 0.99999);
    }
    assert_eq!(
        response.models_used[0].prompt_name.as_deref(),
        Some("passage")
    );

    // An unknown prompt names the model's prompts.
    request
        .options
        .insert("prompt_name".to_owned(), serde_json::json!("document"));
    let err = manager.task(request.clone()).unwrap_err();
    assert_eq!(err.error_code, ErrorCode::InvalidInput);
    assert_eq!(err.details["reason"], "unknown_prompt");
    assert!(err.message.contains("passage, query"), "{}", err.message);
    // A prompt name that is not a string, and an option the task does not take.
    request
        .options
        .insert("prompt_name".to_owned(), serde_json::json!(3));
    let err = manager.task(request.clone()).unwrap_err();
    assert!(
        err.message.contains("prompt_name must be"),
        "{}",
        err.message
    );
    request.options.clear();
    request
        .options
        .insert("top_k".to_owned(), serde_json::json!(3));
    let err = manager.task(request).unwrap_err();
    assert!(
        err.message.contains("takes only prompt_name"),
        "{}",
        err.message
    );
}

#[test]
fn reranking_matches_sentence_transformers_cross_encoder() {
    let Some(manager) = manager("reranking_matches_sentence_transformers_cross_encoder") else {
        return;
    };
    let mut worst = 0.0_f32;
    for (model, reference_name) in RERANKERS {
        let reference: RerankReference = reference(reference_name);
        let documents: Vec<&str> = reference.documents.iter().map(String::as_str).collect();
        let out = manager.rerank(model, &reference.query, &documents).unwrap();
        assert_eq!(out.scores.len(), documents.len());
        assert_eq!(
            out.models_used[0].preprocess_preset.as_deref(),
            Some("cross_encoder")
        );
        for (i, (got, want)) in out.scores.iter().zip(&reference.scores).enumerate() {
            let d = (got - want).abs();
            assert!(d <= 1e-4, "{model}: document {i}: score {got} vs {want}");
            worst = worst.max(d);
        }
        // One model applies a sigmoid, the other returns raw logits, as their files say.
        let raw = reference.scores == reference.logits;
        assert_eq!(raw, reference_name == "tiny-xlmr-reranker", "{model}");

        // The pairs are tokenized as CrossEncoder tokenizes them (the long document is
        // truncated longest-first, not refused).
        let handle = manager.get(model).unwrap();
        let batch = handle
            .preset()
            .unwrap()
            .encode(PresetInputs::QueryWithDocuments {
                query: &reference.query,
                documents: &documents,
            })
            .unwrap();
        let ids = int64(batch.tensors["input_ids"].data());
        let mask = int64(batch.tensors["attention_mask"].data());
        let seq = batch.tensors["input_ids"].shape()[1];
        for (row, want) in reference.pair_token_ids.iter().enumerate() {
            assert_eq!(
                unpadded(ids, mask, seq, row),
                want.input_ids,
                "{model}: pair {row}"
            );
            if let (Some(types), Some(tensor)) =
                (&want.token_type_ids, batch.tensors.get("token_type_ids"))
            {
                assert_eq!(&unpadded(int64(tensor.data()), mask, seq, row), types);
            }
        }

        // top_k through the task API: CrossEncoder.rank's order and scores.
        let mut request = TaskRequest::new(
            TaskType::Rerank,
            model,
            Some(TaskData::QueryWithDocuments {
                query: reference.query.clone(),
                documents: reference.documents.clone(),
            }),
        );
        request
            .options
            .insert("top_k".to_owned(), serde_json::json!(reference.rank.len()));
        let TaskOutput::Ranking(ranking) = manager.task(request).unwrap().output else {
            panic!("a ranking")
        };
        let order: Vec<usize> = ranking.iter().map(|r| r.index).collect();
        let want: Vec<usize> = reference.rank.iter().map(|r| r.corpus_id).collect();
        assert_eq!(order, want, "{model}");
        for (got, want) in ranking.iter().zip(&reference.rank) {
            assert!((got.score - want.score).abs() <= 1e-4);
        }
    }
    eprintln!("reranking vs sentence-transformers CrossEncoder: worst |Δscore| {worst:.2e}");
}

#[test]
fn rerank_bad_inputs_are_refused_with_stable_reasons() {
    let Some(manager) = manager("rerank_bad_inputs_are_refused_with_stable_reasons") else {
        return;
    };
    let reason = |err: &dp_spec::ModelError| err.details["reason"].as_str().unwrap().to_owned();
    let err = manager
        .rerank("tiny-reranker", "  ", &["a document"])
        .unwrap_err();
    assert_eq!(err.error_code, ErrorCode::InvalidInput);
    assert_eq!(reason(&err), "query_missing");
    let err = manager.rerank("tiny-reranker", "a query", &[]).unwrap_err();
    assert_eq!(reason(&err), "documents_missing");
    // An embedding model cannot rerank, and a reranker does not embed.
    let err = manager
        .rerank("tiny-xlmr-e5", "a query", &["a document"])
        .unwrap_err();
    assert_eq!(err.error_code, ErrorCode::InvalidInput);
    assert_eq!(reason(&err), "rerank_unsupported");
    let err = manager.embed("tiny-reranker", &["a text"]).unwrap_err();
    assert_eq!(reason(&err), "texts_unsupported");
    // mxbai's `passage` prompt is empty: nothing is prepended, yet the record names it.
    let named = manager
        .embed_with_prompt("tiny-bert-cls", &["a text"], Some("passage"))
        .unwrap();
    assert_eq!(named.models_used[0].prompt_name.as_deref(), Some("passage"));
    let plain = manager.embed("tiny-bert-cls", &["a text"]).unwrap();
    assert_eq!(named.embeddings, plain.embeddings);
    // top_k must be a positive integer.
    let mut request = TaskRequest::new(
        TaskType::Rerank,
        "tiny-reranker",
        Some(TaskData::QueryWithDocuments {
            query: "q".to_owned(),
            documents: vec!["d".to_owned()],
        }),
    );
    request
        .options
        .insert("top_k".to_owned(), serde_json::json!(0));
    let err = manager.task(request).unwrap_err();
    assert!(
        err.message.contains("top_k must be a positive integer"),
        "{}",
        err.message
    );
}

/// The catalog's specs of the real models load their stand-ins unchanged but for the two
/// things that must differ: the weights digest (the specs carry a placeholder and say to
/// replace it with `dp digest` of the copied files) and the hidden width in
/// `output_schema`. Everything else (pooling, normalization, prompts, architecture, file
/// layout, activation) is read from the copied files and agrees with the spec.
#[test]
fn the_real_models_specs_load_their_files_once_copied_in() {
    let test = "the_real_models_specs_load_their_files_once_copied_in";
    let Some(_) = manager(test) else {
        return;
    };
    let setup_models = dp_tests::workspace_root().join(".dp-assets/models");
    let onnx_library = dp_tests::asset("onnxruntime/libonnxruntime.so", test).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let catalog = dir.path().join("catalog");
    // (spec in the catalog, its folder, the stand-in's folder, the stand-in's width)
    let cases = [
        (
            "text_embedding/multilingual-e5-large",
            "multilingual-e5-large",
            "tiny-xlmr-e5",
            32,
        ),
        (
            "text_embedding/mxbai-embed-large-v1",
            "mxbai-embed-large-v1",
            "tiny-bert-cls",
            48,
        ),
        (
            "reranking/ms-marco-minilm-l6-v2",
            "ms-marco-minilm-l6-v2",
            "tiny-reranker-onnx",
            1,
        ),
    ];
    let main_catalog = Catalog::load(&dp_tests::workspace_root().join("specs/catalog")).unwrap();
    for (spec_path, folder, stand_in, width) in cases {
        dp_tests::copy_dir(&setup_models.join(stand_in), &models.join(folder)).unwrap();
        if stand_in.ends_with("-onnx") {
            // The repository keeps its export under onnx/.
            std::fs::create_dir_all(models.join(folder).join("onnx")).unwrap();
            std::fs::rename(
                models.join(folder).join("model.onnx"),
                models.join(folder).join("onnx/model.onnx"),
            )
            .unwrap();
        }
        let text = std::fs::read_to_string(
            dp_tests::workspace_root().join(format!("specs/catalog/{spec_path}.yaml")),
        )
        .unwrap();
        let spec = &main_catalog.get(folder).unwrap().spec;
        let report = dp_manager::integrity::verify_spec(
            spec,
            &models,
            None,
            &dp_digest::VerifyOptions::default(),
        )
        .unwrap();
        let digest = report.pin.unwrap().actual.unwrap();
        let placeholder = format!("sha256:{}", "0".repeat(64));
        assert!(
            text.contains(&placeholder),
            "{spec_path}: the placeholder pin"
        );
        let text = text.replace(&placeholder, &digest.to_string()).replace(
            "shape: [-1, -1, 1024]",
            &format!("shape: [-1, -1, {width}]"),
        );
        let target = catalog.join(format!("{spec_path}.yaml"));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, text).unwrap();
    }
    let manager = ModelManager::builder(Catalog::load(&catalog).unwrap(), &models)
        .provider(Arc::new(CandleProvider::new()))
        .provider(Arc::new(OnnxProvider::new(OnnxProviderConfig {
            library_path: Some(onnx_library),
        })))
        .reaper(false)
        .build()
        .unwrap();

    for (model, stand_in, prompt) in [
        ("multilingual-e5-large", "tiny-xlmr-e5", "query"),
        ("multilingual-e5-large", "tiny-xlmr-e5", "passage"),
        ("mxbai-embed-large-v1", "tiny-bert-cls", "query"),
    ] {
        let reference: EmbeddingReference = reference(stand_in);
        let texts: Vec<&str> = reference.texts.iter().map(String::as_str).collect();
        let out = manager
            .embed_with_prompt(model, &texts, Some(prompt))
            .unwrap();
        for (got, want) in out
            .embeddings
            .iter()
            .zip(&reference.outputs[prompt].embeddings)
        {
            assert!(cosine(got, want) >= 0.99999, "{model} {prompt}");
        }
    }
    let reference: RerankReference = reference("tiny-reranker");
    let documents: Vec<&str> = reference.documents.iter().map(String::as_str).collect();
    let out = manager
        .rerank("ms-marco-minilm-l6-v2", &reference.query, &documents)
        .unwrap();
    for (got, want) in out.scores.iter().zip(&reference.scores) {
        assert!((got - want).abs() <= 1e-4);
    }
}
