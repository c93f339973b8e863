//! The candle side of `cargo xtask bench clip`: the `image_clip` preset's preprocessing of
//! JPEG photographs, and the image tower of a CLIP model through the manager and the
//! candle provider, printed as one JSON object on stdout (see `common/clip_runner.rs`).
//!
//! `clip_candle --models-root DIR --spec FILE --pixels FILE [--batch N] [--images DIR]
//! [--threads N] [--min-seconds S] [--min-calls N]`; xtask runs it interleaved with the ONNX runner and
//! the Python anchors, and compares them.

#![allow(
    clippy::unwrap_used,
    reason = "a bench runner fails loudly on any error"
)]

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;

use dp_provider_candle::{CandleProvider, CandleProviderConfig};
use dp_spec::{Catalog, ModelProvider};

#[path = "common/clip_runner.rs"]
mod clip_runner;

fn catalog(dir: &Path, _threads: usize) -> Catalog {
    Catalog::load(dir).unwrap()
}

fn provider(threads: usize) -> Arc<dyn ModelProvider> {
    Arc::new(CandleProvider::with_config(CandleProviderConfig {
        threads: NonZeroUsize::new(threads),
    }))
}

fn main() {
    clip_runner::run(&clip_runner::Engine { catalog, provider });
}
