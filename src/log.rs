//! A worker's data directory: its identity, its lock and its append-only log.
//!
//! Layout of `DIR`:
//! - `LOCK`: held with an exclusive `flock` for the worker's lifetime, so a
//!   second worker on the same directory refuses to start.
//! - `identity`: `id=N` (older versions also wrote `incarnation=N`, now
//!   ignored: each process gets a fresh origin from the LB), written atomically (temp file,
//!   fsync, rename) once the LB has accepted the worker.
//! - `records.log`: a sequence of entries
//!   `len:u32 | crc32c:u32 | kind:u8 | payload` (big-endian; `len` counts kind
//!   and payload; the CRC covers them too). Kind 1 is a record
//!   (`origin:u32 seq:u64 version:u64 id:u64 content`), kind 2 a version
//!   vector merged after a catch-up or written by a compaction
//!   (`count:u16 (origin:u32 seq:u64)*`; a vector of more origins takes
//!   several, merged on replay),
//!   kind 3 records of one origin applied above a gap in its sequence
//!   whose own entries a compaction dropped (`origin:u32 seq:u64*`):
//!   replay observes them as if their records came.
//!
//! Replay stops at the first entry that is torn (short) or fails its CRC and
//! truncates the file there: nothing after an untrusted byte is ever served;
//! the worker's vector then says exactly what it lacks, and catch-up from
//! its peers fills it in.

use crate::msg::{stamp_fits, RecordRef, Vector};
use byteorder::{BigEndian, ByteOrder};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const KIND_RECORD: u8 = 1;
const KIND_VECTOR: u8 = 2;
const KIND_ABOVE: u8 = 3;
/// Seqs per kind-3 entry at most.
const ABOVE_PER_ENTRY: usize = 8_192;
/// Origins per kind-2 entry at most (its count is a u16).
const VECTOR_PER_ENTRY: usize = u16::MAX as usize;
/// Log bytes of a record entry besides its content: `len`, `crc32c`,
/// `kind`, `origin`, `seq`, `version` and `id`.
pub const RECORD_ENTRY_OVERHEAD: u64 = 4 + 4 + 1 + 4 + 8 + 8 + 8;
/// The most buffer capacity a [`LogWriter`] keeps between flushes: a busy
/// turn's worth at the benchmarks' rates (about 2,000 records of 64 B).
const KEEP_BUFFER: usize = 256 * 1024;
/// Entries longer than this are corrupt by definition (content limit + slack).
const MAX_ENTRY: usize = 64 << 20;

/// When the log is made durable with fdatasync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FsyncPolicy {
    /// Never: the OS writes back when it likes. A machine crash loses recent writes.
    Never,
    /// Every `--fsync-interval-ms` (default 1000) from a background thread,
    /// like Redis's `appendfsync everysec`. The default.
    Interval,
    /// Before every STORED: group commit through the fsync thread.
    Always,
}

pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates `path` if needed and locks it, or explains who holds it.
    pub fn open(path: &Path) -> io::Result<DataDir> {
        fs::create_dir_all(path)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join("LOCK"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "data directory {} is locked by another running worker; give each worker its own --data-dir",
                        path.display()
                    ),
                ))
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        Ok(DataDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn log_path(&self) -> PathBuf {
        self.path.join("records.log")
    }

    /// The worker ID, if this directory has served a worker before.
    pub fn identity(&self) -> io::Result<Option<u32>> {
        let text = match fs::read_to_string(self.path.join("identity")) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let field = |name: &str| -> io::Result<u32> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: bad or missing `{name}`",
                            self.path.join("identity").display()
                        ),
                    )
                })
        };
        Ok(Some(field("id")?))
    }

    pub fn save_identity(&self, id: u32) -> io::Result<()> {
        let tmp = self.path.join("identity.tmp");
        let mut f = File::create(&tmp)?;
        writeln!(f, "id={id}")?;
        f.sync_all()?;
        fs::rename(&tmp, self.path.join("identity"))?;
        File::open(&self.path)?.sync_all()
    }
}

/// One replayed log entry.
pub enum LogEntry<'a> {
    Record(RecordRef<'a>),
    Vector(Vector),
    /// Records of `origin` applied above a gap: observe each seq.
    Above {
        origin: u32,
        seqs: Vec<u64>,
    },
}

impl LogEntry<'_> {
    /// What this entry tells a replaying worker's version vector.
    pub fn note_in(&self, vv: &mut crate::vector::VersionVector) {
        match self {
            LogEntry::Record(r) => {
                vv.observe(r.origin, r.seq);
            }
            LogEntry::Vector(v) => {
                vv.merge(v);
            }
            LogEntry::Above { origin, seqs } => {
                for &seq in seqs {
                    vv.observe(*origin, seq);
                }
            }
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayStats {
    pub entries: u64,
    /// Bytes cut off the end: a torn tail or everything from a corrupt entry on.
    pub truncated: u64,
}

/// Replays `path` (missing means empty) through `apply`, truncating any
/// untrusted tail. Returns what it did.
pub fn replay(path: &Path, apply: impl FnMut(LogEntry<'_>)) -> io::Result<ReplayStats> {
    read_entries(path, true, apply)
}

/// Reads the first `len` bytes of `file` like [`replay`] but never changes
/// it: stops at the first untrusted entry. For a second pass over a log
/// [`replay`] has repaired; it reads at explicit offsets, so several
/// threads may scan one file at once, and bytes appended after `len` (the
/// worker already writing) are never seen.
pub fn scan_file(
    file: &File,
    len: u64,
    apply: impl FnMut(LogEntry<'_>),
) -> io::Result<ReplayStats> {
    let reader = PositionalReader {
        file,
        pos: 0,
        end: len,
    };
    read_from(BufReader::with_capacity(1 << 20, reader), len, apply).map(|(stats, _)| stats)
}

/// `Read` over `file[pos..end]` by `pread`: no shared file offset.
struct PositionalReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for PositionalReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let left = usize::try_from(self.end.saturating_sub(self.pos)).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn read_entries(
    path: &Path,
    repair: bool,
    apply: impl FnMut(LogEntry<'_>),
) -> io::Result<ReplayStats> {
    let file = match OpenOptions::new().read(true).write(repair).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ReplayStats::default()),
        Err(e) => return Err(e),
    };
    let file_len = file.metadata()?.len();
    let (stats, good) = read_from(BufReader::with_capacity(1 << 20, &file), file_len, apply)?;
    if good < file_len && repair {
        file.set_len(good)?;
        file.sync_all()?;
    }
    Ok(stats)
}

/// Applies the trusted entries of a log `file_len` bytes long; returns
/// what it read and how many bytes of it are trusted.
fn read_from(
    mut reader: impl Read,
    file_len: u64,
    mut apply: impl FnMut(LogEntry<'_>),
) -> io::Result<(ReplayStats, u64)> {
    let mut stats = ReplayStats::default();
    let mut good: u64 = 0;
    let mut payload = Vec::new();
    loop {
        let mut header = [0u8; 8];
        if !read_full(&mut reader, &mut header)? {
            break;
        }
        let len = BigEndian::read_u32(&header[..4]) as usize;
        let crc = BigEndian::read_u32(&header[4..]);
        if len == 0 || len > MAX_ENTRY || good + 8 + len as u64 > file_len {
            break;
        }
        payload.resize(len, 0);
        if !read_full(&mut reader, &mut payload)? || crc32c::crc32c(&payload) != crc {
            break;
        }
        match decode_entry(&payload) {
            Some(entry) => apply(entry),
            None => break,
        }
        good += 8 + len as u64;
        stats.entries += 1;
    }
    stats.truncated = file_len - good;
    Ok((stats, good))
}

/// Reads exactly `buf.len()` bytes; false on a clean or torn end of file.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn decode_entry(p: &[u8]) -> Option<LogEntry<'_>> {
    match p[0] {
        KIND_RECORD if p.len() >= 29 => {
            let r = RecordRef {
                origin: BigEndian::read_u32(&p[1..5]),
                seq: BigEndian::read_u64(&p[5..13]),
                version: BigEndian::read_u64(&p[13..21]),
                id: BigEndian::read_u64(&p[21..29]),
                content: &p[29..],
            };
            // Every record logged went through a store first, so one out of
            // range is as corrupt as a bad length.
            stamp_fits(r.version, r.seq).then_some(LogEntry::Record(r))
        }
        KIND_VECTOR if p.len() >= 3 => {
            let n = BigEndian::read_u16(&p[1..3]) as usize;
            if p.len() != 3 + n * 12 {
                return None;
            }
            Some(LogEntry::Vector(
                p[3..]
                    .chunks_exact(12)
                    .map(|c| (BigEndian::read_u32(&c[..4]), BigEndian::read_u64(&c[4..])))
                    .collect(),
            ))
        }
        KIND_ABOVE if p.len() >= 5 && (p.len() - 5).is_multiple_of(8) => Some(LogEntry::Above {
            origin: BigEndian::read_u32(&p[1..5]),
            seqs: p[5..].chunks_exact(8).map(BigEndian::read_u64).collect(),
        }),
        _ => None,
    }
}

fn encode_entry(buf: &mut Vec<u8>, kind: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 8]);
    buf.push(kind);
    body(buf);
    let payload = &buf[start + 8..];
    let len = payload.len() as u32;
    let crc = crc32c::crc32c(payload);
    BigEndian::write_u32(&mut buf[start..start + 4], len);
    BigEndian::write_u32(&mut buf[start + 4..start + 8], crc);
}

/// Appends `r` to `buf` as one log entry.
pub fn encode_record(buf: &mut Vec<u8>, r: &RecordRef<'_>) {
    encode_entry(buf, KIND_RECORD, |b| {
        b.extend_from_slice(&r.origin.to_be_bytes());
        b.extend_from_slice(&r.seq.to_be_bytes());
        b.extend_from_slice(&r.version.to_be_bytes());
        b.extend_from_slice(&r.id.to_be_bytes());
        b.extend_from_slice(r.content);
    });
}

/// Appends the version vector `v` to `buf` as one log entry, or as
/// several of at most [`VECTOR_PER_ENTRY`] origins each: replay merges
/// vectors origin by origin, so the pieces read back as the whole. (Every
/// process start adds an origin and none is retired; a count that wrapped
/// would make replay cut the log at the entry.)
pub fn encode_vector(buf: &mut Vec<u8>, v: &[(u32, u64)]) {
    let mut rest = v;
    loop {
        let (piece, tail) = rest.split_at(rest.len().min(VECTOR_PER_ENTRY));
        encode_entry(buf, KIND_VECTOR, |b| {
            b.extend_from_slice(&(piece.len() as u16).to_be_bytes());
            for &(o, s) in piece {
                b.extend_from_slice(&o.to_be_bytes());
                b.extend_from_slice(&s.to_be_bytes());
            }
        });
        if tail.is_empty() {
            return;
        }
        rest = tail;
    }
}

/// Appends `above` (records applied above a gap, `(origin, seq)`, sorted
/// by origin) to `buf` as kind-3 entries of at most [`ABOVE_PER_ENTRY`]
/// seqs of one origin each.
pub fn encode_above(buf: &mut Vec<u8>, above: &[(u32, u64)]) {
    for group in above.chunk_by(|a, b| a.0 == b.0) {
        for chunk in group.chunks(ABOVE_PER_ENTRY) {
            encode_entry(buf, KIND_ABOVE, |b| {
                b.extend_from_slice(&chunk[0].0.to_be_bytes());
                for &(_, seq) in chunk {
                    b.extend_from_slice(&seq.to_be_bytes());
                }
            });
        }
    }
}

/// Buffers entries for one loop turn and writes them with one syscall.
pub struct LogWriter {
    file: File,
    buf: Vec<u8>,
    /// Bytes written so far, across every file this writer has used (the
    /// offset the next entry lands at, once `buf` is flushed).
    written: u64,
    /// `written` when the current file was opened.
    segment_start: u64,
}

impl LogWriter {
    pub fn open(path: &Path) -> io::Result<LogWriter> {
        let mut file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.seek(SeekFrom::End(0))?;
        Ok(LogWriter {
            file,
            buf: Vec::with_capacity(1 << 16),
            written,
            segment_start: 0,
        })
    }

    /// A second handle on the same file for the fsync thread.
    pub fn sync_handle(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    pub fn append_record(&mut self, r: &RecordRef<'_>) {
        encode_record(&mut self.buf, r);
    }

    pub fn append_vector(&mut self, v: &[(u32, u64)]) {
        encode_vector(&mut self.buf, v);
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Continues in a new file at `path` (created empty or appended to);
    /// offsets keep counting across files. Returns the previous file.
    pub fn reopen(&mut self, path: &Path) -> io::Result<File> {
        self.flush()?;
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        self.segment_start = self.written;
        Ok(std::mem::replace(&mut self.file, file))
    }

    /// Bytes written to the current file (segment).
    pub fn segment_len(&self) -> u64 {
        self.written - self.segment_start + self.buf.len() as u64
    }

    /// Writes everything buffered (one `write` in the common case) and
    /// returns the file's new length.
    pub fn flush(&mut self) -> io::Result<u64> {
        if !self.buf.is_empty() {
            self.file.write_all(&self.buf)?;
            self.written += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(self.written)
    }

    /// Gives back buffer capacity past [`KEEP_BUFFER`]: a loop turn that
    /// applied a catch-up's burst grew it to megabytes. For a periodic
    /// tick, not every flush (a burst regrows it at every turn).
    /// True if it freed the buffer.
    pub fn trim(&mut self) -> bool {
        let grown = self.buf.is_empty() && self.buf.capacity() > KEEP_BUFFER;
        if grown {
            self.buf = Vec::with_capacity(KEEP_BUFFER);
        }
        grown
    }

    pub fn written(&self) -> u64 {
        self.written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rrstore-log-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn write_sample(path: &Path) {
        let mut w = LogWriter::open(path).unwrap();
        for i in 0..10u64 {
            w.append_record(&RecordRef {
                origin: 1,
                seq: i + 1,
                version: 100 + i,
                id: i,
                content: &[i as u8; 5],
            });
        }
        w.append_vector(&[(1, 10), (2, 4)]);
        w.flush().unwrap();
    }

    fn count(path: &Path) -> (u64, ReplayStats) {
        let mut records = 0;
        let stats = replay(path, |e| {
            if let LogEntry::Record(r) = e {
                assert_eq!(r.content, &[r.id as u8; 5]);
                records += 1;
            }
        })
        .unwrap();
        (records, stats)
    }

    #[test]
    fn replays_everything_written() {
        let dir = tmpdir("all");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("records.log");
        write_sample(&path);
        let (records, stats) = count(&path);
        assert_eq!((records, stats.entries, stats.truncated), (10, 11, 0));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn records_above_a_gap_replay_as_observed_in_entries_of_one_origin() {
        let dir = tmpdir("above");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("records.log");
        // Two origins, one of them with more seqs than an entry holds.
        let mut above: Vec<(u32, u64)> = (0..20_000u64).map(|i| (3, 10 + 2 * i)).collect();
        above.extend([(7, 5), (7, 9)]);
        let mut buf = Vec::new();
        encode_above(&mut buf, &above);
        fs::write(&path, &buf).unwrap();
        let (mut entries, mut seen) = (0, Vec::new());
        let stats = replay(&path, |e| {
            let LogEntry::Above { origin, seqs } = e else {
                panic!("only kind-3 entries were written");
            };
            assert!(seqs.len() <= ABOVE_PER_ENTRY);
            entries += 1;
            seen.extend(seqs.into_iter().map(|s| (origin, s)));
        })
        .unwrap();
        assert_eq!(stats.truncated, 0);
        assert_eq!(entries, 4, "3 entries for origin 3, 1 for origin 7");
        assert_eq!(seen, above);
        let mut vv = crate::vector::VersionVector::new();
        replay(&path, |e| e.note_in(&mut vv)).unwrap();
        assert_eq!(vv.pending_above(), above.len());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_vector_of_more_origins_than_an_entry_counts_replays_whole() {
        let dir = tmpdir("vector");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("records.log");
        let v: Vec<(u32, u64)> = (1..=70_000u32).map(|o| (o, u64::from(o) * 3)).collect();
        let mut buf = Vec::new();
        encode_vector(&mut buf, &v);
        encode_vector(&mut buf, &[]);
        fs::write(&path, &buf).unwrap();
        let mut pieces = Vec::new();
        let stats = replay(&path, |e| {
            let LogEntry::Vector(piece) = e else {
                panic!("only vectors were written");
            };
            pieces.push(piece.len());
        })
        .unwrap();
        assert_eq!(stats.truncated, 0, "nothing cut");
        assert_eq!(pieces, vec![VECTOR_PER_ENTRY, 70_000 - VECTOR_PER_ENTRY, 0]);
        let mut vv = crate::vector::VersionVector::new();
        replay(&path, |e| e.note_in(&mut vv)).unwrap();
        assert_eq!(vv.to_vec(), v);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn torn_tail_and_corruption_are_truncated() {
        let dir = tmpdir("torn");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("records.log");
        write_sample(&path);
        let full = fs::read(&path).unwrap();
        // Every truncation point replays a prefix and never fails.
        for cut in 0..full.len() {
            fs::write(&path, &full[..cut]).unwrap();
            let (records, _) = count(&path);
            assert!(records <= 10);
            assert!(fs::metadata(&path).unwrap().len() <= cut as u64);
        }
        // A flipped byte in the middle cuts the log at that entry.
        let mut bad = full.clone();
        bad[full.len() / 2] ^= 0x40;
        fs::write(&path, &bad).unwrap();
        let (records, stats) = count(&path);
        assert!(records < 10 && stats.truncated > 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn data_dir_lock_and_identity() {
        let dir = tmpdir("lock");
        let a = DataDir::open(&dir).unwrap();
        let err = DataDir::open(&dir).err().expect("second open must fail");
        assert!(err.to_string().contains("locked"), "{err}");
        assert_eq!(a.identity().unwrap(), None);
        a.save_identity(7).unwrap();
        assert_eq!(a.identity().unwrap(), Some(7));
        drop(a);
        let b = DataDir::open(&dir).unwrap();
        assert_eq!(b.identity().unwrap(), Some(7));
        drop(b);
        fs::remove_dir_all(&dir).unwrap();
    }
}
