//! `dp_models.validate`, `digest` and `verify`: what `dp validate`, `dp digest` and `dp
//! verify` do, through the same library functions, returning what their `--json` prints.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use dp_digest::{
    DigestAlgorithm, DigestError, LockEntry, LockFile, ManifestDiff, ManifestOptions, NoProgress,
    PinCheck, RejectedPath, VerificationCache, VerifyOptions, VerifyReport, VerifyStatus,
    digest_file, manifest_of_artifacts, manifest_of_dir,
};
use dp_manager::integrity;
use dp_spec::{
    Catalog, CatalogEntry, Diagnostic, ErrorCode, Layer, ModelError, ParseLimits, SourceDocument,
    sort_diagnostics, validate_document,
};
use pyo3::prelude::*;
use serde::Serialize;
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
                for path in &paths {
                    validate_path(path, &mut models, &mut profile_count, &mut diagnostics);
                }
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

/// One path of `validate`, as `dp validate` reads it: a directory is a catalog, a file with
/// a top-level `profile` key a profile, any other file a spec.
fn validate_path(
    path: &Path,
    models: &mut usize,
    profiles: &mut usize,
    diagnostics: &mut Vec<Diagnostic>,
) {
    if path.is_dir() {
        match Catalog::load(path) {
            Ok(catalog) => *models += catalog.len(),
            Err(found) => diagnostics.extend(found),
        }
        return;
    }
    let doc = match SourceDocument::read(path, ParseLimits::default()) {
        Ok(doc) => doc,
        Err(err) => {
            diagnostics.push(err.into());
            return;
        }
    };
    if doc.value.get("profile").is_some() {
        match Layer::from_profile_document(&doc) {
            Ok(_) => *profiles += 1,
            Err(found) => diagnostics.extend(found),
        }
    } else {
        match validate_document(&doc) {
            Ok(_) => *models += 1,
            Err(found) => diagnostics.extend(found),
        }
    }
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
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Model(
                ModelError::new(
                    ErrorCode::InvalidInput,
                    format!(
                        "no file or directory at {} (or a symlink there is dangling); check the path",
                        path.display()
                    ),
                )
                .with_detail("path", path.display().to_string()),
            ));
        }
        Err(source) => {
            return Err(Error::Model(ModelError::from(DigestError::Read {
                path: path.to_owned(),
                source,
            })));
        }
    };
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
    let doc = if meta.is_dir() {
        let dir = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let manifest = manifest_of_dir(&dir, &options).map_err(ModelError::from)?;
        let files: Vec<_> = manifest
            .files
            .iter()
            .map(|f| json!({ "path": f.path, "digest": f.digest }))
            .collect();
        json!({ "aggregate": manifest.aggregate, "files": files })
    } else if cache.is_some() {
        json!({ "digest": file_through_manifest(path, &options).map_err(ModelError::from)? })
    } else {
        let digest = digest_file(path, algorithm, options.progress).map_err(ModelError::from)?;
        json!({ "digest": digest.to_string() })
    };
    if let Some(cache) = &cache {
        // A failed save only makes the next run slower; the digest is right.
        let _ = cache.save_if_changed();
    }
    Ok(doc)
}

/// The digest of one file through the manifest of its directory (so the cache applies).
fn file_through_manifest(
    path: &Path,
    options: &ManifestOptions<'_>,
) -> Result<String, DigestError> {
    let absolute = std::fs::canonicalize(path).map_err(|source| DigestError::Read {
        path: path.to_owned(),
        source,
    })?;
    let (Some(dir), Some(name)) = (absolute.parent(), absolute.file_name()) else {
        return digest_file(path, options.algorithm, options.progress).map(|d| d.to_string());
    };
    let name = name.to_string_lossy().into_owned();
    let manifest = manifest_of_artifacts(dir, &[name], options)?;
    Ok(manifest
        .files
        .first()
        .map(|f| f.digest)
        .unwrap_or(manifest.aggregate)
        .to_string())
}

/// One model's outcome, as `dp verify --json` prints it.
#[derive(Debug, Serialize)]
struct ModelOutcome {
    model_name: String,
    /// `ok`, `missing`, `digest_mismatch`, `drift` or `skipped` (no local artifacts).
    status: &'static str,
    locked: bool,
    lock_written: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ModelError>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    missing: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pin: Option<PinCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    all_pin: Option<PinCheck>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    lock_conflicts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    drift: Option<ManifestDiff>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rejected: Vec<RejectedPath>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aggregate: Option<String>,
    files: usize,
    hashed_files: u64,
    cached_files: u64,
    #[serde(skip)]
    report: Option<VerifyReport>,
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
    let mut selected: Vec<&CatalogEntry> = Vec::new();
    for name in names {
        let entry = resolved.catalog.get(name).ok_or_else(|| {
            ModelError::new(
                ErrorCode::ModelNotFound,
                format!("no model named {name:?} in the catalog; run `dp list`"),
            )
            .with_detail("model", name.clone())
        })?;
        if !selected
            .iter()
            .any(|e| e.spec.model_name == entry.spec.model_name)
        {
            selected.push(entry);
        }
    }
    if names.is_empty() {
        selected = resolved.catalog.entries().iter().collect();
    }
    let lock_path = lock_file.unwrap_or_else(|| integrity::default_lock_path(&settings.catalog));
    let lock_state = LockFile::read(&lock_path).map_err(ModelError::from)?;
    let cache = cache_path.map(VerificationCache::load);
    let options = VerifyOptions {
        default_algorithm: DigestAlgorithm::Sha256,
        strict: strict || lock,
        cache: cache.as_ref(),
        progress: &NoProgress,
    };
    let mut outcomes = Vec::with_capacity(selected.len());
    for entry in &selected {
        let locked = lock_state.models.get(&entry.spec.model_name);
        outcomes.push(verify_model(entry, &models_root, locked, &options)?);
    }
    if let Some(cache) = &cache {
        // A failed save only makes the next run slower.
        let _ = cache.save_if_changed();
    }
    if lock {
        write_lock(&lock_path, &selected, &mut outcomes)?;
    }
    let ok = outcomes.iter().all(|o| o.error.is_none());
    Ok(json!({
        "lock_file": lock_path.display().to_string(),
        "ok": ok,
        "models": serde_json::to_value(&outcomes).unwrap_or(serde_json::Value::Null),
    }))
}

/// One model, as `dp verify` checks it (`integrity::verify_spec`, `integrity::report_error`).
fn verify_model(
    entry: &CatalogEntry,
    models_root: &Path,
    locked: Option<&LockEntry>,
    options: &VerifyOptions<'_>,
) -> Result<ModelOutcome, ModelError> {
    let spec = &entry.spec;
    let mut outcome = ModelOutcome {
        model_name: spec.model_name.clone(),
        status: "skipped",
        locked: locked.is_some(),
        lock_written: false,
        error: None,
        missing: Vec::new(),
        pin: None,
        all_pin: None,
        lock_conflicts: Vec::new(),
        drift: None,
        rejected: Vec::new(),
        aggregate: None,
        files: 0,
        hashed_files: 0,
        cached_files: 0,
        report: None,
    };
    if spec.local_artifacts.is_empty() {
        return Ok(outcome);
    }
    let report = integrity::verify_spec(spec, models_root, locked, options)?;
    outcome.status = match report.status() {
        VerifyStatus::Ok => "ok",
        VerifyStatus::Missing => "missing",
        VerifyStatus::DigestMismatch => "digest_mismatch",
        VerifyStatus::Drift => "drift",
    };
    outcome.error = integrity::report_error(spec, models_root, &report);
    outcome.missing.clone_from(&report.missing);
    outcome.pin.clone_from(&report.pin);
    outcome.all_pin.clone_from(&report.all_pin);
    outcome.lock_conflicts.clone_from(&report.lock_conflicts);
    outcome.drift.clone_from(&report.drift);
    outcome.rejected.clone_from(&report.rejected);
    outcome.aggregate = report.manifest.as_ref().map(|m| m.aggregate.to_string());
    outcome.files = report.manifest.as_ref().map_or(0, |m| m.files.len());
    outcome.hashed_files = report.stats.hashed_files;
    outcome.cached_files = report.stats.cached_files;
    outcome.report = Some(report);
    Ok(outcome)
}

/// Records the verified models in the lock file, as `dp verify --lock` does: a model is
/// locked when its files could all be hashed and its pin (if any) matches.
fn write_lock(
    lock_path: &Path,
    selected: &[&CatalogEntry],
    outcomes: &mut [ModelOutcome],
) -> Result<(), ModelError> {
    let now = SystemTime::now();
    LockFile::update(lock_path, |lock| {
        for (entry, outcome) in selected.iter().zip(outcomes.iter_mut()) {
            let Some(report) = &outcome.report else {
                continue;
            };
            let lockable = matches!(report.status(), VerifyStatus::Ok | VerifyStatus::Drift);
            let Some(manifest) = report.manifest.clone().filter(|_| lockable) else {
                continue;
            };
            let spec = &entry.spec;
            lock.models.insert(
                spec.model_name.clone(),
                LockEntry::new(
                    spec.model_version.clone(),
                    spec.weights_digest,
                    manifest,
                    now,
                ),
            );
            outcome.lock_written = true;
            outcome.error = None;
            if outcome.status == "drift" {
                outcome.status = "ok";
            }
        }
        Ok::<_, ModelError>(())
    })
}
