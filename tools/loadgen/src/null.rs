//! `loadgen null-server`: answers every request at once, to measure how
//! fast the generator itself can go (and to test it).
//!
//! One mio loop: reads every readable connection until WouldBlock, answers
//! each whole request into that connection's write buffer (rrstore: STORED
//! for PUT, an empty VALUE for GET, PONG; Redis: `+OK` for SET, `$-1` for
//! GET, `+PONG`, `:N` for `WAIT N …`), and writes each buffer once at the
//! end of the loop turn.
//!
//! `--stall-every N --stall-ms M` simulates a pause (a GC, a disk hiccup):
//! after every N-th request, replies are held back for M ms while requests
//! keep being read; then everything held is written.

use crate::buf::{ReadBuf, WriteBuf};
use crate::proto::{self, Command, Protocol};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use rrstore::wire::{self, Parse, Request, Response};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);

#[derive(Debug, Clone, Copy)]
pub struct NullOptions {
    pub protocol: Protocol,
    /// Pause after every this many requests (0: never).
    pub stall_every: u64,
    /// How long each pause holds replies back.
    pub stall: Duration,
}

impl NullOptions {
    pub fn new(protocol: Protocol) -> NullOptions {
        NullOptions {
            protocol,
            stall_every: 0,
            stall: Duration::ZERO,
        }
    }
}

/// A null server running on its own thread.
pub struct NullServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    answered: Arc<AtomicU64>,
    thread: Option<JoinHandle<io::Result<u64>>>,
}

impl NullServer {
    /// Binds `listen` (port 0 picks a free one) and starts serving.
    pub fn start(listen: &str, opts: NullOptions) -> io::Result<NullServer> {
        let addr: SocketAddr = listen
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{listen}: {e}")))?;
        let mut listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let server = Server {
            poll,
            listener,
            conns: Vec::new(),
            vacant: Vec::new(),
            dirty: Vec::new(),
            opts,
            answered: 0,
            answered_shared: answered.clone(),
            stall_until: None,
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("null-server".into())
            .spawn(move || server.run())?;
        Ok(NullServer {
            addr,
            stop,
            waker,
            answered,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests answered so far (updated once per read burst).
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Serves until the loop fails (the CLI runs until it is killed).
    pub fn wait(mut self) -> io::Result<u64> {
        self.join()
    }

    /// Stops the loop; returns how many requests it answered.
    pub fn stop(mut self) -> io::Result<u64> {
        self.stop.store(true, Ordering::SeqCst);
        self.waker.wake()?;
        self.join()
    }

    fn join(&mut self) -> io::Result<u64> {
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("null server thread panicked")),
            None => Ok(0),
        }
    }
}

impl Drop for NullServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop.store(true, Ordering::SeqCst);
            let _ = self.waker.wake();
            let _ = self.join();
        }
    }
}

struct Conn {
    stream: TcpStream,
    rbuf: ReadBuf,
    wbuf: WriteBuf,
    dirty: bool,
    /// Close once the write buffer is out (after a fatal bad frame).
    closing: bool,
}

struct Server {
    poll: Poll,
    listener: TcpListener,
    conns: Vec<Option<Conn>>,
    vacant: Vec<usize>,
    /// Connections with replies to write this turn.
    dirty: Vec<usize>,
    opts: NullOptions,
    answered: u64,
    answered_shared: Arc<AtomicU64>,
    stall_until: Option<Instant>,
    stop: Arc<AtomicBool>,
}

/// Answers every whole request in `c`'s read buffer; returns how many.
fn answer(c: &mut Conn, protocol: Protocol) -> u64 {
    let mut n = 0;
    loop {
        let consumed = match protocol {
            Protocol::Rrstore => {
                match wire::parse_request(c.rbuf.data(), wire::DEFAULT_MAX_CONTENT) {
                    Parse::Incomplete => return n,
                    Parse::Frame { tag, msg, consumed } => {
                        let resp = match msg {
                            Request::Put { id, .. } => Response::Stored { id, worker: 1 },
                            Request::Get { id } => Response::Value { id, content: &[] },
                            Request::Ping => Response::Pong,
                            Request::Auth { .. } => Response::AuthOk,
                        };
                        wire::encode_response(c.wbuf.vec(), tag, &resp);
                        consumed
                    }
                    Parse::Reject { code, tag, skip } => {
                        wire::encode_error(c.wbuf.vec(), tag, code);
                        match skip {
                            Some(skip) => skip,
                            None => {
                                c.closing = true;
                                c.rbuf.clear();
                                return n;
                            }
                        }
                    }
                }
            }
            Protocol::Redis => match proto::decode_resp_command(c.rbuf.data()) {
                Command::Incomplete => return n,
                Command::Whole {
                    name,
                    arg,
                    consumed,
                } => {
                    let out = c.wbuf.vec();
                    if name.eq_ignore_ascii_case(b"WAIT")
                        && !arg.is_empty()
                        && arg.iter().all(u8::is_ascii_digit)
                    {
                        // As if every replica asked for had acknowledged.
                        out.push(b':');
                        out.extend_from_slice(arg);
                        out.extend_from_slice(b"\r\n");
                    } else {
                        let reply: &[u8] = if name.eq_ignore_ascii_case(b"SET") {
                            b"+OK\r\n"
                        } else if name.eq_ignore_ascii_case(b"GET") {
                            b"$-1\r\n"
                        } else if name.eq_ignore_ascii_case(b"PING") {
                            b"+PONG\r\n"
                        } else {
                            b"-ERR unknown command\r\n"
                        };
                        out.extend_from_slice(reply);
                    }
                    consumed
                }
                Command::Invalid(_) => {
                    c.wbuf.vec().extend_from_slice(b"-ERR Protocol error\r\n");
                    c.closing = true;
                    c.rbuf.clear();
                    return n;
                }
            },
        };
        c.rbuf.consume(consumed);
        n += 1;
    }
}

impl Server {
    fn run(mut self) -> io::Result<u64> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self
                .stall_until
                .map(|t| t.saturating_duration_since(Instant::now()));
            match self.poll.poll(&mut events, timeout) {
                Err(e) if e.kind() != io::ErrorKind::Interrupted => return Err(e),
                _ => {}
            }
            if self.stop.load(Ordering::SeqCst) {
                return Ok(self.answered);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept()?,
                    WAKER => {}
                    Token(i) => {
                        if event.is_writable() {
                            self.mark_dirty(i);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(i);
                        }
                    }
                }
            }
            if let Some(t) = self.stall_until {
                if Instant::now() < t {
                    continue;
                }
                self.stall_until = None;
            }
            self.flush_dirty();
        }
    }

    fn accept(&mut self) -> io::Result<()> {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A connection that died before it was accepted, or no fds
                // left: skip it, keep serving the others.
                Err(_) => return Ok(()),
            };
            let _ = stream.set_nodelay(true);
            let i = self.vacant.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            self.poll.registry().register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            self.conns[i] = Some(Conn {
                stream,
                rbuf: ReadBuf::new(64 * 1024),
                wbuf: WriteBuf::new(64 * 1024),
                dirty: false,
                closing: false,
            });
        }
    }

    fn mark_dirty(&mut self, i: usize) {
        if let Some(Some(c)) = self.conns.get_mut(i) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(i);
            }
        }
    }

    fn close(&mut self, i: usize) {
        if let Some(mut c) = self.conns.get_mut(i).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.vacant.push(i);
        }
    }

    fn read(&mut self, i: usize) {
        let protocol = self.opts.protocol;
        let Some(Some(c)) = self.conns.get_mut(i) else {
            return;
        };
        let mut n = 0;
        let mut eof = false;
        while !c.closing {
            match c.rbuf.read_from(&mut c.stream) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(_) => n += answer(c, protocol),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        let before = self.answered;
        self.answered += n;
        if n > 0 {
            self.answered_shared.store(self.answered, Ordering::Relaxed);
        }
        let every = self.opts.stall_every;
        if every > 0 && before / every != self.answered / every {
            self.stall_until = Some(Instant::now() + self.opts.stall);
        }
        if eof {
            self.close(i);
        } else if n > 0 || c.closing {
            self.mark_dirty(i);
        }
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            let Some(Some(c)) = self.conns.get_mut(i) else {
                continue;
            };
            c.dirty = false;
            match c.wbuf.flush_to(&mut c.stream) {
                Ok(true) if c.closing => self.close(i),
                Ok(_) => {}
                Err(_) => self.close(i),
            }
        }
        // Hand the list back so its capacity is reused.
        dirty.clear();
        self.dirty = dirty;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rrstore::client::{Client, Reply};
    use std::io::{Read, Write};

    #[test]
    fn answers_rrstore_requests() {
        let server = NullServer::start("127.0.0.1:0", NullOptions::new(Protocol::Rrstore)).unwrap();
        let mut c = Client::connect(server.addr()).unwrap();
        assert_eq!(c.put(5, b"abc").unwrap(), 1);
        assert_eq!(c.get(5).unwrap(), Some(Vec::new()));
        c.ping().unwrap();
        // Pipelined: all answered, tags preserved.
        let tags: Vec<u32> = (0..100)
            .map(|i| {
                c.send(&Request::Put {
                    id: i,
                    content: b"x",
                })
            })
            .collect();
        c.flush().unwrap();
        for t in tags {
            let (tag, reply) = c.recv().unwrap();
            assert_eq!(tag, t);
            assert!(matches!(reply, Ok(Reply::Stored { .. })));
        }
        assert_eq!(server.stop().unwrap(), 103);
    }

    #[test]
    fn answers_redis_commands() {
        let server = NullServer::start("127.0.0.1:0", NullOptions::new(Protocol::Redis)).unwrap();
        let mut s = std::net::TcpStream::connect(server.addr()).unwrap();
        let mut req = Vec::new();
        proto::encode_resp(&mut req, crate::workload::Op::Put, 1, b"v");
        proto::encode_resp(&mut req, crate::workload::Op::Get, 1, b"");
        proto::encode_resp_wait(&mut req, 2, 0);
        // Split mid-frame: the server must wait for the rest.
        s.write_all(&req[..7]).unwrap();
        s.flush().unwrap();
        s.write_all(&req[7..]).unwrap();
        let want = b"+OK\r\n$-1\r\n:2\r\n";
        let mut got = vec![0u8; want.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, want);
        assert_eq!(server.stop().unwrap(), 3);
    }
}
