//! `cargo xtask bench manager`: the manager's hot path and embedding cache
//! (`crates/dp-manager/benches/manager.rs --figures`, with a provider whose models do
//! nothing) against the Python anchor (`xtask/bench/manager_anchor.py`: a dict lookup under
//! an `asyncio.Lock`, as the pipeline's Python manager does per cached get), both timing
//! themselves, interleaved.

use std::path::Path;

use anyhow::{Result, bail};

use super::Executables;
use super::pairs::{CommandLine, Figures, figure_rounds, series};
use super::report::{Row, Side, Target, Unit};

/// Runs the manager rows.
pub(crate) fn run(root: &Path, exes: &Executables, pairs: usize) -> Result<Vec<Row>> {
    let ours = CommandLine::new(
        "dp-manager",
        &[&exes.manager.to_string_lossy(), "--figures"],
    );
    let venv = root.join(crate::setup::VENV_DIR).join("bin/python");
    let python = if venv.is_file() {
        venv.to_string_lossy().into_owned()
    } else {
        "python3".to_owned()
    };
    let scale = std::env::var("DP_BENCH_SCALE").unwrap_or_else(|_| "1".to_owned());
    let anchor = CommandLine::new(
        "Python dict under asyncio.Lock",
        &[
            &python,
            &root.join("xtask/bench/manager_anchor.py").to_string_lossy(),
            &scale,
        ],
    );
    let rounds = figure_rounds(&[&ours, &anchor], pairs)?;
    let [ours_r, anchor_r] = rounds.as_slice() else {
        bail!("expected the figures of two runners");
    };
    let ns = |runs: &[Figures], key: &str| -> Result<Vec<f64>> {
        Ok(series(runs, key)?.into_iter().map(|v| v * 1e-9).collect())
    };
    let python_version = anchor_r[0].text("python").unwrap_or_default();
    let rows = vec![
        Row::new(
            "manager.get_1_thread",
            "`get()` of a loaded model, 1 thread (key building included)",
            Unit::Seconds,
            Side::new("dp-manager", ns(ours_r, "get_ns")?),
            Side::new(&anchor.label, ns(anchor_r, "get_ns")?),
            vec![
                Target::OursAtMost { value: 50e-9 },
                Target::RatioAtLeast { value: 10.0 },
            ],
        )?
        .with_note(format!("Python {python_version}")),
        Row::new(
            "manager.get_2_threads_vs_python",
            "`get()`, 2 threads on different models (aggregate time per get)",
            Unit::Seconds,
            Side::new("dp-manager", ns(ours_r, "get_2threads_ns")?),
            Side::new(
                "Python, 2 threads (own loop and lock each)",
                ns(anchor_r, "get_2threads_ns")?,
            ),
            vec![],
        )?,
        Row::new(
            "manager.get_2_threads_scaling",
            "`get()` throughput: 2 threads on different models vs 1 thread",
            Unit::Seconds,
            Side::new("dp-manager, 2 threads", ns(ours_r, "get_2threads_ns")?),
            Side::new("dp-manager, 1 thread", ns(ours_r, "get_ns")?),
            vec![Target::RatioAtLeast { value: 1.7 }],
        )?,
        Row::new(
            "manager.embedding_hit_1",
            "embedding cache hit, 1 text per call (per text)",
            Unit::Seconds,
            Side::new("dp-manager", ns(ours_r, "embedding_hit_1_ns_per_text")?),
            Side::new(
                "Python sha256 key + dict under asyncio.Lock",
                ns(anchor_r, "embedding_hit_ns_per_text")?,
            ),
            vec![Target::OursAtMost { value: 2e-6 }],
        )?,
        Row::new(
            "manager.embedding_hit_32",
            "embedding cache hit, 32 texts per call (per text)",
            Unit::Seconds,
            Side::new("dp-manager", ns(ours_r, "embedding_hit_32_ns_per_text")?),
            Side::new(
                "Python sha256 key + dict under asyncio.Lock",
                ns(anchor_r, "embedding_hit_ns_per_text")?,
            ),
            vec![Target::OursAtMost { value: 2e-6 }],
        )?,
    ];
    for row in &rows {
        println!("{}", row.summary());
    }
    Ok(rows)
}
