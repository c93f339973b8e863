//! `cargo xtask bench`: runs the benchmarks by group, each figure side by side with the
//! tool a user would otherwise run (the anchor), interleaved in one run ([`pairs`]), and
//! writes `target/bench/report.json` and `docs/benchmarks.md` ([`report`]).
//!
//! Running one group replaces its rows in the report and keeps the other groups'. The
//! anchors are set up on first use: the assets of `cargo xtask setup` a group needs, the
//! bench venv (sentence-transformers, matplotlib; hash-pinned) and `b3sum` (a pinned
//! crates.io release). The criterion benches stay available with `--criterion`.

mod audio;
mod catalog;
mod clip;
mod digest;
mod embed;
mod generate;
mod machine;
mod manager;
mod markdown;
mod pairs;
mod report;
mod serving;
mod text;
mod triton;
mod whisper;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use clap::{Args, ValueEnum};

use crate::process::{self, cargo_command};
use machine::Machine;
use report::{GroupReport, Report};

/// Options of `bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Which benchmarks to run.
    #[arg(value_enum, default_value_t = Group::All)]
    group: Group,
    /// Timed pairs per row.
    #[arg(long, default_value_t = 5)]
    pairs: usize,
    /// Also run the criterion benches of the selected groups (`cargo bench`), after the
    /// report.
    #[arg(long)]
    criterion: bool,
    /// Arguments passed to criterion, after `--` (e.g. `-- --save-baseline main`).
    #[arg(last = true)]
    criterion_args: Vec<String>,
}

/// A benchmark group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Group {
    /// Catalog loading and validation (dp-spec) against PyYAML + jsonschema.
    Catalog,
    /// File and directory digests against sha256sum, openssl and b3sum.
    Digest,
    /// The manager's hot path and embedding cache, with the Python manager as anchor.
    Manager,
    /// Sentence embedding (cold load, throughput, peak memory) with the candle and ONNX
    /// providers against sentence-transformers and Python onnxruntime; runs `text` too.
    Embed,
    /// The text models of issue 15 (an XLM-R E5 embedder with its prompt, a cross-encoder
    /// reranker) with the candle and ONNX providers against sentence-transformers.
    Text,
    /// CLIP: the `image_clip` preset's preprocessing against transformers'
    /// `CLIPImageProcessorPil`, and the ViT-B/32 image tower with the candle and ONNX
    /// providers against transformers on PyTorch CPU and Python onnxruntime.
    Clip,
    /// Text generation (issue 16): a T5 of t5-small's shapes, greedy, 64 new tokens at
    /// batch 1 and 8, with the candle provider against transformers on PyTorch CPU, and the
    /// key/value cache per running request.
    Generate,
    /// Whisper's log-mel features of ten minutes of 16 kHz audio (the `audio_log_mel`
    /// preset's extractor) against transformers' `WhisperFeatureExtractor` (NumPy, and
    /// PyTorch without target).
    Audio,
    /// Speech recognition (issue 17): a Whisper of whisper-base's shapes transcribes 30 s
    /// of speech, greedy, 64 new tokens, with the candle provider against transformers on
    /// PyTorch CPU, and the key/value cache of the request.
    Whisper,
    /// The Triton provider against Python's tritonclient, and binary vs JSON tensors, on
    /// one real tritonserver.
    Triton,
    /// Every group.
    All,
}

impl Group {
    /// The groups `self` stands for, in report order.
    fn expand(self) -> Vec<Self> {
        match self {
            Self::All => vec![
                Self::Catalog,
                Self::Digest,
                Self::Manager,
                Self::Embed,
                Self::Text,
                Self::Clip,
                Self::Generate,
                Self::Audio,
                Self::Whisper,
                Self::Triton,
            ],
            // The issue's `cargo xtask bench embed` measures the text models too.
            Self::Embed => vec![Self::Embed, Self::Text],
            group => vec![group],
        }
    }

    /// Its name in the report.
    fn name(self) -> &'static str {
        match self {
            Self::Catalog => "catalog",
            Self::Digest => "digest",
            Self::Manager => "manager",
            Self::Embed => "embed",
            Self::Text => "text",
            Self::Clip => "clip",
            Self::Generate => "generate",
            Self::Audio => "audio",
            Self::Whisper => "whisper",
            Self::Triton => "triton",
            Self::All => "all",
        }
    }

    /// The `cargo xtask setup` assets its anchors and inputs need.
    fn assets(self) -> &'static [&'static str] {
        match self {
            Self::Catalog | Self::Manager => &["python-test"],
            Self::Digest | Self::All => &[],
            Self::Embed => &[
                "minilm",
                "python-onnx",
                "onnxruntime",
                "minilm-onnx",
                "minilm-onnx-int8",
            ],
            Self::Text => &["minilm", "python-onnx", "onnxruntime"],
            Self::Clip => &["python-onnx", "onnxruntime", "tiny-clip", "clip-photos"],
            Self::Generate => &["python-onnx"],
            Self::Audio => &[],
            Self::Whisper => &["python-onnx", "audio"],
            Self::Triton => &["triton"],
        }
    }
}

/// One criterion bench target (run with `--criterion`).
struct Bench {
    /// The group it belongs to.
    group: Group,
    /// The package that defines it.
    package: &'static str,
    /// The `[[bench]]` name.
    target: &'static str,
}

/// Every criterion bench target, in the order `all` runs them.
const BENCHES: &[Bench] = &[
    Bench {
        group: Group::Catalog,
        package: "dp-spec",
        target: "catalog",
    },
    Bench {
        group: Group::Digest,
        package: "dp-digest",
        target: "digest",
    },
    Bench {
        group: Group::Manager,
        package: "dp-manager",
        target: "manager",
    },
];

/// The criterion bench targets `group` selects.
fn selected(group: Group) -> impl Iterator<Item = &'static Bench> {
    BENCHES
        .iter()
        .filter(move |bench| group == Group::All || bench.group == group)
}

/// `cargo xtask bench`: each selected group's rows, merged into the report after each
/// group (so a failure keeps what was measured before it), then criterion if asked.
pub(crate) fn run(root: &Path, args: &BenchArgs) -> Result<()> {
    ensure!(args.pairs >= 1, "--pairs must be at least 1");
    let started = Instant::now();
    let groups = args.group.expand();
    let assets: Vec<&str> = groups.iter().flat_map(|g| g.assets()).copied().collect();
    crate::setup::ensure_assets(root, &assets)?;
    let exes = Executables::build(root)?;
    for group in groups {
        let group_started = Instant::now();
        let date = report::utc_now();
        println!("\n== bench {} ({date})", group.name());
        let rows = match group {
            Group::Catalog => catalog::run(root, &exes, args.pairs),
            Group::Digest => digest::run(root, &exes, args.pairs),
            Group::Manager => manager::run(root, &exes, args.pairs),
            Group::Embed => embed::run(root, &exes, args.pairs),
            Group::Text => text::run(root, &exes, args.pairs),
            Group::Clip => clip::run(root, &exes, args.pairs),
            Group::Generate => generate::run(root, &exes, args.pairs),
            Group::Audio => audio::run(root, &exes, args.pairs),
            Group::Whisper => whisper::run(root, &exes, args.pairs),
            Group::Triton => triton::run(root, &exes, args.pairs),
            Group::All => unreachable!("expanded above"),
        }
        .with_context(|| format!("bench {} failed", group.name()))?;
        let run = GroupReport {
            date,
            wall_s: group_started.elapsed().as_secs_f64(),
            pairs: args.pairs,
            machine: Machine::current(),
            rows,
        };
        let json = report::json_path(root);
        let mut merged = Report::load(&json)?;
        merged.merge(group.name(), run);
        merged.save(&json)?;
        if group == Group::Embed {
            plot(root)?;
        }
        markdown::write_markdown(root, &merged)?;
    }
    let merged = Report::load(&report::json_path(root))?;
    println!(
        "\nwrote {} and {}; {} row(s) below target; total wall time {:.0} s",
        report::json_path(root).display(),
        report::markdown_path(root).display(),
        merged.misses().len(),
        started.elapsed().as_secs_f64()
    );
    for row in merged.misses() {
        println!("  below target: {}", row.summary());
    }
    if args.criterion {
        run_criterion(root, args)?;
    }
    Ok(())
}

/// Draws `docs/benchmarks-embed.png` from the report with matplotlib (bench venv).
fn plot(root: &Path) -> Result<()> {
    let python = embed::ensure_venv(root)?;
    let output = report::markdown_path(root).with_file_name(report::PLOT_FILE);
    let partial = output.with_extension("partial.png");
    process::run(
        std::process::Command::new(python)
            .arg(root.join("xtask/src/bench/plot_embed.py"))
            .arg(report::json_path(root))
            .arg(&partial),
        "the plot script failed (see above)",
    )?;
    std::fs::rename(&partial, &output)
        .with_context(|| format!("cannot move the plot to {}", output.display()))
}

/// Every program of ours the groups run, built by one cargo command with the bench
/// profile (optimized, line tables for profilers). One command means one feature
/// resolution, so no group rebuilds the dependencies of another, whichever groups run.
pub(crate) struct Executables {
    /// The `dp` command line.
    pub dp: PathBuf,
    /// `crates/dp-spec/benches/catalog.rs`.
    pub catalog: PathBuf,
    /// `crates/dp-manager/benches/manager.rs`.
    pub manager: PathBuf,
    /// `tests/benches/embed_candle.rs`.
    pub embed_candle: PathBuf,
    /// `tests/benches/embed_onnx.rs`.
    pub embed_onnx: PathBuf,
    /// `tests/benches/serving.rs`.
    pub serving: PathBuf,
    /// `tests/benches/text_candle.rs`.
    pub text_candle: PathBuf,
    /// `tests/benches/text_onnx.rs`.
    pub text_onnx: PathBuf,
    /// `tests/benches/clip_candle.rs`.
    pub clip_candle: PathBuf,
    /// `tests/benches/clip_onnx.rs`.
    pub clip_onnx: PathBuf,
    /// `tests/benches/generate_candle.rs`.
    pub generate_candle: PathBuf,
    /// `tests/benches/whisper_candle.rs`.
    pub whisper_candle: PathBuf,
    /// `tests/benches/log_mel.rs`.
    pub log_mel: PathBuf,
    /// `crates/dp-provider-triton/examples/triton_load.rs`.
    pub triton_load: PathBuf,
}

/// The targets of [`Executables`]: (package, target kind, target name).
const TARGETS: [(&str, &str, &str); 14] = [
    ("dp-cli", "bin", "dp"),
    ("dp-spec", "bench", "catalog"),
    ("dp-manager", "bench", "manager"),
    ("dp-tests", "bench", "embed_candle"),
    ("dp-tests", "bench", "embed_onnx"),
    ("dp-tests", "bench", "serving"),
    ("dp-tests", "bench", "text_candle"),
    ("dp-tests", "bench", "text_onnx"),
    ("dp-tests", "bench", "clip_candle"),
    ("dp-tests", "bench", "clip_onnx"),
    ("dp-tests", "bench", "generate_candle"),
    ("dp-tests", "bench", "whisper_candle"),
    ("dp-tests", "bench", "log_mel"),
    ("dp-provider-triton", "example", "triton_load"),
];

impl Executables {
    /// Builds them all (`cargo build --profile bench`) and returns their paths.
    fn build(root: &Path) -> Result<Self> {
        let mut args: Vec<String> = [
            "build",
            "--profile",
            "bench",
            "--message-format=json-render-diagnostics",
        ]
        .map(str::to_owned)
        .to_vec();
        for (package, kind, name) in TARGETS {
            args.extend([
                "-p".to_owned(),
                package.to_owned(),
                format!("--{kind}"),
                name.to_owned(),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = cargo_command(root, &args);
        let line = process::display(&cmd);
        println!("building: {line}");
        let out = cmd
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("cannot run `{line}`"))?;
        if !out.status.success() {
            bail!(
                "`{line}` failed ({}); fix the build (see above)",
                out.status
            );
        }
        let paths = executables_from_messages(&String::from_utf8_lossy(&out.stdout), &TARGETS)?;
        let [
            dp,
            catalog,
            manager,
            embed_candle,
            embed_onnx,
            serving,
            text_candle,
            text_onnx,
            clip_candle,
            clip_onnx,
            generate_candle,
            whisper_candle,
            log_mel,
            triton_load,
        ] = <[PathBuf; 14]>::try_from(paths)
            .map_err(|_| anyhow::anyhow!("fourteen executables"))?;
        Ok(Self {
            dp,
            catalog,
            manager,
            embed_candle,
            embed_onnx,
            serving,
            text_candle,
            text_onnx,
            clip_candle,
            clip_onnx,
            generate_candle,
            whisper_candle,
            log_mel,
            triton_load,
        })
    }
}

/// The executables of `targets` (package, kind, name) among cargo's JSON messages, in the
/// order of `targets`.
fn executables_from_messages(
    messages: &str,
    targets: &[(&str, &str, &str)],
) -> Result<Vec<PathBuf>> {
    let artifacts: Vec<serde_json::Value> = messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["executable"].is_string())
        .collect();
    targets
        .iter()
        .map(|(package, kind, name)| {
            artifacts
                .iter()
                .find(|m| {
                    m["target"]["name"] == *name
                        && m["target"]["kind"]
                            .as_array()
                            .is_some_and(|k| k.iter().any(|v| v == kind))
                })
                .and_then(|m| m["executable"].as_str())
                .map(PathBuf::from)
                .with_context(|| format!("cargo built no {kind} `{name}` of {package}"))
        })
        .collect()
}

fn run_criterion(root: &Path, args: &BenchArgs) -> Result<()> {
    for bench in selected(args.group) {
        let mut cmd = cargo_command(
            root,
            &["bench", "-p", bench.package, "--bench", bench.target],
        );
        if !args.criterion_args.is_empty() {
            cmd.arg("--").args(&args.criterion_args);
        }
        process::run(
            &mut cmd,
            &format!(
                "fix the `{}` bench of {} (see the output above)",
                bench.target, bench.package
            ),
        )?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;

    #[test]
    fn all_expands_to_every_group_in_report_order() {
        let names: Vec<&str> = Group::All.expand().iter().map(|g| g.name()).collect();
        assert_eq!(names, report::GROUP_ORDER);
        assert_eq!(Group::Embed.expand(), vec![Group::Embed, Group::Text]);
        assert_eq!(Group::Text.expand(), vec![Group::Text]);
        assert_eq!(Group::Generate.expand(), vec![Group::Generate]);
        assert_eq!(Group::Whisper.expand(), vec![Group::Whisper]);
        assert!(!Group::Embed.expand().contains(&Group::Generate));
        assert_eq!(selected(Group::All).count(), BENCHES.len());
        assert_eq!(selected(Group::Triton).count(), 0);
    }

    #[test]
    fn executables_are_found_in_cargo_messages() {
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"dp_spec","kind":["lib"]},"executable":null}
not json
{"reason":"compiler-artifact","target":{"name":"catalog","kind":["bench"]},"executable":"/t/catalog-1"}
{"reason":"compiler-artifact","target":{"name":"dp","kind":["bin"]},"executable":"/t/dp"}
{"reason":"build-finished","success":true}"#;
        let exes = executables_from_messages(
            messages,
            &[("dp-cli", "bin", "dp"), ("dp-spec", "bench", "catalog")],
        )
        .unwrap();
        assert_eq!(
            exes,
            vec![PathBuf::from("/t/dp"), PathBuf::from("/t/catalog-1")]
        );
        assert!(executables_from_messages(messages, &[("dp-spec", "bin", "catalog")]).is_err());
    }

    #[test]
    fn every_named_asset_exists_in_setup() {
        for group in Group::All.expand() {
            for asset in group.assets() {
                assert!(crate::setup::asset_names().contains(asset), "{asset}");
            }
        }
    }
}
