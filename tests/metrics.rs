//! `--metrics`: the LB and a worker serve Prometheus text on `/metrics`,
//! refreshed once a second, with the figures the issue asks for.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The `http://ADDR/metrics` address a process logged, once it has.
fn metrics_addr(log: &str) -> Option<String> {
    log.lines()
        .find_map(|l| l.split("metrics on http://").nth(1))
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .map(str::to_string)
}

/// A plain HTTP/1.0 GET; the body, if the status is 200.
fn scrape(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_string()))
}

/// The value of the first sample whose line starts with `prefix`.
fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn the_lb_and_workers_serve_prometheus_metrics() {
    let mut c = TestCluster::start_with("metrics", 0, &["--metrics", "127.0.0.1:0"]);
    c.worker_args = vec!["--metrics".into(), "127.0.0.1:0".into()];
    for _ in 0..2 {
        c.add_active_worker();
    }
    let records: Vec<(u64, Vec<u8>)> = (0..50).map(|id| (id, content(id, 1))).collect();
    put_all(&mut c.client(), &records, 8);

    let mut lb = None;
    wait_until(ACTIVE_TIMEOUT, "the LB's metrics address", || {
        lb = metrics_addr(&c.lb_log());
        lb.is_some()
    });
    let lb = lb.unwrap_or_default();
    let mut text = String::new();
    wait_until(ACTIVE_TIMEOUT, "the LB's metrics to count 50 PUTs", || {
        text = scrape(&lb, "/metrics").unwrap_or_default();
        value(&text, "rrstore_lb_requests_put_total ") == Some(50.0)
    });
    assert!(
        text.contains("# TYPE rrstore_lb_requests_put_total counter"),
        "{text}"
    );
    assert!(
        text.contains("rrstore_lb_request_latency_seconds{quantile=\"0.99\"}"),
        "{text}"
    );
    assert!(text.contains("rrstore_lb_in_flight "), "{text}");
    for id in &c.ids {
        assert!(
            text.contains(&format!("rrstore_lb_worker_records{{id=\"{id}\"")),
            "worker {id} missing:\n{text}"
        );
        assert!(text.contains(&format!("rrstore_lb_worker_lag_records{{id=\"{id}\"}}")));
    }
    assert!(scrape(&lb, "/nothing").is_none(), "only /metrics is served");

    // A worker's own view: its store and its peers' acknowledgements.
    let mut w = None;
    wait_until(ACTIVE_TIMEOUT, "a worker's metrics address", || {
        w = std::fs::read_dir(c.test_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("worker-"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .find_map(|log| metrics_addr(&log));
        w.is_some()
    });
    let w = w.unwrap_or_default();
    wait_until(
        ACTIVE_TIMEOUT,
        "the worker's metrics to show 50 records",
        || {
            text = scrape(&w, "/metrics").unwrap_or_default();
            text.lines()
                .any(|l| l.starts_with("rrstore_worker_records{") && l.ends_with(" 50"))
        },
    );
    assert!(text.contains("rrstore_worker_phase{"), "{text}");
    assert!(
        text.contains("rrstore_worker_peer_unacked_records{"),
        "{text}"
    );
    assert!(text.contains("rrstore_worker_log_bytes{"), "{text}");
}

/// SIGCONTs a stopped worker however the test ends.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child, which has not been reaped.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[test]
fn replication_lag_in_seconds_grows_while_a_peer_is_paused() {
    // A long worker timeout: the paused worker stays a member (and a peer).
    let mut c = TestCluster::start_with("lag_seconds", 0, &["--worker-timeout-ms", "60000"]);
    c.worker_args = vec!["--metrics".into(), "127.0.0.1:0".into()];
    let (a, b) = (c.add_active_worker(), c.add_active_worker());
    let log_of = |id: u32| {
        let dir = &c.workers[&id].data_dir;
        std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default()
    };
    let mut addr = None;
    wait_until(ACTIVE_TIMEOUT, "worker A's metrics address", || {
        addr = metrics_addr(&log_of(a));
        addr.is_some()
    });
    let addr = addr.unwrap_or_default();
    let lag_to_b = format!("rrstore_worker_peer_lag_seconds{{id=\"{a}\",peer=\"{b}\"}} ");
    let lag = || value(&scrape(&addr, "/metrics").unwrap_or_default(), &lag_to_b);

    let resume = Resume(c.workers[&b].child.id() as i32);
    // SAFETY: kill(2) on our own child; `resume` continues it.
    unsafe { libc::kill(resume.0, libc::SIGSTOP) };
    // Half the PUTs go to the paused worker and wait there; the other half
    // are stored by A, which B cannot acknowledge.
    let lb = c.lb_addr.clone();
    let writer = std::thread::spawn(move || {
        let records: Vec<(u64, Vec<u8>)> = (0..40).map(|id| (id, content(id, 3))).collect();
        put_all(&mut connect(&lb), &records, 8);
    });
    wait_until(ACTIVE_TIMEOUT, "A's lag to paused B to pass 1 s", || {
        lag().is_some_and(|s| s >= 1.0)
    });
    drop(resume);
    writer.join().expect("writer");
    wait_until(CONVERGE_TIMEOUT, "A's lag to B to return to 0", || {
        lag() == Some(0.0)
    });
}
