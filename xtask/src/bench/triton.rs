//! `cargo xtask bench triton`: the Triton provider against Python's `tritonclient[http]` on
//! the same `tritonserver` (the `triton` asset, the tests' repository), in one run,
//! interleaved (ours, theirs, ours, theirs…) after a warm-up pair, so a noisy machine slows
//! both alike.
//!
//! Rows: small-tensor requests/s, Rust vs Python (target ≥ 1.5×); 1 MiB tensors, Rust vs
//! Python (both with the binary data extension: tritonclient's default); 1 MiB tensors with
//! the binary data extension vs JSON, both through the provider (target ≥ 3×). Both sides
//! send sequential requests on one keep-alive connection and check the answer before
//! timing.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::Executables;
use super::report::{Row, Side, Target, Unit};
use crate::process;
use crate::setup::triton::TRITON_DIR;
use crate::triton_harness::{TritonServer, free_port};
use crate::triton_up::{fresh_repository, installed};

/// Seconds each timed run lasts.
const SECONDS: &str = "1";

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
pub(crate) fn run(root: &Path, exes: &Executables, pairs: usize) -> Result<Vec<Row>> {
    let install = installed(root)?;
    let ours_bin = &exes.triton_load;
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
        let mut cmd = Command::new(ours_bin);
        cmd.args([endpoint.as_str(), mode, SECONDS]);
        rate(&mut cmd)
    };
    let python = |mode: &str| {
        let mut cmd = Command::new(&python);
        cmd.arg(&script).args([host_port.as_str(), mode, SECONDS]);
        rate(&mut cmd)
    };
    // One warm-up pair, then `pairs` pairs, back to back.
    let interleave = |a: &dyn Fn() -> Result<f64>, b: &dyn Fn() -> Result<f64>| {
        a()?;
        b()?;
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for _ in 0..pairs {
            xs.push(a()?);
            ys.push(b()?);
        }
        Ok::<_, anyhow::Error>((xs, ys))
    };

    let mut rows = Vec::new();
    let (a, b) = interleave(&|| ours("small"), &|| python("small"))?;
    rows.push(Row::new(
        "triton.small_vs_tritonclient",
        "Triton small tensor [1,16] FP32, sequential requests",
        Unit::RequestsPerSecond,
        Side::new("dp-provider-triton", a),
        Side::new("tritonclient[http]", b),
        vec![Target::RatioAtLeast { value: 1.5 }],
    )?);
    let (a, b) = interleave(&|| ours("large-binary"), &|| python("large"))?;
    rows.push(Row::new(
        "triton.1mib_binary_vs_tritonclient",
        "Triton 1 MiB tensor [1,262144] FP32, binary data, sequential requests",
        Unit::RequestsPerSecond,
        Side::new("dp-provider-triton", a),
        Side::new("tritonclient[http] (binary)", b),
        vec![],
    )?);
    let (a, b) = interleave(&|| ours("large-binary"), &|| ours("large-json"))?;
    rows.push(Row::new(
        "triton.1mib_binary_vs_json",
        "Triton 1 MiB tensor: binary data extension vs JSON (both dp-provider-triton)",
        Unit::RequestsPerSecond,
        Side::new("dp-provider-triton, binary", a),
        Side::new("dp-provider-triton, JSON", b),
        vec![Target::RatioAtLeast { value: 3.0 }],
    )?);
    drop(server);
    for row in &rows {
        println!("{}", row.summary());
    }
    Ok(rows)
}
