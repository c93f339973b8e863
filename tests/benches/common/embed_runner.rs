//! What the `embed_candle` and `embed_onnx` runners share: options, cold load and the
//! throughput workloads of `cargo xtask bench embed`, printed as one JSON object on stdout.
//!
//! - cold load (`cold_load_all_s`): spec file → catalog → manager → `ModelManager::get`
//!   (which verifies every file through a warm verification cache) returns a ready handle
//!   (the weights' pages are in the OS cache, as for any model used before on that
//!   machine); `--loads` runs after one unmeasured run, printed as samples (xtask takes
//!   their median).
//! - throughput (`short_b1`, `short_b32`, `long_b1`, `long_b32`, sentences per second):
//!   `ModelManager::embed` with the embedding cache off, on the `short` or `long` texts of
//!   `--texts`, one text per call or 32 per call; each workload runs for at least
//!   `--min-seconds` (and at least one call), after one warm-up call of 32 short texts and
//!   one of a long text.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use dp_digest::{VerificationCache, VerifyOptions, VerifyStatus, verify_artifacts};
use dp_manager::{EmbeddingCacheConfig, ModelManager};
use dp_spec::{Catalog, ModelProvider};

/// The command line of a runner.
pub(crate) struct Options {
    pub(crate) models_root: PathBuf,
    pub(crate) spec: PathBuf,
    pub(crate) texts: PathBuf,
    pub(crate) threads: usize,
    pub(crate) loads: usize,
    pub(crate) min_seconds: f64,
}

impl Options {
    /// `--models-root DIR --spec FILE --texts FILE [--threads N] [--loads N]
    /// [--min-seconds S]`.
    pub(crate) fn from_args() -> Self {
        let all: Vec<String> = std::env::args().collect();
        let get = |name: &str| -> Option<String> {
            all.iter()
                .position(|a| a == name)
                .and_then(|i| all.get(i + 1).cloned())
        };
        Self {
            models_root: get("--models-root").expect("--models-root").into(),
            spec: get("--spec").expect("--spec").into(),
            texts: get("--texts").expect("--texts").into(),
            threads: get("--threads").map_or(2, |v| v.parse().unwrap()),
            loads: get("--loads").map_or(3, |v| v.parse().unwrap()),
            min_seconds: get("--min-seconds").map_or(0.5, |v| v.parse().unwrap()),
        }
    }
}

/// How a runner makes its catalog and provider.
pub(crate) struct Engine {
    /// The catalog of the folder, with the runner's thread count applied if the spec
    /// carries one.
    pub(crate) catalog: fn(&Path, usize) -> Catalog,
    /// The provider, with the runner's thread count.
    pub(crate) provider: fn(usize) -> Arc<dyn ModelProvider>,
}

/// A catalog folder holding only the spec (as a deployment's catalog would).
fn catalog_dir(spec: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let role = dir.path().join("text_embedding");
    std::fs::create_dir_all(&role).unwrap();
    std::fs::copy(spec, role.join(spec.file_name().unwrap())).unwrap();
    dir
}

/// Spec → ready handle, once; returns the seconds it took. The manager verifies the
/// artifacts before loading, through the verification cache (as `dp` and a deployment
/// configure it), so an unchanged tree costs one `stat` per file, not a re-hash.
fn cold_load(o: &Options, engine: &Engine, catalog: &Path, cache_path: &Path) -> f64 {
    let start = Instant::now();
    let catalog = (engine.catalog)(catalog, o.threads);
    let spec = catalog.entries()[0].spec.clone();
    let manager = ModelManager::builder(catalog, &o.models_root)
        .provider((engine.provider)(o.threads))
        .verification_cache(cache_path)
        .reaper(false)
        .build()
        .unwrap();
    let handle = manager.get(&spec.model_name).unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    drop(handle);
    elapsed
}

/// Hashes the weights into the verification cache at `cache_path` (not timed: the first
/// use of a model on a machine).
fn prime_verification_cache(o: &Options, catalog: &Path, cache_path: &Path) {
    let catalog = Catalog::load(catalog).unwrap();
    let spec = &catalog.entries()[0].spec;
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
    cache.save_if_changed().unwrap();
}

/// Sentences per second of `embed` on `texts` in calls of `batch` texts.
fn throughput(manager: &ModelManager, name: &str, texts: &[&str], batch: usize, min: f64) -> f64 {
    let calls: Vec<&[&str]> = texts.chunks(batch).collect();
    let start = Instant::now();
    let mut done = 0_usize;
    for call in calls.iter().cycle() {
        let out = manager.embed(name, call).unwrap();
        assert_eq!(out.embeddings.len(), call.len());
        done += call.len();
        if start.elapsed().as_secs_f64() >= min {
            break;
        }
    }
    #[allow(clippy::cast_precision_loss, reason = "small counts")]
    let rate = done as f64 / start.elapsed().as_secs_f64();
    rate
}

/// Runs every measurement and prints the figures.
pub(crate) fn run(engine: &Engine) {
    let o = Options::from_args();
    let catalog = catalog_dir(&o.spec);
    // Outside the catalog folder, which holds spec files only.
    let scratch = tempfile::tempdir().unwrap();
    let cache_path = scratch.path().join("verify-cache.json");
    // Hashing the weights into the verification cache warms the page cache; neither this
    // nor the first load (the provider's one-time set-up) is counted.
    prime_verification_cache(&o, catalog.path(), &cache_path);
    cold_load(&o, engine, catalog.path(), &cache_path);
    let loads: Vec<f64> = (0..o.loads.max(1))
        .map(|_| cold_load(&o, engine, catalog.path(), &cache_path))
        .collect();

    let texts: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&o.texts).unwrap()).unwrap();
    let list = |key: &str| -> Vec<String> {
        serde_json::from_value(texts[key].clone()).unwrap_or_else(|_| panic!("no `{key}` texts"))
    };
    let (short, long) = (list("short"), list("long"));
    let short: Vec<&str> = short.iter().map(String::as_str).collect();
    let long: Vec<&str> = long.iter().map(String::as_str).collect();
    let entries = (engine.catalog)(catalog.path(), o.threads);
    let name = entries.entries()[0].spec.model_name.clone();
    let manager = ModelManager::builder(entries, &o.models_root)
        .provider((engine.provider)(o.threads))
        .embedding_cache(EmbeddingCacheConfig::disabled())
        .reaper(false)
        .build()
        .unwrap();
    // One warm-up call per text length (thread pools, allocator, first shapes).
    manager.embed(&name, &short).unwrap();
    manager.embed(&name, &long[..1]).unwrap();
    let min = o.min_seconds;
    let short_b1 = throughput(&manager, &name, &short, 1, min);
    let short_b32 = throughput(&manager, &name, &short, 32, min);
    let long_b1 = throughput(&manager, &name, &long, 1, min);
    let long_b32 = throughput(&manager, &name, &long, 32, min);
    println!(
        "{}",
        serde_json::json!({
            // The samples only: `cargo xtask bench` takes their median (one definition of
            // the median for the whole report).
            "cold_load_all_s": loads,
            "short_b1": short_b1,
            "short_b32": short_b32,
            "long_b1": long_b1,
            "long_b32": long_b32,
            "threads": o.threads,
        })
    );
}
