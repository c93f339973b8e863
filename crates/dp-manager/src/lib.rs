//! `dp-manager` owns the model manager: resolution of models by name or role, the
//! single-flight, reference-counted model cache, memory budgets with LRU eviction of idle
//! models, keep-alive release, the status/stats report, the unified task API with the
//! shared pre/post-processing presets and the embedding cache, health checks, and the
//! offline guarantees (no spec that needs the network, offline environment for child
//! processes).
//!
//! Architecture: this is the top library crate. It may depend on every lower crate
//! (`dp-spec` for specs, catalogs, errors and the provider contract; `dp-signature`; the
//! providers through the cargo features `candle`, `onnx` and `triton`), and nothing but
//! `dp-cli` (and tests) depends on it.
//!
//! # Overview
//!
//! - [`ManagerBuilder`] → [`ModelManager`] (cheap to clone). Providers
//!   ([`dp_spec::ModelProvider`]) are given to the builder; a model is loaded by the first
//!   one that supports its spec. With none, asking for the model fails with
//!   `provider_unavailable`, naming the cargo feature that compiles the right one in.
//! - [`ModelManager::get`] returns a [`ModelHandle`]: loaded once per [`CacheKey`] (model,
//!   device, precision, runtime, preset) however many requests arrive together; the hot
//!   path takes no global lock.
//! - Budgets (`max_loaded`, RAM, VRAM) are reserved before a load and held for as long as
//!   the instance lives; when a load does not fit, idle models are evicted least recently
//!   used first, and `insufficient_memory` / `insufficient_gpu_memory` is returned if that
//!   is not enough.
//! - A model whose last handle is dropped becomes idle; after its keep-alive the reaper
//!   (or [`ModelManager::reap_idle`]) releases it, and a later `get` reloads it.
//! - [`ModelManager::resolve_role`] picks a model for a role and capabilities.
//! - [`ModelManager::status`] reports what is loaded, who holds it, and the counters.
//!
//! Device policy never degrades silently: `cuda` / `cuda:N` on a machine without CUDA (or
//! past its last device, as [`DeviceInventory::probe`] reads them) is `device_unavailable`,
//! never a CPU run.
//!
//! - [`ModelManager::task`] is the unified task API (`embedding`, `infer`, preload with
//!   `data: None`); [`ModelManager::embed`] embeds texts through the shared
//!   [`preset`] (`sentence_embedding`: tokenization, pooling, normalization, the same for
//!   every provider) and a `moka` embedding cache keyed by model signature and text.
//!   Every result carries its `models_used` record ([`ModelHandle::models_used`]).
//! - What is verified is what is loaded: a load opens each of the model's files once
//!   through [`dp_digest::open_verified`], checks every pin and the lock entry
//!   ([`integrity`], the one rule of which pin covers which bytes), and hands only those
//!   bytes to the preset and the provider. The `models_used` record of a loaded model signs
//!   the digest of all its files and the preprocessing resolved from them.
//! - [`ModelManager::health`] checks every model without loading it (every artifact
//!   against its pins and lock entry, through the verification cache, provider and
//!   runtime) and summarizes tier 0.
//! - The manager never reaches the network: [`ManagerBuilder::build`] refuses specs that
//!   would, and processes started for it get the offline environment
//!   ([`ModelManager::offline_command`]) while its own environment is left untouched.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use dp_manager::{ManualClock, ModelManager};
//!
//! # fn main() -> Result<(), dp_spec::ModelError> {
//! let clock = Arc::new(ManualClock::new());
//! let manager = ModelManager::builder(dp_spec::Catalog::default(), "/srv/models")
//!     .clock(clock.clone())
//!     .default_keep_alive(Duration::from_secs(300))
//!     .reaper(false)
//!     .build()?;
//! // With a catalog and a provider: `let model = manager.get("all-minilm-l6-v2")?;`
//! clock.advance(Duration::from_secs(301));
//! assert_eq!(manager.reap_idle(), 0); // nothing was loaded
//! # Ok(()) }
//! ```

mod batcher;
mod budget;
mod builder;
mod cache;
mod cancel;
mod clock;
mod devices;
mod embedding;
mod error;
mod generation;
mod golden;
mod health;
pub mod integrity;
mod key;
mod manager;
mod offline;
mod parity;
mod persistent;
mod reaper;
mod rerank;
mod resolve;
mod search;
mod single_flight;
mod status;
mod task;
mod transcription;

/// The primitives [`single_flight`] is written against: std's here; `tests/loom.rs`
/// compiles that module against loom's instead.
mod sync {
    pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

    pub(crate) mod atomic {
        pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
    }
}

pub use batcher::{
    BATCH_SIZE_BOUNDS, BatchingConfig, BatchingStatus, HistogramReport, LATENCY_MS_BOUNDS,
};
pub use builder::{DEFAULT_KEEP_ALIVE, ManagerBuilder};
pub use cache::ModelHandle;
pub use cancel::CancelToken;
pub use clock::{Clock, ManualClock, SystemClock};
pub use devices::DeviceInventory;
/// The shared pre/post-processing presets (the `dp-preset` crate).
pub use dp_preset as preset;
pub use embedding::{EmbeddingCacheConfig, EmbeddingCacheStatus, EmbeddingOutput, PresetRun};
pub use error::ManagerError;
pub use generation::{
    DEFAULT_MAX_NEW_TOKENS, EarlyStopping, GeneratedPiece, GenerationOptions, GenerationOutput,
    MAX_BEAMS, MAX_NEW_TOKENS_LIMIT, OnPiece,
};
pub use golden::GoldenCheck;
pub use health::{DigestHealth, HealthReport, ModelHealth, TierSummary};
pub use key::CacheKey;
pub use manager::{ModelManager, Preprocessed};
pub use offline::{LOOPBACK_HOSTS, offline_env};
pub use parity::EmbeddingParity;
pub use persistent::{
    CACHE_FILE, PersistentCacheConfig, PersistentCacheStats, PersistentEmbeddingCache,
};
pub use rerank::{RankedDocument, RerankOutput};
pub use resolve::{RoleReason, RoleResolution};
pub use status::{ManagerStatus, ModelState, ModelStatus, StatusTotals};
pub use task::{TaskData, TaskOutput, TaskRequest, TaskResponse, TaskType};
pub use transcription::{Transcript, TranscriptionOptions, TranscriptionOutput};

/// The provider crates this build compiled in (cargo features `candle`, `onnx`, `triton`),
/// re-exported so a binary can register them without depending on each crate itself.
pub mod providers {
    #[cfg(feature = "candle")]
    pub use dp_provider_candle as candle;
    #[cfg(feature = "onnx")]
    pub use dp_provider_onnx as onnx;
    #[cfg(feature = "triton")]
    pub use dp_provider_triton as triton;
}
