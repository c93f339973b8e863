//! Model checking of the cache's single-flight/refcount core with loom.
//!
//! `src/single_flight.rs` — the handle count word and the single-flight rendezvous the
//! manager runs on — is compiled here a second time, against loom's `Mutex`, `Condvar`
//! and `AtomicU64` instead of std's (the `sync` module below), so loom explores the very
//! code that ships: every interleaving of 2–3 threads, and every value the weak memory
//! orderings it uses allow a load to see.
//!
//! Around it, [`Cache`] replays the manager's protocol on one key (`src/manager.rs`): the
//! dashmap shard is a loom `RwLock`; the fast path (`ModelManager::get`) acquires a handle
//! under the read guard; the cold path (`Inner::get_cold`) leads or joins a flight under the
//! write lock; the leader finishes or fails its flight (`Flight::succeed` / `Flight::fail`);
//! eviction removes an instance only if it is idle, under the write lock
//! (`Inner::evict_one`); `ModelManager::release` removes it whether in use or not.
//!
//! What is proven, for all interleavings explored:
//! - concurrent gets of one cold key → exactly one load, one shared instance;
//! - a failed load reaches every request that waited on it, and is not cached (the next
//!   request loads again);
//! - handle counts (copies included) return to zero, and idle, once every handle is dropped;
//! - eviction never takes an instance a handle still uses;
//! - release while a handle is live is safe: the handle keeps its instance, the counts of
//!   the released and the fresh instance stay separate and both end idle.
//!
//! Each test prints how many executions loom explored (`--nocapture`).

use std::sync::atomic::AtomicUsize as StdAtomicUsize;

use loom::sync::atomic::{AtomicBool, AtomicUsize};
use loom::sync::{Arc, RwLock};
use loom::thread;

#[allow(dead_code, unreachable_pub)]
#[path = "../src/single_flight.rs"]
mod single_flight;

/// The primitives `single_flight` is written against: loom's, here.
mod sync {
    pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};

    pub(crate) mod atomic {
        pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
    }
}

use single_flight::{Counted, HandleCount, Pending, Waited};
use sync::atomic::Ordering::SeqCst;

/// A loaded instance: its handle count, which load attempt made it, and whether the cache
/// has let go of it.
#[derive(Debug)]
struct Instance {
    count: HandleCount,
    load: usize,
    evicted: AtomicBool,
}

type Shared = Arc<Instance>;

impl Counted for Shared {
    fn handle_count(&self) -> &HandleCount {
        &self.count
    }
}

/// A failed load attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LoadFailed(usize);

type Flight = Pending<Shared, LoadFailed>;

/// A counted handle, as `ModelHandle`: copies count, drops uncount.
#[derive(Debug)]
struct Handle(Shared);

impl Clone for Handle {
    fn clone(&self) -> Self {
        self.0.count.add_copy();
        Self(Arc::clone(&self.0))
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.count.release(|| 42);
    }
}

impl Handle {
    fn same_instance(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Using the model: the cache must not have evicted an instance in use.
    fn use_it(&self) -> usize {
        assert!(
            !self.0.evicted.load(SeqCst),
            "load {} was evicted while a handle used it",
            self.0.load
        );
        self.0.load
    }
}

enum Slot {
    Loading(Arc<Flight>),
    Ready(Shared),
}

/// One key of the manager's map, with its protocol (see the module docs).
struct Cache {
    /// The dashmap shard holding the key.
    shard: RwLock<Option<Slot>>,
    /// Provider load attempts; the first `failing` fail.
    loads: AtomicUsize,
    failing: usize,
    /// Flights that failed, kept alive so a waiter can tell it waited on one.
    failed: std::sync::Mutex<Vec<Arc<Flight>>>,
}

impl Cache {
    fn new(failing: usize) -> Arc<Self> {
        Arc::new(Self {
            shard: RwLock::new(None),
            loads: AtomicUsize::new(0),
            failing,
            failed: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// `ModelManager::get`: the read-guard fast path, then the cold path.
    fn get(&self) -> Result<Handle, LoadFailed> {
        {
            let shard = self.shard.read().expect("shard");
            if let Some(Slot::Ready(instance)) = &*shard {
                // Under the read guard: eviction needs the write lock.
                instance.count.acquire();
                return Ok(Handle(Arc::clone(instance)));
            }
        }
        self.get_cold()
    }

    /// `Inner::get_cold`.
    fn get_cold(&self) -> Result<Handle, LoadFailed> {
        loop {
            let (flight, lead) = {
                let mut shard = self.shard.write().expect("shard");
                match &*shard {
                    Some(Slot::Ready(instance)) => {
                        instance.count.acquire();
                        return Ok(Handle(Arc::clone(instance)));
                    }
                    Some(Slot::Loading(flight)) => (Arc::clone(flight), false),
                    None => {
                        let flight = Arc::new(Pending::new());
                        *shard = Some(Slot::Loading(Arc::clone(&flight)));
                        (flight, true)
                    }
                }
            };
            if lead {
                return self.lead(&flight);
            }
            match flight.wait() {
                Waited::Adopted(instance) => return Ok(Handle(instance)),
                Waited::Failed(err) => return Err(err),
                Waited::Retry => {
                    let failed = self.failed.lock().expect("bookkeeping");
                    assert!(
                        !failed.iter().any(|f| Arc::ptr_eq(f, &flight)),
                        "a waiter of a failed load was sent to retry instead of getting the error"
                    );
                }
            }
        }
    }

    /// `Inner::lead` with `Flight::succeed` / `Flight::fail`.
    fn lead(&self, flight: &Arc<Flight>) -> Result<Handle, LoadFailed> {
        let attempt = self.loads.fetch_add(1, SeqCst);
        if attempt < self.failing {
            let err = LoadFailed(attempt);
            self.failed
                .lock()
                .expect("bookkeeping")
                .push(Arc::clone(flight));
            flight.finish_failed(err, || {
                // Not cached: remove this flight's slot so the next request loads again.
                let mut shard = self.shard.write().expect("shard");
                if matches!(&*shard, Some(Slot::Loading(f)) if Arc::ptr_eq(f, flight)) {
                    *shard = None;
                }
            });
            return Err(err);
        }
        let instance = Arc::new(Instance {
            count: HandleCount::idle_since(0),
            load: attempt,
            evicted: AtomicBool::new(false),
        });
        let ours = flight.finish_loaded(instance, |instance| {
            // Replaces this flight's `Loading` slot.
            *self.shard.write().expect("shard") = Some(Slot::Ready(Arc::clone(instance)));
        });
        Ok(Handle(ours))
    }

    /// `Inner::evict_one`'s removal: only an idle instance, re-checked under the write lock.
    fn evict(&self) -> bool {
        let mut shard = self.shard.write().expect("shard");
        if !matches!(&*shard, Some(Slot::Ready(i)) if i.count.is_idle()) {
            return false;
        }
        if let Some(Slot::Ready(instance)) = shard.take() {
            instance.evicted.store(true, SeqCst);
        }
        true
    }

    /// `ModelManager::release`: forgets the instance, in use or not.
    fn release(&self) -> Option<Shared> {
        let mut shard = self.shard.write().expect("shard");
        if !matches!(&*shard, Some(Slot::Ready(_))) {
            return None;
        }
        match shard.take() {
            Some(Slot::Ready(instance)) => Some(instance),
            _ => None,
        }
    }

    /// The instance the cache holds, if any; panics on a flight left behind.
    fn cached(&self) -> Option<Shared> {
        match &*self.shard.read().expect("shard") {
            None => None,
            Some(Slot::Ready(instance)) => Some(Arc::clone(instance)),
            Some(Slot::Loading(_)) => panic!("a flight was left in the map"),
        }
    }

    fn loads(&self) -> usize {
        self.loads.load(SeqCst)
    }
}

/// How much of the schedule space a test explores.
#[derive(Debug, Clone, Copy)]
enum Bound {
    /// Every interleaving.
    Exhaustive,
    /// Every interleaving in which threads are switched against their will at most this
    /// many times (blocking and thread ends switch freely): three threads unbounded take
    /// hours, and concurrency bugs need few preemptions.
    Preemptions(usize),
}

/// Runs `body` under loom within `bound` and reports how many executions were explored.
/// `LOOM_MAX_PREEMPTIONS` overrides the bound.
fn explore(name: &str, bound: Bound, body: impl Fn() + Sync + Send + 'static) {
    let counter = std::sync::Arc::new(StdAtomicUsize::new(0));
    let inner = std::sync::Arc::clone(&counter);
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = match bound {
            Bound::Exhaustive => None,
            Bound::Preemptions(n) => Some(n),
        };
    }
    let explored = builder.preemption_bound;
    builder.check(move || {
        inner.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        body();
    });
    let executions = counter.load(std::sync::atomic::Ordering::Relaxed);
    let within = explored.map_or_else(
        || "every interleaving".to_owned(),
        |n| format!("up to {n} preemptions"),
    );
    eprintln!("loom: {name}: {executions} executions explored ({within})");
    assert!(executions > 1, "{name}: loom explored a single execution");
}

/// Runs `work` on `threads - 1` loom threads and on this one; returns every result.
fn on_threads<T: Send + 'static>(
    threads: usize,
    cache: &Arc<Cache>,
    work: impl Fn(&Cache) -> T + Send + Sync + Copy + 'static,
) -> Vec<T> {
    let others: Vec<_> = (1..threads)
        .map(|_| {
            let cache = Arc::clone(cache);
            thread::spawn(move || work(&cache))
        })
        .collect();
    let mine = work(cache);
    others
        .into_iter()
        .map(|t| t.join().expect("no panic"))
        .chain(std::iter::once(mine))
        .collect()
}

/// `threads` concurrent gets of a cold key: one load, one shared instance, and the handle
/// count back to zero (idle) after the drops.
fn concurrent_gets(threads: usize) {
    let cache = Cache::new(0);
    let handles = on_threads(threads, &cache, |cache| cache.get().expect("loads"));
    assert_eq!(cache.loads(), 1, "{threads} concurrent gets, one load");
    assert!(handles.iter().all(|h| h.same_instance(&handles[0])));
    let instance = Arc::clone(&handles[0].0);
    assert_eq!(instance.count.handles(), threads as u64);
    drop(handles);
    assert!(instance.count.is_idle());
    assert_eq!(instance.count.handles(), 0);
    assert!(cache.cached().is_some_and(|c| Arc::ptr_eq(&c, &instance)));
}

/// `threads` concurrent gets, the first load failing: the error reaches its leader and
/// every waiter (a waiter sent to retry fails the model in `get_cold`), it is not cached,
/// and a request that came after it loads again, once.
fn failed_load(threads: usize) {
    let cache = Cache::new(1);
    let results = on_threads(threads, &cache, Cache::get);
    assert!(results.iter().any(Result::is_err));
    for result in &results {
        match result {
            Err(err) => assert_eq!(*err, LoadFailed(0)),
            Ok(handle) => assert_eq!(handle.use_it(), 1),
        }
    }
    let loaded: Vec<&Handle> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(cache.loads(), if loaded.is_empty() { 1 } else { 2 });
    assert!(loaded.iter().all(|h| h.same_instance(loaded[0])));
    drop(results);
    let cached = cache.cached();
    let again = cache.get().expect("the next request loads");
    match cached {
        Some(instance) => assert!(Arc::ptr_eq(&instance, &again.0)),
        None => assert_eq!(again.use_it(), cache.loads() - 1),
    }
}

/// `threads - 1` users (get, copy, drop, use the copy, drop) race an eviction: eviction
/// never takes an instance in use (`Handle::use_it`), each reload follows an eviction, and
/// every instance ends idle with no handle.
fn eviction_races_users(threads: usize) {
    let cache = Cache::new(0);
    let evictor = {
        let cache = Arc::clone(&cache);
        thread::spawn(move || cache.evict())
    };
    let used = on_threads(threads - 1, &cache, |cache| {
        let handle = cache.get().expect("loads");
        let copy = handle.clone();
        drop(handle);
        copy.use_it();
        Arc::clone(&copy.0)
    });
    let evicted = evictor.join().expect("no panic");
    assert!(cache.loads() <= 1 + usize::from(evicted));
    for instance in &used {
        assert!(instance.count.is_idle());
        assert_eq!(instance.count.handles(), 0);
    }
    if let Some(cached) = cache.cached() {
        assert!(cached.count.is_idle() && !cached.evicted.load(SeqCst));
    }
}

/// A user gets, uses and drops the model while another thread releases it and gets it
/// again: the handle keeps the released instance, which is never handed out again; the
/// released and the fresh instance keep separate counts and both end idle.
fn release_during_use() {
    let cache = Cache::new(0);
    drop(cache.get().expect("preload"));
    let user = {
        let cache = Arc::clone(&cache);
        thread::spawn(move || {
            let handle = cache.get().expect("loads");
            handle.use_it();
            assert!(handle.0.count.handles() >= 1);
            Arc::clone(&handle.0)
        })
    };
    let released = cache.release().expect("the preloaded instance was cached");
    assert_eq!(released.load, 0);
    let fresh = cache.get().expect("loads");
    assert_eq!(
        fresh.use_it(),
        1,
        "a released instance is never handed out again"
    );
    let fresh_instance = Arc::clone(&fresh.0);
    drop(fresh);
    // The user had the released instance (got before the release) or the fresh one.
    let used = user.join().expect("no panic");
    assert!(Arc::ptr_eq(&used, &released) || Arc::ptr_eq(&used, &fresh_instance));
    assert_eq!(cache.loads(), 2);
    for instance in [&used, &fresh_instance, &released] {
        assert!(instance.count.is_idle());
        assert_eq!(instance.count.handles(), 0);
    }
    assert!(
        cache
            .cached()
            .is_some_and(|c| Arc::ptr_eq(&c, &fresh_instance))
    );
}

#[test]
fn two_concurrent_gets_of_a_cold_key_load_once() {
    explore("two concurrent gets", Bound::Exhaustive, || {
        concurrent_gets(2)
    });
}

#[test]
fn three_concurrent_gets_of_a_cold_key_load_once() {
    explore("three concurrent gets", Bound::Preemptions(3), || {
        concurrent_gets(3);
    });
}

#[test]
fn a_failed_load_reaches_its_waiter_and_is_not_cached() {
    explore("failed load, two threads", Bound::Exhaustive, || {
        failed_load(2)
    });
}

#[test]
fn a_failed_load_reaches_every_waiter_and_is_not_cached() {
    explore("failed load, three threads", Bound::Preemptions(3), || {
        failed_load(3);
    });
}

#[test]
fn eviction_spares_an_instance_in_use() {
    explore("eviction against a user", Bound::Exhaustive, || {
        eviction_races_users(2);
    });
}

#[test]
fn eviction_spares_instances_in_use_by_two_users() {
    explore("eviction against two users", Bound::Preemptions(3), || {
        eviction_races_users(3);
    });
}

#[test]
fn release_while_a_handle_is_live_is_safe() {
    explore("release during use", Bound::Exhaustive, release_during_use);
}
