//! Cluster authentication against real processes: who does not hold the
//! secret gets nothing (see docs/SECURITY.md).

mod common;

use common::*;
use rrstore::auth::{Identity, Secret};
use rrstore::msg::{self, Msg, MAC_LEN, NONCE_LEN};
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn other_secret() -> &'static OsStr {
    OsStr::new("this-is-not-the-cluster-secret-but-it-is-long-enough")
}

/// Connects, writes `frames`, and reads everything until the other side
/// closes (failing if it does not within 5 s).
#[track_caller]
fn send_raw(addr: &str, frames: &[Msg<'_>]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut out = Vec::new();
    for f in frames {
        msg::encode(&mut out, f);
    }
    // The server may close before reading all of it: ignore write errors.
    let _ = s.write_all(&out);
    read_to_eof(&mut s)
}

#[track_caller]
fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            // A reset also ends the connection (we may have left bytes unread).
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!(
                "the connection was not closed: {e} (got {} bytes)",
                got.len()
            ),
        }
    }
}

fn hello() -> Msg<'static> {
    Msg::AuthHello {
        nonce: [7; NONCE_LEN],
        id: 0,
        addr: String::new(),
    }
}

/// Sends a hello, reads the challenge (the only frame that may come back),
/// then sends `proof` and `then`; asserts nothing more arrives before EOF.
#[track_caller]
fn bad_proof(addr: &str, proof: impl Fn([u8; MAC_LEN]) -> [u8; MAC_LEN], then: Msg<'_>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut out = Vec::new();
    msg::encode(&mut out, &hello());
    s.write_all(&out).expect("write hello");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (mac, used) = loop {
        if let Some((m, n)) = msg::decode(&buf, 0).expect("a well-formed frame") {
            match m {
                Msg::AuthChallenge { mac, .. } => break (mac, n),
                other => panic!("expected the challenge, got {other:?}"),
            }
        }
        let n = s.read(&mut chunk).expect("read the challenge");
        assert!(n > 0, "closed before the challenge");
        buf.extend_from_slice(&chunk[..n]);
    };
    assert_eq!(used, buf.len(), "more than the challenge arrived");
    out.clear();
    msg::encode(&mut out, &Msg::AuthProof { mac: proof(mac) });
    msg::encode(&mut out, &then);
    let _ = s.write_all(&out);
    let rest = read_to_eof(&mut s);
    assert!(rest.is_empty(), "{} bytes after a bad proof", rest.len());
}

#[test]
fn a_worker_with_another_secret_cannot_register() {
    let c = TestCluster::start("auth_wrong_worker", 1);
    let dir = c.test_dir().join("intruder");
    let dir = dir.to_string_lossy();
    let args = [
        "worker",
        "--lb",
        &c.control_addr,
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &dir,
        "--connect-timeout-secs",
        "1",
    ];
    let run = run_cli_env(&args, &[(rrstore::auth::ENV_VAR, other_secret())]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("does not hold our cluster secret"),
        "{run:?}"
    );
    assert!(!run.stdout.contains("registered"), "{run:?}");
    // The LB says why: the intruder hung up without a proof.
    wait_until(Duration::from_secs(5), "the LB to log the refusal", || {
        c.lb_log().contains("closed before authenticating")
    });

    // One without any secret does not even start; one run --insecure is
    // refused by the LB, which logs the REGISTER it got unauthenticated.
    let run = run_cli(&args);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("no cluster secret"), "{run:?}");
    let mut insecure = args.to_vec();
    insecure.push("--insecure");
    let run = run_cli(&insecure);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(!run.stdout.contains("registered"), "{run:?}");
    wait_until(Duration::from_secs(5), "the LB to log the REGISTER", || {
        c.lb_log().contains("Register") && c.lb_log().contains("before authentication")
    });

    let members = c.members();
    assert_eq!(members.len(), 1, "{members:?}");
    assert!(c.stats()["auth_rejected"] >= 2);
    c.converged(&c.ids);
}

#[test]
fn unauthenticated_connections_get_no_records() {
    let mut c = TestCluster::start("auth_raw", 2);
    let mut client = c.client();
    for id in 1..=20 {
        client.put(id, b"secret record").expect("PUT");
    }
    let control = c.control_addr.clone();
    let worker = c.workers[&c.ids[0]].addr.clone();
    let register = Msg::Register {
        id: 0,
        origin: 0,
        max_origin: 0,
        max_version: 0,
        addr: "127.0.0.1:1".into(),
    };
    let peer_hello = Msg::PeerHello {
        id: c.ids[1],
        origin: 1,
        marker: 0,
        addr: c.workers[&c.ids[1]].addr.clone(),
    };
    let catchup = Msg::CatchupRequest { vector: Vec::new() };

    // Skipping the handshake: closed, nothing sent back.
    for frames in [
        vec![Msg::MembersRequest],
        vec![Msg::StatsRequest],
        vec![register.clone()],
        vec![Msg::DumpRequest],
    ] {
        let got = send_raw(&control, &frames);
        assert!(got.is_empty(), "{frames:?} to the LB: {} bytes", got.len());
    }
    for frames in [
        vec![Msg::DumpRequest],
        vec![Msg::DigestRequest],
        vec![peer_hello.clone(), catchup.clone()],
        vec![register],
    ] {
        let got = send_raw(&worker, &frames);
        assert!(
            got.is_empty(),
            "{frames:?} to a worker: {} bytes",
            got.len()
        );
    }

    // A wrong, a tampered and a reflected proof: only the challenge comes back.
    for addr in [&control, &worker] {
        bad_proof(addr, |_| [0; MAC_LEN], Msg::DumpRequest);
        bad_proof(
            addr,
            |mut mac| {
                mac[5] ^= 1;
                mac
            },
            Msg::MembersRequest,
        );
        bad_proof(addr, |mac| mac, peer_hello.clone());
    }

    // A proper handshake followed by a hello that claims another identity.
    let secret = c.secret().clone();
    let mut s = TcpStream::connect(&worker).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = Vec::new();
    let me = Identity::new(99, "127.0.0.1:9");
    rrstore::auth::dial_blocking(&mut s, &secret, me, Some(c.ids[0]), &mut buf)
        .expect("the right secret authenticates");
    let mut out = Vec::new();
    msg::encode(&mut out, &peer_hello);
    msg::encode(&mut out, &catchup);
    s.write_all(&out).expect("write");
    let rest = read_to_eof(&mut s);
    assert!(
        rest.is_empty(),
        "{} bytes to an impostor's hello",
        rest.len()
    );

    assert!(c.stats()["auth_rejected"] >= 7);
    let log = std::fs::read_to_string(c.test_dir().join("worker-1.log")).unwrap_or_default();
    assert!(log.contains("before authentication"), "{log}");
    assert!(log.contains("authenticated as 99"), "{log}");
    // The cluster is unharmed.
    let id = c.add_active_worker();
    assert!(c.ids.contains(&id));
    let data = c.converged(&c.ids.clone());
    assert_eq!(data.len(), 20);
}

#[test]
fn admin_commands_need_the_secret() {
    let c = TestCluster::start("auth_admin", 1);
    // put and get need no secret.
    let lb = c.lb_addr.clone();
    assert_eq!(run_cli(&["put", "--lb", &lb, "1", "x"]).code, Some(0));
    assert_eq!(run_cli(&["get", "--lb", &lb, "1"]).stdout, "x");
    let control = c.control_addr.clone();
    let file = c.secret_file();
    let file = file.to_string_lossy().into_owned();
    let worker_id = c.ids[0].to_string();
    let commands: [Vec<&str>; 4] = [
        vec!["members", "--control", &control],
        vec!["verify", "--control", &control],
        vec!["dump", "--control", &control, "--worker", &worker_id],
        vec!["stats", "--control", &control],
    ];
    for args in &commands {
        let run = run_cli(args);
        assert_eq!(run.code, Some(2), "{args:?} without a secret: {run:?}");
        assert!(run.stderr.contains("no cluster secret"), "{run:?}");
        assert!(run.stderr.contains("RRSTORE_SECRET"), "{run:?}");
        assert_eq!(run.stdout, "");

        let run = run_cli_env(args, &[(rrstore::auth::ENV_VAR, other_secret())]);
        assert_eq!(run.code, Some(2), "{args:?} with another secret: {run:?}");
        assert!(
            run.stderr.contains("does not hold our cluster secret"),
            "{run:?}"
        );
        assert_eq!(run.stdout, "");

        let short = run_cli_env(args, &[(rrstore::auth::ENV_VAR, OsStr::new("short"))]);
        assert_eq!(short.code, Some(2), "{short:?}");
        assert!(short.stderr.contains("fewer than 32"), "{short:?}");

        let mut insecure = args.clone();
        insecure.push("--insecure");
        let run = run_cli(&insecure);
        assert_eq!(run.code, Some(2), "{insecure:?}: {run:?}");

        let mut with_file = args.clone();
        with_file.extend(["--secret-file", file.as_str()]);
        let run = run_cli(&with_file);
        assert_eq!(run.code, Some(0), "{with_file:?}: {run:?}");
        assert!(!run.stdout.is_empty());
    }
}

#[test]
fn keygen_and_refusing_to_run_unprotected() {
    let k = run_cli(&["keygen"]);
    assert_eq!(k.code, Some(0), "{k:?}");
    let key = k.stdout.trim_end();
    assert_eq!(key.len(), 64, "{k:?}");
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()), "{k:?}");
    assert!(Secret::from_bytes(key.as_bytes()).is_ok());
    assert_ne!(run_cli(&["keygen"]).stdout, k.stdout);

    let dir = TestDir::new("auth_unprotected");
    let plog = dir.path().join("processed.log");
    let plog = plog.to_string_lossy();
    let lb = [
        "lb",
        "--listen",
        "127.0.0.1:0",
        "--control",
        "127.0.0.1:0",
        "--processed-log",
        &plog,
    ];
    let run = run_cli(&lb);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("no cluster secret"), "{run:?}");
    assert!(run.stderr.contains("--insecure"), "{run:?}");
    let missing = dir.path().join("missing");
    let mut with_missing = lb.to_vec();
    let missing = missing.to_string_lossy().into_owned();
    with_missing.extend(["--secret-file", missing.as_str()]);
    let run = run_cli(&with_missing);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("cannot read the secret file"),
        "{run:?}"
    );
}

#[test]
fn an_insecure_cluster_runs_without_handshakes_and_refuses_them() {
    let mut c = TestCluster::start_with("auth_insecure", 0, &["--insecure"]);
    c.worker_args.push("--insecure".into());
    let a = c.add_worker().expect("an insecure worker registers");
    let b = c.add_worker().expect("an insecure worker registers");
    let control = c.control_addr.clone();
    wait_until(ACTIVE_TIMEOUT, "both workers active", || {
        rrstore::client::members(&control, None).is_ok_and(|m| {
            m.iter()
                .filter(|m| m.status == rrstore::msg::Status::Active)
                .count()
                == 2
        })
    });
    let mut client = c.client();
    for id in 1..=10 {
        client.put(id, b"open").expect("PUT");
    }
    let v = rrstore::admin::verify_wait(&control, None, CONVERGE_TIMEOUT).expect("verify");
    assert!(v.identical, "{}", v.render());
    assert_eq!(v.rows.len(), 2);
    // A tool with a secret is turned away, and says so.
    let e = rrstore::client::members(&control, Some(c.secret())).unwrap_err();
    assert!(e.to_string().contains("runs --insecure"), "{e}");
    let e = rrstore::client::digest(&c.workers[&a].addr, Some(c.secret())).unwrap_err();
    assert!(e.to_string().contains("closed the connection"), "{e}");
    assert!(c.lb_log().contains("this LB runs --insecure"));
    assert!(c.ids.is_empty() && a != b);
}

#[test]
fn a_client_token_is_required_before_any_request_when_configured() {
    let dir = TestDir::new("client_token_files");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "let-me-in\n").expect("token file");
    let token_arg = token_file.to_string_lossy().into_owned();
    let c = TestCluster::start_with("client_token", 1, &["--client-token-file", &token_arg]);
    let unauthorized = rrstore::wire::ErrorCode::Unauthorized;

    // A request before AUTH: UNAUTHORIZED, then the LB closes.
    let mut early = c.client();
    early.send(&rrstore::wire::Request::Get { id: 1 });
    early.flush().expect("send");
    expect_error(&mut early, unauthorized, 1);
    expect_eof(&mut early);

    // A wrong token: the same.
    let mut wrong = c.client();
    match wrong.auth(b"let-me-out") {
        Err(rrstore::ClientError::Server { code, .. }) => assert_eq!(code, unauthorized),
        other => panic!("a wrong token: {other:?}"),
    }
    expect_eof(&mut wrong);

    // The right token (whitespace around it in the file does not count).
    let mut good = c.client();
    good.auth(b"let-me-in").expect("AUTH with the token");
    assert!(good.put(5, b"five").expect("PUT after AUTH") > 0);
    assert_eq!(good.get(5).expect("GET").as_deref(), Some(&b"five"[..]));

    // The CLI: with --client-token-file, and without (UNAUTHORIZED, exit 2).
    let lb = c.lb_addr.clone();
    let put = run_cli(&[
        "put",
        "--lb",
        &lb,
        "--client-token-file",
        &token_arg,
        "6",
        "six",
    ]);
    assert_eq!(put.code, Some(0), "{put:?}");
    let get = run_cli(&["get", "--lb", &lb, "--client-token-file", &token_arg, "6"]);
    assert_eq!((get.code, get.stdout.as_str()), (Some(0), "six"), "{get:?}");
    let denied = run_cli(&["get", "--lb", &lb, "6"]);
    assert_eq!(denied.code, Some(2), "{denied:?}");
    assert!(denied.stderr.contains("UNAUTHORIZED"), "{denied:?}");
    assert!(c.stats()["errors_unauthorized"] >= 3);
}

#[test]
fn without_a_client_token_auth_is_answered_auth_ok() {
    let c = TestCluster::start("no_client_token", 1);
    let mut client = c.client();
    client.auth(b"anything").expect("AUTH_OK");
    assert!(client.put(1, b"one").expect("PUT") > 0);
}
