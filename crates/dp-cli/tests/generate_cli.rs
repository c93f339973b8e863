//! `dp generate` on the tiny T5 that `cargo xtask setup` makes, checked against
//! transformers' `generate` (`tests/data/reference/generation/`): the JSON document, the
//! streamed text of a single input, truncation said on stderr, and the errors a user meets
//! (bad options, a model that cannot generate). Also the golden outputs of a generator
//! (`dp verify --lock --golden`: its greedy token ids).

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::io::Write as _;
use std::path::Path;
use std::process::{Output, Stdio};

use dp_tests::cli::{assert_exit, json};
use serde_json::{Value, json};

/// Runs `dp` on `catalog` and the setup's models, `stdin` as its input.
fn dp_with(catalog: &Path, args: &[&str], stdin: &str) -> Output {
    let scratch = tempfile::tempdir().unwrap();
    let mut child = dp_tests::cli::command(
        env!("CARGO_BIN_EXE_dp"),
        catalog,
        &dp_tests::workspace_root().join(".dp-assets/models"),
        scratch.path(),
    )
    .args(args)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // A refused request can end dp before it reads stdin: a broken pipe here is that, and
    // the exit status and output below say what happened.
    if let Err(err) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err}");
    }
    child.wait_with_output().unwrap()
}

fn dp(args: &[&str], stdin: &str) -> Output {
    dp_with(&dp_tests::sample_catalog(), args, stdin)
}

fn reference() -> Value {
    let path = dp_tests::data_dir().join("reference/generation/tiny-t5.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The reference's sequences of `option`, without the decoder start.
fn generated(reference: &Value, option: &str) -> Vec<Value> {
    reference["single"][option]["sequences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Value::from(s.as_array().unwrap()[1..].to_vec()))
        .collect()
}

#[test]
fn dp_generate_prints_transformers_texts_and_ids() {
    if dp_tests::asset(
        "models/tiny-t5",
        "dp_generate_prints_transformers_texts_and_ids",
    )
    .is_none()
    {
        return;
    }
    let reference = reference();
    let inputs: Vec<Value> = reference["inputs"].as_array().unwrap().clone();
    let texts: Vec<&str> = inputs.iter().map(|i| i["text"].as_str().unwrap()).collect();
    let stdin = serde_json::to_string(&texts).unwrap();
    let out = dp(
        &[
            "--json",
            "generate",
            "--model",
            "tiny-t5",
            "--max-new-tokens",
            "20",
            "--num-beams",
            "4",
        ],
        &stdin,
    );
    assert_exit(&out, 0);
    let doc = json(&out);
    assert_eq!(doc["texts"], reference["single"]["beam4"]["texts"]);
    assert_eq!(
        doc["token_ids"],
        Value::from(generated(&reference, "beam4"))
    );
    let entry = &doc["models_used"][0];
    assert_eq!(entry["model_name"], "tiny-t5");
    assert_eq!(entry["generation"]["num_beams"], 4);
    assert_eq!(doc["model_signature"], entry["model_signature"]);
    // The long text was truncated, and said so.
    let long: Vec<Value> = inputs
        .iter()
        .enumerate()
        .filter(|(_, i)| i["truncated"] == true)
        .map(|(n, _)| Value::from(n))
        .collect();
    assert_eq!(doc["truncated"], Value::from(long));
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated"));

    // One text without --json: streamed, then a newline.
    let out = dp(
        &[
            "generate",
            "--model",
            "tiny-t5",
            "--max-new-tokens",
            "20",
            "--input",
            "-",
        ],
        &format!("{}\n", texts[1]),
    );
    assert_exit(&out, 0);
    let want = reference["single"]["greedy"]["texts"][1].as_str().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{want}\n"));
}

#[test]
fn dp_generate_refuses_bad_requests_with_codes() {
    if dp_tests::asset(
        "models/tiny-t5",
        "dp_generate_refuses_bad_requests_with_codes",
    )
    .is_none()
    {
        return;
    }
    let error = |out: &Output| json(out)["errors"][0].clone();
    let code = |out: &Output| error(out)["error_code"].clone();
    // Above the model's 512 positions.
    let out = dp(
        &[
            "--json",
            "generate",
            "--model",
            "tiny-t5",
            "--max-new-tokens",
            "600",
        ],
        "[\"Hello\"]",
    );
    assert_exit(&out, 2);
    assert_eq!(code(&out), "invalid_input");
    assert_eq!(error(&out)["details"]["option"], "max_new_tokens");
    // clap refuses 0 beams before anything loads.
    let out = dp(
        &["generate", "--model", "tiny-t5", "--num-beams", "0"],
        "Hello\n",
    );
    assert_exit(&out, 2);
    // An embedder cannot generate.
    let out = dp(
        &["--json", "generate", "--model", "tiny-bert-cls"],
        "Hello\n",
    );
    assert_exit(&out, 2);
    assert_eq!(error(&out)["details"]["reason"], "generation_unsupported");
    // No input at all.
    let out = dp(&["--json", "generate", "--model", "tiny-t5"], "[]");
    assert_exit(&out, 2);
    assert_eq!(code(&out), "invalid_input");
}

#[test]
fn a_generator_s_golden_outputs_are_its_token_ids() {
    if dp_tests::asset(
        "models/tiny-t5",
        "a_generator_s_golden_outputs_are_its_token_ids",
    )
    .is_none()
    {
        return;
    }
    // A copy of the catalog: recording writes its lock file.
    let scratch = tempfile::tempdir().unwrap();
    let catalog = scratch.path().join("catalog");
    std::fs::create_dir_all(catalog.join("text_generation")).unwrap();
    std::fs::copy(
        dp_tests::sample_catalog().join("text_generation/tiny-t5.yaml"),
        catalog.join("text_generation/tiny-t5.yaml"),
    )
    .unwrap();
    let out = dp_with(
        &catalog,
        &["--json", "verify", "--lock", "--golden", "tiny-t5"],
        "",
    );
    assert_exit(&out, 0);
    // The lock file sits beside the catalog directory.
    let lock: Value =
        serde_json::from_slice(&std::fs::read(scratch.path().join("catalog.lock")).unwrap())
            .unwrap();
    let golden = &lock["models"]["tiny-t5"]["golden"];
    let outputs = golden["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), golden["inputs"].as_array().unwrap().len());
    // Token ids: whole numbers, at most 16 per text, ending with </s> (1) or full length.
    for row in outputs {
        let ids: Vec<f64> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!(!ids.is_empty() && ids.len() <= 16, "{ids:?}");
        assert!(
            ids.iter().all(|id| id.fract() == 0.0 && *id >= 0.0),
            "{ids:?}"
        );
        assert!(ids.len() == 16 || ids.last() == Some(&1.0), "{ids:?}");
    }
    let out = dp_with(&catalog, &["--json", "verify", "--golden", "tiny-t5"], "");
    assert_exit(&out, 0);
    assert_eq!(json(&out)["models"][0]["status"], json!("ok"));
}
