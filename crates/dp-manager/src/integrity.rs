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

use dp_digest::{
    ArtifactPins, LockEntry, LockFile, OpenedArtifacts, VerificationCache, VerifyOptions,
    VerifyReport, VerifyStatus, open_verified, verify_model,
};
use dp_spec::{ModelError, ModelSpec, Runtime};

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
