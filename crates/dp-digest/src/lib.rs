//! `dp-digest` owns the identity of weight bytes: the [`WeightsDigest`] notation
//! (`sha256:<hex>` / `blake3:<hex>`) that specs, lock files and signatures use.
//!
//! Architecture invariant: this crate knows nothing about model specs, catalogs,
//! providers or the manager. It is the bottom of the crate graph; `dp-spec` maps its
//! errors onto the shared error vocabulary.

mod weights_digest;

pub use weights_digest::{DigestAlgorithm, DigestError, WEIGHTS_DIGEST_PATTERN, WeightsDigest};
