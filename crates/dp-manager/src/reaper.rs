//! The background keep-alive reaper: a thread that periodically releases idle models past
//! their keep-alive.
//!
//! It holds only a `Weak` reference to the manager, so it never keeps a manager alive, and
//! it sleeps on a channel whose sender the manager owns: when the last manager clone is
//! dropped the channel closes and the thread wakes and exits at once, instead of at its
//! next tick (which can be up to 30 s away).

use std::io;
use std::sync::Weak;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};

use crate::manager::Inner;

/// Starts the reaper for `inner`.
pub(crate) fn spawn(inner: Weak<Inner>, stop: Receiver<()>) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("dp-manager-reaper".to_owned())
        .spawn(move || {
            loop {
                // Re-read each round: a preload with a shorter keep-alive speeds it up.
                let Some(period) = inner.upgrade().map(|inner| inner.reaper_period()) else {
                    return;
                };
                match stop.recv_timeout(period) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
                // The strong reference lives only for this pass; if the last manager clone
                // went away meanwhile, the manager is dropped here and the next
                // `recv_timeout` sees the channel closed.
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                let released = inner.reap_idle();
                if released > 0 {
                    tracing::debug!(released, "reaper pass");
                }
            }
        })
}
