//! `cargo xtask bench whisper`: speech recognition (issue 17). A Whisper model of
//! openai/whisper-base's shapes (d_model 512, 6 + 6 layers, 8 heads, FFN 2048, 80 mel bins,
//! vocab 51865; random weights) transcribes 30 seconds of real speech
//! (`.dp-assets/audio/speech_16k_s16.wav`) by greedy search, exactly 64 new tokens, through
//! the manager, the `speech_recognition` preset and the candle provider
//! (`ModelManager::transcribe`), against transformers' `WhisperFeatureExtractor` (its NumPy
//! implementation) + `WhisperForConditionalGeneration.generate` + `decode` on PyTorch CPU,
//! on the same folder, the same file and the same thread count, interleaved round by round.
//! A call is end to end on both sides: read the WAV, log-mel features, encoder, decoder,
//! text. The figure is seconds per 30-second transcription; the issue's bar is candle ≥ 1.0×
//! transformers (ratio = transformers' seconds / ours).
//!
//! Beside it, a row without target gives the key/value cache of the request: the manager's
//! `kv_cache_peak_bytes` against the bytes of the tensors of transformers'
//! `past_key_values` at the end of its `generate` (every layer's self-attention keys and
//! values of the decoded positions, and the cross-attention ones of the 1500 encoder
//! positions).
//!
//! Both sides get the language (`en`, so no detection step), the task `transcribe`, no
//! timestamps and `min_new_tokens = max_new_tokens = 64`, so the end of text is never
//! chosen before the 64th token (transformers' Whisper `generate` honours `min_new_tokens`:
//! its output has the 4 prompt tokens and exactly 64 new ones). Before any figure is
//! trusted, the generated token ids of each side's warm-up call are compared: they must be
//! identical (the provider's Whisper is token-for-token equal to transformers on the test
//! models), else the run fails and prints both.
//!
//! Set-up, on first use (not in `cargo xtask setup`: CI never pays for it): the model
//! folder `.dp-assets/models/whisper-base-random` by `xtask/scripts/build_tiny_whisper.py
//! --model whisper-base-random` (about 290 MB, seconds to write) and its spec in the
//! bench-only catalog `.dp-assets/bench-catalog/whisper`; a stamp rebuilds them when the
//! script, the ONNX venv's pins (the script runs there) or the spec's template change.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use super::Executables;
use super::embed::ensure_venv;
use super::pairs::{CommandLine, Figures, figure_rounds, series};
use super::report::{Row, Side, Target, Unit};
use crate::fsutil::{sha256_file, sha256_hex, write_atomic};
use crate::process;

/// The models root and the bench-only catalog, relative to the workspace root.
const MODELS_ROOT: &str = ".dp-assets/models";
const CATALOG_DIR: &str = ".dp-assets/bench-catalog/whisper";

/// The model folder (its name under the models root, and the model name).
const MODEL: &str = "whisper-base-random";

/// The audio both sides transcribe (30 s of real speech, 16 kHz mono s16; `cargo xtask
/// setup`, asset `audio`).
const AUDIO: &str = ".dp-assets/audio/speech_16k_s16.wav";

/// The scripts and venv of the set-up and the anchor, relative to the workspace root.
const WHISPER_SCRIPT: &str = "xtask/scripts/build_tiny_whisper.py";
const ONNX_VENV: &str = ".dp-assets/venv-onnx";
const ONNX_REQUIREMENTS: &str = "xtask/requirements/python-onnx.txt";
const ANCHOR: &str = "xtask/src/bench/whisper_transformers.py";

/// CPU threads every side uses (the issues' setting: 2 cores).
const THREADS: usize = 2;

/// The spoken language, given to both sides (no detection).
const LANGUAGE: &str = "en";

/// New tokens per 30-second chunk, on both sides (min = max, so exactly this many).
const NEW_TOKENS: usize = 64;

/// Seconds (and calls, at least) each runner times, per round.
const MIN_SECONDS: &str = "2";
const MIN_CALLS: &str = "3";

/// The issue's target: candle against transformers, seconds per transcription.
const VS_TRANSFORMERS: f64 = 1.0;

/// The spec of the bench catalog: `{name}`, `{artifacts}` (YAML list items) and `{digest}`
/// (of the weights) are filled in.
const SPEC_TEMPLATE: &str = "model_name: {name}
model_version: \"1.0.0\"
display_name: \"Whisper, whisper-base shapes, random weights ({name}, cargo xtask bench whisper)\"
role: speech_recognition
roles:
  - speech_recognition
  - speech_translation
capabilities:
  audio: true
  text: true
  transcription: true
  translation: true
  multilingual: true
runtime: inprocess
engine: candle
precision: fp32
device_policy: cpu
local_artifacts:
{artifacts}weights_digest: sha256:{digest}
preprocess_preset: speech_recognition
input_schema:
  - name: input_features
    dtype: fp32
    shape: [-1, 80, 3000]
resource_requirements:
  ram_bytes: 600000000
  max_batch_size: 8
tier: 2
deprecated: false
license: MIT
source: \"cargo xtask bench whisper (random weights; not a real model)\"
metadata:
  architecture: whisper
";

/// The artifacts of the spec, the weights first.
const FILES: [&str; 7] = [
    "model.safetensors",
    "config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

fn path_arg(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("non-UTF-8 path {}", path.display()))
}

/// The spec text, pinned to the weights of the folder under `models`.
fn spec_text(models: &Path) -> Result<String> {
    let digest = sha256_file(&models.join(MODEL).join(FILES[0]))?;
    let list: String = FILES.iter().map(|f| format!("  - {MODEL}/{f}\n")).collect();
    Ok(SPEC_TEMPLATE
        .replace("{name}", MODEL)
        .replace("{artifacts}", &list)
        .replace("{digest}", &digest))
}

/// Makes (or finds current) the model folder and the bench catalog; returns the catalog
/// folder.
fn ensure_assets(root: &Path) -> Result<PathBuf> {
    let models = root.join(MODELS_ROOT);
    let catalog = root.join(CATALOG_DIR);
    // Whatever decides the bytes: the script (and the one it imports), the ONNX venv's
    // pins, the spec's template.
    let mut inputs = String::new();
    for file in [
        WHISPER_SCRIPT,
        "xtask/scripts/build_tiny_text.py",
        ONNX_REQUIREMENTS,
    ] {
        inputs.push_str(&sha256_file(&root.join(file))?);
        inputs.push('\n');
    }
    inputs.push_str(&format!("{SPEC_TEMPLATE}\n{FILES:?}\n"));
    let digest = sha256_hex(inputs.as_bytes());
    let stamp = catalog.join(".dp-stamp");
    if models.join(MODEL).is_dir()
        && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == digest)
    {
        return Ok(catalog);
    }
    println!("whisper: making {MODEL} (whisper-base shapes, random weights)");
    let _ = std::fs::remove_file(&stamp);
    // Built in a scratch folder beside the models, then moved in (one file system).
    let scratch = tempfile::Builder::new()
        .prefix(".xtask-bench-whisper-")
        .tempdir_in(root.join(".dp-assets"))
        .context("cannot create a scratch folder in .dp-assets")?;
    process::run(
        Command::new(root.join(ONNX_VENV).join("bin/python"))
            .arg(root.join(WHISPER_SCRIPT))
            .arg(scratch.path())
            .args(["--model", MODEL]),
        "the python-onnx asset of `cargo xtask setup` makes its venv",
    )?;
    std::fs::create_dir_all(&models)
        .with_context(|| format!("cannot create {}", models.display()))?;
    let target = models.join(MODEL);
    if target.exists() {
        std::fs::remove_dir_all(&target)
            .with_context(|| format!("cannot remove {}", target.display()))?;
    }
    std::fs::rename(scratch.path().join(MODEL), &target)
        .with_context(|| format!("cannot move the new {MODEL} into {}", models.display()))?;
    if catalog.exists() {
        std::fs::remove_dir_all(&catalog)
            .with_context(|| format!("cannot remove {}", catalog.display()))?;
    }
    let dir = catalog.join("speech_recognition");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_atomic(
        &dir.join(format!("{MODEL}.yaml")),
        spec_text(&models)?.as_bytes(),
    )?;
    write_atomic(&stamp, format!("{digest}\n").as_bytes())?;
    Ok(catalog)
}

/// The generated ids of a runner's warm-up call, one list per 30-second chunk.
fn token_ids(figures: &Figures, what: &str) -> Result<Vec<Vec<u64>>> {
    let lists = figures
        .array("token_ids")
        .with_context(|| format!("{what}: no `token_ids`"))?;
    lists
        .iter()
        .map(|list| {
            list.as_array()
                .and_then(|ids| ids.iter().map(serde_json::Value::as_u64).collect())
                .with_context(|| format!("{what}: `token_ids` is not a list of id lists"))
        })
        .collect()
}

/// Fails unless the two sides' warm-up calls generated the same ids: one chunk (the audio
/// is 30 s), exactly [`NEW_TOKENS`] ids, identical; the message prints both lists.
fn check_same_tokens(ours: &Figures, anchor: &Figures, what: &str) -> Result<()> {
    let (a, b) = (token_ids(ours, what)?, token_ids(anchor, what)?);
    ensure!(
        a.len() == 1 && b.len() == 1,
        "{what}: {} and {} chunks for 30 s of audio, not 1",
        a.len(),
        b.len()
    );
    let (x, y) = (&a[0], &b[0]);
    ensure!(
        x.len() == NEW_TOKENS && y.len() == NEW_TOKENS,
        "{what}: {} and {} new tokens, not {NEW_TOKENS}\n  candle:       {x:?}\n  \
         transformers: {y:?}",
        x.len(),
        y.len()
    );
    if let Some(at) = x.iter().zip(y).position(|(p, q)| p != q) {
        bail!(
            "{what}: the generated ids differ from token {at} on: the runners do not compute \
             the same thing\n  candle:       {x:?}\n  transformers: {y:?}"
        );
    }
    Ok(())
}

/// The rows: seconds per transcription (with the target) and the key/value cache of the
/// request (without).
fn rows(candle: &[Figures], transformers: &[Figures], versions: &str) -> Result<Vec<Row>> {
    let what = format!(
        "Whisper (whisper-base shapes) greedy transcription of 30 s of speech, {NEW_TOKENS} \
         new tokens"
    );
    let speed = Row::new(
        &format!("whisper.base.speech_30s_greedy_{NEW_TOKENS}.candle_vs_transformers"),
        &format!("{what}: candle vs transformers"),
        Unit::Seconds,
        Side::new("dp candle", series(candle, "seconds_per_call")?),
        Side::new("transformers", series(transformers, "seconds_per_call")?),
        vec![Target::RatioAtLeast {
            value: VS_TRANSFORMERS,
        }],
    )?
    .with_note(format!(
        "{MODEL}: d_model 512, 6 + 6 layers, 80 mel bins, vocab 51865, random weights; \
         ModelManager::transcribe (WAV bytes → speech_recognition preset → candle) vs WAV \
         read + WhisperFeatureExtractor (NumPy) + WhisperForConditionalGeneration.generate + \
         decode; language {LANGUAGE}, transcribe, no timestamps, greedy, min_new_tokens = \
         max_new_tokens = {NEW_TOKENS}; seconds per call, end to end; identical token ids; \
         {versions}"
    ));
    let kv = Row::new(
        &format!("whisper.base.speech_30s_greedy_{NEW_TOKENS}.kv_cache_per_request"),
        &format!("{what}: key/value cache of the request"),
        Unit::Bytes,
        Side::new("dp candle", series(candle, "kv_cache_peak_bytes")?),
        Side::new("transformers", series(transformers, "kv_cache_bytes")?),
        Vec::new(),
    )?
    .with_note(
        "kv_cache_peak_bytes against the bytes of transformers' past_key_values after \
         generate: self-attention keys and values of the decoded positions and \
         cross-attention ones of the 1500 encoder positions, all layers, fp32"
            .to_owned(),
    );
    Ok(vec![speed, kv])
}

/// Runs every whisper row.
pub(crate) fn run(root: &Path, exes: &Executables, pairs: usize) -> Result<Vec<Row>> {
    let python = path_arg(&ensure_venv(root)?)?;
    let catalog = path_arg(&ensure_assets(root)?)?;
    let audio = root.join(AUDIO);
    ensure!(
        audio.is_file(),
        "{} is missing: run `cargo xtask setup`",
        audio.display()
    );
    let audio = path_arg(&audio)?;
    let models = path_arg(&root.join(MODELS_ROOT))?;
    let model_dir = path_arg(&root.join(MODELS_ROOT).join(MODEL))?;
    let exe = path_arg(&exes.whisper_candle)?;
    let anchor = path_arg(&root.join(ANCHOR))?;
    let threads = THREADS.to_string();
    let new_tokens = NEW_TOKENS.to_string();
    let common = [
        "--audio",
        audio.as_str(),
        "--language",
        LANGUAGE,
        "--new-tokens",
        new_tokens.as_str(),
        "--threads",
        threads.as_str(),
        "--min-seconds",
        MIN_SECONDS,
        "--min-calls",
        MIN_CALLS,
    ];
    let mut argv = vec![
        exe.as_str(),
        "--models-root",
        &models,
        "--catalog",
        &catalog,
        "--model",
        MODEL,
    ];
    argv.extend(common);
    let candle = CommandLine::new("dp candle", &argv).env("RAYON_NUM_THREADS", &threads);
    let mut argv = vec![python.as_str(), anchor.as_str(), &model_dir];
    argv.extend(common);
    // As in the other groups, in the anchor's favour: passive OpenMP waiting (a spinning
    // thread of PyTorch's pool starves its partner on a shared 2-core machine).
    let transformers = CommandLine::new("transformers", &argv).env("OMP_WAIT_POLICY", "PASSIVE");
    println!(
        "whisper: {THREADS} threads, {pairs} rounds of candle and transformers, {MODEL}, \
         30 s of speech, {NEW_TOKENS} new tokens"
    );
    let rounds = figure_rounds(&[&candle, &transformers], pairs)?;
    let [candle, transformers] = rounds.as_slice() else {
        bail!("expected the figures of two runners");
    };
    check_same_tokens(&candle[0], &transformers[0], "candle vs transformers")?;
    let versions = format!(
        "torch {} (OMP_WAIT_POLICY=PASSIVE), transformers {}; {THREADS} threads",
        transformers[0].text("torch").unwrap_or_default(),
        transformers[0].text("transformers").unwrap_or_default(),
    );
    let rows = rows(candle, transformers, &versions)?;
    for row in &rows {
        println!("{}", row.summary());
    }
    Ok(rows)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;

    fn figures(json: &str) -> Figures {
        CommandLine::shell("runner", &format!("echo '{json}'"))
            .figures()
            .unwrap()
    }

    fn ids(lists: &[&[u64]]) -> Figures {
        figures(&serde_json::json!({ "token_ids": lists }).to_string())
    }

    #[test]
    fn token_ids_must_be_identical() {
        let a: Vec<u64> = (0..64).collect();
        let mut b = a.clone();
        check_same_tokens(&ids(&[&a]), &ids(&[&a]), "x").unwrap();
        b[63] = 7;
        let err = check_same_tokens(&ids(&[&a]), &ids(&[&b]), "x").unwrap_err();
        assert!(err.to_string().contains("from token 63"), "{err}");
        assert!(err.to_string().contains("transformers: [0, 1"), "{err}");
        // Two chunks, a wrong count of tokens, or no ids at all.
        assert!(check_same_tokens(&ids(&[&a, &a]), &ids(&[&a, &a]), "x").is_err());
        let short: Vec<u64> = (0..10).collect();
        assert!(check_same_tokens(&ids(&[&short]), &ids(&[&short]), "x").is_err());
        assert!(check_same_tokens(&ids(&[&a]), &figures("{}"), "x").is_err());
    }

    #[test]
    fn rows_carry_the_target_on_seconds_only() {
        let candle = [
            figures(r#"{"seconds_per_call": 1.0, "kv_cache_peak_bytes": 8000}"#),
            figures(r#"{"seconds_per_call": 1.2, "kv_cache_peak_bytes": 8000}"#),
        ];
        let transformers = [
            figures(r#"{"seconds_per_call": 2.0, "kv_cache_bytes": 8800}"#),
            figures(r#"{"seconds_per_call": 2.4, "kv_cache_bytes": 8800}"#),
        ];
        let rows = rows(&candle, &transformers, "v").unwrap();
        assert_eq!(
            rows[0].id,
            "whisper.base.speech_30s_greedy_64.candle_vs_transformers"
        );
        assert_eq!(rows[0].ratio, 2.0);
        assert_eq!(rows[0].pass, Some(true));
        assert_eq!(
            rows[1].id,
            "whisper.base.speech_30s_greedy_64.kv_cache_per_request"
        );
        assert!(rows[1].targets.is_empty());
        assert_eq!(rows[1].ours.median, 8000.0);
        assert_eq!(rows[1].anchor.median, 8800.0);
        assert!(spec_text(Path::new("/nonexistent")).is_err());
    }
}
