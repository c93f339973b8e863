//! `dp embed` on hostile inputs: a huge line, an endless stream, too many bytes or texts,
//! and an output of many vectors. Each run is watched: its peak resident memory (the
//! kernel's `VmHWM`, sampled while it runs) and a time limit after which it is killed.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What one watched run of `dp` did.
struct Run {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
    /// The largest `VmHWM` seen, in MiB.
    peak_mib: u64,
}

/// The peak resident memory of process `pid` so far, in KiB (`None` once it has exited).
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs `dp embed --model tiny-bert` (the demo model, so no setup is needed) with `args`,
/// feeding `stdin`; kills it once it runs past `limit` or past 1.5 GiB resident, so a
/// regression fails the test instead of the machine.
fn embed(args: &[&str], stdin: &[u8], limit: Duration) -> Run {
    let cache = tempfile::tempdir().unwrap();
    let demo = workspace_root().join("crates/dp-cli/demo");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dp"))
        .current_dir(workspace_root())
        .env_remove("RUST_LOG")
        .env("DP_CATALOG", demo.join("catalog"))
        .env("DP_MODELS_ROOT", demo.join("models"))
        .env("DP_VERIFY_CACHE", cache.path().join("verify-cache.json"))
        .args(["embed", "--model", "tiny-bert"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // dp may refuse before reading all of it: a broken pipe here is expected.
    let feeder = thread::spawn(move || drop(input.write_all(&stdin)));
    let mut out = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut bytes = Vec::new();
        out.read_to_end(&mut bytes).unwrap();
        bytes
    });
    let mut err = child.stderr.take().unwrap();
    let err_reader = thread::spawn(move || {
        let mut text = String::new();
        err.read_to_string(&mut text).unwrap();
        text
    });
    let started = Instant::now();
    let mut peak_kib = 0;
    let status = loop {
        if let Some(kib) = vm_hwm_kib(pid) {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit || peak_kib > 1536 * 1024 {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "dp {args:?} killed after {:?} at {} MiB resident",
                started.elapsed(),
                peak_kib / 1024
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    feeder.join().unwrap();
    Run {
        code: status.code(),
        stdout: reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
        peak_mib: peak_kib / 1024,
    }
}

/// A line of `len` bytes of ordinary words (no newline inside).
fn long_line(len: usize) -> String {
    let words = [
        "the", "cat", "sat", "on", "a", "mat", "while", "it", "rained", "today,",
    ];
    let mut line = String::with_capacity(len + 16);
    let mut i = 0_usize;
    while line.len() < len {
        line.push_str(words[(i * 7 + i / 3) % words.len()]);
        line.push(' ');
        i += 1;
    }
    line
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn a_huge_line_is_embedded_without_tokenizing_it_whole() {
    // Before the fix the whole line went through the tokenizer: 8 MB took about 950 MB
    // and 8 s; now only a prefix is tokenized, and the vector is the same.
    let dir = tempfile::tempdir().unwrap();
    let line = long_line(8_000_000);
    let huge = write_file(dir.path(), "huge.txt", format!("{line}\n").as_bytes());
    let run = embed(&["--input", &huge], b"", Duration::from_secs(120));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.peak_mib < 300, "peak {} MiB", run.peak_mib);
    // The same text cut at 100 kB (still far past the model's 64 tokens; ASCII, so any
    // byte is a character boundary) embeds the same.
    let short = write_file(dir.path(), "short.txt", &line.as_bytes()[..100_000]);
    let reference = embed(&["--input", &short], b"", Duration::from_secs(60));
    assert_eq!(reference.code, Some(0), "{}", reference.stderr);
    assert_eq!(
        String::from_utf8(run.stdout).unwrap(),
        String::from_utf8(reference.stdout).unwrap()
    );
}

#[test]
fn an_endless_input_is_refused_at_the_limit_with_bounded_memory() {
    // Before the fix `--input /dev/zero` grew until memory ran out.
    let run = embed(&["--input", "/dev/zero"], b"", Duration::from_secs(60));
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("/dev/zero is larger than 67108864 bytes (--max-input-bytes)"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("raise --max-input-bytes"),
        "{}",
        run.stderr
    );
    assert!(run.peak_mib < 400, "peak {} MiB", run.peak_mib);

    let run = embed(
        &[
            "--json",
            "--input",
            "/dev/zero",
            "--max-input-bytes",
            "4096",
        ],
        b"",
        Duration::from_secs(60),
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let error = &report["errors"][0];
    assert_eq!(error["error_code"], "invalid_input");
    assert_eq!(error["details"]["max_input_bytes"], 4096);
}

#[test]
fn inputs_over_the_byte_limit_are_refused_and_the_limit_can_be_raised() {
    let dir = tempfile::tempdir().unwrap();
    let text = "a short sentence\n".repeat(100); // 1,700 bytes
    let file = write_file(dir.path(), "texts.txt", text.as_bytes());
    // A file: refused from its size, before reading it.
    let run = embed(
        &["--input", &file, "--max-input-bytes", "1000"],
        b"",
        Duration::from_secs(60),
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("is 1700 bytes, larger than 1000 bytes (--max-input-bytes)"),
        "{}",
        run.stderr
    );
    // Stdin: refused after 1,001 bytes.
    let run = embed(
        &["--max-input-bytes", "1000"],
        text.as_bytes(),
        Duration::from_secs(60),
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("stdin is larger than 1000 bytes (--max-input-bytes)"),
        "{}",
        run.stderr
    );
    // Raised, it is embedded: 100 vectors.
    let run = embed(
        &["--max-input-bytes", "1700"],
        text.as_bytes(),
        Duration::from_secs(60),
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(String::from_utf8(run.stdout).unwrap().lines().count(), 100);
    // Zero is no limit a user means.
    let run = embed(&["--max-input-bytes", "0"], b"", Duration::from_secs(60));
    assert_eq!(run.code, Some(2), "{}", run.stderr);
}

#[test]
fn inputs_over_the_text_limit_are_refused() {
    let run = embed(
        &["--max-texts", "2"],
        b"one\ntwo\n\nthree\n",
        Duration::from_secs(60),
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("more than 2 texts (--max-texts)")
            && run.stderr.contains("raise --max-texts"),
        "{}",
        run.stderr
    );
    // The default: 100,000 texts (here, 100,001 empty strings in a JSON array).
    let many = serde_json::to_vec(&vec![""; 100_001]).unwrap();
    let run = embed(&[], &many, Duration::from_secs(60));
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("more than 100000 texts"),
        "{}",
        run.stderr
    );
    let run = embed(
        &["--max-texts", "2"],
        b"one\ntwo\n",
        Duration::from_secs(60),
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}

#[test]
fn the_json_output_of_many_texts_is_streamed() {
    // Before the fix the whole document was built as one `serde_json::Value`: 200,000
    // empty strings took over 500 MB with the 32-dimension demo model (2.5 GB for a
    // million), against about 150 MB now.
    let texts = serde_json::to_vec(&vec![""; 200_000]).unwrap();
    let run = embed(
        &["--json", "--max-texts", "200000"],
        &texts,
        Duration::from_secs(300),
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.peak_mib < 250, "peak {} MiB", run.peak_mib);
    // The document: the record, the signature, then the same vector 200,000 times.
    let out = String::from_utf8(run.stdout).unwrap();
    let (head, embeddings) = out.split_once(",\"embeddings\":[").unwrap();
    let head: serde_json::Value = serde_json::from_str(&format!("{head}}}")).unwrap();
    assert_eq!(head["models_used"][0]["model_name"], "tiny-bert");
    assert_eq!(
        head["model_signature"],
        head["models_used"][0]["model_signature"]
    );
    let body = embeddings.strip_suffix("]}\n").unwrap();
    let first = &body[..=body.find(']').unwrap()];
    let vector: Vec<f64> = serde_json::from_str(first).unwrap();
    assert_eq!(vector.len(), 32);
    assert_eq!(body.len(), first.len() * 200_000 + 199_999);
    let mut copies = body.as_bytes().chunks(first.len() + 1);
    assert!(copies.all(|c| c.strip_suffix(b",").unwrap_or(c) == first.as_bytes()));
}

#[test]
fn the_json_output_has_the_shape_it_always_had() {
    let run = embed(
        &["--json"],
        b"The cat sits.\nIt rains.\n",
        Duration::from_secs(60),
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let value: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["models_used", "model_signature", "embeddings"]);
    // Exactly `serde_json::Value`'s own printing of that document.
    assert_eq!(String::from_utf8(run.stdout).unwrap(), format!("{value}\n"));
    let lines = embed(&[], b"The cat sits.\nIt rains.\n", Duration::from_secs(60));
    let vectors: Vec<Vec<f32>> = String::from_utf8(lines.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let from_json: Vec<Vec<f32>> = serde_json::from_value(value["embeddings"].clone()).unwrap();
    assert_eq!(from_json, vectors);
}
