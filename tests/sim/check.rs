//! What the simulation remembers of a schedule, and what it demands.
//!
//! During the schedule (`lb.rs` and here): every GET returns a version at
//! least as new as each write of its id that this LB acknowledged before the
//! GET arrived (a restarted LB does not know what its predecessor
//! acknowledged: a documented limit, counted in `stale_after_lb_restart`);
//! a PUT is stamped above every acknowledged write of its id, by any LB;
//! and a new record never takes the identity `(origin, seq)` of an older
//! one that still exists anywhere (it would be dropped as a duplicate
//! wherever the older one is).
//!
//! After it ([`Sim::check`]): the LB is up and every worker that is alive is
//! active there and in its own eyes (joiners, restarted and re-registered
//! workers alike), every leaver left, every crashed worker that was to come
//! back did; all stores are identical and hold every acknowledged write (of
//! any LB); no request of the LB is left unanswered.

use crate::world::{Rec, Sim};
use rrstore::msg::Status;
use rrstore::replica::Phase;
use std::collections::{HashMap, HashSet};
use std::fmt;

#[derive(Default)]
pub struct History {
    /// Per id, the newest version any LB acknowledged.
    pub acked: HashMap<u64, u64>,
    /// Records whose STORED their origin sent on an open LB connection.
    pub stored_emitted: HashSet<(u32, u64)>,
    /// Per origin, the highest seq in `stored_emitted`.
    pub stored_max: HashMap<u32, u64>,
    /// `(worker, origin)`: the most the worker ever reported holding of
    /// the origin (an LB may have told others to catch up to it).
    pub reported: HashMap<(u32, u32), u64>,
    /// What each record identity was created as.
    pub identities: HashMap<(u32, u64), (u64, u64)>,
    /// Records created in the current step, checked at its end.
    pub created: Vec<Rec>,
}

/// Counts over one or many schedules.
#[derive(Default, Debug)]
pub struct Stats {
    pub seeds: u64,
    pub steps: u64,
    pub acked: u64,
    pub reads: u64,
    pub stale_after_lb_restart: u64,
    pub redispatched: u64,
    pub breaks: u64,
    pub kills: u64,
    pub kills_deferred: u64,
    pub crashes: u64,
    pub machine_crashes: u64,
    pub lost_entries: u64,
    pub lost_dirs: u64,
    pub restarts: u64,
    pub lb_crashes: u64,
    pub lb_drops: u64,
    pub leave_timeouts: u64,
    pub lossy_restarts: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.seeds += o.seeds;
        self.steps += o.steps;
        self.acked += o.acked;
        self.reads += o.reads;
        self.stale_after_lb_restart += o.stale_after_lb_restart;
        self.redispatched += o.redispatched;
        self.breaks += o.breaks;
        self.kills += o.kills;
        self.kills_deferred += o.kills_deferred;
        self.crashes += o.crashes;
        self.machine_crashes += o.machine_crashes;
        self.lost_entries += o.lost_entries;
        self.lost_dirs += o.lost_dirs;
        self.restarts += o.restarts;
        self.lb_crashes += o.lb_crashes;
        self.lb_drops += o.lb_drops;
        self.leave_timeouts += o.leave_timeouts;
        self.lossy_restarts += o.lossy_restarts;
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sim: {self:?}")
    }
}

impl Sim {
    /// New records of this step: an identity `(origin, seq)` is never
    /// created twice (each process numbers under an origin of its own, so
    /// not even a restart that lost its log's tail takes one again).
    pub fn check_created(&mut self) {
        for rec in std::mem::take(&mut self.hist.created) {
            let key = (rec.origin, rec.seq);
            let now = (rec.id, rec.version);
            if let Some(&was) = self.hist.identities.get(&key) {
                panic!(
                    "record {key:?} created again as (id, version) {now:?}; it was {was:?}; \
                     seed {}; {:?}",
                    self.seed, self.log
                );
            }
            self.hist.identities.insert(key, now);
        }
    }

    pub fn dump(&self) {
        for (id, n) in &self.nodes {
            let s = &n.replica.store;
            let mut ids = s.sorted_ids();
            ids.truncate(20);
            let entries: Vec<String> = ids
                .iter()
                .map(|&k| {
                    let e = s.get(k).expect("listed");
                    format!("{k}:v{}@{}/{}", e.version, e.origin, e.seq)
                })
                .collect();
            eprintln!(
                "worker {id}: {}, vector {:?}, conn {:?}\n  {}",
                n.replica.describe(),
                n.replica.vv.to_vec(),
                n.conn,
                entries.join(" ")
            );
        }
        for ((a, b), l) in &self.links {
            eprintln!(
                "  link {a}->{b} up {} serial {} acked {} queued {}/{}",
                l.up,
                l.serial,
                l.acked,
                l.fwd.len(),
                l.back.len()
            );
        }
        for d in &self.dying {
            eprintln!(
                "  dying {}->{} serial {} done {}/{} queued {}/{}",
                d.from,
                d.to,
                d.serial,
                d.dialer_done,
                d.acceptor_done,
                d.fwd.len(),
                d.back.len()
            );
        }
        eprintln!("  redials {:?}", self.redials);
        eprintln!("  crashed {:?}", self.crashed.keys().collect::<Vec<_>>());
        if let Some(lb) = &self.lb {
            eprintln!(
                "  lb members {:?} frontier {:?}",
                lb.members.members(),
                lb.frontier
            );
        }
    }

    /// The end-of-schedule checks.
    pub fn check(&self) {
        let seed = self.seed;
        let ctx = || {
            format!(
                "seed {seed}; replay with SIM_SEED={seed}; events {:?}",
                self.log
            )
        };
        let ok = self.lb.is_some()
            && self.crashed.is_empty()
            && self
                .nodes
                .values()
                .all(|n| n.replica.phase() == Phase::Active);
        if !ok {
            self.dump();
        }
        let lb = self
            .lb
            .as_ref()
            .unwrap_or_else(|| panic!("LB down; {}", ctx()));
        assert!(
            self.crashed.is_empty(),
            "crashed workers never came back; {}",
            ctx()
        );
        for (&id, n) in &self.nodes {
            assert_eq!(
                n.replica.phase(),
                Phase::Active,
                "worker {id} did not end active; {}",
                ctx()
            );
            let info = lb.members.get(id);
            assert!(
                info.is_some_and(
                    |i| i.status == Status::Active && i.link.map(|k| k as u64) == n.conn
                ),
                "worker {id} is active but not to the LB ({:?}); {}",
                info.map(|i| i.status),
                ctx()
            );
        }
        let digests: Vec<([u8; 16], u32)> = self
            .nodes
            .iter()
            .map(|(id, n)| (n.replica.store.digest(), *id))
            .collect();
        if digests.windows(2).any(|w| w[0].0 != w[1].0) {
            self.dump();
        }
        for w in digests.windows(2) {
            assert_eq!(
                w[0].0,
                w[1].0,
                "workers {} and {} diverged; {}",
                w[0].1,
                w[1].1,
                ctx()
            );
        }
        for (id, n) in &self.nodes {
            for (&key, &version) in &self.hist.acked {
                let have = n.replica.store.get(key).map_or(0, |e| e.version);
                assert!(
                    have >= version,
                    "worker {id} lost acknowledged write of id {key} (version {version}, has {have}); {}",
                    ctx()
                );
            }
        }
        if !(lb.pending.is_empty() && lb.parked.is_empty()) {
            self.dump();
        }
        assert!(
            lb.pending.is_empty() && lb.parked.is_empty(),
            "requests never answered: {:?} {:?}; {}",
            lb.pending,
            lb.parked,
            ctx()
        );
    }
}
