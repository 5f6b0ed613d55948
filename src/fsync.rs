//! The worker's fsync thread, so the event loop never blocks on fdatasync.
//!
//! Work travels through two SPSC rings (`src/ringbuf.rs`): the loop pushes
//! "make the log durable up to byte N" and unparks the thread; the thread
//! fdatasyncs once for everything requested so far (group commit), pushes
//! "durable up to N" back and wakes the loop through its mio `Waker`.
//! Under `interval` the thread also syncs on its own timer; under `never` it
//! is not started at all.
//!
//! When the log rolls to a new segment the loop sends the old and the new
//! file: the thread fdatasyncs the old one and the directory (so the rename
//! and the new file's entry are durable) before it syncs anything of the new
//! one, so "durable up to N" stays true across segments (offsets count
//! across files).

use crate::log::FsyncPolicy;
use crate::ringbuf::{channel, Consumer, Producer};
use crate::segments::sync_dir;
use mio::Waker;
use std::collections::VecDeque;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What the loop asks of the fsync thread.
enum Work {
    /// Make everything up to this log offset durable.
    Upto(u64),
    /// The log rolled: sync `old` and the directory, then continue on `new`.
    Seal { old: File, new: File },
}

pub struct Syncer {
    requests: Producer<Work>,
    /// Seals waiting for room in the ring (never dropped, kept in order).
    waiting: VecDeque<Work>,
    done: Consumer<u64>,
    thread: Option<JoinHandle<()>>,
    /// Highest offset requested and not yet reported durable.
    outstanding: u64,
}

impl Syncer {
    pub fn start(
        file: File,
        dir: PathBuf,
        policy: FsyncPolicy,
        interval: Duration,
        waker: Arc<Waker>,
    ) -> std::io::Result<Syncer> {
        let (requests, mut inbox) = channel::<Work>(1024);
        let mut file = file;
        let (mut outbox, done) = channel::<u64>(1024);
        let thread = thread::Builder::new()
            .name("rrstore-fsync".into())
            .spawn(move || {
                let mut last_sync = Instant::now();
                let mut unreported: Option<u64> = None;
                loop {
                    let mut target = None;
                    while let Some(work) = inbox.pop() {
                        match work {
                            Work::Upto(off) => target = target.max(Some(off)),
                            Work::Seal { old, new } => {
                                if let Err(e) = old.sync_data().and_then(|()| sync_dir(&dir)) {
                                    log::error!("fdatasync failed: {e}; stopping");
                                    std::process::exit(2);
                                }
                                file = new;
                            }
                        }
                    }
                    let stopping = inbox.is_abandoned() && inbox.is_empty();
                    let timer_due =
                        policy == FsyncPolicy::Interval && last_sync.elapsed() >= interval;
                    if target.is_some() || timer_due || stopping {
                        if let Err(e) = file.sync_data() {
                            // After a failed fdatasync the kernel may have
                            // dropped the dirty pages: nothing can be promised
                            // durable any more, and a retry could lie. Stop,
                            // as PostgreSQL does; held STOREDs are never sent,
                            // peers hold the records, and a restart replays
                            // what truly reached the disk.
                            log::error!("fdatasync failed: {e}; stopping");
                            std::process::exit(2);
                        }
                        last_sync = Instant::now();
                        unreported = unreported.max(target);
                    }
                    if let Some(off) = unreported {
                        if outbox.push(off).is_ok() {
                            unreported = None;
                            let _ = waker.wake();
                        }
                    }
                    if stopping {
                        return;
                    }
                    let wait = match policy {
                        FsyncPolicy::Interval => interval.saturating_sub(last_sync.elapsed()),
                        _ => Duration::from_millis(100),
                    };
                    if inbox.is_empty() {
                        thread::park_timeout(wait.max(Duration::from_millis(1)));
                    }
                }
            })?;
        Ok(Syncer {
            requests,
            waiting: VecDeque::new(),
            done,
            thread: Some(thread),
            outstanding: 0,
        })
    }

    /// Asks for durability up to `offset` (at most one wake-up per call).
    pub fn request(&mut self, offset: u64) {
        self.push_waiting();
        if offset <= self.outstanding || !self.waiting.is_empty() {
            return;
        }
        // The ring holds 1024 items and the thread drains it whole on every
        // pass; if it is ever full, the request is simply repeated next turn.
        if self.requests.push(Work::Upto(offset)).is_ok() {
            self.outstanding = offset;
        }
        self.wake();
    }

    /// The log rolled from `old` to `new` (see the module docs).
    pub fn seal(&mut self, old: File, new: File) {
        self.waiting.push_back(Work::Seal { old, new });
        self.push_waiting();
        self.wake();
    }

    fn push_waiting(&mut self) {
        while let Some(work) = self.waiting.pop_front() {
            if let Err(work) = self.requests.push(work) {
                self.waiting.push_front(work);
                break;
            }
        }
    }

    fn wake(&self) {
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }

    /// The highest offset reported durable since the last call, if any.
    pub fn completed(&mut self) -> Option<u64> {
        let mut best = None;
        while let Some(off) = self.done.pop() {
            best = best.max(Some(off));
        }
        best
    }
}

impl Drop for Syncer {
    /// Stops the thread after one final fdatasync.
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            // Replace the producer so the thread sees the ring abandoned.
            while !self.waiting.is_empty() {
                self.push_waiting();
                self.wake();
                thread::yield_now();
            }
            let (dead, _) = channel::<Work>(1);
            drop(std::mem::replace(&mut self.requests, dead));
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
