//! `cargo xtask bench generate`: text generation (issue 16). A T5 model of
//! google-t5/t5-small's shapes (d_model 512, 6 + 6 layers, 8 heads, d_ff 2048, vocab
//! 32128, ReLU, tied head; random weights) generates exactly 64 new tokens per text by
//! greedy search, through the manager and the candle provider
//! (`ModelManager::generate`), against transformers' `generate` on PyTorch CPU, on the
//! same folder, the same texts and the same thread count, interleaved round by round; at
//! batch 1 and batch 8 (one call of 1 or 8 texts). The figure is new tokens per second over
//! the batch (`batch × 64` per call); the issue's bar is candle ≥ 1.0× transformers.
//!
//! Beside them, rows without target give the key/value cache each running request holds:
//! the manager's `kv_cache_peak_bytes` of the call divided by the batch size, against the
//! bytes of the tensors of transformers' `past_key_values` at the end of its `generate`
//! (the same accounting: every layer's self-attention keys and values of the decoded
//! positions, and the cross-attention ones of the padded encoder positions).
//!
//! Both sides get `min_new_tokens = max_new_tokens = 64`, so the end of sequence is never
//! chosen before the 64th token. Before any figure is trusted, the generated token ids of
//! each side's warm-up call are compared, text by text: they must be identical (the
//! provider's T5 is token-for-token equal to transformers on the small test models).
//!
//! Set-up, on first use (not in `cargo xtask setup`: CI never pays for it): the model
//! folder `.dp-assets/models/t5-small-random` by `xtask/scripts/build_tiny_t5.py --model
//! t5-small-random` (about 240 MB, seconds to write) and its spec in the bench-only
//! catalog `.dp-assets/bench-catalog/generate`; a stamp rebuilds them when the script, the
//! ONNX venv's pins (the script runs there) or the spec's template change.

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
const CATALOG_DIR: &str = ".dp-assets/bench-catalog/generate";

/// The model folder (its name under the models root, and the model name).
const MODEL: &str = "t5-small-random";

/// The scripts and venv of the set-up and the anchor, relative to the workspace root.
const T5_SCRIPT: &str = "xtask/scripts/build_tiny_t5.py";
const ONNX_VENV: &str = ".dp-assets/venv-onnx";
const ONNX_REQUIREMENTS: &str = "xtask/requirements/python-onnx.txt";
const ANCHOR: &str = "xtask/src/bench/generate_transformers.py";

/// CPU threads every side uses (the issues' setting: 2 cores).
const THREADS: usize = 2;

/// New tokens per text, on both sides (min = max, so exactly this many).
const NEW_TOKENS: usize = 64;

/// The batch sizes of the rows: one text per call, and eight (the spec's largest batch).
const BATCHES: [usize; 2] = [1, 8];

/// Seconds (and calls, at least) each runner times, per round.
const MIN_SECONDS: &str = "2";
const MIN_CALLS: &str = "3";

/// The issue's target: candle against transformers, tokens per second.
const VS_TRANSFORMERS: f64 = 1.0;

/// The spec of the bench catalog: `{name}`, `{artifacts}` (YAML list items) and `{digest}`
/// (of the weights) are filled in.
const SPEC_TEMPLATE: &str = "model_name: {name}
model_version: \"1.0.0\"
display_name: \"T5, t5-small shapes, random weights ({name}, cargo xtask bench generate)\"
role: text_generation
capabilities:
  text: true
  generation: true
runtime: inprocess
engine: candle
precision: fp32
device_policy: cpu
local_artifacts:
{artifacts}weights_digest: sha256:{digest}
preprocess_preset: text_generation
preprocess_params:
  max_length: 512
input_schema:
  - name: input_ids
    dtype: int64
    shape: [-1, -1]
  - name: attention_mask
    dtype: int64
    shape: [-1, -1]
resource_requirements:
  ram_bytes: 400000000
  max_batch_size: 8
tier: 2
deprecated: false
license: MIT
source: \"cargo xtask bench generate (random weights; not a real model)\"
metadata:
  architecture: t5
  num_layers: 6
";

/// The artifacts of the spec, the weights first.
const FILES: [&str; 6] = [
    "model.safetensors",
    "config.json",
    "generation_config.json",
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
    // Whatever decides the bytes: the script, the ONNX venv's pins, the spec's template.
    let mut inputs = String::new();
    for file in [
        T5_SCRIPT,
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
    println!("generate: making {MODEL} (t5-small shapes, random weights)");
    let _ = std::fs::remove_file(&stamp);
    // Built in a scratch folder beside the models, then moved in (one file system).
    let scratch = tempfile::Builder::new()
        .prefix(".xtask-bench-generate-")
        .tempdir_in(root.join(".dp-assets"))
        .context("cannot create a scratch folder in .dp-assets")?;
    process::run(
        Command::new(root.join(ONNX_VENV).join("bin/python"))
            .arg(root.join(T5_SCRIPT))
            .args(["--model", MODEL])
            .arg(scratch.path()),
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
    let dir = catalog.join("text_generation");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_atomic(
        &dir.join(format!("{MODEL}.yaml")),
        spec_text(&models)?.as_bytes(),
    )?;
    write_atomic(&stamp, format!("{digest}\n").as_bytes())?;
    Ok(catalog)
}

/// The texts of the calls, the first `batch` of them: 19 to 24 tokens each (so the batch
/// of eight is padded); the sentences the anchor makes itself when run alone.
const TEXTS: [&str; 8] = [
    "translate English to German: The city council visited the new train station in Berlin on day 0.",
    "translate English to German: A young teacher visited the university library on day 1.",
    "translate English to German: The old doctor visited the airport hotel on day 2.",
    "translate English to German: My friend visited the market near the river on day 3.",
    "translate English to German: The company visited a beautiful house in London on day 4.",
    "translate English to German: The president visited the morning news on day 5.",
    "translate English to German: A small black cat visited the hospital in Paris on day 6.",
    "translate English to German: The quick brown fox visited the mountain village on day 7.",
];

/// The inputs file both sides read.
fn inputs_json() -> serde_json::Value {
    serde_json::json!({ "texts": TEXTS })
}

/// The generated ids of a runner's warm-up call, one list per text.
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

/// Fails unless the two sides' warm-up calls generated the same ids for every text.
fn check_same_tokens(ours: &Figures, anchor: &Figures, what: &str, batch: usize) -> Result<()> {
    let (a, b) = (token_ids(ours, what)?, token_ids(anchor, what)?);
    ensure!(
        a.len() == batch && b.len() == batch,
        "{what}: {} and {} generated texts for a batch of {batch}",
        a.len(),
        b.len()
    );
    for (text, (x, y)) in a.iter().zip(&b).enumerate() {
        ensure!(
            x.len() == NEW_TOKENS && y.len() == NEW_TOKENS,
            "{what}, text {text}: {} and {} new tokens, not {NEW_TOKENS}",
            x.len(),
            y.len()
        );
        if let Some(at) = x.iter().zip(y).position(|(p, q)| p != q) {
            bail!(
                "{what}, text {text}: the generated ids differ from token {at} on ({:?} vs \
                 {:?}); {} of {batch} texts are identical: the runners do not compute the \
                 same thing",
                &x[at..(at + 4).min(NEW_TOKENS)],
                &y[at..(at + 4).min(NEW_TOKENS)],
                a.iter().zip(&b).filter(|(p, q)| p == q).count()
            );
        }
    }
    Ok(())
}

/// `key` of each round divided by the batch size (bytes per running request).
fn per_request(rounds: &[Figures], key: &str, batch: usize) -> Result<Vec<f64>> {
    #[allow(clippy::cast_precision_loss, reason = "batch sizes are small")]
    let batch = batch as f64;
    Ok(series(rounds, key)?
        .into_iter()
        .map(|v| v / batch)
        .collect())
}

/// The rows of one batch size: tokens per second (with the target) and the key/value
/// cache per running request (without).
fn batch_rows(
    batch: usize,
    candle: &[Figures],
    transformers: &[Figures],
    versions: &str,
) -> Result<Vec<Row>> {
    let what = format!(
        "T5 (t5-small shapes) greedy generation, batch {batch}, {NEW_TOKENS} new tokens per text"
    );
    let speed = Row::new(
        &format!("generate.t5_small.b{batch}_greedy_{NEW_TOKENS}.candle_vs_transformers"),
        &format!("{what}: candle vs transformers"),
        Unit::TokensPerSecond,
        Side::new("dp candle", series(candle, "per_s")?),
        Side::new("transformers", series(transformers, "per_s")?),
        vec![Target::RatioAtLeast {
            value: VS_TRANSFORMERS,
        }],
    )?
    .with_note(format!(
        "{MODEL}: d_model 512, 6 + 6 layers, random weights; ModelManager::generate vs \
         tokenizer + T5ForConditionalGeneration.generate + batch_decode, greedy, \
         min_new_tokens = max_new_tokens = {NEW_TOKENS}; texts of 19-24 tokens (padded in a \
         batch); new tokens per second over the batch; identical token ids; {versions}"
    ));
    let kv = Row::new(
        &format!("generate.t5_small.b{batch}_greedy_{NEW_TOKENS}.kv_cache_per_request"),
        &format!("{what}: key/value cache per running request"),
        Unit::Bytes,
        Side::new(
            "dp candle",
            per_request(candle, "kv_cache_peak_bytes", batch)?,
        ),
        Side::new(
            "transformers",
            per_request(transformers, "kv_cache_bytes", batch)?,
        ),
        Vec::new(),
    )?
    .with_note(format!(
        "kv_cache_peak_bytes / {batch} against the bytes of transformers' past_key_values \
         after generate / {batch}: self-attention keys and values of the decoded positions \
         and cross-attention ones of the padded encoder positions, all layers, fp32"
    ));
    Ok(vec![speed, kv])
}

/// Runs every generate row.
pub(crate) fn run(root: &Path, exes: &Executables, pairs: usize) -> Result<Vec<Row>> {
    let python = path_arg(&ensure_venv(root)?)?;
    let catalog = path_arg(&ensure_assets(root)?)?;
    let scratch = tempfile::tempdir().context("cannot create a scratch folder")?;
    let inputs = scratch.path().join("inputs.json");
    write_atomic(&inputs, serde_json::to_string(&inputs_json())?.as_bytes())?;
    let inputs = path_arg(&inputs)?;
    let models = path_arg(&root.join(MODELS_ROOT))?;
    let model_dir = path_arg(&root.join(MODELS_ROOT).join(MODEL))?;
    let exe = path_arg(&exes.generate_candle)?;
    let anchor = path_arg(&root.join(ANCHOR))?;
    let threads = THREADS.to_string();
    let new_tokens = NEW_TOKENS.to_string();
    let common = [
        "--inputs",
        inputs.as_str(),
        "--new-tokens",
        new_tokens.as_str(),
        "--threads",
        threads.as_str(),
        "--min-seconds",
        MIN_SECONDS,
        "--min-calls",
        MIN_CALLS,
    ];
    let mut runners = Vec::new();
    for batch in BATCHES {
        let batch = batch.to_string();
        let mut argv = vec![
            exe.as_str(),
            "--models-root",
            &models,
            "--catalog",
            &catalog,
            "--model",
            MODEL,
            "--batch",
            &batch,
        ];
        argv.extend(common);
        runners.push(
            CommandLine::new(&format!("dp candle (batch {batch})"), &argv)
                .env("RAYON_NUM_THREADS", &threads),
        );
        let mut argv = vec![
            python.as_str(),
            anchor.as_str(),
            &model_dir,
            "--batch",
            &batch,
        ];
        argv.extend(common);
        // As in the other groups, in the anchor's favour: passive OpenMP waiting (a
        // spinning thread of PyTorch's pool starves its partner on a shared 2-core machine).
        runners.push(
            CommandLine::new(&format!("transformers (batch {batch})"), &argv)
                .env("OMP_WAIT_POLICY", "PASSIVE"),
        );
    }
    println!(
        "generate: {THREADS} threads, {pairs} rounds of candle and transformers, {MODEL}, \
         {NEW_TOKENS} new tokens per text, batches {BATCHES:?}"
    );
    let refs: Vec<&CommandLine> = runners.iter().collect();
    let rounds = figure_rounds(&refs, pairs)?;
    let mut rows = Vec::new();
    for (batch, sides) in BATCHES.iter().zip(rounds.chunks(2)) {
        let [candle, transformers] = sides else {
            bail!("expected the figures of two runners per batch");
        };
        check_same_tokens(
            &candle[0],
            &transformers[0],
            &format!("batch {batch}, candle vs transformers"),
            *batch,
        )?;
        let versions = format!(
            "torch {} (OMP_WAIT_POLICY=PASSIVE), transformers {}; {THREADS} threads",
            transformers[0].text("torch").unwrap_or_default(),
            transformers[0].text("transformers").unwrap_or_default(),
        );
        rows.extend(batch_rows(*batch, candle, transformers, &versions)?);
    }
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
    fn token_ids_must_be_identical_text_by_text() {
        let a: Vec<u64> = (0..64).collect();
        let mut b = a.clone();
        check_same_tokens(&ids(&[&a]), &ids(&[&a]), "x", 1).unwrap();
        b[63] = 7;
        let err = check_same_tokens(&ids(&[&a]), &ids(&[&b]), "x", 1).unwrap_err();
        assert!(err.to_string().contains("from token 63"), "{err}");
        // A wrong count of texts, or of tokens, or no ids at all.
        assert!(check_same_tokens(&ids(&[&a]), &ids(&[&a]), "x", 2).is_err());
        let short: Vec<u64> = (0..10).collect();
        assert!(check_same_tokens(&ids(&[&short]), &ids(&[&short]), "x", 1).is_err());
        assert!(check_same_tokens(&ids(&[&a]), &figures("{}"), "x", 1).is_err());
    }

    #[test]
    fn rows_carry_the_target_on_tokens_per_second_only() {
        let candle = [
            figures(r#"{"per_s": 300, "kv_cache_peak_bytes": 8000}"#),
            figures(r#"{"per_s": 320, "kv_cache_peak_bytes": 8000}"#),
        ];
        let transformers = [
            figures(r#"{"per_s": 200, "kv_cache_bytes": 8800}"#),
            figures(r#"{"per_s": 210, "kv_cache_bytes": 8800}"#),
        ];
        let rows = batch_rows(8, &candle, &transformers, "v").unwrap();
        assert_eq!(
            rows[0].id,
            "generate.t5_small.b8_greedy_64.candle_vs_transformers"
        );
        assert_eq!(rows[0].pass, Some(true));
        assert_eq!(
            rows[1].id,
            "generate.t5_small.b8_greedy_64.kv_cache_per_request"
        );
        assert!(rows[1].targets.is_empty());
        assert_eq!(rows[1].ours.median, 1000.0);
        assert_eq!(rows[1].anchor.median, 1100.0);
    }

    #[test]
    fn inputs_cover_the_largest_batch() {
        let inputs = inputs_json();
        let texts = inputs["texts"].as_array().unwrap();
        assert_eq!(texts.len(), *BATCHES.iter().max().unwrap());
        assert!(spec_text(Path::new("/nonexistent")).is_err());
    }
}
