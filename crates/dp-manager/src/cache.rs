//! The cache's building blocks: a [`Slot`] per cache key (loading or ready), the
//! single-flight [`Pending`] load that waiters block on, the loaded [`Resident`] instance
//! with its per-model counters, and the [`ModelHandle`] users hold.
//!
//! # The handle count and idleness
//!
//! A resident's handle count and the moment it became idle share one atomic word:
//! either `n > 0` live handles, or the `IDLE` bit plus the clock reading (in nanoseconds)
//! taken by the drop that released the last handle. Because the transition to idle writes
//! the time in the same atomic step, the reaper can never see an idle model with a stale
//! idle time (and release a model that has just been used for an hour as if it had been
//! idle all along).
//!
//! Evicting or expiring a resident is only done under the dashmap shard *write* lock
//! (`remove_if`), after checking the `IDLE` bit; acquiring a handle from the map is only
//! done under the shard *read* guard. The two exclude each other, so a handle is never
//! given out for an instance the cache has just dropped. Cloning an existing handle needs
//! no lock: a model with a live handle is not idle and cannot be evicted.

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use dp_signature::ModelsUsedEntry;
use dp_spec::{LoadedModel, ModelError, ModelSpec};

use crate::budget::{Demand, Reservation};
use crate::clock::{Clock, to_nanos};
use crate::key::{CacheKey, PackedKey};
use crate::preset::SentenceEmbedding;

/// Set in [`Resident::state`] when no handle is live; the low bits then hold the time.
const IDLE: u64 = 1 << 63;

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
    /// The record outputs made with this model carry (resolved device and precision).
    pub(crate) models_used: ModelsUsedEntry,
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
    /// Live handle count, or `IDLE | idle_since_nanos` (see the module docs).
    state: AtomicU64,
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
    preset: Option<SentenceEmbedding>,
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
    pub(crate) preset: Option<SentenceEmbedding>,
    pub(crate) reservation: Reservation,
}

impl Resident {
    /// Wraps a loaded model; it starts with no handle, idle since it was loaded.
    pub(crate) fn new(parts: NewResident) -> Self {
        Self {
            state: AtomicU64::new(IDLE | (to_nanos(parts.loaded_at) & !IDLE)),
            hits: AtomicU64::new(0),
            keep_alive: AtomicU64::new(to_nanos(parts.keep_alive)),
            serial: parts.serial,
            loaded_at: parts.loaded_at,
            provider: parts.provider,
            route: parts.route,
            clock: parts.clock,
            model: parts.model,
            preset: parts.preset,
            reservation: parts.reservation,
        }
    }

    /// A new handle. Callers either hold the map's shard guard (so no eviction can run) or
    /// already own a handle or the unpublished instance.
    #[inline]
    pub(crate) fn acquire(self: &Arc<Self>) -> ModelHandle {
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let next = if current & IDLE == 0 { current + 1 } else { 1 };
            match self.state.compare_exchange_weak(
                current,
                next,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        ModelHandle {
            resident: Arc::clone(self),
        }
    }

    /// Sets the handle count of an instance nobody else can see yet (single-flight hand-off:
    /// the loader and every waiter it found).
    pub(crate) fn preset_handles(&self, handles: u64) {
        self.state.store(handles, Ordering::Release);
    }

    #[inline]
    pub(crate) fn record_hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Live handles (0 when idle).
    pub(crate) fn handles(&self) -> u64 {
        let state = self.state.load(Ordering::Acquire);
        if state & IDLE == 0 { state } else { 0 }
    }

    /// When the model became idle, if it is idle.
    pub(crate) fn idle_since(&self) -> Option<Duration> {
        let state = self.state.load(Ordering::Acquire);
        (state & IDLE != 0).then(|| Duration::from_nanos(state & !IDLE))
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.state.load(Ordering::Acquire) & IDLE != 0
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

    pub(crate) fn route(&self) -> &Route {
        &self.route
    }

    pub(crate) const fn demand(&self) -> Demand {
        self.reservation.demand()
    }
}

/// A single-flight load: the first request for a cold key loads, later ones wait here.
pub(crate) struct Pending {
    state: Mutex<PendingState>,
    done: Condvar,
}

enum PendingState {
    /// The load runs; `waiters` requests are blocked on it.
    Loading { waiters: u64 },
    /// Loaded: `unclaimed` waiters have not yet taken their (pre-counted) handle; the last
    /// one takes the instance out so this struct stops keeping it alive.
    Loaded {
        unclaimed: u64,
        resident: Option<Arc<Resident>>,
    },
    /// Failed; every waiter gets this error. The slot is already gone from the map.
    Failed(ModelError),
}

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
        Self {
            state: Mutex::new(PendingState::Loading { waiters: 0 }),
            done: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PendingState> {
        // Critical sections only move values; a poisoned lock still holds a valid state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Requests blocked on this load (for status).
    pub(crate) fn waiters(&self) -> u64 {
        match &*self.lock() {
            PendingState::Loading { waiters } => *waiters,
            PendingState::Loaded { .. } | PendingState::Failed(_) => 0,
        }
    }

    /// Blocks until the load ends.
    pub(crate) fn wait(&self) -> Waited {
        let mut state = self.lock();
        match &mut *state {
            PendingState::Loading { waiters } => *waiters += 1,
            PendingState::Loaded { .. } => return Waited::Retry,
            PendingState::Failed(err) => return Waited::Failed(err.clone()),
        }
        loop {
            match &mut *state {
                PendingState::Loading { .. } => {
                    state = self
                        .done
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                PendingState::Loaded {
                    unclaimed,
                    resident,
                } => {
                    *unclaimed = unclaimed.saturating_sub(1);
                    let ours = if *unclaimed == 0 {
                        resident.take()
                    } else {
                        resident.clone()
                    };
                    // The loader counted this waiter's handle before publishing.
                    return ours.map_or(Waited::Retry, |resident| {
                        Waited::Adopted(ModelHandle { resident })
                    });
                }
                PendingState::Failed(err) => return Waited::Failed(err.clone()),
            }
        }
    }

    /// Ends the load with an instance. While the waiter list is frozen, the instance's handle
    /// count is set to cover the loader and every waiter, *then* `publish` makes it visible
    /// in the map: no eviction can see it idle in between.
    pub(crate) fn finish_loaded(
        &self,
        resident: Arc<Resident>,
        publish: impl FnOnce(&Arc<Resident>),
    ) -> ModelHandle {
        let mut state = self.lock();
        let waiters = match &*state {
            PendingState::Loading { waiters } => *waiters,
            PendingState::Loaded { .. } | PendingState::Failed(_) => 0,
        };
        resident.preset_handles(waiters + 1);
        publish(&resident);
        *state = PendingState::Loaded {
            unclaimed: waiters,
            resident: (waiters > 0).then(|| Arc::clone(&resident)),
        };
        drop(state);
        self.done.notify_all();
        ModelHandle { resident }
    }

    /// Ends the load with an error: `unpublish` removes the slot (so the next request
    /// retries) and every registered waiter gets `err`.
    pub(crate) fn finish_failed(&self, err: ModelError, unpublish: impl FnOnce()) {
        let mut state = self.lock();
        unpublish();
        *state = PendingState::Failed(err);
        drop(state);
        self.done.notify_all();
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
    /// precision) and its signatures.
    #[must_use]
    pub fn models_used(&self) -> &ModelsUsedEntry {
        &self.resident.route.models_used
    }

    /// The `sentence_embedding` preset, when the spec names it.
    #[must_use]
    pub fn sentence_embedding(&self) -> Option<&SentenceEmbedding> {
        self.resident.preset.as_ref()
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
        // This handle is live, so the state is a count ≥ 1 and cannot turn idle meanwhile:
        // a plain increment is enough.
        self.resident.state.fetch_add(1, Ordering::Relaxed);
        Self {
            resident: Arc::clone(&self.resident),
        }
    }
}

impl Drop for ModelHandle {
    fn drop(&mut self) {
        let state = &self.resident.state;
        let mut current = state.load(Ordering::Relaxed);
        let mut now = None;
        loop {
            if current & IDLE != 0 || current == 0 {
                // Cannot happen while this handle lives; never corrupt the word if it did.
                return;
            }
            let next = if current == 1 {
                // Last handle: the model becomes idle now, and says since when.
                let at = *now.get_or_insert_with(|| to_nanos(self.resident.clock.now()));
                IDLE | (at & !IDLE)
            } else {
                current - 1
            };
            match state.compare_exchange_weak(current, next, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
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
