//! How a caller gives up on a request it is waiting for.
//!
//! A request queued for a model's batching queue waits for a call to take it; if its
//! caller gives up meanwhile (an `asyncio` task cancelled, a deadline passed), the request
//! leaves the queue at once, its caller gets `cancelled`, and no model call is run for it.
//! A request already inside a running call is not stopped (the call is shared with other
//! callers), but its caller stops waiting for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use dp_spec::{ErrorCode, ModelError};

/// Something waiting on a token, woken when it is cancelled.
pub(crate) trait CancelWaiter: Send + Sync {
    /// Wakes the waiter; called (at least once) when the token is cancelled.
    fn cancelled(&self);
}

/// A cancellation signal a caller hands to [`crate::TaskRequest::cancel`] and cancels from
/// any thread, once it no longer wants the result. Clones share one signal.
///
/// ```
/// use dp_manager::CancelToken;
///
/// let token = CancelToken::new();
/// let waiting = token.clone();
/// assert!(!waiting.is_cancelled());
/// token.cancel();
/// assert!(waiting.is_cancelled());
/// ```
#[derive(Clone, Default)]
pub struct CancelToken(Arc<CancelState>);

#[derive(Default)]
struct CancelState {
    cancelled: AtomicBool,
    /// Who waits on the token now. Weak: a waiter that is done simply drops out.
    waiters: Mutex<Vec<Weak<dyn CancelWaiter>>>,
}

impl CancelToken {
    /// A token not cancelled yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives up: requests waiting on the token (and those that start with it later) end
    /// with `cancelled`. Idempotent.
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
        let waiters = std::mem::take(&mut *self.waiters());
        for waiter in waiters.iter().filter_map(Weak::upgrade) {
            waiter.cancelled();
        }
    }

    /// Whether [`Self::cancel`] was called.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }

    /// `cancelled` when the token is cancelled: a check before work that is not worth
    /// starting for a caller that left.
    ///
    /// # Errors
    /// `cancelled` once [`Self::cancel`] was called.
    pub fn check(&self) -> Result<(), ModelError> {
        if self.is_cancelled() {
            Err(cancelled())
        } else {
            Ok(())
        }
    }

    /// Wakes `waiter` when the token is cancelled (at once if it already is).
    pub(crate) fn register(&self, waiter: Weak<dyn CancelWaiter>) {
        {
            let mut waiters = self.waiters();
            // Dropped waiters go, so a token reused for many requests stays small.
            waiters.retain(|w| w.strong_count() > 0);
            waiters.push(waiter.clone());
        }
        // After the push: a `cancel` between the two either sees the waiter or is seen here.
        if self.is_cancelled()
            && let Some(waiter) = waiter.upgrade()
        {
            waiter.cancelled();
        }
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, Vec<Weak<dyn CancelWaiter>>> {
        self.0
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// Two tokens are equal when they are clones of one (they share the signal).
impl PartialEq for CancelToken {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The error of a request whose caller gave up.
pub(crate) fn cancelled() -> ModelError {
    ModelError::new(
        ErrorCode::Cancelled,
        "the request was cancelled by its caller before it ran; send it again if the \
         result is still wanted",
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    struct Counter(AtomicUsize);

    impl CancelWaiter for Counter {
        fn cancelled(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn waiters_are_woken_once_whether_they_came_before_or_after_the_cancel() {
        let token = CancelToken::new();
        let before: Arc<Counter> = Arc::new(Counter(AtomicUsize::new(0)));
        let gone: Arc<Counter> = Arc::new(Counter(AtomicUsize::new(0)));
        token.register(Arc::downgrade(&before) as Weak<dyn CancelWaiter>);
        token.register(Arc::downgrade(&gone) as Weak<dyn CancelWaiter>);
        drop(gone);
        assert!(token.check().is_ok());
        token.cancel();
        token.cancel();
        assert_eq!(before.0.load(Ordering::SeqCst), 1);
        let after: Arc<Counter> = Arc::new(Counter(AtomicUsize::new(0)));
        token.register(Arc::downgrade(&after) as Weak<dyn CancelWaiter>);
        assert_eq!(after.0.load(Ordering::SeqCst), 1);
        assert_eq!(token.check().unwrap_err().error_code, ErrorCode::Cancelled);
        assert_eq!(token.clone(), token);
        assert_ne!(CancelToken::new(), token);
    }
}
