//! A real cluster inside this process, for tests and examples: an LB and N
//! workers, each its own event loop on its own thread (the loops are
//! self-contained, exactly as in the processes), on 127.0.0.1 ports chosen
//! by the kernel, with a fresh cluster secret and a temporary directory for
//! the processed log and the workers' data.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use rrstore::testing::{LocalCluster, Options};
//! use rrstore::{Client, ClientError, ErrorCode};
//!
//! let cluster = LocalCluster::start_with(Options {
//!     workers: 1,
//!     client_token: Some(b"let-me-in".to_vec()),
//!     ..Options::default()
//! })?;
//! let mut client = Client::connect(cluster.addr())?;
//! client.auth(b"let-me-in")?;
//! client.put(1, b"one")?;
//!
//! let mut stranger = Client::connect(cluster.addr())?;
//! assert!(matches!(
//!     stranger.get(1),
//!     Err(ClientError::Server { code: ErrorCode::Unauthorized, .. })
//! ));
//! let members = rrstore::client::members(cluster.control_addr(), Some(cluster.secret()))?;
//! assert_eq!(members.len(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Invariants
//! - [`LocalCluster::start_with`] returns only once every worker is active
//!   (in the round robin); workers register one after another, so their
//!   IDs are 1, 2, …
//! - Dropping a [`LocalCluster`] stops every worker, then the LB (workers
//!   first: a worker without its LB would try to re-register), joins every
//!   thread, then removes the directory. Nothing keeps running.
//!
//! Unlike the processes: workers use `--fsync never` and stop at once
//! rather than leave cleanly. Like them, workers print their ready line
//! (`registered id=…`) on stdout and log as they do, and the loops register
//! SIGTERM/SIGINT handlers (so a Ctrl-C reaches them rather than ending the
//! process).

use crate::auth::Secret;
use crate::client;
use crate::lb::{Lb, LbConfig};
use crate::log::FsyncPolicy;
use crate::msg::Status;
use crate::stop::Stopper;
use crate::wire;
use crate::worker::{Worker, WorkerConfig};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long the cluster may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// What to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// Workers (default 2).
    pub workers: usize,
    /// The LB's `--max-content` (default [`wire::DEFAULT_MAX_CONTENT`]).
    pub max_content: usize,
    /// The LB's client token (`--client-token-file`); `None`: no AUTH needed.
    pub client_token: Option<Vec<u8>>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            workers: 2,
            max_content: wire::DEFAULT_MAX_CONTENT,
            client_token: None,
        }
    }
}

/// One loop on its thread; the thread returns the loop's error as text.
struct Running {
    stopper: Stopper,
    thread: JoinHandle<Result<(), String>>,
}

impl Running {
    /// Spawns `f`, which builds a loop, hands its stopper over and runs it;
    /// returns once the stopper is here (or the loop failed to start).
    fn spawn<L: FnOnce() -> Result<(), String>>(
        name: String,
        f: impl FnOnce(mpsc::Sender<Stopper>) -> Result<L, String> + Send + 'static,
    ) -> io::Result<Running> {
        let (tx, rx) = mpsc::channel();
        let thread = thread::Builder::new().name(name).spawn(move || f(tx)?())?;
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(stopper) => Ok(Running { stopper, thread }),
            // No stopper will come: the thread has ended, joining is quick.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(io::Error::other(match thread.join() {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => "the loop ended before it started".into(),
                    Err(_) => "the loop's thread panicked".into(),
                }))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Should it start after all, it is stopped at once.
                thread::spawn(move || {
                    if let Ok(stopper) = rx.recv() {
                        stopper.stop();
                    }
                });
                Err(io::Error::other("the loop did not start in time"))
            }
        }
    }
}

/// An LB and its workers on threads of this process; see the module docs.
pub struct LocalCluster {
    addr: String,
    control: String,
    secret: Secret,
    lb: Option<Running>,
    workers: Vec<Running>,
    dir: TempDir,
}

impl LocalCluster {
    /// `workers` workers and the defaults of [`Options`].
    pub fn start(workers: usize) -> io::Result<LocalCluster> {
        LocalCluster::start_with(Options {
            workers,
            ..Options::default()
        })
    }

    pub fn start_with(options: Options) -> io::Result<LocalCluster> {
        let dir = TempDir::new()?;
        let secret = Secret::generate().map_err(io::Error::other)?;
        let client_token_file = match &options.client_token {
            Some(token) => {
                let path = dir.path().join("client-token");
                std::fs::write(&path, token)?;
                Some(path)
            }
            None => None,
        };
        let clients = listener()?;
        let control = listener()?;
        let (addr, control_addr) = (clients.local_addr()?, control.local_addr()?);
        let config = LbConfig {
            listen: addr,
            control: control_addr,
            processed_log: dir.path().join("processed.log"),
            max_content: options.max_content,
            max_inflight: 100_000,
            request_timeout: Duration::from_secs(10),
            worker_timeout: Duration::from_secs(1),
            ack_all: false,
            max_clients: 1_000,
            idle_timeout: Duration::from_secs(300),
            frame_timeout: Duration::from_secs(10),
            client_output_cap: 4 << 20,
            max_inflight_per_client: 4_096,
            secret: Some(secret.clone()),
            client_token_file,
            metrics: None,
            http: None,
        };
        let lb = Running::spawn("rrstore-lb".into(), move |tx| {
            let mut lb = Lb::with_listeners(config, clients, control).map_err(|e| e.to_string())?;
            let _ = tx.send(lb.stopper().map_err(|e| e.to_string())?);
            Ok(move || lb.run().map_err(|e| e.to_string()))
        })?;
        let mut cluster = LocalCluster {
            addr: addr.to_string(),
            control: control_addr.to_string(),
            secret,
            lb: Some(lb),
            workers: Vec::new(),
            dir,
        };
        for i in 1..=options.workers {
            cluster.add_worker(i)?;
        }
        cluster.wait_active(options.workers)?;
        Ok(cluster)
    }

    /// The LB's client address (protocol v1), for [`crate::Client::connect`].
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The LB's control address, for the admin calls in [`crate::client`].
    pub fn control_addr(&self) -> &str {
        &self.control
    }

    /// The cluster secret, for the admin calls.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// The temporary directory (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts worker number `n` and waits until it has registered.
    fn add_worker(&mut self, n: usize) -> io::Result<()> {
        let config = WorkerConfig {
            lb: self.control.clone(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            data_dir: self.dir.path().join(format!("worker-{n}")),
            id: None,
            fsync: FsyncPolicy::Never,
            fsync_interval: Duration::from_secs(1),
            max_content: wire::DEFAULT_MAX_CONTENT,
            connect_timeout: START_TIMEOUT,
            leave_timeout: Duration::from_secs(5),
            segment_bytes: crate::segments::DEFAULT_SEGMENT_BYTES,
            peer_buffer_bytes: 64 << 20,
            peer_flush: Duration::from_millis(1),
            replay_threads: 1,
            metrics: None,
            secret: Some(self.secret.clone()),
        };
        let worker = Running::spawn(format!("rrstore-worker-{n}"), move |tx| {
            let mut worker = Worker::start(config).map_err(|e| e.to_string())?;
            let _ = tx.send(worker.stopper());
            Ok(move || worker.run().map_err(|e| e.to_string()))
        })?;
        self.workers.push(worker);
        Ok(())
    }

    /// Polls the LB until `n` workers are active.
    fn wait_active(&self, n: usize) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let members = client::members(&self.control, Some(&self.secret))
                .map_err(|e| io::Error::other(e.to_string()))?;
            if members
                .iter()
                .filter(|m| m.status == Status::Active)
                .count()
                >= n
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::other(format!(
                    "{n} workers not active in time: {members:?}"
                )));
            }
            thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let workers = std::mem::take(&mut self.workers);
        for w in &workers {
            w.stopper.stop();
        }
        for w in workers {
            let _ = w.thread.join();
        }
        if let Some(lb) = self.lb.take() {
            lb.stopper.stop();
            let _ = lb.thread.join();
        }
        // `dir` is removed after this, when the fields drop.
    }
}

/// A bound, non-blocking loopback listener on a port the kernel picks.
fn listener() -> io::Result<mio::net::TcpListener> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    l.set_nonblocking(true)?;
    Ok(mio::net::TcpListener::from_std(l))
}

/// A fresh directory under the system's temporary one, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> io::Result<TempDir> {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "rrstore-local-{}-{}-{nanos}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path)?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
