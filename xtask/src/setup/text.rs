//! The text-model assets of `cargo xtask setup`: four tiny random-weight text models in the
//! Hugging Face / sentence-transformers layout (two embedders, two cross-encoder rerankers,
//! BERT and XLM-RoBERTa), and each one's ONNX graph.
//!
//! `xtask/scripts/build_tiny_text.py` draws the weights from fixed seeds (numpy only, no
//! PyTorch) and writes a hand-made SentencePiece-style Unigram tokenizer for the XLM-R models;
//! the BERT models take the real WordPiece tokenizer of the `minilm` asset.
//! `xtask/scripts/build_encoder_onnx.py` writes the ONNX graphs. Every file setup writes is
//! checked against the sha256 pinned below, so the reference outputs of sentence-transformers
//! on these very files, in `tests/data/reference/text/` (see its README), stay valid.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::minilm::MODEL_DIR as MINILM_DIR;
use super::onnx::ONNX_VENV_DIR;
use super::{ASSETS_DIR, Stamp, StepContext, replace_dir};
use crate::fsutil::{sha256_file, sha256_hex};
use crate::process;

/// The hash-pinned requirements of the ONNX venv that runs the scripts (their numpy and
/// onnx decide the bytes written).
const ONNX_REQUIREMENTS: &str = "xtask/requirements/python-onnx.txt";

/// The script that writes the four model folders.
const TINY_TEXT_SCRIPT: &str = "xtask/scripts/build_tiny_text.py";

/// The script that writes the ONNX graphs, and the one whose helpers it imports.
const ENCODER_ONNX_SCRIPT: &str = "xtask/scripts/build_encoder_onnx.py";
const ENCODER_ONNX_HELPERS: &str = "xtask/scripts/build_minilm_onnx.py";

/// The files of the `minilm` folder the BERT models' tokenizer comes from.
const MINILM_TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "vocab.txt",
    "special_tokens_map.json",
    "tokenizer_config.json",
];

/// The XLM-R tokenizer files, the same in both XLM-R models (max length 128 in both).
const XLMR_TOKENIZER_JSON: &str =
    "fc14e55cd8aac14017bf6168313fe42549c2bedc64da53e4f7ec2f7a703fa2ea";
const XLMR_TOKENIZER_CONFIG: &str =
    "00871461c58e8493fee9cb75438724f05597f6743060dfe1e00419d7a283d40a";
const XLMR_SPECIAL_TOKENS_MAP: &str =
    "06e405a36dfe4b9604f484f6a1e619af1a7f7d09e34a8555eb0b77b66318067f";

/// all-MiniLM-L6-v2's WordPiece files, copied unchanged into the BERT models.
const BERT_TOKENIZER_JSON: &str =
    "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037";
const BERT_VOCAB: &str = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3";
const BERT_SPECIAL_TOKENS_MAP: &str =
    "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3";

/// `modules.json` of both embedders (Transformer, Pooling in `1_Pooling`, Normalize).
const MODULES_JSON: &str = "21ddb3037a55ebf4549eb5c1dc44c3f28f10b56ec7f1335c92fd90e5b30d88ac";

/// `tiny-xlmr-e5`: XLMRobertaModel, hidden 32, 2 layers, 4 heads, FFN 64; mean pooling,
/// Normalize, prompts "query: " / "passage: ".
const TINY_XLMR_E5_FILES: [(&str, &str); 9] = [
    (
        "config.json",
        "1900f4bce09ead3310da157a65d76a71c61d5236e3598768aa7094c1cfde7cfa",
    ),
    (
        "model.safetensors",
        "75ce556682164baf4593d45df644ecc1f7f395217f5836439d37a4845d8e77ce",
    ),
    ("tokenizer.json", XLMR_TOKENIZER_JSON),
    ("tokenizer_config.json", XLMR_TOKENIZER_CONFIG),
    ("special_tokens_map.json", XLMR_SPECIAL_TOKENS_MAP),
    ("modules.json", MODULES_JSON),
    (
        "sentence_bert_config.json",
        "e1e8e1346dfc366ef83522c735098ecf64b5a1cd26d01f83757585e6a7786335",
    ),
    (
        "config_sentence_transformers.json",
        "5e37b9a141cc4e3a0d4c4ab65f68cc813344f56e21c3b07b83a997db4775bafa",
    ),
    (
        "1_Pooling/config.json",
        "2f14ec28da83bb63d0deea07806d4d6dd8f2caa6701db67c506872ce0b3adb18",
    ),
];

/// `tiny-bert-cls`: BertModel, hidden 48, 3 layers, 3 heads, FFN 96; CLS pooling,
/// Normalize, the bge-style query prompt, max_seq_length 64.
const TINY_BERT_CLS_FILES: [(&str, &str); 10] = [
    (
        "config.json",
        "e8810f3f8747e01863ac7b8880974821146b8cf7e7663a0673da76213205d88d",
    ),
    (
        "model.safetensors",
        "0b2561ca6e20e9104b56f6497da7d3b25c74692af277a6f8f75f31a4630e6d0a",
    ),
    ("tokenizer.json", BERT_TOKENIZER_JSON),
    (
        "tokenizer_config.json",
        "d340a37d89cdbcdb712feec10261e5ed429bfded75969720a4c7888153aa8bac",
    ),
    ("special_tokens_map.json", BERT_SPECIAL_TOKENS_MAP),
    ("vocab.txt", BERT_VOCAB),
    ("modules.json", MODULES_JSON),
    (
        "sentence_bert_config.json",
        "e938f936ec4aae1ec7b178977b4e9cf8593ae9ee3481759a4612d78e4d442001",
    ),
    (
        "config_sentence_transformers.json",
        "d3130a30232cf4b4dbc236cc4bb8444828ffa7ed191d164b5c2e2559dcc5207e",
    ),
    (
        "1_Pooling/config.json",
        "34915387f022de76f7c599a1942021776ecfff4296900c5acbc004d58a917722",
    ),
];

/// `tiny-reranker`: BertForSequenceClassification, one label, hidden 32, 2 layers, 4 heads,
/// FFN 64; CrossEncoder activation Sigmoid; max length 128.
const TINY_RERANKER_FILES: [(&str, &str); 6] = [
    (
        "config.json",
        "f163b915fbab7472a1f73d97a6d7f3b9901532319da927266508077f75e44940",
    ),
    (
        "model.safetensors",
        "57ea9d4bd55f7573aeaed4949b8ece5ac866b17fe35558165eea5d4b95ec7d90",
    ),
    ("tokenizer.json", BERT_TOKENIZER_JSON),
    (
        "tokenizer_config.json",
        "3c76a9aeae4c99bb08a22c3fb38cb12ee1272bbc27c9b92b6e864d84f704c1d5",
    ),
    ("special_tokens_map.json", BERT_SPECIAL_TOKENS_MAP),
    ("vocab.txt", BERT_VOCAB),
];

/// `tiny-xlmr-reranker`: XLMRobertaForSequenceClassification, one label, hidden 32,
/// 2 layers, 4 heads, FFN 64; CrossEncoder activation Identity (raw logits).
const TINY_XLMR_RERANKER_FILES: [(&str, &str); 5] = [
    (
        "config.json",
        "877b1a4a1a2460556e1c14ce346d1233ad6f9b05df3b1711666eaf2daf1637f3",
    ),
    (
        "model.safetensors",
        "e5ceda25efacfb0e53801886fe1bc205fb49aa6b0f2ad843fa951e33665a53f8",
    ),
    ("tokenizer.json", XLMR_TOKENIZER_JSON),
    ("tokenizer_config.json", XLMR_TOKENIZER_CONFIG),
    ("special_tokens_map.json", XLMR_SPECIAL_TOKENS_MAP),
];

/// One model folder and its ONNX twin.
struct TextModel {
    /// The folder, relative to the workspace root.
    dir: &'static str,
    /// Every file the script writes into it, with its sha256.
    files: &'static [(&'static str, &'static str)],
    /// The ONNX folder: `model.onnx` plus copies of every file above but the safetensors.
    onnx_dir: &'static str,
    /// The sha256 of that `model.onnx` (with the onnx and numpy of the ONNX venv).
    onnx_sha256: &'static str,
}

/// The four models, in the order the script writes them.
const MODELS: [TextModel; 4] = [
    TextModel {
        dir: ".dp-assets/models/tiny-xlmr-e5",
        files: &TINY_XLMR_E5_FILES,
        onnx_dir: ".dp-assets/models/tiny-xlmr-e5-onnx",
        onnx_sha256: "fbe85253d06e7fee570354854790a5b53995630294f68c157031ae5429726e96",
    },
    TextModel {
        dir: ".dp-assets/models/tiny-bert-cls",
        files: &TINY_BERT_CLS_FILES,
        onnx_dir: ".dp-assets/models/tiny-bert-cls-onnx",
        onnx_sha256: "c4a34d092a757ee6009e20a16b39f05348ac6fdc6f38ad0da785bb684c225151",
    },
    TextModel {
        dir: ".dp-assets/models/tiny-reranker",
        files: &TINY_RERANKER_FILES,
        onnx_dir: ".dp-assets/models/tiny-reranker-onnx",
        onnx_sha256: "85cdf5fe2ec56a8f7585e1828228ceadadc24066ac2d430cc9aa5dc7a512a301",
    },
    TextModel {
        dir: ".dp-assets/models/tiny-xlmr-reranker",
        files: &TINY_XLMR_RERANKER_FILES,
        onnx_dir: ".dp-assets/models/tiny-xlmr-reranker-onnx",
        onnx_sha256: "3a12d28a4859af274a18fe8d2d2aca209d0599108949b837e98823f92d0e903b",
    },
];

/// The weights file, which the ONNX folders do not copy.
const WEIGHTS: &str = "model.safetensors";

/// The four model folders, from the seeded script and the MiniLM tokenizer.
pub(super) fn tiny_text(cx: &StepContext<'_>) -> Result<String> {
    let script = cx.root.join(TINY_TEXT_SCRIPT);
    let minilm = cx.root.join(MINILM_DIR);
    // The stamp covers what decides the bytes: the script, the venv's pins, the MiniLM
    // tokenizer files and the pinned outputs (a changed pin rebuilds and checks again).
    let mut inputs = format!(
        "{}\n{}\n",
        sha256_file(&script)?,
        sha256_file(&cx.root.join(ONNX_REQUIREMENTS))?
    );
    for name in MINILM_TOKENIZER_FILES {
        let path = minilm.join(name);
        if !path.is_file() {
            bail!(
                "{} is missing: the `minilm` asset must be set up first (run `cargo xtask setup`)",
                path.display()
            );
        }
        inputs.push_str(&format!("{name}:{}\n", sha256_file(&path)?));
    }
    for model in &MODELS {
        inputs.push_str(model.dir);
        inputs.push('\n');
        for (name, sha) in model.files {
            inputs.push_str(&format!("{name}:{sha}\n"));
        }
    }
    let digest = sha256_hex(inputs.as_bytes());
    let stamps = MODELS.map(|m| Stamp {
        path: cx.root.join(m.dir).join(".dp-stamp"),
    });
    let complete = MODELS.iter().all(|m| {
        m.files
            .iter()
            .all(|(n, _)| cx.root.join(m.dir).join(n).is_file())
    });
    if complete && stamps.iter().all(|s| s.matches(&digest)) {
        return Ok("up to date".into());
    }

    let work = scratch(cx.root, ".xtask-tiny-text-")?;
    let built = work.path().join("models");
    process::run(
        Command::new(onnx_python(cx.root))
            .arg(&script)
            .arg(&minilm)
            .arg(&built)
            .current_dir(cx.root),
        "the ONNX venv is set up by the `python-onnx` asset; run `cargo xtask setup`",
    )?;
    // Check every folder before replacing any, so a stale pin leaves the old assets whole.
    for model in &MODELS {
        let staged = built.join(folder_name(model.dir)?);
        for (file, sha) in model.files {
            check_sha256(
                &staged.join(file),
                sha,
                &format!(
                    "if {TINY_TEXT_SCRIPT}, the MiniLM tokenizer or the onnx-venv pins changed \
                     on purpose, pin the new digest in xtask/src/setup/text.rs and re-make \
                     tests/data/reference/text/ (see its README)"
                ),
            )?;
        }
    }
    for (model, stamp) in MODELS.iter().zip(&stamps) {
        let staged = built.join(folder_name(model.dir)?);
        stamp.clear()?;
        Stamp {
            path: staged.join(".dp-stamp"),
        }
        .record(&digest)?;
        replace_dir(&staged, &cx.root.join(model.dir))?;
    }
    Ok(format!(
        "{} (sha256 of every file verified)",
        MODELS.map(|m| m.dir).join(", ")
    ))
}

/// The ONNX graph of each model, with copies of its config, tokenizer and
/// sentence-transformers files.
pub(super) fn tiny_text_onnx(cx: &StepContext<'_>) -> Result<String> {
    let script = cx.root.join(ENCODER_ONNX_SCRIPT);
    let common = format!(
        "{}\n{}\n{}\n",
        sha256_file(&script)?,
        sha256_file(&cx.root.join(ENCODER_ONNX_HELPERS))?,
        sha256_file(&cx.root.join(ONNX_REQUIREMENTS))?
    );
    let mut built = Vec::new();
    for model in &MODELS {
        let source = cx.root.join(model.dir);
        let target = cx.root.join(model.onnx_dir);
        // The source folder is verified by the `tiny-text` asset; its pins stand for its bytes.
        let mut inputs = format!("{common}{}\n", model.onnx_sha256);
        for (name, sha) in model.files {
            inputs.push_str(&format!("{name}:{sha}\n"));
        }
        let digest = sha256_hex(inputs.as_bytes());
        let stamp = Stamp {
            path: target.join(".dp-stamp"),
        };
        let complete =
            target.join("model.onnx").is_file() && copied(model).all(|n| target.join(n).is_file());
        if complete && stamp.matches(&digest) {
            continue;
        }
        if !source.join(WEIGHTS).is_file() {
            bail!(
                "{} is missing: the `tiny-text` asset must be set up first (run `cargo xtask setup`)",
                source.join(WEIGHTS).display()
            );
        }
        let work = scratch(cx.root, ".xtask-tiny-text-onnx-")?;
        process::run(
            Command::new(onnx_python(cx.root))
                .arg(&script)
                .arg(&source)
                .arg(work.path())
                .current_dir(cx.root),
            "the ONNX venv is set up by the `python-onnx` asset; run `cargo xtask setup`",
        )?;
        check_sha256(
            &work.path().join("model.onnx"),
            model.onnx_sha256,
            &format!(
                "if {ENCODER_ONNX_SCRIPT}, {ENCODER_ONNX_HELPERS}, the {} weights or the \
                 onnx/numpy pins changed on purpose, pin the new digest in \
                 xtask/src/setup/text.rs",
                folder_name(model.dir)?
            ),
        )?;
        for name in copied(model) {
            let dest = work.path().join(name);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            std::fs::copy(source.join(name), &dest)
                .with_context(|| format!("cannot copy {name} into {}", work.path().display()))?;
        }
        Stamp {
            path: work.path().join(".dp-stamp"),
        }
        .record(&digest)?;
        replace_dir(&work.keep(), &target)?;
        built.push(model.onnx_dir);
    }
    if built.is_empty() {
        return Ok("up to date".into());
    }
    Ok(format!("{} (model.onnx sha256 verified)", built.join(", ")))
}

/// The files of `model` its ONNX folder copies: all but the weights.
fn copied(model: &TextModel) -> impl Iterator<Item = &'static str> {
    model
        .files
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| *name != WEIGHTS)
}

/// The ONNX venv's interpreter (numpy and onnx decide the bytes the scripts write).
fn onnx_python(root: &Path) -> PathBuf {
    root.join(ONNX_VENV_DIR).join("bin/python")
}

/// A scratch folder in `.dp-assets`, so the final moves are renames on one file system and
/// an interrupted setup leaves the old assets (or nothing) behind.
fn scratch(root: &Path, prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(root.join(ASSETS_DIR))
        .context("cannot create a scratch folder in .dp-assets")
}

/// Fails unless `path` has the sha256 `expected`; `hint` says what a mismatch means.
fn check_sha256(path: &Path, expected: &str, hint: &str) -> Result<()> {
    let actual = sha256_file(path)?;
    if actual != expected {
        bail!(
            "{} has sha256 {actual}, expected {expected}; {hint}",
            path.display()
        );
    }
    Ok(())
}

/// The last component of an asset folder path.
fn folder_name(dir: &str) -> Result<&str> {
    dir.rsplit('/')
        .next()
        .with_context(|| format!("{dir} has no folder name"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;

    #[test]
    fn every_pin_is_a_sha256() {
        for model in &MODELS {
            let pins = model
                .files
                .iter()
                .map(|(_, sha)| *sha)
                .chain([model.onnx_sha256]);
            for pin in pins {
                assert_eq!(pin.len(), 64, "{pin}");
                assert!(
                    pin.bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                );
            }
            assert!(
                model.files.iter().any(|(n, _)| *n == WEIGHTS),
                "{} pins no weights",
                model.dir
            );
            assert_eq!(
                model.onnx_dir,
                format!("{}-onnx", model.dir),
                "the ONNX folder is named after its model"
            );
        }
    }

    #[test]
    fn the_references_were_made_from_the_pinned_files() {
        // Each reference JSON records the sha256 of the model files it was computed from;
        // a new pin without new references would leave them stale.
        let root = crate::workspace_root().unwrap();
        let dir = root.join("tests/data/reference/text");
        for model in &MODELS {
            let name = folder_name(model.dir).unwrap();
            let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap();
            let json: serde_json::Value = serde_json::from_str(&text).unwrap();
            let recorded = json["model_files_sha256"].as_object().unwrap();
            for (file, sha) in model.files {
                if let Some(value) = recorded.get(*file) {
                    assert_eq!(value.as_str(), Some(*sha), "{name}/{file}");
                }
            }
            assert_eq!(
                recorded.get(WEIGHTS).and_then(|v| v.as_str()),
                Some(model.files.iter().find(|(n, _)| *n == WEIGHTS).unwrap().1),
                "{name}: the reference must record the pinned weights"
            );
        }
    }
}
