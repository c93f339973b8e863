//! `dp preprocess --audio`: Whisper's log-mel features of real audio files (the setup's
//! test audio) through a catalog model's `audio_log_mel` preset, checked against
//! `WhisperFeatureExtractor` (`tests/data/reference/audio/`), and the errors a user meets.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::process::Output;

use dp_tests::cli::{assert_exit, json};

fn dp(args: &[&str]) -> Output {
    let scratch = tempfile::tempdir().unwrap();
    dp_tests::cli::command(
        env!("CARGO_BIN_EXE_dp"),
        &dp_tests::sample_catalog(),
        &dp_tests::workspace_root().join(".dp-assets/models"),
        scratch.path(),
    )
    .args(args)
    .output()
    .unwrap()
}

#[test]
fn dp_preprocess_prints_whisper_features_of_an_audio_file() {
    let test = "dp_preprocess_prints_whisper_features_of_an_audio_file";
    let Some(wav) = dp_tests::asset("audio/two_tone_16k_s16.wav", test) else {
        return;
    };
    let out = dp(&[
        "--json",
        "preprocess",
        "--model",
        "whisper-small-triton",
        "--audio",
        wav.to_str().unwrap(),
    ]);
    assert_exit(&out, 0);
    let doc = json(&out);
    assert_eq!(doc["preprocess_preset"], "audio_log_mel");
    let features = &doc["tensors"]["input_features"];
    assert_eq!(features["shape"], serde_json::json!([1, 80, 3000]));
    let ours: Vec<f64> = features["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    // The reference stores the first 302 frames of each of the 80 rows.
    let reference: Vec<f32> =
        std::fs::read(dp_tests::data_dir().join("reference/audio/two_tone_16k_s16.80.f32"))
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
    let mut worst = 0.0_f64;
    for mel in 0..80 {
        for frame in 0..302 {
            let d = (ours[mel * 3000 + frame] - f64::from(reference[mel * 302 + frame])).abs();
            worst = worst.max(d);
        }
    }
    assert!(worst <= 1e-4, "max |Δ| {worst:e}");
}

#[test]
fn dp_preprocess_refuses_what_is_not_audio() {
    let scratch = tempfile::tempdir().unwrap();
    let fake = scratch.path().join("notes.wav");
    std::fs::write(&fake, "these are notes, not a recording\n".repeat(50)).unwrap();
    let out = dp(&[
        "--json",
        "preprocess",
        "--model",
        "whisper-small-triton",
        "--audio",
        fake.to_str().unwrap(),
    ]);
    assert_exit(&out, 2);
    let error = &json(&out)["errors"][0];
    assert_eq!(error["error_code"], "invalid_input");
    assert_eq!(error["details"]["reason"], "audio_unknown_format");
    // A text model does not take audio.
    if dp_tests::asset(
        "models/tiny-bert-cls",
        "dp_preprocess_refuses_what_is_not_audio",
    )
    .is_none()
    {
        return;
    }
    let wav = scratch.path().join("silence.wav");
    let mut bytes = b"RIFF".to_vec();
    let data: Vec<u8> = vec![0; 3200];
    bytes.extend_from_slice(&u32::try_from(36 + data.len()).unwrap().to_le_bytes());
    bytes.extend_from_slice(b"WAVEfmt ");
    bytes.extend_from_slice(&16_u32.to_le_bytes());
    bytes.extend_from_slice(&1_u16.to_le_bytes()); // PCM
    bytes.extend_from_slice(&1_u16.to_le_bytes()); // mono
    bytes.extend_from_slice(&16_000_u32.to_le_bytes());
    bytes.extend_from_slice(&32_000_u32.to_le_bytes());
    bytes.extend_from_slice(&2_u16.to_le_bytes());
    bytes.extend_from_slice(&16_u16.to_le_bytes());
    bytes.extend_from_slice(b"data");
    bytes.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
    bytes.extend_from_slice(&data);
    std::fs::write(&wav, bytes).unwrap();
    let out = dp(&[
        "--json",
        "preprocess",
        "--model",
        "tiny-bert-cls",
        "--audio",
        wav.to_str().unwrap(),
    ]);
    assert_exit(&out, 2);
    assert_eq!(
        json(&out)["errors"][0]["details"]["reason"],
        "audio_unsupported"
    );
}
