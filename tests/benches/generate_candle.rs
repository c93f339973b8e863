//! The candle side of `cargo xtask bench generate`: greedy generation of exactly
//! `--new-tokens` tokens per text with `ModelManager::generate` (a T5 model through the
//! manager and the candle provider), printed as one JSON object on stdout.
//!
//! `generate_candle --models-root DIR --catalog DIR --model NAME --inputs FILE --batch N
//! [--new-tokens 64] [--threads N] [--min-seconds S] [--min-calls N]`: the first `--batch`
//! texts of the `texts` of `--inputs` (a JSON object) go in one call, with
//! `min_new_tokens = max_new_tokens = --new-tokens` so the end of sequence is never chosen
//! early and every text gets exactly that many new tokens. After one warm-up call, calls
//! run for at least `--min-seconds` and `--min-calls`; the figures are:
//!
//! - `per_s`: new tokens per second over the batch (`batch × new_tokens` per call, over the
//!   timed calls' total time), and `seconds`, each timed call's seconds;
//! - `kv_cache_peak_bytes`: the largest key/value cache of the warm-up call (the whole
//!   batch; xtask divides it by the batch size);
//! - `token_ids`: the generated ids of the warm-up call, one list per text, which xtask
//!   compares with transformers' on the same inputs before it trusts the figures.
//!
//! xtask runs it interleaved with `xtask/src/bench/generate_transformers.py`.

#![allow(
    clippy::unwrap_used,
    reason = "a bench runner fails loudly on any error"
)]

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use dp_manager::{GenerationOptions, ModelManager};
use dp_provider_candle::{CandleProvider, CandleProviderConfig};
use dp_spec::Catalog;

/// The command line.
struct Options {
    models_root: PathBuf,
    catalog: PathBuf,
    model: String,
    inputs: PathBuf,
    batch: usize,
    new_tokens: usize,
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
            batch: get("--batch").expect("--batch").parse().unwrap(),
            new_tokens: get("--new-tokens").map_or(64, |v| v.parse().unwrap()),
            threads: get("--threads").map_or(2, |v| v.parse().unwrap()),
            min_seconds: get("--min-seconds").map_or(1.0, |v| v.parse().unwrap()),
            min_calls: get("--min-calls").map_or(3, |v| v.parse().unwrap()),
        }
    }
}

fn main() {
    let o = Options::from_args();
    let inputs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&o.inputs).unwrap()).unwrap();
    let texts: Vec<String> = serde_json::from_value(inputs["texts"].clone()).unwrap();
    assert!(
        texts.len() >= o.batch && o.batch > 0,
        "--batch {} but {} texts in {}",
        o.batch,
        texts.len(),
        o.inputs.display()
    );
    let texts: Vec<&str> = texts[..o.batch].iter().map(String::as_str).collect();
    let provider = Arc::new(CandleProvider::with_config(CandleProviderConfig {
        threads: NonZeroUsize::new(o.threads),
    }));
    let manager = ModelManager::builder(Catalog::load(&o.catalog).unwrap(), &o.models_root)
        .provider(provider)
        .reaper(false)
        .build()
        .unwrap();
    let options = GenerationOptions {
        max_new_tokens: Some(o.new_tokens),
        min_new_tokens: o.new_tokens,
        ..GenerationOptions::default()
    };
    let name = o.model.as_str();
    let generate = || {
        let out = manager.generate(name, &texts, &options).unwrap();
        assert_eq!(out.token_ids.len(), texts.len());
        for ids in &out.token_ids {
            assert_eq!(ids.len(), o.new_tokens, "not exactly --new-tokens tokens");
        }
        out
    };
    let first = generate();
    let mut seconds = Vec::new();
    let start = Instant::now();
    while seconds.len() < o.min_calls.max(1) || start.elapsed().as_secs_f64() < o.min_seconds {
        let call = Instant::now();
        generate();
        seconds.push(call.elapsed().as_secs_f64());
    }
    let total: f64 = seconds.iter().sum();
    #[allow(clippy::cast_precision_loss, reason = "small counts")]
    let per_s = (seconds.len() * o.batch * o.new_tokens) as f64 / total;
    println!(
        "{}",
        serde_json::json!({
            "per_s": per_s,
            "seconds": seconds,
            "kv_cache_peak_bytes": first.kv_cache_peak_bytes,
            "token_ids": first.token_ids,
            "batch": o.batch,
            "new_tokens": o.new_tokens,
            "threads": o.threads,
        })
    );
}
