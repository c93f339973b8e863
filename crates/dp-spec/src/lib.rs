//! `dp-spec` owns the model spec: the [`ModelSpec`] type, reading spec files (YAML or JSON)
//! with positions, the generated JSON Schemas, validation (schema and semantic rules),
//! catalogs, profile/override layering, the shared error vocabulary ([`ErrorCode`],
//! [`ModelError`]) and the provider contract ([`ModelProvider`]).
//!
//! Architecture invariants:
//! - It depends on no other dp-models crate except `dp-digest` (for [`WeightsDigest`]).
//! - It does no hashing, loads no model, opens no socket: reading spec files is its only I/O.
//! - Every error it reports carries a stable [`ErrorCode`] and, for spec problems, the
//!   file, JSON pointer and line:column ([`Diagnostic`]).

pub mod catalog;
pub mod diagnostic;
pub mod document;
pub mod downloader;
pub mod error;
pub mod layering;
pub mod model_spec;
pub mod provider;
pub mod rules;
pub mod schema;
pub mod terminal;
pub mod yaml_writer;

pub use catalog::{Catalog, CatalogEntry};
pub use diagnostic::{Diagnostic, validate_document, validate_value};
pub use document::{LocationIndex, ParseLimits, SourceDocument, SourceFormat, TextPosition};
pub use dp_digest::{ArtifactBytes, VerifiedArtifacts, VerifiedFile, WeightsDigest};
pub use error::{ErrorCode, ModelError};
pub use layering::{Layer, ProfileFile, ResolvedCatalog, resolve};
pub use model_spec::{
    DevicePolicy, Engine, ModelSpec, OnnxGraphOptimization, OnnxSettings, Precision,
    ResourceRequirements, Runtime, TensorDType, TensorSpec, TritonSettings,
};
pub use provider::{
    LoadRequest, LoadedModel, ModelProvider, NamedTensors, PROVIDER_MATRIX, ProviderHealth,
    ProviderRoute, ResolvedDevice, Tensor, TensorData, provider_route, provider_serves,
    tensor_names,
};
pub use terminal::escape_controls;
