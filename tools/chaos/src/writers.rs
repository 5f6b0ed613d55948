//! The writer threads: each PUTs its own unique ids (see [`crate::records`])
//! through the LB at its share of the target rate, with a small window of
//! pipelined requests, and keeps every STORED it gets.
//!
//! Faults make requests fail in every way: ERROR UNAVAILABLE / BUSY /
//! TIMEOUT, connections refused while the LB is down, reset or closed when
//! it dies, or no answer at all. Each failure is counted by kind. After an
//! ERROR the writer keeps its connection (pausing briefly after UNAVAILABLE
//! or BUSY rather than spinning); a broken or hung connection is dropped and
//! re-opened after a short backoff, and the requests it had in flight are
//! only "unacknowledged": they may or may not have been stored, so they are
//! never counted as lost. Nothing read from the socket is trusted: a reply
//! that does not parse, carries an unknown tag, or names another id is an
//! anomaly, reported and failing the run, never a panic.

use crate::records;
use rrstore::wire::{self, ErrorCode, Parse, Request, Response};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long one blocking read waits before the loop looks at its clock.
const READ_SLICE: Duration = Duration::from_millis(5);
/// Largest VALUE we would accept (we never GET; STORED and ERROR are small).
const MAX_REPLY_CONTENT: usize = 64 * 1024;
/// How long a writer sends nothing after UNAVAILABLE or BUSY.
const HOLD: Duration = Duration::from_millis(20);
/// How far behind schedule a writer may fall before it stops catching up.
const MAX_LAG: Duration = Duration::from_millis(100);

/// Counters all writers share, for progress lines while the run goes on.
#[derive(Default)]
pub struct Progress {
    pub attempted: AtomicU64,
    pub acked: AtomicU64,
    pub errors: AtomicU64,
}

pub struct WriterConfig {
    pub lb: SocketAddr,
    pub client: usize,
    /// Requests per second for this writer; 0 means as fast as the window allows.
    pub rate: f64,
    pub window: usize,
    /// A request unanswered this long means the connection is hung.
    pub reply_timeout: Duration,
    pub stop: Arc<AtomicBool>,
    pub progress: Arc<Progress>,
}

/// What one writer did.
#[derive(Default)]
pub struct WriterResult {
    pub client: usize,
    /// Requests sent; ids `records::id(client, 1..=attempted)`.
    pub attempted: u64,
    /// Every STORED: (id, worker that stored it).
    pub acked: Vec<(u64, u32)>,
    /// Failures by kind (error code name, or how the connection failed).
    pub errors: BTreeMap<String, u64>,
    /// Requests that got no answer before their connection was dropped.
    pub unanswered: u64,
    pub connections: u64,
    /// Replies that should never happen.
    pub anomalies: Vec<String>,
}

impl WriterResult {
    fn error(&mut self, kind: &str, progress: &Progress) {
        *self.errors.entry(kind.to_string()).or_default() += 1;
        progress.errors.fetch_add(1, Ordering::Relaxed);
    }

    fn anomaly(&mut self, what: String) {
        if self.anomalies.len() < 20 {
            self.anomalies.push(what);
        }
    }
}

pub fn spawn(cfg: WriterConfig) -> io::Result<JoinHandle<WriterResult>> {
    std::thread::Builder::new()
        .name(format!("writer-{}", cfg.client))
        .spawn(move || run(cfg))
}

struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    next_tag: u32,
    /// tag -> (id, sent at)
    inflight: HashMap<u32, (u64, Instant)>,
}

impl Conn {
    fn open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(READ_SLICE))?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        Ok(Conn {
            stream,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            next_tag: 1,
            inflight: HashMap::new(),
        })
    }

    fn queue_put(&mut self, id: u64) {
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1).max(1);
        let content = records::content(id);
        wire::encode_request(
            &mut self.wbuf,
            tag,
            &Request::Put {
                id,
                content: &content,
            },
        );
        self.inflight.insert(tag, (id, Instant::now()));
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf)?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Reads what has arrived (waiting at most one slice). `Ok(false)` when
    /// nothing came.
    fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed by the LB",
            )),
            Ok(n) => {
                self.rbuf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A short name for how an I/O operation failed.
fn io_kind(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "refused".into(),
        io::ErrorKind::ConnectionReset => "reset".into(),
        io::ErrorKind::ConnectionAborted => "aborted".into(),
        io::ErrorKind::UnexpectedEof => "closed".into(),
        io::ErrorKind::BrokenPipe => "broken_pipe".into(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "io_timeout".into(),
        k => format!("io_{k:?}").to_lowercase(),
    }
}

/// What the reply loop decided about the connection.
enum After {
    /// `hold`: the LB answered UNAVAILABLE or BUSY; send nothing for a
    /// moment rather than spin on refusals.
    Keep {
        hold: bool,
    },
    Drop,
}

fn handle_replies(c: &mut Conn, r: &mut WriterResult, p: &Progress) -> After {
    let mut hold = false;
    loop {
        let (tag, consumed, outcome) = match wire::parse_response(&c.rbuf, MAX_REPLY_CONTENT) {
            Parse::Incomplete => return After::Keep { hold },
            Parse::Reject { code, .. } => {
                r.anomaly(format!("unparseable reply: {}", code.name()));
                r.error("bad_reply", p);
                return After::Drop;
            }
            Parse::Frame { tag, msg, consumed } => {
                let outcome = match msg {
                    Response::Stored { id, worker } => Ok((id, worker)),
                    Response::Error { code, .. } => Err(code),
                    other => {
                        r.anomaly(format!(
                            "reply to a PUT that is not STORED or ERROR: {other:?}"
                        ));
                        Err(0)
                    }
                };
                (tag, consumed, outcome)
            }
        };
        c.rbuf.drain(..consumed);
        let Some((sent_id, _)) = c.inflight.remove(&tag) else {
            if tag == 0 {
                // MALFORMED / TOO_LARGE answer whatever was in flight; the LB closes.
                r.anomaly(format!("connection-level error {outcome:?} (tag 0)"));
                r.error("tag0_error", p);
                return After::Drop;
            }
            r.anomaly(format!(
                "reply with a tag not in flight: {tag} ({outcome:?})"
            ));
            continue;
        };
        match outcome {
            Ok((id, worker)) if id == sent_id => {
                r.acked.push((id, worker));
                p.acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok((id, worker)) => {
                r.anomaly(format!(
                    "STORED id={id} worker={worker} for a PUT of id {sent_id} (tag {tag})"
                ));
            }
            Err(code) => {
                hold |= code == ErrorCode::Unavailable as u16 || code == ErrorCode::Busy as u16;
                let name = ErrorCode::from_u16(code)
                    .map_or_else(|| format!("error_{code}"), |c| c.name().to_string());
                r.error(&name, p);
            }
        }
    }
}

fn run(cfg: WriterConfig) -> WriterResult {
    let mut r = WriterResult {
        client: cfg.client,
        ..WriterResult::default()
    };
    let p = &*cfg.progress;
    let interval = (cfg.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / cfg.rate));
    let mut conn: Option<Conn> = None;
    let mut next_send = Instant::now();
    // No new request before this (after UNAVAILABLE or BUSY).
    let mut hold_until = Instant::now();
    let mut backoff = Duration::from_millis(20);
    let mut drain_deadline: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let stopping = cfg.stop.load(Ordering::Relaxed);
        if stopping && drain_deadline.is_none() {
            drain_deadline = Some(now + cfg.reply_timeout);
        }
        let idle = conn.as_ref().is_none_or(|c| c.inflight.is_empty());
        if stopping && (idle || drain_deadline.is_some_and(|d| now >= d)) {
            if let Some(c) = conn.take() {
                r.unanswered += c.inflight.len() as u64;
            }
            return r;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open(cfg.lb) {
                Ok(c) => {
                    r.connections += 1;
                    backoff = Duration::from_millis(20);
                    conn.insert(c)
                }
                Err(e) => {
                    r.error(&format!("connect_{}", io_kind(&e)), p);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(320));
                    continue;
                }
            },
        };

        if !stopping && now >= hold_until {
            while c.inflight.len() < cfg.window {
                if let Some(iv) = interval {
                    if now < next_send {
                        break;
                    }
                    // Behind schedule (after an outage): catch up at most
                    // MAX_LAG worth, never the whole backlog.
                    next_send += iv;
                    if next_send + MAX_LAG < now {
                        next_send = now.checked_sub(MAX_LAG).unwrap_or(now);
                    }
                }
                r.attempted += 1;
                p.attempted.fetch_add(1, Ordering::Relaxed);
                c.queue_put(records::id(cfg.client, r.attempted));
            }
        }

        let mut failed = c.flush().err();
        if failed.is_none() {
            match c.fill() {
                Ok(_) => match handle_replies(c, &mut r, p) {
                    After::Keep { hold: false } => {}
                    After::Keep { hold: true } => hold_until = Instant::now() + HOLD,
                    After::Drop => {
                        r.unanswered += c.inflight.len() as u64;
                        conn = None;
                        continue;
                    }
                },
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            r.error(&io_kind(&e), p);
            r.unanswered += c.inflight.len() as u64;
            conn = None;
            std::thread::sleep(backoff);
            continue;
        }
        let hung = c
            .inflight
            .values()
            .any(|(_, sent)| now.duration_since(*sent) > cfg.reply_timeout);
        if hung {
            r.error("no_reply", p);
            r.unanswered += c.inflight.len() as u64;
            conn = None;
            continue;
        }
        if c.inflight.is_empty() {
            let resume = if interval.is_some() {
                next_send.max(hold_until)
            } else {
                hold_until
            };
            if let Some(wait) = resume.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait.min(Duration::from_millis(20)));
            }
        }
    }
}
