//! The dp side of `cargo xtask bench audio`: Whisper's log-mel features of a long 16 kHz
//! recording (the `audio_log_mel` preset's extractor, every 30-second chunk), printed as one
//! JSON object on stdout.
//!
//! `log_mel --audio FILE [--n-mels N] [--min-seconds S] [--min-calls N]` (threads:
//! `RAYON_NUM_THREADS`, which xtask sets): the
//! WAV is decoded once (not timed, as the anchor reads it once), then
//! `LogMelExtractor::chunked_features` is timed after one warm-up call. Prints `seconds`
//! (per call), `chunks`, `audio_seconds`, `decode_seconds` (one decode of the file, for
//! the record) and `probe` (the same cells the anchor prints).

#![allow(
    clippy::unwrap_used,
    reason = "a bench runner fails loudly on any error"
)]

use std::time::Instant;

use dp_manager::preset::audio::decode::{AudioLimits, decode_mono};
use dp_manager::preset::audio::log_mel::{LogMelConfig, LogMelExtractor};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let audio = arg(&args, "--audio", "");
    let n_mels: usize = arg(&args, "--n-mels", "80").parse().unwrap();
    let min_seconds: f64 = arg(&args, "--min-seconds", "2").parse().unwrap();
    let min_calls: usize = arg(&args, "--min-calls", "3").parse().unwrap();
    let bytes = std::fs::read(&audio).unwrap();
    let started = Instant::now();
    let (samples, _) = decode_mono(&bytes, 16_000, &AudioLimits::default()).unwrap();
    let decode_seconds = started.elapsed().as_secs_f64();
    let extractor = LogMelExtractor::new(LogMelConfig {
        n_mels,
        ..LogMelConfig::default()
    })
    .unwrap();
    let features = extractor.chunked_features(&samples);
    let mut seconds = Vec::new();
    let start = Instant::now();
    while seconds.len() < min_calls || start.elapsed().as_secs_f64() < min_seconds {
        let t = Instant::now();
        let out = extractor.chunked_features(&samples);
        seconds.push(t.elapsed().as_secs_f64());
        assert_eq!(out.len(), features.len());
    }
    let last = features.last().unwrap();
    let probe: Vec<f32> = features[0][10 * 3000..10 * 3000 + 32]
        .iter()
        .chain(&last[40 * 3000..40 * 3000 + 32])
        .copied()
        .collect();
    #[allow(clippy::cast_precision_loss, reason = "seconds of audio")]
    let audio_seconds = samples.len() as f64 / 16_000.0;
    println!(
        "{}",
        serde_json::json!({
            "seconds": seconds,
            "chunks": features.len(),
            "audio_seconds": audio_seconds,
            "decode_seconds": decode_seconds,
            "probe": probe,
        })
    );
}
