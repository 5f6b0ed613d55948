//! `rrstore worker`: one single-threaded mio loop around a [`Replica`].
//!
//! Connections (all in one slab, key = mio Token):
//! - the LB link: opened by the worker to the LB's control port; carries
//!   registration, membership, PUT/GET and their answers;
//! - outbound peer links, one per peer, dialled by this worker: our live
//!   records and our catch-up requests go out, acks and catch-up data come back;
//! - inbound links accepted on `--listen`: peers' live records (we ack), their
//!   catch-up requests (we stream a catch-up), or admin tools (digest, dump).
//!
//! One loop turn: poll, drain every readable socket and handle every frame,
//! then write the log once, then flush each connection once. STORED always
//! leaves after the log write that holds its record (and after fdatasync
//! under `--fsync always`).
//!
//! Split by concern: `links` (the connections and the replica's outbox),
//! `register` (registration), `handshake` (cluster authentication),
//! `liveness` (the LB link's heartbeats and re-registration, the peer link
//! watchdog).

mod compaction;
mod handshake;
mod lag;
mod links;
mod liveness;
mod register;

use crate::auth::{Handshake, Identity, Secret};
use crate::conn::Conn;
use crate::fsync::Syncer;
use crate::log::{DataDir, FsyncPolicy, LogWriter};
use crate::msg::{self, Msg, Vector};
use crate::replica::{Outbox, Phase, Replica};
use crate::segments;
use crate::wire;
use compaction::{Compaction, Next};
use links::{pump, Cursor, Io, Link, Role, Walk};
use liveness::LinkWatch;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use register::{register, Registration};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use std::collections::{HashMap, VecDeque};
use std::error::Error;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// This process's worker ID once registered, for its log lines
/// (`rrstore worker 3: ...`; 0 before registration).
pub static LOG_ID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
/// Pause before re-opening a broken link to a peer that is still a member.
/// Pauses between attempts to re-register with a restarted LB.
const LB_RETRY_MIN: Duration = Duration::from_millis(50);
const LB_RETRY_MAX: Duration = Duration::from_millis(500);
/// The LB sends a heartbeat every [`msg::HEARTBEAT_EVERY`]; an LB link
/// silent this long is taken for dead.
const LB_SILENCE: Duration = Duration::from_millis(1500);
/// An outbound peer link still connecting this long, or that makes no
/// progress this long (no new acknowledgement, and its queued output not
/// draining: the kernel's buffer is full), is closed and re-dialled. That is
/// a partition between workers: TCP alone would retransmit into the void for
/// minutes, and a new connection resumes from the vectors. A peer that
/// reads but acknowledges nothing (it has a gap to catch up) drains its
/// queue, so it is left alone.
const PEER_SILENCE: Duration = Duration::from_secs(2);
pub(crate) const REDIAL_PAUSE: Duration = Duration::from_millis(100);
/// The most often a worker REPORTs to the LB. A REPORT carries the whole
/// vector, an entry per origin, and every process start adds an origin:
/// sent at every turn that moved the vector, 150 restarts cost the
/// cluster 12 % of its throughput (the LB reading and merging them). The
/// LB's use of it tolerates the delay: a GET carries what the worker may
/// lack and the worker checks its own vector; floors and hand-overs wait.
const REPORT_EVERY: Duration = Duration::from_millis(5);
/// How often links' empty buffers beyond `conn::KEEP_BUFFER` are freed.
const TRIM_EVERY: Duration = Duration::from_secs(1);
/// How often the loop looks whether the log's store is built yet.
const BUILD_CHECK: Duration = Duration::from_millis(5);
/// How long a gap every peer was asked about waits before they are asked
/// again (see [`crate::replica::Replica::wants_retry`]); doubling while it
/// lasts, up to [`GAP_RETRY_MAX`]: each ask costs the peer a store scan.
const GAP_RETRY: Duration = Duration::from_secs(1);
const GAP_RETRY_MAX: Duration = Duration::from_secs(32);
/// Stop handling the LB's requests while this much output to the LB is
/// queued (GETs of large values answered faster than the LB reads them);
/// resume below half. Bounds a turn's work and the worker's memory.
const LB_OUT_CAP: usize = 8 << 20;
/// How long one re-registration attempt may block the loop (connect, then
/// the wait for WELCOME).
const LB_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(300);
/// The most input one link may feed the replica in one readiness event
/// (a few tens of thousands of records). A peer streaming a catch-up
/// faster than we apply it would otherwise keep us in one loop turn for
/// seconds: no heartbeat, and the LB declares us dead. Past the budget the
/// link is put on `more_input` and the loop comes back to it next turn.
const INPUT_BUDGET: usize = 4 << 20;
/// Output to a peer held back by `--peer-flush-ms` goes out at once past
/// this much: a burst is not delayed, only trickles are gathered.
const PACED_MAX: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub lb: String,
    pub listen: SocketAddr,
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    pub id: Option<u32>,
    pub fsync: FsyncPolicy,
    pub fsync_interval: Duration,
    pub max_content: usize,
    /// How long to keep trying to reach the LB at start-up.
    pub connect_timeout: Duration,
    /// How long a leaving worker waits for its peers' acknowledgements.
    pub leave_timeout: Duration,
    /// The log rolls to a new segment past this size (see `segments.rs`).
    pub segment_bytes: u64,
    /// A peer that lets more than this much of our output queue up (it is
    /// paused, stuck or too slow) is disconnected; it catches up from our
    /// store when the link is re-opened.
    pub peer_buffer_bytes: usize,
    /// Under `--ack local`, a worker's records and other output to its
    /// peers go out at most once per this interval (zero: every loop turn)
    /// unless [`PACED_MAX`] of it is queued (see the worker's `end_of_turn`).
    pub peer_flush: Duration,
    /// Threads (and store shards) for rebuilding the store at start.
    pub replay_threads: usize,
    /// Serve `/metrics` (Prometheus text) here.
    pub metrics: Option<SocketAddr>,
    /// The cluster secret: the LB link, every peer link and every admin
    /// connection authenticate with it first (`None`: `--insecure`).
    pub secret: Option<Secret>,
}

pub struct Worker {
    replica: Replica,
    io: Io,
    listener: TcpListener,
    signals: Signals,
    config: WorkerConfig,
    leave_deadline: Option<Instant>,
    last_report: Option<(u64, [u8; 16], Vector)>,
    /// When the next REPORT may go ([`REPORT_EVERY`]).
    next_report: Instant,
    /// Records received in the catch-up under way (for the log line).
    catchup_records: u64,
    /// When our own records were written, for lag in seconds.
    lag_clock: lag::LagClock,
    /// While the LB is unreachable: when to try again, and the next pause.
    lb_retry: Option<(Instant, Duration)>,
    /// Rewrites the sealed log segments as the live set (see `compaction`).
    compaction: Compaction,
    /// Numbers the sealed segments.
    roller: segments::Roller,
    /// What the compaction being fed needs: the next turn at once, or soon.
    compaction_next: Next,
    /// When the next heartbeat to the LB is due.
    next_heartbeat: Instant,
    /// When links' idle buffers are next given back ([`TRIM_EVERY`]).
    next_trim: Instant,
    /// The last poll returned no event (a timer woke the loop): a burst
    /// is over, so its buffers are given back now (see `end_of_turn`).
    quiet_turn: bool,
    /// Output to peers is held until then (see `end_of_turn`)...
    next_peer_flush: Instant,
    /// ...and some is: the poll must wake up for it.
    peer_output_held: bool,
    /// The replica's phase at the last turn's end.
    last_phase: Phase,
    /// When the LB link was last readable (the LB sends heartbeats too).
    lb_heard: Instant,
    /// The LB link's input is left unread: its output passed `LB_OUT_CAP`.
    lb_paused: bool,
    /// The LB link was un-paused: handle and read its input next turn.
    lb_resume: bool,
    /// Links that stopped reading on [`INPUT_BUDGET`] with input left.
    more_input: Vec<usize>,
    /// Per peer with an outbound link: since when it has been in its
    /// current state (connecting, or up with this much acknowledged).
    link_watch: HashMap<u32, LinkWatch>,
    /// When outbound links are next checked.
    next_link_check: Instant,
    /// When a gap that every peer was asked about is asked about again,
    /// and the pause after that.
    gap_retry_at: Option<Instant>,
    gap_retry_pause: Duration,
    /// The log's store, still being built after a restart (see
    /// `recover.rs`); meanwhile the replica's store holds only what
    /// arrives, and what needs the whole store waits:
    building: Option<crate::recover::Building>,
    /// ... peers' catch-up requests, by link (key and serial: a key is
    /// reused once its link closes);
    deferred_catchups: Vec<(usize, u64, Vector)>,
    /// ... and admin links (digest, dump), left unread.
    held_admin: Vec<usize>,
    /// The highest version in the log (the first pass): REGISTER carries
    /// at least this while the store that knows it is being built.
    log_max_version: u64,
    /// `--metrics`: the serving thread's end.
    metrics: Option<crate::metrics::Metrics>,
    /// Stops the loop from another thread (in-process runs only); shares
    /// the fsync thread's waker.
    stopper: crate::stop::Stopper,
    /// The data dir and its lock, held as long as the worker.
    _data: DataDir,
}

/// Opens the data dir, replays the log, registers with the LB, then runs
/// the loop until the worker has left cleanly.
pub fn run(config: WorkerConfig) -> Result<(), Box<dyn Error>> {
    let mut worker = match Worker::start(config) {
        Ok(worker) => worker,
        Err(e) if e.is::<register::StoppedBeforeRegistering>() => {
            log::info!("{e}; the log is as it was");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    worker.run()
}

impl Worker {
    pub fn start(config: WorkerConfig) -> Result<Worker, Box<dyn Error>> {
        // First: a SIGTERM must never kill a worker outright. One that
        // comes during the replay or while the LB is not reachable yet
        // stops it before it registers; from the "registered" line on
        // (tools and tests stop workers then), it waits in the handler's
        // pipe until the loop polls it, and the worker leaves cleanly.
        let mut signals = Signals::new([SIGTERM, SIGINT])?;
        let data = DataDir::open(&config.data_dir)?;
        let identity = data.identity()?;
        if let (Some(stored), Some(flag)) = (identity, config.id) {
            if stored != flag {
                return Err(format!(
                    "--id {flag} does not match id {stored} stored in {}",
                    data.path().display()
                )
                .into());
            }
        }
        let crate::recover::Recovered {
            vv,
            stats,
            max_version,
            mut store,
            building,
        } = crate::recover::recover_in_background(data.path(), config.replay_threads)?;
        if stats.truncated > 0 {
            log::warn!(
                "log replay cut {} untrusted bytes from the log in {}",
                stats.truncated,
                data.path().display()
            );
        }

        let std_listener = std::net::TcpListener::bind(config.listen)?;
        std_listener.set_nonblocking(true)?;
        let local = std_listener.local_addr()?;
        let advertise =
            match &config.advertise {
                Some(a) => a.clone(),
                None if local.ip().is_unspecified() => return Err(
                    "--listen is a wildcard address; give --advertise IP:PORT for peers to reach"
                        .into(),
                ),
                None => local.to_string(),
            };

        // A new origin for every process: whatever our log lost of the
        // previous one's records is that origin's, never renumbered.
        let wanted_id = identity.or(config.id).unwrap_or(0);
        let Registration {
            stream: lb_stream,
            early,
            id,
            origin,
            members,
            max_content,
            ack_all,
        } = register(
            &config.lb,
            config.connect_timeout,
            Duration::from_secs(10),
            // A stop during the replay, or while the LB is not reachable
            // yet: no need to join only to leave.
            &mut || signals.pending().next().is_some(),
            wanted_id,
            0,
            vv.max_origin(),
            max_version,
            &advertise,
            config.secret.as_ref(),
        )?;
        data.save_identity(id)?;
        let mut config = config;
        config.max_content = config.max_content.max(max_content);
        // The one line on stdout: tools that start workers read it.
        println!("registered id={id} addr={advertise}");
        io::stdout().flush()?;
        LOG_ID.store(id, std::sync::atomic::Ordering::Relaxed);
        log::info!(
            "registered with LB {} as {advertise} (origin {origin}, {} log entries replayed{})",
            config.lb,
            stats.entries,
            if building.is_some() {
                "; their store still being built"
            } else {
                ""
            }
        );

        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stopper = crate::stop::Stopper::with_waker(waker.clone());
        let log = LogWriter::open(&data.log_path())?;
        // Before the compaction thread starts renaming (see `Roller`).
        let roller = segments::Roller::open(data.path())?;
        let mut compaction = Compaction::start(data.path(), Some(waker.clone()))?;
        let syncer = match config.fsync {
            FsyncPolicy::Never => None,
            policy => Some(Syncer::start(
                log.sync_handle()?,
                data.path().to_path_buf(),
                policy,
                config.fsync_interval,
                waker,
            )?),
        };
        let mut listener = TcpListener::from_std(std_listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;

        let mut links = Slab::new();
        let mut lb_conn = Conn::new(lb_stream);
        lb_conn.push_input(&early);
        let lb = links.insert(Link::new(lb_conn, Role::Lb));
        let mut io = Io {
            poll,
            links,
            lb,
            out_links: HashMap::new(),
            log,
            syncer,
            fsync: config.fsync,
            held: VecDeque::new(),
            durable: 0,
            ack_all,
            redials: Vec::new(),
            link_serial: 0,
            secret: config.secret.clone(),
            me: Identity::new(id, advertise.clone()),
            auth_rejected: 0,
        };
        if building.is_none() {
            // A joiner will hold what its peers hold: room for it now.
            let peers_hold = members.iter().map(|m| m.records).max().unwrap_or(0);
            store.reserve_total(usize::try_from(peers_hold).unwrap_or(0));
        }
        let mut replica = Replica::new(id, origin, advertise.clone(), store, vv);
        if building.is_some() {
            replica.store_building();
        }
        replica.on_members(&members, &mut io);
        if building.is_none() {
            compaction.maybe_start(&replica.store, &replica.vv);
        }
        let metrics = match config.metrics {
            Some(addr) => {
                let m = crate::metrics::Metrics::start(addr, "worker")?;
                log::info!("metrics on http://{}/metrics", m.addr());
                Some(m)
            }
            None => None,
        };
        Ok(Worker {
            replica,
            io,
            listener,
            signals,
            config,
            leave_deadline: None,
            last_report: None,
            next_report: Instant::now(),
            catchup_records: 0,
            lag_clock: lag::LagClock::default(),
            lb_retry: None,
            compaction,
            roller,
            compaction_next: Next::Idle,
            next_heartbeat: Instant::now(),
            next_trim: Instant::now() + TRIM_EVERY,
            quiet_turn: false,
            next_peer_flush: Instant::now(),
            peer_output_held: false,
            last_phase: Phase::Joining,
            lb_heard: Instant::now(),
            lb_paused: false,
            lb_resume: false,
            more_input: Vec::new(),
            link_watch: HashMap::new(),
            next_link_check: Instant::now(),
            gap_retry_at: None,
            gap_retry_pause: GAP_RETRY,
            building,
            deferred_catchups: Vec::new(),
            held_admin: Vec::new(),
            log_max_version: max_version,
            metrics,
            stopper,
            _data: data,
        })
    }

    /// A handle that makes [`Worker::run`] return from another thread, at
    /// once and without leaving (for a worker run in-process, e.g. by
    /// [`crate::testing`]; a process leaves cleanly on SIGTERM instead).
    pub fn stopper(&self) -> crate::stop::Stopper {
        self.stopper.clone()
    }

    pub fn run(&mut self) -> Result<(), Box<dyn Error>> {
        let mut events = Events::with_capacity(1024);
        // Frames that arrived with the welcome are already buffered.
        self.handle_input(self.io.lb)?;
        loop {
            self.end_of_turn()?;
            if self.replica.leave_complete() && self.io.held.is_empty() {
                return self.finish();
            }
            if let Some(deadline) = self.leave_deadline {
                if Instant::now() >= deadline {
                    let unacked = self.replica.unacked_peers();
                    if unacked.is_empty() {
                        log::warn!("leaving without the LB's confirmation");
                    } else {
                        log::warn!("leaving without acknowledgements from peers {unacked:?}");
                    }
                    return self.finish();
                }
            }
            let now = Instant::now();
            let next_redial = self.io.redials.iter().map(|r| r.0).min();
            let timeout = [
                // A catch-up or dump whose output all went out: no WRITABLE
                // event will come, so take the next turn at once.
                self.streams_waiting().then_some(Duration::ZERO),
                self.lb_resume.then_some(Duration::ZERO),
                match self.compaction_next {
                    Next::Idle => None,
                    Next::More => Some(Duration::ZERO),
                    Next::Wait => Some(Duration::from_millis(1)),
                },
                (!self.more_input.is_empty()).then_some(Duration::ZERO),
                self.building.as_ref().map(|_| BUILD_CHECK),
                self.leave_deadline.map(|_| Duration::from_millis(100)),
                next_redial.map(|t| t.saturating_duration_since(now)),
                self.lb_retry.map(|(t, _)| t.saturating_duration_since(now)),
                self.replica
                    .vector_dirty
                    .then(|| self.next_report.saturating_duration_since(now)),
                Some(self.next_heartbeat.saturating_duration_since(now)),
                self.peer_output_held
                    .then(|| self.next_peer_flush.saturating_duration_since(now)),
            ]
            .into_iter()
            .flatten()
            .min();
            if let Err(e) = self.io.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            // Not a wake-up for held peer output: traffic is still flowing.
            self.quiet_turn = events.is_empty() && !self.peer_output_held;
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept()?,
                    WAKER if self.stopper.is_stopped() => return Ok(()),
                    WAKER => self.on_durable(),
                    SIGNALS => self.on_signal(),
                    Token(key) => {
                        let to_eof = event.is_read_closed() || event.is_error();
                        self.on_link_event(key, event.is_writable(), to_eof)?
                    }
                }
            }
            for key in std::mem::take(&mut self.more_input) {
                // No event will come for input already waiting: read on.
                self.on_link_event(key, false, true)?;
            }
            if std::mem::take(&mut self.lb_resume) {
                let lb = self.io.lb;
                self.handle_input(lb)?;
                if !self.lb_paused {
                    // Its readiness edge was spent while paused: read on.
                    self.on_link_event(lb, false, true)?;
                }
            }
            self.finish_building()?;
            self.due_redials();
            self.expire_handshakes();
            self.check_lb_alive();
            self.check_peer_links();
            self.publish_metrics();
            self.reconnect_lb()?;
        }
    }

    /// Once the log's store is built: hands it to the replica and serves
    /// what waited for it.
    fn finish_building(&mut self) -> Result<(), Box<dyn Error>> {
        if !self.building.as_ref().is_some_and(|b| b.is_finished()) {
            return Ok(());
        }
        let Some(building) = self.building.take() else {
            return Ok(());
        };
        let store = building.join()?;
        // The store is replaced: no stream may be walking it (catch-ups
        // and dumps wait for this; see `Store::next_in`).
        debug_assert!(!self.io.links.iter().any(|(_, l)| matches!(
            &l.role,
            Role::In {
                cursor: Some(_),
                ..
            } | Role::Admin { cursor: Some(_) }
        )));
        // Nor a compaction (none starts while building).
        debug_assert!(!self.compaction.is_running());
        let arrived = self.replica.store.len();
        let merging = Instant::now();
        self.replica.store_built(store, &mut self.io);
        self.compaction
            .maybe_start(&self.replica.store, &self.replica.vv);
        log::info!(
            "store built: {} records ({arrived} of them arrived meanwhile, joined in {} ms)",
            self.replica.store.len(),
            merging.elapsed().as_millis()
        );
        for (key, serial, vector) in std::mem::take(&mut self.deferred_catchups) {
            let same = matches!(
                self.io.links.get(key).map(|l| &l.role),
                Some(Role::In { serial: s, .. }) if *s == serial
            );
            if same {
                self.start_catchup(key, vector);
            }
        }
        for key in std::mem::take(&mut self.held_admin) {
            if !self.more_input.contains(&key) {
                self.more_input.push(key);
            }
        }
        Ok(())
    }

    /// A catch-up stream to the peer on inbound link `key`: every record
    /// above `vector`, then our vector.
    fn start_catchup(&mut self, key: usize, vector: Vector) {
        let cursor = Cursor {
            walk: Walk::Store(self.replica.store.walk()),
            filter: vector,
            done: Some(self.replica.vv.to_vec()),
        };
        if let Some(Link {
            role: Role::In { cursor: c, .. },
            ..
        }) = self.io.links.get_mut(key)
        {
            *c = Some(cursor);
        }
    }

    /// A link has an unfinished stream and nothing queued to write.
    fn streams_waiting(&self) -> bool {
        self.io.links.iter().any(|(_, l)| {
            l.conn.pending_out() == 0
                && matches!(
                    &l.role,
                    Role::In {
                        cursor: Some(_),
                        ..
                    } | Role::Admin { cursor: Some(_) }
                )
        })
    }

    /// Re-opens broken links whose pause is over, if still wanted.
    fn due_redials(&mut self) {
        if self.io.redials.is_empty() {
            return;
        }
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.io.redials)
            .into_iter()
            .partition(|r| r.0 <= now);
        self.io.redials = later;
        for (_, peer, addr) in due {
            if self.replica.wants_link(peer, &addr) && !self.io.out_links.contains_key(&peer) {
                self.io.dial(peer, &addr);
            }
        }
    }

    fn finish(&mut self) -> Result<(), Box<dyn Error>> {
        self.io.log.flush()?;
        // Whatever is still queued (the last answers to the LB, acks) goes
        // out before the sockets close; bounded, in case a peer is stuck.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let mut pending = false;
            for (_, link) in self.io.links.iter_mut() {
                if link.conn.pending_out() > 0 && !link.conn.closed {
                    link.conn.flush();
                    pending |= link.conn.pending_out() > 0 && !link.conn.closed;
                }
            }
            if !pending {
                break;
            }
            std::thread::yield_now();
        }
        self.io.syncer = None; // joins the thread after a final fdatasync
        if self.io.fsync == FsyncPolicy::Never {
            self.io.log.sync_handle()?.sync_data()?;
        }
        log::info!("left cleanly with {} records", self.replica.store.len());
        Ok(())
    }

    /// REPORTs the store's size, digest and vector to the LB if they
    /// changed since the last REPORT. While the store is being built its
    /// size and digest are partial, but the vector (what the LB's floors
    /// and WELCOME use) is whole. Paced by [`REPORT_EVERY`] in the loop;
    /// called at once before a DEREGISTER, whose release the LB decides
    /// on the leaver's last reported vector.
    pub(super) fn report(&mut self) {
        let replica = &mut self.replica;
        if !replica.vector_dirty {
            return;
        }
        replica.vector_dirty = false;
        let report = (
            replica.store.len() as u64,
            replica.store.digest(),
            replica.vv.to_vec(),
        );
        if self.last_report.as_ref() != Some(&report) {
            let m = Msg::Report {
                records: report.0,
                max_version: replica.store.max_version().max(self.log_max_version),
                digest: report.1,
                vector: report.2.clone(),
            };
            self.io.to_lb(&m);
            self.last_report = Some(report);
        }
    }

    fn on_signal(&mut self) {
        let mut any = false;
        for _ in self.signals.pending() {
            any = true;
        }
        if !any {
            return;
        }
        if self.leave_deadline.is_some() {
            log::warn!("second signal, exiting now");
            std::process::exit(1);
        }
        log::info!("deregistering");
        self.leave_deadline = Some(Instant::now() + self.config.leave_timeout);
        self.report();
        self.replica.begin_leave(&mut self.io);
        if !self.io.links.contains(self.io.lb) {
            // No LB to deregister with (it is down): none can send us
            // anything more, so only the peers' acknowledgements remain.
            // Registering goes on, to deregister with an LB that comes back
            // (see `lost_lb`).
            self.replica.on_deregister_ok();
        }
    }

    fn accept(&mut self) -> io::Result<()> {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let entry = self.io.links.vacant_entry();
                    let key = entry.key();
                    let mut conn = Conn::new(stream);
                    if let Err(e) = conn.set_interest(self.io.poll.registry(), Token(key), true) {
                        log::warn!("cannot watch an accepted connection: {e}");
                        continue;
                    }
                    let mut link = Link::new(conn, Role::New);
                    if let Some(secret) = &self.io.secret {
                        link.auth = Some(Box::new(Handshake::accept(secret, self.io.me.clone())));
                    }
                    entry.insert(link);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    return Ok(());
                }
            }
        }
    }

    /// The fsync thread made more of the log durable: release STOREDs.
    fn on_durable(&mut self) {
        if let Some(s) = self.io.syncer.as_mut() {
            if let Some(off) = s.completed() {
                self.io.durable = self.io.durable.max(off);
            }
        }
    }

    fn on_link_event(
        &mut self,
        key: usize,
        writable: bool,
        to_eof: bool,
    ) -> Result<(), Box<dyn Error>> {
        if key == self.io.lb {
            self.lb_heard = Instant::now();
            if self.lb_paused {
                return Ok(());
            }
        }
        let Some(link) = self.io.links.get_mut(key) else {
            return Ok(());
        };
        if let (Role::Out { peer, up: false }, None) = (&link.role, &link.auth) {
            let peer = *peer;
            if !writable {
                return Ok(());
            }
            match link.conn.stream.take_error() {
                Ok(None) if link.conn.stream.peer_addr().is_ok() => match &self.io.secret {
                    // Up once the peer has proved the secret (`handshake_frame`).
                    Some(secret) => {
                        match Handshake::dial(
                            secret,
                            self.io.me.clone(),
                            Some(peer),
                            link.conn.out(),
                        ) {
                            Ok(h) => link.auth = Some(Box::new(h)),
                            Err(e) => {
                                log::info!("link to peer {peer}: {e}");
                                self.close_link(key);
                                return Ok(());
                            }
                        }
                    }
                    None => self.out_link_up(key, peer),
                },
                other => {
                    log::warn!(
                        "could not connect to peer {peer}: {:?}",
                        other.ok().flatten()
                    );
                    self.close_link(key);
                    return Ok(());
                }
            }
        }
        if self.held_admin.contains(&key) {
            // Left unread until the store is built (`finish_building`).
            return Ok(());
        }
        let mut budget = INPUT_BUDGET;
        loop {
            let Some(link) = self.io.links.get_mut(key) else {
                return Ok(());
            };
            let max_frame = wire::HEADER_LEN + self.config.max_content + msg::MAX_OVERHEAD;
            let read = link.conn.read_ready(max_frame, to_eof);
            self.handle_input(key)?;
            let Some(link) = self.io.links.get_mut(key) else {
                return Ok(());
            };
            if key == self.io.lb && self.lb_paused && !link.conn.closed && !read.eof {
                return Ok(());
            }
            if link.conn.closed || read.eof {
                self.close_link(key);
                return Ok(());
            }
            if read.drained {
                return Ok(());
            }
            budget = budget.saturating_sub(read.bytes.max(1));
            if budget == 0 {
                if !self.more_input.contains(&key) {
                    self.more_input.push(key);
                }
                return Ok(());
            }
        }
    }

    /// Handles every whole frame buffered on `key`.
    fn handle_input(&mut self, key: usize) -> Result<(), Box<dyn Error>> {
        let max_content = self.config.max_content;
        loop {
            let Some(link) = self.io.links.get_mut(key) else {
                return Ok(());
            };
            if key == self.io.lb && link.conn.pending_out() > LB_OUT_CAP {
                self.lb_paused = true;
                return Ok(());
            }
            // Detach the input so the frame can borrow it while the replica
            // writes to other links.
            let input = std::mem::take(link.conn.input_mut());
            let (start, end) = link.conn.input_range();
            let result = msg::decode(&input[start..end], max_content);
            let consumed = match result {
                Ok(None) => {
                    self.restore_input(key, input);
                    return Ok(());
                }
                Err(code) => {
                    log::warn!("bad frame on link {key}: {}", code.name());
                    self.restore_input(key, input);
                    self.close_link(key);
                    return Ok(());
                }
                Ok(Some((m, _)))
                    if self.building.is_some()
                        && matches!(m, Msg::DigestRequest | Msg::DumpRequest)
                        && self.io.links.get(key).is_some_and(|l| l.auth.is_none()) =>
                {
                    // Answered from the whole store, once it is built.
                    self.restore_input(key, input);
                    if !self.held_admin.contains(&key) {
                        self.held_admin.push(key);
                    }
                    return Ok(());
                }
                Ok(Some((m, consumed))) => {
                    match self.io.links.get(key) {
                        Some(Link { auth: Some(_), .. }) => self.handshake_frame(key, &m),
                        _ => self.dispatch(key, m)?,
                    }
                    consumed
                }
            };
            self.restore_input(key, input);
            if let Some(link) = self.io.links.get_mut(key) {
                link.conn.consume(consumed);
            }
        }
    }

    fn restore_input(&mut self, key: usize, input: Vec<u8>) {
        if let Some(link) = self.io.links.get_mut(key) {
            *link.conn.input_mut() = input;
        }
    }

    fn dispatch(&mut self, key: usize, m: Msg<'_>) -> Result<(), Box<dyn Error>> {
        let role = match self.io.links.get(key) {
            Some(l) => match l.role {
                Role::Lb => 0,
                Role::Out { .. } => 1,
                Role::In { .. } => 2,
                Role::Admin { .. } => 3,
                Role::New => 4,
            },
            None => return Ok(()),
        };
        let r = &mut self.replica;
        let io = &mut self.io;
        match (role, m) {
            (
                0,
                Msg::Put {
                    req,
                    version,
                    id,
                    content,
                },
            ) => r.on_put(req, version, id, content, io),
            (0, Msg::Get { req, id, min }) => r.on_get(req, id, min.iter(), io),
            (0, Msg::Members { members }) => r.on_members(&members, io),
            (0, Msg::DeregisterOk) => r.on_deregister_ok(),
            // Its arrival already counted (see `on_link_event`).
            (0, Msg::Heartbeat) => {}
            (0, Msg::Behind { floor }) => r.on_behind(&floor, io),
            (0, Msg::Refused { reason }) => return Err(format!("LB refused: {reason}").into()),
            (1, Msg::PeerFlush) => {
                if let Some(link) = io.links.get_mut(key) {
                    link.flush_now = true;
                }
            }
            (1, Msg::PeerAck { seq }) => {
                if let Some(Role::Out { peer, .. }) = io.links.get(key).map(|l| &l.role) {
                    r.on_peer_ack(*peer, seq);
                }
            }
            (1, Msg::Record(rec)) => {
                self.catchup_records += 1;
                r.on_record(&rec, io);
            }
            (1, Msg::CatchupDone { vector }) => {
                if let Some(Role::Out { peer, .. }) = io.links.get(key).map(|l| &l.role) {
                    let peer = *peer;
                    log::info!(
                        "catch-up from worker {peer}: {} records, its vector {vector:?}",
                        std::mem::take(&mut self.catchup_records)
                    );
                    r.on_catchup_done(peer, &vector, io);
                }
            }
            (2, Msg::Record(rec)) => {
                if let Some(Role::In { peer, .. }) = io.links.get(key).map(|l| &l.role) {
                    let peer = *peer;
                    r.on_link_record(peer, &rec, io);
                }
            }
            (
                2,
                Msg::PeerHello {
                    id, origin, marker, ..
                },
            ) => {
                // A second hello on a link (none is sent now): it counts only
                // from the same process, whose acks the link already counts.
                if let Some(Role::In {
                    serial,
                    peer,
                    origin: on_link,
                    ..
                }) = io.links.get(key).map(|l| &l.role)
                {
                    if *peer == id && *on_link == origin {
                        let serial = *serial;
                        r.on_hello(id, serial, origin, marker, io);
                    }
                }
            }
            (2, Msg::CatchupRequest { vector }) if self.building.is_some() => {
                if let Some(Role::In { serial, .. }) = io.links.get(key).map(|l| &l.role) {
                    let serial = *serial;
                    self.deferred_catchups.push((key, serial, vector));
                }
            }
            (2, Msg::CatchupRequest { vector }) => self.start_catchup(key, vector),
            (
                4,
                Msg::PeerHello {
                    id,
                    origin,
                    marker,
                    addr,
                },
            ) => {
                if let Some(who) = io.links.get(key).and_then(|l| l.verified.as_ref()) {
                    if who.id != id || who.addr != addr {
                        let why = format!(
                            "hello as worker {id} at {addr}, but it authenticated as {} at {:?}",
                            who.id, who.addr
                        );
                        self.refuse(key, &why);
                        return Ok(());
                    }
                }
                io.link_serial += 1;
                let serial = io.link_serial;
                if let Some(link) = io.links.get_mut(key) {
                    link.role = Role::In {
                        peer: id,
                        origin,
                        serial,
                        acked: 0,
                        cursor: None,
                    };
                }
                r.on_hello(id, serial, origin, marker, io);
            }
            (3 | 4, Msg::DigestRequest) => {
                let reply = Msg::Digest {
                    id: r.id,
                    records: r.store.len() as u64,
                    digest: r.store.digest(),
                    vector: r.vv.to_vec(),
                };
                if let Some(link) = io.links.get_mut(key) {
                    link.role = Role::Admin { cursor: None };
                    msg::encode(link.conn.out(), &reply);
                }
            }
            (3 | 4, Msg::DumpRequest) => {
                let ids = r.store.sorted_ids();
                if let Some(link) = io.links.get_mut(key) {
                    link.role = Role::Admin {
                        cursor: Some(Cursor {
                            walk: Walk::Ids { ids, pos: 0 },
                            filter: Vec::new(),
                            done: None,
                        }),
                    };
                }
            }
            (_, Msg::AuthHello { .. }) => {
                log::warn!(
                    "link {key} tries to authenticate, but this worker runs --insecure; closing it"
                );
                self.close_link(key);
            }
            (_, other) => {
                log::warn!("unexpected {other:?} on link {key}; closing it");
                self.close_link(key);
            }
        }
        Ok(())
    }

    fn close_link(&mut self, key: usize) {
        if key == self.io.lb {
            self.lost_lb();
            return;
        }
        if !self.io.links.contains(key) {
            return;
        }
        let mut link = self.io.links.remove(key);
        link.conn.deregister(self.io.poll.registry());
        if link.auth.is_some() {
            self.io.auth_rejected += 1;
            log::warn!(
                "link {key} closed before authenticating \
                 (another cluster secret, or not an rrstore node)"
            );
        }
        match link.role {
            Role::Out { peer, .. } => {
                if self.io.out_links.get(&peer) == Some(&key) {
                    self.io.out_links.remove(&peer);
                }
                self.replica.on_link_down(peer, &mut self.io);
            }
            Role::In { peer, serial, .. } => self.replica.on_inbound_down(peer, serial),
            _ => {}
        }
    }

    /// Per turn: acks and reports, streams, one log write, one flush per link.
    fn end_of_turn(&mut self) -> Result<(), Box<dyn Error>> {
        let replica = &mut self.replica;
        // Cumulative acks to every peer whose records we applied.
        for (_, link) in self.io.links.iter_mut() {
            match &mut link.role {
                Role::In {
                    origin,
                    acked,
                    cursor,
                    ..
                } => {
                    let have = replica.vv.get(*origin);
                    if have > *acked {
                        *acked = have;
                        msg::encode(link.conn.out(), &Msg::PeerAck { seq: have });
                    }
                    if std::mem::take(&mut link.send_flush) {
                        msg::encode(link.conn.out(), &Msg::PeerFlush);
                    }
                    if let Some(c) = cursor {
                        if pump(c, &replica.store, &mut link.conn) {
                            *cursor = None;
                            link.trim_when_drained = true;
                        }
                    }
                }
                Role::Admin { cursor } => {
                    if let Some(c) = cursor {
                        if pump(c, &replica.store, &mut link.conn) {
                            *cursor = None;
                            link.trim_when_drained = true;
                        }
                    }
                }
                _ => {}
            }
        }
        let now = Instant::now();
        if self.metrics.is_some() {
            self.lag_clock.note(replica.own_seq(), now);
        }
        if self.replica.vector_dirty && now >= self.next_report {
            self.next_report = now + REPORT_EVERY;
            self.report();
        }
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + msg::HEARTBEAT_EVERY;
            self.io.to_lb(&Msg::Heartbeat);
        }
        // Also at once when a joiner becomes active (its catch-up grew the
        // log's buffer and a link's to megabytes), and in a turn no event
        // started (the loop went quiet after a burst): either would
        // otherwise keep them up to TRIM_EVERY longer.
        let phase = self.replica.phase();
        let trim = now >= self.next_trim
            || self.quiet_turn
            || (phase == Phase::Active && self.last_phase != phase);
        self.last_phase = phase;
        // Whether this turn freed a grown buffer (see the end).
        let mut freed = false;
        if trim {
            // A catch-up stream or a burst grew a link's buffers to
            // megabytes; once they are empty, they need not stay.
            self.next_trim = now + TRIM_EVERY;
            for (_, link) in self.io.links.iter_mut() {
                freed |= link.conn.trim();
            }
        }
        // The log first, so every STORED below follows its record's write.
        let written = self.io.log.flush()?;
        if trim {
            freed |= self.io.log.trim();
        }
        match self.io.fsync {
            FsyncPolicy::Always => {
                if self
                    .io
                    .held
                    .back()
                    .is_some_and(|&(off, _, _)| off > self.io.durable)
                {
                    if let Some(s) = self.io.syncer.as_mut() {
                        s.request(written);
                    }
                }
            }
            _ => self.io.durable = written,
        }
        let sealed = self.io.log.segment_len() >= self.config.segment_bytes;
        if sealed {
            let old = self.roller.roll(&mut self.io.log)?;
            if let Some(s) = self.io.syncer.as_mut() {
                s.seal(old, self.io.log.sync_handle()?);
            }
        }
        // A store still being built is only what arrived meanwhile, not
        // the log's live set (see `finish_building`).
        if self.building.is_none() && (sealed || self.compaction.recheck_due()) {
            self.compaction
                .maybe_start(&self.replica.store, &self.replica.vv);
        }
        self.compaction_next = self.compaction.step(&self.replica.store);
        let lb = self.io.lb;
        // Under `--ack all`, also every active peer must hold the record.
        let replicated = if self.io.ack_all {
            self.replica.acked_by_active_peers()
        } else {
            u64::MAX
        };
        while let Some(&(off, req, seq)) = self.io.held.front() {
            if off > self.io.durable || seq > replicated {
                break;
            }
            self.io.held.pop_front();
            if let Some(link) = self.io.links.get_mut(lb) {
                msg::encode(link.conn.out(), &Msg::Stored { req, seq });
            }
        }
        let registry = self.io.poll.registry();
        let mut closed = Vec::new();
        // Peers first, the LB last: a record is queued to every peer (and,
        // unless held below, written) before the STORED that confirms it
        // leaves.
        let mut lb_link = None;
        // Pacing (`--peer-flush-ms`): at pipeline 1 a turn holds a few
        // records, and sending them every turn woke each peer for each
        // (a read, a log write and an ack per turn on every peer), the
        // work that costs P1 throughput on two shared cores. Gathered for
        // up to the interval, they cost a fraction of that. Under `--ack
        // all` a STORED waits for the peers, so nothing is held there; nor
        // is a joiner's output (hellos, catch-up requests).
        let pace = !self.io.ack_all && phase == Phase::Active && now < self.next_peer_flush;
        let mut held_any = false;
        let mut sent_to_peer = false;
        // Held output counts as unread by `--peer-buffer-bytes` below.
        let hold_below = PACED_MAX.min(self.config.peer_buffer_bytes / 2);
        for (key, link) in self.io.links.iter_mut() {
            if key == lb {
                lb_link = Some(link);
                continue;
            }
            // Connected: up, or authenticating (the handshake has bytes to send).
            let out_peer = match link.role {
                Role::Out { peer, .. } => Some(peer),
                _ => None,
            };
            let connected =
                !matches!(link.role, Role::Out { up: false, .. }) || link.auth.is_some();
            // A peer's PEER_FLUSH (a GET there waits for these) ends the
            // hold until the output is all written.
            let held = pace
                && !link.flush_now
                && matches!(link.role, Role::Out { up: true, .. })
                && link.auth.is_none()
                && (1..hold_below).contains(&link.conn.pending_out());
            if held {
                held_any = true;
            } else if connected && link.conn.pending_out() > 0 {
                sent_to_peer |= out_peer.is_some();
                link.conn.flush();
            }
            if link.conn.pending_out() == 0 {
                link.flush_now = false;
            }
            if link.trim_when_drained && link.conn.pending_out() == 0 {
                link.trim_when_drained = false;
                freed |= link.conn.trim();
            }
            if let Some(peer) = out_peer {
                // What the kernel would not take (or, while connecting,
                // everything): the peer is not reading, or not reachable.
                let queued = link.conn.pending_out();
                if queued > self.config.peer_buffer_bytes {
                    log::warn!(
                        "peer {peer} is not reading ({queued} bytes queued); \
                         dropping the link, it catches up when the link is re-opened"
                    );
                    closed.push(key);
                    continue;
                }
            }
            if !connected {
                continue;
            }
            let write = !held && link.conn.pending_out() > 0;
            if link.conn.closed
                || link
                    .conn
                    .set_interest_to(registry, Token(key), true, write)
                    .is_err()
            {
                closed.push(key);
            }
        }
        if let Some(link) = lb_link {
            link.conn.flush();
            if self.lb_paused && link.conn.pending_out() <= LB_OUT_CAP / 2 {
                self.lb_paused = false;
                self.lb_resume = true;
            }
            if link.conn.closed || link.conn.set_interest(registry, Token(lb), true).is_err() {
                closed.push(lb);
            }
        }
        if sent_to_peer && !pace {
            self.next_peer_flush = now + self.config.peer_flush;
        }
        self.peer_output_held = held_any;
        for key in closed {
            self.close_link(key);
        }
        if freed {
            // Rare (a burst or a stream ended), and cheap on a heap of a
            // few MB: the store's arrays are mappings of their own.
            crate::conn::release_freed_memory();
        }
        Ok(())
    }
}
