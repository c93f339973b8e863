//! Budgets: LRU eviction of idle models, refusals with numbers, release, and the budget
//! invariant under a concurrent random workload.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use dp_manager::{ManualClock, ModelHandle, ModelManager, ModelState};
use dp_spec::ErrorCode;

use crate::common::{TestProvider, builder, cached, catalog, instance, model, ram_spec, spec};

#[test]
fn max_loaded_evicts_the_least_recently_used_idle_model() {
    let (_dir, catalog) = catalog(&[ram_spec("a", 1), ram_spec("b", 1), ram_spec("c", 1)]);
    let provider = TestProvider::new();
    let clock = Arc::new(ManualClock::new());
    let manager = builder(catalog, &provider)
        .clock(clock.clone())
        .max_loaded(2)
        .build()
        .expect("builds");
    let tick = || clock.advance(Duration::from_secs(1));

    drop(manager.get("a").expect("a")); // a idle since t=0
    tick();
    drop(manager.get("b").expect("b")); // b idle since t=1
    tick();
    drop(manager.get("a").expect("a again")); // a used last: idle since t=2
    tick();
    let c = manager.get("c").expect("c evicts the LRU idle model");
    assert_eq!(cached(&manager), ["a", "c"], "b was least recently used");
    let totals = manager.status().totals;
    assert_eq!(
        (totals.evictions, totals.loads, totals.live_instances),
        (1, 3, 2)
    );

    // c is in use, so only a can go.
    let b = manager.get("b").expect("b evicts a");
    assert_eq!(cached(&manager), ["b", "c"]);
    assert_eq!(provider.loads(), 4);

    // Both in use: nothing can make room.
    let err = manager.get("a").expect_err("all slots held");
    assert_eq!(err.error_code, ErrorCode::InsufficientMemory);
    assert_eq!(
        err.message,
        "model a needs 1 model slot(s) but the max_loaded limit is 2 and 2 model slot(s) are \
         held by models in use or loading; drop handles, release models or raise the limit"
    );
    assert_eq!(err.details["resource"], "slots");
    drop((b, c));
    assert_eq!(provider.live().count_peak, 2);
}

#[test]
fn ram_pressure_evicts_only_models_that_free_ram() {
    let (_dir, catalog) = catalog(&[ram_spec("a", 600), ram_spec("b", 600), ram_spec("z", 0)]);
    let provider = TestProvider::new();
    let clock = Arc::new(ManualClock::new());
    let manager = builder(catalog, &provider)
        .clock(clock.clone())
        .ram_budget_bytes(1000)
        .build()
        .expect("builds");
    drop(manager.get("z").expect("z")); // the oldest idle model, but it holds no RAM
    clock.advance(Duration::from_secs(1));
    drop(manager.get("a").expect("a"));
    clock.advance(Duration::from_secs(1));
    let _b = manager.get("b").expect("b evicts a");
    assert_eq!(cached(&manager), ["b", "z"]);
    let totals = manager.status().totals;
    assert_eq!(
        (totals.ram_used, totals.ram_peak, totals.evictions),
        (600, 600, 1)
    );
}

#[test]
fn insufficient_memory_when_everything_is_in_use() {
    let (_dir, catalog) = catalog(&[
        ram_spec("a", 600),
        ram_spec("b", 600),
        ram_spec("huge", 2000),
    ]);
    let provider = TestProvider::new();
    let manager = builder(catalog, &provider)
        .ram_budget_bytes(1000)
        .build()
        .expect("builds");
    let a = manager.get("a").expect("a fits");
    let err = manager.get("b").expect_err("a is in use");
    assert_eq!(err.error_code, ErrorCode::InsufficientMemory);
    assert_eq!(
        err.message,
        "model b needs 600 bytes of RAM but the RAM budget is 1000 and 600 bytes of RAM are \
         held by models in use or loading; drop handles, release models or raise the limit"
    );
    assert_eq!(
        (
            &err.details["need"],
            &err.details["budget"],
            &err.details["in_use"]
        ),
        (&600.into(), &1000.into(), &600.into())
    );
    assert_eq!(provider.loads(), 1, "b was never handed to the provider");
    drop(a);

    // Larger than the whole budget: refused at once, without evicting the idle model.
    let err = manager.get("huge").expect_err("can never fit");
    assert_eq!(err.error_code, ErrorCode::InsufficientMemory);
    assert!(
        err.message.contains("needs 2000 bytes of RAM"),
        "{}",
        err.message
    );
    assert_eq!(cached(&manager), ["a"]);

    let _b = manager.get("b").expect("a is idle now: evicted for b");
    let totals = manager.status().totals;
    assert_eq!(
        (totals.budget_rejections, totals.evictions, totals.ram_used),
        (2, 1, 600)
    );
}

#[test]
fn vram_budget_counts_only_models_placed_on_cuda() {
    let gpu = |name: &str, policy: &str| {
        spec(
            name,
            "test",
            &format!(
                "device_policy: {policy}\nresource_requirements: {{ ram_bytes: 10, vram_bytes: 600 }}\n"
            ),
        )
    };
    let (_dir, catalog) = catalog(&[gpu("g1", "cuda"), gpu("g2", "cuda:1"), gpu("c1", "cpu")]);
    let provider = TestProvider::new();
    let manager = builder(catalog, &provider)
        .cuda_available(true)
        .vram_budget_bytes(1000)
        .build()
        .expect("builds");
    let _g1 = manager.get("g1").expect("fits");
    let _c1 = manager.get("c1").expect("on the CPU: no VRAM");
    let err = manager.get("g2").expect_err("g1 holds the GPU memory");
    assert_eq!(err.error_code, ErrorCode::InsufficientGpuMemory);
    assert_eq!(
        err.message,
        "model g2 needs 600 bytes of GPU memory on cuda:1 but the VRAM budget is 1000 and 600 \
         bytes are held by models in use or loading; drop handles, release models or raise \
         the budget"
    );
    let status = manager.status();
    assert_eq!((status.totals.vram_used, status.totals.ram_used), (600, 20));
    assert_eq!(model(&status, "c1").map(|m| m.vram_bytes), Some(0));
    assert_eq!(provider.live().vram, 600);
}

#[test]
fn release_forgets_the_model_but_live_handles_keep_working() {
    let (_dir, catalog) = catalog(&[ram_spec("a", 600), ram_spec("b", 600)]);
    let provider = TestProvider::new();
    let manager = builder(catalog, &provider)
        .ram_budget_bytes(1000)
        .build()
        .expect("builds");
    let old = manager.get("a").expect("a");
    assert!(manager.release("a"));
    assert!(!manager.release("a"), "already forgotten");
    assert!(!manager.release("unknown"));
    assert!(cached(&manager).is_empty());
    assert_eq!(instance(&old), 0, "the released instance still runs");
    let totals = manager.status().totals;
    assert_eq!(
        (totals.releases, totals.ram_used, totals.live_instances),
        (1, 600, 1)
    );

    // Its memory is still really held, so b does not fit until the old handle goes.
    let err = manager.get("b").expect_err("600 + 600 > 1000");
    assert_eq!(err.error_code, ErrorCode::InsufficientMemory);
    drop(old);
    assert_eq!(manager.status().totals.ram_used, 0);
    assert_eq!(provider.live().count, 0);

    let fresh = manager.get("a").expect("a loads again");
    assert_eq!(instance(&fresh), 1, "a new instance");
    assert_eq!(provider.loads(), 2);
}

/// A small deterministic PRNG (xorshift64*), so a failure replays with its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const RAM_BUDGET: u64 = 700;
const VRAM_BUDGET: u64 = 800;
const MAX_LOADED: usize = 3;

fn check_budgets(manager: &ModelManager) {
    let totals = manager.status().totals;
    assert!(totals.ram_used <= RAM_BUDGET, "{totals:?}");
    assert!(totals.vram_used <= VRAM_BUDGET, "{totals:?}");
    assert!(totals.live_instances <= MAX_LOADED, "{totals:?}");
    assert!(
        totals.ram_peak <= RAM_BUDGET && totals.vram_peak <= VRAM_BUDGET,
        "{totals:?}"
    );
}

#[test]
fn budgets_hold_under_a_concurrent_random_workload() {
    const THREADS: u64 = 4;
    const OPS: usize = 1500;
    let names = [
        "c100", "c200", "c300", "c400", "c250", "c150", "g300", "g500",
    ];
    let mut files: Vec<_> = names[..6]
        .iter()
        .map(|n| ram_spec(n, n[1..].parse().expect("size")))
        .collect();
    for (name, vram) in [("g300", 300), ("g500", 500)] {
        files.push(spec(
            name,
            "test",
            &format!("device_policy: cuda\nresource_requirements: {{ ram_bytes: 50, vram_bytes: {vram} }}\n"),
        ));
    }
    let (_dir, catalog) = catalog(&files);
    let provider = TestProvider::new();
    provider.set_delay(Duration::from_micros(200));
    let clock = Arc::new(ManualClock::new());
    let manager = builder(catalog, &provider)
        .clock(clock.clone())
        .cuda_available(true)
        .max_loaded(MAX_LOADED)
        .ram_budget_bytes(RAM_BUDGET)
        .vram_budget_bytes(VRAM_BUDGET)
        .default_keep_alive(Duration::from_secs(3))
        .build()
        .expect("builds");

    let workers: Vec<_> = (0..THREADS)
        .map(|seed| {
            let manager = manager.clone();
            let clock = Arc::clone(&clock);
            thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (seed + 1));
                let mut held: Vec<ModelHandle> = Vec::new();
                let mut served = 0_usize;
                for _ in 0..OPS {
                    let name =
                        names[usize::try_from(rng.below(names.len() as u64)).expect("small")];
                    match rng.below(100) {
                        0..40 => match manager.get(name) {
                            Ok(handle) => {
                                assert_eq!(handle.key().model_name, name);
                                served += 1;
                                held.push(handle);
                                if held.len() > 2 {
                                    held.remove(0);
                                }
                            }
                            Err(err) => assert!(
                                matches!(
                                    err.error_code,
                                    ErrorCode::InsufficientMemory
                                        | ErrorCode::InsufficientGpuMemory
                                ),
                                "{err}"
                            ),
                        },
                        40..70 => {
                            if !held.is_empty() {
                                let i =
                                    usize::try_from(rng.below(held.len() as u64)).expect("small");
                                held.swap_remove(i);
                            }
                        }
                        70..80 => {
                            if let Err(err) = manager.preload(name, Some(Duration::from_secs(2))) {
                                assert_ne!(err.error_code, ErrorCode::ModelNotFound, "{err}");
                            }
                        }
                        80..92 => {
                            manager.release(name);
                        }
                        _ => {
                            clock.advance(Duration::from_secs(1));
                            manager.reap_idle();
                        }
                    }
                    check_budgets(&manager);
                }
                served
            })
        })
        .collect();
    let served: usize = workers
        .into_iter()
        .map(|w| w.join().expect("no panic"))
        .sum();
    check_budgets(&manager);

    let status = manager.status();
    let live = provider.live();
    assert!(
        live.ram_peak <= RAM_BUDGET,
        "provider saw {} bytes of RAM live",
        live.ram_peak
    );
    assert!(
        live.vram_peak <= VRAM_BUDGET,
        "provider saw {} bytes of VRAM live",
        live.vram_peak
    );
    assert!(
        live.count_peak <= MAX_LOADED,
        "provider saw {} instances live",
        live.count_peak
    );
    // The workload must actually have pushed against the limits.
    // How many gets succeed depends on how the threads interleave (more rejections when the
    // machine is loaded and threads hold handles longer); 500 failed once under a parallel
    // release build. A floor still proves real traffic went through.
    assert!(served > 150, "only {served} requests served");
    assert!(status.totals.evictions > 0, "{:?}", status.totals);
    assert!(status.totals.budget_rejections > 0, "{:?}", status.totals);
    assert_eq!(live.count_peak, MAX_LOADED);
    drop(live);

    // No leak: once every model is released, nothing is held anywhere.
    for name in names {
        manager.release(name);
    }
    let totals = manager.status().totals;
    assert_eq!(
        (totals.ram_used, totals.vram_used, totals.live_instances),
        (0, 0, 0)
    );
    let live = provider.live();
    assert_eq!((live.ram, live.vram, live.count), (0, 0, 0));
    assert!(status.models.iter().all(|m| m.state != ModelState::Loading));
}
