//! `cargo xtask bench text` (also run by `cargo xtask bench embed`): the text models of
//! issue 15 through the manager, with the candle and ONNX providers, against
//! sentence-transformers on PyTorch CPU, on the same folders, the same inputs and the same
//! thread count, interleaved round by round:
//!
//! - an XLM-RoBERTa sentence embedder of intfloat/multilingual-e5-small's shapes (hidden
//!   384, 12 layers, 12 heads, FFN 1536; random weights, the small test tokenizer), 32
//!   short texts per call with the E5 prompt `query` (`ModelManager::embed_with_prompt`
//!   against `SentenceTransformer.encode(…, prompt_name="query")`);
//! - a BERT cross-encoder of cross-encoder/ms-marco-MiniLM-L6-v2's shapes (random
//!   weights, all-MiniLM-L6-v2's WordPiece tokenizer), 32 (query, document) pairs per call
//!   (`ModelManager::rerank` against `CrossEncoder.predict`).
//!
//! The issue's bar is on the best provider (`≥ 1.5×` sentence-transformers), so each
//! workload's target sits on the row of whichever fp32 provider has the higher median in
//! the run. Each ONNX graph is also run with int8 weights (calibrated activation scales, as
//! `all-minilm-l6-v2-onnx-int8`), in rows without target: they do not
//! compute the anchor's fp32 maths. Before any figure is trusted, the outputs of each
//! runner's warm-up call are compared with sentence-transformers' (the first embedding,
//! every score; within 2e-3, or for int8 0.05 per embedding value and 0.1 per score).
//!
//! Set-up, on first use (not in `cargo xtask setup`: CI never pays for it): six model
//! folders in `.dp-assets/models` (each model, its ONNX graph and the int8 graph) by
//! `xtask/scripts/build_tiny_text.py --model`, `xtask/scripts/build_encoder_onnx.py` and
//! `xtask/scripts/quantize_minilm_onnx.py` (about 95 MB per fp32 folder, seconds to
//! write), and their specs in the bench-only catalog `.dp-assets/bench-catalog/text`; a
//! stamp rebuilds them when a script, the ONNX venv's pins or the specs' templates change.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use super::Executables;
use super::embed::{SENTENCES, ensure_venv};
use super::pairs::{CommandLine, Figures, figure_rounds, series};
use super::report::{Row, Side, Target, Unit};
use crate::fsutil::{sha256_file, sha256_hex, write_atomic};
use crate::process;

/// The models root and the bench-only catalog, relative to the workspace root.
const MODELS_ROOT: &str = ".dp-assets/models";
const CATALOG_DIR: &str = ".dp-assets/bench-catalog/text";

/// The four model folders (names under the models root, and model names).
const EMBED_MODEL: &str = "xlmr-e5-small-random";
const EMBED_ONNX_MODEL: &str = "xlmr-e5-small-random-onnx";
const RERANK_MODEL: &str = "bert-reranker-minilm-random";
const RERANK_ONNX_MODEL: &str = "bert-reranker-minilm-random-onnx";
/// The ONNX graphs with int8 weights (quantized as `all-minilm-l6-v2-onnx-int8` is): rows
/// of their own, without target, beside the fp32 ones.
const EMBED_INT8_MODEL: &str = "xlmr-e5-small-random-onnx-int8";
const RERANK_INT8_MODEL: &str = "bert-reranker-minilm-random-onnx-int8";

/// The scripts and venv of the set-up and the anchor, relative to the workspace root.
const TINY_TEXT_SCRIPT: &str = "xtask/scripts/build_tiny_text.py";
const ENCODER_ONNX_SCRIPT: &str = "xtask/scripts/build_encoder_onnx.py";
const ENCODER_ONNX_HELPERS: &str = "xtask/scripts/build_minilm_onnx.py";
const QUANTIZE_SCRIPT: &str = "xtask/scripts/quantize_minilm_onnx.py";
const ONNX_VENV: &str = ".dp-assets/venv-onnx";
const ONNX_REQUIREMENTS: &str = "xtask/requirements/python-onnx.txt";
const ST_RUNNER: &str = "xtask/src/bench/text_sentence_transformers.py";
/// all-MiniLM-L6-v2 of `cargo xtask setup` (`minilm`): the BERT reranker's tokenizer.
const MINILM_DIR: &str = ".dp-assets/models/all-minilm-l6-v2";

/// CPU threads every side uses (the issues' setting: 2 cores).
const THREADS: usize = 2;

/// Seconds (and calls, at least) each workload runs for, per runner and round.
const MIN_SECONDS: &str = "2";
const MIN_CALLS: &str = "3";

/// The issue's targets: the best provider against sentence-transformers.
const EMBED_VS_ST: f64 = 1.5;
const RERANK_VS_ST: f64 = 1.5;

/// The E5 prompt every embedding call uses.
const PROMPT: &str = "query";

/// The reranking query; each document is two of the short sentences.
const QUERY: &str = "Which animals are playing music?";

/// How far the warm-up outputs of two sides may differ (absolute, per value): embeddings
/// are unit vectors, scores are sigmoids. The int8 graphs compute something slightly
/// different on purpose: the XLM-R embedder's vectors stay within cosine 0.996 of fp32;
/// the random-weight reranker's scores move more (against its fp32 graph, over 512 query
/// and document pairs of the short sentences: mean 0.015, 99th percentile 0.057, max
/// 0.066), so its probe gets twice the embeddings' margin.
const PROBE_TOLERANCE: f64 = 2e-3;
const INT8_PROBE_TOLERANCE: f64 = 0.05;
const INT8_SCORE_TOLERANCE: f64 = 0.1;

/// A spec of the bench catalog: `{name}`, `{engine}`, `{artifacts}` (YAML list items) and
/// `{digest}` (of the first artifact) are filled in.
const EMBED_SPEC_TEMPLATE: &str = "model_name: {name}
model_version: \"1.0.0\"
display_name: \"XLM-R, multilingual-e5-small shapes, random weights ({name}, cargo xtask bench text)\"
role: text_embedding
capabilities:
  text: true
  embedding: true
  multilingual: true
runtime: inprocess
engine: {engine}
precision: fp32
device_policy: cpu
local_artifacts:
{artifacts}weights_digest: sha256:{digest}
preprocess_preset: sentence_embedding
input_schema:
  - name: input_ids
    dtype: int64
    shape: [-1, -1]
  - name: attention_mask
    dtype: int64
    shape: [-1, -1]
output_schema:
  - name: last_hidden_state
    dtype: fp32
    shape: [-1, -1, 384]
resource_requirements:
  ram_bytes: 500000000
  max_batch_size: 32
tier: 2
deprecated: false
license: MIT
source: \"cargo xtask bench text (random weights; not a real model)\"
metadata:
  embedding_dim: 384
  architecture: xlm-roberta
";

const RERANK_SPEC_TEMPLATE: &str = "model_name: {name}
model_version: \"1.0.0\"
display_name: \"BERT cross-encoder, ms-marco-MiniLM-L6 shapes, random weights ({name}, cargo xtask bench text)\"
role: reranking
capabilities:
  text: true
  reranking: true
runtime: inprocess
engine: {engine}
precision: fp32
device_policy: cpu
local_artifacts:
{artifacts}weights_digest: sha256:{digest}
preprocess_preset: cross_encoder
input_schema:
  - name: input_ids
    dtype: int64
    shape: [-1, -1]
  - name: attention_mask
    dtype: int64
    shape: [-1, -1]
  - name: token_type_ids
    dtype: int64
    shape: [-1, -1]
output_schema:
  - name: logits
    dtype: fp32
    shape: [-1, 1]
resource_requirements:
  ram_bytes: 500000000
  max_batch_size: 32
tier: 2
deprecated: false
license: MIT
source: \"cargo xtask bench text (random weights; not a real model)\"
metadata:
  architecture: bert
";

/// The artifacts of each spec besides the weights (`model.safetensors` or `model.onnx`).
const EMBED_FILES: [&str; 6] = [
    "config.json",
    "tokenizer.json",
    "modules.json",
    "1_Pooling/config.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
];
const RERANK_FILES: [&str; 3] = ["config.json", "tokenizer.json", "tokenizer_config.json"];

fn path_arg(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("non-UTF-8 path {}", path.display()))
}

/// The spec text of `name`: its weights file, then `files`, pinned to the weights.
fn spec_text(
    models: &Path,
    template: &str,
    name: &str,
    engine: &str,
    weights: &str,
    files: &[&str],
) -> Result<String> {
    let digest = sha256_file(&models.join(name).join(weights))?;
    let list: String = std::iter::once(weights)
        .chain(files.iter().copied())
        .map(|a| format!("  - {name}/{a}\n"))
        .collect();
    Ok(template
        .replace("{name}", name)
        .replace("{engine}", engine)
        .replace("{artifacts}", &list)
        .replace("{digest}", &digest))
}

/// Copies every file of `from` but the weights into `to`, keeping sub-folders.
fn copy_beside(from: &Path, to: &Path) -> Result<()> {
    for entry in
        std::fs::read_dir(from).with_context(|| format!("cannot list {}", from.display()))?
    {
        let entry = entry?;
        let (source, dest) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&dest)?;
            copy_beside(&source, &dest)?;
        } else if entry.file_name() != "model.safetensors" {
            std::fs::copy(&source, &dest)
                .with_context(|| format!("cannot copy {}", source.display()))?;
        }
    }
    Ok(())
}

/// Makes (or finds current) the four model folders and the bench catalog; returns the
/// catalog folder.
fn ensure_assets(root: &Path) -> Result<PathBuf> {
    let models = root.join(MODELS_ROOT);
    let catalog = root.join(CATALOG_DIR);
    ensure!(
        root.join(MINILM_DIR).join("tokenizer.json").is_file(),
        "the minilm asset is missing: run `cargo xtask setup`"
    );
    // Whatever decides the bytes: the scripts, the ONNX venv's pins, the specs' templates.
    let mut inputs = String::new();
    for file in [
        TINY_TEXT_SCRIPT,
        ENCODER_ONNX_SCRIPT,
        ENCODER_ONNX_HELPERS,
        QUANTIZE_SCRIPT,
        ONNX_REQUIREMENTS,
    ] {
        inputs.push_str(&sha256_file(&root.join(file))?);
        inputs.push('\n');
    }
    inputs.push_str(&format!(
        "{EMBED_SPEC_TEMPLATE}\n{RERANK_SPEC_TEMPLATE}\n{EMBED_FILES:?}\n{RERANK_FILES:?}\n"
    ));
    let digest = sha256_hex(inputs.as_bytes());
    let stamp = catalog.join(".dp-stamp");
    let folders = [
        EMBED_MODEL,
        EMBED_ONNX_MODEL,
        EMBED_INT8_MODEL,
        RERANK_MODEL,
        RERANK_ONNX_MODEL,
        RERANK_INT8_MODEL,
    ];
    let present = folders.iter().all(|m| models.join(m).is_dir());
    if present && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == digest) {
        return Ok(catalog);
    }
    println!(
        "text: making {EMBED_MODEL} and {RERANK_MODEL} (random weights) and their ONNX graphs"
    );
    let _ = std::fs::remove_file(&stamp);
    // Built in a scratch folder beside the models, then moved in (one file system).
    let scratch = tempfile::Builder::new()
        .prefix(".xtask-bench-text-")
        .tempdir_in(root.join(".dp-assets"))
        .context("cannot create a scratch folder in .dp-assets")?;
    let work = scratch.path();
    let onnx_python = root.join(ONNX_VENV).join("bin/python");
    let hint = "the python-onnx asset of `cargo xtask setup` makes its venv";
    for (model, onnx, int8) in [
        (EMBED_MODEL, EMBED_ONNX_MODEL, EMBED_INT8_MODEL),
        (RERANK_MODEL, RERANK_ONNX_MODEL, RERANK_INT8_MODEL),
    ] {
        process::run(
            Command::new(&onnx_python)
                .arg(root.join(TINY_TEXT_SCRIPT))
                .args(["--model", model])
                .arg(root.join(MINILM_DIR))
                .arg(work),
            hint,
        )?;
        process::run(
            Command::new(&onnx_python)
                .arg(root.join(ENCODER_ONNX_SCRIPT))
                .arg(work.join(model))
                .arg(work.join(onnx)),
            hint,
        )?;
        copy_beside(&work.join(model), &work.join(onnx))?;
        std::fs::create_dir_all(work.join(int8))?;
        let mut quantize = Command::new(&onnx_python);
        quantize.arg(root.join(QUANTIZE_SCRIPT));
        if model == RERANK_MODEL {
            // A cross-encoder reads (query, document) pairs: calibrate on pairs.
            quantize.arg("--pairs");
        }
        process::run(
            quantize
                .arg(work.join(onnx).join("model.onnx"))
                .arg(work.join(onnx).join("tokenizer.json"))
                .arg(work.join(int8).join("model.onnx")),
            hint,
        )?;
        copy_beside(&work.join(model), &work.join(int8))?;
    }
    for folder in folders {
        let target = models.join(folder);
        if target.exists() {
            std::fs::remove_dir_all(&target)
                .with_context(|| format!("cannot remove {}", target.display()))?;
        }
        std::fs::rename(work.join(folder), &target)
            .with_context(|| format!("cannot move the new {folder} into {}", models.display()))?;
    }
    let specs = [
        (EMBED_MODEL, "candle", "model.safetensors"),
        (EMBED_ONNX_MODEL, "onnx", "model.onnx"),
        (EMBED_INT8_MODEL, "onnx", "model.onnx"),
        (RERANK_MODEL, "candle", "model.safetensors"),
        (RERANK_ONNX_MODEL, "onnx", "model.onnx"),
        (RERANK_INT8_MODEL, "onnx", "model.onnx"),
    ];
    if catalog.exists() {
        std::fs::remove_dir_all(&catalog)
            .with_context(|| format!("cannot remove {}", catalog.display()))?;
    }
    for (name, engine, weights) in specs {
        let (role, template, files) = if name.starts_with(EMBED_MODEL) {
            ("text_embedding", EMBED_SPEC_TEMPLATE, &EMBED_FILES[..])
        } else {
            ("reranking", RERANK_SPEC_TEMPLATE, &RERANK_FILES[..])
        };
        let text = spec_text(&models, template, name, engine, weights, files)?;
        let dir = catalog.join(role);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        write_atomic(&dir.join(format!("{name}.yaml")), text.as_bytes())?;
    }
    write_atomic(&stamp, format!("{digest}\n").as_bytes())?;
    Ok(catalog)
}

/// The inputs of both workloads: 32 short texts; a query and 32 documents.
fn inputs_json() -> serde_json::Value {
    let n = SENTENCES.len();
    let documents: Vec<String> = (0..n)
        .map(|i| format!("{} {}", SENTENCES[i], SENTENCES[(i + 7) % n]))
        .collect();
    serde_json::json!({ "texts": SENTENCES, "query": QUERY, "documents": documents })
}

/// Fails unless the warm-up outputs of two sides agree value by value, within `tolerance`.
fn check_same_output(ours: &Figures, anchor: &Figures, what: &str, tolerance: f64) -> Result<()> {
    let values = |f: &Figures| -> Result<Vec<f64>> {
        f.values("probe")
            .with_context(|| format!("{what}: no `probe` values"))
    };
    let (a, b) = (values(ours)?, values(anchor)?);
    ensure!(
        a.len() == b.len() && !a.is_empty(),
        "{what}: {} output values against {}",
        a.len(),
        b.len()
    );
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0_f64, f64::max);
    ensure!(
        worst <= tolerance,
        "{what}: the outputs differ by up to {worst:.2e} (first values {:?} vs {:?}): the \
         runners do not compute the same thing",
        &a[..a.len().min(4)],
        &b[..b.len().min(4)]
    );
    Ok(())
}

/// The rows of one workload: each provider against sentence-transformers, the target on
/// the provider with the higher median.
#[allow(
    clippy::too_many_arguments,
    reason = "one call per workload, every argument named at the call"
)]
fn workload_rows(
    id: &str,
    what: &str,
    unit: Unit,
    target: f64,
    candle: &[Figures],
    onnx: &[Figures],
    st: &[Figures],
    note: &str,
) -> Result<Vec<Row>> {
    let candle = Side::new("dp candle", series(candle, "per_s")?);
    let onnx = Side::new("dp onnx", series(onnx, "per_s")?);
    let st = Side::new("sentence-transformers", series(st, "per_s")?);
    let onnx_best = onnx.median > candle.median;
    let mut rows = Vec::new();
    for (provider, side, best) in [("candle", candle, !onnx_best), ("onnx", onnx, onnx_best)] {
        let targets = if best {
            vec![Target::RatioAtLeast { value: target }]
        } else {
            Vec::new()
        };
        let note = if best {
            format!("{note}; the faster provider of the run, which the issue's bar is on")
        } else {
            note.to_owned()
        };
        rows.push(
            Row::new(
                &format!("text.{id}.{provider}_vs_st"),
                &format!("{what}: {provider} vs sentence-transformers"),
                unit,
                side,
                st.clone(),
                targets,
            )?
            .with_note(note),
        );
    }
    Ok(rows)
}

/// Runs every text row.
pub(crate) fn run(root: &Path, exes: &Executables, pairs: usize) -> Result<Vec<Row>> {
    let st_python = path_arg(&ensure_venv(root)?)?;
    let catalog = path_arg(&ensure_assets(root)?)?;
    let scratch = tempfile::tempdir().context("cannot create a scratch folder")?;
    let inputs = scratch.path().join("inputs.json");
    write_atomic(&inputs, serde_json::to_string(&inputs_json())?.as_bytes())?;
    let inputs = path_arg(&inputs)?;
    let models = path_arg(&root.join(MODELS_ROOT))?;
    let threads = THREADS.to_string();
    let timing = [
        "--threads",
        threads.as_str(),
        "--min-seconds",
        MIN_SECONDS,
        "--min-calls",
        MIN_CALLS,
    ];
    let rust = |label: &str, exe: &Path, model: &str, task: &str| -> Result<CommandLine> {
        let exe = path_arg(exe)?;
        let mut argv = vec![
            exe.as_str(),
            "--models-root",
            &models,
            "--catalog",
            &catalog,
            "--model",
            model,
            "--inputs",
            &inputs,
            "--task",
            task,
        ];
        if task == "embed" {
            argv.extend(["--prompt", PROMPT]);
        }
        argv.extend(timing);
        Ok(CommandLine::new(label, &argv))
    };
    let st_runner = path_arg(&root.join(ST_RUNNER))?;
    let python = |label: &str, model: &str, task: &str| -> Result<CommandLine> {
        let model_dir = path_arg(&root.join(MODELS_ROOT).join(model))?;
        let mut argv = vec![
            st_python.as_str(),
            st_runner.as_str(),
            "--model-dir",
            &model_dir,
            "--inputs",
            &inputs,
            "--task",
            task,
        ];
        if task == "embed" {
            argv.extend(["--prompt", PROMPT]);
        }
        argv.extend(timing);
        // As in the embed group, in the anchor's favour: passive OpenMP waiting (a
        // spinning thread of PyTorch's pool starves its partner on a shared 2-core machine).
        Ok(CommandLine::new(label, &argv).env("OMP_WAIT_POLICY", "PASSIVE"))
    };
    let runners = [
        rust("dp candle (embed)", &exes.text_candle, EMBED_MODEL, "embed")?
            .env("RAYON_NUM_THREADS", &threads),
        rust(
            "dp onnx (embed)",
            &exes.text_onnx,
            EMBED_ONNX_MODEL,
            "embed",
        )?,
        rust(
            "dp onnx int8 (embed)",
            &exes.text_onnx,
            EMBED_INT8_MODEL,
            "embed",
        )?,
        python("sentence-transformers (embed)", EMBED_MODEL, "embed")?,
        rust(
            "dp candle (rerank)",
            &exes.text_candle,
            RERANK_MODEL,
            "rerank",
        )?
        .env("RAYON_NUM_THREADS", &threads),
        rust(
            "dp onnx (rerank)",
            &exes.text_onnx,
            RERANK_ONNX_MODEL,
            "rerank",
        )?,
        rust(
            "dp onnx int8 (rerank)",
            &exes.text_onnx,
            RERANK_INT8_MODEL,
            "rerank",
        )?,
        python("sentence-transformers (rerank)", RERANK_MODEL, "rerank")?,
    ];
    println!(
        "text: {THREADS} threads, {pairs} rounds of candle, onnx, onnx int8 and \
         sentence-transformers, embedding ({EMBED_MODEL}) then reranking ({RERANK_MODEL})"
    );
    let refs: Vec<&CommandLine> = runners.iter().collect();
    let rounds = figure_rounds(&refs, pairs)?;
    let [
        e_candle,
        e_onnx,
        e_int8,
        e_st,
        r_candle,
        r_onnx,
        r_int8,
        r_st,
    ] = rounds.as_slice()
    else {
        bail!("expected the figures of eight runners");
    };
    for (ours, anchor, what, tolerance) in [
        (e_candle, e_st, "embedding, candle", PROBE_TOLERANCE),
        (e_onnx, e_st, "embedding, onnx", PROBE_TOLERANCE),
        (e_int8, e_st, "embedding, onnx int8", INT8_PROBE_TOLERANCE),
        (r_candle, r_st, "reranking, candle", PROBE_TOLERANCE),
        (r_onnx, r_st, "reranking, onnx", PROBE_TOLERANCE),
        (r_int8, r_st, "reranking, onnx int8", INT8_SCORE_TOLERANCE),
    ] {
        check_same_output(
            &ours[0],
            &anchor[0],
            &format!("{what} vs sentence-transformers"),
            tolerance,
        )?;
    }
    let versions = format!(
        "torch {} (OMP_WAIT_POLICY=PASSIVE), sentence-transformers {}; {THREADS} threads",
        e_st[0].text("torch").unwrap_or_default(),
        e_st[0].text("sentence_transformers").unwrap_or_default(),
    );
    let mut rows = workload_rows(
        "xlmr_e5_small.short_b32",
        "XLM-R embedder (multilingual-e5-small shapes), 32 short texts per call, prompt \
         \"query\"",
        Unit::SentencesPerSecond,
        EMBED_VS_ST,
        e_candle,
        e_onnx,
        e_st,
        &format!(
            "{EMBED_MODEL}: hidden 384, 12 layers, random weights; embed_with_prompt vs \
             SentenceTransformer.encode(prompt_name=\"query\"); {versions}"
        ),
    )?;
    rows.extend(workload_rows(
        "rerank_minilm.pairs_b32",
        "cross-encoder reranking (ms-marco-MiniLM-L6 shapes), 32 (query, document) pairs \
         per call",
        Unit::PairsPerSecond,
        RERANK_VS_ST,
        r_candle,
        r_onnx,
        r_st,
        &format!(
            "{RERANK_MODEL}: BERT hidden 384, 6 layers, random weights; rerank vs \
             CrossEncoder.predict; documents of two short sentences; {versions}"
        ),
    )?);
    let int8_note = |model: &str| {
        format!(
            "{model}: the fp32 graph's weight products quantized by {QUANTIZE_SCRIPT} \
             (int8 weights per column, uint8 activations on calibrated scales); not the \
             anchor's fp32 maths, so no target"
        )
    };
    rows.push(
        Row::new(
            "text.xlmr_e5_small.short_b32.onnx_int8_vs_st",
            "XLM-R embedder (multilingual-e5-small shapes), 32 short texts per call, prompt \
             \"query\": onnx int8 vs sentence-transformers (fp32)",
            Unit::SentencesPerSecond,
            Side::new("dp onnx int8", series(e_int8, "per_s")?),
            Side::new("sentence-transformers", series(e_st, "per_s")?),
            Vec::new(),
        )?
        .with_note(int8_note(EMBED_INT8_MODEL)),
    );
    rows.push(
        Row::new(
            "text.rerank_minilm.pairs_b32.onnx_int8_vs_st",
            "cross-encoder reranking (ms-marco-MiniLM-L6 shapes), 32 (query, document) pairs \
             per call: onnx int8 vs sentence-transformers (fp32)",
            Unit::PairsPerSecond,
            Side::new("dp onnx int8", series(r_int8, "per_s")?),
            Side::new("sentence-transformers", series(r_st, "per_s")?),
            Vec::new(),
        )?
        .with_note(int8_note(RERANK_INT8_MODEL)),
    );
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

    #[test]
    fn the_target_sits_on_the_faster_provider() {
        let candle = [figures(r#"{"per_s": 100}"#), figures(r#"{"per_s": 110}"#)];
        let onnx = [figures(r#"{"per_s": 300}"#), figures(r#"{"per_s": 320}"#)];
        let st = [figures(r#"{"per_s": 150}"#), figures(r#"{"per_s": 160}"#)];
        let rows = workload_rows(
            "w",
            "what",
            Unit::SentencesPerSecond,
            1.5,
            &candle,
            &onnx,
            &st,
            "n",
        )
        .unwrap();
        assert_eq!(rows[0].id, "text.w.candle_vs_st");
        assert!(rows[0].targets.is_empty() && rows[0].pass.is_none());
        assert_eq!(rows[1].id, "text.w.onnx_vs_st");
        assert_eq!(rows[1].pass, Some(true));
        let rows = workload_rows(
            "w",
            "what",
            Unit::PairsPerSecond,
            1.5,
            &onnx,
            &candle,
            &st,
            "n",
        )
        .unwrap();
        assert_eq!(rows[0].pass, Some(true));
        assert!(rows[1].targets.is_empty());
    }

    #[test]
    fn outputs_must_agree_value_by_value() {
        let a = figures(r#"{"probe": [0.5, -0.25]}"#);
        let close = figures(r#"{"probe": [0.5005, -0.25]}"#);
        let far = figures(r#"{"probe": [0.6, -0.25]}"#);
        let short = figures(r#"{"probe": [0.5]}"#);
        check_same_output(&a, &close, "x", PROBE_TOLERANCE).unwrap();
        check_same_output(&a, &far, "x", 0.2).unwrap();
        assert!(check_same_output(&a, &far, "x", PROBE_TOLERANCE).is_err());
        assert!(check_same_output(&a, &short, "x", PROBE_TOLERANCE).is_err());
        assert!(check_same_output(&a, &figures("{}"), "x", PROBE_TOLERANCE).is_err());
    }

    #[test]
    fn inputs_are_32_texts_and_32_documents() {
        let inputs = inputs_json();
        assert_eq!(inputs["texts"].as_array().unwrap().len(), 32);
        assert_eq!(inputs["documents"].as_array().unwrap().len(), 32);
        assert_eq!(inputs["query"], QUERY);
    }
}
