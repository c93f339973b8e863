//! Verified bytes: a model's artifacts opened once, hashed from the bytes held, and handed
//! to whoever parses or loads them, so that what is verified is exactly what is used.
//!
//! Verifying by path and then loading by path leaves a window in which the file can be
//! swapped (an atomic `rename` of a tampered copy): the loader would then use bytes nobody
//! verified. Here every file is opened exactly once (without following a final symlink and
//! without blocking on a FIFO), its bytes are read into memory or mapped from that one open
//! file, and the digest is computed from those bytes (or, with the verification cache, from
//! the stamp of that same open file). Providers and presets read [`VerifiedArtifacts`],
//! never the path again.
//!
//! What this does not cover (see `docs/reliability.md`): someone who can write the model
//! files may still write *into* a large file while it is mapped; the file's stamp is checked
//! after hashing, and a deployment closes the rest by making the models folder read-only to
//! the serving user.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use rayon::prelude::*;

use crate::cache::FileStamp;
use crate::error::DigestError;
use crate::hash::HashStats;
use crate::hash::digest_bytes;
use crate::manifest::{Manifest, ManifestEntry};
use crate::regular::{LastLink, open_for_reading};
use crate::verify::{
    ArtifactPins, ReportBuilder, VerifyOptions, VerifyReport, VerifyStatus, manifest_algorithm,
    missing_report,
};
use crate::walk::{Walk, walk_all};
use crate::weights_digest::{DigestAlgorithm, WeightsDigest};

/// Files at least this large are memory-mapped instead of read: weights are hundreds of
/// megabytes to gigabytes, and the runtimes copy what they need out of them anyway.
const MAP_THRESHOLD: u64 = 16 << 20;

/// The bytes of one verified file: owned (small files) or a read-only map of the file that
/// was hashed (large ones). Cheap to clone (an `Arc`); a provider may keep them for as long
/// as its model lives.
#[derive(Clone)]
pub struct ArtifactBytes(Arc<Backing>);

enum Backing {
    Owned(Vec<u8>),
    Mapped(Mmap),
}

impl ArtifactBytes {
    /// Bytes already in memory (for tests and for callers that verified them otherwise).
    #[must_use]
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        Self(Arc::new(Backing::Owned(bytes)))
    }

    /// Whether the bytes are a map of the file rather than a copy.
    #[must_use]
    pub fn is_mapped(&self) -> bool {
        matches!(*self.0, Backing::Mapped(_))
    }
}

impl Deref for ArtifactBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &*self.0 {
            Backing::Owned(bytes) => bytes,
            Backing::Mapped(map) => map,
        }
    }
}

impl AsRef<[u8]> for ArtifactBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for ArtifactBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArtifactBytes")
            .field("len", &self.len())
            .field("mapped", &self.is_mapped())
            .finish()
    }
}

/// One file of a model, with the bytes that were verified.
#[derive(Debug, Clone)]
pub struct VerifiedFile {
    path: String,
    file: PathBuf,
    digest: WeightsDigest,
    bytes: ArtifactBytes,
}

impl VerifiedFile {
    /// Its path relative to the models root (`/`-separated, as in manifests).
    #[must_use]
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Where it was opened (for messages only: never open it again).
    #[must_use]
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The digest of [`Self::bytes`], in the manifest's algorithm.
    #[must_use]
    pub const fn digest(&self) -> WeightsDigest {
        self.digest
    }

    /// The verified bytes.
    #[must_use]
    pub const fn bytes(&self) -> &ArtifactBytes {
        &self.bytes
    }

    /// The file's name (its last path segment).
    #[must_use]
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// A model's artifacts, every file opened once and verified against the model's pins: the
/// only way providers and presets read a model's files.
///
/// ```
/// use dp_digest::{ArtifactPins, VerifyOptions, digest_bytes, DigestAlgorithm, open_verified};
///
/// let root = tempfile::tempdir()?;
/// std::fs::create_dir(root.path().join("tiny"))?;
/// std::fs::write(root.path().join("tiny/config.json"), b"{}")?;
/// let pins = ArtifactPins {
///     first_artifact: Some(digest_bytes(DigestAlgorithm::Sha256, b"{}")),
///     ..ArtifactPins::default()
/// };
/// let artifacts = ["tiny/config.json".to_owned()];
/// let opened = open_verified(root.path(), &artifacts, &pins, &VerifyOptions::default())?;
/// let verified = opened.artifacts.expect("verified");
/// assert_eq!(&**verified.get("tiny/config.json").expect("listed").bytes(), b"{}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct VerifiedArtifacts {
    root: PathBuf,
    artifacts: Vec<String>,
    files: BTreeMap<String, VerifiedFile>,
    manifest: Option<Manifest>,
}

impl VerifiedArtifacts {
    /// No files: for models that list no local artifacts, and for test providers that read
    /// nothing.
    #[must_use]
    pub fn empty(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            artifacts: Vec::new(),
            files: BTreeMap::new(),
            manifest: None,
        }
    }

    /// The models root the paths are relative to.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The artifacts as listed by the spec, normalized (`/`-separated, no `./`).
    #[must_use]
    pub fn artifacts(&self) -> &[String] {
        &self.artifacts
    }

    /// The file at `path` (relative to the models root), if it is one of the artifacts'.
    #[must_use]
    pub fn get(&self, path: &str) -> Option<&VerifiedFile> {
        self.files.get(path.trim_start_matches("./"))
    }

    /// Whether `artifact` (a file, or a directory's path) is among the verified files.
    #[must_use]
    pub fn contains(&self, artifact: &str) -> bool {
        let artifact = artifact.trim_start_matches("./").trim_end_matches('/');
        let prefix = format!("{artifact}/");
        self.files.contains_key(artifact)
            || self
                .files
                .range(prefix.clone()..)
                .next()
                .is_some_and(|(path, _)| path.starts_with(&prefix))
    }

    /// Every file, sorted by path.
    pub fn files(&self) -> impl Iterator<Item = &VerifiedFile> {
        self.files.values()
    }

    /// How many files there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether there is no file.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The manifest of every file (`None` when there is none).
    #[must_use]
    pub const fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// The aggregate digest of every file: what identifies all the bytes the model is
    /// made of (`None` when there is no file).
    #[must_use]
    pub fn aggregate(&self) -> Option<WeightsDigest> {
        self.manifest.as_ref().map(|m| m.aggregate)
    }

    /// Where a path would be opened, for messages.
    #[must_use]
    pub fn display_path(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }
}

/// What [`open_verified`] found: the report, and the bytes when the report is OK.
#[derive(Debug)]
pub struct OpenedArtifacts {
    /// Everything verification found (as [`crate::verify_model`] reports it).
    pub report: VerifyReport,
    /// The verified files; `Some` exactly when `report.status()` is OK.
    pub artifacts: Option<VerifiedArtifacts>,
}

/// Opens every file of a model's artifacts once, hashes the bytes it holds (or takes the
/// digest from the verification cache when the open file's stamp is the cached one), checks
/// them against `pins`, and keeps the bytes for the caller when everything matches.
///
/// A file replaced by `rename` while this runs is either the old or the new one, never a
/// mix, and whichever it is, its bytes are the ones hashed. A file whose stamp changes
/// while it is hashed (written in place) is refused as unverifiable.
///
/// # Errors
///
/// As [`crate::verify_model`]. Missing files, mismatches and drift are in the report.
pub fn open_verified(
    root: &Path,
    artifacts: &[String],
    pins: &ArtifactPins<'_>,
    options: &VerifyOptions<'_>,
) -> Result<OpenedArtifacts, DigestError> {
    let walk = walk_all(root, artifacts)?;
    let Some(mut builder) = ReportBuilder::start(&walk) else {
        return Ok(OpenedArtifacts {
            report: missing_report(&walk),
            artifacts: None,
        });
    };
    let algorithm = manifest_algorithm(pins, options);
    let (opened, stats) = open_all(&walk, algorithm, options)?;
    builder.set_stats(stats);
    let entries: Vec<ManifestEntry> = opened
        .iter()
        .map(|f| ManifestEntry {
            path: f.path.clone(),
            size: f.bytes.len() as u64,
            digest: f.digest,
        })
        .collect();
    let manifest = Manifest::from_entries(algorithm, entries);
    let mut rehash = |other: DigestAlgorithm, stats: &mut HashStats| {
        // From the bytes held, never from the paths.
        let entries: Vec<ManifestEntry> = opened
            .par_iter()
            .map(|f| ManifestEntry {
                path: f.path.clone(),
                size: f.bytes.len() as u64,
                digest: digest_bytes(other, &f.bytes),
            })
            .collect();
        stats.hashed_files += entries.len() as u64;
        stats.hashed_bytes += entries.iter().map(|e| e.size).sum::<u64>();
        Ok(entries)
    };
    let report = builder.finish(&walk, manifest.clone(), pins, &mut rehash)?;
    let artifacts = (report.status() == VerifyStatus::Ok).then(|| VerifiedArtifacts {
        root: root.to_owned(),
        artifacts: walk.artifacts.clone(),
        manifest: Some(manifest),
        files: opened.into_iter().map(|f| (f.path.clone(), f)).collect(),
    });
    Ok(OpenedArtifacts { report, artifacts })
}

/// Opens and hashes every file of the walk, in parallel.
fn open_all(
    walk: &Walk,
    algorithm: DigestAlgorithm,
    options: &VerifyOptions<'_>,
) -> Result<(Vec<VerifiedFile>, HashStats), DigestError> {
    let files: Vec<(&String, &PathBuf)> = walk.files.iter().collect();
    let opened = files
        .par_iter()
        .map(|&(rel, path)| open_one(rel, path, algorithm, options))
        .collect::<Result<Vec<_>, DigestError>>()?;
    let mut stats = HashStats {
        files: opened.len() as u64,
        ..HashStats::default()
    };
    for (_, hashed) in &opened {
        match hashed {
            Some(size) => {
                stats.hashed_files += 1;
                stats.hashed_bytes += size;
            }
            None => stats.cached_files += 1,
        }
    }
    Ok((opened.into_iter().map(|(file, _)| file).collect(), stats))
}

/// Opens one file, takes its bytes and their digest; the second value is the number of
/// bytes hashed (`None` when the digest came from the cache).
fn open_one(
    rel: &str,
    path: &Path,
    algorithm: DigestAlgorithm,
    options: &VerifyOptions<'_>,
) -> Result<(VerifiedFile, Option<u64>), DigestError> {
    let read_error = |source| DigestError::Read {
        path: path.to_owned(),
        source,
    };
    let special = || DigestError::SpecialFile {
        path: rel.to_owned(),
        root: path.parent().unwrap_or(Path::new(".")).to_owned(),
    };
    // NOFOLLOW: the walk resolved links to this canonical path; a link swapped in since is
    // refused rather than followed. NONBLOCK: a FIFO swapped in must not block the open.
    let file = open_for_reading(path, LastLink::Refuse).map_err(|err| {
        if err.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            special()
        } else {
            read_error(err)
        }
    })?;
    let before = file.metadata().map_err(read_error)?;
    if !before.is_file() {
        return Err(special());
    }
    let stamp = FileStamp::from_metadata(&before);
    let bytes = if before.len() >= MAP_THRESHOLD {
        // SAFETY: the map is read-only and lives as long as the `ArtifactBytes` holding it.
        // Replacing the file by rename leaves this map on the old inode; writing into the
        // file in place while it is mapped changes the mapped bytes (and truncating it
        // raises SIGBUS): that is outside the threat model, documented in
        // docs/reliability.md, and closed by a read-only models folder.
        #[allow(unsafe_code, reason = "memmap2 requires unsafe to map a file")]
        let map = unsafe { Mmap::map(&file) }.map_err(read_error)?;
        ArtifactBytes(Arc::new(Backing::Mapped(map)))
    } else {
        let mut bytes = Vec::with_capacity(usize::try_from(before.len()).unwrap_or(0));
        (&file).read_to_end(&mut bytes).map_err(read_error)?;
        ArtifactBytes::from_vec(bytes)
    };
    let cached = match options.cache {
        Some(cache) if !options.strict => cache.lookup(path, &stamp, algorithm),
        _ => None,
    };
    let (digest, hashed) = match cached {
        Some(digest) if bytes.len() as u64 == stamp.size => (digest, None),
        _ => (digest_bytes(algorithm, &bytes), Some(bytes.len() as u64)),
    };
    let after = FileStamp::from_metadata(&file.metadata().map_err(read_error)?);
    if after != stamp || stamp.size != bytes.len() as u64 {
        return Err(DigestError::ChangedWhileRead {
            path: path.to_owned(),
        });
    }
    if hashed.is_some()
        && let Some(cache) = options.cache
    {
        cache.record(path, stamp, digest);
    }
    Ok((
        VerifiedFile {
            path: rel.to_owned(),
            file: path.to_owned(),
            digest,
            bytes,
        },
        hashed,
    ))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::SystemTime;

    use super::*;
    use crate::cache::VerificationCache;
    use crate::lock::LockEntry;
    use crate::manifest::{ManifestOptions, manifest_of_artifacts};
    use crate::test_support::pseudo_random_bytes;

    fn model() -> (tempfile::TempDir, Vec<String>) {
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path();
        fs::create_dir_all(r.join("m")).expect("mkdir");
        fs::write(r.join("m/config.json"), b"{\"eps\": 1e-12}").expect("write");
        fs::write(r.join("m/tokenizer.json"), b"{\"cat\": 1, \"dog\": 2}").expect("write");
        // Above the map threshold, so the mapped path is exercised too.
        let big = pseudo_random_bytes(usize::try_from(MAP_THRESHOLD).expect("fits") + 17, 3);
        fs::write(r.join("m/model.safetensors"), big).expect("write");
        let artifacts = vec![
            "m/model.safetensors".to_owned(),
            "m/config.json".to_owned(),
            "m/tokenizer.json".to_owned(),
        ];
        (root, artifacts)
    }

    fn lock_of(root: &Path, artifacts: &[String]) -> LockEntry {
        let manifest =
            manifest_of_artifacts(root, artifacts, &ManifestOptions::default()).expect("manifest");
        LockEntry::new("1.0.0", None, manifest, SystemTime::now())
    }

    #[test]
    fn bytes_held_are_the_bytes_hashed_and_match_the_by_path_manifest() {
        let (root, artifacts) = model();
        let lock = lock_of(root.path(), &artifacts);
        let pins = ArtifactPins {
            lock: Some(&lock),
            model_version: Some("1.0.0"),
            all_artifacts: Some(lock.aggregate),
            ..ArtifactPins::default()
        };
        let opened =
            open_verified(root.path(), &artifacts, &pins, &VerifyOptions::default()).expect("open");
        assert_eq!(
            opened.report.status(),
            VerifyStatus::Ok,
            "{:?}",
            opened.report
        );
        let verified = opened.artifacts.expect("verified");
        assert_eq!(verified.aggregate(), Some(lock.aggregate));
        for file in verified.files() {
            let on_disk = fs::read(root.path().join(file.path())).expect("read");
            assert_eq!(&**file.bytes(), on_disk.as_slice(), "{}", file.path());
            assert_eq!(
                file.digest(),
                digest_bytes(DigestAlgorithm::Sha256, &on_disk)
            );
        }
        assert!(
            verified
                .get("m/model.safetensors")
                .expect("weights")
                .bytes()
                .is_mapped()
        );
        assert!(
            !verified
                .get("m/config.json")
                .expect("config")
                .bytes()
                .is_mapped()
        );
    }

    #[test]
    fn every_artifact_is_pinned_by_the_lock_and_the_aggregate_pin() {
        let (root, artifacts) = model();
        let lock = lock_of(root.path(), &artifacts);
        // Swap two token ids: same length, other bytes.
        fs::write(
            root.path().join("m/tokenizer.json"),
            b"{\"cat\": 2, \"dog\": 1}",
        )
        .expect("write");
        let locked = ArtifactPins {
            lock: Some(&lock),
            ..ArtifactPins::default()
        };
        let opened = open_verified(root.path(), &artifacts, &locked, &VerifyOptions::default())
            .expect("open");
        assert_eq!(opened.report.status(), VerifyStatus::Drift);
        assert_eq!(
            opened.report.drift.as_ref().expect("drift").changed,
            ["m/tokenizer.json"]
        );
        assert!(opened.artifacts.is_none());

        let pinned = ArtifactPins {
            all_artifacts: Some(lock.aggregate),
            ..ArtifactPins::default()
        };
        let opened = open_verified(root.path(), &artifacts, &pinned, &VerifyOptions::default())
            .expect("open");
        assert_eq!(opened.report.status(), VerifyStatus::DigestMismatch);
        let all = opened.report.all_pin.expect("checked");
        assert_eq!(all.artifact, crate::verify::ALL_ARTIFACTS);
        assert_ne!(all.actual, Some(lock.aggregate));
        assert!(opened.artifacts.is_none());
    }

    #[test]
    fn a_lock_written_for_another_version_is_drift() {
        let (root, artifacts) = model();
        let lock = lock_of(root.path(), &artifacts);
        let pins = ArtifactPins {
            lock: Some(&lock),
            model_version: Some("2.0.0"),
            ..ArtifactPins::default()
        };
        let report = crate::verify_model(root.path(), &artifacts, &pins, &VerifyOptions::default())
            .expect("verify");
        assert_eq!(report.status(), VerifyStatus::Drift);
        assert!(report.lock_conflicts[0].contains("\"1.0.0\""), "{report:?}");
        assert!(report.drift.expect("drift").is_empty());
    }

    #[test]
    fn a_blake3_aggregate_pin_is_checked_from_the_bytes_held() {
        let (root, artifacts) = model();
        let options = ManifestOptions {
            algorithm: DigestAlgorithm::Blake3,
            ..ManifestOptions::default()
        };
        let blake = manifest_of_artifacts(root.path(), &artifacts, &options).expect("manifest");
        let sha_lock = lock_of(root.path(), &artifacts);
        let pins = ArtifactPins {
            all_artifacts: Some(blake.aggregate),
            lock: Some(&sha_lock),
            ..ArtifactPins::default()
        };
        let opened =
            open_verified(root.path(), &artifacts, &pins, &VerifyOptions::default()).expect("open");
        assert_eq!(
            opened.report.status(),
            VerifyStatus::Ok,
            "{:?}",
            opened.report
        );
        // Hashed once from disk (BLAKE3), once more from memory for the SHA-256 lock.
        assert_eq!(opened.report.stats.hashed_files, 6);
    }

    #[test]
    fn the_cache_skips_hashing_for_the_same_open_file_and_not_for_a_replaced_one() {
        let (root, artifacts) = model();
        let state = tempfile::tempdir().expect("tempdir");
        let cache = VerificationCache::load(state.path().join("cache.json"));
        let options = VerifyOptions {
            cache: Some(&cache),
            ..VerifyOptions::default()
        };
        let open = || {
            open_verified(root.path(), &artifacts, &ArtifactPins::default(), &options)
                .expect("open")
        };
        let first = open();
        assert_eq!(first.report.stats.hashed_files, 3);
        let second = open();
        assert_eq!(
            (
                second.report.stats.hashed_files,
                second.report.stats.cached_files
            ),
            (0, 3)
        );
        // Replace the config by rename with the same length: a new inode, hashed again.
        let config = root.path().join("m/config.json");
        let swapped = root.path().join("m/config.json.new");
        fs::write(&swapped, b"{\"eps\": 1e-06}").expect("write");
        fs::rename(&swapped, &config).expect("rename");
        let third = open();
        assert_eq!(third.report.stats.hashed_files, 1);
        assert_ne!(
            third.artifacts.expect("ok").aggregate(),
            first.artifacts.expect("ok").aggregate()
        );
    }

    #[test]
    fn an_empty_directory_in_place_of_a_file_is_missing() {
        let (root, artifacts) = model();
        fs::remove_file(root.path().join("m/config.json")).expect("rm");
        fs::create_dir(root.path().join("m/config.json")).expect("mkdir");
        let opened = open_verified(
            root.path(),
            &artifacts,
            &ArtifactPins::default(),
            &VerifyOptions::default(),
        )
        .expect("open");
        assert_eq!(opened.report.status(), VerifyStatus::Missing);
        assert_eq!(opened.report.missing, ["m/config.json"]);
    }

    #[test]
    fn a_symlink_loop_as_an_artifact_is_refused_not_an_io_error() {
        let (root, artifacts) = model();
        let config = root.path().join("m/config.json");
        fs::remove_file(&config).expect("rm");
        std::os::unix::fs::symlink("config.json", &config).expect("symlink");
        let report = crate::verify_model(
            root.path(),
            &artifacts,
            &ArtifactPins::default(),
            &VerifyOptions::default(),
        )
        .expect("a report, not an error");
        assert_eq!(report.status(), VerifyStatus::DigestMismatch);
        assert_eq!(report.rejected[0].path, "m/config.json");
    }
}
