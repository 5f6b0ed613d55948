//! What a run measured, and its three renderings: the final table (stdout),
//! the results JSON (`--json`) and the HdrHistogram percentile distribution
//! (`--hgrm`, the classic text format).
//!
//! Latencies are whole microseconds. The *corrected* histogram measures each
//! request from its intended send time (see [`crate::schedule`]); the
//! *uncorrected* one from when it was actually written. Only successful
//! requests are recorded; failures are counted by [`ErrorKind`].

use crate::proto::{ErrorKind, Protocol};
use crate::verify::VerifyOutcome;
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use std::fmt::Write as _;

/// Largest latency a histogram holds: one hour, in µs.
const MAX_US: u64 = 3_600_000_000;

pub fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 1 h at 3 significant digits: the bounds are valid constants.
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

/// Counters and histograms of one engine thread, or merged over all.
#[derive(Clone)]
pub struct Stats {
    pub corrected: Histogram<u64>,
    pub uncorrected: Histogram<u64>,
    /// How late requests were written (send time − intended time): the
    /// generator's own lateness, already part of the corrected latency.
    pub lag: Histogram<u64>,
    /// Requests intended inside the measured window that got an outcome
    /// (success or error).
    pub requests: u64,
    /// Failed requests intended inside the window, by [`ErrorKind::index`].
    pub errors: [u64; ErrorKind::COUNT],
    /// Outcomes (of any request) that arrived inside the window: the
    /// achieved rate is this over the window's length.
    pub completed_in_window: u64,
    /// Requests intended inside the window with no outcome when the run
    /// stopped (still in flight, or never sent).
    pub unfinished: u64,
    /// Requests written over the whole run, warmup included.
    pub sent: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            corrected: new_histogram(),
            uncorrected: new_histogram(),
            lag: new_histogram(),
            requests: 0,
            errors: [0; ErrorKind::COUNT],
            completed_in_window: 0,
            unfinished: 0,
            sent: 0,
        }
    }

    /// Records a success (latencies in µs, clamped to the histogram range;
    /// a lag of 0 is recorded as 1).
    pub fn record(&mut self, corrected_us: u64, uncorrected_us: u64, lag_us: u64) {
        self.requests += 1;
        self.corrected
            .saturating_record(corrected_us.clamp(1, MAX_US));
        self.uncorrected
            .saturating_record(uncorrected_us.clamp(1, MAX_US));
        self.lag.saturating_record(lag_us.clamp(1, MAX_US));
    }

    pub fn error(&mut self, kind: ErrorKind) {
        self.requests += 1;
        self.errors[kind.index()] += 1;
    }

    pub fn error_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    pub fn merge(&mut self, other: &Stats) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.corrected.add(&other.corrected);
        let _ = self.uncorrected.add(&other.uncorrected);
        let _ = self.lag.add(&other.lag);
        self.requests += other.requests;
        for (a, b) in self.errors.iter_mut().zip(other.errors) {
            *a += b;
        }
        self.completed_in_window += other.completed_in_window;
        self.unfinished += other.unfinished;
        self.sent += other.sent;
    }
}

/// The summary percentiles of one histogram, in µs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        Percentiles {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
            mean: h.mean(),
        }
    }

    fn json(&self) -> Value {
        json!({
            "p50": self.p50, "p90": self.p90, "p99": self.p99, "p999": self.p999,
            "p9999": self.p9999, "max": self.max, "mean": round2(self.mean),
        })
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// How the run was set up, for the outputs.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub target: String,
    pub label: Option<String>,
    pub protocol: Protocol,
    /// Requested total rate; 0 = closed loop.
    pub rate: f64,
    pub connections: usize,
    pub pipeline: u32,
    pub threads: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub value_size: usize,
    pub keys: u64,
    pub get_ratio: f64,
    /// Redis: every SET was followed by `WAIT N 0`.
    pub redis_wait: Option<u32>,
    /// `--fill`: ids `0..keys` each PUT once; `duration_s` is until the
    /// last answer.
    pub fill: bool,
}

/// Achieved rate over the measured window.
pub fn throughput(info: &RunInfo, stats: &Stats) -> f64 {
    if info.duration_s > 0.0 {
        stats.completed_in_window as f64 / info.duration_s
    } else {
        0.0
    }
}

/// `NAME count` pairs of the non-zero error counters.
pub fn errors_by_code(stats: &Stats) -> Vec<(&'static str, u64)> {
    ErrorKind::ALL
        .iter()
        .map(|k| (k.name(), stats.errors[k.index()]))
        .filter(|&(_, n)| n > 0)
        .collect()
}

/// The final table for stdout.
pub fn table(info: &RunInfo, stats: &Stats, verify: Option<&VerifyOutcome>) -> String {
    let mut s = String::new();
    let tp = throughput(info, stats);
    let _ = writeln!(
        s,
        "target       {} ({} connections, pipeline {}, {} thread{})",
        info.target,
        info.connections,
        info.pipeline,
        info.threads,
        if info.threads == 1 { "" } else { "s" }
    );
    if let Some(n) = info.redis_wait {
        let _ = writeln!(
            s,
            "requests     every SET followed by WAIT {n} 0; the pair is one request"
        );
    }
    if info.fill {
        let _ = writeln!(
            s,
            "requests     fill: ids 0..{} each PUT once, measured to the last answer",
            info.keys
        );
    }
    let schedule = if info.rate > 0.0 {
        format!("open loop at {} req/s", info.rate)
    } else {
        "closed loop".to_string()
    };
    let _ = writeln!(
        s,
        "schedule     {schedule}; {:.2} s measured after {:.2} s warmup",
        info.duration_s, info.warmup_s
    );
    let _ = write!(s, "throughput   {tp:.1} req/s achieved");
    if info.rate > 0.0 {
        let _ = write!(
            s,
            " of {} requested ({:.1}%)",
            info.rate,
            100.0 * tp / info.rate
        );
    }
    s.push('\n');
    let _ = writeln!(
        s,
        "requests     {} ({} ok, {} errors, {} unfinished)",
        stats.requests,
        stats.requests - stats.error_total(),
        stats.error_total(),
        stats.unfinished
    );
    let _ = writeln!(
        s,
        "\nlatency (µs)      p50       p90       p99     p99.9    p99.99       max      mean"
    );
    for (name, h) in [
        ("corrected", &stats.corrected),
        ("uncorrected", &stats.uncorrected),
    ] {
        let p = Percentiles::of(h);
        let _ = writeln!(
            s,
            "{name:<12}{:>9}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10.1}",
            p.p50, p.p90, p.p99, p.p999, p.p9999, p.max, p.mean
        );
    }
    if info.rate > 0.0 && !stats.lag.is_empty() {
        let _ = writeln!(
            s,
            "send lag (loadgen's own lateness, part of corrected): p50 {} p99 {} max {} µs",
            stats.lag.value_at_quantile(0.5),
            stats.lag.value_at_quantile(0.99),
            stats.lag.max()
        );
    }
    let errors = errors_by_code(stats);
    s.push_str("\nerrors by code:");
    if errors.is_empty() {
        s.push_str(" none");
    }
    for (name, n) in errors {
        let _ = write!(s, " {name} {n}");
    }
    s.push('\n');
    if let Some(v) = verify {
        let _ = writeln!(s, "{}", v.summary());
    }
    s
}

/// The corrected histogram's percentile spectrum: `(percentile in %, µs)`.
pub fn spectrum(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_quantiles(5)
        .map(|v| (v.quantile_iterated_to() * 100.0, v.value_iterated_to()))
        .collect()
}

/// The results document written by `--json`.
pub fn to_json(info: &RunInfo, stats: &Stats, verify: Option<&VerifyOutcome>) -> Value {
    let mut errors = Map::new();
    for k in ErrorKind::ALL {
        errors.insert(k.name().to_string(), json!(stats.errors[k.index()]));
    }
    let spectrum: Vec<Value> = spectrum(&stats.corrected)
        .into_iter()
        .map(|(p, v)| json!([p, v]))
        .collect();
    let mut doc = json!({
        "target": info.target,
        "protocol": info.protocol.name(),
        "mode": if info.rate > 0.0 { "open" } else { "closed" },
        "rate_requested": info.rate,
        "connections": info.connections,
        "pipeline": info.pipeline,
        "threads": info.threads,
        "duration_s": info.duration_s,
        "warmup_s": info.warmup_s,
        "value_size": info.value_size,
        "keys": info.keys,
        "get_ratio": info.get_ratio,
        "redis_wait": info.redis_wait,
        "fill": info.fill,
        "requests": stats.requests,
        "errors": stats.error_total(),
        "errors_by_code": errors,
        "unfinished": stats.unfinished,
        "sent": stats.sent,
        "throughput": round2(throughput(info, stats)),
        "latency_us": Percentiles::of(&stats.corrected).json(),
        "uncorrected_latency_us": Percentiles::of(&stats.uncorrected).json(),
        "send_lag_us": Percentiles::of(&stats.lag).json(),
        "spectrum": spectrum,
    });
    if let Some(label) = &info.label {
        doc["label"] = json!(label);
    }
    if let Some(v) = verify {
        doc["verify"] = json!({"acknowledged": v.acknowledged, "lost": v.lost});
    }
    doc
}

/// The percentile distribution in the classic `.hgrm` text layout (values
/// in µs): `Value Percentile TotalCount 1/(1-Percentile)`, then the summary.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let value = v.value_iterated_to() as f64;
            if q < 1.0 {
                let _ = writeln!(
                    s,
                    "{value:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(s, "{value:12.3} {q:2.12} {total:10}");
            }
        }
    }
    let _ = writeln!(
        s,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean(),
        h.stdev()
    );
    let _ = writeln!(
        s,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64,
        h.len()
    );
    let _ = writeln!(
        s,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        (2 * 10u64.pow(h.sigfig() as u32)).next_power_of_two()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Stats {
        let mut s = Stats::new();
        for v in 1..=10_000u64 {
            s.record(v, v / 2, v - v / 2);
        }
        s.error(ErrorKind::Io);
        s.completed_in_window = 10_001;
        s
    }

    fn info() -> RunInfo {
        RunInfo {
            target: "rrstore://127.0.0.1:1".into(),
            label: None,
            protocol: Protocol::Rrstore,
            rate: 5000.0,
            connections: 4,
            pipeline: 2,
            threads: 1,
            duration_s: 2.0,
            warmup_s: 0.5,
            value_size: 64,
            keys: 100,
            get_ratio: 0.0,
            redis_wait: None,
            fill: false,
        }
    }

    #[test]
    fn merge_adds_everything() {
        let mut a = sample();
        a.merge(&sample());
        assert_eq!(a.requests, 20_002);
        assert_eq!(a.corrected.len(), 20_000);
        assert_eq!(a.errors[ErrorKind::Io.index()], 2);
        assert_eq!(a.completed_in_window, 20_002);
    }

    #[test]
    fn hgrm_has_the_classic_columns_and_ends_at_100_percent() {
        let text = hgrm(&sample().corrected);
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
        );
        let rows: Vec<Vec<f64>> = text
            .lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect())
            .collect();
        assert!(rows.len() > 20);
        let last = rows.last().unwrap();
        assert_eq!((last[1], last[2]), (1.0, 10_000.0));
        assert!(rows
            .windows(2)
            .all(|w| w[0][0] <= w[1][0] && w[0][2] <= w[1][2]));
        assert!(text.contains("#[Max     ="));
    }

    #[test]
    fn json_and_table_carry_the_numbers() {
        let s = sample();
        let doc = to_json(&info(), &s, None);
        assert_eq!(doc["requests"], 10_001);
        assert_eq!(doc["errors"], 1);
        assert_eq!(doc["errors_by_code"]["io"], 1);
        assert_eq!(doc["throughput"], 5000.5);
        let p99 = doc["latency_us"]["p99"].as_u64().unwrap();
        assert!((9_850..=9_950).contains(&p99), "{p99}");
        assert!(doc["uncorrected_latency_us"]["p99"].as_u64().unwrap() < p99);
        let spectrum = doc["spectrum"].as_array().unwrap();
        assert_eq!(spectrum.last().unwrap()[0], 100.0);
        let t = table(&info(), &s, None);
        assert!(t.contains("5000.5 req/s achieved of 5000 requested"));
        assert!(t.contains("errors by code: io 1"), "{t}");
    }
}
