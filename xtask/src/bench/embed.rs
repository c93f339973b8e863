//! `cargo xtask bench embed`: sentence embedding, ours against sentence-transformers on
//! PyTorch CPU, on the same weights and the same sentences, in one run.
//!
//! Each row is a pair of runners that report their own figures as one JSON object
//! (`cold_load_median_s`, `sentences_per_s`): timing inside the process keeps interpreter
//! start-up and imports out of the figures. The runners are run interleaved (ours, anchor,
//! ours, anchor…) so a noisy shared machine slows both alike, and each figure is the median
//! over rounds. Rows are a list: other providers add theirs to [`rows`].
//!
//! The anchor runs in `.dp-assets/bench-venv`, installed here from the hash-pinned
//! `xtask/requirements/bench-embed.txt` (PyPI's torch, which on Linux brings its CUDA
//! libraries: the CPU-only index is not reachable from this project's machines).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::pairs::CommandLine;
use crate::fsutil::{sha256_file, write_atomic};
use crate::process;

mod onnx;

/// The bench venv, relative to the workspace root.
const BENCH_VENV: &str = ".dp-assets/bench-venv";

/// Its pinned requirements, relative to the workspace root.
const BENCH_REQUIREMENTS: &str = "xtask/requirements/bench-embed.txt";

/// The sentence-transformers runner, relative to the workspace root.
const ST_RUNNER: &str = "xtask/src/bench/embed_sentence_transformers.py";

/// CPU threads both sides use (the issue's setting: 2 cores).
const THREADS: usize = 2;

/// Interleaved rounds per row.
const ROUNDS: usize = 3;

/// The issue's targets: throughput ratio (ours / anchor) and cold load (seconds).
const THROUGHPUT_TARGET: f64 = 1.0;
const COLD_LOAD_TARGET_S: f64 = 0.150;

/// One batch of 32 short sentences.
const SENTENCES: [&str; 32] = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "The cat sits on the mat.",
    "It will rain tomorrow.",
    "The weather is sunny today.",
    "She reads a book in the garden.",
    "The train leaves at noon.",
    "He fixed the bike yesterday.",
    "Children are playing in the park.",
    "The coffee is too hot to drink.",
    "A dog runs along the beach.",
    "The meeting was moved to Friday.",
    "Birds sing early in the morning.",
    "The store closes at nine.",
    "My phone battery is low.",
    "They painted the fence blue.",
    "The soup needs more salt.",
    "A plane flies over the city.",
    "The river flooded the valley.",
    "We watched a movie last night.",
    "The library is very quiet.",
    "A chef is slicing onions.",
    "The baby is sleeping now.",
    "Snow covered the mountain peaks.",
    "The lights went out during the storm.",
];

/// What a runner prints.
#[derive(Debug, Deserialize)]
struct Figures {
    cold_load_median_s: f64,
    sentences_per_s: f64,
}

/// Where the runners find their inputs.
struct BenchContext {
    root: PathBuf,
    sentences: PathBuf,
}

/// One comparison: a name, our runner and the anchor's.
struct Row {
    name: &'static str,
    ours: fn(&BenchContext) -> CommandLine,
    anchor: fn(&BenchContext) -> CommandLine,
    /// The throughput ratio (ours / anchor) the issue asks for.
    throughput_target: f64,
}

/// Every row, in report order.
fn rows() -> Vec<Row> {
    vec![Row {
        name: "all-minilm-l6-v2 fp32 cpu: candle vs sentence-transformers (PyTorch)",
        ours: candle_minilm,
        anchor: sentence_transformers_minilm,
        throughput_target: THROUGHPUT_TARGET,
    }]
    .into_iter()
    .chain(onnx::rows())
    .collect()
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

fn candle_minilm(cx: &BenchContext) -> CommandLine {
    let models_root = path_arg(&cx.root.join(".dp-assets/models"));
    let spec = path_arg(
        &cx.root
            .join("specs/catalog/text_embedding/all-minilm-l6-v2.yaml"),
    );
    let sentences = path_arg(&cx.sentences);
    let threads = THREADS.to_string();
    let manifest = path_arg(&cx.root.join("Cargo.toml"));
    CommandLine::new(
        "dp candle",
        &[
            "cargo",
            "bench",
            "--quiet",
            "--manifest-path",
            &manifest,
            "-p",
            "dp-tests",
            "--bench",
            "embed_candle",
            "--",
            "--models-root",
            &models_root,
            "--spec",
            &spec,
            "--sentences",
            &sentences,
            "--threads",
            &threads,
        ],
    )
}

fn sentence_transformers_minilm(cx: &BenchContext) -> CommandLine {
    let python = path_arg(&cx.root.join(BENCH_VENV).join("bin/python"));
    let runner = path_arg(&cx.root.join(ST_RUNNER));
    let model_dir = path_arg(&cx.root.join(".dp-assets/models/all-minilm-l6-v2"));
    let sentences = path_arg(&cx.sentences);
    let threads = THREADS.to_string();
    CommandLine::new(
        "sentence-transformers",
        &[
            &python,
            &runner,
            "--model-dir",
            &model_dir,
            "--sentences",
            &sentences,
            "--threads",
            &threads,
        ],
    )
}

/// Makes the bench venv current (a stamp holds the requirements' digest).
fn ensure_venv(root: &Path) -> Result<()> {
    let requirements = root.join(BENCH_REQUIREMENTS);
    let digest = sha256_file(&requirements)?;
    let venv = root.join(BENCH_VENV);
    let stamp = venv.join(".dp-stamp");
    let python = venv.join("bin/python");
    let works = || {
        process::succeeds(Command::new(&python).args(["-c", "import torch, sentence_transformers"]))
    };
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == digest) && works() {
        return Ok(());
    }
    let interpreter = std::env::var_os("DP_PYTHON").unwrap_or_else(|| "python3".into());
    process::run(
        Command::new(&interpreter)
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
        "install Python 3.11 with its venv module, or set DP_PYTHON",
    )?;
    // Every wheel is pinned with its sha256; --no-deps because the file lists them all.
    process::run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--require-hashes",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "--no-input",
                "--progress-bar",
                "off",
                "-r",
            ])
            .arg(&requirements),
        &format!("check the access to PyPI; {BENCH_REQUIREMENTS} pins the wheels for Python 3.11"),
    )?;
    if !works() {
        bail!(
            "{} cannot import torch and sentence_transformers after installation",
            venv.display()
        );
    }
    write_atomic(&stamp, format!("{digest}\n").as_bytes())
}

fn figures(command: &CommandLine) -> Result<Figures> {
    let stdout = command.output()?;
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("{} printed no JSON figures", command.label))?;
    serde_json::from_str(line).with_context(|| format!("{} printed bad figures", command.label))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs every row and prints the comparison.
pub(crate) fn run(root: &Path) -> Result<()> {
    if !root
        .join(".dp-assets/models/all-minilm-l6-v2/model.safetensors")
        .is_file()
    {
        bail!("the MiniLM asset is missing: run `cargo xtask setup` first");
    }
    ensure_venv(root)?;
    let scratch = tempfile::tempdir().context("cannot create a scratch folder")?;
    let sentences = scratch.path().join("sentences.json");
    write_atomic(&sentences, serde_json::to_string(&SENTENCES)?.as_bytes())?;
    let cx = BenchContext {
        root: root.to_path_buf(),
        sentences,
    };
    // Build our runner first so compilation never overlaps a measurement.
    process::run(
        &mut process::cargo_command(
            root,
            &[
                "bench",
                "--no-run",
                "-p",
                "dp-tests",
                "--bench",
                "embed_candle",
                "--bench",
                "embed_onnx",
            ],
        ),
        "fix the embed_candle and embed_onnx bench runners",
    )?;
    println!(
        "embed: batches of {} short sentences, {THREADS} threads, {ROUNDS} interleaved rounds",
        SENTENCES.len()
    );
    for row in rows() {
        let ours = (row.ours)(&cx);
        let anchor = (row.anchor)(&cx);
        let mut our_runs = Vec::new();
        let mut anchor_runs = Vec::new();
        for _ in 0..ROUNDS {
            our_runs.push(figures(&ours)?);
            anchor_runs.push(figures(&anchor)?);
        }
        let load = |runs: &[Figures]| median(runs.iter().map(|f| f.cold_load_median_s).collect());
        let rate = |runs: &[Figures]| median(runs.iter().map(|f| f.sentences_per_s).collect());
        let (our_load, anchor_load) = (load(&our_runs), load(&anchor_runs));
        let (our_rate, anchor_rate) = (rate(&our_runs), rate(&anchor_runs));
        let ratio = our_rate / anchor_rate;
        println!("{}", row.name);
        println!(
            "  cold load  {:>8.1} ms  vs {:>8.1} ms  ({:.2}x faster; target ≤ {:.0} ms: {})",
            our_load * 1e3,
            anchor_load * 1e3,
            anchor_load / our_load,
            COLD_LOAD_TARGET_S * 1e3,
            if our_load <= COLD_LOAD_TARGET_S {
                "met"
            } else {
                "NOT met"
            }
        );
        println!(
            "  throughput {our_rate:>8.1} /s  vs {anchor_rate:>8.1} /s  ({ratio:.2}x; target ≥ {:.2}x: {})",
            row.throughput_target,
            if ratio >= row.throughput_target {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    Ok(())
}
