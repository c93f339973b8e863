//! Time as the manager sees it: keep-alive and LRU order are measured on a [`Clock`] so tests
//! can move time by hand ([`ManualClock`]) instead of sleeping.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonic clock: the time elapsed since an arbitrary, fixed epoch.
///
/// The manager reads it when a model is loaded and each time a model becomes idle (its last
/// handle is dropped), and compares readings with keep-alive durations. Implementations must
/// never go backwards.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Time since this clock's epoch.
    fn now(&self) -> Duration;
}

/// The real clock: monotonic, with its epoch at its creation.
///
/// On Linux it reads `CLOCK_MONOTONIC_COARSE` (a few milliseconds of resolution, about 5 ns
/// per read through the vDSO) rather than [`Instant`](std::time::Instant) (`CLOCK_MONOTONIC`, about 25 ns): the
/// manager reads the clock each time a model becomes idle, which is on the `get`/drop hot
/// path, and keep-alive durations of seconds to minutes need no finer resolution. Elsewhere
/// it uses [`Instant`](std::time::Instant).
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    epoch: Duration,
}

impl SystemClock {
    /// A clock whose epoch is now.
    #[must_use]
    pub fn new() -> Self {
        Self {
            epoch: monotonic::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Duration {
        monotonic::now().saturating_sub(self.epoch)
    }
}

#[cfg(target_os = "linux")]
mod monotonic {
    use std::time::Duration;

    use rustix::time::{ClockId, clock_gettime};

    /// Time since boot (excluding suspend), at the kernel tick's resolution.
    #[inline]
    pub(super) fn now() -> Duration {
        let ts = clock_gettime(ClockId::MonotonicCoarse);
        // The kernel never returns negative fields for a monotonic clock.
        let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
        let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
        Duration::from_secs(secs).saturating_add(Duration::from_nanos(nanos))
    }
}

#[cfg(not(target_os = "linux"))]
mod monotonic {
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    static ORIGIN: OnceLock<Instant> = OnceLock::new();

    /// Time since the first reading in this process.
    pub(super) fn now() -> Duration {
        ORIGIN.get_or_init(Instant::now).elapsed()
    }
}

/// A clock that moves only when told to; for tests of keep-alive and LRU order.
///
/// ```
/// use std::time::Duration;
/// use dp_manager::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// assert_eq!(clock.now(), Duration::ZERO);
/// clock.advance(Duration::from_secs(90));
/// assert_eq!(clock.now(), Duration::from_secs(90));
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// A clock standing at its epoch.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            nanos: AtomicU64::new(0),
        }
    }

    /// Moves the clock forward (saturating at about 584 years).
    pub fn advance(&self, by: Duration) {
        let by = to_nanos(by);
        // fetch_update cannot fail here: the closure always returns Some.
        let _ = self
            .nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                Some(now.saturating_add(by))
            });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Acquire))
    }
}

/// A duration as whole nanoseconds, saturating: the manager stores instants in atomics.
pub(crate) fn to_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_saturates() {
        let clock = ManualClock::new();
        clock.advance(Duration::from_secs(5));
        clock.advance(Duration::MAX);
        assert_eq!(clock.now(), Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn system_clock_moves_forward() {
        let clock = SystemClock::new();
        let a = clock.now();
        assert!(
            a < Duration::from_secs(1),
            "the epoch is the clock's creation"
        );
        std::thread::sleep(Duration::from_millis(30));
        let b = clock.now();
        // Coarse resolution: allow one kernel tick (≤ 10 ms) of rounding.
        assert!(b >= a + Duration::from_millis(20), "{a:?} → {b:?}");
        assert!(b < a + Duration::from_secs(5), "{a:?} → {b:?}");
    }
}
