//! `dp parity`: two builds of one model agree (MiniLM on candle and ONNX, tiny CLIP on
//! candle and ONNX, with the figures checked against the vectors `dp embed` prints), and a
//! misconfigured build (the demo BERT pooled with CLS instead of mean) is caught with exit
//! code 3; models of different sizes and bad tolerances are refused.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::path::{Path, PathBuf};
use std::process::Output;

use dp_tests::cli::{assert_exit, json};
use serde_json::Value;

fn workspace_root() -> PathBuf {
    dp_tests::workspace_root()
}

/// Runs `dp` with `catalog` and `models`, a private verify cache.
fn dp_in(catalog: &Path, models: &Path, args: &[&str]) -> Output {
    let scratch = tempfile::tempdir().unwrap();
    dp_tests::cli::command(env!("CARGO_BIN_EXE_dp"), catalog, models, scratch.path())
        .args(args)
        .output()
        .unwrap()
}

/// Runs `dp` on the real catalog and the setup's models.
fn dp(args: &[&str]) -> Output {
    dp_in(
        &workspace_root().join("specs/catalog"),
        &workspace_root().join(".dp-assets/models"),
        args,
    )
}

fn vectors(embed: &Value) -> Vec<Vec<f64>> {
    embed["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

const SENTENCES: &str = "A man is eating food.\nA man is riding a horse.\nThe new movie is \
                         awesome.\nTwo dogs play in the snow near a fence.\nDeux chiens jouent \
                         dans la neige.\n";

#[test]
fn minilm_on_candle_and_onnx_agree_as_their_embeddings_say() {
    let test = "minilm_on_candle_and_onnx_agree_as_their_embeddings_say";
    if dp_tests::asset("models/all-minilm-l6-v2-onnx", test).is_none()
        || dp_tests::asset("onnxruntime/libonnxruntime.so", test).is_none()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("sentences.txt");
    std::fs::write(&input, SENTENCES).unwrap();
    let input = input.to_str().unwrap();
    let (a, b) = ("all-minilm-l6-v2", "all-minilm-l6-v2-onnx");
    let out = dp(&["--json", "parity", a, b, "--input", input]);
    assert_exit(&out, 0);
    let report = json(&out);
    assert_eq!(report["models_used"][0]["model_name"], a);
    assert_eq!(report["models_used"][1]["model_name"], b);
    assert_eq!(report["models_used"][1]["engine"], "onnx");
    assert_eq!(report["inputs"], 5);
    assert_eq!(report["dimension"], 384);
    assert_eq!(report["tolerance"], 0.9999);
    assert_eq!(report["within_tolerance"], true);
    // The figures are the vectors' own: recompute them from what `dp embed` prints.
    let ea = vectors(&json(&dp(&[
        "--json", "embed", "--model", a, "--input", input,
    ])));
    let eb = vectors(&json(&dp(&[
        "--json", "embed", "--model", b, "--input", input,
    ])));
    let cosines: Vec<f64> = ea.iter().zip(&eb).map(|(x, y)| cosine(x, y)).collect();
    let (worst, min) =
        cosines.iter().enumerate().fold(
            (0, f64::INFINITY),
            |(wi, w), (i, &c)| if c < w { (i, c) } else { (wi, w) },
        );
    let max_abs = ea
        .iter()
        .flatten()
        .zip(eb.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    let reported = report["min_cosine"].as_f64().unwrap();
    assert!((reported - min).abs() < 1e-12, "{reported} vs {min}");
    assert_eq!(report["worst_input"], worst);
    let mean = cosines.iter().sum::<f64>() / cosines.len() as f64;
    assert!((report["mean_cosine"].as_f64().unwrap() - mean).abs() < 1e-12);
    assert_eq!(report["max_abs_diff"].as_f64().unwrap(), max_abs);
    // Two engines, not one: the vectors differ, within what the provider tests allow.
    assert!(max_abs > 0.0 && max_abs < 1e-5, "max |Δ| {max_abs}");
    assert!(min > 0.999_999, "min cosine {min}");
    println!("minilm candle vs onnx: min cosine {min}, max |Δ| {max_abs:e}");
}

#[test]
fn tiny_clip_images_on_candle_and_onnx_agree() {
    let test = "tiny_clip_images_on_candle_and_onnx_agree";
    if dp_tests::asset("models/tiny-clip-onnx", test).is_none()
        || dp_tests::asset("onnxruntime/libonnxruntime.so", test).is_none()
    {
        return;
    }
    let images = ["photo_420.jpg", "odd_3x5.png", "palette.png"]
        .map(|name| workspace_root().join("tests/data/images").join(name));
    let mut args = vec!["--json", "parity", "tiny-clip", "tiny-clip-onnx"];
    for image in &images {
        args.extend(["--image", image.to_str().unwrap()]);
    }
    let out = dp(&args);
    assert_exit(&out, 0);
    let report = json(&out);
    assert_eq!(report["inputs"], 3);
    assert_eq!(report["dimension"], 24);
    assert!(
        report["min_cosine"].as_f64().unwrap() > 0.999_999,
        "{report}"
    );
    assert!(report["max_abs_diff"].as_f64().unwrap() < 1e-5, "{report}");
}

#[test]
fn models_of_different_sizes_are_refused() {
    let test = "models_of_different_sizes_are_refused";
    if dp_tests::asset("models/tiny-clip-wide", test).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("sentences.txt");
    std::fs::write(&input, SENTENCES).unwrap();
    let input = input.to_str().unwrap();
    let out = dp(&[
        "--json",
        "parity",
        "tiny-clip",
        "tiny-clip-wide",
        "--input",
        input,
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = &json(&out)["errors"][0];
    assert_eq!(err["error_code"], "invalid_input");
    assert!(
        err["message"].as_str().unwrap().contains("24 and 40"),
        "{err}"
    );
}

/// The demo's tiny BERT as `tiny-bert` and, pooled with its CLS token instead of the mean
/// (a copy whose `1_Pooling/config.json` says so), as `tiny-bert-cls`: same weights, same
/// size, other vectors.
struct PoolingFixture {
    dir: tempfile::TempDir,
}

impl PoolingFixture {
    fn new() -> Self {
        let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo");
        let dir = tempfile::tempdir().unwrap();
        let (catalog, models) = (dir.path().join("catalog"), dir.path().join("models"));
        dp_tests::copy_dir(&demo.join("catalog"), &catalog).unwrap();
        dp_tests::copy_dir(&demo.join("models"), &models).unwrap();
        dp_tests::copy_dir(&models.join("tiny-bert"), &models.join("tiny-bert-cls")).unwrap();
        let pooling = models.join("tiny-bert-cls/1_Pooling/config.json");
        let mut config: Value = serde_json::from_slice(&std::fs::read(&pooling).unwrap()).unwrap();
        config["pooling_mode_mean_tokens"] = Value::Bool(false);
        config["pooling_mode_cls_token"] = Value::Bool(true);
        std::fs::write(&pooling, serde_json::to_vec(&config).unwrap()).unwrap();
        let spec_path = catalog.join("text_embedding/tiny-bert.yaml");
        let spec = std::fs::read_to_string(&spec_path).unwrap();
        assert!(spec.contains("  pooling: mean\n"), "{spec}");
        let cls = spec
            .replace("model_name: tiny-bert\n", "model_name: tiny-bert-cls\n")
            .replace("  - tiny-bert/", "  - tiny-bert-cls/")
            .replace("  pooling: mean\n", "  pooling: cls\n");
        std::fs::write(catalog.join("text_embedding/tiny-bert-cls.yaml"), cls).unwrap();
        let input = dir.path().join("sentences.txt");
        std::fs::write(&input, SENTENCES).unwrap();
        Self { dir }
    }

    fn dp(&self, args: &[&str]) -> Output {
        let root = self.dir.path();
        let input = root.join("sentences.txt");
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--input", input.to_str().unwrap()]);
        dp_in(&root.join("catalog"), &root.join("models"), &all)
    }
}

#[test]
fn a_build_pooled_differently_is_outside_the_tolerance() {
    let fixture = PoolingFixture::new();
    let out = fixture.dp(&["--json", "parity", "tiny-bert", "tiny-bert-cls"]);
    assert_exit(&out, 3);
    let report = json(&out);
    assert_eq!(report["within_tolerance"], false);
    assert_eq!(report["dimension"], 32);
    assert_eq!(report["inputs"], 5);
    let min = report["min_cosine"].as_f64().unwrap();
    assert!(min < 0.99, "mean and CLS pooling agree too well: {min}");
    assert!(report["mean_cosine"].as_f64().unwrap() >= min);
    // Without --json: the figures on stdout, the verdict on stderr, the same exit code.
    let out = fixture.dp(&["parity", "tiny-bert", "tiny-bert-cls"]);
    assert_eq!(out.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!("min cosine {min} (input ")),
        "{stdout}"
    );
    assert!(
        stdout.contains("5 text(s) of 32 dimensions, tiny-bert (dp2-"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("dp: outside the tolerance: input "),
        "{stderr}"
    );
    // A tolerance the pair meets passes it.
    if min > 0.0 {
        let loose = format!("{}", min / 2.0);
        let out = fixture.dp(&[
            "parity",
            "tiny-bert",
            "tiny-bert-cls",
            "--tolerance",
            &loose,
        ]);
        assert_exit(&out, 0);
    }
}

#[test]
fn one_model_against_itself_is_exact_and_bad_tolerances_are_refused() {
    let fixture = PoolingFixture::new();
    let out = fixture.dp(&["--json", "parity", "tiny-bert", "tiny-bert"]);
    assert_exit(&out, 0);
    let report = json(&out);
    assert_eq!(report["max_abs_diff"], 0.0);
    assert!((report["min_cosine"].as_f64().unwrap() - 1.0).abs() < 1e-12);
    for bad in ["0", "1.5", "-1", "NaN", "high"] {
        let tolerance = format!("--tolerance={bad}");
        let out = fixture.dp(&["parity", "tiny-bert", "tiny-bert", &tolerance]);
        assert_eq!(out.status.code(), Some(2), "{tolerance}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--tolerance"), "{stderr}");
    }
    let out = fixture.dp(&["--json", "parity", "tiny-bert", "no-such-model"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(json(&out)["errors"][0]["error_code"], "model_not_found");
}
