//! Worker faults the LB must notice and mask: a paused process (SIGSTOP)
//! whose connection stays open, and the requests it held.

mod common;

use common::*;
use rrstore::client::{ClientError, Reply};
use rrstore::cluster::signal;
use rrstore::msg::Status;
use rrstore::wire::Request;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// SIGCONTs a stopped worker however the test ends, so that no stopped
/// process outlives it (the cluster's own cleanup cannot stop one).
struct Resume<'a>(&'a std::process::Child);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

#[test]
fn a_paused_worker_is_declared_dead_and_its_requests_are_stored_elsewhere() {
    const TOTAL: u64 = 6_000;
    const PAUSE_AT: u64 = 1_500;
    const RESUME_AT: u64 = 4_000;
    let c = TestCluster::start_with("paused_worker", 3, &["--worker-timeout-ms", "1000"]);
    let victim = c.ids[1];
    let writer = PhasedWriter::start(&c.lb_addr, [0, PAUSE_AT, RESUME_AT, TOTAL], 21, 64);
    writer.reached(STEP_TIMEOUT);

    // SIGSTOP while PUTs are in flight to it: its socket stays open, so
    // only missing heartbeats can tell the LB.
    let child = &c.workers[&victim].child;
    signal(child, libc::SIGSTOP);
    let resume = Resume(child);
    let paused = Instant::now();
    wait_until(
        STEP_TIMEOUT,
        "the LB to declare the paused worker dead",
        || c.status(victim) == Some(Status::Inactive),
    );
    let noticed = paused.elapsed();
    assert!(
        noticed < Duration::from_secs(5),
        "a paused worker was noticed only after {noticed:?}"
    );
    let results = writer.resume_and_join();

    // Every request got STORED: those the paused worker held were stored
    // by another worker, under the same version.
    for ((id, _), reply) in &results {
        assert!(
            matches!(reply, Ok(Reply::Stored { .. })),
            "PUT id={id}: {reply:?}"
        );
    }
    let stats = c.stats();
    assert!(stats["workers_declared_dead"] >= 1, "{stats:?}");
    assert!(stats["redispatched"] >= 1, "{stats:?}");
    assert_eq!(stats["responses_timeout"], 0, "{stats:?}");

    // Woken up, it finds its LB connection closed: its late answers match
    // nothing, and it registers again and catches up.
    drop(resume);
    c.wait_active(&[victim], ACTIVE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let expected: BTreeMap<u64, Vec<u8>> = results.into_iter().map(|(r, _)| r).collect();
    assert_records(&c.converged(&c.ids), &expected);
    assert!(
        c.lb_log().contains(&format!("worker {victim} silent for")),
        "{}",
        c.lb_log()
    );
}

/// Every worker log line in the test's directory that contains `needle`.
fn worker_log_lines(c: &TestCluster, needle: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(c.test_dir()) else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("worker-") && name.ends_with(".log") {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            lines.extend(
                text.lines()
                    .filter(|l| l.contains(needle))
                    .map(str::to_string),
            );
        }
    }
    lines
}

#[test]
fn a_peer_that_stops_reading_is_cut_off_and_catches_up_later() {
    const RECORDS: u64 = 64;
    const SIZE: usize = 900 * 1024;
    // The LB must not declare the paused worker dead (that would also drop
    // the peers' links to it): this is about the peers' own bound.
    let mut c = TestCluster::start_with("stuck_peer", 0, &["--worker-timeout-ms", "600000"]);
    c.worker_args = vec!["--peer-buffer-bytes".into(), (1u64 << 20).to_string()];
    for _ in 0..3 {
        c.add_active_worker();
    }
    let victim = c.ids[2];
    let child = &c.workers[&victim].child;
    signal(child, libc::SIGSTOP);
    let resume = Resume(child);

    // About 2/3 of these are stored by the two running workers, which must
    // each queue ~19 MiB for the paused one: past the 1 MiB bound even
    // after the kernel's socket buffers have taken their share.
    let records: Vec<(u64, Vec<u8>)> = (0..RECORDS).map(|id| (id, vec![id as u8; SIZE])).collect();
    let lb = c.lb_addr.clone();
    let sent = records.clone();
    let writer = std::thread::spawn(move || {
        let mut client = connect(&lb);
        pipeline(&mut client, &puts(&sent), RECORDS as usize)
    });
    wait_until(
        STEP_TIMEOUT,
        "a running worker to cut off the paused peer",
        || !worker_log_lines(&c, &format!("peer {victim} is not reading")).is_empty(),
    );
    drop(resume);
    let replies = writer.join().expect("writer thread");
    for ((id, _), reply) in records.iter().zip(&replies) {
        assert!(
            matches!(reply, Ok(Reply::Stored { .. })),
            "PUT id={id}: {reply:?}"
        );
    }
    assert_records(&c.converged(&c.ids), &records.into_iter().collect());
}

#[test]
fn with_ack_all_stored_waits_until_every_active_worker_holds_the_record() {
    // The LB must not declare the paused worker dead during this test.
    let c = TestCluster::start_with(
        "ack_all_waits",
        3,
        &["--ack", "all", "--worker-timeout-ms", "600000"],
    );
    let (running, paused) = ([c.ids[0], c.ids[1]], c.ids[2]);
    let child = &c.workers[&paused].child;
    signal(child, libc::SIGSTOP);
    let resume = Resume(child);

    // Round robin: one PUT to each worker.
    let mut client = c.client();
    for id in 1..=3u64 {
        client.send(&Request::Put {
            id,
            content: b"all",
        });
    }
    client.flush().expect("send");
    wait_until(
        STEP_TIMEOUT,
        "the running workers to hold both of their records",
        || {
            running
                .iter()
                .all(|&w| c.dump(w).keys().filter(|id| (1..=3).contains(*id)).count() >= 2)
        },
    );
    // Stored and replicated between the two running workers, but not on
    // the paused one: no STORED may come. (In `local` mode two would.)
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    match client.recv() {
        Err(ClientError::TimedOut) => {}
        other => panic!("an answer before every active worker held the record: {other:?}"),
    }
    drop(resume);
    client.set_read_timeout(None).expect("timeout");
    for _ in 1..=3 {
        let (_, reply) = client
            .recv()
            .expect("STORED after the paused worker resumed");
        assert!(matches!(reply, Ok(Reply::Stored { .. })), "{reply:?}");
    }
    for id in 1..=3u64 {
        assert_eq!(
            c.dump(paused).get(&id).map(Vec::as_slice),
            Some(&b"all"[..])
        );
    }
}

#[test]
fn with_ack_all_writes_survive_the_permanent_loss_of_a_worker() {
    let mut c = TestCluster::start_with(
        "ack_all_loss",
        3,
        &["--ack", "all", "--worker-timeout-ms", "1000"],
    );
    let (lost, paused) = (c.ids[0], c.ids[2]);
    // A paused worker holds up STORED only until the LB declares it dead.
    let child = &c.workers[&paused].child;
    signal(child, libc::SIGSTOP);
    let resume = Resume(child);
    let records: Vec<(u64, Vec<u8>)> = (0..600).map(|id| (id, content(id, 5))).collect();
    let mut client = c.client();
    let replies = put_all(&mut client, &records, 32);
    assert!(replies.contains(&lost), "{replies:?}");
    assert!(c.stats()["workers_declared_dead"] >= 1);
    drop(resume);
    c.wait_active(&[paused], ACTIVE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));

    // Lose a worker that acknowledged writes, data directory and all: the
    // others hold every record it confirmed.
    let gone = c.kill_worker(lost).expect("kill -9");
    std::fs::remove_dir_all(&gone.data_dir).expect("remove its data dir");
    let rest: Vec<u32> = c.ids.iter().copied().filter(|&w| w != lost).collect();
    wait_until(STEP_TIMEOUT, "the LB to notice the loss", || {
        c.status(lost) == Some(Status::Inactive)
    });
    assert_records(&c.converged(&rest), &last_writes(&records));
}

/// SIGCONTs stopped processes however the test ends.
struct ResumePids(Vec<u32>);

impl Drop for ResumePids {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: kill(2) on our own unreaped child; no memory is touched.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
        }
    }
}

/// SIGCONTs a stopped LB however the test ends.
struct ResumeLb<'a>(&'a TestCluster);

impl Drop for ResumeLb<'_> {
    fn drop(&mut self) {
        self.0.signal_lb(libc::SIGCONT);
    }
}

#[test]
fn workers_notice_a_stopped_lb_and_register_again_when_it_resumes() {
    let c = TestCluster::start("stopped_lb", 3);
    let records: Vec<(u64, Vec<u8>)> = (0..300).map(|id| (id, content(id, 9))).collect();
    put_all(&mut c.client(), &records, 16);

    // A stopped LB keeps its sockets open: only missing heartbeats tell.
    c.signal_lb(libc::SIGSTOP);
    let resume = ResumeLb(&c);
    wait_until(STEP_TIMEOUT, "every worker to give up on the LB", || {
        worker_log_lines(&c, "nothing from the LB").len() >= 3
    });
    drop(resume);
    c.wait_active(&c.ids, ACTIVE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let more: Vec<(u64, Vec<u8>)> = (300..400).map(|id| (id, content(id, 9))).collect();
    put_all(&mut c.client(), &more, 16);
    let mut expected = last_writes(&records);
    expected.extend(last_writes(&more));
    assert_records(&c.converged(&c.ids), &expected);
}

#[test]
fn a_worker_with_corruption_mid_log_serves_none_of_it_and_resyncs_from_its_peers() {
    let mut c = TestCluster::start("corrupt_mid_log", 3);
    let records: Vec<(u64, Vec<u8>)> = (0..2_000)
        .map(|id| (id, format!("record {id} {}", "x".repeat(40)).into_bytes()))
        .collect();
    put_all(&mut c.client(), &records, 32);
    let victim = c.ids[0];
    c.converged(&c.ids);
    let gone = c.kill_worker(victim).expect("kill -9");

    // Flip one byte in the middle of the log: a record there fails its
    // CRC, and nothing after it can be trusted either.
    let log = gone.data_dir.join("records.log");
    let mut bytes = std::fs::read(&log).expect("read the log");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5A;
    std::fs::write(&log, &bytes).expect("write the log");

    let back = c.add_worker_at(&gone.data_dir).expect("restart");
    assert_eq!(back, victim);
    c.wait_active(&[victim], ACTIVE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let cut = worker_log_lines(&c, "untrusted bytes");
    assert!(!cut.is_empty(), "the restarted worker did not cut its log");
    // Every worker, the restarted one included, holds exactly what was
    // written: the damaged record came back from a peer, not from disk.
    assert_records(&c.converged(&c.ids), &last_writes(&records));
}

#[test]
fn a_restarted_lb_never_gives_a_new_worker_the_id_of_one_not_yet_back() {
    let mut c = TestCluster::start("lb_restart_ids", 3);
    let records: Vec<(u64, Vec<u8>)> = (0..200).map(|id| (id, content(id, 4))).collect();
    put_all(&mut c.client(), &records, 16);
    // The old workers cannot re-register while stopped: the new LB must
    // still know their IDs are taken.
    let pids: Vec<u32> = c.ids.iter().map(|id| c.workers[id].child.id()).collect();
    let stopped = ResumePids(pids);
    for &pid in &stopped.0 {
        // SAFETY: kill(2) on our own unreaped child; no memory is touched.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
    }
    c.restart_lb().expect("a new LB on the same ports");
    let fresh = c.add_worker().expect("a new worker");
    drop(stopped);
    assert!(
        !c.ids.contains(&fresh),
        "the new worker got ID {fresh}, which belongs to a worker that had not re-registered"
    );
    let mut all = c.ids.clone();
    all.push(fresh);
    c.wait_active(&all, ACTIVE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_records(&c.converged(&all), &last_writes(&records));
}

#[test]
fn a_restarted_lb_activates_no_one_until_the_workers_it_listed_are_back() {
    let mut c = TestCluster::start("lb_restart_grace", 2);
    let records: Vec<(u64, Vec<u8>)> = (0..200).map(|id| (id, content(id, 5))).collect();
    put_all(&mut c.client(), &records, 16);
    let (first, second) = (c.ids[0], c.ids[1]);
    let stopped = ResumePids(vec![c.workers[&second].child.id()]);
    // SAFETY: kill(2) on our own unreaped child; no memory is touched.
    unsafe { libc::kill(stopped.0[0] as libc::pid_t, libc::SIGSTOP) };
    c.restart_lb().expect("a new LB on the same ports");
    // The first worker comes back at once, but the LB waits for the second
    // (it might hold records of the first's that the first's log lost)
    // until its grace is over.
    c.wait_active(&[first], ACTIVE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let log = c.lb_log_of(2);
    let over = log
        .find(&format!("not back: workers [{second}]"))
        .unwrap_or_else(|| panic!("no end of the grace waiting for {second}: {log}"));
    let active = log
        .find(&format!("worker {first} caught up"))
        .unwrap_or_else(|| panic!("worker {first} active, but not in the log: {log}"));
    assert!(over < active, "active inside the grace: {log}");
    drop(stopped);
    c.wait_active(&c.ids.clone(), ACTIVE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_records(&c.converged(&c.ids.clone()), &last_writes(&records));

    // With every worker alive the grace ends as soon as all are back.
    c.restart_lb().expect("a new LB on the same ports");
    c.wait_active(&c.ids.clone(), ACTIVE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let log = c.lb_log_of(3);
    assert!(
        log.contains("restart grace over: every worker listed before is back"),
        "{log}"
    );
}

/// Cuts a worker's log at its first record of an id in `ids`: as if a
/// machine crash had lost an unsynced tail holding those writes.
fn cut_log_at_first_of(log: &std::path::Path, ids: std::ops::Range<u64>) {
    let bytes = std::fs::read(log).expect("read the log");
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let kind = bytes[at + 8];
        // A record: kind 1, then origin:u32 seq:u64 version:u64 id:u64.
        if kind == 1 && at + 9 + 28 <= bytes.len() {
            let id = u64::from_be_bytes(bytes[at + 9 + 20..at + 9 + 28].try_into().unwrap());
            if ids.contains(&id) {
                break;
            }
        }
        at += 8 + len;
    }
    assert!(
        at < bytes.len(),
        "no record of {ids:?} in {}",
        log.display()
    );
    std::fs::write(log, &bytes[..at]).expect("cut the log");
}

/// The worker that restarts has lost the tail of its log (its newest
/// records, its own among them) while the only worker holding them is
/// down and the LB restarted (so nobody reachable knows what it lost).
/// It numbers its new records under a new origin, so the lost ones, which
/// the other worker brings back, are never taken for duplicates of new
/// ones: every write survives, in both stores.
#[test]
fn a_worker_that_lost_its_log_tail_never_reuses_the_identities_of_its_lost_records() {
    let mut c = TestCluster::start("lost_tail_origin", 2);
    let (first, second) = (c.ids[0], c.ids[1]);
    let batch = |ids: std::ops::Range<u64>, salt| -> Vec<(u64, Vec<u8>)> {
        ids.map(|id| (id, content(id, salt))).collect()
    };
    let (a, b, later) = (batch(0..200, 6), batch(200..400, 6), batch(400..600, 6));
    for records in [&a, &b] {
        put_all(&mut c.client(), records, 16);
        c.converged(&c.ids.clone());
    }
    let gone_first = c.kill_worker(first).expect("kill -9");
    cut_log_at_first_of(&gone_first.data_dir.join("records.log"), 200..400);
    let gone_second = c.kill_worker(second).expect("kill -9");
    c.restart_lb().expect("a new LB on the same ports");

    assert_eq!(
        c.add_worker_at(&gone_first.data_dir).expect("restart"),
        first
    );
    c.wait_active(&[first], ACTIVE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let log = c.lb_log_of(2);
    assert!(
        !log.contains(&format!("worker {first} (origin {first})")),
        "the restarted process numbers under its old origin: {log}"
    );
    put_all(&mut c.client(), &later, 16);
    assert_eq!(
        c.add_worker_at(&gone_second.data_dir).expect("restart"),
        second
    );
    c.wait_active(&[first, second], ACTIVE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut expected = last_writes(&a);
    expected.extend(last_writes(&b));
    expected.extend(last_writes(&later));
    assert_records(&c.converged(&[first, second]), &expected);
}

/// A restarted worker registers after the first pass over its log and
/// builds its store on other threads meanwhile (`recover.rs`); what comes
/// in during the build is held or deferred. These two tests act the moment
/// the worker has registered, on a log of 200,000 records: on this VM the
/// build then still has about 20 ms to go (the log lines are printed; the
/// tests hold whichever comes first).
#[test]
fn a_worker_told_to_leave_while_its_store_is_being_built_leaves_nothing_behind() {
    let mut c = TestCluster::start("leave_while_building", 2);
    let (keeper, leaver) = (c.ids[0], c.ids[1]);
    // The keeper goes down, and the leaver alone takes a batch large
    // enough that rebuilding its store takes a while.
    let gone_keeper = c.kill_worker(keeper).expect("kill -9");
    let records: Vec<(u64, Vec<u8>)> = (0..200_000).map(|id| (id, content(id, 12))).collect();
    put_all(&mut c.client(), &records, 64);
    // The leaver goes down too; the keeper comes back without the batch.
    let gone_leaver = c.kill_worker(leaver).expect("kill -9");
    assert_eq!(
        c.add_worker_at(&gone_keeper.data_dir).expect("restart"),
        keeper
    );
    // The leaver restarts on its log and is told to leave the moment it
    // registered: its store is (most likely) still being built then.
    assert_eq!(
        c.add_worker_at(&gone_leaver.data_dir).expect("restart"),
        leaver
    );
    let status = c
        .stop_worker(leaver, STOP_TIMEOUT)
        .expect("stop")
        .expect("the leaver exits once the keeper holds what only it held");
    assert!(status.success(), "left cleanly: {status:?}");
    let order: Vec<String> = worker_log_lines(&c, "deregistering")
        .into_iter()
        .chain(worker_log_lines(&c, "store built"))
        .collect();
    eprintln!("leaver's log: {order:?}");
    c.wait_active(&[keeper], ACTIVE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_records(&c.converged(&[keeper]), &last_writes(&records));
}

#[test]
fn a_dump_asked_of_a_worker_whose_store_is_being_built_is_the_whole_store() {
    let mut c = TestCluster::start("dump_while_building", 1);
    let id = c.ids[0];
    let records: Vec<(u64, Vec<u8>)> = (0..200_000).map(|id| (id, content(id, 13))).collect();
    put_all(&mut c.client(), &records, 64);
    let gone = c.kill_worker(id).expect("kill -9");
    assert_eq!(c.add_worker_at(&gone.data_dir).expect("restart"), id);
    // Held until the store is built, then answered from all of it.
    assert_records(&c.dump(id), &last_writes(&records));
    eprintln!("its log: {:?}", worker_log_lines(&c, "store built"));
}

/// A worker stopped while it cannot reach its LB yet (nothing listens at
/// the address) exits at once and successfully, without registering. Its
/// SIGTERM handler is the first thing it installs: before, a signal that
/// came ahead of the event loop killed it outright.
#[test]
fn a_worker_stopped_before_it_reaches_the_lb_exits_cleanly_without_registering() {
    let dir = TestDir::new("stopped_before_registering");
    // Bound but never listening: every connect is refused, and the port
    // stays ours for the whole test.
    let refusing =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
    refusing.bind(&any.into()).expect("bind");
    let lb = refusing
        .local_addr()
        .expect("local address")
        .as_socket()
        .expect("an inet address");
    let log_path = dir.path().join("worker.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    /// Killed and reaped however the test ends.
    struct Reaped(std::process::Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut worker = Reaped(
        std::process::Command::new(EXE)
            .args(["worker", "--lb", &lb.to_string(), "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--connect-timeout-secs", "120", "--insecure"])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the worker"),
    );
    let log_says =
        |what: &str| std::fs::read_to_string(&log_path).is_ok_and(|text| text.contains(what));
    // Printed from the connect retries, after the handler was installed.
    wait_until(
        Duration::from_secs(20),
        "the worker to retry the LB",
        || log_says("not reachable yet"),
    );
    signal(&worker.0, libc::SIGTERM);
    let status = rrstore::cluster::wait_timeout(&mut worker.0, Duration::from_secs(10))
        .expect("wait")
        .expect("the worker exits within a retry's backoff, not after its 120 s of patience");
    assert!(status.success(), "exited cleanly: {status:?}");
    assert!(log_says("stopped before registering"));
}
