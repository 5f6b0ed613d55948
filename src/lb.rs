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
//! reported)`, which orders writes of one id by their arrival at the LB (and
//! stays below `msg::MAX_VERSION` until the year 4253). A
//! confirmation is logged through the processed-log thread (`plog.rs`), then
//! answered. A GET carries the frontier of acknowledged writes the chosen
//! worker may not have yet, and the worker answers once it covers it.
//!
//! Per loop turn: drain every readable socket, handle every frame, then
//! flush each connection once (responses and forwarded requests coalesce).
//!
//! This file holds the state and the loop; the rest is split by concern:
//! `clients` (framing, the client token, limits), `requests` (dispatch,
//! re-dispatch, answers), `workers` (the control port: registration,
//! readiness, liveness), `handshake` (cluster authentication), `stats`,
//! `status` (the `--metrics` and `--http` servers and their renderings).

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
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::error::Error;
use std::hash::BuildHasherDefault;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod clients;
mod handshake;
mod requests;
mod stats;
mod status;
mod workers;

const CLIENTS: Token = Token(usize::MAX);
const CONTROL: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
const STOP: Token = Token(usize::MAX - 3);
/// How long a client that got MALFORMED or TOO_LARGE may keep sending
/// before its connection is closed anyway.
const LINGER: Duration = Duration::from_secs(2);
/// Discarded input is read in steps of this much.
const READ_CHUNK_DISCARD: usize = 64 * 1024;
/// A client whose unread responses pass this many times
/// `--client-output-cap` is disconnected (the cap only stops reading it;
/// answers to requests already in flight keep adding up).
const OUTPUT_LIMIT_FACTOR: usize = 16;
/// After a restart (the LB had given out worker IDs before), for at most
/// this long, or until every worker the previous LB listed is back:
/// workers that ask for a new ID wait, so every worker that already has one
/// re-registers first (they retry at least every 0.8 s); and no worker is
/// activated, so one that came back without its own records hears from
/// the peers that hold them before it numbers new ones.
const REGISTRATION_GRACE: Duration = Duration::from_secs(2);
/// How much of the processed log's end a restarted LB without its saved
/// next ID reads for worker IDs in use.
const PLOG_TAIL: u64 = 1 << 20;
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
    /// 16 times this, the client is disconnected.
    pub client_output_cap: usize,
    /// Stop reading a client with this many requests in flight; resume
    /// below half (one client cannot take the whole `max_inflight`).
    pub max_inflight_per_client: u32,
    /// The cluster secret: every control-port connection must prove it
    /// holds it before anything else (`None`: `--insecure`, no handshake).
    pub secret: Option<Secret>,
    /// Clients must AUTH with the token in this file first.
    pub client_token_file: Option<PathBuf>,
    /// Serve `/metrics` (Prometheus text) here.
    pub metrics: Option<SocketAddr>,
    /// Serve the status page (`/`, `/status.json`) here.
    pub http: Option<SocketAddr>,
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
    pending: HashMap<u64, Pending, BuildHasherDefault<ReqIdHasher>>,
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
    /// The next unused ID as last saved in that file.
    persisted_next_id: u32,
    /// `--metrics` and `--http`: the serving threads' ends (one per address).
    http: Vec<crate::http::Server>,
    /// When `/metrics` and `/status.json` are next rendered.
    next_render: Instant,
    /// What the status page keeps between snapshots (rates, events, the
    /// last redistribution); cheap enough to keep without `--http`.
    status: crate::status::Tracker,
    /// What `--client-token-file` holds, if given.
    client_token: Option<crate::auth::ClientToken>,
    /// Registrations held during the grace period (see `Lb::in_grace`).
    deferred: Vec<workers::Registration>,
    /// The workers the previous LB listed that have not registered again
    /// (`None`: its list was not saved); the grace ends early once empty.
    awaited: Option<BTreeSet<u32>>,
    /// The grace after a restart is over, or there was none (no file next
    /// to the processed log said which IDs were given out before).
    grace_over: bool,
    /// A READY was not acted on (in the grace, or not yet complete): at
    /// the next membership change, joiners are asked for it again.
    held_ready: bool,
    /// The member IDs last saved beside the next ID.
    persisted_members: Vec<u32>,
    next_req: u64,
    /// The clock, read once per loop turn after the poll: requests,
    /// answers and the processed log take their times from it (four clock
    /// reads per PUT were 7 % of the LB's CPU at pipeline 16).
    turn_start: Instant,
    /// The same moment in microseconds since the Unix epoch.
    turn_micros: u64,
    next_serial: u64,
    clock: u64,
    /// Highest acknowledged seq per origin: what a GET must see.
    frontier: BTreeMap<u32, u64>,
    membership_changed: bool,
    /// Clients with input left unparsed because of backpressure.
    reread: Vec<usize>,
    /// Clients closing after an error: (give up at, key, serial), in order.
    lingering: VecDeque<(Instant, usize, u64)>,
    /// Each answered request's time at the LB, µs: from the loop turn that
    /// read it to the turn that read its answer (see `turn_start`).
    latency: Histogram<u64>,
    counters: Counters,
    plog: ProcessedLog,
    /// Who the LB is in handshakes: ID 0 and its control address.
    me: Identity,
    /// Stops the loop from another thread (in-process runs only).
    stopper: Option<crate::stop::Stopper>,
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
    // With --http, it ends with ` http=ADDR` (the status page).
    let http = lb
        .http_addr()
        .map(|a| format!(" http={a}"))
        .unwrap_or_default();
    println!(
        "listening clients={} control={}{http}",
        lb.clients.local_addr()?,
        lb.control.local_addr()?
    );
    std::io::Write::flush(&mut std::io::stdout())?;
    log::info!("processed log {}", lb.config.processed_log.display());
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
        log::warn!(
            "the open-file limit is {}; fewer than --max-clients {max_clients} clients will fit",
            lim.rlim_cur
        );
    }
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

/// Hashes the LB's own request ids for `pending`: they are sequential
/// and never chosen by a client, so no keyed hash is needed (SipHash's
/// insert and remove per request were 3 % of the LB's CPU at pipeline
/// 16). A multiply by an odd constant spreads the high bits hashbrown
/// takes its tags from; the low bits, which pick the bucket, stay a
/// permutation of consecutive ids.
#[derive(Default)]
pub(crate) struct ReqIdHasher(u64);

impl std::hash::Hasher for ReqIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used for u64 keys; any other key still hashes correctly.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
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
        let http = status::start_http(&config)?;
        // The saved next ID; without it (lost, or an older LB), one above
        // the workers the processed log's tail names, so a newcomer is not
        // handed the ID of a worker that has not re-registered yet.
        let (saved, saved_members) = workers::saved_ids(&config.processed_log);
        let from_log = crate::plog::max_worker_in_tail(&config.processed_log, PLOG_TAIL)
            .map(|w| w.saturating_add(1));
        if saved.is_none() {
            if let Some(next) = from_log {
                log::warn!(
                    "no saved worker IDs next to {}; reserving IDs below {next} from its tail",
                    config.processed_log.display()
                );
            }
        }
        let persisted_next_id = saved.max(from_log);
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
            pending: HashMap::default(),
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
            persisted_next_id: persisted_next_id.unwrap_or(0),
            deferred: Vec::new(),
            grace_over: persisted_next_id.is_none(),
            awaited: saved_members.clone().map(BTreeSet::from_iter),
            held_ready: false,
            persisted_members: saved_members.unwrap_or_default(),
            client_token,
            http,
            next_render: Instant::now(),
            status: crate::status::Tracker::new(),
            // Request ids never repeat, even across LB restarts: a worker
            // may still answer a request of the previous process.
            next_req: unix_micros().max(1),
            turn_start: Instant::now(),
            turn_micros: unix_micros(),
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
            stopper: None,
            config,
        })
    }

    /// A handle that makes [`Lb::run`] return from another thread (for an
    /// LB run in-process, e.g. by [`crate::testing`]).
    pub fn stopper(&mut self) -> io::Result<crate::stop::Stopper> {
        if self.stopper.is_none() {
            self.stopper = Some(crate::stop::Stopper::new(self.poll.registry(), STOP)?);
        }
        self.stopper
            .clone()
            .ok_or_else(|| io::Error::other("no stopper"))
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
                    (!self.grace_over).then_some(self.started + REGISTRATION_GRACE),
                    (!self.http.is_empty()).then_some(self.next_render),
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
            self.turn_start = Instant::now();
            self.turn_micros = unix_micros();
            for event in events.iter() {
                match event.token() {
                    CLIENTS => self.accept(true),
                    CONTROL => self.accept(false),
                    SIGNALS => {
                        if self.signals.pending().next().is_some() {
                            log::info!("shutting down");
                            return Ok(());
                        }
                    }
                    STOP if self.stopper.as_ref().is_some_and(|s| s.is_stopped()) => return Ok(()),
                    STOP => {}
                    Token(key) => self.on_readable(key, event.is_read_closed() || event.is_error()),
                }
            }
            for key in std::mem::take(&mut self.reread) {
                self.on_readable(key, true);
            }
            let now = Instant::now();
            self.expire(now);
            self.end_grace();
            self.publish_http(now);
            if !self.accepting && self.client_count < self.config.max_clients / 10 * 9 {
                log::info!("below 90% of --max-clients again; accepting");
                self.accepting = true;
                self.accept(true);
            }
        }
    }

    fn accept(&mut self, client: bool) {
        loop {
            if client && self.client_count >= self.config.max_clients {
                if self.accepting {
                    log::info!(
                        "{} clients connected (--max-clients); not accepting more until below 90%",
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
                    log::warn!("accept failed: {e}");
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
        if !self.parked.is_empty() {
            let late: Vec<Pending> = self.parked.extract_if(.., |p| p.deadline <= now).collect();
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

    fn close(&mut self, key: usize) {
        if !self.links.contains(key) {
            return;
        }
        let mut link = self.links.remove(key);
        link.conn.deregister(self.poll.registry());
        self.deferred.retain(|d| d.key != key);
        if link.auth.is_some() {
            // The other side gave up: most likely it found our proof wrong
            // (another secret), or it is not an rrstore node.
            self.counters.auth_rejected += 1;
            log::warn!(
                "control connection {key} closed before authenticating \
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
            if leaving {
                log::info!("worker {id} disconnected; removed");
            } else {
                log::warn!("worker {id} disconnected without deregistering; inactive");
            }
            self.status_event(
                id,
                if leaving {
                    "disconnected: left"
                } else {
                    "disconnected without deregistering: inactive"
                }
                .into(),
            );
            self.members.lost(id);
            self.membership_changed = true;
            self.repair_lagging();
            // Its unconfirmed requests may or may not have been applied:
            // another worker applies them again, with the same version, so
            // either way the record ends up the same everywhere.
            let orphans = self
                .pending
                .extract_if(|_, p| p.worker == id)
                .map(|(_, p)| p)
                .collect();
            self.redispatch(orphans);
        }
    }

    fn end_of_turn(&mut self) {
        if std::mem::take(&mut self.membership_changed) {
            // A failure is logged, and retried at the next change.
            let _ = self.persist_ids();
            let members = self.members.members();
            let mut frame = Vec::new();
            msg::encode(&mut frame, &Msg::Members { members });
            // Leaving workers too: MEMBERS is all that follows DEREGISTER_OK.
            let keys: Vec<usize> = self.members.links_to_update().collect();
            for k in keys {
                if let Some(l) = self.links.get_mut(k) {
                    l.conn.out().extend_from_slice(&frame);
                }
            }
            self.ask_ready_again();
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
                    log::warn!(
                        "client {key} does not read its responses ({} bytes unread); disconnecting it",
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
