//! The `dp` binary end to end: exit codes, human and JSON output.

use std::path::PathBuf;
use std::process::{Command, Output};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn dp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dp"))
        .current_dir(workspace_root())
        .env_remove("DP_CATALOG")
        .args(args)
        .output()
        .expect("dp runs")
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[test]
fn validate_accepts_the_sample_catalog() {
    let out = dp(&["validate"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: "));
    let out = dp(&[
        "validate",
        "--json",
        "specs/catalog",
        "specs/profiles/gpu.yaml",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let report = json(&out);
    assert_eq!(report["errors"], serde_json::json!([]));
    assert_eq!(report["profiles"], 1);
    assert!(report["models"].as_u64().is_some_and(|n| n >= 18));
}

#[test]
fn validate_reports_each_problem_with_location_and_exits_2() {
    let out = dp(&[
        "validate",
        "--json",
        "tests/data/invalid-specs/artifact-http-url.yaml",
        "tests/data/invalid-specs/triton-with-candle.yaml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let errors = json(&out)["errors"]
        .as_array()
        .cloned()
        .expect("errors array");
    assert_eq!(errors.len(), 2);
    let first = &errors[0];
    assert_eq!(first["error_code"], "network_forbidden");
    assert_eq!(first["pointer"], "/local_artifacts/0");
    assert_eq!(
        (first["line"].as_u64(), first["column"].as_u64()),
        (Some(12), Some(5))
    );
    assert_eq!(
        first["file"],
        "tests/data/invalid-specs/artifact-http-url.yaml"
    );
    assert!(
        first["message"]
            .as_str()
            .is_some_and(|m| m.contains("never downloads"))
    );
    assert_eq!(errors[1]["error_code"], "unsupported_engine");
    for key in ["file", "pointer", "line", "column", "error_code", "message"] {
        assert!(first.get(key).is_some(), "missing {key}");
    }

    // Human output: one line per problem on stderr, `file:line:column: code at pointer: …`.
    let out = dp(&[
        "validate",
        "tests/data/invalid-specs/artifact-http-url.yaml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(
            "tests/data/invalid-specs/artifact-http-url.yaml:12:5: network_forbidden at /local_artifacts/0: "
        ),
        "{stderr}"
    );
}

#[test]
fn list_filters_by_role_and_applies_layers() {
    let out = dp(&["list", "--json", "--role", "speech_recognition"]);
    assert_eq!(out.status.code(), Some(0));
    let models = json(&out)["models"].as_array().cloned().expect("models");
    let names: Vec<&str> = models
        .iter()
        .filter_map(|m| m["model_name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "whisper-large-v3-triton",
            "whisper-medium-triton",
            "whisper-small-triton"
        ]
    );
    let out = dp(&[
        "list",
        "--json",
        "--role",
        "text_embedding",
        "--profile",
        "specs/profiles/gpu.yaml",
        "--set",
        "all-minilm-l6-v2.device_policy=cuda:1",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let models = json(&out)["models"].as_array().cloned().expect("models");
    let minilm = models
        .iter()
        .find(|m| m["model_name"] == "all-minilm-l6-v2")
        .expect("listed");
    assert_eq!(minilm["device_policy"], "cuda:1");
    assert_eq!(minilm["precision"], "fp16");
    assert_eq!(
        minilm["layers"],
        serde_json::json!(["profile gpu", "overrides"])
    );

    let out = dp(&["list"]);
    assert_eq!(out.status.code(), Some(0));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.lines().next().is_some_and(|h| h.starts_with("MODEL")));
    assert!(table.contains("all-minilm-l6-v2"));
}

#[test]
fn a_broken_override_or_missing_catalog_is_a_clear_error() {
    let out = dp(&["list", "--json", "--set", "all-minilm-l6-v2.runtime=docker"]);
    assert_eq!(out.status.code(), Some(2));
    let errors = json(&out)["errors"].as_array().cloned().expect("errors");
    assert_eq!(errors[0]["error_code"], "unsupported_runtime");
    assert_eq!(errors[0]["file"], "<overrides>");

    let out = dp(&["--catalog", "no/such/dir", "validate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("catalog directory not found"));
}
