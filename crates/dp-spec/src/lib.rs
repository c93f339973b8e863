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

// Modules are private: every public item has exactly one path, `dp_spec::Item`.
mod catalog;
mod diagnostic;
mod document;
mod downloader;
mod error;
mod generation;
mod layering;
mod model_spec;
mod provider;
mod rules;
mod schema;
mod terminal;
mod yaml_writer;

pub use catalog::{Catalog, CatalogEntry, ValidationTally, validate_path};
pub use diagnostic::{Diagnostic, sort_diagnostics, validate_document, validate_value};
pub use document::{
    DocumentError, LocationIndex, ParseLimits, SourceDocument, SourceFormat, TextPosition,
    escape_pointer_token,
};
pub use downloader::{
    DownloadedFile, DownloadedModel, DownloaderManifest, ImportAction, ImportOptions,
    model_name_for, plan_import, read_manifest, summarize,
};
pub use dp_digest::{ArtifactBytes, VerifiedArtifacts, VerifiedFile, WeightsDigest};
pub use error::{ErrorCode, ModelError};
pub use generation::{DecoderInfo, DecodingSession, Seq2SeqGenerator};
pub use layering::{Layer, ProfileFile, ResolvedCatalog, resolve};
pub use model_spec::{
    DEVICE_POLICY_PATTERN, DevicePolicy, DevicePolicyError, Engine, MODEL_NAME_PATTERN, ModelSpec,
    OnnxGraphOptimization, OnnxSettings, Precision, ROLE_PATTERN, ResourceRequirements, Runtime,
    TensorDType, TensorSpec, TritonSettings,
};
pub use provider::{
    CudaDeviceInfo, DEFAULT_CALL_OVERHEAD_TOKENS, LoadRequest, LoadedModel, ModelProvider,
    NamedTensors, OnWorker, PROVIDER_MATRIX, ProviderHealth, ProviderRoute, ResolvedDevice, Tensor,
    TensorData, WorkerSlot, provider_route, provider_serves, tensor_names, thread_share_size,
};
pub use rules::{
    PRESET_NAMES, RuleViolation, check_artifact_path, check_spec, check_triton_endpoint,
    off_limits_address,
};
pub use schema::{
    PARENT_SEGMENT_PATTERN, ROOT_ONLY_PATTERN, URL_SCHEME_PATTERN, generated_schemas, generator,
    model_spec_schema, profile_schema, root_schema_for,
};
pub use terminal::escape_controls;
pub use yaml_writer::to_yaml;
