//! Budget accounting: what live model instances hold, against `max_loaded` and the RAM and
//! VRAM budgets, and the manager's global counters.
//!
//! Memory is reserved *before* a provider loads (so concurrent loads can never overshoot a
//! budget together) and held by a [`Reservation`] that lives exactly as long as the
//! instance: it is released when the load fails, or when the last owner of a loaded instance
//! (the cache or a handle) lets it go. A model the manager evicted or released while a
//! handle still uses it therefore keeps counting: the accounting always describes memory
//! that is really held, which is what a budget is for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The limits a [`crate::ManagerBuilder`] sets; `None` means unlimited.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Budgets {
    pub(crate) max_loaded: Option<usize>,
    pub(crate) ram_bytes: Option<u64>,
    pub(crate) vram_bytes: Option<u64>,
}

/// What one instance holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Demand {
    pub(crate) ram: u64,
    pub(crate) vram: u64,
}

/// What all live instances (and in-flight loads) hold, with the peaks seen.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    pub(crate) ram: u64,
    pub(crate) vram: u64,
    pub(crate) count: usize,
    pub(crate) ram_peak: u64,
    pub(crate) vram_peak: u64,
    pub(crate) count_peak: usize,
}

/// Why a reservation did not fit, with the usage it was checked against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shortfall {
    pub(crate) slots: bool,
    pub(crate) ram: bool,
    pub(crate) vram: bool,
    pub(crate) usage: Usage,
}

/// Counters of the cold path. Hits are counted per model (see `cache::Resident`) so
/// the hot path never touches a shared cache line; `retired_hits` keeps the hits of
/// instances the cache has forgotten.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) misses: AtomicU64,
    pub(crate) loads: AtomicU64,
    pub(crate) load_errors: AtomicU64,
    pub(crate) budget_rejections: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) expirations: AtomicU64,
    pub(crate) releases: AtomicU64,
    pub(crate) retired_hits: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The shared accounting. Reservations hold an `Arc` to it, not to the manager, so that a
/// handle outliving its manager still releases its memory correctly.
#[derive(Debug, Default)]
pub(crate) struct Accounting {
    pub(crate) budgets: Budgets,
    usage: Mutex<Usage>,
    pub(crate) counters: Counters,
}

impl Accounting {
    pub(crate) fn new(budgets: Budgets) -> Self {
        Self {
            budgets,
            ..Self::default()
        }
    }

    /// A consistent snapshot of what is held.
    pub(crate) fn usage(&self) -> Usage {
        *self.lock()
    }

    fn lock(&self) -> MutexGuard<'_, Usage> {
        // No code panics while holding this lock (plain integer updates), so a poisoned lock
        // still guards consistent numbers.
        self.usage.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `demand` could fit if nothing else were held (an emptied cache).
    pub(crate) fn fits_alone(&self, demand: Demand) -> Shortfall {
        let b = self.budgets;
        Shortfall {
            slots: b.max_loaded == Some(0),
            ram: b.ram_bytes.is_some_and(|budget| demand.ram > budget),
            vram: b.vram_bytes.is_some_and(|budget| demand.vram > budget),
            usage: self.usage(),
        }
    }

    /// Reserves `demand` if it fits now, atomically with respect to every other reservation.
    pub(crate) fn try_reserve(self: &Arc<Self>, demand: Demand) -> Result<Reservation, Shortfall> {
        let b = self.budgets;
        let mut usage = self.lock();
        let slots = b.max_loaded.is_some_and(|max| usage.count >= max);
        let ram = b
            .ram_bytes
            .is_some_and(|budget| usage.ram.saturating_add(demand.ram) > budget);
        let vram = b
            .vram_bytes
            .is_some_and(|budget| usage.vram.saturating_add(demand.vram) > budget);
        if slots || ram || vram {
            return Err(Shortfall {
                slots,
                ram,
                vram,
                usage: *usage,
            });
        }
        usage.ram = usage.ram.saturating_add(demand.ram);
        usage.vram = usage.vram.saturating_add(demand.vram);
        usage.count += 1;
        usage.ram_peak = usage.ram_peak.max(usage.ram);
        usage.vram_peak = usage.vram_peak.max(usage.vram);
        usage.count_peak = usage.count_peak.max(usage.count);
        drop(usage);
        Ok(Reservation {
            accounting: Arc::clone(self),
            demand,
            slot: true,
        })
    }

    /// Reserves memory a running request holds (a generation's key/value cache) if it
    /// fits now: it counts against the RAM and VRAM budgets like a model, but takes no
    /// model slot.
    pub(crate) fn try_reserve_transient(
        self: &Arc<Self>,
        demand: Demand,
    ) -> Result<Reservation, Shortfall> {
        let b = self.budgets;
        let mut usage = self.lock();
        let ram = b
            .ram_bytes
            .is_some_and(|budget| usage.ram.saturating_add(demand.ram) > budget);
        let vram = b
            .vram_bytes
            .is_some_and(|budget| usage.vram.saturating_add(demand.vram) > budget);
        if ram || vram {
            return Err(Shortfall {
                slots: false,
                ram,
                vram,
                usage: *usage,
            });
        }
        usage.ram = usage.ram.saturating_add(demand.ram);
        usage.vram = usage.vram.saturating_add(demand.vram);
        usage.ram_peak = usage.ram_peak.max(usage.ram);
        usage.vram_peak = usage.vram_peak.max(usage.vram);
        drop(usage);
        Ok(Reservation {
            accounting: Arc::clone(self),
            demand,
            slot: false,
        })
    }
}

/// Memory and a model slot held for one instance; given back on drop.
#[derive(Debug)]
pub(crate) struct Reservation {
    accounting: Arc<Accounting>,
    demand: Demand,
    /// Whether it holds a model slot (a loaded instance) or only memory (a request's).
    slot: bool,
}

impl Reservation {
    pub(crate) const fn demand(&self) -> Demand {
        self.demand
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut usage = self.accounting.lock();
        usage.ram = usage.ram.saturating_sub(self.demand.ram);
        usage.vram = usage.vram.saturating_sub(self.demand.vram);
        if self.slot {
            usage.count = usage.count.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_respect_every_budget_and_release_on_drop() {
        let accounting = Arc::new(Accounting::new(Budgets {
            max_loaded: Some(2),
            ram_bytes: Some(100),
            vram_bytes: Some(10),
        }));
        let a = accounting
            .try_reserve(Demand { ram: 60, vram: 0 })
            .expect("fits");
        let short = accounting
            .try_reserve(Demand { ram: 50, vram: 0 })
            .expect_err("110 > 100");
        assert!(short.ram && !short.slots && !short.vram);
        assert_eq!(short.usage.ram, 60);
        let b = accounting
            .try_reserve(Demand { ram: 40, vram: 10 })
            .expect("exactly fits");
        let short = accounting
            .try_reserve(Demand::default())
            .expect_err("two slots used");
        assert!(short.slots);
        drop(a);
        let usage = accounting.usage();
        assert_eq!((usage.ram, usage.vram, usage.count), (40, 10, 1));
        assert_eq!((usage.ram_peak, usage.count_peak), (100, 2));
        drop(b);
        assert_eq!(accounting.usage().count, 0);
        // A request's memory counts against the budgets but takes no slot.
        let kv = accounting
            .try_reserve_transient(Demand { ram: 70, vram: 0 })
            .expect("fits");
        assert_eq!((accounting.usage().ram, accounting.usage().count), (70, 0));
        assert!(
            accounting
                .try_reserve_transient(Demand { ram: 31, vram: 0 })
                .is_err()
        );
        drop(kv);
        assert_eq!(accounting.usage().ram, 0);
        assert!(accounting.fits_alone(Demand { ram: 101, vram: 0 }).ram);
    }
}
