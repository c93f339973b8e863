//! `--embedding-cache DIR` and `dp cache stats|clear` with the real `dp` binary on the demo
//! tiny BERT: processes sharing one cache folder at once, processes killed (SIGKILL) at
//! random moments while they write, and the cache still opens, counts and serves exactly
//! what a cold run computes.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

fn demo() -> PathBuf {
    dp_tests::workspace_root().join("crates/dp-cli/demo")
}

fn dp_command(cache: &Path, args: &[&str]) -> Command {
    let mut command = dp_tests::cli::command(
        env!("CARGO_BIN_EXE_dp"),
        &demo().join("catalog"),
        &demo().join("models"),
        cache.parent().unwrap(),
    );
    command.env("DP_EMBEDDING_CACHE", cache).args(args);
    command
}

fn dp(cache: &Path, args: &[&str]) -> Output {
    dp_command(cache, args).output().unwrap()
}

fn json(out: &Output) -> Value {
    dp_tests::cli::assert_exit(out, 0);
    dp_tests::cli::json(out)
}

/// `n` distinct short texts, one per line, starting at `from`.
fn texts(dir: &Path, name: &str, from: usize, n: usize) -> PathBuf {
    let words = [
        "cat", "dog", "rain", "music", "model", "road", "mat", "text",
    ];
    let lines: String = (from..from + n)
        .map(|i| format!("the {} and the {} {i}\n", words[i % 8], words[(i / 8) % 8]))
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, lines).unwrap();
    path
}

/// The embeddings `dp embed --json` printed.
fn embeddings(out: &Output) -> Vec<Value> {
    json(out)["embeddings"].as_array().unwrap().clone()
}

#[test]
fn two_processes_share_one_cache_folder_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let a = texts(dir.path(), "a.txt", 0, 300);
    let b = texts(dir.path(), "b.txt", 150, 300);
    let spawn = |input: &Path| -> Child {
        dp_command(
            &cache,
            &[
                "--json",
                "embed",
                "--model",
                "tiny-bert",
                "--input",
                input.to_str().unwrap(),
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let (first, second) = (spawn(&a), spawn(&b));
    let (first, second) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    let (ea, eb) = (embeddings(&first), embeddings(&second));
    // The 150 texts both had are the same vectors, whoever computed them.
    assert_eq!(ea[150..], eb[..150]);
    let stats = json(&dp(&cache, &["--json", "cache", "stats"]));
    assert_eq!(stats["entries"], 450, "{stats}");
    assert_eq!(stats["models"]["tiny-bert"], 450);
    assert_eq!(stats["bytes"], 450 * 32 * 4);
    // A third run reads them all back, identical.
    let again = dp(
        &cache,
        &[
            "--json",
            "embed",
            "--model",
            "tiny-bert",
            "--input",
            a.to_str().unwrap(),
        ],
    );
    assert_eq!(embeddings(&again), ea);
    // Clearing one model's vectors.
    let cleared = json(&dp(
        &cache,
        &["--json", "cache", "clear", "--model", "tiny-bert"],
    ));
    assert_eq!(cleared["removed"], 450);
    assert_eq!(
        json(&dp(&cache, &["--json", "cache", "stats"]))["entries"],
        0
    );
}

#[test]
fn processes_killed_while_writing_never_corrupt_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let input = texts(dir.path(), "texts.txt", 0, 400);
    let input = input.to_str().unwrap();
    let cold = dp(
        dir.path().join("unused").as_path(),
        &["--json", "embed", "--model", "tiny-bert", "--input", input],
    );
    let cold = embeddings(&cold);
    // 100 runs, each killed after a different delay: before, during and after its write.
    let mut finished = 0;
    for round in 0..100_u64 {
        // Each run embeds a different slice, so most runs have something to write.
        let slice = texts(
            dir.path(),
            "slice.txt",
            usize::try_from(round).unwrap() * 3,
            40,
        );
        let mut child = dp_command(
            &cache,
            &[
                "embed",
                "--model",
                "tiny-bert",
                "--input",
                slice.to_str().unwrap(),
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        std::thread::sleep(Duration::from_millis((round * 37) % 200));
        if child.try_wait().unwrap().is_some() {
            finished += 1;
        }
        let _already_gone = child.kill();
        child.wait().unwrap();
    }
    // The cache opens and counts, and serves exactly what a cold run computes.
    let stats = json(&dp(&cache, &["--json", "cache", "stats"]));
    let entries = stats["entries"].as_u64().unwrap();
    assert_eq!(
        stats["bytes"].as_u64().unwrap(),
        entries * 32 * 4,
        "{stats}"
    );
    let warm = dp(
        &cache,
        &["--json", "embed", "--model", "tiny-bert", "--input", input],
    );
    assert_eq!(embeddings(&warm), cold);
    println!(
        "killed runs: {} of 100 finished first; {entries} vectors stored",
        finished
    );
}
