//! Fuzz target: the JSON spec reader and validator (agreement with serde_json).
//! The property itself lives in `tests/fuzz/checks.rs`, shared with the regression replay.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::spec_json(data));
