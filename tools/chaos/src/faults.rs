//! The nemesis: injects one fault every `--every` seconds, chosen with the
//! seeded RNG among the selected kinds that are possible right now (each
//! kind once per round, in a shuffled order), and heals each one after a
//! random short time.
//!
//! - `kill`: SIGKILL a worker, restart it on its data directory 0.5-1 s later.
//! - `stop`: SIGSTOP a worker, SIGCONT it 1-3 s later.
//! - `add`: start a worker on a fresh data directory (up to `--max-workers`).
//! - `lb`: SIGKILL or SIGTERM the LB, restart it on the same ports and
//!   processed log 0.2-1 s later.
//!
//! A worker is only hit if it is running, registered, not already faulted,
//! and some other healthy worker was active at the LB's last look, so at
//! least one worker is untouched at any time. A process that exits without
//! being told to is a crash: logged with its log's tail, counted (it fails
//! the run) and restarted so the run can go on (a worker slot that crashes
//! three times is left down).

use crate::cluster::{Cluster, Note};
use crate::kind::Deck;
pub use crate::kind::Kind;
use crate::rng::Rng;
use rrstore::msg::Status;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A worker slot whose process exits on its own this often is left down.
const MAX_SLOT_CRASHES: u32 = 3;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Heal {
    // Declared in the order heal_all runs them: the LB first, so that
    // restarted workers find it.
    RestartLb,
    Cont(usize),
    Restart(usize),
}

/// One line of the fault log.
pub struct Event {
    /// Seconds since the start of the run.
    pub at: f64,
    pub what: String,
}

pub struct Nemesis {
    rng: Rng,
    kinds: Vec<Kind>,
    deck: Deck,
    every: Duration,
    next_at: Instant,
    pending: Vec<(Instant, Heal)>,
    max_workers: usize,
    /// Inject `add` only while the cluster is settled (see
    /// [`Cluster::settled`]).
    pub add_when_settled: bool,
    t0: Instant,
    /// IDs active at the LB when we last asked.
    active: Vec<u32>,
    lb_exits: u32,
    /// Crashes per worker slot; past MAX_SLOT_CRASHES it stays down.
    slot_crashes: BTreeMap<usize, u32>,
    /// Faults injected, by kind name.
    pub counts: BTreeMap<&'static str, u64>,
    pub events: Vec<Event>,
    /// When the last fault was injected.
    pub last_fault: Option<Instant>,
    /// Processes that exited on their own, and other things that must not
    /// happen (a worker back under another ID).
    pub crashes: Vec<String>,
}

impl Nemesis {
    pub fn new(
        seed: u64,
        kinds: Vec<Kind>,
        every: Duration,
        max_workers: usize,
        t0: Instant,
    ) -> Nemesis {
        Nemesis {
            rng: Rng::new(seed),
            deck: Deck::new(kinds.clone()),
            kinds,
            every,
            next_at: Instant::now() + every,
            pending: Vec::new(),
            max_workers,
            add_when_settled: false,
            t0,
            active: Vec::new(),
            lb_exits: 0,
            slot_crashes: BTreeMap::new(),
            counts: BTreeMap::new(),
            events: Vec::new(),
            last_fault: None,
            crashes: Vec::new(),
        }
    }

    /// Prints a timestamped line and keeps it for the summary.
    pub fn log(&mut self, what: String) {
        let at = self.t0.elapsed().as_secs_f64();
        println!("[{at:>8.3}s] {what}");
        self.events.push(Event { at, what });
    }

    /// The first fault comes one interval from now.
    pub fn start_faults(&mut self) {
        self.next_at = Instant::now() + self.every;
    }

    /// When [`Nemesis::step`] next has something to do (it also wants to
    /// be called often to notice ready lines and exits).
    pub fn next_wake(&self) -> Instant {
        let heal = self.pending.iter().map(|(at, _)| *at).min();
        heal.map_or(self.next_at, |h| h.min(self.next_at))
    }

    /// Handles what the cluster reports, runs due heals, and injects a
    /// fault if one is due. An error is a harness failure.
    pub fn step(&mut self, cluster: &mut Cluster, inject: bool) -> Result<(), String> {
        self.notice(cluster)?;
        let now = Instant::now();
        let mut due: Vec<Heal> = Vec::new();
        self.pending.retain(|(at, h)| {
            let is_due = *at <= now;
            if is_due {
                due.push(*h);
            }
            !is_due
        });
        due.sort_unstable();
        for h in due {
            self.heal(cluster, h)?;
        }
        if inject && now >= self.next_at {
            self.next_at = (self.next_at + self.every).max(now + self.every / 2);
            self.inject(cluster)?;
        }
        Ok(())
    }

    /// Heals everything at once (the end of the run), then restarts any
    /// process that is still down.
    pub fn heal_all(&mut self, cluster: &mut Cluster) -> Result<(), String> {
        self.notice(cluster)?;
        let mut all: Vec<Heal> = self.pending.drain(..).map(|(_, h)| h).collect();
        all.sort_unstable();
        for h in all {
            self.heal(cluster, h)?;
        }
        if !cluster.lb_running() {
            self.heal(cluster, Heal::RestartLb)?;
        }
        for slot in 0..cluster.workers.len() {
            if cluster.workers[slot].stopped {
                self.heal(cluster, Heal::Cont(slot))?;
            }
            let given_up = self.slot_crashes.get(&slot) >= Some(&MAX_SLOT_CRASHES);
            if cluster.workers[slot].proc.is_none() && !given_up {
                self.heal(cluster, Heal::Restart(slot))?;
            }
        }
        Ok(())
    }

    fn notice(&mut self, cluster: &mut Cluster) -> Result<(), String> {
        for note in cluster.poll() {
            match note {
                Note::DuplicateId { slot, other, id } => {
                    let what = format!(
                        "{} registered as worker {id}, an ID {} already holds (both running)",
                        cluster.workers[slot].name, cluster.workers[other].name
                    );
                    self.log(format!("SUSPICIOUS: {what}"));
                    self.crashes.push(what);
                }
                Note::Registered {
                    slot,
                    id,
                    addr,
                    after,
                } => {
                    let name = &cluster.workers[slot].name;
                    let after = after.as_secs_f64();
                    self.log(format!(
                        "{name} registered as worker {id} at {addr}, {after:.2} s after its start"
                    ));
                }
                Note::IdChanged { slot, was, now } => {
                    let what = format!(
                        "{} came back as worker {now}, but its data dir held worker {was}",
                        cluster.workers[slot].name
                    );
                    self.log(format!("SUSPICIOUS: {what}"));
                    self.crashes.push(what);
                }
                Note::WorkerExited {
                    slot,
                    status,
                    log_tail,
                } => {
                    let what = format!(
                        "{} exited on its own ({status}); its log ends:\n{log_tail}",
                        cluster.workers[slot].label()
                    );
                    self.log(format!("CRASH: {what}"));
                    self.crashes.push(what);
                    self.pending.retain(|(_, h)| *h != Heal::Cont(slot));
                    let n = {
                        let n = self.slot_crashes.entry(slot).or_default();
                        *n += 1;
                        *n
                    };
                    if n < MAX_SLOT_CRASHES {
                        let at = Instant::now() + Duration::from_secs(1);
                        self.pending.push((at, Heal::Restart(slot)));
                    } else {
                        let name = cluster.workers[slot].name.clone();
                        self.log(format!("{name} crashed {n} times; leaving it down"));
                    }
                }
                Note::LbExited { status, log_tail } => {
                    self.lb_exits += 1;
                    if self.lb_exits > 10 {
                        return Err(format!(
                            "the LB keeps exiting ({status}); lb.log ends:\n{log_tail}"
                        ));
                    }
                    let what =
                        format!("the LB exited on its own ({status}); lb.log ends:\n{log_tail}");
                    self.log(format!("CRASH: {what}"));
                    self.crashes.push(what);
                    self.pending
                        .push((Instant::now() + Duration::from_millis(500), Heal::RestartLb));
                }
            }
        }
        Ok(())
    }

    fn heal(&mut self, cluster: &mut Cluster, h: Heal) -> Result<(), String> {
        match h {
            Heal::RestartLb => {
                if cluster.lb_running() {
                    return Ok(());
                }
                cluster
                    .start_lb()
                    .map_err(|e| format!("cannot restart the LB: {e}"))?;
                let pid = cluster.lb_pid().unwrap_or(0);
                self.log(format!(
                    "restart LB on {} / {} (pid {pid})",
                    cluster.clients, cluster.control
                ));
            }
            Heal::Cont(slot) => {
                cluster
                    .pause_worker(slot, false)
                    .map_err(|e| format!("SIGCONT failed: {e}"))?;
                self.log(format!("SIGCONT {}", cluster.workers[slot].label()));
            }
            Heal::Restart(slot) => {
                if cluster.workers[slot].proc.is_some() {
                    return Ok(());
                }
                cluster
                    .start_worker(slot)
                    .map_err(|e| format!("cannot restart a worker: {e}"))?;
                let w = &cluster.workers[slot];
                let pid = w.proc.as_ref().map_or(0, |p| p.pid());
                self.log(format!("restart {} on its data dir (pid {pid})", w.label()));
            }
        }
        Ok(())
    }

    /// Slots that may be killed or stopped now.
    fn targets(&mut self, cluster: &mut Cluster) -> Vec<usize> {
        if cluster.lb_up() {
            if let Ok(members) = cluster.members() {
                self.active = members
                    .iter()
                    .filter(|m| m.status == Status::Active)
                    .map(|m| m.id)
                    .collect();
            }
        }
        let healthy: Vec<usize> = (0..cluster.workers.len())
            .filter(|&i| cluster.workers[i].healthy())
            .filter(|&i| {
                !self
                    .pending
                    .iter()
                    .any(|(_, h)| matches!(h, Heal::Cont(s) | Heal::Restart(s) if *s == i))
            })
            .collect();
        healthy
            .iter()
            .copied()
            .filter(|&i| {
                healthy.iter().any(|&j| {
                    j != i
                        && cluster.workers[j]
                            .id
                            .is_some_and(|id| self.active.contains(&id))
                })
            })
            .collect()
    }

    fn inject(&mut self, cluster: &mut Cluster) -> Result<(), String> {
        let targets = self.targets(cluster);
        let lb_pending = self.pending.iter().any(|(_, h)| *h == Heal::RestartLb);
        let possible: Vec<Kind> = self
            .kinds
            .iter()
            .copied()
            .filter(|k| match k {
                Kind::Kill | Kind::Stop => !targets.is_empty(),
                Kind::Add => {
                    cluster.workers.len() < self.max_workers
                        && (!self.add_when_settled || cluster.settled())
                }
                Kind::Lb => cluster.lb_running() && !lb_pending,
            })
            .collect();
        let add_exhausted = cluster.workers.len() >= self.max_workers;
        let Some(kind) = self.deck.draw(&mut self.rng, &possible, add_exhausted) else {
            if !self.kinds.is_empty() {
                *self.counts.entry("skipped").or_default() += 1;
                self.log("no fault possible right now; skipped".into());
            }
            return Ok(());
        };
        let now = Instant::now();
        match kind {
            Kind::Kill | Kind::Stop => {
                let Some(slot) = self.rng.pick(&targets) else {
                    return Ok(());
                };
                let pid = cluster.workers[slot].proc.as_ref().map_or(0, |p| p.pid());
                let label = cluster.workers[slot].label();
                if kind == Kind::Kill {
                    let down = self.rng.millis(500, 1000);
                    cluster
                        .kill_worker(slot)
                        .map_err(|e| format!("kill failed: {e}"))?;
                    self.pending.push((now + down, Heal::Restart(slot)));
                    self.log(format!(
                        "FAULT kill -9 {label} (pid {pid}); restart in {:.2} s",
                        down.as_secs_f64()
                    ));
                } else {
                    let down = self.rng.millis(1000, 3000);
                    cluster
                        .pause_worker(slot, true)
                        .map_err(|e| format!("SIGSTOP failed: {e}"))?;
                    self.pending.push((now + down, Heal::Cont(slot)));
                    self.log(format!(
                        "FAULT SIGSTOP {label} (pid {pid}); SIGCONT in {:.2} s",
                        down.as_secs_f64()
                    ));
                }
            }
            Kind::Add => {
                let slot = cluster
                    .add_worker()
                    .map_err(|e| format!("cannot start a worker: {e}"))?;
                let w = &cluster.workers[slot];
                let pid = w.proc.as_ref().map_or(0, |p| p.pid());
                self.log(format!("FAULT add {} (pid {pid}, fresh data dir)", w.name));
            }
            Kind::Lb => {
                let sigkill = self.rng.coin();
                let down = self.rng.millis(200, 1000);
                let pid = cluster.lb_pid().unwrap_or(0);
                let how = cluster
                    .kill_lb(sigkill)
                    .map_err(|e| format!("killing the LB failed: {e}"))?;
                self.pending.push((Instant::now() + down, Heal::RestartLb));
                self.log(format!(
                    "FAULT LB (pid {pid}) {how}; restart in {:.2} s",
                    down.as_secs_f64()
                ));
            }
        }
        *self.counts.entry(kind.name()).or_default() += 1;
        self.last_fault = Some(now);
        Ok(())
    }
}
