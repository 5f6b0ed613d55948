//! Log compaction, the loop's side: the live set is written out of the
//! store, not re-read from the log (as Redis rewrites its AOF from memory).
//!
//! When a segment is sealed, or a compaction ends after a segment was
//! sealed during it, and [`segments::worth_compacting`] says so,
//! the loop takes the version vector `V0` and starts a walk over the
//! store. Each turn it encodes up to [`segments::CHUNK_BYTES`] of records
//! as log entries and hands them to the compaction thread
//! ([`Compactor`]), which writes them, appends `V0`, makes the file
//! durable and puts it in place of every sealed segment up to the newest
//! one at the start.
//!
//! Why that replays to the same store and vector:
//! - every record in those segments was applied before the walk began,
//!   so the store then held it or a record of its id that wins over it;
//!   the walk reads each of those ids, and a record it reads may only be
//!   newer (applying never goes back), which the later segments hold too
//!   (last-writer-wins is idempotent and order-free; the thread syncs
//!   them before the output takes the segments' place, so a machine
//!   crash cannot keep such a record and lose its predecessors);
//! - `V0` claims exactly what the store reflected when the walk began;
//! - a record above a gap in its origin's sequence is part of the vector
//!   (the gap may fill later) though the store may no longer hold it (it
//!   was overwritten), so the output also lists every such `(origin,
//!   seq)` as the walk began ([`VersionVector::above`], log entry kind 3),
//!   and replay observes them as it would their records.
//!
//! The walk costs the loop about what encoding the same records for the
//! log did; reading the sealed segments back, twice, on the compaction
//! thread cost each worker a third of its CPU under sustained overwrites.

use crate::msg::Vector;
use crate::segments::{self, Compactor, Job};
use crate::store::{Store, StoreWalk};
use crate::vector::VersionVector;
use mio::Waker;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A compaction the loop is feeding.
struct Running {
    walk: StoreWalk,
    vector: Vector,
    above: Vec<(u32, u64)>,
    /// A chunk the thread's queue had no room for, sent first next turn.
    held: Option<Vec<u8>>,
    /// The walk is done and `Commit` is queued: waiting for the thread.
    committed: bool,
}

pub(super) struct Compaction {
    thread: Compactor,
    dir: PathBuf,
    /// The size of the last compaction's output: the next waits until the
    /// sealed segments are twice that (see [`segments::worth_compacting`]).
    last_output: u64,
    running: Option<Running>,
    /// A segment was sealed while a compaction ran: look again when it
    /// ends, or a burst that stops right then leaves its tail uncompacted
    /// until the next seal, which may never come.
    recheck: bool,
}

/// What [`Compaction::step`] needs of the loop next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Nothing: no compaction is being fed.
    Idle,
    /// More to encode: take the next turn at once.
    More,
    /// The thread's queue is full: come back soon.
    Wait,
}

impl Compaction {
    /// Starts the compaction thread for the log in `dir`; it wakes the
    /// loop through `waker` when a compaction ends.
    pub fn start(dir: &Path, waker: Option<Arc<Waker>>) -> io::Result<Compaction> {
        Ok(Compaction {
            thread: Compactor::start(dir.to_path_buf(), waker)?,
            dir: dir.to_path_buf(),
            last_output: segments::last_output_at_start(dir),
            running: None,
            recheck: false,
        })
    }

    /// Starts a compaction of every sealed segment if it is worth it and
    /// none is running. `store` and `vv` must be whole (not a store being
    /// built) and reflect every sealed segment. Returns whether one began.
    pub fn maybe_start(&mut self, store: &Store, vv: &VersionVector) -> bool {
        self.collect();
        if self.running.is_some() {
            self.recheck = true;
            return false;
        }
        self.recheck = false;
        if self.thread.is_dead() {
            return false;
        }
        let segs = match segments::sealed(&self.dir) {
            Ok(segs) => segs,
            Err(e) => {
                log::warn!("cannot list segments: {e}");
                return false;
            }
        };
        let Some(&(upto, _)) = segs.last() else {
            return false;
        };
        let sealed = segments::sealed_bytes(&segs);
        if !segments::worth_compacting(sealed, self.last_output, store.log_bytes()) {
            return false;
        }
        if self.thread.send(Job::Begin { upto }).is_err() {
            return false; // a full queue (never, with none running): at the next seal
        }
        self.running = Some(Running {
            walk: store.walk(),
            vector: vv.to_vec(),
            above: vv.above(),
            held: None,
            committed: false,
        });
        true
    }

    /// A segment was sealed while the last compaction ran, and it has
    /// ended: [`Compaction::maybe_start`] should look again. Takes in a
    /// finished compaction's outcome first.
    pub fn recheck_due(&mut self) -> bool {
        self.collect();
        self.recheck && self.running.is_none()
    }

    /// A compaction is being fed or finished by the thread.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Encodes and hands over the next chunk of the walk over `store` (the
    /// store [`Compaction::maybe_start`] was given).
    pub fn step(&mut self, store: &Store) -> Next {
        self.collect();
        let Some(run) = &mut self.running else {
            return Next::Idle;
        };
        if run.committed {
            return Next::Idle; // the thread reports back; nothing to feed
        }
        let (chunk, last) = match run.held.take() {
            Some(chunk) => {
                let last = chunk.len() < segments::CHUNK_BYTES;
                (chunk, last)
            }
            None => {
                let mut chunk = self.thread.buffer();
                let last = segments::encode_live(store, &mut run.walk, &mut chunk);
                (chunk, last)
            }
        };
        if !chunk.is_empty() {
            if let Err(Job::Chunk(chunk)) = self.thread.send(Job::Chunk(chunk)) {
                run.held = Some(chunk);
                return Next::Wait;
            }
        }
        if !last {
            return Next::More;
        }
        let vector = std::mem::take(&mut run.vector);
        let above = std::mem::take(&mut run.above);
        match self.thread.send(Job::Commit { vector, above }) {
            Ok(()) => {
                run.committed = true;
                Next::Idle
            }
            Err(Job::Commit { vector, above }) => {
                run.vector = vector;
                run.above = above;
                run.held = Some(Vec::new()); // empty: retry the commit
                Next::Wait
            }
            Err(_) => Next::Wait,
        }
    }

    /// Takes in a finished compaction's outcome.
    fn collect(&mut self) {
        while let Some(outcome) = self.thread.finished() {
            if let Some(size) = outcome {
                self.last_output = size;
            }
            self.running = None;
        }
        if self.running.is_some() && self.thread.is_dead() {
            // Nothing will finish it; the log grows uncompacted.
            log::error!("the compaction thread is gone; the log is no longer compacted");
            self.running = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{encode_record, LogWriter};
    use crate::msg::RecordRef;
    use crate::segments::testing::{rebuild, tmpdir};
    use crate::segments::{sealed, Roller, ACTIVE};
    use std::fs;
    use std::time::{Duration, Instant};

    /// What replaying `dir` gives: store digest, length, vector, records
    /// waiting above a gap.
    fn replayed(dir: &Path) -> ([u8; 16], usize, Vector, usize) {
        let (store, vv) = rebuild(dir);
        (store.digest(), store.len(), vv.to_vec(), vv.pending_above())
    }

    /// A worker's side of the log, as the loop keeps it: every record is
    /// applied, observed and appended.
    struct Node {
        roller: Roller,
        log: LogWriter,
        store: Store,
        vv: VersionVector,
        seq: u64,
    }

    impl Node {
        fn new(dir: &Path) -> Node {
            Node {
                roller: Roller::open(dir).unwrap(),
                log: LogWriter::open(&dir.join(ACTIVE)).unwrap(),
                store: Store::new(),
                vv: VersionVector::new(),
                seq: 0,
            }
        }

        fn put(&mut self, origin: u32, seq: u64, id: u64, content: &[u8]) {
            let r = RecordRef {
                origin,
                seq,
                version: self.seq + 1,
                id,
                content,
            };
            self.seq += 1;
            self.store.apply(&r);
            self.vv.observe(origin, seq);
            self.log.append_record(&r);
        }

        fn roll(&mut self) {
            self.roller.roll(&mut self.log).unwrap();
        }
    }

    /// Runs `c`'s compaction to the end, calling `between` after each step.
    fn finish(c: &mut Compaction, node: &mut Node, mut between: impl FnMut(&mut Node)) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.running.is_some() {
            assert!(Instant::now() < deadline, "the compaction never finished");
            if c.step(&node.store) == Next::Idle {
                std::thread::yield_now();
            }
            between(node);
        }
    }

    #[test]
    fn a_compaction_from_the_store_replays_to_the_same_store_and_vector() {
        let dir = tmpdir("from-store");
        let mut node = Node::new(&dir);
        let mut c = Compaction::start(&dir, None).unwrap();
        // 40,000 writes over 2,000 ids (long contents too), five segments.
        let long = vec![7u8; 300];
        for i in 0..40_000u64 {
            let content: &[u8] = if i % 7 == 0 { &long } else { &i.to_be_bytes() };
            node.put(1 + (i % 3) as u32, 1 + i / 3, i % 2_000, content);
            if i % 8_000 == 7_999 {
                node.roll();
            }
        }
        node.log.flush().unwrap();
        let before = replayed(&dir);
        let bytes_before = segments::sealed_bytes(&sealed(&dir).unwrap());
        assert!(c.maybe_start(&node.store, &node.vv), "overwrites: worth it");
        // Meanwhile the loop goes on: overwrites (some ahead of the walk,
        // some behind it) and new ids, and a segment seals mid-way.
        let mut n = 40_000u64;
        finish(&mut c, &mut node, |node| {
            for _ in 0..50 {
                node.put(1 + (n % 3) as u32, 1 + n / 3, n % 2_500, &n.to_le_bytes());
                n += 1;
            }
            if n == 40_500 {
                node.roll();
            }
            node.log.flush().unwrap();
        });
        assert!(n > 40_000, "the loop wrote during the compaction");
        let after = replayed(&dir);
        assert_eq!(after.0, node.store.digest(), "the live store, replayed");
        assert_eq!(after.2, node.vv.to_vec());
        assert_eq!(after.3, 0);
        assert!(before.1 <= after.1);
        let segs = sealed(&dir).unwrap();
        assert!(segs.len() <= 2, "older segments deleted: {segs:?}");
        assert!(segments::sealed_bytes(&segs) * 3 < bytes_before);
        assert!(c.last_output > 0);
        // Not worth it again until the sealed data doubles.
        assert!(!c.maybe_start(&node.store, &node.vv));
        drop(c);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn segments_sealed_during_a_compaction_are_compacted_when_it_ends() {
        let dir = tmpdir("recheck");
        let mut node = Node::new(&dir);
        let mut c = Compaction::start(&dir, None).unwrap();
        let write = |node: &mut Node, from: u64, to: u64, c: &mut Compaction| {
            for i in from..to {
                node.put(1, i + 1, i % 100, &[i as u8; 32]);
                if i % 5_000 == 4_999 {
                    node.roll();
                    c.maybe_start(&node.store, &node.vv);
                }
            }
            node.log.flush().unwrap();
        };
        write(&mut node, 0, 10_000, &mut c);
        assert!(c.is_running(), "overwrites: worth it");
        // The load goes on and seals two more segments while the thread
        // has not been fed: neither starts a compaction of its own.
        write(&mut node, 10_000, 20_000, &mut c);
        assert!(!c.recheck_due(), "one is still running");
        finish(&mut c, &mut node, |_| {});
        // Its output (in place of segment 1), segment 2 (sealed at its
        // start) and the two sealed since.
        assert_eq!(sealed(&dir).unwrap().len(), 4);
        // No further seal comes (the load stopped): the end of the
        // compaction is what makes the loop look again.
        assert!(c.recheck_due());
        assert!(c.maybe_start(&node.store, &node.vv));
        assert!(!c.recheck_due());
        finish(&mut c, &mut node, |_| {});
        assert!(!c.recheck_due(), "nothing sealed during the second");
        assert_eq!(sealed(&dir).unwrap().len(), 1);
        assert_eq!(replayed(&dir).0, node.store.digest());
        drop(c);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn records_waiting_above_a_gap_keep_their_place_in_the_vector() {
        let dir = tmpdir("above-gap");
        let mut node = Node::new(&dir);
        let mut c = Compaction::start(&dir, None).unwrap();
        // Origin 1's seq 101 has not arrived; everything above it waits,
        // and most of those records are overwritten (10 ids), so the
        // store no longer holds them.
        for i in 0..5_000u64 {
            if i == 100 {
                continue;
            }
            node.put(1, i + 1, i % 10, b"x");
            if i % 1_000 == 999 {
                node.roll();
            }
        }
        node.log.flush().unwrap();
        assert_eq!(node.vv.pending_above(), 4_899);
        assert!(c.maybe_start(&node.store, &node.vv));
        finish(&mut c, &mut node, |_| {});
        let after = replayed(&dir);
        assert_eq!(after.0, node.store.digest());
        assert_eq!(after.2, node.vv.to_vec());
        assert_eq!(after.3, 4_899, "the waiting records, replayed");
        assert!(segments::sealed_bytes(&sealed(&dir).unwrap()) < 100_000);
        // The gap fills: the vector jumps over everything that waited,
        // in memory and on replay alike.
        node.put(1, 101, 3, b"late");
        node.log.flush().unwrap();
        assert_eq!(node.vv.to_vec(), vec![(1, 5_000)]);
        let after = replayed(&dir);
        assert_eq!(after.2, vec![(1, 5_000)]);
        assert_eq!(after.3, 0);
        assert_eq!(after.0, node.store.digest());
        drop(c);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_compaction_stopped_midway_leaves_the_log_as_it_was() {
        let dir = tmpdir("stopped");
        let mut node = Node::new(&dir);
        let mut c = Compaction::start(&dir, None).unwrap();
        for i in 0..200_000u64 {
            node.put(1, i + 1, i % 100, &[1; 32]);
            if i % 50_000 == 49_999 {
                node.roll();
            }
        }
        node.log.flush().unwrap();
        let before = replayed(&dir);
        assert!(c.maybe_start(&node.store, &node.vv));
        assert_eq!(c.step(&node.store), Next::Idle, "100 ids: one chunk");
        // The worker stops before the thread commits, or after: either
        // way the replay is the same.
        drop(c);
        assert_eq!(replayed(&dir), before);
        // Stopped after the chunks but before the commit: the temp file
        // goes with the thread.
        let mut c = Compaction::start(&dir, None).unwrap();
        c.last_output = 0;
        for i in 200_000..210_000u64 {
            node.put(1, i + 1, i % 100, &[2; 32]);
        }
        node.roll();
        node.log.flush().unwrap();
        assert!(c.maybe_start(&node.store, &node.vv));
        let run = c.running.as_mut().unwrap();
        let mut chunk = Vec::new();
        while let Some(r) = node.store.next_in(&mut run.walk) {
            encode_record(&mut chunk, &r);
        }
        assert!(c.thread.send(Job::Chunk(chunk)).is_ok());
        drop(c);
        assert!(!dir.join("compacting.tmp").exists());
        assert_eq!(replayed(&dir).0, node.store.digest());
        fs::remove_dir_all(&dir).unwrap();
    }
}
