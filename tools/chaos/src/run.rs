//! One chaos run from start to verdict: start the cluster, start the
//! writers, inject faults until the duration is over (or Ctrl-C), stop the
//! writers, heal everything, wait for convergence, check the records, and
//! build the summary. Errors returned from here are harness errors.

use crate::check;
use crate::cluster::Cluster;
use crate::faults::{Kind, Nemesis};
use crate::report::Summary;
use crate::writers::{self, Progress, WriterConfig, WriterResult};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the initial workers may take to become active.
const START_ACTIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a progress line is printed during the fault phase.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

pub struct Options {
    pub rrstore: PathBuf,
    pub dir: PathBuf,
    pub workers: usize,
    pub max_workers: usize,
    pub add_when_settled: bool,
    pub clients: usize,
    pub duration: Duration,
    /// Total requests per second over all writers; 0 = unlimited.
    pub rate: f64,
    pub window: usize,
    pub kinds: Vec<Kind>,
    pub every: Duration,
    pub seed: u64,
    /// Passed to the LB as --request-timeout-ms unless 0.
    pub request_timeout_ms: u64,
    pub converge_timeout: Duration,
    pub lb_args: Vec<String>,
    pub worker_args: Vec<String>,
}

pub fn run(o: &Options, interrupted: &AtomicBool) -> Result<Summary, String> {
    let t0 = Instant::now();
    let mut lb_args = Vec::new();
    if o.request_timeout_ms > 0 {
        lb_args.extend([
            "--request-timeout-ms".to_string(),
            o.request_timeout_ms.to_string(),
        ]);
    }
    lb_args.extend(o.lb_args.iter().cloned());
    let mut cluster = Cluster::start(&o.rrstore, &o.dir, lb_args, o.worker_args.clone())?;
    let mut nemesis = Nemesis::new(o.seed, o.kinds.clone(), o.every, o.max_workers, t0);
    nemesis.add_when_settled = o.add_when_settled;
    nemesis.log(format!(
        "LB up: clients {}, control {}; starting {} workers",
        cluster.clients, cluster.control, o.workers
    ));
    for _ in 0..o.workers {
        cluster
            .add_worker()
            .map_err(|e| format!("cannot start a worker: {e}"))?;
    }
    let deadline = Instant::now() + START_ACTIVE_TIMEOUT;
    loop {
        nemesis.step(&mut cluster, false)?;
        if let Some(crash) = nemesis.crashes.first() {
            return Err(format!("a process failed during start-up: {crash}"));
        }
        if cluster.all_active().unwrap_or(false) {
            break;
        }
        if Instant::now() >= deadline {
            let table = cluster
                .members()
                .map(|m| rrstore::admin::render_members(&m))
                .unwrap_or_else(|e| format!("(members: {e})"));
            return Err(format!("the workers did not all become active:\n{table}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    nemesis.log(format!("all {} workers active", o.workers));

    let lb: SocketAddr = cluster
        .clients
        .parse()
        .map_err(|e| format!("LB client address {:?}: {e}", cluster.clients))?;
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(Progress::default());
    let reply_timeout =
        Duration::from_millis(o.request_timeout_ms.max(2000)) + Duration::from_secs(3);
    let mut handles = Vec::new();
    for client in 0..o.clients {
        let cfg = WriterConfig {
            lb,
            client,
            rate: o.rate / o.clients as f64,
            window: o.window.max(1),
            reply_timeout,
            stop: stop.clone(),
            progress: progress.clone(),
        };
        match writers::spawn(cfg) {
            Ok(h) => handles.push(h),
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                return Err(format!("cannot start a writer thread: {e}"));
            }
        }
    }
    let write_start = Instant::now();
    nemesis.start_faults();
    nemesis.log(format!(
        "{} writers started; faults {:?} every {:.1} s for {:.0} s (seed {})",
        o.clients,
        o.kinds.iter().map(|k| k.name()).collect::<Vec<_>>(),
        o.every.as_secs_f64(),
        o.duration.as_secs_f64(),
        o.seed
    ));

    // The fault phase.
    let result = fault_phase(
        o,
        &mut cluster,
        &mut nemesis,
        &progress,
        write_start,
        interrupted,
    );
    stop.store(true, Ordering::Relaxed);
    result?;
    let write_secs = write_start.elapsed().as_secs_f64();
    nemesis.log("stopping the writers".into());
    while !handles.iter().all(|h| h.is_finished()) {
        nemesis.step(&mut cluster, false)?;
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut results: Vec<WriterResult> = Vec::new();
    for h in handles {
        results.push(
            h.join()
                .map_err(|_| "a writer thread panicked".to_string())?,
        );
    }

    nemesis.heal_all(&mut cluster)?;
    let healed_at = Instant::now();
    nemesis.log("every fault healed; waiting for convergence".into());
    let converge = check::converge(&mut cluster, &mut nemesis, healed_at, o.converge_timeout)?;
    match converge.identical_after {
        Some(d) => nemesis.log(format!("converged {:.2} s after the heal", d.as_secs_f64())),
        None => nemesis.log(format!(
            "NOT converged {:.0} s after the heal:\n{}",
            o.converge_timeout.as_secs_f64(),
            converge.last_verify
        )),
    }

    let mut acked: Vec<(u64, u32)> = Vec::new();
    let mut attempted = vec![0u64; o.clients];
    let mut summary = Summary {
        seed: o.seed,
        write_secs,
        workers_start: o.workers,
        workers_end: cluster.workers.len(),
        attempted: 0,
        acked: 0,
        unanswered: 0,
        errors: Default::default(),
        faults: nemesis.counts.clone(),
        lb_starts: cluster.lb_starts,
        last_fault_at: nemesis
            .last_fault
            .map(|f| f.duration_since(t0).as_secs_f64()),
        healed_after_last_fault: nemesis
            .last_fault
            .map(|f| healed_at.duration_since(f).as_secs_f64()),
        converge,
        converge_timeout: o.converge_timeout.as_secs_f64(),
        check: Default::default(),
        crashes: Vec::new(),
        anomalies: Vec::new(),
        run_dir: o.dir.display().to_string(),
        events: Vec::new(),
    };
    for r in results {
        summary.attempted += r.attempted;
        summary.acked += r.acked.len() as u64;
        summary.unanswered += r.unanswered;
        for (k, v) in r.errors {
            *summary.errors.entry(k).or_default() += v;
        }
        for a in r.anomalies {
            summary.anomalies.push(format!("writer {}: {a}", r.client));
        }
        if let Some(slot) = attempted.get_mut(r.client) {
            *slot = r.attempted;
        }
        acked.extend(r.acked);
    }
    nemesis.log(format!(
        "checking {} acknowledged writes on every active worker",
        acked.len()
    ));
    summary.check = check::check(&cluster, &acked, &attempted);
    nemesis.step(&mut cluster, false)?;
    summary.crashes = std::mem::take(&mut nemesis.crashes);
    summary.events = nemesis
        .events
        .iter()
        .map(|e| (e.at, e.what.clone()))
        .collect();
    Ok(summary)
}

fn fault_phase(
    o: &Options,
    cluster: &mut Cluster,
    nemesis: &mut Nemesis,
    progress: &Progress,
    start: Instant,
    interrupted: &AtomicBool,
) -> Result<(), String> {
    let end = start + o.duration;
    let mut next_progress = start + PROGRESS_EVERY;
    loop {
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        if interrupted.load(Ordering::Relaxed) {
            nemesis.log("interrupted: ending the fault phase early (again to abort)".into());
            return Ok(());
        }
        nemesis.step(cluster, true)?;
        if now >= next_progress {
            next_progress += PROGRESS_EVERY;
            let up = (0..cluster.workers.len())
                .filter(|&i| cluster.workers[i].healthy())
                .count();
            let lb = if cluster.lb_up() { "up" } else { "down" };
            nemesis.log(format!(
                "progress: {} attempted, {} acknowledged, {} errors; {up}/{} workers healthy, LB {lb}",
                progress.attempted.load(Ordering::Relaxed),
                progress.acked.load(Ordering::Relaxed),
                progress.errors.load(Ordering::Relaxed),
                cluster.workers.len(),
            ));
        }
        let wake = nemesis.next_wake().min(end).min(next_progress);
        let nap = wake.saturating_duration_since(Instant::now());
        std::thread::sleep(nap.min(Duration::from_millis(20)));
    }
}
