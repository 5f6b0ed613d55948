//! The `loadgen` binary end to end: `null-server` as a child process, short
//! runs writing `--json` and `--hgrm`, `plot` over the results, and usage
//! errors.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const EXE: &str = env!("CARGO_BIN_EXE_loadgen");

/// A `loadgen null-server` child, killed on drop.
struct NullChild {
    child: Child,
    addr: String,
}

impl NullChild {
    fn start(protocol: &str) -> NullChild {
        let mut child = Command::new(EXE)
            .args([
                "null-server",
                "--listen",
                "127.0.0.1:0",
                "--protocol",
                protocol,
            ])
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn null-server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("null-server printed no address");
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        NullChild { child, addr }
    }
}

impl Drop for NullChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tmp(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{}-{name}", std::process::id()))
}

fn loadgen(args: &[&str]) -> Output {
    Command::new(EXE)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run loadgen")
}

fn read_json(path: &PathBuf) -> Value {
    let text = std::fs::read_to_string(path).expect("JSON written");
    serde_json::from_str(&text).expect("valid JSON")
}

#[test]
fn short_runs_write_json_and_hgrm_and_plot_them() {
    let server = NullChild::start("rrstore");
    let target = format!("rrstore://{}", server.addr);
    let (a, b, hgrm, svg) = (tmp("a.json"), tmp("b.json"), tmp("a.hgrm"), tmp("ab.svg"));

    // Open loop, 2000/s for 0.5 s after a 0.1 s warmup.
    let out = loadgen(&[
        "--target",
        &target,
        "--rate",
        "2000",
        "--duration",
        "0.5",
        "--warmup",
        "0.1",
        "--connections",
        "4",
        "--value-size",
        "100",
        "--get-ratio",
        "0.3",
        "--quiet",
        "--json",
        a.to_str().unwrap(),
        "--hgrm",
        hgrm.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("corrected") && stdout.contains("uncorrected"),
        "{stdout}"
    );
    assert!(out.stderr.is_empty(), "--quiet prints no live line");

    let doc = read_json(&a);
    assert_eq!(doc["target"], target.as_str());
    assert_eq!(doc["requests"], 1000);
    assert_eq!(doc["errors"], 0);
    assert_eq!(doc["unfinished"], 0);
    assert_eq!(doc["rate_requested"], 2000.0);
    assert_eq!(doc["connections"], 4);
    assert_eq!(doc["value_size"], 100);
    assert_eq!(doc["duration_s"], 0.5);
    let tp = doc["throughput"].as_f64().unwrap();
    assert!((1800.0..=2200.0).contains(&tp), "throughput {tp}");
    for key in ["latency_us", "uncorrected_latency_us"] {
        let l = &doc[key];
        let v: Vec<u64> = ["p50", "p90", "p99", "p999", "max"]
            .iter()
            .map(|p| l[p].as_u64().unwrap_or_else(|| panic!("{key}.{p}")))
            .collect();
        assert!(
            v[0] >= 1 && v.windows(2).all(|w| w[0] <= w[1]),
            "{key} {v:?}"
        );
    }
    for code in [
        "MALFORMED",
        "TOO_LARGE",
        "UNKNOWN_OP",
        "UNAVAILABLE",
        "BUSY",
        "TIMEOUT",
        "redis_error",
        "io",
    ] {
        assert_eq!(doc["errors_by_code"][code], 0, "{code}");
    }
    let spectrum = doc["spectrum"].as_array().unwrap();
    assert!(spectrum.len() > 10);
    assert_eq!(spectrum.last().unwrap()[0], 100.0);

    let text = std::fs::read_to_string(&hgrm).unwrap();
    assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
    assert!(text.contains("#[Max     ="));

    // Closed loop, pipelined, labelled.
    let out = loadgen(&[
        "--target",
        &target,
        "--duration",
        "0.3",
        "--warmup",
        "0",
        "--connections",
        "2",
        "--pipeline",
        "8",
        "--label",
        "closed p8",
        "--quiet",
        "--json",
        b.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = read_json(&b);
    assert_eq!(doc["mode"], "closed");
    assert_eq!(doc["label"], "closed p8");
    assert!(doc["requests"].as_u64().unwrap() > 100);
    assert_eq!(doc["latency_us"], doc["uncorrected_latency_us"]);

    let out = loadgen(&[
        "plot",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "-o",
        svg.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(chart.matches("<polyline").count(), 2);
    assert!(chart.contains(&target) && chart.contains("closed p8"));
    for f in [a, b, hgrm, svg] {
        let _ = std::fs::remove_file(f);
    }
}

#[test]
fn redis_target_with_live_line() {
    let server = NullChild::start("redis");
    let out = loadgen(&[
        "--target",
        &format!("redis://{}", server.addr),
        "--duration",
        "1.2",
        "--warmup",
        "0",
        "--connections",
        "3",
        "--rate",
        "500",
        "--get-ratio",
        "0.5",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("[   1s]") && stderr.contains("req/s"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("requests     600 (600 ok"));
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["--target", "http://127.0.0.1:1"][..],
        &["--target", "redis://127.0.0.1:1", "--verify"],
        &["--target", "rrstore://127.0.0.1:1", "--get-ratio", "2"],
        &["--connections", "3"],
    ] {
        let out = loadgen(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("loadgen:"),
            "{args:?}"
        );
    }
    // Nothing listening: a clear error, not a hang.
    let out = loadgen(&[
        "--target",
        "rrstore://127.0.0.1:1",
        "--duration",
        "0.1",
        "--quiet",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("connect"));
}
