//! The LB's processed log: one line per confirmed record, written by a
//! helper thread so the event loop never blocks on the disk.
//!
//! The loop pushes fixed-size [`Confirmed`] items into an SPSC ring
//! (`src/ringbuf.rs`). The writer wakes on its own every [`WRITER_TICK`] and
//! drains the ring; the loop wakes it early (a futex call) only once the ring
//! is a quarter full, so at high request rates the log costs the loop no
//! syscall at all. If the ring is ever full, items wait in a local overflow
//! queue, in order, and move into the ring on later turns; nothing is
//! dropped. Lines reach the file within about [`WRITER_TICK`].
//!
//! Line format: `<unix seconds>.<micros> stored id=<id> worker=<worker> version=<version>`.

use crate::ringbuf::{channel, Producer};
use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the writer drains the ring on its own.
pub const WRITER_TICK: Duration = Duration::from_millis(10);

/// Lines the writer takes from the ring at a time.
const DRAIN_BATCH: usize = 1024;

#[derive(Debug, Clone, Copy)]
pub struct Confirmed {
    pub id: u64,
    pub worker: u32,
    pub version: u64,
    /// Microseconds since the Unix epoch when the LB received the ack.
    pub micros: u64,
}

pub struct ProcessedLog {
    tx: Producer<Confirmed>,
    overflow: VecDeque<Confirmed>,
    pushed: bool,
    thread: Option<JoinHandle<()>>,
}

/// Appends `c` as one line of the processed log:
/// `SECONDS.MICROS stored id=ID worker=W version=V`. By hand with `itoa`:
/// `write!`'s formatting machinery was most of this thread's CPU.
fn format_line(line: &mut Vec<u8>, c: &Confirmed) {
    let mut num = itoa::Buffer::new();
    line.extend_from_slice(num.format(c.micros / 1_000_000).as_bytes());
    line.push(b'.');
    let fraction = num.format(c.micros % 1_000_000).as_bytes();
    line.extend_from_slice(&b"000000"[fraction.len()..]);
    line.extend_from_slice(fraction);
    line.extend_from_slice(b" stored id=");
    line.extend_from_slice(num.format(c.id).as_bytes());
    line.extend_from_slice(b" worker=");
    line.extend_from_slice(num.format(c.worker).as_bytes());
    line.extend_from_slice(b" version=");
    line.extend_from_slice(num.format(c.version).as_bytes());
    line.push(b'\n');
}

pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl ProcessedLog {
    pub fn open(path: &Path) -> io::Result<ProcessedLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let (tx, mut rx) = channel::<Confirmed>(64 * 1024);
        let thread = thread::Builder::new()
            .name("rrstore-plog".into())
            .spawn(move || {
                let mut out = BufWriter::with_capacity(256 * 1024, file);
                let mut line = Vec::with_capacity(128);
                // Drained a batch at a time: one store of the ring's head
                // per batch, not per line.
                let mut batch = Vec::with_capacity(DRAIN_BATCH);
                loop {
                    let mut wrote = false;
                    while rx.pop_into(&mut batch, DRAIN_BATCH) > 0 {
                        wrote = true;
                        for c in batch.drain(..) {
                            line.clear();
                            format_line(&mut line, &c);
                            let _ = out.write_all(&line);
                        }
                    }
                    if wrote {
                        if let Err(e) = out.flush() {
                            log::warn!("processed log write failed: {e}");
                        }
                    }
                    if rx.is_abandoned() && rx.is_empty() {
                        let _ = out.flush();
                        let _ = out.get_ref().sync_data();
                        return;
                    }
                    thread::park_timeout(WRITER_TICK);
                }
            })?;
        Ok(ProcessedLog {
            tx,
            overflow: VecDeque::new(),
            pushed: false,
            thread: Some(thread),
        })
    }

    /// Queues one line; never blocks.
    pub fn push(&mut self, c: Confirmed) {
        if !self.overflow.is_empty() {
            self.overflow.push_back(c);
            return;
        }
        match self.tx.push(c) {
            Ok(()) => self.pushed = true,
            Err(c) => self.overflow.push_back(c),
        }
    }

    /// Items waiting outside the ring (for stats and backpressure).
    pub fn backlog(&self) -> usize {
        self.overflow.len()
    }

    /// Once per loop turn: move overflow into the ring and wake the writer.
    pub fn end_of_turn(&mut self) {
        while let Some(c) = self.overflow.pop_front() {
            if let Err(c) = self.tx.push(c) {
                self.overflow.push_front(c);
                break;
            }
            self.pushed = true;
        }
        let filling = self.tx.free_slots() < self.tx.capacity() * 3 / 4;
        if std::mem::take(&mut self.pushed) && (filling || !self.overflow.is_empty()) {
            if let Some(t) = &self.thread {
                t.thread().unpark();
            }
        }
    }
}

impl Drop for ProcessedLog {
    /// Writes everything queued, then stops the thread.
    fn drop(&mut self) {
        while !self.overflow.is_empty() {
            self.end_of_turn();
            thread::yield_now();
        }
        if let Some(t) = self.thread.take() {
            let (dead, _) = channel::<Confirmed>(1);
            drop(std::mem::replace(&mut self.tx, dead));
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// The greatest worker ID in the last `tail` bytes of a processed log
/// (`None` if it is missing, unreadable or names no worker). A restarted LB
/// whose saved next ID is lost uses it so as not to hand a newcomer the ID
/// of a worker that has not come back yet.
pub fn max_worker_in_tail(path: &Path, tail: u64) -> Option<u32> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let start = len.saturating_sub(tail);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut bytes = Vec::with_capacity((len - start) as usize);
    file.take(tail).read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    // Past a cut, the first line may be a fragment: skip it.
    let lines = text.lines().skip(usize::from(start > 0));
    lines
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("worker=")))
        .filter_map(|w| w.parse::<u32>().ok())
        .max()
}

/// Reads a processed log back (for tests and the demo): `(id, worker)` pairs.
pub fn read_lines(path: &Path) -> io::Result<Vec<(u64, u32)>> {
    let text = std::fs::read_to_string(path)?;
    let field = |line: &str, name: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    Ok(text
        .lines()
        .filter_map(|l| Some((field(l, "id")?, field(l, "worker")? as u32)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_as_the_format_says() {
        for (micros, id, worker, version) in [
            (0, 0, 0, 0),
            (1_700_000_000_000_001, 42, 3, 1_700_000_000_000_001),
            (999_999, u64::MAX, u32::MAX, u64::MAX),
            (12_345_678_900_010, 7, 1, 9),
        ] {
            let mut line = Vec::new();
            format_line(
                &mut line,
                &Confirmed {
                    id,
                    worker,
                    version,
                    micros,
                },
            );
            let expected = format!(
                "{}.{:06} stored id={id} worker={worker} version={version}\n",
                micros / 1_000_000,
                micros % 1_000_000
            );
            assert_eq!(String::from_utf8(line).unwrap(), expected);
        }
    }

    #[test]
    fn the_greatest_worker_in_the_tail() {
        let dir = std::env::temp_dir().join(format!("rrstore-plog-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("processed.log");
        assert_eq!(max_worker_in_tail(&path, 1 << 20), None, "missing");
        let mut text = String::new();
        for (i, w) in [3, 12, 5, 7].iter().enumerate() {
            text += &format!("1.000001 stored id={i} worker={w} version={i}\n");
        }
        std::fs::write(&path, &text).unwrap();
        assert_eq!(max_worker_in_tail(&path, 1 << 20), Some(12));
        // A tail that cuts the `worker=12` line: the fragment is skipped.
        let cut = text.len() as u64 - text.find("worker=12").unwrap() as u64;
        assert_eq!(max_worker_in_tail(&path, cut), Some(7));
        std::fs::write(&path, "garbage\n").unwrap();
        assert_eq!(max_worker_in_tail(&path, 1 << 20), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
