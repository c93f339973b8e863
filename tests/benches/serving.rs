//! The serving side of `cargo xtask bench embed`: what the manager adds around a model,
//! measured through `ModelManager::embed` on one sentence-embedding model, printed as one
//! JSON object on stdout.
//!
//! - `single_b32` (texts/s): one caller, 32 short texts per call, no embedding cache;
//! - `concurrent_64x1` (texts/s) with `latency_p50_ms` / `latency_p99_ms`: 64 threads each
//!   embedding one short text per call, repeatedly, through the dynamic batching queue;
//! - `persistent_hit_us` (µs per text): 32 short texts per call all served by the persistent
//!   cache (the in-memory cache holds nothing), against `compute_us` (µs per text of
//!   `single_b32`);
//! - with `--restart-texts N`: `compute_n_s`, computing and storing N distinct texts, and
//!   `restart_n_s`, a restarted manager (model loaded) embedding the same N from disk.
//!
//! `serving --engine candle|onnx --models-root DIR --spec FILE --texts FILE [--threads N]
//! [--min-seconds S] [--onnx-library FILE] [--restart-texts N] [--workers N]`; `--workers`
//! sets the spec's `resource_requirements.num_workers` (the calls the batching queue runs
//! at once, each on its share of the threads).

#![allow(
    clippy::unwrap_used,
    reason = "a bench runner fails loudly on any error"
)]

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Instant;

use dp_manager::{EmbeddingCacheConfig, ModelManager, PersistentCacheConfig};
use dp_provider_candle::{CandleProvider, CandleProviderConfig};
use dp_provider_onnx::{OnnxProvider, OnnxProviderConfig};
use dp_spec::{Catalog, ModelProvider, SourceDocument, SourceFormat};

const CALLERS: usize = 64;

struct Options {
    engine: String,
    models_root: PathBuf,
    spec: PathBuf,
    texts: PathBuf,
    threads: usize,
    min_seconds: f64,
    onnx_library: Option<PathBuf>,
    restart_texts: usize,
    workers: Option<u64>,
}

impl Options {
    fn from_args() -> Self {
        let all: Vec<String> = std::env::args().collect();
        let get = |name: &str| -> Option<String> {
            all.iter()
                .position(|a| a == name)
                .and_then(|i| all.get(i + 1).cloned())
        };
        Self {
            engine: get("--engine").expect("--engine"),
            models_root: get("--models-root").expect("--models-root").into(),
            spec: get("--spec").expect("--spec").into(),
            texts: get("--texts").expect("--texts").into(),
            threads: get("--threads").map_or(2, |v| v.parse().unwrap()),
            min_seconds: get("--min-seconds").map_or(0.5, |v| v.parse().unwrap()),
            onnx_library: get("--onnx-library").map(PathBuf::from),
            restart_texts: get("--restart-texts").map_or(0, |v| v.parse().unwrap()),
            workers: get("--workers").map(|v| v.parse().unwrap()),
        }
    }

    fn provider(&self) -> Arc<dyn ModelProvider> {
        match self.engine.as_str() {
            "candle" => Arc::new(CandleProvider::with_config(CandleProviderConfig {
                threads: NonZeroUsize::new(self.threads),
            })),
            "onnx" => Arc::new(OnnxProvider::new(OnnxProviderConfig {
                library_path: self.onnx_library.clone(),
            })),
            other => panic!("--engine {other}: candle or onnx"),
        }
    }

    /// A manager over a catalog of the one spec, with `cache` and an optional persistent
    /// cache.
    fn manager(
        &self,
        catalog: &Path,
        cache: EmbeddingCacheConfig,
        persistent: Option<&Path>,
    ) -> ModelManager {
        ModelManager::builder(Catalog::load(catalog).unwrap(), &self.models_root)
            .provider(self.provider())
            .embedding_cache(cache)
            .persistent_embedding_cache(persistent.map(PersistentCacheConfig::new))
            .reaper(false)
            .build()
            .unwrap()
    }
}

/// A catalog folder holding only the spec, with `num_workers` when given.
fn catalog_dir(spec: &Path, workers: Option<u64>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let role = dir.path().join("text_embedding");
    std::fs::create_dir_all(&role).unwrap();
    let target = role.join(spec.file_name().unwrap());
    match workers {
        None => drop(std::fs::copy(spec, target).unwrap()),
        Some(n) => {
            let text = std::fs::read_to_string(spec).unwrap();
            let mut doc = SourceDocument::parse_str(spec, &text, SourceFormat::Yaml)
                .unwrap()
                .value;
            doc["resource_requirements"]["num_workers"] = n.into();
            std::fs::write(target, dp_spec::to_yaml(&doc)).unwrap();
        }
    }
    dir
}

/// Texts per second of calls of 32 texts, for at least `min` seconds.
fn rate_b32(manager: &ModelManager, name: &str, texts: &[&str], min: f64) -> f64 {
    let start = Instant::now();
    let mut done = 0_usize;
    for call in texts.chunks(32).cycle() {
        done += manager.embed(name, call).unwrap().embeddings.len();
        if start.elapsed().as_secs_f64() >= min {
            break;
        }
    }
    #[allow(clippy::cast_precision_loss, reason = "small counts")]
    let rate = done as f64 / start.elapsed().as_secs_f64();
    rate
}

/// 64 threads, one text per call, for at least `min` seconds: texts/s and the latencies.
fn concurrent(manager: &ModelManager, name: &str, texts: &[&str], min: f64) -> (f64, Vec<f64>) {
    let latencies = Mutex::new(Vec::new());
    let barrier = Barrier::new(CALLERS);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..CALLERS {
            let (latencies, barrier) = (&latencies, &barrier);
            scope.spawn(move || {
                barrier.wait();
                let mut mine = Vec::new();
                let mut i = t;
                while start.elapsed().as_secs_f64() < min {
                    let text = texts[i % texts.len()];
                    let began = Instant::now();
                    manager.embed(name, &[text]).unwrap();
                    mine.push(began.elapsed().as_secs_f64() * 1e3);
                    i += CALLERS;
                }
                latencies.lock().unwrap().extend(mine);
            });
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut latencies = latencies.into_inner().unwrap();
    latencies.sort_by(f64::total_cmp);
    #[allow(clippy::cast_precision_loss, reason = "small counts")]
    let rate = latencies.len() as f64 / elapsed;
    (rate, latencies)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a small list"
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let o = Options::from_args();
    let catalog = catalog_dir(&o.spec, o.workers);
    let name = Catalog::load(catalog.path()).unwrap().entries()[0]
        .spec
        .model_name
        .clone();
    let texts: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&o.texts).unwrap()).unwrap();
    let short: Vec<String> = serde_json::from_value(texts["short"].clone()).unwrap();
    let short: Vec<&str> = short.iter().map(String::as_str).collect();
    let min = o.min_seconds;

    // One caller, batches of 32, then 64 callers of one text: the same manager, no cache.
    let plain = o.manager(catalog.path(), EmbeddingCacheConfig::disabled(), None);
    plain.embed(&name, &short).unwrap();
    let single_b32 = rate_b32(&plain, &name, &short, min);
    let (concurrent_64x1, latencies) = concurrent(&plain, &name, &short, min.max(1.0));

    // The persistent cache: filled once, then read with an in-memory cache of no entries,
    // so every text is a disk hit.
    let scratch = tempfile::tempdir().unwrap();
    let disk = scratch.path().join("cache");
    let filler = o.manager(catalog.path(), EmbeddingCacheConfig::default(), Some(&disk));
    filler.embed(&name, &short).unwrap();
    drop(filler);
    let no_memory = EmbeddingCacheConfig {
        max_entries: 0,
        ..EmbeddingCacheConfig::default()
    };
    let reader = o.manager(catalog.path(), no_memory, Some(&disk));
    reader.embed(&name, &short).unwrap();
    let hit_rate = rate_b32(&reader, &name, &short, min);
    let status = reader.status().embedding_cache;
    assert_eq!(status.misses, 0, "every text was a persistent hit");
    drop(reader);

    let mut figures = serde_json::json!({
        "engine": o.engine,
        "threads": o.threads,
        "workers": o.workers.unwrap_or(1),
        "single_b32": single_b32,
        "concurrent_64x1": concurrent_64x1,
        "latency_p50_ms": percentile(&latencies, 0.5),
        "latency_p99_ms": percentile(&latencies, 0.99),
        "compute_us": 1e6 / single_b32,
        "persistent_hit_us": 1e6 / hit_rate,
    });

    if o.restart_texts > 0 {
        let many: Vec<String> = (0..o.restart_texts)
            .map(|i| format!("{} ({i})", short[i % short.len()]))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let disk = scratch.path().join("restart");
        let first = o.manager(catalog.path(), EmbeddingCacheConfig::default(), Some(&disk));
        first.get(&name).unwrap();
        let start = Instant::now();
        for call in many.chunks(32) {
            first.embed(&name, call).unwrap();
        }
        let compute_n_s = start.elapsed().as_secs_f64();
        drop(first);
        let restarted = o.manager(catalog.path(), EmbeddingCacheConfig::default(), Some(&disk));
        restarted.get(&name).unwrap();
        let start = Instant::now();
        for call in many.chunks(32) {
            restarted.embed(&name, call).unwrap();
        }
        let restart_n_s = start.elapsed().as_secs_f64();
        assert_eq!(restarted.status().embedding_cache.misses, 0);
        figures["restart_texts"] = o.restart_texts.into();
        figures["compute_n_s"] = compute_n_s.into();
        figures["restart_n_s"] = restart_n_s.into();
    }
    println!("{figures}");
}
