//! Every subcommand with stdout a closed pipe (`dp list | head -0`): `dp` stops printing
//! quietly instead of panicking with "failed printing to stdout: Broken pipe".

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `dp args` with its stdout a pipe whose read end is closed before `dp` writes, and
/// returns its exit code and stderr.
fn run_into_closed_pipe(args: &[&str], scratch: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dp"))
        .current_dir(scratch)
        .env_remove("DP_CATALOG")
        .env_remove("DP_MODELS_ROOT")
        .env_remove("RUST_LOG")
        .env("DP_VERIFY_CACHE", scratch.join("verify-cache.json"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dp runs");
    // Closed at once: `dp` has not even parsed its arguments yet.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("dp finishes");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn no_subcommand_panics_when_stdout_is_a_closed_pipe() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let root = scratch.path();
    dp_tests::copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("demo"), root).expect("copy");
    std::fs::write(root.join("texts.txt"), "one text\nanother text\n").expect("write");
    let manifest = workspace_root().join("tests/data/downloader/manifest.json");
    let manifest = manifest.to_str().expect("utf-8");
    let layers = ["--catalog", "catalog", "--models-root", "models"];
    let commands: [&[&str]; 9] = [
        &["validate"],
        &["list"],
        &["digest", "models/tiny-bert"],
        &["verify", "--cache", "verify-cache.json"],
        &["resolve", "tiny-bert"],
        &["embed", "--model", "tiny-bert", "--input", "texts.txt"],
        &["health"],
        &["demo"],
        &["sync-downloader", manifest, "--dry-run"],
    ];
    for json in [false, true] {
        for command in commands {
            let mut args: Vec<&str> = layers.to_vec();
            if json {
                args.push("--json");
            }
            args.extend_from_slice(command);
            let (code, stderr) = run_into_closed_pipe(&args, root);
            assert!(
                !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
                "dp {}: {stderr}",
                args.join(" ")
            );
            assert_ne!(code, Some(101), "dp {}: {stderr}", args.join(" "));
            // Each command succeeds on the demo catalog: only the reader has gone.
            assert_eq!(code, Some(0), "dp {}: {stderr}", args.join(" "));
        }
    }
}
