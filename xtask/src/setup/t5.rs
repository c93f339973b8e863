//! The T5 assets of `cargo xtask setup`: two tiny random-weight T5 text-generation models in
//! the Hugging Face layout, `tiny-t5` (the v1.1 / flan-t5 layout: gated-GELU, untied head) and
//! `tiny-t5-v1` (the original layout: ReLU, head tied to the embeddings).
//!
//! `xtask/scripts/build_tiny_t5.py` draws the weights from fixed seeds (numpy only, no
//! PyTorch) and writes a hand-made SentencePiece-style Unigram tokenizer with T5's special
//! tokens and sentinels. Every file setup writes is checked against the sha256 pinned below, so
//! the reference outputs of transformers' `generate` on these very files, in
//! `tests/data/reference/generation/` (see its README), stay valid. The benchmark model
//! `t5-small-random` comes from the same script (`--model t5-small-random`), never from setup.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::onnx::ONNX_VENV_DIR;
use super::{ASSETS_DIR, Stamp, StepContext, replace_dir};
use crate::fsutil::{sha256_file, sha256_hex};
use crate::process;

/// The hash-pinned requirements of the ONNX venv that runs the script (its numpy decides the
/// bytes written).
const ONNX_REQUIREMENTS: &str = "xtask/requirements/python-onnx.txt";

/// The script that writes both model folders.
const TINY_T5_SCRIPT: &str = "xtask/scripts/build_tiny_t5.py";

/// The script whose safetensors and JSON writers it imports.
const TINY_TEXT_SCRIPT: &str = "xtask/scripts/build_tiny_text.py";

/// The tokenizer and generation files, the same in both models.
const TOKENIZER_JSON: &str = "a8936509f7772ff2f3abacaae7b21582cb609cee83121fbf53712769f1e0e777";
const TOKENIZER_CONFIG: &str = "d3312ce993fea6a9b2e32c06a870d20c233c1aee2ac0e50568cc0b2f45aa552b";
const SPECIAL_TOKENS_MAP: &str = "5c87151ef0f72a99d1f766a4c418bd2a1f90aaa30a8e22fe5eca9641daebb64f";
const GENERATION_CONFIG: &str = "30fe82ed19d93a7088b7be3cae58bbf152c80130b25e98cb75c346cae823e8fe";

/// `tiny-t5`: gated-GELU, untied `lm_head`, d_model 32, d_kv 8, 4 heads, d_ff 64, 2 + 2
/// layers, 32 buckets, max distance 128.
const TINY_T5_FILES: [(&str, &str); 6] = [
    (
        "config.json",
        "90c2cfcb87e339b4c32b921bff83801e6638103fc91fdf7f829554188d1b3553",
    ),
    ("generation_config.json", GENERATION_CONFIG),
    (
        "model.safetensors",
        "7f0fa8693fe47ac3a84f57588bc6978ae40d06180197bbd070184d80b7074598",
    ),
    ("special_tokens_map.json", SPECIAL_TOKENS_MAP),
    ("tokenizer.json", TOKENIZER_JSON),
    ("tokenizer_config.json", TOKENIZER_CONFIG),
];

/// `tiny-t5-v1`: ReLU, tied head, d_model 48, d_kv 16, 3 heads, d_ff 96, 3 + 3 layers,
/// 16 buckets, max distance 64.
const TINY_T5_V1_FILES: [(&str, &str); 6] = [
    (
        "config.json",
        "89c9f7267784d30857e06578a0a9e1893bea24f10a904b7cf1226edf2ff95059",
    ),
    ("generation_config.json", GENERATION_CONFIG),
    (
        "model.safetensors",
        "9141a118026a98c1dfbbc4e78f806e5c3184ca6ba032371582304644faeba66b",
    ),
    ("special_tokens_map.json", SPECIAL_TOKENS_MAP),
    ("tokenizer.json", TOKENIZER_JSON),
    ("tokenizer_config.json", TOKENIZER_CONFIG),
];

/// One model folder.
struct T5Model {
    /// The folder, relative to the workspace root.
    dir: &'static str,
    /// Every file the script writes into it, with its sha256.
    files: &'static [(&'static str, &'static str)],
}

/// The two models, in the order the script writes them.
const MODELS: [T5Model; 2] = [
    T5Model {
        dir: ".dp-assets/models/tiny-t5",
        files: &TINY_T5_FILES,
    },
    T5Model {
        dir: ".dp-assets/models/tiny-t5-v1",
        files: &TINY_T5_V1_FILES,
    },
];

/// The two model folders, from the seeded script.
pub(super) fn tiny_t5(cx: &StepContext<'_>) -> Result<String> {
    let script = cx.root.join(TINY_T5_SCRIPT);
    // The stamp covers what decides the bytes: the script, the venv's pins and the pinned
    // outputs (a changed pin rebuilds and checks again).
    let mut inputs = format!(
        "{}\n{}\n{}\n",
        sha256_file(&script)?,
        sha256_file(&cx.root.join(TINY_TEXT_SCRIPT))?,
        sha256_file(&cx.root.join(ONNX_REQUIREMENTS))?
    );
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

    let work = tempfile::Builder::new()
        .prefix(".xtask-tiny-t5-")
        .tempdir_in(cx.root.join(ASSETS_DIR))
        .context("cannot create a scratch folder in .dp-assets")?;
    let built = work.path().join("models");
    process::run(
        Command::new(onnx_python(cx.root))
            .arg(&script)
            .arg(&built)
            .current_dir(cx.root),
        "the ONNX venv is set up by the `python-onnx` asset; run `cargo xtask setup`",
    )?;
    // Check every folder before replacing any, so a stale pin leaves the old assets whole.
    for model in &MODELS {
        let staged = built.join(folder_name(model.dir)?);
        for (file, expected) in model.files {
            let path = staged.join(file);
            let actual = sha256_file(&path)?;
            if actual != *expected {
                bail!(
                    "{} has sha256 {actual}, expected {expected}; if {TINY_T5_SCRIPT} or the \
                     onnx-venv pins changed on purpose, pin the new digest in \
                     xtask/src/setup/t5.rs and re-make tests/data/reference/generation/ (see \
                     its README)",
                    path.display()
                );
            }
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

/// The ONNX venv's interpreter (its numpy decides the bytes the script writes).
fn onnx_python(root: &Path) -> PathBuf {
    root.join(ONNX_VENV_DIR).join("bin/python")
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
            for (_, pin) in model.files {
                assert_eq!(pin.len(), 64, "{pin}");
                assert!(
                    pin.bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                );
            }
            assert!(
                model.files.iter().any(|(n, _)| *n == "model.safetensors"),
                "{} pins no weights",
                model.dir
            );
        }
    }

    #[test]
    fn the_references_were_made_from_the_pinned_files() {
        // Each reference JSON records the sha256 of the model files it was computed from;
        // a new pin without new references would leave them stale.
        let root = crate::workspace_root().unwrap();
        let dir = root.join("tests/data/reference/generation");
        for model in &MODELS {
            let name = folder_name(model.dir).unwrap();
            let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap();
            let json: serde_json::Value = serde_json::from_str(&text).unwrap();
            let recorded = json["model_files_sha256"].as_object().unwrap();
            assert_eq!(recorded.len(), model.files.len(), "{name}");
            for (file, sha) in model.files {
                assert_eq!(
                    recorded.get(*file).and_then(|v| v.as_str()),
                    Some(*sha),
                    "{name}/{file}"
                );
            }
        }
    }
}
