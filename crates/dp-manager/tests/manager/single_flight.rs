//! Single flight: one load per cold key, errors shared with every waiter and not cached.

use std::sync::{Arc, Barrier};
use std::thread;

use dp_manager::ModelState;
use dp_spec::ErrorCode;

use crate::common::{TestProvider, builder, catalog, instance, model, ram_spec, spec, wait_for};

#[test]
fn sixty_four_threads_share_one_load() {
    const THREADS: usize = 64;
    let (_dir, catalog) = catalog(&[ram_spec("m", 100)]);
    let provider = TestProvider::new();
    let manager = builder(catalog, &provider).build().expect("builds");
    provider.close_gate();

    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let manager = manager.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                manager.get("m")
            })
        })
        .collect();
    // Hold the load until every other request is blocked on it, so all 64 are in one flight.
    wait_for("63 waiters", || {
        model(&manager.status(), "m").is_some_and(|m| m.waiters == 63)
    });
    let status = manager.status();
    assert_eq!(
        model(&status, "m").map(|m| m.state),
        Some(ModelState::Loading)
    );
    assert_eq!(status.totals.loading, 1);
    assert_eq!(
        status.totals.ram_used, 100,
        "memory is reserved before the load"
    );
    provider.open_gate();

    let handles: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("no panic").expect("loads"))
        .collect();
    assert_eq!(provider.loads(), 1);
    assert!(handles.iter().all(|h| h.same_instance(&handles[0])));
    assert!(handles.iter().all(|h| instance(h) == 0));

    let status = manager.status();
    let m = model(&status, "m").expect("cached");
    assert_eq!((m.state, m.refcount, m.waiters), (ModelState::InUse, 64, 0));
    assert_eq!(status.totals.loads, 1);
    assert_eq!(status.totals.misses, 64);
    assert_eq!(status.totals.hits, 0);

    drop(handles);
    let status = manager.status();
    let m = model(&status, "m").expect("still cached");
    assert_eq!((m.state, m.refcount), (ModelState::Idle, 0));
    let again = manager.get("m").expect("hit");
    assert_eq!(instance(&again), 0);
    assert_eq!(manager.status().totals.hits, 1);
    assert_eq!(provider.loads(), 1);
}

#[test]
fn a_failed_load_reaches_every_waiter_and_is_retried() {
    const THREADS: usize = 16;
    let (_dir, catalog) = catalog(&[ram_spec("m", 100)]);
    let provider = TestProvider::new();
    let manager = builder(catalog, &provider).build().expect("builds");
    provider.fail_next("m", 1);
    provider.close_gate();

    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let manager = manager.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                manager.get("m")
            })
        })
        .collect();
    wait_for("15 waiters", || {
        model(&manager.status(), "m").is_some_and(|m| m.waiters == 15)
    });
    provider.open_gate();
    for t in threads {
        let err = t.join().expect("no panic").expect_err("the load fails");
        assert_eq!(err.error_code, ErrorCode::WeightsMissing);
        assert_eq!(err.message, "injected failure loading m");
    }
    assert_eq!(provider.loads(), 1, "one attempt for all sixteen requests");
    let status = manager.status();
    assert!(status.models.is_empty(), "a failure is not cached");
    assert_eq!(status.totals.ram_used, 0, "the reservation is given back");
    assert_eq!(status.totals.live_instances, 0);
    assert_eq!((status.totals.loads, status.totals.load_errors), (1, 1));

    let handle = manager.get("m").expect("the retry succeeds");
    assert_eq!(instance(&handle), 0);
    assert_eq!(provider.loads(), 2);
    let totals = manager.status().totals;
    assert_eq!(
        (totals.loads, totals.load_errors, totals.misses),
        (2, 1, 17)
    );
    assert_eq!(totals.ram_used, 100);
}

#[test]
fn a_provider_panic_fails_the_waiters_instead_of_hanging_them() {
    const THREADS: usize = 4;
    let (_dir, catalog) = catalog(&[ram_spec("m", 100)]);
    let provider = TestProvider::new();
    let manager = builder(catalog, &provider).build().expect("builds");
    provider.panic_next("m");
    provider.close_gate();

    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let manager = manager.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                manager.get("m")
            })
        })
        .collect();
    wait_for("3 waiters", || {
        model(&manager.status(), "m").is_some_and(|m| m.waiters == 3)
    });
    provider.open_gate();
    let mut panicked = 0;
    for t in threads {
        match t.join() {
            Err(_) => panicked += 1,
            Ok(result) => {
                let err = result.expect_err("the load was abandoned");
                assert_eq!(err.error_code, ErrorCode::ProviderUnavailable);
                assert!(err.message.contains("panicked"), "{}", err.message);
            }
        }
    }
    assert_eq!(panicked, 1, "only the loading thread unwinds");
    assert_eq!(manager.status().totals.ram_used, 0);
    let handle = manager.get("m").expect("the next request loads again");
    assert_eq!(instance(&handle), 0);
    assert_eq!(provider.loads(), 2);
}

#[test]
fn names_and_aliases_share_one_instance_and_refcounts_follow_handles() {
    let (_dir, catalog) = catalog(&[spec("m", "r", "aliases: [em, m-latest]\n")]);
    let provider = TestProvider::new();
    let manager = builder(catalog, &provider).build().expect("builds");
    let a = manager.get("m").expect("by name");
    let b = manager.get("em").expect("by alias");
    let c = b.clone();
    assert!(a.same_instance(&b) && b.same_instance(&c));
    assert_eq!(a.key().model_name, "m");
    assert_eq!(a.spec().aliases, ["em", "m-latest"]);
    assert_eq!(a.provider(), "test");
    let status = manager.status();
    let m = model(&status, "m").expect("cached");
    assert_eq!((m.refcount, m.hits), (3, 1));
    assert_eq!(status.totals.misses, 1);
    drop(a);
    drop(c);
    assert_eq!(model(&manager.status(), "m").map(|m| m.refcount), Some(1));
    drop(b);
    assert_eq!(
        model(&manager.status(), "m").map(|m| m.state),
        Some(ModelState::Idle)
    );
    assert_eq!(provider.loads(), 1);
}

#[test]
fn handles_outlive_the_manager() {
    let (_dir, catalog) = catalog(&[ram_spec("m", 100)]);
    let provider = TestProvider::new();
    let manager = builder(catalog, &provider).build().expect("builds");
    let handle = manager.get("m").expect("loads");
    drop(manager);
    assert_eq!(instance(&handle), 0);
    assert_eq!(provider.live().count, 1);
    drop(handle);
    assert_eq!(provider.live().count, 0, "the last owner frees the model");
}
