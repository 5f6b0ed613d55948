//! `chaos`: Jepsen-style fault injection for rrstore.
//!
//! Starts an LB and workers from the `rrstore` binary, writes unique
//! records through the LB from several threads while killing, stopping and
//! adding workers and crashing the LB on a seeded schedule, then heals
//! everything and checks that the workers converge and that every
//! acknowledged write is on every active worker, byte for byte.
//!
//! Exit codes: 0 PASS, 1 FAIL, 2 harness error (bad flags, the cluster
//! would not start, …).
//!
//! Modules: [`run`] (the phases of a run), [`cluster`] and [`proc`] (child
//! processes), [`writers`] (load), [`faults`] and [`kind`] (the nemesis),
//! [`check`] (convergence and the record check), [`report`] (summary,
//! JSON), [`records`] (ids and content), [`rng`] (the seeded RNG).

mod check;
mod cluster;
mod faults;
mod kind;
mod proc;
mod records;
mod report;
mod rng;
mod run;
mod writers;

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "chaos",
    version,
    about = "Fault injection for rrstore: writes under kill -9, SIGSTOP, joins and LB crashes, then checks every acknowledged write"
)]
struct Cli {
    /// The rrstore binary (default: `rrstore` next to this executable).
    #[arg(long)]
    rrstore: Option<PathBuf>,
    /// Workers at the start.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// The most workers `add` faults may grow the cluster to (default: workers + 4).
    #[arg(long)]
    max_workers: Option<usize>,
    /// Writer threads, each with its own connection and ids.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Seconds of writing (and faults).
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Target PUTs per second over all writers; 0 = as fast as the window allows.
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Requests each writer keeps in flight (pipelined).
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Fault kinds to inject, comma-separated: kill, stop, add, lb (or none).
    #[arg(long, default_value = "kill,stop,add,lb")]
    faults: String,
    /// Inject `add` only when no worker is down or stopped and every one is
    /// active at the LB. Avoids the case where a restarted LB, not yet
    /// knowing every worker, hands a newcomer an ID already in use.
    #[arg(long)]
    add_when_settled: bool,
    /// Seconds between faults.
    #[arg(long, default_value_t = 2.0)]
    every: f64,
    /// Seed for the fault schedule (printed; pass it back to replay a run).
    #[arg(long)]
    seed: Option<u64>,
    /// The LB's --request-timeout-ms (0: do not pass the flag).
    #[arg(long, default_value_t = 2000)]
    request_timeout_ms: u64,
    /// Seconds to wait, after healing, for the workers to become identical.
    #[arg(long, default_value_t = 30.0)]
    converge_timeout: f64,
    /// Run directory for data dirs and logs (default: a fresh one in the temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the run directory (it is always kept when the run fails).
    #[arg(long)]
    keep: bool,
    /// Also write the summary as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// An extra argument for every `rrstore lb` (repeat for more).
    #[arg(long = "lb-arg", allow_hyphen_values = true)]
    lb_args: Vec<String>,
    /// An extra argument for every `rrstore worker`, e.g. --worker-arg=--fsync=always.
    #[arg(long = "worker-arg", allow_hyphen_values = true)]
    worker_args: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match main_inner(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("chaos: harness error: {e}");
            ExitCode::from(2)
        }
    }
}

fn secs(name: &str, v: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v).map_err(|_| format!("--{name} {v}: not a duration in seconds"))
}

/// Ok(true) PASS, Ok(false) FAIL, Err harness error.
fn main_inner(cli: Cli) -> Result<bool, String> {
    let kinds = faults::Kind::parse_list(&cli.faults)?;
    if cli.workers == 0 || cli.clients == 0 {
        return Err("--workers and --clients must be at least 1".into());
    }
    if !(cli.rate >= 0.0 && cli.rate.is_finite()) {
        return Err(format!("--rate {}: must be 0 or more", cli.rate));
    }
    let every = secs("every", cli.every)?;
    if every < Duration::from_millis(10) {
        return Err("--every must be at least 0.01 s".into());
    }
    let seed = cli.seed.unwrap_or_else(rng::fresh_seed);
    println!("chaos: seed {seed} (replay the schedule with --seed {seed})");

    let rrstore = match cli.rrstore {
        Some(p) => p,
        None => std::env::current_exe()
            .map_err(|e| format!("cannot locate this executable: {e}"))?
            .with_file_name("rrstore"),
    };
    if !rrstore.is_file() {
        return Err(format!(
            "no rrstore binary at {}; build it with `cargo build --release --workspace` or pass --rrstore PATH",
            rrstore.display()
        ));
    }
    let dir = match cli.dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("rrstore-chaos-{}-{seed}", std::process::id())),
    };
    if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(format!("run directory {} is not empty", dir.display()));
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    println!("chaos: run directory {}", dir.display());

    // First Ctrl-C / SIGTERM: end the fault phase, heal and check. Second:
    // exit at once (the children die with us through PR_SET_PDEATHSIG).
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 2, interrupted.clone())
            .and_then(|_| signal_hook::flag::register(sig, interrupted.clone()))
            .map_err(|e| format!("cannot handle signal {sig}: {e}"))?;
    }

    let opts = run::Options {
        rrstore,
        dir: dir.clone(),
        workers: cli.workers,
        max_workers: cli.max_workers.unwrap_or(cli.workers + 4).max(cli.workers),
        add_when_settled: cli.add_when_settled,
        clients: cli.clients,
        duration: secs("duration", cli.duration)?,
        rate: cli.rate,
        window: cli.window,
        kinds,
        every,
        seed,
        request_timeout_ms: cli.request_timeout_ms,
        converge_timeout: secs("converge-timeout", cli.converge_timeout)?,
        lb_args: cli.lb_args,
        worker_args: cli.worker_args,
    };
    // Every child process is killed when `run` returns (or unwinds): the
    // cluster owns them.
    let summary = match run::run(&opts, &interrupted) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("chaos: run directory kept: {}", dir.display());
            return Err(format!("{e} (seed {seed})"));
        }
    };
    print!("{}", summary.render());
    if let Some(path) = &cli.json {
        std::fs::write(path, summary.json())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let pass = summary.failures().is_empty();
    if pass && !cli.keep {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            eprintln!("chaos: cannot remove {}: {e}", dir.display());
        }
    } else {
        println!("chaos: run directory kept: {}", dir.display());
    }
    Ok(pass)
}
