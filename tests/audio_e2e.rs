//! Audio presets end to end: real audio files decoded (WAV of every sample type, FLAC,
//! MP3, Ogg/Vorbis), downmixed and resampled, and Whisper's log-mel features, against
//! transformers' `WhisperFeatureExtractor` on the same files.
//!
//! The test audio is made by `cargo xtask setup` (asset `audio`,
//! `xtask/scripts/make_test_audio.py`); the references in `tests/data/reference/audio/`
//! (`make_reference.py` there) are what the extractor computed, 80 and 128 mel bins. Bounds:
//! max |Δ| ≤ 1e-4 for 16 kHz input (the bar); for inputs at other rates or through
//! lossy codecs, compared with the features of the exact 16 kHz signal, the bounds below
//! (each states what limits it). Fails under CI=true when the assets are missing.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::path::PathBuf;
use std::sync::Arc;

use dp_manager::ModelManager;
use dp_manager::preset::audio::decode::{AudioLimits, decode_mono};
use dp_manager::preset::audio::log_mel::{LogMelConfig, LogMelExtractor, mel_filter_bank};
use dp_manager::preset::{AudioInput, PresetInputs};
use dp_spec::{Catalog, ErrorCode, TensorData};
use serde_json::Value;

/// The bar for 16 kHz input.
const PARITY_16K: f32 = 1e-4;

fn reference_dir() -> PathBuf {
    dp_tests::data_dir().join("reference/audio")
}

fn index() -> Value {
    serde_json::from_slice(&std::fs::read(reference_dir().join("features.json")).unwrap()).unwrap()
}

fn floats(path: &std::path::Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn extractor(n_mels: usize) -> LogMelExtractor {
    LogMelExtractor::new(LogMelConfig {
        n_mels,
        ..LogMelConfig::default()
    })
    .unwrap()
}

/// The largest |Δ| between our `[n_mels, 3000]` features and a stored reference (the
/// stored frames, then the padding value for the rest).
fn max_diff(ours: &[f32], reference: &Value, name: &str) -> f32 {
    let entry = &reference["features"][name];
    let n_mels = usize::try_from(entry["n_mels"].as_u64().unwrap()).unwrap();
    let stored = usize::try_from(entry["stored_shape"][1].as_u64().unwrap()).unwrap();
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the file's value is an f32"
    )]
    let pad = entry["pad_value"].as_f64().unwrap() as f32;
    let want = floats(&reference_dir().join(name));
    assert_eq!(want.len(), n_mels * stored, "{name}");
    let mut worst = 0.0_f32;
    for mel in 0..n_mels {
        for frame in 0..3000 {
            let expected = if frame < stored {
                want[mel * stored + frame]
            } else {
                pad
            };
            worst = worst.max((ours[mel * 3000 + frame] - expected).abs());
        }
    }
    worst
}

/// The largest |Δ| over the cells at least 20 dB above the reference's floor (the padding
/// value plus 0.5, since the features are `(log10 + 4) / 4`) and not among the first and
/// last three frames of the audio (where a resampler's or codec's start and end
/// transients sit), and the mean |Δ| over all cells. Where the exact signal has no
/// energy, any resampler or codec noise (even 80 dB down) moves the clamped floor, so the
/// maximum over every cell says little about an input that is not the reference's own
/// samples.
fn loud_max_and_mean(ours: &[f32], reference: &Value, name: &str) -> (f32, f32) {
    let entry = &reference["features"][name];
    let n_mels = usize::try_from(entry["n_mels"].as_u64().unwrap()).unwrap();
    let stored = usize::try_from(entry["stored_shape"][1].as_u64().unwrap()).unwrap();
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the file's value is an f32"
    )]
    let pad = entry["pad_value"].as_f64().unwrap() as f32;
    let want = floats(&reference_dir().join(name));
    let (mut loud, mut sum) = (0.0_f32, 0.0_f64);
    for mel in 0..n_mels {
        for frame in 0..3000 {
            let expected = if frame < stored {
                want[mel * stored + frame]
            } else {
                pad
            };
            let d = (ours[mel * 3000 + frame] - expected).abs();
            sum += f64::from(d);
            if expected >= pad + 0.5 && frame >= 3 && frame + 3 < stored {
                loud = loud.max(d);
            }
        }
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_precision_loss,
        reason = "a mean"
    )]
    (loud, (sum / (n_mels * 3000) as f64) as f32)
}

/// The setup's audio file `name`, or `None` (a failure under CI=true) without it.
fn audio(name: &str, test: &str) -> Option<Vec<u8>> {
    dp_tests::asset(&format!("audio/{name}"), test).map(|p| std::fs::read(p).unwrap())
}

fn decode16k(bytes: &[u8]) -> Vec<f32> {
    decode_mono(bytes, 16_000, &AudioLimits::default())
        .unwrap()
        .0
}

#[test]
fn log_mel_of_16k_files_matches_whisper_feature_extractor() {
    let test = "log_mel_of_16k_files_matches_whisper_feature_extractor";
    let reference = index();
    let mut worst = 0.0_f32;
    for (file, stem) in [
        ("two_tone_16k_s16.wav", "two_tone_16k_s16"),
        ("noise_16k_f32.wav", "noise_16k_f32"),
        ("speech_16k_s16.wav", "speech_16k_s16"),
        // FLAC is lossless: the same samples as the 16-bit WAV.
        ("two_tone_16k.flac", "two_tone_16k_s16"),
    ] {
        let Some(bytes) = audio(file, test) else {
            return;
        };
        let samples = decode16k(&bytes);
        for n_mels in [80, 128] {
            let ours = extractor(n_mels).features(&samples);
            let d = max_diff(&ours, &reference, &format!("{stem}.{n_mels}.f32"));
            assert!(d <= PARITY_16K, "{file} ({n_mels} mels): max |Δ| {d:e}");
            worst = worst.max(d);
        }
    }
    eprintln!("log-mel vs WhisperFeatureExtractor, 16 kHz files: worst max |Δ| {worst:.2e}");
}

#[test]
fn long_audio_is_cut_into_30_second_chunks() {
    let test = "long_audio_is_cut_into_30_second_chunks";
    let Some(bytes) = audio("long_65s_16k_s16.wav", test) else {
        return;
    };
    let reference = index();
    let samples = decode16k(&bytes);
    assert_eq!(samples.len(), 65 * 16_000);
    for n_mels in [80, 128] {
        let chunks = extractor(n_mels).chunked_features(&samples);
        assert_eq!(chunks.len(), 3, "65 s is three 30-second chunks");
        for (i, chunk) in chunks.iter().enumerate() {
            let d = max_diff(
                chunk,
                &reference,
                &format!("long_65s_16k_s16.chunk{i}.{n_mels}.f32"),
            );
            assert!(d <= PARITY_16K, "chunk {i} ({n_mels} mels): max |Δ| {d:e}");
        }
    }
}

#[test]
fn other_rates_and_codecs_come_close_to_the_exact_signal() {
    let test = "other_rates_and_codecs_come_close_to_the_exact_signal";
    let reference = index();
    // (file, the 16 kHz reference of its exact signal, bound on the largest |Δ| over the
    // cells 20 dB above the floor, away from the first and last three frames): what
    // limits each is 16-bit rounding (s24/s32 come within f32 rounding), 8-bit PCM's
    // 48 dB floor, the resampler's passband ripple (measured 3e-6 from 8 kHz, 6e-4 from
    // 44.1 kHz stereo), and the lossy codecs' own noise.
    let cases: [(&str, &str, f32); 9] = [
        ("two_tone_16k_s24.wav", "two_tone_analytic_16k", 1e-5),
        ("two_tone_16k_s32.wav", "two_tone_analytic_16k", 1e-5),
        ("two_tone_16k_u8.wav", "two_tone_analytic_16k", 2e-3),
        ("two_tone_8k_s16.wav", "two_tone_analytic_16k", 1e-4),
        (
            "two_tone_44k_stereo_s16.wav",
            "two_tone_stereo_mix_analytic_16k",
            2e-3,
        ),
        (
            "two_tone_44k_stereo.flac",
            "two_tone_stereo_mix_analytic_16k",
            2e-3,
        ),
        ("two_tone_16k.mp3", "two_tone_analytic_16k", 0.05),
        ("two_tone_16k.ogg", "two_tone_analytic_16k", 0.1),
        (
            "two_tone_44k_stereo.ogg",
            "two_tone_stereo_mix_analytic_16k",
            0.6,
        ),
    ];
    for (file, target, bound) in cases {
        let Some(bytes) = audio(file, test) else {
            return;
        };
        let samples = decode16k(&bytes);
        assert!(
            samples.len().abs_diff(48_000) <= 1200,
            "{file}: {} samples for 3 s",
            samples.len()
        );
        for n_mels in [80, 128] {
            let ours = extractor(n_mels).features(&samples);
            let name = format!("{target}.{n_mels}.f32");
            let d = max_diff(&ours, &reference, &name);
            let (loud, mean) = loud_max_and_mean(&ours, &reference, &name);
            eprintln!(
                "{file} ({n_mels} mels) vs the exact 16 kHz signal: max |Δ| {d:.2e}, \
                 {loud:.2e} over cells 20 dB above the floor, mean |Δ| {mean:.2e}"
            );
            assert!(
                loud <= bound,
                "{file} ({n_mels} mels): {loud:e} > {bound:e}"
            );
        }
    }
}

#[test]
fn mel_filters_are_transformers() {
    for n_mels in [80_usize, 128] {
        let want: Vec<f64> =
            std::fs::read(reference_dir().join(format!("mel_filters.{n_mels}.f64")))
                .unwrap()
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                .collect();
        let ours = mel_filter_bank(201, n_mels, 0.0, 8000.0, 16_000);
        // Stored [201, n_mels].
        for (bin, row) in want.chunks(n_mels).enumerate() {
            for (mel, &w) in row.iter().enumerate() {
                let d = (ours[mel][bin] - w).abs();
                assert!(d <= 1e-12, "{n_mels} mels, filter {mel}, bin {bin}: {d:e}");
            }
        }
    }
}

#[test]
fn the_preset_makes_whisper_inputs_and_refuses_bad_audio() {
    let test = "the_preset_makes_whisper_inputs_and_refuses_bad_audio";
    let Some(long) = audio("long_65s_16k_s16.wav", test) else {
        return;
    };
    let manager = ModelManager::builder(
        Catalog::load(&dp_tests::sample_catalog()).unwrap(),
        dp_tests::workspace_root().join(".dp-assets/models"),
    )
    .provider(Arc::new(dp_provider_candle::CandleProvider::new()))
    .reaper(false)
    .build()
    .unwrap();
    // whisper-large-v3 takes 128 mel bins; its preset is built from the spec alone.
    let inputs = [AudioInput::Encoded(long)];
    let made = manager
        .preprocess("whisper-large-v3-triton", PresetInputs::Audio(&inputs))
        .unwrap();
    let features = &made.tensors["input_features"];
    assert_eq!(features.shape(), [3, 128, 3000]);
    let TensorData::Fp32(values) = features.data() else {
        panic!("fp32 features")
    };
    let reference = index();
    let d = max_diff(
        &values[..128 * 3000],
        &reference,
        "long_65s_16k_s16.chunk0.128.f32",
    );
    assert!(d <= PARITY_16K, "{d:e}");

    let reason = |inputs: &[AudioInput]| {
        let err = manager
            .preprocess("whisper-small-triton", PresetInputs::Audio(inputs))
            .unwrap_err();
        assert_eq!(err.error_code, ErrorCode::InvalidInput, "{err}");
        err.details["reason"].as_str().unwrap().to_owned()
    };
    assert_eq!(
        reason(&[AudioInput::Encoded(
            b"definitely not audio at all".repeat(20)
        )]),
        "audio_unknown_format"
    );
    assert_eq!(
        reason(&[AudioInput::Samples {
            sample_rate: 16_000,
            samples: Vec::new()
        }]),
        "audio_empty"
    );
    assert_eq!(
        reason(&[AudioInput::Samples {
            sample_rate: 16_000,
            samples: vec![0.0, f32::NAN]
        }]),
        "audio_nan"
    );
    assert_eq!(
        reason(&[AudioInput::Samples {
            sample_rate: 0,
            samples: vec![0.0]
        }]),
        "audio_bad_sample_rate"
    );
    // Texts are not audio.
    let err = manager
        .preprocess("whisper-small-triton", PresetInputs::Texts(&["hello"]))
        .unwrap_err();
    assert_eq!(err.details["reason"], "texts_unsupported");
}
