//! Registration with the LB: blocking, before the event loop starts.

use crate::auth::{self, Identity, Secret};
use crate::msg::{self, Msg};
use mio::net::TcpStream;
use std::error::Error;
use std::io::{Read, Write};
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

/// A stop signal came before the worker registered: it exits at once
/// (and successfully), its log as it was, rather than join only to leave.
#[derive(Debug)]
pub(super) struct StoppedBeforeRegistering;

impl std::fmt::Display for StoppedBeforeRegistering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped before registering with the LB")
    }
}

impl Error for StoppedBeforeRegistering {}

/// What registration yields: the LB link (and any bytes already read from
/// it), our ID and origin, and the membership at that moment.
pub(super) struct Registration {
    pub(super) stream: TcpStream,
    pub(super) early: Vec<u8>,
    pub(super) id: u32,
    /// The origin this process numbers its records under.
    pub(super) origin: u32,
    pub(super) members: Vec<msg::Member>,
    /// The LB's content limit.
    pub(super) max_content: usize,
    /// The LB runs `--ack all`.
    pub(super) ack_all: bool,
}

/// Connects to the LB (retrying until `patience` has passed), registers,
/// and waits for the welcome; each connect and the wait for the welcome
/// give up after `attempt`. Blocking: at start-up this happens before the
/// loop starts; a re-registration from the loop passes a short `attempt`,
/// so an unreachable or stopped LB stalls the loop only that long. With a
/// cluster secret the connection authenticates first (as `id`, `advertise`).
/// `origin` 0 (a process registering for the first time) asks for one;
/// `max_origin` is the highest origin our vector names. `stopped` is
/// asked before each connection attempt; once it says yes, this gives up
/// with [`StoppedBeforeRegistering`].
#[allow(clippy::too_many_arguments)]
pub(super) fn register(
    lb: &str,
    patience: Duration,
    attempt: Duration,
    stopped: &mut dyn FnMut() -> bool,
    id: u32,
    origin: u32,
    max_origin: u32,
    max_version: u64,
    advertise: &str,
    secret: Option<&Secret>,
) -> Result<Registration, Box<dyn Error>> {
    let deadline = Instant::now() + patience;
    let mut backoff = Duration::from_millis(20);
    let mut stream = loop {
        if stopped() {
            return Err(Box::new(StoppedBeforeRegistering));
        }
        match connect(lb, attempt) {
            Ok(s) => break s,
            Err(e) if Instant::now() + backoff < deadline => {
                if backoff >= Duration::from_millis(640) {
                    log::info!("LB {lb} not reachable yet ({e}); retrying");
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(format!("cannot reach the LB at {lb}: {e}").into()),
        }
    };
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(attempt))?;
    stream.set_write_timeout(Some(attempt))?;
    let mut buf = Vec::new();
    if let Some(secret) = secret {
        let me = Identity::new(id, advertise);
        auth::dial_blocking(&mut stream, secret, me, Some(0), &mut buf)
            .map_err(|e| format!("cannot authenticate with the LB at {lb}: {e}"))?;
    }
    let mut out = Vec::new();
    msg::encode(
        &mut out,
        &Msg::Register {
            id,
            origin,
            max_origin,
            max_version,
            addr: advertise.to_string(),
        },
    );
    stream.write_all(&out)?;
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((m, _)) =
            msg::decode(&buf, 0).map_err(|c| format!("bad reply from LB: {}", c.name()))?
        {
            match m {
                Msg::Welcome {
                    id,
                    members,
                    max_content,
                    origin: given,
                    ack_all,
                } => {
                    if origin != 0 && given != origin {
                        return Err(format!(
                            "the LB gave origin {given}, but this process numbers its records as {origin}"
                        )
                        .into());
                    }
                    stream.set_read_timeout(None)?;
                    stream.set_write_timeout(None)?;
                    stream.set_nonblocking(true)?;
                    let consumed = msg::decode(&buf, 0)
                        .ok()
                        .flatten()
                        .map_or(buf.len(), |(_, n)| n);
                    buf.drain(..consumed);
                    return Ok(Registration {
                        stream: TcpStream::from_std(stream),
                        early: buf,
                        id,
                        origin: given,
                        members,
                        max_content: usize::try_from(max_content).unwrap_or(usize::MAX),
                        ack_all,
                    });
                }
                Msg::Refused { reason } => {
                    return Err(format!("the LB refused registration: {reason}").into())
                }
                other => return Err(format!("unexpected reply from LB: {other:?}").into()),
            }
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err("the LB closed the connection during registration".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Connects to the first address `lb` resolves to, giving up after `timeout`
/// (a plain connect to a partitioned host waits minutes for SYN retries).
fn connect(lb: &str, timeout: Duration) -> std::io::Result<std::net::TcpStream> {
    let addr = lb.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{lb} resolves to no address"),
        )
    })?;
    std::net::TcpStream::connect_timeout(&addr, timeout)
}
