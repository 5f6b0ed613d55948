//! One step of a schedule: maybe a fault; otherwise every event that could
//! happen next is listed and the seed picks one.
//!
//! Faults are injected only while the schedule runs; recovery (the LB
//! restarting, crashed workers restarting, re-registration, re-dials) also
//! happens in the quiet phase, which ends when nothing at all can happen.

use crate::faults::Budget;
use crate::lb::Lb;
use crate::world::Sim;
use crate::Rng;
use rrstore::replica::Phase;
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug)]
enum Choice {
    Op,
    Join,
    Leave,
    LbRestart,
    Restart(u32),
    Register(u32),
    LbTurn,
    LeaveTimeout(u32),
    RetryGaps(u32),
    LbGraceEnds,
    FromLb(u64),
    ToLb(u64),
    WorkerNotices(u64),
    LbNotices(u64),
    Redial((u32, u32)),
    Up((u32, u32)),
    Fwd((u32, u32)),
    Back((u32, u32)),
    Pump((u32, u32)),
    DyingFwd(usize),
    DyingBack(usize),
    DialerNotices(usize),
    AcceptorNotices(usize),
}

impl Sim {
    pub fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed);
        let initial = 1 + rng.below(3);
        let budget = Budget::draw(&mut rng);
        let mut sim = Sim {
            seed,
            joins_left: rng.below(3) as u32 + 1,
            leaves_left: rng.below(3) as u32,
            ops_left: 150 + rng.below(250) as u32,
            budget,
            rng,
            now: 0,
            nodes: BTreeMap::new(),
            addrs: BTreeMap::new(),
            links: BTreeMap::new(),
            dying: Vec::new(),
            redials: BTreeMap::new(),
            conns: BTreeMap::new(),
            lb: Some(Lb::new(0)),
            lb_down_since: 0,
            lb_listed: None,
            hist: Default::default(),
            stats: Default::default(),
            crashed: BTreeMap::new(),
            departed: Vec::new(),
            log: Vec::new(),
            trace: std::env::var_os("SIM_TRACE").is_some(),
            serials: 0,
            next_conn: 1,
            next_addr: 0,
            max_id: 0,
            next_req: 1,
        };
        sim.stats.seeds = 1;
        for _ in 0..initial {
            sim.join();
        }
        sim
    }

    pub fn running(&self) -> bool {
        self.ops_left > 0 || self.joins_left > 0
    }

    /// Maybe injects one fault (see `faults.rs`); true if it did.
    fn inject_fault(&mut self) -> bool {
        let r = self.rng.below(1000);
        let b = &self.budget;
        if r < 3 && b.kills > 0 {
            let staying = self.crashable();
            if staying.len() > 1 {
                self.budget.kills -= 1;
                let w = staying[self.rng.below(staying.len())];
                self.kill(w);
                return true;
            }
        } else if r < 8 && b.restarts > 0 {
            let up = self.crashable();
            if !up.is_empty() {
                self.budget.restarts -= 1;
                let w = up[self.rng.below(up.len())];
                let machine = self.rng.chance(50);
                self.crash(w, machine);
                return true;
            }
        } else if r < 16 && b.breaks > 0 && !self.links.is_empty() {
            self.budget.breaks -= 1;
            let i = self.rng.below(self.links.len());
            let key = *self.links.keys().nth(i).expect("in range");
            self.break_link(key);
            return true;
        } else if r < 19 && b.lb_crashes > 0 && self.lb.is_some() {
            self.budget.lb_crashes -= 1;
            self.lb_crash();
            return true;
        } else if r < 22 && b.lb_drops > 0 {
            let connected: Vec<u32> = match &self.lb {
                Some(lb) => self
                    .not_last_staying()
                    .into_iter()
                    .filter(|&w| lb.link(w).is_some())
                    .collect(),
                None => Vec::new(),
            };
            if !connected.is_empty() {
                self.budget.lb_drops -= 1;
                let w = connected[self.rng.below(connected.len())];
                self.lb_drop(w);
                return true;
            }
        }
        false
    }

    /// One step; false when nothing at all can happen.
    pub fn step(&mut self, quiesce: bool) -> bool {
        self.now += 1;
        if !quiesce && self.inject_fault() {
            self.end_step();
            return true;
        }
        let mut choices = Vec::with_capacity(32);
        // Recovery that takes a while: offered now and then while running.
        let mut slow = Vec::new();
        let lb_up = self.lb.is_some();
        if !quiesce {
            if self.ops_left > 0 {
                choices.extend([Choice::Op; 4]);
            }
            if lb_up && self.joins_left > 0 && (self.ops_left == 0 || self.rng.chance(2)) {
                choices.push(Choice::Join);
            }
            if self.leaves_left > 0 && self.rng.chance(1) && !self.may_leave().is_empty() {
                choices.push(Choice::Leave);
            }
        }
        match &self.lb {
            None => slow.push(Choice::LbRestart),
            Some(lb) => {
                if lb.changed {
                    choices.push(Choice::LbTurn);
                }
                // The grace's timer (2 s) outlasts a live worker's
                // re-registration (at most 0.8 s apart): it ends first only
                // if the awaited workers that have not come back are down
                // (or leaving: they never register again).
                if lb.grace.as_ref().is_some_and(|g| {
                    g.iter().all(|w| {
                        self.nodes
                            .get(w)
                            .is_none_or(|n| matches!(n.replica.phase(), Phase::Leaving { .. }))
                    })
                }) {
                    slow.push(Choice::LbGraceEnds);
                }
                for &w in self.crashed.keys() {
                    if lb.link(w).is_none() {
                        slow.push(Choice::Restart(w));
                    }
                }
                for (&w, n) in &self.nodes {
                    // Leaving ones too: they register to deregister again.
                    if n.conn.is_none() && lb.link(w).is_none() {
                        choices.push(Choice::Register(w));
                    }
                }
            }
        }
        for (&w, n) in &self.nodes {
            if self.leave_stuck(w) {
                slow.push(Choice::LeaveTimeout(w));
            }
            // The worker's gap retry timer (`check_gaps`).
            if n.replica.wants_retry() {
                slow.push(Choice::RetryGaps(w));
            }
        }
        for (&key, c) in &self.conns {
            if c.worker_open && !c.from_lb.is_empty() {
                choices.push(Choice::FromLb(key));
            }
            if c.worker_open && !c.lb_open && c.from_lb.is_empty() {
                choices.push(Choice::WorkerNotices(key));
            }
            if lb_up && c.lb_open && !c.to_lb.is_empty() {
                choices.push(Choice::ToLb(key));
            }
            if lb_up && c.lb_open && !c.worker_open && c.to_lb.is_empty() {
                choices.push(Choice::LbNotices(key));
            }
        }
        for (&(a, b), addr) in &self.redials {
            if self.addrs.get(&b) == Some(addr) && !self.links.contains_key(&(a, b)) {
                choices.push(Choice::Redial((a, b)));
            }
        }
        for (&key, l) in &self.links {
            if !l.up {
                choices.push(Choice::Up(key));
            }
            if !l.fwd.is_empty() {
                choices.push(Choice::Fwd(key));
            }
            if !l.back.is_empty() {
                choices.push(Choice::Back(key));
            }
            if l.cursor.is_some() {
                choices.push(Choice::Pump(key));
            }
        }
        for (i, d) in self.dying.iter().enumerate() {
            if !d.acceptor_done {
                choices.push(if d.fwd.is_empty() {
                    Choice::AcceptorNotices(i)
                } else {
                    Choice::DyingFwd(i)
                });
            }
            if !d.dialer_done {
                choices.push(if d.back.is_empty() {
                    Choice::DialerNotices(i)
                } else {
                    Choice::DyingBack(i)
                });
            }
        }
        if quiesce || choices.is_empty() || self.rng.chance(10) {
            choices.append(&mut slow);
        }
        if choices.is_empty() {
            return false;
        }
        let choice = choices[self.rng.below(choices.len())];
        if self.trace {
            let peek = match choice {
                Choice::FromLb(k) => format!("{:?}", self.conns[&k].from_lb.front()),
                Choice::ToLb(k) => format!("{:?}", self.conns[&k].to_lb.front()),
                Choice::Fwd(k) => format!("{:?}", self.links[&k].fwd.front()),
                Choice::Back(k) => format!("{:?}", self.links[&k].back.front()),
                Choice::DyingFwd(i) => {
                    let d = &self.dying[i];
                    format!("{}->{} {:?}", d.from, d.to, d.fwd.front())
                }
                Choice::DyingBack(i) => {
                    let d = &self.dying[i];
                    format!("{}->{} {:?}", d.from, d.to, d.back.front())
                }
                Choice::DialerNotices(i) | Choice::AcceptorNotices(i) => {
                    let d = &self.dying[i];
                    format!("{}->{} serial {}", d.from, d.to, d.serial)
                }
                _ => String::new(),
            };
            eprintln!("{} {choice:?} {peek}", self.now);
        }
        match choice {
            Choice::Op => self.client_op(),
            Choice::Join => {
                self.joins_left -= 1;
                self.join();
            }
            Choice::Leave => {
                self.leaves_left -= 1;
                let may = self.may_leave();
                let w = may[self.rng.below(may.len())];
                self.leave(w);
            }
            Choice::LbRestart => self.lb_restart(),
            Choice::Restart(w) => self.restart(w),
            Choice::Register(w) => self.register_again(w),
            Choice::LbTurn => self.lb_turn(),
            Choice::LbGraceEnds => {
                if let Some(lb) = self.lb.as_mut() {
                    lb.end_grace();
                }
            }
            Choice::LeaveTimeout(w) => self.leave_timeout(w),
            Choice::RetryGaps(w) => self.with_node(w, |r, out| r.retry_gaps(out)),
            Choice::FromLb(key) => {
                let c = self.conns.get_mut(&key).expect("listed");
                let w = c.worker;
                if let Some(m) = c.from_lb.pop_front() {
                    self.worker_receive(w, m);
                }
            }
            Choice::ToLb(key) => {
                let c = self.conns.get_mut(&key).expect("listed");
                let w = c.worker;
                if let Some(m) = c.to_lb.pop_front() {
                    self.lb_receive(w, m);
                }
            }
            Choice::WorkerNotices(key) => self.worker_notices(key),
            Choice::LbNotices(key) => self.lb_notices(key),
            Choice::Redial(key) => self.redial_now(key),
            Choice::Up(key) => self.link_up(key),
            Choice::Fwd(key) => self.deliver(key, true),
            Choice::Back(key) => self.deliver(key, false),
            Choice::Pump(key) => self.pump(key),
            Choice::DyingFwd(i) => self.deliver_dying(i, true),
            Choice::DyingBack(i) => self.deliver_dying(i, false),
            Choice::DialerNotices(i) => self.dialer_notices(i),
            Choice::AcceptorNotices(i) => self.acceptor_notices(i),
        }
        self.end_step();
        true
    }

    fn end_step(&mut self) {
        self.reap();
        self.dying.retain(|d| !(d.dialer_done && d.acceptor_done));
        self.conns.retain(|_, c| c.lb_open || c.worker_open);
    }
}
