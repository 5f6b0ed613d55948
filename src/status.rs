//! `--http ADDR` on the LB: a live status page.
//!
//! Routes ([`ROUTES`], served by a [`crate::http::Server`] thread): `/` is
//! [`PAGE`], one self-contained HTML file (`status/page.html`: inline CSS
//! and JS, nothing fetched from elsewhere) that polls `/status.json` every
//! second and draws it; `/status.json` is the LB's latest snapshot, which
//! the loop renders once a second ([`crate::metrics::REFRESH`]) with
//! [`Tracker::render`] and hands over through the SPSC ring.
//!
//! This module is the pure part, no I/O: the rows the LB fills in
//! ([`WorkerRow`], [`Snapshot`]) and the [`Tracker`], which keeps what one
//! snapshot needs of the ones before: counters for rates, the recent
//! membership events, the last redistribution, and since when the digests
//! have disagreed.
//!
//! Invariants:
//! - Rates are deltas between two renderings divided by the time between
//!   them; a counter that went down (a worker that registered again) gives 0.
//! - "agree" means every active worker reported the same store digest. Two
//!   workers whose reported vectors differ are still receiving records
//!   ("converging"); equal vectors with different digests are "diverged"
//!   only once that has lasted [`DIVERGED_AFTER`], because reports of
//!   different workers arrive at different moments.
//! - At most [`EVENTS`] events are kept, the newest first in the JSON.

use crate::http::Route;
use crate::msg::{Status, Vector};
use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The page: HTML, CSS and JS in one file, compiled into the binary.
pub const PAGE: &str = include_str!("status/page.html");

/// Where the snapshot is served.
pub const JSON_PATH: &str = "/status.json";

/// The page and its data.
pub const ROUTES: [Route; 2] = [
    Route::fixed("/", "text/html; charset=utf-8", PAGE),
    Route::live(JSON_PATH, "application/json"),
];

/// Recent membership events kept for the page.
pub const EVENTS: usize = 20;

/// Equal vectors with different digests for this long are a divergence.
pub const DIVERGED_AFTER: Duration = Duration::from_secs(5);

/// One worker as the LB sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRow {
    pub id: u32,
    pub origin: u32,
    pub addr: String,
    pub status: Status,
    /// How long it has had this status.
    pub since: Duration,
    /// Records in its store, from its latest report.
    pub records: u64,
    /// Acknowledged records it does not hold yet (from its latest report).
    pub lag: u64,
    /// Requests the round robin gave it since it registered.
    pub dispatched: u64,
    /// Its store digest, from its latest report.
    pub digest: Option<[u8; 16]>,
    pub vector: Vector,
    /// Since the LB last read anything from it (`None`: not connected).
    pub last_heard: Option<Duration>,
}

/// Everything the LB hands over for one rendering.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub uptime: Duration,
    /// Wall clock, milliseconds since the Unix epoch.
    pub now_ms: u64,
    /// About the LB itself: addresses and settings, shown as given.
    pub lb: Vec<(&'static str, String)>,
    /// `rrstore stats`: counters, gauges, `latency_us_*` and
    /// `latency_samples` (the last two go to `latency_us` in the JSON).
    pub counters: Vec<(String, u64)>,
    pub workers: Vec<WorkerRow>,
}

/// Whether the active workers' stores agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agreement {
    /// No active worker has reported yet.
    Unknown,
    Agree,
    /// Digests differ, and so do vectors (or not for long yet).
    Converging,
    /// Equal vectors, different digests, for [`DIVERGED_AFTER`].
    Diverged,
}

impl Agreement {
    pub fn name(self) -> &'static str {
        match self {
            Agreement::Unknown => "unknown",
            Agreement::Agree => "agree",
            Agreement::Converging => "converging",
            Agreement::Diverged => "diverged",
        }
    }
}

/// A membership change, as the page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at_ms: u64,
    pub worker: u32,
    pub text: String,
}

/// The last worker that caught up and entered the round robin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Join {
    pub worker: u32,
    /// When it became active (ms since the Unix epoch).
    pub at_ms: u64,
    /// From its registration to its activation.
    pub took: Duration,
    /// Records it held when it became active: what it last reported, then
    /// its first report after activation (a joiner sends READY before the
    /// REPORT of the same loop turn).
    pub records: u64,
}

/// What a rendering leaves for the next one's rates.
#[derive(Debug)]
struct Previous {
    at: Instant,
    counters: Vec<(String, u64)>,
    /// Each worker's `dispatched`.
    dispatched: Vec<(u32, u64)>,
}

/// State kept between snapshots.
#[derive(Debug, Default)]
pub struct Tracker {
    prev: Option<Previous>,
    events: VecDeque<Event>,
    last_join: Option<Join>,
    /// The last joiner has not reported since it became active.
    join_unreported: bool,
    /// Since when equal vectors have had different digests.
    mismatch_since: Option<Instant>,
}

/// Counters whose rate per second the snapshot carries.
fn rated(name: &str) -> bool {
    ["requests_", "responses_", "errors_"]
        .iter()
        .any(|p| name.starts_with(p))
        || name == "redispatched"
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn rate(now: u64, before: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    // One decimal is all the page shows; it also keeps the JSON short.
    (now.saturating_sub(before) as f64 / secs * 10.0).round() / 10.0
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// Notes a membership change of `worker` at `at_ms`.
    pub fn event(&mut self, at_ms: u64, worker: u32, text: String) {
        if self.events.len() == EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            at_ms,
            worker,
            text,
        });
    }

    /// Notes that `join.worker` caught up and became active.
    pub fn joined(&mut self, join: Join) {
        self.event(
            join.at_ms,
            join.worker,
            format!("caught up in {} ms: active", join.took.as_millis()),
        );
        self.last_join = Some(join);
        self.join_unreported = true;
    }

    /// Notes a worker's report: the first one of the last joiner after its
    /// activation says how many records it was caught up with.
    pub fn reported(&mut self, worker: u32, records: u64) {
        if let Some(j) = self.last_join.as_mut().filter(|j| j.worker == worker) {
            if std::mem::take(&mut self.join_unreported) {
                j.records = records;
            }
        }
    }

    pub fn last_join(&self) -> Option<Join> {
        self.last_join
    }

    /// Whether the active workers agree, updating how long equal vectors
    /// have had different digests.
    pub fn agreement(&mut self, now: Instant, workers: &[WorkerRow]) -> Agreement {
        let reported: Vec<&WorkerRow> = workers
            .iter()
            .filter(|w| w.status == Status::Active && w.digest.is_some())
            .collect();
        let Some(first) = reported.first() else {
            self.mismatch_since = None;
            return Agreement::Unknown;
        };
        if reported.iter().all(|w| w.digest == first.digest) {
            self.mismatch_since = None;
            return Agreement::Agree;
        }
        // Equal vectors: the same records were applied, so the stores must
        // be the same. Any two that differ show records still travelling.
        let same_records = reported.iter().all(|w| w.vector == first.vector);
        if !same_records {
            self.mismatch_since = None;
            return Agreement::Converging;
        }
        let since = *self.mismatch_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= DIVERGED_AFTER {
            Agreement::Diverged
        } else {
            Agreement::Converging
        }
    }

    /// The JSON of `snap`, with rates since the previous call.
    pub fn render(&mut self, now: Instant, snap: &Snapshot) -> String {
        let agreement = self.agreement(now, &snap.workers);
        let (secs, prev_counters, prev_dispatched) = match self.prev.take() {
            Some(p) => (
                now.saturating_duration_since(p.at).as_secs_f64(),
                p.counters,
                p.dispatched,
            ),
            None => (0.0, Vec::new(), Vec::new()),
        };
        let mut rates = Map::new();
        let mut counters = Map::new();
        let mut latency = Map::new();
        for (name, value) in &snap.counters {
            let quantile = match name.strip_prefix("latency_us_") {
                Some(q) => Some(q),
                None => (name == "latency_samples").then_some("samples"),
            };
            if let Some(q) = quantile {
                latency.insert(q.to_string(), json!(value));
                continue;
            }
            counters.insert(name.clone(), json!(value));
            if rated(name) {
                let before = prev_counters
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(*value, |(_, v)| *v);
                rates.insert(name.clone(), json!(rate(*value, before, secs)));
            }
        }
        let workers: Vec<Value> = snap
            .workers
            .iter()
            .map(|w| {
                let before = prev_dispatched
                    .iter()
                    .find(|(id, _)| *id == w.id)
                    .map_or(w.dispatched, |(_, d)| *d);
                json!({
                    "id": w.id,
                    "origin": w.origin,
                    "addr": w.addr,
                    "status": w.status.name(),
                    "since_s": w.since.as_secs(),
                    "records": w.records,
                    "lag": w.lag,
                    "requests": w.dispatched,
                    "rate": rate(w.dispatched, before, secs),
                    "digest": w.digest.map(|d| hex(&d)),
                    "vector": w.vector,
                    "last_heard_ms": w.last_heard.map(|d| d.as_millis() as u64),
                })
            })
            .collect();
        let active = snap
            .workers
            .iter()
            .filter(|w| w.status == Status::Active)
            .count();
        let lb: Map<String, Value> = snap
            .lb
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let doc = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "now_ms": snap.now_ms,
            "uptime_s": snap.uptime.as_secs(),
            "lb": lb,
            "counters": counters,
            "rates": rates,
            "latency_us": latency,
            "workers": workers,
            "digests": {
                "state": agreement.name(),
                "active": active,
            },
            "last_join": self.last_join.map(|j| json!({
                "worker": j.worker,
                "at_ms": j.at_ms,
                "took_ms": j.took.as_millis() as u64,
                "records": j.records,
            })),
            "events": self.events.iter().rev().map(|e| json!({
                "at_ms": e.at_ms,
                "worker": e.worker,
                "text": e.text,
            })).collect::<Vec<Value>>(),
        });
        self.prev = Some(Previous {
            at: now,
            counters: snap.counters.clone(),
            dispatched: snap.workers.iter().map(|w| (w.id, w.dispatched)).collect(),
        });
        doc.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u32, status: Status, digest: u8, vector: Vector) -> WorkerRow {
        WorkerRow {
            id,
            origin: 1,
            addr: format!("127.0.0.1:{}", 7000 + id),
            status,
            since: Duration::from_secs(3),
            records: 10,
            lag: 0,
            dispatched: 0,
            digest: Some([digest; 16]),
            vector,
            last_heard: Some(Duration::from_millis(120)),
        }
    }

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    #[test]
    fn strings_from_the_network_are_escaped() {
        let mut w = row(1, Status::Active, 1, vec![(1, 2)]);
        w.addr = "evil\"</script>\\\n\u{1}é".into();
        let snap = Snapshot {
            lb: vec![("control", "127.0.0.1:\"5060".into())],
            workers: vec![w.clone()],
            ..Snapshot::default()
        };
        let mut t = Tracker::new();
        t.event(5, 1, "registered from \"x\"\n".into());
        let text = t.render(Instant::now(), &snap);
        assert!(
            text.contains(r#""addr":"evil\"</script>\\\n\u0001é""#),
            "{text}"
        );
        assert!(!text.contains('\n'), "one line: {text}");
        let v = parse(&text);
        assert_eq!(v["workers"][0]["addr"], json!(w.addr));
        assert_eq!(v["lb"]["control"], json!("127.0.0.1:\"5060"));
        assert_eq!(v["events"][0]["text"], json!("registered from \"x\"\n"));
    }

    #[test]
    fn the_snapshot_has_every_figure_the_page_shows() {
        let mut t = Tracker::new();
        t.joined(Join {
            worker: 3,
            at_ms: 1_700_000_000_000,
            took: Duration::from_millis(1234),
            records: 500,
        });
        let mut inactive = row(2, Status::Inactive, 9, vec![]);
        inactive.last_heard = None;
        inactive.digest = None;
        let snap = Snapshot {
            uptime: Duration::from_secs(61),
            now_ms: 1_700_000_001_000,
            lb: vec![("clients", "127.0.0.1:5059".into())],
            counters: vec![
                ("requests_put".into(), 7),
                ("in_flight".into(), 2),
                ("latency_us_p99".into(), 850),
                ("latency_samples".into(), 9),
            ],
            workers: vec![row(1, Status::Active, 4, vec![(1, 5)]), inactive],
        };
        let v = parse(&t.render(Instant::now(), &snap));
        assert_eq!(v["uptime_s"], json!(61));
        assert_eq!(v["counters"]["requests_put"], json!(7));
        assert_eq!(v["counters"]["in_flight"], json!(2));
        assert!(v["counters"].get("latency_us_p99").is_none());
        assert_eq!(v["latency_us"]["p99"], json!(850));
        assert_eq!(v["latency_us"]["samples"], json!(9));
        assert_eq!(
            v["rates"]["requests_put"],
            json!(0.0),
            "no rate before a second rendering"
        );
        assert!(v["rates"].get("in_flight").is_none(), "gauges have no rate");
        let w = &v["workers"][0];
        assert_eq!(w["status"], json!("active"));
        assert_eq!(w["digest"], json!("04".repeat(16)));
        assert_eq!(w["vector"], json!([[1, 5]]));
        assert_eq!(w["last_heard_ms"], json!(120));
        assert_eq!(v["workers"][1]["status"], json!("inactive"));
        assert_eq!(v["workers"][1]["digest"], Value::Null);
        assert_eq!(v["workers"][1]["last_heard_ms"], Value::Null);
        assert_eq!(v["digests"], json!({"state": "agree", "active": 1}));
        assert_eq!(
            v["last_join"],
            json!({"worker": 3, "at_ms": 1_700_000_000_000u64, "took_ms": 1234, "records": 500})
        );
        assert_eq!(v["events"][0]["worker"], json!(3));
        // Its first report after activation gives its record count; later
        // ones (new writes) do not change the redistribution's.
        t.reported(1, 7);
        t.reported(3, 600);
        t.reported(3, 601);
        assert_eq!(t.last_join().map(|j| j.records), Some(600));
    }

    #[test]
    fn rates_are_deltas_over_time_and_never_negative() {
        let mut t = Tracker::new();
        let t0 = Instant::now();
        let mut w = row(1, Status::Active, 1, vec![]);
        w.dispatched = 100;
        let mut snap = Snapshot {
            counters: vec![("requests_put".into(), 1000), ("errors_busy".into(), 5)],
            workers: vec![w],
            ..Snapshot::default()
        };
        t.render(t0, &snap);
        snap.counters = vec![("requests_put".into(), 1500), ("errors_busy".into(), 5)];
        snap.workers[0].dispatched = 300;
        let v = parse(&t.render(t0 + Duration::from_secs(2), &snap));
        assert_eq!(v["rates"]["requests_put"], json!(250.0));
        assert_eq!(v["rates"]["errors_busy"], json!(0.0));
        assert_eq!(v["workers"][0]["rate"], json!(100.0));
        assert_eq!(v["workers"][0]["requests"], json!(300));
        // The worker registered again: its count restarted.
        snap.workers[0].dispatched = 10;
        let v = parse(&t.render(t0 + Duration::from_secs(3), &snap));
        assert_eq!(v["workers"][0]["rate"], json!(0.0));
    }

    #[test]
    fn digests_agree_converge_or_diverge() {
        let mut t = Tracker::new();
        let t0 = Instant::now();
        let v1 = vec![(1, 10), (2, 7)];
        assert_eq!(t.agreement(t0, &[]), Agreement::Unknown);
        // Only active workers count: a joiner or an inactive one may differ.
        let rows = [
            row(1, Status::Active, 1, v1.clone()),
            row(2, Status::Active, 1, v1.clone()),
            row(3, Status::Joining, 2, vec![]),
            row(4, Status::Inactive, 3, vec![]),
        ];
        assert_eq!(t.agreement(t0, &rows), Agreement::Agree);
        // Different vectors: records still on their way.
        let moving = [
            row(1, Status::Active, 1, v1.clone()),
            row(2, Status::Active, 2, vec![(1, 10), (2, 8)]),
        ];
        assert_eq!(t.agreement(t0, &moving), Agreement::Converging);
        assert_eq!(
            t.agreement(t0 + Duration::from_secs(60), &moving),
            Agreement::Converging,
            "however long records keep moving"
        );
        // Same records, different stores: diverged once it lasts.
        let split = [
            row(1, Status::Active, 1, v1.clone()),
            row(2, Status::Active, 2, v1.clone()),
        ];
        let t1 = t0 + Duration::from_secs(100);
        assert_eq!(t.agreement(t1, &split), Agreement::Converging);
        assert_eq!(
            t.agreement(t1 + Duration::from_secs(4), &split),
            Agreement::Converging
        );
        assert_eq!(
            t.agreement(t1 + DIVERGED_AFTER, &split),
            Agreement::Diverged
        );
        assert_eq!(
            t.agreement(t1 + DIVERGED_AFTER, &rows),
            Agreement::Agree,
            "and agree again once they do"
        );
        assert_eq!(
            t.agreement(t1 + DIVERGED_AFTER * 2, &split),
            Agreement::Converging,
            "the clock starts again"
        );
    }

    #[test]
    fn only_the_latest_events_are_kept_newest_first() {
        let mut t = Tracker::new();
        for i in 0..(EVENTS as u64 + 5) {
            t.event(i, i as u32, format!("event {i}"));
        }
        let v = parse(&t.render(Instant::now(), &Snapshot::default()));
        let events = v["events"].as_array().expect("events");
        assert_eq!(events.len(), EVENTS);
        assert_eq!(events[0]["text"], json!(format!("event {}", EVENTS + 4)));
        assert_eq!(events[EVENTS - 1]["text"], json!("event 5"));
        assert_eq!(v["last_join"], Value::Null);
    }

    #[test]
    fn the_page_is_self_contained() {
        assert!(PAGE.starts_with("<!DOCTYPE html>"));
        assert!(PAGE.contains(JSON_PATH));
        for external in ["http://", "https://", "src=", "<link"] {
            assert!(
                !PAGE.contains(external),
                "the page must fetch nothing: {external}"
            );
        }
    }
}
