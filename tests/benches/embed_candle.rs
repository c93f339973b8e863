//! The candle side of `cargo xtask bench embed`: cold load and throughput of a
//! sentence-embedding model through the manager, printed as one JSON object on stdout.
//!
//! `cargo bench -p dp-tests --bench embed_candle -- --models-root DIR --spec FILE
//! --sentences FILE --threads N [--loads N] [--batches N]`; xtask runs it interleaved with
//! the sentence-transformers side and compares the two.
//!
//! - cold load: spec file → catalog → manager → digest check through a warm verification
//!   cache → `ModelManager::get` returns a ready handle (the weights' pages are in the OS
//!   cache, as for any model used before on that machine); median of `--loads` runs.
//! - throughput: `ModelManager::embed` on batches of the given sentences (the embedding
//!   cache off), after two warm-up batches; sentences per second over `--batches` batches.

#![allow(
    clippy::unwrap_used,
    reason = "a bench runner fails loudly on any error"
)]

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use dp_digest::{VerificationCache, VerifyOptions, VerifyStatus, verify_artifacts};
use dp_manager::{EmbeddingCacheConfig, ModelManager};
use dp_provider_candle::{CandleProvider, CandleProviderConfig};
use dp_spec::Catalog;

struct Options {
    models_root: PathBuf,
    spec: PathBuf,
    sentences: PathBuf,
    threads: usize,
    loads: usize,
    batches: usize,
}

fn options() -> Options {
    let all: Vec<String> = std::env::args().collect();
    let get = |name: &str| -> Option<String> {
        all.iter()
            .position(|a| a == name)
            .and_then(|i| all.get(i + 1).cloned())
    };
    Options {
        models_root: get("--models-root").expect("--models-root").into(),
        spec: get("--spec").expect("--spec").into(),
        sentences: get("--sentences").expect("--sentences").into(),
        threads: get("--threads").map_or(2, |v| v.parse().unwrap()),
        loads: get("--loads").map_or(10, |v| v.parse().unwrap()),
        batches: get("--batches").map_or(20, |v| v.parse().unwrap()),
    }
}

/// A catalog folder holding only the spec (as a deployment's catalog would).
fn catalog_dir(spec: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let role = dir.path().join("text_embedding");
    std::fs::create_dir_all(&role).unwrap();
    std::fs::copy(spec, role.join(spec.file_name().unwrap())).unwrap();
    dir
}

fn provider(threads: usize) -> Arc<CandleProvider> {
    Arc::new(CandleProvider::with_config(CandleProviderConfig {
        threads: NonZeroUsize::new(threads),
    }))
}

/// Spec → ready handle, once; returns the seconds it took.
fn cold_load(o: &Options, catalog: &Path, cache_path: &Path) -> f64 {
    let start = Instant::now();
    let catalog = Catalog::load(catalog).unwrap();
    let spec = catalog.entries()[0].spec.clone();
    let manager = ModelManager::builder(catalog, &o.models_root)
        .provider(provider(o.threads))
        .reaper(false)
        .build()
        .unwrap();
    let cache = VerificationCache::load(cache_path);
    let options = VerifyOptions {
        cache: Some(&cache),
        ..VerifyOptions::default()
    };
    let report = verify_artifacts(
        &o.models_root,
        &spec.local_artifacts,
        spec.weights_digest.as_ref(),
        None,
        &options,
    )
    .unwrap();
    assert_eq!(report.status(), VerifyStatus::Ok);
    let handle = manager.get(&spec.model_name).unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    cache.save_if_changed().unwrap();
    drop(handle);
    elapsed
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let o = options();
    let catalog = catalog_dir(&o.spec);
    let cache_path = catalog.path().join("verify-cache.json");
    // The first run hashes the weights into the verification cache and warms the page
    // cache; it is not counted.
    cold_load(&o, catalog.path(), &cache_path);
    let loads: Vec<f64> = (0..o.loads)
        .map(|_| cold_load(&o, catalog.path(), &cache_path))
        .collect();

    let sentences: Vec<String> =
        serde_json::from_slice(&std::fs::read(&o.sentences).unwrap()).unwrap();
    let texts: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let catalog_entries = Catalog::load(catalog.path()).unwrap();
    let name = catalog_entries.entries()[0].spec.model_name.clone();
    let manager = ModelManager::builder(catalog_entries, &o.models_root)
        .provider(provider(o.threads))
        .embedding_cache(EmbeddingCacheConfig::disabled())
        .reaper(false)
        .build()
        .unwrap();
    for _ in 0..2 {
        manager.embed(&name, &texts).unwrap();
    }
    let start = Instant::now();
    for _ in 0..o.batches {
        let out = manager.embed(&name, &texts).unwrap();
        assert_eq!(out.embeddings.len(), texts.len());
    }
    let seconds = start.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss, reason = "small counts")]
    let throughput = (o.batches * texts.len()) as f64 / seconds;
    println!(
        "{}",
        serde_json::json!({
            "cold_load_median_s": median(loads.clone()),
            "cold_load_s": loads,
            "sentences_per_s": throughput,
            "batch": texts.len(),
            "threads": o.threads,
        })
    );
}
