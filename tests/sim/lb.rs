//! The LB's decisions, as `lb.rs` makes them, over `Membership`, and the
//! worker↔LB connections.
//!
//! What the LB holds in memory ([`Lb`]) is lost when it crashes: the
//! membership, the acknowledged frontier, the clock, pending and parked
//! requests. Its clock is `max(last + 1, wall clock, highest version any
//! worker reported)`; REGISTER and REPORT carry that version. A request
//! that a lost worker left unanswered goes to the next active worker under
//! a new request id with its version (`redispatch`); with none active it
//! waits (`parked`) until one is.
//!
//! A connection ([`LbConn`]) has two ends. When the LB closes it (it
//! declared the worker dead, or crashed) the worker still reads a prefix of
//! what the LB wrote, then notices; when the worker's process ends, the LB
//! reads all it wrote, then notices. Membership changes are broadcast at
//! the end of an LB turn (`lb_turn`), so several may reach workers as one.

use crate::world::Sim;
use rrstore::membership::{Membership, Readiness};
use rrstore::msg::{Member, Status, Vector};
use rrstore::vector::lookup;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

#[derive(Debug)]
pub enum ToWorker {
    Members(Vec<Member>),
    Put {
        req: u64,
        version: u64,
        id: u64,
        content: Vec<u8>,
    },
    Get {
        req: u64,
        id: u64,
        min: Vector,
    },
    DeregisterOk,
    Behind(Vector),
}

#[derive(Debug)]
pub enum ToLb {
    Ready { vector: Vector, markers: Vector },
    Stored { req: u64, seq: u64 },
    Value { req: u64, content: Option<Vec<u8>> },
    Report { vector: Vector, max_version: u64 },
    Deregister,
}

pub struct LbConn {
    pub worker: u32,
    pub from_lb: VecDeque<ToWorker>,
    pub to_lb: VecDeque<ToLb>,
    /// The LB has not closed it (nor crashed, nor seen it close).
    pub lb_open: bool,
    /// The worker's process is alive and has not seen it close.
    pub worker_open: bool,
    /// The worker left cleanly: it answered everything first.
    pub clean_exit: bool,
}

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Put {
        id: u64,
        version: u64,
    },
    /// `floor`: the newest version of `id` this LB had acknowledged when the
    /// GET arrived; `global`: the same over every LB so far.
    Get {
        id: u64,
        floor: u64,
        global: u64,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub kind: Kind,
    pub worker: u32,
    /// When the client's request arrived (re-sends keep their order).
    pub arrived: u64,
}

/// The LB's memory.
pub struct Lb {
    pub members: Membership,
    pub frontier: BTreeMap<u32, u64>,
    pub clock: u64,
    /// Its wall clock runs this far behind the world's.
    pub skew: u64,
    pub pending: BTreeMap<u64, Request>,
    pub parked: Vec<Request>,
    /// Per id, the newest version this LB acknowledged.
    pub acked: HashMap<u64, u64>,
    /// The membership changed this turn.
    pub changed: bool,
    /// After a restart: the workers the previous LB listed that have not
    /// registered again, until the grace ends (`lb.rs`, `in_grace`).
    pub grace: Option<BTreeSet<u32>>,
    /// A READY was not acted on (in the grace, or not complete): the next
    /// turn after the grace asks joiners for it again, after the members.
    pub held_ready: bool,
}

impl Lb {
    pub fn new(skew: u64) -> Lb {
        Lb {
            members: Membership::default(),
            frontier: BTreeMap::new(),
            clock: 0,
            skew,
            pending: BTreeMap::new(),
            parked: Vec::new(),
            acked: HashMap::new(),
            changed: false,
            grace: None,
            held_ready: false,
        }
    }

    /// The grace is over (its timer, or every awaited worker is back).
    pub fn end_grace(&mut self) {
        if self.grace.take().is_some() && self.held_ready {
            self.changed = true;
        }
    }

    /// The connection of worker `w`, if the LB has one.
    pub fn link(&self, w: u32) -> Option<u64> {
        self.members.get(w).and_then(|i| i.link).map(|k| k as u64)
    }
}

/// What a registration yields to the worker.
pub struct Welcome {
    pub id: u32,
    pub origin: u32,
    pub members: Vec<Member>,
    pub conn: u64,
}

/// Content encodes its version, so a read can be checked against the floor.
pub fn content_for(version: u64) -> Vec<u8> {
    version.to_be_bytes().to_vec()
}

pub fn version_of(content: &[u8]) -> u64 {
    u64::from_be_bytes(content.try_into().expect("8-byte content"))
}

impl Sim {
    fn lb(&mut self) -> &mut Lb {
        self.lb.as_mut().expect("the LB is up")
    }

    /// Queues `m` on the LB's connection to worker `w`, if it has one that
    /// the worker still reads.
    fn lb_send(&mut self, w: u32, m: ToWorker) {
        let Some(key) = self.lb.as_ref().and_then(|lb| lb.link(w)) else {
            return;
        };
        if let Some(c) = self.conns.get_mut(&key) {
            if c.lb_open && c.worker_open {
                c.from_lb.push_back(m);
            }
        }
    }

    /// REGISTER on a new connection: WELCOME, or refused.
    pub fn lb_register(
        &mut self,
        wanted: u32,
        origin: u32,
        max_origin: u32,
        max_version: u64,
        addr: &str,
    ) -> Result<Welcome, String> {
        let key = self.next_conn;
        let lb = self.lb.as_mut().expect("the LB is up");
        lb.clock = lb.clock.max(max_version);
        let (id, origin) =
            lb.members
                .register(wanted, origin, max_origin, addr.to_string(), key as usize)?;
        self.next_conn += 1;
        lb.changed = true;
        if let Some(awaited) = &mut lb.grace {
            awaited.remove(&id);
            if awaited.is_empty() {
                lb.end_grace();
            }
        }
        self.conns.insert(
            key,
            LbConn {
                worker: id,
                from_lb: VecDeque::new(),
                to_lb: VecDeque::new(),
                lb_open: true,
                worker_open: true,
                clean_exit: false,
            },
        );
        let welcome = Welcome {
            id,
            origin,
            members: lb.members.members(),
            conn: key,
        };
        // As the LB: its earlier process's origin may be one nobody
        // streams now (a BEHIND queued after the WELCOME).
        self.repair_lagging();
        Ok(welcome)
    }

    /// A client request reaches the LB.
    pub fn client_op(&mut self) {
        self.ops_left -= 1;
        let id = self.rng.below(20) as u64;
        let is_get = self.rng.chance(30);
        let now = self.now;
        let Some(lb) = self.lb.as_mut() else {
            return; // connection refused
        };
        if lb.members.active().is_empty() {
            return; // UNAVAILABLE
        }
        let global = self.hist.acked.get(&id).copied().unwrap_or(0);
        let kind = if is_get {
            let floor = lb.acked.get(&id).copied().unwrap_or(0);
            Kind::Get { id, floor, global }
        } else {
            lb.clock = (lb.clock + 1).max(now.saturating_sub(lb.skew));
            let version = lb.clock;
            // The overwrite rule: a PUT that arrives after another PUT of
            // the same id was acknowledged is stamped later, by any LB.
            assert!(
                version > global,
                "PUT of id {id} stamped {version}, not above acknowledged {global}; seed {}; {:?}",
                self.seed,
                self.log
            );
            Kind::Put { id, version }
        };
        let req = self.next_req;
        self.next_req += 1;
        let r = Request {
            kind,
            worker: 0,
            arrived: req,
        };
        if let Some(r) = self.dispatch(req, r) {
            self.lb().parked.push(r);
        }
    }

    /// Sends a request to the next active worker; gives it back if none.
    fn dispatch(&mut self, req: u64, mut r: Request) -> Option<Request> {
        let lb = self.lb.as_mut().expect("the LB is up");
        let Some(w) = lb.members.next_worker() else {
            return Some(r);
        };
        let wid = w.id;
        let m = match r.kind {
            Kind::Put { id, version } => ToWorker::Put {
                req,
                version,
                id,
                content: content_for(version),
            },
            Kind::Get { id, .. } => {
                // Only the part of the frontier this worker may lack.
                let min: Vector = lb
                    .frontier
                    .iter()
                    .filter(|&(&o, &s)| lookup(&w.vector, o) < s)
                    .map(|(&o, &s)| (o, s))
                    .collect();
                ToWorker::Get { req, id, min }
            }
        };
        r.worker = wid;
        lb.pending.insert(req, r);
        self.lb_send(wid, m);
        None
    }

    /// Re-sends requests of a lost worker, each under a new request id.
    fn redispatch(&mut self, mut orphans: Vec<Request>) {
        orphans.sort_by_key(|r| r.arrived);
        for r in orphans {
            let req = self.next_req;
            self.next_req += 1;
            match self.dispatch(req, r) {
                Some(r) => self.lb().parked.push(r),
                None => self.stats.redispatched += 1,
            }
        }
    }

    /// A message from worker `w` on its current connection.
    pub fn lb_receive(&mut self, w: u32, m: ToLb) {
        let seed = self.seed;
        let lb = self.lb.as_mut().expect("the LB is up");
        match m {
            ToLb::Stored { req, seq } => match lb.pending.remove(&req) {
                Some(Request {
                    kind: Kind::Put { id, version },
                    worker,
                    ..
                }) => {
                    assert_eq!(worker, w, "STORED from the wrong worker; seed {seed}");
                    if let Some(origin) = lb.members.origin_of(w) {
                        let f = lb.frontier.entry(origin).or_insert(0);
                        *f = (*f).max(seq);
                    }
                    let a = lb.acked.entry(id).or_insert(0);
                    *a = (*a).max(version);
                    let a = self.hist.acked.entry(id).or_insert(0);
                    *a = (*a).max(version);
                    self.stats.acked += 1;
                }
                _ => panic!("STORED for an unknown request; seed {seed}"),
            },
            ToLb::Value { req, content } => match lb.pending.remove(&req) {
                Some(Request {
                    kind: Kind::Get { id, floor, global },
                    worker,
                    ..
                }) => {
                    assert_eq!(worker, w, "VALUE from the wrong worker; seed {seed}");
                    let got = content.as_deref().map_or(0, version_of);
                    assert!(
                        got >= floor,
                        "GET {id} at worker {w} returned version {got}, older than acknowledged {floor}; seed {seed}; {:?}",
                        self.log
                    );
                    self.stats.reads += 1;
                    if got < global {
                        // A documented limit: a restarted LB does not know
                        // what its predecessor acknowledged.
                        self.stats.stale_after_lb_restart += 1;
                    }
                }
                _ => panic!("VALUE for an unknown request; seed {seed}"),
            },
            ToLb::Report {
                vector,
                max_version,
            } => {
                lb.clock = lb.clock.max(max_version);
                if lb.members.note_report(w, vector) {
                    self.repair_lagging();
                }
            }
            ToLb::Ready { vector, markers } => {
                let readiness = if lb.grace.is_some() {
                    Readiness::NotYet
                } else {
                    lb.members.check_ready(&lb.frontier, w, &vector, &markers)
                };
                if lb.members.note_report(w, vector) {
                    self.repair_lagging();
                }
                let lb = self.lb.as_mut().expect("the LB is up");
                match readiness {
                    Readiness::NotYet => lb.held_ready = true,
                    Readiness::Behind(floor) => {
                        let floor = lb.members.add_behind(w, &floor);
                        self.lb_send(w, ToWorker::Behind(floor));
                    }
                    Readiness::Complete => {
                        if lb.members.activate(w) {
                            lb.changed = true;
                            let parked = std::mem::take(&mut lb.parked);
                            self.note(format!("active {w}"));
                            self.redispatch(parked);
                        }
                    }
                }
            }
            ToLb::Deregister => {
                lb.members.deregister(w);
                lb.changed = true;
                self.release_leavers();
            }
        }
    }

    /// The LB's anti-entropy: see `Membership::lagging`.
    fn repair_lagging(&mut self) {
        let lb = self.lb.as_mut().expect("the LB is up");
        let lagging = lb.members.lagging(&lb.frontier);
        for (x, floor) in lagging {
            if let Some(info) = self.lb().members.get_mut(x) {
                info.behind = Some(floor.clone());
            }
            self.lb_send(x, ToWorker::Behind(floor));
        }
        self.release_leavers();
    }

    /// DEREGISTER_OK to leavers whose records of dead origins every
    /// staying worker holds (`Membership::leavers_to_release`).
    fn release_leavers(&mut self) {
        for x in self.lb().members.leavers_to_release() {
            self.lb_send(x, ToWorker::DeregisterOk);
        }
    }

    /// The LB lost worker `w`'s connection `key` (it closed, or the LB
    /// declared it dead): inactive (or gone, if leaving), and its requests
    /// go to others.
    pub fn lb_lost(&mut self, w: u32, key: u64) {
        let seed = self.seed;
        let clean = self.conns.get(&key).is_some_and(|c| c.clean_exit);
        let lb = self.lb.as_mut().expect("the LB is up");
        if lb.link(w) != Some(key) {
            return;
        }
        lb.members.lost(w);
        lb.changed = true;
        let lost: Vec<u64> = lb
            .pending
            .iter()
            .filter(|(_, r)| r.worker == w)
            .map(|(&req, _)| req)
            .collect();
        assert!(
            !clean || lost.is_empty(),
            "worker {w} left with requests unanswered; seed {seed}"
        );
        let orphans = lost
            .into_iter()
            .filter_map(|req| lb.pending.remove(&req))
            .collect();
        self.repair_lagging();
        self.redispatch(orphans);
    }

    /// The end of an LB turn: the membership goes to every connected
    /// worker, leaving ones included.
    pub fn lb_turn(&mut self) {
        let Some(lb) = self.lb.as_mut() else {
            return;
        };
        lb.changed = false;
        let members = lb.members.members();
        // Leaving workers too (`Membership::links_to_update`).
        let to: Vec<u32> = members.iter().map(|m| m.id).collect();
        let ask_ready = lb.grace.is_none() && std::mem::take(&mut lb.held_ready);
        for &w in &to {
            self.lb_send(w, ToWorker::Members(members.clone()));
        }
        if ask_ready {
            for m in members.iter().filter(|m| m.status == Status::Joining) {
                let floor = self.lb().members.behind_of(m.id);
                self.lb_send(m.id, ToWorker::Behind(floor));
            }
        }
    }

    /// Worker `w` handles a message from the LB.
    pub fn worker_receive(&mut self, w: u32, m: ToWorker) {
        self.with_node(w, |r, out| match m {
            ToWorker::Members(members) => r.on_members(&members, out),
            ToWorker::Put {
                req,
                version,
                id,
                content,
            } => r.on_put(req, version, id, &content, out),
            ToWorker::Get { req, id, min } => r.on_get(req, id, min.iter().copied(), out),
            ToWorker::DeregisterOk => r.on_deregister_ok(),
            ToWorker::Behind(floor) => r.on_behind(&floor, out),
        });
    }
}
