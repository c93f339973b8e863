//! The manager under stress: 64 threads doing random get / drop / preload /
//! release / embed on 10 real models — copies of the tiny BERT that `dp demo` embeds
//! (`crates/dp-cli/demo/`), loaded and run by the real candle provider — under a RAM budget
//! that holds only a few of them at once, for `DP_STRESS_SECS` seconds (default 30).
//!
//! Not in the default test run (`#[ignore]`): `cargo xtask stress [--secs N] [--release]`
//! runs it, and `cargo xtask ci` runs it for 5 seconds after the tests.
//!
//! What it checks:
//! - no deadlock: a watchdog aborts the run, printing `status()`, when no operation has
//!   completed for [`STALL`];
//! - no panic, and no error but `insufficient_memory` (every loaded model in use);
//! - single flight: every successful load put exactly one instance in the cache, so
//!   `loads = evictions + expirations + releases + loaded at the end` (a duplicated load
//!   of one key would overwrite an instance no counter accounts for), and per model, the
//!   provider's loads equal the instances it saw dropped plus the one still cached;
//! - the budget is never exceeded: a monitor thread samples `status()` without pause, and
//!   the provider checks the RAM of the instances alive at each load;
//! - handle counts return to zero once the threads have dropped their handles;
//! - every embedding equals the one a single-threaded run computed.
//!
//! It ends with one line of figures (operations, ops/s, loads, evictions, …).
//!
//! A second, short test (in the default run) overloads one model's batching queue and
//! counts every request as answered or refused.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use dp_manager::providers::candle::CandleProvider;
use dp_manager::{EmbeddingCacheConfig, ModelHandle, ModelManager, ModelState};
use dp_spec::{
    Catalog, ErrorCode, LoadRequest, LoadedModel, ModelError, ModelProvider, ModelSpec,
    NamedTensors,
};

const THREADS: usize = 64;
const MODELS: usize = 10;
/// Model `k` declares `(k + 1)` MB; the budget holds about three of them at once.
const MB: u64 = 1_000_000;
const RAM_BUDGET: u64 = 24 * MB;
/// The watchdog's patience: no operation completing for this long is a deadlock.
const STALL: Duration = Duration::from_secs(20);
/// How long an idle model stays loaded; a reaper thread expires models past it.
const KEEP_ALIVE: Duration = Duration::from_millis(10);

const TEXTS: [&str; 8] = [
    "the cat sat on the mat",
    "a quick brown fox",
    "models are loaded once",
    "single flight under stress",
    "budgets are never exceeded",
    "hello world",
    "embeddings do not change under load",
    "",
];

fn model_name(k: usize) -> String {
    format!("stress-{k}")
}

fn ram_of(k: usize) -> u64 {
    (k as u64 + 1) * MB
}

/// A models root with ten copies of the demo model and a catalog with one spec each.
fn fixture(dir: &Path) -> Catalog {
    let demo = dp_tests::workspace_root().join("crates/dp-cli/demo");
    let template = std::fs::read_to_string(demo.join("catalog/text_embedding/tiny-bert.yaml"))
        .expect("demo spec");
    assert!(template.contains("model_name: tiny-bert\n"));
    assert!(template.contains("ram_bytes: 4000000\n"));
    let catalog = dir.join("catalog/text_embedding");
    std::fs::create_dir_all(&catalog).expect("mkdir");
    for k in 0..MODELS {
        let name = model_name(k);
        dp_tests::copy_dir(
            &demo.join("models/tiny-bert"),
            &dir.join("models").join(&name),
        )
        .expect("copy the demo model");
        let spec = template
            .replace("model_name: tiny-bert\n", &format!("model_name: {name}\n"))
            .replace("- tiny-bert/", &format!("- {name}/"))
            .replace(
                "ram_bytes: 4000000\n",
                &format!("ram_bytes: {}\n", ram_of(k)),
            );
        std::fs::write(catalog.join(format!("{name}.yaml")), spec).expect("write spec");
    }
    Catalog::load(&dir.join("catalog")).unwrap_or_else(|d| panic!("invalid catalog: {d:#?}"))
}

/// What the provider saw: loads and drops of instances per model, and the RAM the live
/// instances declare.
#[derive(Debug, Default)]
struct Ledger {
    loads: [AtomicU64; MODELS],
    drops: [AtomicU64; MODELS],
    live_ram: AtomicU64,
    live_ram_peak: AtomicU64,
}

/// The real candle provider, with a ledger of the instances it made (not a fake: every
/// load and inference is candle's).
#[derive(Debug)]
struct LedgerProvider {
    candle: CandleProvider,
    ledger: Arc<Ledger>,
}

struct LedgerModel {
    model: Box<dyn LoadedModel>,
    index: usize,
    ram: u64,
    ledger: Arc<Ledger>,
}

impl LoadedModel for LedgerModel {
    fn infer(&self, inputs: &NamedTensors) -> Result<NamedTensors, ModelError> {
        self.model.infer(inputs)
    }
}

impl Drop for LedgerModel {
    fn drop(&mut self) {
        self.ledger.drops[self.index].fetch_add(1, Ordering::SeqCst);
        self.ledger.live_ram.fetch_sub(self.ram, Ordering::SeqCst);
    }
}

fn index_of(spec: &ModelSpec) -> usize {
    spec.model_name
        .strip_prefix("stress-")
        .and_then(|k| k.parse().ok())
        .filter(|k| *k < MODELS)
        .unwrap_or_else(|| panic!("not a stress model: {}", spec.model_name))
}

impl ModelProvider for LedgerProvider {
    fn name(&self) -> &'static str {
        self.candle.name()
    }

    fn supports(&self, spec: &ModelSpec) -> bool {
        self.candle.supports(spec)
    }

    fn validate_local_artifacts(
        &self,
        spec: &ModelSpec,
        artifacts: &dp_spec::VerifiedArtifacts,
    ) -> Result<(), ModelError> {
        self.candle.validate_local_artifacts(spec, artifacts)
    }

    fn load(&self, request: &LoadRequest<'_>) -> Result<Box<dyn LoadedModel>, ModelError> {
        let model = self.candle.load(request)?;
        let index = index_of(request.spec);
        let ram = request.spec.resource_requirements.ram_bytes;
        self.ledger.loads[index].fetch_add(1, Ordering::SeqCst);
        let live = self.ledger.live_ram.fetch_add(ram, Ordering::SeqCst) + ram;
        self.ledger.live_ram_peak.fetch_max(live, Ordering::SeqCst);
        Ok(Box::new(LedgerModel {
            model,
            index,
            ram,
            ledger: Arc::clone(&self.ledger),
        }))
    }
}

/// xorshift64*: per-thread randomness without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32;
        usize::try_from(r).unwrap_or(0) % n
    }
}

/// Operations of one kind, and how many of them were refused for memory.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    gets: u64,
    drops: u64,
    preloads: u64,
    releases: u64,
    released: u64,
    embeds: u64,
    refused: u64,
}

impl Tally {
    fn add(&mut self, other: &Self) {
        self.gets += other.gets;
        self.drops += other.drops;
        self.preloads += other.preloads;
        self.releases += other.releases;
        self.released += other.released;
        self.embeds += other.embeds;
        self.refused += other.refused;
    }

    fn operations(&self) -> u64 {
        self.gets + self.drops + self.preloads + self.releases + self.embeds
    }

    /// Calls that went through `get` (hit or miss).
    fn requests(&self) -> u64 {
        self.gets + self.preloads + self.embeds
    }
}

/// A refusal for memory is the one error the run may meet (all loaded models in use).
fn refused(result: Result<(), ModelError>, tally: &mut Tally, what: &str) {
    if let Err(err) = result {
        assert_eq!(
            err.error_code,
            ErrorCode::InsufficientMemory,
            "{what}: unexpected error {err:?}"
        );
        tally.refused += 1;
    }
}

/// One worker: random operations until `stop`.
fn worker(
    seed: u64,
    manager: &ModelManager,
    reference: &HashMap<&'static str, Vec<f32>>,
    progress: &AtomicU64,
    stop: &AtomicBool,
) -> Tally {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut held: Option<(usize, ModelHandle)> = None;
    let mut tally = Tally::default();
    while !stop.load(Ordering::Relaxed) {
        // Skewed popularity, as in a real pipeline: the three smallest models take most
        // requests and stay loaded; the others come and go, idle, and are evicted.
        let k = if rng.below(10) < 7 {
            rng.below(3)
        } else {
            3 + rng.below(MODELS - 3)
        };
        let name = model_name(k);
        match rng.below(100) {
            0..=9 => {
                tally.gets += 1;
                let result = manager.get(&name).map(|handle| {
                    assert_eq!(handle.spec().model_name, name);
                    // Held until a later drop (one at a time per thread).
                    if let Some((_, previous)) = held.replace((k, handle)) {
                        tally.drops += 1;
                        drop(previous);
                    }
                });
                refused(result, &mut tally, "get");
            }
            10..=49 => {
                if let Some((k, handle)) = held.take() {
                    tally.drops += 1;
                    // Still the model asked for, and its preset still works.
                    assert_eq!(handle.spec().model_name, model_name(k));
                    assert!(
                        handle
                            .preset()
                            .is_some_and(|p| p.name() == "sentence_embedding")
                    );
                    drop(handle);
                }
            }
            50..=61 => {
                tally.preloads += 1;
                let keep_alive = [None, Some(KEEP_ALIVE / 2), Some(KEEP_ALIVE * 3)][rng.below(3)];
                refused(manager.preload(&name, keep_alive), &mut tally, "preload");
            }
            62 => {
                tally.releases += 1;
                if manager.release(&name) {
                    tally.released += 1;
                }
            }
            _ => {
                tally.embeds += 1;
                let text = TEXTS[rng.below(TEXTS.len())];
                let result = manager.embed(&name, &[text]).map(|out| {
                    assert_eq!(out.models_used[0].model_name, name);
                    let [vector] = out.embeddings.as_slice() else {
                        panic!("one text, {} vectors", out.embeddings.len());
                    };
                    let expected = &reference[text];
                    assert_eq!(vector.len(), expected.len());
                    let diff = vector
                        .iter()
                        .zip(expected)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0_f32, f32::max);
                    assert!(diff < 1e-5, "{name} embedded {text:?} off by {diff}");
                });
                refused(result, &mut tally, "embed");
            }
        }
        progress.fetch_add(1, Ordering::Relaxed);
    }
    tally
}

/// Sets its flags when dropped: stop the workers, and the run is over.
struct Finish<'a>(&'a AtomicBool, &'a AtomicBool);

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        self.1.store(true, Ordering::Relaxed);
    }
}

/// Prints the manager's status (if it answers) and aborts: a deadlock cannot be unwound.
fn abort_with_status(manager: &ModelManager, why: &str) -> ! {
    eprintln!("stress: {why}");
    let (tx, rx) = std::sync::mpsc::channel();
    let probe = manager.clone();
    thread::spawn(move || {
        let _ = tx.send(serde_json::to_string_pretty(&probe.status()));
    });
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(json)) => eprintln!("status():\n{json}"),
        Ok(Err(err)) => eprintln!("status() did not serialize: {err}"),
        Err(_) => eprintln!("status() itself is blocked"),
    }
    std::process::abort();
}

fn seconds() -> f64 {
    std::env::var("DP_STRESS_SECS").ok().map_or(30.0, |s| {
        s.parse()
            .unwrap_or_else(|_| panic!("DP_STRESS_SECS must be a number of seconds, got {s:?}"))
    })
}

#[test]
#[ignore = "run by cargo xtask stress"]
fn sixty_four_threads_on_ten_models_under_a_small_budget() {
    let run_for = Duration::from_secs_f64(seconds());
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = fixture(dir.path());
    let ledger = Arc::new(Ledger::default());
    let provider = LedgerProvider {
        candle: CandleProvider::new(),
        ledger: Arc::clone(&ledger),
    };
    let manager = ModelManager::builder(catalog, dir.path().join("models"))
        .provider(Arc::new(provider))
        .ram_budget_bytes(RAM_BUDGET)
        .default_keep_alive(KEEP_ALIVE)
        // A worker below runs the keep-alive passes, so the end state is quiescent.
        .reaper(false)
        .embedding_cache(EmbeddingCacheConfig {
            max_entries: 40,
            ..EmbeddingCacheConfig::default()
        })
        .build()
        .expect("builds");

    // Single-threaded reference vectors (all ten models have the same weights).
    let reference: HashMap<&'static str, Vec<f32>> = {
        let out = manager.embed(&model_name(0), &TEXTS).expect("embeds");
        TEXTS.into_iter().zip(out.embeddings).collect()
    };
    assert!(manager.release(&model_name(0)));
    let before = manager.status().totals;

    let progress = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let finished = AtomicBool::new(false);
    let violations: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let started = Instant::now();
    let (tally, samples, reaped) = thread::scope(|scope| {
        // Stops every helper thread however this closure ends (a worker's panic included),
        // so the scope can join them and report the panic.
        let _finish = Finish(&stop, &finished);
        // The watchdog: a run with no progress for STALL is a deadlock.
        scope.spawn(|| {
            let (mut last, mut since) = (progress.load(Ordering::Relaxed), Instant::now());
            while !finished.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(100));
                let now = progress.load(Ordering::Relaxed);
                if now != last {
                    (last, since) = (now, Instant::now());
                } else if since.elapsed() > STALL {
                    abort_with_status(
                        &manager,
                        &format!("deadlock: no operation completed for {STALL:?} ({now} done)"),
                    );
                }
            }
        });
        // The monitor: the budget holds at every sample.
        let monitor = scope.spawn(|| {
            let mut samples = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                let totals = manager.status().totals;
                samples += 1;
                if totals.ram_used > RAM_BUDGET || totals.ram_peak > RAM_BUDGET {
                    violations
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(format!(
                            "sample {samples}: {} bytes used (peak {}) > budget {RAM_BUDGET}",
                            totals.ram_used, totals.ram_peak
                        ));
                }
            }
            samples
        });
        // The reaper: keep-alive passes, racing the workers.
        let reaper = scope.spawn(|| {
            let mut reaped = 0;
            while !stop.load(Ordering::Relaxed) {
                reaped += manager.reap_idle();
                thread::sleep(KEEP_ALIVE / 2);
            }
            reaped
        });
        let workers: Vec<_> = (0..THREADS)
            .map(|i| {
                let (manager, reference, progress, stop) = (&manager, &reference, &progress, &stop);
                scope.spawn(move || worker(i as u64 + 1, manager, reference, progress, stop))
            })
            .collect();
        thread::sleep(run_for);
        stop.store(true, Ordering::Relaxed);
        let mut tally = Tally::default();
        for worker in workers {
            tally.add(&worker.join().expect("no worker panicked"));
        }
        let samples = monitor.join().expect("the monitor did not panic");
        let reaped = reaper.join().expect("the reaper did not panic");
        (tally, samples, reaped)
    });
    let elapsed = started.elapsed();

    let violations = violations
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    assert!(violations.is_empty(), "budget exceeded: {violations:#?}");
    let status = manager.status();
    let totals = &status.totals;

    // Every handle is gone: nothing in use, nothing loading, nothing waiting.
    assert_eq!(totals.loading, 0);
    for model in &status.models {
        assert_eq!(
            (model.state, model.refcount, model.waiters),
            (ModelState::Idle, 0, 0),
            "{model:?}"
        );
    }
    // No instance outside the cache still holds memory.
    let cached_ram: u64 = status.models.iter().map(|m| m.ram_bytes).sum();
    assert_eq!(totals.ram_used, cached_ram);
    assert_eq!(totals.live_instances, status.models.len());
    assert!(totals.ram_peak <= RAM_BUDGET);
    let live_peak = ledger.live_ram_peak.load(Ordering::SeqCst);
    assert!(
        live_peak <= RAM_BUDGET,
        "instances alive at once declared {live_peak} bytes > budget {RAM_BUDGET}"
    );

    // Single flight: each successful load made exactly one cache entry, which was then
    // evicted, expired or released, or is still cached.
    let loads = totals.loads - before.loads;
    let (evictions, expirations, releases) = (
        totals.evictions - before.evictions,
        totals.expirations - before.expirations,
        totals.releases - before.releases,
    );
    assert_eq!(totals.load_errors, 0);
    assert_eq!(
        loads,
        evictions + expirations + releases + status.models.len() as u64,
        "{totals:#?}"
    );
    assert_eq!(releases, tally.released);
    assert_eq!(expirations, reaped as u64);
    let provider_loads: u64 = ledger.loads.iter().map(|l| l.load(Ordering::SeqCst)).sum();
    assert_eq!(provider_loads, totals.loads);
    for k in 0..MODELS {
        let cached = status
            .models
            .iter()
            .any(|m| m.key.model_name == model_name(k));
        assert_eq!(
            ledger.loads[k].load(Ordering::SeqCst),
            ledger.drops[k].load(Ordering::SeqCst) + u64::from(cached),
            "model {k}: every instance but the cached one was dropped"
        );
    }
    // Each request counted at most one hit and at most one miss, and at least one of them
    // (a request that waited and retried counts both); each flight had one leader, which
    // counted a miss and then a load or a budget rejection.
    let (hits, misses) = (totals.hits - before.hits, totals.misses - before.misses);
    let rejections = totals.budget_rejections - before.budget_rejections;
    let requests = tally.requests();
    assert!(hits <= requests && misses <= requests && hits + misses >= requests);
    assert!(misses >= loads + rejections, "{totals:#?}");
    assert!(tally.refused >= rejections && tally.refused <= misses);
    assert!(loads > MODELS as u64, "the budget forced reloads");
    assert!(evictions > 0, "the budget forced evictions");

    // Releasing everything frees every instance and all the memory.
    for k in 0..MODELS {
        manager.release(&model_name(k));
    }
    let totals = manager.status().totals;
    assert_eq!((totals.ram_used, totals.live_instances), (0, 0));
    assert_eq!(ledger.live_ram.load(Ordering::SeqCst), 0);
    for k in 0..MODELS {
        assert_eq!(
            ledger.loads[k].load(Ordering::SeqCst),
            ledger.drops[k].load(Ordering::SeqCst)
        );
    }

    let operations = tally.operations();
    let secs = elapsed.as_secs_f64();
    println!(
        "stress: {THREADS} threads, {MODELS} models, budget {} MB, {secs:.1} s: {operations} \
         operations ({:.0} ops/s; {} get, {} drop, {} preload, {} release, {} embed; {} \
         refused for memory); loads {loads}, evictions {evictions}, expirations \
         {expirations}, releases {releases}, budget rejections {rejections}, hits {hits}, \
         misses {misses}; {samples} status samples, RAM peak {} MB",
        RAM_BUDGET / MB,
        operations as f64 / secs,
        tally.gets,
        tally.drops,
        tally.preloads,
        tally.releases,
        tally.embeds,
        tally.refused,
        totals.ram_peak as f64 / MB as f64,
    );
}

/// The batching queue under overload: 64 threads send 20 requests each (1 to 3 texts) to one
/// model whose queue holds 8 texts. Every request is either answered with its own texts'
/// vectors (those a single caller computes) or refused with `overloaded` at once (the
/// median refusal well under a millisecond); nothing is lost, nothing else goes wrong.
#[test]
fn a_full_batching_queue_refuses_fast_and_loses_nothing() {
    const REQUESTS: usize = 20;
    let demo = dp_tests::workspace_root().join("crates/dp-cli/demo");
    let manager = ModelManager::builder(
        Catalog::load(&demo.join("catalog")).unwrap(),
        demo.join("models"),
    )
    .provider(Arc::new(CandleProvider::new()))
    .embedding_cache(EmbeddingCacheConfig::disabled())
    .batching(dp_manager::BatchingConfig {
        max_queued_texts: 8,
        ..dp_manager::BatchingConfig::default()
    })
    .reaper(false)
    .build()
    .unwrap();
    let words = [
        "the cat sat",
        "dogs play",
        "a model runs offline",
        "rain today",
        "music",
    ];
    let alone: Vec<Vec<f32>> = words
        .iter()
        .map(|w| {
            manager
                .embed("tiny-bert", &[w])
                .unwrap()
                .embeddings
                .remove(0)
        })
        .collect();
    let (answered, refused, refusal_times) =
        (AtomicU64::new(0), AtomicU64::new(0), Mutex::new(Vec::new()));
    thread::scope(|scope| {
        for t in 0..THREADS {
            let (manager, alone, words) = (&manager, &alone, &words);
            let (answered, refused, refusal_times) = (&answered, &refused, &refusal_times);
            scope.spawn(move || {
                for r in 0..REQUESTS {
                    let picks: Vec<usize> = (0..=(t + r) % 3).map(|i| (t + r + i) % 5).collect();
                    let texts: Vec<&str> = picks.iter().map(|&i| words[i]).collect();
                    let started = Instant::now();
                    match manager.embed("tiny-bert", &texts) {
                        Ok(out) => {
                            for (vector, &i) in out.embeddings.iter().zip(&picks) {
                                let diff = vector
                                    .iter()
                                    .zip(&alone[i])
                                    .map(|(a, b)| (a - b).abs())
                                    .fold(0.0, f32::max);
                                assert!(diff < 1e-5, "thread {t} got another text's vector");
                            }
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) if err.error_code == ErrorCode::Overloaded => {
                            refusal_times
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push(started.elapsed());
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => panic!("unexpected error: {err}"),
                    }
                }
            });
        }
    });
    let (answered, refused) = (answered.into_inner(), refused.into_inner());
    assert_eq!(
        answered + refused,
        (THREADS * REQUESTS) as u64,
        "every request accounted"
    );
    assert!(answered > 0, "the queue served requests");
    let mut times = refusal_times
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    times.sort();
    assert!(refused > 0, "64 threads overflow a queue of 8 texts");
    let median = times[times.len() / 2];
    assert!(
        median < Duration::from_millis(1),
        "median refusal {median:?}"
    );
    println!(
        "overload: {answered} answered, {refused} refused; refusal median {median:?}, max {:?}",
        times[times.len() - 1]
    );
}
