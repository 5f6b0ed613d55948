//! The engine against the in-process null server on loopback: the
//! coordinated-omission correction, pipelined closed loops on both
//! protocols, and a server that goes away mid-run.

use loadgen::null::{NullOptions, NullServer};
use loadgen::proto::{ErrorKind, Protocol};
use loadgen::report::Percentiles;
use loadgen::run::{run, RunConfig};
use std::time::{Duration, Instant};

fn config(protocol: Protocol, server: &NullServer) -> RunConfig {
    RunConfig {
        target: format!("{}://{}", protocol.name(), server.addr()),
        protocol,
        addr: server.addr().to_string(),
        label: None,
        connections: 4,
        pipeline: 1,
        threads: 1,
        rate: 0.0,
        duration: Duration::from_millis(300),
        warmup: Duration::ZERO,
        drain: Duration::from_secs(2),
        value_size: 32,
        keys: 1000,
        get_ratio: 0.0,
        verify: false,
        control: String::new(),
        secret: None,
        verify_wait: Duration::ZERO,
        quiet: true,
        redis_wait: None,
        fill: false,
    }
}

#[test]
fn a_stalled_server_shows_in_corrected_latency_only() {
    // Replies are held back for 200 ms after every 1500 requests: at
    // 4000/s over 1 s that is two stalls, each delaying ~800 scheduled
    // requests (20% of the run) but only the 4 in flight when it began.
    let opts = NullOptions {
        protocol: Protocol::Rrstore,
        stall_every: 1500,
        stall: Duration::from_millis(200),
    };
    let server = NullServer::start("127.0.0.1:0", opts).unwrap();
    let mut cfg = config(Protocol::Rrstore, &server);
    cfg.rate = 4000.0;
    cfg.duration = Duration::from_secs(1);
    let out = run(&cfg).unwrap();
    let s = &out.stats;
    // Every request intended in the window was answered.
    assert_eq!((s.requests, s.error_total(), s.unfinished), (4000, 0, 0));
    let corrected = Percentiles::of(&s.corrected);
    let uncorrected = Percentiles::of(&s.uncorrected);
    assert!(corrected.p99 >= 100_000, "corrected {corrected:?}");
    assert!(
        uncorrected.p99 * 10 < corrected.p99,
        "uncorrected {uncorrected:?} vs corrected {corrected:?}"
    );
    // The handful in flight at each stall did wait ~200 ms: both see the max.
    assert!(uncorrected.max >= 150_000, "uncorrected {uncorrected:?}");
    server.stop().unwrap();
}

#[test]
fn closed_loop_pipelined_on_both_protocols() {
    for protocol in [Protocol::Rrstore, Protocol::Redis] {
        let server = NullServer::start("127.0.0.1:0", NullOptions::new(protocol)).unwrap();
        let mut cfg = config(protocol, &server);
        cfg.pipeline = 16;
        cfg.threads = 2;
        cfg.get_ratio = 0.5;
        cfg.warmup = Duration::from_millis(50);
        let out = run(&cfg).unwrap();
        let s = &out.stats;
        assert_eq!((s.error_total(), s.unfinished), (0, 0), "{protocol:?}");
        assert!(s.requests > 1000, "{protocol:?}: {}", s.requests);
        assert!(s.completed_in_window > 1000);
        // Closed loop: measured from the actual send either way.
        assert_eq!(
            Percentiles::of(&s.corrected),
            Percentiles::of(&s.uncorrected)
        );
        // Everything sent (warmup included) was answered by the server.
        assert_eq!(server.stop().unwrap(), s.sent, "{protocol:?}");
    }
}

#[test]
fn set_then_wait_pairs_count_as_one_request() {
    // The null server answers `WAIT N 0` with `:N`. Every SET of the run is
    // followed by a WAIT: the server answers two commands per request.
    for (get_ratio, pipeline) in [(0.0, 1), (0.0, 8), (0.4, 8)] {
        let server = NullServer::start("127.0.0.1:0", NullOptions::new(Protocol::Redis)).unwrap();
        let mut cfg = config(Protocol::Redis, &server);
        cfg.redis_wait = Some(2);
        cfg.pipeline = pipeline;
        cfg.get_ratio = get_ratio;
        let out = run(&cfg).unwrap();
        let s = &out.stats;
        let what = format!("get ratio {get_ratio}, pipeline {pipeline}");
        assert_eq!((s.error_total(), s.unfinished), (0, 0), "{what}");
        assert!(s.requests > 500, "{what}: {}", s.requests);
        let answered = server.stop().unwrap();
        if get_ratio == 0.0 {
            assert_eq!(answered, 2 * s.sent, "{what}");
        } else {
            assert!(s.sent < answered && answered < 2 * s.sent, "{what}");
        }
    }
}

#[test]
fn a_fill_sends_each_id_once_and_stops() {
    let server = NullServer::start("127.0.0.1:0", NullOptions::new(Protocol::Rrstore)).unwrap();
    let mut cfg = config(Protocol::Rrstore, &server);
    cfg.fill = true;
    cfg.keys = 5003;
    cfg.pipeline = 16;
    cfg.get_ratio = 0.5;
    cfg.duration = Duration::from_secs(30);
    let t0 = Instant::now();
    let out = run(&cfg).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10), "it did not stop");
    let s = &out.stats;
    assert_eq!((s.requests, s.sent, s.error_total()), (5003, 5003, 0));
    assert_eq!(s.completed_in_window, 5003);
    // Measured until the last answer, not over the 30 s asked for.
    assert!(out.info.duration_s > 0.0 && out.info.duration_s < 10.0);
    assert_eq!(server.stop().unwrap(), 5003);
}

#[test]
fn a_server_that_goes_away_leaves_errors_and_unfinished_requests() {
    let server = NullServer::start("127.0.0.1:0", NullOptions::new(Protocol::Rrstore)).unwrap();
    let mut cfg = config(Protocol::Rrstore, &server);
    cfg.rate = 2000.0;
    cfg.duration = Duration::from_secs(1);
    cfg.drain = Duration::from_millis(300);
    let runner = std::thread::spawn(move || run(&cfg));
    // Stop the server once it has answered a quarter of the run.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.answered() < 500 {
        assert!(Instant::now() < deadline, "the server got no load");
        std::thread::sleep(Duration::from_millis(5));
    }
    let answered = server.stop().unwrap();
    let out = runner.join().unwrap().unwrap();
    let s = &out.stats;
    let io = s.errors[ErrorKind::Io.index()];
    // Every scheduled request is accounted for: answered, failed with its
    // connection, or never sent because the connection stayed down.
    assert_eq!(s.requests + s.unfinished, 2000);
    assert_eq!(s.requests - io, answered);
    assert!(s.unfinished > 1000, "unfinished {}", s.unfinished);
    assert!(out.connect_failures > 0, "re-dials should have failed");
}
