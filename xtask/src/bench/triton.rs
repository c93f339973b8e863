//! `cargo xtask bench triton`: the Triton provider against Python's `tritonclient[http]` on
//! the same `tritonserver` (the `triton` asset, the tests' repository), in one run,
//! interleaved (ours, theirs, ours, theirs…) so a noisy machine slows both alike.
//!
//! Rows: small-tensor requests/s, Rust vs Python (target ≥ 1.5×); 1 MiB tensors with the
//! binary data extension vs JSON, both through the provider (target ≥ 3×). Both sides send
//! sequential requests on one keep-alive connection and check the answer before timing.
//! Results go to stdout (a Markdown table) and `target/bench/triton.json`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::process::{self, cargo_command};
use crate::setup::triton::TRITON_DIR;
use crate::triton_harness::{TritonServer, free_port};
use crate::triton_up::{fresh_repository, installed};

/// Seconds each timed run lasts.
const SECONDS: &str = "3";
/// Rounds per row (each round runs both sides once).
const ROUNDS: usize = 3;

/// One row of the report.
#[derive(Debug, Serialize)]
struct Row {
    name: &'static str,
    ours: &'static str,
    anchor: &'static str,
    /// Requests per second of each round.
    ours_rps: Vec<f64>,
    anchor_rps: Vec<f64>,
    /// Median ours / median anchor.
    ratio: f64,
    target: f64,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn rate(cmd: &mut Command) -> Result<f64> {
    let line = process::display(cmd);
    let out = cmd
        .output()
        .with_context(|| format!("cannot run `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .with_context(|| format!("`{line}` did not print a rate"))
}

/// Runs the Triton rows.
pub(crate) fn run(root: &Path) -> Result<()> {
    let install = installed(root)?;
    process::run(
        &mut cargo_command(
            root,
            &[
                "build",
                "--release",
                "-p",
                "dp-provider-triton",
                "--example",
                "triton_load",
            ],
        ),
        "fix the build of the triton_load example",
    )?;
    let ours_bin = root.join("target/release/examples/triton_load");
    let python = root.join(TRITON_DIR).join("venv/bin/python");
    let script = root.join("xtask/scripts/bench_tritonclient.py");

    let dir = root.join("target/bench/triton");
    std::fs::create_dir_all(&dir)?;
    let (repo, _) = fresh_repository(root, &dir)?;
    let port = free_port()?;
    let mut server =
        TritonServer::start(&install, &repo, port, &["affine"], &dir.join("server.log"))?;
    server
        .wait_ready(&["affine"], Duration::from_secs(120))
        .context("tritonserver did not become ready")?;
    let endpoint = server.endpoint();
    let host_port = format!("127.0.0.1:{port}");

    let ours = |mode: &str| {
        let mut cmd = Command::new(&ours_bin);
        cmd.args([endpoint.as_str(), mode, SECONDS]);
        rate(&mut cmd)
    };
    let python_small = || {
        let mut cmd = Command::new(&python);
        cmd.arg(&script)
            .args([host_port.as_str(), "small", SECONDS]);
        rate(&mut cmd)
    };

    let mut rows = Vec::new();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        a.push(ours("small")?);
        b.push(python_small()?);
    }
    rows.push(Row {
        name: "small tensor [1,16] FP32, sequential requests/s",
        ours: "dp-provider-triton",
        anchor: "tritonclient[http] (Python)",
        ratio: median(&a) / median(&b),
        ours_rps: a,
        anchor_rps: b,
        target: 1.5,
    });
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        a.push(ours("large-binary")?);
        b.push(ours("large-json")?);
    }
    rows.push(Row {
        name: "1 MiB tensor [1,262144] FP32, sequential requests/s",
        ours: "binary data extension",
        anchor: "JSON tensors",
        ratio: median(&a) / median(&b),
        ours_rps: a,
        anchor_rps: b,
        target: 3.0,
    });
    drop(server);

    println!(
        "| row | ours | anchor | ours req/s (median) | anchor req/s (median) | ratio | target |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.2}× | ≥ {}× |",
            r.name,
            r.ours,
            r.anchor,
            median(&r.ours_rps),
            median(&r.anchor_rps),
            r.ratio,
            r.target
        );
    }
    let json = root.join("target/bench/triton.json");
    std::fs::write(&json, serde_json::to_vec_pretty(&rows)?)
        .with_context(|| format!("cannot write {}", json.display()))?;
    println!("written to {}", json.display());
    Ok(())
}
