//! Runs an LB and workers as child processes of this machine: the engine
//! of `rrstore cluster`, `rrstore demo` and the end-to-end tests.
//!
//! Each child prints one machine-readable line on stdout once it is up
//! (`listening clients=… control=…`, and ` http=…` with `--http`, from the
//! LB; `registered id=… addr=…` from a worker); everything else it says
//! goes to a log file in the cluster's directory. Children get their own
//! process group, so a Ctrl-C at the terminal reaches only this process,
//! which then stops the workers first (each deregisters and hands off
//! cleanly) and the LB last.
//! Dropping a [`Cluster`] kills whatever is still running.
//!
//! Every cluster gets a fresh secret (see `auth.rs`): children receive it in
//! the environment (`RRSTORE_SECRET`, not on the command line, where `ps`
//! would show it), it is written to `DIR/secret` (mode 0600) for admin
//! commands run by hand, and [`Cluster::secret`] hands it to in-process
//! admin calls.

use crate::auth::{self, Secret};
use crate::client;
use crate::msg::{Member, Status};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a child may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(20);

pub struct WorkerProc {
    pub child: Child,
    pub data_dir: PathBuf,
    pub addr: String,
}

pub struct Cluster {
    exe: PathBuf,
    dir: PathBuf,
    lb: Option<Child>,
    /// Client address (port 5059 by default).
    pub lb_addr: String,
    pub control_addr: String,
    /// The status page's address, if the LB was given `--http`.
    pub http_addr: Option<String>,
    pub workers: BTreeMap<u32, WorkerProc>,
    next_dir: u32,
    /// Extra arguments for every worker (e.g. `--fsync always`).
    pub worker_args: Vec<String>,
    lb_args: Vec<String>,
    /// How many LB processes were started (each logs to its own file).
    lb_starts: u32,
    secret: Secret,
}

/// The log of the LB's `start`th start in `dir` (1: `lb.log`).
pub fn lb_log_path(dir: &Path, start: u32) -> PathBuf {
    match start {
        1 => dir.join("lb.log"),
        n => dir.join(format!("lb-{n}.log")),
    }
}

/// Starts an LB; returns it with its client and control addresses, and
/// its status page's if it serves one.
fn spawn_lb(
    exe: &Path,
    dir: &Path,
    listen: &str,
    control: &str,
    args: &[String],
    start: u32,
    secret: &Secret,
) -> io::Result<(Child, String, String, Option<String>)> {
    let mut cmd = Command::new(exe);
    with_secret(&mut cmd, secret);
    cmd.arg("lb")
        .args(["--listen", listen, "--control", control])
        .arg("--processed-log")
        .arg(dir.join("processed.log"))
        .args(args);
    let (child, line) = spawn_ready(cmd, &lb_log_path(dir, start), "listening")?;
    let lb_addr = field(&line, "clients").ok_or_else(|| err(format!("bad ready line {line:?}")))?;
    let control_addr =
        field(&line, "control").ok_or_else(|| err(format!("bad ready line {line:?}")))?;
    Ok((child, lb_addr, control_addr, field(&line, "http")))
}

/// Hands `secret` to a child in its environment.
fn with_secret(cmd: &mut Command, secret: &Secret) {
    cmd.env(
        auth::ENV_VAR,
        std::ffi::OsStr::from_bytes(secret.as_bytes()),
    );
}

fn err(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// Spawns `cmd` with stdout piped and stderr to `log`, and waits for the
/// first stdout line that starts with `prefix`.
fn spawn_ready(mut cmd: Command, log: &Path, prefix: &'static str) -> io::Result<(Child, String)> {
    cmd.stdout(Stdio::piped())
        .stderr(File::create(log)?)
        .stdin(Stdio::null())
        .process_group(0);
    let mut child = cmd.spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| err("no stdout".into()))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if line.starts_with(prefix) {
                let _ = tx.send(line);
            }
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(line) => Ok((child, line)),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            Err(err(format!("child did not start; its log says:\n{tail}")))
        }
    }
}

/// `key=value` from a ready line.
fn field(line: &str, key: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
}

pub fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) takes any pid and signal number and touches no memory
    // of ours; the pid is our own child's, which we have not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// Waits for `child` to exit, killing it past `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Cluster {
    /// Starts the LB on `listen` / `control` (port 0 picks free ports).
    pub fn start(
        exe: &Path,
        dir: &Path,
        listen: &str,
        control: &str,
        lb_args: &[&str],
    ) -> io::Result<Cluster> {
        std::fs::create_dir_all(dir)?;
        let secret = Secret::generate().map_err(err)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(dir.join("secret"))?;
        io::Write::write_all(&mut f, secret.as_bytes())?;
        let lb_args: Vec<String> = lb_args.iter().map(|a| a.to_string()).collect();
        let (child, lb_addr, control_addr, http_addr) =
            spawn_lb(exe, dir, listen, control, &lb_args, 1, &secret)?;
        Ok(Cluster {
            exe: exe.to_path_buf(),
            dir: dir.to_path_buf(),
            lb: Some(child),
            lb_addr: lb_addr.replace("0.0.0.0", "127.0.0.1"),
            control_addr,
            http_addr: http_addr.map(|a| a.replace("0.0.0.0", "127.0.0.1")),
            workers: BTreeMap::new(),
            next_dir: 1,
            worker_args: Vec::new(),
            lb_args,
            lb_starts: 1,
            secret,
        })
    }

    /// The cluster's secret (for admin calls: `members`, `verify`, `dump`, `stats`).
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// Where the secret is written: `--secret-file` for admin commands.
    pub fn secret_file(&self) -> PathBuf {
        self.dir.join("secret")
    }

    /// The LB's process id, while it runs.
    pub fn lb_pid(&self) -> Option<u32> {
        self.lb.as_ref().map(Child::id)
    }

    /// Sends `sig` to the LB process (e.g. SIGSTOP and SIGCONT).
    pub fn signal_lb(&self, sig: i32) {
        if let Some(lb) = &self.lb {
            signal(lb, sig);
        }
    }

    /// Kills the LB (SIGKILL: a crash).
    pub fn kill_lb(&mut self) -> io::Result<()> {
        if let Some(mut lb) = self.lb.take() {
            lb.kill()?;
            lb.wait()?;
        }
        Ok(())
    }

    /// Kills the LB (SIGKILL: a crash) and starts a new one on the same
    /// ports; the workers re-register with it on their own.
    pub fn restart_lb(&mut self) -> io::Result<()> {
        self.kill_lb()?;
        self.lb_starts += 1;
        let (child, _, _, _) = spawn_lb(
            &self.exe,
            &self.dir,
            &self.lb_addr,
            &self.control_addr,
            &self.lb_args,
            self.lb_starts,
            &self.secret,
        )?;
        self.lb = Some(child);
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn processed_log(&self) -> PathBuf {
        self.dir.join("processed.log")
    }

    /// Starts a worker with a fresh data directory; returns its ID.
    pub fn add_worker(&mut self) -> io::Result<u32> {
        let data_dir = self.dir.join(format!("worker-{}", self.next_dir));
        self.next_dir += 1;
        self.add_worker_at(&data_dir)
    }

    /// Starts a worker on `data_dir` (a restart if it has been used before).
    pub fn add_worker_at(&mut self, data_dir: &Path) -> io::Result<u32> {
        let mut cmd = Command::new(&self.exe);
        with_secret(&mut cmd, &self.secret);
        cmd.arg("worker")
            .args(["--lb", &self.control_addr, "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(&self.worker_args);
        let name = data_dir
            .file_name()
            .map_or("worker".into(), |n| n.to_string_lossy().into_owned());
        let (mut child, line) =
            spawn_ready(cmd, &self.dir.join(format!("{name}.log")), "registered")?;
        let id = match field(&line, "id").and_then(|v| v.parse::<u32>().ok()) {
            // Two processes under one ID is a bug to report, and the older
            // one must stay ours to stop: refuse the newcomer.
            Some(id) if self.workers.contains_key(&id) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(err(format!(
                    "a new worker registered as {id}, the ID of another"
                )));
            }
            Some(id) => id,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(err(format!("bad ready line {line:?}")));
            }
        };
        let addr = field(&line, "addr").unwrap_or_default();
        self.workers.insert(
            id,
            WorkerProc {
                child,
                data_dir: data_dir.to_path_buf(),
                addr,
            },
        );
        Ok(id)
    }

    pub fn members(&self) -> io::Result<Vec<Member>> {
        client::members(&self.control_addr, Some(&self.secret)).map_err(|e| err(e.to_string()))
    }

    /// Polls the LB until `ids` are all active, or fails at the deadline.
    pub fn wait_active(&self, ids: &[u32], timeout: Duration) -> io::Result<Vec<Member>> {
        let deadline = Instant::now() + timeout;
        loop {
            let members = self.members()?;
            let all = ids.iter().all(|id| {
                members
                    .iter()
                    .any(|m| m.id == *id && m.status == Status::Active)
            });
            if all {
                return Ok(members);
            }
            if Instant::now() >= deadline {
                return Err(err(format!(
                    "workers {ids:?} not all active in time: {members:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM to worker `id` and wait for it to exit (killed past the timeout).
    pub fn stop_worker(&mut self, id: u32, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let Some(mut w) = self.workers.remove(&id) else {
            return Err(err(format!("no worker {id}")));
        };
        signal(&w.child, libc::SIGTERM);
        wait_timeout(&mut w.child, timeout)
    }

    /// SIGKILL to worker `id` (a crash).
    pub fn kill_worker(&mut self, id: u32) -> io::Result<WorkerProc> {
        let Some(mut w) = self.workers.remove(&id) else {
            return Err(err(format!("no worker {id}")));
        };
        w.child.kill()?;
        w.child.wait()?;
        Ok(w)
    }

    /// Stops every worker (cleanly, in parallel), then the LB.
    pub fn shutdown(&mut self, timeout: Duration) -> Vec<(u32, Option<ExitStatus>)> {
        for w in self.workers.values() {
            signal(&w.child, libc::SIGTERM);
        }
        let mut out = Vec::new();
        for (id, mut w) in std::mem::take(&mut self.workers) {
            out.push((id, wait_timeout(&mut w.child, timeout).ok().flatten()));
        }
        if let Some(mut lb) = self.lb.take() {
            signal(&lb, libc::SIGTERM);
            let _ = wait_timeout(&mut lb, timeout);
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for w in self.workers.values_mut() {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
        if let Some(lb) = self.lb.as_mut() {
            let _ = lb.kill();
            let _ = lb.wait();
        }
    }
}
