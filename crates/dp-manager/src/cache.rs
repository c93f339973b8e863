//! The cache's building blocks: a [`Slot`] per cache key (loading or ready), the
//! single-flight [`Pending`] load that waiters block on, the loaded [`Resident`] instance
//! with its per-model counters, and the [`ModelHandle`] users hold.
//!
//! The handle count and the single-flight rendezvous themselves live in
//! [`crate::single_flight`] (model-checked by `tests/loom.rs`); this module wraps them
//! around loaded models.
//!
//! # Handles and eviction
//!
//! Evicting or expiring a resident is only done under the dashmap shard *write* lock
//! (`remove_if`), after checking that it is idle; acquiring a handle from the map is only
//! done under the shard *read* guard. The two exclude each other, so a handle is never
//! given out for an instance the cache has just dropped. Cloning an existing handle needs
//! no lock: a model with a live handle is not idle and cannot be evicted.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dp_signature::{ModelsUsedEntry, Resolution};
use dp_spec::{LoadedModel, ModelError, ModelSpec};

use crate::budget::{Demand, Reservation};
use crate::clock::{Clock, to_nanos};
use crate::key::{CacheKey, PackedKey};
use crate::single_flight::{self, Counted, HandleCount};
use dp_preset::Preset;

/// Everything the manager precomputes for one catalog entry whose device resolved.
#[derive(Debug)]
pub(crate) struct Route {
    /// The spec, owned so handles stay valid after the manager is gone.
    pub(crate) spec: ModelSpec,
    pub(crate) key: CacheKey,
    pub(crate) packed: PackedKey,
    /// Index of the first provider supporting the spec, if any.
    pub(crate) provider: Option<usize>,
    /// What an instance reserves against the budgets.
    pub(crate) demand: Demand,
    /// Where and at which precision it runs: with the identity of its verified files, what
    /// its `models_used` record is made of.
    pub(crate) resolution: Resolution,
    /// The same model on the machine's other GPUs, in device order, when its policy names
    /// no device (`auto`, `cuda`) and there are several: where a worker pool's further
    /// workers run (worker `w` on the `w mod (1 + len)`-th of this route and these). Empty
    /// otherwise, and in these routes themselves.
    pub(crate) spread: Vec<Arc<Route>>,
}

impl Route {
    /// The route worker `worker` of a pool runs on: this one, or one of [`Self::spread`]
    /// (round robin over the devices).
    pub(crate) fn for_worker(self: &Arc<Self>, worker: usize) -> &Arc<Self> {
        match worker % (self.spread.len() + 1) {
            0 => self,
            n => &self.spread[n - 1],
        }
    }

    /// This route, or the one of [`Self::spread`] whose slot is `packed`.
    pub(crate) fn with_key(self: &Arc<Self>, packed: PackedKey) -> Option<&Arc<Self>> {
        std::iter::once(self)
            .chain(&self.spread)
            .find(|route| route.packed == packed)
    }
}

/// What the map holds for one key.
pub(crate) enum Slot {
    /// A load is in flight; requests for the key wait on it.
    Loading(Arc<Pending>),
    /// A loaded instance.
    Ready(Arc<Resident>),
}

/// One loaded instance and its counters.
///
/// Aligned to a cache line so two models' counters never share one: two threads using
/// different models then never contend, which is what lets throughput scale with threads.
#[repr(align(64))]
pub(crate) struct Resident {
    /// Live handle count, or idle since when (see [`HandleCount`]).
    state: HandleCount,
    /// Requests served from the cache (hot path; per model, never global).
    hits: AtomicU64,
    /// How long the model may stay idle before the reaper releases it, in nanoseconds.
    keep_alive: AtomicU64,
    /// Unique per instance: eviction re-checks it so it never removes a newer instance
    /// that replaced the one it chose.
    pub(crate) serial: u64,
    loaded_at: Duration,
    provider: &'static str,
    route: Arc<Route>,
    clock: Arc<dyn Clock>,
    model: Box<dyn LoadedModel>,
    /// The shared preset, built once per loaded instance (its tokenizer is not rebuilt
    /// per request).
    preset: Option<Box<dyn Preset>>,
    /// The record outputs made with this instance carry: its signature covers the bytes
    /// this instance was loaded from and the preprocessing resolved from them.
    models_used: ModelsUsedEntry,
    // Declared after `model`: fields drop in declaration order, so the accounting shows the
    // memory as held until the model itself has been dropped.
    reservation: Reservation,
}

/// A freshly loaded instance, before the flight that loaded it publishes it.
pub(crate) struct NewResident {
    pub(crate) serial: u64,
    pub(crate) loaded_at: Duration,
    pub(crate) keep_alive: Duration,
    pub(crate) provider: &'static str,
    pub(crate) route: Arc<Route>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) model: Box<dyn LoadedModel>,
    pub(crate) preset: Option<Box<dyn Preset>>,
    pub(crate) models_used: ModelsUsedEntry,
    pub(crate) reservation: Reservation,
}

impl Resident {
    /// Wraps a loaded model; it starts with no handle, idle since it was loaded.
    pub(crate) fn new(parts: NewResident) -> Self {
        Self {
            state: HandleCount::idle_since(to_nanos(parts.loaded_at)),
            hits: AtomicU64::new(0),
            keep_alive: AtomicU64::new(to_nanos(parts.keep_alive)),
            serial: parts.serial,
            loaded_at: parts.loaded_at,
            provider: parts.provider,
            route: parts.route,
            clock: parts.clock,
            model: parts.model,
            preset: parts.preset,
            models_used: parts.models_used,
            reservation: parts.reservation,
        }
    }

    /// A new handle. Callers either hold the map's shard guard (so no eviction can run) or
    /// already own a handle or the unpublished instance.
    #[inline]
    pub(crate) fn acquire(self: &Arc<Self>) -> ModelHandle {
        self.state.acquire();
        ModelHandle {
            resident: Arc::clone(self),
        }
    }

    #[inline]
    pub(crate) fn record_hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) const fn models_used(&self) -> &ModelsUsedEntry {
        &self.models_used
    }

    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Live handles (0 when idle).
    pub(crate) fn handles(&self) -> u64 {
        self.state.handles()
    }

    /// When the model became idle, if it is idle.
    pub(crate) fn idle_since(&self) -> Option<Duration> {
        self.state.idle_since_nanos().map(Duration::from_nanos)
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.state.is_idle()
    }

    /// Idle for at least its keep-alive at `now`.
    pub(crate) fn expired(&self, now: Duration) -> bool {
        self.idle_since()
            .is_some_and(|since| now.saturating_sub(since) >= self.keep_alive())
    }

    pub(crate) fn keep_alive(&self) -> Duration {
        Duration::from_nanos(self.keep_alive.load(Ordering::Relaxed))
    }

    pub(crate) fn set_keep_alive(&self, keep_alive: Duration) {
        self.keep_alive
            .store(to_nanos(keep_alive), Ordering::Relaxed);
    }

    pub(crate) const fn loaded_at(&self) -> Duration {
        self.loaded_at
    }

    pub(crate) const fn provider(&self) -> &'static str {
        self.provider
    }

    pub(crate) fn route(&self) -> &Arc<Route> {
        &self.route
    }

    pub(crate) const fn demand(&self) -> Demand {
        self.reservation.demand()
    }
}

impl Counted for Arc<Resident> {
    fn handle_count(&self) -> &HandleCount {
        &self.state
    }
}

/// A single-flight load: the first request for a cold key loads, later ones wait here
/// (see [`single_flight::Pending`]).
pub(crate) struct Pending(single_flight::Pending<Arc<Resident>, ModelError>);

/// What a waiter gets.
pub(crate) enum Waited {
    /// A handle counted for it by the loader.
    Adopted(ModelHandle),
    /// The load's error.
    Failed(ModelError),
    /// The load finished before this request registered: look the key up again.
    Retry,
}

impl Pending {
    pub(crate) fn new() -> Self {
        Self(single_flight::Pending::new())
    }

    /// Requests blocked on this load (for status).
    pub(crate) fn waiters(&self) -> u64 {
        self.0.waiters()
    }

    /// Blocks until the load ends.
    pub(crate) fn wait(&self) -> Waited {
        match self.0.wait() {
            // The loader counted this waiter's handle: adopt it without counting again.
            single_flight::Waited::Adopted(resident) => Waited::Adopted(ModelHandle { resident }),
            single_flight::Waited::Failed(err) => Waited::Failed(err),
            single_flight::Waited::Retry => Waited::Retry,
        }
    }

    /// Ends the load with an instance: its handle count is set to cover the loader and every
    /// waiter, *then* `publish` makes it visible in the map. Returns the loader's handle.
    pub(crate) fn finish_loaded(
        &self,
        resident: Arc<Resident>,
        publish: impl FnOnce(&Arc<Resident>),
    ) -> ModelHandle {
        ModelHandle {
            resident: self.0.finish_loaded(resident, publish),
        }
    }

    /// Ends the load with an error: `unpublish` removes the slot (so the next request
    /// retries) and every registered waiter gets `err`.
    pub(crate) fn finish_failed(&self, err: ModelError, unpublish: impl FnOnce()) {
        self.0.finish_failed(err, unpublish);
    }
}

/// A reference-counted handle to a loaded model.
///
/// While a handle lives the model stays loaded: the cache never evicts or expires it.
/// Dropping the last handle makes the model idle; its keep-alive counts from that moment.
/// A handle stays usable even after [`crate::ModelManager::release`] or the manager
/// itself is gone.
///
/// It dereferences to the model ([`LoadedModel`]), so `handle.infer(&inputs)` runs it.
pub struct ModelHandle {
    resident: Arc<Resident>,
}

impl ModelHandle {
    /// The loaded model.
    #[must_use]
    pub fn model(&self) -> &dyn LoadedModel {
        &*self.resident.model
    }

    /// The spec the model was loaded from.
    #[must_use]
    pub fn spec(&self) -> &ModelSpec {
        &self.resident.route.spec
    }

    /// The cache key (device and precision it was loaded at).
    #[must_use]
    pub fn key(&self) -> &CacheKey {
        &self.resident.route.key
    }

    /// The name of the provider that loaded it.
    #[must_use]
    pub fn provider(&self) -> &'static str {
        self.resident.provider
    }

    /// What an output made with this model records: its identity as resolved (device,
    /// precision), the digest of the files it was loaded from, and its signatures.
    #[must_use]
    pub fn models_used(&self) -> &ModelsUsedEntry {
        &self.resident.models_used
    }

    /// The model's preprocessing preset, when the spec names one this build runs.
    #[must_use]
    pub fn preset(&self) -> Option<&dyn Preset> {
        self.resident.preset.as_deref()
    }

    /// Whether both handles designate the same loaded instance.
    #[must_use]
    pub fn same_instance(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.resident, &other.resident)
    }

    pub(crate) fn resident(&self) -> &Resident {
        &self.resident
    }
}

impl Deref for ModelHandle {
    type Target = dyn LoadedModel;

    fn deref(&self) -> &Self::Target {
        &*self.resident.model
    }
}

impl Clone for ModelHandle {
    fn clone(&self) -> Self {
        self.resident.state.add_copy();
        Self {
            resident: Arc::clone(&self.resident),
        }
    }
}

impl Drop for ModelHandle {
    fn drop(&mut self) {
        let resident = &self.resident;
        resident.state.release(|| to_nanos(resident.clock.now()));
    }
}

impl fmt::Debug for ModelHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelHandle")
            .field("key", &self.resident.route.key)
            .field("provider", &self.resident.provider)
            .field("handles", &self.resident.handles())
            .finish_non_exhaustive()
    }
}
