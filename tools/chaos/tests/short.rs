//! A short chaos run against the real `rrstore` binary: about 12 s of
//! writes under kill -9, SIGSTOP, joins and LB crashes, then the harness's
//! own check. Passes only if chaos exits 0 and its JSON summary reports
//! writes acknowledged, none lost, no divergence.
//!
//! The rrstore binary belongs to another package, so Cargo gives us no
//! CARGO_BIN_EXE for it; it lives next to the chaos binary (same target
//! directory and profile). `cargo test --workspace` builds it before any
//! test runs; `cargo test -p chaos` does not, so then this test builds it
//! with the same Cargo, profile and target directory.
//!
//! `CHAOS_SEED=S` replays another schedule (default: a fixed seed).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHAOS: &str = env!("CARGO_BIN_EXE_chaos");

fn rrstore_binary() -> PathBuf {
    let chaos = Path::new(CHAOS);
    let bin = chaos.with_file_name("rrstore");
    if bin.is_file() {
        return bin;
    }
    let profile_dir = chaos.parent().expect("the chaos binary has a directory");
    let target_dir = profile_dir
        .parent()
        .expect("the profile directory has a parent");
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a profile directory name");
    eprintln!(
        "short.rs: no rrstore binary at {}; building it (cargo build -p rrstore --bin rrstore, profile {profile})",
        bin.display()
    );
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "-p", "rrstore", "--bin", "rrstore", "--target-dir"])
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "cargo build of rrstore failed: {status}");
    assert!(
        bin.is_file(),
        "cargo build did not produce {}",
        bin.display()
    );
    bin
}

/// The integer value of `"key": N` in chaos's flat JSON summary.
fn json_u64(json: &str, key: &str) -> u64 {
    let pat = format!("\"{key}\": ");
    let start = json
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in the summary:\n{json}"))
        + pat.len();
    let digits: String = json[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in the summary:\n{json}"))
}

#[test]
fn short_run_with_every_fault_kind_loses_nothing() {
    let rrstore = rrstore_binary();
    let seed = std::env::var("CHAOS_SEED").unwrap_or_else(|_| "20240601".into());
    let out_dir = std::env::temp_dir().join(format!("rrstore-chaos-short-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).expect("create the output directory");
    let json_path = out_dir.join("summary.json");
    let stdout_path = out_dir.join("stdout.txt");
    let stderr_path = out_dir.join("stderr.txt");

    let started = Instant::now();
    let mut child = Command::new(CHAOS)
        .arg("--rrstore")
        .arg(&rrstore)
        .args(["--workers", "3", "--clients", "3", "--rate", "600"])
        .args([
            "--duration",
            "12",
            "--every",
            "1.2",
            "--faults",
            "kill,stop,add,lb",
        ])
        .args(["--max-workers", "5", "--converge-timeout", "30"])
        .args(["--seed", &seed])
        .arg("--dir")
        .arg(out_dir.join("run"))
        .arg("--json")
        .arg(&json_path)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("start chaos");
    // A watchdog: the run takes ~15 s; past two minutes something hangs.
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chaos") {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    println!("{stdout}");
    eprintln!("{stderr}");
    eprintln!("chaos took {:.1} s", started.elapsed().as_secs_f64());
    let status = status.expect("chaos did not finish within 120 s");
    assert_eq!(
        status.code(),
        Some(0),
        "chaos failed (seed {seed}); see its output above"
    );
    let json = std::fs::read_to_string(&json_path).expect("chaos wrote its JSON summary");
    assert_eq!(json_u64(&json, "lost"), 0, "{json}");
    assert_eq!(json_u64(&json, "divergent"), 0, "{json}");
    assert_eq!(json_u64(&json, "corrupt"), 0, "{json}");
    assert!(json_u64(&json, "acknowledged") > 0, "{json}");
    assert!(json.contains("\"verdict\": \"PASS\""), "{json}");
    assert!(stdout.contains("\nPASS\n"), "{stdout}");
    let _ = std::fs::remove_dir_all(&out_dir);
}
