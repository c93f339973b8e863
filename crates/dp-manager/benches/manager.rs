//! The manager's hot path: `get()` of an already loaded model, name lookup and key building
//! included (target: ≤ 50 ns median on one thread), and its scaling on two threads using
//! different models (target: ≥ 1.7× one thread's throughput). A bare `DashMap::get` +
//! `Arc::clone` runs in the same process as the scale.
//!
//! `embedding_cache` measures [`ModelManager::embed`] when every text is cached (target:
//! ≤ 2 µs per text): one text per call, and a batch of 32 (per text = time / 32). `cargo
//! xtask bench manager` runs the Python anchor (a dict lookup under an `asyncio.Lock`, as
//! the pipeline's Python manager does per cached get) in the same run and prints the ratios.
//!
//! `get_and_drop` drops each handle at once, so every iteration also makes the model idle
//! (one clock read); `get_while_held` keeps another handle alive, so drops only decrement.
//!
//! `manager --figures` is the Rust runner of `cargo xtask bench manager`: the same
//! measurements without criterion, printed as one JSON object (nanoseconds, medians of
//! repeated timed loops), so that xtask can interleave them with the Python anchor.

use std::fs;
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use dashmap::DashMap;
use dp_manager::ModelManager;
use dp_spec::{
    Catalog, LoadRequest, LoadedModel, ModelError, ModelProvider, ModelSpec, NamedTensors, Tensor,
    TensorData,
};

/// A provider whose models do nothing: the benchmark measures the manager, not a model.
struct NullProvider;

struct NullModel;

impl LoadedModel for NullModel {
    fn infer(&self, inputs: &NamedTensors) -> Result<NamedTensors, ModelError> {
        // For the embedder (only on cache misses): a `[batch, seq, 4]` hidden state.
        let Some(ids) = inputs.get("input_ids") else {
            return Ok(NamedTensors::new());
        };
        let (b, s) = (ids.shape()[0], ids.shape()[1]);
        let hidden = Tensor::new(vec![b, s, 4], TensorData::Fp32(vec![0.5; b * s * 4]))?;
        Ok(NamedTensors::from([(
            "last_hidden_state".to_owned(),
            hidden,
        )]))
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
        _artifacts: &dp_spec::VerifiedArtifacts,
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
            .join("catalog/text_embedding")
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
    fs::create_dir_all(dir.path().join("models/embedder")).expect("mkdir");
    fs::write(dir.path().join("models/embedder/tokenizer.json"), TOKENIZER).expect("write");
    fs::write(
        dir.path().join("catalog/text_embedding/embedder.yaml"),
        format!(
            "model_name: embedder\nmodel_version: \"1\"\nrole: text_embedding\n\
             runtime: inprocess\nengine: candle\nlocal_artifacts: [embedder/tokenizer.json]\n\
             weights_digest: sha256:{zeros}\npreprocess_preset: sentence_embedding\n\
             preprocess_params: {{ max_length: 128, pooling: mean, normalize: true }}\n",
            zeros = "0".repeat(64)
        ),
    )
    .expect("write");
    let catalog = Catalog::load(&dir.path().join("catalog")).expect("valid catalog");
    // The null provider reads no file and the pins are placeholders: nothing to verify.
    let manager = ModelManager::builder(catalog, dir.path().join("models"))
        .provider(Arc::new(NullProvider))
        .verify_before_load(false)
        .reaper(false)
        .build()
        .expect("builds");
    for name in MODELS {
        manager.preload(name, None).expect("loads");
    }
    (dir, manager)
}

/// A word-level tokenizer (the cache-hit path never runs it).
const TOKENIZER: &str = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
  "normalizer":{"type":"Lowercase"},"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,
  "decoder":null,"model":{"type":"WordLevel","vocab":{"[PAD]":0,"[UNK]":1,"the":2,"cat":3},
  "unk_token":"[UNK]"}}"#;

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

    // Sentences of pipeline-like length (≈ 60 bytes), all cached before timing.
    let texts: Vec<String> = (0..32)
        .map(|i| format!("sentence number {i} of the benchmark, about a cat on a mat"))
        .collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    manager.embed("embedder", &texts).expect("embeds");
    let mut group = c.benchmark_group("embedding_cache");
    group.throughput(Throughput::Elements(1));
    group.bench_function("hit_1_text", |b| {
        b.iter(|| black_box(manager.embed("embedder", black_box(&texts[..1]))));
    });
    group.throughput(Throughput::Elements(32));
    group.bench_function("hit_batch_32", |b| {
        b.iter(|| black_box(manager.embed("embedder", black_box(&texts))));
    });
    group.finish();
    let cache = manager.status().embedding_cache;
    assert_eq!(cache.misses, 32, "every timed call was a cache hit");

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

/// Median nanoseconds per operation of `run(n)`, which performs about `n` operations and
/// returns its time and the exact count: `n` is first grown until one run takes ≥ 50 ms,
/// then 7 runs are timed.
fn median_ns(mut run: impl FnMut(u64) -> (Duration, u64)) -> f64 {
    let mut n = 1_000_u64;
    while run(n).0 < Duration::from_millis(50) {
        n *= 2;
    }
    let mut ns: Vec<f64> = (0..7)
        .map(|_| {
            let (time, ops) = run(n);
            #[allow(clippy::cast_precision_loss, reason = "operation counts below 2^52")]
            let per = time.as_secs_f64() * 1e9 / ops as f64;
            per
        })
        .collect();
    ns.sort_by(f64::total_cmp);
    ns[ns.len() / 2]
}

/// The xtask runner: prints the figures as one JSON object.
fn figures() {
    let (_dir, manager) = manager();
    let get_1 = median_ns(|n| {
        let start = Instant::now();
        for _ in 0..n {
            drop(black_box(manager.get(black_box(MODELS[0]))));
        }
        (start.elapsed(), n)
    });
    // Aggregate: wall time of both threads over all their gets.
    let get_2 = median_ns(|n| (threaded(&manager, 2, false, n / 2), n / 2 * 2));
    let texts: Vec<String> = (0..32)
        .map(|i| format!("sentence number {i} of the benchmark, about a cat on a mat"))
        .collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    manager.embed("embedder", &texts).expect("embeds");
    let hit_1 = median_ns(|n| {
        let start = Instant::now();
        for chunk in texts
            .chunks(1)
            .cycle()
            .take(usize::try_from(n).unwrap_or(usize::MAX))
        {
            black_box(manager.embed("embedder", black_box(chunk)).expect("hit"));
        }
        (start.elapsed(), n)
    });
    let hit_32 = median_ns(|n| {
        let batches = n.div_ceil(32);
        let start = Instant::now();
        for _ in 0..batches {
            black_box(manager.embed("embedder", black_box(&texts)).expect("hit"));
        }
        (start.elapsed(), batches * 32)
    });
    assert_eq!(
        manager.status().embedding_cache.misses,
        32,
        "every timed call was a cache hit"
    );
    println!(
        "{}",
        serde_json::json!({
            "get_ns": get_1,
            "get_2threads_ns": get_2,
            "embedding_hit_1_ns_per_text": hit_1,
            "embedding_hit_32_ns_per_text": hit_32,
        })
    );
}

fn main() {
    if std::env::args().any(|a| a == "--figures") {
        figures();
    } else {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
}
