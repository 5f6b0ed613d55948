//! One mio event loop driving a set of connections.
//!
//! Each loop turn: handle readiness events (read until WouldBlock, match
//! every whole response to its request, record it), then let every
//! connection send what its [`Pacer`] says is due, append those requests to
//! the connection's write buffer and write each buffer once (one batch per
//! connection per turn), then arm the [`Timer`] for the next instant
//! anything is due (a request, the end of the run, the live-line tick) and
//! poll again.
//!
//! Requests in flight live in a fixed array of `P` slots per connection.
//! rrstore responses name their slot by tag (they may come back in any
//! order); Redis replies come back in order and are matched FIFO. With
//! `redis_wait` a PUT is a SET followed by `WAIT N 0`, one request in one
//! slot: the SET's reply is kept in the slot and the WAIT's reply completes
//! it (latency from the SET's send to the WAIT's answer). Buffers,
//! slots and histograms are allocated before the run starts: the hot path
//! allocates nothing (the verify list of acknowledged ids grows amortised).
//!
//! A connection that fails counts its requests in flight as errors and is
//! re-dialled after [`RETRY`]; meanwhile its share of the schedule waits, so
//! an outage shows up in the corrected latency of what follows.

use crate::buf::{ReadBuf, WriteBuf};
use crate::proto::{self, Decoded, ErrorKind, Protocol, Reply};
use crate::report::{new_histogram, Stats};
use crate::schedule::{Mode, Pacer};
use crate::timer::Timer;
use crate::workload::{fill_content, Op, Rng, Workload};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

/// Delay before re-dialling a failed connection.
pub const RETRY: Duration = Duration::from_millis(100);
/// How long the initial connects may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const TIMER: Token = Token(usize::MAX - 1);
const SECOND_NS: u64 = 1_000_000_000;

/// What one engine (thread) runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub addr: SocketAddr,
    pub protocol: Protocol,
    /// Global numbers of this engine's connections (`0..total_conns`).
    pub conn_ids: Vec<u64>,
    pub total_conns: u64,
    pub pipeline: u32,
    pub mode: Mode,
    pub workload: Workload,
    pub value_size: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// After the end, how long to wait for answers still outstanding.
    pub drain: Duration,
    /// Keep the id of every STORED PUT (for `--verify`).
    pub collect_acks: bool,
    /// Redis: follow every SET with `WAIT N 0` (`--redis-wait N`).
    pub redis_wait: Option<u32>,
    /// Only global requests `0..limit` exist (`--fill`); the run ends once
    /// they are all answered.
    pub limit: Option<u64>,
}

/// One second of one engine, for the live line.
pub struct Live {
    /// 1 for the first second after the start.
    pub second: u64,
    /// Outcomes (success or error) in this second.
    pub completed: u64,
    pub errors: u64,
    /// Corrected latencies of this second's successes, µs.
    pub hist: Histogram<u64>,
}

/// What an engine hands back.
pub struct EngineResult {
    pub stats: Stats,
    /// Ids of STORED PUTs (with `collect_acks`).
    pub acked: Vec<u64>,
    /// Re-dials that failed during the run.
    pub connect_failures: u64,
    /// When the engine stopped, ns since the start.
    pub finished_ns: u64,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    intended: u64,
    sent: u64,
    id: u64,
    op: Op,
    busy: bool,
    /// A SET + WAIT pair: the SET's reply, once it has come.
    set_reply: Option<Reply>,
}

/// Marks a Redis FIFO entry as the SET of a SET + WAIT pair: its reply is
/// kept, and the WAIT's reply that follows completes the request. (Slot
/// indices are below 2^16, the largest pipeline.)
const SET_OF_PAIR: u32 = 1 << 31;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Up,
    Down { retry_at: u64 },
}

struct Conn {
    stream: Option<TcpStream>,
    state: State,
    rbuf: ReadBuf,
    wbuf: WriteBuf,
    pacer: Pacer,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Redis: slots in the order their requests were written (a SET + WAIT
    /// pair twice, the first time with [`SET_OF_PAIR`]).
    fifo: VecDeque<u32>,
    rng: Rng,
}

/// Where outcomes go: the run's statistics, the live second, the acks.
struct Recorder {
    stats: Stats,
    live: Histogram<u64>,
    live_completed: u64,
    live_errors: u64,
    acked: Option<Vec<u64>>,
    /// The measured window, ns since the start.
    warm: u64,
    end: u64,
}

fn to_us(ns: u64) -> u64 {
    (ns + 500) / 1000
}

impl Recorder {
    fn outcome(&mut self, slot: &Slot, result: Result<(), ErrorKind>, now: u64) {
        let in_window = slot.intended >= self.warm && slot.intended < self.end;
        if now >= self.warm && now < self.end {
            self.stats.completed_in_window += 1;
        }
        self.live_completed += 1;
        match result {
            Ok(()) => {
                let corrected = to_us(now.saturating_sub(slot.intended));
                let uncorrected = to_us(now.saturating_sub(slot.sent));
                self.live.saturating_record(corrected.max(1));
                if in_window {
                    let lag = to_us(slot.sent.saturating_sub(slot.intended));
                    self.stats.record(corrected, uncorrected, lag);
                }
            }
            Err(kind) => {
                self.live_errors += 1;
                if in_window {
                    self.stats.error(kind);
                }
            }
        }
    }
}

/// What a reply means for the request in `slot`.
fn judge(slot: &Slot, reply: Reply) -> Result<(), ErrorKind> {
    match reply {
        Reply::Error(kind) => Err(kind),
        Reply::Stored { id } | Reply::Value { id } | Reply::NotFound { id } if id != slot.id => {
            Err(ErrorKind::Protocol)
        }
        r if r.answers(slot.op) => Ok(()),
        _ => Err(ErrorKind::Protocol),
    }
}

impl Conn {
    /// Takes every whole response out of the read buffer. `Err` if the
    /// stream is garbage or names no request in flight.
    fn parse(
        &mut self,
        protocol: Protocol,
        redis_wait: Option<u32>,
        rec: &mut Recorder,
        now: u64,
    ) -> Result<(), ()> {
        loop {
            let decoded = match protocol {
                Protocol::Rrstore => {
                    proto::decode_rrstore(self.rbuf.data(), rrstore::wire::DEFAULT_MAX_CONTENT)
                }
                Protocol::Redis => proto::decode_resp(self.rbuf.data()),
            };
            let (tag, reply, consumed) = match decoded {
                Decoded::Incomplete => return Ok(()),
                Decoded::Invalid(_) => return Err(()),
                Decoded::Frame {
                    tag,
                    reply,
                    consumed,
                } => (tag, reply, consumed),
            };
            self.rbuf.consume(consumed);
            let (index, first_of_pair) = match protocol {
                Protocol::Rrstore => (tag, false),
                Protocol::Redis => {
                    let entry = self.fifo.pop_front().ok_or(())?;
                    (entry & !SET_OF_PAIR, entry & SET_OF_PAIR != 0)
                }
            };
            let slot = match self.slots.get_mut(index as usize) {
                Some(s) if s.busy => s,
                _ => return Err(()),
            };
            if first_of_pair {
                slot.set_reply = Some(reply);
                continue;
            }
            slot.busy = false;
            let slot = *slot;
            self.free.push(index);
            self.pacer.completed();
            let result = match (slot.set_reply, redis_wait) {
                (Some(set), Some(replicas)) => proto::wait_outcome(set, reply, replicas),
                _ => judge(&slot, reply),
            };
            if let (Some(acked), Ok(()), Op::Put) = (rec.acked.as_mut(), result, slot.op) {
                if matches!(reply, Reply::Stored { .. }) {
                    acked.push(slot.id);
                }
            }
            rec.outcome(&slot, result, now);
        }
    }

    /// Drops the connection: every request in flight fails with `kind`.
    fn fail(&mut self, poll: &Poll, rec: &mut Recorder, kind: ErrorKind, now: u64) {
        if let Some(mut s) = self.stream.take() {
            let _ = poll.registry().deregister(&mut s);
        }
        for i in 0..self.slots.len() {
            if self.slots[i].busy {
                self.slots[i].busy = false;
                self.free.push(i as u32);
                self.pacer.completed();
                let slot = self.slots[i];
                rec.outcome(&slot, Err(kind), now);
            }
        }
        self.fifo.clear();
        self.rbuf.clear();
        self.wbuf.clear();
        self.state = State::Down {
            retry_at: now + RETRY.as_nanos() as u64,
        };
    }
}

pub struct Engine {
    cfg: EngineConfig,
    poll: Poll,
    timer: Timer,
    conns: Vec<Conn>,
    /// Scratch for a PUT's content.
    content: Vec<u8>,
    connect_failures: u64,
    /// The run's time zero, shared by all engines.
    start: Instant,
}

/// Nanoseconds from `start` to now (0 before it).
fn since(start: Instant) -> u64 {
    Instant::now().saturating_duration_since(start).as_nanos() as u64
}

fn dial(poll: &Poll, addr: SocketAddr, token: Token) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr)?;
    poll.registry()
        .register(&mut s, token, Interest::READABLE | Interest::WRITABLE)?;
    Ok(s)
}

/// Whether a non-blocking connect has finished: `Ok(true)` connected,
/// `Ok(false)` still in progress.
fn connected(s: &TcpStream) -> io::Result<bool> {
    if let Some(e) = s.take_error()? {
        return Err(e);
    }
    match s.peer_addr() {
        Ok(_) => {
            s.set_nodelay(true)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

impl Engine {
    /// Opens every connection and waits until all are up.
    pub fn connect(cfg: EngineConfig) -> io::Result<Engine> {
        let poll = Poll::new()?;
        let timer = Timer::new()?;
        timer.register(poll.registry(), TIMER)?;
        let end_ns = (cfg.warmup + cfg.duration).as_nanos() as u64;
        let p = cfg.pipeline as usize;
        let frame = cfg.value_size + 64;
        let mut conns = Vec::with_capacity(cfg.conn_ids.len());
        for (i, &global) in cfg.conn_ids.iter().enumerate() {
            let stream = dial(&poll, cfg.addr, Token(i))
                .map_err(|e| io::Error::new(e.kind(), format!("connect {}: {e}", cfg.addr)))?;
            conns.push(Conn {
                stream: Some(stream),
                state: State::Connecting,
                rbuf: ReadBuf::new(64 * 1024),
                wbuf: WriteBuf::new((p * frame).clamp(4096, 1 << 20)),
                pacer: Pacer::new(cfg.mode, cfg.total_conns, global, cfg.pipeline, end_ns)
                    .with_limit(cfg.limit.unwrap_or(u64::MAX)),
                slots: vec![
                    Slot {
                        intended: 0,
                        sent: 0,
                        id: 0,
                        op: Op::Put,
                        busy: false,
                        set_reply: None,
                    };
                    p
                ],
                free: (0..p as u32).rev().collect(),
                fifo: VecDeque::with_capacity(2 * p),
                rng: Rng::new(global.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x5EED),
            });
        }
        let mut engine = Engine {
            content: vec![0; cfg.value_size],
            cfg,
            poll,
            timer,
            conns,
            connect_failures: 0,
            start: Instant::now(),
        };
        engine.await_connected()?;
        Ok(engine)
    }

    fn await_connected(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let mut events = Events::with_capacity(1024);
        loop {
            let mut pending = 0;
            for c in self.conns.iter_mut() {
                if c.state == State::Connecting {
                    let s = c.stream.as_ref().ok_or(io::ErrorKind::NotConnected)?;
                    match connected(s) {
                        Ok(true) => c.state = State::Up,
                        Ok(false) => pending += 1,
                        Err(e) => {
                            return Err(io::Error::new(
                                e.kind(),
                                format!("connect {}: {e}", self.cfg.addr),
                            ))
                        }
                    }
                }
            }
            if pending == 0 {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "connect {}: {pending} connections still pending",
                        self.cfg.addr
                    ),
                ));
            }
            match self.poll.poll(&mut events, Some(left)) {
                Err(e) if e.kind() != io::ErrorKind::Interrupted => return Err(e),
                _ => {}
            }
        }
    }

    /// Runs the schedule from `start` (shared by all engines) to the end and
    /// the drain; sends a [`Live`] every second to `live`.
    pub fn run(mut self, start: Instant, live: Option<&Sender<Live>>) -> io::Result<EngineResult> {
        self.start = start;
        let now_ns = || since(start);
        let warm = self.cfg.warmup.as_nanos() as u64;
        let end = warm + self.cfg.duration.as_nanos() as u64;
        let drain_deadline = end + self.cfg.drain.as_nanos() as u64;
        let mut rec = Recorder {
            stats: Stats::new(),
            live: new_histogram(),
            live_completed: 0,
            live_errors: 0,
            acked: self.cfg.collect_acks.then(Vec::new),
            warm,
            end,
        };
        let mut next_tick = SECOND_NS;
        let mut events = Events::with_capacity(1024);
        loop {
            let mut now = now_ns();
            for event in events.iter() {
                if event.token() == TIMER {
                    self.timer.clear();
                    continue;
                }
                let ci = event.token().0;
                if ci >= self.conns.len() {
                    continue;
                }
                if self.conns[ci].state == State::Connecting {
                    // Any event on a connecting socket settles the connect.
                    self.writable(ci, &mut rec, now);
                    continue;
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.read(ci, &mut rec, &mut now);
                }
                if event.is_writable() {
                    self.writable(ci, &mut rec, now);
                }
            }
            now = now_ns();
            while now >= next_tick {
                if let Some(tx) = live {
                    let _ = tx.send(Live {
                        second: next_tick / SECOND_NS,
                        completed: rec.live_completed,
                        errors: rec.live_errors,
                        hist: rec.live.clone(),
                    });
                }
                rec.live.reset();
                rec.live_completed = 0;
                rec.live_errors = 0;
                next_tick += SECOND_NS;
            }
            let mut wake = next_tick.min(if now < end { end } else { drain_deadline });
            // With a limit the run may end before its time is up.
            let mut finished = now >= end || self.cfg.limit.is_some();
            for ci in 0..self.conns.len() {
                self.send_due(ci, &mut rec, now);
                let c = &self.conns[ci];
                match c.state {
                    State::Up => {
                        if let Some(t) = c.pacer.next_wake() {
                            wake = wake.min(t);
                        }
                    }
                    State::Down { retry_at } => wake = wake.min(retry_at),
                    State::Connecting => {}
                }
                finished &= c.pacer.inflight() == 0 && c.pacer.exhausted(now);
            }
            if finished || now >= drain_deadline {
                break;
            }
            self.timer.arm(wake, now_ns())?;
            // The timer is the real wake-up; the timeout is a backstop.
            let backstop =
                Duration::from_nanos(wake.saturating_sub(now)) + Duration::from_millis(5);
            match self.poll.poll(&mut events, Some(backstop)) {
                Err(e) if e.kind() != io::ErrorKind::Interrupted => return Err(e),
                Err(_) => events.clear(),
                Ok(()) => {}
            }
        }
        for c in &self.conns {
            let in_flight = c
                .slots
                .iter()
                .filter(|s| s.busy && s.intended >= warm && s.intended < end)
                .count() as u64;
            rec.stats.unfinished += in_flight + c.pacer.unsent_since(warm);
        }
        Ok(EngineResult {
            stats: rec.stats,
            acked: rec.acked.unwrap_or_default(),
            connect_failures: self.connect_failures,
            finished_ns: now_ns(),
        })
    }

    /// Reads until WouldBlock, handling responses as they arrive. `now` is
    /// refreshed after every read, so latency ends when the bytes arrived.
    fn read(&mut self, ci: usize, rec: &mut Recorder, now: &mut u64) {
        let protocol = self.cfg.protocol;
        let redis_wait = self.cfg.redis_wait;
        let c = &mut self.conns[ci];
        if c.state != State::Up {
            return;
        }
        loop {
            let Some(stream) = c.stream.as_mut() else {
                return;
            };
            match c.rbuf.read_from(stream) {
                Ok(0) => return c.fail(&self.poll, rec, ErrorKind::Io, *now),
                Ok(_) => {
                    *now = since(self.start);
                    if c.parse(protocol, redis_wait, rec, *now).is_err() {
                        return c.fail(&self.poll, rec, ErrorKind::Protocol, *now);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return c.fail(&self.poll, rec, ErrorKind::Io, *now),
            }
        }
    }

    /// A connect finished, or the socket has room again.
    fn writable(&mut self, ci: usize, rec: &mut Recorder, now: u64) {
        let c = &mut self.conns[ci];
        match c.state {
            State::Connecting => {
                let Some(s) = c.stream.as_ref() else { return };
                match connected(s) {
                    Ok(true) => c.state = State::Up,
                    Ok(false) => {}
                    Err(_) => {
                        self.connect_failures += 1;
                        c.fail(&self.poll, rec, ErrorKind::Io, now);
                    }
                }
            }
            State::Up => self.flush(ci, rec, now),
            State::Down { .. } => {}
        }
    }

    fn flush(&mut self, ci: usize, rec: &mut Recorder, now: u64) {
        let c = &mut self.conns[ci];
        if c.wbuf.pending() == 0 {
            return;
        }
        let Some(stream) = c.stream.as_mut() else {
            return;
        };
        if c.wbuf.flush_to(stream).is_err() {
            c.fail(&self.poll, rec, ErrorKind::Io, now);
        }
    }

    /// Re-dials a connection whose retry time has come; queues every
    /// request that is due on an up connection and writes the batch.
    fn send_due(&mut self, ci: usize, rec: &mut Recorder, now: u64) {
        let c = &mut self.conns[ci];
        match c.state {
            State::Down { retry_at } if now >= retry_at => {
                match dial(&self.poll, self.cfg.addr, Token(ci)) {
                    Ok(s) => {
                        c.stream = Some(s);
                        c.state = State::Connecting;
                    }
                    Err(_) => {
                        self.connect_failures += 1;
                        c.state = State::Down {
                            retry_at: now + RETRY.as_nanos() as u64,
                        };
                    }
                }
            }
            State::Up => {
                let cfg = &self.cfg;
                while let Some(due) = c.pacer.due(now) {
                    let Some(index) = c.free.pop() else { break };
                    let (op, id) = cfg.workload.pick(&mut c.rng, due.index);
                    c.slots[index as usize] = Slot {
                        intended: due.intended_ns,
                        sent: now,
                        id,
                        op,
                        busy: true,
                        set_reply: None,
                    };
                    if op == Op::Put {
                        fill_content(id, &mut self.content);
                    }
                    match cfg.protocol {
                        Protocol::Rrstore => {
                            proto::encode_rrstore(c.wbuf.vec(), index, op, id, &self.content)
                        }
                        Protocol::Redis => {
                            proto::encode_resp(c.wbuf.vec(), op, id, &self.content);
                            match cfg.redis_wait {
                                Some(replicas) if op == Op::Put => {
                                    proto::encode_resp_wait(c.wbuf.vec(), replicas, 0);
                                    c.fifo.push_back(index | SET_OF_PAIR);
                                }
                                _ => {}
                            }
                            c.fifo.push_back(index);
                        }
                    }
                    c.pacer.sent();
                    rec.stats.sent += 1;
                }
                self.flush(ci, rec, now);
            }
            _ => {}
        }
    }
}
