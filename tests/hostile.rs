//! Hostile clients, all at once, against one LB: garbage bytes, huge
//! lengths, truncated frames, slowloris writers, 1,000 idle connections and
//! a client that never reads its responses. Throughout, a normal client must
//! keep being served, and the LB's memory must stay bounded.

mod common;

use common::*;
use rrstore::wire::Request;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How long the attack lasts.
const ATTACK: Duration = Duration::from_secs(6);
const IDLE: usize = 1_000;
const SLOWLORIS: usize = 500;
/// The LB's resident memory must stay below this throughout.
const RSS_LIMIT_KB: u64 = 64 * 1024;

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Lets this process open the idle connections, if its soft limit is low.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or write one rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < 4096 {
            lim.rlim_cur = lim.rlim_max.min(4096);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn open(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let _ = s.set_nodelay(true);
    s
}

/// A PUT header announcing `content` bytes (the body follows separately).
fn put_header(tag: u32, id: u64, content: usize) -> Vec<u8> {
    let len = (5 + 8 + content) as u32;
    let mut h = len.to_be_bytes().to_vec();
    h.push(0x01);
    h.extend_from_slice(&tag.to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h
}

/// Starts one attacker thread that loops until `stop`.
fn attacker(
    stop: &Arc<AtomicBool>,
    f: impl Fn(&AtomicBool) + Send + 'static,
) -> thread::JoinHandle<()> {
    let stop = stop.clone();
    thread::spawn(move || f(&stop))
}

#[test]
fn a_normal_client_is_served_while_hostile_clients_attack_and_memory_stays_bounded() {
    raise_fd_limit();
    let c = TestCluster::start_with(
        "hostile",
        2,
        &[
            "--frame-timeout-secs",
            "2",
            "--client-output-cap",
            "1048576",
        ],
    );
    let lb = c.lb_addr.clone();
    let pid = c.lb_pid().expect("LB pid");
    // A value worth reading many times over, for the client that never reads.
    let mut normal = c.client();
    normal
        .put(1, &vec![7u8; 64 * 1024])
        .expect("PUT the big value");

    // Quiet baseline for the normal client.
    let mut next_id = 1_000;
    let mut quiet = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        quiet.push(put_get(&mut normal, &mut next_id));
    }
    let baseline = percentile(&mut quiet, 0.99);

    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = Vec::new();
    // 1,000 idle connections, held open for the whole attack.
    let idle: Vec<TcpStream> = (0..IDLE).map(|_| open(&lb)).collect();
    // Slowloris: announce a 1 MiB PUT, then trickle it a byte at a time.
    let lb2 = lb.clone();
    attackers.push(attacker(&stop, move |stop| {
        let mut conns: Vec<TcpStream> = (0..SLOWLORIS).map(|_| open(&lb2)).collect();
        for (i, s) in conns.iter_mut().enumerate() {
            let _ = s.write_all(&put_header(i as u32, i as u64, 1 << 20));
        }
        while !stop.load(Ordering::Relaxed) {
            for s in &mut conns {
                let _ = s.write_all(&[0xAB]);
            }
            thread::sleep(Duration::from_millis(250)); // pacing the attack
        }
    }));
    // Garbage, huge lengths and truncated frames, on fresh connections.
    let lb3 = lb.clone();
    attackers.push(attacker(&stop, move |stop| {
        let mut x: u64 = 0x1234_5678;
        while !stop.load(Ordering::Relaxed) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut s = open(&lb3);
            let bytes: Vec<u8> = match x % 4 {
                0 => (0..512).map(|i| (x >> (i % 56)) as u8).collect(),
                1 => put_header(1, 1, u32::MAX as usize - 13),
                // Truncated: the rest never comes, the client just leaves.
                2 => put_header(1, 1, 100)[..9].to_vec(),
                _ => vec![0, 0, 0, 3, 0x01, 0, 0],
            };
            let _ = s.write_all(&bytes);
            if x % 4 == 2 {
                continue;
            }
            // Read what the LB answers until it closes (or give up).
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut sink = [0u8; 4096];
            while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
        }
    }));
    // A client that pipelines GETs of the big value and never reads.
    let lb4 = lb.clone();
    attackers.push(attacker(&stop, move |stop| {
        let mut s = open(&lb4);
        let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
        let mut frame = Vec::new();
        rrstore::wire::encode_request(&mut frame, 9, &Request::Get { id: 1 });
        let batch: Vec<u8> = frame.repeat(1_000);
        while !stop.load(Ordering::Relaxed) {
            match s.write_all(&batch) {
                Ok(()) => {}
                // Its send buffer is full: the LB stopped reading it.
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    thread::sleep(Duration::from_millis(50)); // pacing
                }
                // The LB disconnected it.
                Err(_) => break,
            }
        }
    }));

    // The normal client, throughout the attack.
    let started = Instant::now();
    let mut max_rss = 0;
    let mut latencies = Vec::new();
    let mut round = 0u64;
    while started.elapsed() < ATTACK {
        round += 1;
        latencies.push(put_get(&mut normal, &mut next_id));
        max_rss = max_rss.max(rss_kb(pid));
    }
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.join().expect("attacker thread");
    }
    let under_attack = percentile(&mut latencies, 0.99);
    let stats = c.stats();
    eprintln!(
        "normal client: {round} PUT+GET rounds; p99 quiet {baseline:?}, under attack {under_attack:?} ({:.1}x); LB max RSS {} KiB; stats {stats:?}",
        under_attack.as_secs_f64() / baseline.as_secs_f64().max(1e-9),
        max_rss
    );
    assert!(round > 20, "only {round} rounds in {ATTACK:?}");
    assert!(
        max_rss < RSS_LIMIT_KB,
        "LB RSS reached {max_rss} KiB (limit {RSS_LIMIT_KB})"
    );
    assert!(
        stats["clients_slow_closed"] >= SLOWLORIS as u64,
        "{stats:?}"
    );
    assert!(stats["errors_too_large"] > 0, "{stats:?}");
    assert!(stats["errors_malformed"] > 0, "{stats:?}");
    drop(idle);
}

/// One PUT of a fresh id and a GET of it, checked; how long both took.
fn put_get(client: &mut rrstore::client::Client, next_id: &mut u64) -> Duration {
    *next_id += 1;
    let id = *next_id;
    let content = format!("normal {id}").into_bytes();
    let t = Instant::now();
    client
        .put(id, &content)
        .unwrap_or_else(|e| panic!("normal PUT {id}: {e}"));
    let got = client
        .get(id)
        .unwrap_or_else(|e| panic!("normal GET {id}: {e}"));
    assert_eq!(got.as_deref(), Some(&content[..]), "GET {id}");
    t.elapsed()
}

fn percentile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort_unstable();
    let i = ((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1));
    samples.get(i).copied().unwrap_or_default()
}
