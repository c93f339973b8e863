//! Verifying a model's artifacts against its pin and its lock entry, without knowing what a
//! model spec is: the caller passes the root, the artifact paths, the pin and the entry.

use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::cache::VerificationCache;
use crate::error::DigestError;
use crate::hash::{NoProgress, Progress};
use crate::lock::LockEntry;
use crate::manifest::{
    HashSettings, HashStats, Manifest, ManifestDiff, ManifestEntry, hash_files, walk_all,
};
use crate::walk::{ArtifactKind, Walk};
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
    /// Artifacts that do not exist under the root. When any is missing nothing is hashed:
    /// `pin`, `manifest` and `drift` are `None`.
    pub missing: Vec<String>,
    /// The pin's check, when a pin was given.
    pub pin: Option<PinCheck>,
    /// The manifest of all artifacts, paths relative to the root; `None` when artifacts are
    /// missing or entries were refused.
    pub manifest: Option<Manifest>,
    /// Differences from the lock entry's files, when an entry was given (empty when
    /// nothing drifted). Refused entries count as `changed` when the lock has them and as
    /// `added` otherwise.
    pub drift: Option<ManifestDiff>,
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
    /// The pin does not match the bytes, or, for an unlocked model, an entry is refused
    /// (error code `weights_digest_mismatch`).
    DigestMismatch,
    /// The model is locked and its files differ from the lock entry (error code
    /// `version_drift`).
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
        } else if self.pin.as_ref().is_some_and(|pin| !pin.matches()) {
            VerifyStatus::DigestMismatch
        } else if self.drift.as_ref().is_some_and(|drift| !drift.is_empty()) {
            VerifyStatus::Drift
        } else if !self.rejected.is_empty() {
            // Locked models put refused entries in the drift; unlocked ones land here.
            VerifyStatus::DigestMismatch
        } else {
            VerifyStatus::Ok
        }
    }
}

/// Verifies a model's artifacts (files or directories relative to `root`).
///
/// - `pinned` covers the FIRST artifact: a file is compared with its file digest, a
///   directory with its aggregate (paths relative to that directory), in the pin's own
///   algorithm.
/// - The manifest covers all artifacts, paths relative to `root`, in the pin's algorithm,
///   else the lock entry's, else `options.default_algorithm`.
/// - `locked`: the lock entry's files are compared with the files on disk (in the entry's
///   algorithm, hashing a second time only if it differs from the manifest's).
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
    let walk = walk_all(root, artifacts)?;
    let mut report = VerifyReport {
        missing: walk.missing.clone(),
        pin: None,
        manifest: None,
        drift: None,
        rejected: walk
            .rejected
            .iter()
            .map(|r| RejectedPath {
                path: r.path.clone(),
                problem: r.error.to_string(),
            })
            .collect(),
        stats: HashStats::default(),
    };
    if !report.missing.is_empty() {
        return Ok(report);
    }

    let algorithm = pinned
        .map(WeightsDigest::algorithm)
        .or_else(|| locked.map(|entry| entry.aggregate.algorithm()))
        .unwrap_or(options.default_algorithm);
    let (files, stats) = hash_walk(&walk, algorithm, options)?;
    report.stats = stats;
    let manifest = Manifest::from_entries(algorithm, files);

    if let Some(expected) = pinned {
        report.pin = Some(check_pin(&walk, &manifest, *expected));
    }
    if let Some(entry) = locked {
        let lock_algorithm = entry.aggregate.algorithm();
        let current = if lock_algorithm == algorithm {
            manifest.files.clone()
        } else {
            let (files, stats) = hash_walk(&walk, lock_algorithm, options)?;
            report.stats += stats;
            files
        };
        report.drift = Some(drift(&entry.files, &current, &walk));
    }
    if walk.rejected.is_empty() {
        report.manifest = Some(manifest);
    }
    Ok(report)
}

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
            // The lock entry is SHA-256: a BLAKE3 pin makes verification hash twice.
            let report = verify_artifacts(
                f.root.path(),
                &artifacts,
                Some(&pin),
                Some(&f.lock),
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
