//! The ONNX Runtime side of `cargo xtask bench clip`: the image tower
//! (`vision_model.onnx`) of a CLIP model through the manager and the `onnx` provider,
//! printed as one JSON object on stdout (see `common/clip_runner.rs`).
//!
//! `clip_onnx --models-root DIR --spec FILE --pixels FILE [--batch N] [--threads N]
//! [--min-seconds S] [--min-calls N]`; `--threads` replaces the spec's `onnx.intra_op_threads`. The library
//! is found as in deployment: `ORT_DYLIB_PATH`, else the setup folder next to the models
//! root.

#![allow(
    clippy::unwrap_used,
    reason = "a bench runner fails loudly on any error"
)]

use std::path::Path;
use std::sync::Arc;

use dp_provider_onnx::{OnnxProvider, OnnxProviderConfig};
use dp_spec::{Catalog, ModelProvider, OnnxSettings};

#[path = "common/clip_runner.rs"]
mod clip_runner;

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
    clip_runner::run(&clip_runner::Engine { catalog, provider });
}
