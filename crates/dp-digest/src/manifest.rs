//! Manifests: the per-file digests of a directory (or of several artifacts under one root)
//! and their aggregate, reproducible with coreutils.
//!
//! The aggregate is the digest of the lines `"<file hex>  <relative path>\n"`, sorted by
//! the bytes of the path: exactly what `sha256sum` (or `b3sum`) prints for the files, so
//!
//! ```text
//! cd DIR && find -L . -type f -print0 | sed -z 's|^\./||' | LC_ALL=C sort -z \
//!   | xargs -0 sha256sum | sha256sum
//! ```
//!
//! prints the same hex. The rules are documented in `docs/digests.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cache::VerificationCache;
use crate::error::DigestError;
use crate::hash::{HashSettings, NoProgress, Progress, digest_bytes, digest_file, hash_files};
use crate::walk::{build_ignore, walk_artifacts};
use crate::weights_digest::{DigestAlgorithm, WeightsDigest};

/// One file of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    /// Path relative to the manifest's root: `/` separators, no `./` prefix, UTF-8 without
    /// newline, carriage return or backslash.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Digest of the file's bytes.
    pub digest: WeightsDigest,
}

/// The files of a tree with their digests, sorted by path, and their aggregate digest
/// (the digest of the lines `sha256sum` prints for the files; see `docs/digests.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The algorithm of every digest in the manifest.
    pub algorithm: DigestAlgorithm,
    /// The files, sorted by the bytes of their paths.
    pub files: Vec<ManifestEntry>,
    /// Digest of the lines `<file hex>  <path>\n` of `files`, in order.
    pub aggregate: WeightsDigest,
}

impl Manifest {
    /// Builds a manifest from entries in any order; sorts them by path and computes the
    /// aggregate with `algorithm` (the entries' digests are expected to use it too).
    #[must_use]
    pub fn from_entries(algorithm: DigestAlgorithm, mut files: Vec<ManifestEntry>) -> Self {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let aggregate = aggregate_of(algorithm, &files);
        Self {
            algorithm,
            files,
            aggregate,
        }
    }

    /// The lines `sha256sum` (or `b3sum`, for BLAKE3) prints for the files, in manifest
    /// order: `"<hex>  <path>\n"` each.
    #[must_use]
    pub fn sha256sum_lines(&self) -> String {
        sum_lines(&self.files)
    }

    /// The total size of the files in bytes.
    #[must_use]
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The manifest of the directory `prefix` (relative to this manifest's root), with
    /// paths relative to that directory; `None` when no file lies under it.
    pub(crate) fn subtree(&self, prefix: &str) -> Option<Self> {
        let files: Vec<ManifestEntry> = if prefix.is_empty() {
            self.files.clone()
        } else {
            let prefix = format!("{prefix}/");
            self.files
                .iter()
                .filter_map(|f| {
                    f.path.strip_prefix(&prefix).map(|rest| ManifestEntry {
                        path: rest.to_owned(),
                        ..f.clone()
                    })
                })
                .collect()
        };
        // Removing a common prefix keeps byte order, so `files` is still sorted.
        (!files.is_empty()).then(|| Self {
            algorithm: self.algorithm,
            aggregate: aggregate_of(self.algorithm, &files),
            files,
        })
    }
}

/// `"<hex>  <path>\n"` for each entry, in order.
fn sum_lines(files: &[ManifestEntry]) -> String {
    // 64 hex digits, two spaces, a newline.
    let capacity = files.iter().map(|f| f.path.len() + 67).sum();
    let mut lines = String::with_capacity(capacity);
    for file in files {
        lines.push_str(&file.digest.hex());
        lines.push_str("  ");
        lines.push_str(&file.path);
        lines.push('\n');
    }
    lines
}

/// The aggregate digest of sorted entries.
pub(crate) fn aggregate_of(algorithm: DigestAlgorithm, files: &[ManifestEntry]) -> WeightsDigest {
    digest_bytes(algorithm, sum_lines(files).as_bytes())
}

/// How to build a manifest.
pub struct ManifestOptions<'a> {
    /// The algorithm of every digest (default SHA-256).
    pub algorithm: DigestAlgorithm,
    /// Glob patterns of files to leave out, matched against the paths as they appear in the
    /// manifest (`*` does not cross `/`, `**` does); a pattern matching a directory leaves
    /// out everything below it. None by default.
    pub ignore: Vec<String>,
    /// Hash every file even when the cache knows its digest (the cache is still refreshed).
    pub strict: bool,
    /// Where to remember and look up digests; none by default.
    pub cache: Option<&'a VerificationCache>,
    /// Receives progress.
    pub progress: &'a dyn Progress,
}

impl Default for ManifestOptions<'_> {
    fn default() -> Self {
        Self {
            algorithm: DigestAlgorithm::Sha256,
            ignore: Vec::new(),
            strict: false,
            cache: None,
            progress: &NoProgress,
        }
    }
}

impl fmt::Debug for ManifestOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManifestOptions")
            .field("algorithm", &self.algorithm)
            .field("ignore", &self.ignore)
            .field("strict", &self.strict)
            .field("cache", &self.cache.map(VerificationCache::path))
            .finish_non_exhaustive()
    }
}

/// The manifest of every file under `dir`, with paths relative to `dir`.
///
/// Files are hashed in parallel. See `docs/digests.md` for the rules (symlinks, sorting,
/// refused names) and the coreutils pipeline that reproduces the aggregate.
///
/// ```
/// use dp_digest::{DigestAlgorithm, ManifestOptions, manifest_of_dir};
///
/// let dir = tempfile::tempdir()?;
/// std::fs::create_dir(dir.path().join("sub"))?;
/// std::fs::write(dir.path().join("sub/b.txt"), b"abc")?;
/// let manifest = manifest_of_dir(dir.path(), &ManifestOptions::default())?;
/// assert_eq!(
///     manifest.sha256sum_lines(),
///     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  sub/b.txt\n"
/// );
/// assert_eq!(
///     manifest.aggregate,
///     dp_digest::digest_bytes(DigestAlgorithm::Sha256, manifest.sha256sum_lines().as_bytes())
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`DigestError::WeightsMissing`] when `dir` does not exist; the first entry refused by the
/// rules ([`DigestError::SymlinkEscapesTree`], [`DigestError::BrokenSymlink`],
/// [`DigestError::SymlinkLoop`], [`DigestError::SpecialFile`],
/// [`DigestError::UnsupportedFileName`]); [`DigestError::InvalidIgnorePattern`];
/// [`DigestError::Read`] on I/O errors.
pub fn manifest_of_dir(dir: &Path, options: &ManifestOptions<'_>) -> Result<Manifest, DigestError> {
    manifest_of_artifacts(dir, &[".".to_owned()], options)
}

/// The manifest of several artifacts (files or directories, relative to `root`), with
/// paths relative to `root` (e.g. `all-minilm-l6-v2/config.json`).
///
/// Artifacts must resolve (through symlinks) to places inside `root`, and symlinks within
/// them must stay inside `root`. A file named by two artifacts is listed once.
///
/// # Errors
///
/// As [`manifest_of_dir`], plus [`DigestError::InvalidArtifactPath`] (absolute, `..`,
/// empty) and [`DigestError::ArtifactEscapesRoot`]; [`DigestError::WeightsMissing`] lists
/// every missing artifact.
pub fn manifest_of_artifacts(
    root: &Path,
    artifacts: &[String],
    options: &ManifestOptions<'_>,
) -> Result<Manifest, DigestError> {
    let ignore = build_ignore(&options.ignore)?;
    let walk = walk_artifacts(root, artifacts, &ignore)?;
    if !walk.missing.is_empty() {
        return Err(DigestError::WeightsMissing {
            root: root.to_owned(),
            missing: walk.missing,
        });
    }
    if let Some(rejected) = walk.rejected.into_iter().next() {
        return Err(rejected.error);
    }
    let hashing = HashSettings {
        algorithm: options.algorithm,
        strict: options.strict,
        cache: options.cache,
        progress: options.progress,
    };
    let (files, _) = hash_files(&walk.files, &hashing)?;
    Ok(Manifest::from_entries(options.algorithm, files))
}

/// The digest of a path (`dp digest`): a file's digest, or a directory's manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathDigest {
    /// A file's digest, in `<algorithm>:<hex>` form.
    File(String),
    /// A directory's manifest.
    Directory(Manifest),
}

impl PathDigest {
    /// The JSON form (what `dp digest --json` prints): `{"digest"}` for a file,
    /// `{"aggregate", "files": [{"path", "digest"}]}` for a directory.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::File(digest) => serde_json::json!({ "digest": digest }),
            Self::Directory(manifest) => {
                let files: Vec<_> = manifest
                    .files
                    .iter()
                    .map(|f| serde_json::json!({ "path": f.path, "digest": f.digest }))
                    .collect();
                serde_json::json!({ "aggregate": manifest.aggregate, "files": files })
            }
        }
    }
}

/// The digest of `path`, a directory when `is_dir`, else a file (which the caller has
/// checked to be a regular file). A directory is hashed as its manifest, by absolute path
/// (cache entries are keyed by path: an absolute one stays valid from any directory). A
/// file is hashed directly, or, when `options` has a cache, as the one-file manifest of its
/// directory (the cache is keyed by the paths a manifest walks).
///
/// # Errors
///
/// As [`manifest_of_dir`], [`manifest_of_artifacts`] and [`digest_file`].
pub fn digest_path(
    path: &Path,
    is_dir: bool,
    options: &ManifestOptions<'_>,
) -> Result<PathDigest, DigestError> {
    if is_dir {
        let dir = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        manifest_of_dir(&dir, options).map(PathDigest::Directory)
    } else if options.cache.is_some() {
        file_through_manifest(path, options).map(PathDigest::File)
    } else {
        digest_file(path, options.algorithm, options.progress)
            .map(|d| PathDigest::File(d.to_string()))
    }
}

/// The digest of one file, through the manifest of its directory (so the cache applies).
fn file_through_manifest(
    path: &Path,
    options: &ManifestOptions<'_>,
) -> Result<String, DigestError> {
    // Resolved first, so that a link to a file elsewhere is hashed like the file itself.
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

/// How two file lists differ, by path: files only in the second (`added`), only in the
/// first (`removed`), and in both with different digest or size (`changed`). Each list is
/// sorted by path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ManifestDiff {
    /// Paths present only in the second list.
    pub added: Vec<String>,
    /// Paths present only in the first list.
    pub removed: Vec<String>,
    /// Paths present in both with a different digest or size.
    pub changed: Vec<String>,
}

impl ManifestDiff {
    /// The difference from `before` to `after` (lists in any order). Digests of different
    /// algorithms never compare equal, so both lists should use the same algorithm.
    ///
    /// ```
    /// use dp_digest::{DigestAlgorithm, ManifestDiff, ManifestEntry, digest_bytes};
    ///
    /// let entry = |path: &str, bytes: &[u8]| ManifestEntry {
    ///     path: path.into(),
    ///     size: bytes.len() as u64,
    ///     digest: digest_bytes(DigestAlgorithm::Sha256, bytes),
    /// };
    /// let before = [entry("a", b"1"), entry("b", b"2")];
    /// let after = [entry("a", b"1!"), entry("c", b"3")];
    /// let diff = ManifestDiff::between(&before, &after);
    /// assert_eq!(diff.changed, ["a"]);
    /// assert_eq!(diff.added, ["c"]);
    /// assert_eq!(diff.removed, ["b"]);
    /// assert_eq!(diff.to_string(), "changed: a\nadded:   c\nremoved: b\n");
    /// ```
    #[must_use]
    pub fn between(before: &[ManifestEntry], after: &[ManifestEntry]) -> Self {
        let before: BTreeMap<&str, &ManifestEntry> =
            before.iter().map(|e| (e.path.as_str(), e)).collect();
        let after: BTreeMap<&str, &ManifestEntry> =
            after.iter().map(|e| (e.path.as_str(), e)).collect();
        let mut diff = Self::default();
        for (path, old) in &before {
            match after.get(path) {
                None => diff.removed.push((*path).to_owned()),
                Some(new) if new.digest != old.digest || new.size != old.size => {
                    diff.changed.push((*path).to_owned());
                }
                Some(_) => {}
            }
        }
        diff.added = after
            .keys()
            .filter(|path| !before.contains_key(*path))
            .map(|path| (*path).to_owned())
            .collect();
        diff
    }

    /// Whether the lists have the same files with the same contents.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl fmt::Display for ManifestDiff {
    /// One line per file (`changed: `, `added:   `, `removed: `), or `no changes`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "no changes");
        }
        for (label, paths) in [
            ("changed:", &self.changed),
            ("added:  ", &self.added),
            ("removed:", &self.removed),
        ] {
            for path in paths {
                writeln!(f, "{label} {path}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::fs;
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::fs::symlink;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::error::DigestErrorKind;
    use crate::test_support::{coreutils_aggregate, coreutils_lines, pseudo_random_bytes, shell};

    /// Counts what hashing reported, to prove that cached files are not read.
    #[derive(Default)]
    struct Counter {
        files_to_hash: AtomicU64,
        bytes_advanced: AtomicU64,
        finished: AtomicU64,
    }

    impl Progress for Counter {
        fn start(&self, _total_bytes: u64, total_files: u64) {
            self.files_to_hash.store(total_files, Ordering::Relaxed);
        }
        fn advance(&self, bytes: u64) {
            self.bytes_advanced.fetch_add(bytes, Ordering::Relaxed);
        }
        fn finish(&self) {
            self.finished.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn write(path: &Path, bytes: &[u8]) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(path, bytes).expect("write");
    }

    /// Nested folders, unicode names, an empty file, names whose byte order differs from
    /// a naive path order, a file symlink and a directory symlink inside the tree.
    fn sample_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        write(&d.join("config.json"), b"{\"hidden_size\": 384}\n");
        write(
            &d.join("weights/model.safetensors"),
            &pseudo_random_bytes(300_000, 1),
        );
        write(
            &d.join("weights/shards/part-0001.bin"),
            &pseudo_random_bytes(70_000, 2),
        );
        write(&d.join("weights-extra.bin"), b"'-' sorts before '/'");
        write(&d.join("données/modèle.bin"), "é".as_bytes());
        write(&d.join("日本語/トークナイザ.json"), b"{}");
        write(&d.join("emoji 🎉 with spaces.txt"), b"party");
        write(&d.join("Upper.txt"), b"uppercase sorts before lowercase");
        write(&d.join("empty"), b"");
        symlink(
            "weights/model.safetensors",
            d.join("model-link.safetensors"),
        )
        .expect("symlink");
        symlink("weights/shards", d.join("shards-link")).expect("symlink");
        dir
    }

    #[test]
    fn aggregate_equals_the_coreutils_pipeline() {
        let tree = sample_tree();
        let manifest = manifest_of_dir(tree.path(), &ManifestOptions::default()).expect("manifest");
        assert_eq!(manifest.sha256sum_lines(), coreutils_lines(tree.path()));
        assert_eq!(manifest.aggregate.hex(), coreutils_aggregate(tree.path()));
        let paths: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "Upper.txt",
                "config.json",
                "donn\u{e9}es/mod\u{e8}le.bin",
                "emoji \u{1f389} with spaces.txt",
                "empty",
                "model-link.safetensors",
                "shards-link/part-0001.bin",
                "weights-extra.bin",
                "weights/model.safetensors",
                "weights/shards/part-0001.bin",
                "\u{65e5}\u{672c}\u{8a9e}/\u{30c8}\u{30fc}\u{30af}\u{30ca}\u{30a4}\u{30b6}.json",
            ]
        );
        // The link is listed under its own path with the target's bytes and size.
        let link = &manifest.files[5];
        let target = &manifest.files[8];
        assert_eq!((link.digest, link.size), (target.digest, 300_000));
        assert_eq!(manifest.files[4].size, 0);
    }

    #[test]
    fn empty_tree_aggregates_no_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("only-dirs")).expect("mkdir");
        let manifest = manifest_of_dir(dir.path(), &ManifestOptions::default()).expect("manifest");
        assert!(manifest.files.is_empty());
        // Plain `xargs` would run `sha256sum` once on empty stdin: `-r` is needed here.
        let out = shell(
            dir.path(),
            r"find -L . -type f -print0 | sed -z 's|^\./||' | LC_ALL=C sort -z | xargs -0 -r sha256sum | sha256sum",
        );
        assert_eq!(
            Some(manifest.aggregate.hex().as_str()),
            out.split_whitespace().next()
        );
        assert_eq!(
            manifest.aggregate.hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn blake3_manifest_uses_blake3_everywhere() {
        let tree = sample_tree();
        let options = ManifestOptions {
            algorithm: DigestAlgorithm::Blake3,
            ..ManifestOptions::default()
        };
        let manifest = manifest_of_dir(tree.path(), &options).expect("manifest");
        for file in &manifest.files {
            let bytes = fs::read(tree.path().join(&file.path)).expect("read");
            assert_eq!(
                file.digest.bytes(),
                blake3::hash(&bytes).as_bytes(),
                "{}",
                file.path
            );
        }
        let lines = manifest.sha256sum_lines();
        assert_eq!(
            manifest.aggregate.bytes(),
            blake3::hash(lines.as_bytes()).as_bytes()
        );
    }

    #[test]
    fn symlink_leaving_the_tree_is_refused_naming_link_and_target() {
        let tree = sample_tree();
        let outside = tempfile::tempdir().expect("tempdir");
        let secret = outside.path().join("secret.bin");
        write(&secret, b"not ours");
        symlink(&secret, tree.path().join("weights/evil.bin")).expect("symlink");
        let err = manifest_of_dir(tree.path(), &ManifestOptions::default()).unwrap_err();
        assert!(
            matches!(&err, DigestError::SymlinkEscapesTree { link, target, .. }
                if link == "weights/evil.bin" && target == &secret),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains("weights/evil.bin") && message.contains("secret.bin"),
            "{message}"
        );
        assert_eq!(err.kind(), DigestErrorKind::UnverifiableWeights);
        // A relative link climbing out with `..` is refused the same way.
        fs::remove_file(tree.path().join("weights/evil.bin")).expect("rm");
        symlink("../../", tree.path().join("weights/up")).expect("symlink");
        let err =
            manifest_of_dir(&tree.path().join("weights"), &ManifestOptions::default()).unwrap_err();
        assert!(
            matches!(err, DigestError::SymlinkEscapesTree { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn dangling_symlink_and_loops_and_fifos_are_refused() {
        let tree = sample_tree();
        symlink("gone.bin", tree.path().join("weights/dangling")).expect("symlink");
        let err = manifest_of_dir(tree.path(), &ManifestOptions::default()).unwrap_err();
        assert!(
            matches!(&err, DigestError::BrokenSymlink { link, .. } if link == "weights/dangling"),
            "{err:?}"
        );
        assert!(err.to_string().contains("gone.bin"), "{err}");
        assert_eq!(err.kind(), DigestErrorKind::WeightsMissing);
        fs::remove_file(tree.path().join("weights/dangling")).expect("rm");

        symlink("..", tree.path().join("weights/loop")).expect("symlink");
        let err = manifest_of_dir(tree.path(), &ManifestOptions::default()).unwrap_err();
        assert!(
            matches!(&err, DigestError::SymlinkLoop { path, .. } if path == "weights/loop"),
            "{err:?}"
        );
        fs::remove_file(tree.path().join("weights/loop")).expect("rm");

        shell(tree.path(), "mkfifo weights/pipe");
        let err = manifest_of_dir(tree.path(), &ManifestOptions::default()).unwrap_err();
        assert!(
            matches!(&err, DigestError::SpecialFile { path, .. } if path == "weights/pipe"),
            "{err:?}"
        );
    }

    #[test]
    fn names_sha256sum_would_escape_are_refused() {
        let names: [&[u8]; 4] = [
            b"new\nline",
            b"back\\slash",
            b"carriage\rreturn",
            b"latin1-\xe9",
        ];
        for name in names {
            let dir = tempfile::tempdir().expect("tempdir");
            write(&dir.path().join("ok.bin"), b"ok");
            write(&dir.path().join("sub").join(OsStr::from_bytes(name)), b"x");
            let err = manifest_of_dir(dir.path(), &ManifestOptions::default()).unwrap_err();
            assert!(
                matches!(&err, DigestError::UnsupportedFileName { path, .. } if path.starts_with("sub/")),
                "{name:?}: {err:?}"
            );
            assert!(err.to_string().contains("rename it"), "{err}");
        }
    }

    #[test]
    fn ignore_patterns_leave_files_and_directories_out() {
        let tree = sample_tree();
        write(&tree.path().join("weights/tmp/x.bin"), b"scratch");
        write(&tree.path().join("weights/partial.tmp"), b"scratch");
        write(&tree.path().join(".cache/blob"), b"scratch");
        let options = ManifestOptions {
            ignore: vec!["**/*.tmp".into(), ".cache".into(), "weights/tmp".into()],
            ..ManifestOptions::default()
        };
        let with_ignores = manifest_of_dir(tree.path(), &options).expect("manifest");
        let untouched = sample_tree();
        let plain =
            manifest_of_dir(untouched.path(), &ManifestOptions::default()).expect("manifest");
        assert_eq!(with_ignores, plain);

        // `*` does not cross `/`: `*.tmp` only matches at the top.
        let options = ManifestOptions {
            ignore: vec!["*.tmp".into(), ".cache/**".into(), "weights/tmp/**".into()],
            ..ManifestOptions::default()
        };
        let manifest = manifest_of_dir(tree.path(), &options).expect("manifest");
        assert!(
            manifest
                .files
                .iter()
                .any(|f| f.path == "weights/partial.tmp")
        );

        let options = ManifestOptions {
            ignore: vec!["a[".into()],
            ..ManifestOptions::default()
        };
        let err = manifest_of_dir(tree.path(), &options).unwrap_err();
        assert!(
            matches!(err, DigestError::InvalidIgnorePattern { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn artifacts_are_listed_relative_to_the_root() {
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path();
        write(&r.join("all-minilm-l6-v2/config.json"), b"{}");
        write(&r.join("all-minilm-l6-v2/onnx/model.onnx"), b"onnx");
        write(&r.join("clap.onnx"), b"clap");
        write(&r.join("unrelated/file"), b"not an artifact");
        let artifacts = [
            "all-minilm-l6-v2".to_owned(),
            "./clap.onnx".to_owned(),
            "all-minilm-l6-v2/config.json".to_owned(),
        ];
        let manifest =
            manifest_of_artifacts(r, &artifacts, &ManifestOptions::default()).expect("manifest");
        let paths: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "all-minilm-l6-v2/config.json",
                "all-minilm-l6-v2/onnx/model.onnx",
                "clap.onnx"
            ]
        );
        let expected = shell(
            r,
            "sha256sum all-minilm-l6-v2/config.json all-minilm-l6-v2/onnx/model.onnx clap.onnx",
        );
        assert_eq!(manifest.sha256sum_lines(), expected);

        let artifacts = [
            "clap.onnx".to_owned(),
            "nope".to_owned(),
            "gone/x.bin".to_owned(),
        ];
        let err = manifest_of_artifacts(r, &artifacts, &ManifestOptions::default()).unwrap_err();
        assert!(
            matches!(&err, DigestError::WeightsMissing { missing, .. } if missing == &["nope", "gone/x.bin"]),
            "{err:?}"
        );
        assert!(err.to_string().contains("nope, gone/x.bin"), "{err}");

        let err = manifest_of_artifacts(r, &["../x".to_owned()], &ManifestOptions::default())
            .unwrap_err();
        assert!(
            matches!(err, DigestError::InvalidArtifactPath { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn artifacts_resolving_outside_the_root_are_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        write(&outside.path().join("model.bin"), b"elsewhere");
        symlink(outside.path(), root.path().join("linked")).expect("symlink");
        let err = manifest_of_artifacts(
            root.path(),
            &["linked".to_owned()],
            &ManifestOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, DigestError::ArtifactEscapesRoot { artifact, .. } if artifact == "linked"),
            "{err:?}"
        );
    }

    #[test]
    fn missing_directory_is_weights_missing() {
        let err = manifest_of_dir(
            Path::new("/nonexistent/models"),
            &ManifestOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), DigestErrorKind::WeightsMissing);
    }

    /// Hashes `dir` with `cache`; returns the manifest and how many files were read.
    fn cached_run(dir: &Path, cache: &VerificationCache, strict: bool) -> (Manifest, u64) {
        let counter = Counter::default();
        let options = ManifestOptions {
            cache: Some(cache),
            strict,
            progress: &counter,
            ..ManifestOptions::default()
        };
        let manifest = manifest_of_dir(dir, &options).expect("manifest");
        assert_eq!(counter.finished.load(Ordering::Relaxed), 1);
        let files = counter.files_to_hash.load(Ordering::Relaxed);
        if files == 0 {
            assert_eq!(counter.bytes_advanced.load(Ordering::Relaxed), 0);
        }
        (manifest, files)
    }

    #[test]
    fn cache_serves_unchanged_files_and_notices_every_change() {
        let tree = sample_tree();
        let state = tempfile::tempdir().expect("tempdir");
        let cache = VerificationCache::load(state.path().join("cache.json"));
        let (first, hashed) = cached_run(tree.path(), &cache, false);
        assert_eq!(hashed, 11);
        cache.save().expect("save");

        // A fresh process: reload the cache; nothing is read.
        let cache = VerificationCache::load(state.path().join("cache.json"));
        let (again, hashed) = cached_run(tree.path(), &cache, false);
        assert_eq!((&again, hashed), (&first, 0));

        // mtime changed, same bytes: rehashed (only that file), same manifest.
        let config = tree.path().join("config.json");
        let file = fs::File::options().write(true).open(&config).expect("open");
        file.set_modified(SystemTime::now() - Duration::from_secs(3600))
            .expect("touch");
        drop(file);
        let (manifest, hashed) = cached_run(tree.path(), &cache, false);
        assert_eq!((&manifest, hashed), (&first, 1));

        // Size changed.
        fs::write(&config, b"{\"hidden_size\": 768}\n\n").expect("write");
        let (manifest, hashed) = cached_run(tree.path(), &cache, false);
        assert_eq!(hashed, 1);
        assert_eq!(
            ManifestDiff::between(&first.files, &manifest.files).changed,
            ["config.json"]
        );

        // Same bytes, same size and mtime, but another inode (a replaced file).
        let empty = tree.path().join("empty");
        let mtime = fs::metadata(&empty)
            .expect("stat")
            .modified()
            .expect("mtime");
        let replacement = tree.path().join("empty.new");
        fs::write(&replacement, b"").expect("write");
        fs::File::options()
            .write(true)
            .open(&replacement)
            .expect("open")
            .set_modified(mtime)
            .expect("touch");
        fs::rename(&replacement, &empty).expect("rename");
        let (_, hashed) = cached_run(tree.path(), &cache, false);
        assert_eq!(hashed, 1);

        // Strict: everything is read again, and the cache is refreshed.
        let (_, hashed) = cached_run(tree.path(), &cache, true);
        assert_eq!(hashed, 11);
        let (_, hashed) = cached_run(tree.path(), &cache, false);
        assert_eq!(hashed, 0);
    }

    #[test]
    fn diff_reports_each_kind_of_change() {
        let tree = sample_tree();
        let before = manifest_of_dir(tree.path(), &ManifestOptions::default()).expect("manifest");
        let mut weights = fs::read(tree.path().join("weights-extra.bin")).expect("read");
        weights[3] ^= 1;
        fs::write(tree.path().join("weights-extra.bin"), &weights).expect("write");
        fs::remove_file(tree.path().join("Upper.txt")).expect("rm");
        write(&tree.path().join("weights/new.bin"), b"new");
        let after = manifest_of_dir(tree.path(), &ManifestOptions::default()).expect("manifest");
        let diff = ManifestDiff::between(&before.files, &after.files);
        assert_eq!(
            diff,
            ManifestDiff {
                added: vec!["weights/new.bin".into()],
                removed: vec!["Upper.txt".into()],
                changed: vec!["weights-extra.bin".into()],
            }
        );
        assert_eq!(
            diff.to_string(),
            "changed: weights-extra.bin\nadded:   weights/new.bin\nremoved: Upper.txt\n"
        );
        assert!(ManifestDiff::between(&after.files, &after.files).is_empty());
        assert_eq!(ManifestDiff::default().to_string(), "no changes\n");
    }

    #[test]
    fn manifest_serializes_as_documented() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(&dir.path().join("a"), b"abc");
        let manifest = manifest_of_dir(dir.path(), &ManifestOptions::default()).expect("manifest");
        let json = serde_json::to_value(&manifest).expect("json");
        assert_eq!(json["algorithm"], "sha256");
        assert_eq!(json["files"][0]["path"], "a");
        assert_eq!(json["files"][0]["size"], 3);
        assert_eq!(
            json["files"][0]["digest"],
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let back: Manifest = serde_json::from_value(json).expect("back");
        assert_eq!(back, manifest);
    }
}
