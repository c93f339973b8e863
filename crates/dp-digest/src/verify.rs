//! Verifying a model's artifacts against its pin and its lock entry, without knowing what a
//! model spec is: the caller passes the root, the artifact paths, the pin and the entry.

use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::cache::VerificationCache;
use crate::error::DigestError;
use crate::hash::{HashSettings, HashStats, hash_files};
use crate::hash::{NoProgress, Progress};
use crate::lock::LockEntry;
use crate::manifest::{Manifest, ManifestDiff, ManifestEntry};
use crate::walk::{ArtifactKind, Walk, walk_all};
use crate::weights_digest::{DigestAlgorithm, WeightsDigest};

/// How to verify.
pub struct VerifyOptions<'a> {
    /// The algorithm of the manifest when there is neither a pin nor a lock entry to take
    /// it from (default SHA-256).
    pub default_algorithm: DigestAlgorithm,
    /// Hash every file even when the cache knows its digest (the cache is refreshed).
    pub strict: bool,
    /// Where to remember and look up digests; none by default. The caller saves it.
    pub cache: Option<&'a VerificationCache>,
    /// Receives progress.
    pub progress: &'a dyn Progress,
}

impl Default for VerifyOptions<'_> {
    fn default() -> Self {
        Self {
            default_algorithm: DigestAlgorithm::Sha256,
            strict: false,
            cache: None,
            progress: &NoProgress,
        }
    }
}

impl fmt::Debug for VerifyOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyOptions")
            .field("default_algorithm", &self.default_algorithm)
            .field("strict", &self.strict)
            .field("cache", &self.cache.map(VerificationCache::path))
            .finish_non_exhaustive()
    }
}

/// The outcome of comparing the pin with the first artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinCheck {
    /// The artifact the pin covers (the first one), relative to the root.
    pub artifact: String,
    /// The pinned digest.
    pub expected: WeightsDigest,
    /// The digest of the artifact on disk (a file's digest, or a directory's aggregate with
    /// paths relative to it); `None` when a refused entry (e.g. a symlink leaving the root)
    /// makes it impossible to compute.
    pub actual: Option<WeightsDigest>,
}

impl PinCheck {
    /// Whether the bytes on disk are the pinned ones.
    #[must_use]
    pub fn matches(&self) -> bool {
        self.actual == Some(self.expected)
    }
}

/// An entry the manifest rules refuse (a symlink leaving the root, a dangling link, a
/// FIFO, a name `sha256sum` would escape), found while verifying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedPath {
    /// Its path relative to the root.
    pub path: String,
    /// What is wrong and what to do, naming the path (and the link's target).
    pub problem: String,
}

/// Everything verification found for one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Artifacts that do not exist under the root, or are directories holding no file. When
    /// any is missing nothing is hashed:
    /// `pin`, `manifest` and `drift` are `None`.
    pub missing: Vec<String>,
    /// The check of the first artifact's pin, when one was given.
    pub pin: Option<PinCheck>,
    /// The check of the pin of all artifacts together, when one was given (its `artifact`
    /// is [`ALL_ARTIFACTS`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_pin: Option<PinCheck>,
    /// The manifest of all artifacts, paths relative to the root; `None` when artifacts are
    /// missing or entries were refused.
    pub manifest: Option<Manifest>,
    /// Differences from the lock entry's files, when an entry was given (empty when
    /// nothing drifted). Refused entries count as `changed` when the lock has them and as
    /// `added` otherwise.
    pub drift: Option<ManifestDiff>,
    /// Where the lock entry itself disagrees with the spec (another `model_version` or
    /// `weights_digest` than the one it was written for): drift, even when every file
    /// matches.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lock_conflicts: Vec<String>,
    /// Entries the manifest rules refuse.
    pub rejected: Vec<RejectedPath>,
    /// What hashing cost.
    pub stats: HashStats,
}

/// The overall outcome of a [`VerifyReport`], in order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyStatus {
    /// Every artifact is present, the pin matches and nothing drifted from the lock.
    Ok,
    /// An artifact is missing (error code `weights_missing`).
    Missing,
    /// A pin does not match the bytes, or, for an unlocked model, an entry is refused
    /// (error code `weights_digest_mismatch`).
    DigestMismatch,
    /// The model is locked and its files differ from the lock entry, or the entry was
    /// written for another model version or pin (error code `version_drift`).
    Drift,
}

impl VerifyStatus {
    /// The shared error code of this outcome (`None` for [`VerifyStatus::Ok`]); the names
    /// are those of `dp_spec::ErrorCode`.
    #[must_use]
    pub const fn error_code(self) -> Option<&'static str> {
        match self {
            Self::Ok => None,
            Self::Missing => Some("weights_missing"),
            Self::DigestMismatch => Some("weights_digest_mismatch"),
            Self::Drift => Some("version_drift"),
        }
    }
}

impl VerifyReport {
    /// The overall outcome: missing, then pin mismatch, then drift.
    #[must_use]
    pub fn status(&self) -> VerifyStatus {
        if !self.missing.is_empty() {
            VerifyStatus::Missing
        } else if self.pin.as_ref().is_some_and(|pin| !pin.matches())
            || self.all_pin.as_ref().is_some_and(|pin| !pin.matches())
        {
            VerifyStatus::DigestMismatch
        } else if self.drift.as_ref().is_some_and(|drift| !drift.is_empty())
            || !self.lock_conflicts.is_empty()
        {
            VerifyStatus::Drift
        } else if !self.rejected.is_empty() {
            // Locked models put refused entries in the drift; unlocked ones land here.
            VerifyStatus::DigestMismatch
        } else {
            VerifyStatus::Ok
        }
    }
}

/// What a model's bytes must match, all optional: the pin of its first artifact, the pin
/// of all its artifacts together, and its lock entry (with the model version the lock must
/// record).
///
/// This crate takes the values; which of a spec's fields supply them (and when, e.g. a
/// Triton model's `weights_digest` pins its server's deployment, not its local files) is
/// the caller's rule.
#[derive(Debug, Clone, Copy, Default)]
pub struct ArtifactPins<'a> {
    /// Covers the FIRST artifact: a file's digest, or a directory's aggregate (paths
    /// relative to that directory), in the pin's own algorithm.
    pub first_artifact: Option<WeightsDigest>,
    /// Covers EVERY artifact: the aggregate of the manifest of all artifacts, paths
    /// relative to the root (the lock entry's `aggregate` for the same files).
    pub all_artifacts: Option<WeightsDigest>,
    /// The lock entry: every file's digest when the model was locked.
    pub lock: Option<&'a LockEntry>,
    /// The model version the lock entry must record (the spec's `model_version`); a
    /// different one is drift: the lock describes another version of the model.
    pub model_version: Option<&'a str>,
    /// The pin the lock entry must record (the spec's `weights_digest`, whatever it
    /// covers); an entry that records another one was written for another pin: drift.
    pub recorded_pin: Option<WeightsDigest>,
}

/// Verifies a model's artifacts (files or directories relative to `root`) against
/// `pinned` (its first artifact) and `locked` (every file). See [`verify_model`], which also
/// takes a pin of all artifacts together.
///
/// Nothing is ignored: every byte under the artifacts counts.
///
/// ```
/// use dp_digest::{ManifestOptions, VerifyOptions, VerifyStatus, manifest_of_dir, verify_artifacts};
///
/// let root = tempfile::tempdir()?;
/// std::fs::create_dir(root.path().join("tiny"))?;
/// std::fs::write(root.path().join("tiny/model.bin"), b"weights")?;
/// let pin = manifest_of_dir(&root.path().join("tiny"), &ManifestOptions::default())?.aggregate;
///
/// let artifacts = ["tiny".to_owned()];
/// let report = verify_artifacts(root.path(), &artifacts, Some(&pin), None, &VerifyOptions::default())?;
/// assert_eq!(report.status(), VerifyStatus::Ok);
///
/// std::fs::write(root.path().join("tiny/model.bin"), b"altered")?;
/// let report = verify_artifacts(root.path(), &artifacts, Some(&pin), None, &VerifyOptions::default())?;
/// assert_eq!(report.status().error_code(), Some("weights_digest_mismatch"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// Only what prevents a report: [`DigestError::InvalidArtifactPath`] and I/O errors
/// ([`DigestError::Read`]). Missing artifacts, mismatches, drift and refused entries are
/// reported, not returned as errors.
pub fn verify_artifacts(
    root: &Path,
    artifacts: &[String],
    pinned: Option<&WeightsDigest>,
    locked: Option<&LockEntry>,
    options: &VerifyOptions<'_>,
) -> Result<VerifyReport, DigestError> {
    let pins = ArtifactPins {
        first_artifact: pinned.copied(),
        lock: locked,
        recorded_pin: pinned.copied(),
        ..ArtifactPins::default()
    };
    verify_model(root, artifacts, &pins, options)
}

/// Verifies a model's artifacts against every pin in `pins`, hashing the files by path
/// (through the verification cache when `options` has one). Use
/// [`crate::open_verified`] instead when the bytes are to be used: it keeps the bytes it
/// hashed, so nothing can change between verification and use.
///
/// - The manifest covers all artifacts, paths relative to `root`, in the algorithm of the
///   first-artifact pin, else the all-artifacts pin, else the lock entry, else
///   `options.default_algorithm`; files are hashed again in another algorithm only when a
///   pin needs it.
/// - An artifact that is an empty directory counts as missing: it holds none of the bytes
///   the spec names.
///
/// # Errors
///
/// As [`verify_artifacts`].
pub fn verify_model(
    root: &Path,
    artifacts: &[String],
    pins: &ArtifactPins<'_>,
    options: &VerifyOptions<'_>,
) -> Result<VerifyReport, DigestError> {
    let walk = walk_all(root, artifacts)?;
    let Some(mut report) = ReportBuilder::start(&walk) else {
        return Ok(missing_report(&walk));
    };
    let algorithm = manifest_algorithm(pins, options);
    let (files, stats) = hash_walk(&walk, algorithm, options)?;
    report.stats = stats;
    let mut rehash = |other: DigestAlgorithm, stats: &mut HashStats| {
        let (files, more) = hash_walk(&walk, other, options)?;
        *stats += more;
        Ok(files)
    };
    report.finish(
        &walk,
        Manifest::from_entries(algorithm, files),
        pins,
        &mut rehash,
    )
}

/// The algorithm of a model's manifest: the pins', else the lock's, else the default.
pub(crate) fn manifest_algorithm(
    pins: &ArtifactPins<'_>,
    options: &VerifyOptions<'_>,
) -> DigestAlgorithm {
    pins.first_artifact
        .or(pins.all_artifacts)
        .map(|d| d.algorithm())
        .or_else(|| pins.lock.map(|entry| entry.aggregate.algorithm()))
        .unwrap_or(options.default_algorithm)
}

/// The report when artifacts are missing (nothing is hashed), or `None` when every artifact
/// is there.
pub(crate) fn missing_report(walk: &Walk) -> VerifyReport {
    VerifyReport {
        missing: missing_artifacts(walk),
        pin: None,
        all_pin: None,
        manifest: None,
        drift: None,
        lock_conflicts: Vec::new(),
        rejected: rejected_paths(walk),
        stats: HashStats::default(),
    }
}

/// Absent artifacts, and artifacts that are directories holding no file (an empty folder
/// where the weights should be is as missing as no folder at all).
fn missing_artifacts(walk: &Walk) -> Vec<String> {
    let mut missing = walk.missing.clone();
    for (artifact, kind) in walk.artifacts.iter().zip(&walk.kinds) {
        if *kind != Some(ArtifactKind::Dir) {
            continue;
        }
        let prefix = format!("{artifact}/");
        let under = |path: &str| artifact.is_empty() || path.starts_with(&prefix);
        let empty =
            !walk.files.keys().any(|p| under(p)) && !walk.rejected.iter().any(|r| under(&r.path));
        if empty {
            missing.push(if artifact.is_empty() {
                ".".to_owned()
            } else {
                artifact.clone()
            });
        }
    }
    missing
}

fn rejected_paths(walk: &Walk) -> Vec<RejectedPath> {
    walk.rejected
        .iter()
        .map(|r| RejectedPath {
            path: r.path.clone(),
            problem: r.error.to_string(),
        })
        .collect()
}

/// Gives a model's files in another algorithm (hashed again from disk, or from the bytes
/// held), adding what that cost to the stats.
pub(crate) type Rehash<'a> =
    dyn FnMut(DigestAlgorithm, &mut HashStats) -> Result<Vec<ManifestEntry>, DigestError> + 'a;

/// Builds a [`VerifyReport`] once the files are hashed, whichever way they were read.
pub(crate) struct ReportBuilder {
    stats: HashStats,
}

impl ReportBuilder {
    /// `None` when artifacts are missing: then nothing is hashed (see [`missing_report`]).
    pub(crate) fn start(walk: &Walk) -> Option<Self> {
        missing_artifacts(walk).is_empty().then_some(Self {
            stats: HashStats::default(),
        })
    }

    pub(crate) fn set_stats(&mut self, stats: HashStats) {
        self.stats = stats;
    }

    /// Compares `manifest` (all files, in [`manifest_algorithm`]) with every pin;
    /// `rehash` gives the files in another algorithm when a pin or the lock uses one.
    pub(crate) fn finish(
        mut self,
        walk: &Walk,
        manifest: Manifest,
        pins: &ArtifactPins<'_>,
        rehash: &mut Rehash<'_>,
    ) -> Result<VerifyReport, DigestError> {
        // There are two algorithms: the pins and the lock need the manifest in at most one
        // other than its own, made once whichever of them needs it.
        let other_algorithm = [
            pins.first_artifact.map(|d| d.algorithm()),
            pins.all_artifacts.map(|d| d.algorithm()),
            pins.lock.map(|entry| entry.aggregate.algorithm()),
        ]
        .into_iter()
        .flatten()
        .find(|algorithm| *algorithm != manifest.algorithm);
        let other = match other_algorithm {
            Some(algorithm) => Some(Manifest::from_entries(
                algorithm,
                rehash(algorithm, &mut self.stats)?,
            )),
            None => None,
        };
        let in_algorithm = |algorithm: DigestAlgorithm| -> &Manifest {
            match &other {
                Some(other) if other.algorithm == algorithm => other,
                _ => &manifest,
            }
        };
        let pin = pins
            .first_artifact
            .map(|expected| check_pin(walk, in_algorithm(expected.algorithm()), expected));
        let all_pin = pins.all_artifacts.map(|expected| PinCheck {
            artifact: ALL_ARTIFACTS.to_owned(),
            expected,
            // Refused entries make the whole set unidentifiable.
            actual: walk
                .rejected
                .is_empty()
                .then_some(in_algorithm(expected.algorithm()).aggregate),
        });
        let mut lock_conflicts = Vec::new();
        let drift = match pins.lock {
            Some(entry) => {
                let current = in_algorithm(entry.aggregate.algorithm());
                if let Some(version) = pins.model_version
                    && entry.model_version != version
                {
                    lock_conflicts.push(format!(
                        "the lock entry was written for model_version {:?}, the spec says {version:?}",
                        entry.model_version
                    ));
                }
                if entry.weights_digest.is_some() && entry.weights_digest != pins.recorded_pin {
                    lock_conflicts.push(format!(
                        "the lock entry was written with weights_digest {}, the spec pins {}",
                        entry
                            .weights_digest
                            .map_or_else(|| "none".to_owned(), |d| d.to_string()),
                        pins.recorded_pin
                            .map_or_else(|| "none".to_owned(), |d| d.to_string())
                    ));
                }
                Some(drift(&entry.files, &current.files, walk))
            }
            None => None,
        };
        Ok(VerifyReport {
            missing: Vec::new(),
            pin,
            all_pin,
            manifest: walk.rejected.is_empty().then_some(manifest),
            drift,
            lock_conflicts,
            rejected: rejected_paths(walk),
            stats: self.stats,
        })
    }
}

/// The `artifact` of a [`PinCheck`] that covers every artifact together.
pub const ALL_ARTIFACTS: &str = "*";

fn hash_walk(
    walk: &Walk,
    algorithm: DigestAlgorithm,
    options: &VerifyOptions<'_>,
) -> Result<(Vec<ManifestEntry>, HashStats), DigestError> {
    let settings = HashSettings {
        algorithm,
        strict: options.strict,
        cache: options.cache,
        progress: options.progress,
    };
    hash_files(&walk.files, &settings)
}

/// Compares the pin with the first artifact, whose files are in `manifest` (computed in
/// the pin's algorithm).
fn check_pin(walk: &Walk, manifest: &Manifest, expected: WeightsDigest) -> PinCheck {
    let artifact = walk.artifacts.first().cloned().unwrap_or_default();
    let under = |path: &str| {
        artifact.is_empty() || path == artifact || path.starts_with(&format!("{artifact}/"))
    };
    // A refused entry inside the pinned artifact means its bytes cannot be identified.
    let actual = if walk.rejected.iter().any(|r| under(&r.path)) {
        None
    } else {
        match walk.kinds.first().copied().flatten() {
            Some(ArtifactKind::File) => manifest
                .files
                .iter()
                .find(|f| f.path == artifact)
                .map(|f| f.digest),
            Some(ArtifactKind::Dir) => Some(match manifest.subtree(&artifact) {
                Some(subtree) => subtree.aggregate,
                // An empty directory: the aggregate of no lines.
                None => crate::manifest::aggregate_of(expected.algorithm(), &[]),
            }),
            None => None,
        }
    };
    PinCheck {
        artifact: if artifact.is_empty() {
            ".".to_owned()
        } else {
            artifact
        },
        expected,
        actual,
    }
}

/// The lock entry's files against the current ones, with refused entries counted as
/// changed (when the lock covers them) or added.
fn drift(locked: &[ManifestEntry], current: &[ManifestEntry], walk: &Walk) -> ManifestDiff {
    let mut diff = ManifestDiff::between(locked, current);
    for rejected in &walk.rejected {
        let prefix = format!("{}/", rejected.path);
        let covers = |path: &str| path == rejected.path || path.starts_with(&prefix);
        // The lock's files at or under the refused path did not vanish: they changed into
        // something that cannot be verified.
        let (now_changed, still_removed): (Vec<String>, Vec<String>) =
            diff.removed.drain(..).partition(|path| covers(path));
        diff.removed = still_removed;
        if now_changed.is_empty() {
            diff.added.push(rejected.path.clone());
        } else {
            diff.changed.extend(now_changed);
        }
    }
    for paths in [&mut diff.added, &mut diff.changed] {
        paths.sort();
        paths.dedup();
    }
    diff
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::time::SystemTime;

    use super::*;
    use crate::hash::digest_bytes;
    use crate::manifest::{ManifestOptions, manifest_of_artifacts, manifest_of_dir};
    use crate::test_support::{coreutils_aggregate, pseudo_random_bytes, sha256sum};

    struct Fixture {
        root: tempfile::TempDir,
        artifacts: Vec<String>,
        pin: WeightsDigest,
        lock: LockEntry,
    }

    /// A model with a directory artifact (pinned) and a file artifact, locked as is.
    fn fixture() -> Fixture {
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path();
        fs::create_dir_all(r.join("minilm/onnx")).expect("mkdir");
        fs::write(r.join("minilm/config.json"), b"{}").expect("write");
        fs::write(
            r.join("minilm/onnx/model.onnx"),
            pseudo_random_bytes(200_000, 9),
        )
        .expect("write");
        fs::write(r.join("tokenizer.json"), b"{\"vocab\": []}").expect("write");
        let artifacts = vec!["minilm".to_owned(), "tokenizer.json".to_owned()];
        let pin = manifest_of_dir(&r.join("minilm"), &ManifestOptions::default())
            .expect("manifest")
            .aggregate;
        // The pin is what the coreutils pipeline prints inside the directory.
        assert_eq!(pin.hex(), coreutils_aggregate(&r.join("minilm")));
        let manifest =
            manifest_of_artifacts(r, &artifacts, &ManifestOptions::default()).expect("manifest");
        let lock = LockEntry::new("1.0.0", Some(pin), manifest, SystemTime::now());
        Fixture {
            root,
            artifacts,
            pin,
            lock,
        }
    }

    impl Fixture {
        fn verify(&self, pinned: bool, locked: bool) -> VerifyReport {
            verify_artifacts(
                self.root.path(),
                &self.artifacts,
                pinned.then_some(&self.pin),
                locked.then_some(&self.lock),
                &VerifyOptions::default(),
            )
            .expect("verify")
        }
    }

    #[test]
    fn untouched_model_is_ok() {
        let f = fixture();
        let report = f.verify(true, true);
        assert_eq!(report.status(), VerifyStatus::Ok);
        assert!(report.pin.as_ref().is_some_and(PinCheck::matches));
        assert_eq!(report.drift, Some(ManifestDiff::default()));
        let manifest = report.manifest.expect("manifest");
        assert_eq!(manifest.aggregate, f.lock.aggregate);
        assert_eq!(report.stats.files, 3);
    }

    #[test]
    fn one_changed_byte_is_a_pin_mismatch_and_drift_naming_the_file() {
        let f = fixture();
        let path = f.root.path().join("minilm/onnx/model.onnx");
        let mut bytes = fs::read(&path).expect("read");
        bytes[100_000] ^= 0x01;
        fs::write(&path, &bytes).expect("write");

        let report = f.verify(true, true);
        assert_eq!(report.status(), VerifyStatus::DigestMismatch);
        assert_eq!(
            report.status().error_code(),
            Some("weights_digest_mismatch")
        );
        let pin = report.pin.expect("pin checked");
        assert_eq!(pin.artifact, "minilm");
        assert_eq!(
            pin.actual.map(|d| d.hex()),
            Some(coreutils_aggregate(&f.root.path().join("minilm")))
        );
        let drift = report.drift.expect("drift");
        assert_eq!(drift.changed, ["minilm/onnx/model.onnx"]);
        assert!(drift.added.is_empty() && drift.removed.is_empty());

        let report = f.verify(false, true);
        assert_eq!(report.status(), VerifyStatus::Drift);
        assert_eq!(report.status().error_code(), Some("version_drift"));
    }

    #[test]
    fn added_and_removed_files_are_drift() {
        let f = fixture();
        fs::write(f.root.path().join("minilm/onnx/extra.bin"), b"extra").expect("write");
        let report = f.verify(false, true);
        assert_eq!(report.status(), VerifyStatus::Drift);
        assert_eq!(
            report.drift,
            Some(ManifestDiff {
                added: vec!["minilm/onnx/extra.bin".into()],
                ..ManifestDiff::default()
            })
        );
        fs::remove_file(f.root.path().join("minilm/onnx/extra.bin")).expect("rm");
        fs::remove_file(f.root.path().join("minilm/config.json")).expect("rm");
        let drift = f.verify(false, true).drift.expect("drift");
        assert_eq!(drift.removed, ["minilm/config.json"]);
        assert!(drift.added.is_empty() && drift.changed.is_empty());
    }

    #[test]
    fn file_replaced_by_a_symlink_leaving_the_root_is_reported_by_path() {
        let f = fixture();
        let outside = tempfile::tempdir().expect("tempdir");
        let elsewhere = outside.path().join("config.json");
        fs::write(&elsewhere, b"{}").expect("write");
        let config = f.root.path().join("minilm/config.json");
        fs::remove_file(&config).expect("rm");
        symlink(&elsewhere, &config).expect("symlink");

        let report = f.verify(false, true);
        assert_eq!(report.status(), VerifyStatus::Drift);
        assert_eq!(
            report.drift,
            Some(ManifestDiff {
                changed: vec!["minilm/config.json".into()],
                ..ManifestDiff::default()
            })
        );
        assert_eq!(report.rejected.len(), 1);
        assert_eq!(report.rejected[0].path, "minilm/config.json");
        let problem = &report.rejected[0].problem;
        assert!(
            problem.contains(&elsewhere.display().to_string()),
            "{problem}"
        );
        assert!(report.manifest.is_none());

        // Pinned but unlocked: the pinned artifact cannot be identified.
        let report = f.verify(true, false);
        assert_eq!(report.status(), VerifyStatus::DigestMismatch);
        assert_eq!(report.pin.expect("pin").actual, None);
    }

    #[test]
    fn a_lock_entry_written_for_another_pin_is_drift() {
        let f = fixture();
        let other = digest_bytes(DigestAlgorithm::Sha256, b"another pin");
        let report = verify_artifacts(
            f.root.path(),
            &f.artifacts,
            Some(&other),
            Some(&f.lock),
            &VerifyOptions::default(),
        )
        .expect("verify");
        // The pin itself mismatches first; without a pin the entry's pin still disagrees.
        assert_eq!(report.status(), VerifyStatus::DigestMismatch);
        let report = verify_artifacts(
            f.root.path(),
            &f.artifacts,
            None,
            Some(&f.lock),
            &VerifyOptions::default(),
        )
        .expect("verify");
        assert_eq!(report.status(), VerifyStatus::Drift);
        assert!(report.drift.expect("drift").is_empty());
        assert!(
            report.lock_conflicts[0].contains("weights_digest"),
            "{:?}",
            report.lock_conflicts
        );
    }

    #[test]
    fn missing_artifacts_are_listed_and_nothing_is_hashed() {
        let f = fixture();
        fs::remove_file(f.root.path().join("tokenizer.json")).expect("rm");
        let report = f.verify(true, true);
        assert_eq!(report.status(), VerifyStatus::Missing);
        assert_eq!(report.status().error_code(), Some("weights_missing"));
        assert_eq!(report.missing, ["tokenizer.json"]);
        assert_eq!(report.stats, HashStats::default());
        assert!(report.pin.is_none() && report.drift.is_none());
    }

    #[test]
    fn pin_on_a_file_artifact_uses_the_file_digest_and_its_algorithm() {
        let f = fixture();
        let artifacts = vec!["tokenizer.json".to_owned(), "minilm".to_owned()];
        let path = f.root.path().join("tokenizer.json");
        let bytes = fs::read(&path).expect("read");
        let sha_pin: WeightsDigest = format!("sha256:{}", sha256sum(&path))
            .parse()
            .expect("digest");
        let blake_pin = digest_bytes(DigestAlgorithm::Blake3, &bytes);
        for pin in [sha_pin, blake_pin] {
            // The lock entry is SHA-256: a BLAKE3 pin makes verification hash twice. It was
            // written for this pin (an entry written for another pin is drift).
            let lock = LockEntry {
                weights_digest: Some(pin),
                ..f.lock.clone()
            };
            let report = verify_artifacts(
                f.root.path(),
                &artifacts,
                Some(&pin),
                Some(&lock),
                &VerifyOptions::default(),
            )
            .expect("verify");
            assert_eq!(report.status(), VerifyStatus::Ok, "{pin}");
            assert_eq!(
                report.manifest.expect("manifest").algorithm,
                pin.algorithm()
            );
        }
    }

    #[test]
    fn cached_verification_reads_nothing_until_strict() {
        let f = fixture();
        let state = tempfile::tempdir().expect("tempdir");
        let cache = VerificationCache::load(state.path().join("cache.json"));
        let verify = |strict| {
            let options = VerifyOptions {
                cache: Some(&cache),
                strict,
                ..VerifyOptions::default()
            };
            verify_artifacts(
                f.root.path(),
                &f.artifacts,
                Some(&f.pin),
                Some(&f.lock),
                &options,
            )
            .expect("verify")
        };
        assert_eq!(verify(false).stats.hashed_files, 3);
        let cached = verify(false);
        assert_eq!(cached.status(), VerifyStatus::Ok);
        assert_eq!(
            (cached.stats.hashed_files, cached.stats.cached_files),
            (0, 3)
        );
        assert_eq!(cached.stats.hashed_bytes, 0);
        assert_eq!(verify(true).stats.hashed_files, 3);
    }
}
