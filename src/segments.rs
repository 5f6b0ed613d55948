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
//! The compaction thread rewrites all sealed segments as one, keeping per
//! id only the record that wins last-writer-wins, plus any record above a
//! gap in its origin's sequence (so the replayed vector is exactly what it
//! was), followed by the vector those segments covered. It writes a temp
//! file, fsyncs it, renames it over the newest sealed segment, fsyncs the
//! directory, and only then deletes the older ones: a crash at any point
//! leaves a set of files whose replay gives the same store (records are
//! idempotent), never less. It runs when sealed data has grown to twice the
//! last compacted size, so total rewriting stays proportional to what is
//! written (geometric), and when at least half of the sealed bytes are sure
//! to go ([`worth_compacting`]: the loop tells the thread how much log its
//! live set takes). So the sealed segments stay below about twice the
//! larger of the live set and the last output, plus one segment (it needs
//! two to compact), and a log whose records are all still live (no
//! overwrites) is never rewritten for nothing. Records above a gap, which
//! compaction keeps, are not counted as live: while many wait, it may
//! rewrite for less gain. Until the loop has told it once (a restarted
//! worker tells it when its store is built), it waits.
//!
//! Replay reads every segment in order; the first torn or corrupt entry ends
//! the log: that segment is truncated there and every later one removed, so
//! no vector entry written after lost records can claim them.

use crate::log::{replay, LogEntry, LogWriter, ReplayStats};
use crate::ringbuf::{channel, Producer};
use crate::vector::VersionVector;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
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

/// Seals `records.log` as the next sealed segment and starts a new one.
/// Returns the old file (for the fsync thread).
pub fn roll(dir: &Path, log: &mut LogWriter) -> io::Result<File> {
    log.flush()?;
    let n = sealed(dir)?.last().map_or(1, |(n, _)| n + 1);
    fs::rename(dir.join(ACTIVE), sealed_path(dir, n))?;
    log.reopen(&dir.join(ACTIVE))
}

/// Which record of an id wins, while compacting: its content is not
/// kept, the second pass copies it from the log.
#[derive(Clone, Copy)]
struct Winner {
    version: u64,
    origin: u32,
    seq: u64,
    /// Already copied (a record can be in the log twice).
    written: bool,
}

/// Size of the whole log (sealed segments and the active one), in bytes;
/// 0 if it cannot be read.
pub fn log_bytes(dir: &Path) -> u64 {
    let active = fs::metadata(dir.join(ACTIVE)).map_or(0, |m| m.len());
    active + sealed(dir).map_or(0, |s| sealed_bytes(&s))
}

/// Size of the sealed segments, in bytes.
fn sealed_bytes(segs: &[(u64, PathBuf)]) -> u64 {
    segment_sizes(segs).sum()
}

/// The size of each segment that can be read.
fn segment_sizes(segs: &[(u64, PathBuf)]) -> impl Iterator<Item = u64> + '_ {
    segs.iter()
        .filter_map(|(_, p)| fs::metadata(p).ok())
        .map(|m| m.len())
}

/// Rewrites `segs` (sealed, oldest first, at least one) as one segment under
/// the newest one's number; returns its size.
pub fn compact(dir: &Path, segs: &[(u64, PathBuf)]) -> io::Result<u64> {
    let Some((last, _)) = segs.last() else {
        return Ok(0);
    };
    // Pass 1: which record of each id wins, and the vector these segments
    // give. A plain map with the store's last-writer-wins rule, holding no
    // contents: no digest and no copy is needed here.
    let mut live: HashMap<u64, Winner> = HashMap::new();
    let mut vv = VersionVector::new();
    let replay_segments = |apply: &mut dyn FnMut(LogEntry<'_>)| -> io::Result<()> {
        for (_, path) in segs {
            replay(path, &mut *apply)?;
        }
        Ok(())
    };
    replay_segments(&mut |e| match e {
        LogEntry::Record(r) => {
            let winner = Winner {
                version: r.version,
                origin: r.origin,
                seq: r.seq,
                written: false,
            };
            live.entry(r.id)
                .and_modify(|w| {
                    if (r.version, r.origin) > (w.version, w.origin) {
                        *w = winner;
                    }
                })
                .or_insert(winner);
            vv.observe(r.origin, r.seq);
        }
        LogEntry::Vector(v) => {
            vv.merge(&v);
        }
    })?;
    let tmp = dir.join("compacting.tmp");
    let _ = fs::remove_file(&tmp);
    let mut out = LogWriter::open(&tmp)?;
    // Pass 2: each winner, copied from where it sits in the log, and the
    // records above a gap even if overwritten, so the vector replays
    // exactly (a gap may be filled by a later segment).
    let mut kept_above = HashSet::new();
    let mut write_err = Ok(());
    replay_segments(&mut |e| {
        let LogEntry::Record(r) = e else { return };
        if write_err.is_err() {
            return;
        }
        let keep = match live.get_mut(&r.id) {
            Some(w) if (w.origin, w.seq) == (r.origin, r.seq) => {
                !std::mem::replace(&mut w.written, true)
            }
            _ => r.seq > vv.get(r.origin) && kept_above.insert((r.origin, r.seq)),
        };
        if keep {
            out.append_record(&r);
            if out.buffered() > 1 << 20 {
                if let Err(e) = out.flush() {
                    write_err = Err(e);
                }
            }
        }
    })?;
    write_err?;
    // Pass 2 read the same files as pass 1: every winner was found again.
    // Were one not (a file changed underneath), the output would lose it.
    if let Some((id, _)) = live.iter().find(|(_, w)| !w.written) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("compaction's second pass did not find the winner of id {id}"),
        ));
    }
    out.append_vector(&vv.to_vec());
    let size = out.flush()?;
    out.sync_handle()?.sync_all()?;
    drop(out);
    fs::rename(&tmp, sealed_path(dir, *last))?;
    sync_dir(dir)?;
    for (n, path) in segs {
        if n != last {
            fs::remove_file(path)?;
        }
    }
    sync_dir(dir)?;
    Ok(size)
}

/// What a process starting on an existing log takes for the last
/// compaction's output: its largest sealed segment (an earlier
/// compaction's output, or one plain segment). Counting from 0, every
/// restart rewrote the whole sealed log at once, while the store was being
/// rebuilt from it (under chaos's kill every 2 s, a third of the VM's CPU).
fn last_output_at_start(dir: &Path) -> u64 {
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

/// The compaction thread.
pub struct Compactor {
    live: Producer<u64>,
    thread: Option<JoinHandle<()>>,
}

impl Compactor {
    pub fn start(dir: PathBuf) -> io::Result<Compactor> {
        let (notify, mut inbox) = channel::<u64>(64);
        let thread = thread::Builder::new()
            .name("rrstore-compact".into())
            .spawn(move || {
                // What the last compaction produced: compact again once the
                // sealed data has doubled.
                let mut last_output = last_output_at_start(&dir);
                // The live set's size in log bytes, as the loop last said.
                let mut live = None;
                loop {
                    while let Some(bytes) = inbox.pop() {
                        live = Some(bytes);
                    }
                    if inbox.is_abandoned() {
                        return;
                    }
                    let Some(live) = live else {
                        thread::park_timeout(Duration::from_secs(1));
                        continue;
                    };
                    match sealed(&dir) {
                        Ok(segs)
                            if segs.len() >= 2
                                && worth_compacting(sealed_bytes(&segs), last_output, live) =>
                        {
                            match compact(&dir, &segs) {
                                Ok(size) => last_output = size,
                                Err(e) => log::warn!("compaction failed: {e}"),
                            }
                        }
                        Ok(_) => {}
                        Err(e) => log::warn!("cannot list segments: {e}"),
                    }
                    thread::park_timeout(Duration::from_secs(1));
                }
            })?;
        Ok(Compactor {
            live: notify,
            thread: Some(thread),
        })
    }

    /// The live set now takes about `bytes` of log (see
    /// [`crate::store::Store::log_bytes`]); a segment was just sealed, or
    /// the store was built: look again. Should the ring be full, this
    /// value is lost and the thread keeps an older one: compaction then
    /// starts a little early or late, never wrongly (the rule only weighs
    /// the gain; what compaction keeps does not depend on it).
    pub fn live(&mut self, bytes: u64) {
        let _ = self.live.push(bytes);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let (dead, _) = channel::<u64>(1);
            drop(std::mem::replace(&mut self.live, dead));
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::RecordRef;
    use crate::store::Store;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rrstore-seg-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn state(dir: &Path) -> ([u8; 16], Vec<(u32, u64)>, usize) {
        let mut store = Store::new();
        let mut vv = VersionVector::new();
        replay_all(dir, |e| match e {
            LogEntry::Record(r) => {
                store.apply(&r);
                vv.observe(r.origin, r.seq);
            }
            LogEntry::Vector(v) => {
                vv.merge(&v);
            }
        })
        .unwrap();
        (store.digest(), vv.to_vec(), vv.pending_above())
    }

    /// Overwrites of 50 ids from two origins across many segments, one
    /// origin with a gap (seq 900 missing) filled only in the active segment.
    fn write(dir: &Path) {
        let mut log = LogWriter::open(&dir.join(ACTIVE)).unwrap();
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
                roll(dir, &mut log).unwrap();
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
        let segs = sealed(&dir).unwrap();
        compact(&dir, &segs).unwrap();
        let output = sealed_bytes(&sealed(&dir).unwrap());
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
        compact(&dir, &segs).unwrap();
        let after_segs = sealed(&dir).unwrap();
        assert_eq!(after_segs.len(), 1);
        assert!(sealed_bytes(&after_segs) * 5 < bytes_before);
        assert_eq!(state(&dir), before, "same store, vector and gaps");
        assert_eq!(before.2, 0, "the late record filled the gap");
        // Compacting the compacted output (with more sealed data) is stable.
        compact(&dir, &sealed(&dir).unwrap()).unwrap();
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
        compact(&dir, &segs).unwrap();
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
