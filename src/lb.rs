//! `rrstore lb`: one single-threaded mio loop.
//!
//! - Port 5059 (`--listen`): clients speaking protocol v1 (`wire.rs`).
//! - Control port (`--control`): workers register and stay connected (their
//!   PUT/GET traffic, acks and reports flow on that connection), and admin
//!   tools ask for members and stats.
//!
//! Each PUT or GET goes to the next active worker (`membership.rs`), tagged
//! with a request id that is never reused; PUTs are stamped with a version
//! from the LB's clock `max(last + 1, unix µs, highest version any worker
//! reported)`, which orders writes of one id by their arrival at the LB. A
//! confirmation is logged through the processed-log thread (`plog.rs`), then
//! answered. A GET carries the frontier of acknowledged writes the chosen
//! worker may not have yet, and the worker answers once it covers it.
//!
//! Per loop turn: drain every readable socket, handle every frame, then
//! flush each connection once (responses and forwarded requests coalesce).

use crate::auth::{Handshake, Identity, Secret};
use crate::conn::Conn;
use crate::membership::{Membership, Readiness};
use crate::msg::{self, Msg, Status};
use crate::plog::{unix_micros, Confirmed, ProcessedLog};
use crate::vector::lookup;
use crate::wire::{self, ErrorCode, Parse, Request, Response};
use hdrhistogram::Histogram;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::error::Error;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod handshake;

const CLIENTS: Token = Token(usize::MAX);
const CONTROL: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
/// How long a client that got MALFORMED or TOO_LARGE may keep sending
/// before its connection is closed anyway.
const LINGER: Duration = Duration::from_secs(2);
/// Discarded input is read in steps of this much.
const READ_CHUNK_DISCARD: usize = 64 * 1024;
/// A client whose unread responses pass this many times
/// `--client-output-cap` is disconnected (the cap only stops reading it;
/// answers to requests already in flight keep adding up).
const OUTPUT_LIMIT_FACTOR: usize = 16;
/// After a restart (the LB had given out worker IDs before), workers that
/// ask for a new ID wait this long, so every worker that already has one
/// re-registers first (they retry at least every 0.8 s).
const REGISTRATION_GRACE: Duration = Duration::from_secs(2);
/// Stop reading clients altogether while a worker's queue passes this.
const WORKER_OUT_CAP: usize = 32 << 20;
/// Stop reading clients while the content of unconfirmed PUTs (kept for
/// re-dispatch) passes this.
const HELD_CONTENT_CAP: usize = 256 << 20;
/// Content buffers of answered PUTs are kept for reuse up to this many,
/// and only if they are at most [`SPARE_MAX_CAPACITY`] bytes large.
const SPARE_BUFFERS: usize = 4096;
const SPARE_MAX_CAPACITY: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct LbConfig {
    pub listen: SocketAddr,
    pub control: SocketAddr,
    pub processed_log: PathBuf,
    pub max_content: usize,
    /// Requests in flight at the LB before new ones get BUSY.
    pub max_inflight: usize,
    /// A request not confirmed by then is answered TIMEOUT.
    pub request_timeout: Duration,
    /// A worker that sends nothing (not even a heartbeat) for this long is
    /// declared dead: its connection is closed and its unconfirmed requests
    /// go to other workers.
    pub worker_timeout: Duration,
    /// `--ack all`: a worker answers STORED only once every active worker
    /// holds the record (told to workers in WELCOME).
    pub ack_all: bool,
    /// Client connections at once: accepting stops here and resumes below
    /// 90% of it.
    pub max_clients: usize,
    /// A client with nothing in flight that sends nothing for this long is
    /// disconnected.
    pub idle_timeout: Duration,
    /// A frame must be complete this long after its first byte arrived
    /// (slowloris), else ERROR TIMEOUT (tag 0) and the connection closes.
    pub frame_timeout: Duration,
    /// Stop reading a client whose unread responses pass this many bytes
    /// (it does not read them); resume below half. Past
    /// [`OUTPUT_LIMIT_FACTOR`] times this, the client is disconnected.
    pub client_output_cap: usize,
    /// Stop reading a client with this many requests in flight; resume
    /// below half (one client cannot take the whole `max_inflight`).
    pub max_inflight_per_client: u32,
    /// The cluster secret: every control-port connection must prove it
    /// holds it before anything else (`None`: `--insecure`, no handshake).
    pub secret: Option<Secret>,
    /// Clients must AUTH with the token in this file first.
    pub client_token_file: Option<PathBuf>,
}

/// A client connection's state.
struct Client {
    /// Unique per accepted connection: answers for a closed client never
    /// reach a new one that reuses its slab key.
    serial: u64,
    /// Not read: its unread responses or a worker's queue are over the cap.
    paused: bool,
    /// Sent MALFORMED or TOO_LARGE: closed once that error is flushed.
    closing: bool,
    /// The client finished sending (half-close): closed once every request
    /// it sent is answered and flushed.
    eof: bool,
    /// Its requests dispatched and not yet answered.
    inflight: u32,
    /// Closing after an error: our side is shut down, its input discarded.
    lingering: bool,
    /// When bytes last arrived.
    last_input: Instant,
    /// When the unfinished frame in its input began to arrive.
    partial_since: Option<Instant>,
    /// Sent the right client token (or none is required).
    authed: bool,
}

/// What the client token check makes of a request.
enum Gate {
    /// Go on and dispatch it.
    Pass,
    /// It was AUTH, and is answered.
    Answered,
    /// UNAUTHORIZED was sent; close the connection.
    Close,
}

enum Role {
    Client(Client),
    /// On the control port, first frame not yet seen.
    Control,
    Worker {
        id: u32,
        /// When a frame from it was last read (heartbeats included).
        last_heard: Instant,
    },
    Admin,
}

struct Link {
    conn: Conn,
    role: Role,
    /// A control-port connection still authenticating: no other frame is
    /// acted on until this is gone.
    auth: Option<Box<Handshake>>,
    /// Who the connection proved to be (a REGISTER must match it).
    verified: Option<Identity>,
}

/// A request sent to a worker and not yet answered. A PUT keeps its
/// content, so that it can be sent again (same version) if that worker
/// dies first.
struct Pending {
    client: usize,
    serial: u64,
    tag: u32,
    id: u64,
    worker: u32,
    put: bool,
    version: u64,
    content: Vec<u8>,
    start: Instant,
    deadline: Instant,
}

#[derive(Default)]
struct Counters {
    puts: u64,
    gets: u64,
    pings: u64,
    stored: u64,
    values: u64,
    not_found: u64,
    errors: [u64; 8],
    timeouts: u64,
    /// Requests sent again because their worker died.
    redispatched: u64,
    /// Workers that went silent past `--worker-timeout-ms`.
    declared_dead: u64,
    clients_accepted: u64,
    reads: u64,
    writes: u64,
    turns: u64,
    /// Client input thrown away after MALFORMED or TOO_LARGE.
    discarded_bytes: u64,
    /// Clients disconnected for idling past `--idle-timeout-secs`.
    idle_closed: u64,
    /// Clients disconnected for not finishing a frame in time.
    slow_closed: u64,
    /// Times accepting stopped at `--max-clients`.
    accept_paused: u64,
    /// Clients disconnected for leaving too many responses unread.
    output_closed: u64,
    /// Control connections closed for failing or skipping authentication.
    auth_rejected: u64,
}

pub struct Lb {
    poll: Poll,
    clients: TcpListener,
    control: TcpListener,
    signals: Signals,
    links: Slab<Link>,
    members: Membership,
    pending: HashMap<u64, Pending>,
    /// (deadline, request id) in send order, so deadlines are non-decreasing.
    deadlines: VecDeque<(Instant, u64)>,
    /// Deadlines of re-dispatched requests (they keep their first deadline
    /// under a new request id, so they do not fit the queue's order).
    retry_deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Requests of a dead worker waiting for an active worker to take them.
    parked: Vec<Pending>,
    /// Content bytes held in `pending` and `parked`.
    held_bytes: usize,
    /// Emptied content buffers, reused so a PUT allocates nothing.
    spare: Vec<Vec<u8>>,
    /// When worker liveness is next checked.
    next_liveness_check: Instant,
    /// When clients are next checked for idling, slow frames and trimming.
    next_client_sweep: Instant,
    /// Client connections open.
    client_count: usize,
    /// False while `client_count` is at `--max-clients`.
    accepting: bool,
    /// When this LB started.
    started: Instant,
    /// A file next to the processed log said which IDs were given out
    /// before: this is a restart.
    ids_known_before: bool,
    /// The next unused ID as last saved in that file.
    persisted_next_id: u32,
    /// What `--client-token-file` holds, if given.
    client_token: Option<crate::auth::ClientToken>,
    /// Registrations asking for a new ID, held during the grace period:
    /// (connection, incarnation, max_version, address).
    deferred: Vec<(usize, u32, u64, String)>,
    next_req: u64,
    next_serial: u64,
    clock: u64,
    /// Highest acknowledged seq per origin: what a GET must see.
    frontier: BTreeMap<u32, u64>,
    membership_changed: bool,
    /// Clients with input left unparsed because of backpressure.
    reread: Vec<usize>,
    /// Clients closing after an error: (give up at, key, serial), in order.
    lingering: VecDeque<(Instant, usize, u64)>,
    latency: Histogram<u64>,
    counters: Counters,
    plog: ProcessedLog,
    /// Who the LB is in handshakes: ID 0 and its control address.
    me: Identity,
    config: LbConfig,
}

/// Binds both ports (an already-bound pair of listeners is taken by
/// [`Lb::with_listeners`]) and runs until SIGTERM or SIGINT.
pub fn run(config: LbConfig) -> Result<(), Box<dyn Error>> {
    raise_fd_limit(config.max_clients);
    let clients = bind(config.listen)
        .map_err(|e| format!("cannot listen for clients on {}: {e}", config.listen))?;
    let control = bind(config.control)
        .map_err(|e| format!("cannot listen for workers on {}: {e}", config.control))?;
    let mut lb = Lb::with_listeners(config, clients, control)?;
    // The one line on stdout: tools that start the LB on port 0 read it.
    println!(
        "listening clients={} control={}",
        lb.clients.local_addr()?,
        lb.control.local_addr()?
    );
    std::io::Write::flush(&mut std::io::stdout())?;
    eprintln!(
        "rrstore lb: processed log {}",
        lb.config.processed_log.display()
    );
    lb.run()
}

/// Raises the soft limit on open files towards the hard limit, so that
/// `--max-clients` connections (plus workers and files) fit; says so if
/// they cannot.
fn raise_fd_limit(max_clients: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct, which `lim` is.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    let want = (max_clients as libc::rlim_t).saturating_add(256);
    if lim.rlim_cur < want {
        lim.rlim_cur = want.min(lim.rlim_max);
        // SAFETY: setrlimit reads one rlimit struct, which `lim` is.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    }
    if lim.rlim_cur < want {
        eprintln!(
            "rrstore lb: the open-file limit is {}; fewer than --max-clients {max_clients} clients will fit",
            lim.rlim_cur
        );
    }
}

/// Where the LB keeps the next unused worker ID: beside the processed log.
fn ids_path(processed_log: &std::path::Path) -> PathBuf {
    let mut name = processed_log.as_os_str().to_owned();
    name.push(".ids");
    PathBuf::from(name)
}

/// The next unused worker ID a previous LB saved, if any.
fn saved_next_id(processed_log: &std::path::Path) -> Option<u32> {
    let text = std::fs::read_to_string(ids_path(processed_log)).ok()?;
    text.trim().parse().ok()
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(TcpListener::from_std(socket.into()))
}

impl Lb {
    pub fn with_listeners(
        config: LbConfig,
        mut clients: TcpListener,
        mut control: TcpListener,
    ) -> Result<Lb, Box<dyn Error>> {
        let me = Identity::new(0, control.local_addr()?.to_string());
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut clients, CLIENTS, Interest::READABLE)?;
        poll.registry()
            .register(&mut control, CONTROL, Interest::READABLE)?;
        let mut signals = Signals::new([SIGTERM, SIGINT])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let client_token = match &config.client_token_file {
            Some(path) => Some(crate::auth::ClientToken::load(path)?),
            None => None,
        };
        let persisted_next_id = saved_next_id(&config.processed_log);
        let mut members = Membership::default();
        if let Some(next) = persisted_next_id {
            members.reserve_ids_below(next);
        }
        let plog = ProcessedLog::open(&config.processed_log).map_err(|e| {
            format!(
                "cannot open processed log {}: {e}",
                config.processed_log.display()
            )
        })?;
        Ok(Lb {
            poll,
            clients,
            control,
            signals,
            links: Slab::with_capacity(1024),
            members,
            pending: HashMap::new(),
            deadlines: VecDeque::new(),
            retry_deadlines: BinaryHeap::new(),
            parked: Vec::new(),
            held_bytes: 0,
            spare: Vec::new(),
            next_liveness_check: Instant::now(),
            next_client_sweep: Instant::now(),
            client_count: 0,
            accepting: true,
            started: Instant::now(),
            ids_known_before: persisted_next_id.is_some(),
            persisted_next_id: persisted_next_id.unwrap_or(0),
            deferred: Vec::new(),
            client_token,
            // Request ids never repeat, even across LB restarts: a worker
            // may still answer a request of the previous process.
            next_req: unix_micros().max(1),
            next_serial: 1,
            clock: 0,
            frontier: BTreeMap::new(),
            membership_changed: false,
            reread: Vec::new(),
            lingering: VecDeque::new(),
            latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            counters: Counters::default(),
            plog,
            me,
            config,
        })
    }

    pub fn run(&mut self) -> Result<(), Box<dyn Error>> {
        let mut events = Events::with_capacity(1024);
        loop {
            self.counters.turns += 1;
            self.end_of_turn();
            let timeout = if self.reread.is_empty() {
                let next = [
                    self.deadlines.front().map(|&(d, _)| d),
                    self.retry_deadlines.peek().map(|Reverse((d, _))| *d),
                    self.lingering.front().map(|&(d, _, _)| d),
                    self.members
                        .links()
                        .next()
                        .map(|_| self.next_liveness_check),
                    (!self.links.is_empty()).then_some(self.next_client_sweep),
                    (!self.deferred.is_empty()).then_some(self.started + REGISTRATION_GRACE),
                ];
                next.into_iter()
                    .flatten()
                    .min()
                    .map(|d| d.saturating_duration_since(Instant::now()) + Duration::from_millis(1))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            for event in events.iter() {
                match event.token() {
                    CLIENTS => self.accept(true),
                    CONTROL => self.accept(false),
                    SIGNALS => {
                        if self.signals.pending().next().is_some() {
                            eprintln!("rrstore lb: shutting down");
                            return Ok(());
                        }
                    }
                    Token(key) => self.on_readable(key, event.is_read_closed() || event.is_error()),
                }
            }
            for key in std::mem::take(&mut self.reread) {
                self.on_readable(key, true);
            }
            self.expire(Instant::now());
            self.register_deferred();
            if !self.accepting && self.client_count < self.config.max_clients / 10 * 9 {
                eprintln!("rrstore lb: below 90% of --max-clients again; accepting");
                self.accepting = true;
                self.accept(true);
            }
        }
    }

    fn accept(&mut self, client: bool) {
        loop {
            if client && self.client_count >= self.config.max_clients {
                if self.accepting {
                    eprintln!(
                        "rrstore lb: {} clients connected (--max-clients); not accepting more until below 90%",
                        self.client_count
                    );
                    self.counters.accept_paused += 1;
                }
                self.accepting = false;
                return;
            }
            let listener = if client { &self.clients } else { &self.control };
            match listener.accept() {
                Ok((stream, _)) => self.add_link(stream, client),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: stop accepting this turn, keep serving.
                    eprintln!("rrstore lb: accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn add_link(&mut self, stream: TcpStream, client: bool) {
        let _ = stream.set_nodelay(true);
        let entry = self.links.vacant_entry();
        let key = entry.key();
        let mut conn = Conn::new(stream);
        if conn
            .set_interest(self.poll.registry(), Token(key), true)
            .is_err()
        {
            return;
        }
        let role = if client {
            self.counters.clients_accepted += 1;
            self.client_count += 1;
            self.next_serial += 1;
            Role::Client(Client {
                serial: self.next_serial,
                paused: false,
                closing: false,
                eof: false,
                inflight: 0,
                lingering: false,
                last_input: Instant::now(),
                partial_since: None,
                authed: self.client_token.is_none(),
            })
        } else {
            Role::Control
        };
        let auth = match (&self.config.secret, client) {
            (Some(secret), false) => Some(Box::new(Handshake::accept(secret, self.me.clone()))),
            _ => None,
        };
        entry.insert(Link {
            conn,
            role,
            auth,
            verified: None,
        });
    }

    fn on_readable(&mut self, key: usize, to_eof: bool) {
        if let Some(Link {
            role: Role::Worker { last_heard, .. },
            ..
        }) = self.links.get_mut(key)
        {
            *last_heard = Instant::now();
        }
        loop {
            let Some(link) = self.links.get_mut(key) else {
                return;
            };
            let mut finished = false;
            if let Role::Client(c) = &link.role {
                if c.lingering {
                    loop {
                        let read = link.conn.read_ready(READ_CHUNK_DISCARD, true);
                        let n = link.conn.input().len();
                        link.conn.consume(n);
                        self.counters.discarded_bytes += n as u64;
                        if read.eof || link.conn.closed {
                            self.close(key);
                            return;
                        }
                        if read.drained {
                            return;
                        }
                    }
                }
                if c.paused || c.closing {
                    return;
                }
                // After end of input, frames already buffered still count.
                finished = c.eof;
            }
            let max_frame = if matches!(link.role, Role::Client(_)) {
                wire::HEADER_LEN + wire::max_request_body(self.config.max_content)
            } else {
                wire::HEADER_LEN + self.config.max_content + msg::MAX_OVERHEAD
            };
            let read = if finished {
                crate::conn::ReadOutcome {
                    eof: true,
                    ..Default::default()
                }
            } else {
                link.conn.read_ready(max_frame, to_eof)
            };
            self.counters.reads += read.syscalls as u64;
            let is_client = matches!(link.role, Role::Client(_));
            if is_client {
                self.client_frames(key);
            } else {
                self.control_frames(key);
            }
            let Some(link) = self.links.get(key) else {
                return;
            };
            if link.conn.closed || (read.eof && !is_client) {
                self.close(key);
                return;
            }
            if read.eof {
                // A half-closed client still gets every answer it is owed.
                if let Some(Link {
                    role: Role::Client(c),
                    ..
                }) = self.links.get_mut(key)
                {
                    c.eof = true;
                }
                return;
            }
            if read.drained || matches!(&link.role, Role::Client(c) if c.paused) {
                return;
            }
        }
    }

    /// Handles every whole client frame buffered on `key`. The read buffer
    /// is detached while its frames are handled, so a PUT's content goes
    /// straight from it into the worker's output buffer with no copy between.
    fn client_frames(&mut self, key: usize) {
        let Some(link) = self.links.get_mut(key) else {
            return;
        };
        let Role::Client(Client { serial, .. }) = link.role else {
            return;
        };
        let input = std::mem::take(link.conn.input_mut());
        let (start, end) = link.conn.input_range();
        let mut pos = start;
        let backlogged = self.workers_backlogged();
        loop {
            let Some(link) = self.links.get_mut(key) else {
                return;
            };
            let full = match &link.role {
                Role::Client(c) => c.inflight >= self.config.max_inflight_per_client,
                _ => false,
            };
            if link.conn.pending_out() > self.config.client_output_cap || backlogged || full {
                if let Role::Client(c) = &mut link.role {
                    c.paused = true;
                }
                break;
            }
            match wire::parse_request(&input[pos..end], self.config.max_content) {
                Parse::Incomplete => break,
                Parse::Reject { code, tag, skip } => {
                    self.counters.errors[code as usize] += 1;
                    wire::encode_error(link.conn.out(), tag, code);
                    match skip {
                        Some(n) => pos += n,
                        None => {
                            if let Role::Client(c) = &mut link.role {
                                c.closing = true;
                            }
                            break;
                        }
                    }
                }
                Parse::Frame { tag, msg, consumed } => {
                    pos += consumed;
                    match self.authorize(key, tag, &msg) {
                        Gate::Pass => self.request(key, serial, tag, msg),
                        Gate::Answered => {}
                        Gate::Close => {
                            if let Some(Link {
                                role: Role::Client(c),
                                ..
                            }) = self.links.get_mut(key)
                            {
                                c.closing = true;
                            }
                            break;
                        }
                    }
                }
            }
        }
        if let Some(link) = self.links.get_mut(key) {
            *link.conn.input_mut() = input;
            link.conn.consume(pos - start);
            let partial = !link.conn.input().is_empty();
            if let Role::Client(c) = &mut link.role {
                let now = Instant::now();
                c.last_input = now;
                // A frame held back by backpressure is not the client's delay.
                c.partial_since = match (partial && !c.paused, c.partial_since) {
                    (false, _) => None,
                    (true, Some(t)) => Some(t),
                    (true, None) => Some(now),
                };
            }
        }
    }

    fn workers_backlogged(&self) -> bool {
        self.held_bytes > HELD_CONTENT_CAP
            || self.members.links().any(|k| {
                self.links
                    .get(k)
                    .is_some_and(|l| l.conn.pending_out() > WORKER_OUT_CAP)
            })
    }

    /// The client token check (`--client-token-file`): AUTH is answered
    /// here; any other request before a good AUTH, or a wrong token, gets
    /// UNAUTHORIZED and the connection closes.
    fn authorize(&mut self, key: usize, tag: u32, req: &Request<'_>) -> Gate {
        let Some(Link {
            role: Role::Client(c),
            conn,
            ..
        }) = self.links.get_mut(key)
        else {
            return Gate::Answered;
        };
        let verdict = match (req, &self.client_token) {
            (Request::Auth { .. }, None) => Ok(()),
            (Request::Auth { token }, Some(expected)) => {
                if expected.matches(token) {
                    c.authed = true;
                    Ok(())
                } else {
                    Err(())
                }
            }
            (_, _) if c.authed => return Gate::Pass,
            (_, _) => Err(()),
        };
        match verdict {
            Ok(()) => {
                wire::encode_response(conn.out(), tag, &Response::AuthOk);
                Gate::Answered
            }
            Err(()) => {
                self.counters.errors[ErrorCode::Unauthorized as usize] += 1;
                wire::encode_error(conn.out(), tag, ErrorCode::Unauthorized);
                Gate::Close
            }
        }
    }

    /// Dispatches one client request to the next active worker.
    fn request(&mut self, key: usize, serial: u64, tag: u32, req: Request<'_>) {
        let id = match req {
            Request::Ping => {
                self.counters.pings += 1;
                if let Some(l) = self.links.get_mut(key) {
                    wire::encode_response(l.conn.out(), tag, &Response::Pong);
                }
                return;
            }
            Request::Put { id, .. } | Request::Get { id } => id,
            Request::Auth { .. } => return, // answered by `authorize`
        };
        let reject = if self.members.active().is_empty() {
            Some(ErrorCode::Unavailable)
        } else if self.pending.len() + self.parked.len() >= self.config.max_inflight {
            Some(ErrorCode::Busy)
        } else {
            None
        };
        if let Some(code) = reject {
            self.counters.errors[code as usize] += 1;
            if let Some(l) = self.links.get_mut(key) {
                wire::encode_error(l.conn.out(), tag, code);
            }
            return;
        }
        let now = Instant::now();
        let (put, version, content) = match req {
            Request::Put { content, .. } => {
                self.counters.puts += 1;
                self.clock = self.clock.saturating_add(1).max(unix_micros());
                let mut buf = self.spare.pop().unwrap_or_default();
                buf.extend_from_slice(content);
                self.held_bytes += buf.len();
                (true, self.clock, buf)
            }
            _ => {
                self.counters.gets += 1;
                (false, 0, Vec::new())
            }
        };
        let deadline = now + self.config.request_timeout;
        let p = Pending {
            client: key,
            serial,
            tag,
            id,
            worker: 0,
            put,
            version,
            content,
            start: now,
            deadline,
        };
        let req_id = self.next_req;
        self.next_req += 1;
        if let Some(p) = self.dispatch(req_id, p) {
            // Not reached: there is an active worker (checked above).
            self.parked.push(p);
        }
        if let Some(Link {
            role: Role::Client(c),
            ..
        }) = self.links.get_mut(key)
        {
            c.inflight += 1;
        }
        self.deadlines.push_back((deadline, req_id));
    }

    /// Sends a request to the next active worker and records it as
    /// pending under `req_id`; gives it back if no worker can take it.
    fn dispatch(&mut self, req_id: u64, mut p: Pending) -> Option<Pending> {
        let Some(worker) = self.members.next_worker() else {
            return Some(p);
        };
        let (wid, Some(wlink)) = (worker.id, worker.link) else {
            return Some(p);
        };
        // A GET carries only the part of the frontier this worker may lack
        // (empty, and allocation-free, in the steady state).
        let min: msg::Vector = if p.put {
            Vec::new()
        } else {
            self.frontier
                .iter()
                .filter(|&(&o, &s)| lookup(&worker.vector, o) < s)
                .map(|(&o, &s)| (o, s))
                .collect()
        };
        let Some(wconn) = self.links.get_mut(wlink) else {
            return Some(p);
        };
        let m = if p.put {
            Msg::Put {
                req: req_id,
                version: p.version,
                id: p.id,
                content: &p.content,
            }
        } else {
            Msg::Get {
                req: req_id,
                id: p.id,
                min,
            }
        };
        msg::encode(wconn.conn.out(), &m);
        p.worker = wid;
        self.pending.insert(req_id, p);
        None
    }

    /// Sends the requests a dead worker left unconfirmed to other workers,
    /// each under a new request id (an answer from the dead one, should it
    /// wake up, matches nothing) and with its version and first deadline.
    /// With no active worker they wait in `parked` until one is, or until
    /// their deadline.
    fn redispatch(&mut self, mut orphans: Vec<Pending>) {
        orphans.sort_by_key(|p| p.start);
        for p in orphans {
            // Nobody is waiting for the answer any more.
            let asker_gone = !matches!(
                self.links.get(p.client),
                Some(Link { role: Role::Client(c), .. }) if c.serial == p.serial
            );
            if asker_gone {
                self.recycle(p);
                continue;
            }
            let req_id = self.next_req;
            self.next_req += 1;
            let deadline = p.deadline;
            match self.dispatch(req_id, p) {
                Some(p) => self.parked.push(p),
                None => {
                    self.counters.redispatched += 1;
                    self.retry_deadlines.push(Reverse((deadline, req_id)));
                }
            }
        }
    }

    /// Returns a finished PUT's content buffer to the pool.
    fn recycle(&mut self, p: Pending) {
        if !p.put {
            return;
        }
        let mut content = p.content;
        self.held_bytes -= content.len();
        if content.capacity() <= SPARE_MAX_CAPACITY && self.spare.len() < SPARE_BUFFERS {
            content.clear();
            self.spare.push(content);
        }
    }

    /// The output buffer of the client that sent `p`, if that connection
    /// is still there; counts the request as answered. A client already
    /// past its output limit gets nothing more (it is disconnected at the
    /// end of the turn), so its buffer cannot grow within a turn either.
    fn client_out(&mut self, p: &Pending) -> Option<&mut Vec<u8>> {
        let link = self.links.get_mut(p.client)?;
        let limit = self.config.client_output_cap * OUTPUT_LIMIT_FACTOR;
        match &mut link.role {
            Role::Client(c) if c.serial == p.serial => {
                c.inflight -= 1;
                (link.conn.pending_out() <= limit).then(|| link.conn.out())
            }
            _ => None,
        }
    }

    /// Answers a client, if the connection that asked is still there.
    fn answer(&mut self, p: &Pending, resp: &Response<'_>) {
        if let Some(out) = self.client_out(p) {
            wire::encode_response(out, p.tag, resp);
        }
        let micros = p.start.elapsed().as_micros() as u64;
        let _ = self.latency.record(micros.max(1));
    }

    fn answer_error(&mut self, p: &Pending, code: ErrorCode) {
        self.counters.errors[code as usize] += 1;
        if let Some(out) = self.client_out(p) {
            wire::encode_error(out, p.tag, code);
        }
    }

    /// Handles every whole frame from a worker or admin tool on `key`.
    fn control_frames(&mut self, key: usize) {
        loop {
            let Some(link) = self.links.get_mut(key) else {
                return;
            };
            let input = std::mem::take(link.conn.input_mut());
            let (start, end) = link.conn.input_range();
            let decoded = msg::decode(&input[start..end], self.config.max_content);
            let failed = decoded.is_err();
            let outcome = match decoded {
                Ok(None) => None,
                Ok(Some((m, consumed))) => {
                    match self.links.get_mut(key) {
                        Some(Link { auth: Some(_), .. }) => self.handshake_frame(key, &m),
                        _ => self.control_frame(key, m),
                    }
                    Some(consumed)
                }
                Err(code) => {
                    eprintln!(
                        "rrstore lb: bad frame on control link {key}: {}",
                        code.name()
                    );
                    None
                }
            };
            let Some(link) = self.links.get_mut(key) else {
                return;
            };
            *link.conn.input_mut() = input;
            match outcome {
                Some(n) => link.conn.consume(n),
                None => {
                    if failed {
                        self.close(key);
                    }
                    return;
                }
            }
        }
    }

    fn control_frame(&mut self, key: usize, m: Msg<'_>) {
        let worker = match self.links.get(key).map(|l| &l.role) {
            Some(Role::Worker { id, .. }) => Some(*id),
            Some(_) => None,
            None => return,
        };
        match (worker, m) {
            (Some(w), Msg::Stored { req, seq }) => {
                let Some(p) = self.take_pending(req, w) else {
                    return;
                };
                let f = self.frontier.entry(w).or_insert(0);
                *f = (*f).max(seq);
                self.counters.stored += 1;
                self.plog.push(Confirmed {
                    id: p.id,
                    worker: w,
                    version: p.version,
                    micros: unix_micros(),
                });
                self.answer(
                    &p,
                    &Response::Stored {
                        id: p.id,
                        worker: w,
                    },
                );
                self.recycle(p);
            }
            (Some(w), Msg::Value { req, content }) => {
                let Some(p) = self.take_pending(req, w) else {
                    return;
                };
                match content {
                    Some(content) => {
                        self.counters.values += 1;
                        self.answer(&p, &Response::Value { id: p.id, content });
                    }
                    None => {
                        self.counters.not_found += 1;
                        self.answer(&p, &Response::NotFound { id: p.id });
                    }
                }
                self.recycle(p);
            }
            (
                Some(w),
                Msg::Report {
                    records,
                    max_version,
                    vector,
                },
            ) => {
                self.clock = self.clock.max(max_version);
                if let Some(info) = self.members.get_mut(w) {
                    info.records = records;
                    info.vector = vector;
                }
                self.repair_lagging();
            }
            (Some(w), Msg::Ready { vector, markers }) => {
                match self
                    .members
                    .check_ready(&self.frontier, w, &vector, &markers)
                {
                    Readiness::NotYet => {}
                    Readiness::Behind(floor) => {
                        if let Some(link) = self.links.get_mut(key) {
                            msg::encode(link.conn.out(), &Msg::Behind { floor });
                        }
                    }
                    Readiness::Complete => {
                        if self.members.activate(w) {
                            eprintln!(
                                "rrstore lb: worker {w} caught up (markers {markers:?}); now active"
                            );
                            self.membership_changed = true;
                            let parked = std::mem::take(&mut self.parked);
                            self.redispatch(parked);
                        }
                    }
                }
            }
            // Its arrival already counted (see `on_readable`).
            (Some(_), Msg::Heartbeat) => {}
            (Some(w), Msg::Deregister) => {
                eprintln!("rrstore lb: worker {w} deregistered");
                self.members.deregister(w);
                self.membership_changed = true;
                if let Some(link) = self.links.get_mut(key) {
                    msg::encode(link.conn.out(), &Msg::DeregisterOk);
                }
            }
            (
                None,
                Msg::Register {
                    id,
                    incarnation,
                    max_version,
                    addr,
                },
            ) => {
                if let Some(who) = self.links.get(key).and_then(|l| l.verified.as_ref()) {
                    if who.id != id || who.addr != addr {
                        self.counters.auth_rejected += 1;
                        eprintln!(
                            "rrstore lb: refused registration of worker {id} at {addr}: it authenticated as {} at {:?}",
                            who.id, who.addr
                        );
                        self.close(key);
                        return;
                    }
                }
                if id == 0 && self.started.elapsed() < REGISTRATION_GRACE && self.ids_known_before {
                    // Just restarted: workers that already have IDs come
                    // back first, so a newcomer cannot be given one of theirs.
                    self.deferred.push((key, incarnation, max_version, addr));
                    return;
                }
                self.register_worker(key, id, incarnation, max_version, addr);
            }
            (None, Msg::MembersRequest) => {
                let members = self.members.members();
                self.admin_reply(key, &Msg::Members { members });
            }
            (None, Msg::StatsRequest) => {
                let pairs = self.stats();
                self.admin_reply(key, &Msg::Stats { pairs });
            }
            (_, Msg::AuthHello { .. }) => {
                eprintln!(
                    "rrstore lb: control link {key} tries to authenticate, but this LB runs --insecure; closing it"
                );
                self.close(key);
            }
            (_, other) => {
                eprintln!("rrstore lb: unexpected {other:?} on control link {key}; closing it");
                self.close(key);
            }
        }
    }

    /// Registers a worker on connection `key`: assigns an ID if it asked
    /// for one (and remembers the highest ID ever given, see
    /// [`Lb::persist_next_id`]), answers WELCOME, or REFUSED and closes.
    fn register_worker(
        &mut self,
        key: usize,
        id: u32,
        incarnation: u32,
        max_version: u64,
        addr: String,
    ) {
        self.clock = self.clock.max(max_version);
        let reported = self.members.get(id).map_or(0, |w| lookup(&w.vector, id));
        match self.members.register(id, incarnation, addr.clone(), key) {
            Ok((id, incarnation)) => {
                eprintln!("rrstore lb: worker {id} (incarnation {incarnation}) registered from {addr}; joining");
                let welcome = Msg::Welcome {
                    id,
                    members: self.members.members(),
                    max_content: self.config.max_content as u64,
                    your_seq: reported.max(self.frontier.get(&id).copied().unwrap_or(0)),
                    ack_all: self.config.ack_all,
                };
                if let Some(link) = self.links.get_mut(key) {
                    link.role = Role::Worker {
                        id,
                        last_heard: Instant::now(),
                    };
                    msg::encode(link.conn.out(), &welcome);
                }
                self.membership_changed = true;
            }
            Err(reason) => {
                eprintln!("rrstore lb: refused registration: {reason}");
                if let Some(link) = self.links.get_mut(key) {
                    msg::encode(link.conn.out(), &Msg::Refused { reason });
                    link.conn.flush();
                }
                self.close(key);
            }
        }
        self.persist_next_id();
    }

    /// Writes the next unused worker ID next to the processed log when it
    /// grows, so that a restarted LB never gives a new worker the ID of one
    /// that has not re-registered yet. A rare, small, synchronous write.
    fn persist_next_id(&mut self) {
        let next = self.members.next_id();
        if next <= self.persisted_next_id {
            return;
        }
        let path = ids_path(&self.config.processed_log);
        let tmp = path.with_extension("ids.tmp");
        let written = std::fs::write(&tmp, format!("{next}\n"))
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &path));
        match written {
            Ok(()) => self.persisted_next_id = next,
            Err(e) => eprintln!(
                "rrstore lb: cannot save worker IDs in {}: {e}",
                path.display()
            ),
        }
    }

    /// Registrations held back during [`REGISTRATION_GRACE`], once it is over.
    fn register_deferred(&mut self) {
        if self.deferred.is_empty() || self.started.elapsed() < REGISTRATION_GRACE {
            return;
        }
        for (key, incarnation, max_version, addr) in std::mem::take(&mut self.deferred) {
            if self.links.contains(key) {
                self.register_worker(key, 0, incarnation, max_version, addr);
            }
        }
    }

    /// Tells each worker that lacks records of an origin that cannot send
    /// them itself any more (see `Membership::lagging`) what to catch up.
    fn repair_lagging(&mut self) {
        for (w, floor) in self.members.lagging(&self.frontier) {
            let Some(info) = self.members.get_mut(w) else {
                continue;
            };
            info.behind = floor.clone();
            if let Some(link) = info.link.and_then(|k| self.links.get_mut(k)) {
                msg::encode(link.conn.out(), &Msg::Behind { floor });
            }
        }
    }

    fn admin_reply(&mut self, key: usize, m: &Msg<'_>) {
        if let Some(link) = self.links.get_mut(key) {
            link.role = Role::Admin;
            msg::encode(link.conn.out(), m);
        }
    }

    /// Removes a pending request answered by `worker`; a stale or foreign
    /// answer (its id unknown, or sent to another worker) matches nothing.
    fn take_pending(&mut self, req: u64, worker: u32) -> Option<Pending> {
        match self.pending.get(&req) {
            Some(p) if p.worker == worker => self.pending.remove(&req),
            _ => None,
        }
    }

    fn stats(&self) -> Vec<(String, u64)> {
        let c = &self.counters;
        let mut v: Vec<(String, u64)> = vec![
            ("requests_put".into(), c.puts),
            ("requests_get".into(), c.gets),
            ("requests_ping".into(), c.pings),
            ("responses_stored".into(), c.stored),
            ("responses_value".into(), c.values),
            ("responses_not_found".into(), c.not_found),
            ("responses_timeout".into(), c.timeouts),
            ("redispatched".into(), c.redispatched),
            ("workers_declared_dead".into(), c.declared_dead),
            (
                "in_flight".into(),
                (self.pending.len() + self.parked.len()) as u64,
            ),
            ("held_content_bytes".into(), self.held_bytes as u64),
            ("clients_accepted".into(), c.clients_accepted),
            (
                "workers_active".into(),
                self.members.count(Status::Active) as u64,
            ),
            (
                "workers_joining".into(),
                self.members.count(Status::Joining) as u64,
            ),
            (
                "workers_inactive".into(),
                self.members.count(Status::Inactive) as u64,
            ),
            ("read_syscalls".into(), c.reads),
            ("write_syscalls".into(), c.writes),
            ("loop_turns".into(), c.turns),
            ("discarded_bytes".into(), c.discarded_bytes),
            ("clients_connected".into(), self.client_count as u64),
            ("clients_idle_closed".into(), c.idle_closed),
            ("clients_slow_closed".into(), c.slow_closed),
            ("accept_paused".into(), c.accept_paused),
            ("clients_output_closed".into(), c.output_closed),
            ("auth_rejected".into(), c.auth_rejected),
            ("processed_log_backlog".into(), self.plog.backlog() as u64),
        ];
        for code in 1..=7u16 {
            if let Some(e) = ErrorCode::from_u16(code) {
                v.push((
                    format!("errors_{}", e.name().to_lowercase()),
                    c.errors[code as usize],
                ));
            }
        }
        let h = &self.latency;
        for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
            v.push((format!("latency_us_{name}"), h.value_at_quantile(q)));
        }
        v.push(("latency_us_max".into(), h.max()));
        v.push(("latency_samples".into(), h.len()));
        v
    }

    /// Answers TIMEOUT for every request past its deadline.
    fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, key, serial)) = self.lingering.front() {
            if deadline > now {
                break;
            }
            self.lingering.pop_front();
            if matches!(self.links.get(key), Some(Link { role: Role::Client(c), .. }) if c.serial == serial)
            {
                self.close(key);
            }
        }
        while let Some(&(deadline, req)) = self.deadlines.front() {
            // Answered requests leave the queue as soon as they reach its
            // front, so it stays about as long as what is in flight.
            if deadline > now && self.pending.contains_key(&req) {
                break;
            }
            self.deadlines.pop_front();
            if let Some(p) = self.pending.remove(&req) {
                self.time_out(p);
            }
        }
        while let Some(&Reverse((deadline, req))) = self.retry_deadlines.peek() {
            if deadline > now {
                break;
            }
            self.retry_deadlines.pop();
            if let Some(p) = self.pending.remove(&req) {
                self.time_out(p);
            }
        }
        if self.parked.iter().any(|p| p.deadline <= now) {
            let (late, waiting) = std::mem::take(&mut self.parked)
                .into_iter()
                .partition(|p| p.deadline <= now);
            self.parked = waiting;
            for p in late {
                self.time_out(p);
            }
        }
        if now >= self.next_client_sweep {
            self.next_client_sweep = now + Duration::from_secs(1);
            self.sweep_clients(now);
            self.expire_handshakes(now);
        }
        if now >= self.next_liveness_check {
            self.next_liveness_check = now + msg::HEARTBEAT_EVERY;
            self.declare_silent_workers_dead(now);
            // Workers also watch the LB: a partition would otherwise keep
            // their half-open connection alive for many minutes.
            let keys: Vec<usize> = self.members.links_to_update().collect();
            for key in keys {
                if let Some(link) = self.links.get_mut(key) {
                    msg::encode(link.conn.out(), &Msg::Heartbeat);
                }
            }
        }
    }

    /// Once a second: closes clients idle past `--idle-timeout-secs`, answers
    /// TIMEOUT (tag 0) to clients that have not finished a frame within
    /// `--frame-timeout-secs` and closes them, and frees the large buffers of
    /// clients that went quiet.
    fn sweep_clients(&mut self, now: Instant) {
        let mut idle = Vec::new();
        for (key, link) in self.links.iter_mut() {
            let Role::Client(c) = &mut link.role else {
                continue;
            };
            if c.closing || c.lingering {
                continue;
            }
            let quiet = now.saturating_duration_since(c.last_input);
            if c.partial_since
                .is_some_and(|t| now.saturating_duration_since(t) > self.config.frame_timeout)
            {
                self.counters.slow_closed += 1;
                self.counters.errors[ErrorCode::Timeout as usize] += 1;
                wire::encode_error(link.conn.out(), 0, ErrorCode::Timeout);
                c.closing = true;
            } else if quiet > self.config.idle_timeout
                && c.inflight == 0
                && link.conn.input().is_empty()
                && link.conn.pending_out() == 0
            {
                idle.push(key);
            } else if quiet >= Duration::from_secs(1) {
                link.conn.trim();
            }
        }
        for key in idle {
            self.counters.idle_closed += 1;
            self.close(key);
        }
    }

    fn time_out(&mut self, p: Pending) {
        self.counters.timeouts += 1;
        self.answer_error(&p, ErrorCode::Timeout);
        self.recycle(p);
    }

    /// Closes the connection of every worker that has sent nothing for
    /// `--worker-timeout-ms` (it sends a heartbeat every
    /// [`msg::HEARTBEAT_EVERY`]): a paused or wedged process whose socket
    /// stays open. Its requests go to other workers; should it wake up, it
    /// finds the connection closed and registers again.
    fn declare_silent_workers_dead(&mut self, now: Instant) {
        let silent: Vec<(usize, u32, Duration)> = self
            .members
            .links()
            .filter_map(|k| match self.links.get(k)?.role {
                Role::Worker { id, last_heard } => {
                    let quiet = now.saturating_duration_since(last_heard);
                    (quiet > self.config.worker_timeout).then_some((k, id, quiet))
                }
                _ => None,
            })
            .collect();
        for (key, id, quiet) in silent {
            eprintln!(
                "rrstore lb: worker {id} silent for {} ms; declaring it dead",
                quiet.as_millis()
            );
            self.counters.declared_dead += 1;
            self.close(key);
        }
    }

    fn close(&mut self, key: usize) {
        if !self.links.contains(key) {
            return;
        }
        let mut link = self.links.remove(key);
        link.conn.deregister(self.poll.registry());
        self.deferred.retain(|d| d.0 != key);
        if link.auth.is_some() {
            // The other side gave up: most likely it found our proof wrong
            // (another secret), or it is not an rrstore node.
            self.counters.auth_rejected += 1;
            eprintln!(
                "rrstore lb: control connection {key} closed before authenticating \
                 (another cluster secret, or not an rrstore node)"
            );
        }
        // Requests a closed client left in flight stay pending until their
        // worker answers (the answer then matches no connection): they are
        // still work queued at a worker, and count against --max-inflight.
        if matches!(link.role, Role::Client(_)) {
            self.client_count -= 1;
        }
        if let Role::Worker { id, .. } = link.role {
            let leaving = self
                .members
                .get(id)
                .is_some_and(|w| w.status == Status::Leaving);
            eprintln!(
                "rrstore lb: worker {id} disconnected{}",
                if leaving {
                    "; removed"
                } else {
                    " without deregistering; inactive"
                }
            );
            self.members.lost(id);
            self.membership_changed = true;
            self.repair_lagging();
            // Its unconfirmed requests may or may not have been applied:
            // another worker applies them again, with the same version, so
            // either way the record ends up the same everywhere.
            let lost: Vec<u64> = self
                .pending
                .iter()
                .filter(|(_, p)| p.worker == id)
                .map(|(&r, _)| r)
                .collect();
            let orphans = lost
                .into_iter()
                .filter_map(|req| self.pending.remove(&req))
                .collect();
            self.redispatch(orphans);
        }
    }

    fn end_of_turn(&mut self) {
        if std::mem::take(&mut self.membership_changed) {
            let members = self.members.members();
            let mut frame = Vec::new();
            msg::encode(&mut frame, &Msg::Members { members });
            // Not to leaving workers: after DEREGISTER_OK nothing more is sent.
            let keys: Vec<usize> = self.members.links_to_update().collect();
            for k in keys {
                if let Some(l) = self.links.get_mut(k) {
                    l.conn.out().extend_from_slice(&frame);
                }
            }
        }
        self.plog.end_of_turn();
        let registry = self.poll.registry();
        let mut dead = Vec::new();
        let backlogged = self.workers_backlogged();
        for (key, link) in self.links.iter_mut() {
            if link.conn.pending_out() > 0 {
                self.counters.writes += link.conn.flush() as u64;
            }
            let mut read = true;
            if let Role::Client(c) = &mut link.role {
                // Earlier requests are answered before the close: after an
                // error (MALFORMED, TOO_LARGE) and after end of input, once
                // every buffered request has been taken (not paused).
                let done = (c.closing || (c.eof && !c.paused)) && c.inflight == 0;
                if done && link.conn.pending_out() == 0 && !c.lingering {
                    if c.eof {
                        dead.push(key);
                        continue;
                    }
                    // After an error the client may still be sending (the
                    // rest of a TOO_LARGE frame): closing with its bytes
                    // unread would reset the connection and destroy the
                    // ERROR in flight. Half-close, discard its input until it
                    // closes too, or until LINGER has passed.
                    let _ = link.conn.stream.shutdown(std::net::Shutdown::Write);
                    c.lingering = true;
                    self.lingering
                        .push_back((Instant::now() + LINGER, key, c.serial));
                }
                if link.conn.pending_out() > self.config.client_output_cap * OUTPUT_LIMIT_FACTOR {
                    // Answers to what it had in flight kept coming, and it
                    // does not read them: memory, not backpressure, is at
                    // stake now.
                    eprintln!(
                        "rrstore lb: client {key} does not read its responses ({} bytes unread); disconnecting it",
                        link.conn.pending_out()
                    );
                    self.counters.output_closed += 1;
                    dead.push(key);
                    continue;
                }
                if c.paused
                    && link.conn.pending_out() <= self.config.client_output_cap / 2
                    && c.inflight <= self.config.max_inflight_per_client / 2
                    && !backlogged
                {
                    c.paused = false;
                    self.reread.push(key);
                }
                read = (!c.paused && !c.closing && !c.eof) || c.lingering;
            }
            if link.conn.closed || link.conn.set_interest(registry, Token(key), read).is_err() {
                dead.push(key);
            }
        }
        for key in dead {
            self.close(key);
        }
    }
}
