//! `dp demo` from a folder with no catalog, no models and no setup: it must embed with the
//! built-in tiny BERT and print models_used, the signature and the similarity matrix.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::process::{Command, Output, Stdio};

/// Runs `dp demo` in an empty folder, with no environment pointing at this repository.
fn demo(args: &[&str]) -> Output {
    let empty = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_dp"))
        .current_dir(empty.path())
        .env_remove("DP_CATALOG")
        .env_remove("DP_MODELS_ROOT")
        .env_remove("RUST_LOG")
        .arg("demo")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn demo_runs_anywhere_and_prints_a_consistent_similarity_matrix() {
    let output = demo(&["--json"]);
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["model"], "tiny-bert");
    let used = &report["models_used"][0];
    assert_eq!(used["model_name"], "tiny-bert");
    assert_eq!(used["engine"], "candle");
    assert_eq!(used["weights_digest"], report["weights_digest"]);
    assert!(
        report["model_signature"]
            .as_str()
            .unwrap()
            .starts_with("dp2:model_name=tiny-bert;")
    );
    let matrix: Vec<Vec<f32>> = serde_json::from_value(report["similarity"].clone()).unwrap();
    assert_eq!(matrix.len(), 4);
    for (i, row) in matrix.iter().enumerate() {
        assert_eq!(row.len(), 4);
        // Normalized embeddings: each sentence is identical to itself…
        assert!((row[i] - 1.0).abs() < 1e-5, "{row:?}");
        for (j, value) in row.iter().enumerate() {
            // …the matrix is symmetric, and distinct sentences are not identical.
            assert!((value - matrix[j][i]).abs() < 1e-6);
            if i != j {
                assert!(*value < 0.99, "{i},{j}: {value}");
            }
        }
    }
}

#[test]
fn demo_prints_the_signature_and_matrix_for_people() {
    let output = demo(&[]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("digest verified (sha256:"), "{text}");
    assert!(text.contains("models_used:"), "{text}");
    assert!(
        text.contains("model_signature: dp2:model_name=tiny-bert;"),
        "{text}"
    );
    assert!(text.contains("cosine similarity:"), "{text}");
    assert!(text.contains("1.000"), "{text}");
}
