//! [`ManagerBuilder`]: the manager's configuration, checked and precomputed once.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use dashmap::DashMap;
use dp_digest::LockFile;
use dp_signature::{Placement, Resolution};
use dp_spec::{Catalog, ModelError, ModelProvider, ResolvedDevice, Runtime};

use crate::budget::{Accounting, Budgets, Demand};
use crate::cache::Route;
use crate::clock::{Clock, SystemClock, to_nanos};
use crate::devices::DeviceInventory;
use crate::embedding::{EmbeddingCache, EmbeddingCacheConfig};
use crate::error::{ManagerError, feature_enabled, provider_feature};
use crate::key::{CacheKey, KeyHashBuilder, PackedKey, SHARDS};
use crate::manager::{EntryRoute, Inner, ModelManager, NameIndex};
use crate::offline::{LOOPBACK_HOSTS, network_need};
use crate::reaper;

/// How long an idle model stays loaded unless told otherwise.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(5 * 60);

/// Configures and builds a [`ModelManager`].
///
/// ```
/// use std::time::Duration;
/// use dp_manager::ModelManager;
///
/// # fn main() -> Result<(), dp_spec::ModelError> {
/// let catalog = dp_spec::Catalog::default(); // normally `Catalog::load(dir)`
/// let manager = ModelManager::builder(catalog, "/srv/models")
///     .max_loaded(4)
///     .ram_budget_bytes(8 << 30)
///     .default_keep_alive(Duration::from_secs(60))
///     .build()?;
/// assert_eq!(manager.status().totals.loaded, 0);
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct ManagerBuilder {
    catalog: Catalog,
    models_root: PathBuf,
    providers: Vec<Arc<dyn ModelProvider>>,
    budgets: Budgets,
    default_keep_alive: Duration,
    clock: Arc<dyn Clock>,
    devices: DeviceInventory,
    reaper: bool,
    embedding_cache: EmbeddingCacheConfig,
    batching: crate::BatchingConfig,
    persistent_cache: Option<crate::PersistentCacheConfig>,
    allowed_triton_hosts: Vec<String>,
    verify_cache: Option<PathBuf>,
    verify_before_load: bool,
    lock: Option<LockFile>,
}

impl ManagerBuilder {
    /// A builder for a validated catalog whose artifacts live under `models_root`
    /// (`${DP_MODELS_ROOT}`). Defaults: no provider, no limits, 5 minutes keep-alive, the
    /// system clock, no CUDA device (see [`Self::devices`]), a background reaper.
    pub fn new(catalog: Catalog, models_root: impl Into<PathBuf>) -> Self {
        Self {
            catalog,
            models_root: models_root.into(),
            providers: Vec::new(),
            budgets: Budgets::default(),
            default_keep_alive: DEFAULT_KEEP_ALIVE,
            clock: Arc::new(SystemClock::new()),
            // Probing starts the CUDA driver (hundreds of milliseconds, GPU memory for a
            // context): only when the caller asks for it.
            devices: DeviceInventory::cpu_only(),
            reaper: true,
            embedding_cache: EmbeddingCacheConfig::default(),
            batching: crate::BatchingConfig::default(),
            persistent_cache: None,
            allowed_triton_hosts: LOOPBACK_HOSTS.map(str::to_owned).to_vec(),
            verify_cache: None,
            verify_before_load: true,
            lock: None,
        }
    }

    /// Adds a provider. A model is loaded by the first provider (in the order added) whose
    /// [`ModelProvider::supports`] accepts its spec.
    pub fn provider(mut self, provider: Arc<dyn ModelProvider>) -> Self {
        self.providers.push(provider);
        self
    }

    /// Adds several providers, in order.
    pub fn providers(
        mut self,
        providers: impl IntoIterator<Item = Arc<dyn ModelProvider>>,
    ) -> Self {
        self.providers.extend(providers);
        self
    }

    /// At most this many model instances at once (`None`: unlimited).
    pub fn max_loaded(mut self, max: impl Into<Option<usize>>) -> Self {
        self.budgets.max_loaded = max.into();
        self
    }

    /// Host memory budget: the sum of `resource_requirements.ram_bytes` of in-process
    /// instances (`None`: unlimited).
    pub fn ram_budget_bytes(mut self, bytes: impl Into<Option<u64>>) -> Self {
        self.budgets.ram_bytes = bytes.into();
        self
    }

    /// GPU memory budget: the sum of `resource_requirements.vram_bytes` of instances
    /// placed on CUDA. `None` (the default): the free memory the [`Self::devices`] probe
    /// read, all devices together, or unlimited when the devices were not probed. A given
    /// budget larger than the probed free memory is lowered to it.
    pub fn vram_budget_bytes(mut self, bytes: impl Into<Option<u64>>) -> Self {
        self.budgets.vram_bytes = bytes.into();
        self
    }

    /// How long an idle model stays loaded (default [`DEFAULT_KEEP_ALIVE`]).
    pub fn default_keep_alive(mut self, keep_alive: Duration) -> Self {
        self.default_keep_alive = keep_alive;
        self
    }

    /// The clock keep-alive and LRU order are measured on (default [`SystemClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The devices models may be placed on (default [`DeviceInventory::cpu_only`]); pass
    /// [`DeviceInventory::probe`] to ask the driver. Decides `auto`, which `cuda` /
    /// `cuda:N` specs load, and the default GPU memory budget.
    pub fn devices(mut self, devices: DeviceInventory) -> Self {
        self.devices = devices;
        self
    }

    /// Shorthand for [`Self::devices`]: `true` declares CUDA usable without asking the
    /// driver ([`DeviceInventory::declared_cuda`]), `false` is [`DeviceInventory::cpu_only`].
    pub fn cuda_available(self, available: bool) -> Self {
        self.devices(if available {
            DeviceInventory::declared_cuda()
        } else {
            DeviceInventory::cpu_only()
        })
    }

    /// The embedding cache's settings (default [`EmbeddingCacheConfig::default`]; turn it
    /// off with [`EmbeddingCacheConfig::disabled`]).
    pub fn embedding_cache(mut self, config: EmbeddingCacheConfig) -> Self {
        self.embedding_cache = config;
        self
    }

    /// Keeps computed vectors on disk too, in `config.dir` (shared by every process using
    /// that folder), so a restarted pipeline does not embed the same texts again: a second
    /// level behind the in-memory embedding cache (off by default; ignored when the
    /// embedding cache is disabled).
    pub fn persistent_embedding_cache(
        mut self,
        config: impl Into<Option<crate::PersistentCacheConfig>>,
    ) -> Self {
        self.persistent_cache = config.into();
        self
    }

    /// How concurrent text requests to one model are merged into shared model calls
    /// (default [`crate::BatchingConfig::default`]: on, no added delay; turn it off with
    /// [`crate::BatchingConfig::disabled`]).
    pub const fn batching(mut self, config: crate::BatchingConfig) -> Self {
        self.batching = config;
        self
    }

    /// Hosts Triton endpoints may be on (default: [`LOOPBACK_HOSTS`]). A spec whose
    /// endpoint is elsewhere fails the build with `network_forbidden`.
    pub fn allowed_triton_hosts(mut self, hosts: impl IntoIterator<Item = String>) -> Self {
        self.allowed_triton_hosts = hosts.into_iter().collect();
        self
    }

    /// The `dp-digest` verification cache file [`ModelManager::health`] reads and refreshes
    /// (default: none, so health hashes the weights each time). Keep it in a directory only
    /// the operator can write (see `docs/digests.md`).
    pub fn verification_cache(mut self, path: impl Into<PathBuf>) -> Self {
        self.verify_cache = Some(path.into());
        self
    }

    /// The version lock (`specs/catalog.lock`, written by `dp verify --lock`): a locked
    /// model is loaded only when every one of its files still has the digest its entry
    /// records, and the entry was written for its `model_version` and pin (else
    /// `version_drift`). Health checks compare the same way. None by default.
    pub fn lock_file(mut self, lock: impl Into<Option<LockFile>>) -> Self {
        self.lock = lock.into();
        self
    }

    /// Whether each load enforces the model's pins (default `true`): every local artifact
    /// present, none reaching outside the models root through a symbolic link, an
    /// in-process model's first artifact equal to `weights_digest` (a Triton model's pin
    /// describes its deployment, which its provider checks), all of them together equal to
    /// `artifacts_digest` when the spec has one, and every file equal to its lock entry.
    /// Either way, every file is opened once and read through the verified-bytes API, and
    /// the digest of the bytes actually loaded enters the model's signature. With a
    /// [`Self::verification_cache`], an unchanged file is not hashed again.
    ///
    /// Turn it off only for test doubles with placeholder pins: with it off, files that
    /// cannot be read are simply not given to the provider, and altered ones are loaded
    /// (under their own signature).
    pub fn verify_before_load(mut self, enabled: bool) -> Self {
        self.verify_before_load = enabled;
        self
    }

    /// Whether a background thread releases expired idle models (default `true`). Without
    /// it, call [`ModelManager::reap_idle`] yourself.
    pub fn reaper(mut self, enabled: bool) -> Self {
        self.reaper = enabled;
        self
    }

    /// Builds the manager: indexes names and aliases, resolves each entry's device and
    /// provider, and starts the reaper.
    ///
    /// A spec whose device cannot be resolved (CUDA pinned, none available) or that no
    /// provider supports does not fail the build: the error is recorded and returned each
    /// time that model is asked for, so one such spec leaves the rest of the catalog usable.
    ///
    /// Specs that would need the network fail the build, since no later request could
    /// serve them: an artifact given as a URL, or a Triton endpoint outside
    /// [`Self::allowed_triton_hosts`].
    ///
    /// The manager never changes its own process environment; processes started for it
    /// get the offline environment from [`ModelManager::offline_command`].
    ///
    /// # Errors
    /// `network_forbidden` (the first such spec); `invalid_spec` for a catalog of more than
    /// 2³² models; `insufficient_memory` when the OS refuses the reaper thread.
    pub fn build(self) -> Result<ModelManager, ModelError> {
        self.build_parts().map(|(manager, _)| manager)
    }

    /// [`Self::build`], also returning the reaper thread so tests can check it ends.
    pub(crate) fn build_parts(self) -> Result<(ModelManager, Option<JoinHandle<()>>), ModelError> {
        let entries = self.catalog.entries();
        if let Some(err) = entries
            .iter()
            .find_map(|e| network_need(&e.spec, &self.allowed_triton_hosts))
        {
            return Err(err.into());
        }
        let persistent = match &self.persistent_cache {
            Some(config) if self.embedding_cache.enabled => {
                Some(crate::PersistentEmbeddingCache::open(config)?)
            }
            _ => None,
        };
        let mut budgets = self.budgets;
        if let Some(free) = self.devices.free_vram_bytes() {
            budgets.vram_bytes = Some(budgets.vram_bytes.map_or(free, |b| b.min(free)));
        }
        let mut routes = Vec::with_capacity(entries.len());
        let mut names = NameIndex::default();
        for (i, entry) in entries.iter().enumerate() {
            let index = u32::try_from(i).map_err(|_| ManagerError::CatalogTooLarge {
                len: entries.len(),
                max: u64::from(u32::MAX) + 1,
            })?;
            names.insert(entry.spec.model_name.as_str().into(), index);
            routes.push(self.route(index, &entry.spec));
        }
        // Aliases after every name, so an alias never shadows a name (the catalog already
        // rejects clashes; this keeps the rule even for a hand-built catalog).
        for (index, entry) in (0_u32..).zip(entries) {
            for alias in &entry.spec.aliases {
                names.entry(alias.as_str().into()).or_insert(index);
            }
        }

        let (stop_tx, stop_rx) = if self.reaper {
            let (tx, rx) = mpsc::channel::<()>();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let slots = DashMap::with_capacity_and_hasher_and_shard_amount(
            entries.len(),
            KeyHashBuilder::default(),
            SHARDS,
        );
        let inner = Arc::new(Inner {
            catalog: self.catalog,
            models_root: self.models_root,
            routes,
            names,
            providers: self.providers,
            slots,
            accounting: Arc::new(Accounting::new(budgets)),
            clock: self.clock,
            default_keep_alive: self.default_keep_alive,
            min_keep_alive: AtomicU64::new(to_nanos(self.default_keep_alive)),
            next_serial: AtomicU64::new(0),
            embedding_cache: EmbeddingCache::new(self.embedding_cache, persistent),
            batchers: crate::batcher::Batchers::new(self.batching),
            verify_cache: self.verify_cache,
            verify_before_load: self.verify_before_load,
            lock: self.lock,
            devices: self.devices,
            _reaper_stop: stop_tx,
        });
        let reaper = match stop_rx {
            Some(rx) => Some(reaper::spawn(Arc::downgrade(&inner), rx).map_err(|err| {
                ManagerError::ReaperSpawn {
                    reason: err.to_string(),
                }
            })?),
            None => None,
        };
        Ok((ModelManager::from_inner(inner), reaper))
    }

    /// Resolves one entry's device, cache key, provider and budget demand.
    fn route(&self, index: u32, spec: &dp_spec::ModelSpec) -> EntryRoute {
        let provider = self.providers.iter().position(|p| p.supports(spec));
        let runs_on_cuda = || {
            provider
                .and_then(|i| self.providers.get(i))
                .is_some_and(|p| p.runs_on_cuda(spec, &self.models_root))
        };
        let device = match self.devices.resolve(spec, runs_on_cuda) {
            Ok(device) => device,
            Err(err) => {
                tracing::debug!(model = %spec.model_name, error = %err, "device unresolved; reported when the model is asked for");
                return EntryRoute {
                    packed: PackedKey::new(index, ResolvedDevice::Cpu, spec.precision),
                    route: Err(err.into()),
                };
            }
        };
        let key = CacheKey {
            model_name: spec.model_name.clone(),
            device,
            precision: spec.precision,
            runtime: spec.runtime,
            preprocess_preset: spec.preprocess_preset.clone(),
        };
        let packed = PackedKey::new(index, device, spec.precision);
        // A Triton model's memory lives on its server: locally it holds only a client, so it
        // counts against `max_loaded` but not against this process's RAM or VRAM budgets.
        let requirements = &spec.resource_requirements;
        let demand = match (spec.runtime, device) {
            (Runtime::Triton, _) => Demand::default(),
            (Runtime::Inprocess, ResolvedDevice::Cpu) => Demand {
                ram: requirements.ram_bytes,
                vram: 0,
            },
            (Runtime::Inprocess, ResolvedDevice::Cuda(_)) => Demand {
                ram: requirements.ram_bytes,
                vram: requirements.vram_bytes,
            },
        };
        let placement = match spec.runtime {
            Runtime::Triton => Placement::Triton,
            Runtime::Inprocess => Placement::Local(device),
        };
        // A worker pool may spread over every GPU a policy naming none allows: each further
        // device gets a route (and cache slot) of its own, loaded when a worker needs it.
        let spread = self
            .devices
            .spread_devices(spec, device)
            .into_iter()
            .map(|device| {
                Arc::new(Route {
                    spec: spec.clone(),
                    key: CacheKey {
                        device,
                        ..key.clone()
                    },
                    packed: PackedKey::new(index, device, spec.precision),
                    provider,
                    demand,
                    resolution: Resolution::new(Placement::Local(device), spec.precision),
                    spread: Vec::new(),
                })
            })
            .collect();
        EntryRoute {
            packed,
            route: Ok(Arc::new(Route {
                spec: spec.clone(),
                key,
                packed,
                provider,
                demand,
                resolution: Resolution::new(placement, spec.precision),
                spread,
            })),
        }
    }
}

/// The error for a spec no registered provider supports.
pub(crate) fn no_provider(spec: &dp_spec::ModelSpec) -> ManagerError {
    let feature = provider_feature(spec.runtime, spec.engine);
    ManagerError::NoProvider {
        model: spec.model_name.clone(),
        runtime: spec.runtime,
        engine: spec.engine,
        feature: feature.map(str::to_owned),
        feature_enabled: feature.is_some_and(feature_enabled),
    }
}

impl fmt::Debug for ManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let providers: Vec<&str> = self.providers.iter().map(|p| p.name()).collect();
        f.debug_struct("ManagerBuilder")
            .field("catalog_root", &self.catalog.root())
            .field("models", &self.catalog.len())
            .field("models_root", &self.models_root)
            .field("providers", &providers)
            .field("budgets", &self.budgets)
            .field("default_keep_alive", &self.default_keep_alive)
            .field("clock", &self.clock)
            .field("devices", &self.devices)
            .field("reaper", &self.reaper)
            .field("embedding_cache", &self.embedding_cache)
            .field("allowed_triton_hosts", &self.allowed_triton_hosts)
            .field("verification_cache", &self.verify_cache)
            .field("verify_before_load", &self.verify_before_load)
            .field("lock_entries", &self.lock.as_ref().map(|l| l.models.len()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// Joins `handle` on a helper thread; true if it ended within `within`.
    fn ends_within(handle: JoinHandle<()>, within: Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(handle.join().is_ok());
        });
        rx.recv_timeout(within).unwrap_or(false)
    }

    #[test]
    fn reaper_stops_when_the_last_clone_is_dropped() {
        let (manager, reaper) = ManagerBuilder::new(Catalog::default(), "/models")
            // A 30 s tick: the thread must stop on the closed channel, not on a tick.
            .default_keep_alive(Duration::from_secs(3600))
            .build_parts()
            .expect("builds");
        let reaper = reaper.expect("a reaper by default");
        assert_eq!(manager.inner().reaper_period(), Duration::from_secs(30));
        let clone = manager.clone();
        drop(manager);
        std::thread::sleep(Duration::from_millis(50));
        assert!(!reaper.is_finished(), "a clone is still alive");
        drop(clone);
        assert!(ends_within(reaper, Duration::from_secs(5)));
    }

    #[test]
    fn reaper_period_follows_the_shortest_keep_alive() {
        let (manager, reaper) = ManagerBuilder::new(Catalog::default(), "/models")
            .default_keep_alive(Duration::from_secs(8))
            .reaper(false)
            .build_parts()
            .expect("builds");
        assert!(reaper.is_none());
        assert_eq!(manager.inner().reaper_period(), Duration::from_secs(2));
        let quick = ManagerBuilder::new(Catalog::default(), "/models")
            .default_keep_alive(Duration::from_millis(10))
            .reaper(false)
            .build()
            .expect("builds");
        assert_eq!(quick.inner().reaper_period(), Duration::from_millis(50));
    }
}
