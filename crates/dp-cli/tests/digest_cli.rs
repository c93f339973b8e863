//! `dp digest` against coreutils: a file's digest is what `sha256sum` prints, a directory's
//! aggregate and lines are what the pipeline in docs/digests.md prints.

use std::path::Path;
use std::process::{Command, Output};

fn dp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dp"))
        .env_remove("DP_CATALOG")
        .args(args)
        .output()
        .expect("dp runs")
}

fn stdout(output: &Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

/// Runs a shell pipeline and returns its stdout.
fn sh(script: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", script])
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Single-quotes a path for `sh`.
fn quoted(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// A tree with nested folders, unicode names, an empty file, and names whose byte order
/// differs from a locale's order (`Upper` < `lower`, `a-b` < `a/b`).
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let files: [(&str, &[u8]); 9] = [
        ("config.json", b"{}"),
        ("onnx/model.onnx", b"weights"),
        ("onnx/deeper/still/deeper.bin", &[0, 1, 2, 3, 255]),
        ("données/été.txt", "accentué".as_bytes()),
        ("日本語/モデル.bin", "重み".as_bytes()),
        ("empty.txt", b""),
        ("Upper.txt", b"U"),
        ("a-b", b"dash"),
        ("a/b", b"slash"),
    ];
    for (path, bytes) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
    }
    std::fs::create_dir(dir.path().join("empty-dir")).expect("mkdir");
    dir
}

#[test]
fn file_digest_equals_sha256sum() {
    let dir = tree();
    for name in ["onnx/model.onnx", "empty.txt", "données/été.txt"] {
        let file = dir.path().join(name);
        let ours = stdout(&dp(&["digest", file.to_str().expect("UTF-8")]));
        let theirs = sh(&format!("sha256sum {}", quoted(&file)));
        let hex = theirs.split_whitespace().next().expect("a digest");
        assert_eq!(ours, format!("sha256:{hex}\n"), "{name}");

        let json: serde_json::Value = serde_json::from_str(&stdout(&dp(&[
            "digest",
            "--json",
            file.to_str().expect("UTF-8"),
        ])))
        .expect("JSON");
        assert_eq!(
            json,
            serde_json::json!({ "digest": format!("sha256:{hex}") })
        );
    }
}

#[test]
fn directory_aggregate_and_lines_equal_the_coreutils_pipeline() {
    let dir = tree();
    let lines_script = format!(
        "cd {} && find -L . -type f -print0 | sed -z 's|^\\./||' | LC_ALL=C sort -z | xargs -0 sha256sum",
        quoted(dir.path())
    );
    let lines = sh(&lines_script);
    let aggregate = sh(&format!("{lines_script} | sha256sum"));
    let aggregate = aggregate.split_whitespace().next().expect("a digest");
    assert_eq!(
        lines.lines().count(),
        9,
        "the pipeline sees every file: {lines}"
    );

    let ours = stdout(&dp(&["digest", dir.path().to_str().expect("UTF-8")]));
    assert_eq!(ours, format!("sha256:{aggregate}\n{lines}"));

    let json: serde_json::Value = serde_json::from_str(&stdout(&dp(&[
        "digest",
        "--json",
        dir.path().to_str().expect("UTF-8"),
    ])))
    .expect("JSON");
    assert_eq!(json["aggregate"], format!("sha256:{aggregate}"));
    let from_json: String = json["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            let digest = f["digest"].as_str().expect("digest");
            format!(
                "{}  {}\n",
                digest.trim_start_matches("sha256:"),
                f["path"].as_str().expect("path")
            )
        })
        .collect();
    assert_eq!(from_json, lines);
}

#[test]
fn blake3_uses_the_same_line_format() {
    let dir = tree();
    let ours = stdout(&dp(&[
        "digest",
        "--algo",
        "blake3",
        dir.path().to_str().expect("UTF-8"),
    ]));
    let mut lines = ours.lines();
    let aggregate = lines.next().expect("aggregate line");
    let rest: String = lines.map(|l| format!("{l}\n")).collect();
    // The aggregate is the BLAKE3 of the per-file lines (b3sum's format).
    let expected = dp_digest::digest_bytes(dp_digest::DigestAlgorithm::Blake3, rest.as_bytes());
    assert_eq!(aggregate, expected.to_string());
    assert!(rest.contains("  onnx/model.onnx\n"));
    assert_ne!(
        aggregate.trim_start_matches("blake3:"),
        stdout(&dp(&["digest", dir.path().to_str().expect("UTF-8")]))
            .lines()
            .next()
            .expect("line")
            .trim_start_matches("sha256:")
    );
}

#[test]
fn cached_runs_print_the_same_and_strict_rehashes() {
    let dir = tree();
    let state = tempfile::tempdir().expect("tempdir");
    let cache = state.path().join("verify-cache.json");
    let (cache_s, dir_s) = (
        cache.to_str().expect("UTF-8"),
        dir.path().to_str().expect("UTF-8"),
    );
    let plain = stdout(&dp(&["digest", dir_s]));
    let first = stdout(&dp(&["digest", "--cache", cache_s, dir_s]));
    assert!(cache.exists(), "the cache is written");
    let written = std::fs::metadata(&cache)
        .expect("stat")
        .modified()
        .expect("mtime");
    let second = stdout(&dp(&["digest", "--cache", cache_s, dir_s]));
    assert_eq!(first, plain);
    assert_eq!(second, plain);
    assert_eq!(
        std::fs::metadata(&cache)
            .expect("stat")
            .modified()
            .expect("mtime"),
        written,
        "an unchanged tree does not rewrite the cache"
    );
    // A same-size rewrite is noticed (mtime/ctime), cached or strict.
    std::fs::write(dir.path().join("onnx/model.onnx"), b"WEIGHTS").expect("write");
    let changed = stdout(&dp(&["digest", "--cache", cache_s, dir_s]));
    assert_ne!(changed, plain);
    assert_eq!(changed, stdout(&dp(&["digest", dir_s])));
    assert_eq!(
        changed,
        stdout(&dp(&["digest", "--strict", "--cache", cache_s, dir_s]))
    );
    let file = dir.path().join("onnx/model.onnx");
    assert_eq!(
        stdout(&dp(&[
            "digest",
            "--cache",
            cache_s,
            file.to_str().expect("UTF-8")
        ])),
        stdout(&dp(&["digest", file.to_str().expect("UTF-8")]))
    );
}

#[test]
fn missing_path_and_escaping_link_exit_2_with_a_code() {
    let dir = tree();
    let out = dp(&[
        "digest",
        "--json",
        dir.path().join("absent").to_str().expect("UTF-8"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["errors"][0]["error_code"], "invalid_input");

    let outside = tempfile::NamedTempFile::new().expect("temp file");
    std::os::unix::fs::symlink(outside.path(), dir.path().join("onnx/escape.bin")).expect("link");
    let out = dp(&["digest", "--json", dir.path().to_str().expect("UTF-8")]);
    assert_eq!(out.status.code(), Some(2));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["errors"][0]["error_code"], "weights_digest_mismatch");
    assert_eq!(json["errors"][0]["details"]["path"], "onnx/escape.bin");
}
