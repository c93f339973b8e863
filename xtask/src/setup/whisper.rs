//! The Whisper assets of `cargo xtask setup`: two tiny random-weight Whisper speech-recognition
//! models in the Hugging Face layout, `tiny-whisper` (80 mel bins, d_model 64, 2 + 2 layers) and
//! `tiny-whisper-128` (128 mel bins as large-v3, d_model 96, 3 + 2 layers), for issue 17.
//!
//! `xtask/scripts/build_tiny_whisper.py` draws the weights from fixed seeds (numpy only, no
//! PyTorch) and writes a small byte-level BPE tokenizer, trained by the script itself, followed by
//! Whisper's special tokens in Whisper's order. Every file setup writes is checked against the
//! sha256 pinned below, so the reference outputs of transformers' `generate` on these very files,
//! in `tests/data/reference/speech/` (see its README), stay valid. The benchmark model
//! `whisper-base-random` comes from the same script (`--model whisper-base-random`), never from
//! setup.

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
const TINY_WHISPER_SCRIPT: &str = "xtask/scripts/build_tiny_whisper.py";

/// The script whose safetensors and JSON writers it imports.
const TINY_TEXT_SCRIPT: &str = "xtask/scripts/build_tiny_text.py";

/// The tokenizer files, the same in both models.
const TOKENIZER_JSON: &str = "9e1a20245ce4fc3ba428e9e53e94bf5a38b2004ef69c1708d931822f9b3ce309";
const TOKENIZER_CONFIG: &str = "57acbecb76c964b90056e882b7d871bde3de5497525777ba2b4e21fe9b15305c";
const SPECIAL_TOKENS_MAP: &str = "135360e16890f432af9cb276b9d1042358c5325633875ac76cf8626cd5645426";
/// `generation_config.json`, the same in both models (both have 448 target positions).
const GENERATION_CONFIG: &str = "e6b9e443cc56e30c0070f9b58e3bba3473b8e22d2f463c278a32666d35e31757";

/// `tiny-whisper`: 80 mel bins, d_model 64, 4 + 4 heads, 2 + 2 layers, FFN 256.
const TINY_WHISPER_FILES: [(&str, &str); 7] = [
    (
        "config.json",
        "9ec136a830da13b4c387d6ffe8a10fd3758b4dbd635d5cc2dd7bdcf27fd89a26",
    ),
    ("generation_config.json", GENERATION_CONFIG),
    (
        "model.safetensors",
        "3b4e22b4426cbdc6386ad1f4d185b6fc1bcccda2d1a4517e0f92f6dc2ac360a1",
    ),
    (
        "preprocessor_config.json",
        "994838f1fa6462c8b9b3c90edada831f11f3dd8b4664634e18f4694d005c9dbf",
    ),
    ("special_tokens_map.json", SPECIAL_TOKENS_MAP),
    ("tokenizer.json", TOKENIZER_JSON),
    ("tokenizer_config.json", TOKENIZER_CONFIG),
];

/// `tiny-whisper-128`: 128 mel bins, d_model 96, 6 + 6 heads, 3 + 2 layers, FFN 192.
const TINY_WHISPER_128_FILES: [(&str, &str); 7] = [
    (
        "config.json",
        "539efea746560c7aa19023567388033118c86b232d26180f48be03f58be2009c",
    ),
    ("generation_config.json", GENERATION_CONFIG),
    (
        "model.safetensors",
        "3bfd19715dcb5fc2b178cc7817b6bbca86b652f3626f9c6ccf170271870143e5",
    ),
    (
        "preprocessor_config.json",
        "654cf18d3e163b948ceaf9766da56ce0b52de265d58673cf61c9376f126bd499",
    ),
    ("special_tokens_map.json", SPECIAL_TOKENS_MAP),
    ("tokenizer.json", TOKENIZER_JSON),
    ("tokenizer_config.json", TOKENIZER_CONFIG),
];

/// One model folder.
struct WhisperModel {
    /// The folder, relative to the workspace root.
    dir: &'static str,
    /// Every file the script writes into it, with its sha256.
    files: &'static [(&'static str, &'static str)],
}

/// The two models, in the order the script writes them.
const MODELS: [WhisperModel; 2] = [
    WhisperModel {
        dir: ".dp-assets/models/tiny-whisper",
        files: &TINY_WHISPER_FILES,
    },
    WhisperModel {
        dir: ".dp-assets/models/tiny-whisper-128",
        files: &TINY_WHISPER_128_FILES,
    },
];

/// The two model folders, from the seeded script.
pub(super) fn tiny_whisper(cx: &StepContext<'_>) -> Result<String> {
    let script = cx.root.join(TINY_WHISPER_SCRIPT);
    // The stamp covers what decides the bytes: the scripts, the venv's pins and the pinned
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
        .prefix(".xtask-tiny-whisper-")
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
                    "{} has sha256 {actual}, expected {expected}; if {TINY_WHISPER_SCRIPT} or \
                     the onnx-venv pins changed on purpose, pin the new digest in \
                     xtask/src/setup/whisper.rs and re-make tests/data/reference/speech/ (see \
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
            for needed in [
                "model.safetensors",
                "config.json",
                "generation_config.json",
                "preprocessor_config.json",
                "tokenizer.json",
            ] {
                assert!(
                    model.files.iter().any(|(n, _)| *n == needed),
                    "{} pins no {needed}",
                    model.dir
                );
            }
        }
    }

    #[test]
    fn the_models_differ_in_shape() {
        // Both share the tokenizer and generation files, never the config or the weights.
        let pin = |m: &WhisperModel, f: &str| m.files.iter().find(|(n, _)| *n == f).unwrap().1;
        for file in [
            "config.json",
            "model.safetensors",
            "preprocessor_config.json",
        ] {
            assert_ne!(pin(&MODELS[0], file), pin(&MODELS[1], file), "{file}");
        }
        assert_eq!(
            pin(&MODELS[0], "tokenizer.json"),
            pin(&MODELS[1], "tokenizer.json")
        );
    }

    #[test]
    fn the_references_were_made_from_the_pinned_files() {
        // Each reference JSON records the sha256 of the model files it was computed from;
        // a new pin without new references would leave them stale.
        let root = crate::workspace_root().unwrap();
        let dir = root.join("tests/data/reference/speech");
        for model in &MODELS {
            let name = folder_name(model.dir).unwrap();
            let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap();
            let json: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(json["model"].as_str(), Some(name));
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
