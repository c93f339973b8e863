//! The `dp` binary on hostile specs and overrides: what reaches the terminal, and what is
//! refused before it can crash the process.

use std::fs;
use std::path::{Path, PathBuf};
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

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Bytes a terminal would act on: any C0 control but newline and tab, DEL, and the C1
/// controls (U+0080–U+009F, e.g. U+009B, a one-character CSI).
fn raw_controls(output: &[u8]) -> Vec<char> {
    text(output)
        .chars()
        .filter(|c| c.is_control() && !matches!(c, '\n' | '\t'))
        .collect()
}

fn assert_no_raw_controls(what: &str, output: &[u8]) {
    let found = raw_controls(output);
    assert!(
        found.is_empty(),
        "{what} holds raw control characters {found:?}: {:?}",
        text(output)
    );
}

/// A catalog in a temporary folder holding `spec` (as JSON) under its role.
fn catalog_with(spec: &serde_json::Value) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = dir.path().join("catalog");
    let role = spec["role"].as_str().expect("role");
    let name = spec["model_name"].as_str().expect("name");
    fs::create_dir_all(catalog.join(role)).expect("mkdir");
    fs::write(
        catalog.join(role).join(format!("{name}.json")),
        serde_json::to_string_pretty(spec).expect("json"),
    )
    .expect("write spec");
    (dir, catalog)
}

/// A valid in-process spec whose free-text fields carry terminal escape sequences.
fn hostile_spec() -> serde_json::Value {
    serde_json::json!({
        "model_name": "hostile",
        "model_version": "\u{1b}[2J\u{1b}[1;1H1.0",
        "display_name": "\u{9b}31m red",
        "role": "text_embedding",
        "capabilities": { "text\u{7}\r\n": true },
        "runtime": "inprocess",
        "engine": "candle",
        "local_artifacts": ["hostile/model.safetensors"],
        "weights_digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000"
    })
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn list_escapes_control_characters_from_specs_and_profiles() {
    let (dir, catalog) = catalog_with(&hostile_spec());
    let profile = dir.path().join("profile.yaml");
    fs::write(
        &profile,
        "profile: \"\\e]0;title\\a\"\nmodels:\n  hostile:\n    tier: 1\n",
    )
    .expect("write profile");
    let out = dp(&[
        "--catalog",
        path_str(&catalog),
        "--profile",
        path_str(&profile),
        "list",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_no_raw_controls("dp list stdout", &out.stdout);
    assert_no_raw_controls("dp list stderr", &out.stderr);
    let table = text(&out.stdout);
    for escaped in [
        "\\u{1b}[2J\\u{1b}[1;1H1.0",
        "changed by profile \\u{1b}]0;title\\u{7}",
    ] {
        assert!(table.contains(escaped), "{escaped:?} not in {table:?}");
    }
    // One line per model: the header, the model and the count.
    assert_eq!(table.lines().count(), 3, "{table:?}");

    // JSON keeps the exact value: serde writes C0 controls as `\u001b`. (It leaves C1
    // controls such as U+009B as they are, which JSON allows.)
    let out = dp(&["--catalog", path_str(&catalog), "--json", "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let c0: Vec<u8> = (out.stdout.iter().copied())
        .filter(|b| *b < 0x20 && *b != b'\n')
        .collect();
    assert!(c0.is_empty(), "{c0:?} in {}", text(&out.stdout));
    assert!(text(&out.stdout).contains(r#""model_version": "\u001b[2J\u001b[1;1H1.0""#));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        listed["models"][0]["model_version"],
        "\u{1b}[2J\u{1b}[1;1H1.0"
    );
}

#[test]
fn validate_and_list_escape_control_characters_in_diagnostics() {
    let mut spec = hostile_spec();
    spec["\u{1b}[2J\u{1b}]0;owned\u{7}"] = serde_json::json!(1);
    let (_dir, catalog) = catalog_with(&spec);
    let file = catalog.join("text_embedding/hostile.json");
    for args in [
        vec!["validate", path_str(&file)],
        vec!["--catalog", path_str(&catalog), "validate"],
        vec!["--catalog", path_str(&catalog), "list"],
    ] {
        let out = dp(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert_no_raw_controls("stdout", &out.stdout);
        assert_no_raw_controls("stderr", &out.stderr);
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("invalid_spec at /\\u{1b}[2J\\u{1b}]0;owned\\u{7}: unknown field"),
            "{args:?}: {stderr:?}"
        );
    }
}

#[test]
fn an_override_nested_past_the_spec_limit_is_refused_not_a_crash() {
    for levels in [65, 100, 5_000] {
        let assignment = format!(
            "all-minilm-l6-v2.preprocess_params{}=1",
            ".a".repeat(levels - 1)
        );
        for command in ["validate", "list"] {
            let out = dp(&["--set", &assignment, command]);
            let stderr = text(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{levels} levels, dp {command}: {:?} {}",
                out.status,
                stderr.chars().take(2_000).collect::<String>()
            );
            assert!(
                stderr.starts_with("<overrides>: invalid_spec at /preprocess_params/a/a/"),
                "{stderr}"
            );
            assert!(
                stderr.contains(&format!("{levels} levels deep, more than the 64")),
                "{stderr}"
            );
            // The message quotes the start of the key path, not all of it.
            assert!(stderr.len() < 2_000, "{} bytes: {stderr}", stderr.len());
        }
    }
    // 64 levels is the limit itself: accepted.
    let assignment = format!("all-minilm-l6-v2.preprocess_params{}=1", ".a".repeat(63));
    let out = dp(&["--set", &assignment, "validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn validate_refuses_triton_endpoints_the_client_cannot_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (endpoint, says) in [
        ("http://user@127.0.0.1:8000", "user info"),
        ("http://user:pw@host:1", "user info"),
        ("http://127.0.0.1:99999", "from 1 to 65535"),
        ("http://127.0.0.1:0", "port 0"),
        ("https://127.0.0.1:8000", "no TLS"),
    ] {
        let spec = serde_json::json!({
            "model_name": "remote",
            "model_version": "1",
            "role": "regression",
            "runtime": "triton",
            "engine": "onnx",
            "triton": { "endpoint": endpoint, "model_name": "remote" }
        });
        let file = dir.path().join("remote.json");
        fs::write(&file, spec.to_string()).expect("write");
        let out = dp(&["--json", "validate", path_str(&file)]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{endpoint}: {}",
            text(&out.stdout)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let errors = report["errors"].as_array().expect("errors");
        assert_eq!(errors.len(), 1, "{endpoint}: {errors:?}");
        assert_eq!(errors[0]["error_code"], "invalid_spec", "{endpoint}");
        assert_eq!(errors[0]["pointer"], "/triton/endpoint", "{endpoint}");
        let message = errors[0]["message"].as_str().expect("message");
        assert!(message.contains(says), "{endpoint}: {message}");
        assert!(message.contains(endpoint), "{endpoint}: {message}");
    }
    // What the client accepts still passes.
    for endpoint in [
        "http://127.0.0.1:8000",
        "http://[::1]:65535/",
        "http://localhost",
    ] {
        let spec = serde_json::json!({
            "model_name": "remote",
            "model_version": "1",
            "role": "regression",
            "runtime": "triton",
            "engine": "onnx",
            "triton": { "endpoint": endpoint, "model_name": "remote" }
        });
        let file = dir.path().join("remote.json");
        fs::write(&file, spec.to_string()).expect("write");
        let out = dp(&["validate", path_str(&file)]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{endpoint}: {}",
            text(&out.stderr)
        );
    }
}
