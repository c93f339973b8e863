//! What the `text_candle` and `text_onnx` runners share: the rows of `cargo xtask bench
//! text` (run by `cargo xtask bench embed` too), printed as one JSON object on stdout.
//!
//! `--task embed`: `ModelManager::embed_with_prompt(model, texts, prompt)` on the `texts`
//! of `--inputs` (32 short texts, one call), with the embedding cache off; `--task rerank`:
//! `ModelManager::rerank(model, query, documents)` on its `query` and `documents` (32
//! pairs, one call). After one warm-up call, calls run for at least `--min-seconds` and
//! `--min-calls`; `per_s` is texts (or pairs) per second over them. `probe` is the output
//! of the warm-up call (the first embedding, or every score), which xtask compares with
//! sentence-transformers' on the same inputs before it trusts the figures.
//!
//! `--models-root DIR --catalog DIR --model NAME --inputs FILE --task embed|rerank
//! [--prompt NAME] [--threads N] [--min-seconds S] [--min-calls N]`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use dp_manager::{EmbeddingCacheConfig, ModelManager};
use dp_spec::{Catalog, ModelProvider};

/// The command line of a runner.
struct Options {
    models_root: PathBuf,
    catalog: PathBuf,
    model: String,
    inputs: PathBuf,
    task: String,
    prompt: Option<String>,
    threads: usize,
    min_seconds: f64,
    min_calls: usize,
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
            models_root: get("--models-root").expect("--models-root").into(),
            catalog: get("--catalog").expect("--catalog").into(),
            model: get("--model").expect("--model"),
            inputs: get("--inputs").expect("--inputs").into(),
            task: get("--task").expect("--task"),
            prompt: get("--prompt"),
            threads: get("--threads").map_or(2, |v| v.parse().unwrap()),
            min_seconds: get("--min-seconds").map_or(1.0, |v| v.parse().unwrap()),
            min_calls: get("--min-calls").map_or(3, |v| v.parse().unwrap()),
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

/// Items per second of `call` (which returns how many items it did), run for at least
/// `min_seconds` and `min_calls` calls.
fn rate(o: &Options, mut call: impl FnMut() -> usize) -> f64 {
    let start = Instant::now();
    let (mut done, mut calls) = (0_usize, 0_usize);
    while calls < o.min_calls.max(1) || start.elapsed().as_secs_f64() < o.min_seconds {
        done += call();
        calls += 1;
    }
    #[allow(clippy::cast_precision_loss, reason = "small counts")]
    let per_s = done as f64 / start.elapsed().as_secs_f64();
    per_s
}

/// Runs the workload and prints the figures.
pub(crate) fn run(engine: &Engine) {
    let o = Options::from_args();
    let inputs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&o.inputs).unwrap()).unwrap();
    let catalog = (engine.catalog)(&o.catalog, o.threads);
    let manager = ModelManager::builder(catalog, &o.models_root)
        .provider((engine.provider)(o.threads))
        .embedding_cache(EmbeddingCacheConfig::disabled())
        .reaper(false)
        .build()
        .unwrap();
    let name = o.model.as_str();
    let (probe, per_s): (Vec<f32>, f64) = match o.task.as_str() {
        "embed" => {
            let texts: Vec<String> = serde_json::from_value(inputs["texts"].clone()).unwrap();
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            let prompt = o.prompt.as_deref();
            let first = manager.embed_with_prompt(name, &texts, prompt).unwrap();
            let per_s = rate(&o, || {
                let out = manager.embed_with_prompt(name, &texts, prompt).unwrap();
                assert_eq!(out.embeddings.len(), texts.len());
                texts.len()
            });
            (first.embeddings[0].clone(), per_s)
        }
        "rerank" => {
            let query: String = serde_json::from_value(inputs["query"].clone()).unwrap();
            let documents: Vec<String> =
                serde_json::from_value(inputs["documents"].clone()).unwrap();
            let documents: Vec<&str> = documents.iter().map(String::as_str).collect();
            let first = manager.rerank(name, &query, &documents).unwrap();
            let per_s = rate(&o, || {
                let out = manager.rerank(name, &query, &documents).unwrap();
                assert_eq!(out.scores.len(), documents.len());
                documents.len()
            });
            (first.scores, per_s)
        }
        other => panic!("--task {other}: expected embed or rerank"),
    };
    println!(
        "{}",
        serde_json::json!({
            "per_s": per_s,
            "probe": probe,
            "threads": o.threads,
        })
    );
}
