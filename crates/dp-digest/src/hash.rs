//! Hashing bytes, readers and files: streaming SHA-256 and (multi-threaded) BLAKE3, with a
//! progress hook.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use sha2::Digest as _;

use crate::cache::{FileStamp, VerificationCache};
use crate::error::DigestError;
use crate::manifest::ManifestEntry;
use crate::weights_digest::{DIGEST_LEN, DigestAlgorithm, WeightsDigest};

/// Read size for streaming hashes. On the reference machine 64 KiB reads beat 1 MiB reads
/// for SHA-256: the buffer fits in the L2 cache, where the hasher finds the bytes the
/// kernel just copied.
const READ_BUFFER_LEN: usize = 64 * 1024;

/// Files at least this large are hashed with BLAKE3 from a memory map on all cores; below
/// it, thread hand-off costs more than it saves and plain reads are used.
const BLAKE3_PARALLEL_THRESHOLD: u64 = 1024 * 1024;

/// How many bytes of a memory-mapped file go to BLAKE3 between two progress reports. Large
/// enough that rayon splits each slice across all cores, small enough that a progress bar
/// moves smoothly on multi-gigabyte files.
const MMAP_SLICE_LEN: usize = 32 * 1024 * 1024;

/// Bytes accumulated before calling [`Progress::advance`], so that a progress bar costs one
/// call per 4 MiB and not one per read.
const PROGRESS_BATCH: u64 = 4 * 1024 * 1024;

/// Receives progress while files are hashed; implemented by the CLI with a progress bar.
///
/// Methods are called from several threads at once when a manifest is hashed in parallel,
/// hence `Sync`. Calls are cheap and infrequent: [`Progress::advance`] reports bytes in
/// batches of a few MiB.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use dp_digest::{DigestAlgorithm, Progress, digest_file};
///
/// #[derive(Default)]
/// struct Bytes(AtomicU64);
/// impl Progress for Bytes {
///     fn start(&self, _total_bytes: u64, _total_files: u64) {}
///     fn advance(&self, bytes: u64) { self.0.fetch_add(bytes, Ordering::Relaxed); }
///     fn finish(&self) {}
/// }
///
/// let file = tempfile::NamedTempFile::new()?;
/// std::fs::write(file.path(), b"abc")?;
/// let progress = Bytes::default();
/// digest_file(file.path(), DigestAlgorithm::Sha256, &progress)?;
/// assert_eq!(progress.0.load(Ordering::Relaxed), 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Progress: Sync {
    /// Hashing starts: `total_bytes` in `total_files` files will be read (files served from
    /// the verification cache are not counted).
    fn start(&self, total_bytes: u64, total_files: u64);
    /// `bytes` more bytes were hashed.
    fn advance(&self, bytes: u64);
    /// Hashing ended, successfully or not.
    fn finish(&self);
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _total_bytes: u64, _total_files: u64) {}
    fn advance(&self, _bytes: u64) {}
    fn finish(&self) {}
}

/// Calls [`Progress::finish`] when dropped, so that a bar is closed on every exit path,
/// errors included.
pub(crate) struct FinishOnDrop<'a>(pub(crate) &'a dyn Progress);

impl Drop for FinishOnDrop<'_> {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// Reports bytes to a [`Progress`] in batches of [`PROGRESS_BATCH`].
struct BatchedProgress<'a> {
    progress: &'a dyn Progress,
    pending: u64,
}

impl<'a> BatchedProgress<'a> {
    fn new(progress: &'a dyn Progress) -> Self {
        Self {
            progress,
            pending: 0,
        }
    }

    fn add(&mut self, bytes: u64) {
        self.pending += bytes;
        if self.pending >= PROGRESS_BATCH {
            self.progress.advance(std::mem::take(&mut self.pending));
        }
    }
}

impl Drop for BatchedProgress<'_> {
    fn drop(&mut self) {
        if self.pending > 0 {
            self.progress.advance(self.pending);
        }
    }
}

/// One of the two streaming hashers.
enum Hasher {
    Sha256(Box<sha2::Sha256>),
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    fn new(algorithm: DigestAlgorithm) -> Self {
        match algorithm {
            DigestAlgorithm::Sha256 => Self::Sha256(Box::default()),
            DigestAlgorithm::Blake3 => Self::Blake3(Box::default()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha256(hasher) => hasher.update(bytes),
            Self::Blake3(hasher) => {
                hasher.update(bytes);
            }
        }
    }

    fn finish(self) -> WeightsDigest {
        match self {
            Self::Sha256(hasher) => {
                let bytes: [u8; DIGEST_LEN] = hasher.finalize().into();
                WeightsDigest::from_bytes(DigestAlgorithm::Sha256, bytes)
            }
            Self::Blake3(hasher) => {
                WeightsDigest::from_bytes(DigestAlgorithm::Blake3, *hasher.finalize().as_bytes())
            }
        }
    }
}

/// The digest of bytes already in memory.
///
/// ```
/// use dp_digest::{DigestAlgorithm, digest_bytes};
///
/// assert_eq!(
///     digest_bytes(DigestAlgorithm::Sha256, b"abc").to_string(),
///     "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
/// );
/// ```
#[must_use]
pub fn digest_bytes(algorithm: DigestAlgorithm, bytes: &[u8]) -> WeightsDigest {
    let mut hasher = Hasher::new(algorithm);
    hasher.update(bytes);
    hasher.finish()
}

/// The digest of everything `reader` yields, read in 64 KiB blocks.
///
/// # Errors
///
/// [`DigestError::ReadStream`] when the reader fails.
pub fn digest_reader(
    reader: impl Read,
    algorithm: DigestAlgorithm,
) -> Result<WeightsDigest, DigestError> {
    let mut hasher = Hasher::new(algorithm);
    stream(reader, &mut hasher, &NoProgress)
        .map_err(|source| DigestError::ReadStream { source })?;
    Ok(hasher.finish())
}

/// The digest of a file's bytes (symlinks are followed).
///
/// SHA-256 streams the file in 64 KiB reads with the fastest implementation `sha2` detects
/// on this CPU (see [`sha256_implementation`]). BLAKE3 hashes files of 1 MiB and more from a
/// memory map on all cores (rayon), smaller files with plain reads. `progress` sees one
/// `start(size, 1)`, `advance` calls summing to the size, and `finish`.
///
/// # Errors
///
/// [`DigestError::Read`] when the file cannot be opened or read, [`DigestError::SpecialFile`]
/// when it is not a regular file (reading a FIFO could block forever).
pub fn digest_file(
    path: &Path,
    algorithm: DigestAlgorithm,
    progress: &dyn Progress,
) -> Result<WeightsDigest, DigestError> {
    let size = fs::metadata(path)
        .map_err(|source| DigestError::Read {
            path: path.to_owned(),
            source,
        })?
        .len();
    // Refused before it is opened: a FIFO would block the reader.
    crate::regular::check_regular_file(path, "file to hash")?;
    progress.start(size, 1);
    let _finish = FinishOnDrop(progress);
    Ok(hash_path(path, algorithm, progress)?.digest)
}

/// What hashing one file produced.
pub(crate) struct HashedFile {
    /// The digest of the bytes read.
    pub(crate) digest: WeightsDigest,
    /// How many bytes were hashed.
    pub(crate) size: u64,
    /// The file's stamp, when it was identical before and after hashing; `None` when the
    /// file changed meanwhile, so that the result is not cached.
    pub(crate) stable_stamp: Option<FileStamp>,
}

/// Hashes the file at `path`, reporting bytes to `progress` (but not calling `start` or
/// `finish`, which belong to the caller).
pub(crate) fn hash_path(
    path: &Path,
    algorithm: DigestAlgorithm,
    progress: &dyn Progress,
) -> Result<HashedFile, DigestError> {
    let read_error = |source| DigestError::Read {
        path: path.to_owned(),
        source,
    };
    // Non-blocking: a FIFO swapped in since the walk is refused below, not waited on.
    let file = crate::regular::open_nonblocking(path).map_err(read_error)?;
    // The stamp comes from the open handle, so it describes the bytes actually read even if
    // the path is replaced meanwhile.
    let before = file.metadata().map_err(read_error)?;
    if !before.is_file() {
        // The walk refuses special files; this catches one swapped in since, or passed
        // to `digest_file` directly.
        return Err(DigestError::SpecialFile {
            path: path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            root: path.parent().unwrap_or(Path::new(".")).to_owned(),
        });
    }
    let (digest, size) =
        if algorithm == DigestAlgorithm::Blake3 && before.len() >= BLAKE3_PARALLEL_THRESHOLD {
            let mut hasher = blake3::Hasher::new();
            let size = hash_mapped_blake3(&file, &mut hasher, progress).map_err(read_error)?;
            let digest = WeightsDigest::from_bytes(algorithm, *hasher.finalize().as_bytes());
            (digest, size)
        } else {
            let mut hasher = Hasher::new(algorithm);
            let size = stream(&file, &mut hasher, progress).map_err(read_error)?;
            (hasher.finish(), size)
        };
    let after = file.metadata().map_err(read_error)?;
    let stamp = FileStamp::from_metadata(&before);
    Ok(HashedFile {
        digest,
        size,
        stable_stamp: (stamp == FileStamp::from_metadata(&after) && stamp.size == size)
            .then_some(stamp),
    })
}

/// Feeds everything `reader` yields to `hasher`; returns the number of bytes.
fn stream(mut reader: impl Read, hasher: &mut Hasher, progress: &dyn Progress) -> io::Result<u64> {
    // On the heap: rayon worker stacks are small, and 64 KiB per file is a negligible
    // allocation next to reading the file.
    let mut buffer = vec![0_u8; READ_BUFFER_LEN];
    let mut progress = BatchedProgress::new(progress);
    let mut total = 0_u64;
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buffer[..n]);
        total += n as u64;
        progress.add(n as u64);
    }
}

/// Hashes a whole file with BLAKE3 from a memory map, on all cores; returns its length.
///
/// `blake3::Hasher::update_mmap_rayon` does the same, but in one call: slicing the map
/// ourselves lets a progress bar move during multi-gigabyte files.
#[allow(unsafe_code)]
fn hash_mapped_blake3(
    file: &File,
    hasher: &mut blake3::Hasher,
    progress: &dyn Progress,
) -> io::Result<u64> {
    // SAFETY: the map is only read, and only while `file` is open. Another process may
    // still modify the file while it is mapped; the bytes read are then a mix of old and
    // new contents, giving a digest that matches neither (verification reports it as a
    // mismatch and the result is not cached, see `hash_path`), and truncating the file
    // meanwhile raises SIGBUS. This is the contract of `blake3::Hasher::update_mmap_rayon`
    // and of `b3sum`, accepted here for multi-core hashing of large weights; SHA-256 never
    // maps files.
    let map = unsafe { memmap2::Mmap::map(file)? };
    let mut progress = BatchedProgress::new(progress);
    for slice in map.chunks(MMAP_SLICE_LEN) {
        hasher.update_rayon(slice);
        progress.add(slice.len() as u64);
    }
    Ok(map.len() as u64)
}

/// Which SHA-256 implementation `sha2` selects at run time on this CPU.
///
/// `sha2` 0.11 detects the x86 SHA extensions (SHA-NI with SSE4.1) or the ARMv8 SHA2
/// instructions through `cpufeatures` and falls back to portable code otherwise; this
/// function repeats the same detection so that the choice can be shown and checked. (A
/// build with `--cfg sha2_backend="soft"` forces the portable code regardless.)
///
/// ```
/// let name = dp_digest::sha256_implementation();
/// assert!(["x86 SHA-NI", "ARMv8 SHA2", "portable"].contains(&name));
/// ```
#[must_use]
pub fn sha256_implementation() -> &'static str {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        if std::arch::is_x86_feature_detected!("sha")
            && std::arch::is_x86_feature_detected!("sse4.1")
        {
            return "x86 SHA-NI";
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("sha2") {
            return "ARMv8 SHA2";
        }
    }
    "portable"
}

/// How the files of a walk are hashed.
pub(crate) struct HashSettings<'a> {
    pub(crate) algorithm: DigestAlgorithm,
    pub(crate) strict: bool,
    pub(crate) cache: Option<&'a VerificationCache>,
    pub(crate) progress: &'a dyn Progress,
}

/// What hashing a set of files cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HashStats {
    /// Files in the manifest.
    pub files: u64,
    /// Files whose bytes were read and hashed.
    pub hashed_files: u64,
    /// Bytes read and hashed.
    pub hashed_bytes: u64,
    /// Files whose digest came from the verification cache (one `stat` each).
    pub cached_files: u64,
}

impl std::ops::AddAssign for HashStats {
    fn add_assign(&mut self, other: Self) {
        self.files += other.files;
        self.hashed_files += other.hashed_files;
        self.hashed_bytes += other.hashed_bytes;
        self.cached_files += other.cached_files;
    }
}

/// A file after the `stat` pass.
struct Planned<'a> {
    rel: &'a str,
    path: &'a Path,
    stamp: FileStamp,
    cached: Option<WeightsDigest>,
}

/// Hashes `files` (relative path → path to open) in parallel; returns the entries in the
/// same (sorted) order.
pub(crate) fn hash_files(
    files: &BTreeMap<String, PathBuf>,
    settings: &HashSettings<'_>,
) -> Result<(Vec<ManifestEntry>, HashStats), DigestError> {
    let algorithm = settings.algorithm;
    // Pass 1: one `stat` per file, and the cache lookups, so that progress knows how much
    // will really be read.
    let files: Vec<(&String, &PathBuf)> = files.iter().collect();
    let planned = files
        .par_iter()
        .map(|&(rel, path)| {
            let meta = fs::metadata(path).map_err(|source| DigestError::Read {
                path: path.clone(),
                source,
            })?;
            let stamp = FileStamp::from_metadata(&meta);
            let cached = match settings.cache {
                Some(cache) if !settings.strict => cache.lookup(path, &stamp, algorithm),
                _ => None,
            };
            Ok(Planned {
                rel,
                path,
                stamp,
                cached,
            })
        })
        .collect::<Result<Vec<_>, DigestError>>()?;

    let to_hash = planned.iter().filter(|p| p.cached.is_none());
    let (bytes, count) = to_hash.fold((0, 0), |(b, n), p| (b + p.stamp.size, n + 1));
    settings.progress.start(bytes, count);
    let _finish = FinishOnDrop(settings.progress);

    // Pass 2: hash what the cache did not know, in parallel.
    let hashed_bytes = AtomicU64::new(0);
    let entries = planned
        .par_iter()
        .map(|p| {
            if let Some(digest) = p.cached {
                return Ok(ManifestEntry {
                    path: p.rel.to_owned(),
                    size: p.stamp.size,
                    digest,
                });
            }
            let hashed = hash_path(p.path, algorithm, settings.progress)?;
            hashed_bytes.fetch_add(hashed.size, Ordering::Relaxed);
            if let (Some(cache), Some(stamp)) = (settings.cache, hashed.stable_stamp) {
                cache.record(p.path, stamp, hashed.digest);
            }
            Ok(ManifestEntry {
                path: p.rel.to_owned(),
                size: hashed.size,
                digest: hashed.digest,
            })
        })
        .collect::<Result<Vec<_>, DigestError>>()?;

    let stats = HashStats {
        files: planned.len() as u64,
        hashed_files: count,
        hashed_bytes: hashed_bytes.into_inner(),
        cached_files: planned.len() as u64 - count,
    };
    Ok((entries, stats))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::test_support::{pseudo_random_bytes, sha256sum};

    #[derive(Default)]
    struct Recorder {
        started: AtomicU64,
        advanced: AtomicU64,
        finished: AtomicU64,
    }

    impl Progress for Recorder {
        fn start(&self, total_bytes: u64, _total_files: u64) {
            self.started.store(total_bytes, Ordering::Relaxed);
        }
        fn advance(&self, bytes: u64) {
            self.advanced.fetch_add(bytes, Ordering::Relaxed);
        }
        fn finish(&self) {
            self.finished.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn known_vectors() {
        // FIPS 180-2 appendix B.1 and the empty message.
        let cases = [
            (
                DigestAlgorithm::Sha256,
                &b""[..],
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
            (
                DigestAlgorithm::Sha256,
                b"abc",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            // The BLAKE3 reference implementation's outputs for "" and "abc".
            (
                DigestAlgorithm::Blake3,
                b"",
                "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
            ),
            (
                DigestAlgorithm::Blake3,
                b"abc",
                "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85",
            ),
        ];
        for (algorithm, input, hex) in cases {
            assert_eq!(
                digest_bytes(algorithm, input).hex(),
                hex,
                "{algorithm} {input:?}"
            );
            let streamed = digest_reader(input, algorithm).expect("in-memory reader");
            assert_eq!(streamed.hex(), hex);
        }
    }

    #[test]
    fn sha256_file_matches_sha256sum() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("weights.bin");
        // Not a multiple of the read buffer, so the last short read is exercised.
        let bytes = pseudo_random_bytes(5 * 1024 * 1024 + 12_345, 7);
        fs::write(&path, &bytes).expect("write");
        let progress = Recorder::default();
        let digest = digest_file(&path, DigestAlgorithm::Sha256, &progress).expect("digest");
        assert_eq!(digest.hex(), sha256sum(&path));
        assert_eq!(progress.started.load(Ordering::Relaxed), bytes.len() as u64);
        assert_eq!(
            progress.advanced.load(Ordering::Relaxed),
            bytes.len() as u64
        );
        assert_eq!(progress.finished.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn blake3_file_matches_one_shot_hash_above_and_below_threshold() {
        let dir = tempfile::tempdir().expect("tempdir");
        // b3sum is not installed here: compare with blake3's one-shot hash of the bytes.
        for (len, seed) in [(0, 1), (100_000, 2), (70 * 1024 * 1024 + 3, 3)] {
            let path = dir.path().join(format!("w{len}"));
            let bytes = pseudo_random_bytes(len, seed);
            fs::write(&path, &bytes).expect("write");
            let progress = Recorder::default();
            let digest = digest_file(&path, DigestAlgorithm::Blake3, &progress).expect("digest");
            assert_eq!(digest.bytes(), blake3::hash(&bytes).as_bytes(), "len {len}");
            assert_eq!(progress.advanced.load(Ordering::Relaxed), len as u64);
        }
    }

    #[test]
    fn missing_file_is_a_read_error_naming_it() {
        let err = digest_file(
            Path::new("/nonexistent/w.bin"),
            DigestAlgorithm::Sha256,
            &NoProgress,
        )
        .unwrap_err();
        assert!(matches!(err, DigestError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/w.bin"), "{err}");
    }

    #[test]
    fn failing_reader_is_reported() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let err = digest_reader(Failing, DigestAlgorithm::Blake3).unwrap_err();
        assert!(err.to_string().contains("disk on fire"), "{err}");
    }
}
