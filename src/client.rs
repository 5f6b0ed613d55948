//! Blocking clients over std TCP: protocol v1 for port 5059 (with
//! pipelining matched by tag) and the admin calls (`members`, `stats` on the
//! LB's control port; `digest`, `dump` on a worker's port). Used by the CLI,
//! the demo and the tests.

use crate::auth::{self, Identity, Secret};
use crate::msg::{self, Member, Msg, Vector};
use crate::wire::{self, ErrorCode, Parse, Request, Response};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The largest VALUE content a client accepts by default: generous, since
/// an LB may be configured with a larger `--max-content` than its default;
/// only this client's memory is at stake. See [`Client::set_max_content`].
pub const MAX_RESPONSE_CONTENT: usize = 64 << 20;

/// A response with owned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Stored { id: u64, worker: u32 },
    Value { id: u64, content: Vec<u8> },
    NotFound { id: u64 },
    Pong,
    AuthOk,
    Error { code: u16, message: String },
}

#[derive(Debug)]
pub enum ClientError {
    Io(io::Error),
    /// The server answered ERROR.
    Server {
        code: u16,
        message: String,
    },
    /// The server sent something this client cannot make sense of.
    Protocol(String),
    /// The cluster handshake failed (admin connections).
    Auth(auth::AuthError),
}

impl ClientError {
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => ErrorCode::from_u16(*code),
            _ => None,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "{e}"),
            ClientError::Server { code, message } => {
                let name = ErrorCode::from_u16(*code).map_or("ERROR", |c| c.name());
                write!(f, "{name} ({code}): {message}")
            }
            ClientError::Protocol(m) => write!(f, "protocol error: {m}"),
            ClientError::Auth(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

fn connect(addr: &str, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: no address"));
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

/// A protocol v1 client. `send` queues, `flush` writes, `recv` reads the
/// next response in arrival order (match it by tag when pipelining).
pub struct Client {
    stream: TcpStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    next_tag: u32,
    max_content: usize,
}

impl Client {
    pub fn connect(addr: &str) -> io::Result<Client> {
        Client::connect_timeout(addr, Duration::from_secs(10))
    }

    pub fn connect_timeout(addr: &str, timeout: Duration) -> io::Result<Client> {
        Ok(Client {
            stream: connect(addr, timeout)?,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            next_tag: 1,
            max_content: MAX_RESPONSE_CONTENT,
        })
    }

    /// Sets the largest VALUE content this client accepts.
    pub fn set_max_content(&mut self, max: usize) {
        self.max_content = max;
    }

    /// Queues a request; returns its tag.
    pub fn send(&mut self, req: &Request<'_>) -> u32 {
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1);
        wire::encode_request(&mut self.wbuf, tag, req);
        tag
    }

    /// How long [`Client::recv`] waits for a response (`None`: forever);
    /// past it, `recv` fails with `WouldBlock` or `TimedOut`.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }

    /// Queues raw bytes (for tests of hostile input).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.stream.write_all(&self.wbuf)?;
        self.wbuf.clear();
        Ok(())
    }

    /// Flushes, then tells the LB this client will send nothing more; the
    /// answers to what was sent still arrive.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        self.flush()?;
        self.stream.shutdown(std::net::Shutdown::Write)
    }

    /// The next response and its tag. EOF is `UnexpectedEof`.
    pub fn recv(&mut self) -> Result<(u32, Reply), ClientError> {
        loop {
            match wire::parse_response(&self.rbuf, self.max_content) {
                Parse::Frame { tag, msg, consumed } => {
                    let reply = match msg {
                        Response::Stored { id, worker } => Reply::Stored { id, worker },
                        Response::Value { id, content } => Reply::Value {
                            id,
                            content: content.to_vec(),
                        },
                        Response::NotFound { id } => Reply::NotFound { id },
                        Response::Pong => Reply::Pong,
                        Response::AuthOk => Reply::AuthOk,
                        Response::Error { code, message } => Reply::Error {
                            code,
                            message: String::from_utf8_lossy(message).into_owned(),
                        },
                    };
                    self.rbuf.drain(..consumed);
                    return Ok((tag, reply));
                }
                Parse::Reject { code, .. } => {
                    return Err(ClientError::Protocol(format!(
                        "bad response frame: {}",
                        code.name()
                    )))
                }
                Parse::Incomplete => {}
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                )
                .into());
            }
            self.rbuf.extend_from_slice(&chunk[..n]);
        }
    }

    fn call(&mut self, req: &Request<'_>) -> Result<Reply, ClientError> {
        let tag = self.send(req);
        self.flush()?;
        let (got, reply) = self.recv()?;
        // MALFORMED and TOO_LARGE may carry tag 0 (the frame's tag was not
        // read); they answer whatever was in flight, and the LB closes.
        if let (0, Reply::Error { code, message }) = (got, &reply) {
            return Err(ClientError::Server {
                code: *code,
                message: message.clone(),
            });
        }
        if got != tag {
            return Err(ClientError::Protocol(format!(
                "response tag {got}, expected {tag}"
            )));
        }
        match reply {
            Reply::Error { code, message } => Err(ClientError::Server { code, message }),
            r => Ok(r),
        }
    }

    /// PUT; returns the worker that stored it.
    pub fn put(&mut self, id: u64, content: &[u8]) -> Result<u32, ClientError> {
        match self.call(&Request::Put { id, content })? {
            Reply::Stored { worker, .. } => Ok(worker),
            r => Err(ClientError::Protocol(format!(
                "unexpected reply to PUT: {r:?}"
            ))),
        }
    }

    /// GET; `None` for not found.
    pub fn get(&mut self, id: u64) -> Result<Option<Vec<u8>>, ClientError> {
        match self.call(&Request::Get { id })? {
            Reply::Value { content, .. } => Ok(Some(content)),
            Reply::NotFound { .. } => Ok(None),
            r => Err(ClientError::Protocol(format!(
                "unexpected reply to GET: {r:?}"
            ))),
        }
    }

    /// AUTH with the client token of an LB run with `--client-token-file`
    /// (an LB without one answers AUTH_OK to anything). A wrong token is
    /// `ClientError::Server` with code 7, UNAUTHORIZED, and the LB closes.
    pub fn auth(&mut self, token: &[u8]) -> Result<(), ClientError> {
        match self.call(&Request::Auth { token })? {
            Reply::AuthOk => Ok(()),
            r => Err(ClientError::Protocol(format!(
                "unexpected reply to AUTH: {r:?}"
            ))),
        }
    }

    pub fn ping(&mut self) -> Result<(), ClientError> {
        match self.call(&Request::Ping)? {
            Reply::Pong => Ok(()),
            r => Err(ClientError::Protocol(format!(
                "unexpected reply to PING: {r:?}"
            ))),
        }
    }
}

/// A blocking connection speaking the internal messages (admin tools).
pub struct AdminConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// What a worker reports for `verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestInfo {
    pub id: u32,
    pub records: u64,
    pub digest: [u8; 16],
    pub vector: Vector,
}

impl AdminConn {
    /// Connects and, given the cluster secret, authenticates (as ID 0 with
    /// no address); `None` talks to a cluster run with `--insecure`.
    pub fn connect(addr: &str, secret: Option<&Secret>) -> Result<AdminConn, ClientError> {
        let mut c = AdminConn {
            stream: connect(addr, Duration::from_secs(10))?,
            buf: Vec::new(),
        };
        if let Some(secret) = secret {
            auth::dial_blocking(
                &mut c.stream,
                secret,
                Identity::new(0, ""),
                None,
                &mut c.buf,
            )
            .map_err(ClientError::Auth)?;
        }
        Ok(c)
    }

    pub fn send(&mut self, m: &Msg<'_>) -> io::Result<()> {
        let mut out = Vec::new();
        msg::encode(&mut out, m);
        self.stream.write_all(&out)
    }

    /// Reads the next message and hands it to `f`.
    pub fn next<R>(&mut self, f: impl FnOnce(Msg<'_>) -> R) -> Result<R, ClientError> {
        loop {
            match msg::decode(&self.buf, MAX_RESPONSE_CONTENT) {
                Ok(Some((m, consumed))) => {
                    let r = f(m);
                    self.buf.drain(..consumed);
                    return Ok(r);
                }
                Ok(None) => {}
                Err(c) => return Err(ClientError::Protocol(format!("bad frame: {}", c.name()))),
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed the connection",
                )
                .into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn unexpected(what: &str, m: &Msg<'_>) -> ClientError {
    ClientError::Protocol(format!("unexpected reply to {what}: {m:?}"))
}

/// The LB's worker table.
pub fn members(control: &str, secret: Option<&Secret>) -> Result<Vec<Member>, ClientError> {
    let mut c = AdminConn::connect(control, secret)?;
    c.send(&Msg::MembersRequest)?;
    c.next(|m| match m {
        Msg::Members { members } => Ok(members),
        other => Err(unexpected("members", &other)),
    })?
}

/// The LB's counters and latency percentiles.
pub fn stats(control: &str, secret: Option<&Secret>) -> Result<Vec<(String, u64)>, ClientError> {
    let mut c = AdminConn::connect(control, secret)?;
    c.send(&Msg::StatsRequest)?;
    c.next(|m| match m {
        Msg::Stats { pairs } => Ok(pairs),
        other => Err(unexpected("stats", &other)),
    })?
}

/// A worker's record count, digest and vector.
pub fn digest(worker: &str, secret: Option<&Secret>) -> Result<DigestInfo, ClientError> {
    let mut c = AdminConn::connect(worker, secret)?;
    c.send(&Msg::DigestRequest)?;
    c.next(|m| match m {
        Msg::Digest {
            id,
            records,
            digest,
            vector,
        } => Ok(DigestInfo {
            id,
            records,
            digest,
            vector,
        }),
        other => Err(unexpected("digest", &other)),
    })?
}

/// Streams a worker's records in ascending id order into `f`.
pub fn dump(
    worker: &str,
    secret: Option<&Secret>,
    mut f: impl FnMut(u64, &[u8]),
) -> Result<u64, ClientError> {
    let mut c = AdminConn::connect(worker, secret)?;
    c.send(&Msg::DumpRequest)?;
    let mut n = 0;
    loop {
        let done = c.next(|m| match m {
            Msg::DumpEntry { id, content } => {
                f(id, content);
                Ok(false)
            }
            Msg::DumpEnd => Ok(true),
            other => Err(unexpected("dump", &other)),
        })??;
        if done {
            return Ok(n);
        }
        n += 1;
    }
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
