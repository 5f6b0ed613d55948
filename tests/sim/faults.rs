//! Worker processes coming and going, and the faults the seed injects.
//!
//! - `kill`: kill -9 for good. What the process wrote to its sockets still
//!   arrives (the kernel sends it); nothing else of it is ever seen again.
//! - `crash` + `restart`: the process dies and is started again on its data
//!   directory: the same ID, a new origin from the LB, the store and vector
//!   that replaying its log gives, at the same address or (as `--listen
//!   :0` gives) a new one. After a machine crash (`--fsync interval`) the
//!   log has lost a tail; sometimes the directory is gone altogether
//!   (empty). What is lost is decided at the restart: nothing reads the
//!   log in between.
//! - `break_link`: a peer connection breaks; a prefix of each direction
//!   arrives, then each end notices (the dialer re-dials).
//! - `lb_drop`: the LB declares a live worker dead (paused past
//!   `--worker-timeout-ms`); the worker notices and registers again.
//! - `lb_crash` + `lb_restart`: the LB's memory is lost; a prefix of what it
//!   wrote arrives; workers notice, keep their stores and peer links, and
//!   register again. The new LB's wall clock may run behind the old one's,
//!   but by less than the outage (the documented assumption; with no wall
//!   clock at all, REGISTER's `max_version` alone does not keep the
//!   overwrite rule: only the workers registered before the first PUT count).
//!
//! What the system promises to survive bounds what is injected (see
//! `loses_too_much`): a worker's copy of a record is destroyed (killed, its
//! log's tail or directory lost, or leaving with another origin's records)
//! only if every record whose STORED went out, or that any worker reported
//! to an LB, is held durably by another worker: applied (or covered by a
//! merged vector) by a live one that is not leaving, or in the
//! log of one that will restart. That is "it queues a record to its peers
//! before it sends STORED": delivered, not only queued, since a queue dies
//! with a second fault. Likewise the last worker a leaver hands its records
//! to is not taken away while it leaves (with `--ack local` the last worker
//! holds data nobody else has, as the docs say).
//!
//! Known bugs. The system does not recover from these fault combinations;
//! each is left out unless `SIM_KNOWN_BUGS` names it (comma-separated, or
//! `all`), which reproduces it:
//! - (fixed, was `lb-ids`: a restarted LB assigned IDs from 1 again; the
//!   LB now saves its next unused ID, which `lb_restart` models.)
//! - (fixed, was `renumber`: a restarted worker whose log had lost its
//!   own newest records, with the workers holding them down or cut off
//!   past a restarted LB's grace, numbered new records with identities
//!   that those records still had. Each process now numbers under an
//!   origin of its own, given by the LB from the counter it saves; the
//!   check that no identity is created twice is absolute.)
//! - `lost-reported`: the LB's floors (BEHIND) follow what workers report
//!   holding, and a floor of an origin that streams no more counts every
//!   seq up to it. If records a worker reported are then lost everywhere
//!   (an unsynced tail, never acknowledged), or lost below one that was
//!   acknowledged (the floor, and a GET's `min`, is the highest
//!   acknowledged seq, and vectors are contiguous), a worker told that
//!   floor, or holding such a GET, waits for them forever. Both kinds are
//!   left out unless this is named: the records a worker reported, and
//!   every record below an acknowledged one of its origin, count as ones
//!   the system must keep (see `loses_too_much`).
//!   A floor is lowered when the report that raised it goes (its worker
//!   restarted, left, or died), which removed most of these (52 seeds in
//!   10,000 before origins per process and lowered floors, 3 now).
//! - (fixed, was `gaps`: a worker asked each peer once about a gap and
//!   asked again only when the gap shrank or links or members changed, so
//!   records that reached a peer after it was asked, or were held only
//!   above a gap, were waited for forever. `Replica::retry_gaps` now asks
//!   again on the worker's timer, modelled as a slow event; several
//!   restarts per schedule may lose log entries, and a record held above a
//!   gap counts as held.)
//! - (fixed, was `leaver`: a leaving worker followed no membership after
//!   DEREGISTER_OK, and a restarted LB never listed it again, so peers
//!   dropped it and never asked for the records it still had to hand over;
//!   it could wait for a peer that had died, and not reach one restarted
//!   elsewhere. The LB now sends MEMBERS to leaving workers too, and a
//!   leaving worker that loses the LB registers again and deregisters.)

use crate::lb::Welcome;
use crate::world::{replay, Logged, Node, Sim};
use crate::Rng;
use rrstore::msg::Msg;
use rrstore::replica::{Outbox, Phase, Replica};
use rrstore::store::Store;
use rrstore::vector::VersionVector;
use std::collections::BTreeSet;

/// How many of each fault a seed may inject.
pub struct Budget {
    pub kills: u32,
    pub restarts: u32,
    pub breaks: u32,
    pub lb_crashes: u32,
    pub lb_drops: u32,
}

impl Budget {
    pub fn draw(rng: &mut Rng) -> Budget {
        Budget {
            kills: rng.below(2) as u32,
            restarts: rng.below(3) as u32,
            breaks: rng.below(5) as u32,
            lb_crashes: rng.below(2) as u32,
            lb_drops: rng.below(2) as u32,
        }
    }
}

/// A crashed worker's data directory, waiting for the worker to restart.
pub struct Crashed {
    pub addr: String,
    pub disk: Vec<Logged>,
    /// The directory will be gone (if that loses nothing; else as
    /// `machine`).
    pub lost_dir: bool,
    /// A machine crash: an unsynced tail of the log will be gone.
    pub machine: bool,
    /// What replaying `disk` gives.
    pub vv: VersionVector,
}

/// How a worker's copy of its records goes (see [`Sim::loses_too_much`]).
#[derive(Clone, Copy)]
enum Loss {
    /// For good: killed, or leaving without its peers' acknowledgements.
    ForGood,
    /// It leaves: its peers hold its own records (they acknowledge them),
    /// not others' it has.
    Foreign,
    /// It restarts with part of its log.
    Restart,
}

/// Whether `SIM_KNOWN_BUGS` (a comma-separated list of the names in the
/// module doc, or `all`) lets the seed inject the faults that hit known
/// bug `name`.
pub fn known_bug(name: &str) -> bool {
    std::env::var("SIM_KNOWN_BUGS")
        .is_ok_and(|v| v == "all" || v.split(',').any(|n| n.trim() == name))
}

impl Sim {
    pub fn new_addr(&mut self) -> String {
        self.next_addr += 1;
        format!("sim:{}", self.next_addr)
    }

    /// Active workers that have not begun to leave.
    pub fn staying(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.replica.phase() == Phase::Active)
            .map(|(&id, _)| id)
            .collect()
    }

    /// Workers that are not leaving, but not the last one that a leaver
    /// knows as a peer (connected to the LB): taken away (or declared
    /// dead), the leaver would be the last worker, whose records live on
    /// only in its data directory.
    pub fn not_last_staying(&self) -> Vec<u32> {
        let staying: Vec<u32> = self
            .nodes
            .iter()
            .filter(|(_, n)| !matches!(n.replica.phase(), Phase::Leaving { .. }))
            .map(|(&id, _)| id)
            .collect();
        if staying.len() == self.nodes.len() {
            return staying;
        }
        let Some(lb) = &self.lb else {
            return Vec::new();
        };
        let known: Vec<u32> = staying
            .iter()
            .copied()
            .filter(|&w| lb.link(w).is_some())
            .collect();
        staying
            .iter()
            .copied()
            .filter(|v| known.len() >= 2 || !known.contains(v))
            .collect()
    }

    /// Workers that may crash: not leaving ones; not the last one staying
    /// while another leaves (the leaver would be the last worker, whose
    /// records live on only in its data directory).
    pub fn crashable(&self) -> Vec<u32> {
        self.not_last_staying()
    }

    /// A registered process starts its loop.
    fn start_node(
        &mut self,
        welcome: Welcome,
        addr: String,
        store: Store,
        vv: VersionVector,
        disk: Vec<Logged>,
    ) {
        let id = welcome.id;
        assert!(
            !self.nodes.contains_key(&id) && !self.crashed.contains_key(&id),
            "the LB gave ID {id} to a new worker while another process with that ID is alive \
             or will restart; seed {}; {:?}",
            self.seed,
            self.log
        );
        // IDs and origins come from one counter, saved by the LB.
        self.max_id = self.max_id.max(id).max(welcome.origin);
        let replica = Replica::new(id, welcome.origin, addr.clone(), store, vv);
        self.nodes.insert(
            id,
            Node {
                replica,
                conn: Some(welcome.conn),
                last_report: None,
                disk,
            },
        );
        self.addrs.insert(id, addr);
        self.with_node(id, |r, out| r.on_members(&welcome.members, out));
    }

    /// A new worker with an empty data directory registers. Sometimes it
    /// takes the ID of a worker that left (`--id N` on a fresh disk).
    pub fn join(&mut self) {
        let addr = self.new_addr();
        let lb = self.lb.as_ref().expect("the LB is up");
        let departed: Vec<u32> = self
            .departed
            .iter()
            .copied()
            .filter(|&id| {
                !self.nodes.contains_key(&id)
                    && !self.crashed.contains_key(&id)
                    && lb.members.get(id).is_none()
            })
            .collect();
        let wanted = if !departed.is_empty() && self.rng.chance(50) {
            departed[self.rng.below(departed.len())]
        } else {
            0
        };
        let welcome = self
            .lb_register(wanted, 0, 0, 0, &addr)
            .expect("free ids register");
        self.note(format!("join {}", welcome.id));
        self.start_node(
            welcome,
            addr,
            Store::new(),
            VersionVector::new(),
            Vec::new(),
        );
    }

    /// SIGTERM.
    pub fn leave(&mut self, w: u32) {
        self.note(format!("leave {w}"));
        self.with_node(w, |r, out| r.begin_leave(out));
        let node = self.nodes.get_mut(&w).expect("live");
        if node.conn.is_none() {
            // No LB to deregister with: nothing more can come from one.
            node.replica.on_deregister_ok();
        }
    }

    /// Leaving workers that are done exit (the loop checks every turn).
    pub fn reap(&mut self) {
        let done: Vec<u32> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.replica.leave_complete())
            .map(|(&id, _)| id)
            .collect();
        for w in done {
            self.note(format!("left {w}"));
            self.departed.push(w);
            self.process_ends(w, true);
        }
    }

    /// A leaving worker still waits for acknowledgements only from peers
    /// that can never send them (gone for good, or restarted at an address
    /// it does not know: it gets no membership after DEREGISTER_OK), or for
    /// records a parked GET needs that only a peer it does not know can
    /// give: the real one gives up after `--leave-timeout-secs` (see
    /// `Worker::run`). Modelled only when giving up loses nothing
    /// (everything it must keep is held durably elsewhere); otherwise it
    /// waits, and a leaver that can never finish fails the schedule.
    pub fn leave_stuck(&self, w: u32) -> bool {
        let Some(n) = self.nodes.get(&w) else {
            return false;
        };
        let reachable = |p: u32| {
            self.crashed
                .get(&p)
                .is_some_and(|c| self.redials.get(&(w, p)) == Some(&c.addr))
                || self.nodes.contains_key(&p)
                    && (self.links.contains_key(&(w, p))
                        || self.redials.get(&(w, p)) == self.addrs.get(&p)
                        || self
                            .dying
                            .iter()
                            .any(|d| (d.from, d.to) == (w, p) && !d.dialer_done))
        };
        n.replica.phase() == (Phase::Leaving { deregistered: true })
            && !n.replica.unacked_peers().into_iter().any(reachable)
            && !self.loses_too_much(w, &n.replica.vv, &n.disk, 0, Loss::ForGood)
    }

    /// The leave timeout expired (see [`Sim::leave_stuck`]).
    pub fn leave_timeout(&mut self, w: u32) {
        self.note(format!("left {w} after the leave timeout"));
        self.stats.leave_timeouts += 1;
        self.departed.push(w);
        self.process_ends(w, false);
    }

    /// The process `w` is gone: everything it wrote still arrives (a clean
    /// exit flushes; the kernel sends what a killed process wrote), nothing
    /// more is read; the other ends notice once they have read the rest.
    fn process_ends(&mut self, w: u32, clean: bool) -> Node {
        let node = self.nodes.remove(&w).expect("live");
        self.addrs.remove(&w);
        if let Some(c) = node.conn.and_then(|k| self.conns.get_mut(&k)) {
            c.worker_open = false;
            c.clean_exit = clean;
            c.from_lb.clear();
        }
        self.redials.retain(|&(a, _), _| a != w);
        let keys: Vec<(u32, u32)> = self
            .links
            .keys()
            .copied()
            .filter(|&(a, b)| a == w || b == w)
            .collect();
        for key in keys {
            let link = self.links.remove(&key).expect("listed");
            if key.0 == w {
                let n = link.fwd.len();
                self.retire(key, link, n, 0, true, false);
            } else {
                let n = link.back.len();
                self.retire(key, link, 0, n, false, true);
            }
        }
        for d in self.dying.iter_mut() {
            if d.from == w {
                d.dialer_done = true;
                d.back.clear();
            }
            if d.to == w {
                d.acceptor_done = true;
                d.fwd.clear();
            }
        }
        node
    }

    /// Whether worker `w`, losing `disk[cut..]` (its log being `disk`, which
    /// replays to `before`), loses what the system does not promise to
    /// survive losing:
    /// - a record whose STORED went out, or that any worker reported to an
    ///   LB (which then tells others to catch up to it, and its origin when
    ///   it registers again), that no other worker holds durably (a worker
    ///   that may itself lose it does not count). Coverage counts, not just
    ///   records: a catch-up's vector covers records superseded at the
    ///   donor.
    ///
    /// `SIM_KNOWN_BUGS=lost-reported` drops the part that avoids a known
    /// bug (reported records; see the module doc).
    fn loses_too_much(
        &self,
        w: u32,
        before: &VersionVector,
        disk: &[Logged],
        cut: usize,
        loss: Loss,
    ) -> bool {
        let lose_reported = known_bug("lost-reported");
        let foreign_only = matches!(loss, Loss::Foreign);
        let must_keep = |o: u32, s: u64| {
            // Reported by any worker (the LB's floors follow every
            // worker's reports), or below an acknowledged record of its
            // origin (GETs and floors ask for every seq up to that one).
            (!lose_reported
                && (self
                    .hist
                    .reported
                    .iter()
                    .any(|(&(_, x), &r)| x == o && r >= s)
                    || self.hist.stored_max.get(&o).is_some_and(|&m| s <= m)))
                || self.hist.stored_emitted.contains(&(o, s))
        };
        let held = |o: u32, s: u64| self.held_durably(w, o, s, false, false);
        // What a leaver hands over: the records of its own process's
        // origin (its peers acknowledge them). Not the rest, not even an
        // origin the LB holds DEREGISTER_OK for (its records are counted
        // only once the LB knows that origin's process is gone: one that
        // died unnoticed, with a leaver holding its only other copies, is
        // two faults at once; seed 11,476 with a looser rule).
        let own = self.nodes.get(&w).map(|n| n.replica.origin);
        let streamed = |o: u32| Some(o) != own;
        let (_, after) = replay(&disk[..cut]);
        for (o, top) in before.to_vec() {
            if foreign_only && !streamed(o) {
                continue;
            }
            // Each one: a record held above a gap vouches for no other.
            let kept = after.get(o);
            if (kept + 1..=top).any(|s| must_keep(o, s) && !held(o, s)) {
                return true;
            }
        }
        let lost_record = disk[cut..].iter().any(|e| match e {
            Logged::Record(r) => {
                (!foreign_only || streamed(r.origin))
                    && must_keep(r.origin, r.seq)
                    && !held(r.origin, r.seq)
            }
            Logged::Vector(_) => false,
        });
        lost_record
    }

    /// Workers that may leave: active, also to the LB, and not the last
    /// (a cluster whose every worker left has its data only in their data
    /// directories, and the LB rightly refuses to activate empty newcomers
    /// in their place; after an LB restart a worker may think itself
    /// active while the new LB has not seen it yet); and holding no record
    /// of another origin that must be kept and is held nowhere else (a
    /// leaver waits only for its own records to reach its peers).
    pub fn may_leave(&self) -> Vec<u32> {
        let Some(lb) = &self.lb else {
            return Vec::new();
        };
        let active: Vec<u32> = self
            .staying()
            .into_iter()
            .filter(|w| lb.members.active().contains(w))
            .collect();
        if active.len() < 2 {
            return Vec::new();
        }
        active
            .into_iter()
            .filter(|&w| {
                let n = &self.nodes[&w];
                !self.loses_too_much(w, &n.replica.vv, &n.disk, 0, Loss::Foreign)
            })
            .collect()
    }

    /// kill -9 for good (see the module doc for when).
    pub fn kill(&mut self, w: u32) {
        let n = &self.nodes[&w];
        if self.loses_too_much(w, &n.replica.vv, &n.disk, 0, Loss::ForGood) {
            // It holds acknowledged writes nobody else has: it restarts.
            self.stats.kills_deferred += 1;
            self.crash(w, false);
            return;
        }
        self.stats.kills += 1;
        self.note(format!("kill {w}"));
        self.process_ends(w, false);
    }

    /// kill -9 (or, `machine`, a machine crash); it restarts later. What a
    /// machine crash (or a lost directory) takes from its log is decided
    /// when it restarts: nothing reads the log in between.
    pub fn crash(&mut self, w: u32, machine: bool) {
        let node = self.process_ends(w, false);
        let lost_dir = self.rng.chance(10);
        self.stats.crashes += 1;
        self.note(format!(
            "crash {w}{}",
            if lost_dir {
                " (data directory lost)"
            } else if machine {
                " (machine)"
            } else {
                ""
            }
        ));
        let (_, vv) = replay(&node.disk);
        self.crashed.insert(
            w,
            Crashed {
                addr: node.replica.addr.clone(),
                disk: node.disk,
                lost_dir,
                machine,
                vv,
            },
        );
    }

    /// The crashed worker `w` starts again on its data directory.
    pub fn restart(&mut self, w: u32) {
        let c = self.crashed.remove(&w).expect("crashed");
        let mut disk = c.disk;
        let mut lost = 0;
        let lossy = c.machine || c.lost_dir;
        self.stats.lossy_restarts += lossy as u64;
        if !lossy {
            // Restarts with its whole log.
        } else if c.lost_dir && !self.loses_too_much(w, &c.vv, &disk, 0, Loss::Restart) {
            // Everything it held is elsewhere: it may lose it all.
            self.stats.lost_dirs += 1;
            lost = disk.len();
            disk.clear();
        } else {
            let want = self.rng.below(disk.len().min(16) + 1);
            let mut cut = disk.len() - want;
            while cut < disk.len() && self.loses_too_much(w, &c.vv, &disk, cut, Loss::Restart) {
                cut += 1;
            }
            lost = disk.len() - cut;
            disk.truncate(cut);
            self.stats.machine_crashes += 1;
            self.stats.lost_entries += lost as u64;
        }
        let (store, vv) = replay(&disk);
        // `--listen 127.0.0.1:0` (the default) gives a new port each time.
        let addr = if self.rng.chance(50) {
            self.new_addr()
        } else {
            c.addr
        };
        // A new process: a new origin.
        let welcome = self
            .lb_register(w, 0, vv.max_origin(), store.max_version(), &addr)
            .expect("the LB no longer has the old connection");
        self.stats.restarts += 1;
        self.note(format!(
            "restart {w} at {addr} as origin {}, {lost} log entries lost",
            welcome.origin
        ));
        self.start_node(welcome, addr, store, vv, disk);
    }

    /// The worker re-registers after losing its LB connection.
    pub fn register_again(&mut self, w: u32) {
        let r = &self.nodes[&w].replica;
        let (origin, max_origin, max_version, addr) = (
            r.origin,
            r.vv.max_origin(),
            r.store.max_version(),
            r.addr.clone(),
        );
        let welcome = self
            .lb_register(w, origin, max_origin, max_version, &addr)
            .expect("the LB no longer has the old connection");
        assert_eq!(welcome.id, w, "re-registered under another ID");
        assert_eq!(welcome.origin, origin, "the same process keeps its origin");
        self.note(format!("register {w}"));
        let node = self.nodes.get_mut(&w).expect("live");
        node.conn = Some(welcome.conn);
        node.last_report = None;
        self.with_node(w, |r, out| {
            r.on_lb_welcome(&welcome.members, out);
            if matches!(r.phase(), Phase::Leaving { .. }) {
                out.to_lb(&Msg::Deregister);
            }
        });
    }

    /// The worker has read all the LB wrote on connection `key`, and then
    /// its close (`lost_lb` in `worker.rs`).
    pub fn worker_notices(&mut self, key: u64) {
        let c = self.conns.get_mut(&key).expect("listed");
        c.worker_open = false;
        let w = c.worker;
        let node = self.nodes.get_mut(&w).expect("live");
        node.conn = None;
        if matches!(node.replica.phase(), Phase::Leaving { .. }) {
            node.replica.on_deregister_ok();
        }
        node.replica.on_lb_lost();
    }

    /// The LB has read all the worker wrote on connection `key`, and then
    /// its close.
    pub fn lb_notices(&mut self, key: u64) {
        let c = self.conns.get_mut(&key).expect("listed");
        c.lb_open = false;
        let w = c.worker;
        self.lb_lost(w, key);
    }

    /// The LB closes its connections: a prefix of what it wrote arrives,
    /// nothing more of what workers write is read.
    fn lb_closes(&mut self, key: u64) {
        let n = self.conns[&key].from_lb.len();
        let keep = self.prefix(n);
        let c = self.conns.get_mut(&key).expect("listed");
        c.lb_open = false;
        c.to_lb.clear();
        c.from_lb.truncate(keep);
    }

    /// The LB process dies with everything it held in memory.
    pub fn lb_crash(&mut self) {
        self.note("lb crash".into());
        self.stats.lb_crashes += 1;
        // Saved beside the processed log as the membership changed.
        self.lb_listed = self.lb.take().map(|lb| {
            // In its grace it also saved those it still waited for.
            let mut listed = lb.members.listed();
            listed.extend(lb.grace.iter().flatten());
            listed.sort_unstable();
            listed.dedup();
            listed
        });
        self.lb_down_since = self.now;
        let keys: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.lb_open)
            .map(|(&k, _)| k)
            .collect();
        for key in keys {
            self.lb_closes(key);
        }
    }

    /// A new LB process starts with nothing.
    pub fn lb_restart(&mut self) {
        let outage = (self.now - self.lb_down_since).max(1) as usize;
        let skew = if self.rng.chance(30) {
            self.rng.below(outage) as u64
        } else {
            0
        };
        self.note(format!("lb restart (clock behind by {skew})"));
        let mut lb = crate::lb::Lb::new(skew);
        // The LB saves its next unused worker ID beside its processed log
        // and starts from it (`lb.rs`, `persist_next_id`).
        lb.members.reserve_ids_below(self.max_id + 1);
        // ... and the workers it listed: no activation until they are
        // back, or the grace's timer (a slow event) ends it.
        lb.grace = self.lb_listed.take().map(BTreeSet::from_iter);
        if lb.grace.as_ref().is_some_and(|g| g.is_empty()) {
            lb.grace = None;
        }
        self.lb = Some(lb);
    }

    /// The LB declares worker `w` dead although it runs.
    pub fn lb_drop(&mut self, w: u32) {
        let key = self
            .lb
            .as_ref()
            .and_then(|lb| lb.link(w))
            .expect("connected");
        self.note(format!("lb drops {w}"));
        self.stats.lb_drops += 1;
        self.lb_closes(key);
        self.lb_lost(w, key);
    }

    /// The peer connection `key` breaks.
    pub fn break_link(&mut self, key: (u32, u32)) {
        let link = self.links.remove(&key).expect("listed");
        self.note(format!("break {}->{}", key.0, key.1));
        self.stats.breaks += 1;
        let kf = self.prefix(link.fwd.len());
        let kb = self.prefix(link.back.len());
        self.retire(key, link, kf, kb, false, false);
    }
}
