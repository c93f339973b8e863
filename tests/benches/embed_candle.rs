//! The candle side of `cargo xtask bench embed`: cold load and throughput of a
//! sentence-embedding model through the manager and the candle provider, printed as one
//! JSON object on stdout (see `common/embed_runner.rs` for what is measured).
//!
//! `embed_candle --models-root DIR --spec FILE --texts FILE [--threads N] [--loads N]
//! [--min-seconds S]`; xtask runs it interleaved with the other providers and the Python
//! anchors, and compares them.

#![allow(
    clippy::unwrap_used,
    reason = "a bench runner fails loudly on any error"
)]

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;

use dp_provider_candle::{CandleProvider, CandleProviderConfig};
use dp_spec::{Catalog, ModelProvider};

#[path = "common/embed_runner.rs"]
mod embed_runner;

fn catalog(dir: &Path, _threads: usize) -> Catalog {
    Catalog::load(dir).unwrap()
}

fn provider(threads: usize) -> Arc<dyn ModelProvider> {
    Arc::new(CandleProvider::with_config(CandleProviderConfig {
        threads: NonZeroUsize::new(threads),
    }))
}

fn main() {
    embed_runner::run(&embed_runner::Engine { catalog, provider });
}
