//! `lb --http`: the status page and `/status.json` from a real cluster,
//! with the LB configured through `--config` as in production (the page in
//! a real browser is `tests/browser.rs`).

mod common;

use common::*;
use serde_json::Value;

/// `/status.json`, parsed, if the LB answers 200.
fn status(addr: &str) -> Option<Value> {
    match http_get(addr, "/status.json")? {
        (200, body) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// The row of worker `id` in a snapshot.
fn worker(s: &Value, id: u32) -> Option<&Value> {
    s["workers"]
        .as_array()?
        .iter()
        .find(|w| w["id"].as_u64() == Some(u64::from(id)))
}

/// Waits for a snapshot that satisfies `ok`; returns it.
#[track_caller]
fn wait_status(addr: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    wait_until(ACTIVE_TIMEOUT, what, || {
        last = status(addr).unwrap_or(Value::Null);
        ok(&last)
    });
    last
}

#[test]
fn the_status_page_follows_the_cluster() {
    let config = TestDir::new("status-config");
    let config_file = config.path().join("rrstore.toml");
    std::fs::write(&config_file, "[lb]\nhttp = \"127.0.0.1:0\"\n").expect("write the config");
    let config_arg = config_file.to_string_lossy().into_owned();
    let mut c = TestCluster::start_with("status", 2, &["--config", &config_arg]);
    let http = c
        .http_addr
        .clone()
        .expect("the LB's ready line names its --http address");

    let (code, page) = http_get(&http, "/").expect("GET /");
    assert_eq!(code, 200);
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    assert_eq!(
        http_get(&http, "/metrics").map(|r| r.0),
        Some(404),
        "--http alone does not serve /metrics"
    );

    let records: Vec<(u64, Vec<u8>)> = (0..300).map(|id| (id, content(id, 3))).collect();
    put_all(&mut c.client(), &records, 16);
    let (a, b) = (c.ids[0], c.ids[1]);
    let s = wait_status(
        &http,
        "both workers with 300 records, digests agreeing",
        |s| {
            [a, b].iter().all(|&id| {
                worker(s, id).is_some_and(|w| w["status"] == "active" && w["records"] == 300)
            }) && s["digests"]["state"] == "agree"
                && s["counters"]["requests_put"] == 300
        },
    );
    let wa = worker(&s, a).expect("row");
    assert_eq!(wa["lag"], 0);
    assert_eq!(wa["digest"], worker(&s, b).expect("row")["digest"]);
    assert_eq!(
        wa["requests"].as_u64().unwrap_or(0)
            + worker(&s, b).expect("row")["requests"]
                .as_u64()
                .unwrap_or(0),
        300,
        "the round robin gave every PUT to one of them"
    );
    assert!(s["latency_us"]["p99"].as_u64().is_some(), "{s}");
    assert_eq!(s["lb"]["clients"], c.lb_addr.as_str());
    assert_eq!(s["last_join"]["worker"], b);

    // A crash: the worker stays listed, inactive.
    c.kill_worker(a).expect("kill -9");
    let s = wait_status(&http, "the killed worker inactive", |s| {
        worker(s, a).is_some_and(|w| w["status"] == "inactive" && w["last_heard_ms"].is_null())
    });
    assert!(
        s["events"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("inactive")),
        "{}",
        s["events"]
    );

    // A newcomer is caught up with the 300 records: the redistribution.
    let n = c.add_active_worker();
    let s = wait_status(&http, "the newcomer's redistribution", |s| {
        s["last_join"]["worker"] == n && worker(s, n).is_some_and(|w| w["status"] == "active")
    });
    assert_eq!(s["last_join"]["records"], 300, "{}", s["last_join"]);
    assert!(s["last_join"]["took_ms"].as_u64().is_some());
    let texts: Vec<&str> = s["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["worker"] == n)
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert!(
        texts.len() >= 2 && texts[0].ends_with(": active") && texts[1].ends_with(": joining"),
        "newest first: {texts:?}"
    );
}
