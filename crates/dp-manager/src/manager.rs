//! [`ModelManager`]: lookups, the single-flight cache, budgets with LRU eviction, and
//! keep-alive release.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak, mpsc};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use dp_digest::{LockFile, VerificationCache, VerifiedArtifacts};
use dp_signature::{ArtifactIdentity, ModelsUsedEntry};
use dp_spec::{Catalog, CatalogEntry, LoadRequest, ModelError, ModelProvider};

use crate::budget::{Accounting, Counters, Reservation, Shortfall};
use crate::builder::{ManagerBuilder, no_provider};
use crate::cache::{ModelHandle, NewResident, Pending, Resident, Route, Slot, Waited};
use crate::clock::{Clock, to_nanos};
use crate::embedding::EmbeddingCache;
use crate::error::ManagerError;
use crate::integrity;
use crate::key::{CacheKey, KeyHashBuilder, PackedKey};
use dp_preset::Preset;

/// Name or alias → catalog index. foldhash: names come from the trusted catalog, so a fast
/// hash is fine, and this lookup is on every request's path.
pub(crate) type NameIndex = HashMap<Box<str>, u32, foldhash::fast::RandomState>;

/// One catalog entry, resolved at build time.
pub(crate) struct EntryRoute {
    /// The interned key (meaningful only when `route` is `Ok`). Kept inline so the hot path
    /// reads it without following the `Arc`.
    pub(crate) packed: PackedKey,
    /// The load target, or the error this entry reports each time it is asked for.
    pub(crate) route: Result<Arc<Route>, ModelError>,
}

/// The manager's shared state; [`ModelManager`] is an `Arc` of it.
pub(crate) struct Inner {
    pub(crate) catalog: Catalog,
    pub(crate) models_root: PathBuf,
    /// Parallel to `catalog.entries()`.
    pub(crate) routes: Vec<EntryRoute>,
    pub(crate) names: NameIndex,
    pub(crate) providers: Vec<Arc<dyn ModelProvider>>,
    pub(crate) slots: DashMap<PackedKey, Slot, KeyHashBuilder>,
    pub(crate) accounting: Arc<Accounting>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) default_keep_alive: Duration,
    /// Shortest keep-alive in use, in nanoseconds: paces the reaper.
    pub(crate) min_keep_alive: AtomicU64,
    pub(crate) next_serial: AtomicU64,
    pub(crate) embedding_cache: EmbeddingCache,
    /// The dynamic-batching queues ([`ManagerBuilder::batching`]).
    pub(crate) batchers: crate::batcher::Batchers,
    /// The digest verification cache file health and loads use, if any.
    pub(crate) verify_cache: Option<PathBuf>,
    /// Whether a load enforces the pins ([`ManagerBuilder::verify_before_load`]).
    pub(crate) verify_before_load: bool,
    /// The version lock, if any ([`ManagerBuilder::lock_file`]).
    pub(crate) lock: Option<LockFile>,
    /// The devices the manager was built with ([`ManagerBuilder::devices`]).
    pub(crate) devices: crate::DeviceInventory,
    /// Dropped with the last manager clone; the reaper sees the channel close and stops.
    pub(crate) _reaper_stop: Option<mpsc::Sender<()>>,
}

/// The model manager: resolves models by name or role, loads each (model, device,
/// precision) once and shares it through reference-counted [`ModelHandle`]s, keeps memory
/// within budgets by evicting the least recently used idle models, and releases models
/// idle for longer than their keep-alive.
///
/// Cloning is cheap (an `Arc`); every clone is the same manager. The background reaper
/// (if enabled) stops when the last clone is dropped.
///
/// ```
/// use dp_manager::ModelManager;
///
/// # fn main() -> Result<(), dp_spec::ModelError> {
/// let manager = ModelManager::builder(dp_spec::Catalog::default(), "/srv/models")
///     .reaper(false)
///     .build()?;
/// let err = manager.get("nope").unwrap_err();
/// assert_eq!(err.error_code, dp_spec::ErrorCode::ModelNotFound);
/// assert_eq!(err.message, "no model named \"nope\"; run `dp list` to see the catalog");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ModelManager {
    inner: Arc<Inner>,
}

/// What a cold request does once it has looked at the map.
enum Step {
    Lead(Arc<Pending>),
    Wait(Arc<Pending>),
}

impl ModelManager {
    /// Starts configuring a manager (see [`ManagerBuilder`]).
    pub fn builder(catalog: Catalog, models_root: impl Into<PathBuf>) -> ManagerBuilder {
        ManagerBuilder::new(catalog, models_root)
    }

    pub(crate) const fn from_inner(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The catalog the manager serves.
    #[must_use]
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// `${DP_MODELS_ROOT}`, as given to the builder.
    #[must_use]
    pub fn models_root(&self) -> &Path {
        &self.inner.models_root
    }

    /// The catalog entry a name or alias designates. Deprecated models resolve (by name,
    /// with a warning); only role resolution skips them.
    ///
    /// # Errors
    /// `model_not_found`.
    pub fn resolve(&self, name_or_alias: &str) -> Result<&CatalogEntry, ModelError> {
        let index = self.inner.index_of(name_or_alias)?;
        let entry = self
            .inner
            .catalog
            .entries()
            .get(index as usize)
            .ok_or_else(|| not_found(name_or_alias))?;
        if entry.spec.deprecated {
            tracing::warn!(
                model = %entry.spec.model_name,
                requested = name_or_alias,
                "model is deprecated; it is never chosen by role, and may be removed"
            );
        }
        Ok(entry)
    }

    /// The cache key a model would be (or is) loaded under.
    ///
    /// # Errors
    /// `model_not_found`; `device_unavailable` when its device cannot be resolved (a
    /// spec pinning CUDA on a machine without it, or `cuda:N` past the last device).
    pub fn cache_key(&self, name_or_alias: &str) -> Result<CacheKey, ModelError> {
        self.inner.route_of(name_or_alias).map(|r| r.key.clone())
    }

    /// The `models_used` record outputs made with this model carry: its identity as
    /// resolved on this machine (device, precision), the digest of its verified files and
    /// the preprocessing resolved from them, and its signatures. Does not load the model:
    /// when it is not loaded, its files are verified (through the verification cache when
    /// one is configured) and its preset read, exactly as a load would.
    ///
    /// # Errors
    /// As [`Self::cache_key`]; and what a load would report about the files
    /// (`weights_missing`, `weights_digest_mismatch`, `version_drift`, `invalid_spec`).
    pub fn models_used(&self, name_or_alias: &str) -> Result<ModelsUsedEntry, ModelError> {
        let inner = &*self.inner;
        let entry = inner.entry_of(name_or_alias)?;
        let route = entry.route.as_ref().map_err(Clone::clone)?;
        if let Some(slot) = inner.slots.get(&entry.packed)
            && let Slot::Ready(resident) = slot.value()
        {
            return Ok(resident.models_used().clone());
        }
        let (_, _, models_used) = inner.identify(route)?;
        Ok(models_used)
    }

    /// What the model would be fed for `inputs`: its preset, built from the verified
    /// files, encodes them as one batch (the model itself is not loaded). For debugging,
    /// and for clients that send tensors themselves.
    ///
    /// # Errors
    /// As [`Self::models_used`]; `invalid_input` when the model has no preset this build
    /// runs or its preset does not take these inputs, and the preset's input errors.
    pub fn preprocess(
        &self,
        name_or_alias: &str,
        inputs: dp_preset::PresetInputs<'_>,
    ) -> Result<Preprocessed, ModelError> {
        let inner = &*self.inner;
        let route = inner
            .entry_of(name_or_alias)?
            .route
            .as_ref()
            .map_err(Clone::clone)?;
        let (_, preset, models_used) = inner.identify(route)?;
        let spec = &route.spec;
        let Some(preset) = preset else {
            return Err(ManagerError::BadTask {
                message: format!(
                    "model {} has no preprocess_preset this build runs ({}); nothing to preprocess",
                    spec.model_name,
                    spec.preprocess_preset.as_deref().unwrap_or("none")
                ),
            }
            .into());
        };
        let batch = preset.encode(inputs).map_err(|err| {
            ModelError::from(err).with_detail("model_name", spec.model_name.as_str())
        })?;
        Ok(Preprocessed {
            preprocess_preset: preset.name(),
            preprocess_signature: preset.preprocess_signature().to_owned(),
            models_used,
            tensors: batch.tensors,
        })
    }

    /// A handle to the model, loading it first if needed.
    ///
    /// The hot path (model already loaded) takes no global lock: a name lookup, a read lock
    /// on one dashmap shard, and atomic updates of the model's own counters (handle count,
    /// hits, `Arc` count), which no other model shares. A cold
    /// key is loaded once however many requests arrive together (single flight); a failed
    /// load is not cached: every request waiting on it gets the error and the next request
    /// tries again.
    ///
    /// # Errors
    /// `model_not_found`; `provider_unavailable` (no provider compiled in, or the spec pins
    /// CUDA and there is none: never a silent CPU run); `insufficient_memory` /
    /// `insufficient_gpu_memory` when the model cannot fit even after evicting every idle
    /// model; or the provider's own load error.
    #[inline]
    pub fn get(&self, name_or_alias: &str) -> Result<ModelHandle, ModelError> {
        let inner = &*self.inner;
        let entry = inner.entry_of(name_or_alias)?;
        let route = match &entry.route {
            Ok(route) => route,
            Err(err) => return Err(err.clone()),
        };
        if let Some(slot) = inner.slots.get(&entry.packed)
            && let Slot::Ready(resident) = slot.value()
        {
            // Under the shard read guard: eviction needs the write lock, so the instance
            // cannot be removed between the check and the increment.
            resident.record_hit();
            return Ok(resident.acquire());
        }
        inner.get_cold(route)
    }

    /// Loads the model if needed, without keeping a handle: it becomes idle at once and
    /// stays loaded for `keep_alive` (default: the builder's) unless evicted for room.
    /// Counts like a [`Self::get`] (a hit when already loaded).
    ///
    /// # Errors
    /// As [`Self::get`].
    pub fn preload(
        &self,
        name_or_alias: &str,
        keep_alive: Option<Duration>,
    ) -> Result<(), ModelError> {
        let handle = self.get(name_or_alias)?;
        if let Some(keep_alive) = keep_alive {
            handle.resident().set_keep_alive(keep_alive);
            self.inner
                .min_keep_alive
                .fetch_min(to_nanos(keep_alive), Ordering::Relaxed);
        }
        drop(handle);
        Ok(())
    }

    /// Forgets a loaded model now, whether or not it is in use. Live handles keep their
    /// instance working, and its memory stays accounted against the budgets until the last
    /// of them is dropped (the memory is really still held); the next [`Self::get`] loads a
    /// fresh instance.
    ///
    /// Returns `false` when the name is unknown or the model is not loaded (a load in
    /// flight is not interrupted).
    pub fn release(&self, name_or_alias: &str) -> bool {
        let Ok(route) = self.inner.route_of(name_or_alias) else {
            return false;
        };
        // The instances a worker pool spread over other GPUs go with it.
        let mut released = false;
        for route in std::iter::once(route).chain(&route.spread) {
            let removed = self
                .inner
                .slots
                .remove_if(&route.packed, |_, slot| matches!(slot, Slot::Ready(_)));
            let Some((_, Slot::Ready(resident))) = removed else {
                continue;
            };
            self.inner.retire(&resident);
            Counters::bump(&self.inner.accounting.counters.releases);
            tracing::info!(
                event = "model_released",
                model = %route.key,
                handles = resident.handles(),
                "model released"
            );
            released = true;
        }
        released
    }

    /// Runs one keep-alive pass now: releases every idle model whose idle time (measured on
    /// the manager's clock from the drop of its last handle) reached its keep-alive.
    /// Returns how many were released. The background reaper calls this periodically.
    pub fn reap_idle(&self) -> usize {
        self.inner.reap_idle()
    }
}

impl Inner {
    /// Name or alias → catalog index.
    #[inline]
    fn index_of(&self, name: &str) -> Result<u32, ModelError> {
        match self.names.get(name) {
            Some(&index) => Ok(index),
            None => Err(not_found(name)),
        }
    }

    #[inline]
    fn entry_of(&self, name: &str) -> Result<&EntryRoute, ModelError> {
        let index = self.index_of(name)?;
        self.routes
            .get(index as usize)
            .ok_or_else(|| not_found(name))
    }

    pub(crate) fn route_of(&self, name: &str) -> Result<&Arc<Route>, ModelError> {
        self.entry_of(name)?.route.as_ref().map_err(Clone::clone)
    }

    /// The route of a catalog index (for status).
    pub(crate) fn route_at(&self, index: u32) -> Option<&Arc<Route>> {
        self.routes.get(index as usize)?.route.as_ref().ok()
    }

    /// The instance of `route` (a catalog entry's, or one of its `spread` routes), loaded
    /// if needed: [`ModelManager::get`] for a route already resolved.
    pub(crate) fn get_route(&self, route: &Arc<Route>) -> Result<ModelHandle, ModelError> {
        if let Some(slot) = self.slots.get(&route.packed)
            && let Slot::Ready(resident) = slot.value()
        {
            resident.record_hit();
            return Ok(resident.acquire());
        }
        self.get_cold(route)
    }

    /// The request path when the model is not ready: join a load in flight or lead one.
    #[cold]
    fn get_cold(&self, route: &Arc<Route>) -> Result<ModelHandle, ModelError> {
        let mut missed = false;
        loop {
            let step = match self.slots.entry(route.packed) {
                Entry::Occupied(occupied) => match occupied.get() {
                    // A load finished between the fast path's read and this write lock.
                    Slot::Ready(resident) => {
                        resident.record_hit();
                        return Ok(resident.acquire());
                    }
                    Slot::Loading(pending) => Step::Wait(Arc::clone(pending)),
                },
                Entry::Vacant(vacant) => {
                    let pending = Arc::new(Pending::new());
                    vacant.insert(Slot::Loading(Arc::clone(&pending)));
                    Step::Lead(pending)
                }
            };
            // The shard lock is released here; waiting happens outside it.
            if !missed {
                missed = true;
                Counters::bump(&self.accounting.counters.misses);
            }
            match step {
                Step::Lead(pending) => return self.lead(route, pending),
                Step::Wait(pending) => match pending.wait() {
                    Waited::Adopted(handle) => return Ok(handle),
                    Waited::Failed(err) => return Err(err),
                    Waited::Retry => {}
                },
            }
        }
    }

    /// Loads `route` for everyone waiting on `pending`, then publishes the outcome.
    fn lead(&self, route: &Arc<Route>, pending: Arc<Pending>) -> Result<ModelHandle, ModelError> {
        let mut flight = Flight {
            inner: self,
            route,
            pending,
            finished: false,
        };
        match self.load(route) {
            Ok(resident) => Ok(flight.succeed(resident)),
            Err(err) => {
                let err = ModelError::from(err);
                flight.fail(err.clone());
                Err(err)
            }
        }
    }

    /// Reserves room (evicting idle models as needed), then asks the provider to load.
    fn load(&self, route: &Arc<Route>) -> Result<Arc<Resident>, ManagerError> {
        let spec = &route.spec;
        let provider = route
            .provider
            .and_then(|i| self.providers.get(i))
            .ok_or_else(|| no_provider(spec))?;
        if spec.deprecated {
            tracing::warn!(model = %spec.model_name, "loading a deprecated model");
        }
        // Reserve before loading, so concurrent loads can never overshoot a budget; the
        // reservation is given back if the load fails (it drops with the error).
        let reservation = self.reserve(route)?;
        Counters::bump(&self.accounting.counters.loads);
        let started = Instant::now();
        let failed = |err: ManagerError, what: &str| {
            Counters::bump(&self.accounting.counters.load_errors);
            tracing::warn!(event = "model_load_failed", model = %route.key, error = %err, "{what}");
            err
        };
        // Nothing altered, swapped or linked from outside the models root is ever loaded:
        // every file is opened once, verified, and only those bytes reach the preset and
        // the provider.
        let (artifacts, preset, models_used) = self
            .identify(route)
            .map_err(|err| failed(err, "artifacts not verified"))?;
        let request = LoadRequest {
            spec,
            artifacts: &artifacts,
            models_root: &self.models_root,
            device: route.key.device,
            precision: route.key.precision,
        };
        let model = provider
            .load(&request)
            .map_err(|err| failed(ManagerError::Provider(err), "load failed"))?;
        // The provider copied what it needs: the verified bytes (a map of the weights) go.
        drop(artifacts);
        tracing::info!(
            event = "model_loaded",
            model = %route.key,
            provider = provider.name(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            ram_bytes = reservation.demand().ram,
            vram_bytes = reservation.demand().vram,
            "model loaded"
        );
        Ok(Arc::new(Resident::new(NewResident {
            serial: self.next_serial.fetch_add(1, Ordering::Relaxed),
            loaded_at: self.clock.now(),
            keep_alive: self.default_keep_alive,
            provider: provider.name(),
            route: Arc::clone(route),
            clock: Arc::clone(&self.clock),
            model,
            preset,
            models_used,
            reservation,
        })))
    }

    /// Opens and verifies a model's files, builds its preset from them, and makes the
    /// `models_used` record of exactly those bytes and that preprocessing.
    pub(crate) fn identify(&self, route: &Route) -> Result<Identified, ManagerError> {
        let spec = &route.spec;
        let artifacts = self.open_artifacts(spec)?;
        // The preset (tokenizer) first: a bad tokenizer.json fails fast, before the weights.
        let preset = dp_preset::load(spec, &artifacts).map_err(|err| {
            ManagerError::Provider(
                ModelError::from(err).with_detail("model_name", spec.model_name.as_str()),
            )
        })?;
        let identity = ArtifactIdentity {
            artifacts_digest: artifacts.aggregate(),
            preprocess_params: preset.as_ref().map(|p| p.params().clone()),
        };
        let models_used = ModelsUsedEntry::with_identity(spec, &route.resolution, &identity);
        Ok((artifacts, preset, models_used))
    }

    /// A spec's local artifacts through the verified-bytes API: present, free of entries
    /// that cannot be verified (links out of the models root…), and matching every pin and
    /// the lock entry (see [`crate::integrity`]). Uses the verification cache when one is
    /// configured.
    fn open_artifacts(&self, spec: &dp_spec::ModelSpec) -> Result<VerifiedArtifacts, ManagerError> {
        if spec.local_artifacts.is_empty() {
            return Ok(VerifiedArtifacts::empty(&self.models_root));
        }
        let cache = self.verify_cache.as_ref().map(VerificationCache::load);
        let lock = integrity::lock_entry(spec, self.lock.as_ref());
        let opened = integrity::open_spec(
            spec,
            &self.models_root,
            lock,
            cache.as_ref(),
            self.verify_before_load,
        )?;
        if let Some(cache) = &cache
            && let Err(err) = cache.save_if_changed()
        {
            tracing::warn!(path = %cache.path().display(), error = %err, "could not save the verification cache");
        }
        match opened.artifacts {
            Some(artifacts) => Ok(artifacts),
            // Test doubles with placeholder pins and no files: nothing to give the provider.
            None if !self.verify_before_load => Ok(VerifiedArtifacts::empty(&self.models_root)),
            None => Err(
                integrity::report_problem(spec, &self.models_root, &opened.report).unwrap_or_else(
                    || {
                        ManagerError::Verification(ModelError::new(
                            dp_spec::ErrorCode::Io,
                            format!(
                                "model {}: verification found no usable bytes",
                                spec.model_name
                            ),
                        ))
                    },
                ),
            ),
        }
    }

    /// Reserves `route`'s demand, evicting least recently used idle models until it fits.
    fn reserve(&self, route: &Route) -> Result<Reservation, ManagerError> {
        let demand = route.demand;
        let alone = self.accounting.fits_alone(demand);
        if alone.slots || alone.ram || alone.vram {
            // Larger than the whole budget: evicting anything would be pointless.
            Counters::bump(&self.accounting.counters.budget_rejections);
            return Err(self.shortfall_error(route, &alone));
        }
        loop {
            match self.accounting.try_reserve(demand) {
                Ok(reservation) => return Ok(reservation),
                Err(shortfall) => {
                    // Each round either evicts a model, or finds its candidate taken by a
                    // concurrent request (someone else made progress); it stops when no idle
                    // model that would help is left.
                    if !self.evict_one(&shortfall) {
                        Counters::bump(&self.accounting.counters.budget_rejections);
                        return Err(self.shortfall_error(route, &shortfall));
                    }
                }
            }
        }
    }

    fn shortfall_error(&self, route: &Route, shortfall: &Shortfall) -> ManagerError {
        let budgets = self.accounting.budgets;
        let model = route.key.model_name.clone();
        if shortfall.vram {
            ManagerError::InsufficientGpuMemory {
                model,
                device: route.key.device,
                need: route.demand.vram,
                budget: budgets.vram_bytes.unwrap_or(u64::MAX),
                in_use: shortfall.usage.vram,
            }
        } else if shortfall.ram {
            ManagerError::InsufficientMemory {
                model,
                unit: "bytes of RAM",
                limit: "RAM budget",
                need: route.demand.ram,
                budget: budgets.ram_bytes.unwrap_or(u64::MAX),
                in_use: shortfall.usage.ram,
            }
        } else {
            let as_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
            ManagerError::InsufficientMemory {
                model,
                unit: "model slot(s)",
                limit: "max_loaded limit",
                need: 1,
                budget: budgets.max_loaded.map_or(u64::MAX, as_u64),
                in_use: as_u64(shortfall.usage.count),
            }
        }
    }

    /// Evicts the least recently used idle model whose removal helps with `shortfall`.
    /// Returns `false` when there is none.
    pub(crate) fn evict_one(&self, shortfall: &Shortfall) -> bool {
        let mut victim: Option<(Duration, u64, PackedKey)> = None;
        for item in &self.slots {
            let Slot::Ready(resident) = item.value() else {
                continue;
            };
            let Some(idle_since) = resident.idle_since() else {
                continue;
            };
            let demand = resident.demand();
            let helps = shortfall.slots
                || (shortfall.ram && demand.ram > 0)
                || (shortfall.vram && demand.vram > 0);
            let older = victim
                .is_none_or(|(since, serial, _)| (idle_since, resident.serial) < (since, serial));
            if helps && older {
                victim = Some((idle_since, resident.serial, *item.key()));
            }
        }
        let Some((_, serial, key)) = victim else {
            return false;
        };
        // Re-checked under the shard write lock: the model may have been taken (a request
        // acquired it) or replaced since the scan.
        let removed = self.slots.remove_if(
            &key,
            |_, slot| matches!(slot, Slot::Ready(r) if r.serial == serial && r.is_idle()),
        );
        if let Some((_, Slot::Ready(resident))) = removed {
            self.retire(&resident);
            Counters::bump(&self.accounting.counters.evictions);
            tracing::info!(
                event = "model_evicted",
                model = %resident.route().key,
                reason = "budget",
                "evicted the least recently used idle model"
            );
            wait_until_dropped(resident);
        }
        true
    }

    /// Releases every idle model past its keep-alive.
    pub(crate) fn reap_idle(&self) -> usize {
        let now = self.clock.now();
        let expired: Vec<(PackedKey, u64)> = self
            .slots
            .iter()
            .filter_map(|item| match item.value() {
                Slot::Ready(r) if r.expired(now) => Some((*item.key(), r.serial)),
                Slot::Ready(_) | Slot::Loading(_) => None,
            })
            .collect();
        let mut released = 0;
        for (key, serial) in expired {
            let removed = self.slots.remove_if(
                &key,
                |_, slot| matches!(slot, Slot::Ready(r) if r.serial == serial && r.expired(now)),
            );
            if let Some((_, Slot::Ready(resident))) = removed {
                self.retire(&resident);
                Counters::bump(&self.accounting.counters.expirations);
                tracing::info!(
                    event = "model_expired",
                    model = %resident.route().key,
                    keep_alive_s = resident.keep_alive().as_secs_f64(),
                    "released an idle model past its keep-alive"
                );
                released += 1;
            }
        }
        released
    }

    /// Keeps the hits of an instance the cache forgets (no request can hit it any more).
    fn retire(&self, resident: &Resident) {
        self.accounting
            .counters
            .retired_hits
            .fetch_add(resident.hits(), Ordering::Relaxed);
    }

    /// How often the reaper wakes: a quarter of the shortest keep-alive, within [50 ms, 30 s].
    pub(crate) fn reaper_period(&self) -> Duration {
        let shortest = Duration::from_nanos(self.min_keep_alive.load(Ordering::Relaxed));
        (shortest / 4).clamp(Duration::from_millis(50), Duration::from_secs(30))
    }
}

/// The in-flight load a leader owns. If the leader unwinds (a provider panic) before
/// finishing, dropping the flight fails it, so waiters are never left blocked forever.
struct Flight<'a> {
    inner: &'a Inner,
    route: &'a Arc<Route>,
    pending: Arc<Pending>,
    finished: bool,
}

impl Flight<'_> {
    fn succeed(&mut self, resident: Arc<Resident>) -> ModelHandle {
        self.finished = true;
        let slots = &self.inner.slots;
        let key = self.route.packed;
        self.pending.finish_loaded(resident, |resident| {
            // Replaces this flight's `Loading` slot (nothing else removes a loading slot).
            slots.insert(key, Slot::Ready(Arc::clone(resident)));
        })
    }

    fn fail(&mut self, err: ModelError) {
        self.finished = true;
        let slots = &self.inner.slots;
        let key = self.route.packed;
        let pending = &self.pending;
        pending.finish_failed(err, || {
            // Not cached: remove the slot so the next request loads again.
            slots.remove_if(
                &key,
                |_, slot| matches!(slot, Slot::Loading(p) if Arc::ptr_eq(p, pending)),
            );
        });
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let provider = self
                .route
                .provider
                .and_then(|i| self.inner.providers.get(i))
                .map_or("unknown", |p| p.name());
            self.fail(
                ManagerError::LoadAbandoned {
                    model: self.route.key.model_name.clone(),
                    provider,
                }
                .into(),
            );
        }
    }
}

/// Waits (briefly) until an evicted instance is really dropped, so the caller's next
/// reservation sees its memory freed. With the model idle and out of the map, the only
/// other owner can be a handle finishing its `drop` (it has already marked the model idle
/// and is about to release its `Arc`): a matter of nanoseconds, bounded here anyway.
fn wait_until_dropped(resident: Arc<Resident>) {
    let weak: Weak<Resident> = Arc::downgrade(&resident);
    drop(resident);
    let deadline = Instant::now() + Duration::from_secs(1);
    while weak.strong_count() > 0 && Instant::now() < deadline {
        std::thread::yield_now();
    }
}

#[cold]
fn not_found(name: &str) -> ModelError {
    ManagerError::ModelNotFound {
        name: name.to_owned(),
    }
    .into()
}

impl fmt::Debug for ModelManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        let providers: Vec<&str> = inner.providers.iter().map(|p| p.name()).collect();
        f.debug_struct("ModelManager")
            .field("models", &inner.catalog.len())
            .field("models_root", &inner.models_root)
            .field("providers", &providers)
            .field("budgets", &inner.accounting.budgets)
            .field("loaded", &inner.slots.len())
            .finish_non_exhaustive()
    }
}

/// A model's verified files, the preset built from them, and the record of both.
pub(crate) type Identified = (VerifiedArtifacts, Option<Box<dyn Preset>>, ModelsUsedEntry);

/// What [`ModelManager::preprocess`] made: the tensors and the preset that made them.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessed {
    /// The preset's name.
    pub preprocess_preset: &'static str,
    /// The identity of its resolved settings (`pp1:…`).
    pub preprocess_signature: String,
    /// The model's record (its signature covers the preset's settings).
    pub models_used: ModelsUsedEntry,
    /// The model's inputs, by name.
    pub tensors: dp_spec::NamedTensors,
}
