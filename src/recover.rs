//! Rebuilding a worker's store and version vector from its data dir at
//! start-up, before its event loop runs.
//!
//! Two passes when there are several cores:
//! 1. [`segments::replay_all`] on this thread: checks every CRC, truncates
//!    an untrusted tail, builds the version vector and counts the entries.
//!    It does not touch the store, so it runs at the speed of reading.
//! 2. [`Store::apply_sharded`]: one thread per shard re-reads the repaired
//!    log ([`segments::scan_all`], read-only, up to the lengths pass 1
//!    left) and builds its shard in bulk (records laid out, then indexed
//!    in bucket order, a chunk at a time: see `Shard::index_pending` in
//!    [`crate::store`]), into a store sized from pass 1's count.
//!    [`recover_in_background`] returns after pass 1 with pass 2 still
//!    running ([`Building`]): the worker registers and catches up
//!    meanwhile, into a second store it merges in at the end.
//!
//! Building is what costs (the index, and writing 82 bytes or more per
//! record into fresh memory); reading twice costs one more sequential read
//! of files the first pass just brought into the page cache. With one
//! core, one pass does everything, with the same bulk build.
//!
//! Invariant: the result is the same store and vector whatever the thread
//! count, because applying records is a join (see [`crate::store`]).

use crate::log::{LogEntry, ReplayStats};
use crate::segments;
use crate::store::Store;
use crate::vector::VersionVector;
use std::io;
use std::path::Path;
use std::time::Instant;

/// The most threads a replay uses (and so the store's shard count).
pub const MAX_THREADS: usize = 4;

/// The shard count for this machine: its cores, at most [`MAX_THREADS`].
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_THREADS)
}

/// Replays the log in `dir` (repairing it) with `threads` threads.
pub fn recover(dir: &Path, threads: usize) -> io::Result<(Store, VersionVector, ReplayStats)> {
    let r = recover_in_background(dir, threads)?;
    let store = match r.building {
        Some(b) => b.join()?,
        None => r.store,
    };
    Ok((store, r.vv, r.stats))
}

/// What the first pass gives at once: the vector, and the store if it is
/// already built (one thread, or nothing to build); else the second pass
/// still building it.
pub struct Recovered {
    pub vv: VersionVector,
    pub stats: ReplayStats,
    /// The highest version in the log: what REGISTER needs, known before
    /// the store is.
    pub max_version: u64,
    /// Complete unless `building` is `Some`; then empty.
    pub store: Store,
    pub building: Option<Building>,
}

/// The second pass, running on its own threads: the worker registers and
/// catches up meanwhile (see `worker.rs`), so replaying a large log does
/// not keep it out of the cluster for the whole rebuild.
pub struct Building {
    thread: std::thread::JoinHandle<io::Result<Store>>,
}

impl Building {
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// The store of every record in the log as it was after the first pass.
    pub fn join(self) -> io::Result<Store> {
        self.thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

/// Runs the first pass here and starts the second on other threads.
pub fn recover_in_background(dir: &Path, threads: usize) -> io::Result<Recovered> {
    let started = Instant::now();
    let mut vv = VersionVector::new();
    let mut max_version = 0;
    if threads <= 1 {
        // A record takes at least 37 bytes of log; most take more. Room
        // for overwritten ones is given back after the build.
        let estimate = usize::try_from(segments::log_bytes(dir) / 64).unwrap_or(0);
        let mut store = Store::with_capacity(estimate);
        let mut stats = ReplayStats::default();
        store.build(|apply| {
            stats = segments::replay_all(dir, |entry| {
                if let LogEntry::Record(r) = &entry {
                    apply(r);
                }
                entry.note_in(&mut vv);
            })?;
            Ok::<(), io::Error>(())
        })?;
        return Ok(Recovered {
            vv,
            stats,
            max_version: store.max_version(),
            store,
            building: None,
        });
    }
    let stats = segments::replay_all(dir, |entry| {
        if let LogEntry::Record(r) = &entry {
            max_version = max_version.max(r.version);
        }
        entry.note_in(&mut vv);
    })?;
    let first_pass = started.elapsed();
    if stats.entries == 0 {
        return Ok(Recovered {
            vv,
            stats,
            max_version,
            store: Store::with_shards(threads, 0),
            building: None,
        });
    }
    // Opened now: the files as the first pass left them, whatever the
    // worker appends, rolls or compacts while the second pass reads.
    let files = segments::LogFiles::open(dir)?;
    let records = usize::try_from(stats.entries).unwrap_or(0);
    let thread = std::thread::Builder::new()
        .name("replay".into())
        .spawn(move || {
            let second = Instant::now();
            let mut store = Store::with_shards(threads, records);
            store.apply_sharded(|apply| {
                segments::scan_all(&files, |entry| {
                    if let LogEntry::Record(r) = entry {
                        apply(&r);
                    }
                })
            })?;
            log::info!(
                "replayed {records} log entries: checked and vector {} ms, then the store on {threads} threads {} ms",
                first_pass.as_millis(),
                second.elapsed().as_millis()
            );
            Ok(store)
        })?;
    Ok(Recovered {
        vv,
        stats,
        max_version,
        store: Store::new(),
        building: Some(Building { thread }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogWriter;
    use crate::msg::RecordRef;

    fn write_log(dir: &Path) {
        let mut w = LogWriter::open(&dir.join("records.log")).unwrap();
        for i in 0..3_000u64 {
            let content = i.to_be_bytes();
            w.append_record(&RecordRef {
                origin: (i % 3) as u32 + 1,
                seq: i / 3 + 1,
                version: i + 1,
                id: i % 1_000,
                content: &content[..(i % 8) as usize],
            });
        }
        w.append_vector(&[(7, 40)]);
        w.flush().unwrap();
    }

    #[test]
    fn every_thread_count_recovers_the_same_store() {
        let dir = std::env::temp_dir().join(format!("rrstore-recover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        write_log(&dir);
        // A torn tail: half an entry header.
        let mut bytes = std::fs::read(dir.join("records.log")).unwrap();
        bytes.extend_from_slice(&[0, 0, 0]);
        std::fs::write(dir.join("records.log"), &bytes).unwrap();

        let (one, one_vv, stats) = recover(&dir, 1).unwrap();
        assert_eq!(stats.truncated, 3, "the torn tail is cut");
        assert_eq!(one.len(), 1_000);
        for threads in [2, 3, 4] {
            let (many, vv, stats) = recover(&dir, threads).unwrap();
            assert_eq!(stats.truncated, 0, "already repaired");
            assert_eq!(many.digest(), one.digest(), "{threads} threads");
            assert_eq!(many.len(), one.len());
            assert_eq!(vv.to_vec(), one_vv.to_vec());
        }
        assert_eq!(one_vv.get(7), 40, "the vector entry is merged");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
