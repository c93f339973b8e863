//! `cargo xtask triton-up [--port P]`: a real `tritonserver` (the `triton` setup asset) on
//! 127.0.0.1 serving the test repository (`affine`, `echo`, and the ONNX MiniLM when its
//! asset is present), for trying the Triton provider by hand. It runs in the foreground
//! until Ctrl-C.
//!
//! The repository and the launch are the tests' own (`tests/triton_harness.rs`, included
//! here), so what a person tries is what the tests check.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::fsutil::sha256_file;
use crate::setup::triton::TRITON_DIR;
use crate::triton_harness::{
    MINILM_ONNX, REPOSITORY_TEMPLATES, TritonInstall, TritonServer, standard_deployments,
    write_repository,
};

/// Options of `triton-up`.
#[derive(Debug, Args)]
pub(crate) struct TritonUpArgs {
    /// The HTTP port on 127.0.0.1.
    #[arg(long, default_value_t = 8000)]
    pub(crate) port: u16,
}

/// The installed server, or an error saying to run setup.
pub(crate) fn installed(root: &Path) -> Result<TritonInstall> {
    let install = TritonInstall::at(&root.join(TRITON_DIR));
    if let Some(missing) = install.missing() {
        bail!(
            "{} is missing; run `cargo xtask setup` (asset `triton`) first",
            missing.display()
        );
    }
    Ok(install)
}

/// Writes the standard repository afresh under `dir` and returns its path and the models.
pub(crate) fn fresh_repository(root: &Path, dir: &Path) -> Result<(PathBuf, Vec<String>)> {
    let repo = dir.join("repo");
    if repo.exists() {
        std::fs::remove_dir_all(&repo)
            .with_context(|| format!("cannot remove {}", repo.display()))?;
    }
    let onnx = root.join(MINILM_ONNX);
    let minilm = if onnx.is_file() {
        Some((onnx.clone(), format!("sha256:{}", sha256_file(&onnx)?)))
    } else {
        eprintln!(
            "note: {} is missing (asset `minilm-onnx`); serving without all-minilm-l6-v2",
            onnx.display()
        );
        None
    };
    let deployments = standard_deployments(minilm.as_ref().map(|(p, d)| (p.as_path(), d.as_str())));
    write_repository(&root.join(REPOSITORY_TEMPLATES), &repo, &deployments)
        .with_context(|| format!("cannot write the model repository {}", repo.display()))?;
    Ok((repo, deployments.into_iter().map(|d| d.name).collect()))
}

/// Runs `triton-up`.
pub(crate) fn run(root: &Path, args: &TritonUpArgs) -> Result<()> {
    let install = installed(root)?;
    let dir = root.join(TRITON_DIR).join("triton-up");
    let (repo, models) = fresh_repository(root, &dir)?;
    let names: Vec<&str> = models.iter().map(String::as_str).collect();
    let log = dir.join("server.log");
    let mut server = TritonServer::start_foreground(&install, &repo, args.port, &names, &log)
        .with_context(|| format!("cannot start {}", install.server.display()))?;
    server
        .wait_ready(&names, Duration::from_secs(120))
        .context("tritonserver did not become ready")?;
    println!("{}", server.endpoint());
    eprintln!(
        "tritonserver ready at {} serving {} (repository {}, log {}); Ctrl-C stops it. \
         Point a spec at it with the override <model>.triton.endpoint={}",
        server.endpoint(),
        names.join(", "),
        repo.display(),
        log.display(),
        server.endpoint()
    );
    server.wait().context("waiting for tritonserver")?;
    Ok(())
}
