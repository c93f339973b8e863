//! The provider's CPU threads: one pool of all of them for calls that run alone, and, for
//! models the manager runs with several workers (`num_workers`), the same threads split
//! into one smaller pool per worker, for calls that start while others run.
//!
//! Why split: calls on one pool contend at every parallel operation (each product and
//! kernel is cut into one task per thread, and a call waits for its slowest task, which may
//! be queued behind another call's), while a worker with its own threads runs its call
//! from start to end without waiting for anyone. A call that starts alone takes the whole
//! pool: a lone caller of a model with N workers is not held to 1/N of the CPU (until it
//! ends, a call that starts beside it then shares the cores with it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use dp_spec::{WorkerSlot, thread_share_size};

use crate::error::CandleError;

/// A provider's thread pools (see the module's documentation); cloned cheaply into each
/// model it loads.
#[derive(Debug)]
pub(crate) struct CpuThreads {
    threads: usize,
    whole: OnceLock<Arc<rayon::ThreadPool>>,
    /// The pools of `n` workers, by `n` (2 ..= `threads`), started on first use.
    split: Mutex<HashMap<usize, Arc<[Arc<rayon::ThreadPool>]>>>,
}

impl CpuThreads {
    /// `threads` threads in all (at least one).
    pub(crate) fn new(threads: usize) -> Self {
        Self {
            threads: threads.max(1),
            whole: OnceLock::new(),
            split: Mutex::default(),
        }
    }

    /// The pool of all the threads, started on first use.
    pub(crate) fn whole(&self) -> Result<Arc<rayon::ThreadPool>, CandleError> {
        if let Some(pool) = self.whole.get() {
            return Ok(Arc::clone(pool));
        }
        let pool = start(self.threads, |i| format!("dp-candle-{i}"))?;
        // Another thread may have won the race; either pool is equivalent.
        Ok(Arc::clone(self.whole.get_or_init(|| pool)))
    }

    /// The pool worker `slot.index` of `slot.count` runs on, for a model whose workers
    /// start at share `seat` (so that the first workers of two models do not pile onto the
    /// same share while another stays idle).
    ///
    /// The threads are split into `min(count, threads)` shares as evenly as they go (3
    /// threads for 2 workers: 2 and 1); with more workers than threads, workers share the
    /// one-thread pools in turn. A call that starts alone (`slot.running` 1), one worker,
    /// or one thread, gets the whole pool.
    pub(crate) fn for_worker(
        &self,
        slot: WorkerSlot,
        seat: usize,
    ) -> Result<Arc<rayon::ThreadPool>, CandleError> {
        let Some((share, shares)) = slot.thread_share(self.threads, seat) else {
            return self.whole();
        };
        let pools = {
            let mut split = self.split.lock().unwrap_or_else(PoisonError::into_inner);
            match split.get(&shares) {
                Some(pools) => Arc::clone(pools),
                None => {
                    let pools = (0..shares)
                        .map(|share| {
                            let size = thread_share_size(self.threads, shares, share);
                            start(size, move |i| format!("dp-candle-{share}of{shares}-{i}"))
                        })
                        .collect::<Result<Arc<[_]>, _>>()?;
                    split.insert(shares, Arc::clone(&pools));
                    pools
                }
            }
        };
        Ok(Arc::clone(&pools[share]))
    }
}

fn start(
    threads: usize,
    name: impl Fn(usize) -> String + Send + Sync + 'static,
) -> Result<Arc<rayon::ThreadPool>, CandleError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(name)
        .build()
        .map(Arc::new)
        .map_err(|e| CandleError::ThreadPool {
            threads,
            reason: e.to_string(),
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;

    /// Worker `index` of `count`, starting while another call runs.
    fn slot(index: usize, count: usize) -> WorkerSlot {
        WorkerSlot {
            index,
            count,
            running: 2,
        }
    }

    #[test]
    fn each_worker_gets_its_own_share_of_the_threads() {
        let threads = CpuThreads::new(5);
        let whole = threads.whole().unwrap();
        assert_eq!(whole.current_num_threads(), 5);
        // One worker: all the threads; so has a call of any worker that starts alone.
        let alone = threads.for_worker(WorkerSlot::ALONE, 0).unwrap();
        assert!(Arc::ptr_eq(&alone, &whole));
        for index in 0..3 {
            let lone = WorkerSlot {
                index,
                count: 3,
                running: 1,
            };
            assert!(Arc::ptr_eq(&threads.for_worker(lone, 1).unwrap(), &whole));
        }

        // Two workers: 3 and 2 threads, distinct pools, the same ones on every call.
        let w0 = threads.for_worker(slot(0, 2), 0).unwrap();
        let w1 = threads.for_worker(slot(1, 2), 0).unwrap();
        assert!(!Arc::ptr_eq(&w0, &w1) && !Arc::ptr_eq(&w0, &whole));
        assert_eq!((w0.current_num_threads(), w1.current_num_threads()), (3, 2));
        assert!(Arc::ptr_eq(
            &w0,
            &threads.for_worker(slot(0, 2), 0).unwrap()
        ));
        // A model seated at share 1 starts its workers there.
        assert!(Arc::ptr_eq(
            &w1,
            &threads.for_worker(slot(0, 2), 1).unwrap()
        ));

        // Eight workers on five threads: five one-thread pools, taken in turn.
        let pools: Vec<_> = (0..8)
            .map(|w| threads.for_worker(slot(w, 8), 0).unwrap())
            .collect();
        assert!(pools.iter().all(|p| p.current_num_threads() == 1));
        for w in 0..8 {
            for v in 0..8 {
                assert_eq!(Arc::ptr_eq(&pools[w], &pools[v]), w % 5 == v % 5, "{w} {v}");
            }
        }
        // Work installed on a share runs on that share's threads.
        let name = w1.install(|| std::thread::current().name().map(str::to_owned));
        assert!(name.unwrap().starts_with("dp-candle-1of2-"));
    }

    #[test]
    fn one_thread_is_never_split() {
        let threads = CpuThreads::new(1);
        let whole = threads.whole().unwrap();
        for w in 0..4 {
            assert!(Arc::ptr_eq(
                &threads.for_worker(slot(w, 4), w).unwrap(),
                &whole
            ));
        }
    }
}
