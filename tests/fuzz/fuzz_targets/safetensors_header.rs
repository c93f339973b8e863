//! Fuzz target: safetensors header and tensor checks of the candle provider.
//! The property itself lives in `tests/fuzz/checks.rs`, shared with the regression replay.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::safetensors_header(data));
