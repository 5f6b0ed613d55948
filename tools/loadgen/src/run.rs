//! One load run: splits the connections over `--threads` engines (each its
//! own mio loop and histograms), starts them on one shared clock, prints the
//! live line from their per-second reports, merges their results and, with
//! `--verify`, checks the acknowledged records on every worker.

use crate::engine::{Engine, EngineConfig, EngineResult, Live};
use crate::proto::Protocol;
use crate::report::{new_histogram, RunInfo, Stats};
use crate::schedule::Mode;
use crate::verify::{self, VerifyOutcome};
use crate::workload::{fresh_id_base, Workload};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct RunConfig {
    /// As given, e.g. `rrstore://127.0.0.1:5059`.
    pub target: String,
    pub protocol: Protocol,
    /// `HOST:PORT`.
    pub addr: String,
    pub label: Option<String>,
    pub connections: usize,
    pub pipeline: u32,
    pub threads: usize,
    /// Total requests/s; 0 = closed loop.
    pub rate: f64,
    pub duration: Duration,
    pub warmup: Duration,
    pub drain: Duration,
    pub value_size: usize,
    pub keys: u64,
    pub get_ratio: f64,
    pub verify: bool,
    pub control: String,
    /// With `verify`: the cluster secret for the admin calls.
    pub secret: Option<rrstore::auth::Secret>,
    pub verify_wait: Duration,
    pub quiet: bool,
    /// Redis: follow every SET with `WAIT N 0` (`--redis-wait N`).
    pub redis_wait: Option<u32>,
    /// PUT ids `0..keys`, each once, in order, then stop (`--fill`): the
    /// measured window ends with the last answer.
    pub fill: bool,
}

pub struct RunOutput {
    pub info: RunInfo,
    pub stats: Stats,
    pub verify: Option<VerifyOutcome>,
    pub connect_failures: u64,
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))
}

/// Sums the live reports of one second until every engine has sent its own.
struct LiveLine {
    threads: usize,
    warmup_s: f64,
    /// Per second: reports received, outcomes, errors.
    seconds: Vec<(usize, u64, u64)>,
    /// Corrected latency since the start (warmup included).
    so_far: hdrhistogram::Histogram<u64>,
}

impl LiveLine {
    fn add(&mut self, live: Live) {
        let i = live.second as usize;
        if self.seconds.len() <= i {
            self.seconds.resize(i + 1, (0, 0, 0));
        }
        let _ = self.so_far.add(&live.hist);
        let s = &mut self.seconds[i];
        s.0 += 1;
        s.1 += live.completed;
        s.2 += live.errors;
        if s.0 == self.threads {
            let phase = if (live.second as f64) <= self.warmup_s {
                " (warmup)"
            } else {
                ""
            };
            eprintln!(
                "[{:>4}s] {:>9} req/s  errors {:<6} p50 {} µs  p99 {} µs{phase}",
                live.second,
                s.1,
                s.2,
                self.so_far.value_at_quantile(0.5),
                self.so_far.value_at_quantile(0.99),
            );
        }
    }
}

/// Runs the load described by `cfg`.
pub fn run(cfg: &RunConfig) -> Result<RunOutput, String> {
    let addr = resolve(&cfg.addr)?;
    let threads = cfg.threads.clamp(1, cfg.connections.max(1));
    let mode = if cfg.rate > 0.0 {
        Mode::Open { rate: cfg.rate }
    } else {
        Mode::Closed
    };
    let workload = Workload {
        keys: cfg.keys,
        get_ratio: if cfg.verify || cfg.fill {
            0.0
        } else {
            cfg.get_ratio
        },
        // A fill's ids are its request indices, 0..keys.
        fresh_ids: if cfg.fill {
            Some(0)
        } else {
            cfg.verify.then(fresh_id_base)
        },
    };
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let (live_tx, live_rx) = mpsc::channel::<Live>();
    let mut start_txs = Vec::new();
    let mut handles = Vec::new();
    for t in 0..threads {
        let ecfg = EngineConfig {
            addr,
            protocol: cfg.protocol,
            conn_ids: (0..cfg.connections as u64)
                .filter(|c| c % threads as u64 == t as u64)
                .collect(),
            total_conns: cfg.connections as u64,
            pipeline: cfg.pipeline,
            mode,
            workload,
            value_size: cfg.value_size,
            warmup: cfg.warmup,
            duration: cfg.duration,
            drain: cfg.drain,
            collect_acks: cfg.verify,
            redis_wait: cfg.redis_wait,
            limit: cfg.fill.then_some(cfg.keys),
        };
        let (start_tx, start_rx) = mpsc::channel::<Instant>();
        start_txs.push(start_tx);
        let ready = ready_tx.clone();
        let live = (!cfg.quiet).then(|| live_tx.clone());
        let handle = std::thread::Builder::new()
            .name(format!("loadgen-{t}"))
            .spawn(move || -> Result<Option<EngineResult>, String> {
                let engine = match Engine::connect(ecfg) {
                    Ok(e) => {
                        let _ = ready.send(Ok(()));
                        e
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e.to_string()));
                        return Ok(None);
                    }
                };
                // No start instant: another thread failed to connect.
                let Ok(start) = start_rx.recv() else {
                    return Ok(None);
                };
                engine
                    .run(start, live.as_ref())
                    .map(Some)
                    .map_err(|e| format!("event loop: {e}"))
            })
            .map_err(|e| format!("spawn: {e}"))?;
        handles.push(handle);
    }
    drop(ready_tx);
    drop(live_tx);

    let mut failure = None;
    for _ in 0..threads {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some("an engine thread died while connecting".into()),
        }
    }
    if failure.is_none() {
        let start = Instant::now();
        for tx in &start_txs {
            let _ = tx.send(start);
        }
    }
    drop(start_txs);

    let mut live = LiveLine {
        threads,
        warmup_s: cfg.warmup.as_secs_f64(),
        seconds: Vec::new(),
        so_far: new_histogram(),
    };
    // Ends when every engine has finished and dropped its sender.
    for report in live_rx {
        live.add(report);
    }

    let mut stats = Stats::new();
    let mut acked = Vec::new();
    let mut connect_failures = 0;
    let mut finished_ns = 0;
    for h in handles {
        match h.join() {
            Ok(Ok(Some(r))) => {
                finished_ns = finished_ns.max(r.finished_ns);
                stats.merge(&r.stats);
                acked.extend_from_slice(&r.acked);
                connect_failures += r.connect_failures;
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some("an engine thread panicked".into()),
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }

    let verify = if cfg.verify {
        Some(verify::verify(
            &cfg.control,
            cfg.secret.as_ref(),
            acked,
            cfg.value_size,
            cfg.verify_wait,
        )?)
    } else {
        None
    };
    let info = RunInfo {
        target: cfg.target.clone(),
        label: cfg.label.clone(),
        protocol: cfg.protocol,
        rate: cfg.rate,
        connections: cfg.connections,
        pipeline: cfg.pipeline,
        threads,
        // A fill that finished early was measured until its last answer.
        duration_s: if cfg.fill {
            let ran = Duration::from_nanos(finished_ns).saturating_sub(cfg.warmup);
            ran.min(cfg.duration).as_secs_f64()
        } else {
            cfg.duration.as_secs_f64()
        },
        warmup_s: cfg.warmup.as_secs_f64(),
        value_size: cfg.value_size,
        keys: cfg.keys,
        get_ratio: workload.get_ratio,
        redis_wait: cfg.redis_wait,
        fill: cfg.fill,
    };
    Ok(RunOutput {
        info,
        stats,
        verify,
        connect_failures,
    })
}
