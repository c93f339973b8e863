//! The manager's hot path: `get()` of an already loaded model, name lookup and key building
//! included (target: ≤ 50 ns median on one thread), and its scaling on two threads using
//! different models (target: ≥ 1.7× one thread's throughput). A bare `DashMap::get` +
//! `Arc::clone` runs in the same process as the scale.
//!
//! `get_and_drop` drops each handle at once, so every iteration also makes the model idle
//! (one clock read); `get_while_held` keeps another handle alive, so drops only decrement.

use std::fs;
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dashmap::DashMap;
use dp_manager::ModelManager;
use dp_spec::{
    Catalog, LoadRequest, LoadedModel, ModelError, ModelProvider, ModelSpec, NamedTensors,
};

/// A provider whose models do nothing: the benchmark measures the manager, not a model.
struct NullProvider;

struct NullModel;

impl LoadedModel for NullModel {
    fn infer(&self, _inputs: &NamedTensors) -> Result<NamedTensors, ModelError> {
        Ok(NamedTensors::new())
    }
}

impl ModelProvider for NullProvider {
    fn name(&self) -> &'static str {
        "null"
    }

    fn supports(&self, _spec: &ModelSpec) -> bool {
        true
    }

    fn validate_local_artifacts(
        &self,
        _spec: &ModelSpec,
        _models_root: &std::path::Path,
    ) -> Result<(), ModelError> {
        Ok(())
    }

    fn load(&self, _request: &LoadRequest<'_>) -> Result<Box<dyn LoadedModel>, ModelError> {
        Ok(Box::new(NullModel))
    }
}

/// Realistic names (the lookup hashes and compares the whole string).
const MODELS: [&str; 2] = ["all-minilm-l6-v2", "bge-small-en-v1.5"];

fn manager() -> (tempfile::TempDir, ModelManager) {
    let dir = tempfile::tempdir().expect("temp dir");
    for name in MODELS {
        let path = dir
            .path()
            .join("text_embedding")
            .join(format!("{name}.yaml"));
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(
            &path,
            format!(
                "model_name: {name}\nmodel_version: \"1\"\nrole: text_embedding\n\
                 runtime: inprocess\nengine: candle\nlocal_artifacts: [{name}]\n\
                 weights_digest: sha256:{zeros}\n",
                zeros = "0".repeat(64)
            ),
        )
        .expect("write");
    }
    let catalog = Catalog::load(dir.path()).expect("valid catalog");
    let manager = ModelManager::builder(catalog, dir.path())
        .provider(Arc::new(NullProvider))
        .reaper(false)
        .build()
        .expect("builds");
    for name in MODELS {
        manager.preload(name, None).expect("loads");
    }
    (dir, manager)
}

/// Runs `iters` gets of `name` on each of `threads` threads (one model per thread, or all on
/// `MODELS[0]` when `same`), timing from a common start to the last finish.
fn threaded(manager: &ModelManager, threads: usize, same: bool, iters: u64) -> Duration {
    let barrier = Barrier::new(threads + 1);
    thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let name = if same {
                    MODELS[0]
                } else {
                    MODELS[t % MODELS.len()]
                };
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    for _ in 0..iters {
                        drop(black_box(manager.get(black_box(name))));
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for worker in workers {
            worker.join().expect("worker");
        }
        start.elapsed()
    })
}

fn bench(c: &mut Criterion) {
    let (_dir, manager) = manager();

    let mut group = c.benchmark_group("get_loaded");
    group.throughput(Throughput::Elements(1));
    group.bench_function("get_and_drop", |b| {
        b.iter(|| drop(black_box(manager.get(black_box(MODELS[0])))));
    });
    let held = manager.get(MODELS[0]).expect("loaded");
    group.bench_function("get_while_held", |b| {
        b.iter(|| drop(black_box(manager.get(black_box(MODELS[0])))));
    });
    drop(held);
    let map: DashMap<u64, Arc<u64>, foldhash::fast::RandomState> =
        DashMap::with_capacity_and_hasher_and_shard_amount(2, Default::default(), 64);
    map.insert(7, Arc::new(7));
    group.bench_function("baseline_dashmap_get_arc_clone", |b| {
        b.iter(|| {
            drop(black_box(
                map.get(&black_box(7)).map(|r| Arc::clone(r.value())),
            ))
        });
    });
    group.finish();

    let mut group = c.benchmark_group("get_loaded_threads");
    group.throughput(Throughput::Elements(1));
    group.bench_function("1_thread", |b| {
        b.iter_custom(|iters| threaded(&manager, 1, false, iters));
    });
    group.throughput(Throughput::Elements(2));
    group.bench_function("2_threads_different_models", |b| {
        b.iter_custom(|iters| threaded(&manager, 2, false, iters));
    });
    group.bench_function("2_threads_same_model", |b| {
        b.iter_custom(|iters| threaded(&manager, 2, true, iters));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = bench
}
criterion_main!(benches);
