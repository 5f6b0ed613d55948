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

/// Connected and not declared dead: its reports count, and its process
/// streams its origin's records.
fn connected(w: &WorkerInfo) -> bool {
    w.link.is_some() && w.status != Status::Inactive
}

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
    /// The origin of its current process's records (see [`Msg::Welcome`]).
    ///
    /// [`Msg::Welcome`]: crate::msg::Msg::Welcome
    pub origin: u32,
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
    /// The last BEHIND floor sent to it: the whole floor it must cover,
    /// sent again whenever it changes, lower too (see [`Membership::lagging`]).
    /// `None` until the first after it registered: it may hold a floor an
    /// earlier LB (or connection) gave it, which the first one replaces.
    pub behind: Option<Vector>,
    /// Leaving, and DEREGISTER_OK went out (see [`Membership::leavers_to_release`]).
    pub released: bool,
}

#[derive(Debug, Default)]
pub struct Membership {
    workers: HashMap<u32, WorkerInfo>,
    active: Vec<u32>,
    cursor: usize,
    /// One above every ID and origin this LB has seen or given: one
    /// counter serves both, so neither is ever given twice (across LB
    /// restarts too, through the `.ids` file, see `Lb::persist_ids`).
    next_id: u32,
}

impl Membership {
    /// Registers a worker; `id` 0 asks for a fresh ID, `origin` 0 (a
    /// process that just started) for a fresh origin: the ID if it was
    /// never seen (a new worker), else the next from the same counter,
    /// which first moves above `max_origin` (the highest origin the
    /// worker holds records of: an LB that lost its saved counter learns
    /// of origins in use that way). Refuses an ID that is already
    /// connected, and an origin another worker has. Returns `(id, origin)`.
    pub fn register(
        &mut self,
        id: u32,
        origin: u32,
        max_origin: u32,
        addr: String,
        link: usize,
    ) -> Result<(u32, u32), String> {
        if origin != 0 {
            let owner = self
                .workers
                .values()
                .find(|w| w.origin == origin && w.id != id);
            if let Some(w) = owner {
                return Err(format!(
                    "origin {origin} belongs to worker {} ({}) at {}",
                    w.id,
                    w.status.name(),
                    w.addr
                ));
            }
        }
        self.reserve_ids_below(max_origin.saturating_add(1));
        let id = if id == 0 { self.next_id.max(1) } else { id };
        // Never given or seen: free as an origin too.
        let unseen = id >= self.next_id.max(1);
        if let Some(w) = self.workers.get(&id) {
            if w.link.is_some() {
                return Err(format!(
                    "worker {id} is already registered ({}) from {}",
                    w.status.name(),
                    w.addr
                ));
            }
        }
        self.next_id = self.next_id.max(id.saturating_add(1));
        let origin = match origin {
            0 if unseen => id,
            0 => {
                let o = self.next_id.max(1);
                self.next_id = o.saturating_add(1);
                o
            }
            o => o,
        };
        self.next_id = self.next_id.max(origin.saturating_add(1));
        self.workers.insert(
            id,
            WorkerInfo {
                id,
                origin,
                addr,
                status: Status::Joining,
                link: Some(link),
                records: 0,
                vector: Vec::new(),
                digest: None,
                since: Instant::now(),
                dispatched: 0,
                behind: None,
                released: false,
            },
        );
        Ok((id, origin))
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

    /// Keeps `id`'s reported vector. Returns whether the floors of
    /// [`Membership::lagging`] may have moved: an entry of an origin that
    /// no connected worker numbers under changed, or `id` was told a floor
    /// (it may have caught up), or none yet. A busy worker REPORTs every
    /// 5 ms, and its own and its peers' live origins move in every one:
    /// those alone change no floor.
    pub fn note_report(&mut self, id: u32, vector: Vector) -> bool {
        let Some(w) = self.workers.get(&id) else {
            return false;
        };
        let moved = vector
            .iter()
            .any(|&(o, s)| lookup(&w.vector, o) != s && !self.streams(o));
        let told = w.behind.as_ref().is_none_or(|b| !b.is_empty());
        if let Some(w) = self.workers.get_mut(&id) {
            w.vector = vector;
        }
        moved || told
    }

    /// The current origin of worker `id`, if it is in the map.
    pub fn origin_of(&self, id: u32) -> Option<u32> {
        self.workers.get(&id).map(|w| w.origin)
    }

    /// Whether `origin` is the current origin of a worker in the map
    /// (in any state): its process may still stream its own records.
    fn is_listed_origin(&self, origin: u32) -> bool {
        self.workers.values().any(|w| w.origin == origin)
    }

    /// Whether `origin` is the current origin of a [`connected`] worker:
    /// its process streams its own records now.
    fn streams(&self, origin: u32) -> bool {
        self.workers
            .values()
            .any(|w| w.origin == origin && connected(w))
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
    /// heard the marker of `a`'s current origin (markers are keyed by
    /// origin) and its vector covers it; and it covers
    /// every acknowledged record (`frontier`: highest acknowledged seq per
    /// origin) of origins no listed worker streams any more (workers that
    /// left, and earlier processes of restarted ones), which are nobody's
    /// marker now.
    ///
    /// It must also name a marker of every other joining worker: a READY
    /// the joiner sent before it heard of one is stale (it sends a new one
    /// once that worker's hello came). A worker back after an LB restart
    /// is joining, and its hello tells the joiner what of its origin
    /// exists (see `Lb::in_grace`).
    pub fn check_ready(
        &self,
        frontier: &BTreeMap<u32, u64>,
        joiner: u32,
        vector: &[(u32, u64)],
        markers: &[(u32, u64)],
    ) -> Readiness {
        let covered = self
            .active
            .iter()
            .filter(|&&a| a != joiner)
            .filter_map(|a| self.workers.get(a))
            .all(|a| {
                markers
                    .iter()
                    .find(|&&(o, _)| o == a.origin)
                    .is_some_and(|&(_, m)| lookup(vector, a.origin) >= m)
            });
        let heard_joiners = self
            .workers
            .values()
            .filter(|w| w.id != joiner && w.status == Status::Joining)
            .all(|w| markers.iter().any(|&(o, _)| o == w.origin));
        if !covered || !heard_joiners {
            return Readiness::NotYet;
        }
        let floor: Vector = frontier
            .iter()
            .filter(|&(&o, &s)| !self.is_listed_origin(o) && lookup(vector, o) < s)
            .map(|(&o, &s)| (o, s))
            .collect();
        if floor.is_empty() {
            Readiness::Complete
        } else {
            Readiness::Behind(floor)
        }
    }

    /// Anti-entropy for origins that can no longer stream their own records
    /// (the current origin of an inactive worker: crashed or cut off; or an
    /// origin no listed worker has: gone, or an earlier process of a
    /// restarted one): for each such origin the floor is the most any
    /// connected worker reports holding of it (and, for an unlisted one,
    /// everything acknowledged). Returns the connected workers whose floor
    /// (the entries they lack) differs from what they were last told,
    /// with the new one, which replaces it. It may be lower, or empty: the
    /// worker whose report raised it left or came back without those
    /// records (never acknowledged, so nobody may have them any more), and
    /// a worker told to wait for them would wait forever.
    pub fn lagging(&self, frontier: &BTreeMap<u32, u64>) -> Vec<(u32, Vector)> {
        let mut floor: BTreeMap<u32, u64> = BTreeMap::new();
        for (&o, &s) in frontier {
            if !self.is_listed_origin(o) {
                floor.insert(o, s);
            }
        }
        for w in self.workers.values().filter(|w| connected(w)) {
            for &(o, s) in &w.vector {
                if !self.streams(o) {
                    let f = floor.entry(o).or_insert(0);
                    *f = (*f).max(s);
                }
            }
        }
        let mut out = Vec::new();
        for w in self.workers.values().filter(|w| connected(w)) {
            let lacks: Vector = floor
                .iter()
                .filter(|&(&o, &s)| o != w.origin && lookup(&w.vector, o) < s)
                .map(|(&o, &s)| (o, s))
                .collect();
            if w.behind.as_ref() != Some(&lacks) {
                out.push((w.id, lacks));
            }
        }
        out.sort();
        out
    }

    /// A READY showed `id` lacking `floor` (acknowledged records of origins
    /// nobody streams): joined to what it was told before, the whole floor
    /// to send it (BEHIND replaces a worker's floor).
    pub fn add_behind(&mut self, id: u32, floor: &[(u32, u64)]) -> Vector {
        let Some(w) = self.workers.get_mut(&id) else {
            return floor.to_vec();
        };
        let mut all: BTreeMap<u32, u64> = w.behind.iter().flatten().copied().collect();
        for &(o, s) in floor {
            let e = all.entry(o).or_insert(0);
            *e = (*e).max(s);
        }
        let all: Vector = all.into_iter().collect();
        w.behind = Some(all.clone());
        all
    }

    /// The floor `id` was last told (see [`Membership::lagging`]).
    pub fn behind_of(&self, id: u32) -> Vector {
        self.workers
            .get(&id)
            .and_then(|w| w.behind.clone())
            .unwrap_or_default()
    }

    /// Leaving workers that may be told DEREGISTER_OK now (marked as told).
    /// A leaver waits for its peers to acknowledge its own records, but it
    /// may also hold the only copies of records of origins that no process
    /// numbers under any more (its own earlier process's, above all: a
    /// restart numbers anew): it is released once every connected worker
    /// that stays reports holding what it reported of those origins (the
    /// floor of [`Membership::lagging`] has them catch up meanwhile). With
    /// no such worker, at once.
    pub fn leavers_to_release(&mut self) -> Vec<u32> {
        let staying: Vec<&WorkerInfo> = self
            .workers
            .values()
            .filter(|w| w.link.is_some() && matches!(w.status, Status::Joining | Status::Active))
            .collect();
        let covered = |l: &WorkerInfo| {
            l.vector
                .iter()
                .filter(|&&(o, _)| o != l.origin && !self.streams(o))
                .all(|&(o, s)| staying.iter().all(|w| lookup(&w.vector, o) >= s))
        };
        let ready: Vec<u32> = self
            .workers
            .values()
            .filter(|l| l.status == Status::Leaving && l.link.is_some() && !l.released)
            .filter(|l| covered(l))
            .map(|l| l.id)
            .collect();
        for id in &ready {
            if let Some(w) = self.workers.get_mut(id) {
                w.released = true;
            }
        }
        ready
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
                origin: w.origin,
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

    /// IDs and connection keys of the joining workers.
    pub fn joining_links(&self) -> impl Iterator<Item = (u32, usize)> + '_ {
        self.workers
            .values()
            .filter(|w| w.status == Status::Joining)
            .filter_map(|w| Some((w.id, w.link?)))
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
            m.register(i, 0, 0, format!("a{i}"), i as usize).unwrap();
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
            m.register(i, 0, 0, format!("127.0.0.1:{i}"), i as usize)
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
            m.register(i, 0, 0, format!("a{i}"), i as usize).unwrap();
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
        m.register(2, 0, 0, "a2".into(), 3).unwrap();
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
        assert_eq!(m.register(0, 0, 0, "a".into(), 1), Ok((1, 1)));
        assert_eq!(m.register(0, 0, 0, "b".into(), 2), Ok((2, 2)));
        assert!(m.register(2, 0, 0, "c".into(), 3).is_err());
        m.lost(2);
        assert_eq!(
            m.register(2, 0, 0, "c".into(), 3),
            Ok((2, 3)),
            "a restarted process gets a fresh origin"
        );
        m.lost(2);
        assert_eq!(
            m.register(2, 3, 0, "c".into(), 3),
            Ok((2, 3)),
            "a process registering again keeps its origin"
        );
        m.deregister(2);
        m.lost(2);
        assert_eq!(
            m.register(0, 0, 0, "d".into(), 4),
            Ok((4, 4)),
            "neither ids nor origins are reused"
        );
        assert!(m.next_worker().is_none(), "nobody active yet");
    }

    #[test]
    fn old_origins_of_a_restarted_worker_are_floors() {
        let mut m = Membership::default();
        for i in 1..=2 {
            m.register(i, 0, 0, format!("a{i}"), i as usize).unwrap();
            m.activate(i);
        }
        // Worker 2 restarts: origin 3 now; what origin 2 had acknowledged
        // must be held by a joiner, and its markers count origin 3.
        m.lost(2);
        assert_eq!(m.register(2, 0, 0, "a2".into(), 3), Ok((2, 3)));
        m.activate(2);
        m.register(4, 0, 0, "a4".into(), 4).unwrap();
        let frontier = BTreeMap::from([(1, 5), (2, 7), (3, 2)]);
        let markers = [(1, 5), (3, 2)];
        assert_eq!(
            m.check_ready(&frontier, 4, &[(1, 5), (2, 7), (3, 1)], &markers),
            Readiness::NotYet,
            "worker 2's marker counts its current origin"
        );
        assert_eq!(
            m.check_ready(&frontier, 4, &[(1, 5), (2, 7), (3, 2)], &[(1, 5), (2, 2)]),
            Readiness::NotYet,
            "a marker of its earlier origin says nothing"
        );
        assert_eq!(
            m.check_ready(&frontier, 4, &[(1, 5), (2, 6), (3, 2)], &markers),
            Readiness::Behind(vec![(2, 7)])
        );
        assert_eq!(
            m.check_ready(&frontier, 4, &[(1, 5), (2, 7), (3, 2)], &markers),
            Readiness::Complete
        );
        // Anti-entropy: origin 2 is nobody's now; 1 reports holding more of
        // it than 2 (its log lost them) does.
        m.get_mut(1).unwrap().vector = vec![(1, 5), (2, 9), (3, 2)];
        m.get_mut(2).unwrap().vector = vec![(1, 5), (2, 6), (3, 2)];
        let lagging = m.lagging(&frontier);
        assert!(lagging.contains(&(2, vec![(2, 9)])), "{lagging:?}");
    }

    #[test]
    fn a_leaver_is_released_once_those_staying_hold_its_dead_origins_records() {
        let mut m = Membership::default();
        for i in 1..=3 {
            m.register(i, 0, 0, format!("a{i}"), i as usize).unwrap();
            m.activate(i);
        }
        // Worker 3 restarted (origin 4) with origin 3's records up to 9,
        // which worker 1 holds only up to 5.
        m.lost(3);
        m.register(3, 0, 3, "a3".into(), 3).unwrap();
        m.activate(3);
        m.get_mut(1).unwrap().vector = vec![(1, 2), (2, 2), (3, 5)];
        m.get_mut(2).unwrap().vector = vec![(1, 2), (2, 2), (3, 9)];
        m.get_mut(3).unwrap().vector = vec![(1, 2), (2, 2), (3, 9), (4, 7)];
        m.deregister(3);
        assert!(
            m.leavers_to_release().is_empty(),
            "worker 1 lacks origin 3's 6..=9"
        );
        assert!(m.lagging(&BTreeMap::new()).contains(&(1, vec![(3, 9)])));
        m.get_mut(1).unwrap().vector = vec![(1, 2), (2, 2), (3, 9), (4, 7)];
        assert_eq!(
            m.leavers_to_release(),
            [3],
            "its own origin 4 its peers ack"
        );
        assert!(m.leavers_to_release().is_empty(), "told once");
    }

    #[test]
    fn only_reports_that_can_move_a_floor_ask_for_one() {
        let mut m = Membership::default();
        for i in 1..=3 {
            m.register(i, 0, 0, format!("a{i}"), i as usize).unwrap();
            m.activate(i);
        }
        assert!(m.note_report(1, vec![(1, 1)]), "no floor told yet");
        m.get_mut(1).unwrap().behind = Some(Vec::new());
        assert!(
            !m.note_report(1, vec![(1, 5), (2, 3)]),
            "live origins move every turn"
        );
        m.lost(3);
        assert!(
            m.note_report(1, vec![(1, 5), (2, 3), (3, 2)]),
            "origin 3 streams no more"
        );
        m.get_mut(1).unwrap().behind = Some(vec![(3, 4)]);
        assert!(
            m.note_report(1, vec![(1, 6), (2, 3), (3, 2)]),
            "it lacks a floor"
        );
    }

    #[test]
    fn an_origin_in_use_is_never_given_again() {
        let mut m = Membership::default();
        m.register(1, 0, 0, "a1".into(), 1).unwrap();
        // An LB that lost its counter: a worker holding records of origin 9
        // registers; the next fresh origin is above it.
        assert_eq!(m.register(2, 0, 9, "a2".into(), 2), Ok((2, 10)));
        assert!(
            m.register(3, 10, 0, "a3".into(), 3).is_err(),
            "origin 10 is worker 2's"
        );
    }

    #[test]
    fn readiness_needs_every_active_marker_and_departed_records() {
        let mut m = Membership::default();
        for i in 1..=2 {
            m.register(i, 0, 0, format!("a{i}"), i as usize).unwrap();
            m.activate(i);
        }
        m.register(3, 0, 0, "a3".into(), 3).unwrap();
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
