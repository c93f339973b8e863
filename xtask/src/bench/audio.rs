//! `cargo xtask bench audio`: Whisper's log-mel features (issue 17's first bar). Ten
//! minutes of 16 kHz audio, cut into 30-second chunks, through the `audio_log_mel`
//! preset's extractor (`LogMelExtractor::chunked_features`, `tests/benches/log_mel.rs`)
//! against transformers' `WhisperFeatureExtractor` on the same chunks
//! (`xtask/src/bench/log_mel_whisper.py`), interleaved round by round on 2 threads. The
//! issue's anchor is the extractor's NumPy implementation (what it runs without PyTorch;
//! bar ≥ 5×); its PyTorch implementation (what it runs when PyTorch is installed) is a row
//! without target beside it.
//!
//! Both sides start from float samples in memory (the anchor reads the WAV with `wave`,
//! ours decodes it once before timing). Before any figure is trusted, both sides'
//! features of two probe rows (chunk 0, mel 10 and the last chunk, mel 40, 32 frames each)
//! are compared: within 1e-4, the parity bar of `tests/audio_e2e.rs`.
//!
//! Set-up, on first use: the 10-minute WAV `.dp-assets/bench-audio/ten_minutes_16k.wav`
//! (19 MB), written by the anchor script (`--make-audio`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};

use super::Executables;
use super::embed::ensure_venv;
use super::pairs::{CommandLine, Figures, figure_rounds, median_series};
use super::report::{Row, Side, Target, Unit};
use crate::process;

/// The anchor script, relative to the workspace root.
const ANCHOR: &str = "xtask/src/bench/log_mel_whisper.py";

/// The bench's audio, relative to the workspace root.
const AUDIO: &str = ".dp-assets/bench-audio/ten_minutes_16k.wav";

/// Seconds of audio.
const SECONDS: u32 = 600;

/// CPU threads every side uses (the issues' setting: 2 cores).
const THREADS: usize = 2;

/// Seconds (and calls, at least) each runner times, per round.
const MIN_SECONDS: &str = "3";
const MIN_CALLS: &str = "3";

/// The bar against the NumPy extractor.
const VS_NUMPY: f64 = 5.0;

/// How far the probe features of two sides may differ.
const PROBE_TOLERANCE: f64 = 1e-4;

fn path_arg(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// The 10-minute WAV, written once.
fn ensure_audio(root: &Path, python: &Path) -> Result<PathBuf> {
    let audio = root.join(AUDIO);
    if audio.is_file() {
        return Ok(audio);
    }
    let dir = audio.parent().context("the audio path has a parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let partial = audio.with_extension("partial.wav");
    process::run(
        std::process::Command::new(python)
            .arg(root.join(ANCHOR))
            .arg("--make-audio")
            .arg(&partial)
            .arg("--seconds")
            .arg(SECONDS.to_string()),
        "the bench audio could not be written (see above)",
    )?;
    std::fs::rename(&partial, &audio)
        .with_context(|| format!("cannot move the bench audio to {}", audio.display()))?;
    Ok(audio)
}

/// Fails unless both sides' probe features agree.
fn check_probes(ours: &Figures, anchor: &Figures, what: &str) -> Result<()> {
    let a = ours.values("probe").context("dp printed no probe")?;
    let b = anchor
        .values("probe")
        .context("the anchor printed no probe")?;
    ensure!(
        a.len() == b.len() && !a.is_empty(),
        "{what}: probes of {} and {} values",
        a.len(),
        b.len()
    );
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    if worst > PROBE_TOLERANCE {
        bail!("{what}: the features differ by {worst:e} (> {PROBE_TOLERANCE:e}); not timing");
    }
    Ok(())
}

/// Runs the audio rows.
pub(crate) fn run(root: &Path, exes: &Executables, pairs: usize) -> Result<Vec<Row>> {
    let python = ensure_venv(root)?;
    let audio = path_arg(&ensure_audio(root, &python)?)?;
    let python = path_arg(&python)?;
    let anchor = path_arg(&root.join(ANCHOR))?;
    let exe = path_arg(&exes.log_mel)?;
    let threads = THREADS.to_string();
    let timing = [
        "--audio",
        audio.as_str(),
        "--n-mels",
        "80",
        "--min-seconds",
        MIN_SECONDS,
        "--min-calls",
        MIN_CALLS,
    ];
    let ours = CommandLine::new("dp log-mel", &[&[exe.as_str()][..], &timing[..]].concat())
        .env("RAYON_NUM_THREADS", &threads);
    let anchor_side = |path: &str| {
        let mut argv = vec![python.as_str(), anchor.as_str(), "--path", path];
        argv.extend(timing);
        argv.extend(["--threads", threads.as_str()]);
        CommandLine::new(&format!("WhisperFeatureExtractor ({path})"), &argv)
            .env("OMP_WAIT_POLICY", "PASSIVE")
            .env("OMP_NUM_THREADS", &threads)
            .env("OPENBLAS_NUM_THREADS", &threads)
    };
    let numpy = anchor_side("numpy");
    let torch = anchor_side("torch");
    println!(
        "audio: {THREADS} threads, {pairs} rounds of dp, the NumPy and the PyTorch extractor, \
         {SECONDS} s of 16 kHz audio"
    );
    let rounds = figure_rounds(&[&ours, &numpy, &torch], pairs)?;
    let [ours_r, numpy_r, torch_r] =
        <[Vec<Figures>; 3]>::try_from(rounds).map_err(|_| anyhow::anyhow!("three runners"))?;
    check_probes(&ours_r[0], &numpy_r[0], "dp vs the NumPy extractor")?;
    check_probes(&ours_r[0], &torch_r[0], "dp vs the PyTorch extractor")?;
    let version = numpy_r[0].text("transformers").unwrap_or_default();
    let numpy_version = numpy_r[0].text("numpy").unwrap_or_default();
    let what = format!(
        "Whisper log-mel features (80 bins) of {} minutes of 16 kHz audio, 30-second chunks",
        SECONDS / 60
    );
    let note = format!(
        "{} chunks; LogMelExtractor::chunked_features vs WhisperFeatureExtractor(chunks, \
         sampling_rate=16000, return_tensors=\"np\"), samples in memory on both sides; \
         transformers {version}, numpy {numpy_version}; {THREADS} threads; probe features \
         within {PROBE_TOLERANCE:e}",
        ours_r[0].get("chunks").unwrap_or_default()
    );
    let rows = vec![
        Row::new(
            "audio.log_mel.ten_minutes.vs_numpy",
            &format!("{what}: dp vs WhisperFeatureExtractor (NumPy)"),
            Unit::Seconds,
            Side::new("dp", median_series(&ours_r, "seconds")?),
            Side::new(
                "WhisperFeatureExtractor (NumPy)",
                median_series(&numpy_r, "seconds")?,
            ),
            vec![Target::RatioAtLeast { value: VS_NUMPY }],
        )?
        .with_note(format!("{note}; the issue's anchor")),
        Row::new(
            "audio.log_mel.ten_minutes.vs_torch",
            &format!("{what}: dp vs WhisperFeatureExtractor (PyTorch)"),
            Unit::Seconds,
            Side::new("dp", median_series(&ours_r, "seconds")?),
            Side::new(
                "WhisperFeatureExtractor (PyTorch)",
                median_series(&torch_r, "seconds")?,
            ),
            Vec::new(),
        )?
        .with_note(format!(
            "{note}; what the extractor runs when PyTorch is installed (torch.stft, float32), \
             OMP_WAIT_POLICY=PASSIVE"
        )),
    ];
    for row in &rows {
        println!("{}", row.summary());
    }
    Ok(rows)
}
