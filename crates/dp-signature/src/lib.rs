//! `dp-signature` owns the reproducibility records of dp-models: the canonical
//! [`ModelSignature`] of a resolved model, the [`preprocess_signature`] of a preset and its
//! parameters, the [`ModelsUsedEntry`] every pipeline output records per model, and the
//! [`ResolvedModelMapping`] a run writes into its manifest. `docs/signatures.md` is the
//! reference for the formats.
//!
//! Architecture invariants:
//! - It depends on `dp-spec` (and, through it, `dp-digest`) only; never on a provider or
//!   the manager, so that any layer can compute or check a signature.
//! - A signature is a pure function of a spec, its [`Resolution`] (where and at which
//!   precision the model runs) and its [`ArtifactIdentity`] (the digest of all its files and
//!   the preprocessing resolved from them), never of a provider's state: two processes that
//!   resolve the same spec over the same bytes write the same signature, byte for byte, and
//!   different bytes never share one.
//! - Only identity fields enter a signature. Informational fields (`metadata`,
//!   `display_name`, `license`, `aliases`, `tier`, timeouts…) and the spelling of the spec
//!   file (field order, YAML style, `256` vs `256.0`) never change it.
//!
//! ```
//! use dp_signature::{Resolution, model_signature_for};
//!
//! let yaml = r#"
//! model_name: tiny-embedder
//! model_version: "1.0.0"
//! role: text_embedding
//! runtime: inprocess
//! engine: candle
//! local_artifacts: [tiny-embedder]
//! weights_digest: sha256:0000000000000000000000000000000000000000000000000000000000000000
//! "#;
//! let doc = dp_spec::SourceDocument::parse_str("tiny.yaml", yaml, dp_spec::SourceFormat::Yaml)?;
//! let spec = dp_spec::validate_document(&doc).map_err(|d| d[0].clone())?;
//! let resolution = Resolution::for_cpu_build(&spec)?;
//! let signature = model_signature_for(&spec, &resolution);
//! assert_eq!(
//!     signature.as_str(),
//!     "dp2:model_name=tiny-embedder;model_version=1.0.0;role=text_embedding;\
//!      runtime=inprocess;engine=candle;precision=fp32;device=cpu;preprocess_preset=-;\
//!      preprocess_params={};weights_digest=sha256:\
//!      0000000000000000000000000000000000000000000000000000000000000000;artifacts_digest=-"
//! );
//! assert!(signature.short().starts_with("dp2-"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod canonical;
mod error;
mod record;
mod resolution;
mod schema;
mod signature;

pub use error::SignatureError;
pub use record::{ModelsUsedEntry, ResolvedModelMapping, ResolvedRequest};
pub use resolution::{Placement, Resolution};
pub use schema::generated_schemas;
pub use signature::{
    ArtifactIdentity, ModelSignature, SignatureVersion, model_signature_for, model_signature_with,
    preprocess_canonical, preprocess_signature,
};
