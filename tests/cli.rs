//! The `rrstore` command line against a cluster of real processes: output
//! formats and exit codes (0 success, 1 not found or diverged, 2 error).

mod common;

use common::*;
use rrstore::admin;
use rrstore::msg::Status;

#[track_caller]
fn ok(c: &TestCluster, args: &[&str]) -> String {
    let run = run_cli_secret(args, c.secret());
    assert_eq!(run.code, Some(0), "rrstore {args:?}: {run:?}");
    run.stdout
}

/// A loopback port nothing listens on (bound, then released).
fn dead_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    drop(l);
    addr
}

#[test]
fn put_get_members_verify_dump_stats() {
    let c = TestCluster::start("cli", 2);
    let (lb, control) = (c.lb_addr.clone(), c.control_addr.clone());

    let out = ok(&c, &["put", "--lb", &lb, "5", "hello"]);
    let worker: u32 = out
        .strip_prefix("stored id=5 worker=")
        .and_then(|w| w.strip_suffix('\n'))
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("put printed {out:?}"));
    assert!(c.ids.contains(&worker), "stored by unknown worker {worker}");

    assert_eq!(
        ok(&c, &["get", "--lb", &lb, "5"]),
        "hello",
        "get prints the raw content"
    );
    let missing = run_cli(&["get", "--lb", &lb, "6"]);
    assert_eq!(missing.code, Some(1), "get of a missing id: {missing:?}");
    assert_eq!(missing.stdout, "");

    let members = ok(&c, &["members", "--control", &control]);
    let lines: Vec<&str> = members.lines().collect();
    assert_eq!(lines.len(), 1 + c.ids.len(), "members: {members}");
    assert!(lines[0].contains("STATUS"), "header: {members}");
    for (line, m) in lines[1..].iter().zip(c.members()) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cols[..3],
            [m.id.to_string().as_str(), m.addr.as_str(), "active"],
            "{members}"
        );
    }

    // Wait (in-process) until replication is done, then the CLI agrees.
    c.converged(&c.ids);
    let out = ok(&c, &["verify", "--control", &control]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), c.ids.len() + 1, "verify: {out}");
    assert_eq!(lines[c.ids.len()], "identical", "verify: {out}");
    let v = admin::verify(&control, Some(c.secret())).expect("verify");
    for (line, row) in lines.iter().zip(&v.rows) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols.len(), 6, "{line}");
        assert_eq!(cols[0], "worker");
        assert_eq!(cols[1], row.member.id.to_string());
        assert_eq!(cols[2], row.member.addr);
        assert_eq!(cols[3], "active");
        assert_eq!(cols[4], "records=1");
        let digest = cols[5].strip_prefix("digest=").expect("digest=");
        assert_eq!(digest.len(), 32, "{line}");
        assert!(digest
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }
    let first_digest = lines[0].split_whitespace().last();
    assert!(lines[..c.ids.len()]
        .iter()
        .all(|l| l.split_whitespace().last() == first_digest));
    assert!(ok(&c, &["verify", "--control", &control, "--wait", "5"]).ends_with("identical\n"));

    for id in &c.ids {
        let out = ok(
            &c,
            &["dump", "--control", &control, "--worker", &id.to_string()],
        );
        assert_eq!(out, "5\t68656c6c6f\n", "dump of worker {id}");
    }
    let unknown = run_cli_secret(
        &["dump", "--control", &control, "--worker", "999"],
        c.secret(),
    );
    assert_eq!(
        unknown.code,
        Some(2),
        "dump of an unknown worker: {unknown:?}"
    );

    let stats = ok(&c, &["stats", "--control", &control]);
    assert!(
        stats.lines().any(|l| l.starts_with("latency_us_p99 ")),
        "{stats}"
    );
    for line in stats.lines() {
        let (name, value) = line.split_once(' ').unwrap_or_else(|| panic!("{line}"));
        assert!(!name.is_empty() && value.parse::<u64>().is_ok(), "{line}");
    }
    assert!(stats.lines().any(|l| l == "requests_put 1"), "{stats}");
    assert!(stats.lines().any(|l| l == "requests_get 2"), "{stats}");
    assert!(
        stats.lines().any(|l| l == "responses_not_found 1"),
        "{stats}"
    );
}

#[test]
fn commands_against_a_dead_port_exit_2() {
    let dead = dead_addr();
    for args in [
        vec!["put", "--lb", &dead, "1", "x"],
        vec!["get", "--lb", &dead, "1"],
        vec!["members", "--control", &dead, "--insecure"],
        vec!["verify", "--control", &dead, "--insecure"],
        vec!["dump", "--control", &dead, "--worker", "1", "--insecure"],
        vec!["stats", "--control", &dead, "--insecure"],
    ] {
        let run = run_cli(&args);
        assert_eq!(run.code, Some(2), "rrstore {args:?}: {run:?}");
        assert!(run.stderr.starts_with("rrstore: "), "{run:?}");
        assert_eq!(run.stdout, "", "{args:?}");
    }
}

#[test]
fn second_worker_on_a_locked_data_dir_refuses_to_start() {
    let c = TestCluster::start("cli_locked", 1);
    let id = c.ids[0];
    let data_dir = c.workers[&id].data_dir.to_string_lossy().into_owned();
    let run = run_cli_secret(
        &[
            "worker",
            "--lb",
            &c.control_addr,
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data_dir,
        ],
        c.secret(),
    );
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("locked"), "{run:?}");
    assert!(!run.stdout.contains("registered"), "{run:?}");
    // The running worker is undisturbed.
    let members = c.members();
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!((members[0].id, members[0].status), (id, Status::Active));
    assert!(c.client().put(1, b"still here").is_ok());
}

#[test]
fn second_worker_with_a_connected_id_is_refused_by_the_lb() {
    let c = TestCluster::start("cli_dup_id", 1);
    let id = c.ids[0];
    let fresh = c.test_dir().join("impostor");
    let run = run_cli_secret(
        &[
            "worker",
            "--lb",
            &c.control_addr,
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &fresh.to_string_lossy(),
            "--id",
            &id.to_string(),
        ],
        c.secret(),
    );
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("already registered"), "{run:?}");
    assert!(!run.stdout.contains("registered id"), "{run:?}");
    // The LB still has the original, active, at its own address.
    let members = c.members();
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!((members[0].id, members[0].status), (id, Status::Active));
    assert_eq!(members[0].addr, c.workers[&id].addr);
    let mut client = c.client();
    assert_eq!(client.put(2, b"x").expect("PUT"), id);
}

#[test]
fn a_config_file_sets_flags_and_typed_flags_override_it() {
    use std::io::BufRead;
    let dir = TestDir::new("config_file");
    let config = dir.path().join("rrstore.toml");
    let plog = dir.path().join("processed.log");
    std::fs::write(
        &config,
        format!(
            "insecure = true\n[lb]\nlisten = \"127.0.0.1:1\"\ncontrol = \"127.0.0.1:0\"\nprocessed-log = {:?}\n",
            plog.to_string_lossy()
        ),
    )
    .expect("config");
    // The file's `listen` (port 1) is overridden by the typed one; the rest holds.
    let mut lb = std::process::Command::new(EXE)
        .args(["lb", "--config"])
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the LB");
    let mut line = String::new();
    if let Some(out) = lb.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    let _ = lb.kill();
    let _ = lb.wait();
    assert!(line.starts_with("listening clients=127.0.0.1:"), "{line:?}");
    assert!(
        !line.starts_with("listening clients=127.0.0.1:1 "),
        "{line:?}"
    );
    assert!(plog.exists(), "processed-log from the file was not used");

    // A bad value in the file is a clear error.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[lb]\nlisten = \"not an address\"\n").expect("bad config");
    let run = run_cli(&["lb", "--config", &bad.to_string_lossy()]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("not an address"), "{}", run.stderr);
}

/// Runs an LB with `rust_log` (None: unset), stops it with SIGTERM once it
/// listens, and returns its whole stderr.
fn lb_stderr(dir: &TestDir, rust_log: Option<&str>) -> String {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new(EXE);
    cmd.args(["lb", "--insecure", "--listen", "127.0.0.1:0"])
        .args(["--control", "127.0.0.1:0", "--processed-log"])
        .arg(
            dir.path()
                .join(format!("plog-{}", rust_log.unwrap_or("unset"))),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    match rust_log {
        Some(filter) => cmd.env("RUST_LOG", filter),
        None => cmd.env_remove("RUST_LOG"),
    };
    let mut lb = cmd.spawn().expect("spawn the LB");
    let mut line = String::new();
    if let Some(out) = lb.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    assert!(line.starts_with("listening"), "{line:?}");
    // SAFETY: kill(2) on our own child, which has not been reaped yet.
    unsafe { libc::kill(lb.id() as i32, libc::SIGTERM) };
    let out = lb.wait_with_output().expect("LB exit");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn daemon_logs_follow_rust_log() {
    let dir = TestDir::new("rust_log");
    let default = lb_stderr(&dir, None);
    assert!(
        default
            .lines()
            .any(|l| l.contains(" INFO  rrstore lb: shutting down")),
        "the default level is info: {default}"
    );
    let quiet = lb_stderr(&dir, Some("warn"));
    assert!(
        !quiet.contains(" INFO "),
        "RUST_LOG=warn hides info: {quiet}"
    );
}

#[test]
fn nothing_is_logged_per_request() {
    let c = TestCluster::start("log_per_request", 2);
    let mut client = c.client();
    let before = c.lb_log().lines().count();
    let records: Vec<(u64, Vec<u8>)> = (0..500).map(|id| (id, content(id, 1))).collect();
    put_all(&mut client, &records, 64);
    assert_eq!(client.get(7).expect("get"), Some(content(7, 1)));
    let log = c.lb_log();
    assert_eq!(
        log.lines().count(),
        before,
        "500 PUTs and a GET added LB log lines: {log}"
    );
}

#[test]
fn long_help_is_the_manual() {
    let run = run_cli(&["--help"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    for section in [
        "EXAMPLES",
        "ENVIRONMENT",
        "RUST_LOG",
        "RRSTORE_SECRET",
        "EXIT STATUS",
    ] {
        assert!(
            run.stdout.contains(section),
            "{section} missing: {}",
            run.stdout
        );
    }
    let version = run_cli(&["--version"]);
    assert_eq!(
        version.stdout,
        format!("rrstore {}\n", env!("CARGO_PKG_VERSION"))
    );
    let lb = run_cli(&["lb", "--help"]);
    assert!(lb.stdout.contains("round robin"), "{}", lb.stdout);
}
