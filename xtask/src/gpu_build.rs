//! `cargo xtask gpu-build`: compiles `dp` with CUDA (candle's `cuda` feature; the ONNX
//! provider's CUDA execution provider is always compiled in) on any Linux machine, GPU or
//! not, with no machine-wide CUDA installation.
//!
//! - The toolchain (nvcc and its headers, CUDA 13.0) comes from hash-pinned PyPI wheels
//!   (`xtask/requirements/cuda-build.txt`) installed into `.dp-assets/cuda-build/venv`.
//! - Linking needs `libcuda`, `libcublas`, `libcublasLt`, `libcurand` and `libnvrtc`, which
//!   `cudarc` (candle's CUDA binding) links dynamically. The driver's `libcuda` is never in a
//!   wheel, and cuBLAS alone is a 400 MB download, so the link is made against stubs, as
//!   NVIDIA's own `lib/stubs/libcuda.so` is used: a shared library with the right soname
//!   (`libcuda.so.1`, `libcublas.so.13`…) that defines every function cudarc declares, made
//!   here with the C compiler from cudarc's own declarations. The binary records those
//!   sonames; on a GPU machine the dynamic loader finds the real driver and the CUDA 13
//!   libraries (the PyTorch cu130 wheels' `nvidia/cu13/lib`, or a CUDA installation) — see
//!   docs/gpu.md. The stubs are never on a runtime library path.
//! - `CUDA_COMPUTE_CAP` picks the architecture candle's kernels are compiled for (PTX, which
//!   the driver compiles for the device it runs on): 90 (Hopper) unless told otherwise.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::fsutil::sha256_file;
use crate::process;
use crate::setup::{self, ASSETS_DIR, Stamp};

/// The pinned toolchain wheels, relative to the workspace root.
const REQUIREMENTS: &str = "xtask/requirements/cuda-build.txt";

/// The toolchain's folder under the assets folder.
const TOOLCHAIN_DIR: &str = "cuda-build";

/// The CUDA major release of the pinned toolchain: the sonames the stubs carry.
const CUDA_MAJOR: &str = "13";

/// The libraries cudarc links: its module with the declarations, the library's name for
/// `-l`, and the soname the real library has in CUDA 13.
const LINKED_LIBRARIES: [(&str, &str, &str); 5] = [
    ("driver", "cuda", "libcuda.so.1"),
    ("cublas", "cublas", "libcublas.so.13"),
    ("cublaslt", "cublasLt", "libcublasLt.so.13"),
    ("curand", "curand", "libcurand.so.10"),
    ("nvrtc", "nvrtc", "libnvrtc.so.13"),
];

/// Options of `gpu-build`.
#[derive(Debug, Args)]
pub(crate) struct GpuBuildArgs {
    /// Build with the release profile (what `gpu-check` ships); the dev profile otherwise.
    #[arg(long)]
    pub(crate) release: bool,
    /// The compute capability candle's CUDA kernels target (`CUDA_COMPUTE_CAP`): 90 for
    /// Hopper (H100, H200), 89 Ada, 80 Ampere A100.
    #[arg(long, default_value_t = 90)]
    pub(crate) compute_cap: u32,
    /// The Python 3.11 interpreter that creates the toolchain's venv.
    #[arg(long, env = "DP_PYTHON", default_value = "python3")]
    pub(crate) python: OsString,
}

/// `cargo xtask gpu-build`: the toolchain, the stubs, then `cargo build -p dp-cli
/// --features cuda`. Returns the path of the built `dp`.
pub(crate) fn run(root: &Path, args: &GpuBuildArgs) -> Result<PathBuf> {
    let cuda_root = toolchain(root, &args.python)?;
    stubs(root, &cuda_root)?;
    let mut cmd = process::cargo_command(root, &["build", "-p", "dp-cli", "--features", "cuda"]);
    if args.release {
        cmd.arg("--release");
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![cuda_root.join("bin")];
    paths.extend(std::env::split_paths(&path));
    cmd.env(
        "PATH",
        std::env::join_paths(paths).context("the PATH cannot hold the toolchain's folder")?,
    )
    // cudarc's link search and bindgen_cuda's include path; nvcc names the CUDA release.
    .env("CUDA_ROOT", &cuda_root)
    .env("CUDA_COMPUTE_CAP", args.compute_cap.to_string());
    process::run(
        &mut cmd,
        "read the compiler's message above; `rm -rf .dp-assets/cuda-build` makes the toolchain \
         again",
    )?;
    let dp = root
        .join("target")
        .join(if args.release { "release" } else { "debug" })
        .join("dp");
    check_linked(&dp)?;
    println!(
        "gpu-build: {} (CUDA {CUDA_MAJOR}, compute capability {}); on the GPU machine the \
         driver and the CUDA {CUDA_MAJOR} libraries must be on the loader's path (docs/gpu.md)",
        dp.display(),
        args.compute_cap
    );
    Ok(dp)
}

/// Makes the pinned toolchain current and returns its CUDA root (`nvidia/cu13` in the
/// venv: `bin/nvcc`, `include/`, `lib/`).
fn toolchain(root: &Path, python: &OsString) -> Result<PathBuf> {
    let requirements = root.join(REQUIREMENTS);
    let digest = sha256_file(&requirements)?;
    let dir = root.join(ASSETS_DIR).join(TOOLCHAIN_DIR);
    let venv = dir.join("venv");
    let cuda_root = venv
        .join("lib")
        .join(format!("python{}", setup::PYTHON_VERSION))
        .join("site-packages/nvidia")
        .join(format!("cu{CUDA_MAJOR}"));
    let nvcc = cuda_root.join("bin/nvcc");
    let stamp = Stamp {
        path: dir.join(".dp-stamp"),
    };
    let works = || process::succeeds(Command::new(&nvcc).arg("--version"));
    if stamp.matches(&digest) && works() {
        return Ok(cuda_root);
    }
    setup::check_python_version(python)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    stamp.clear()?;
    setup::install_pinned_venv(
        python,
        &venv,
        &requirements,
        "install Python's venv module (Debian: the python3-venv package) or pass --python \
         /path/to/python3.11",
        &format!(
            "check the network access to PyPI; a hash mismatch means {REQUIREMENTS} lacks the \
             wheel pip picked for this platform"
        ),
    )?;
    if !works() {
        bail!(
            "{} does not run after installing {REQUIREMENTS}; delete {} and try again",
            nvcc.display(),
            dir.display()
        );
    }
    stamp.record(&digest)?;
    Ok(cuda_root)
}

/// The names of the functions cudarc declares in one of its `sys` modules: the symbols a
/// binary linking that library may reference.
fn declared_functions(source: &str) -> Vec<&str> {
    let mut names: Vec<&str> = source
        .lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix("fn ")?;
            let name = &rest[..rest.find('(')?];
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            valid.then_some(name)
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Writes the link-time stubs into `<cuda_root>/lib/stubs` (where cudarc's build script
/// searches), from the declarations of the cudarc version in Cargo.lock, plus a
/// `libcudart.so` link to the wheel's real runtime (candle's MoE kernels link it by that
/// name; the wheel only has `libcudart.so.13`).
fn stubs(root: &Path, cuda_root: &Path) -> Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .cargo_path(process::cargo())
        .current_dir(root)
        .features(cargo_metadata::CargoOpt::SomeFeatures(vec![
            "dp-cli/cuda".into(),
        ]))
        .exec()
        .context("`cargo metadata --features dp-cli/cuda` failed; fix Cargo.toml or Cargo.lock")?;
    let cudarc = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "cudarc")
        .context("cudarc is not in the dependency graph of dp-cli's `cuda` feature")?;
    let sources = cudarc
        .manifest_path
        .parent()
        .context("cudarc's manifest has no folder")?
        .join("src");
    let out = cuda_root.join("lib/stubs");
    std::fs::create_dir_all(&out)
        .with_context(|| format!("cannot create {out}", out = out.display()))?;
    let scratch = tempfile::tempdir().context("cannot create a temporary folder")?;
    for (module, name, soname) in LINKED_LIBRARIES {
        let declarations = sources.join(module).join("sys/mod.rs");
        let text = std::fs::read_to_string(&declarations)
            .with_context(|| format!("cannot read {declarations}"))?;
        let functions = declared_functions(&text);
        if functions.is_empty() {
            bail!("no function declaration found in {declarations}: has cudarc changed layout?");
        }
        // Signatures do not matter to the linker; the bodies are never run (the stubs are
        // not on any runtime path: the real library with this soname is).
        let c_source: String = functions
            .iter()
            .map(|f| format!("void {f}(void) {{}}\n"))
            .collect();
        let c_file = scratch.path().join(format!("{name}.c"));
        std::fs::write(&c_file, c_source)
            .with_context(|| format!("cannot write {}", c_file.display()))?;
        let library = out.join(format!("lib{name}.so"));
        process::run(
            Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()))
                .args(["-shared", "-fPIC", "-o"])
                .arg(&library)
                .arg(format!("-Wl,-soname,{soname}"))
                .arg(&c_file),
            "a C compiler (gcc or clang as `cc`, or $CC) is needed to make the link stubs",
        )?;
    }
    let cudart = out.join("libcudart.so");
    if cudart.symlink_metadata().is_ok() {
        std::fs::remove_file(&cudart)
            .with_context(|| format!("cannot remove {}", cudart.display()))?;
    }
    std::os::unix::fs::symlink(format!("../libcudart.so.{CUDA_MAJOR}"), &cudart)
        .with_context(|| format!("cannot link {}", cudart.display()))?;
    Ok(())
}

/// Checks that `dp` records the CUDA libraries by their runtime sonames (not a stub's path):
/// what lets the loader find the real ones on a GPU machine.
fn check_linked(dp: &Path) -> Result<()> {
    let output = Command::new("readelf")
        .arg("-d")
        .arg(dp)
        .output()
        .context("cannot run readelf (binutils) to check the CUDA build's libraries")?;
    let dynamic = String::from_utf8_lossy(&output.stdout);
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    for soname in ["libcuda.so.1", "libcublas.so.13"] {
        if !needed.contains(&soname) {
            bail!(
                "{} does not link {soname} (it needs: {}): the CUDA feature did not reach the \
                 binary",
                dp.display(),
                needed.join(", ")
            );
        }
    }
    if needed.iter().any(|n| n.contains('/')) {
        bail!(
            "{} records a library by path ({needed:?}); it would not run elsewhere",
            dp.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_are_read_from_extern_blocks_and_wrappers() {
        let source = "\
pub unsafe fn cuInit(flags: u32) -> CUresult {
    extern \"C\" {
        fn cuInit(flags: u32) -> CUresult;
    }
    cuInit(flags)
}
        fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytesize: usize) -> CUresult;
    type _F = unsafe extern \"C\" fn(u32) -> CUresult;
    // fn not_code(
";
        assert_eq!(declared_functions(source), ["cuInit", "cuMemAlloc_v2"]);
    }
}
