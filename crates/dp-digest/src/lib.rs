//! `dp-digest` owns the identity of weight bytes:
//!
//! - the [`WeightsDigest`] notation (`sha256:<hex>` / `blake3:<hex>`) that specs, lock files
//!   and signatures use;
//! - file digests ([`digest_file`], [`digest_reader`], [`digest_bytes`]) with a
//!   [`Progress`] hook;
//! - manifests of directories and of a model's artifacts ([`manifest_of_dir`],
//!   [`manifest_of_artifacts`]) whose aggregate anyone can reproduce with coreutils, and
//!   their differences ([`ManifestDiff`]);
//! - the [`VerificationCache`] that re-verifies an unchanged tree with one `stat` per file;
//! - the version lock file ([`LockFile`]), updated under a lock and replaced atomically;
//! - verification of artifacts against their pins and lock entry ([`verify_model`],
//!   [`verify_artifacts`]);
//! - verified bytes ([`open_verified`], [`VerifiedArtifacts`]): every file of a model opened
//!   once and hashed from the bytes held, the only way providers and presets read model
//!   files, so that what is verified is exactly what is loaded.
//!
//! The formats and rules are documented in `docs/digests.md`.
//!
//! Architecture invariant: this crate knows nothing about model specs, catalogs,
//! providers or the manager: it takes a root path and plain relative path strings. It is
//! the bottom of the crate graph and depends on no dp-models crate; `dp-spec` maps its
//! errors onto the shared error vocabulary through [`DigestError::kind`].

mod atomic;
mod cache;
mod error;
mod hash;
mod lock;
mod manifest;
mod regular;
mod schema;
mod verified;
mod verify;
mod walk;
mod weights_digest;

#[cfg(test)]
mod test_support;

pub use atomic::write_file_atomically;
pub use cache::VerificationCache;
pub use error::{DigestError, DigestErrorKind};
pub use hash::{
    HashStats, NoProgress, Progress, digest_bytes, digest_file, digest_reader,
    sha256_implementation,
};
pub use lock::{GoldenOutputs, LOCK_FILE_VERSION, LockEntry, LockFile, rfc3339_utc};
pub use manifest::{
    Manifest, ManifestDiff, ManifestEntry, ManifestOptions, PathDigest, digest_path,
    manifest_of_artifacts, manifest_of_dir,
};
pub use regular::{check_regular_file, read_regular_file};
pub use schema::generated_schemas;
pub use verified::{
    ArtifactBytes, OpenedArtifacts, VerifiedArtifacts, VerifiedFile, open_verified,
};
pub use verify::{
    ALL_ARTIFACTS, ArtifactPins, PinCheck, RejectedPath, VerifyOptions, VerifyReport, VerifyStatus,
    verify_artifacts, verify_model,
};
pub use weights_digest::{DigestAlgorithm, WEIGHTS_DIGEST_PATTERN, WeightsDigest};
