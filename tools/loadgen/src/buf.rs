//! Per-connection buffers that are allocated once and reused.
//!
//! [`ReadBuf`] keeps an initialised byte array with a window of unparsed
//! data; reads land in the free space after it and parsed frames are
//! consumed from its front, so nothing is zeroed or reallocated per read.
//! [`WriteBuf`] collects a loop turn's requests and writes them with as few
//! syscalls as the socket allows.

use std::io::{self, Read, Write};

/// Below this much free space a read first makes room.
const MIN_READ: usize = 4096;

pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    pub fn new(capacity: usize) -> ReadBuf {
        ReadBuf {
            buf: vec![0; capacity.max(2 * MIN_READ)],
            start: 0,
            end: 0,
        }
    }

    /// The bytes read but not consumed yet.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Drops `n` bytes from the front of [`ReadBuf::data`].
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// One `read` into the free space; `Ok(0)` is end of stream. A partial
    /// frame larger than the buffer grows it (doubling).
    pub fn read_from(&mut self, r: &mut impl Read) -> io::Result<usize> {
        if self.buf.len() - self.end < MIN_READ {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.end < MIN_READ {
                let len = self.buf.len() * 2;
                self.buf.resize(len, 0);
            }
        }
        let n = r.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }
}

#[derive(Default)]
pub struct WriteBuf {
    buf: Vec<u8>,
    pos: usize,
}

impl WriteBuf {
    pub fn new(capacity: usize) -> WriteBuf {
        WriteBuf {
            buf: Vec::with_capacity(capacity),
            pos: 0,
        }
    }

    /// Where to append the next frames.
    pub fn vec(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Bytes queued but not written yet.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.pos = 0;
    }

    /// Writes until everything is out (`Ok(true)`) or the socket would
    /// block (`Ok(false)`).
    pub fn flush_to(&mut self, w: &mut impl Write) -> io::Result<bool> {
        while self.pos < self.buf.len() {
            match w.write(&self.buf[self.pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Keep the tail at the front so the buffer does not creep.
                    if self.pos >= 64 * 1024 {
                        self.buf.drain(..self.pos);
                        self.pos = 0;
                    }
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.clear();
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `chunk` bytes per call.
    struct Trickle<'a> {
        data: &'a [u8],
        chunk: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.chunk.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn read_buffer_compacts_and_grows() {
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut r = Trickle {
            data: &data,
            chunk: 3000,
        };
        let mut b = ReadBuf::new(8192);
        let mut seen = Vec::new();
        // Consume a little less than arrives, so data stays and moves.
        while b.read_from(&mut r).unwrap() > 0 {
            let take = b.data().len().saturating_sub(100);
            seen.extend_from_slice(&b.data()[..take]);
            b.consume(take);
        }
        seen.extend_from_slice(b.data());
        assert_eq!(seen, data);

        // A frame larger than the buffer makes it grow.
        let mut r = Trickle {
            data: &data,
            chunk: 5000,
        };
        let mut b = ReadBuf::new(8192);
        while b.read_from(&mut r).unwrap() > 0 {}
        assert_eq!(b.data(), &data[..]);
    }

    #[test]
    fn write_buffer_resumes_after_would_block() {
        struct Choked {
            got: Vec<u8>,
            budget: usize,
        }
        impl Write for Choked {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                if self.budget == 0 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let n = b.len().min(self.budget).min(7);
                self.budget -= n;
                self.got.extend_from_slice(&b[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = WriteBuf::new(16);
        w.vec().extend_from_slice(b"hello, world");
        let mut sink = Choked {
            got: Vec::new(),
            budget: 5,
        };
        assert!(!w.flush_to(&mut sink).unwrap());
        assert_eq!(w.pending(), 7);
        w.vec().extend_from_slice(b"!");
        sink.budget = 100;
        assert!(w.flush_to(&mut sink).unwrap());
        assert_eq!(sink.got, b"hello, world!");
        assert_eq!(w.pending(), 0);
    }
}
