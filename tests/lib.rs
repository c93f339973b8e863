//! Shared helpers of the cross-crate tests: where the workspace, its test data and the
//! assets fetched by `cargo xtask setup` are.
//!
//! Assets are optional on a developer machine (a test that needs a missing one says so on
//! stderr and returns), but mandatory in CI: with `CI=true` a missing asset fails the test.

use std::path::{Path, PathBuf};

pub mod clip_reference;
pub mod triton_harness;

/// The workspace root.
#[must_use]
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Copies the folder `from` into `to` (created if absent), recursively: how a test puts a
/// model's files into its own temporary models root.
///
/// # Errors
/// The first file or folder that cannot be read, created or copied.
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// `tests/data`.
#[must_use]
pub fn data_dir() -> PathBuf {
    workspace_root().join("tests").join("data")
}

/// The sample catalog, `specs/catalog`.
#[must_use]
pub fn sample_catalog() -> PathBuf {
    workspace_root().join("specs").join("catalog")
}

/// Whether this run is CI's (`CI=true`), where every asset must be present.
#[must_use]
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// An asset under `.dp-assets/`, if present. Missing: panics in CI, otherwise prints why
/// the test does not run and returns `None`.
///
/// # Panics
/// In CI, when the asset is missing.
#[must_use]
pub fn asset(relative: &str, test: &str) -> Option<PathBuf> {
    let path = workspace_root().join(".dp-assets").join(relative);
    if path.exists() {
        return Some(path);
    }
    assert!(
        !in_ci(),
        "{test}: required asset {} is missing; CI must run `cargo xtask setup` first",
        path.display()
    );
    eprintln!(
        "{test}: NOT RUN: asset {} is missing; run `cargo xtask setup`",
        path.display()
    );
    None
}

/// The cosine similarity of two vectors, in f64.
///
/// # Panics
/// When their lengths differ.
#[must_use]
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "vectors of different lengths");
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Re-pins the spec file at `spec_path` to new weights: its `weights_digest` becomes
/// `digest` and its `artifacts_digest` line goes (what an operator does after changing the
/// weights on purpose).
///
/// # Panics
/// When the file cannot be read or written, or has no `weights_digest`.
pub fn repin_weights(spec_path: &Path, digest: &str) {
    let spec = std::fs::read_to_string(spec_path).expect("spec file");
    let old = spec
        .lines()
        .find_map(|l| l.strip_prefix("weights_digest: "))
        .expect("a weights_digest line")
        .to_owned();
    let spec: String = spec
        .replace(&old, digest)
        .lines()
        .filter(|l| !l.starts_with("artifacts_digest"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(spec_path, spec).expect("spec file written");
}

/// Running the `dp` binary in tests of the command line.
pub mod cli {
    use std::path::Path;
    use std::process::{Command, Output};

    /// `dp` (the binary at `bin`, i.e. `env!("CARGO_BIN_EXE_dp")`) run from the workspace
    /// root on `catalog` and `models`, with a private verification cache in `scratch`, no
    /// `RUST_LOG` and no persistent embedding cache from the environment.
    #[must_use]
    pub fn command(bin: &str, catalog: &Path, models: &Path, scratch: &Path) -> Command {
        let mut command = Command::new(bin);
        command
            .current_dir(super::workspace_root())
            .env_remove("RUST_LOG")
            .env_remove("DP_EMBEDDING_CACHE")
            .env("DP_CATALOG", catalog)
            .env("DP_MODELS_ROOT", models)
            .env("DP_VERIFY_CACHE", scratch.join("verify-cache.json"));
        command
    }

    /// Asserts `dp`'s exit code, showing its output when it differs.
    ///
    /// # Panics
    /// When the code differs.
    pub fn assert_exit(out: &Output, code: i32) {
        assert_eq!(
            out.status.code(),
            Some(code),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `dp`'s stdout as JSON.
    ///
    /// # Panics
    /// When it is not JSON (stdout and stderr are shown).
    #[must_use]
    pub fn json(out: &Output) -> serde_json::Value {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
            panic!(
                "not JSON ({err}): {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}
