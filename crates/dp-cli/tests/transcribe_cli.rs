//! `dp transcribe` on the tiny Whisper that `cargo xtask setup` makes, checked against
//! transformers' Whisper `generate` (`tests/data/reference/speech/`): the JSON document
//! (records, texts, languages, durations, token ids), the plain-text output, and the errors
//! a user meets (an unknown language, bad audio, a model that cannot transcribe).

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::process::Output;

use dp_tests::cli::{assert_exit, json};
use serde_json::Value;

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

/// The reference case `name` of `tiny-whisper`.
fn case(name: &str) -> Value {
    let path = dp_tests::data_dir().join("reference/speech/tiny-whisper.json");
    let reference: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"))
        .clone()
}

#[test]
fn dp_transcribe_prints_transformers_texts_languages_and_ids() {
    let test = "dp_transcribe_prints_transformers_texts_languages_and_ids";
    let (Some(_), Some(long), Some(speech)) = (
        dp_tests::asset("models/tiny-whisper", test),
        dp_tests::asset("audio/long_65s_16k_s16.wav", test),
        dp_tests::asset("audio/speech_16k_s16.wav", test),
    ) else {
        return;
    };
    let detect = case("long_65s/greedy_detect");
    let translate = case("speech/greedy_translate_de");
    let out = dp(&[
        "--json",
        "transcribe",
        "--model",
        "tiny-whisper",
        "--audio",
        long.to_str().unwrap(),
        "--max-new-tokens",
        "40",
    ]);
    assert_exit(&out, 0);
    let doc = json(&out);
    assert_eq!(doc["models_used"][0]["model_name"], "tiny-whisper");
    assert_eq!(
        doc["model_signature"],
        doc["models_used"][0]["model_signature"]
    );
    assert_eq!(doc["models_used"][0]["generation"]["task"], "transcribe");
    assert_eq!(doc["texts"][0], detect["text"]);
    let transcript = &doc["transcripts"][0];
    assert_eq!(transcript["language"], detect["language"]);
    assert_eq!(transcript["duration_seconds"], 65.0);
    let want: Vec<Value> = detect["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["generated_ids"].clone())
        .collect();
    assert_eq!(transcript["chunk_token_ids"], Value::from(want));

    // Plain text: one line per file; a forced language and translation.
    let out = dp(&[
        "transcribe",
        "--model",
        "tiny-whisper",
        "--audio",
        speech.to_str().unwrap(),
        "--language",
        "de",
        "--task",
        "translate",
        "--max-new-tokens",
        "40",
    ]);
    assert_exit(&out, 0);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout,
        format!(
            "{}\n",
            dp_spec::escape_controls(translate["text"].as_str().unwrap())
        )
    );
}

#[test]
fn dp_transcribe_refuses_what_it_cannot_do_with_stable_codes() {
    let test = "dp_transcribe_refuses_what_it_cannot_do_with_stable_codes";
    let (Some(_), Some(speech)) = (
        dp_tests::asset("models/tiny-whisper", test),
        dp_tests::asset("audio/speech_16k_s16.wav", test),
    ) else {
        return;
    };
    let speech = speech.to_str().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let junk = scratch.path().join("junk.wav");
    std::fs::write(&junk, b"RIFF\x24\x00\x00\x00WAVEfmt nothing here").unwrap();
    let junk = junk.to_str().unwrap();
    for (args, reason) in [
        (
            vec![
                "--model",
                "tiny-whisper",
                "--audio",
                speech,
                "--language",
                "xx",
            ],
            "unknown_language",
        ),
        (
            vec!["--model", "tiny-t5", "--audio", speech],
            "transcription_unsupported",
        ),
        (
            vec![
                "--model",
                "tiny-whisper",
                "--audio",
                speech,
                "--max-new-tokens",
                "1000",
            ],
            "invalid_option",
        ),
        (vec!["--model", "tiny-whisper", "--audio", junk], "audio_"),
    ] {
        let mut all = vec!["--json", "transcribe"];
        all.extend(&args);
        let out = dp(&all);
        assert_exit(&out, 2);
        let doc: Value = serde_json::from_slice(&out.stderr)
            .or_else(|_| serde_json::from_slice(&out.stdout))
            .unwrap();
        let err = &doc["errors"][0];
        let got = err["details"]["reason"].as_str().unwrap_or_default();
        assert!(got.starts_with(reason), "{args:?}: {err}");
        assert_eq!(err["error_code"], "invalid_input", "{args:?}: {err}");
    }
}
