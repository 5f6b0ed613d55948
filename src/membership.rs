//! The LB's view of the workers: the seed's two structures.
//!
//! - `workers`: a hash map keyed by worker ID holding address, port, status
//!   (and what the LB learns from each worker's reports).
//! - `active`: a dynamic array of the IDs of active workers, walked by the
//!   round-robin cursor. A worker is in `active` iff its status is
//!   [`Status::Active`]; order is activation order.
//!
//! Status moves: (register) → Joining → Active → Leaving → (removed), or to
//! Inactive when the connection is lost without deregistering. At most one
//! worker per ID is Joining, Active or Leaving at any time. An Inactive
//! worker stays in the map (the status page shows it) until it registers
//! again. `since` is when the status last changed.

use crate::msg::{Member, Status, Vector};
use crate::vector::lookup;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// The LB's verdict on a joiner's READY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Some active worker's marker is missing or not covered yet, or some
    /// other joining worker's marker is missing.
    NotYet,
    /// It lacks acknowledged records of workers that have left: `floor`.
    Behind(Vector),
    /// It holds everything: activate it.
    Complete,
}

#[derive(Debug, Clone)]
pub struct WorkerInfo {
    pub id: u32,
    pub incarnation: u32,
    /// `ip:port` the worker listens on for peers and admin tools.
    pub addr: String,
    pub status: Status,
    /// Slab key of its connection, while connected.
    pub link: Option<usize>,
    /// From its latest report.
    pub records: u64,
    pub vector: Vector,
    /// Its store digest from its latest report (`None` before the first).
    pub digest: Option<[u8; 16]>,
    /// When `status` last changed.
    pub since: Instant,
    /// Requests the round robin gave it since it registered.
    pub dispatched: u64,
    /// The last BEHIND floor sent to it (sent again only when it changes).
    pub behind: Vector,
}

#[derive(Debug, Default)]
pub struct Membership {
    workers: HashMap<u32, WorkerInfo>,
    active: Vec<u32>,
    cursor: usize,
    /// One above every ID this LB has seen: assigned IDs are never reused
    /// while it runs (a worker that comes back with an old ID anyway, after
    /// losing its data, continues numbering above its predecessor).
    next_id: u32,
}

impl Membership {
    /// Registers a worker; `id` 0 asks for a fresh ID, `incarnation` 0 for a
    /// fresh incarnation. Refuses an ID that is already connected.
    pub fn register(
        &mut self,
        id: u32,
        incarnation: u32,
        addr: String,
        link: usize,
    ) -> Result<(u32, u32), String> {
        let id = if id == 0 { self.next_id.max(1) } else { id };
        let previous = self.workers.get(&id);
        if let Some(w) = previous {
            if w.link.is_some() {
                return Err(format!(
                    "worker {id} is already registered ({}) from {}",
                    w.status.name(),
                    w.addr
                ));
            }
        }
        let incarnation = match (incarnation, previous) {
            (0, Some(w)) => w.incarnation + 1,
            (0, None) => 1,
            (inc, _) => inc,
        };
        self.next_id = self.next_id.max(id.saturating_add(1));
        self.workers.insert(
            id,
            WorkerInfo {
                id,
                incarnation,
                addr,
                status: Status::Joining,
                link: Some(link),
                records: 0,
                vector: Vec::new(),
                digest: None,
                since: Instant::now(),
                dispatched: 0,
                behind: Vec::new(),
            },
        );
        Ok((id, incarnation))
    }

    /// The ID the next worker that asks for one gets.
    pub fn next_id(&self) -> u32 {
        self.next_id.max(1)
    }

    /// Never assign an ID below `next` (IDs given out by an earlier LB).
    pub fn reserve_ids_below(&mut self, next: u32) {
        self.next_id = self.next_id.max(next);
    }

    pub fn get(&self, id: u32) -> Option<&WorkerInfo> {
        self.workers.get(&id)
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut WorkerInfo> {
        self.workers.get_mut(&id)
    }

    /// The highest record of `origin` that any worker in the map reported
    /// holding. A worker coming back without its own records (a lost
    /// directory or log tail) numbers new ones above this, and catches up
    /// to it, even when the workers holding them are not connected now.
    pub fn highest_reported(&self, origin: u32) -> u64 {
        self.workers
            .values()
            .map(|w| crate::vector::lookup(&w.vector, origin))
            .max()
            .unwrap_or(0)
    }

    /// The IDs of the workers in the map, but those leaving: whom a
    /// restarted LB's grace waits for.
    pub fn listed(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .workers
            .values()
            .filter(|w| w.status != Status::Leaving)
            .map(|w| w.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    pub fn active(&self) -> &[u32] {
        &self.active
    }

    /// Checks a joiner's READY: for every active worker `a`, the joiner
    /// heard `a`'s marker and its vector covers it; and it covers every
    /// acknowledged record (`frontier`: highest acknowledged seq per origin)
    /// of workers that have left the map, which are nobody's marker now.
    ///
    /// It must also name a marker of every other joining worker: a READY
    /// the joiner sent before it heard of one is stale (it sends a new one
    /// once that worker's hello came). A worker back after an LB restart
    /// is joining, and its hello tells the joiner of the joiner's own
    /// records it holds (see `Lb::in_grace`).
    pub fn check_ready(
        &self,
        frontier: &BTreeMap<u32, u64>,
        joiner: u32,
        vector: &[(u32, u64)],
        markers: &[(u32, u64)],
    ) -> Readiness {
        let covered = self.active.iter().filter(|&&a| a != joiner).all(|&a| {
            markers
                .iter()
                .find(|&&(id, _)| id == a)
                .is_some_and(|&(_, m)| lookup(vector, a) >= m)
        });
        let heard_joiners = self
            .workers
            .values()
            .filter(|w| w.id != joiner && w.status == Status::Joining)
            .all(|w| markers.iter().any(|&(id, _)| id == w.id));
        if !covered || !heard_joiners {
            return Readiness::NotYet;
        }
        let floor: Vector = frontier
            .iter()
            .filter(|&(&o, &s)| !self.workers.contains_key(&o) && lookup(vector, o) < s)
            .map(|(&o, &s)| (o, s))
            .collect();
        if floor.is_empty() {
            Readiness::Complete
        } else {
            Readiness::Behind(floor)
        }
    }

    /// Anti-entropy for origins that can no longer stream their own records
    /// (inactive: crashed or cut off; or gone from the map): for each such
    /// origin the floor is the most any connected worker reports holding of
    /// it (and, for a worker that left, everything acknowledged). Returns the
    /// connected workers below a floor, with the floor entries they lack and
    /// that differ from what they were last told.
    pub fn lagging(&self, frontier: &BTreeMap<u32, u64>) -> Vec<(u32, Vector)> {
        let connected = |w: &WorkerInfo| w.link.is_some() && w.status != Status::Inactive;
        let mut floor: BTreeMap<u32, u64> = BTreeMap::new();
        for (&o, &s) in frontier {
            if !self.workers.contains_key(&o) {
                floor.insert(o, s);
            }
        }
        for w in self.workers.values().filter(|w| connected(w)) {
            for &(o, s) in &w.vector {
                let live = self.workers.get(&o).is_some_and(connected);
                if !live {
                    let f = floor.entry(o).or_insert(0);
                    *f = (*f).max(s);
                }
            }
        }
        let mut out = Vec::new();
        for w in self.workers.values().filter(|w| connected(w)) {
            let lacks: Vector = floor
                .iter()
                .filter(|&(&o, &s)| o != w.id && lookup(&w.vector, o) < s)
                .map(|(&o, &s)| (o, s))
                .collect();
            if !lacks.is_empty() && lacks != w.behind {
                out.push((w.id, lacks));
            }
        }
        out.sort();
        out
    }

    /// Joining → Active: enters the round robin.
    pub fn activate(&mut self, id: u32) -> bool {
        match self.workers.get_mut(&id) {
            Some(w) if w.status == Status::Joining => {
                w.status = Status::Active;
                w.since = Instant::now();
                self.active.push(id);
                true
            }
            _ => false,
        }
    }

    fn leave_round_robin(&mut self, id: u32) {
        if let Some(i) = self.active.iter().position(|&a| a == id) {
            self.active.remove(i);
            // Keep the cursor on the worker that was next.
            if i < self.cursor {
                self.cursor -= 1;
            }
        }
    }

    /// The worker asked to leave: out of the round robin at once.
    pub fn deregister(&mut self, id: u32) {
        self.leave_round_robin(id);
        if let Some(w) = self.workers.get_mut(&id) {
            w.status = Status::Leaving;
            w.since = Instant::now();
        }
    }

    /// The worker's connection closed. A leaving worker leaves the map; any
    /// other becomes Inactive (it may come back with the same ID).
    pub fn lost(&mut self, id: u32) {
        self.leave_round_robin(id);
        match self.workers.get(&id).map(|w| w.status) {
            Some(Status::Leaving) => {
                self.workers.remove(&id);
            }
            Some(_) => {
                if let Some(w) = self.workers.get_mut(&id) {
                    if w.status != Status::Inactive {
                        w.since = Instant::now();
                    }
                    w.status = Status::Inactive;
                    w.link = None;
                }
            }
            None => {}
        }
    }

    /// The next active worker in round-robin order, advancing the cursor.
    pub fn next_worker(&mut self) -> Option<&WorkerInfo> {
        if self.active.is_empty() {
            return None;
        }
        let id = self.active[self.cursor % self.active.len()];
        self.cursor = (self.cursor + 1) % self.active.len();
        let w = self.workers.get_mut(&id)?;
        w.dispatched += 1;
        Some(w)
    }

    /// Every known worker, by ID.
    pub fn members(&self) -> Vec<Member> {
        let mut v: Vec<Member> = self
            .workers
            .values()
            .map(|w| Member {
                id: w.id,
                incarnation: w.incarnation,
                status: w.status,
                records: w.records,
                addr: w.addr.clone(),
            })
            .collect();
        v.sort_by_key(|m| m.id);
        v
    }

    /// Connection keys of every connected worker.
    pub fn links(&self) -> impl Iterator<Item = usize> + '_ {
        self.workers.values().filter_map(|w| w.link)
    }

    /// Connection keys of connected workers, every one of which follows
    /// membership changes: a leaving one too, so that it hands its records
    /// to peers that came back elsewhere or joined, and stops waiting for
    /// ones that died.
    pub fn links_to_update(&self) -> impl Iterator<Item = usize> + '_ {
        self.workers.values().filter_map(|w| w.link)
    }

    /// Connection keys of the joining workers.
    pub fn joining_links(&self) -> impl Iterator<Item = usize> + '_ {
        self.workers
            .values()
            .filter(|w| w.status == Status::Joining)
            .filter_map(|w| w.link)
    }

    pub fn count(&self, status: Status) -> usize {
        self.workers.values().filter(|w| w.status == status).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_must_name_every_other_joining_workers_marker() {
        let mut m = Membership::default();
        for i in 1..=3 {
            m.register(i, 0, format!("a{i}"), i as usize).unwrap();
        }
        m.activate(1);
        let frontier = BTreeMap::new();
        // Worker 2 heard 1 but not 3, which registered after: stale.
        assert_eq!(
            m.check_ready(&frontier, 2, &[(1, 5)], &[(1, 5)]),
            Readiness::NotYet
        );
        assert_eq!(
            m.check_ready(&frontier, 2, &[(1, 5)], &[(1, 5), (3, 0)]),
            Readiness::Complete
        );
        // Once 3 is gone (inactive), 2's old READY is complete.
        m.lost(3);
        assert_eq!(
            m.check_ready(&frontier, 2, &[(1, 5)], &[(1, 5)]),
            Readiness::Complete
        );
    }

    #[test]
    fn round_robin_walks_active_workers_in_order() {
        let mut m = Membership::default();
        for i in 1..=3 {
            m.register(i, 0, format!("127.0.0.1:{i}"), i as usize)
                .unwrap();
            m.activate(i);
        }
        let order: Vec<u32> = (0..7).map(|_| m.next_worker().unwrap().id).collect();
        assert_eq!(order, [1, 2, 3, 1, 2, 3, 1]);
        m.deregister(3); // the cursor was on 2
        assert_eq!(m.next_worker().unwrap().id, 2);
        assert_eq!(m.next_worker().unwrap().id, 1);
        m.lost(3);
        assert!(m.get(3).is_none(), "a leaving worker leaves the map");
        m.lost(1);
        assert_eq!(m.get(1).unwrap().status, Status::Inactive);
        assert_eq!(m.active(), &[2]);
    }

    #[test]
    fn the_round_robin_counts_requests_and_status_changes_are_timed() {
        let mut m = Membership::default();
        for i in 1..=2 {
            m.register(i, 0, format!("a{i}"), i as usize).unwrap();
        }
        let registered = m.get(1).unwrap().since;
        assert!(m.activate(1));
        assert!(m.activate(2));
        assert!(m.get(1).unwrap().since >= registered);
        for _ in 0..5 {
            m.next_worker();
        }
        assert_eq!(m.get(1).unwrap().dispatched, 3);
        assert_eq!(m.get(2).unwrap().dispatched, 2);
        m.lost(2);
        let lost = m.get(2).unwrap().since;
        m.lost(2);
        assert_eq!(m.get(2).unwrap().since, lost, "still the same inactivity");
        assert_eq!(m.get(2).unwrap().status, Status::Inactive);
        m.register(2, 0, "a2".into(), 3).unwrap();
        assert_eq!(
            m.get(2).unwrap().dispatched,
            0,
            "counted again from registration"
        );
        assert_eq!(m.get(2).unwrap().digest, None);
    }

    #[test]
    fn ids_are_assigned_and_duplicates_refused() {
        let mut m = Membership::default();
        assert_eq!(m.register(0, 0, "a".into(), 1), Ok((1, 1)));
        assert_eq!(m.register(0, 0, "b".into(), 2), Ok((2, 1)));
        assert!(m.register(2, 0, "c".into(), 3).is_err());
        m.lost(2);
        assert_eq!(
            m.register(2, 0, "c".into(), 3),
            Ok((2, 2)),
            "new incarnation"
        );
        m.deregister(2);
        m.lost(2);
        assert_eq!(
            m.register(0, 0, "d".into(), 4),
            Ok((3, 1)),
            "ids are not reused"
        );
        assert!(m.next_worker().is_none(), "nobody active yet");
    }

    #[test]
    fn readiness_needs_every_active_marker_and_departed_records() {
        let mut m = Membership::default();
        for i in 1..=2 {
            m.register(i, 0, format!("a{i}"), i as usize).unwrap();
            m.activate(i);
        }
        m.register(3, 0, "a3".into(), 3).unwrap();
        let frontier = BTreeMap::from([(1, 5), (2, 7), (9, 4)]);
        let v = [(1, 5), (2, 7), (9, 4)];
        assert_eq!(
            m.check_ready(&frontier, 3, &v, &[(1, 5)]),
            Readiness::NotYet
        );
        assert_eq!(
            m.check_ready(&frontier, 3, &[(1, 5), (2, 6)], &[(1, 5), (2, 7)]),
            Readiness::NotYet
        );
        // Worker 9 left the map: its acknowledged records are the floor.
        assert_eq!(
            m.check_ready(&frontier, 3, &[(1, 5), (2, 7), (9, 3)], &[(1, 5), (2, 7)]),
            Readiness::Behind(vec![(9, 4)])
        );
        assert_eq!(
            m.check_ready(&frontier, 3, &v, &[(1, 5), (2, 7)]),
            Readiness::Complete
        );
    }
}
