//! Which pins cover which of a model's bytes, and what a verification that failed says:
//! one rule and one wording for loads, health checks and `dp verify`.
//!
//! The rule:
//! - an in-process model's `weights_digest` pins its FIRST local artifact; a Triton model's
//!   pins its server's deployment (its provider compares it), never its local files;
//! - `artifacts_digest`, when the spec has one, pins ALL local artifacts together;
//! - a lock entry (`dp verify --lock`) pins every file, and must have been written for the
//!   spec's `model_version` and `weights_digest`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use dp_digest::{
    ArtifactPins, DigestError, LockEntry, LockFile, ManifestDiff, OpenedArtifacts, PinCheck,
    RejectedPath, VerificationCache, VerifyOptions, VerifyReport, VerifyStatus, open_verified,
    verify_model,
};
use dp_spec::{Catalog, CatalogEntry, ErrorCode, ModelError, ModelSpec, Runtime};
use serde::Serialize;

use crate::error::ManagerError;

/// The pins of `spec`'s local artifacts, with its lock entry if it has one.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let spec: dp_spec::ModelSpec = serde_json::from_value(serde_json::json!({
///     "model_name": "m", "model_version": "1", "runtime": "triton", "engine": "onnx",
///     "triton": { "endpoint": "http://127.0.0.1:8000", "model_name": "m" },
///     "local_artifacts": ["m/tokenizer.json"],
///     "weights_digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000"
/// }))?;
/// // A Triton model's weights_digest pins its deployment, not its local tokenizer.
/// assert!(dp_manager::integrity::artifact_pins(&spec, None).first_artifact.is_none());
/// # Ok(()) }
/// ```
#[must_use]
pub fn artifact_pins<'a>(spec: &'a ModelSpec, lock: Option<&'a LockEntry>) -> ArtifactPins<'a> {
    ArtifactPins {
        first_artifact: match spec.runtime {
            Runtime::Inprocess => spec.weights_digest,
            Runtime::Triton => None,
        },
        all_artifacts: spec.artifacts_digest,
        lock,
        model_version: Some(&spec.model_version),
        recorded_pin: spec.weights_digest,
    }
}

/// The lock file of a catalog directory: `<catalog>.lock` beside it (`specs/catalog` →
/// `specs/catalog.lock`), where `dp verify --lock` writes and every command reads it.
#[must_use]
pub fn default_lock_path(catalog: &Path) -> PathBuf {
    let catalog = std::path::absolute(catalog).unwrap_or_else(|_| catalog.to_owned());
    let name = catalog
        .file_name()
        .map_or_else(|| "catalog".into(), |n| n.to_string_lossy().into_owned());
    catalog.with_file_name(format!("{name}.lock"))
}

/// The lock entry of `spec` in `lock`, if any.
#[must_use]
pub fn lock_entry<'a>(spec: &ModelSpec, lock: Option<&'a LockFile>) -> Option<&'a LockEntry> {
    lock.and_then(|l| l.models.get(&spec.model_name))
}

/// Verifies `spec`'s local artifacts by path (for reports: `dp verify`, health).
///
/// # Errors
/// What prevents a report (an unreadable directory, an invalid artifact path), in the
/// shared vocabulary.
pub fn verify_spec(
    spec: &ModelSpec,
    models_root: &Path,
    lock: Option<&LockEntry>,
    options: &VerifyOptions<'_>,
) -> Result<VerifyReport, ModelError> {
    verify_model(
        models_root,
        &spec.local_artifacts,
        &artifact_pins(spec, lock),
        options,
    )
    .map_err(|err| ModelError::from(err).with_detail("model", spec.model_name.clone()))
}

/// Opens `spec`'s local artifacts through the verified-bytes API and checks them against
/// its pins (`enforce`) or only reads them (test doubles with placeholder pins).
pub(crate) fn open_spec(
    spec: &ModelSpec,
    models_root: &Path,
    lock: Option<&LockEntry>,
    cache: Option<&VerificationCache>,
    enforce: bool,
) -> Result<OpenedArtifacts, ManagerError> {
    let pins = if enforce {
        artifact_pins(spec, lock)
    } else {
        ArtifactPins::default()
    };
    let options = VerifyOptions {
        cache,
        ..VerifyOptions::default()
    };
    open_verified(models_root, &spec.local_artifacts, &pins, &options)
        .map_err(|err| ManagerError::Verification(err.into()))
}

/// What is wrong with a model whose report is not OK, and what to do (`None` when it is OK).
/// The error code follows the report's status: `weights_missing`,
/// `weights_digest_mismatch` or `version_drift`.
#[must_use]
pub fn report_error(
    spec: &ModelSpec,
    models_root: &Path,
    report: &VerifyReport,
) -> Option<ModelError> {
    report_problem(spec, models_root, report).map(ModelError::from)
}

pub(crate) fn report_problem(
    spec: &ModelSpec,
    models_root: &Path,
    report: &VerifyReport,
) -> Option<ManagerError> {
    let model = spec.model_name.clone();
    match report.status() {
        VerifyStatus::Ok => None,
        VerifyStatus::Missing => Some(ManagerError::ArtifactsMissing {
            model,
            models_root: models_root.display().to_string(),
            missing: report.missing.clone(),
        }),
        VerifyStatus::DigestMismatch => Some(match (&report.pin, &report.all_pin) {
            (Some(pin), _) if !pin.matches() && !report_refuses(report, &pin.artifact) => {
                ManagerError::DigestMismatch {
                    model,
                    artifact: pin.artifact.clone(),
                    expected: pin.expected.to_string(),
                    actual: pin.actual.map(|d| d.to_string()),
                }
            }
            (_, Some(all)) if !all.matches() && report.rejected.is_empty() => {
                ManagerError::ArtifactsDigestMismatch {
                    model,
                    expected: all.expected.to_string(),
                    actual: all.actual.map(|d| d.to_string()),
                }
            }
            _ => ManagerError::ArtifactsRefused {
                model,
                problems: report.rejected.iter().map(|r| r.problem.clone()).collect(),
            },
        }),
        // Entries that cannot be verified are named with their problem (the link and where
        // it leads), not only as a changed path.
        VerifyStatus::Drift => Some(ManagerError::Drift {
            model,
            drift: report.drift.clone().unwrap_or_default(),
            conflicts: report
                .lock_conflicts
                .iter()
                .cloned()
                .chain(report.rejected.iter().map(|r| r.problem.clone()))
                .collect(),
        }),
    }
}

/// Whether a refused entry lies at or under `artifact` (then the refusal, naming the real
/// culprit, says more than "the pin does not match").
fn report_refuses(report: &VerifyReport, artifact: &str) -> bool {
    report.rejected.iter().any(|r| {
        artifact == "." || r.path == artifact || r.path.starts_with(&format!("{artifact}/"))
    })
}

/// One model's outcome of a verification against its pins and its lock entry: an entry of
/// the `models` list that `dp verify --json` prints and the Python `verify` returns.
/// Made by [`verify_outcome`] (the default, with an empty status, is only its base).
#[derive(Debug, Default, Serialize)]
pub struct ModelOutcome {
    /// The model's name.
    pub model_name: String,
    /// `ok`, `missing`, `digest_mismatch`, `drift` or `skipped` (no local artifacts); `dp
    /// verify --golden` adds `output_drift`.
    pub status: &'static str,
    /// Whether the lock file had an entry for the model before this run.
    pub locked: bool,
    /// Whether this run wrote the model's lock entry ([`write_lock`]).
    pub lock_written: bool,
    /// What is wrong and what to do, when the model is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ModelError>,
    /// The artifacts that are not there.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// The check of the pin of the first artifact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin: Option<PinCheck>,
    /// The check of the pin of all artifacts together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_pin: Option<PinCheck>,
    /// Why the lock entry does not apply to the spec.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lock_conflicts: Vec<String>,
    /// How the files differ from the lock entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<ManifestDiff>,
    /// The entries that were refused (special files, links leaving the model directory).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<RejectedPath>,
    /// The aggregate digest of the model's files, when they could all be hashed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<String>,
    /// `dp verify --golden`: what was recorded, or how the outputs compare with the
    /// recorded ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub golden: Option<serde_json::Value>,
    /// How many files the manifest holds.
    pub files: usize,
    /// How many files were read and hashed.
    pub hashed_files: u64,
    /// How many digests came from the verification cache.
    pub cached_files: u64,
    /// The full report, for [`write_lock`] (not printed).
    #[serde(skip)]
    pub report: Option<VerifyReport>,
}

impl ModelOutcome {
    /// Whether the model is ready: no error.
    #[must_use]
    pub fn ready(&self) -> bool {
        self.error.is_none()
    }
}

/// The catalog entries named by `names` (names or aliases, each model once, in the order
/// first named), or every entry of `catalog` when `names` is empty.
///
/// # Errors
/// `model_not_found` for the first name the catalog does not know.
pub fn select_models<'a>(
    catalog: &'a Catalog,
    names: &[String],
) -> Result<Vec<&'a CatalogEntry>, ModelError> {
    if names.is_empty() {
        return Ok(catalog.entries().iter().collect());
    }
    let mut selected: Vec<&CatalogEntry> = Vec::new();
    for name in names {
        let entry = catalog.get(name).ok_or_else(|| {
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
    Ok(selected)
}

/// Verifies each of `selected` against its pins and its entry in `lock` ([`verify_outcome`]),
/// in order.
///
/// # Errors
/// The first error that prevents a model's report.
pub fn verify_models(
    selected: &[&CatalogEntry],
    models_root: &Path,
    lock: &LockFile,
    options: &VerifyOptions<'_>,
) -> Result<Vec<ModelOutcome>, ModelError> {
    selected
        .iter()
        .map(|entry| {
            let locked = lock.models.get(&entry.spec.model_name);
            verify_outcome(&entry.spec, models_root, locked, options)
        })
        .collect()
}

/// Verifies `spec`'s local artifacts ([`verify_spec`]) and describes the outcome, with the
/// error [`report_error`] words. A model without local artifacts is `skipped` (a Triton
/// model's weights live on the server; its provider compares the pin).
///
/// # Errors
/// What prevents a report (an unreadable directory, an invalid artifact path).
pub fn verify_outcome(
    spec: &ModelSpec,
    models_root: &Path,
    locked: Option<&LockEntry>,
    options: &VerifyOptions<'_>,
) -> Result<ModelOutcome, ModelError> {
    let mut outcome = ModelOutcome {
        model_name: spec.model_name.clone(),
        status: "skipped",
        locked: locked.is_some(),
        ..ModelOutcome::default()
    };
    if spec.local_artifacts.is_empty() {
        return Ok(outcome);
    }
    let report = verify_spec(spec, models_root, locked, options)?;
    outcome.status = match report.status() {
        VerifyStatus::Ok => "ok",
        VerifyStatus::Missing => "missing",
        VerifyStatus::DigestMismatch => "digest_mismatch",
        VerifyStatus::Drift => "drift",
    };
    // The library's wording, as loads and health checks report the same problem.
    outcome.error = report_error(spec, models_root, &report);
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

/// Records the verified models (`selected`, with their `outcomes` in the same order) in the
/// lock file at `lock_path`, atomically and under its file lock (`dp verify --lock`). A
/// model is locked when its files could all be hashed and its pin (if any) matches; drift
/// from an older entry is accepted (that is what locking is for), and the older entry's
/// golden outputs are kept (they are what later files must still compute). A locked
/// model's outcome loses its error and a `drift` status becomes `ok`; models that cannot
/// be locked keep their error.
///
/// # Errors
/// A lock file that cannot be read, locked or written.
pub fn write_lock(
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
            let mut new_entry = LockEntry::new(
                spec.model_version.clone(),
                spec.weights_digest,
                manifest,
                now,
            );
            new_entry.golden = lock
                .models
                .get(&spec.model_name)
                .and_then(|old| old.golden.clone());
            lock.models.insert(spec.model_name.clone(), new_entry);
            outcome.lock_written = true;
            outcome.error = None;
            if outcome.status == "drift" {
                outcome.status = "ok";
            }
        }
        Ok::<_, ModelError>(())
    })
}

/// The metadata of `path`, the file or directory `dp digest` is asked to hash (symlinks
/// followed).
///
/// # Errors
/// `invalid_input` naming the path when nothing is there (or a symlink there is dangling);
/// any other failure to read it as the digest library's read error.
pub fn digest_target(path: &Path) -> Result<std::fs::Metadata, ModelError> {
    std::fs::metadata(path).map_err(|err| {
        if err.kind() == std::io::ErrorKind::NotFound {
            ModelError::new(
                ErrorCode::InvalidInput,
                format!(
                    "no file or directory at {} (or a symlink there is dangling); check the path",
                    path.display()
                ),
            )
            .with_detail("path", path.display().to_string())
        } else {
            ModelError::from(DigestError::Read {
                path: path.to_owned(),
                source: err,
            })
        }
    })
}
