//! `dp embed --image`, `dp classify` and `dp preprocess` with the tiny CLIP of
//! `cargo xtask setup`, checked against what `transformers` computed on the same files
//! (`tests/data/reference/clip/tiny-clip.json`), and their refusals of bad images.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn workspace_root() -> PathBuf {
    dp_tests::workspace_root()
}

/// Runs `dp` on the real catalog and the setup's models, with a private verify cache.
fn dp(args: &[&str]) -> Output {
    let cache = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_dp"))
        .current_dir(workspace_root())
        .env_remove("RUST_LOG")
        .env("DP_CATALOG", workspace_root().join("specs/catalog"))
        .env("DP_MODELS_ROOT", workspace_root().join(".dp-assets/models"))
        .env("DP_VERIFY_CACHE", cache.path().join("verify-cache.json"))
        .args(args)
        .output()
        .unwrap()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
        panic!(
            "not JSON ({err}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn reference() -> Value {
    let path = dp_tests::data_dir().join("reference/clip/tiny-clip.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// The reference's images and their paths, or `None` (outside CI) without the assets.
fn setup(test: &str) -> Option<Vec<(String, Value)>> {
    dp_tests::asset("models/tiny-clip", test)?;
    dp_tests::asset("images/skimage", test)?;
    let reference = reference();
    let images = reference["images"].as_array().unwrap();
    Some(
        images
            .iter()
            .take(3)
            .map(|i| {
                let path = workspace_root().join(i["path"].as_str().unwrap());
                (path.display().to_string(), i.clone())
            })
            .collect(),
    )
}

#[test]
fn embed_images_prints_records_and_the_reference_vectors() {
    let Some(images) = setup("embed_images_prints_records_and_the_reference_vectors") else {
        return;
    };
    let mut args = vec!["--json", "embed", "--model", "tiny-clip"];
    for (path, _) in &images {
        args.extend(["--image", path.as_str()]);
    }
    let out = dp(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json(&out);
    assert_eq!(doc["models_used"][0]["model_name"], "tiny-clip");
    assert_eq!(doc["models_used"][0]["preprocess_preset"], "image_clip");
    assert_eq!(
        doc["model_signature"],
        doc["models_used"][0]["model_signature"]
    );
    let vectors = doc["embeddings"].as_array().unwrap();
    assert_eq!(vectors.len(), images.len());
    for ((_, want), got) in images.iter().zip(vectors) {
        let c = cosine(&floats(got), &floats(&want["embedding"]));
        assert!(c >= 0.9999, "{}: cosine {c}", want["image"]);
    }
}

#[test]
fn classify_prints_labels_and_probabilities() {
    let Some(images) = setup("classify_prints_labels_and_probabilities") else {
        return;
    };
    let reference = reference();
    let mut args = vec!["--json", "classify", "--model", "tiny-clip"];
    for (path, _) in &images {
        args.extend(["--image", path.as_str()]);
    }
    let labels: Vec<&str> = reference["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    for label in &labels {
        args.extend(["--label", label]);
    }
    let out = dp(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json(&out);
    assert_eq!(doc["labels"], reference["labels"]);
    assert_eq!(doc["models_used"][0]["model_name"], "tiny-clip");
    assert!(doc["model_signature"].as_str().unwrap().starts_with("dp2:"));
    let rows = doc["probabilities"].as_array().unwrap();
    assert_eq!(rows.len(), images.len());
    for ((_, want), got) in images.iter().zip(rows) {
        let got = floats(got);
        assert!((got.iter().sum::<f64>() - 1.0).abs() < 1e-5);
        // Preprocessing may differ from Pillow by one 8-bit level: the model-level parity
        // (same pixels, 1e-4) is checked in the provider tests.
        for (p, q) in got.iter().zip(floats(&want["zero_shot_probs"])) {
            assert!(
                (p - q).abs() < 1e-3,
                "{}: {got:?} vs {}",
                want["image"],
                want["zero_shot_probs"]
            );
        }
    }
    // Without --json: one block per image, labels ranked by probability.
    let text = dp(&args[1..]);
    assert!(text.status.success());
    let stdout = String::from_utf8(text.stdout).unwrap();
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("  ")).count(),
        images.len() * labels.len()
    );
}

#[test]
fn preprocess_prints_the_tensors_the_model_would_be_fed() {
    let Some(images) = setup("preprocess_prints_the_tensors_the_model_would_be_fed") else {
        return;
    };
    let out = dp(&[
        "--json",
        "preprocess",
        "--model",
        "tiny-clip",
        "--image",
        &images[0].0,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json(&out);
    assert_eq!(doc["preprocess_preset"], "image_clip");
    assert!(
        doc["preprocess_signature"]
            .as_str()
            .unwrap()
            .starts_with("pp1:")
    );
    assert_eq!(
        doc["preprocess_signature"],
        doc["models_used"][0]["preprocess_signature"]
    );
    let pixels = &doc["tensors"]["pixel_values"];
    assert_eq!(pixels["dtype"], "fp32");
    assert_eq!(pixels["shape"], serde_json::json!([1, 3, 32, 32]));
    assert_eq!(pixels["data"].as_array().unwrap().len(), 3 * 32 * 32);

    // Texts: CLIPTokenizerFast's ids.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("texts.json");
    std::fs::write(&input, r#"["a photo of a cat"]"#).unwrap();
    let out = dp(&[
        "--json",
        "preprocess",
        "--model",
        "tiny-clip",
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json(&out);
    assert_eq!(
        doc["tensors"]["input_ids"]["data"],
        serde_json::json!([49406, 320, 1125, 539, 320, 2368, 49407])
    );
    assert_eq!(
        doc["tensors"]["attention_mask"]["shape"],
        serde_json::json!([1, 7])
    );
}

/// Runs `dp --json <args>` expecting exit 2 and one error with `reason`.
fn refused(args: &[&str], reason: &str) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = dp(&all);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json(&out);
    assert_eq!(doc["errors"][0]["error_code"], "invalid_input", "{doc}");
    assert_eq!(doc["errors"][0]["details"]["reason"], reason, "{doc}");
}

#[test]
fn bad_images_are_refused_with_exit_2_and_a_stable_reason() {
    let test = "bad_images_are_refused_with_exit_2_and_a_stable_reason";
    if setup(test).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    };
    let gray = std::fs::read(dp_tests::data_dir().join("images/gray.png")).unwrap();
    let cut = write("cut.png", &gray[..gray.len() / 3]);
    refused(
        &["embed", "--model", "tiny-clip", "--image", &cut],
        "image_decode_failed",
    );
    let pdf = write("doc.pdf", b"%PDF-1.7\n");
    refused(
        &["embed", "--model", "tiny-clip", "--image", &pdf],
        "image_format_unsupported",
    );
    let gray_path = dp_tests::data_dir().join("images/gray.png");
    let gray_path = gray_path.to_str().unwrap();
    if dp_tests::asset("models/all-minilm-l6-v2", test).is_some() {
        refused(
            &["embed", "--model", "all-minilm-l6-v2", "--image", gray_path],
            "images_unsupported",
        );
    }
    // Labels are required by the command line itself.
    let out = dp(&["classify", "--model", "tiny-clip", "--image", gray_path]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--label"));
    // A missing file, and one over the byte bound: refused before any model is loaded.
    let out = dp(&[
        "--json",
        "embed",
        "--model",
        "tiny-clip",
        "--image",
        "/nonexistent/x.png",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = dp(&[
        "--json",
        "embed",
        "--model",
        "tiny-clip",
        "--max-input-bytes",
        "10",
        "--image",
        gray_path,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("raise --max-input-bytes"));
    assert!(Path::new(gray_path).exists());
}
