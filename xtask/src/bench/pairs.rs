//! Side-by-side runs of ours against the anchor a user would otherwise run, interleaved
//! (ours, anchor, ours, anchor…), so that a noisy, shared machine slows both alike. Two
//! kinds of runs:
//!
//! - whole commands timed from outside, after one discarded warm-up pair ([`time_pairs`]):
//!   `dp digest` against `sha256sum`;
//! - runners that time themselves, after warming up in-process, and print their figures as
//!   one JSON object on their last line ([`figure_rounds`]), which keeps interpreter
//!   start-up and imports out of the figures of Python anchors;
//!
//! and peak resident memory of a whole command ([`peak_rss_pairs`], through GNU time).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Map, Value};

/// A command line: program, arguments and extra environment.
#[derive(Debug, Clone)]
pub(crate) struct CommandLine {
    /// What the report calls it (`dp digest`, `sha256sum`…).
    pub label: String,
    /// Program and arguments (`sh -c SCRIPT` for pipelines).
    pub argv: Vec<String>,
    /// Variables set for the child.
    pub env: Vec<(String, String)>,
}

impl CommandLine {
    /// A program with arguments.
    pub(crate) fn new(label: &str, argv: &[&str]) -> Self {
        Self {
            label: label.to_owned(),
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            env: Vec::new(),
        }
    }

    /// A shell pipeline.
    pub(crate) fn shell(label: &str, script: &str) -> Self {
        Self::new(label, &["sh", "-c", script])
    }

    /// The same command with `key=value` in its environment.
    pub(crate) fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    fn command(&self) -> Result<Command> {
        let (program, args) = self.argv.split_first().context("empty command line")?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        Ok(cmd)
    }

    /// Runs it once and returns its stdout (to check both sides agree before timing, or
    /// to read a runner's figures). Its stderr is shown when it fails.
    pub(crate) fn output(&self) -> Result<String> {
        let out = self
            .command()?
            .output()
            .with_context(|| format!("cannot run {}: {}", self.label, self.argv.join(" ")))?;
        if !out.status.success() {
            bail!(
                "{} failed ({}): {}\n{}",
                self.label,
                out.status,
                self.argv.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Wall-clock seconds of one run, output discarded.
    fn time_once(&self) -> Result<f64> {
        let mut cmd = self.command()?;
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let start = Instant::now();
        let status = cmd
            .status()
            .with_context(|| format!("cannot run {}", self.label))?;
        let elapsed = start.elapsed().as_secs_f64();
        if !status.success() {
            bail!(
                "{} failed during timing ({status}): {}",
                self.label,
                self.argv.join(" ")
            );
        }
        Ok(elapsed)
    }

    /// The figures a runner prints: the last stdout line that is a JSON object.
    pub(crate) fn figures(&self) -> Result<Figures> {
        let stdout = self.output()?;
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .with_context(|| format!("{} printed no JSON figures", self.label))?;
        let value: Value = serde_json::from_str(line)
            .with_context(|| format!("{} printed bad figures: {line}", self.label))?;
        match value {
            Value::Object(map) => Ok(Figures {
                label: self.label.clone(),
                map,
            }),
            _ => bail!("{} printed figures that are not an object", self.label),
        }
    }
}

/// Wall-clock times of `ours` and `anchor`, interleaved: one warm-up pair, then `pairs`
/// pairs. Returns (ours, anchor) seconds, pair by pair.
pub(crate) fn time_pairs(
    ours: &CommandLine,
    anchor: &CommandLine,
    pairs: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    ours.time_once()?;
    anchor.time_once()?;
    let mut a = Vec::with_capacity(pairs);
    let mut b = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        a.push(ours.time_once()?);
        b.push(anchor.time_once()?);
    }
    Ok((a, b))
}

/// What one runner printed.
#[derive(Debug, Clone)]
pub(crate) struct Figures {
    label: String,
    map: Map<String, Value>,
}

impl Figures {
    /// The number under `key`.
    pub(crate) fn get(&self, key: &str) -> Result<f64> {
        self.map
            .get(key)
            .and_then(Value::as_f64)
            .with_context(|| format!("{} printed no number `{key}`", self.label))
    }

    /// The median (`report::median`, the one median of the benchmarks) of the numbers in
    /// the array under `key`: runners print their samples, never a statistic of their own.
    pub(crate) fn median_of(&self, key: &str) -> Result<f64> {
        let samples: Vec<f64> = self
            .map
            .get(key)
            .and_then(Value::as_array)
            .map(|values| values.iter().filter_map(Value::as_f64).collect())
            .with_context(|| format!("{} printed no array of numbers `{key}`", self.label))?;
        ensure!(
            !samples.is_empty(),
            "{} printed an empty `{key}`",
            self.label
        );
        Ok(super::report::median(&samples))
    }

    /// The numbers of the array under `key`, if any (a runner's output values, which
    /// are compared between sides, never timed).
    pub(crate) fn values(&self, key: &str) -> Option<Vec<f64>> {
        self.map
            .get(key)
            .and_then(Value::as_array)
            .map(|values| values.iter().filter_map(Value::as_f64).collect())
    }

    /// The array under `key`, if any (structured outputs, such as one list of generated
    /// token ids per text, compared between sides, never timed).
    pub(crate) fn array(&self, key: &str) -> Option<&[Value]> {
        self.map
            .get(key)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
    }

    /// The string under `key`, if any (versions, for notes).
    pub(crate) fn text(&self, key: &str) -> Option<String> {
        self.map.get(key).and_then(Value::as_str).map(str::to_owned)
    }
}

/// Runs every runner once per round, in order, for `rounds` rounds; returns each runner's
/// figures, round by round (`result[runner][round]`). No warm-up round: each runner warms
/// itself up before it starts timing (an unmeasured load, a first call per input shape).
pub(crate) fn figure_rounds(runners: &[&CommandLine], rounds: usize) -> Result<Vec<Vec<Figures>>> {
    let mut out: Vec<Vec<Figures>> = runners.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (i, runner) in runners.iter().enumerate() {
            out[i].push(runner.figures()?);
        }
    }
    Ok(out)
}

/// `key` from each round's figures.
pub(crate) fn series(rounds: &[Figures], key: &str) -> Result<Vec<f64>> {
    rounds.iter().map(|f| f.get(key)).collect()
}

/// The median of the samples under `key` (an array), from each round's figures.
pub(crate) fn median_series(rounds: &[Figures], key: &str) -> Result<Vec<f64>> {
    rounds.iter().map(|f| f.median_of(key)).collect()
}

/// GNU time, which reports a child's peak resident set (`ru_maxrss`).
const GNU_TIME: &str = "/usr/bin/time";

/// Peak resident memory (bytes) of each command, run in turn for one warm-up round and
/// then `rounds` rounds; `result[command][round]`.
pub(crate) fn peak_rss_pairs(commands: &[&CommandLine], rounds: usize) -> Result<Vec<Vec<f64>>> {
    ensure!(
        Path::new(GNU_TIME).is_file(),
        "{GNU_TIME} (GNU time) is needed to read peak memory: apt-get install time"
    );
    let scratch = tempfile::tempdir()?;
    let report = scratch.path().join("rss");
    let report_s = report.to_str().context("non-UTF-8 temp path")?;
    let mut out: Vec<Vec<f64>> = commands.iter().map(|_| Vec::new()).collect();
    for round in 0..=rounds {
        for (i, command) in commands.iter().enumerate() {
            let mut wrapped = (*command).clone();
            let mut argv = vec![
                GNU_TIME.to_owned(),
                "-f".to_owned(),
                "%M".to_owned(),
                "-o".to_owned(),
                report_s.to_owned(),
            ];
            argv.append(&mut wrapped.argv);
            wrapped.argv = argv;
            wrapped.output()?;
            let kib: f64 = std::fs::read_to_string(&report)?
                .lines()
                .last()
                .and_then(|l| l.trim().parse().ok())
                .with_context(|| {
                    format!("GNU time printed no peak memory for {}", command.label)
                })?;
            if round > 0 {
                out[i].push(kib * 1024.0);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;

    #[test]
    fn time_pairs_times_real_commands_interleaved() {
        let fast = CommandLine::new("true", &["true"]);
        let slow = CommandLine::shell("sleep", "sleep 0.05");
        let (a, b) = time_pairs(&fast, &slow, 3).unwrap();
        assert_eq!((a.len(), b.len()), (3, 3));
        assert!(b.iter().all(|t| *t >= 0.05), "{b:?}");
        assert!(a.iter().sum::<f64>() < b.iter().sum::<f64>());
        let failing = CommandLine::new("false", &["false"]);
        assert!(time_pairs(&failing, &fast, 1).is_err());
    }

    #[test]
    fn runners_figures_are_read_from_their_last_json_line() {
        let runner = CommandLine::shell(
            "runner",
            "echo building; echo '{\"rate\": 2.5, \"v\": \"1.0\"}'",
        );
        let rounds = figure_rounds(&[&runner, &runner], 2).unwrap();
        assert_eq!(rounds[0].len(), 2);
        assert_eq!(rounds.len(), 2);
        assert_eq!(series(&rounds[1], "rate").unwrap(), vec![2.5, 2.5]);
        assert_eq!(rounds[0][0].text("v").as_deref(), Some("1.0"));
        assert!(rounds[0][0].get("missing").is_err());
        let silent = CommandLine::new("true", &["true"]);
        assert!(figure_rounds(&[&silent], 1).is_err());
    }

    #[test]
    fn environment_reaches_the_child() {
        let cmd = CommandLine::shell("env", "printf %s \"$DP_X\"").env("DP_X", "42");
        assert_eq!(cmd.output().unwrap(), "42");
    }

    #[test]
    fn peak_rss_of_a_child_that_allocates() {
        if !Path::new(GNU_TIME).is_file() {
            // Without GNU time the bench fails with the install hint; CI must have it.
            assert!(std::env::var_os("CI").is_none(), "{GNU_TIME} is missing");
            return;
        }
        let small = CommandLine::new("true", &["true"]);
        // Touching every page of 64 MiB makes them resident.
        let big = CommandLine::new(
            "python3",
            &[
                "python3",
                "-c",
                "b = bytearray(64 << 20); b[::4096] = b'x' * len(b[::4096])",
            ],
        );
        let rss = peak_rss_pairs(&[&small, &big], 1).unwrap();
        assert!(rss[1][0] > rss[0][0] + 60.0 * 1024.0 * 1024.0, "{rss:?}");
    }
}
