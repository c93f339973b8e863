//! Other languages read the generated schema: Python's `jsonschema` and dp-models must give
//! the same verdict on every catalog file (valid) and every invalid fixture (rejected).

use std::path::PathBuf;
use std::process::Command;

use dp_spec::{ParseLimits, SourceDocument, validate_document};
use dp_tests::{asset, data_dir, sample_catalog, workspace_root};

fn spec_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walk(dir)
        .into_iter()
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "json")
            )
        })
        .collect();
    files.sort();
    files
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn python_jsonschema_and_rust_agree_on_every_fixture() {
    let Some(python) = asset("venv/bin/python", "python_parity") else {
        return;
    };
    let valid = spec_files(&sample_catalog());
    let invalid = spec_files(&data_dir().join("invalid-specs"));
    assert!(valid.len() >= 18 && invalid.len() >= 30);
    let schema = workspace_root().join("specs/schema/model-spec.schema.json");
    let output = Command::new(python)
        .arg(workspace_root().join("tests/python/check_specs.py"))
        .arg(&schema)
        .args(valid.iter().chain(&invalid))
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "check_specs.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    for (files, expect_valid) in [(&valid, true), (&invalid, false)] {
        for file in files {
            let python_valid = report[file.to_string_lossy().as_ref()]["valid"]
                .as_bool()
                .expect("verdict for every file");
            let doc = SourceDocument::read(file, ParseLimits::default()).expect("readable");
            let rust_valid = validate_document(&doc).is_ok();
            assert_eq!(
                (python_valid, rust_valid),
                (expect_valid, expect_valid),
                "{}: python={python_valid} rust={rust_valid}; python said {}",
                file.display(),
                report[file.to_string_lossy().as_ref()]["errors"]
            );
        }
    }
}
