//! Test support: catalogs in temporary directories and an instrumented provider.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dp_manager::{ManagerBuilder, ManagerStatus, ModelHandle, ModelManager, ModelStatus};
use dp_spec::{
    Catalog, ErrorCode, LoadRequest, LoadedModel, ModelError, ModelProvider, ModelSpec,
    NamedTensors, Tensor, TensorData,
};
use tempfile::TempDir;

/// 64 zeros: a syntactically valid digest (the test provider reads no file).
const ZERO_DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// An in-process spec file at `<role>/<name>.yaml`; `extra` is appended YAML.
pub(crate) fn spec(name: &str, role: &str, extra: &str) -> (String, String) {
    (
        format!("{role}/{name}.yaml"),
        format!(
            "model_name: {name}\nmodel_version: \"1\"\nrole: {role}\nruntime: inprocess\n\
             engine: candle\nlocal_artifacts: [{name}]\nweights_digest: {ZERO_DIGEST}\n{extra}"
        ),
    )
}

/// An in-process spec holding `ram` bytes of RAM.
pub(crate) fn ram_spec(name: &str, ram: u64) -> (String, String) {
    spec(
        name,
        "test",
        &format!("device_policy: cpu\nresource_requirements: {{ ram_bytes: {ram} }}\n"),
    )
}

/// A Triton spec at `<role>/<name>.yaml`.
pub(crate) fn triton_spec(name: &str, role: &str, extra: &str) -> (String, String) {
    (
        format!("{role}/{name}.yaml"),
        format!(
            "model_name: {name}\nmodel_version: \"1\"\nrole: {role}\nruntime: triton\n\
             engine: onnx\ntriton:\n  endpoint: http://127.0.0.1:8000\n  model_name: {name}\n{extra}"
        ),
    )
}

/// Writes the files into a fresh directory and loads them as a catalog.
pub(crate) fn catalog(files: &[(String, String)]) -> (TempDir, Catalog) {
    let dir = tempfile::tempdir().expect("temp dir");
    for (path, text) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        fs::write(&path, text).expect("write spec");
    }
    let catalog = Catalog::load(dir.path()).unwrap_or_else(|d| panic!("invalid catalog: {d:#?}"));
    (dir, catalog)
}

/// A builder with `provider`, no reaper (tests drive `reap_idle`), and no artifact
/// verification: the test provider reads no file, and the pins are placeholders.
pub(crate) fn builder(catalog: Catalog, provider: &Arc<TestProvider>) -> ManagerBuilder {
    ModelManager::builder(catalog, "/nonexistent/models")
        .provider(Arc::clone(provider) as Arc<dyn ModelProvider>)
        .verify_before_load(false)
        .reaper(false)
}

/// Live-instance bookkeeping of the provider: what its models hold right now, and peaks.
#[derive(Debug, Default)]
pub(crate) struct Live {
    pub(crate) ram: u64,
    pub(crate) vram: u64,
    pub(crate) count: usize,
    pub(crate) ram_peak: u64,
    pub(crate) vram_peak: u64,
    pub(crate) count_peak: usize,
}

#[derive(Debug, Default)]
struct Stats {
    live: Mutex<Live>,
}

/// A provider for tests: every load is counted; failures, panics, delays and a gate (to hold
/// loads until the test has lined up its waiters) can be injected per model.
#[derive(Debug, Default)]
pub(crate) struct TestProvider {
    loads: AtomicUsize,
    next_instance: AtomicU64,
    stats: Arc<Stats>,
    failures: Mutex<HashMap<String, usize>>,
    panics: Mutex<HashSet<String>>,
    delay: Mutex<Duration>,
    gate_closed: Mutex<bool>,
    gate: Condvar,
}

impl TestProvider {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Load attempts so far (failed ones included).
    pub(crate) fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }

    /// The next `times` loads of `model` fail with `weights_missing`.
    pub(crate) fn fail_next(&self, model: &str, times: usize) {
        self.failures
            .lock()
            .expect("lock")
            .insert(model.to_owned(), times);
    }

    /// The next load of `model` panics.
    pub(crate) fn panic_next(&self, model: &str) {
        self.panics.lock().expect("lock").insert(model.to_owned());
    }

    /// Every load sleeps this long first.
    pub(crate) fn set_delay(&self, delay: Duration) {
        *self.delay.lock().expect("lock") = delay;
    }

    /// Loads block until [`Self::open_gate`].
    pub(crate) fn close_gate(&self) {
        *self.gate_closed.lock().expect("lock") = true;
    }

    pub(crate) fn open_gate(&self) {
        *self.gate_closed.lock().expect("lock") = false;
        self.gate.notify_all();
    }

    /// What live instances hold.
    pub(crate) fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.stats
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl ModelProvider for TestProvider {
    fn name(&self) -> &'static str {
        "test"
    }

    fn supports(&self, _spec: &ModelSpec) -> bool {
        true
    }

    fn validate_local_artifacts(
        &self,
        _spec: &ModelSpec,
        _artifacts: &dp_spec::VerifiedArtifacts,
    ) -> Result<(), ModelError> {
        Ok(())
    }

    // A double for a CUDA-capable runtime: places models wherever it is told.
    fn runs_on_cuda(&self, _spec: &ModelSpec, _models_root: &std::path::Path) -> bool {
        true
    }

    fn load(&self, request: &LoadRequest<'_>) -> Result<Box<dyn LoadedModel>, ModelError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let name = request.spec.model_name.as_str();
        let mut closed = self.gate_closed.lock().expect("lock");
        while *closed {
            closed = self.gate.wait(closed).expect("lock");
        }
        drop(closed);
        let delay = *self.delay.lock().expect("lock");
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        if self.panics.lock().expect("lock").remove(name) {
            panic!("injected provider panic while loading {name}");
        }
        {
            let mut failures = self.failures.lock().expect("lock");
            if let Some(left) = failures.get_mut(name).filter(|n| **n > 0) {
                *left -= 1;
                return Err(ModelError::new(
                    ErrorCode::WeightsMissing,
                    format!("injected failure loading {name}"),
                ));
            }
        }
        let requirements = &request.spec.resource_requirements;
        let ram = requirements.ram_bytes;
        let vram = match request.device {
            dp_spec::ResolvedDevice::Cuda(_) => requirements.vram_bytes,
            dp_spec::ResolvedDevice::Cpu => 0,
        };
        {
            let mut live = self.stats.live.lock().expect("lock");
            live.ram += ram;
            live.vram += vram;
            live.count += 1;
            live.ram_peak = live.ram_peak.max(live.ram);
            live.vram_peak = live.vram_peak.max(live.vram);
            live.count_peak = live.count_peak.max(live.count);
        }
        let instance = self.next_instance.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(TestModel {
            instance,
            ram,
            vram,
            stats: Arc::clone(&self.stats),
        }))
    }
}

/// A loaded test model: `infer` returns its instance number.
struct TestModel {
    instance: u64,
    ram: u64,
    vram: u64,
    stats: Arc<Stats>,
}

impl LoadedModel for TestModel {
    fn infer(&self, _inputs: &NamedTensors) -> Result<NamedTensors, ModelError> {
        let id = i64::try_from(self.instance).expect("small");
        let tensor = Tensor::new(vec![1], TensorData::Int64(vec![id]))?;
        Ok(NamedTensors::from([("instance".to_owned(), tensor)]))
    }
}

impl Drop for TestModel {
    fn drop(&mut self) {
        // A failed assertion may have poisoned the lock; keep counting rather than abort.
        let mut live = self
            .stats
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        live.ram -= self.ram;
        live.vram -= self.vram;
        live.count -= 1;
    }
}

/// The instance number a handle's model reports (proves the model still runs).
pub(crate) fn instance(handle: &ModelHandle) -> i64 {
    let out = handle.infer(&NamedTensors::new()).expect("infer");
    match out["instance"].data() {
        TensorData::Int64(v) => v[0],
        other => panic!("unexpected output {other:?}"),
    }
}

/// The status line of `name`, if cached.
pub(crate) fn model<'a>(status: &'a ManagerStatus, name: &str) -> Option<&'a ModelStatus> {
    status.models.iter().find(|m| m.key.model_name == name)
}

/// Names of cached models, in status order.
pub(crate) fn cached(manager: &ModelManager) -> Vec<String> {
    manager
        .status()
        .models
        .into_iter()
        .map(|m| m.key.model_name)
        .collect()
}

/// Polls `condition` until it holds (or panics after 10 s): for waiting on other threads
/// to reach a blocking point, never for time-based behaviour (that uses `ManualClock`).
pub(crate) fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}
