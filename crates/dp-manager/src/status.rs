//! [`ManagerStatus`]: what is loaded, who uses it, and the manager's counters.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::cache::{Pending, Slot};
use crate::embedding::EmbeddingCacheStatus;
use crate::key::{CacheKey, PackedKey};
use crate::manager::ModelManager;

/// A snapshot of the manager, for `dp status`, health checks and logs.
///
/// Each model's fields and the budget totals are each read consistently; under concurrent
/// traffic the list and the totals may be a few operations apart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ManagerStatus {
    /// Every model in the cache (loading or loaded), in catalog order.
    pub models: Vec<ModelStatus>,
    /// Counters and budgets.
    pub totals: StatusTotals,
    /// The embedding cache's size and counters.
    pub embedding_cache: EmbeddingCacheStatus,
    /// The devices models may be placed on, as the manager was built with them.
    pub devices: crate::DeviceInventory,
    /// Each batching queue (one per model and preprocessing that has had concurrent text
    /// requests): depth, calls, and histograms of batch sizes and latencies.
    pub batching: Vec<crate::BatchingStatus>,
}

/// One cached model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelStatus {
    /// Its cache key (name, device, precision, runtime, preset).
    #[serde(flatten)]
    pub key: CacheKey,
    /// Loading, in use or idle.
    pub state: ModelState,
    /// The provider loading or serving it.
    pub provider: String,
    /// Live handles.
    pub refcount: u64,
    /// Requests blocked on its load (only while loading).
    pub waiters: u64,
    /// When it was loaded, on the manager's clock (absent while loading).
    #[serde(serialize_with = "opt_secs")]
    pub loaded_at: Option<Duration>,
    /// When it last became idle (only while idle).
    #[serde(serialize_with = "opt_secs")]
    pub idle_since: Option<Duration>,
    /// How long it may stay idle (absent while loading).
    #[serde(serialize_with = "opt_secs")]
    pub keep_alive: Option<Duration>,
    /// RAM it holds against the budget (its spec's estimate).
    pub ram_bytes: u64,
    /// VRAM it holds against the budget (its spec's estimate; 0 off CUDA).
    pub vram_bytes: u64,
    /// Requests served from the cache by this instance.
    pub hits: u64,
}

/// The state of a cached model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelState {
    /// A load is in flight.
    Loading,
    /// Loaded, with at least one live handle.
    InUse,
    /// Loaded, no live handle: evictable, and released after its keep-alive.
    Idle,
}

/// The manager's counters and budgets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusTotals {
    /// Requests served by a loaded instance.
    pub hits: u64,
    /// Requests that found no loaded instance (they loaded it or waited for its load).
    pub misses: u64,
    /// Provider load attempts.
    pub loads: u64,
    /// Provider load attempts that failed.
    pub load_errors: u64,
    /// Loads refused because the model could not fit the budgets.
    pub budget_rejections: u64,
    /// Idle models evicted to make room.
    pub evictions: u64,
    /// Idle models released after their keep-alive.
    pub expirations: u64,
    /// Models released by [`ModelManager::release`].
    pub releases: u64,
    /// Models loaded and in the cache.
    pub loaded: usize,
    /// Loads in flight.
    pub loading: usize,
    /// Instances holding budget: loaded, loading, and released or evicted ones still
    /// held by a handle. This is what `max_loaded` limits.
    pub live_instances: usize,
    /// The `max_loaded` limit.
    pub max_loaded: Option<usize>,
    /// RAM held by live instances and in-flight loads.
    pub ram_used: u64,
    /// The most RAM ever held at once.
    pub ram_peak: u64,
    /// The RAM budget.
    pub ram_budget: Option<u64>,
    /// VRAM held by live instances and in-flight loads.
    pub vram_used: u64,
    /// The most VRAM ever held at once.
    pub vram_peak: u64,
    /// The VRAM budget.
    pub vram_budget: Option<u64>,
}

#[allow(clippy::ref_option)] // serde's `serialize_with` passes `&Option<_>`.
fn opt_secs<S: Serializer>(value: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(d) => serializer.serialize_some(&d.as_secs_f64()),
        None => serializer.serialize_none(),
    }
}

impl ModelManager {
    /// A snapshot of the cache and counters. Times are durations since the manager's clock
    /// epoch, serialized as seconds.
    #[must_use]
    pub fn status(&self) -> ManagerStatus {
        let inner = self.inner();
        let mut models: Vec<(PackedKey, ModelStatus)> = Vec::new();
        let mut loading: Vec<(usize, Arc<Pending>)> = Vec::new();
        let mut live_hits = 0_u64;
        for item in &inner.slots {
            let packed = *item.key();
            let Some(route) = inner
                .route_at(packed.index())
                .and_then(|route| route.with_key(packed))
            else {
                continue;
            };
            let status = match item.value() {
                Slot::Loading(pending) => {
                    // Read the waiter count after the scan: a loader publishing its result
                    // holds the pending lock while it takes a shard lock.
                    loading.push((models.len(), Arc::clone(pending)));
                    ModelStatus {
                        key: route.key.clone(),
                        state: ModelState::Loading,
                        provider: route
                            .provider
                            .and_then(|i| inner.providers.get(i))
                            .map_or_else(String::new, |p| p.name().to_owned()),
                        refcount: 0,
                        waiters: 0,
                        loaded_at: None,
                        idle_since: None,
                        keep_alive: None,
                        ram_bytes: route.demand.ram,
                        vram_bytes: route.demand.vram,
                        hits: 0,
                    }
                }
                Slot::Ready(resident) => {
                    let hits = resident.hits();
                    live_hits = live_hits.saturating_add(hits);
                    let idle_since = resident.idle_since();
                    let demand = resident.demand();
                    ModelStatus {
                        key: route.key.clone(),
                        state: if idle_since.is_some() {
                            ModelState::Idle
                        } else {
                            ModelState::InUse
                        },
                        provider: resident.provider().to_owned(),
                        refcount: resident.handles(),
                        waiters: 0,
                        loaded_at: Some(resident.loaded_at()),
                        idle_since,
                        keep_alive: Some(resident.keep_alive()),
                        ram_bytes: demand.ram,
                        vram_bytes: demand.vram,
                        hits,
                    }
                }
            };
            models.push((packed, status));
        }
        for (position, pending) in loading {
            if let Some((_, status)) = models.get_mut(position) {
                status.waiters = pending.waiters();
            }
        }
        models.sort_by_key(|(packed, _)| (packed.index(), *packed));

        let accounting = &inner.accounting;
        let usage = accounting.usage();
        let counters = &accounting.counters;
        let read = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let count = |state: ModelState| models.iter().filter(|(_, m)| m.state == state).count();
        let totals = StatusTotals {
            hits: read(&counters.retired_hits).saturating_add(live_hits),
            misses: read(&counters.misses),
            loads: read(&counters.loads),
            load_errors: read(&counters.load_errors),
            budget_rejections: read(&counters.budget_rejections),
            evictions: read(&counters.evictions),
            expirations: read(&counters.expirations),
            releases: read(&counters.releases),
            loaded: count(ModelState::InUse) + count(ModelState::Idle),
            loading: count(ModelState::Loading),
            live_instances: usage.count,
            max_loaded: accounting.budgets.max_loaded,
            ram_used: usage.ram,
            ram_peak: usage.ram_peak,
            ram_budget: accounting.budgets.ram_bytes,
            vram_used: usage.vram,
            vram_peak: usage.vram_peak,
            vram_budget: accounting.budgets.vram_bytes,
        };
        ManagerStatus {
            models: models.into_iter().map(|(_, m)| m).collect(),
            totals,
            embedding_cache: inner.embedding_cache.status(),
            devices: inner.devices.clone(),
            batching: inner.batchers.status(),
        }
    }
}
