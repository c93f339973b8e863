//! The version lock file: per model, the exact files and digests that were verified, like
//! `Cargo.lock` for weights. Machine-written, stable JSON, updated under an exclusive lock
//! and replaced atomically.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use std::{fmt, io};

use schemars::JsonSchema;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::atomic::{Visibility, remove_stale_temp_files, write_atomically};
use crate::error::DigestError;
use crate::manifest::{Manifest, ManifestEntry, aggregate_of};
use crate::regular::{
    check_regular_file, ensure_opened_regular, is_not_found, open_or_create_nonblocking,
    read_regular_file,
};
use crate::weights_digest::WeightsDigest;

/// The lock file format version this build reads and writes.
pub const LOCK_FILE_VERSION: u32 = 1;

/// A catalog's lock file: model name → what was verified for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    /// Format version; this build reads and writes 1.
    #[schemars(extend("const" = 1))]
    pub version: u32,
    /// The locked models, by model name (sorted, so the file diffs well). A name that
    /// appears twice in the file is refused.
    #[serde(deserialize_with = "unique_models")]
    #[schemars(with = "BTreeMap<String, LockEntry>")]
    pub models: BTreeMap<String, LockEntry>,
}

/// Deserializes the `models` object, refusing a model name given twice: `serde_json` would
/// keep the last entry silently, so a bad merge or hand edit could hide which one counts
/// (duplicate keys in spec files are errors for the same reason).
fn unique_models<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, LockEntry>, D::Error> {
    struct Models;

    impl<'de> Visitor<'de> for Models {
        type Value = BTreeMap<String, LockEntry>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object from model names to lock entries")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut models = BTreeMap::new();
            while let Some(name) = map.next_key::<String>()? {
                if models.contains_key(&name) {
                    return Err(de::Error::custom(format_args!(
                        "model {name:?} appears more than once in \"models\""
                    )));
                }
                let entry = map.next_value::<LockEntry>()?;
                models.insert(name, entry);
            }
            Ok(models)
        }
    }

    deserializer.deserialize_map(Models)
}

/// What was verified for one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LockEntry {
    /// The spec's `model_version` when the entry was written.
    pub model_version: String,
    /// The spec's `weights_digest` pin when the entry was written, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_digest: Option<WeightsDigest>,
    /// Aggregate digest of `files` (see `docs/digests.md`).
    pub aggregate: WeightsDigest,
    /// Every file of the model's artifacts, paths relative to the models root, sorted.
    pub files: Vec<ManifestEntry>,
    /// When the files were last verified: RFC 3339, UTC, whole seconds
    /// (`2025-01-31T12:00:00Z`).
    #[schemars(extend("format" = "date-time"))]
    pub last_verified: String,
    /// What the model computed on its probe inputs when `dp verify --lock --golden` ran:
    /// `dp verify --golden` runs them again and reports `output_drift` outside the
    /// tolerances. Kept when `--lock` re-records the files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub golden: Option<GoldenOutputs>,
}

/// A model's outputs on fixed probe inputs, pinned beside its file digests: a digest proves
/// the bytes, these prove the numbers (another runtime version, provider or device, or a
/// preprocessing change, can change outputs while every digest matches).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GoldenOutputs {
    /// The preprocess signature the outputs were made with (`pp1:…`).
    pub preprocess_signature: String,
    /// The probe inputs: texts (for a cross-encoder, the query first, then the documents).
    pub inputs: Vec<String>,
    /// One row per input (per document for a cross-encoder: its score).
    pub outputs: Vec<Vec<f32>>,
    /// SHA-256 of the outputs as little-endian f32, row after row (equal means bit for bit).
    pub outputs_digest: String,
    /// The lowest cosine similarity accepted per row (rows of more than one value).
    pub min_cosine: f64,
    /// The largest absolute difference accepted per value.
    pub max_abs_diff: f64,
}

impl LockEntry {
    /// An entry recording `manifest` as verified at `verified_at`.
    #[must_use]
    pub fn new(
        model_version: impl Into<String>,
        weights_digest: Option<WeightsDigest>,
        manifest: Manifest,
        verified_at: SystemTime,
    ) -> Self {
        Self {
            model_version: model_version.into(),
            weights_digest,
            aggregate: manifest.aggregate,
            files: manifest.files,
            last_verified: rfc3339_utc(verified_at),
            golden: None,
        }
    }

    /// The entry's files as a [`Manifest`].
    #[must_use]
    pub fn manifest(&self) -> Manifest {
        Manifest {
            algorithm: self.aggregate.algorithm(),
            files: self.files.clone(),
            aggregate: self.aggregate,
        }
    }

    /// Why the entry is inconsistent, if it is.
    fn inconsistency(&self) -> Option<String> {
        if humantime::parse_rfc3339(&self.last_verified).is_err() {
            return Some(format!(
                "last_verified {:?} is not an RFC 3339 UTC time such as 2025-01-31T12:00:00Z",
                self.last_verified
            ));
        }
        if let Some(pair) = self.files.windows(2).find(|w| w[0].path >= w[1].path) {
            return Some(format!(
                "files are not sorted by path without duplicates ({:?} before {:?})",
                pair[0].path, pair[1].path
            ));
        }
        let algorithm = self.aggregate.algorithm();
        if let Some(file) = self
            .files
            .iter()
            .find(|f| f.digest.algorithm() != algorithm)
        {
            return Some(format!(
                "file {:?} has a {} digest but the aggregate is {algorithm}",
                file.path,
                file.digest.algorithm()
            ));
        }
        let expected = aggregate_of(algorithm, &self.files);
        (expected != self.aggregate).then(|| {
            format!(
                "aggregate {} does not match its files (they give {expected})",
                self.aggregate
            )
        })
    }
}

/// `time` as RFC 3339 in UTC with whole seconds, the form of [`LockEntry::last_verified`].
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// assert_eq!(dp_digest::rfc3339_utc(t), "2023-11-14T22:13:20Z");
/// ```
#[must_use]
pub fn rfc3339_utc(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

impl Default for LockFile {
    fn default() -> Self {
        Self {
            version: LOCK_FILE_VERSION,
            models: BTreeMap::new(),
        }
    }
}

/// What a lock file is called in errors.
const LOCK_FILE_ROLE: &str = "lock file";
/// What a lock file's sidecar lock is called in errors.
const SIDECAR_ROLE: &str = "lock file's sidecar lock";

/// Only the version, read first so that a file of another version gets a clear error
/// rather than an "unknown field" one.
#[derive(Deserialize)]
struct VersionProbe {
    version: Option<u64>,
}

impl LockFile {
    /// Reads a lock file; a missing file is an empty lock.
    ///
    /// # Errors
    ///
    /// [`DigestError::MalformedLockFile`] (with line and column for JSON errors, the model
    /// for inconsistent entries), [`DigestError::UnsupportedLockVersion`],
    /// [`DigestError::Read`].
    pub fn read(path: &Path) -> Result<Self, DigestError> {
        match read_regular_file(path, LOCK_FILE_ROLE) {
            Ok(bytes) => Self::parse(path, &bytes),
            Err(e) if is_not_found(&e) => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<Self, DigestError> {
        let malformed = |detail: String| DigestError::MalformedLockFile {
            path: path.to_owned(),
            detail,
        };
        let probe: VersionProbe =
            serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        match probe.version {
            None => return Err(malformed("it has no \"version\" field".to_owned())),
            Some(version) if version != u64::from(LOCK_FILE_VERSION) => {
                return Err(DigestError::UnsupportedLockVersion {
                    path: path.to_owned(),
                    version,
                    supported: LOCK_FILE_VERSION,
                });
            }
            Some(_) => {}
        }
        let lock: Self = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        if let Some(problem) = lock.inconsistency() {
            return Err(malformed(problem));
        }
        Ok(lock)
    }

    /// Why the lock is inconsistent (a hand edit, another writer), if it is.
    fn inconsistency(&self) -> Option<String> {
        self.models.iter().find_map(|(name, entry)| {
            entry
                .inconsistency()
                .map(|problem| format!("model {name:?}: {problem}"))
        })
    }

    /// The file's text: pretty JSON with a trailing newline, keys in a stable order.
    fn render(&self, path: &Path) -> Result<Vec<u8>, DigestError> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| DigestError::Write {
            path: path.to_owned(),
            source: e.into(),
        })?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Reads, changes and rewrites the lock file at `path`, safely against concurrent
    /// updaters and crashes.
    ///
    /// 1. Takes an exclusive lock on the sidecar `<path>.lck` (created if needed, never
    ///    deleted), so that concurrent updaters — threads or processes — run one at a time
    ///    and none loses another's change.
    /// 2. Re-reads the file under the lock (missing → empty; malformed → error, and the
    ///    file is left untouched).
    /// 3. Applies `change`; if it returns an error, nothing is written.
    /// 4. Writes the result to a uniquely named temp file in the same directory, fsyncs it,
    ///    renames it over `path` and fsyncs the directory, so that a process killed at any
    ///    moment leaves the previous or the new complete file. Temp files left by killed
    ///    writers are removed under the lock. Nothing is written if the content is
    ///    unchanged.
    ///
    /// ```
    /// use dp_digest::{LockEntry, LockFile, ManifestOptions, manifest_of_dir};
    ///
    /// let weights = tempfile::tempdir()?;
    /// std::fs::write(weights.path().join("model.bin"), b"weights")?;
    /// let manifest = manifest_of_dir(weights.path(), &ManifestOptions::default())?;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("models.lock.json");
    /// LockFile::update(&path, |lock| {
    ///     let entry = LockEntry::new("1.0.0", None, manifest, std::time::SystemTime::now());
    ///     lock.models.insert("tiny".to_owned(), entry);
    ///     Ok::<_, dp_digest::DigestError>(())
    /// })?;
    /// assert_eq!(LockFile::read(&path)?.models["tiny"].model_version, "1.0.0");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `change`'s error, or (converted into `E`) [`DigestError::Lock`], the errors of
    /// [`LockFile::read`], [`DigestError::MalformedLockFile`] when `change` left an
    /// inconsistent entry (nothing is written), [`DigestError::Write`].
    pub fn update<T, E: From<DigestError>>(
        path: &Path,
        change: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<T, E> {
        let lock_path = sidecar_lock_path(path);
        let lock_error = |source| DigestError::Lock {
            path: lock_path.clone(),
            source,
        };
        // Before anything is created: a FIFO or a directory is refused, never waited on.
        check_regular_file(path, LOCK_FILE_ROLE)?;
        check_regular_file(&lock_path, SIDECAR_ROLE)?;
        let sidecar = open_or_create_nonblocking(&lock_path).map_err(lock_error)?;
        ensure_opened_regular(&sidecar, &lock_path, SIDECAR_ROLE)?;
        // Released when `_held` is dropped at the end of this function, on every path.
        let _held = HeldLock::acquire(sidecar, &lock_path).map_err(lock_error)?;
        remove_stale_temp_files(path);

        let current = match read_regular_file(path, LOCK_FILE_ROLE) {
            Ok(bytes) => Some(bytes),
            Err(e) if is_not_found(&e) => None,
            Err(e) => return Err(e.into()),
        };
        let mut lock = match &current {
            Some(bytes) => Self::parse(path, bytes)?,
            None => Self::default(),
        };
        let result = change(&mut lock)?;
        if let Some(problem) = lock.inconsistency() {
            return Err(DigestError::MalformedLockFile {
                path: path.to_owned(),
                detail: format!("refusing to write it: {problem}"),
            }
            .into());
        }
        let bytes = lock.render(path)?;
        if current.as_deref() != Some(bytes.as_slice()) {
            write_atomically(path, &bytes, Visibility::Shared)?;
        }
        Ok(result)
    }
}

/// The exclusive lock on a lock file's sidecar, held until dropped.
///
/// It is an advisory `flock(2)` lock (`File::lock`): it serializes every `dp` process and
/// thread that updates the lock file, and the kernel releases it when its holder dies, so
/// a killed writer never leaves the file locked. Taking and releasing it are logged at
/// `debug` level (with the `lock_file_acquired` / `lock_file_released` events) and waiting
/// for another holder at `info`, so concurrent runs can be seen to take turns.
struct HeldLock<'a> {
    /// Locked; closing it releases the lock.
    _file: fs::File,
    path: &'a Path,
}

impl<'a> HeldLock<'a> {
    fn acquire(file: fs::File, path: &'a Path) -> io::Result<Self> {
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                tracing::info!(
                    event = "lock_file_wait",
                    lock = %path.display(),
                    pid = std::process::id(),
                    "another process is updating the lock file; waiting for it to finish"
                );
                file.lock()?;
            }
            Err(fs::TryLockError::Error(err)) => return Err(err),
        }
        tracing::debug!(
            event = "lock_file_acquired",
            lock = %path.display(),
            pid = std::process::id(),
            "lock file locked"
        );
        Ok(Self { _file: file, path })
    }
}

impl Drop for HeldLock<'_> {
    fn drop(&mut self) {
        // Logged while still held: the file (and with it the lock) closes after this.
        tracing::debug!(
            event = "lock_file_released",
            lock = %self.path.display(),
            pid = std::process::id(),
            "lock file unlocked"
        );
    }
}

/// `<path>.lck`.
fn sidecar_lock_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".lck");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::hash::digest_bytes;
    use crate::weights_digest::DigestAlgorithm;

    fn entry(version: &str, content: &[u8]) -> LockEntry {
        let file = ManifestEntry {
            path: "m/model.bin".to_owned(),
            size: content.len() as u64,
            digest: digest_bytes(DigestAlgorithm::Sha256, content),
        };
        let manifest = Manifest::from_entries(DigestAlgorithm::Sha256, vec![file]);
        LockEntry::new(
            version,
            Some(manifest.aggregate),
            manifest,
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
    }

    #[test]
    fn missing_file_reads_as_empty_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lock = LockFile::read(&dir.path().join("none.json")).expect("read");
        assert_eq!(lock, LockFile::default());
    }

    #[test]
    fn round_trips_with_stable_pretty_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("models.lock.json");
        LockFile::update(&path, |lock| {
            lock.models.insert("zeta".into(), entry("2.0.0", b"z"));
            lock.models.insert("alpha".into(), entry("1.0.0", b"a"));
            Ok::<_, DigestError>(())
        })
        .expect("update");
        let text = fs::read_to_string(&path).expect("read");
        assert!(text.ends_with("}\n"), "{text}");
        assert!(text.starts_with("{\n  \"version\": 1,\n  \"models\": {\n    \"alpha\""));
        assert!(text.contains("\"last_verified\": \"2023-11-14T22:13:20Z\""));
        let lock = LockFile::read(&path).expect("read back");
        assert_eq!(lock.models["zeta"], entry("2.0.0", b"z"));
        assert_eq!(lock.render(&path).expect("render"), text.as_bytes());
        // Nothing but the lock and its sidecar in the directory.
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        names.sort();
        assert_eq!(names, ["models.lock.json", "models.lock.json.lck"]);
    }

    #[test]
    fn concurrent_updaters_lose_no_update() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("models.lock.json");
        std::thread::scope(|scope| {
            for t in 0..6 {
                let path = &path;
                scope.spawn(move || {
                    for i in 0..8 {
                        LockFile::update(path, |lock| {
                            lock.models
                                .insert(format!("model-{t}-{i}"), entry("1.0.0", &[t, i]));
                            Ok::<_, DigestError>(())
                        })
                        .expect("update");
                    }
                });
            }
        });
        let lock = LockFile::read(&path).expect("read");
        assert_eq!(lock.models.len(), 48);
        assert!(crate::atomic::temp_files_of(&path).is_empty());
    }

    #[test]
    fn malformed_lock_is_an_error_and_is_never_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("models.lock.json");
        let bad = b"{\"version\": 1, \"models\": {\"x\": ";
        fs::write(&path, bad).expect("write");
        let err = LockFile::read(&path).unwrap_err();
        assert!(
            matches!(err, DigestError::MalformedLockFile { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("models.lock.json"), "{err}");
        assert!(err.to_string().contains("line 1"), "{err}");
        let err = LockFile::update(&path, |lock| {
            lock.models.clear();
            Ok::<_, DigestError>(())
        })
        .unwrap_err();
        assert!(
            matches!(err, DigestError::MalformedLockFile { .. }),
            "{err:?}"
        );
        assert_eq!(fs::read(&path).expect("read"), bad);
    }

    #[test]
    fn inconsistent_or_foreign_versions_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lock.json");
        let mut lock = LockFile::default();
        let mut tampered = entry("1.0.0", b"a");
        tampered.files[0].digest = digest_bytes(DigestAlgorithm::Sha256, b"b");
        lock.models.insert("m".into(), tampered);
        fs::write(&path, lock.render(&path).expect("render")).expect("write");
        let err = LockFile::read(&path).unwrap_err();
        assert!(
            err.to_string().contains("does not match its files"),
            "{err}"
        );

        fs::write(&path, br#"{"version": 2, "models": {}, "new": true}"#).expect("write");
        let err = LockFile::read(&path).unwrap_err();
        assert!(
            matches!(err, DigestError::UnsupportedLockVersion { version: 2, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_model_named_twice_is_refused_and_the_file_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("catalog.lock");
        let one = serde_json::to_string(&entry("1.0.0", b"a")).expect("json");
        let two = serde_json::to_string(&entry("2.0.0", b"b")).expect("json");
        let text = format!(
            "{{\"version\": 1, \"models\": {{\"zeta\": {one}, \"alpha\": {one}, \"zeta\": {two}}}}}"
        );
        fs::write(&path, &text).expect("write");
        let err = LockFile::read(&path).unwrap_err();
        assert!(
            matches!(err, DigestError::MalformedLockFile { .. }),
            "{err:?}"
        );
        let message = err.to_string();
        for needle in ["catalog.lock", "\"zeta\"", "more than once", "line 1"] {
            assert!(message.contains(needle), "{needle:?} missing: {message}");
        }
        let err = LockFile::update(&path, |_| Ok::<_, DigestError>(())).unwrap_err();
        assert!(err.to_string().contains("more than once"), "{err}");
        assert_eq!(fs::read_to_string(&path).expect("read"), text);
    }

    #[cfg(unix)]
    #[test]
    fn an_update_keeps_the_lock_files_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("catalog.lock");
        LockFile::update(&path, |lock| {
            lock.models.insert("a".into(), entry("1.0.0", b"a"));
            Ok::<_, DigestError>(())
        })
        .expect("first update");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        LockFile::update(&path, |lock| {
            lock.models.insert("b".into(), entry("1.0.0", b"b"));
            Ok::<_, DigestError>(())
        })
        .expect("second update");
        assert_eq!(LockFile::read(&path).expect("read").models.len(), 2);
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
    }

    #[test]
    fn failed_change_writes_nothing_and_old_content_survives() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lock.json");
        LockFile::update(&path, |lock| {
            lock.models.insert("a".into(), entry("1.0.0", b"a"));
            Ok::<_, DigestError>(())
        })
        .expect("first update");
        let before = fs::read(&path).expect("read");
        // A stale temp file from a writer killed mid-write must not disturb later runs.
        fs::write(dir.path().join(".lock.json.Zz9Yy8.tmp"), b"{\"vers").expect("write");
        let result: Result<(), DigestError> = LockFile::update(&path, |lock| {
            lock.models.clear();
            Err(DigestError::WeightsMissing {
                root: PathBuf::from("/models"),
                missing: vec!["a".into()],
            })
        });
        assert!(result.is_err());
        assert_eq!(fs::read(&path).expect("read"), before);
        assert!(crate::atomic::temp_files_of(&path).is_empty());
    }
}
