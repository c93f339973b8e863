//! The ONNX Runtime side of `cargo xtask bench text` (also run by `cargo xtask bench
//! embed`): throughput of `ModelManager::embed_with_prompt` (an XLM-R sentence embedder) or
//! `ModelManager::rerank` (a cross-encoder) through the manager and the `onnx` provider,
//! printed as one JSON object on stdout (see `common/text_runner.rs` for what is measured).
//!
//! `text_onnx --models-root DIR --catalog DIR --model NAME --inputs FILE --task
//! embed|rerank [--prompt NAME] [--threads N] [--min-seconds S] [--min-calls N]`;
//! `--threads` replaces every spec's `onnx.intra_op_threads`. The library is found as in
//! deployment: `ORT_DYLIB_PATH`, else the setup folder next to the models root.

#![allow(
    clippy::unwrap_used,
    reason = "a bench runner fails loudly on any error"
)]

use std::path::Path;
use std::sync::Arc;

use dp_provider_onnx::{OnnxProvider, OnnxProviderConfig};
use dp_spec::{Catalog, Engine, ModelProvider, OnnxSettings};

#[path = "common/text_runner.rs"]
mod text_runner;

/// The catalog with every ONNX spec's intra-op threads set to `threads`.
fn catalog(dir: &Path, threads: usize) -> Catalog {
    let catalog = Catalog::load(dir).unwrap();
    let mut entries = catalog.entries().to_vec();
    for entry in &mut entries {
        if entry.spec.engine != Engine::Onnx {
            continue;
        }
        let settings = entry.spec.onnx.get_or_insert_with(OnnxSettings::default);
        settings.intra_op_threads = Some(u16::try_from(threads).unwrap());
    }
    Catalog::from_entries(dir, entries).unwrap()
}

fn provider(_threads: usize) -> Arc<dyn ModelProvider> {
    Arc::new(OnnxProvider::new(OnnxProviderConfig::default()))
}

fn main() {
    text_runner::run(&text_runner::Engine { catalog, provider });
}
