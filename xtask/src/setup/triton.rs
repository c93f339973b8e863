//! The `triton` asset: a venv at `.dp-assets/triton/venv` holding `nvidia-pytriton` (whose
//! wheel carries `tritonserver` 2.51, its Python backend and per-Python stubs), `onnxruntime`
//! for models served by the Python backend, and `tritonclient[http]` for the bench anchor;
//! plus the backend folder `tritonserver --backend-directory` wants,
//! `.dp-assets/triton/backends/python/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{PYTHON_VERSION, Stamp, StepContext, check_python_version, install_pinned_venv};
use crate::fsutil::sha256_file;
use crate::process;

/// The asset's folder, relative to the workspace root.
pub(crate) const TRITON_DIR: &str = ".dp-assets/triton";

/// The hash-pinned requirements, relative to the workspace root.
const REQUIREMENTS: &str = "xtask/requirements/triton.txt";

/// Bumped when the layout below changes, so the stamp forces a rebuild.
const LAYOUT_VERSION: &str = "triton-layout-1";

/// The venv's `site-packages`.
fn site_packages(triton_dir: &Path) -> PathBuf {
    triton_dir
        .join("venv/lib")
        .join(format!("python{PYTHON_VERSION}"))
        .join("site-packages")
}

/// Makes the asset current.
pub(super) fn ensure(cx: &StepContext<'_>) -> Result<String> {
    let requirements = cx.root.join(REQUIREMENTS);
    let digest = format!("{}+{LAYOUT_VERSION}", sha256_file(&requirements)?);
    let dir = cx.root.join(TRITON_DIR);
    let venv = dir.join("venv");
    let python = venv.join("bin/python");
    let site = site_packages(&dir);
    let server = site.join("pytriton/tritonserver/bin/tritonserver");
    let backend = dir.join("backends/python");
    let stamp = Stamp {
        path: dir.join(".dp-stamp"),
    };
    let works = || {
        server.is_file()
            && backend.join("triton_python_backend_stub").is_file()
            && process::succeeds(
                Command::new(&python).args(["-c", "import onnxruntime, numpy, tritonclient.http"]),
            )
    };
    if stamp.matches(&digest) && works() {
        return Ok("up to date".into());
    }

    check_python_version(&cx.args.python)?;
    stamp.clear()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    install_pinned_venv(
        &cx.args.python,
        &venv,
        &requirements,
        "install Python's venv module (Debian: the python3-venv package) or pass \
         --python /path/to/python3.11",
        &format!(
            "check the network access to PyPI; a hash mismatch means {REQUIREMENTS} lacks \
             the wheel pip picked for this platform (see that file to re-pin)"
        ),
    )?;
    make_backend_dir(&site, &backend)?;
    if !works() {
        bail!(
            "{} was installed but lacks tritonserver or the python backend stub, or cannot \
             import onnxruntime/numpy/tritonclient; delete {} and run `cargo xtask setup` again",
            dir.display(),
            dir.display()
        );
    }
    stamp.record(&digest)?;
    Ok(format!(
        "installed {REQUIREMENTS} into {TRITON_DIR}/venv; python backend in {TRITON_DIR}/backends"
    ))
}

/// `<backends>/python/` = the wheel's `libtriton_python.so` and
/// `triton_python_backend_utils.py`, plus the stub built for this Python version (the wheel
/// keeps one per version in `python_backend_stubs/<X.Y>/`). Copies, not links: the
/// backend resolves its stub next to its own real path.
fn make_backend_dir(site: &Path, backend: &Path) -> Result<()> {
    let server_dir = site.join("pytriton/tritonserver");
    if backend.exists() {
        std::fs::remove_dir_all(backend)
            .with_context(|| format!("cannot remove {}", backend.display()))?;
    }
    std::fs::create_dir_all(backend)
        .with_context(|| format!("cannot create {}", backend.display()))?;
    let files = [
        server_dir.join("backends/python/libtriton_python.so"),
        server_dir.join("backends/python/triton_python_backend_utils.py"),
        server_dir
            .join("python_backend_stubs")
            .join(PYTHON_VERSION)
            .join("triton_python_backend_stub"),
    ];
    for from in files {
        let name = from.file_name().context("file name")?;
        let to = backend.join(name);
        std::fs::copy(&from, &to).with_context(|| {
            format!(
                "cannot copy {} to {}: is nvidia-pytriton installed in the venv?",
                from.display(),
                to.display()
            )
        })?;
    }
    Ok(())
}
