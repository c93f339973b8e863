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
fn help_says_what_dp_is() {
    let out = dp(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    // The paragraph before `Usage:` is the crate's description (wrapped to the width): the
    // whole tool, not two of its commands.
    let about = help
        .split("Usage:")
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for words in [
        "model manager",
        "multimodal data-processing pipeline",
        "verify",
        "resolve",
        "embed",
        "health",
        "never downloads",
    ] {
        assert!(about.contains(words), "{words:?} not in {about:?}");
    }
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
            "tiny-whisper-128",
            "tiny-whisper-triton",
            "tiny-whisper",
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

#[test]
fn sync_downloader_is_idempotent_and_its_dry_run_counts() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let catalog = scratch.path().join("catalog");
    dp_tests::copy_dir(&workspace_root().join("specs/catalog"), &catalog).expect("copy");
    let manifest = workspace_root().join("tests/data/downloader/manifest.json");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--json",
            "--catalog",
            catalog.to_str().expect("utf-8"),
            "sync-downloader",
            manifest.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(extra);
        let out = dp(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        json(&out)
    };
    let counts = |report: &serde_json::Value| {
        let c = &report["counts"];
        (
            c["create"].as_u64(),
            c["update"].as_u64(),
            c["unchanged"].as_u64(),
            c["skipped"].as_u64(),
        )
    };
    let before = snapshot(&catalog);
    let dry = run(&["--dry-run"]);
    assert_eq!(counts(&dry), (Some(1), Some(1), Some(0), Some(1)));
    assert_eq!(snapshot(&catalog), before, "a dry run writes nothing");
    let first = run(&[]);
    assert_eq!(counts(&first), (Some(1), Some(1), Some(0), Some(1)));
    let after_first = snapshot(&catalog);
    let second = run(&[]);
    assert_eq!(counts(&second), (Some(0), Some(0), Some(2), Some(1)));
    assert_eq!(
        snapshot(&catalog),
        after_first,
        "a second run changes nothing"
    );
    // The result is a valid catalog, and the hand-written selection of MiniLM files stays.
    let out = dp(&["--catalog", catalog.to_str().expect("utf-8"), "validate"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let minilm = std::fs::read_to_string(catalog.join("text_embedding/all-minilm-l6-v2.yaml"))
        .expect("readable");
    assert!(minilm.contains("all-minilm-l6-v2/model.safetensors"));
    assert!(
        minilm.contains("sha256:53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db")
    );
}

fn snapshot(dir: &std::path::Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("readable");
                files.push((path, bytes));
            }
        }
    }
    files.sort();
    files
}
