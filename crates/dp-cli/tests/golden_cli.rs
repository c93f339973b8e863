//! `dp verify --lock --golden` / `dp verify --golden` with the real `dp` binary on a copy of
//! the demo tiny BERT: golden outputs recorded in the lock file, checked again unchanged,
//! kept when the files are re-locked, and `output_drift` (exit 3) once one weight moved by
//! 1e-3 although every file digest was re-pinned.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::path::Path;
use std::process::Output;

use serde_json::Value;

fn dp(root: &Path, args: &[&str]) -> Output {
    dp_tests::cli::command(
        env!("CARGO_BIN_EXE_dp"),
        &root.join("catalog"),
        &root.join("models"),
        root,
    )
    .args(args)
    .output()
    .unwrap()
}

fn json(out: &Output, code: i32) -> Value {
    dp_tests::cli::assert_exit(out, code);
    dp_tests::cli::json(out)
}

/// Adds `delta` to the first value of tensor `name` in a safetensors file.
fn nudge(weights: &Path, name: &str, delta: f32) -> Vec<u8> {
    let mut bytes = std::fs::read(weights).unwrap();
    let header_len = usize::try_from(u64::from_le_bytes(bytes[..8].try_into().unwrap())).unwrap();
    let header: Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let start = usize::try_from(header[name]["data_offsets"][0].as_u64().unwrap()).unwrap();
    let at = 8 + header_len + start;
    let value = f32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) + delta;
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    std::fs::write(weights, &bytes).unwrap();
    bytes
}

#[test]
fn golden_outputs_are_recorded_checked_and_their_drift_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let demo = dp_tests::workspace_root().join("crates/dp-cli/demo");
    dp_tests::copy_dir(&demo.join("catalog"), &root.join("catalog")).unwrap();
    dp_tests::copy_dir(&demo.join("models"), &root.join("models")).unwrap();

    let locked = json(&dp(root, &["--json", "verify", "--lock", "--golden"]), 0);
    let model = &locked["models"][0];
    assert_eq!(model["golden"]["recorded"], true, "{locked}");
    assert_eq!(model["golden"]["inputs"], 3);
    let lock: Value =
        serde_json::from_slice(&std::fs::read(root.join("catalog.lock")).unwrap()).unwrap();
    let golden = &lock["models"]["tiny-bert"]["golden"];
    assert_eq!(golden["outputs"].as_array().unwrap().len(), 3);
    assert_eq!(golden["outputs"][0].as_array().unwrap().len(), 32);
    assert!(
        golden["outputs_digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );

    // Unchanged: the same numbers, bit for bit.
    let checked = json(&dp(root, &["--json", "verify", "--golden"]), 0);
    let check = &checked["models"][0]["golden"];
    assert_eq!(check["identical"], true, "{checked}");
    assert_eq!(check["max_abs_diff"], 0.0);

    // One weight moved by 1e-3, the spec re-pinned and the files re-locked: every digest
    // matches again, the numbers do not.
    let bytes = nudge(
        &root.join("models/tiny-bert/model.safetensors"),
        "encoder.layer.1.output.LayerNorm.weight",
        1e-3,
    );
    let new = dp_digest::digest_bytes(dp_digest::DigestAlgorithm::Sha256, &bytes).to_string();
    dp_tests::repin_weights(&root.join("catalog/text_embedding/tiny-bert.yaml"), &new);
    json(&dp(root, &["--json", "verify", "--lock"]), 0);
    let lock: Value =
        serde_json::from_slice(&std::fs::read(root.join("catalog.lock")).unwrap()).unwrap();
    assert_eq!(
        &lock["models"]["tiny-bert"]["golden"], golden,
        "a re-lock keeps the golden outputs"
    );
    let drifted = json(&dp(root, &["--json", "verify", "--golden"]), 3);
    let model = &drifted["models"][0];
    assert_eq!(model["status"], "output_drift", "{drifted}");
    assert_eq!(model["error"]["error_code"], "output_drift");
    let worst = model["golden"]["max_abs_diff"].as_f64().unwrap();
    assert!(worst > 1e-5, "{worst}");
    assert!(
        model["error"]["message"]
            .as_str()
            .unwrap()
            .contains("dp verify --lock --golden"),
        "{model}"
    );
    println!("drift after one weight moved by 1e-3: max |Δ| {worst:e}");
}
