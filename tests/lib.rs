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
