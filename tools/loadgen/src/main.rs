//! The `loadgen` command line: a load run (the default), `plot` and
//! `null-server`. See tools/loadgen/README.md.

use clap::{Args, Parser, Subcommand};
use loadgen::null::{NullOptions, NullServer};
use loadgen::proto::{parse_target, Protocol};
use loadgen::run::{run, RunConfig};
use loadgen::{plot, report};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Open-loop load generator for rrstore (protocol v1) and Redis (RESP)",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
struct RunArgs {
    /// rrstore://HOST:PORT (client protocol v1) or redis://HOST:PORT (RESP).
    #[arg(long)]
    target: Option<String>,
    /// Number of connections.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: u32,
    /// Total requests/s on a constant open-loop schedule; 0 = closed loop.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Length of the measured run, seconds (fractions allowed).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds before the measured run, excluded from the results.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Content size in bytes.
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// Size of the id space.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Share of GETs, 0..1.
    #[arg(long, default_value_t = 0.0)]
    get_ratio: f64,
    /// Write the results JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the corrected latency distribution (.hgrm text) here.
    #[arg(long)]
    hgrm: Option<PathBuf>,
    /// Fresh id per PUT, no GETs; at the end check every acknowledged record
    /// on every active worker (exit 1 if any is lost).
    #[arg(long)]
    verify: bool,
    /// With --verify: the rrstore LB's control address.
    #[arg(long, default_value = "127.0.0.1:5060")]
    control: String,
    /// With --verify: file holding the cluster secret (default: the
    /// environment variable RRSTORE_SECRET).
    #[arg(long, value_name = "PATH")]
    secret_file: Option<PathBuf>,
    /// With --verify: the cluster runs without authentication.
    #[arg(long, conflicts_with = "secret_file")]
    insecure: bool,
    /// With --verify: how long replication may take to catch up, seconds.
    #[arg(long, default_value_t = 10.0)]
    verify_wait: f64,
    /// After the run, how long to wait for outstanding answers, seconds.
    #[arg(long, default_value_t = 2.0)]
    drain: f64,
    /// Event-loop threads (connections are split among them).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Name of this run in the JSON and in `plot` legends.
    #[arg(long)]
    label: Option<String>,
    /// No live line on stderr.
    #[arg(long)]
    quiet: bool,
    /// Redis only: send `WAIT N 0` after every SET on the same connection
    /// (N replicas must acknowledge it); the pair counts as one request, its
    /// latency from the SET's send to WAIT's reply.
    #[arg(long, value_name = "N")]
    redis_wait: Option<u32>,
    /// PUT ids 0..KEYS, each exactly once, in order, then stop (at the
    /// latest after --duration): loads a data set. No warmup; the
    /// throughput is over the time to the last answer.
    #[arg(long, conflicts_with = "verify")]
    fill: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Plot the percentile spectra of several runs' JSON on one SVG chart.
    Plot {
        /// Results JSON files written with --json.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The SVG file to write.
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// Logarithmic latency axis.
        #[arg(long)]
        log_y: bool,
    },
    /// Answer every request at once (to measure loadgen itself).
    NullServer {
        /// Address to listen on (port 0: any free port; printed on stdout).
        #[arg(long, default_value = "127.0.0.1:6390")]
        listen: String,
        /// rrstore or redis.
        #[arg(long, default_value = "rrstore")]
        protocol: String,
        /// Hold replies back after every N requests (0: never).
        #[arg(long, default_value_t = 0)]
        stall_every: u64,
        /// How long each stall lasts, ms.
        #[arg(long, default_value_t = 0)]
        stall_ms: u64,
    },
}

fn seconds(name: &str, v: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v).map_err(|_| format!("--{name} {v}: not a duration in seconds"))
}

fn run_config(a: RunArgs) -> Result<(RunConfig, Option<PathBuf>, Option<PathBuf>), String> {
    let target = a
        .target
        .ok_or("--target rrstore://HOST:PORT or redis://HOST:PORT is required")?;
    let (protocol, addr) = parse_target(&target)?;
    if a.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if !(1..=65_536).contains(&a.pipeline) {
        return Err("--pipeline must be in 1..=65536".into());
    }
    if !(a.rate >= 0.0 && a.rate.is_finite()) {
        return Err("--rate must be a finite number >= 0".into());
    }
    if !(0.0..=1.0).contains(&a.get_ratio) {
        return Err("--get-ratio must be in 0..=1".into());
    }
    if a.keys == 0 {
        return Err("--keys must be at least 1".into());
    }
    if a.duration <= 0.0 {
        return Err("--duration must be positive".into());
    }
    if protocol == Protocol::Rrstore && a.value_size > rrstore::wire::DEFAULT_MAX_CONTENT {
        return Err(format!(
            "--value-size above rrstore's default content limit ({} bytes)",
            rrstore::wire::DEFAULT_MAX_CONTENT
        ));
    }
    if a.redis_wait.is_some() && protocol != Protocol::Redis {
        return Err("--redis-wait needs a redis:// target".into());
    }
    if a.verify && protocol != Protocol::Rrstore {
        return Err("--verify needs an rrstore:// target".into());
    }
    if a.fill && a.get_ratio > 0.0 {
        eprintln!("loadgen: --fill sends only PUTs; --get-ratio ignored");
    }
    if a.verify && a.get_ratio > 0.0 {
        eprintln!("loadgen: --verify sends only PUTs; --get-ratio ignored");
    }
    let secret = if a.verify && !a.insecure {
        Some(rrstore::auth::Secret::load(a.secret_file.as_deref())?)
    } else {
        None
    };
    let cfg = RunConfig {
        target,
        protocol,
        addr,
        label: a.label,
        connections: a.connections,
        pipeline: a.pipeline,
        threads: a.threads.max(1),
        rate: a.rate,
        duration: seconds("duration", a.duration)?,
        warmup: if a.fill {
            Duration::ZERO
        } else {
            seconds("warmup", a.warmup)?
        },
        drain: seconds("drain", a.drain)?,
        value_size: a.value_size,
        keys: a.keys,
        get_ratio: a.get_ratio,
        verify: a.verify,
        control: a.control,
        secret,
        verify_wait: seconds("verify-wait", a.verify_wait)?,
        quiet: a.quiet,
        redis_wait: a.redis_wait,
        fill: a.fill,
    };
    Ok((cfg, a.json, a.hgrm))
}

fn load(a: RunArgs) -> Result<ExitCode, String> {
    let (cfg, json, hgrm) = run_config(a)?;
    let out = run(&cfg)?;
    print!(
        "{}",
        report::table(&out.info, &out.stats, out.verify.as_ref())
    );
    if out.connect_failures > 0 {
        println!("reconnect attempts that failed: {}", out.connect_failures);
    }
    if let Some(path) = json {
        let doc = report::to_json(&out.info, &out.stats, out.verify.as_ref());
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        std::fs::write(&path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = hgrm {
        std::fs::write(&path, report::hgrm(&out.stats.corrected))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(match out.verify {
        Some(v) if v.lost > 0 => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}

fn null_server(
    listen: &str,
    protocol: &str,
    stall_every: u64,
    stall_ms: u64,
) -> Result<(), String> {
    let opts = NullOptions {
        protocol: Protocol::parse(protocol)?,
        stall_every,
        stall: Duration::from_millis(stall_ms),
    };
    let server = NullServer::start(listen, opts).map_err(|e| format!("{listen}: {e}"))?;
    println!("listening on {} ({protocol})", server.addr());
    let _ = std::io::stdout().flush();
    server.wait().map(|_| ()).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => load(cli.run),
        Some(Command::Plot {
            files,
            output,
            log_y,
        }) => plot::load(&files).and_then(|series| {
            std::fs::write(&output, plot::render_svg(&series, log_y))
                .map(|_| ExitCode::SUCCESS)
                .map_err(|e| format!("{}: {e}", output.display()))
        }),
        Some(Command::NullServer {
            listen,
            protocol,
            stall_every,
            stall_ms,
        }) => null_server(&listen, &protocol, stall_every, stall_ms).map(|_| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        eprintln!("loadgen: {e}");
        ExitCode::from(2)
    })
}
