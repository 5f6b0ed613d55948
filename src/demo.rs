//! `rrstore demo`: the seed's program flow, narrated step by step with real
//! processes and real sockets.

use crate::admin;
use crate::client::Client;
use crate::cluster::Cluster;
use crate::msg::Status;
use crate::plog;
use std::error::Error;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct DemoConfig {
    pub workers: Option<usize>,
    pub listen: String,
    pub control: String,
    /// `--http`: the LB serves its status page here while the demo runs.
    pub http: Option<String>,
}

/// A random worker count in 2..=5 without a crate: the clock's low bits.
pub fn random_workers() -> usize {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize);
    2 + (nanos ^ std::process::id() as usize) % 4
}

fn put_batch(
    client: &mut Client,
    ids: std::ops::RangeInclusive<u64>,
) -> Result<(), Box<dyn Error>> {
    for id in ids {
        let content = format!("record {id}");
        let worker = client.put(id, content.as_bytes())?;
        println!(
            "    PUT id={id:<3} {:<12} -> STORED by worker {worker}",
            format!("{content:?}")
        );
    }
    Ok(())
}

pub fn run(config: DemoConfig, exe: &Path) -> Result<bool, Box<dyn Error>> {
    let n = config.workers.unwrap_or_else(random_workers);
    let dir = std::env::temp_dir().join(format!("rrstore-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    println!("rrstore demo: a load balancer and N = {n} workers, each a separate process");
    println!("(logs and data directories in {})\n", dir.display());

    println!("[1] Start the load balancer and {n} workers");
    let lb_args: Vec<&str> = match &config.http {
        Some(addr) => vec!["--http", addr],
        None => Vec::new(),
    };
    let mut cluster = Cluster::start(exe, &dir, &config.listen, &config.control, &lb_args)?;
    println!(
        "    LB listening for clients on {}, for workers on {}",
        cluster.lb_addr, cluster.control_addr
    );
    if let Some(addr) = &cluster.http_addr {
        println!("    LB status page: http://{addr}/ (while the demo runs)");
    }
    let mut ids = Vec::new();
    for _ in 0..n {
        let id = cluster.add_worker()?;
        let addr = cluster
            .workers
            .get(&id)
            .map(|w| w.addr.clone())
            .unwrap_or_default();
        cluster.wait_active(&[id], Duration::from_secs(20))?;
        println!("    worker {id} registered (ID, IP and port {addr}) and is active");
        ids.push(id);
    }
    print!(
        "\n    The LB's worker map:\n{}",
        indent(&admin::render_members(&cluster.members()?))
    );

    let first = 2 * n as u64;
    println!(
        "\n[2] A client sends {first} PUTs to port {}; round robin, per request:",
        port(&cluster.lb_addr)
    );
    let mut client = Client::connect(&cluster.lb_addr)?;
    put_batch(&mut client, 1..=first)?;
    println!("    Each worker appended its record, notified every other worker, then confirmed;");
    println!("    the LB logged each confirmation before answering. The processed log says:");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut lines = Vec::new();
    while Instant::now() < deadline {
        lines = plog::read_lines(&cluster.processed_log()).unwrap_or_default();
        if lines.len() as u64 >= first {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for (id, worker) in lines.iter().take(first as usize) {
        println!("      stored id={id} worker={worker}");
    }

    println!("\n[3] A new worker registers while the store holds {first} records");
    let started = Instant::now();
    let newcomer = cluster.add_worker()?;
    println!("    worker {newcomer} registered: status joining, out of the round robin");
    println!("    It opens links to every worker, each announces where its live stream starts,");
    println!("    and it pulls what it lacks (redistribution) ...");
    let members = cluster.wait_active(&[newcomer], Duration::from_secs(30))?;
    let records = members
        .iter()
        .find(|m| m.id == newcomer)
        .map_or(0, |m| m.records);
    let log =
        std::fs::read_to_string(dir.join(format!("worker-{}.log", n + 1))).unwrap_or_default();
    for line in log
        .lines()
        .filter(|l| l.contains("catch-up from") || l.contains("ready:"))
    {
        println!("      {}", line.trim_start_matches("rrstore "));
    }
    println!(
        "    worker {newcomer} holds everything ({records} records) and is active after {} ms",
        started.elapsed().as_millis()
    );

    let second = n as u64 + 1;
    println!(
        "\n[4] The client sends {second} new PUTs; the round robin now includes worker {newcomer}:"
    );
    put_batch(&mut client, first + 1..=first + second)?;
    let value = client.get(1)?;
    println!(
        "    GET id=1 -> {:?}",
        value
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default()
    );

    println!("\n[5] Verification: every active worker's record count and digest");
    let v = admin::verify_wait(
        &cluster.control_addr,
        Some(cluster.secret()),
        Duration::from_secs(10),
    )?;
    print!("{}", indent(&v.render()));
    let total = first + second;
    let all_have = v
        .rows
        .iter()
        .all(|r| matches!(r.result, Ok((count, _)) if count == total));
    let identical = v.identical
        && all_have
        && v.rows
            .iter()
            .filter(|r| r.member.status == Status::Active)
            .count()
            == n + 1;

    println!("\n    Shutting down: each worker deregisters, waits for its peers' acks, and exits");
    for (id, status) in cluster.shutdown(Duration::from_secs(15)) {
        let how = match status {
            Some(s) if s.success() => "left cleanly".to_string(),
            Some(s) => format!("exited with {s}"),
            None => "had to be killed".to_string(),
        };
        println!("    worker {id} {how}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "\nResult: {}",
        if identical {
            "all workers hold identical stores"
        } else {
            "the stores DIVERGED"
        }
    );
    Ok(identical)
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

fn port(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap_or(addr)
}
