//! A non-blocking connection: read buffer, write buffer and interest
//! tracking, shared by the LB and the workers.
//!
//! Invariants:
//! - `rbuf[rstart..rend]` holds received bytes not yet consumed by a parser;
//!   `rbuf.len()` is the read window. It grows towards one whole frame, but
//!   at most doubling what has arrived, so a peer that announces a large
//!   frame and then trickles it (slowloris) costs what it sent, not what it
//!   announced. [`Conn::trim`] frees empty buffers past [`KEEP_BUFFER`].
//! - `wbuf[wstart..]` holds encoded bytes not yet written to the socket.
//! - `registered` is the interest the kernel has; [`Conn::set_interest`]
//!   re-registers only when the wanted interest differs (user-space interest
//!   tracking: no syscall when nothing changed).
//! - WRITABLE is asked for only while output is pending.
//!
//! Reads drain the socket until `WouldBlock` (edge-triggered epoll), so one
//! read event yields every frame that arrived; writes are issued once per
//! loop turn for all frames queued in that turn.

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::io::{self, ErrorKind, Read, Write};

/// Initial read window; grows only for frames larger than this.
const READ_CHUNK: usize = 64 * 1024;
/// Parse after buffering this much, so a fast sender cannot make one
/// connection's input grow without bound before anything is handled.
pub const READ_BATCH: usize = 1 << 20;
/// [`Conn::trim`] frees empty buffers larger than this, so an idle
/// connection does not keep the memory of its largest frame.
pub const KEEP_BUFFER: usize = 256 * 1024;

pub struct Conn {
    pub stream: TcpStream,
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    wbuf: Vec<u8>,
    wstart: usize,
    registered: Option<Interest>,
    /// Set once an I/O error occurred (not on a clean end of input, which
    /// [`ReadOutcome::eof`] reports).
    pub closed: bool,
}

/// What a call to [`Conn::read_ready`] saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadOutcome {
    pub syscalls: u32,
    /// No more input: the peer closed its write side (read returned 0) or
    /// the socket failed (then [`Conn::closed`] is set too).
    pub eof: bool,
    /// The socket is empty (it said `WouldBlock`, or a read came back
    /// short): a new readiness edge comes when new bytes arrive. If
    /// false (and not eof), the caller stopped early and must
    /// read again after consuming input.
    pub drained: bool,
    /// Bytes read.
    pub bytes: usize,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            rbuf: Vec::new(),
            rstart: 0,
            rend: 0,
            wbuf: Vec::new(),
            wstart: 0,
            registered: None,
            closed: false,
        }
    }

    /// Unconsumed received bytes.
    pub fn input(&self) -> &[u8] {
        &self.rbuf[self.rstart..self.rend]
    }

    /// The whole read buffer, to detach while a frame borrowed from it is
    /// handled (put it back before reading again).
    pub fn input_mut(&mut self) -> &mut Vec<u8> {
        &mut self.rbuf
    }

    /// Where [`Conn::input`] lies inside [`Conn::input_mut`].
    pub fn input_range(&self) -> (usize, usize) {
        (self.rstart, self.rend)
    }

    /// Adds bytes that were read before the connection became non-blocking.
    pub fn push_input(&mut self, bytes: &[u8]) {
        self.make_room(self.rend - self.rstart + bytes.len());
        self.rbuf[self.rend..self.rend + bytes.len()].copy_from_slice(bytes);
        self.rend += bytes.len();
    }

    /// Records an interest registered by the caller directly.
    pub fn mark_registered(&mut self, interest: Interest) {
        self.registered = Some(interest);
    }

    /// Marks `n` bytes of [`Conn::input`] as parsed.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.rend - self.rstart);
        self.rstart += n;
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
        }
    }

    /// Reads until `WouldBlock`, or until enough is buffered for the caller
    /// to parse (then it parses and calls again): [`READ_BATCH`] bytes, and
    /// always the whole first frame, whose size the buffered header gives,
    /// up to `max_frame` (a larger frame is the parser's to reject from its
    /// header alone). So every early return leaves a whole frame to parse,
    /// and a frame is read into a window sized for it, not grown bit by bit.
    ///
    /// A short read (fewer bytes than the window) ends the call as drained:
    /// bytes that arrive later raise a new edge, so the extra `read` that
    /// would only return `WouldBlock` is saved. Pass `to_eof` when the event
    /// said the peer closed (its FIN raises no further edge) or when
    /// resuming a connection whose edge was consumed earlier.
    pub fn read_ready(&mut self, max_frame: usize, to_eof: bool) -> ReadOutcome {
        let mut out = ReadOutcome::default();
        loop {
            let buffered = self.rend - self.rstart;
            let need = self.first_frame_len().min(max_frame);
            if buffered >= READ_BATCH.max(need) {
                return out;
            }
            // Towards the whole frame, but never more than twice what came.
            let window = need.min(buffered.saturating_mul(2)).max(READ_CHUNK);
            self.make_room(window);
            out.syscalls += 1;
            match self.stream.read(&mut self.rbuf[self.rend..]) {
                Ok(0) => {
                    // End of the peer's input; our output may still go out.
                    out.eof = true;
                    return out;
                }
                Ok(n) => {
                    let window = self.rbuf.len() - self.rend;
                    self.rend += n;
                    out.bytes += n;
                    if n < window && !to_eof {
                        out.drained = true;
                        return out;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    out.drained = true;
                    return out;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    out.eof = true;
                    self.closed = true;
                    return out;
                }
            }
        }
    }

    /// The size of the first buffered frame (4 + its `len` field), or 0
    /// while its length is not buffered yet.
    fn first_frame_len(&self) -> usize {
        match self.rbuf.get(self.rstart..self.rstart + 4) {
            Some(b) if self.rend - self.rstart >= 4 => {
                4 + u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
            }
            _ => 0,
        }
    }

    /// Ensures at least `window` bytes of read window past `rstart`, moving
    /// unconsumed bytes to the front first.
    fn make_room(&mut self, window: usize) {
        if self.rstart > 0 && (self.rend == self.rbuf.len() || self.rstart >= self.rbuf.len() / 2) {
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            self.rend -= self.rstart;
            self.rstart = 0;
        }
        if self.rbuf.len() - self.rstart < window || self.rend == self.rbuf.len() {
            let target = (self.rstart + window).max(self.rend + READ_CHUNK / 4);
            self.rbuf.resize(target, 0);
        }
    }

    /// Frees the read and write buffers if they are empty and larger than
    /// [`KEEP_BUFFER`]; true if it freed one. For connections that went
    /// quiet: on a busy one the buffers are reused from turn to turn, which
    /// is what keeps the hot path free of allocations.
    pub fn trim(&mut self) -> bool {
        let mut freed = false;
        if self.rstart == self.rend && self.rbuf.len() > KEEP_BUFFER {
            self.rbuf = Vec::new();
            self.rstart = 0;
            self.rend = 0;
            freed = true;
        }
        if self.pending_out() == 0 && self.wbuf.capacity() > KEEP_BUFFER {
            self.wbuf = Vec::new();
            self.wstart = 0;
            freed = true;
        }
        freed
    }

    /// Where encoders append frames; flushed by [`Conn::flush`].
    pub fn out(&mut self) -> &mut Vec<u8> {
        &mut self.wbuf
    }

    /// Bytes queued and not yet written.
    pub fn pending_out(&self) -> usize {
        self.wbuf.len() - self.wstart
    }

    /// Writes queued bytes until done or `WouldBlock`. Returns the number of
    /// write syscalls made. An error marks the connection closed.
    pub fn flush(&mut self) -> u32 {
        let mut syscalls = 0;
        while self.wstart < self.wbuf.len() {
            syscalls += 1;
            match self.stream.write(&self.wbuf[self.wstart..]) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(n) => {
                    self.wstart += n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.closed = true;
                    break;
                }
            }
        }
        if self.wstart == self.wbuf.len() {
            self.wbuf.clear();
            self.wstart = 0;
        } else if self.wstart > 1 << 20 && self.wstart * 2 > self.wbuf.len() {
            self.wbuf.drain(..self.wstart);
            self.wstart = 0;
        }
        syscalls
    }

    /// Registers or re-registers for READABLE (if `read`) and WRITABLE (if
    /// output is pending), making a syscall only when that changes.
    pub fn set_interest(
        &mut self,
        registry: &Registry,
        token: Token,
        read: bool,
    ) -> io::Result<()> {
        let write = self.pending_out() > 0;
        self.set_interest_to(registry, token, read, write)
    }

    /// [`Conn::set_interest`] with the write interest chosen by the caller:
    /// output held back on purpose (see the worker's peer pacing) must not
    /// ask for a WRITABLE event, which would wake the loop at once.
    pub fn set_interest_to(
        &mut self,
        registry: &Registry,
        token: Token,
        read: bool,
        write: bool,
    ) -> io::Result<()> {
        let want = match (read, write) {
            (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
            (true, false) => Some(Interest::READABLE),
            (false, true) => Some(Interest::WRITABLE),
            (false, false) => None,
        };
        if want == self.registered {
            return Ok(());
        }
        match (self.registered, want) {
            (None, Some(i)) => registry.register(&mut self.stream, token, i)?,
            (Some(_), Some(i)) => registry.reregister(&mut self.stream, token, i)?,
            (Some(_), None) => registry.deregister(&mut self.stream)?,
            (None, None) => {}
        }
        self.registered = want;
        Ok(())
    }

    /// Removes the socket from the poller (before dropping it).
    pub fn deregister(&mut self, registry: &Registry) {
        if self.registered.take().is_some() {
            let _ = registry.deregister(&mut self.stream);
        }
    }
}

/// Gives the pages of freed heap memory back to the kernel; for after
/// [`Conn::trim`] freed buffers. glibc's `free` returns only the top of its
/// heap: a buffer freed below a live allocation stays resident. A worker
/// kept about 1 MB that way after a burst or a catch-up stream, a third of
/// what stood between it and its memory target (docs/BENCHMARKS.md, 7c).
/// Elsewhere (another libc, Miri) this does nothing.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(miri)))]
    // SAFETY: `malloc_trim` takes no pointers; it walks glibc's own free
    // lists under its arena locks, so any thread may call it at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
