//! The candle side of `cargo xtask bench text` (also run by `cargo xtask bench embed`):
//! throughput of `ModelManager::embed_with_prompt` (an XLM-R sentence embedder) or
//! `ModelManager::rerank` (a cross-encoder) through the manager and the candle provider,
//! printed as one JSON object on stdout (see `common/text_runner.rs` for what is measured).
//!
//! `text_candle --models-root DIR --catalog DIR --model NAME --inputs FILE --task
//! embed|rerank [--prompt NAME] [--threads N] [--min-seconds S] [--min-calls N]`; xtask
//! runs it interleaved with the ONNX runner and sentence-transformers, and compares them.

#![allow(
    clippy::unwrap_used,
    reason = "a bench runner fails loudly on any error"
)]

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;

use dp_provider_candle::{CandleProvider, CandleProviderConfig};
use dp_spec::{Catalog, ModelProvider};

#[path = "common/text_runner.rs"]
mod text_runner;

fn catalog(dir: &Path, _threads: usize) -> Catalog {
    Catalog::load(dir).unwrap()
}

fn provider(threads: usize) -> Arc<dyn ModelProvider> {
    Arc::new(CandleProvider::with_config(CandleProviderConfig {
        threads: NonZeroUsize::new(threads),
    }))
}

fn main() {
    text_runner::run(&text_runner::Engine { catalog, provider });
}
