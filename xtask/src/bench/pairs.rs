//! Side-by-side timing of whole commands: ours against the anchor a user would otherwise
//! run, interleaved (A B A B …) so that a noisy, shared machine slows both alike, and
//! reported as a ratio measured in the same run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

/// A command line: program and arguments.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CommandLine {
    /// What the report calls it (`dp digest`, `sha256sum`…).
    pub label: String,
    /// Run through `sh -c` (pipelines) or directly.
    pub argv: Vec<String>,
}

impl CommandLine {
    /// A program with arguments.
    pub(crate) fn new(label: &str, argv: &[&str]) -> Self {
        Self {
            label: label.to_owned(),
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// A shell pipeline.
    pub(crate) fn shell(label: &str, script: &str) -> Self {
        Self::new(label, &["sh", "-c", script])
    }

    fn command(&self) -> Result<Command> {
        let (program, args) = self.argv.split_first().context("empty command line")?;
        let mut cmd = Command::new(program);
        cmd.args(args);
        Ok(cmd)
    }

    /// Runs it once and returns its stdout (to check both sides agree before timing).
    pub(crate) fn output(&self) -> Result<String> {
        let out = self
            .command()?
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("cannot run {}", self.label))?;
        if !out.status.success() {
            bail!("{} failed: {}", self.label, out.status);
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn time_once(&self) -> Result<Duration> {
        let mut cmd = self.command()?;
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let start = Instant::now();
        let status = cmd
            .status()
            .with_context(|| format!("cannot run {}", self.label))?;
        let elapsed = start.elapsed();
        if !status.success() {
            bail!("{} failed during timing: {status}", self.label);
        }
        Ok(elapsed)
    }
}

/// Min, median and max of a set of wall-clock times, in seconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Stats {
    /// Fastest run.
    pub min: f64,
    /// Median run.
    pub median: f64,
    /// Slowest run.
    pub max: f64,
}

impl Stats {
    fn of(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        let median = if n % 2 == 1 {
            samples[n / 2]
        } else {
            (samples[n / 2 - 1] + samples[n / 2]) / 2.0
        };
        Self {
            min: samples[0],
            median,
            max: samples[n - 1],
        }
    }
}

/// One row of a report: ours against an anchor.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PairResult {
    /// What is compared.
    pub row: String,
    /// Our command and its times.
    pub ours: CommandLine,
    /// Our times.
    pub ours_seconds: Stats,
    /// The anchor command.
    pub anchor: CommandLine,
    /// The anchor's times.
    pub anchor_seconds: Stats,
    /// Bytes processed per run, when meaningful (for GB/s).
    pub bytes: Option<u64>,
    /// `anchor median / ours median`: above 1 means we are faster.
    pub ratio: f64,
    /// The target for `ratio`, if any.
    pub target: Option<f64>,
    /// Pairs timed (after the warm-up).
    pub pairs: usize,
}

impl PairResult {
    /// Whether the target is met (true when there is none).
    pub(crate) fn meets_target(&self) -> bool {
        self.target.is_none_or(|t| self.ratio >= t)
    }
}

/// Times `ours` and `anchor` interleaved: one warm-up each, then `pairs` × (A, B).
pub(crate) fn compare(
    row: &str,
    ours: &CommandLine,
    anchor: &CommandLine,
    bytes: Option<u64>,
    target: Option<f64>,
    pairs: usize,
) -> Result<PairResult> {
    ours.time_once()?;
    anchor.time_once()?;
    let mut a = Vec::with_capacity(pairs);
    let mut b = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        a.push(ours.time_once()?.as_secs_f64());
        b.push(anchor.time_once()?.as_secs_f64());
    }
    let ours_seconds = Stats::of(a);
    let anchor_seconds = Stats::of(b);
    let result = PairResult {
        row: row.to_owned(),
        ours: ours.clone(),
        ours_seconds,
        anchor: anchor.clone(),
        anchor_seconds,
        bytes,
        ratio: anchor_seconds.median / ours_seconds.median,
        target,
        pairs,
    };
    println!("{}", format_row(&result));
    Ok(result)
}

fn gbps(bytes: Option<u64>, seconds: f64) -> String {
    bytes.map_or_else(String::new, |b| {
        format!(" ({:.2} GB/s)", b as f64 / seconds / 1e9)
    })
}

/// One line: row, both medians (with throughput), ratio and target.
pub(crate) fn format_row(r: &PairResult) -> String {
    format!(
        "{:<44} ours {:>9.4}s{}  {} {:>9.4}s{}  ratio {:>7.2}x{}",
        r.row,
        r.ours_seconds.median,
        gbps(r.bytes, r.ours_seconds.median),
        r.anchor.label,
        r.anchor_seconds.median,
        gbps(r.bytes, r.anchor_seconds.median),
        r.ratio,
        r.target.map_or_else(String::new, |t| format!(
            "  target >= {t}x {}",
            if r.meets_target() { "ok" } else { "BELOW" }
        )),
    )
}

/// A Markdown table of results.
pub(crate) fn markdown_table(results: &[PairResult]) -> String {
    let mut out = String::from(
        "| row | ours (median s) | anchor | anchor (median s) | ratio | target |\n|---|---|---|---|---|---|\n",
    );
    for r in results {
        out.push_str(&format!(
            "| {} | {:.4}{} | {} | {:.4}{} | {:.2}× | {} |\n",
            r.row,
            r.ours_seconds.median,
            gbps(r.bytes, r.ours_seconds.median),
            r.anchor.label,
            r.anchor_seconds.median,
            gbps(r.bytes, r.anchor_seconds.median),
            r.ratio,
            r.target.map_or_else(
                || "—".to_owned(),
                |t| format!("≥ {t}× {}", if r.meets_target() { "✓" } else { "✗" })
            ),
        ));
    }
    out
}

/// Writes results as JSON under `target/bench/<name>.json`.
pub(crate) fn write_json(root: &Path, name: &str, results: &[PairResult]) -> Result<()> {
    let dir = root.join("target").join("bench");
    std::fs::create_dir_all(&dir)?;
    let machine = machine_description();
    let json = serde_json::json!({ "machine": machine, "rows": results });
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    Ok(())
}

/// CPU model and core count, for reports.
pub(crate) fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    format!("{cpu}, {cores} cores")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_samples() {
        let s = Stats::of(vec![3.0, 1.0, 2.0]);
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        let s = Stats::of(vec![4.0, 1.0, 2.0, 3.0]);
        assert_eq!(s.median, 2.5);
    }

    #[test]
    fn compare_times_real_commands_and_checks_targets() {
        let fast = CommandLine::new("true", &["true"]);
        let slow = CommandLine::shell("sleep", "sleep 0.05");
        let r = compare("true vs sleep", &fast, &slow, None, Some(2.0), 3).expect("runs");
        assert!(r.ratio > 2.0, "{r:?}");
        assert!(r.meets_target());
        assert!(markdown_table(&[r]).contains("| true vs sleep |"));
        let failing = CommandLine::new("false", &["false"]);
        assert!(compare("x", &failing, &fast, None, None, 1).is_err());
    }
}
