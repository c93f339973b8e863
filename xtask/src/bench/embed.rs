//! `cargo xtask bench embed`: sentence embedding through the manager with the candle and
//! ONNX providers, against sentence-transformers on PyTorch CPU and Python ONNX Runtime, on
//! the same weights (the ONNX file is built from the same safetensors), the same texts and
//! the same thread count, in one run.
//!
//! The four runners (`embed_candle`, `embed_onnx` in tests/benches, and the two Python
//! scripts beside this file) time themselves and print their figures as one JSON object:
//! cold load, and sentences per second for short and long texts at 1 and 32 texts per call.
//! They run in turn (candle, onnx, sentence-transformers, onnxruntime), one round per pair,
//! so every row pairs figures measured back to back; each warms up in-process first.
//!
//! Peak memory: `dp embed --input FILE --json` for each provider against the Python
//! equivalent (sentence-transformers loading the model and embedding the same file), read
//! from GNU time (`ru_maxrss` of the child).
//!
//! The anchors run in `.dp-assets/bench-venv`, installed here from the hash-pinned
//! `xtask/requirements/bench-embed.txt` (PyPI's torch, which on Linux brings its CUDA
//! libraries: the CPU-only index is not reachable from this project's machines), and in
//! the `python-onnx` venv of `cargo xtask setup`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::pairs::{CommandLine, figure_rounds, median_series, peak_rss_pairs, series};
use super::report::{Row, Side, Target, Unit};
use super::{Executables, serving};
use crate::fsutil::{sha256_file, write_atomic};
use crate::process;

/// The bench venv, relative to the workspace root.
pub(crate) const BENCH_VENV: &str = ".dp-assets/bench-venv";

/// Its pinned requirements, relative to the workspace root.
const BENCH_REQUIREMENTS: &str = "xtask/requirements/bench-embed.txt";

/// The sentence-transformers runner, relative to the workspace root.
const ST_RUNNER: &str = "xtask/src/bench/embed_sentence_transformers.py";

/// The Python ONNX Runtime runner and its venv (`cargo xtask setup`, `python-onnx`).
const ORT_RUNNER: &str = "xtask/src/bench/embed_onnxruntime.py";
const ONNX_VENV: &str = ".dp-assets/venv-onnx";

/// The `dp_models` runner (the release wheel from Python).
const PYTHON_BINDING_RUNNER: &str = "xtask/src/bench/embed_python_binding.py";

/// The two specs and model folders (`cargo xtask setup`, `minilm` and `minilm-onnx`).
const CANDLE_SPEC: &str = "specs/catalog/text_embedding/all-minilm-l6-v2.yaml";
const ONNX_SPEC: &str = "specs/catalog/text_embedding/all-minilm-l6-v2-onnx.yaml";
/// The int8 MiniLM (`cargo xtask setup` asset `minilm-onnx-int8`), against the fp32 one.
const ONNX_INT8_SPEC: &str = "specs/catalog/text_embedding/all-minilm-l6-v2-onnx-int8.yaml";
const ONNX_INT8_MODEL: &str = "all-minilm-l6-v2-onnx-int8";
/// int8 ONNX vs fp32 ONNX, 32 short texts per call (issue: dynamic batching, int8).
const INT8_VS_FP32: f64 = 1.8;
const CANDLE_MODEL: &str = "all-minilm-l6-v2";
const ONNX_MODEL: &str = "all-minilm-l6-v2-onnx";

/// CPU threads every side uses (the issues' setting: 2 cores).
const THREADS: usize = 2;

/// Seconds each throughput workload runs for, per runner and round.
const MIN_SECONDS: &str = "0.5";

/// The issues' targets: candle cold load (seconds), and throughput ratios on batches of
/// 32 short sentences.
const COLD_LOAD_TARGET_S: f64 = 0.150;
const CANDLE_VS_ST: f64 = 1.0;
const ONNX_VS_ORT: f64 = 0.97;
const ONNX_VS_ST: f64 = 1.5;

/// The throughput workloads: figure key and what the report calls it.
pub(crate) const WORKLOADS: [(&str, &str); 4] = [
    ("short_b32", "32 short texts per call"),
    ("short_b1", "1 short text per call"),
    ("long_b32", "32 long texts (256 tokens) per call"),
    ("long_b1", "1 long text (256 tokens) per call"),
];

/// One batch of 32 short sentences (the `text` group's too).
pub(crate) const SENTENCES: [&str; 32] = [
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

/// Long texts: every short sentence, rotated, joined — about 300 word pieces, so each is
/// truncated to the model's 256.
fn long_texts() -> Vec<String> {
    (0..SENTENCES.len())
        .map(|i| {
            let mut text: Vec<&str> = SENTENCES[i..].to_vec();
            text.extend_from_slice(&SENTENCES[..i]);
            text.join(" ")
        })
        .collect()
}

fn path_arg(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("non-UTF-8 path {}", path.display()))
}

/// Makes the bench venv current (a stamp holds the requirements' digest).
pub(crate) fn ensure_venv(root: &Path) -> Result<PathBuf> {
    let requirements = root.join(BENCH_REQUIREMENTS);
    let digest = sha256_file(&requirements)?;
    let venv = root.join(BENCH_VENV);
    let stamp = venv.join(".dp-stamp");
    let python = venv.join("bin/python");
    let works = || {
        process::succeeds(
            Command::new(&python).args(["-c", "import torch, sentence_transformers, matplotlib"]),
        )
    };
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == digest) && works() {
        return Ok(python);
    }
    // An interrupted install must not look complete.
    let _ = std::fs::remove_file(&stamp);
    let interpreter = std::env::var_os("DP_PYTHON").unwrap_or_else(|| "python3".into());
    crate::setup::install_pinned_venv(
        &interpreter,
        &venv,
        &requirements,
        "install Python 3.11 with its venv module, or set DP_PYTHON",
        &format!("check the access to PyPI; {BENCH_REQUIREMENTS} pins the wheels for Python 3.11"),
    )?;
    if !works() {
        bail!(
            "{} cannot import torch, sentence_transformers and matplotlib after installation",
            venv.display()
        );
    }
    write_atomic(&stamp, format!("{digest}\n").as_bytes())?;
    Ok(python)
}

/// Runs every embedding row.
pub(crate) fn run(root: &Path, exes: &Executables, pairs: usize) -> Result<Vec<Row>> {
    for model in [CANDLE_MODEL, ONNX_MODEL, ONNX_INT8_MODEL] {
        if !root.join(".dp-assets/models").join(model).is_dir() {
            bail!("the {model} asset is missing: run `cargo xtask setup` first");
        }
    }
    let st_python = path_arg(&ensure_venv(root)?)?;
    let scratch = tempfile::tempdir().context("cannot create a scratch folder")?;
    let texts = scratch.path().join("texts.json");
    let long = long_texts();
    write_atomic(
        &texts,
        serde_json::to_string(&serde_json::json!({ "short": SENTENCES, "long": long }))?.as_bytes(),
    )?;
    let all_texts = scratch.path().join("all-texts.json");
    let mut every: Vec<&str> = SENTENCES.to_vec();
    every.extend(long.iter().map(String::as_str));
    write_atomic(&all_texts, serde_json::to_string(&every)?.as_bytes())?;

    let models_root = path_arg(&root.join(".dp-assets/models"))?;
    let texts_s = path_arg(&texts)?;
    let threads = THREADS.to_string();
    let rust_runner = |label: &str, exe: &Path, spec: &str| -> Result<CommandLine> {
        Ok(CommandLine::new(
            label,
            &[
                &path_arg(exe)?,
                "--models-root",
                &models_root,
                "--spec",
                &path_arg(&root.join(spec))?,
                "--texts",
                &texts_s,
                "--threads",
                &threads,
                "--min-seconds",
                MIN_SECONDS,
            ],
        ))
    };
    let python_runner =
        |label: &str, python: &str, script: &str, model: &str| -> Result<CommandLine> {
            Ok(CommandLine::new(
                label,
                &[
                    python,
                    &path_arg(&root.join(script))?,
                    "--model-dir",
                    &path_arg(&root.join(".dp-assets/models").join(model))?,
                    "--texts",
                    &texts_s,
                    "--threads",
                    &threads,
                    "--min-seconds",
                    MIN_SECONDS,
                ],
            ))
        };
    let candle = rust_runner("dp candle", &exes.embed_candle, CANDLE_SPEC)?;
    let onnx = rust_runner("dp onnx", &exes.embed_onnx, ONNX_SPEC)?;
    let onnx_int8 = rust_runner("dp onnx int8", &exes.embed_onnx, ONNX_INT8_SPEC)?;
    // In the anchor's favour: with GNU OpenMP's default spin-waiting, a thread of PyTorch's
    // pool spins while its partner is descheduled; on a shared 2-core machine one encode
    // of one sentence then took 340 ms instead of 15 ms. Passive waiting avoids that.
    let st = python_runner("sentence-transformers", &st_python, ST_RUNNER, CANDLE_MODEL)?
        .env("OMP_WAIT_POLICY", "PASSIVE");
    let ort = python_runner(
        "Python onnxruntime",
        &path_arg(&root.join(ONNX_VENV).join("bin/python"))?,
        ORT_RUNNER,
        ONNX_MODEL,
    )?;
    // The serving runners (batching, persistent cache) and the Python binding, in the
    // same rounds: their anchors are the rounds' own figures.
    let serving_exe = path_arg(&exes.serving)?;
    let serving_common = [
        "--models-root",
        models_root.as_str(),
        "--texts",
        texts_s.as_str(),
        "--threads",
        threads.as_str(),
        "--min-seconds",
        MIN_SECONDS,
    ];
    let onnx_library = path_arg(&root.join(".dp-assets/onnxruntime/libonnxruntime.so"))?;
    let serving_candle = serving::runner(
        &serving_exe,
        "candle",
        &path_arg(&root.join(CANDLE_SPEC))?,
        &serving_common,
        &["--restart-texts", serving::RESTART_TEXTS],
    );
    let serving_onnx = serving::runner(
        &serving_exe,
        "onnx",
        &path_arg(&root.join(ONNX_SPEC))?,
        &serving_common,
        &["--onnx-library", &onnx_library],
    );
    let python = std::env::var_os("DP_PYTHON").unwrap_or_else(|| "python3".into());
    let wheel_python = crate::wheel::release_venv(root, &python)?;
    let binding = serving::python_runner(
        &wheel_python,
        &root.join(PYTHON_BINDING_RUNNER),
        &[
            "--catalog",
            &path_arg(&root.join("specs/catalog"))?,
            "--models-root",
            &models_root,
            "--model",
            ONNX_MODEL,
            "--texts",
            &texts_s,
            "--min-seconds",
            MIN_SECONDS,
            "--threads",
            &threads,
            "--st-python",
            &st_python,
            "--st-model-dir",
            &path_arg(&root.join(".dp-assets/models").join(CANDLE_MODEL))?,
        ],
    )?;
    println!(
        "embed: {THREADS} threads, {pairs} rounds of candle, onnx, onnx int8, \
         sentence-transformers, Python onnxruntime, serving (candle, onnx), dp_models"
    );
    let rounds = figure_rounds(
        &[
            &candle,
            &onnx,
            &onnx_int8,
            &st,
            &ort,
            &serving_candle,
            &serving_onnx,
            &binding,
        ],
        pairs,
    )?;
    let [
        candle_r,
        onnx_r,
        int8_r,
        st_r,
        ort_r,
        serving_candle_r,
        serving_onnx_r,
        binding_r,
    ] = rounds.as_slice()
    else {
        bail!("expected the figures of eight runners");
    };
    let versions = format!(
        "torch {} (OMP_WAIT_POLICY=PASSIVE), onnxruntime {}",
        st_r[0].text("torch").unwrap_or_default(),
        ort_r[0].text("onnxruntime").unwrap_or_default()
    );

    let mut rows = Vec::new();
    let mut push = |row: Row| {
        println!("{}", row.summary());
        rows.push(row);
    };
    let side = |label: &str, runs: &[super::pairs::Figures], key: &str| -> Result<Side> {
        // Cold loads: each run prints its loads; their median is taken here, as for every
        // other median of the report.
        let values = if key == "cold_load_s" {
            median_series(runs, "cold_load_all_s")?
        } else {
            series(runs, key)?
        };
        Ok(Side::new(label, values))
    };
    push(Row::new(
        "embed.cold_load.candle_vs_st",
        "cold load (spec → ready), candle vs sentence-transformers",
        Unit::Seconds,
        side("dp candle", candle_r, "cold_load_s")?,
        side("sentence-transformers", st_r, "cold_load_s")?,
        vec![Target::OursAtMost {
            value: COLD_LOAD_TARGET_S,
        }],
    )?);
    push(Row::new(
        "embed.cold_load.onnx_vs_st",
        "cold load (spec → ready), onnx vs sentence-transformers",
        Unit::Seconds,
        side("dp onnx", onnx_r, "cold_load_s")?,
        side("sentence-transformers", st_r, "cold_load_s")?,
        vec![],
    )?);
    push(Row::new(
        "embed.cold_load.onnx_vs_ort",
        "cold load (spec → ready), onnx vs Python onnxruntime",
        Unit::Seconds,
        side("dp onnx", onnx_r, "cold_load_s")?,
        side("Python onnxruntime", ort_r, "cold_load_s")?,
        vec![],
    )?);
    for (key, what) in WORKLOADS {
        let main = key == "short_b32";
        let target = |value: f64| {
            if main {
                vec![Target::RatioAtLeast { value }]
            } else {
                Vec::new()
            }
        };
        push(
            Row::new(
                &format!("embed.throughput.{key}.candle_vs_st"),
                &format!("throughput, {what}: candle vs sentence-transformers"),
                Unit::SentencesPerSecond,
                side("dp candle", candle_r, key)?,
                side("sentence-transformers", st_r, key)?,
                target(CANDLE_VS_ST),
            )?
            .with_note(&versions),
        );
        push(Row::new(
            &format!("embed.throughput.{key}.onnx_vs_ort"),
            &format!("throughput, {what}: onnx vs Python onnxruntime"),
            Unit::SentencesPerSecond,
            side("dp onnx", onnx_r, key)?,
            side("Python onnxruntime", ort_r, key)?,
            target(ONNX_VS_ORT),
        )?);
        push(Row::new(
            &format!("embed.throughput.{key}.onnx_vs_st"),
            &format!("throughput, {what}: onnx vs sentence-transformers"),
            Unit::SentencesPerSecond,
            side("dp onnx", onnx_r, key)?,
            side("sentence-transformers", st_r, key)?,
            target(ONNX_VS_ST),
        )?);
        push(
            Row::new(
                &format!("embed.throughput.{key}.onnx_int8_vs_fp32"),
                &format!("throughput, {what}: onnx int8 vs onnx fp32"),
                Unit::SentencesPerSecond,
                side("dp onnx int8", int8_r, key)?,
                side("dp onnx fp32", onnx_r, key)?,
                target(INT8_VS_FP32),
            )?
            .with_note(
                "all-minilm-l6-v2-onnx-int8: the fp32 graph's weight products on int8 weights \
                 per column and uint8 activations on calibrated scales \
                 (xtask/scripts/quantize_minilm_onnx.py); min cosine 0.9950 to fp32",
            ),
        );
    }

    // Peak memory of the whole command, as a user runs it.
    let dp_s = path_arg(&exes.dp)?;
    let catalog = path_arg(&root.join("specs/catalog"))?;
    let all_s = path_arg(&all_texts)?;
    let dp_embed = |label: &str, model: &str| {
        CommandLine::new(
            label,
            &[
                &dp_s,
                "embed",
                "--catalog",
                &catalog,
                "--model",
                model,
                "--input",
                &all_s,
                "--json",
            ],
        )
        .env("DP_MODELS_ROOT", &models_root)
    };
    let dp_candle = dp_embed("dp embed (candle)", CANDLE_MODEL);
    let dp_onnx = dp_embed("dp embed (onnx)", ONNX_MODEL);
    let st_rss = CommandLine::new(
        "sentence-transformers script",
        &[
            &st_python,
            &path_arg(&root.join(ST_RUNNER))?,
            "--rss",
            "--model-dir",
            &path_arg(&root.join(".dp-assets/models").join(CANDLE_MODEL))?,
            "--texts",
            &all_s,
            "--threads",
            &threads,
        ],
    );
    let rss = peak_rss_pairs(&[&dp_candle, &dp_onnx, &st_rss], pairs)?;
    let note = format!(
        "{} texts ({} short, {} long) embedded and printed as JSON",
        every.len(),
        SENTENCES.len(),
        long.len()
    );
    push(
        Row::new(
            "embed.peak_rss.candle_vs_st",
            "peak RSS of `dp embed` (candle) vs the Python script",
            Unit::Bytes,
            Side::new(&dp_candle.label, rss[0].clone()),
            Side::new(&st_rss.label, rss[2].clone()),
            vec![],
        )?
        .with_note(&note),
    );
    push(
        Row::new(
            "embed.peak_rss.onnx_vs_st",
            "peak RSS of `dp embed` (onnx) vs the Python script",
            Unit::Bytes,
            Side::new(&dp_onnx.label, rss[1].clone()),
            Side::new(&st_rss.label, rss[2].clone()),
            vec![],
        )?
        .with_note(&note),
    );
    for row in serving::rows(serving_candle_r, serving_onnx_r)?
        .into_iter()
        .chain(serving::python_rows(binding_r, st_r, onnx_r)?)
    {
        push(row);
    }
    Ok(rows)
}
