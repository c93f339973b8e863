//! `cargo xtask gpu-check`: packs what the GPU check needs into `.gpu-check/` (git-ignored),
//! so a GPU machine with no Rust toolchain runs it: the CUDA build of `dp` (release,
//! stripped, xz-compressed), the specs and files of the small models, test images and
//! speech, the tokenizer and spec of all-MiniLM-L6-v2 (its weights are made there, random),
//! and `gpu_check.py`, which runs the checks (see its docstring) and writes their figures.
//!
//! The pack stays under [`MAX_PACK_BYTES`]: the device machines of this workplace take at
//! most 64 MiB with the working tree.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::gpu_build::{self, GpuBuildArgs};
use crate::process;
use crate::setup::{self, ASSETS_DIR};

/// The pack's folder, at the workspace root (git-ignored).
const PACK_DIR: &str = ".gpu-check";

/// The largest pack: the device tool's 64 MiB, less the working tree (~15 MiB) that
/// travels with it.
const MAX_PACK_BYTES: u64 = 48 << 20;

/// The models whose specs and files travel (every one is compared GPU vs CPU there).
const MODELS: [&str; 6] = [
    "tiny-bert-cls",
    "tiny-xlmr-e5-onnx",
    "tiny-xlmr-e5",
    "tiny-clip",
    "tiny-t5",
    "tiny-whisper",
];

/// Test images (CLIP's parity on pixels), from tests/data/images.
const IMAGES: [&str; 3] = ["photo_420.jpg", "rgba.png", "small.webp"];

/// Test audio (Whisper's parity), from the `audio` asset.
const AUDIO: [&str; 2] = ["chirp_16k_s16.wav", "speech_16k_s16.wav"];

/// MiniLM's files other than its weights: its tokenizer and sentence-transformers layout.
const MINILM_FILES: [&str; 9] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
];

/// Options of `gpu-check`.
#[derive(Debug, Args)]
pub(crate) struct GpuCheckArgs {
    /// Pack this `dp` instead of building the CUDA release one (a CPU build makes a pack
    /// for `gpu_check.py --cpu-dry-run`, which tests the script without a GPU).
    #[arg(long)]
    pub(crate) dp: Option<PathBuf>,
    /// The compute capability the CUDA build targets (see `gpu-build`).
    #[arg(long, default_value_t = 90)]
    pub(crate) compute_cap: u32,
    /// The Python 3.11 interpreter that creates the toolchain's venv.
    #[arg(long, env = "DP_PYTHON", default_value = "python3")]
    pub(crate) python: std::ffi::OsString,
}

/// `cargo xtask gpu-check`: builds (unless `--dp`), packs, and prints how to run the pack.
pub(crate) fn run(root: &Path, args: &GpuCheckArgs) -> Result<()> {
    setup::ensure_assets(
        root,
        &[
            "minilm",
            "python-onnx",
            "onnxruntime",
            "tiny-clip",
            "tiny-text",
            "tiny-text-onnx",
            "tiny-t5",
            "tiny-whisper",
            "audio",
        ],
    )?;
    let dp = match &args.dp {
        Some(dp) => dp.clone(),
        None => gpu_build::run(
            root,
            &GpuBuildArgs {
                release: true,
                compute_cap: args.compute_cap,
                python: args.python.clone(),
            },
        )?,
    };
    let pack = root.join(PACK_DIR);
    if pack.exists() {
        std::fs::remove_dir_all(&pack)
            .with_context(|| format!("cannot remove {}", pack.display()))?;
    }
    std::fs::create_dir_all(&pack).with_context(|| format!("cannot create {}", pack.display()))?;
    pack_binary(&dp, &pack, &args.python)?;
    // The CPU ONNX Runtime library (setup's): the check that a library without CUDA is
    // refused for `cuda` and keeps `auto` on the CPU.
    compress(
        &root.join(ASSETS_DIR).join("onnxruntime/libonnxruntime.so"),
        &pack.join("onnxruntime.xz"),
        &args.python,
    )?;
    let models_root = root.join(ASSETS_DIR).join("models");
    for model in MODELS {
        copy_file(
            &spec_path(root, model)?,
            &pack.join("specs").join(format!("{model}.yaml")),
        )?;
        copy_dir(&models_root.join(model), &pack.join("models").join(model))?;
    }
    for image in IMAGES {
        copy_file(
            &root.join("tests/data/images").join(image),
            &pack.join("images").join(image),
        )?;
    }
    for audio in AUDIO {
        copy_file(
            &root.join(ASSETS_DIR).join("audio").join(audio),
            &pack.join("audio").join(audio),
        )?;
    }
    for file in MINILM_FILES {
        copy_file(
            &models_root.join("all-minilm-l6-v2").join(file),
            &pack.join("minilm").join(file),
        )?;
    }
    copy_file(
        &spec_path(root, "all-minilm-l6-v2")?,
        &pack.join("minilm-spec.yaml"),
    )?;
    copy_file(
        &root.join("xtask/src/gpu_check/gpu_check.py"),
        &pack.join("gpu_check.py"),
    )?;
    let size = dir_size(&pack)?;
    if size > MAX_PACK_BYTES {
        bail!(
            "the pack {} is {} MiB, over the {} MiB a device machine takes; pack fewer models",
            pack.display(),
            size >> 20,
            MAX_PACK_BYTES >> 20
        );
    }
    println!(
        "gpu-check: packed {} ({:.1} MiB). On the GPU machine, from the repository root:\n  \
         python3 {PACK_DIR}/gpu_check.py --out $OUT\n(with this workplace's device tool: carry \
         [\"{PACK_DIR}\"]); it writes gpu-check.json and gpu-check.md",
        pack.display(),
        size as f64 / f64::from(1_u32 << 20)
    );
    Ok(())
}

/// The catalog spec file of `model` (`specs/catalog/<role>/<model>.yaml`).
fn spec_path(root: &Path, model: &str) -> Result<PathBuf> {
    let catalog = root.join("specs/catalog");
    for role in
        std::fs::read_dir(&catalog).with_context(|| format!("cannot read {}", catalog.display()))?
    {
        let candidate = role?.path().join(format!("{model}.yaml"));
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("no spec for {model} under {}", catalog.display())
}

/// `dp`, stripped and xz-compressed, as `dp.xz` (the release binary with CUDA's kernels is
/// ~60 MB stripped; compressed it fits the pack).
fn pack_binary(dp: &Path, pack: &Path, python: &std::ffi::OsStr) -> Result<()> {
    let stripped = pack.join("dp");
    process::run(
        Command::new("strip").arg("-o").arg(&stripped).arg(dp),
        "strip (binutils) is needed to pack dp",
    )?;
    compress(&stripped, &pack.join("dp.xz"), python)?;
    std::fs::remove_file(&stripped).with_context(|| format!("cannot remove {}", stripped.display()))
}

/// `from`, xz-compressed into `to` with Python's lzma, which the script unpacks with: no xz
/// tool needed on either side.
fn compress(from: &Path, to: &Path, python: &std::ffi::OsStr) -> Result<()> {
    process::run(
        Command::new(python)
            .args([
                "-c",
                "import lzma, shutil, sys\n\
                 with open(sys.argv[1], 'rb') as src, lzma.open(sys.argv[2], 'wb', preset=6) as dst:\n\
                 \x20   shutil.copyfileobj(src, dst, 1 << 20)",
            ])
            .arg(from)
            .arg(to),
        "Python 3 compresses the pack's binaries (run `cargo xtask setup` for the assets)",
    )
}

/// `cargo xtask ci`'s check of the pack and the script, without a GPU: packs the CPU
/// `dp` the test step built and runs `gpu_check.py --cpu-dry-run --skip-throughput` (device
/// resolution, parity of every packed model across two specs, `device_unavailable`).
pub(crate) fn dry_run(root: &Path, python: &std::ffi::OsStr) -> Result<()> {
    run(
        root,
        &GpuCheckArgs {
            dp: Some(root.join("target/debug/dp")),
            compute_cap: 90,
            python: python.to_owned(),
        },
    )?;
    let out = tempfile::tempdir().context("cannot create a temporary folder")?;
    process::run(
        Command::new(python)
            .arg(root.join(PACK_DIR).join("gpu_check.py"))
            .args(["--cpu-dry-run", "--skip-throughput", "--out"])
            .arg(out.path()),
        "the GPU check's flow failed on the CPU: read the [FAILED] lines above",
    )
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::copy(from, to).with_context(|| {
        format!(
            "cannot copy {} (run `cargo xtask setup` for the assets)",
            from.display()
        )
    })?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    for entry in std::fs::read_dir(from)
        .with_context(|| format!("cannot read {} (run `cargo xtask setup`)", from.display()))?
    {
        let entry = entry?;
        let path = entry.path();
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&path, &target)?;
        } else if !entry.file_name().to_string_lossy().starts_with(".dp-") {
            copy_file(&path, &target)?;
        }
    }
    Ok(())
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        total += if entry.file_type()?.is_dir() {
            dir_size(&entry.path())?
        } else {
            entry.metadata()?.len()
        };
    }
    Ok(total)
}
