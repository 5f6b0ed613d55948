//! The `rrstore` command line. Exit codes for every command: 0 success,
//! 1 not found or diverged, 2 error.

use clap::{Parser, Subcommand};
use rrstore::auth::{self, Secret};
use rrstore::client::{hex, Client};
use rrstore::cluster::Cluster;
use rrstore::log::FsyncPolicy;
use rrstore::{admin, demo, lb, wire, worker};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The rest of `rrstore --help`: how the pieces fit, in manual-page form.
const MANUAL: &str = "\
Every command also takes --config FILE: a TOML file with a table per command
([lb], [worker], ...) whose keys are flag names; top-level keys apply to every
command that has the flag. Flags typed on the command line override the file.

A CLUSTER is one LB and any number of workers. Clients send records {id,
content} to the LB (port 5059, client protocol v1: docs/PROTOCOL.md); the LB
hands each request to the next active worker, round robin; that worker logs
the record, sends it to every other worker and confirms; the LB logs the
confirmation (--processed-log) and answers. Workers register at run time on
the LB's control port; a newcomer catches up every record before it takes
requests. Nodes authenticate each other with a shared secret.

EXAMPLES
  Everything on one machine, narrated:   rrstore demo
  Three hosts (see docs/GUIDE.md):
    rrstore keygen > /etc/rrstore/secret            (copy to every host)
    rrstore lb --control 10.0.0.1:5060 --secret-file /etc/rrstore/secret
    rrstore worker --lb 10.0.0.1:5060 --listen 10.0.0.2:7000 \\
        --data-dir /var/lib/rrstore --secret-file /etc/rrstore/secret
  Use it (members, verify, dump and stats need the secret as well):
    rrstore put --lb 10.0.0.1:5059 42 hello     rrstore get --lb 10.0.0.1:5059 42
    rrstore members --control 10.0.0.1:5060     rrstore verify --control 10.0.0.1:5060

ENVIRONMENT
  RRSTORE_SECRET  the cluster secret, when --secret-file is not given
  RUST_LOG        daemon log filter on stderr: info (default), warn, or per
                  module, e.g. info,rrstore::worker::links=warn

EXIT STATUS
  0 success; 1 not found (get) or diverged (verify); 2 any error.

SEE ALSO
  README.md, docs/GUIDE.md (operations), docs/PROTOCOL.md, docs/SECURITY.md,
  docs/RELIABILITY.md, docs/ARCHITECTURE.md";

#[derive(Parser)]
#[command(
    name = "rrstore",
    version,
    about = "A load-balanced, fully replicated record store",
    after_help = "Every command also takes --config FILE: a TOML file with a table per command ([lb], [worker], ...) whose keys are flag names; flags typed on the command line override it. `rrstore --help` (long) is the manual.",
    after_long_help = MANUAL,
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// Where the cluster secret comes from (see docs/SECURITY.md).
#[derive(clap::Args)]
struct SecretArgs {
    /// File holding the cluster secret: its bytes with surrounding
    /// whitespace trimmed, at least 32 (`rrstore keygen > FILE`). Default:
    /// the environment variable RRSTORE_SECRET.
    #[arg(long, value_name = "PATH")]
    secret_file: Option<PathBuf>,
    /// No cluster authentication (every node and tool must then run with
    /// --insecure): anyone who reaches the ports can join or read.
    #[arg(long, conflicts_with = "secret_file")]
    insecure: bool,
}

impl SecretArgs {
    /// The secret, `None` under --insecure, or why there is none.
    fn load(&self, who: &str) -> Result<Option<Secret>, String> {
        if self.insecure {
            return Ok(None);
        }
        if let Some(path) = &self.secret_file {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o007 != 0 {
                    eprintln!(
                        "rrstore {who}: warning: the secret file {} can be read by every user (chmod o-rwx it)",
                        path.display()
                    );
                }
            }
        }
        Secret::load(self.secret_file.as_deref()).map(Some)
    }
}

/// `rrstore lb --ack`: when a PUT is confirmed.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AckMode {
    Local,
    All,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the load balancer.
    ///
    /// Listens for clients on --listen and for workers and admin tools on
    /// --control. Spreads requests round robin over the active workers, one
    /// request at a time; declares a worker that stops heartbeating dead and
    /// re-dispatches its unconfirmed requests; writes one line per confirmed
    /// PUT to --processed-log. Prints `listening clients=ADDR control=ADDR`
    /// on stdout once both ports are bound. SIGTERM or Ctrl-C stops it.
    Lb {
        /// Where clients connect (protocol v1).
        #[arg(long, default_value = "0.0.0.0:5059")]
        listen: SocketAddr,
        /// Where workers register and admin commands connect.
        #[arg(long, default_value = "127.0.0.1:5060")]
        control: SocketAddr,
        /// One line per confirmed record: time, id, worker, version.
        #[arg(long, default_value = "rrstore-processed.log")]
        processed_log: PathBuf,
        /// Largest PUT content in bytes.
        #[arg(long, default_value_t = wire::DEFAULT_MAX_CONTENT)]
        max_content: usize,
        /// Requests in flight before new ones are answered BUSY.
        #[arg(long, default_value_t = 100_000)]
        max_inflight: usize,
        /// A request not confirmed within this many ms is answered TIMEOUT.
        #[arg(long, default_value_t = 10_000)]
        request_timeout_ms: u64,
        /// A worker silent this many ms (it sends a heartbeat every 200 ms)
        /// is declared dead; its unconfirmed requests go to other workers.
        #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(400..))]
        worker_timeout_ms: u64,
        /// When a PUT is confirmed: `local`, once the worker that took it
        /// has logged it (its peers have it queued, sent within the
        /// worker's --peer-flush-ms); `all`, once every
        /// active worker has applied it, so it survives the permanent loss
        /// of any one worker.
        #[arg(long, value_enum, default_value_t = AckMode::Local)]
        ack: AckMode,
        /// Client connections at once; accepting resumes below 90% of it.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
        max_clients: u64,
        /// A client with nothing in flight that sends nothing for this many
        /// seconds is disconnected.
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
        idle_timeout_secs: u64,
        /// A frame must be complete this many seconds after its first byte
        /// (slowloris), else ERROR TIMEOUT with tag 0 and the LB closes.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        frame_timeout_secs: u64,
        /// Stop reading a client whose unread responses pass this many bytes.
        /// Past 16 times this, the client is disconnected.
        #[arg(long, default_value_t = 4 << 20)]
        client_output_cap: usize,
        /// Stop reading a client with this many requests in flight (resume
        /// below half), so that one client cannot take all of --max-inflight.
        #[arg(long, default_value_t = 4_096, value_parser = clap::value_parser!(u32).range(1..))]
        max_inflight_per_client: u32,
        /// Clients must first AUTH (op 0x04) with the token in this file
        /// (its bytes, whitespace trimmed); others get UNAUTHORIZED.
        #[arg(long)]
        client_token_file: Option<PathBuf>,
        /// Serve /metrics (Prometheus text format) on this address, e.g.
        /// 127.0.0.1:9100 (port 0: any free port, printed on stderr).
        #[arg(long)]
        metrics: Option<SocketAddr>,
        /// Serve a live status page on this address, e.g. 127.0.0.1:8080:
        /// `/` (HTML) and `/status.json`. No authentication: keep it on a
        /// trusted network. The same address as --metrics serves both.
        #[arg(long)]
        http: Option<SocketAddr>,
        #[command(flatten)]
        secret: SecretArgs,
    },
    /// Run a worker that registers with the LB.
    ///
    /// Replays its log from --data-dir, registers with the LB (under the ID
    /// kept in the data dir, else a new one), links to every other worker,
    /// catches up what it lacks, and only then takes requests. Prints
    /// `registered id=ID addr=ADDR` on stdout once registered. SIGTERM or
    /// Ctrl-C makes it leave cleanly: it deregisters, waits until its peers
    /// hold its records (at most --leave-timeout-secs) and exits; a second
    /// signal exits at once.
    Worker {
        /// The LB's control address.
        #[arg(long)]
        lb: String,
        /// Where peers and admin tools reach this worker (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// The address to register, when --listen is a wildcard like 0.0.0.0.
        #[arg(long)]
        advertise: Option<String>,
        /// Holds the worker's ID, its lock and its log.
        #[arg(long, default_value = "./rrstore-worker")]
        data_dir: PathBuf,
        /// Worker ID; by default the one in the data dir, or one the LB assigns.
        #[arg(long)]
        id: Option<u32>,
        /// When the log is fdatasync'ed.
        #[arg(long, value_enum, default_value_t = FsyncPolicy::Interval)]
        fsync: FsyncPolicy,
        /// The interval for --fsync interval.
        #[arg(long, default_value_t = 1000)]
        fsync_interval_ms: u64,
        /// Largest content accepted from the LB or peers.
        #[arg(long, default_value_t = wire::DEFAULT_MAX_CONTENT)]
        max_content: usize,
        /// How long to keep trying to reach the LB at start-up.
        #[arg(long, default_value_t = 30)]
        connect_timeout_secs: u64,
        /// How long a leaving worker waits for its peers' acknowledgements.
        #[arg(long, default_value_t = 30)]
        leave_timeout_secs: u64,
        /// The log rolls to a new segment past this size; sealed segments
        /// are compacted in the background (live records only).
        #[arg(long, default_value_t = rrstore::segments::DEFAULT_SEGMENT_BYTES)]
        segment_bytes: u64,
        /// A peer with more than this many bytes of our output unread is
        /// disconnected, and catches up when the link is re-opened.
        #[arg(long, default_value_t = 64 << 20)]
        peer_buffer_bytes: usize,
        /// Under `--ack local`, send records to peers at most once per this
        /// many ms (0: every loop turn), gathering what arrives meanwhile;
        /// 64 KiB queued for a peer goes at once. Fewer, larger sends cost
        /// the peers less; a peer has a record up to this much later.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=1000))]
        peer_flush_ms: u64,
        /// Threads that rebuild the store from the log at start (the store
        /// is split into as many shards). Default: the cores, at most 4.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
        replay_threads: Option<u16>,
        /// Serve /metrics (Prometheus text format) on this address (port 0:
        /// any free port, printed on stderr).
        #[arg(long)]
        metrics: Option<SocketAddr>,
        #[command(flatten)]
        secret: SecretArgs,
    },
    /// Store a record; prints `stored id=ID worker=W`.
    Put {
        #[arg(long, default_value = "127.0.0.1:5059")]
        lb: String,
        /// The client token of an LB run with --client-token-file (a file,
        /// whitespace trimmed), sent in AUTH first.
        #[arg(long, value_name = "PATH")]
        client_token_file: Option<PathBuf>,
        id: u64,
        content: String,
    },
    /// Print a record's content (raw, no newline added).
    Get {
        #[arg(long, default_value = "127.0.0.1:5059")]
        lb: String,
        /// The client token of an LB run with --client-token-file (a file,
        /// whitespace trimmed), sent in AUTH first.
        #[arg(long, value_name = "PATH")]
        client_token_file: Option<PathBuf>,
        id: u64,
    },
    /// The LB's workers: ID, address, status, record count.
    Members {
        #[arg(long, default_value = "127.0.0.1:5060")]
        control: String,
        #[command(flatten)]
        secret: SecretArgs,
    },
    /// Compare every active worker's digest; `identical` or `DIVERGED`.
    Verify {
        #[arg(long, default_value = "127.0.0.1:5060")]
        control: String,
        /// Retry until identical or this many seconds have passed.
        #[arg(long)]
        wait: Option<f64>,
        #[command(flatten)]
        secret: SecretArgs,
    },
    /// One worker's records as `ID<TAB>CONTENT_HEX`, ascending by ID.
    Dump {
        #[arg(long, default_value = "127.0.0.1:5060")]
        control: String,
        #[arg(long)]
        worker: u32,
        #[command(flatten)]
        secret: SecretArgs,
    },
    /// The LB's counters and request latency percentiles.
    Stats {
        #[arg(long, default_value = "127.0.0.1:5060")]
        control: String,
        #[command(flatten)]
        secret: SecretArgs,
    },
    /// Print a new cluster secret: 32 random bytes as 64 hex characters.
    Keygen,
    /// Run the LB and N workers here, in the foreground, until Ctrl-C.
    Cluster {
        /// Number of workers (default: random in 2..=5).
        #[arg(long)]
        workers: Option<usize>,
        #[arg(long, default_value = "0.0.0.0:5059")]
        listen: String,
        #[arg(long, default_value = "127.0.0.1:5060")]
        control: String,
        /// Data directories and logs (default: ./rrstore-cluster).
        #[arg(long, default_value = "rrstore-cluster")]
        dir: PathBuf,
        /// The LB serves its status page here (`lb --http`).
        #[arg(long)]
        http: Option<String>,
    },
    /// Narrate the whole flow with real processes, ending with verification.
    Demo {
        /// Number of workers (default: random in 2..=5).
        #[arg(long)]
        workers: Option<usize>,
        #[arg(long, default_value = "127.0.0.1:5059")]
        listen: String,
        #[arg(long, default_value = "127.0.0.1:5060")]
        control: String,
        /// The LB serves its status page here while the demo runs.
        #[arg(long)]
        http: Option<String>,
    },
}

fn main() -> ExitCode {
    let has_flag = |command: &str, name: &str| {
        use clap::CommandFactory;
        Cli::command()
            .find_subcommand(command)
            .is_some_and(|c| c.get_arguments().any(|a| a.get_long() == Some(name)))
    };
    let args = match rrstore::config::expand(std::env::args_os().collect(), &has_flag) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("rrstore: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
    init_logging(match cli.command {
        Cmd::Lb { .. } => "lb",
        Cmd::Worker { .. } => "worker",
        _ => "cli",
    });
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rrstore: {e}");
            ExitCode::from(2)
        }
    }
}

/// Daemon logs go to stderr, one line per event, filtered by `RUST_LOG`
/// (default `info`: nothing per request). Each line names the process
/// (`rrstore lb:`, `rrstore worker 3:` once the worker has its ID), so the
/// interleaved logs of `rrstore cluster` stay readable.
fn init_logging(process: &'static str) {
    use std::io::Write as _;
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(move |f, record| {
            let id = worker::LOG_ID.load(std::sync::atomic::Ordering::Relaxed);
            let (ts, level) = (f.timestamp_millis(), record.level());
            if process == "worker" && id != 0 {
                writeln!(f, "{ts} {level:<5} rrstore worker {id}: {}", record.args())
            } else {
                writeln!(f, "{ts} {level:<5} rrstore {process}: {}", record.args())
            }
        })
        .init();
}

fn exe() -> Result<PathBuf, Box<dyn std::error::Error>> {
    Ok(std::env::current_exe()?)
}

fn run(cmd: Cmd) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match cmd {
        Cmd::Lb {
            listen,
            control,
            processed_log,
            max_content,
            max_inflight,
            request_timeout_ms,
            worker_timeout_ms,
            ack,
            max_clients,
            idle_timeout_secs,
            frame_timeout_secs,
            client_output_cap,
            max_inflight_per_client,
            client_token_file,
            metrics,
            http,
            secret,
        } => {
            let secret = secret.load("lb")?;
            warn_insecure("lb", &secret);
            lb::run(lb::LbConfig {
                listen,
                control,
                processed_log,
                max_content,
                max_inflight,
                request_timeout: Duration::from_millis(request_timeout_ms),
                worker_timeout: Duration::from_millis(worker_timeout_ms),
                ack_all: ack == AckMode::All,
                max_clients: usize::try_from(max_clients).unwrap_or(usize::MAX),
                idle_timeout: Duration::from_secs(idle_timeout_secs),
                frame_timeout: Duration::from_secs(frame_timeout_secs),
                client_output_cap: client_output_cap.max(64 * 1024),
                max_inflight_per_client,
                client_token_file,
                metrics,
                http,
                secret,
            })?;
        }
        Cmd::Worker {
            lb,
            listen,
            advertise,
            data_dir,
            id,
            fsync,
            fsync_interval_ms,
            max_content,
            connect_timeout_secs,
            leave_timeout_secs,
            segment_bytes,
            peer_buffer_bytes,
            peer_flush_ms,
            replay_threads,
            metrics,
            secret,
        } => {
            let secret = secret.load("worker")?;
            warn_insecure("worker", &secret);
            worker::run(worker::WorkerConfig {
                lb,
                listen,
                advertise,
                data_dir,
                id,
                fsync,
                fsync_interval: Duration::from_millis(fsync_interval_ms),
                max_content,
                connect_timeout: Duration::from_secs(connect_timeout_secs),
                leave_timeout: Duration::from_secs(leave_timeout_secs),
                segment_bytes: segment_bytes.max(4096),
                peer_buffer_bytes,
                peer_flush: Duration::from_millis(peer_flush_ms),
                replay_threads: replay_threads
                    .map_or_else(rrstore::recover::default_threads, usize::from),
                metrics,
                secret,
            })?;
        }
        Cmd::Put {
            lb,
            client_token_file,
            id,
            content,
        } => {
            let worker = client(&lb, client_token_file)?.put(id, content.as_bytes())?;
            println!("stored id={id} worker={worker}");
        }
        Cmd::Get {
            lb,
            client_token_file,
            id,
        } => match client(&lb, client_token_file)?.get(id)? {
            Some(content) => {
                let mut out = std::io::stdout().lock();
                out.write_all(&content)?;
                out.flush()?;
            }
            None => {
                eprintln!("not found: {id}");
                return Ok(ExitCode::from(1));
            }
        },
        Cmd::Members { control, secret } => {
            let secret = secret.load("members")?;
            print!(
                "{}",
                admin::render_members(&rrstore::client::members(&control, secret.as_ref())?)
            );
        }
        Cmd::Verify {
            control,
            wait,
            secret,
        } => {
            let secret = secret.load("verify")?;
            let secret = secret.as_ref();
            let v = match wait {
                Some(secs) => {
                    admin::verify_wait(&control, secret, Duration::from_secs_f64(secs.max(0.0)))?
                }
                None => admin::verify(&control, secret)?,
            };
            print!("{}", v.render());
            if !v.identical {
                return Ok(ExitCode::from(1));
            }
        }
        Cmd::Dump {
            control,
            worker,
            secret,
        } => {
            let secret = secret.load("dump")?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut failed = None;
            admin::dump(&control, secret.as_ref(), worker, |id, content| {
                if failed.is_none() {
                    if let Err(e) = writeln!(out, "{id}\t{}", hex(content)) {
                        failed = Some(e);
                    }
                }
            })?;
            if let Some(e) = failed {
                return Err(e.into());
            }
            out.flush()?;
        }
        Cmd::Stats { control, secret } => {
            let secret = secret.load("stats")?;
            for (name, value) in rrstore::client::stats(&control, secret.as_ref())? {
                println!("{name} {value}");
            }
        }
        Cmd::Keygen => println!("{}", auth::keygen()?),
        Cmd::Cluster {
            workers,
            listen,
            control,
            dir,
            http,
        } => return run_cluster(workers, &listen, &control, &dir, http.as_deref()),
        Cmd::Demo {
            workers,
            listen,
            control,
            http,
        } => {
            let ok = demo::run(
                demo::DemoConfig {
                    workers,
                    listen,
                    control,
                    http,
                },
                &exe()?,
            )?;
            return Ok(ExitCode::from(if ok { 0 } else { 1 }));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A client of the LB at `lb` for `put` and `get`, authenticated with the
/// token in `token_file` if given.
fn client(lb: &str, token_file: Option<PathBuf>) -> Result<Client, Box<dyn std::error::Error>> {
    let mut client = Client::connect(lb)?;
    if let Some(path) = token_file {
        client.auth(&auth::read_client_token(&path)?)?;
    }
    Ok(client)
}

fn warn_insecure(who: &str, secret: &Option<Secret>) {
    if secret.is_none() {
        eprintln!(
            "rrstore {who}: WARNING: --insecure: no cluster authentication; anyone who reaches \
             the control and worker ports can join the cluster and read every record"
        );
    }
}

fn run_cluster(
    workers: Option<usize>,
    listen: &str,
    control: &str,
    dir: &std::path::Path,
    http: Option<&str>,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let n = workers.unwrap_or_else(demo::random_workers);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    let lb_args: Vec<&str> = http.map(|a| vec!["--http", a]).unwrap_or_default();
    let mut cluster = Cluster::start(&exe()?, dir, listen, control, &lb_args)?;
    println!(
        "rrstore cluster: N = {n} workers; logs and data in {}",
        dir.display()
    );
    println!(
        "LB: clients on {}, control on {}",
        cluster.lb_addr, cluster.control_addr
    );
    for _ in 0..n {
        let id = cluster.add_worker()?;
        cluster.wait_active(&[id], Duration::from_secs(60))?;
    }
    print!("{}", admin::render_members(&cluster.members()?));
    if let Some(addr) = &cluster.http_addr {
        println!("Status page: http://{addr}/");
    }
    println!(
        "Admin commands need the cluster's secret, e.g.: rrstore members --control {} --secret-file {}",
        cluster.control_addr,
        cluster.secret_file().display()
    );
    println!("Running; press Ctrl-C to stop every process cleanly.");
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("Stopping: workers first (each deregisters and hands off), then the LB.");
    let mut clean = true;
    for (id, status) in cluster.shutdown(Duration::from_secs(30)) {
        let ok = status.is_some_and(|s| s.success());
        clean &= ok;
        println!(
            "worker {id}: {}",
            if ok {
                "left cleanly"
            } else {
                "did not exit cleanly"
            }
        );
    }
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
