//! `cargo xtask bench manager`: after the manager's criterion bench, the Python anchor
//! (`xtask/bench/manager_anchor.py`: a dict lookup under an `asyncio.Lock`, as the
//! pipeline's Python manager does per cached get) runs in the same invocation, and the
//! ratios are printed and written to `target/bench/manager.json`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use serde::Serialize;

/// One compared row.
#[derive(Debug, Serialize)]
struct Row {
    what: &'static str,
    ours_ns: f64,
    anchor: &'static str,
    anchor_ns: f64,
    /// anchor / ours: how many times faster we are.
    speedup: f64,
    target: &'static str,
}

/// Criterion's median estimate of `group/function`, in nanoseconds per iteration.
fn criterion_median(root: &Path, group: &str, function: &str) -> Result<f64> {
    let path = root
        .join("target/criterion")
        .join(group)
        .join(function)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (did the criterion bench run?)", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    json["median"]["point_estimate"]
        .as_f64()
        .with_context(|| format!("no median in {}", path.display()))
}

/// The venv's Python when `cargo xtask setup` made one, else `python3`.
fn python(root: &Path) -> std::path::PathBuf {
    let venv = root.join(".dp-assets/venv/bin/python");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

/// Runs the anchor and compares it with the criterion figures of the manager bench.
pub(crate) fn run(root: &Path) -> Result<()> {
    let scale = std::env::var("DP_BENCH_SCALE").unwrap_or_else(|_| "1".to_owned());
    let output = Command::new(python(root))
        .arg(root.join("xtask/bench/manager_anchor.py"))
        .arg(&scale)
        .output()
        .context("running the Python anchor (python3 is needed)")?;
    ensure!(
        output.status.success(),
        "the Python anchor failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let anchor: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let field = |key: &str| {
        anchor[key]
            .as_f64()
            .with_context(|| format!("the anchor printed no {key}"))
    };
    let get = criterion_median(root, "get_loaded", "get_and_drop")?;
    let hit_1 = criterion_median(root, "embedding_cache", "hit_1_text")?;
    let hit_32 = criterion_median(root, "embedding_cache", "hit_batch_32")? / 32.0;
    let anchor_get = field("get_ns")?;
    let anchor_hit = field("embedding_hit_ns_per_text")?;
    let rows = [
        Row {
            what: "get() of a loaded model",
            ours_ns: get,
            anchor: "dict lookup under asyncio.Lock",
            anchor_ns: anchor_get,
            speedup: anchor_get / get,
            target: "≤ 50 ns; ≥ 10× the anchor",
        },
        Row {
            what: "embedding cache hit, 1 text per call",
            ours_ns: hit_1,
            anchor: "sha256 key + dict lookup under asyncio.Lock, per text",
            anchor_ns: anchor_hit,
            speedup: anchor_hit / hit_1,
            target: "≤ 2000 ns per text",
        },
        Row {
            what: "embedding cache hit, per text in a batch of 32",
            ours_ns: hit_32,
            anchor: "sha256 key + dict lookup under asyncio.Lock, per text",
            anchor_ns: anchor_hit,
            speedup: anchor_hit / hit_32,
            target: "≤ 2000 ns per text",
        },
    ];
    println!("\n| manager (median) | ours | anchor | anchor time | speed-up | target |");
    println!("|---|---:|---|---:|---:|---|");
    for row in &rows {
        println!(
            "| {} | {:.1} ns | {} | {:.1} ns | {:.1}× | {} |",
            row.what, row.ours_ns, row.anchor, row.anchor_ns, row.speedup, row.target
        );
    }
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out)?;
    let report = serde_json::json!({ "python": anchor["python"], "rows": rows });
    std::fs::write(
        out.join("manager.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(())
}
