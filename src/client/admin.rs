//! Blocking admin calls over the internal messages: `members` and `stats`
//! on the LB's control port, `digest` and `dump` on a worker's port. Each
//! opens its own connection and, given the cluster secret, authenticates
//! first (as ID 0 with no address); `None` talks to an `--insecure`
//! cluster. Re-exported from [`crate::client`].

use super::{dial, ClientError, MAX_RESPONSE_CONTENT};
use crate::auth::{self, Identity, Secret};
use crate::msg::{self, Member, Msg, Vector};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

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
            stream: dial(addr, Duration::from_secs(10))?,
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
