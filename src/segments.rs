//! A worker's log as segments, and their compaction off the event loop.
//!
//! Files in the data directory, oldest first:
//! - `sealed-NNNNNNNN.log`: full segments, never written again;
//! - `records.log`: the segment being appended to.
//!
//! The loop appends to `records.log`; once it passes `--segment-bytes` the
//! loop renames it to the next `sealed-N.log` and starts a new one (two
//! cheap metadata calls, no fsync: the fsync thread makes the old segment and
//! the directory durable, in order, before anything later is promised).
//!
//! Compaction replaces every sealed segment by one holding the live set,
//! written from the worker's store, not re-read from the log (see
//! `worker/compaction.rs` for the loop's side and why that replays to the
//! same state), followed by the records that waited above a gap and the
//! vector the store reflected. The loop
//! encodes the records; the compaction thread ([`Compactor`], fed over
//! an SPSC ring) writes a temp file, fsyncs it, renames it over the newest
//! sealed segment, fsyncs the directory, and only then deletes the older
//! ones ([`Rewrite`]): a crash at any point leaves a set of files whose
//! replay gives the same store (records are idempotent), never less. It
//! runs when sealed data has grown to twice the last compacted size, so
//! total rewriting stays proportional to what is written (geometric), and
//! when at least half of the sealed bytes are sure to go
//! ([`worth_compacting`], given the log bytes the live set takes). So the
//! sealed segments stay below about twice the larger of the live set and
//! the last output, plus one segment and what is sealed while a compaction
//! runs (one at a time: a roll meanwhile has the loop look again when it
//! ends), and a
//! log whose records are all still live (no overwrites) is never
//! rewritten for nothing.
//!
//! Replay reads every segment in order; the first torn or corrupt entry ends
//! the log: that segment is truncated there and every later one removed, so
//! no vector entry written after lost records can claim them.

use crate::log::{replay, LogEntry, LogWriter, ReplayStats};
use crate::msg::Vector;
use crate::ringbuf::{channel, Consumer, Producer};
use crate::store::{Store, StoreWalk};
use mio::Waker;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// The segment being appended to.
pub const ACTIVE: &str = "records.log";
/// Default segment size.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

pub fn sealed_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("sealed-{n:08}.log"))
}

/// Sealed segments, oldest first.
pub fn sealed(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut v = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_prefix("sealed-")?.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        v.push((n, entry.path()));
    }
    v.sort();
    Ok(v)
}

/// Reads every segment in order into `apply`, changing nothing: a second
/// pass over a log [`replay_all`] has repaired yields the same entries.
/// An untrusted byte is an error: [`replay_all`] repaired these files, so
/// one means they changed underneath, and a store built from less than
/// the vector claims would never be repaired.
pub fn scan_all(files: &LogFiles, mut apply: impl FnMut(LogEntry<'_>)) -> io::Result<()> {
    for (file, len) in &files.0 {
        let stats = crate::log::scan_file(file, *len, &mut apply)?;
        if stats.truncated > 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the log changed while it was replayed: {} untrusted bytes after {} entries",
                    stats.truncated, stats.entries
                ),
            ));
        }
    }
    Ok(())
}

/// Every segment of a log, oldest first, opened with its length at that
/// moment: what [`scan_all`] reads, however the log is appended to,
/// rolled or compacted afterwards (an open file outlives its name).
pub struct LogFiles(Vec<(File, u64)>);

impl LogFiles {
    pub fn open(dir: &Path) -> io::Result<LogFiles> {
        let mut paths: Vec<PathBuf> = sealed(dir)?.into_iter().map(|(_, p)| p).collect();
        paths.push(dir.join(ACTIVE));
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            match File::open(&path) {
                Ok(f) => {
                    let len = f.metadata()?.len();
                    files.push((f, len));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(LogFiles(files))
    }
}

/// Replays every segment in order into `apply`.
pub fn replay_all(dir: &Path, mut apply: impl FnMut(LogEntry<'_>)) -> io::Result<ReplayStats> {
    let mut files: Vec<PathBuf> = sealed(dir)?.into_iter().map(|(_, p)| p).collect();
    files.push(dir.join(ACTIVE));
    let mut total = ReplayStats::default();
    for (i, path) in files.iter().enumerate() {
        let stats = replay(path, &mut apply)?;
        total.entries += stats.entries;
        total.truncated += stats.truncated;
        if stats.truncated > 0 {
            // Nothing after an untrusted byte counts, in any later segment.
            for later in &files[i + 1..] {
                if let Ok(meta) = fs::metadata(later) {
                    total.truncated += meta.len();
                    match later.file_name().and_then(|n| n.to_str()) {
                        Some(ACTIVE) => File::create(later)?.sync_all()?,
                        _ => fs::remove_file(later)?,
                    }
                }
            }
            sync_dir(dir)?;
            break;
        }
    }
    Ok(total)
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Numbers the sealed segments of the log in `dir`: one above the highest
/// when the process starts, then one more at each roll.
///
/// Kept in memory rather than read from a directory listing at each roll:
/// the compaction thread renames its output over the newest sealed
/// segment while the loop rolls, and `readdir` need not return a name
/// that is replaced meanwhile. A listing that missed it would number the
/// next segment the same and rename the active one over the compaction's
/// output, the whole live set. Compaction never creates a number above
/// the ones it replaces, so the counter stays ahead of every file.
pub struct Roller {
    dir: PathBuf,
    next: u64,
}

impl Roller {
    /// Takes the numbering up from `dir`'s sealed segments; must run
    /// before a compaction can.
    pub fn open(dir: &Path) -> io::Result<Roller> {
        let next = sealed(dir)?.last().map_or(1, |(n, _)| n + 1);
        Ok(Roller {
            dir: dir.to_path_buf(),
            next,
        })
    }

    /// Seals `records.log` as the next sealed segment and starts a new
    /// one. Returns the old file (for the fsync thread).
    pub fn roll(&mut self, log: &mut LogWriter) -> io::Result<File> {
        log.flush()?;
        fs::rename(self.dir.join(ACTIVE), sealed_path(&self.dir, self.next))?;
        self.next += 1;
        log.reopen(&self.dir.join(ACTIVE))
    }
}

/// Size of the whole log (sealed segments and the active one), in bytes;
/// 0 if it cannot be read.
pub fn log_bytes(dir: &Path) -> u64 {
    let active = fs::metadata(dir.join(ACTIVE)).map_or(0, |m| m.len());
    active + sealed(dir).map_or(0, |s| sealed_bytes(&s))
}

/// Size of the sealed segments, in bytes.
pub fn sealed_bytes(segs: &[(u64, PathBuf)]) -> u64 {
    segment_sizes(segs).sum()
}

/// The size of each segment that can be read.
fn segment_sizes(segs: &[(u64, PathBuf)]) -> impl Iterator<Item = u64> + '_ {
    segs.iter()
        .filter_map(|(_, p)| fs::metadata(p).ok())
        .map(|m| m.len())
}

/// Where a compaction writes its output until it is complete.
const TEMP: &str = "compacting.tmp";

/// The file side of one compaction: the live set, written by the loop
/// in chunks of encoded log entries ([`crate::log::encode_record`]),
/// becomes the segment `upto`, and every older sealed segment goes.
pub struct Rewrite {
    dir: PathBuf,
    upto: u64,
    out: File,
    bytes: u64,
}

impl Rewrite {
    /// Starts writing the replacement of every sealed segment up to `upto`
    /// (a stale temp file of an interrupted compaction is discarded).
    pub fn begin(dir: &Path, upto: u64) -> io::Result<Rewrite> {
        let path = dir.join(TEMP);
        let out = File::create(&path)?;
        Ok(Rewrite {
            dir: dir.to_path_buf(),
            upto,
            out,
            bytes: 0,
        })
    }

    /// Appends encoded entries.
    pub fn write(&mut self, entries: &[u8]) -> io::Result<()> {
        self.out.write_all(entries)?;
        self.bytes += entries.len() as u64;
        Ok(())
    }

    /// Appends `above` and `vector` (what the live set reflects: the
    /// records applied above a gap, whose own entries may be gone, and the
    /// contiguous vector), makes the file durable, puts it in place of
    /// segment `upto` and deletes the older sealed segments. Returns the
    /// output's size. A crash at any point leaves a log whose replay gives
    /// the same store and vector: before the rename the temp file is
    /// ignored; after it, older segments still present replay to records
    /// the output's already dominate.
    pub fn commit(mut self, vector: &[(u32, u64)], above: &[(u32, u64)]) -> io::Result<u64> {
        let mut tail = Vec::new();
        crate::log::encode_above(&mut tail, above);
        crate::log::encode_vector(&mut tail, vector);
        self.write(&tail)?;
        self.out.sync_all()?;
        // The output may hold records newer than `vector`, applied while
        // the loop walked its store: they were written to the active
        // segment (or one sealed since `upto`) before the loop sent the
        // commit, but maybe not synced. Sync them first, so that after a
        // machine crash the output never holds a record whose
        // predecessors in its origin's sequence were lost. The active
        // segment is opened before the listing: a roll in between makes
        // it a sealed segment the listing then also names.
        let active = match File::open(self.dir.join(ACTIVE)) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if let Some(f) = active {
            f.sync_data()?;
        }
        for (n, path) in sealed(&self.dir)? {
            if n > self.upto {
                File::open(path)?.sync_data()?;
            }
        }
        fs::rename(self.dir.join(TEMP), sealed_path(&self.dir, self.upto))?;
        sync_dir(&self.dir)?;
        for (n, path) in sealed(&self.dir)? {
            if n < self.upto {
                fs::remove_file(path)?;
            }
        }
        sync_dir(&self.dir)?;
        Ok(self.bytes)
    }
}

/// Work for the compaction thread, in order: one `Begin`, its chunks,
/// one `Commit`.
pub enum Job {
    Begin {
        upto: u64,
    },
    Chunk(Vec<u8>),
    /// `above`: [`VersionVector::above`](crate::vector::VersionVector::above)
    /// when the walk began, sorted by origin.
    Commit {
        vector: Vector,
        above: Vec<(u32, u64)>,
    },
}

/// What a process starting on an existing log takes for the last
/// compaction's output: its largest sealed segment (an earlier
/// compaction's output, or one plain segment). Counting from 0, every
/// restart rewrote the whole sealed log at once, while the store was being
/// rebuilt from it (under chaos's kill every 2 s, a third of the VM's CPU).
pub fn last_output_at_start(dir: &Path) -> u64 {
    sealed(dir)
        .ok()
        .and_then(|segs| segment_sizes(&segs).max())
        .unwrap_or(0)
}

/// Whether to compact `sealed` bytes of sealed segments, given the last
/// compaction's output and the bytes the live set takes in log format:
/// when the sealed data has doubled since the last output, and at least
/// half of it is sure to go. The live set may sit anywhere in the log, so
/// `sealed - live` is the least the sealed segments can be holding in
/// overwritten records: this waits until the sealed data is twice the
/// live set, whatever the active segment holds.
pub fn worth_compacting(sealed: u64, last_output: u64, live: u64) -> bool {
    sealed >= last_output.saturating_mul(2) && sealed.saturating_sub(live) >= sealed / 2
}

/// Jobs in flight between the loop and the compaction thread: at
/// [`CHUNK_BYTES`] each, a few megabytes.
const JOBS: usize = 16;
/// How much encoded live set the loop hands over at a time.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Emptied chunk buffers kept for reuse.
const SPARE_BUFFERS: usize = 3;

/// Appends the next records of `walk` over `store` to `chunk` as log
/// entries, until it holds [`CHUNK_BYTES`] or the walk ends. Returns
/// whether the walk ended: a compaction's output is these chunks, in
/// order, then [`Rewrite::commit`].
pub fn encode_live(store: &Store, walk: &mut StoreWalk, chunk: &mut Vec<u8>) -> bool {
    while chunk.len() < CHUNK_BYTES {
        match store.next_in(walk) {
            Some(r) => crate::log::encode_record(chunk, &r),
            None => return true,
        }
    }
    false
}

/// The compaction thread: writes what the loop sends, syncs, renames and
/// deletes, so that no write or sync of a compaction runs on the loop
/// (the loop lists the segments to decide). Chunks come back emptied
/// through `spare`, a few of them, so the loop reuses their buffers.
pub struct Compactor {
    jobs: Producer<Job>,
    /// Output sizes of finished compactions (`None`: one failed).
    done: Consumer<Option<u64>>,
    spare: Consumer<Vec<u8>>,
    thread: Option<JoinHandle<()>>,
}

impl Compactor {
    /// Starts the thread for the log in `dir`. It wakes the loop through
    /// `waker`, if given, each time a compaction ends.
    pub fn start(dir: PathBuf, waker: Option<Arc<Waker>>) -> io::Result<Compactor> {
        let (jobs, mut inbox) = channel::<Job>(JOBS);
        let (mut done_tx, done) = channel::<Option<u64>>(4);
        // A few buffers come back; the rest are freed, so a worker keeps
        // about a megabyte for this, not JOBS chunks, between compactions.
        let (mut spare_tx, spare) = channel::<Vec<u8>>(SPARE_BUFFERS);
        // An interrupted compaction's output (a kill -9): never replayed,
        // and as large as the live set.
        let _ = fs::remove_file(dir.join(TEMP));
        let thread = thread::Builder::new()
            .name("rrstore-compact".into())
            .spawn(move || {
                crate::background_priority();
                let mut current: Option<io::Result<Rewrite>> = None;
                loop {
                    let Some(job) = inbox.pop() else {
                        if inbox.is_abandoned() {
                            // Stopped mid-way: replay ignores the temp
                            // file; it goes so as not to take the room.
                            if current.is_some() {
                                let _ = fs::remove_file(dir.join(TEMP));
                            }
                            return;
                        }
                        thread::park_timeout(Duration::from_millis(100));
                        continue;
                    };
                    match job {
                        Job::Begin { upto } => current = Some(Rewrite::begin(&dir, upto)),
                        Job::Chunk(mut chunk) => {
                            if let Some(Ok(r)) = &mut current {
                                if let Err(e) = r.write(&chunk) {
                                    current = Some(Err(e));
                                }
                            }
                            chunk.clear();
                            let _ = spare_tx.push(chunk);
                        }
                        Job::Commit { vector, above } => {
                            let result = match current.take() {
                                Some(Ok(r)) => r.commit(&vector, &above),
                                Some(Err(e)) => Err(e),
                                None => Err(io::Error::other("commit without begin")),
                            };
                            let size = match result {
                                Ok(size) => Some(size),
                                Err(e) => {
                                    log::warn!("compaction failed: {e}");
                                    let _ = fs::remove_file(dir.join(TEMP));
                                    None
                                }
                            };
                            let _ = done_tx.push(size);
                            if let Some(w) = &waker {
                                let _ = w.wake();
                            }
                        }
                    }
                }
            })?;
        Ok(Compactor {
            jobs,
            done,
            spare,
            thread: Some(thread),
        })
    }

    /// Queues `job`; gives it back if the queue is full.
    pub fn send(&mut self, job: Job) -> Result<(), Job> {
        self.jobs.push(job)?;
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
        Ok(())
    }

    /// The outcome of a finished compaction, if one finished: its output
    /// size, or `None` if it failed.
    pub fn finished(&mut self) -> Option<Option<u64>> {
        self.done.pop()
    }

    /// The thread is gone (it panicked): no compaction will finish.
    pub fn is_dead(&self) -> bool {
        self.jobs.is_abandoned()
    }

    /// An empty buffer for the next chunk.
    pub fn buffer(&mut self) -> Vec<u8> {
        self.spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(CHUNK_BYTES + 64 * 1024))
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let (dead, _) = channel::<Job>(1);
            drop(std::mem::replace(&mut self.jobs, dead));
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Helpers for the tests of the log's segments and their compaction.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::vector::VersionVector;

    /// An empty directory of its own for test `name`.
    pub fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rrstore-seg-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// The store and vector a worker restarting on `dir` replays.
    pub fn rebuild(dir: &Path) -> (Store, VersionVector) {
        let mut store = Store::new();
        let mut vv = VersionVector::new();
        replay_all(dir, |e| {
            if let LogEntry::Record(r) = &e {
                store.apply(r);
            }
            e.note_in(&mut vv);
        })
        .unwrap();
        (store, vv)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{rebuild, tmpdir};
    use super::*;
    use crate::msg::RecordRef;
    use std::collections::HashSet;

    fn state(dir: &Path) -> ([u8; 16], Vec<(u32, u64)>, usize) {
        let (store, vv) = rebuild(dir);
        (store.digest(), vv.to_vec(), vv.pending_above())
    }

    /// Compacts every sealed segment of `dir` as a worker would: from the
    /// store and vector the whole log replays to.
    fn compact(dir: &Path) -> u64 {
        let (store, vv) = rebuild(dir);
        let upto = sealed(dir).unwrap().last().unwrap().0;
        let mut rewrite = Rewrite::begin(dir, upto).unwrap();
        let mut walk = store.walk();
        let mut chunk = Vec::new();
        loop {
            let done = encode_live(&store, &mut walk, &mut chunk);
            rewrite.write(&chunk).unwrap();
            chunk.clear();
            if done {
                break;
            }
        }
        rewrite.commit(&vv.to_vec(), &vv.above()).unwrap()
    }

    /// Overwrites of 50 ids from two origins across many segments, one
    /// origin with a gap (seq 900 missing) filled only in the active segment.
    fn write(dir: &Path) {
        let mut log = LogWriter::open(&dir.join(ACTIVE)).unwrap();
        let mut roller = Roller::open(dir).unwrap();
        let mut seq = [0u64; 3];
        for i in 0..2_000u64 {
            let origin = 1 + (i % 2) as u32;
            seq[origin as usize] += 1;
            let s = seq[origin as usize];
            if origin == 2 && s == 900 {
                continue; // the gap
            }
            let content = i.to_be_bytes();
            log.append_record(&RecordRef {
                origin,
                seq: s,
                version: i + 1,
                id: i % 50,
                content: &content,
            });
            if i % 100 == 99 {
                roller.roll(&mut log).unwrap();
            }
        }
        log.append_record(&RecordRef {
            origin: 2,
            seq: 900,
            version: 1,
            id: 7,
            content: b"late",
        });
        log.flush().unwrap();
    }

    #[test]
    fn rolls_number_on_from_the_highest_segment_at_open_whatever_a_listing_shows() {
        let dir = tmpdir("roller");
        for n in [2, 5] {
            fs::write(sealed_path(&dir, n), b"").unwrap();
        }
        let mut log = LogWriter::open(&dir.join(ACTIVE)).unwrap();
        let mut roller = Roller::open(&dir).unwrap();
        roller.roll(&mut log).unwrap();
        roller.roll(&mut log).unwrap();
        let numbers =
            |dir: &Path| -> Vec<u64> { sealed(dir).unwrap().iter().map(|s| s.0).collect() };
        assert_eq!(numbers(&dir), vec![2, 5, 6, 7]);
        // Whatever the directory shows meanwhile (a compaction replaced
        // and deleted segments; a listing may even miss a name being
        // replaced), the next roll never reuses a number.
        for n in [2, 5, 6, 7] {
            fs::remove_file(sealed_path(&dir, n)).unwrap();
        }
        roller.roll(&mut log).unwrap();
        assert_eq!(numbers(&dir), vec![8]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn compaction_waits_for_doubled_sealed_data_of_which_half_would_go() {
        const MB: u64 = 1 << 20;
        // Overwrites: 256 MB sealed for a 10 MB live set.
        assert!(worth_compacting(256 * MB, 100 * MB, 10 * MB));
        // ... but not before the sealed data has doubled since last time.
        assert!(!worth_compacting(256 * MB, 200 * MB, 10 * MB));
        // Every record still live (unique ids): nothing to gain.
        assert!(!worth_compacting(256 * MB, 64 * MB, 262 * MB));
        // Just under and just at half of the sealed bytes sure to go.
        assert!(!worth_compacting(200 * MB, 64 * MB, 101 * MB));
        assert!(worth_compacting(200 * MB, 64 * MB, 100 * MB));
        // The first compaction (no output yet) follows the same rule.
        assert!(worth_compacting(128 * MB, 0, 0));
    }

    #[test]
    fn a_restart_counts_its_largest_sealed_segment_as_the_last_output() {
        let dir = tmpdir("start");
        assert_eq!(last_output_at_start(&dir), 0);
        write(&dir);
        let output = compact(&dir);
        assert_eq!(output, sealed_bytes(&sealed(&dir).unwrap()));
        // Then one plain segment more: not yet double the output.
        fs::write(sealed_path(&dir, 10_000), b"later").unwrap();
        let now = sealed(&dir).unwrap();
        assert_eq!(now.len(), 2);
        assert_eq!(last_output_at_start(&dir), output);
        assert!(sealed_bytes(&now) < 2 * last_output_at_start(&dir));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn compaction_keeps_the_replayed_state_and_shrinks_the_log() {
        let dir = tmpdir("compact");
        write(&dir);
        let before = state(&dir);
        let segs = sealed(&dir).unwrap();
        assert!(segs.len() >= 10);
        let bytes_before = sealed_bytes(&segs);
        compact(&dir);
        let after_segs = sealed(&dir).unwrap();
        assert_eq!(after_segs.len(), 1);
        assert!(sealed_bytes(&after_segs) * 5 < bytes_before);
        assert_eq!(state(&dir), before, "same store, vector and gaps");
        assert_eq!(before.2, 0, "the late record filled the gap");
        // Compacting the compacted output (with more sealed data) is stable.
        compact(&dir);
        assert_eq!(state(&dir), before);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_crash_between_rename_and_deletes_replays_the_same() {
        let dir = tmpdir("crash");
        write(&dir);
        let before = state(&dir);
        let segs = sealed(&dir).unwrap();
        // Keep copies of the older segments, compact, put them back: the
        // state a crash before the deletes would leave.
        let copies: Vec<(PathBuf, Vec<u8>)> = segs[..segs.len() - 1]
            .iter()
            .map(|(_, p)| (p.clone(), fs::read(p).unwrap()))
            .collect();
        compact(&dir);
        for (p, bytes) in copies {
            fs::write(p, bytes).unwrap();
        }
        assert_eq!(state(&dir), before);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corruption_in_a_sealed_segment_ends_the_log_there() {
        let dir = tmpdir("corrupt");
        write(&dir);
        let segs = sealed(&dir).unwrap();
        let victim = &segs[3].1;
        let mut bytes = fs::read(victim).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        fs::write(victim, bytes).unwrap();
        let (_, vector, _) = state(&dir);
        // Only records before the corruption remain; later segments are gone.
        assert_eq!(sealed(&dir).unwrap().len(), 4);
        assert_eq!(fs::metadata(dir.join(ACTIVE)).unwrap().len(), 0);
        assert!(vector.iter().all(|&(_, s)| s < 300), "{vector:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_thousand_random_truncations_and_bit_flips_never_yield_a_record_not_written() {
        let dir = tmpdir("flips");
        write(&dir);
        let mut written = HashSet::new();
        replay_all(&dir, |e| {
            if let LogEntry::Record(r) = e {
                written.insert((r.origin, r.seq, r.version, r.id, r.content.to_vec()));
            }
        })
        .unwrap();
        let files: Vec<(PathBuf, Vec<u8>)> = sealed(&dir)
            .unwrap()
            .into_iter()
            .map(|(_, p)| p)
            .chain([dir.join(ACTIVE)])
            .map(|p| {
                let bytes = fs::read(&p).unwrap();
                (p, bytes)
            })
            .collect();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        for _ in 0..1_000 {
            // Restore every file, then damage one: cut it, flip bits, or both.
            for (p, bytes) in &files {
                fs::write(p, bytes).unwrap();
            }
            let (path, bytes) = &files[next(files.len())];
            let mut damaged = bytes.clone();
            if damaged.is_empty() {
                continue;
            }
            match next(3) {
                0 => damaged.truncate(next(damaged.len())),
                1 => {
                    for _ in 0..1 + next(3) {
                        let i = next(damaged.len());
                        damaged[i] ^= 1 << next(8);
                    }
                }
                _ => {
                    let i = next(damaged.len());
                    damaged[i] ^= 1 << next(8);
                    damaged.truncate(i + next(damaged.len() - i) + 1);
                }
            }
            fs::write(path, &damaged).unwrap();
            replay_all(&dir, |e| {
                if let LogEntry::Record(r) = e {
                    let rec = (r.origin, r.seq, r.version, r.id, r.content.to_vec());
                    assert!(
                        written.contains(&rec),
                        "replayed a record never written: {rec:?}"
                    );
                }
            })
            .unwrap();
            // Later segments may have been removed by the replay: recreate
            // them from the copies on the next iteration.
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
