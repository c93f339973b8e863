//! Fuzz target: the YAML spec reader and validator (round trip through the YAML writer).
//! The property itself lives in `tests/fuzz/checks.rs`, shared with the regression replay.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::spec_yaml(data));
