//! The candle side of `cargo xtask bench whisper`: greedy transcription of one audio file
//! with `ModelManager::transcribe` (a Whisper model through the manager, the
//! `speech_recognition` preset and the candle provider), exactly `--new-tokens` tokens,
//! printed as one JSON object on stdout.
//!
//! `whisper_candle --models-root DIR --catalog DIR --model NAME --audio FILE
//! [--language en] [--new-tokens 64] [--threads N] [--min-seconds S] [--min-calls N]`: the
//! bytes of `--audio` (read once) go in one call per timing, with the language given (no
//! detection), the task `transcribe` and `min_new_tokens = max_new_tokens = --new-tokens`,
//! so the end of text is never chosen early and every 30-second chunk gets exactly that
//! many new tokens. A call is end to end: decoding the file, the log-mel features, the
//! encoder and the decoder's search. After one warm-up call, calls run for at least
//! `--min-seconds` and `--min-calls`; the figures are:
//!
//! - `seconds_per_call`: the timed calls' mean seconds (what xtask reads), and `seconds`,
//!   each timed call's seconds;
//! - `audio_seconds`: the length of the audio (as the manager measured it);
//! - `kv_cache_peak_bytes`: the largest key/value cache of the warm-up call;
//! - `token_ids`: the generated ids of the warm-up call, one list per 30-second chunk,
//!   which xtask compares with transformers' on the same file before it trusts the figures.
//!
//! xtask runs it interleaved with `xtask/src/bench/whisper_transformers.py`.

#![allow(
    clippy::unwrap_used,
    reason = "a bench runner fails loudly on any error"
)]

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use dp_manager::preset::AudioInput;
use dp_manager::{GenerationOptions, ModelManager, TranscriptionOptions};
use dp_provider_candle::{CandleProvider, CandleProviderConfig};
use dp_spec::Catalog;

/// The command line.
struct Options {
    models_root: PathBuf,
    catalog: PathBuf,
    model: String,
    audio: PathBuf,
    language: String,
    new_tokens: usize,
    threads: usize,
    min_seconds: f64,
    min_calls: usize,
}

impl Options {
    fn from_args() -> Self {
        let all: Vec<String> = std::env::args().collect();
        let get = |name: &str| -> Option<String> {
            all.iter()
                .position(|a| a == name)
                .and_then(|i| all.get(i + 1).cloned())
        };
        Self {
            models_root: get("--models-root").expect("--models-root").into(),
            catalog: get("--catalog").expect("--catalog").into(),
            model: get("--model").expect("--model"),
            audio: get("--audio").expect("--audio").into(),
            language: get("--language").unwrap_or_else(|| "en".to_owned()),
            new_tokens: get("--new-tokens").map_or(64, |v| v.parse().unwrap()),
            threads: get("--threads").map_or(2, |v| v.parse().unwrap()),
            min_seconds: get("--min-seconds").map_or(1.0, |v| v.parse().unwrap()),
            min_calls: get("--min-calls").map_or(3, |v| v.parse().unwrap()),
        }
    }
}

fn main() {
    let o = Options::from_args();
    let bytes = std::fs::read(&o.audio).unwrap();
    let provider = Arc::new(CandleProvider::with_config(CandleProviderConfig {
        threads: NonZeroUsize::new(o.threads),
    }));
    let manager = ModelManager::builder(Catalog::load(&o.catalog).unwrap(), &o.models_root)
        .provider(provider)
        .reaper(false)
        .build()
        .unwrap();
    let options = TranscriptionOptions {
        language: Some(o.language.clone()),
        generation: GenerationOptions {
            max_new_tokens: Some(o.new_tokens),
            min_new_tokens: o.new_tokens,
            ..GenerationOptions::default()
        },
        ..TranscriptionOptions::default()
    };
    let name = o.model.as_str();
    let transcribe = || {
        // The file's bytes, as a caller hands them over; decoding them is part of the call.
        let audio = [AudioInput::Encoded(bytes.clone())];
        let out = manager.transcribe(name, &audio, &options).unwrap();
        assert_eq!(out.transcripts.len(), 1);
        for ids in &out.transcripts[0].chunk_token_ids {
            assert_eq!(ids.len(), o.new_tokens, "not exactly --new-tokens tokens");
        }
        out
    };
    let first = transcribe();
    let mut seconds = Vec::new();
    let start = Instant::now();
    while seconds.len() < o.min_calls.max(1) || start.elapsed().as_secs_f64() < o.min_seconds {
        let call = Instant::now();
        transcribe();
        seconds.push(call.elapsed().as_secs_f64());
    }
    let total: f64 = seconds.iter().sum();
    #[allow(clippy::cast_precision_loss, reason = "small counts")]
    let seconds_per_call = total / seconds.len() as f64;
    let transcript = &first.transcripts[0];
    println!(
        "{}",
        serde_json::json!({
            "seconds_per_call": seconds_per_call,
            "seconds": seconds,
            "audio_seconds": transcript.duration_seconds,
            "kv_cache_peak_bytes": first.kv_cache_peak_bytes,
            "token_ids": transcript.chunk_token_ids,
            "text": transcript.text,
            "new_tokens": o.new_tokens,
            "threads": o.threads,
        })
    );
}
