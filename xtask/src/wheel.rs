//! `cargo xtask wheel`: builds the `dp_models` Python wheel (crates/dp-python) with maturin
//! into `target/wheels/`, offline, and with `--test` installs it into a fresh venv and runs
//! its pytest suite (crates/dp-python/tests), as the `python` step of `cargo xtask ci` does.
//!
//! maturin comes from PyPI, hash-pinned in `xtask/requirements/wheel.txt`, into
//! `.dp-assets/wheel-venv` (reinstalled when the pins change). The test venv is made fresh
//! on every run from `xtask/requirements/python-wheel-test.txt`, whose wheels are downloaded
//! once (hash-checked) into `.dp-assets/wheelhouse/`; later runs install from there with
//! `--no-index`. The wheel is built with `cargo --offline --locked`: it embeds no model and
//! nothing is downloaded while it builds or runs.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use crate::fsutil::{sha256_file, write_atomic};
use crate::process;
use crate::setup::{SetupArgs, install_pinned_venv};

/// The crate maturin builds.
const CRATE_MANIFEST: &str = "crates/dp-python/Cargo.toml";
/// Where wheels go, relative to the workspace root.
pub(crate) const WHEEL_DIR: &str = "target/wheels";
/// The venv holding maturin.
const MATURIN_VENV: &str = ".dp-assets/wheel-venv";
/// maturin's pinned requirements.
const MATURIN_REQUIREMENTS: &str = "xtask/requirements/wheel.txt";
/// The venv the wheel is tested in, made fresh on every `--test` run.
const TEST_VENV: &str = ".dp-assets/wheel-test-venv";
/// The venv `cargo xtask bench embed` times the release wheel in.
const BENCH_VENV: &str = ".dp-assets/bench-wheel-venv";
/// The pinned requirements of the test venv.
const TEST_REQUIREMENTS: &str = "xtask/requirements/python-wheel-test.txt";
/// The hash-checked wheels of [`TEST_REQUIREMENTS`], downloaded once.
const WHEELHOUSE: &str = ".dp-assets/wheelhouse";
/// The pytest suite.
const TESTS: &str = "crates/dp-python/tests";

/// The cargo profile of the wheel's build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Profile {
    /// Optimized: the wheel to distribute.
    Release,
    /// The debug profile `cargo test` uses (its dependencies are already built, candle's
    /// kernels optimized): much faster to build, what CI tests.
    Dev,
}

impl Profile {
    /// The name cargo knows it by.
    const fn as_str(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Dev => "dev",
        }
    }
}

/// Options of `cargo xtask wheel`.
#[derive(Debug, Args)]
pub(crate) struct WheelArgs {
    /// The cargo profile of the build.
    #[arg(long, value_enum, default_value_t = Profile::Release)]
    pub(crate) profile: Profile,
    /// Then install the wheel into a fresh venv and run its pytest suite on the real
    /// models (needs `cargo xtask setup` and the `dp` binary, which it builds).
    #[arg(long)]
    pub(crate) test: bool,
    /// The Python interpreter that creates the venvs.
    #[command(flatten)]
    pub(crate) python: SetupArgs,
}

/// `cargo xtask wheel`.
pub(crate) fn run(root: &Path, args: &WheelArgs) -> Result<()> {
    let started = Instant::now();
    let wheel = build(root, &args.python.python, args.profile)?;
    println!(
        "wheel: built {} ({} profile) in {:.1} s",
        wheel.display(),
        args.profile.as_str(),
        started.elapsed().as_secs_f64()
    );
    if args.test {
        let started = Instant::now();
        test(root, &args.python.python, &wheel)?;
        println!(
            "wheel: pytest passed in {:.1} s (venv included)",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// The `python` step of `cargo xtask ci`: a dev-profile wheel (reusing the `test` step's
/// build), installed and tested.
pub(crate) fn ci(root: &Path, setup: &SetupArgs) -> Result<()> {
    run(
        root,
        &WheelArgs {
            profile: Profile::Dev,
            test: true,
            python: SetupArgs {
                python: setup.python.clone(),
            },
        },
    )
}

/// Makes sure maturin is installed at the pinned version; returns its path.
fn maturin(root: &Path, python: &OsStr) -> Result<PathBuf> {
    let requirements = root.join(MATURIN_REQUIREMENTS);
    let digest = sha256_file(&requirements)?;
    let venv = root.join(MATURIN_VENV);
    let bin = venv.join("bin/maturin");
    let stamp = venv.join(".dp-stamp");
    let current = std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == digest);
    if current && process::succeeds(Command::new(&bin).arg("--version")) {
        return Ok(bin);
    }
    install_pinned_venv(
        python,
        &venv,
        &requirements,
        "install Python's venv module (Debian: the python3-venv package) or pass --python",
        &format!(
            "check the network access to PyPI; a hash mismatch means {MATURIN_REQUIREMENTS} \
             lacks the wheel pip picked for this platform (see that file to add its hash)"
        ),
    )?;
    write_atomic(&stamp, digest.as_bytes())?;
    Ok(bin)
}

/// Builds the wheel; returns its path (the only `dp_models-*.whl` in `target/wheels/`).
fn build(root: &Path, python: &OsStr, profile: Profile) -> Result<PathBuf> {
    let maturin = maturin(root, python)?;
    let out = root.join(WHEEL_DIR);
    // Older wheels are removed so that `pip install target/wheels/dp_models-*.whl`
    // names one file.
    if out.is_dir() {
        for entry in std::fs::read_dir(&out)? {
            let path = entry?.path();
            if is_dp_wheel(&path) {
                std::fs::remove_file(&path)
                    .with_context(|| format!("cannot remove {}", path.display()))?;
            }
        }
    }
    let mut cmd = Command::new(&maturin);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(root.join(CRATE_MANIFEST))
        .arg("--out")
        .arg(&out)
        .args(["--profile", profile.as_str(), "--offline", "--locked"])
        // abi3: one wheel for every CPython from 3.9, built without asking any interpreter.
        .arg("--interpreter")
        .arg(python)
        .current_dir(root);
    process::run(
        &mut cmd,
        "maturin's message is above; `cargo build -p dp-python` shows compile errors faster",
    )?;
    let mut wheels: Vec<PathBuf> = std::fs::read_dir(&out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_dp_wheel(p))
        .collect();
    match (wheels.pop(), wheels.is_empty()) {
        (Some(wheel), true) => Ok(wheel),
        _ => bail!(
            "expected exactly one dp_models-*.whl in {} after maturin build",
            out.display()
        ),
    }
}

/// Whether `path` is a wheel of this project.
fn is_dp_wheel(path: &Path) -> bool {
    path.file_name()
        .and_then(OsStr::to_str)
        .is_some_and(|name| name.starts_with("dp_models-") && name.ends_with(".whl"))
}

/// Installs `wheel` into a fresh venv with the pinned test requirements and runs pytest.
fn test(root: &Path, python: &OsStr, wheel: &Path) -> Result<()> {
    // The reference `dp` the tests compare with, bit for bit: the one `cargo test
    // --workspace` builds (CI's `test` step did; nothing is rebuilt then). `cargo build -p
    // dp-cli` would resolve features for dp-cli alone and rebuild most of the workspace
    // (4.6 minutes of CI).
    process::run(
        &mut process::cargo_command(
            root,
            &[
                "test",
                "--workspace",
                "--tests",
                "--no-run",
                "--offline",
                "--locked",
            ],
        ),
        "the dp binary does not build; see the errors above",
    )?;
    let venv_python = install_fresh(root, python, wheel, &root.join(TEST_VENV))?;
    let mut pytest = Command::new(&venv_python);
    pytest
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root.join(TESTS))
        .env("DP_REPO_ROOT", root)
        .env("DP_BIN", root.join("target/debug/dp"))
        // The package under test is the installed wheel, never the source folder.
        .env_remove("PYTHONPATH")
        .current_dir(root);
    process::run(&mut pytest, "fix the failing Python tests above")
}

/// The release wheel, built and installed into a fresh `.dp-assets/bench-wheel-venv` (with
/// the pinned test requirements: numpy); returns that venv's Python. For `cargo xtask
/// bench embed`, which times the binding as users get it.
pub(crate) fn release_venv(root: &Path, python: &OsStr) -> Result<PathBuf> {
    let wheel = build(root, python, Profile::Release)?;
    install_fresh(root, python, &wheel, &root.join(BENCH_VENV))
}

/// A fresh venv at `venv` with the pinned test requirements (from the wheelhouse, offline
/// once filled) and `wheel`; returns its Python.
fn install_fresh(root: &Path, python: &OsStr, wheel: &Path, venv: &Path) -> Result<PathBuf> {
    let requirements = root.join(TEST_REQUIREMENTS);
    let wheelhouse = fill_wheelhouse(root, python, &requirements)?;
    if venv.exists() {
        std::fs::remove_dir_all(venv)
            .with_context(|| format!("cannot remove {}", venv.display()))?;
    }
    process::run(
        Command::new(python).args(["-m", "venv"]).arg(venv),
        "install Python's venv module (Debian: the python3-venv package) or pass --python",
    )?;
    let venv_python = venv.join("bin/python");
    let pip = |extra: &[&OsStr]| {
        let mut cmd = Command::new(&venv_python);
        cmd.args([
            "-m",
            "pip",
            "install",
            "--no-index",
            "--no-deps",
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
        ])
        .args(extra);
        cmd
    };
    process::run(
        &mut pip(&[
            OsStr::new("--require-hashes"),
            OsStr::new("--only-binary=:all:"),
            OsStr::new("--find-links"),
            wheelhouse.as_os_str(),
            OsStr::new("-r"),
            requirements.as_os_str(),
        ]),
        &format!("delete {WHEELHOUSE} and run again to download the pinned wheels"),
    )?;
    process::run(
        &mut pip(&[wheel.as_os_str()]),
        "the wheel does not install; see pip's message above",
    )?;
    Ok(venv_python)
}

/// Downloads the pinned test wheels once (hash-checked) into [`WHEELHOUSE`]; returns it.
fn fill_wheelhouse(root: &Path, python: &OsStr, requirements: &Path) -> Result<PathBuf> {
    let dir = root.join(WHEELHOUSE);
    let digest = sha256_file(requirements)?;
    let stamp = dir.join(".dp-stamp");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == digest) {
        return Ok(dir);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    process::run(
        Command::new(python)
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
                "-d",
            ])
            .arg(&dir)
            .arg("-r")
            .arg(requirements),
        &format!(
            "check the network access to PyPI; a hash mismatch means {TEST_REQUIREMENTS} \
             lacks the wheel pip picked for this platform (see that file to add its hash)"
        ),
    )?;
    write_atomic(&stamp, digest.as_bytes())?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_projects_wheels_are_recognised() {
        assert!(is_dp_wheel(Path::new(
            "target/wheels/dp_models-0.1.0-cp39-abi3-manylinux_2_34_x86_64.whl"
        )));
        assert!(!is_dp_wheel(Path::new(
            "target/wheels/other-1.0-py3-none-any.whl"
        )));
        assert!(!is_dp_wheel(Path::new(
            "target/wheels/dp_models-0.1.0.tar.gz"
        )));
    }
}
