//! End to end through the manager with the ONNX MiniLM on the real ONNX Runtime: the 21
//! reference sentences must match sentence-transformers' embeddings (cosine ≥ 0.99999, max
//! abs difference ≤ 1e-4), and the candle provider's embeddings of the same weights.
//!
//! Needs `cargo xtask setup` (assets `onnxruntime`, `minilm-onnx`, and `minilm` for the
//! candle comparison); fails under CI=true when they are missing.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dp_manager::ModelManager;
use dp_manager::preset::PresetInputs;
use dp_provider_candle::CandleProvider;
use dp_provider_onnx::{OnnxProvider, OnnxProviderConfig};
use dp_spec::Catalog;
use dp_tests::cosine;
use serde::Deserialize;

const MODEL: &str = "all-minilm-l6-v2-onnx";

#[derive(Deserialize)]
struct Reference {
    sentences: Vec<String>,
    embeddings: Vec<Vec<f32>>,
}

fn reference() -> Reference {
    let path = dp_tests::data_dir().join("reference/minilm_l6_v2_sentence_transformers.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn catalog() -> Catalog {
    Catalog::load(&dp_tests::workspace_root().join("specs/catalog")).unwrap()
}

/// The models root, once the ONNX model and the library are both set up.
fn models_root(test: &str) -> Option<PathBuf> {
    dp_tests::asset("onnxruntime/libonnxruntime.so", test)?;
    let model = dp_tests::asset("models/all-minilm-l6-v2-onnx/model.onnx", test)?;
    Some(model.parent()?.parent()?.to_path_buf())
}

fn embed(manager: &ModelManager, model: &str, sentences: &[&str]) -> Vec<Vec<f32>> {
    let output = manager.embed(model, sentences).unwrap();
    assert_eq!(output.embeddings.len(), sentences.len());
    assert_eq!(output.models_used[0].model_name, model);
    output.embeddings
}

/// The vectors of `sentences` from one model call, as the spec's recorded int8 accuracy
/// was measured (the manager may split a call into length groups).
fn one_call(manager: &ModelManager, model: &str, sentences: &[&str]) -> Vec<Vec<f32>> {
    let handle = manager.get(model).unwrap();
    let preset = handle.preset().unwrap();
    assert!(sentences.len() <= preset.batch_size());
    let batch = preset.encode(PresetInputs::Texts(sentences)).unwrap();
    let outputs = handle.model().infer(&batch.tensors).unwrap();
    preset.decode(&batch, outputs).unwrap().into_rows()
}

fn onnx_manager(models_root: &Path) -> ModelManager {
    // Default configuration: the library is found in the setup folder next to the models.
    ModelManager::builder(catalog(), models_root)
        .provider(Arc::new(OnnxProvider::new(OnnxProviderConfig::default())))
        .reaper(false)
        .build()
        .unwrap()
}

/// Both providers, no embedding cache (every vector computed), once the candle MiniLM is
/// set up too.
fn onnx_and_candle_manager(test: &str) -> Option<ModelManager> {
    let root = models_root(test)?;
    dp_tests::asset("models/all-minilm-l6-v2/model.safetensors", test)?;
    let manager = ModelManager::builder(catalog(), &root)
        .provider(Arc::new(OnnxProvider::new(OnnxProviderConfig::default())))
        .provider(Arc::new(CandleProvider::new()))
        .embedding_cache(dp_manager::EmbeddingCacheConfig::disabled())
        .reaper(false)
        .build()
        .unwrap();
    Some(manager)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn onnx_minilm_matches_sentence_transformers_on_every_reference_sentence() {
    let Some(root) =
        models_root("onnx_minilm_matches_sentence_transformers_on_every_reference_sentence")
    else {
        return;
    };
    let reference = reference();
    assert_eq!(reference.sentences.len(), 21);
    let sentences: Vec<&str> = reference.sentences.iter().map(String::as_str).collect();
    let got = embed(&onnx_manager(&root), MODEL, &sentences);
    let mut worst_cos = f64::INFINITY;
    let mut worst_diff = 0.0_f32;
    for (i, (g, want)) in got.iter().zip(&reference.embeddings).enumerate() {
        assert_eq!(g.len(), 384, "sentence {i}");
        let cos = cosine(g, want);
        let diff = max_abs_diff(g, want);
        assert!(
            cos >= 0.99999 && diff <= 1e-4,
            "sentence {i} {:?}: cosine {cos}, max abs diff {diff}",
            reference.sentences[i]
        );
        worst_cos = worst_cos.min(cos);
        worst_diff = worst_diff.max(diff);
    }
    eprintln!(
        "onnx vs sentence-transformers: worst cosine {worst_cos:.9}, worst max abs diff {worst_diff:.3e}"
    );
}

#[test]
fn onnx_and_candle_agree_on_the_same_weights() {
    let test = "onnx_and_candle_agree_on_the_same_weights";
    let Some(manager) = onnx_and_candle_manager(test) else {
        return;
    };
    let reference = reference();
    let sentences: Vec<&str> = reference.sentences.iter().map(String::as_str).collect();
    let onnx = embed(&manager, MODEL, &sentences);
    let candle = embed(&manager, "all-minilm-l6-v2", &sentences);
    let mut worst = 0.0_f32;
    for (i, (o, c)) in onnx.iter().zip(&candle).enumerate() {
        let diff = max_abs_diff(o, c);
        assert!(
            cosine(o, c) >= 0.99999 && diff <= 1e-4,
            "sentence {i}: onnx and candle differ by {diff}"
        );
        worst = worst.max(diff);
    }
    eprintln!("onnx vs candle: worst max abs diff {worst:.3e}");
}

/// The accuracy throughput issue asks of an int8 model: cosine to the fp32 graph on every
/// reference sentence.
const INT8_MIN_COSINE: f64 = 0.99;

/// The int8 MiniLM (`cargo xtask setup` asset `minilm-onnx-int8`: the fp32 graph's weight
/// products on int8 weights and uint8 activations on calibrated scales) on the same provider
/// and preset: its accuracy against the fp32 graph and sentence-transformers, as its spec
/// records it, the same however the sentences are batched.
#[test]
fn int8_minilm_stays_within_its_recorded_accuracy() {
    let test = "int8_minilm_stays_within_its_recorded_accuracy";
    let Some(root) = models_root(test) else {
        return;
    };
    if dp_tests::asset("models/all-minilm-l6-v2-onnx-int8/model.onnx", test).is_none() {
        return;
    }
    let int8 = "all-minilm-l6-v2-onnx-int8";
    let reference = reference();
    let sentences: Vec<&str> = reference.sentences.iter().map(String::as_str).collect();
    let manager = onnx_manager(&root);
    let output = manager.embed(int8, &sentences).unwrap();
    let record = &output.models_used[0];
    assert_eq!(record.model_name, int8);
    assert_eq!(record.precision.as_str(), "int8");
    let fp32 = one_call(&manager, MODEL, &sentences);
    let int8_vectors = one_call(&manager, int8, &sentences);
    let parity = dp_manager::EmbeddingParity::compare(&fp32, &int8_vectors).unwrap();
    println!("int8 vs fp32 ONNX, one call: {parity:?}");
    // The scales are constants of the graph: a sentence's vector does not depend on what
    // shares its call (the manager's length groups, or a call of its own), up to float
    // rounding.
    for (i, sentence) in sentences.iter().enumerate() {
        let alone = one_call(&manager, int8, &[sentence]);
        for (got, want) in [
            (&output.embeddings[i], &int8_vectors[i]),
            (&alone[0], &int8_vectors[i]),
        ] {
            let diff = got
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(
                diff <= 1e-4,
                "sentence {i} {sentence:?}: {diff:e} between calls"
            );
        }
    }
    // The spec's metadata records what was measured when the model was built; the bytes
    // are pinned and the integer products exact on every CPU, so only float rounding of
    // the scales can move it.
    let catalog = catalog();
    let spec = &catalog.get(int8).unwrap().spec;
    let recorded = |key: &str| spec.metadata[key].as_f64().unwrap();
    let (min, mean) = (
        recorded("accuracy_min_cosine_vs_fp32"),
        recorded("accuracy_mean_cosine_vs_fp32"),
    );
    assert!(min >= INT8_MIN_COSINE, "recorded {min}");
    assert!(
        parity.min_cosine >= min - 1e-3,
        "{parity:?} vs recorded {min}"
    );
    assert!(
        parity.mean_cosine >= mean - 1e-3,
        "{parity:?} vs recorded {mean}"
    );
    // Quantized, not a copy: the vectors move, and stay within the bar also against
    // sentence-transformers' fp32 embeddings.
    assert!(parity.max_abs_diff > 1e-3, "{parity:?}");
    for (i, (got, want)) in int8_vectors.iter().zip(&reference.embeddings).enumerate() {
        let c = cosine(got, want);
        assert!(
            c >= INT8_MIN_COSINE,
            "sentence {i} {:?}: cosine {c}",
            sentences[i]
        );
    }
}

/// Concurrent callers of a model run by two workers (`num_workers`), calls that run
/// together each on its worker's share of the threads (candle: a pool of its own; ONNX
/// Runtime: sessions of its own): every caller gets its sentence's reference vector, the
/// same one worker gives.
#[test]
fn two_workers_give_every_concurrent_caller_its_reference_vector() {
    use dp_manager::{TaskData, TaskOutput, TaskRequest, TaskType};
    let test = "two_workers_give_every_concurrent_caller_its_reference_vector";
    let Some(manager) = onnx_and_candle_manager(test) else {
        return;
    };
    let reference = reference();
    let sentences: Vec<&str> = reference.sentences.iter().map(String::as_str).collect();
    for model in [MODEL, "all-minilm-l6-v2"] {
        let alone = embed(&manager, model, &sentences);
        let task = |sentence: &str| {
            let request = TaskRequest {
                options: std::collections::BTreeMap::from([(
                    "num_workers".to_owned(),
                    serde_json::json!(2),
                )]),
                ..TaskRequest::new(
                    TaskType::Embedding,
                    model,
                    Some(TaskData::Texts(vec![sentence.to_owned()])),
                )
            };
            let TaskOutput::Embeddings(mut rows) = manager.task(request).unwrap().output else {
                panic!("{model}: embeddings");
            };
            rows.pop().unwrap()
        };
        std::thread::scope(|scope| {
            let callers: Vec<_> = (0..sentences.len())
                .map(|i| {
                    let task = &task;
                    let sentence = sentences[i];
                    scope.spawn(move || (0..3).map(|_| task(sentence)).collect::<Vec<_>>())
                })
                .collect();
            for (i, caller) in callers.into_iter().enumerate() {
                for got in caller.join().unwrap() {
                    let diff = max_abs_diff(&got, &alone[i]);
                    assert!(
                        diff <= 1e-5,
                        "{model} sentence {i}: {diff:e} from one worker's"
                    );
                    let cos = cosine(&got, &reference.embeddings[i]);
                    assert!(cos >= 0.99999, "{model} sentence {i}: cosine {cos}");
                }
            }
        });
        let status = manager.status();
        let queue = status.batching.iter().find(|q| q.model == model).unwrap();
        assert_eq!(queue.workers, 2, "{model}");
        assert!(queue.calls >= 1 && queue.texts >= 63, "{model}: {queue:?}");
    }
}
