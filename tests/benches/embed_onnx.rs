//! The ONNX Runtime side of `cargo xtask bench embed`: cold load and throughput of a
//! sentence-embedding model through the manager and the `onnx` provider, printed as one
//! JSON object on stdout (see `common/embed_runner.rs` for what is measured).
//!
//! `embed_onnx --models-root DIR --spec FILE --texts FILE [--threads N] [--loads N]
//! [--min-seconds S]`; `--threads` replaces the spec's `onnx.intra_op_threads`. The
//! library is found as in deployment: `ORT_DYLIB_PATH`, else the setup folder next to the
//! models root.

#![allow(
    clippy::unwrap_used,
    reason = "a bench runner fails loudly on any error"
)]

use std::path::Path;
use std::sync::Arc;

use dp_provider_onnx::{OnnxProvider, OnnxProviderConfig};
use dp_spec::{Catalog, ModelProvider, OnnxSettings};

#[path = "common/embed_runner.rs"]
mod embed_runner;

/// The catalog with the spec's intra-op threads set to `threads`.
fn catalog(dir: &Path, threads: usize) -> Catalog {
    let catalog = Catalog::load(dir).unwrap();
    let mut entries = catalog.entries().to_vec();
    for entry in &mut entries {
        let settings = entry.spec.onnx.get_or_insert_with(OnnxSettings::default);
        settings.intra_op_threads = Some(u16::try_from(threads).unwrap());
    }
    Catalog::from_entries(dir, entries).unwrap()
}

fn provider(_threads: usize) -> Arc<dyn ModelProvider> {
    Arc::new(OnnxProvider::new(OnnxProviderConfig::default()))
}

fn main() {
    embed_runner::run(&embed_runner::Engine { catalog, provider });
}
