//! Dynamic batching: concurrent callers embedding texts with the same model and the same
//! preprocessing are served by shared model calls instead of one small call each.
//!
//! Each (model signature, preprocess signature) pair has a bounded FIFO queue. A caller
//! queues its texts; if no call is running for that queue, it becomes the *leader*: it
//! takes queued requests from the front (whole requests, up to the preset's batch size,
//! at least one), runs them as one preset call, hands every request its own rows back and
//! lets the next waiting caller lead. While a call runs, new callers queue up, so the next
//! call is as large as the load makes it: 64 threads embedding one text each become calls
//! of up to `max_batch_size` texts. A leader may also wait up to
//! [`BatchingConfig::max_delay`] for more texts before a call that is not full (zero by
//! default: a lone caller never waits).
//!
//! Waking is targeted: each request has its own condition variable, so a finished call
//! wakes its own callers and hands the lead to the caller at the front of the queue, not
//! every waiting caller (with 64 callers on two cores, waking all of them after each call
//! took the cores from the next call).
//!
//! Errors stay with the request that caused them: when a merged call fails, its requests
//! are run again one by one. A queue never holds more than
//! [`BatchingConfig::max_queued_texts`] texts: past that, a request is refused at once
//! with `overloaded` (retryable), so memory stays bounded under any load.
//!
//! A caller that gives up ([`CancelToken::cancel`]) is woken at once with `cancelled`; its
//! request leaves the queue, and no later call runs it (one already running is shared with
//! other callers and finishes, its rows unread).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use dp_spec::{ErrorCode, ModelError, WorkerSlot};

use crate::cancel::{CancelToken, CancelWaiter, cancelled};
use crate::sync::{Condvar, Mutex, MutexGuard};

/// How concurrent text requests are batched ([`crate::ManagerBuilder::batching`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchingConfig {
    /// Whether concurrent requests are merged (on by default).
    pub enabled: bool,
    /// How long a leader waits for more texts before a call smaller than the batch size
    /// (default zero: it runs at once, and requests that arrive meanwhile form the next
    /// call).
    pub max_delay: Duration,
    /// The most texts one queue holds; a request that would go past it is refused with
    /// `overloaded` (default 65,536).
    pub max_queued_texts: usize,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_delay: Duration::ZERO,
            max_queued_texts: 65_536,
        }
    }
}

impl BatchingConfig {
    /// No batching: every caller runs its own model calls.
    #[must_use]
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }
}

/// The rows of one model call, or why it failed.
type Rows = Result<Vec<Vec<f32>>, ModelError>;

/// One request's rows and the worker whose call made them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Served {
    /// One row per text, in the request's order.
    pub(crate) rows: Vec<Vec<f32>>,
    /// The worker (0 to `workers - 1`) that ran the call: the lowest one free when the call
    /// started, so a worker number stands for one executor of the model (see
    /// [`Batchers::run`]).
    pub(crate) worker: usize,
}

/// What a request's caller gets: its rows and where they were made, or why it failed.
type Outcome = Result<Served, ModelError>;

/// One caller's texts, waiting in a queue.
struct Request {
    texts: Vec<String>,
    /// When it was queued: its latency is measured from here to its outcome.
    queued_at: Instant,
    /// Whether its caller leads or has been handed the lead (changed only under the
    /// queue's lock): a lead is handed to a request at most once.
    handed: std::sync::atomic::AtomicBool,
    slot: std::sync::Mutex<Slot>,
    /// Signalled when the slot gets an outcome or the lead, or the caller gives up.
    wake: std::sync::Condvar,
    /// The caller's way to give up, if it has one.
    cancel: Option<CancelToken>,
}

/// What a waiting caller is woken for.
#[derive(Default)]
struct Slot {
    /// Set once by the leader that ran the request; taken by its caller.
    outcome: Option<Outcome>,
    /// Set when the previous leader hands this caller the lead.
    lead: bool,
    /// Set when the caller's token is cancelled.
    cancelled: bool,
}

/// What woke a waiting caller (see [`Request::wait`]).
enum Woken {
    /// The request's outcome; `lead` when the lead came too (another worker's call may
    /// have taken a request that was handed the lead meanwhile).
    Outcome { rows: Outcome, lead: bool },
    /// The lead: the request is still queued, or another call took it meanwhile.
    Lead,
    /// The caller gave up; `lead` when the lead had come too.
    Cancelled { lead: bool },
}

impl CancelWaiter for Request {
    fn cancelled(&self) {
        self.slot().cancelled = true;
        self.wake.notify_one();
    }
}

impl Request {
    fn new(texts: &[&str], cancel: Option<CancelToken>) -> Self {
        Self {
            texts: texts.iter().map(|t| (*t).to_owned()).collect(),
            queued_at: Instant::now(),
            handed: std::sync::atomic::AtomicBool::new(false),
            slot: std::sync::Mutex::new(Slot::default()),
            wake: std::sync::Condvar::new(),
            cancel,
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn finish(&self, rows: Rows, worker: usize) {
        self.slot().outcome = Some(rows.map(|rows| Served { rows, worker }));
        self.wake.notify_one();
    }

    fn is_finished(&self) -> bool {
        self.slot().outcome.is_some()
    }

    fn is_cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(CancelToken::is_cancelled)
    }

    fn hand_lead(&self) {
        self.slot().lead = true;
        self.wake.notify_one();
    }

    /// Waits until the request has an outcome, its caller the lead, or its caller gives
    /// up (checked first: a caller that left wants neither rows nor the lead).
    fn wait(&self) -> Woken {
        let mut slot = self.slot();
        loop {
            if slot.cancelled {
                return Woken::Cancelled {
                    lead: std::mem::take(&mut slot.lead),
                };
            }
            let lead = std::mem::take(&mut slot.lead);
            if let Some(rows) = slot.outcome.take() {
                return Woken::Outcome { rows, lead };
            }
            if lead {
                return Woken::Lead;
            }
            slot = self
                .wake
                .wait(slot)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

#[derive(Default)]
struct QueueState {
    pending: VecDeque<Arc<Request>>,
    /// Texts in `pending`.
    queued_texts: usize,
    /// Callers that lead: run a call, or have been handed the lead and are waking. At most
    /// `workers`.
    leaders: usize,
    /// The workers whose call is running, one bit each (a call takes the lowest free one).
    busy: u64,
    /// Calls the queue may run at once: the model's `num_workers` (1 when unset).
    workers: usize,
    /// What the queue has served, for [`Batchers::status`].
    stats: QueueStats,
}

/// Counters of one queue, updated under its lock (a few additions per model call).
#[derive(Default)]
struct QueueStats {
    calls: u64,
    texts: u64,
    refused: u64,
    peak_queued_texts: usize,
    cancelled: u64,
    batch_sizes: Histogram<{ BATCH_SIZE_BOUNDS.len() + 1 }>,
    latency: Histogram<{ LATENCY_MS_BOUNDS.len() + 1 }>,
}

/// The most calls one queue runs at once (its workers are the bits of a `u64`); the task
/// option and the spec's `num_workers` go up to it.
pub(crate) const MAX_WORKERS: usize = 64;

/// Upper bounds (inclusive) of the batch-size buckets, in texts per model call.
pub const BATCH_SIZE_BOUNDS: [u64; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

/// Upper bounds (inclusive) of the latency buckets, in milliseconds from queueing to the
/// request's outcome (waiting included).
pub const LATENCY_MS_BOUNDS: [u64; 12] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000];

/// Counts per bucket: bucket `i` holds values up to `bounds[i]`, the last one the rest.
#[derive(Clone, Copy)]
struct Histogram<const N: usize>([u64; N]);

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Self([0; N])
    }
}

impl<const N: usize> Histogram<N> {
    fn add(&mut self, bounds: &[u64], value: u64) {
        let i = bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(bounds.len());
        self.0[i] += 1;
    }

    fn report(&self, bounds: &[u64]) -> HistogramReport {
        HistogramReport {
            upper_bounds: bounds.to_vec(),
            counts: self.0.to_vec(),
        }
    }
}

/// A histogram as [`crate::ManagerStatus`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HistogramReport {
    /// Inclusive upper bound of each bucket but the last, which holds everything above.
    pub upper_bounds: Vec<u64>,
    /// Values per bucket (`upper_bounds.len() + 1` of them).
    pub counts: Vec<u64>,
}

impl HistogramReport {
    /// The upper bound of the bucket holding the `q`-quantile (`None` when empty, or when it
    /// falls in the open last bucket).
    #[must_use]
    pub fn quantile_bound(&self, q: f64) -> Option<u64> {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return None;
        }
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return self.upper_bounds.get(i).copied();
            }
        }
        None
    }
}

/// One batching queue (one model with one preprocessing), as [`crate::ManagerStatus`]
/// reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BatchingStatus {
    /// The model's name.
    pub model: String,
    /// Its preprocessing's signature (a model has one queue per prompt or preset setting).
    pub preprocess_signature: String,
    /// Calls it may run at once (the model's `num_workers`).
    pub workers: usize,
    /// Calls running now (or about to: a caller handed the lead and waking).
    pub busy_workers: usize,
    /// Texts waiting now.
    pub queued_texts: usize,
    /// The most texts that waited at once.
    pub peak_queued_texts: usize,
    /// Model calls run for the queue (merged requests count once).
    pub calls: u64,
    /// Texts run.
    pub texts: u64,
    /// Requests refused with `overloaded`.
    pub refused: u64,
    /// Requests whose callers gave up before a call took them (none of them ran).
    pub cancelled: u64,
    /// Texts per model call.
    pub batch_sizes: HistogramReport,
    /// Milliseconds from a request's queueing to its outcome.
    pub latency_ms: HistogramReport,
}

/// The queue of one (model, preprocessing) pair.
#[derive(Default)]
struct TextQueue {
    /// The model's name and preprocess signature, for status.
    model: String,
    preprocess_signature: String,
    state: Mutex<QueueState>,
    /// Signalled when a request is queued (for a leader gathering a fuller call).
    changed: Condvar,
}

/// Which queue a request joins: one per (model signature, preprocess signature).
pub(crate) struct QueueKey<'a> {
    /// The model's name, for status.
    pub(crate) model: &'a str,
    /// The model's signature (name, version, digests, device, precision).
    pub(crate) model_signature: &'a str,
    /// The preprocessing's signature (prompt, preset parameters).
    pub(crate) preprocess_signature: &'a str,
}

/// Every queue of a manager, by (model signature, preprocess signature).
pub(crate) struct Batchers {
    config: BatchingConfig,
    queues: Mutex<HashMap<String, Arc<TextQueue>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Batchers {
    pub(crate) fn new(config: BatchingConfig) -> Self {
        Self {
            config,
            queues: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) const fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// The rows of `texts`, computed by `run` (one preset call on any texts of this
    /// queue) together with the texts of concurrent callers of the same queue: the model
    /// signature and preprocess signature of `key`, whose names status reports.
    ///
    /// `run` is told which worker runs the call: the lowest-numbered one with no call
    /// running, below `workers` (at most 64), so a caller can give each worker its own
    /// executor (the model's GPUs in turn, or its share of the CPU threads while other
    /// calls run: [`WorkerSlot::running`]) and know from [`Served::worker`] where its rows
    /// were made.
    ///
    /// # Errors
    /// `overloaded` when the queue is full; `cancelled` when `cancel` is cancelled before
    /// the rows come; otherwise what `run` returns for these texts.
    pub(crate) fn run(
        &self,
        key: &QueueKey<'_>,
        batch_size: usize,
        workers: usize,
        texts: &[&str],
        cancel: Option<&CancelToken>,
        run: &dyn Fn(WorkerSlot, &[&str]) -> Rows,
    ) -> Outcome {
        if let Some(cancel) = cancel {
            cancel.check()?;
        }
        if texts.is_empty() {
            return run(WorkerSlot::ALONE, texts).map(|rows| Served { rows, worker: 0 });
        }
        let queue = Arc::clone(
            lock(&self.queues)
                .entry(format!(
                    "{}\0{}",
                    key.model_signature, key.preprocess_signature
                ))
                .or_insert_with(|| {
                    Arc::new(TextQueue {
                        model: key.model.to_owned(),
                        preprocess_signature: key.preprocess_signature.to_owned(),
                        ..TextQueue::default()
                    })
                }),
        );
        let request = Arc::new(Request::new(texts, cancel.cloned()));
        if let Some(cancel) = cancel {
            cancel.register(Arc::downgrade(&request) as std::sync::Weak<dyn CancelWaiter>);
        }
        let mut state = lock(&queue.state);
        let capacity = self.config.max_queued_texts;
        if state.queued_texts + texts.len() > capacity {
            state.stats.refused += 1;
            return Err(overloaded(state.queued_texts, texts.len(), capacity));
        }
        state.pending.push_back(Arc::clone(&request));
        state.queued_texts += texts.len();
        state.stats.peak_queued_texts = state.stats.peak_queued_texts.max(state.queued_texts);
        queue.changed.notify_all();
        state.workers = workers.clamp(1, MAX_WORKERS);
        let state = if state.leaders < state.workers {
            state.leaders += 1;
            request.handed.store(true, Relaxed);
            state
        } else {
            drop(state);
            loop {
                match request.wait() {
                    Woken::Outcome { rows, lead } => {
                        if lead {
                            // Handed the lead after another worker's call took this request.
                            pass_lead(&mut lock(&queue.state));
                        }
                        return rows;
                    }
                    Woken::Cancelled { lead } => {
                        give_up(&mut lock(&queue.state), &request, lead);
                        return Err(cancelled());
                    }
                    Woken::Lead => {}
                }
                let mut state = lock(&queue.state);
                if state.pending.iter().any(|r| Arc::ptr_eq(r, &request)) {
                    break state;
                }
                // Another worker's call took this request before its caller woke: the lead
                // goes on, and the outcome will come.
                pass_lead(&mut state);
            }
        };
        // This caller leads one call, which starts with its own request: still queued here
        // (checked under the lock, held since), unless another worker's call takes it while
        // this leader waits for a fuller call (`max_delay`).
        let mut state = self.gather(&queue, state, batch_size);
        let batch = take_batch(&mut state, &request, batch_size.max(1));
        // At most `MAX_WORKERS` leaders, each holding one bit while its call runs: a bit is
        // free for this one.
        let worker = (state.busy.trailing_ones() as usize).min(MAX_WORKERS - 1);
        state.busy |= 1_u64 << worker;
        let slot = WorkerSlot {
            index: worker,
            count: state.workers,
            running: state.busy.count_ones() as usize,
        };
        drop(state);
        {
            // Ends the call, frees the worker and passes the lead even if `run` panics: no
            // waiter is left hanging.
            let _lead = Lead {
                queue: &queue,
                batch: &batch,
                own: &request,
                worker,
            };
            if !batch.is_empty() {
                run_batch(&batch, slot, run);
            }
        }
        let outcome = request.slot().outcome.take();
        // Without an outcome, the request is in another worker's call: its outcome comes.
        outcome.unwrap_or_else(|| match request.wait() {
            Woken::Outcome { rows, .. } => rows,
            Woken::Cancelled { .. } => Err(cancelled()),
            Woken::Lead => Err(lead_lost()),
        })
    }

    /// Every queue's counters, by model name then preprocess signature.
    pub(crate) fn status(&self) -> Vec<BatchingStatus> {
        let queues: Vec<Arc<TextQueue>> = lock(&self.queues).values().cloned().collect();
        let mut report: Vec<BatchingStatus> = queues
            .iter()
            .map(|queue| {
                let state = lock(&queue.state);
                BatchingStatus {
                    model: queue.model.clone(),
                    preprocess_signature: queue.preprocess_signature.clone(),
                    workers: state.workers,
                    busy_workers: state.leaders,
                    queued_texts: state.queued_texts,
                    peak_queued_texts: state.stats.peak_queued_texts,
                    calls: state.stats.calls,
                    texts: state.stats.texts,
                    refused: state.stats.refused,
                    cancelled: state.stats.cancelled,
                    batch_sizes: state.stats.batch_sizes.report(&BATCH_SIZE_BOUNDS),
                    latency_ms: state.stats.latency.report(&LATENCY_MS_BOUNDS),
                }
            })
            .collect();
        report.sort_by(|a, b| {
            (&a.model, &a.preprocess_signature).cmp(&(&b.model, &b.preprocess_signature))
        });
        report
    }

    /// Waits, as the leader, up to `max_delay` for the queue to hold a full batch.
    fn gather<'q>(
        &self,
        queue: &'q TextQueue,
        mut state: MutexGuard<'q, QueueState>,
        batch_size: usize,
    ) -> MutexGuard<'q, QueueState> {
        if self.config.max_delay.is_zero() {
            return state;
        }
        let deadline = Instant::now() + self.config.max_delay;
        while state.queued_texts < batch_size {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = queue
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        state
    }
}

/// The leader's own request, then whole requests from the front of the queue: up to
/// `batch_size` texts (the own request even if larger). With one worker, the own request
/// is the front one. Requests whose callers gave up leave the queue with `cancelled`
/// instead of joining the call.
fn take_batch(state: &mut QueueState, own: &Arc<Request>, batch_size: usize) -> Vec<Arc<Request>> {
    let mut batch = Vec::new();
    let mut texts = 0;
    if let Some(i) = state.pending.iter().position(|r| Arc::ptr_eq(r, own))
        && let Some(own) = state.pending.remove(i)
    {
        state.queued_texts -= own.texts.len();
        if own.is_cancelled() {
            state.stats.cancelled += 1;
            own.finish(Err(cancelled()), 0);
        } else {
            texts += own.texts.len();
            batch.push(own);
        }
    }
    while let Some(next) = state.pending.front() {
        if next.is_cancelled() {
            if let Some(next) = state.pending.pop_front() {
                state.queued_texts -= next.texts.len();
                state.stats.cancelled += 1;
                // Its caller, if still waiting, wakes to `cancelled` (and passes on the
                // lead, had it been handed one).
                next.finish(Err(cancelled()), 0);
            }
            continue;
        }
        if !batch.is_empty() && texts + next.texts.len() > batch_size {
            break;
        }
        texts += next.texts.len();
        state.queued_texts -= next.texts.len();
        if let Some(next) = state.pending.pop_front() {
            batch.push(next);
        }
    }
    batch
}

/// A waiting caller that gave up: its request leaves the queue if no call has taken it
/// (counted as cancelled), and a lead it was handed, before or while giving up, goes on.
/// Under the queue's lock, so no lead can be handed to it meanwhile.
fn give_up(state: &mut QueueState, request: &Arc<Request>, lead: bool) {
    if let Some(i) = state.pending.iter().position(|r| Arc::ptr_eq(r, request)) {
        state.pending.remove(i);
        state.queued_texts -= request.texts.len();
        state.stats.cancelled += 1;
    }
    if lead || std::mem::take(&mut request.slot().lead) {
        pass_lead(state);
    }
}

/// Ends one lead: hands it to the first queued request that has not had it (its caller
/// wakes and leads the next call), or, with none, one leader fewer.
fn pass_lead(state: &mut QueueState) {
    match state.pending.iter().find(|r| !r.handed.load(Relaxed)) {
        Some(next) => {
            next.handed.store(true, Relaxed);
            next.hand_lead();
        }
        None => state.leaders -= 1,
    }
}

/// Runs the batch's texts as one call of worker `slot` and gives each request its rows;
/// when the merged call fails, each request runs alone so that its error is its own.
fn run_batch(batch: &[Arc<Request>], slot: WorkerSlot, run: &dyn Fn(WorkerSlot, &[&str]) -> Rows) {
    let worker = slot.index;
    let texts: Vec<&str> = batch
        .iter()
        .flat_map(|r| r.texts.iter().map(String::as_str))
        .collect();
    match run(slot, &texts) {
        Ok(rows) if rows.len() == texts.len() => {
            let mut rows = rows.into_iter();
            for request in batch {
                request.finish(
                    Ok(rows.by_ref().take(request.texts.len()).collect()),
                    worker,
                );
            }
        }
        Ok(_) | Err(_) if batch.len() > 1 => {
            for request in batch {
                let texts: Vec<&str> = request.texts.iter().map(String::as_str).collect();
                request.finish(run(slot, &texts), worker);
            }
        }
        Ok(rows) => batch[0].finish(
            Err(ModelError::new(
                ErrorCode::InvalidInput,
                format!(
                    "the model returned {} rows for {} texts",
                    rows.len(),
                    texts.len()
                ),
            )),
            worker,
        ),
        Err(err) => batch[0].finish(Err(err), worker),
    }
}

/// The leader's call: when it ends (normally or by a panic), every request of its batch
/// has an outcome and the lead passes to the caller at the front of the queue (or the
/// queue has no leader when it is empty).
struct Lead<'a> {
    queue: &'a TextQueue,
    batch: &'a [Arc<Request>],
    /// The leader's own request.
    own: &'a Arc<Request>,
    /// The worker running the call (freed when it ends).
    worker: usize,
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        for request in self.batch {
            if !request.is_finished() {
                request.finish(
                    Err(ModelError::new(
                        ErrorCode::ProviderUnavailable,
                        "the batched model call panicked; the request was not run to the end \
                         (see the log); retry it",
                    )),
                    self.worker,
                );
            }
        }
        let mut state = lock(&self.queue.state);
        state.busy &= !(1_u64 << self.worker);
        let texts: usize = self.batch.iter().map(|r| r.texts.len()).sum();
        let stats = &mut state.stats;
        stats.calls += 1;
        stats.texts += texts as u64;
        stats.batch_sizes.add(&BATCH_SIZE_BOUNDS, texts as u64);
        for request in self.batch {
            let ms = u64::try_from(request.queued_at.elapsed().as_millis()).unwrap_or(u64::MAX);
            stats.latency.add(&LATENCY_MS_BOUNDS, ms);
        }
        // Never queued past its own call (see `Batchers::run`); were it, no caller would be
        // left to wait for it or to lead.
        if let Some(i) = state.pending.iter().position(|r| Arc::ptr_eq(r, self.own)) {
            state.queued_texts -= self.own.texts.len();
            state.pending.remove(i);
        }
        pass_lead(&mut state);
    }
}

/// A leader whose own request did not run in its call: cannot happen (see
/// `Batchers::run`), reported rather than panicking.
fn lead_lost() -> ModelError {
    ModelError::new(
        ErrorCode::ProviderUnavailable,
        "the batching queue lost a request's outcome; retry it",
    )
}

/// The error of a request that does not fit in its queue.
fn overloaded(queued: usize, asked: usize, capacity: usize) -> ModelError {
    ModelError::new(
        ErrorCode::Overloaded,
        format!(
            "the model's request queue is full ({queued} texts queued, {asked} more asked, at \
             most {capacity}); retry after a moment, or raise BatchingConfig::max_queued_texts"
        ),
    )
    .with_detail("queued_texts", queued)
    .with_detail("max_queued_texts", capacity)
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use super::*;

    const KEY: QueueKey<'static> = QueueKey {
        model: "m",
        model_signature: "sig",
        preprocess_signature: "pp",
    };

    /// A "model" whose rows are each text's length, recording every call's size.
    fn lengths(calls: &std::sync::Mutex<Vec<usize>>) -> impl Fn(WorkerSlot, &[&str]) -> Rows + '_ {
        move |_: WorkerSlot, texts: &[&str]| {
            calls.lock().unwrap().push(texts.len());
            std::thread::sleep(Duration::from_millis(20));
            #[allow(clippy::cast_precision_loss)]
            Ok(texts.iter().map(|t| vec![t.len() as f32]).collect())
        }
    }

    #[test]
    fn concurrent_callers_share_calls_and_each_gets_its_own_rows() {
        let batchers = Batchers::new(BatchingConfig::default());
        let calls = std::sync::Mutex::new(Vec::new());
        let run = lengths(&calls);
        let barrier = Barrier::new(16);
        std::thread::scope(|scope| {
            for i in 0..16_usize {
                let (batchers, run, barrier) = (&batchers, &run, &barrier);
                scope.spawn(move || {
                    let text = "x".repeat(i + 1);
                    let other = "y".repeat(2 * i + 1);
                    barrier.wait();
                    let rows = batchers
                        .run(&KEY, 8, 1, &[&text, &other], None, run)
                        .unwrap()
                        .rows;
                    #[allow(clippy::cast_precision_loss)]
                    let want = vec![vec![(i + 1) as f32], vec![(2 * i + 1) as f32]];
                    assert_eq!(rows, want);
                });
            }
        });
        drop(run);
        let calls = calls.into_inner().unwrap();
        assert_eq!(
            calls.iter().sum::<usize>(),
            32,
            "every text ran once: {calls:?}"
        );
        assert!(
            calls.iter().all(|&n| n <= 8),
            "batch size respected: {calls:?}"
        );
        assert!(calls.len() < 16, "callers shared calls: {calls:?}");
        // Status counts the same calls: each call's size in its bucket, each request's
        // latency (every one waited at least the 20 ms of a call).
        let status = batchers.status();
        assert_eq!(status.len(), 1);
        let queue = &status[0];
        assert_eq!(
            (queue.model.as_str(), queue.preprocess_signature.as_str()),
            ("m", "pp")
        );
        assert_eq!(queue.calls, calls.len() as u64);
        assert_eq!((queue.texts, queue.queued_texts, queue.refused), (32, 0, 0));
        let mut by_bucket = vec![0_u64; BATCH_SIZE_BOUNDS.len() + 1];
        for &n in &calls {
            by_bucket[BATCH_SIZE_BOUNDS
                .iter()
                .position(|&b| n as u64 <= b)
                .unwrap()] += 1;
        }
        assert_eq!(queue.batch_sizes.counts, by_bucket);
        assert_eq!(queue.latency_ms.counts.iter().sum::<u64>(), 16);
        assert_eq!(
            queue.latency_ms.counts[..4],
            [0, 0, 0, 0],
            "none under 10 ms"
        );
        assert!(
            queue
                .latency_ms
                .quantile_bound(0.99)
                .is_some_and(|b| b >= 20)
        );
        assert!(
            (2..=32).contains(&queue.peak_queued_texts),
            "{}",
            queue.peak_queued_texts
        );
    }

    /// A "model" whose rows are each text's length, recording the most calls in flight
    /// and checking that calls running together have different workers.
    fn concurrency_probe<'a>(
        in_flight: &'a AtomicUsize,
        most: &'a AtomicUsize,
        workers_busy: &'a AtomicU64,
        most_running: &'a AtomicUsize,
    ) -> impl Fn(WorkerSlot, &[&str]) -> Rows + 'a {
        move |slot: WorkerSlot, texts: &[&str]| {
            let worker = slot.index;
            assert!(worker < slot.count, "{slot:?}");
            assert!((1..=slot.count).contains(&slot.running), "{slot:?}");
            most_running.fetch_max(slot.running, Ordering::SeqCst);
            let bit = 1_u64 << worker;
            let before = workers_busy.fetch_or(bit, Ordering::SeqCst);
            assert_eq!(before & bit, 0, "worker {worker} ran two calls at once");
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
            in_flight.fetch_sub(1, Ordering::SeqCst);
            workers_busy.fetch_and(!bit, Ordering::SeqCst);
            #[allow(clippy::cast_precision_loss)]
            Ok(texts.iter().map(|t| vec![t.len() as f32]).collect())
        }
    }

    #[test]
    fn workers_bound_the_calls_in_flight_and_every_caller_gets_its_own_rows() {
        for (workers, delay_ms) in [(1, 0), (2, 0), (3, 0), (2, 2)] {
            // With a delay, a leader waits for a fuller call with the lock released: another
            // worker's call may take its request meanwhile.
            let batchers = Batchers::new(BatchingConfig {
                max_delay: Duration::from_millis(delay_ms),
                ..BatchingConfig::default()
            });
            let (in_flight, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
            let (workers_busy, most_running) = (AtomicU64::new(0), AtomicUsize::new(0));
            let run = concurrency_probe(&in_flight, &most, &workers_busy, &most_running);
            let barrier = Barrier::new(24);
            std::thread::scope(|scope| {
                for i in 0..24_usize {
                    let (batchers, run, barrier) = (&batchers, &run, &barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        // Each caller several times, with one to three texts of its own.
                        for round in 0..20_usize {
                            let texts: Vec<String> = (0..=(i + round) % 3)
                                .map(|k| "x".repeat(i * 4 + k + 1))
                                .collect();
                            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                            let served = batchers.run(&KEY, 8, workers, &refs, None, run).unwrap();
                            assert!(served.worker < workers, "worker {}", served.worker);
                            let rows = served.rows;
                            #[allow(clippy::cast_precision_loss)]
                            let want: Vec<Vec<f32>> =
                                texts.iter().map(|t| vec![t.len() as f32]).collect();
                            assert_eq!(rows, want, "caller {i}, round {round}");
                        }
                    });
                }
            });
            let most = most.load(Ordering::SeqCst);
            assert!(
                most <= workers,
                "{most} calls at once with {workers} workers"
            );
            let status = batchers.status();
            let queue = &status[0];
            assert_eq!(queue.workers, workers);
            assert_eq!(
                (queue.busy_workers, queue.queued_texts),
                (0, 0),
                "{queue:?}"
            );
            let texts: u64 = (0..24_u64)
                .flat_map(|i| (0..20_u64).map(move |r| (i + r) % 3 + 1))
                .sum();
            assert_eq!(queue.texts, texts, "every text ran once");
            assert_eq!(queue.latency_ms.counts.iter().sum::<u64>(), 24 * 20);
            // Calls are told when they run together, and never count more than the pool.
            let most_running = most_running.load(Ordering::SeqCst);
            if workers > 1 {
                assert!(most > 1, "{workers} workers never ran calls together");
                assert!(most_running > 1, "no call was told of another running");
            }
            assert!(most_running <= workers, "{most_running} of {workers}");
        }
    }

    #[test]
    fn histogram_quantiles_name_their_bucket() {
        let mut histogram = Histogram::<4>::default();
        for value in [1, 2, 2, 3, 9, 100] {
            histogram.add(&[1, 2, 4], value);
        }
        let report = histogram.report(&[1, 2, 4]);
        assert_eq!(report.counts, [1, 2, 1, 2]);
        assert_eq!(report.quantile_bound(0.0), Some(1));
        assert_eq!(report.quantile_bound(0.5), Some(2));
        assert_eq!(report.quantile_bound(0.6), Some(4));
        assert_eq!(report.quantile_bound(0.99), None, "in the open last bucket");
        assert_eq!(
            Histogram::<4>::default()
                .report(&[1, 2, 4])
                .quantile_bound(0.5),
            None
        );
    }

    #[test]
    fn a_full_queue_refuses_at_once_and_loses_nothing() {
        let batchers = Batchers::new(BatchingConfig {
            max_queued_texts: 4,
            ..BatchingConfig::default()
        });
        let started = Barrier::new(2);
        let release = Barrier::new(2);
        let answered = AtomicUsize::new(0);
        let ok = |_: WorkerSlot, texts: &[&str]| -> Rows {
            Ok(texts.iter().map(|_| vec![2.0]).collect())
        };
        std::thread::scope(|scope| {
            // A leader holds the queue busy while others arrive.
            scope.spawn(|| {
                let slow = |_: WorkerSlot, texts: &[&str]| -> Rows {
                    if texts.contains(&"first") {
                        started.wait();
                        release.wait();
                    }
                    Ok(texts.iter().map(|_| vec![1.0]).collect())
                };
                batchers.run(&KEY, 8, 1, &["first"], None, &slow).unwrap();
                answered.fetch_add(1, Ordering::SeqCst);
            });
            started.wait();
            // Four texts fit while the leader runs; the next is refused immediately.
            let (shared, ok_ref) = (&batchers, &ok);
            let waiting =
                scope.spawn(move || shared.run(&KEY, 8, 1, &["a", "b", "c", "d"], None, ok_ref));
            while lock(&lock(&batchers.queues)["sig\0pp"].state).queued_texts < 4 {
                std::thread::yield_now();
            }
            // Refused without waiting for the running call: the median of 100 refusals is
            // well under a millisecond (the median, so that a descheduled thread on a busy
            // machine cannot fail the test).
            let mut took = Vec::new();
            for _ in 0..100 {
                let refused_at = Instant::now();
                let err = batchers.run(&KEY, 8, 1, &["e"], None, &ok).unwrap_err();
                took.push(refused_at.elapsed());
                assert_eq!(err.error_code, ErrorCode::Overloaded);
                assert!(err.message.contains("4 texts queued"), "{err}");
            }
            took.sort();
            assert!(took[50] < Duration::from_millis(1), "median {:?}", took[50]);
            let status = batchers.status();
            assert_eq!((status[0].refused, status[0].peak_queued_texts), (100, 4));
            release.wait();
            assert_eq!(waiting.join().unwrap().unwrap().rows.len(), 4);
        });
        assert_eq!(answered.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_caller_that_gives_up_leaves_the_queue_and_nothing_runs_for_it() {
        let batchers = Batchers::new(BatchingConfig::default());
        let started = Barrier::new(2);
        let release = Barrier::new(2);
        let calls = std::sync::Mutex::new(Vec::<Vec<String>>::new());
        let record = |_: WorkerSlot, texts: &[&str]| -> Rows {
            calls
                .lock()
                .unwrap()
                .push(texts.iter().map(|t| (*t).to_owned()).collect());
            if texts.contains(&"first") {
                started.wait();
                release.wait();
            }
            Ok(texts.iter().map(|_| vec![1.0]).collect())
        };
        let token = CancelToken::new();
        std::thread::scope(|scope| {
            // A leader holds the queue busy while two callers queue behind it.
            let leader = scope.spawn(|| batchers.run(&KEY, 8, 1, &["first"], None, &record));
            started.wait();
            let (shared, record, token) = (&batchers, &record, &token);
            let gives_up =
                scope.spawn(move || shared.run(&KEY, 8, 1, &["gone"], Some(token), record));
            let stays = scope.spawn(move || shared.run(&KEY, 8, 1, &["kept"], None, record));
            let queued = || lock(&lock(&batchers.queues)["sig\0pp"].state).queued_texts;
            while queued() < 2 {
                std::thread::yield_now();
            }
            token.cancel();
            // Answered while the leader's call still runs (a failure, not a hang, if not),
            // and out of the queue.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !gives_up.is_finished() && Instant::now() < deadline {
                std::thread::yield_now();
            }
            let answered = gives_up.is_finished();
            if !answered {
                release.wait();
            }
            assert!(
                answered,
                "the cancelled caller still waits for the running call"
            );
            let err = gives_up.join().unwrap().unwrap_err();
            assert_eq!(err.error_code, ErrorCode::Cancelled, "{err}");
            assert_eq!(queued(), 1);
            release.wait();
            assert_eq!(leader.join().unwrap().unwrap().rows, vec![vec![1.0]]);
            assert_eq!(stays.join().unwrap().unwrap().rows, vec![vec![1.0]]);
        });
        assert_eq!(
            calls.into_inner().unwrap(),
            vec![vec!["first".to_owned()], vec!["kept".to_owned()]]
        );
        let status = batchers.status();
        assert_eq!(
            (status[0].cancelled, status[0].texts, status[0].queued_texts),
            (1, 2, 0)
        );
        assert_eq!(status[0].busy_workers, 0);
        // A token already cancelled is refused before queueing.
        let never = |_: WorkerSlot, _: &[&str]| -> Rows { panic!("a cancelled request ran") };
        let err = batchers
            .run(&KEY, 8, 1, &["late"], Some(&token), &never)
            .unwrap_err();
        assert_eq!(err.error_code, ErrorCode::Cancelled);
    }

    #[test]
    fn a_call_leaves_out_queued_requests_whose_callers_gave_up() {
        let gave_up = CancelToken::new();
        gave_up.cancel();
        let own = Arc::new(Request::new(&["own"], None));
        let gone = Arc::new(Request::new(&["gone", "too"], Some(gave_up)));
        let next = Arc::new(Request::new(&["next"], None));
        let mut state = QueueState::default();
        for request in [&own, &gone, &next] {
            state.queued_texts += request.texts.len();
            state.pending.push_back(Arc::clone(request));
        }
        let batch = take_batch(&mut state, &own, 8);
        let texts: Vec<&str> = batch
            .iter()
            .flat_map(|r| r.texts.iter().map(String::as_str))
            .collect();
        assert_eq!(texts, ["own", "next"]);
        assert_eq!((state.queued_texts, state.stats.cancelled), (0, 1));
        assert!(state.pending.is_empty());
        let outcome = gone.slot().outcome.take().expect("answered");
        assert_eq!(outcome.unwrap_err().error_code, ErrorCode::Cancelled);
    }

    #[test]
    fn a_failing_request_does_not_fail_the_others_of_its_call() {
        let batchers = Batchers::new(BatchingConfig {
            max_delay: Duration::from_millis(200),
            ..BatchingConfig::default()
        });
        let run = |_: WorkerSlot, texts: &[&str]| -> Rows {
            if texts.contains(&"bad") {
                return Err(ModelError::new(ErrorCode::InvalidInput, "bad text"));
            }
            Ok(texts.iter().map(|_| vec![0.5]).collect())
        };
        let barrier = Barrier::new(2);
        std::thread::scope(|scope| {
            let good = scope.spawn(|| {
                barrier.wait();
                batchers.run(&KEY, 8, 1, &["good"], None, &run)
            });
            barrier.wait();
            let bad = batchers.run(&KEY, 8, 1, &["bad"], None, &run);
            assert_eq!(bad.unwrap_err().message, "bad text");
            assert_eq!(good.join().unwrap().unwrap().rows, vec![vec![0.5]]);
        });
    }

    #[test]
    fn a_panicking_call_leaves_no_waiter_behind() {
        let batchers = Batchers::new(BatchingConfig::default());
        let panicking = |_: WorkerSlot, _: &[&str]| -> Rows { panic!("provider bug") };
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            batchers.run(&KEY, 8, 1, &["a"], None, &panicking)
        }));
        assert!(caught.is_err());
        // The queue is free again.
        let ok = |_: WorkerSlot, texts: &[&str]| -> Rows {
            Ok(texts.iter().map(|_| vec![3.0]).collect())
        };
        assert_eq!(
            batchers.run(&KEY, 8, 1, &["b"], None, &ok).unwrap(),
            Served {
                rows: vec![vec![3.0]],
                worker: 0
            },
            "the panicked call's worker is free again"
        );
    }
}
