//! `--verify` against a real rrstore cluster (an LB and three workers as
//! child processes). Ignored by default: it needs the `rrstore` binary,
//! which this package's tests cannot build. Run it with
//!
//! ```text
//! cargo build --release --bin rrstore
//! cargo test -p loadgen --release -- --ignored
//! ```
//!
//! (`RRSTORE_BIN=/path/to/rrstore` overrides the binary's location.)

use loadgen::proto::Protocol;
use loadgen::run::{run, RunConfig};
use loadgen::verify;
use rrstore::cluster::Cluster;
use std::path::PathBuf;
use std::time::Duration;

fn rrstore_bin() -> PathBuf {
    let path = std::env::var_os("RRSTORE_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/release/rrstore"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} missing: cargo build --release --bin rrstore",
        path.display()
    );
    path
}

/// Kills the cluster's processes and removes its directory.
struct Guard {
    cluster: Cluster,
    dir: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.cluster.shutdown(Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
#[ignore = "needs target/release/rrstore"]
fn verify_finds_every_acknowledged_record_on_every_worker() {
    let dir = std::env::temp_dir().join(format!("loadgen-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cluster = Cluster::start(&rrstore_bin(), &dir, "127.0.0.1:0", "127.0.0.1:0", &[]).unwrap();
    let mut g = Guard { cluster, dir };
    let ids: Vec<u32> = (0..3).map(|_| g.cluster.add_worker().unwrap()).collect();
    g.cluster
        .wait_active(&ids, Duration::from_secs(30))
        .unwrap();

    let cfg = RunConfig {
        target: format!("rrstore://{}", g.cluster.lb_addr),
        protocol: Protocol::Rrstore,
        addr: g.cluster.lb_addr.clone(),
        label: None,
        connections: 8,
        pipeline: 4,
        threads: 1,
        rate: 3000.0,
        duration: Duration::from_millis(700),
        warmup: Duration::from_millis(200),
        drain: Duration::from_secs(5),
        value_size: 40,
        keys: 1000,
        get_ratio: 0.5,
        verify: true,
        control: g.cluster.control_addr.clone(),
        secret: Some(g.cluster.secret().clone()),
        verify_wait: Duration::from_secs(20),
        quiet: true,
        redis_wait: None,
        fill: false,
    };
    let out = run(&cfg).unwrap();
    let v = out.verify.expect("verify ran");
    assert_eq!(out.stats.error_total(), 0);
    // Warmup included: every request of the 0.9 s schedule was a PUT.
    assert_eq!(v.acknowledged, out.stats.sent);
    assert_eq!(v.lost, 0, "{}", v.summary());
    assert_eq!(v.workers.len(), 3);

    // An id nobody stored is reported lost on every worker.
    let never = verify::verify(
        &g.cluster.control_addr,
        Some(g.cluster.secret()),
        vec![7],
        40,
        Duration::ZERO,
    )
    .unwrap();
    assert_eq!(
        (never.acknowledged, never.lost),
        (1, 1),
        "{}",
        never.summary()
    );
}
