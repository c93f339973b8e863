//! The ONNX assets of `cargo xtask setup`: the Python venv that builds and benchmarks ONNX
//! models, the ONNX Runtime library the `onnx` provider loads, and the ONNX MiniLM built
//! from the candle MiniLM's safetensors (no PyTorch).
//!
//! Every input is pinned: wheels by the hashes in `xtask/requirements/python-onnx.txt`, the
//! library and the built model by the sha256 constants below, which setup checks.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{Stamp, StepContext, check_python_version, install_pinned_venv, replace_dir};
use crate::fsutil::{sha256_file, sha256_hex};
use crate::process;

/// The venv of the ONNX tools (onnx, numpy, onnxruntime), relative to the workspace root.
pub(crate) const ONNX_VENV_DIR: &str = ".dp-assets/venv-onnx";

/// Its hash-pinned requirements, relative to the workspace root.
const ONNX_REQUIREMENTS: &str = "xtask/requirements/python-onnx.txt";

/// The wheel the library comes from, and its sha256 (the same pin as in the requirements).
const ORT_REQUIREMENT: &str = "onnxruntime==1.31.1 \
    --hash=sha256:5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f";

/// The plain C-API library inside the wheel.
const ORT_WHEEL_MEMBER: &str = "onnxruntime/capi/libonnxruntime.so.1.31.1";

/// The sha256 of that library.
const ORT_LIBRARY_SHA256: &str = "fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3";

/// Where the library goes, relative to the workspace root (the `onnx` provider's default).
pub(crate) const ORT_LIBRARY: &str = ".dp-assets/onnxruntime/libonnxruntime.so";

/// The candle MiniLM folder the ONNX MiniLM is built from (asset `minilm`).
const MINILM_SOURCE: &str = ".dp-assets/models/all-minilm-l6-v2";

/// The ONNX MiniLM folder, relative to the workspace root.
pub(crate) const MINILM_ONNX_DIR: &str = ".dp-assets/models/all-minilm-l6-v2-onnx";

/// The script that writes `model.onnx`.
const MINILM_ONNX_SCRIPT: &str = "xtask/scripts/build_minilm_onnx.py";

/// The sha256 of the `model.onnx` the script writes with the pinned onnx and numpy; the
/// spec `all-minilm-l6-v2-onnx` pins the same digest.
const MINILM_ONNX_SHA256: &str = "3bf1ca06e00bbd3a7c0b6fd21bba0c5d92a9866e4992414666f0f69c4ee6ebfc";

/// Size of that `model.onnx`: the probe compares it instead of hashing 86 MiB each run.
const MINILM_ONNX_SIZE: u64 = 90_294_697;

/// Files the presets need, copied unchanged from the candle MiniLM folder.
const MINILM_COPIED: [&str; 5] = [
    "tokenizer.json",
    "modules.json",
    "1_Pooling/config.json",
    "sentence_bert_config.json",
    "config.json",
];

/// The venv of the ONNX tools, from the hash-pinned requirements.
pub(super) fn python_onnx(cx: &StepContext<'_>) -> Result<String> {
    let requirements = cx.root.join(ONNX_REQUIREMENTS);
    let digest = sha256_file(&requirements)?;
    let venv = cx.root.join(ONNX_VENV_DIR);
    let python = venv.join("bin/python");
    let stamp = Stamp {
        path: venv.join(".dp-stamp"),
    };
    let works = || {
        process::succeeds(
            Command::new(&python).args(["-c", "import onnx, numpy, onnxruntime, tokenizers"]),
        )
    };
    if stamp.matches(&digest) && works() {
        return Ok("up to date".into());
    }
    check_python_version(&cx.args.python)?;
    stamp.clear()?;
    install_pinned_venv(
        &cx.args.python,
        &venv,
        &requirements,
        "install Python's venv module (Debian: the python3-venv package) or pass \
         --python /path/to/python3.11",
        &format!(
            "check the network access to PyPI; a hash mismatch means {ONNX_REQUIREMENTS} \
             lacks the wheel pip picked for this platform (only CPython 3.11 on Linux x86_64 \
             is pinned)"
        ),
    )?;
    if !works() {
        bail!(
            "the venv at {} was installed but cannot import onnx, numpy, onnxruntime and tokenizers; \
             delete it and run `cargo xtask setup` again",
            venv.display()
        );
    }
    stamp.record(&digest)?;
    Ok(format!(
        "installed {ONNX_REQUIREMENTS} into {ONNX_VENV_DIR}"
    ))
}

/// `libonnxruntime.so` from the pinned PyPI wheel, checked against its own sha256.
pub(super) fn onnxruntime(cx: &StepContext<'_>) -> Result<String> {
    let target = cx.root.join(ORT_LIBRARY);
    let dir = target
        .parent()
        .context("the library path has no parent folder")?;
    // The library's own digest is the stamp: nothing else decides its bytes.
    if target.is_file() && sha256_file(&target)? == ORT_LIBRARY_SHA256 {
        return Ok("up to date".into());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let work = tempfile::Builder::new()
        .prefix(".xtask-onnxruntime-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot create a temporary folder in {}", dir.display()))?;
    let requirement = work.path().join("requirement.txt");
    std::fs::write(&requirement, format!("{ORT_REQUIREMENT}\n"))
        .with_context(|| format!("cannot write {}", requirement.display()))?;
    // The ONNX venv's pip (any pip works): --require-hashes makes pip refuse any other wheel.
    let python = cx.root.join(ONNX_VENV_DIR).join("bin/python");
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
                "--python-version",
                "3.11",
                "--implementation",
                "cp",
                "--platform",
                "manylinux_2_28_x86_64",
                "-d",
            ])
            .arg(work.path())
            .arg("-r")
            .arg(&requirement),
        "check the network access to PyPI",
    )?;
    let wheel = std::fs::read_dir(work.path())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip download left no wheel")?;
    let extracted = work.path().join("libonnxruntime.so");
    // Python's zipfile reads the wheel: no zip crate in xtask for one file.
    process::run(
        Command::new(&python)
            .args([
                "-c",
                "import shutil, sys, zipfile\n\
                 with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, \
                 open(sys.argv[3], 'wb') as dst:\n    shutil.copyfileobj(src, dst)",
            ])
            .arg(&wheel)
            .arg(ORT_WHEEL_MEMBER)
            .arg(&extracted),
        &format!("the wheel lacks {ORT_WHEEL_MEMBER}"),
    )?;
    let actual = sha256_file(&extracted)?;
    if actual != ORT_LIBRARY_SHA256 {
        bail!(
            "{ORT_WHEEL_MEMBER} has sha256 {actual}, expected {ORT_LIBRARY_SHA256}; the wheel \
             was hash-checked, so the pin in xtask/src/setup/onnx.rs is stale"
        );
    }
    std::fs::rename(&extracted, &target)
        .with_context(|| format!("cannot move the library to {}", target.display()))?;
    Ok(format!(
        "{ORT_LIBRARY} (onnxruntime 1.31.1, sha256 verified)"
    ))
}

/// The ONNX MiniLM: `model.onnx` built by the script from the candle MiniLM, plus copies of
/// the preset files, in one folder that appears complete or not at all.
pub(super) fn minilm_onnx(cx: &StepContext<'_>) -> Result<String> {
    let source = cx.root.join(MINILM_SOURCE);
    pinned_onnx_folder(
        cx,
        &PinnedOnnx {
            dir: MINILM_ONNX_DIR,
            script: MINILM_ONNX_SCRIPT,
            sha256: MINILM_ONNX_SHA256,
            size: MINILM_ONNX_SIZE,
            spec: "all-minilm-l6-v2-onnx",
            copied_from: &source,
            copied_from_asset: "minilm",
            // The script reads the safetensors folder and writes OUT_DIR/model.onnx.
            script_args: &|work| vec![source.clone(), work.to_path_buf()],
            extra_stamp: "",
        },
    )
}

/// Where the setup writes the int8 MiniLM, relative to the workspace root.
pub(crate) const MINILM_INT8_DIR: &str = ".dp-assets/models/all-minilm-l6-v2-onnx-int8";

/// The script that quantizes the ONNX MiniLM.
const MINILM_INT8_SCRIPT: &str = "xtask/scripts/quantize_minilm_onnx.py";

/// The sha256 of the `model.onnx` the script writes from the pinned fp32 graph with the
/// pinned onnxruntime; the spec `all-minilm-l6-v2-onnx-int8` pins the same digest.
const MINILM_INT8_SHA256: &str = "5218f9ff01d7d0574b6c4846760b1ce3556e587d8e7b60612ccd9ca5b33fd23a";

/// Its size in bytes (a cheap check that the folder is still complete).
const MINILM_INT8_SIZE: u64 = 58_550_619;

/// The int8 MiniLM: the ONNX MiniLM's `model.onnx` with int8 weights and uint8 activations
/// on scales calibrated by the script, plus copies of the preset files, in one folder that
/// appears complete or not at all.
pub(super) fn minilm_onnx_int8(cx: &StepContext<'_>) -> Result<String> {
    let source = cx.root.join(MINILM_ONNX_DIR);
    let fp32 = source.join("model.onnx");
    if !fp32.is_file() {
        bail!(
            "{} is missing: the `minilm-onnx` asset must be set up first (run `cargo xtask setup`)",
            fp32.display()
        );
    }
    pinned_onnx_folder(
        cx,
        &PinnedOnnx {
            dir: MINILM_INT8_DIR,
            script: MINILM_INT8_SCRIPT,
            sha256: MINILM_INT8_SHA256,
            size: MINILM_INT8_SIZE,
            spec: "all-minilm-l6-v2-onnx-int8",
            copied_from: &source,
            copied_from_asset: "minilm-onnx",
            // The script reads the fp32 graph and the tokenizer it calibrates with (a copied
            // file, so in the stamp) and writes the file it is given.
            script_args: &|work| {
                vec![
                    fp32.clone(),
                    source.join("tokenizer.json"),
                    work.join("model.onnx"),
                ]
            },
            // The fp32 graph is an input too (pinned by `minilm-onnx`).
            extra_stamp: MINILM_ONNX_SHA256,
        },
    )
}

/// A folder holding a `model.onnx` that a script of the ONNX venv writes, pinned by its
/// sha256, and the preset files copied from another model folder.
struct PinnedOnnx<'a> {
    /// The folder, relative to the workspace root.
    dir: &'a str,
    /// The script, relative to the workspace root.
    script: &'a str,
    /// The sha256 the script's `model.onnx` must have (and the spec pins).
    sha256: &'a str,
    /// Its size, a cheap check that the folder is still complete.
    size: u64,
    /// The spec pinning the same digest, named when it differs.
    spec: &'a str,
    /// Where [`MINILM_COPIED`] come from.
    copied_from: &'a Path,
    /// The asset that provides that folder, named when it is missing.
    copied_from_asset: &'a str,
    /// The script's arguments, given the temporary folder it writes into.
    script_args: &'a dyn Fn(&Path) -> Vec<PathBuf>,
    /// Anything else that decides the bytes, for the stamp.
    extra_stamp: &'a str,
}

/// Makes `folder` current: up to date when its stamp, model size and copied files match;
/// otherwise the script runs in a temporary folder next to it, its output is checked against
/// the pin, the preset files are copied, and the folder replaces the old one at once.
fn pinned_onnx_folder(cx: &StepContext<'_>, folder: &PinnedOnnx<'_>) -> Result<String> {
    let target = cx.root.join(folder.dir);
    let script = cx.root.join(folder.script);
    // The stamp covers what decides the folder's bytes: the script, the venv's pins, the
    // copied files and the other inputs (model.onnx itself is pinned and checked below).
    let mut inputs = format!(
        "{}\n{}\n{}\n{}\n",
        sha256_file(&script)?,
        sha256_file(&cx.root.join(ONNX_REQUIREMENTS))?,
        folder.extra_stamp,
        folder.sha256,
    );
    for name in MINILM_COPIED {
        let path = folder.copied_from.join(name);
        if !path.is_file() {
            bail!(
                "{} is missing: the `{}` asset must be set up first (run `cargo xtask setup`)",
                path.display(),
                folder.copied_from_asset
            );
        }
        inputs.push_str(&sha256_file(&path)?);
        inputs.push('\n');
    }
    let digest = sha256_hex(inputs.as_bytes());
    let stamp = Stamp {
        path: target.join(".dp-stamp"),
    };
    let model_in_place = std::fs::metadata(target.join("model.onnx"))
        .is_ok_and(|m| m.is_file() && m.len() == folder.size);
    if stamp.matches(&digest)
        && model_in_place
        && MINILM_COPIED.iter().all(|n| target.join(n).is_file())
    {
        return Ok("up to date".into());
    }
    let models = target
        .parent()
        .context("the model folder has no parent folder")?;
    let work = tempfile::Builder::new()
        .prefix(".xtask-onnx-")
        .tempdir_in(models)
        .with_context(|| format!("cannot create a temporary folder in {}", models.display()))?;
    process::run(
        Command::new(cx.root.join(ONNX_VENV_DIR).join("bin/python"))
            .arg(&script)
            .args((folder.script_args)(work.path()))
            .current_dir(cx.root),
        "the ONNX venv is set up by the `python-onnx` asset; run `cargo xtask setup`",
    )?;
    let actual = sha256_file(&work.path().join("model.onnx"))?;
    if actual != folder.sha256 {
        bail!(
            "{} wrote a model.onnx with sha256 {actual}, expected {}; if the script, the \
             venv's pins or its inputs changed on purpose, pin the new digest in \
             xtask/src/setup/onnx.rs and in specs/catalog/text_embedding/{}.yaml",
            folder.script,
            folder.sha256,
            folder.spec
        );
    }
    for name in MINILM_COPIED {
        copy_into(folder.copied_from, work.path(), name)?;
    }
    Stamp {
        path: work.path().join(".dp-stamp"),
    }
    .record(&digest)?;
    replace_dir(work.keep().as_path(), &target)?;
    Ok(format!(
        "{}/model.onnx (sha256 {})",
        folder.dir, folder.sha256
    ))
}

/// Copies `from/name` to `to/name`, creating folders on the way.
fn copy_into(from: &Path, to: &Path, name: &str) -> Result<()> {
    let dest = to.join(name);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::copy(from.join(name), &dest)
        .with_context(|| format!("cannot copy {name} into {}", to.display()))?;
    Ok(())
}
