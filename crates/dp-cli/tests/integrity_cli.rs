//! Every artifact of a model is pinned at load: after `dp verify --lock`, changing any one
//! file of the tiny BERT (weights, tokenizer, config, module list, pooling config, the
//! sentence-transformers config) makes `dp embed` and `dp health` refuse it with exit code 3
//! and `version_drift` naming that file; an `artifacts_digest` pin in the spec does the same
//! without a lock (`weights_digest_mismatch`). The real binary, on a copy of the demo model.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A catalog and models root holding the demo's tiny BERT.
struct Fixture {
    dir: tempfile::TempDir,
}

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("demo")
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        dp_tests::copy_dir(&demo().join("catalog"), &dir.path().join("catalog")).expect("copy");
        dp_tests::copy_dir(&demo().join("models"), &dir.path().join("models")).expect("copy");
        let fixture = Self { dir };
        // Tier 0, so that `dp health` fails (exit 3) when it is not ready.
        let spec = std::fs::read_to_string(fixture.spec_path()).expect("spec");
        assert!(spec.contains("\ntier: 2\n"), "{spec}");
        std::fs::write(
            fixture.spec_path(),
            spec.replace("\ntier: 2\n", "\ntier: 0\n"),
        )
        .expect("write");
        fixture
    }

    fn models(&self) -> PathBuf {
        self.dir.path().join("models")
    }

    fn spec_path(&self) -> PathBuf {
        self.dir
            .path()
            .join("catalog/text_embedding/tiny-bert.yaml")
    }

    fn dp(&self, args: &[&str]) -> Output {
        let input = self.dir.path().join("texts.txt");
        std::fs::write(&input, "the cat sat\nthe dog ran\n").expect("write");
        Command::new(env!("CARGO_BIN_EXE_dp"))
            .current_dir(self.dir.path())
            .env_remove("DP_CATALOG")
            .env_remove("RUST_LOG")
            .env("DP_VERIFY_CACHE", self.dir.path().join("verify-cache.json"))
            .args(["--catalog", "catalog", "--models-root", "models"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("dp runs")
    }

    fn embed(&self) -> Output {
        self.dp(&[
            "--json",
            "embed",
            "--model",
            "tiny-bert",
            "--input",
            "texts.txt",
        ])
    }
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

/// The first error of a JSON failure, after checking the exit code.
fn error_of(output: &Output, code: i32) -> serde_json::Value {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    json(output)["errors"][0].clone()
}

/// Edits that change what the model computes or what its preset does.
const TAMPERINGS: [(&str, &str, &str); 6] = [
    // (file, from, to): the first occurrence of `from` becomes `to`.
    ("tokenizer.json", "\"cat\":", "\"cbt\":"),
    (
        "config.json",
        "\"layer_norm_eps\": 1e-12",
        "\"layer_norm_eps\": 1e-02",
    ),
    ("modules.json", "Normalize", "Normalizf"),
    (
        "1_Pooling/config.json",
        "\"pooling_mode_cls_token\": false,\n  \"pooling_mode_mean_tokens\": true",
        "\"pooling_mode_cls_token\": true,\n  \"pooling_mode_mean_tokens\": false",
    ),
    ("sentence_bert_config.json", "64", "32"),
    ("model.safetensors", "", ""),
];

/// Applies one tampering of [`TAMPERINGS`] to the fixture's model.
fn tamper(f: &Fixture, file: &str, from: &str, to: &str) {
    let path = f.models().join("tiny-bert").join(file);
    let mut bytes = std::fs::read(&path).expect("read");
    if from.is_empty() {
        // The weights: flip one byte of the last tensor's data.
        let at = bytes.len() - 3;
        bytes[at] ^= 0x40;
    } else {
        let text = String::from_utf8(bytes).expect("utf-8");
        assert!(text.contains(from), "{file} has no {from:?}: {text}");
        bytes = text.replacen(from, to, 1).into_bytes();
    }
    std::fs::write(&path, bytes).expect("write");
}

#[test]
fn every_locked_artifact_changed_after_the_lock_is_version_drift_for_embed_and_health() {
    for (file, from, to) in TAMPERINGS {
        let f = Fixture::new();
        let locked = f.dp(&["verify", "--lock", "tiny-bert"]);
        assert_eq!(
            locked.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&locked.stderr)
        );
        let before = f.embed();
        assert_eq!(
            before.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&before.stderr)
        );

        tamper(&f, file, from, to);
        // The weights are also pinned by the spec's weights_digest, checked first.
        let (code, digest, advice) = if file == "model.safetensors" {
            (
                "weights_digest_mismatch",
                "mismatch",
                "restore the pinned files",
            )
        } else {
            ("version_drift", "drift", "dp verify tiny-bert --lock")
        };
        let err = error_of(&f.embed(), 3);
        assert_eq!(err["error_code"], code, "{file}: {err}");
        let message = err["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("tiny-bert/{file}")),
            "{file}: {message}"
        );
        assert!(message.contains(advice), "{message}");

        let health = f.dp(&["--json", "health"]);
        assert_eq!(
            health.status.code(),
            Some(3),
            "{file}: health must not say ready"
        );
        let report = json(&health);
        let model = &report["models"][0];
        assert_eq!(model["ready"], false, "{file}");
        assert_eq!(model["digest"], digest, "{file}");
        assert_eq!(model["problems"][0]["error_code"], code, "{file}");
    }
}

#[test]
fn an_artifacts_digest_pin_catches_a_changed_tokenizer_without_a_lock() {
    let f = Fixture::new();
    // Pin every file: the aggregate `dp verify` reports for them.
    let verified = f.dp(&["--json", "verify", "tiny-bert"]);
    let aggregate = json(&verified)["models"][0]["aggregate"]
        .as_str()
        .expect("aggregate")
        .to_owned();
    let spec = std::fs::read_to_string(f.spec_path()).expect("spec");
    let pinned = spec.replacen(
        "preprocess_preset:",
        &format!("artifacts_digest: {aggregate}\npreprocess_preset:"),
        1,
    );
    std::fs::write(f.spec_path(), pinned).expect("write");

    let out = f.embed();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record = &json(&out)["models_used"][0];
    assert_eq!(record["artifacts_digest"], aggregate.as_str());
    let signature = record["model_signature"].as_str().expect("signature");
    assert!(
        signature.ends_with(&format!(";artifacts_digest={aggregate}")),
        "{signature}"
    );

    tamper(&f, TAMPERINGS[0].0, TAMPERINGS[0].1, TAMPERINGS[0].2);
    let err = error_of(&f.embed(), 3);
    assert_eq!(err["error_code"], "weights_digest_mismatch", "{err}");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("artifacts_digest") && m.contains(&aggregate)),
        "{err}"
    );
    let health = f.dp(&["--json", "health"]);
    assert_eq!(health.status.code(), Some(3));
    assert_eq!(json(&health)["models"][0]["digest"], "mismatch");
}

#[test]
fn without_any_pin_on_a_file_changed_bytes_change_the_signature() {
    let f = Fixture::new();
    let first = json(&f.embed());
    tamper(&f, TAMPERINGS[1].0, TAMPERINGS[1].1, TAMPERINGS[1].2);
    // Not locked, not pinned beyond the weights: it runs, but never under the same
    // signature as the genuine files.
    let second = f.embed();
    assert_eq!(second.status.code(), Some(0));
    let second = json(&second);
    assert_ne!(
        first["models_used"][0]["artifacts_digest"],
        second["models_used"][0]["artifacts_digest"]
    );
    assert_ne!(first["model_signature"], second["model_signature"]);
}

#[test]
fn a_spec_restating_the_files_settings_signs_the_same_as_one_leaving_them_out() {
    let f = Fixture::new();
    let restated = json(&f.embed());
    let spec = std::fs::read_to_string(f.spec_path()).expect("spec");
    let start = spec.find("preprocess_params:").expect("params");
    let end = spec[start..].find("input_schema:").expect("schema") + start;
    std::fs::write(f.spec_path(), format!("{}{}", &spec[..start], &spec[end..])).expect("write");
    let bare = f.embed();
    assert_eq!(
        bare.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&bare.stderr)
    );
    let bare = json(&bare);
    // Both run max_length 64, mean pooling, normalized (from the model's files).
    assert_eq!(bare["model_signature"], restated["model_signature"]);
    assert_eq!(bare["embeddings"], restated["embeddings"]);
}
