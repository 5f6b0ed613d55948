//! Stopping an event loop from another thread, for loops run in-process
//! (see [`crate::testing`]); the processes stop on SIGTERM/SIGINT instead.
//!
//! A [`Stopper`] is a flag and the loop's mio [`Waker`]: [`Stopper::stop`]
//! sets the flag, then wakes the loop, which sees the flag on that wake-up
//! and returns. The flag is only ever set, never cleared, so a stop cannot
//! be lost or undone; the loop looks at it only when its waker fires, so
//! the hot path pays nothing.

use mio::{Registry, Token, Waker};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A handle that stops one loop; clones stop the same loop.
#[derive(Clone, Debug)]
pub struct Stopper {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl Stopper {
    /// A stopper with its own waker on `registry` (mio allows one waker per
    /// poll: use [`Stopper::with_waker`] if the loop has one already).
    pub fn new(registry: &Registry, token: Token) -> io::Result<Stopper> {
        Ok(Stopper::with_waker(Arc::new(Waker::new(registry, token)?)))
    }

    /// A stopper sharing the loop's waker; the loop must check
    /// [`Stopper::is_stopped`] whenever that waker fires.
    pub fn with_waker(waker: Arc<Waker>) -> Stopper {
        Stopper {
            flag: Arc::new(AtomicBool::new(false)),
            waker,
        }
    }

    /// Asks the loop to return at its next wake-up, and wakes it.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::Release);
        // A failed wake (the loop's poll is gone) means it has stopped already.
        let _ = self.waker.wake();
    }

    pub fn is_stopped(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }
}
