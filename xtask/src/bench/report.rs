//! The benchmark report: rows of ours-against-anchor figures and their statistics, merged
//! by group into `target/bench/report.json` and rendered as Markdown (spliced into
//! `docs/benchmarks.md` by `markdown.rs`; the machine it ran on is `machine.rs`'s).
//!
//! Convention: every `ratio` says how many times better we are than the anchor, so that
//! above 1 means we win — `anchor / ours` for times and memory, `ours / anchor` for rates.
//! It is the median of the per-pair ratios: each pair ran back to back, so a slow moment
//! of the shared machine slows both sides of the pair alike and cancels out.
//!
//! Running one group replaces that group's rows and keeps the others, so
//! `cargo xtask bench embed` refreshes the embedding rows of a report made by `bench all`.
//! The Markdown is rewritten between two markers only: hand-written sections around them
//! (the causes of misses) survive.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use serde::{Deserialize, Serialize};

use super::machine::Machine;
use crate::fsutil::write_atomic;

/// What a row measures, which fixes how values are printed and which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Unit {
    /// Seconds per operation: lower is better.
    Seconds,
    /// Sentences per second: higher is better.
    SentencesPerSecond,
    /// Requests per second: higher is better.
    RequestsPerSecond,
    /// (query, document) pairs scored per second: higher is better.
    PairsPerSecond,
    /// Generated tokens per second: higher is better.
    TokensPerSecond,
    /// Bytes (peak resident memory, a key/value cache): lower is better.
    Bytes,
}

impl Unit {
    /// Whether a larger value is the better one.
    pub(crate) fn higher_is_better(self) -> bool {
        matches!(
            self,
            Self::SentencesPerSecond
                | Self::RequestsPerSecond
                | Self::PairsPerSecond
                | Self::TokensPerSecond
        )
    }

    /// `value` with a unit that keeps 3–4 significant digits.
    pub(crate) fn format(self, value: f64) -> String {
        match self {
            Self::Seconds => {
                let (scaled, suffix) = if value < 1e-6 {
                    (value * 1e9, "ns")
                } else if value < 1e-3 {
                    (value * 1e6, "µs")
                } else if value < 1.0 {
                    (value * 1e3, "ms")
                } else {
                    (value, "s")
                };
                format!("{} {suffix}", significant(scaled))
            }
            Self::SentencesPerSecond => format!("{}/s", significant(value)),
            Self::RequestsPerSecond => format!("{} req/s", significant(value)),
            Self::PairsPerSecond => format!("{} pairs/s", significant(value)),
            Self::TokensPerSecond => format!("{} tokens/s", significant(value)),
            Self::Bytes => format!("{} MiB", significant(value / f64::from(1_u32 << 20))),
        }
    }
}

/// Three significant digits, at most two decimals (`0.712`, `12.3`, `4512`).
fn significant(value: f64) -> String {
    let abs = value.abs();
    if abs >= 100.0 {
        format!("{value:.0}")
    } else if abs >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// One side of a row: what ran and every timed sample.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Side {
    /// What the report calls it (`dp digest`, `sha256sum`…).
    pub label: String,
    /// Fastest or best sample (the smallest value).
    pub min: f64,
    /// Median sample.
    pub median: f64,
    /// Largest sample.
    pub max: f64,
    /// Every timed sample, in run order (pair `i` of both sides ran back to back).
    pub samples: Vec<f64>,
}

impl Side {
    /// The statistics of `samples` (at least one).
    pub(crate) fn new(label: &str, samples: Vec<f64>) -> Self {
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        Self {
            label: label.to_owned(),
            min: sorted.first().copied().unwrap_or(f64::NAN),
            median: median(&sorted),
            max: sorted.last().copied().unwrap_or(f64::NAN),
            samples,
        }
    }
}

/// The median of `values` (NaN when empty); the mean of the two middle ones for an even
/// count.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => f64::midpoint(sorted[n / 2 - 1], sorted[n / 2]),
    }
}

/// A target from the issues.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Target {
    /// The ratio (how many times better than the anchor) must be at least `value`.
    RatioAtLeast {
        /// The smallest acceptable ratio.
        value: f64,
    },
    /// Our median must be at most `value` (in the row's unit).
    OursAtMost {
        /// The largest acceptable median.
        value: f64,
    },
}

impl Target {
    fn met(self, row: &Row) -> bool {
        match self {
            Self::RatioAtLeast { value } => row.ratio >= value,
            Self::OursAtMost { value } => row.ours.median <= value,
        }
    }

    fn describe(self, unit: Unit) -> String {
        match self {
            Self::RatioAtLeast { value } => format!("≥ {value}×"),
            Self::OursAtMost { value } => format!("≤ {}", unit.format(value)),
        }
    }
}

/// One compared figure: ours against an anchor, on the same input, interleaved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Row {
    /// Stable key (`digest.sha256_file`), for tools reading the JSON.
    pub id: String,
    /// What is compared, for people.
    pub name: String,
    /// The unit of every value of the row.
    pub unit: Unit,
    /// Our side.
    pub ours: Side,
    /// The anchor's side.
    pub anchor: Side,
    /// How many times better we are: the median over pairs of `anchor / ours` (times,
    /// memory) or `ours / anchor` (rates). Above 1: we are better.
    pub ratio: f64,
    /// The targets of the issues (all must hold).
    pub targets: Vec<Target>,
    /// Whether every target holds; `None` when the row has none.
    pub pass: Option<bool>,
    /// A remark printed beside the row (throughput in GB/s, what exactly ran).
    pub note: Option<String>,
}

impl Row {
    /// A row from paired samples: `ours.samples[i]` and `anchor.samples[i]` ran back to
    /// back. Fails when the two sides have different sample counts.
    pub(crate) fn new(
        id: &str,
        name: &str,
        unit: Unit,
        ours: Side,
        anchor: Side,
        targets: Vec<Target>,
    ) -> Result<Self> {
        ensure!(
            ours.samples.len() == anchor.samples.len() && !ours.samples.is_empty(),
            "row {id}: {} samples of ours against {} of the anchor",
            ours.samples.len(),
            anchor.samples.len()
        );
        let ratios: Vec<f64> = ours
            .samples
            .iter()
            .zip(&anchor.samples)
            .map(|(o, a)| {
                if unit.higher_is_better() {
                    o / a
                } else {
                    a / o
                }
            })
            .collect();
        let mut row = Self {
            id: id.to_owned(),
            name: name.to_owned(),
            unit,
            ours,
            anchor,
            ratio: median(&ratios),
            targets,
            pass: None,
            note: None,
        };
        row.pass = (!row.targets.is_empty()).then(|| row.targets.iter().all(|t| t.met(&row)));
        Ok(row)
    }

    /// The same row with a note.
    pub(crate) fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    /// One line for the terminal.
    pub(crate) fn summary(&self) -> String {
        format!(
            "{:<58} {:>14} vs {:>14} ({})  {:>7.2}×  {}",
            self.name,
            self.unit.format(self.ours.median),
            self.unit.format(self.anchor.median),
            self.anchor.label,
            self.ratio,
            self.verdict()
        )
    }

    fn verdict(&self) -> String {
        let targets: Vec<String> = self.targets.iter().map(|t| t.describe(self.unit)).collect();
        match self.pass {
            None => "—".to_owned(),
            Some(pass) => format!(
                "{} {}",
                targets.join(" and "),
                if pass { "✓ pass" } else { "✗ MISS" }
            ),
        }
    }
}

/// The rows of one group and how they were obtained.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GroupReport {
    /// When the group started (UTC, ISO 8601).
    pub date: String,
    /// Wall-clock seconds the group took, set-up and builds included.
    pub wall_s: f64,
    /// Timed pairs per row.
    pub pairs: usize,
    /// Where it ran.
    pub machine: Machine,
    /// Its rows, in report order.
    pub rows: Vec<Row>,
}

/// The whole report: every group's latest run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Report {
    /// How to read `ratio`.
    pub convention: String,
    /// Group name → its latest run.
    pub groups: BTreeMap<String, GroupReport>,
}

/// The convention, as written into the JSON and the Markdown.
const CONVENTION: &str = "ratio = how many times better ours is than the anchor: anchor/ours for \
times and memory, ours/anchor for rates; above 1 means we are faster (or smaller). It is the \
median over pairs of the per-pair ratio; each pair ran back to back (ours, then the anchor). \
The digest, Triton and peak-memory pairs follow one discarded warm-up pair; the catalog, \
manager and embedding runners time themselves after warming up in-process.";

/// Groups in report order.
pub(crate) const GROUP_ORDER: [&str; 10] = [
    "catalog", "digest", "manager", "embed", "text", "clip", "generate", "audio", "whisper",
    "triton",
];

/// `target/bench/report.json`.
pub(crate) fn json_path(root: &Path) -> PathBuf {
    root.join("target/bench/report.json")
}

/// `docs/benchmarks.md`.
pub(crate) fn markdown_path(root: &Path) -> PathBuf {
    root.join("docs/benchmarks.md")
}

/// The plot's file name, beside the Markdown.
pub(crate) const PLOT_FILE: &str = "benchmarks-embed.png";

impl Report {
    /// The report at `path`, or an empty one when there is none yet.
    pub(crate) fn load(path: &Path) -> Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is not a report of this version: delete it and run `cargo xtask bench all`",
                    path.display()
                )
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Replaces `group`'s rows, keeping every other group's.
    pub(crate) fn merge(&mut self, group: &str, run: GroupReport) {
        self.convention = CONVENTION.to_owned();
        self.groups.insert(group.to_owned(), run);
    }

    /// Writes the JSON atomically.
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        write_atomic(
            path,
            (serde_json::to_string_pretty(self)? + "\n").as_bytes(),
        )
    }

    /// Groups present, in report order (unknown ones last, by name).
    fn ordered(&self) -> Vec<(&String, &GroupReport)> {
        let mut groups: Vec<_> = self.groups.iter().collect();
        groups.sort_by_key(|(name, _)| {
            GROUP_ORDER
                .iter()
                .position(|g| g == name)
                .unwrap_or(GROUP_ORDER.len())
        });
        groups
    }

    /// Every row below its target.
    pub(crate) fn misses(&self) -> Vec<&Row> {
        self.ordered()
            .into_iter()
            .flat_map(|(_, g)| &g.rows)
            .filter(|r| r.pass == Some(false))
            .collect()
    }

    /// The generated part of `docs/benchmarks.md`.
    pub(crate) fn markdown(&self, with_plot: bool) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Generated by `cargo xtask bench` from `target/bench/report.json`; do not edit \
             between the markers.\n"
        );
        let _ = writeln!(out, "**Convention.** {}\n", self.convention);
        let mut machines: Vec<&Machine> = Vec::new();
        for (_, group) in self.ordered() {
            if !machines.contains(&&group.machine) {
                machines.push(&group.machine);
            }
        }
        for machine in machines {
            let _ = writeln!(out, "**Machine.** {}\n", machine.describe());
        }
        let total: f64 = self.groups.values().map(|g| g.wall_s).sum();
        let _ = writeln!(
            out,
            "Wall time of the groups below, set-up and builds included: {total:.0} s.\n"
        );
        out.push_str(
            "| Group | Row | Ours: min / **median** / max | Anchor: min / **median** / max \
             | Ratio | Target | Result |\n|---|---|---|---|---:|---|---|\n",
        );
        for (name, group) in self.ordered() {
            for row in &group.rows {
                let side = |s: &Side| {
                    format!(
                        "{}: {} / **{}** / {}",
                        s.label,
                        row.unit.format(s.min),
                        row.unit.format(s.median),
                        row.unit.format(s.max)
                    )
                };
                let targets: Vec<String> =
                    row.targets.iter().map(|t| t.describe(row.unit)).collect();
                let note = row
                    .note
                    .as_ref()
                    .map_or_else(String::new, |n| format!("<br><sub>{n}</sub>"));
                let _ = writeln!(
                    out,
                    "| {name} | {}{note} | {} | {} | {:.2}× | {} | {} |",
                    row.name,
                    side(&row.ours),
                    side(&row.anchor),
                    row.ratio,
                    if targets.is_empty() {
                        "—".to_owned()
                    } else {
                        targets.join(", ")
                    },
                    match row.pass {
                        None => "—",
                        Some(true) => "✓ pass",
                        Some(false) => "✗ **miss**",
                    }
                );
            }
        }
        out.push('\n');
        for (name, group) in self.ordered() {
            let _ = writeln!(
                out,
                "- `{name}`: run {}, {:.0} s, {} pairs per row.",
                group.date, group.wall_s, group.pairs
            );
        }
        if with_plot {
            let _ = writeln!(
                out,
                "\n![Embedding throughput per provider and anchor (sentences/s, median with \
                 min–max bars)]({PLOT_FILE})"
            );
        }
        let misses = self.misses();
        out.push_str("\n### Rows below target in this report\n\n");
        if misses.is_empty() {
            out.push_str("None.\n");
        }
        for row in misses {
            let _ = writeln!(
                out,
                "- `{}` — {}: {:.2}× (ours {} vs {} {}); target {}. Cause: see *Misses and \
                 their causes* below.",
                row.id,
                row.name,
                row.ratio,
                row.unit.format(row.ours.median),
                row.anchor.label,
                row.unit.format(row.anchor.median),
                row.targets
                    .iter()
                    .map(|t| t.describe(row.unit))
                    .collect::<Vec<_>>()
                    .join(" and ")
            );
        }
        out
    }
}

/// Now, as `YYYY-MM-DD HH:MM UTC`.
pub(crate) fn utc_now() -> String {
    utc_minute(std::time::SystemTime::now())
}

/// `time` as `YYYY-MM-DD HH:MM UTC`: humantime's RFC 3339 (`YYYY-MM-DDTHH:MM:SSZ`) cut to
/// the minute, which is all a benchmark report needs.
fn utc_minute(time: std::time::SystemTime) -> String {
    let rfc3339 = humantime::format_rfc3339_seconds(time).to_string();
    match (rfc3339.get(..10), rfc3339.get(11..16)) {
        (Some(date), Some(minute)) => format!("{date} {minute} UTC"),
        // Not reached for years 0000-9999, the only ones humantime formats; if it were,
        // the full timestamp is still a correct date.
        _ => rfc3339,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;

    fn side(label: &str, samples: &[f64]) -> Side {
        Side::new(label, samples.to_vec())
    }

    #[test]
    fn ratio_is_the_median_of_pair_ratios_with_above_one_meaning_we_win() {
        // Times: anchor / ours.
        let row = Row::new(
            "t.time",
            "time",
            Unit::Seconds,
            side("ours", &[1.0, 2.0, 1.0]),
            side("anchor", &[4.0, 4.0, 3.0]),
            vec![Target::RatioAtLeast { value: 2.5 }],
        )
        .unwrap();
        assert_eq!(row.ratio, 3.0);
        assert_eq!(row.pass, Some(true));
        // Rates: ours / anchor.
        let row = Row::new(
            "t.rate",
            "rate",
            Unit::SentencesPerSecond,
            side("ours", &[100.0, 90.0]),
            side("anchor", &[200.0, 180.0]),
            vec![Target::RatioAtLeast { value: 1.0 }],
        )
        .unwrap();
        assert_eq!(row.ratio, 0.5);
        assert_eq!(row.pass, Some(false));
        // An absolute target on our median, and no target at all.
        let row = Row::new(
            "t.abs",
            "abs",
            Unit::Seconds,
            side("ours", &[40e-9, 60e-9, 45e-9]),
            side("anchor", &[400e-9, 400e-9, 400e-9]),
            vec![Target::OursAtMost { value: 50e-9 }],
        )
        .unwrap();
        assert_eq!(row.ours.median, 45e-9);
        assert_eq!(row.pass, Some(true));
        let row = Row::new(
            "t.none",
            "none",
            Unit::Bytes,
            side("a", &[1.0]),
            side("b", &[2.0]),
            vec![],
        )
        .unwrap();
        assert_eq!(row.pass, None);
        assert!(
            Row::new(
                "t.bad",
                "bad",
                Unit::Seconds,
                side("a", &[1.0]),
                side("b", &[1.0, 2.0]),
                vec![]
            )
            .is_err()
        );
    }

    #[test]
    fn side_statistics() {
        let s = side("x", &[3.0, 1.0, 2.0, 4.0]);
        assert_eq!((s.min, s.median, s.max), (1.0, 2.5, 4.0));
        assert_eq!(s.samples, vec![3.0, 1.0, 2.0, 4.0]);
    }

    #[test]
    fn units_format_with_a_readable_scale() {
        assert_eq!(Unit::Seconds.format(23.4e-9), "23.4 ns");
        assert_eq!(Unit::Seconds.format(1.5e-6), "1.50 µs");
        assert_eq!(Unit::Seconds.format(0.1234), "123 ms");
        assert_eq!(Unit::Seconds.format(2.0), "2.00 s");
        assert_eq!(Unit::SentencesPerSecond.format(812.4), "812/s");
        assert_eq!(Unit::PairsPerSecond.format(156.04), "156 pairs/s");
        assert_eq!(Unit::TokensPerSecond.format(98.76), "98.8 tokens/s");
        assert_eq!(Unit::Bytes.format(150.0 * 1024.0 * 1024.0), "150 MiB");
    }

    fn group(rows: Vec<Row>) -> GroupReport {
        GroupReport {
            date: "2026-01-01 00:00 UTC".into(),
            wall_s: 10.0,
            pairs: 5,
            machine: Machine {
                cpu: "cpu".into(),
                cores: 2,
                ram_gib: 4.0,
                os: "os".into(),
                rustc: "rustc".into(),
            },
            rows,
        }
    }

    #[test]
    fn merging_a_group_keeps_the_others_and_the_markdown_lists_misses() {
        let miss = Row::new(
            "digest.cached",
            "cached re-verify",
            Unit::Seconds,
            side("dp", &[1.0]),
            side("full", &[30.0]),
            vec![Target::RatioAtLeast { value: 50.0 }],
        )
        .unwrap();
        let ok = Row::new(
            "embed.x",
            "embed x",
            Unit::SentencesPerSecond,
            side("dp", &[2.0]),
            side("st", &[1.0]),
            vec![],
        )
        .unwrap();
        let mut report = Report::default();
        report.merge("digest", group(vec![miss]));
        report.merge("embed", group(vec![ok.clone()]));
        report.merge("embed", group(vec![ok]));
        assert_eq!(report.groups.len(), 2);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        report.save(&path).unwrap();
        let back = Report::load(&path).unwrap();
        assert_eq!(back.groups["embed"].rows.len(), 1);
        assert_eq!(back.misses().len(), 1);
        let md = back.markdown(true);
        assert!(md.contains("| digest | cached re-verify |"), "{md}");
        assert!(md.contains("`digest.cached`"), "{md}");
        assert!(md.contains(PLOT_FILE));
        assert!(md.find("| digest |") < md.find("| embed |"));
        assert!(
            Report::load(&dir.path().join("none.json"))
                .unwrap()
                .groups
                .is_empty()
        );
    }

    #[test]
    fn dates_are_utc_to_the_minute() {
        let at = |days: u64, secs: u64| {
            utc_minute(std::time::UNIX_EPOCH + std::time::Duration::from_secs(days * 86_400 + secs))
        };
        assert_eq!(at(0, 0), "1970-01-01 00:00 UTC");
        assert_eq!(at(19_723, 3 * 3600 + 5 * 60 + 59), "2024-01-01 03:05 UTC");
        assert_eq!(at(20_513, 86_399), "2026-03-01 23:59 UTC");
    }
}
