//! The status page (`lb --http`) in a real browser: headless Chromium,
//! driven over WebDriver (chromedriver, through the `fantoccini` client),
//! against a cluster of real processes. The page's own JavaScript draws
//! everything checked here, from `/status.json`.
//!
//! Skipped, with a message, where Chromium or chromedriver is not installed
//! (Debian: `apt-get install chromium chromium-driver`; or set `CHROMIUM`
//! and `CHROMEDRIVER` to their paths).
//!
//! `cargo test --release --test browser -- --ignored screenshot` writes
//! `docs/status-page.png` from a three-worker cluster under load.
#![cfg(not(loom))]

mod common;

use common::*;
use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the page may take to show a change (the LB renders once a
/// second and the page polls once a second).
const PAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Chromium and chromedriver, if both are installed.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let find = |var: &str, default: &str| {
        let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
        path.is_file().then_some(path)
    };
    Some((
        find("CHROMIUM", "/usr/bin/chromium")?,
        find("CHROMEDRIVER", "/usr/bin/chromedriver")?,
    ))
}

/// chromedriver on a port the kernel picked, in a process group of its
/// own; dropping it kills that group (chromedriver and any browser left).
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    #[track_caller]
    fn start(path: &Path, log: &Path) -> Driver {
        let log = std::fs::File::create(log).expect("chromedriver log");
        let mut child = Command::new(path)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(log)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // "ChromeDriver was started successfully on port 41235."
                if let Some(rest) = line.split("successfully on port ").nth(1) {
                    let _ = tx.send(rest.trim_end_matches('.').to_string());
                }
            }
        });
        let mut driver = Driver {
            child,
            url: String::new(),
        };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(port) => driver.url = format!("http://127.0.0.1:{port}"),
            Err(_) => panic!("chromedriver did not say which port it listens on"),
        }
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with a negative pid signals the process group we
        // created for chromedriver (process_group(0): its pgid is its pid,
        // which we have not reaped yet); it touches no memory of ours.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// A headless Chromium session on `driver`.
async fn session(driver: &Driver, chromium: &Path, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,1000",
                "--hide-scrollbars",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("no WebDriver session from {}: {e}", driver.url))
}

/// Runs `script` in the page and returns what it returns.
async fn js(client: &Client, script: &str) -> Value {
    client
        .execute(script, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
}

/// The workers table as drawn: `(id, status)` per row.
async fn rows(client: &Client) -> Vec<(u32, String)> {
    let v = js(
        client,
        "return Array.from(document.querySelectorAll('#workers tr'))
                    .map(r => [Number(r.dataset.id), r.dataset.status]);",
    )
    .await;
    id_text_pairs(&v)
}

/// `[[number, string], ...]` from the page as `(u32, String)` pairs.
fn id_text_pairs(v: &Value) -> Vec<(u32, String)> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some((
                u32::try_from(r[0].as_u64()?).ok()?,
                r[1].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// The membership events as drawn, newest first: `(worker, text)`.
async fn events(client: &Client) -> Vec<(u32, String)> {
    let v = js(
        client,
        "return Array.from(document.querySelectorAll('#events tr'))
                    .map(r => [Number(r.dataset.worker), r.cells[2].textContent]);",
    )
    .await;
    id_text_pairs(&v)
}

/// The text of element `id`, if the page has drawn it.
async fn text_of(client: &Client, id: &str) -> String {
    let script =
        format!("const e = document.getElementById('{id}'); return e ? e.textContent : '';");
    js(client, &script).await.as_str().unwrap_or("").to_string()
}

fn status_of(rows: &[(u32, String)], id: u32) -> Option<&str> {
    rows.iter().find(|r| r.0 == id).map(|r| r.1.as_str())
}

/// Polls the page until `ok` holds for its workers table; panics with what
/// it last showed past [`PAGE_TIMEOUT`].
async fn wait_rows(client: &Client, what: &str, ok: impl Fn(&[(u32, String)]) -> bool) {
    let deadline = Instant::now() + PAGE_TIMEOUT;
    loop {
        let seen = rows(client).await;
        if ok(&seen) {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {PAGE_TIMEOUT:?} waiting for the page to show {what}; it shows {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

#[test]
fn the_status_page_shows_workers_come_and_go() {
    let Some((chromium, chromedriver)) = browser() else {
        println!(
            "SKIPPED: the browser test needs /usr/bin/chromium and /usr/bin/chromedriver \
             (apt-get install chromium chromium-driver), or CHROMIUM and CHROMEDRIVER set"
        );
        return;
    };
    let mut c = TestCluster::start_with("browser", 2, &["--http", "127.0.0.1:0"]);
    let http = c.http_addr.clone().expect("the LB's --http address");
    // Records for the newcomer to catch up with, later.
    let records: Vec<(u64, Vec<u8>)> = (0..5_000).map(|id| (id, content(id, 1))).collect();
    put_all(&mut c.client(), &records, 64);
    let driver = Driver::start(&chromedriver, &c.test_dir().join("chromedriver.log"));
    let profile = c.test_dir().join("chromium-profile");

    runtime().block_on(async {
        let client = session(&driver, &chromium, &profile).await;
        client
            .goto(&format!("http://{http}/"))
            .await
            .expect("open the status page");
        assert_eq!(client.title().await.expect("title"), "rrstore LB status");

        // 1. Both workers listed, active, with identical stores.
        let (a, b) = (c.ids[0], c.ids[1]);
        wait_rows(&client, "both workers active", |r| {
            status_of(r, a) == Some("active") && status_of(r, b) == Some("active")
        })
        .await;
        let deadline = Instant::now() + PAGE_TIMEOUT;
        while text_of(&client, "digests").await != "AGREE" {
            assert!(
                Instant::now() < deadline,
                "the page never showed the digests agreeing"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // 2. kill -9: the worker stays on the page, inactive.
        c.kill_worker(a).expect("kill -9 a worker");
        wait_rows(&client, "the killed worker inactive", |r| {
            status_of(r, a) == Some("inactive") && status_of(r, b) == Some("active")
        })
        .await;

        // 3. A new worker: joining, then active. Joining may last less than
        // the page's refresh, so every state the table shows is recorded,
        // and the LB's event list (drawn by the page) must show the order.
        let n = c.add_worker().expect("start a worker");
        let mut seen: Vec<String> = Vec::new();
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            let now = rows(&client).await;
            if let Some(s) = status_of(&now, n) {
                if seen.last().map(String::as_str) != Some(s) {
                    seen.push(s.to_string());
                }
                if s == "active" {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "worker {n} never shown active; states seen {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            seen == ["active"] || seen == ["joining", "active"],
            "worker {n} went through {seen:?}"
        );
        let listed = events(&client).await;
        let of_n: Vec<&str> = listed
            .iter()
            .filter(|e| e.0 == n)
            .map(|e| e.1.as_str())
            .collect();
        // Newest first: active after joining.
        assert!(
            of_n.len() >= 2 && of_n[0].ends_with(": active") && of_n[1].ends_with(": joining"),
            "events of worker {n} on the page: {of_n:?}"
        );
        let deadline = Instant::now() + PAGE_TIMEOUT;
        let mut last_join = String::new();
        while !last_join.starts_with(&format!("worker {n}: ")) {
            assert!(
                Instant::now() < deadline,
                "last redistribution never showed worker {n}: {last_join:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            last_join = text_of(&client, "last-join").await;
        }
        assert!(last_join.contains("5,000 records"), "{last_join}");
        println!("worker {n} on the page: {seen:?}; last redistribution: {last_join}");

        client.close().await.expect("end the WebDriver session");
    });
    drop(driver);
}

/// Not a test: writes `docs/status-page.png` (or `$SCREENSHOT`) from an LB
/// with three workers (the third caught up under load) and a steady load
/// of PUTs and GETs.
#[test]
#[ignore = "writes docs/status-page.png; run with --ignored screenshot"]
fn screenshot() {
    let Some((chromium, chromedriver)) = browser() else {
        println!("SKIPPED: needs chromium and chromedriver");
        return;
    };
    let out = std::env::var_os("SCREENSHOT").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/status-page.png"),
        PathBuf::from,
    );
    let mut c = TestCluster::start_with("screenshot", 2, &["--http", "127.0.0.1:0"]);
    let http = c.http_addr.clone().expect("the LB's --http address");
    let lb = c.lb_addr.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut client = connect(&lb);
            let mut id = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Bursts of varying size, so the chart has a shape.
                let n = 200 + (id / 1000 % 7) * 150;
                let batch: Vec<(u64, Vec<u8>)> =
                    (id..id + n).map(|i| (i % 50_000, content(i, 2))).collect();
                put_all(&mut client, &batch, 16);
                let gets: Vec<rrstore::wire::Request<'_>> = (id..id + n / 3)
                    .map(|i| rrstore::wire::Request::Get { id: i % 50_000 })
                    .collect();
                pipeline(&mut client, &gets, 16);
                id += n;
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    // A third worker joins once the store has records: a redistribution.
    std::thread::sleep(Duration::from_secs(8));
    c.add_active_worker();
    let driver = Driver::start(&chromedriver, &c.test_dir().join("chromedriver.log"));
    let profile = c.test_dir().join("chromium-profile");
    runtime().block_on(async {
        let client = session(&driver, &chromium, &profile).await;
        // Tall enough for the whole page, counters folded.
        client
            .set_window_size(1280, 960)
            .await
            .expect("resize the window");
        client
            .goto(&format!("http://{http}/"))
            .await
            .expect("open the status page");
        // Let the chart fill its minute of samples.
        tokio::time::sleep(Duration::from_secs(62)).await;
        let png = client.screenshot().await.expect("screenshot");
        std::fs::write(&out, png).expect("write the screenshot");
        client.close().await.expect("end the WebDriver session");
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().expect("load thread");
    println!("wrote {}", out.display());
}
