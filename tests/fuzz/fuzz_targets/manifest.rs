//! Fuzz target: directory manifests on arbitrary trees (entry digests, order, aggregate).
//! The property itself lives in `tests/fuzz/checks.rs`, shared with the regression replay.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::manifest(data));
