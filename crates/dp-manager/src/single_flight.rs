//! The concurrency core of the model cache: the handle count of a loaded instance
//! ([`HandleCount`]) and the single-flight rendezvous of a load ([`Pending`]).
//!
//! This file depends on nothing but `std` and the primitives it imports from `crate::sync`:
//! the library compiles it against std's, and `tests/loom.rs` compiles this very file
//! (through `#[path]`) against loom's, so the model checker explores the code that ships,
//! under every interleaving and the weak memory orderings it uses — not a copy of it.
//!
//! # The handle count and idleness
//!
//! A resident's handle count and the moment it became idle share one atomic word: either
//! `n > 0` live handles, or the [`IDLE`] bit plus the clock reading (in nanoseconds) taken
//! by the release of the last handle. Because the transition to idle writes the time in the
//! same atomic step, the reaper can never see an idle model with a stale idle time (and
//! release a model that has just been used for an hour as if it had been idle all along).
//!
//! # The single flight
//!
//! The first request for a cold key puts a [`Pending`] in the map and loads; later requests
//! register as waiters on it and block. The loader freezes the waiter list, sets the new
//! instance's handle count to cover itself and every waiter *before* publishing it in the
//! map (so no eviction can see it idle in between), then wakes the waiters, each of which
//! adopts one pre-counted handle. A failed load is unpublished first, so the next request
//! loads again, and every registered waiter receives the error.

use std::sync::PoisonError;

use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{Condvar, Mutex, MutexGuard};

/// Set in a [`HandleCount`] when no handle is live; the low bits then hold the time.
pub(crate) const IDLE: u64 = 1 << 63;

/// Live handle count, or `IDLE | idle_since_nanos` (see the module docs).
#[derive(Debug)]
pub(crate) struct HandleCount(AtomicU64);

impl HandleCount {
    /// No handle, idle since `nanos`.
    pub(crate) fn idle_since(nanos: u64) -> Self {
        Self(AtomicU64::new(IDLE | (nanos & !IDLE)))
    }

    /// Counts a new handle. Callers either hold the map's shard guard (so no eviction can
    /// run) or already own a handle or the unpublished instance.
    #[inline]
    pub(crate) fn acquire(&self) {
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            let next = if current & IDLE == 0 { current + 1 } else { 1 };
            match self
                .0
                .compare_exchange_weak(current, next, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Counts a copy of a live handle: the count is ≥ 1 and cannot turn idle meanwhile, so
    /// a plain increment is enough.
    #[inline]
    pub(crate) fn add_copy(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Uncounts a handle. Releasing the last one makes the instance idle since `now()`
    /// (nanoseconds; read only then).
    #[inline]
    pub(crate) fn release(&self, mut now: impl FnMut() -> u64) {
        let mut current = self.0.load(Ordering::Relaxed);
        let mut at = None;
        loop {
            if current & IDLE != 0 || current == 0 {
                // Cannot happen while the caller's handle lives; never corrupt the word if
                // it did.
                return;
            }
            let next = if current == 1 {
                // Last handle: the instance becomes idle now, and says since when.
                let at = *at.get_or_insert_with(&mut now);
                IDLE | (at & !IDLE)
            } else {
                current - 1
            };
            match self
                .0
                .compare_exchange_weak(current, next, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Sets the count of an instance nobody else can see yet (the single-flight hand-off:
    /// the loader and every waiter it found).
    pub(crate) fn preset(&self, handles: u64) {
        self.0.store(handles, Ordering::Release);
    }

    /// Live handles (0 when idle).
    pub(crate) fn handles(&self) -> u64 {
        let state = self.0.load(Ordering::Acquire);
        if state & IDLE == 0 { state } else { 0 }
    }

    /// Since when (nanoseconds) the instance is idle, if it is.
    pub(crate) fn idle_since_nanos(&self) -> Option<u64> {
        let state = self.0.load(Ordering::Acquire);
        (state & IDLE != 0).then_some(state & !IDLE)
    }

    /// Whether no handle is live.
    pub(crate) fn is_idle(&self) -> bool {
        self.0.load(Ordering::Acquire) & IDLE != 0
    }
}

/// What a single flight hands out: a shared instance with a [`HandleCount`].
pub(crate) trait Counted: Clone {
    /// The instance's handle count.
    fn handle_count(&self) -> &HandleCount;
}

/// A single-flight load of `T`, failing with `E`: the first request for a cold key loads,
/// later ones wait here.
pub(crate) struct Pending<T, E> {
    state: Mutex<PendingState<T, E>>,
    done: Condvar,
}

enum PendingState<T, E> {
    /// The load runs; `waiters` requests are blocked on it.
    Loading { waiters: u64 },
    /// Loaded: `unclaimed` waiters have not yet taken their (pre-counted) handle; the last
    /// one takes the instance out so this struct stops keeping it alive.
    Loaded { unclaimed: u64, instance: Option<T> },
    /// Failed; every waiter gets this error. The slot is already gone from the map.
    Failed(E),
}

/// What a waiter gets.
pub(crate) enum Waited<T, E> {
    /// The instance, with a handle the loader counted for this waiter.
    Adopted(T),
    /// The load's error.
    Failed(E),
    /// The load finished before this request registered: look the key up again.
    Retry,
}

impl<T: Counted, E: Clone> Pending<T, E> {
    /// A load in flight, with no waiter yet.
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(PendingState::Loading { waiters: 0 }),
            done: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PendingState<T, E>> {
        // Critical sections only move values; a poisoned lock still holds a valid state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Requests blocked on this load (for status).
    pub(crate) fn waiters(&self) -> u64 {
        match &*self.lock() {
            PendingState::Loading { waiters } => *waiters,
            PendingState::Loaded { .. } | PendingState::Failed(_) => 0,
        }
    }

    /// Blocks until the load ends.
    pub(crate) fn wait(&self) -> Waited<T, E> {
        let mut state = self.lock();
        match &mut *state {
            PendingState::Loading { waiters } => *waiters += 1,
            PendingState::Loaded { .. } => return Waited::Retry,
            PendingState::Failed(err) => return Waited::Failed(err.clone()),
        }
        loop {
            match &mut *state {
                PendingState::Loading { .. } => {
                    state = self
                        .done
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                PendingState::Loaded {
                    unclaimed,
                    instance,
                } => {
                    *unclaimed = unclaimed.saturating_sub(1);
                    let ours = if *unclaimed == 0 {
                        instance.take()
                    } else {
                        instance.clone()
                    };
                    // The loader counted this waiter's handle before publishing.
                    return ours.map_or(Waited::Retry, Waited::Adopted);
                }
                PendingState::Failed(err) => return Waited::Failed(err.clone()),
            }
        }
    }

    /// Ends the load with `instance`. While the waiter list is frozen, the instance's handle
    /// count is set to cover the loader and every waiter, *then* `publish` makes it visible
    /// in the map: no eviction can see it idle in between. Returns the loader's own
    /// (counted) share.
    pub(crate) fn finish_loaded(&self, instance: T, publish: impl FnOnce(&T)) -> T {
        let mut state = self.lock();
        let waiters = match &*state {
            PendingState::Loading { waiters } => *waiters,
            PendingState::Loaded { .. } | PendingState::Failed(_) => 0,
        };
        instance.handle_count().preset(waiters + 1);
        publish(&instance);
        *state = PendingState::Loaded {
            unclaimed: waiters,
            instance: (waiters > 0).then(|| instance.clone()),
        };
        drop(state);
        self.done.notify_all();
        instance
    }

    /// Ends the load with an error: `unpublish` removes the slot (so the next request
    /// retries) and every registered waiter gets `err`.
    pub(crate) fn finish_failed(&self, err: E, unpublish: impl FnOnce()) {
        let mut state = self.lock();
        unpublish();
        *state = PendingState::Failed(err);
        drop(state);
        self.done.notify_all();
    }
}
