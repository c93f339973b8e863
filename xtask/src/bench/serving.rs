//! The serving rows of `cargo xtask bench embed`: what the manager adds around a model and
//! how Python callers get it, each against its anchor in the same rounds as the other
//! `embed` rows.
//!
//! - dynamic batching: 64 threads each embedding one short text per call against one caller
//!   sending 32 per call, same manager (`tests/benches/serving.rs`), with p50/p99 latency;
//! - the persistent embedding cache: a hit per text against computing it (32 short texts per
//!   call), and 10,000 cached texts re-embedded after a restart against computing them;
//! - the `dp_models` wheel (release build, `embed_python_binding.py`): 32 short texts per
//!   call against sentence-transformers and against the Rust API (the `embed_onnx`
//!   runner), and a fresh interpreter's import + first embedding against
//!   sentence-transformers'.

use std::path::Path;

use anyhow::Result;

use super::pairs::{CommandLine, Figures, median_series, series};
use super::report::{Row, Side, Target, Unit};

/// 64 callers of one text against one caller of 32: "batching recovers what one big batch
/// gets" (issue: dynamic batching).
const CONCURRENT_VS_SINGLE: f64 = 0.9;
/// A persistent hit per text: at most 5 µs, and 50 times faster than computing (issue:
/// persistent embedding cache).
const PERSISTENT_HIT_MAX_S: f64 = 5e-6;
const PERSISTENT_VS_COMPUTE: f64 = 50.0;
/// The Python binding (issue: Python bindings): ONNX MiniLM from Python vs
/// sentence-transformers, its overhead over the Rust API (≤ 5%), and cold start.
const PYTHON_ONNX_VS_ST: f64 = 1.5;
const PYTHON_VS_RUST: f64 = 0.95;
const PYTHON_COLD_VS_ST: f64 = 3.0;

/// Texts re-embedded after a restart (candle only: the row).
pub(crate) const RESTART_TEXTS: &str = "10000";

/// The `serving` runner of `engine` on `spec`.
pub(crate) fn runner(
    exe: &str,
    engine: &str,
    spec: &str,
    common: &[&str],
    extra: &[&str],
) -> CommandLine {
    let mut argv = vec![exe, "--engine", engine, "--spec", spec];
    argv.extend_from_slice(common);
    argv.extend_from_slice(extra);
    CommandLine::new(&format!("dp serving {engine}"), &argv)
}

/// The rows of the two `serving` runners' rounds.
pub(crate) fn rows(candle: &[Figures], onnx: &[Figures]) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (engine, runs) in [("candle", candle), ("onnx", onnx)] {
        let p50 = median(&series(runs, "latency_p50_ms")?);
        let p99 = median(&series(runs, "latency_p99_ms")?);
        rows.push(
            Row::new(
                &format!("embed.serving.concurrent_64x1.{engine}"),
                &format!("64 threads × 1 short text per call (batched) vs 1 caller × 32, {engine}"),
                Unit::SentencesPerSecond,
                Side::new("64 callers", series(runs, "concurrent_64x1")?),
                Side::new("1 caller, 32 per call", series(runs, "single_b32")?),
                vec![Target::RatioAtLeast {
                    value: CONCURRENT_VS_SINGLE,
                }],
            )?
            .with_note(format!(
                "64 callers' latency per call: p50 {p50:.1} ms, p99 {p99:.1} ms"
            )),
        );
        let micro = |key: &str| -> Result<Vec<f64>> {
            Ok(series(runs, key)?.into_iter().map(|us| us * 1e-6).collect())
        };
        let targets = if engine == "candle" {
            vec![
                Target::RatioAtLeast {
                    value: PERSISTENT_VS_COMPUTE,
                },
                Target::OursAtMost {
                    value: PERSISTENT_HIT_MAX_S,
                },
            ]
        } else {
            Vec::new()
        };
        rows.push(Row::new(
            &format!("embed.serving.persistent_hit.{engine}"),
            &format!("per text, 32 per call: persistent-cache hit vs computing it, {engine}"),
            Unit::Seconds,
            Side::new("persistent hit", micro("persistent_hit_us")?),
            Side::new("computed", micro("compute_us")?),
            targets,
        )?);
    }
    if candle.iter().all(|f| f.get("restart_n_s").is_ok()) {
        rows.push(Row::new(
            "embed.serving.restart_10k.candle",
            "10,000 cached texts after a restart vs computing them, candle",
            Unit::Seconds,
            Side::new("after a restart", series(candle, "restart_n_s")?),
            Side::new("computed", series(candle, "compute_n_s")?),
            Vec::new(),
        )?);
    }
    Ok(rows)
}

/// The Python runner: the release wheel's venv Python running `script`.
pub(crate) fn python_runner(python: &Path, script: &Path, args: &[&str]) -> Result<CommandLine> {
    let python = python
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", python.display()))?;
    let script = script
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", script.display()))?;
    let mut argv = vec![python, script];
    argv.extend_from_slice(args);
    Ok(CommandLine::new("dp_models (Python)", &argv).env("OMP_WAIT_POLICY", "PASSIVE"))
}

/// The rows of the Python runner's rounds, against sentence-transformers' and the Rust ONNX
/// runner's rounds (run in the same rounds).
pub(crate) fn python_rows(
    python: &[Figures],
    st: &[Figures],
    rust_onnx: &[Figures],
) -> Result<Vec<Row>> {
    Ok(vec![
        Row::new(
            "embed.python.onnx_vs_st.short_b32",
            "from Python, 32 short texts per call: dp_models (ONNX) vs sentence-transformers",
            Unit::SentencesPerSecond,
            Side::new("dp_models onnx", series(python, "short_b32")?),
            Side::new("sentence-transformers", series(st, "short_b32")?),
            vec![Target::RatioAtLeast {
                value: PYTHON_ONNX_VS_ST,
            }],
        )?,
        Row::new(
            "embed.python.binding_vs_rust.short_b32",
            "32 short texts per call: dp_models from Python vs the Rust API (ONNX)",
            Unit::SentencesPerSecond,
            Side::new("dp_models onnx", series(python, "short_b32")?),
            Side::new("Rust API onnx", series(rust_onnx, "short_b32")?),
            vec![Target::RatioAtLeast {
                value: PYTHON_VS_RUST,
            }],
        )?,
        Row::new(
            "embed.python.cold_first_embedding",
            "fresh interpreter: import + first embedding, dp_models vs sentence-transformers",
            Unit::Seconds,
            Side::new("dp_models", median_series(python, "cold_s")?),
            Side::new("sentence-transformers", median_series(python, "st_cold_s")?),
            vec![Target::RatioAtLeast {
                value: PYTHON_COLD_VS_ST,
            }],
        )?,
    ])
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}
