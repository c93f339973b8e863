//! `dp resolve`, `dp health` and `dp embed` end to end on the sample catalog and on small
//! catalogs written here: output, JSON shapes and exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `dp` in the workspace root with an empty models root (unless `args` sets one).
fn dp(args: &[&str], models_root: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dp"))
        .current_dir(workspace_root())
        .env_remove("DP_CATALOG")
        .env_remove("RUST_LOG")
        .env("DP_MODELS_ROOT", models_root)
        .env("DP_VERIFY_CACHE", models_root.join("../verify-cache.json"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("dp runs")
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The models `cargo xtask setup` fetched (the real MiniLM): `None` outside CI when they
/// are absent (the test says it did not run); in CI their absence fails the test.
fn setup_models() -> Option<PathBuf> {
    let models = workspace_root().join(".dp-assets/models");
    if models.join("all-minilm-l6-v2/model.safetensors").is_file() {
        return Some(models);
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "{} is missing; CI runs `cargo xtask setup` first",
        models.display()
    );
    eprintln!(
        "NOT RUN: {} is missing; run `cargo xtask setup`",
        models.display()
    );
    None
}

fn empty_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("models")).expect("mkdir");
    dir
}

#[test]
fn resolve_by_name_prints_the_models_used_record() {
    let Some(models) = setup_models() else { return };
    let out = dp(&["resolve", "minilm", "--json"], &models);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value = json(&out);
    // A list of the one record: the shape `models_used` has in `dp embed --json` too.
    let used = value["models_used"]
        .as_array()
        .expect("models_used is a list");
    assert_eq!(used.len(), 1, "{value}");
    let entry = &used[0];
    assert_eq!(value["request"], "minilm");
    assert!(
        value.get("reason").is_none(),
        "no reason for a name: {value}"
    );
    assert_eq!(entry["model_name"], "all-minilm-l6-v2");
    assert_eq!(
        entry["device"], "cpu",
        "auto resolves to the CPU without CUDA"
    );
    // The preprocessing resolved from the model's files: the spec restates it exactly.
    assert_eq!(entry["preprocess_signature"], "pp1:8ede604613e9fa5d");
    // The record signs every file of the model, as verified.
    let artifacts = entry["artifacts_digest"]
        .as_str()
        .expect("artifacts_digest");
    assert!(artifacts.starts_with("sha256:"), "{artifacts}");
    let signature = entry["model_signature"].as_str().expect("signature");
    assert!(
        signature.starts_with("dp2:model_name=all-minilm-l6-v2;"),
        "{signature}"
    );
    assert!(
        signature.ends_with(&format!(";artifacts_digest={artifacts}")),
        "{signature}"
    );
    assert_eq!(entry["signature_version"], "dp2");
}

#[test]
fn resolve_without_the_files_says_which_model_and_what_is_missing() {
    let root = empty_root();
    let out = dp(
        &["resolve", "minilm", "--json"],
        &root.path().join("models"),
    );
    // Its record would sign bytes that are not there: no record, a clear error.
    assert_eq!(out.status.code(), Some(3));
    let err = &json(&out)["errors"][0];
    assert_eq!(err["error_code"], "weights_missing");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("all-minilm-l6-v2") && m.contains("model.safetensors")),
        "{err}"
    );
}

#[test]
fn resolve_by_role_follows_capabilities_and_catalog_order() {
    let root = empty_root();
    let models = root.path().join("models");
    let out = dp(
        &[
            "resolve",
            "--role",
            "text_embedding",
            "--capability",
            "multilingual",
            "--json",
        ],
        &models,
    );
    // The role resolves to multilingual-e5-large, whose weights are not on this machine:
    // the error names it.
    assert_eq!(out.status.code(), Some(3));
    let err = &json(&out)["errors"][0];
    assert_eq!(err["error_code"], "weights_missing");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("multilingual-e5-large")),
        "{err}"
    );

    if let Some(setup) = setup_models() {
        let out = dp(
            &["resolve", "minilm", "--role", "text_embedding", "--json"],
            &setup,
        );
        assert_eq!(json(&out)["reason"], "preferred");
        assert_eq!(json(&out)["request"], "role:text_embedding");
    }

    let out = dp(
        &[
            "resolve",
            "--role",
            "text_embedding",
            "--capability",
            "telepathy",
            "--json",
        ],
        &models,
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(json(&out)["errors"][0]["error_code"], "role_unresolved");
}

#[test]
fn unknown_models_are_model_not_found_with_exit_code_2() {
    let root = empty_root();
    let models = root.path().join("models");
    let out = dp(&["resolve", "no-such-model", "--json"], &models);
    assert_eq!(out.status.code(), Some(2));
    let err = &json(&out)["errors"][0];
    assert_eq!(err["error_code"], "model_not_found");
    assert_eq!(err["details"]["model"], "no-such-model");

    let input = root.path().join("texts.txt");
    std::fs::write(&input, "hello\n").expect("write");
    let input = input.to_str().expect("utf-8");
    let out = dp(
        &["embed", "--model", "no-such-model", "--input", input],
        &models,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("model_not_found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn embed_of_a_model_without_weights_is_not_ready() {
    let root = empty_root();
    let input = root.path().join("texts.json");
    std::fs::write(&input, r#"["a", "b"]"#).expect("write");
    let out = dp(
        &[
            "embed",
            "--model",
            "minilm",
            "--input",
            input.to_str().expect("utf-8"),
            "--json",
        ],
        &root.path().join("models"),
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = &json(&out)["errors"][0];
    assert_eq!(err["error_code"], "weights_missing");
    assert!(
        err["details"]["file"]
            .as_str()
            .is_some_and(|f| f.contains("all-minilm-l6-v2/"))
    );
}

#[test]
fn health_of_the_sample_catalog_reports_every_model() {
    let root = empty_root();
    let out = dp(&["health", "--json"], &root.path().join("models"));
    // The sample catalog has no tier-0 model, so nothing blocks a start.
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    assert_eq!(report["tier0"]["total"], 0);
    let models = report["models"].as_array().expect("models");
    assert!(models.len() >= 18);
    let minilm = models
        .iter()
        .find(|m| m["model_name"] == "all-minilm-l6-v2")
        .expect("minilm");
    assert_eq!(minilm["ready"], false);
    assert_eq!(minilm["artifacts_present"], false);
    assert_eq!(minilm["problems"][0]["error_code"], "weights_missing");
}

#[test]
fn health_exits_3_when_a_tier0_model_is_not_ready() {
    let root = empty_root();
    let catalog = root.path().join("catalog/text_embedding");
    std::fs::create_dir_all(&catalog).expect("mkdir");
    std::fs::write(
        catalog.join("needed.yaml"),
        "model_name: needed\nmodel_version: \"1\"\nrole: text_embedding\nruntime: inprocess\n\
         engine: onnx\nlocal_artifacts: [needed/model.onnx]\nweights_digest: \
         sha256:0000000000000000000000000000000000000000000000000000000000000000\ntier: 0\n",
    )
    .expect("write");
    let catalog_arg = root.path().join("catalog");
    let out = dp(
        &[
            "health",
            "--json",
            "--catalog",
            catalog_arg.to_str().expect("utf-8"),
        ],
        &root.path().join("models"),
    );
    assert_eq!(out.status.code(), Some(3));
    let report = json(&out);
    assert_eq!(report["tier0"]["not_ready"], serde_json::json!(["needed"]));

    let out = dp(
        &["health", "--catalog", catalog_arg.to_str().expect("utf-8")],
        &root.path().join("models"),
    );
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("tier 0: 0/1 ready (not ready: needed)"),
        "{text}"
    );
}

#[test]
fn logs_can_be_json() {
    let root = empty_root();
    let out = Command::new(env!("CARGO_BIN_EXE_dp"))
        .current_dir(workspace_root())
        .env_remove("DP_CATALOG")
        .env("RUST_LOG", "dp_manager=info")
        .env("DP_MODELS_ROOT", root.path().join("models"))
        .args([
            "--log-format",
            "json",
            "resolve",
            "--role",
            "text_embedding",
        ])
        .output()
        .expect("dp runs");
    // The resolution is logged whether or not the model's files are here (they are not).
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let event = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["event"] == "role_resolution")
        .unwrap_or_else(|| panic!("no role_resolution event in {stderr}"));
    assert_eq!(event["fields"]["role"], "text_embedding");
    assert_eq!(event["level"], "INFO");
}

#[test]
fn every_catalog_model_whose_files_are_here_verifies() {
    let Some(models) = setup_models() else { return };
    let out = dp(&["--json", "verify"], &models);
    let report = json(&out);
    let mut ok = Vec::new();
    for model in report["models"].as_array().expect("models") {
        let name = model["model_name"].as_str().expect("name");
        match model["status"].as_str().expect("status") {
            // Files that are not on this machine, or none to check (weights on a server).
            "missing" | "skipped" => {}
            "ok" => ok.push(name.to_owned()),
            other => panic!("{name}: {other}: {model}"),
        }
    }
    // The three MiniLM specs (candle, ONNX, and the Triton one's local files) verify against
    // their pins, the Triton spec's deployment pin not applied to its tokenizer files.
    for name in [
        "all-minilm-l6-v2",
        "all-minilm-l6-v2-onnx",
        "all-minilm-l6-v2-triton",
    ] {
        assert!(ok.iter().any(|n| n == name), "{name} not verified: {ok:?}");
    }
}

#[test]
fn resolve_and_embed_print_the_same_models_used_list() {
    // The demo catalog, built into the crate: it runs everywhere, with no setup.
    let scratch = tempfile::tempdir().expect("tempdir");
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo");
    let status = Command::new("cp")
        .arg("-R")
        .arg(&demo)
        .arg(scratch.path().join("demo"))
        .status()
        .expect("cp runs");
    assert!(status.success());
    let catalog = scratch.path().join("demo/catalog");
    let catalog = catalog.to_str().expect("UTF-8");
    let models = scratch.path().join("demo/models");
    let texts = scratch.path().join("texts.txt");
    std::fs::write(&texts, "a text\n").expect("write");

    let resolved = dp(
        &["--json", "--catalog", catalog, "resolve", "tiny-bert"],
        &models,
    );
    assert_eq!(
        resolved.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&resolved.stderr)
    );
    let embedded = dp(
        &[
            "--json",
            "--catalog",
            catalog,
            "embed",
            "--model",
            "tiny-bert",
            "--input",
            texts.to_str().expect("UTF-8"),
        ],
        &models,
    );
    assert_eq!(
        embedded.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&embedded.stderr)
    );
    let resolved = json(&resolved);
    assert_eq!(resolved["request"], "tiny-bert");
    assert!(resolved["models_used"].is_array(), "{resolved}");
    assert_eq!(resolved["models_used"], json(&embedded)["models_used"]);
}
