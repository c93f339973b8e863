//! End to end through the manager with the real all-MiniLM-L6-v2 on candle: the 21
//! reference sentences (empty, unicode, emoji, one over 256 word pieces) must match
//! sentence-transformers' embeddings, and fp16/bf16 must stay close to fp32.
//!
//! Needs `cargo xtask setup` (the `minilm` asset); fails under CI=true when it is missing.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::path::Path;
use std::sync::Arc;

use dp_manager::ModelManager;
use dp_provider_candle::CandleProvider;
use dp_spec::{Catalog, Precision};
use dp_tests::cosine;
use serde::Deserialize;

const MODEL: &str = "all-minilm-l6-v2";

#[derive(Deserialize)]
struct Reference {
    sentences: Vec<String>,
    embeddings: Vec<Vec<f32>>,
}

fn reference() -> Reference {
    let path = dp_tests::data_dir().join("reference/minilm_l6_v2_sentence_transformers.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The real catalog, with the MiniLM spec at `precision`.
fn catalog(precision: Precision) -> Catalog {
    let root = dp_tests::workspace_root().join("specs/catalog");
    let catalog = Catalog::load(&root).unwrap();
    let mut entries = catalog.entries().to_vec();
    for entry in &mut entries {
        if entry.spec.model_name == MODEL {
            entry.spec.precision = precision;
        }
    }
    Catalog::from_entries(&root, entries).unwrap()
}

fn manager(models_root: &Path, precision: Precision) -> ModelManager {
    ModelManager::builder(catalog(precision), models_root)
        .provider(Arc::new(CandleProvider::new()))
        .reaper(false)
        .build()
        .unwrap()
}

fn embed_all(models_root: &Path, precision: Precision, sentences: &[&str]) -> Vec<Vec<f32>> {
    let output = manager(models_root, precision)
        .embed(MODEL, sentences)
        .unwrap();
    assert_eq!(output.embeddings.len(), sentences.len());
    assert_eq!(output.models_used.len(), 1);
    assert_eq!(output.models_used[0].model_name, MODEL);
    output.embeddings
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn models_root(test: &str) -> Option<std::path::PathBuf> {
    let weights = dp_tests::asset("models/all-minilm-l6-v2/model.safetensors", test)?;
    Some(weights.parent()?.parent()?.to_path_buf())
}

#[test]
fn fp32_matches_sentence_transformers_on_every_reference_sentence() {
    let Some(root) = models_root("fp32_matches_sentence_transformers_on_every_reference_sentence")
    else {
        return;
    };
    let reference = reference();
    assert_eq!(reference.sentences.len(), 21);
    let sentences: Vec<&str> = reference.sentences.iter().map(String::as_str).collect();
    let got = embed_all(&root, Precision::Fp32, &sentences);
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
    eprintln!("worst cosine {worst_cos:.9}, worst max abs diff {worst_diff:.3e}");
}

#[test]
fn one_sentence_alone_equals_the_same_sentence_in_a_padded_batch() {
    let Some(root) = models_root("one_sentence_alone_equals_the_same_sentence_in_a_padded_batch")
    else {
        return;
    };
    let reference = reference();
    // The short sentence is padded in the batch; the mask must make padding invisible.
    let short = reference.sentences[0].as_str();
    let long = reference
        .sentences
        .iter()
        .max_by_key(|s| s.len())
        .unwrap()
        .as_str();
    let alone = embed_all(&root, Precision::Fp32, &[short]);
    let batched = embed_all(&root, Precision::Fp32, &[short, long]);
    assert!(max_abs_diff(&alone[0], &batched[0]) <= 1e-5);
    assert!(
        cosine(&alone[0], &batched[1]) < 0.9,
        "different sentences differ"
    );
}

#[test]
fn fp16_and_bf16_stay_close_to_fp32() {
    let Some(root) = models_root("fp16_and_bf16_stay_close_to_fp32") else {
        return;
    };
    let reference = reference();
    let sentences: Vec<&str> = reference.sentences.iter().map(String::as_str).collect();
    let full = embed_all(&root, Precision::Fp32, &sentences);
    for precision in [Precision::Fp16, Precision::Bf16] {
        let half = embed_all(&root, precision, &sentences);
        for (i, (h, f)) in half.iter().zip(&full).enumerate() {
            let cos = cosine(h, f);
            assert!(
                cos >= 0.99,
                "{precision:?}, sentence {i}: cosine {cos} against fp32"
            );
        }
    }
}
