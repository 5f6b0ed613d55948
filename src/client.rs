//! The client library: a blocking client for protocol v1 (the LB's port
//! 5059) over std TCP, with pipelining matched by tag and a typed error for
//! every ERROR code. The admin calls ([`members`], [`stats`], [`digest`],
//! [`dump`]) live in the `admin` submodule and are re-exported here. The
//! wire format is [`crate::wire`]'s; nothing here encodes or parses a frame
//! by hand.
//!
//! The examples run against a real LB and workers started in this process
//! by [`crate::testing::LocalCluster`]; against a deployed cluster, connect
//! to its LB's address instead (`127.0.0.1:5059` by default).
//!
//! Connect, store, read:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use rrstore::testing::LocalCluster;
//! use rrstore::Client;
//!
//! let cluster = LocalCluster::start(2)?; // an LB and 2 workers, on loopback
//! let mut client = Client::connect(cluster.addr())?;
//! let worker = client.put(7, b"hello")?; // the worker that stored it
//! assert!(worker >= 1);
//! assert_eq!(client.get(7)?.as_deref(), Some(&b"hello"[..]));
//! assert_eq!(client.get(8)?, None); // not found is an answer, not an error
//! client.ping()?;
//! # Ok(())
//! # }
//! ```
//!
//! Pipelining: [`Client::pipeline`] sends a batch (a bounded number in
//! flight) and returns each request's own answer in request order, however
//! the answers arrive. By hand, [`Client::send`] queues a request and returns
//! its tag, and [`Client::recv`] returns the next answer with its tag:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use rrstore::{testing::LocalCluster, Client, Reply, Request};
//! use std::collections::HashMap;
//!
//! let cluster = LocalCluster::start(2)?;
//! let mut client = Client::connect(cluster.addr())?;
//! let answers = client.pipeline(&[
//!     Request::Put { id: 1, content: b"one" },
//!     Request::Put { id: 2, content: b"two" },
//!     Request::Get { id: 3 },
//! ]);
//! assert!(matches!(answers[0], Ok(Reply::Stored { id: 1, .. })));
//! assert!(matches!(answers[1], Ok(Reply::Stored { id: 2, .. })));
//! assert!(matches!(answers[2], Ok(Reply::NotFound { id: 3 })));
//!
//! let mut asked = HashMap::new();
//! for id in [1, 2] {
//!     asked.insert(client.send(&Request::Get { id }), id);
//! }
//! while !asked.is_empty() {
//!     let (tag, answer) = client.recv()?; // sends what is queued first
//!     let id = asked.remove(&tag).ok_or("an answer to a tag never sent")?;
//!     match answer? {
//!         Reply::Value { id: got, content } if got == id => {
//!             println!("{id}: {}", String::from_utf8_lossy(&content))
//!         }
//!         other => return Err(format!("GET {id}: {other:?}").into()),
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Errors: every ERROR code is a variant of [`wire::ErrorCode`] inside
//! [`ClientError::Server`], so each can be matched; a timeout on this side
//! is [`ClientError::TimedOut`], a broken connection [`ClientError::Io`]:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use rrstore::{testing::LocalCluster, Client, ClientError, ErrorCode};
//!
//! let cluster = LocalCluster::start(1)?;
//! let mut client = Client::connect(cluster.addr())?;
//! let too_big = vec![0u8; rrstore::wire::DEFAULT_MAX_CONTENT + 1];
//! match client.put(1, &too_big) {
//!     Err(ClientError::Server { code: ErrorCode::TooLarge, message }) => {
//!         println!("refused: {message}");
//!     }
//!     Err(ClientError::Server { code: ErrorCode::Busy | ErrorCode::Unavailable, .. }) => {
//!         // nothing was stored: retry later
//!     }
//!     Err(ClientError::Server { code: ErrorCode::Timeout, .. } | ClientError::TimedOut) => {
//!         // maybe stored, maybe not: read it back, or write it again
//!     }
//!     other => return Err(format!("expected TOO_LARGE, got {other:?}").into()),
//! }
//! // TOO_LARGE, MALFORMED and UNAUTHORIZED close the connection.
//! assert!(ErrorCode::TooLarge.closes_connection());
//! let mut client = Client::connect(cluster.addr())?;
//! client.put(1, b"small enough")?;
//! # Ok(())
//! # }
//! ```
//!
//! # Invariants
//! - Every request gets a fresh, nonzero tag. An answer must carry a tag in
//!   flight (else [`ClientError::Protocol`]), except tag 0, which the LB
//!   uses for an ERROR about the connection itself (a frame it could not
//!   read); it answers what was in flight before, then closes.
//! - [`Client::put`], [`Client::get`], [`Client::ping`] and [`Client::auth`]
//!   return the answer to their own tag only. Answers to earlier
//!   [`Client::send`]s that arrive meanwhile are kept, in arrival order, for
//!   [`Client::recv`]; the late answer to a call that timed out is dropped.
//! - Nothing from the socket is trusted: a frame longer than the content
//!   limit ([`Client::set_max_content`]) is refused from its length alone,
//!   before it is buffered; no input panics.

mod admin;
mod error;

pub use admin::{digest, dump, hex, members, stats, AdminConn, DigestInfo};
pub use error::ClientError;

use crate::wire::{self, Parse, Request, Response};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The largest VALUE content a client accepts by default: generous, since
/// an LB may be configured with a larger `--max-content` than its default;
/// only this client's memory is at stake. See [`Client::set_max_content`].
pub const MAX_RESPONSE_CONTENT: usize = 64 << 20;
/// The default timeout of [`Client::connect`]: for connecting, and for each
/// read and write after.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// [`Client::pipeline`] keeps at most this many requests in flight, and
/// tops up once half are answered,
const PIPELINE_WINDOW: usize = 64;
/// with at most about this many bytes of requests at a time, so that a
/// blocking write never waits on an LB that waits for us to read.
const PIPELINE_BYTES: usize = 64 * 1024;

/// A successful answer, with owned bytes. ERROR answers are
/// [`ClientError`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A PUT was stored, by this worker.
    Stored {
        id: u64,
        worker: u32,
    },
    /// A GET found this content.
    Value {
        id: u64,
        content: Vec<u8>,
    },
    /// A GET found nothing.
    NotFound {
        id: u64,
    },
    Pong,
    AuthOk,
}

impl Reply {
    fn from_wire(response: Response<'_>) -> Result<Reply, ClientError> {
        Ok(match response {
            Response::Stored { id, worker } => Reply::Stored { id, worker },
            Response::Value { id, content } => Reply::Value {
                id,
                content: content.to_vec(),
            },
            Response::NotFound { id } => Reply::NotFound { id },
            Response::Pong => Reply::Pong,
            Response::AuthOk => Reply::AuthOk,
            Response::Error { code, message } => return Err(ClientError::from_wire(code, message)),
        })
    }
}

/// Connects to the first address of `addr` that answers within `timeout`,
/// which then also bounds every read and write.
pub(crate) fn dial(addr: impl ToSocketAddrs, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to");
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A protocol v1 connection to an LB. Blocking; one per thread.
pub struct Client {
    stream: TcpStream,
    /// Input; `rbuf[rpos..]` is not parsed yet.
    rbuf: Vec<u8>,
    rpos: usize,
    /// Requests queued by `send`, written by `flush` (or `recv`).
    wbuf: Vec<u8>,
    next_tag: u32,
    max_content: usize,
    /// Tags sent and not answered yet.
    in_flight: HashSet<u32>,
    /// Tags of calls that timed out: their answers are dropped on arrival.
    abandoned: HashSet<u32>,
    /// Answers read while a call waited for its own, for `recv`.
    early: VecDeque<(u32, Result<Reply, ClientError>)>,
    /// False once raw bytes were sent: tags can no longer be checked.
    checked: bool,
}

impl Client {
    /// Connects with [`DEFAULT_TIMEOUT`].
    pub fn connect(addr: impl ToSocketAddrs) -> Result<Client, ClientError> {
        Client::connect_timeout(addr, DEFAULT_TIMEOUT)
    }

    /// Connects within `timeout`, which then also bounds every read and
    /// write ([`ClientError::TimedOut`] past it; see
    /// [`Client::set_read_timeout`]).
    pub fn connect_timeout(
        addr: impl ToSocketAddrs,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        Ok(Client {
            stream: dial(addr, timeout)?,
            rbuf: Vec::new(),
            rpos: 0,
            wbuf: Vec::new(),
            next_tag: 1,
            max_content: MAX_RESPONSE_CONTENT,
            in_flight: HashSet::new(),
            abandoned: HashSet::new(),
            early: VecDeque::new(),
            checked: true,
        })
    }

    /// Sets the largest VALUE content this client accepts (default
    /// [`MAX_RESPONSE_CONTENT`]).
    pub fn set_max_content(&mut self, max: usize) {
        self.max_content = max;
    }

    /// How long a read waits for the LB (`None`: forever); past it, the
    /// call fails with [`ClientError::TimedOut`].
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<(), ClientError> {
        Ok(self.stream.set_read_timeout(timeout)?)
    }

    /// AUTH with the client token of an LB run with `--client-token-file`
    /// (an LB without one answers AUTH_OK to anything). A wrong token is
    /// [`ClientError::Server`] with [`wire::ErrorCode::Unauthorized`], and
    /// the LB closes the connection.
    pub fn auth(&mut self, token: &[u8]) -> Result<(), ClientError> {
        match self.call(&Request::Auth { token })? {
            Reply::AuthOk => Ok(()),
            r => Err(unexpected("AUTH", &r)),
        }
    }

    /// Stores `content` under `id`; returns the worker that stored it.
    pub fn put(&mut self, id: u64, content: &[u8]) -> Result<u32, ClientError> {
        match self.call(&Request::Put { id, content })? {
            Reply::Stored { id: got, worker } if got == id => Ok(worker),
            r => Err(unexpected("PUT", &r)),
        }
    }

    /// The content stored under `id`; `None` if there is none.
    pub fn get(&mut self, id: u64) -> Result<Option<Vec<u8>>, ClientError> {
        match self.call(&Request::Get { id })? {
            Reply::Value { id: got, content } if got == id => Ok(Some(content)),
            Reply::NotFound { id: got } if got == id => Ok(None),
            r => Err(unexpected("GET", &r)),
        }
    }

    pub fn ping(&mut self) -> Result<(), ClientError> {
        match self.call(&Request::Ping)? {
            Reply::Pong => Ok(()),
            r => Err(unexpected("PING", &r)),
        }
    }

    /// Sends every request, at most 64 in flight, and returns the answer to
    /// each in request order, matched by tag. If the connection fails (or
    /// the LB closes it after an ERROR with tag 0), every request not
    /// answered by then gets that error, and the client is of no further use.
    pub fn pipeline(&mut self, reqs: &[Request<'_>]) -> Vec<Result<Reply, ClientError>> {
        let mut answers: Vec<Option<Result<Reply, ClientError>>> =
            std::iter::repeat_with(|| None).take(reqs.len()).collect();
        let mut slot: HashMap<u32, usize> = HashMap::new();
        let mut next = 0;
        // What ends the connection: after an ERROR with tag 0 the LB still
        // answers what was in flight, then closes.
        let mut fatal: Option<ClientError> = None;
        loop {
            if fatal.is_none() && slot.len() <= PIPELINE_WINDOW / 2 {
                let start = self.wbuf.len();
                while next < reqs.len()
                    && slot.len() < PIPELINE_WINDOW
                    && self.wbuf.len() - start < PIPELINE_BYTES
                {
                    slot.insert(self.send(&reqs[next]), next);
                    next += 1;
                }
            }
            if slot.is_empty() {
                break;
            }
            match self.read_answer() {
                Ok((0, Err(e))) if fatal.is_none() => fatal = Some(e),
                Ok((tag, answer)) => match slot.remove(&tag) {
                    Some(i) => answers[i] = Some(answer),
                    None => self.early.push_back((tag, answer)),
                },
                Err(e) => {
                    self.abandoned.extend(slot.keys());
                    fatal = Some(fatal.unwrap_or(e));
                    break;
                }
            }
        }
        answers
            .into_iter()
            .map(|a| match (a, &fatal) {
                (Some(a), _) => a,
                (None, Some(e)) => Err(e.duplicate()),
                (None, None) => Err(ClientError::Protocol("no answer".into())),
            })
            .collect()
    }

    /// Queues a request (nothing is written yet); returns its tag.
    pub fn send(&mut self, req: &Request<'_>) -> u32 {
        let tag = self.next_tag;
        // Tag 0 is the LB's for errors about the connection: never used.
        self.next_tag = self.next_tag.checked_add(1).unwrap_or(1);
        wire::encode_request(&mut self.wbuf, tag, req);
        self.in_flight.insert(tag);
        tag
    }

    /// Writes every queued request.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf)?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// The next answer and its tag, in arrival order, after writing what is
    /// queued. The outer error is the connection's (`Io` with
    /// `UnexpectedEof` once the LB has closed it; [`ClientError::TimedOut`]
    /// leaves the connection usable), the inner one the request's. Tag 0
    /// carries an ERROR about the connection, which the LB then closes.
    pub fn recv(&mut self) -> Result<(u32, Result<Reply, ClientError>), ClientError> {
        match self.early.pop_front() {
            Some(answer) => Ok(answer),
            None => self.read_answer(),
        }
    }

    /// Flushes, then tells the LB this client will send nothing more; the
    /// answers to what was sent still arrive.
    pub fn shutdown_write(&mut self) -> Result<(), ClientError> {
        self.flush()?;
        Ok(self.stream.shutdown(std::net::Shutdown::Write)?)
    }

    /// Queues raw bytes (for tests of hostile input). From then on answers
    /// are no longer checked against the tags in flight.
    #[doc(hidden)]
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.checked = false;
        self.wbuf.extend_from_slice(bytes);
    }

    /// Sends one request and waits for its own answer.
    fn call(&mut self, req: &Request<'_>) -> Result<Reply, ClientError> {
        let tag = self.send(req);
        loop {
            match self.read_answer() {
                Ok((got, answer)) if got == tag => return answer,
                Ok((0, Err(e))) => return Err(e),
                Ok(other) => self.early.push_back(other),
                Err(e) => {
                    if matches!(e, ClientError::TimedOut) {
                        self.abandoned.insert(tag);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Flushes, then reads the next answer from the socket (not `early`),
    /// dropping those to abandoned calls.
    fn read_answer(&mut self) -> Result<(u32, Result<Reply, ClientError>), ClientError> {
        self.flush()?;
        loop {
            let (tag, answer) = self.read_frame()?;
            let asked = self.in_flight.remove(&tag);
            if self.abandoned.remove(&tag) {
                continue;
            }
            if asked || !self.checked || (tag == 0 && answer.is_err()) {
                return Ok((tag, answer));
            }
            return Err(ClientError::Protocol(format!(
                "an answer with tag {tag}, which is not in flight"
            )));
        }
    }

    /// The next whole frame, reading as needed.
    fn read_frame(&mut self) -> Result<(u32, Result<Reply, ClientError>), ClientError> {
        loop {
            match wire::parse_response(&self.rbuf[self.rpos..], self.max_content) {
                Parse::Frame { tag, msg, consumed } => {
                    let answer = Reply::from_wire(msg);
                    self.rpos += consumed;
                    if self.rpos == self.rbuf.len() {
                        self.rbuf.clear();
                        self.rpos = 0;
                    }
                    return Ok((tag, answer));
                }
                Parse::Reject { code, .. } => {
                    return Err(ClientError::Protocol(format!(
                        "bad response frame: {}",
                        code.name()
                    )))
                }
                Parse::Incomplete => self.fill()?,
            }
        }
    }

    /// Reads what the socket has (at least one byte) after the unparsed input.
    fn fill(&mut self) -> Result<(), ClientError> {
        self.rbuf.drain(..self.rpos);
        self.rpos = 0;
        let old = self.rbuf.len();
        self.rbuf.resize(old + 64 * 1024, 0);
        let read = self.stream.read(&mut self.rbuf[old..]);
        self.rbuf.truncate(old + *read.as_ref().unwrap_or(&0));
        match read {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )
            .into()),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("peer", &self.stream.peer_addr().ok())
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

fn unexpected(what: &str, r: &Reply) -> ClientError {
    ClientError::Protocol(format!("unexpected reply to {what}: {r:?}"))
}
