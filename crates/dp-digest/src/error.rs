//! The crate's single error type, [`DigestError`], and its classification
//! ([`DigestErrorKind`]) that `dp-spec` maps onto the shared error vocabulary.

use std::io;
use std::path::PathBuf;

use crate::weights_digest::DigestAlgorithm;

/// Everything that can go wrong in this crate.
///
/// Every message says what happened and what to do about it. Programs should not match on
/// messages: [`DigestError::kind`] gives a stable classification.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    /// The text has no `<algorithm>:` prefix.
    #[error(
        "digest {text:?} has no algorithm prefix; write it as sha256:<64 hex digits> or blake3:<64 hex digits>"
    )]
    MissingAlgorithm {
        /// The rejected text.
        text: String,
    },
    /// The prefix names an algorithm this crate does not implement.
    #[error("unknown digest algorithm {algorithm:?}; supported algorithms are sha256 and blake3")]
    UnknownAlgorithm {
        /// The rejected algorithm name.
        algorithm: String,
    },
    /// The hexadecimal part is not 64 lowercase hexadecimal digits.
    #[error(
        "{algorithm} digest must be 64 lowercase hexadecimal digits, got {len} characters: {hex:?}"
    )]
    MalformedHex {
        /// The algorithm named by the prefix.
        algorithm: DigestAlgorithm,
        /// The rejected hexadecimal part.
        hex: String,
        /// Its length in characters.
        len: usize,
    },
    /// A file or directory could not be read (opened, listed, stat'ed or resolved).
    #[error("could not read {}: {source}; check that it exists and that this user may read it", path.display())]
    Read {
        /// The path that failed.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A caller-supplied reader failed ([`crate::digest_reader`]).
    #[error("could not read the input stream: {source}; check where the data comes from")]
    ReadStream {
        /// The reader's error.
        #[source]
        source: io::Error,
    },
    /// A file could not be written, synced or renamed into place.
    #[error(
        "could not write {}: {source}; check that its directory exists, is writable by this user and has free space", path.display()
    )]
    Write {
        /// The path that failed.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The sidecar lock of a lock file could not be opened or locked.
    #[error(
        "could not take the exclusive lock {}: {source}; check that its directory is writable by this user", path.display()
    )]
    Lock {
        /// The sidecar lock file (`<lock file>.lck`).
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Artifacts a caller named do not exist under the root.
    #[error(
        "weights missing under {}: {}; put the files there (dp-models never downloads anything) or fix the artifact paths",
        root.display(), missing.join(", ")
    )]
    WeightsMissing {
        /// The root the artifacts are relative to.
        root: PathBuf,
        /// The missing artifacts, as given (normalized), `.` for the root itself.
        missing: Vec<String>,
    },
    /// An artifact path is not a plain relative path.
    #[error(
        "artifact path {artifact:?} {reason}; write it relative to the models root, with `/` separators and without `..`"
    )]
    InvalidArtifactPath {
        /// The path as given.
        artifact: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An artifact resolves (through symlinks) to a place outside the root.
    #[error(
        "artifact {artifact} resolves to {}, outside the models root {}; move the files under the root instead of linking out of it",
        resolved.display(), root.display()
    )]
    ArtifactEscapesRoot {
        /// The artifact, relative to the root.
        artifact: String,
        /// Where it resolves to.
        resolved: PathBuf,
        /// The root.
        root: PathBuf,
    },
    /// A symlink inside a tree points outside the tree.
    #[error(
        "symlink {link} (under {}) points to {}, outside that tree; replace the link by the file itself or by a link that stays inside the tree",
        root.display(), target.display()
    )]
    SymlinkEscapesTree {
        /// The link, relative to the tree.
        link: String,
        /// The link's target as stored in the link.
        target: PathBuf,
        /// The tree (the models root or the hashed directory).
        root: PathBuf,
    },
    /// A symlink inside a tree cannot be resolved (its target is missing, or links loop).
    #[error(
        "symlink {link} (under {}) points to {}, which cannot be resolved: {source}; restore its target or remove the link",
        root.display(), target.display()
    )]
    BrokenSymlink {
        /// The link, relative to the tree.
        link: String,
        /// The link's target as stored in the link.
        target: PathBuf,
        /// The tree.
        root: PathBuf,
        /// Why resolution failed (`NotFound` for a dangling link).
        #[source]
        source: io::Error,
    },
    /// Following a symlink leads back into a directory that is already being walked.
    #[error(
        "{path} (under {}) leads back to {}, one of its own parent directories, through a symlink; remove the link that forms the loop",
        root.display(), target.display()
    )]
    SymlinkLoop {
        /// The path where the loop closes, relative to the tree.
        path: String,
        /// The directory it leads back to.
        target: PathBuf,
        /// The tree.
        root: PathBuf,
    },
    /// A tree contains something that is neither a regular file nor a directory.
    #[error(
        "{path} (under {}) is neither a regular file nor a directory (a FIFO, socket or device); remove it from the weights tree",
        root.display()
    )]
    SpecialFile {
        /// The entry, relative to the tree.
        path: String,
        /// The tree.
        root: PathBuf,
    },
    /// A file or directory name cannot appear in a reproducible manifest.
    #[error(
        "name {path:?} (under {}) {reason}; rename it: `sha256sum` would escape it, so the manifest could not be reproduced with coreutils",
        root.display()
    )]
    UnsupportedFileName {
        /// The entry, relative to the tree (lossily decoded when not UTF-8).
        path: String,
        /// The tree.
        root: PathBuf,
        /// What is wrong with the name.
        reason: &'static str,
    },
    /// An ignore pattern is not a valid glob.
    #[error(
        "ignore pattern {pattern:?} is not a valid glob: {source}; fix the pattern (e.g. `**/*.tmp`)"
    )]
    InvalidIgnorePattern {
        /// The pattern as given.
        pattern: String,
        /// The glob parser's error.
        #[source]
        source: globset::Error,
    },
    /// A file changed (was written in place) while its bytes were being read and hashed.
    #[error(
        "{} changed while it was being verified (written in place); nothing was loaded from it: stop whatever writes the models folder, then retry",
        path.display()
    )]
    ChangedWhileRead {
        /// The file.
        path: PathBuf,
    },
    /// A lock file exists but cannot be understood.
    #[error(
        "lock file {} is malformed: {detail}; it is never replaced automatically: restore it from version control, or delete it and lock the models again",
        path.display()
    )]
    MalformedLockFile {
        /// The lock file.
        path: PathBuf,
        /// What is wrong, with a line and column where the JSON parser gives one.
        detail: String,
    },
    /// A lock file was written by an incompatible version of the format.
    #[error(
        "lock file {} has format version {version}, this build reads version {supported}; use a matching dp-models build or lock the models again",
        path.display()
    )]
    UnsupportedLockVersion {
        /// The lock file.
        path: PathBuf,
        /// The version it declares.
        version: u64,
        /// The version this build reads.
        supported: u32,
    },
    /// A file the caller named exists but is not a regular file (reading a FIFO or a
    /// device could block forever).
    #[error(
        "{role} {} is a {found}, not a regular file; it must be a regular file: pass the path of one",
        path.display()
    )]
    NotARegularFile {
        /// The path as given.
        path: PathBuf,
        /// What the caller uses it as (`lock file`, `verification cache`…).
        role: &'static str,
        /// What it is instead (`FIFO (named pipe)`, `directory`, `socket`, `device`).
        found: &'static str,
    },
    /// A verification cache inside the models root: whoever can write the models folder
    /// could forge cached digests there.
    #[error(
        "verification cache {} is inside the models root {}; whoever can write the models folder could then forge cached digests: keep the cache in a folder only the operator can write, outside the models root (by default ~/.cache/dp-models/verify-cache.json)",
        cache.display(), models_root.display()
    )]
    CacheInsideModelsRoot {
        /// The cache file as given.
        cache: PathBuf,
        /// The models root as given.
        models_root: PathBuf,
    },
}

/// A stable classification of [`DigestError`], so that callers can map errors onto their
/// own vocabulary without matching on messages.
///
/// The suggested shared error codes (applied by `dp-spec`, which this crate must not
/// depend on) are given per variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestErrorKind {
    /// A textual digest is malformed (suggested code: `invalid_spec`).
    InvalidDigest,
    /// An artifact path or ignore pattern given by the caller is invalid (suggested code:
    /// `invalid_spec`).
    InvalidInput,
    /// Artifacts, or the target of a symlink among them, are absent (suggested code:
    /// `weights_missing`).
    WeightsMissing,
    /// The bytes on disk cannot be identified reproducibly: a symlink leaves the tree or
    /// loops, a special file, a name `sha256sum` would escape (suggested code:
    /// `weights_digest_mismatch`).
    UnverifiableWeights,
    /// A lock file is malformed or of an unsupported version (suggested code:
    /// `invalid_input`).
    MalformedLockFile,
    /// The operating system refused a read, write or lock (an unexpected failure).
    Io,
    /// A file the caller named cannot be used as asked: it is not a regular file, or a
    /// verification cache lies inside the models root (suggested code: `invalid_input`).
    UnsuitableFile,
}

impl DigestError {
    /// The stable classification of this error.
    ///
    /// ```
    /// use dp_digest::{DigestErrorKind, WeightsDigest};
    ///
    /// let err = "md5:00".parse::<WeightsDigest>().unwrap_err();
    /// assert_eq!(err.kind(), DigestErrorKind::InvalidDigest);
    /// ```
    #[must_use]
    pub fn kind(&self) -> DigestErrorKind {
        match self {
            Self::MissingAlgorithm { .. }
            | Self::UnknownAlgorithm { .. }
            | Self::MalformedHex { .. } => DigestErrorKind::InvalidDigest,
            Self::InvalidArtifactPath { .. } | Self::InvalidIgnorePattern { .. } => {
                DigestErrorKind::InvalidInput
            }
            Self::WeightsMissing { .. } => DigestErrorKind::WeightsMissing,
            // A dangling link is a missing file; any other resolution failure (a loop
            // between links) means the tree itself is broken.
            Self::BrokenSymlink { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                DigestErrorKind::WeightsMissing
            }
            Self::BrokenSymlink { .. }
            | Self::ArtifactEscapesRoot { .. }
            | Self::SymlinkEscapesTree { .. }
            | Self::SymlinkLoop { .. }
            | Self::SpecialFile { .. }
            | Self::ChangedWhileRead { .. }
            | Self::UnsupportedFileName { .. } => DigestErrorKind::UnverifiableWeights,
            Self::MalformedLockFile { .. } | Self::UnsupportedLockVersion { .. } => {
                DigestErrorKind::MalformedLockFile
            }
            Self::Read { .. }
            | Self::ReadStream { .. }
            | Self::Write { .. }
            | Self::Lock { .. } => DigestErrorKind::Io,
            Self::NotARegularFile { .. } | Self::CacheInsideModelsRoot { .. } => {
                DigestErrorKind::UnsuitableFile
            }
        }
    }
}
