//! The cluster under test: one LB and a growing list of worker slots, each
//! a data directory and at most one live process on it.
//!
//! The LB starts on port 0 once; its ready line gives the ports it got, and
//! every restart asks for those same ports (the LB binds with
//! SO_REUSEADDR) and the same processed log. A worker slot keeps its data
//! directory for the whole run, so a restart comes back with the ID stored
//! there. Starting never waits: [`Cluster::poll`] picks up ready lines and
//! notices processes that exited without being told to.

use crate::proc::{field, tail, Proc};
use rrstore::msg::{Member, Status};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long the first LB may take to print its ready line.
const LB_START_TIMEOUT: Duration = Duration::from_secs(20);

pub struct WorkerSlot {
    /// `worker-N`: the data directory's and the log file's name.
    pub name: String,
    pub data_dir: PathBuf,
    /// The ID the LB gave it, from its first ready line.
    pub id: Option<u32>,
    /// The address its current process registered (from its ready line).
    pub addr: Option<String>,
    /// Its current process (`None` while it is down).
    pub proc: Option<Proc>,
    /// SIGSTOPped and not yet continued.
    pub stopped: bool,
    /// When its current process was started.
    pub started_at: Instant,
    pub starts: u32,
}

impl WorkerSlot {
    /// Running, not stopped, and registered since its last start.
    pub fn healthy(&mut self) -> bool {
        !self.stopped && self.proc.as_mut().is_some_and(|p| p.ready().is_some())
    }

    pub fn label(&self) -> String {
        match self.id {
            Some(id) => format!("worker {id} ({})", self.name),
            None => self.name.clone(),
        }
    }
}

/// Something [`Cluster::poll`] noticed.
pub enum Note {
    /// A worker process printed its ready line.
    Registered {
        slot: usize,
        id: u32,
        addr: String,
        /// How long after its start.
        after: Duration,
    },
    /// A worker registered under an ID that another live slot holds.
    DuplicateId {
        slot: usize,
        other: usize,
        id: u32,
    },
    /// A restarted worker registered under an ID other than its data dir's.
    IdChanged {
        slot: usize,
        was: u32,
        now: u32,
    },
    /// A process exited that the harness had not killed.
    WorkerExited {
        slot: usize,
        status: String,
        log_tail: String,
    },
    LbExited {
        status: String,
        log_tail: String,
    },
}

pub struct Cluster {
    exe: PathBuf,
    pub dir: PathBuf,
    lb: Option<Proc>,
    pub lb_starts: u32,
    /// The LB's client and control addresses, fixed after the first start.
    pub clients: String,
    pub control: String,
    lb_args: Vec<String>,
    worker_args: Vec<String>,
    pub workers: Vec<WorkerSlot>,
    /// The cluster secret of this run: children get it in their
    /// environment, never on the command line.
    pub secret: rrstore::auth::Secret,
}

impl Cluster {
    /// Starts the LB on free ports and waits for its ready line.
    pub fn start(
        exe: &Path,
        dir: &Path,
        lb_args: Vec<String>,
        worker_args: Vec<String>,
    ) -> Result<Cluster, String> {
        let mut c = Cluster {
            exe: exe.to_path_buf(),
            dir: dir.to_path_buf(),
            lb: None,
            lb_starts: 0,
            clients: "127.0.0.1:0".into(),
            control: "127.0.0.1:0".into(),
            lb_args,
            worker_args,
            workers: Vec::new(),
            secret: rrstore::auth::Secret::generate()?,
        };
        c.start_lb()
            .map_err(|e| format!("cannot start the LB: {e}"))?;
        let deadline = Instant::now() + LB_START_TIMEOUT;
        let line = loop {
            let Some(lb) = c.lb.as_mut() else {
                return Err("the LB vanished".into());
            };
            if let Some(line) = lb.ready() {
                break line.to_string();
            }
            if lb.exited().is_some() || Instant::now() >= deadline {
                return Err(format!(
                    "the LB did not start; lb.log ends:\n{}",
                    tail(&c.dir.join("lb.log"), 20)
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        match (field(&line, "clients"), field(&line, "control")) {
            (Some(clients), Some(control)) => {
                c.clients = clients.replace("0.0.0.0", "127.0.0.1");
                c.control = control;
                Ok(c)
            }
            _ => Err(format!("the LB's ready line makes no sense: {line:?}")),
        }
    }

    /// Starts an LB process on the remembered ports (does not wait).
    pub fn start_lb(&mut self) -> std::io::Result<()> {
        self.lb_starts += 1;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("lb")
            .args(["--listen", &self.clients, "--control", &self.control])
            .arg("--processed-log")
            .arg(self.dir.join("processed.log"))
            .args(&self.lb_args)
            .env(
                rrstore::auth::ENV_VAR,
                OsStr::from_bytes(self.secret.as_bytes()),
            );
        let marker = format!("LB start #{}", self.lb_starts);
        self.lb = Some(Proc::spawn(
            cmd,
            &self.dir.join("lb.log"),
            &marker,
            "listening",
        )?);
        Ok(())
    }

    /// The LB is running and has printed its ready line.
    pub fn lb_up(&mut self) -> bool {
        self.lb.as_mut().is_some_and(|p| p.ready().is_some())
    }

    pub fn lb_running(&self) -> bool {
        self.lb.is_some()
    }

    pub fn lb_pid(&self) -> Option<u32> {
        self.lb.as_ref().map(Proc::pid)
    }

    /// Kills the LB: SIGKILL, or SIGTERM (SIGKILL after 5 s). Returns how
    /// it went, for the fault log.
    pub fn kill_lb(&mut self, sigkill: bool) -> std::io::Result<String> {
        let Some(mut lb) = self.lb.take() else {
            return Ok("the LB was not running".into());
        };
        if sigkill {
            lb.kill()?;
            return Ok("SIGKILL".into());
        }
        let (status, clean) = lb.terminate(Duration::from_secs(5))?;
        Ok(if clean {
            format!("SIGTERM, exited: {status}")
        } else {
            "SIGTERM, still running after 5 s: SIGKILL".into()
        })
    }

    /// A new slot with a fresh data directory, started at once.
    pub fn add_worker(&mut self) -> std::io::Result<usize> {
        let name = format!("worker-{}", self.workers.len() + 1);
        self.workers.push(WorkerSlot {
            data_dir: self.dir.join(&name),
            name,
            id: None,
            addr: None,
            proc: None,
            stopped: false,
            started_at: Instant::now(),
            starts: 0,
        });
        let slot = self.workers.len() - 1;
        self.start_worker(slot)?;
        Ok(slot)
    }

    /// Starts a process on slot `slot`'s data directory (does not wait).
    pub fn start_worker(&mut self, slot: usize) -> std::io::Result<()> {
        let Some(w) = self.workers.get_mut(slot) else {
            return Err(std::io::Error::other(format!("no worker slot {slot}")));
        };
        w.starts += 1;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("worker")
            .args(["--lb", &self.control, "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&w.data_dir)
            .args(&self.worker_args)
            .env(
                rrstore::auth::ENV_VAR,
                OsStr::from_bytes(self.secret.as_bytes()),
            );
        let log = self.dir.join(format!("{}.log", w.name));
        let marker = format!("{} start #{}", w.name, w.starts);
        w.proc = Some(Proc::spawn(cmd, &log, &marker, "registered")?);
        w.addr = None;
        w.stopped = false;
        w.started_at = Instant::now();
        Ok(())
    }

    /// SIGKILLs slot `slot`'s process; the slot stays, down.
    pub fn kill_worker(&mut self, slot: usize) -> std::io::Result<()> {
        if let Some(w) = self.workers.get_mut(slot) {
            if let Some(mut p) = w.proc.take() {
                p.kill()?;
            }
            w.stopped = false;
        }
        Ok(())
    }

    /// SIGSTOP (`stop`) or SIGCONT (`!stop`) to slot `slot`'s process.
    pub fn pause_worker(&mut self, slot: usize, stop: bool) -> std::io::Result<()> {
        if let Some(w) = self.workers.get_mut(slot) {
            if let Some(p) = w.proc.as_mut() {
                p.signal(if stop { libc::SIGSTOP } else { libc::SIGCONT })?;
            }
            w.stopped = stop;
        }
        Ok(())
    }

    /// Picks up ready lines and unexpected exits.
    pub fn poll(&mut self) -> Vec<Note> {
        let mut notes = Vec::new();
        for (slot, w) in self.workers.iter_mut().enumerate() {
            let Some(p) = w.proc.as_mut() else { continue };
            if let Some(status) = p.exited() {
                w.proc = None;
                w.stopped = false;
                notes.push(Note::WorkerExited {
                    slot,
                    status: status.to_string(),
                    log_tail: tail(&self.dir.join(format!("{}.log", w.name)), 15),
                });
                continue;
            }
            if w.addr.is_some() {
                continue;
            }
            let Some(line) = p.ready() else { continue };
            let id = field(line, "id").and_then(|v| v.parse::<u32>().ok());
            let (Some(id), Some(addr)) = (id, field(line, "addr")) else {
                continue;
            };
            if let Some(was) = w.id.filter(|&was| was != id) {
                notes.push(Note::IdChanged { slot, was, now: id });
            }
            w.id = Some(id);
            w.addr = Some(addr.clone());
            let after = w.started_at.elapsed();
            notes.push(Note::Registered {
                slot,
                id,
                addr,
                after,
            });
        }
        // Two live slots under one ID: the LB handed out an ID in use.
        let fresh: Vec<usize> = notes
            .iter()
            .filter_map(|n| match n {
                Note::Registered { slot, .. } => Some(*slot),
                _ => None,
            })
            .collect();
        for slot in fresh {
            let id = self.workers[slot].id;
            for (other, o) in self.workers.iter().enumerate() {
                if other != slot && o.proc.is_some() && o.id == id {
                    if let Some(id) = id {
                        notes.push(Note::DuplicateId { slot, other, id });
                    }
                }
            }
        }
        if let Some(lb) = self.lb.as_mut() {
            if let Some(status) = lb.exited() {
                self.lb = None;
                notes.push(Note::LbExited {
                    status: status.to_string(),
                    log_tail: tail(&self.dir.join("lb.log"), 15),
                });
            }
        }
        notes
    }

    /// The LB's member table.
    pub fn members(&self) -> Result<Vec<Member>, String> {
        rrstore::client::members(&self.control, Some(&self.secret)).map_err(|e| e.to_string())
    }

    /// (ID, address) of every slot with a live process; `None` if one of
    /// them has not registered yet (call [`Cluster::poll`] first).
    pub fn live(&self) -> Option<Vec<(u32, String)>> {
        let mut out = Vec::new();
        for w in self.workers.iter().filter(|w| w.proc.is_some()) {
            out.push((w.id?, w.addr.clone()?));
        }
        Some(out)
    }

    /// Every slot has a running, registered, unstopped process, and all of
    /// them are active at the LB.
    pub fn settled(&mut self) -> bool {
        let all_up = self.workers.iter().all(|w| w.proc.is_some() && !w.stopped);
        all_up && self.all_active().unwrap_or(false)
    }

    /// Whether every live worker process (and there is one) is active at the
    /// LB: its ID is listed as active at the address that process registered.
    pub fn all_active(&mut self) -> Result<bool, String> {
        let Some(live) = self.live() else {
            return Ok(false);
        };
        if live.is_empty() || !self.lb_up() {
            return Ok(false);
        }
        let members = self.members()?;
        Ok(live.iter().all(|(id, addr)| {
            members
                .iter()
                .any(|m| m.id == *id && m.addr == *addr && m.status == Status::Active)
        }))
    }
}
