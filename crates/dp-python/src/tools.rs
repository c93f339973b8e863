//! `dp_models.validate`, `digest` and `verify`: what `dp validate`, `dp digest` and `dp
//! verify` do, through the same library functions, returning what their `--json` prints.

use std::path::{Path, PathBuf};

use dp_digest::{
    DigestAlgorithm, LockFile, ManifestOptions, NoProgress, VerificationCache, VerifyOptions,
    digest_path,
};
use dp_manager::integrity::{self, ModelOutcome};
use dp_spec::{ModelError, sort_diagnostics};
use pyo3::prelude::*;
use serde_json::json;

use crate::convert::{json_to_py, to_py};
use crate::error::Error;
use crate::settings::{Settings, diagnostics_to_py, refuse_special_file, verify_cache};

/// Validates spec files, profile files or catalog directories (`dp validate --json`).
/// Without paths, the catalog (`catalog`, else `$DP_CATALOG`, else `specs/catalog`) with
/// its `profiles` and `overrides`. Returns `{"errors": [diagnostic…], "models": n,
/// "profiles": n}`; the specs are valid when `errors` is empty.
#[pyfunction]
#[pyo3(signature = (paths=Vec::new(), *, catalog=None, profiles=Vec::new(), overrides=None))]
pub(crate) fn validate<'py>(
    py: Python<'py>,
    paths: Vec<PathBuf>,
    catalog: Option<PathBuf>,
    profiles: Vec<PathBuf>,
    overrides: Option<&Bound<'py, PyAny>>,
) -> Result<Bound<'py, PyAny>, Error> {
    for path in paths.iter().filter(|p| !p.is_dir()) {
        refuse_special_file(path, "file")?;
    }
    let settings = if paths.is_empty() {
        // The models root plays no part in validation.
        Some(Settings::from_py(
            catalog,
            Some(PathBuf::new()),
            profiles,
            overrides,
        )?)
    } else {
        None
    };
    let (mut diagnostics, models, profile_count) = py.detach(|| {
        let mut diagnostics = Vec::new();
        let (mut models, mut profile_count) = (0, 0);
        match &settings {
            Some(settings) => match settings.try_load_resolved() {
                Ok(resolved) => {
                    models = resolved.catalog.len();
                    profile_count = settings.profiles.len();
                }
                Err(found) => diagnostics.extend(found),
            },
            None => {
                let mut tally = dp_spec::ValidationTally::default();
                for path in &paths {
                    dp_spec::validate_path(path, &mut tally, &mut diagnostics);
                }
                (models, profile_count) = (tally.models, tally.profiles);
            }
        }
        (diagnostics, models, profile_count)
    });
    sort_diagnostics(&mut diagnostics);
    let out = pyo3::types::PyDict::new(py);
    out.set_item("errors", diagnostics_to_py(py, &diagnostics)?)?;
    out.set_item("models", models)?;
    out.set_item("profiles", profile_count)?;
    Ok(out.into_any())
}

/// The digest of a file (`{"digest": "sha256:…"}`) or of a directory (`{"aggregate",
/// "files": [{"path", "digest"}]}`), as `dp digest --json` prints it. `algo` is `sha256`
/// or `blake3`; `cache` a verification cache file, `strict` rereads every byte anyway.
/// The GIL is released while hashing.
#[pyfunction]
#[pyo3(signature = (path, algo="sha256", *, cache=None, strict=false))]
pub(crate) fn digest<'py>(
    py: Python<'py>,
    path: PathBuf,
    algo: &str,
    cache: Option<PathBuf>,
    strict: bool,
) -> Result<Bound<'py, PyAny>, Error> {
    let algorithm = match algo {
        "sha256" => DigestAlgorithm::Sha256,
        "blake3" => DigestAlgorithm::Blake3,
        other => {
            return Err(Error::invalid(format!(
                "unknown digest algorithm {other:?}; use sha256 or blake3"
            )));
        }
    };
    let doc = py.detach(|| digest_json(&path, algorithm, cache, strict))?;
    Ok(json_to_py(py, &doc)?)
}

/// `digest`'s work, without the GIL.
fn digest_json(
    path: &Path,
    algorithm: DigestAlgorithm,
    cache: Option<PathBuf>,
    strict: bool,
) -> Result<serde_json::Value, Error> {
    let meta = integrity::digest_target(path)?;
    if !meta.is_dir() {
        refuse_special_file(path, "file to hash")?;
    }
    if let Some(cache) = &cache {
        // The same rule as `dp digest --cache`: a regular file, outside the models root.
        let root = Settings::from_py(None, None, Vec::new(), None)?.models_root;
        verify_cache(Some(cache.clone()), &root)?;
    }
    let cache = cache.as_ref().map(VerificationCache::load);
    let options = ManifestOptions {
        algorithm,
        strict,
        cache: cache.as_ref(),
        progress: &NoProgress,
        ..ManifestOptions::default()
    };
    let doc = digest_path(path, meta.is_dir(), &options)
        .map_err(ModelError::from)?
        .to_json();
    if let Some(cache) = &cache {
        // A failed save only makes the next run slower; the digest is right.
        let _ = cache.save_if_changed();
    }
    Ok(doc)
}

/// Verifies models' local artifacts against their pins and the lock file, as `dp verify
/// --json` does; with `lock=True` records their current state in the lock file (and reads
/// every byte). `names` are model names or aliases (default: every model). Returns
/// `{"lock_file", "ok", "models": [outcome…]}` where each outcome has `status` (`ok`,
/// `missing`, `digest_mismatch`, `drift`, `skipped`) and, when not ready, `error`. Raises
/// `ModelNotFound` for an unknown name and `InvalidSpec` for a catalog with problems.
#[pyfunction]
#[pyo3(signature = (names=Vec::new(), lock=false, *, strict=false, catalog=None, models_root=None, profiles=Vec::new(), overrides=None, lock_file=None, cache=None))]
#[allow(
    clippy::too_many_arguments,
    reason = "the Python function's keyword arguments"
)]
pub(crate) fn verify<'py>(
    py: Python<'py>,
    names: Vec<String>,
    lock: bool,
    strict: bool,
    catalog: Option<PathBuf>,
    models_root: Option<PathBuf>,
    profiles: Vec<PathBuf>,
    overrides: Option<&Bound<'py, PyAny>>,
    lock_file: Option<PathBuf>,
    cache: Option<PathBuf>,
) -> Result<Bound<'py, PyAny>, Error> {
    let settings = Settings::from_py(catalog, models_root, profiles, overrides)?;
    let doc = py.detach(|| verify_json(&settings, &names, lock, strict, lock_file, cache))?;
    to_py(py, &doc)
}

/// `verify`'s work, without the GIL.
fn verify_json(
    settings: &Settings,
    names: &[String],
    lock: bool,
    strict: bool,
    lock_file: Option<PathBuf>,
    cache: Option<PathBuf>,
) -> Result<serde_json::Value, Error> {
    let resolved = settings.load_resolved()?;
    let models_root = std::fs::canonicalize(&settings.models_root)
        .unwrap_or_else(|_| settings.models_root.clone());
    let cache_path = verify_cache(cache, &models_root)?;
    let selected = integrity::select_models(&resolved.catalog, names)?;
    let lock_path = lock_file.unwrap_or_else(|| integrity::default_lock_path(&settings.catalog));
    let lock_state = LockFile::read(&lock_path).map_err(ModelError::from)?;
    let cache = cache_path.map(VerificationCache::load);
    let options = VerifyOptions {
        default_algorithm: DigestAlgorithm::Sha256,
        strict: strict || lock,
        cache: cache.as_ref(),
        progress: &NoProgress,
    };
    let mut outcomes = integrity::verify_models(&selected, &models_root, &lock_state, &options)?;
    if let Some(cache) = &cache {
        // A failed save only makes the next run slower.
        let _ = cache.save_if_changed();
    }
    if lock {
        integrity::write_lock(&lock_path, &selected, &mut outcomes)?;
    }
    let ok = outcomes.iter().all(ModelOutcome::ready);
    Ok(json!({
        "lock_file": lock_path.display().to_string(),
        "ok": ok,
        "models": serde_json::to_value(&outcomes).unwrap_or(serde_json::Value::Null),
    }))
}
