//! The replication and membership state machine of one worker.
//!
//! Pure: events come in as method calls, effects go out through [`Outbox`];
//! no sockets, no clocks, no files. The event loop in `worker.rs` implements
//! `Outbox` over real connections and the log; a simulation can implement it
//! over queues.
//!
//! The protocol (docs/ARCHITECTURE.md has the argument in full):
//! - Every record has an identity `(origin, seq)`. Each worker process has
//!   its own origin, given by the LB when the process first registers and
//!   never given to another process (a restart gets a new one). It numbers
//!   the PUTs it takes 1, 2, 3, … and streams each, in order, to every peer
//!   on its outbound link to that peer. Applying is last-writer-wins on
//!   `(version, origin)` (see `store.rs`), so duplicates are harmless.
//!   Because an origin dies with its process, a restart whose log lost its
//!   newest records can never number a new record like a lost one that
//!   survives elsewhere: those records are another, dead, origin's, spread
//!   by the LB's floors like those of a worker that left.
//! - When a worker's outbound link to peer P comes up it sends
//!   `PeerHello { origin, marker }`, where `marker` is its last seq: every
//!   own record above `marker` follows live on that link.
//! - A joiner asks one donor for a catch-up (everything beyond the joiner's
//!   vector, plus the donor's vector), then asks any peer P whose
//!   `V[origin(P)]` is still below P's marker. It is complete when
//!   `V[origin(P)] >= marker[P]` for every peer: every record of P is then
//!   either ≤ marker (covered by a catch-up from P itself or a donor) or >
//!   marker (live). This closes the gap where P's record reached the donor
//!   after the donor's snapshot.
//! - The joiner reports `Ready { vector, markers }` (markers by origin);
//!   the LB checks the same rule against its own list of active workers,
//!   and that the markers name every other joining worker, before
//!   activating it.
//! - A leaving worker waits until every peer has acknowledged its last seq.

use crate::msg::{Member, Msg, RecordRef, Status, Vector};
use crate::store::Store;
use crate::vector::{lookup, VersionVector};
use std::collections::{BTreeMap, BTreeSet};

#[cfg(test)]
mod tests;

/// GETs held for records still on their way; past this the oldest go (the
/// LB answered them TIMEOUT long before), so memory stays bounded if a gap
/// never fills.
const MAX_PARKED_GETS: usize = 100_000;

/// The effects the state machine asks for.
pub trait Outbox {
    /// Queue `msg` to the LB.
    fn to_lb(&mut self, msg: &Msg<'_>);
    /// Queue one of our own records to every peer whose live stream started.
    fn broadcast(&mut self, rec: &RecordRef<'_>);
    /// Queue `msg` on our outbound link to `peer` (must be up).
    fn to_peer(&mut self, peer: u32, msg: &Msg<'_>);
    /// Append a record to the local log.
    fn persist_record(&mut self, rec: &RecordRef<'_>);
    /// Append a merged catch-up vector to the local log.
    fn persist_vector(&mut self, vector: &[(u32, u64)]);
    /// Open an outbound link to `peer`; report it with [`Replica::on_link_up`].
    fn dial(&mut self, peer: u32, addr: &str);
    /// Dial `peer` again after a pause: its link broke but it is a member.
    fn redial(&mut self, peer: u32, addr: &str);
    /// Close our outbound link to `peer`: it left, or restarted elsewhere.
    /// (Its links to us close from its side.)
    fn forget(&mut self, peer: u32);
    /// Confirm a PUT to the LB (the loop holds it until the log is durable
    /// enough for the fsync policy).
    fn stored(&mut self, req: u64, seq: u64);
    /// Answer a GET.
    fn value(&mut self, req: u64, content: Option<&[u8]>);
    /// A GET waits for records numbered under `origin`: ask the process
    /// that numbers them, if it links to us, to send what it holds back
    /// for us now ([`Msg::PeerFlush`]).
    fn hurry(&mut self, origin: u32);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Catching up; not in the round robin.
    Joining,
    Active,
    /// Deregistering: `deregistered` once the LB promised to send no more
    /// requests (membership changes still come).
    Leaving {
        deregistered: bool,
    },
}

/// The hello on a peer's link to us. Kept apart from the peer table: the
/// LB's membership and the peer's own link travel on different connections,
/// so either may come first, and a peer that drops out of a (restarted)
/// LB's list and comes back keeps the link, and the marker, it never closed.
#[derive(Debug)]
struct Hello {
    /// The sending process's origin: tells a restarted process apart.
    origin: u32,
    /// Every own record of the sender above this follows on that link.
    marker: u64,
}

#[derive(Debug)]
struct Peer {
    status: Status,
    /// Where it listens and its process's origin: a change means a
    /// restarted process, so its links are rebuilt.
    addr: String,
    origin: u32,
    /// Our outbound link to it is up and its Hello has been queued.
    link_up: bool,
    /// Its cumulative acknowledgement of our own records.
    acked: u64,
}

pub struct Replica {
    pub id: u32,
    /// The origin of the records this process numbers (see the module doc).
    pub origin: u32,
    /// Our registered address, announced in hellos.
    pub addr: String,
    pub store: Store,
    pub vv: VersionVector,
    phase: Phase,
    peers: BTreeMap<u32, Peer>,
    /// The peer serving our catch-up request, if one is in flight.
    catchup_from: Option<u32>,
    catchups_done: u32,
    /// Our vector when we last asked for a catch-up: progress on a gap is
    /// measured from here (see [`Replica::on_catchup_done`]).
    requested_at: Vector,
    /// GETs waiting for the vector to cover what the LB required.
    parked_gets: Vec<(u64, u64, Vector)>,
    /// The markers of the last READY, until the LB asks again (BEHIND) or
    /// a new LB welcomes us: a READY goes out when they change, not each
    /// time a live record moves the vector (the LB's answer would be the
    /// same; a joiner complete for a while sent one per loop turn).
    last_ready: Option<Vector>,
    /// What the LB says we must cover of workers that have left.
    floor: Vector,
    /// The vector changed since the loop last reported it.
    pub vector_dirty: bool,
    /// Per origin we lacked records of: the peers asked so far.
    asked: BTreeMap<u32, BTreeSet<u32>>,
    /// The hello of each open link of a peer to us, by `(peer, link)`
    /// (see [`Hello`], [`Replica::marker`]).
    hellos: BTreeMap<(u32, u64), Hello>,
    /// `store` holds only what arrived since the start: the log's records
    /// are still being put into a store of their own (see
    /// [`Replica::store_built`]). The vector is whole; we are not complete.
    building: bool,
    /// A hand-over of stranded records waits for the catch-up in flight
    /// to end, or for us to be active (see `hand_over_stranded`).
    handover_due: bool,
    /// The LB's last membership named another worker, in any state: a
    /// leaver with no peer then waits for one to come back (see
    /// [`Replica::leave_complete`]).
    others_listed: bool,
}

impl Replica {
    /// A replica over a store and vector recovered from the log.
    /// `origin` is the one the LB gave this process (new to the cluster:
    /// nothing of it exists yet).
    pub fn new(id: u32, origin: u32, addr: String, store: Store, vv: VersionVector) -> Replica {
        Replica {
            id,
            origin,
            addr,
            hellos: BTreeMap::new(),
            store,
            vv,
            phase: Phase::Joining,
            peers: BTreeMap::new(),
            catchup_from: None,
            catchups_done: 0,
            requested_at: Vector::new(),
            parked_gets: Vec::new(),
            last_ready: None,
            floor: Vec::new(),
            vector_dirty: true,
            asked: BTreeMap::new(),
            building: false,
            handover_due: false,
            others_listed: false,
        }
    }

    /// The log's records are still being put into a store of their own:
    /// until [`Replica::store_built`], never complete (no READY), and
    /// `store` holds only what arrives meanwhile.
    pub fn store_building(&mut self) {
        self.building = true;
    }

    /// The log's store is built: what arrived meanwhile joins it.
    pub fn store_built(&mut self, mut full: Store, out: &mut impl Outbox) {
        full.absorb(std::mem::take(&mut self.store));
        self.store = full;
        self.building = false;
        self.vector_dirty = true;
        self.hand_over_stranded(None, out);
        self.maybe_ready(out);
    }

    /// The protocol state, for diagnostics (logs, the simulation).
    pub fn describe(&self) -> String {
        format!(
            "phase {:?} origin {} own {} catchup_from {:?} catchups_done {} asked {:?} floor {:?} pending_above {} peers {:?}",
            self.phase,
            self.origin,
            self.own_seq(),
            self.catchup_from,
            self.catchups_done,
            self.asked,
            self.floor,
            self.vv.pending_above(),
            self.peers
        )
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// How far `peer` has acknowledged our own records, if it is a peer.
    pub fn peer_acked(&self, peer: u32) -> Option<u64> {
        self.peers.get(&peer).map(|p| p.acked)
    }

    /// Our last own sequence number: every record of our origin is ours,
    /// numbered by this process.
    pub fn own_seq(&self) -> u64 {
        self.vv.get(self.origin)
    }

    /// The current origin of `peer`, if it is a peer.
    #[cfg(test)]
    pub fn peer_origin(&self, peer: u32) -> Option<u32> {
        self.peers.get(&peer).map(|p| p.origin)
    }

    /// Whether `origin` is ours or a peer's current one: it still streams
    /// its own records.
    fn is_live_origin(&self, origin: u32) -> bool {
        origin == self.origin || self.peers.values().any(|p| p.origin == origin)
    }

    /// The LB's membership (at welcome and on every change).
    pub fn on_members(&mut self, members: &[Member], out: &mut impl Outbox) {
        self.others_listed = members.iter().any(|m| m.id != self.id);
        let mut seen = Vec::with_capacity(members.len());
        let mut dropped = false;
        for m in members {
            if m.id == self.id {
                if m.status == Status::Active && self.phase == Phase::Joining {
                    self.phase = Phase::Active;
                    self.hand_over_if_due(out);
                    self.parked_gets.shrink_to_fit();
                }
                continue;
            }
            if m.status == Status::Inactive {
                continue;
            }
            seen.push(m.id);
            let restarted = self
                .peers
                .get(&m.id)
                .is_some_and(|p| p.addr != m.addr || p.origin != m.origin);
            if restarted {
                // Its earlier process's origin streams no more.
                self.drop_peer(m.id, out);
                dropped = true;
            }
            match self.peers.get_mut(&m.id) {
                Some(p) => p.status = m.status,
                None => {
                    self.peers.insert(
                        m.id,
                        Peer {
                            status: m.status,
                            addr: m.addr.clone(),
                            origin: m.origin,
                            link_up: false,
                            acked: 0,
                        },
                    );
                    out.dial(m.id, &m.addr);
                }
            }
        }
        // A leaving worker drops only peers listed as inactive (dead: it
        // stops waiting for them), and only while another peer remains to
        // hand its records to. One missing from the list may just not be
        // back yet at a restarted LB; dropping it, a leaver could find
        // nobody left to wait for and exit holding the only copies.
        let leaving = matches!(self.phase, Phase::Leaving { .. });
        let mut gone: Vec<u32> = self
            .peers
            .keys()
            .copied()
            .filter(|id| !seen.contains(id))
            .filter(|id| !leaving || members.iter().any(|m| m.id == *id))
            .collect();
        if leaving && !self.peers.is_empty() && gone.len() == self.peers.len() {
            gone.clear();
        }
        dropped |= !gone.is_empty();
        for id in gone {
            self.drop_peer(id, out);
        }
        if dropped {
            self.hand_over_stranded(None, out);
        }
        self.maybe_request_catchup(out);
        self.maybe_ready(out);
    }

    /// Records we hold above a gap of an origin that is no peer's now
    /// (crashed, cut off, gone, or an earlier process of a peer): the gap may never fill, so no vector
    /// will ever ask for them, and a store that lacks them would stay
    /// different for good. They go to `to`, or to every peer whose link is
    /// up, which apply them as any record. Costs a scan of the store when
    /// an origin that is not a peer has a gap here, so it runs only at a
    /// few moments: an origin drops out, a link comes up or goes down, a
    /// catch-up ends, we become active.
    ///
    /// Not while joining, nor with a catch-up in flight: a catch-up
    /// streams in store order, so most of it lands above a gap until
    /// CATCHUP_DONE, and a joiner's gaps say nothing yet. The hand-over is
    /// then due once the catch-up ends or we are active (a leaving worker
    /// hands over too, and does not leave while one is due).
    fn hand_over_stranded(&mut self, to: Option<u32>, out: &mut impl Outbox) {
        if self.phase == Phase::Joining || self.catchup_from.is_some() {
            self.handover_due = true;
            return;
        }
        let to = if std::mem::take(&mut self.handover_due) {
            None
        } else {
            to
        };
        let stranded: Vec<u32> = self
            .vv
            .gapped()
            .filter(|&o| !self.is_live_origin(o))
            .collect();
        if stranded.is_empty() {
            return;
        }
        let targets: Vec<u32> = match to {
            Some(p) => vec![p],
            None => self
                .peers
                .iter()
                .filter(|(_, p)| p.link_up)
                .map(|(&id, _)| id)
                .collect(),
        };
        for id in self.store.ids() {
            let Some(e) = self.store.get(id) else {
                continue;
            };
            if stranded.contains(&e.origin) && e.seq > self.vv.get(e.origin) {
                for &peer in &targets {
                    out.to_peer(peer, &Msg::Record(e));
                }
            }
        }
    }

    fn drop_peer(&mut self, id: u32, out: &mut impl Outbox) {
        self.peers.remove(&id);
        self.asked.clear();
        out.forget(id);
        if self.catchup_from == Some(id) {
            self.catchup_from = None;
        }
    }

    /// Our outbound link to `peer` connected: announce our marker. From now
    /// on the loop includes this link in every [`Outbox::broadcast`].
    pub fn on_link_up(&mut self, peer: u32, out: &mut impl Outbox) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.link_up = true;
        // A new link is a new chance for every gap.
        self.asked.clear();
        out.to_peer(
            peer,
            &Msg::PeerHello {
                id: self.id,
                origin: self.origin,
                marker: self.own_seq(),
                addr: self.addr.clone(),
            },
        );
        self.hand_over_stranded(Some(peer), out);
        self.maybe_request_catchup(out);
    }

    /// Our outbound link to `peer` failed or closed.
    pub fn on_link_down(&mut self, peer: u32, out: &mut impl Outbox) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.link_up = false;
            // Still a member: reconnect. The new hello's marker tells the
            // peer what to catch up of what was lost with the old link.
            out.redial(peer, &p.addr);
        }
        if self.catchup_from == Some(peer) {
            self.catchup_from = None;
        }
        self.maybe_request_catchup(out);
        self.hand_over_if_due(out);
    }

    /// Whether we still want an outbound link to `peer` at `addr`.
    pub fn wants_link(&self, peer: u32, addr: &str) -> bool {
        self.peers
            .get(&peer)
            .is_some_and(|p| !p.link_up && p.addr == addr)
    }

    /// `PeerHello` on `from`'s link to us, from its process of `origin`.
    pub fn on_hello(
        &mut self,
        from: u32,
        link: u64,
        origin: u32,
        marker: u64,
        out: &mut impl Outbox,
    ) {
        self.hellos.insert((from, link), Hello { origin, marker });
        self.maybe_request_catchup(out);
        self.maybe_ready(out);
    }

    /// The link `link` from `from` to us closed: its live stream ended, so
    /// its marker no longer says anything (a new link brings a new hello).
    pub fn on_inbound_down(&mut self, from: u32, link: u64) {
        self.hellos.remove(&(from, link));
    }

    /// The marker of `peer`'s current link to us, if that link comes from
    /// the process the membership lists (its origin).
    ///
    /// A peer has one outbound link to us at a time, but the one it closed
    /// may still be open here: its last frames, even its hello, can be read
    /// after the new link's hello (the two are separate connections). Hellos
    /// are therefore kept per link, and a closed link's close removes only
    /// its own. (Kept per peer, a late hello of the old link replaced the
    /// new link's, and the old link's close then removed the peer's only
    /// hello: no marker until the peer's own seq next rose without a PUT,
    /// and a joiner waiting for it never became ready.) While both are
    /// open the highest marker counts: a process's own seq only grows, so
    /// its newest link carries the highest, and demanding more than an old
    /// link's marker is never less safe.
    fn marker(&self, peer: u32) -> Option<u64> {
        let p = self.peers.get(&peer)?;
        self.hellos
            .range((peer, 0)..=(peer, u64::MAX))
            .filter(|(_, h)| h.origin == p.origin)
            .map(|(_, h)| h.marker)
            .max()
    }

    /// A record, live from its origin or from a catch-up donor.
    /// Returns whether it was new here.
    pub fn on_record(&mut self, rec: &RecordRef<'_>, out: &mut impl Outbox) -> bool {
        if self.vv.has(rec.origin, rec.seq) {
            return false;
        }
        self.store.apply(rec);
        self.vv.observe(rec.origin, rec.seq);
        self.vector_dirty = true;
        out.persist_record(rec);
        self.release_gets(out);
        // The record may be the last one a joiner lacked: a catch-up stream
        // cut by a broken link after its last record (no CATCHUP_DONE), or
        // the rest of an old link read after the new link's hello. Without
        // this, nothing asked again and no READY went out.
        self.maybe_ready(out);
        true
    }

    /// A record on `from`'s own link to us: its live stream, or records it
    /// hands over (see [`Replica::hand_over_stranded`]).
    pub fn on_link_record(&mut self, from: u32, rec: &RecordRef<'_>, out: &mut impl Outbox) {
        let new = self.on_record(rec, out);
        // The live stream of an origin that is not a peer's any more (its
        // connection still delivers after its process died), landing above
        // a gap: stranded as it arrives, so it is passed on at once. Only
        // the origin's own stream: a catch-up, or a hand-over from a third
        // worker, reaches every peer from where it came. Not an origin
        // newer than the one our membership lists for `from`: its next
        // process, whose hello overtook the membership (origins grow).
        let superseded = self.peers.get(&from).is_none_or(|p| rec.origin < p.origin);
        if new
            && superseded
            && rec.seq > self.vv.get(rec.origin)
            && !self.is_live_origin(rec.origin)
            && self
                .hellos
                .range((from, 0)..=(from, u64::MAX))
                .any(|(_, h)| h.origin == rec.origin)
        {
            for (&peer, p) in &self.peers {
                if p.link_up {
                    out.to_peer(peer, &Msg::Record(*rec));
                }
            }
        }
    }

    /// The donor finished: we hold everything its `vector` covers.
    pub fn on_catchup_done(&mut self, from: u32, vector: &[(u32, u64)], out: &mut impl Outbox) {
        let merged = self.vv.merge(vector);
        if merged {
            self.vector_dirty = true;
        }
        // Whoever could help with a gap that shrank may help again. Shrank
        // since we asked, not just by this merge: the stream's own records,
        // and live ones, may have moved the vector past the donor's frozen
        // one. (Measured from here, a gap that moved while we waited, with a
        // later record of the origin lost on a broken link, was never asked
        // about again: the origin itself counted as asked, and its new
        // hellos' higher markers could not be met.)
        let asked: Vec<u32> = self.asked.keys().copied().collect();
        for o in asked {
            if self.vv.get(o) > lookup(&self.requested_at, o) {
                self.asked.remove(&o);
            }
        }
        if merged {
            // Unchanged, replay would merge it to no effect too.
            out.persist_vector(vector);
        }
        if self.catchup_from == Some(from) {
            self.catchup_from = None;
        }
        self.catchups_done += 1;
        self.release_gets(out);
        self.maybe_request_catchup(out);
        self.maybe_ready(out);
        self.hand_over_if_due(out);
    }

    fn hand_over_if_due(&mut self, out: &mut impl Outbox) {
        if self.handover_due {
            self.hand_over_stranded(None, out);
        }
    }

    pub fn on_peer_ack(&mut self, from: u32, seq: u64) {
        if let Some(p) = self.peers.get_mut(&from) {
            p.acked = p.acked.max(seq);
        }
    }

    /// A PUT from the LB: store it, notify every peer, confirm.
    pub fn on_put(
        &mut self,
        req: u64,
        version: u64,
        id: u64,
        content: &[u8],
        out: &mut impl Outbox,
    ) {
        let rec = RecordRef {
            origin: self.origin,
            seq: self.own_seq().saturating_add(1),
            version,
            id,
            content,
        };
        if rec.seq > crate::msg::MAX_SEQ {
            // After 2^48 writes of this process: no peer or log could take
            // the record, so it must not be confirmed. A restart gets a new
            // origin, whose seqs start from 1.
            log::error!("this worker process wrote 2^48 records; stopping");
            std::process::exit(2);
        }
        self.store.apply(&rec);
        self.vv.observe(rec.origin, rec.seq);
        self.vector_dirty = true;
        out.persist_record(&rec);
        out.broadcast(&rec);
        out.stored(req, rec.seq);
        self.release_gets(out);
    }

    /// A GET from the LB, answered once our vector covers `min`. While it
    /// waits, the processes numbering what we lack are hurried: a peer may
    /// be holding those records back for up to `--peer-flush-ms`.
    /// `min` is read in place; it is copied only if the GET has to wait.
    pub fn on_get<M>(&mut self, req: u64, id: u64, min: M, out: &mut impl Outbox)
    where
        M: Iterator<Item = (u32, u64)> + Clone,
    {
        let mut covered = true;
        for (origin, seq) in min.clone() {
            if self.vv.get(origin) < seq {
                covered = false;
                out.hurry(origin);
            }
        }
        if covered {
            out.value(req, self.store.get(id).map(|r| r.content));
            return;
        }
        if self.parked_gets.len() >= MAX_PARKED_GETS {
            // The oldest has long been answered TIMEOUT by the LB.
            self.parked_gets.remove(0);
        }
        self.parked_gets.push((req, id, min.collect()));
    }

    fn release_gets(&mut self, out: &mut impl Outbox) {
        if self.parked_gets.is_empty() {
            return;
        }
        let vv = &self.vv;
        let store = &self.store;
        self.parked_gets.retain(|(req, id, min)| {
            if vv.covers(min) {
                out.value(*req, store.get(*id).map(|r| r.content));
                false
            } else {
                true
            }
        });
    }

    /// The LB says we lack records of origins that cannot send them any
    /// more (their process is gone, or its worker inactive): catch them up
    /// from peers (and, joining, before we count as complete). `floor` is
    /// the whole floor, and replaces the last: it may be lower (the worker
    /// that reported holding those records is gone, and they with it).
    /// Also the LB's way of asking for a READY again.
    pub fn on_behind(&mut self, floor: &[(u32, u64)], out: &mut impl Outbox) {
        self.floor = floor.to_vec();
        // Sorted by origin, the highest first should one repeat.
        self.floor
            .sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        self.floor.dedup_by_key(|&mut (o, _)| o);
        self.last_ready = None;
        self.maybe_request_catchup(out);
        self.maybe_ready(out);
    }

    /// The LB connection is gone: GETs it sent can no longer be answered
    /// (a restarted LB numbers its requests anew).
    pub fn on_lb_lost(&mut self) {
        self.parked_gets.clear();
    }

    /// Registered again with a (restarted) LB, which lists us as joining:
    /// prove again that we hold everything, exactly as a joiner does. The
    /// floor the last LB connection gave us goes: the report that raised
    /// it may have gone, and this LB sends the floor it finds.
    pub fn on_lb_welcome(&mut self, members: &[Member], out: &mut impl Outbox) {
        if self.phase == Phase::Active {
            self.phase = Phase::Joining;
        }
        self.floor.clear();
        self.last_ready = None;
        self.vector_dirty = true;
        self.on_members(members, out);
    }

    /// SIGTERM: ask the LB to take us out of the round robin.
    pub fn begin_leave(&mut self, out: &mut impl Outbox) {
        if matches!(self.phase, Phase::Leaving { .. }) {
            return;
        }
        self.phase = Phase::Leaving {
            deregistered: false,
        };
        out.to_lb(&Msg::Deregister);
    }

    /// The LB will send nothing more: everything it sent has been handled.
    pub fn on_deregister_ok(&mut self) {
        self.phase = Phase::Leaving { deregistered: true };
    }

    /// Leaving, nothing more will arrive from the LB, every GET it sent is
    /// answered, and every peer holds every record we originated. With no
    /// peer while the LB still lists other workers (all inactive: down or
    /// cut off), not done: ours would be the only copies, so it waits for
    /// one to come back (at most `--leave-timeout-secs`). The last worker
    /// of a cluster leaves at once, its records in its data directory.
    pub fn leave_complete(&self) -> bool {
        let own = self.own_seq();
        self.phase == Phase::Leaving { deregistered: true }
            && self.parked_gets.is_empty()
            && !self.handover_due
            && (!self.peers.is_empty() || !self.others_listed || own == 0)
            && self.peers.values().all(|p| p.acked >= own)
    }

    /// The highest own seq that every active peer has acknowledged (all of
    /// them, if there is no active peer): what `--ack all` may confirm.
    pub fn acked_by_active_peers(&self) -> u64 {
        self.peers
            .values()
            .filter(|p| p.status == Status::Active)
            .map(|p| p.acked)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Per peer: how many of our own records it has not acknowledged yet.
    pub fn peer_lags(&self) -> Vec<(u32, u64)> {
        let own = self.own_seq();
        self.peers
            .iter()
            .map(|(&id, p)| (id, own.saturating_sub(p.acked)))
            .collect()
    }

    /// Peers that have not yet acknowledged our last record (for logs).
    pub fn unacked_peers(&self) -> Vec<u32> {
        let own = self.own_seq();
        self.peers
            .iter()
            .filter(|(_, p)| p.acked < own)
            .map(|(&id, _)| id)
            .collect()
    }

    /// What we still lack that a peer can give, most urgent first, as
    /// `(origin we lack records of, the peer to ask first)`:
    /// 1. a joiner's first, full catch-up (from an active peer if possible);
    /// 2. records of a peer `P`'s origin at or below the marker `P`
    ///    announced (we joined after them, or our link to it broke);
    /// 3. records of origins that stream no more (workers that left, died,
    ///    or restarted: the LB's floor).
    fn lacking(&self) -> Vec<(Option<u32>, u32)> {
        if self.phase == Phase::Joining && self.catchups_done == 0 {
            return self
                .peers
                .iter()
                .filter(|(_, p)| p.link_up)
                .max_by_key(|(_, p)| p.status == Status::Active)
                .map(|(&id, _)| (None, id))
                .into_iter()
                .collect();
        }
        let mut needs: Vec<(Option<u32>, u32)> = self
            .peers
            .iter()
            .filter(|(&id, p)| self.marker(id).is_some_and(|m| self.vv.get(p.origin) < m))
            .map(|(&id, p)| (Some(p.origin), id))
            .collect();
        {
            // Each origin of the LB's floor (workers gone or inactive) is its
            // own need, so every peer is tried for it once rather than the
            // first one forever. An active peer first; with none (every
            // worker joining after faults), any: two joiners may each hold
            // what the other's floor lacks.
            let donor = self
                .peers
                .iter()
                .find(|(_, p)| p.status == Status::Active)
                .or_else(|| self.peers.iter().find(|(_, p)| p.link_up));
            if let Some((&first, _)) = donor {
                for &(o, s) in &self.floor {
                    if self.vv.get(o) < s {
                        needs.push((Some(o), first));
                    }
                }
            }
        }
        needs
    }

    fn maybe_request_catchup(&mut self, out: &mut impl Outbox) {
        if self.catchup_from.is_some() {
            return;
        }
        // For each need, ask its first peer, then every other peer, once each
        // per origin: a peer that could not fill a gap is not asked again in
        // a loop (until the gap shrinks, links or members change, or the
        // loop's back-off timer calls `retry_gaps`).
        let mut choice = None;
        for (origin, first) in self.lacking() {
            let asked = origin.and_then(|o| self.asked.get(&o));
            let peer = std::iter::once(first)
                .chain(self.peers.keys().copied())
                .filter(|id| self.peers.get(id).is_some_and(|p| p.link_up))
                .find(|id| !asked.is_some_and(|a| a.contains(id)));
            if let Some(peer) = peer {
                choice = Some((origin, peer));
                break;
            }
        }
        let Some((origin, peer)) = choice else {
            return;
        };
        if let Some(o) = origin {
            self.asked.entry(o).or_default().insert(peer);
        }
        self.catchup_from = Some(peer);
        self.requested_at = self.vv.to_vec();
        out.to_peer(
            peer,
            &Msg::CatchupRequest {
                vector: self.requested_at.clone(),
            },
        );
    }

    /// A gap waits on peers that were each asked once already: records
    /// can reach a peer after it answered (a restarted worker's lost tail
    /// still on its way to it), so the loop asks again on a timer
    /// ([`Replica::retry_gaps`]) rather than wait for a change that may
    /// never come.
    pub fn wants_retry(&self) -> bool {
        self.catchup_from.is_none()
            && !self.asked.is_empty()
            && self.peers.values().any(|p| p.link_up)
            && !self.lacking().is_empty()
    }

    /// Whether we lack anything a peer could give (asked about or not).
    pub fn lacks_anything(&self) -> bool {
        !self.lacking().is_empty()
    }

    /// The retry timer fired: every peer may be asked once more.
    pub fn retry_gaps(&mut self, out: &mut impl Outbox) {
        if self.catchup_from.is_some() {
            return;
        }
        self.asked.clear();
        self.maybe_request_catchup(out);
    }

    /// The markers of all peers, by their origins, if every one is known
    /// and covered.
    fn complete_markers(&self) -> Option<Vector> {
        if self.building
            || (self.catchups_done == 0 && !self.peers.is_empty())
            || !self.vv.covers(&self.floor)
        {
            return None;
        }
        let mut markers = Vec::with_capacity(self.peers.len());
        for (&id, p) in &self.peers {
            let m = self.marker(id)?;
            if self.vv.get(p.origin) < m {
                return None;
            }
            markers.push((p.origin, m));
        }
        markers.sort_unstable();
        Some(markers)
    }

    fn maybe_ready(&mut self, out: &mut impl Outbox) {
        if self.phase != Phase::Joining {
            return;
        }
        let Some(markers) = self.complete_markers() else {
            return;
        };
        if self.last_ready.as_ref() != Some(&markers) {
            out.to_lb(&Msg::Ready {
                vector: self.vv.to_vec(),
                markers: markers.clone(),
            });
            self.last_ready = Some(markers);
        }
    }
}
