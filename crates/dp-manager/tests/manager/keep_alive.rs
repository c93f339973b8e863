//! Keep-alive: idle models are released after their keep-alive, measured from the drop of
//! their last handle, and reload transparently.

use std::sync::Arc;
use std::time::Duration;

use dp_manager::{ManualClock, ModelState};

use crate::common::{TestProvider, builder, cached, catalog, instance, model, ram_spec, wait_for};

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn preloaded_model_expires_after_its_keep_alive_and_reloads_transparently() {
    let (_dir, catalog) = catalog(&[ram_spec("m", 100)]);
    let provider = TestProvider::new();
    let clock = Arc::new(ManualClock::new());
    let manager = builder(catalog, &provider)
        .clock(clock.clone())
        .build()
        .expect("builds");
    manager
        .preload("m", Some(Duration::from_secs(10)))
        .expect("preloads");
    let status = manager.status();
    let m = model(&status, "m").expect("loaded");
    assert_eq!(m.state, ModelState::Idle);
    assert_eq!(
        (m.idle_since, m.keep_alive),
        (Some(Duration::ZERO), Some(Duration::from_secs(10)))
    );

    clock.advance(Duration::from_secs(9));
    assert_eq!(manager.reap_idle(), 0, "9 s < 10 s");
    clock.advance(Duration::from_secs(1));
    assert_eq!(manager.reap_idle(), 1, "idle for exactly its keep-alive");
    assert!(cached(&manager).is_empty());
    let totals = manager.status().totals;
    assert_eq!(
        (totals.expirations, totals.ram_used, totals.live_instances),
        (1, 0, 0)
    );
    assert_eq!(provider.live().count, 0, "the instance is gone");

    let handle = manager.get("m").expect("reloads transparently");
    assert_eq!(instance(&handle), 1);
    let totals = manager.status().totals;
    assert_eq!((totals.loads, totals.misses, totals.hits), (2, 2, 0));
    let m = manager.status().models.remove(0);
    assert_eq!(
        m.keep_alive,
        Some(5 * MINUTE),
        "a reload gets the default keep-alive"
    );
    assert_eq!(m.loaded_at, Some(Duration::from_secs(10)));
}

#[test]
fn keep_alive_counts_from_the_last_drop_and_held_models_are_never_reaped() {
    let (_dir, catalog) = catalog(&[ram_spec("m", 100)]);
    let provider = TestProvider::new();
    let clock = Arc::new(ManualClock::new());
    let manager = builder(catalog, &provider)
        .clock(clock.clone())
        .build()
        .expect("builds");
    let first = manager.get("m").expect("loads");
    let second = first.clone();
    clock.advance(60 * MINUTE);
    assert_eq!(manager.reap_idle(), 0, "in use for an hour: never reaped");
    drop(first);
    clock.advance(MINUTE);
    assert_eq!(manager.reap_idle(), 0, "still one handle");
    drop(second); // idle from t = 61 min
    let status = manager.status();
    assert_eq!(
        model(&status, "m").and_then(|m| m.idle_since),
        Some(61 * MINUTE)
    );

    clock.advance(5 * MINUTE - Duration::from_nanos(1));
    assert_eq!(
        manager.reap_idle(),
        0,
        "a nanosecond short of the default 5 minutes"
    );
    // Using it again restarts the count.
    drop(manager.get("m").expect("hit"));
    clock.advance(5 * MINUTE - Duration::from_nanos(1));
    assert_eq!(manager.reap_idle(), 0);
    clock.advance(Duration::from_nanos(1));
    assert_eq!(manager.reap_idle(), 1);
    assert_eq!(provider.loads(), 1);
}

#[test]
fn preload_of_a_loaded_model_sets_its_keep_alive() {
    let (_dir, catalog) = catalog(&[ram_spec("m", 100)]);
    let provider = TestProvider::new();
    let clock = Arc::new(ManualClock::new());
    let manager = builder(catalog, &provider)
        .clock(clock.clone())
        .build()
        .expect("builds");
    manager.preload("m", None).expect("default keep-alive");
    manager
        .preload("m", Some(Duration::from_secs(1)))
        .expect("shortened");
    assert_eq!(provider.loads(), 1);
    clock.advance(Duration::from_secs(1));
    assert_eq!(manager.reap_idle(), 1);
}

#[test]
fn the_background_reaper_releases_idle_models() {
    let (_dir, catalog) = catalog(&[ram_spec("m", 100)]);
    let provider = TestProvider::new();
    // Real clock and real reaper thread: the one test that needs (short) real time.
    let manager = builder(catalog, &provider)
        .reaper(true)
        .default_keep_alive(Duration::from_millis(100))
        .build()
        .expect("builds");
    manager.preload("m", None).expect("preloads");
    wait_for("the reaper", || manager.status().totals.expirations == 1);
    assert!(cached(&manager).is_empty());
    assert_eq!(provider.live().count, 0);
}

#[test]
fn status_serializes_for_programs() {
    let (_dir, catalog) = catalog(&[ram_spec("m", 100)]);
    let provider = TestProvider::new();
    let clock = Arc::new(ManualClock::new());
    let manager = builder(catalog, &provider)
        .clock(clock.clone())
        .max_loaded(4)
        .ram_budget_bytes(1000)
        .build()
        .expect("builds");
    clock.advance(Duration::from_millis(1500));
    manager.preload("m", None).expect("preloads");
    clock.advance(MINUTE);
    let handle = manager.get("m").expect("hit");
    let json = serde_json::to_value(manager.status()).expect("serializes");
    let m = &json["models"][0];
    assert_eq!(m["model_name"], "m");
    assert_eq!(m["device"], "cpu");
    assert_eq!(m["precision"], "fp32");
    assert_eq!(m["runtime"], "inprocess");
    assert_eq!(m["state"], "in_use");
    assert_eq!(m["refcount"], 1);
    assert_eq!(m["loaded_at"], 1.5);
    assert_eq!(m["idle_since"], serde_json::Value::Null);
    assert_eq!(m["keep_alive"], 300.0);
    assert_eq!(
        (m["ram_bytes"].as_u64(), m["hits"].as_u64()),
        (Some(100), Some(1))
    );
    let totals = &json["totals"];
    assert_eq!(
        (totals["hits"].as_u64(), totals["misses"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        (totals["ram_used"].as_u64(), totals["ram_budget"].as_u64()),
        (Some(100), Some(1000))
    );
    assert_eq!(
        (totals["loaded"].as_u64(), totals["max_loaded"].as_u64()),
        (Some(1), Some(4))
    );
    assert_eq!(totals["vram_budget"], serde_json::Value::Null);
    drop(handle);
    let json = serde_json::to_value(manager.status()).expect("serializes");
    assert_eq!(json["models"][0]["state"], "idle");
    assert_eq!(json["models"][0]["idle_since"], 61.5);
}
