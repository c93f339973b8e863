//! The verification cache: digests remembered per file identity, so that an unchanged tree
//! is re-verified with one `stat` per file.
//!
//! See `docs/digests.md` for its trust model: it detects accidental change, truncation and
//! replacement, not a deliberate attacker who can write to the weights *and* to the cache.

use std::collections::HashMap;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use crate::atomic::{Visibility, parent_dir, write_atomically};
use crate::error::DigestError;
use crate::regular::{check_regular_file, read_regular_file};
use crate::weights_digest::{DigestAlgorithm, WeightsDigest};

/// Format version of the cache file; a file of another version is ignored.
const CACHE_VERSION: u32 = 1;

/// What identifies a file's contents without reading them: where it lives (device and
/// inode), its size and its modification and status-change times in nanoseconds.
///
/// Any write changes `mtime` and `ctime`; replacing the file (rename, copy, restore from a
/// backup) changes the inode; `ctime` cannot be set by an unprivileged user, so restoring
/// an old `mtime` after a write is still noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct FileStamp {
    pub(crate) device: u64,
    pub(crate) inode: u64,
    pub(crate) size: u64,
    pub(crate) mtime_ns: i64,
    pub(crate) ctime_ns: i64,
}

impl FileStamp {
    /// The stamp of a file's metadata (from `stat`, following symlinks).
    pub(crate) fn from_metadata(meta: &fs::Metadata) -> Self {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt as _;
            // Saturating: a forged far-future time must not panic; it still differs from
            // any real time.
            let ns =
                |secs: i64, nanos: i64| secs.saturating_mul(1_000_000_000).saturating_add(nanos);
            Self {
                device: meta.dev(),
                inode: meta.ino(),
                size: meta.size(),
                mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
                ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
            }
        }
        #[cfg(not(unix))]
        {
            // Without inode and ctime the cache is weaker; it still notices size and
            // mtime changes.
            let mtime_ns = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
            Self {
                device: 0,
                inode: 0,
                size: meta.len(),
                mtime_ns,
                ctime_ns: 0,
            }
        }
    }
}

/// What the cache file is called in errors.
const CACHE_ROLE: &str = "verification cache";

/// Where `path` is or would be created: absolute, with the symlinks of its longest
/// existing ancestor resolved and the rest (not created yet) appended lexically.
fn resolved(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    for ancestor in absolute.ancestors() {
        let Ok(mut out) = fs::canonicalize(ancestor) else {
            continue;
        };
        let rest = absolute.strip_prefix(ancestor).unwrap_or(Path::new(""));
        for component in rest.components() {
            match component {
                Component::ParentDir => {
                    out.pop();
                }
                Component::Normal(name) => out.push(name),
                Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            }
        }
        return out;
    }
    absolute
}

/// One remembered digest, as stored in the cache file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheRecord {
    path: String,
    #[serde(flatten)]
    stamp: FileStamp,
    digest: WeightsDigest,
}

/// The cache file's layout.
#[derive(Debug, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    entries: Vec<CacheRecord>,
}

/// Digests remembered by (path, algorithm), valid while the file's stamp (device, inode,
/// size, mtime, ctime) is unchanged.
///
/// Loaded from and saved to a JSON file whose location the caller chooses; it must live in
/// a directory only the operator can write (see `docs/digests.md`). Verification fills it
/// in memory; call [`VerificationCache::save`] afterwards. It is safe to share between
/// threads.
///
/// ```
/// use dp_digest::{ManifestOptions, VerificationCache, manifest_of_dir};
///
/// let weights = tempfile::tempdir()?;
/// std::fs::write(weights.path().join("model.bin"), b"weights")?;
/// let state = tempfile::tempdir()?;
/// let cache = VerificationCache::load(state.path().join("verify-cache.json"));
/// let options = ManifestOptions { cache: Some(&cache), ..ManifestOptions::default() };
/// let first = manifest_of_dir(weights.path(), &options)?; // hashes model.bin
/// let again = manifest_of_dir(weights.path(), &options)?; // one stat, no read
/// assert_eq!(first, again);
/// cache.save()?;
/// assert_eq!(VerificationCache::load(cache.path()).len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct VerificationCache {
    path: PathBuf,
    entries: Mutex<HashMap<(String, DigestAlgorithm), (FileStamp, WeightsDigest)>>,
    /// Whether the entries differ from the file's (set by a new or different record).
    changed: AtomicBool,
}

impl VerificationCache {
    /// Loads the cache stored at `path`.
    ///
    /// A missing, unreadable, corrupt or other-version file gives an empty cache: it is only
    /// a cache, and the worst outcome is that every file is hashed again. Anything but a
    /// regular file (a FIFO, a device) is never opened, so loading never blocks; callers
    /// refuse such a path first with [`VerificationCache::check_location`].
    #[must_use]
    pub fn load(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        // Never blocks: a FIFO or device at `path` is refused unopened, like a missing file.
        let entries = read_regular_file(&path, CACHE_ROLE)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<CacheFile>(&bytes).ok())
            .filter(|file| file.version == CACHE_VERSION)
            .map(|file| {
                file.entries
                    .into_iter()
                    .map(|r| ((r.path, r.digest.algorithm()), (r.stamp, r.digest)))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            path,
            entries: Mutex::new(entries),
            changed: AtomicBool::new(false),
        }
    }

    /// Checks that `cache` may serve as the verification cache for the models under
    /// `models_root`: if it exists it is a regular file, and it is not inside the models
    /// root (symlinks resolved, for the file and for the folders it would be created in).
    ///
    /// Whoever can write the cache can make bytes look verified, so it must live where
    /// only the operator can write; a cache inside the models root would let a writer of
    /// the models folder forge digests (see `docs/digests.md`).
    ///
    /// ```
    /// use dp_digest::VerificationCache;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let models = dir.path().join("models");
    /// VerificationCache::check_location(&dir.path().join("state/cache.json"), &models)?;
    /// let err = VerificationCache::check_location(&models.join("cache.json"), &models)
    ///     .unwrap_err();
    /// assert!(err.to_string().contains("inside the models root"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`DigestError::NotARegularFile`], [`DigestError::CacheInsideModelsRoot`],
    /// [`DigestError::Read`] when `cache` cannot be `stat`ed.
    pub fn check_location(cache: &Path, models_root: &Path) -> Result<(), DigestError> {
        check_regular_file(cache, CACHE_ROLE)?;
        if resolved(cache).starts_with(resolved(models_root)) {
            return Err(DigestError::CacheInsideModelsRoot {
                cache: cache.to_owned(),
                models_root: models_root.to_owned(),
            });
        }
        Ok(())
    }

    /// An empty cache that [`VerificationCache::save`] would write to `path` (whatever is
    /// stored there now is ignored).
    #[must_use]
    pub fn empty(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            entries: Mutex::default(),
            // Whatever the file holds must be replaced.
            changed: AtomicBool::new(true),
        }
    }

    /// Where the cache is loaded from and saved to.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many digests it remembers.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether it remembers nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Writes the cache to its file, atomically, readable by the owner only; creates the
    /// directory if needed.
    ///
    /// Concurrent savers do not merge: the last one wins, which only costs re-hashing.
    ///
    /// # Errors
    ///
    /// [`DigestError::Write`] when the directory or file cannot be written.
    pub fn save(&self) -> Result<(), DigestError> {
        self.changed.store(false, Ordering::Relaxed);
        let mut entries: Vec<CacheRecord> = self
            .lock()
            .iter()
            .map(|((path, _), (stamp, digest))| CacheRecord {
                path: path.clone(),
                stamp: *stamp,
                digest: *digest,
            })
            .collect();
        // A stable order keeps the file diffable and the writes deterministic.
        entries
            .sort_by(|a, b| (&a.path, a.digest.algorithm()).cmp(&(&b.path, b.digest.algorithm())));
        let file = CacheFile {
            version: CACHE_VERSION,
            entries,
        };
        let mut bytes = serde_json::to_vec(&file).map_err(|e| DigestError::Write {
            path: self.path.clone(),
            source: e.into(),
        })?;
        bytes.push(b'\n');
        let dir = parent_dir(&self.path);
        fs::create_dir_all(dir).map_err(|source| DigestError::Write {
            path: dir.to_owned(),
            source,
        })?;
        write_atomically(&self.path, &bytes, Visibility::Private)
    }

    /// Like [`VerificationCache::save`], but writes only when verification recorded
    /// something the file does not hold yet, so that re-verifying an unchanged tree costs
    /// no write. Returns whether it wrote.
    ///
    /// # Errors
    ///
    /// As [`VerificationCache::save`].
    pub fn save_if_changed(&self) -> Result<bool, DigestError> {
        if !self.changed.load(Ordering::Relaxed) {
            return Ok(false);
        }
        self.save()?;
        Ok(true)
    }

    /// The remembered digest of `path` with `algorithm`, if its stamp is still `stamp`.
    pub(crate) fn lookup(
        &self,
        path: &Path,
        stamp: &FileStamp,
        algorithm: DigestAlgorithm,
    ) -> Option<WeightsDigest> {
        let key = (path.to_str()?.to_owned(), algorithm);
        match self.lock().get(&key) {
            Some((cached, digest)) if cached == stamp => Some(*digest),
            _ => None,
        }
    }

    /// Remembers `digest` for `path` as long as its stamp stays `stamp`.
    pub(crate) fn record(&self, path: &Path, stamp: FileStamp, digest: WeightsDigest) {
        // Paths that are not UTF-8 are simply not cached (JSON keys are text).
        if let Some(path) = path.to_str() {
            let previous = self
                .lock()
                .insert((path.to_owned(), digest.algorithm()), (stamp, digest));
            if previous != Some((stamp, digest)) {
                self.changed.store(true, Ordering::Relaxed);
            }
        }
    }

    fn lock(
        &self,
    ) -> MutexGuard<'_, HashMap<(String, DigestAlgorithm), (FileStamp, WeightsDigest)>> {
        // A panic while holding the lock cannot leave the map inconsistent (every update is
        // a single insert), so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::digest_bytes;

    fn stamp(size: u64) -> FileStamp {
        FileStamp {
            device: 1,
            inode: 2,
            size,
            mtime_ns: 3,
            ctime_ns: 4,
        }
    }

    #[test]
    fn round_trips_and_matches_only_identical_stamps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("state/cache.json");
        let cache = VerificationCache::load(&file);
        assert!(cache.is_empty());
        let digest = digest_bytes(DigestAlgorithm::Sha256, b"x");
        cache.record(Path::new("/m/a.bin"), stamp(1), digest);
        cache.save().expect("save creates the directory");

        let loaded = VerificationCache::load(&file);
        assert_eq!(loaded.len(), 1);
        let path = Path::new("/m/a.bin");
        assert_eq!(
            loaded.lookup(path, &stamp(1), DigestAlgorithm::Sha256),
            Some(digest)
        );
        assert_eq!(
            loaded.lookup(path, &stamp(2), DigestAlgorithm::Sha256),
            None
        );
        assert_eq!(
            loaded.lookup(path, &stamp(1), DigestAlgorithm::Blake3),
            None
        );
        assert_eq!(
            loaded.lookup(Path::new("/m/b.bin"), &stamp(1), DigestAlgorithm::Sha256),
            None
        );
    }

    #[test]
    fn save_if_changed_writes_only_new_or_different_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cache.json");
        let digest = digest_bytes(DigestAlgorithm::Sha256, b"x");
        let cache = VerificationCache::load(&file);
        assert!(!cache.save_if_changed().expect("nothing to save"));
        assert!(!file.exists());
        cache.record(Path::new("/m/a.bin"), stamp(1), digest);
        assert!(cache.save_if_changed().expect("saves"));
        assert!(!cache.save_if_changed().expect("already saved"));

        let loaded = VerificationCache::load(&file);
        loaded.record(Path::new("/m/a.bin"), stamp(1), digest);
        assert!(!loaded.save_if_changed().expect("same record"));
        loaded.record(Path::new("/m/a.bin"), stamp(2), digest);
        assert!(loaded.save_if_changed().expect("new stamp"));
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_loads_as_an_empty_cache_without_blocking() {
        use std::os::unix::fs::OpenOptionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("cache.json");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(status.success());
        let (sender, receiver) = std::sync::mpsc::channel();
        let path = fifo.clone();
        let loader = std::thread::spawn(move || {
            let _ = sender.send(VerificationCache::load(path).is_empty());
        });
        let outcome = receiver.recv_timeout(std::time::Duration::from_secs(5));
        if outcome.is_err() {
            // Release the blocked reader (opening for writing, then closing, gives it an
            // end of file) before failing, so the test ends. O_NONBLOCK on Linux.
            drop(
                fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(0o4000)
                    .open(&fifo),
            );
        }
        loader.join().expect("loader");
        assert_eq!(
            outcome,
            Ok(true),
            "VerificationCache::load blocked on a FIFO"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_cache_inside_the_models_root_is_refused_however_it_is_spelt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let models = dir.path().join("models");
        fs::create_dir_all(models.join("m")).expect("mkdir");
        let outside = dir.path().join("state");
        fs::create_dir_all(&outside).expect("mkdir");
        std::os::unix::fs::symlink(&models, dir.path().join("link")).expect("symlink");
        std::os::unix::fs::symlink(models.join("m"), outside.join("to-m")).expect("symlink");
        for inside in [
            models.join("cache.json"),
            models.join("not/yet/created/cache.json"),
            models.join("m/../cache.json"),
            dir.path().join("link/cache.json"),
            outside.join("to-m/cache.json"),
            outside.join("../models/cache.json"),
        ] {
            let err = VerificationCache::check_location(&inside, &models).unwrap_err();
            assert!(
                matches!(err, DigestError::CacheInsideModelsRoot { .. }),
                "{}: {err:?}",
                inside.display()
            );
            let message = err.to_string();
            assert!(message.contains(&inside.display().to_string()), "{message}");
            assert!(message.contains("outside the models root"), "{message}");
        }
        // The models root spelt through a symlink, the cache spelt directly.
        let err =
            VerificationCache::check_location(&models.join("cache.json"), &dir.path().join("link"))
                .unwrap_err();
        assert!(matches!(err, DigestError::CacheInsideModelsRoot { .. }));
        for fine in [
            outside.join("cache.json"),
            models.join("../state/cache.json"),
            dir.path().join("models-cache.json"),
        ] {
            VerificationCache::check_location(&fine, &models)
                .unwrap_or_else(|e| panic!("{}: {e}", fine.display()));
        }
        let err = VerificationCache::check_location(&outside, &models).unwrap_err();
        assert!(
            matches!(err, DigestError::NotARegularFile { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn corrupt_or_foreign_cache_file_is_treated_as_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cache.json");
        for content in [
            &b"{ not json"[..],
            b"",
            br#"{"version": 99, "entries": []}"#,
        ] {
            fs::write(&file, content).expect("write");
            assert!(VerificationCache::load(&file).is_empty());
        }
        // A directory where the file should be: unreadable, still just empty.
        assert!(VerificationCache::load(dir.path()).is_empty());
    }
}
