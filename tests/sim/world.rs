//! The simulated world: worker processes (a [`Replica`] each, with the log
//! it persisted), the peer connections between them, and the [`Outbox`]
//! that turns a replica's effects into queued frames and log entries.
//!
//! A peer connection is keyed `(dialer, acceptor)`: `fwd` carries
//! dialer→acceptor (hellos, live records, catch-up requests), `back`
//! acceptor→dialer (acks, catch-up streams); each is FIFO, as TCP is. A
//! connection that breaks, or that an end closes or takes down by dying,
//! becomes [`Dying`]: a prefix of what each end wrote is still read, then
//! each end notices the close on its own. So a re-dialled connection may
//! carry frames while the old one still drains, as on real sockets.
//!
//! Acceptor-side serials are given when the first hello is read, as the
//! worker does (`Role::New` → `Role::In`).

use crate::check::History;
use crate::faults::{Budget, Crashed};
use crate::lb::{Lb, LbConn, ToLb};
use crate::Rng;
use rrstore::msg::{Msg, RecordRef, Vector};
use rrstore::replica::{Outbox, Phase, Replica};
use rrstore::store::Store;
use rrstore::vector::{lookup, VersionVector};
use std::collections::{BTreeMap, VecDeque};

/// A record, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub origin: u32,
    pub seq: u64,
    pub version: u64,
    pub id: u64,
    pub content: Vec<u8>,
}

impl Rec {
    pub fn of(r: &RecordRef<'_>) -> Rec {
        Rec {
            origin: r.origin,
            seq: r.seq,
            version: r.version,
            id: r.id,
            content: r.content.to_vec(),
        }
    }
    pub fn as_ref(&self) -> RecordRef<'_> {
        RecordRef {
            origin: self.origin,
            seq: self.seq,
            version: self.version,
            id: self.id,
            content: &self.content,
        }
    }
}

/// A frame on a peer connection.
#[derive(Debug, Clone)]
pub enum Wire {
    Hello { origin: u32, marker: u64 },
    Record(Rec),
    Ack(u64),
    CatchupRequest(Vector),
    CatchupDone(Vector),
}

/// One entry of a worker's log (`records.log`): replay applies records and
/// merges vectors, in order.
#[derive(Debug, Clone)]
pub enum Logged {
    Record(Rec),
    Vector(Vector),
}

/// Replays a log as `Worker::start` does.
pub fn replay(disk: &[Logged]) -> (Store, VersionVector) {
    let mut store = Store::new();
    let mut vv = VersionVector::new();
    for e in disk {
        match e {
            Logged::Record(r) => {
                store.apply(&r.as_ref());
                vv.observe(r.origin, r.seq);
            }
            Logged::Vector(v) => {
                vv.merge(v);
            }
        }
    }
    (store, vv)
}

/// The acceptor's catch-up stream: frozen ids, position, filter, vector.
pub struct Cursor {
    ids: Vec<u64>,
    pos: usize,
    filter: Vector,
    done: Vector,
}

/// A peer connection that both ends believe is open.
#[derive(Default)]
pub struct Link {
    /// Connected (the dialer's hello is queued).
    pub up: bool,
    pub fwd: VecDeque<Wire>,
    pub back: VecDeque<Wire>,
    pub cursor: Option<Cursor>,
    /// The acceptor's last PeerAck on this connection.
    pub acked: u64,
    /// The acceptor's serial, given at the first hello; 0 before.
    pub serial: u64,
    /// The dialer's origin, from its first hello: what acks count.
    pub origin: u32,
}

/// A peer connection that is closed or broken: what is left of each queue
/// still arrives, then that end notices.
pub struct Dying {
    pub from: u32,
    pub to: u32,
    pub serial: u64,
    pub fwd: VecDeque<Wire>,
    pub back: VecDeque<Wire>,
    /// The dialer noticed (or closed it itself, or is dead).
    pub dialer_done: bool,
    pub acceptor_done: bool,
}

/// A live worker process.
pub struct Node {
    pub replica: Replica,
    /// Its current LB connection; None while it is (re-)registering.
    pub conn: Option<u64>,
    /// The vector last reported to the LB (None: report at the next turn).
    pub last_report: Option<Vector>,
    /// What it has logged, oldest first.
    pub disk: Vec<Logged>,
}

pub struct Sim {
    pub seed: u64,
    pub rng: Rng,
    /// Steps taken: the wall clock (microseconds, say).
    pub now: u64,
    pub nodes: BTreeMap<u32, Node>,
    /// Where each live worker listens.
    pub addrs: BTreeMap<u32, String>,
    pub links: BTreeMap<(u32, u32), Link>,
    pub dying: Vec<Dying>,
    /// Outbound connections to re-open `(dialer, peer) → address`: tried
    /// whenever a process listens there (a failed attempt is retried).
    pub redials: BTreeMap<(u32, u32), String>,
    /// Worker↔LB connections by serial.
    pub conns: BTreeMap<u64, LbConn>,
    /// None while the LB is down.
    pub lb: Option<Lb>,
    pub lb_down_since: u64,
    /// The member IDs the crashed LB had saved (see `lb_restart`).
    pub lb_listed: Option<Vec<u32>>,
    pub hist: History,
    pub stats: crate::check::Stats,
    /// Crashed workers that will come back, with their data directories.
    pub crashed: BTreeMap<u32, Crashed>,
    pub budget: Budget,
    /// Workers that left (their IDs may come back with an empty disk).
    pub departed: Vec<u32>,
    pub ops_left: u32,
    pub joins_left: u32,
    pub leaves_left: u32,
    pub log: Vec<String>,
    /// `SIM_TRACE=1`: print every step.
    pub trace: bool,
    pub serials: u64,
    pub next_conn: u64,
    pub next_addr: u64,
    /// The highest worker ID so far.
    pub max_id: u32,
    /// LB request ids: never reused, not even by a restarted LB (the real
    /// one starts from the wall clock in microseconds).
    pub next_req: u64,
}

/// The replica's effects, into the simulated queues and log.
pub struct SimOut<'a> {
    me: u32,
    /// The origin of `me`'s process.
    origin: u32,
    links: &'a mut BTreeMap<(u32, u32), Link>,
    dying: &'a mut Vec<Dying>,
    redials: &'a mut BTreeMap<(u32, u32), String>,
    addrs: &'a BTreeMap<u32, String>,
    to_lb: Option<&'a mut VecDeque<ToLb>>,
    disk: &'a mut Vec<Logged>,
    hist: &'a mut History,
    /// Outbound connections this process closed (`forget`).
    closed: Vec<((u32, u32), Link)>,
}

impl SimOut<'_> {
    fn close(&mut self, peer: u32) {
        if let Some(old) = self.links.remove(&(self.me, peer)) {
            self.closed.push(((self.me, peer), old));
        }
    }
}

impl Outbox for SimOut<'_> {
    fn to_lb(&mut self, msg: &Msg<'_>) {
        let m = match msg {
            Msg::Ready { vector, markers } => ToLb::Ready {
                vector: vector.clone(),
                markers: markers.clone(),
            },
            Msg::Deregister => ToLb::Deregister,
            other => panic!("unexpected to_lb {other:?}"),
        };
        if let Some(q) = self.to_lb.as_mut() {
            q.push_back(m);
        }
    }
    fn broadcast(&mut self, rec: &RecordRef<'_>) {
        // Only `on_put` broadcasts: a new record, whose identity is checked
        // once the step is over.
        self.hist.created.push(Rec::of(rec));
        for (_, link) in self.links.range_mut((self.me, 0)..=(self.me, u32::MAX)) {
            if link.up {
                link.fwd.push_back(Wire::Record(Rec::of(rec)));
            }
        }
    }
    fn to_peer(&mut self, peer: u32, msg: &Msg<'_>) {
        let Some(link) = self.links.get_mut(&(self.me, peer)) else {
            return;
        };
        let wire = match msg {
            Msg::PeerHello { origin, marker, .. } => Wire::Hello {
                origin: *origin,
                marker: *marker,
            },
            Msg::CatchupRequest { vector } => Wire::CatchupRequest(vector.clone()),
            Msg::Record(r) => Wire::Record(Rec::of(r)),
            other => panic!("unexpected to_peer {other:?}"),
        };
        link.fwd.push_back(wire);
    }
    fn persist_record(&mut self, rec: &RecordRef<'_>) {
        self.disk.push(Logged::Record(Rec::of(rec)));
    }
    fn persist_vector(&mut self, vector: &[(u32, u64)]) {
        self.disk.push(Logged::Vector(vector.to_vec()));
    }
    fn dial(&mut self, peer: u32, addr: &str) {
        self.close(peer);
        self.redials.remove(&(self.me, peer));
        if self.addrs.get(&peer).is_some_and(|a| a == addr) {
            self.links.insert((self.me, peer), Link::default());
        } else {
            // Nobody listens there: the connect fails and is retried.
            self.redials.insert((self.me, peer), addr.to_string());
        }
    }
    fn redial(&mut self, peer: u32, addr: &str) {
        self.redials.insert((self.me, peer), addr.to_string());
    }
    fn forget(&mut self, peer: u32) {
        self.redials.remove(&(self.me, peer));
        self.close(peer);
        // A broken connection not noticed yet is just dropped: no callback.
        for d in self.dying.iter_mut() {
            if d.from == self.me && d.to == peer && !d.dialer_done {
                d.dialer_done = true;
                d.back.clear();
            }
        }
    }
    fn stored(&mut self, req: u64, seq: u64) {
        if let Some(q) = self.to_lb.as_mut() {
            q.push_back(ToLb::Stored { req, seq });
            self.hist.stored_emitted.insert((self.origin, seq));
            let top = self.hist.stored_max.entry(self.origin).or_insert(0);
            *top = (*top).max(seq);
        }
    }
    fn value(&mut self, req: u64, content: Option<&[u8]>) {
        if let Some(q) = self.to_lb.as_mut() {
            q.push_back(ToLb::Value {
                req,
                content: content.map(<[u8]>::to_vec),
            });
        }
    }
    /// The simulation delivers links in its own order and holds nothing
    /// back for pacing, so there is nothing to hurry.
    fn hurry(&mut self, _: u32) {}
}

impl Sim {
    /// Records an event for the failure message (and the trace).
    pub fn note(&mut self, event: String) {
        if self.trace {
            eprintln!("{} == {event}", self.now);
        }
        self.log.push(event);
    }

    /// A random prefix length of a queue of `n` frames.
    pub fn prefix(&mut self, n: usize) -> usize {
        if n == 0 || self.rng.chance(50) {
            n
        } else {
            self.rng.below(n + 1)
        }
    }

    /// Runs `f` on worker `id`'s replica, then the loop's end of turn: acks
    /// on inbound links and a report to the LB.
    pub fn with_node(&mut self, id: u32, f: impl FnOnce(&mut Replica, &mut SimOut<'_>)) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let to_lb = node
            .conn
            .and_then(|c| self.conns.get_mut(&c))
            .filter(|c| c.lb_open)
            .map(|c| &mut c.to_lb);
        let mut out = SimOut {
            me: id,
            origin: node.replica.origin,
            links: &mut self.links,
            dying: &mut self.dying,
            redials: &mut self.redials,
            addrs: &self.addrs,
            to_lb,
            disk: &mut node.disk,
            hist: &mut self.hist,
            closed: Vec::new(),
        };
        f(&mut node.replica, &mut out);
        for ((_, to), link) in out.links.iter_mut() {
            if *to == id && link.serial != 0 {
                let have = node.replica.vv.get(link.origin);
                if have > link.acked {
                    link.acked = have;
                    link.back.push_back(Wire::Ack(have));
                }
            }
        }
        let vector = node.replica.vv.to_vec();
        if node.last_report.as_ref() != Some(&vector) {
            if let Some(q) = out.to_lb.as_mut() {
                for &(o, s) in &vector {
                    let r = out.hist.reported.entry((id, o)).or_insert(0);
                    *r = (*r).max(s);
                }
                q.push_back(ToLb::Report {
                    vector: vector.clone(),
                    max_version: node.replica.store.max_version(),
                });
            }
            node.last_report = Some(vector);
        }
        let closed = std::mem::take(&mut out.closed);
        for (key, link) in closed {
            // `forget` flushes what is queued; the kernel takes a prefix.
            let keep = self.prefix(link.fwd.len());
            self.retire(key, link, keep, 0, true, false);
        }
        if !self.hist.created.is_empty() {
            self.check_created();
        }
    }

    /// Moves a connection to `dying`, keeping the first `keep_fwd` and
    /// `keep_back` frames of its queues.
    pub fn retire(
        &mut self,
        (from, to): (u32, u32),
        mut link: Link,
        keep_fwd: usize,
        keep_back: usize,
        dialer_done: bool,
        acceptor_done: bool,
    ) {
        link.fwd.truncate(keep_fwd);
        link.back.truncate(keep_back);
        let d = Dying {
            from,
            to,
            serial: link.serial,
            // A connection that never carried a hello is nothing to the
            // acceptor (`Role::New`).
            acceptor_done: acceptor_done || (link.serial == 0 && link.fwd.is_empty()),
            dialer_done,
            fwd: link.fwd,
            back: link.back,
        };
        if !(d.dialer_done && d.acceptor_done) {
            self.dying.push(d);
        }
    }

    /// Delivers the front of link `key`'s `fwd` (to the acceptor) or `back`
    /// (to the dialer).
    pub fn deliver(&mut self, key: (u32, u32), forward: bool) {
        let (a, b) = key;
        let Some(link) = self.links.get_mut(&key) else {
            return;
        };
        let queue = if forward {
            &mut link.fwd
        } else {
            &mut link.back
        };
        let Some(wire) = queue.pop_front() else {
            return;
        };
        if !forward {
            self.hand_to_dialer(a, b, wire);
            return;
        }
        if let Wire::Hello { origin, .. } = wire {
            if link.serial == 0 {
                self.serials += 1;
                link.serial = self.serials;
                link.origin = origin;
            }
        }
        if let Wire::CatchupRequest(filter) = wire {
            let node = &self.nodes[&b];
            // The store's own order is a HashMap's; fix it by the seed.
            let mut ids = node.replica.store.sorted_ids();
            for i in (1..ids.len()).rev() {
                ids.swap(i, self.rng.below(i + 1));
            }
            link.cursor = Some(Cursor {
                ids,
                pos: 0,
                filter,
                done: node.replica.vv.to_vec(),
            });
            return;
        }
        let serial = link.serial;
        self.hand_to_acceptor(a, b, serial, wire);
    }

    /// Delivers the front of a dying connection's `fwd` or `back`.
    pub fn deliver_dying(&mut self, i: usize, forward: bool) {
        let d = &mut self.dying[i];
        let (a, b) = (d.from, d.to);
        let wire = if forward {
            d.fwd.pop_front()
        } else {
            d.back.pop_front()
        };
        let Some(wire) = wire else {
            return;
        };
        if !forward {
            self.hand_to_dialer(a, b, wire);
            return;
        }
        if matches!(wire, Wire::Hello { .. }) && d.serial == 0 {
            self.serials += 1;
            d.serial = self.serials;
        }
        let serial = d.serial;
        // A catch-up request on a broken connection: the stream it asks for
        // would go nowhere.
        if !matches!(wire, Wire::CatchupRequest(_)) {
            self.hand_to_acceptor(a, b, serial, wire);
        }
    }

    fn hand_to_acceptor(&mut self, a: u32, b: u32, serial: u64, wire: Wire) {
        match wire {
            Wire::Hello { origin, marker } => {
                self.with_node(b, |r, out| r.on_hello(a, serial, origin, marker, out))
            }
            Wire::Record(rec) => {
                self.with_node(b, |r, out| r.on_link_record(a, &rec.as_ref(), out))
            }
            other => panic!("unexpected forward {other:?}"),
        }
    }

    fn hand_to_dialer(&mut self, a: u32, b: u32, wire: Wire) {
        match wire {
            Wire::Ack(seq) => self.with_node(a, |r, _| r.on_peer_ack(b, seq)),
            Wire::Record(rec) => self.with_node(a, |r, out| {
                r.on_record(&rec.as_ref(), out);
            }),
            Wire::CatchupDone(v) => self.with_node(a, |r, out| r.on_catchup_done(b, &v, out)),
            other => panic!("unexpected backward {other:?}"),
        }
    }

    /// The dialer of dying connection `i` reads its end: `on_link_down`.
    pub fn dialer_notices(&mut self, i: usize) {
        let d = &mut self.dying[i];
        d.dialer_done = true;
        let (a, b) = (d.from, d.to);
        self.with_node(a, |r, out| r.on_link_down(b, out));
    }

    /// The acceptor of dying connection `i` reads its end.
    pub fn acceptor_notices(&mut self, i: usize) {
        let d = &mut self.dying[i];
        d.acceptor_done = true;
        let (a, b, serial) = (d.from, d.to, d.serial);
        if serial != 0 {
            self.with_node(b, |r, _| r.on_inbound_down(a, serial));
        }
    }

    /// Streams a few catch-up entries, reading the store as it is now.
    pub fn pump(&mut self, key: (u32, u32)) {
        let Some(link) = self.links.get_mut(&key) else {
            return;
        };
        let Some(c) = link.cursor.as_mut() else {
            return;
        };
        let store = &self.nodes[&key.1].replica.store;
        let n = 1 + self.rng.below(4);
        for _ in 0..n {
            let Some(&id) = c.ids.get(c.pos) else { break };
            c.pos += 1;
            if let Some(e) = store.get(id) {
                if e.seq > lookup(&c.filter, e.origin) {
                    link.back.push_back(Wire::Record(Rec::of(&e)));
                }
            }
        }
        if c.pos >= c.ids.len() {
            link.back
                .push_back(Wire::CatchupDone(std::mem::take(&mut c.done)));
            link.cursor = None;
        }
    }

    /// A re-dial of `key` whose target now listens at its address.
    pub fn redial_now(&mut self, key: (u32, u32)) {
        let Some(addr) = self.redials.remove(&key) else {
            return;
        };
        let (a, b) = key;
        let wanted = self
            .nodes
            .get(&a)
            .is_some_and(|n| n.replica.wants_link(b, &addr));
        if wanted && !self.links.contains_key(&key) {
            self.links.insert(key, Link::default());
        }
    }

    /// The connection `key` comes up: the dialer sends its hello.
    pub fn link_up(&mut self, key: (u32, u32)) {
        if let Some(l) = self.links.get_mut(&key) {
            l.up = true;
        }
        self.with_node(key.0, |r, out| r.on_link_up(key.1, out));
    }

    /// Whether record `(origin, seq)` is held durably but by worker `not`:
    /// applied (or covered) by another live worker, or in the data
    /// directory of one that will restart. `contiguous`: covered by its
    /// vector, as a REPORT or a `CatchupDone` says;
    /// else also applied above a gap.
    ///
    /// A crashed worker that is to lose its directory counts only for
    /// `exists` (that the record is somewhere now); so does a leaving one,
    /// but for its own records.
    pub fn held_durably(
        &self,
        not: u32,
        origin: u32,
        seq: u64,
        contiguous: bool,
        exists: bool,
    ) -> bool {
        let holds =
            |vv: &VersionVector| vv.get(origin) >= seq || (!contiguous && vv.has(origin, seq));
        // A leaving worker takes its copies of other origins' records away:
        // it waits only for its own records to reach its peers.
        self.nodes.iter().any(|(&id, n)| {
            id != not
                && (exists
                    || n.replica.origin == origin
                    || !matches!(n.replica.phase(), Phase::Leaving { .. }))
                && holds(&n.replica.vv)
        }) || self
            .crashed
            .iter()
            .any(|(&id, c)| id != not && (exists || !c.lost_dir) && holds(&c.vv))
    }
}
