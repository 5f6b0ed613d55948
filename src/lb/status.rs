//! The LB's HTTP side: which servers `--metrics` and `--http` start, and
//! the once-a-second rendering of `/metrics` and `/status.json` for them
//! (the page itself and the snapshot's JSON are in `crate::status`).
//!
//! Rendering happens in the loop, at most once per [`REFRESH`], and only
//! for the paths some server serves; publishing never blocks.

use super::*;
use crate::http::{Route, Server};
use crate::metrics::REFRESH;
use crate::status::{Join, Snapshot, WorkerRow};

/// Starts a server per address asked for: `--metrics` serves `/metrics`,
/// `--http` the status page; the same address (not port 0) gets one
/// server with both.
pub(super) fn start_http(config: &LbConfig) -> Result<Vec<Server>, String> {
    let mut wanted: Vec<(SocketAddr, Vec<Route>)> = Vec::new();
    if let Some(addr) = config.metrics {
        wanted.push((addr, vec![crate::metrics::ROUTE]));
    }
    if let Some(addr) = config.http {
        wanted.push((addr, crate::status::ROUTES.to_vec()));
    }
    let mut servers = Vec::new();
    for (addr, routes) in crate::http::group(&wanted) {
        let server = Server::start(addr, "lb", routes)?;
        if server.serves(crate::metrics::PATH) {
            log::info!(
                "metrics on http://{}{}",
                server.addr(),
                crate::metrics::PATH
            );
        }
        if server.serves(crate::status::JSON_PATH) {
            log::info!("status page on http://{}/", server.addr());
        }
        servers.push(server);
    }
    Ok(servers)
}

impl Lb {
    /// Where the status page is served, with `--http`.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
            .iter()
            .find(|s| s.serves(crate::status::JSON_PATH))
            .map(Server::addr)
    }

    /// Renders what the servers serve, once per [`REFRESH`].
    pub(super) fn publish_http(&mut self, now: Instant) {
        if self.http.is_empty() || now < self.next_render {
            return;
        }
        self.next_render = now + REFRESH;
        let wants = |path: &str| self.http.iter().any(|s| s.serves(path));
        let (want_metrics, want_status) =
            (wants(crate::metrics::PATH), wants(crate::status::JSON_PATH));
        let metrics = want_metrics.then(|| self.render_metrics());
        let status = want_status.then(|| self.render_status(now));
        for server in &mut self.http {
            for (path, text) in [
                (crate::metrics::PATH, &metrics),
                (crate::status::JSON_PATH, &status),
            ] {
                if let Some(text) = text.as_ref().filter(|_| server.serves(path)) {
                    server.publish(path, text.clone());
                }
            }
        }
    }

    /// `/status.json`: every worker with what the LB knows of it, the
    /// counters, rates and latency, the digests' agreement, the last
    /// redistribution and the recent membership events.
    pub(super) fn render_status(&mut self, now: Instant) -> String {
        let workers: Vec<WorkerRow> = self
            .members
            .members()
            .into_iter()
            .filter_map(|m| {
                let w = self.members.get(m.id)?;
                let last_heard = w.link.and_then(|k| match self.links.get(k)?.role {
                    Role::Worker { last_heard, .. } => {
                        Some(now.saturating_duration_since(last_heard))
                    }
                    _ => None,
                });
                Some(WorkerRow {
                    id: w.id,
                    origin: w.origin,
                    addr: w.addr.clone(),
                    status: w.status,
                    since: now.saturating_duration_since(w.since),
                    records: w.records,
                    lag: self.lag(&w.vector),
                    dispatched: w.dispatched,
                    digest: w.digest,
                    vector: w.vector.clone(),
                    last_heard,
                })
            })
            .collect();
        let snap = Snapshot {
            uptime: now.saturating_duration_since(self.started),
            now_ms: unix_micros() / 1000,
            lb: vec![
                ("clients", addr_text(self.clients.local_addr())),
                ("control", addr_text(self.control.local_addr())),
                (
                    "ack",
                    if self.config.ack_all { "all" } else { "local" }.into(),
                ),
            ],
            counters: self.stats(),
            workers,
        };
        self.status.render(now, &snap)
    }

    /// Notes a membership change for the page.
    pub(super) fn status_event(&mut self, worker: u32, text: String) {
        self.status.event(unix_micros() / 1000, worker, text);
    }

    /// What the activation of joiner `w` now would be: how long it took
    /// since it registered, and what it holds.
    pub(super) fn join_of(&self, w: u32) -> Option<Join> {
        let info = self.members.get(w)?;
        Some(Join {
            worker: w,
            at_ms: unix_micros() / 1000,
            took: info.since.elapsed(),
            records: info.records,
        })
    }
}

fn addr_text(addr: io::Result<SocketAddr>) -> String {
    addr.map_or_else(|e| format!("? ({e})"), |a| a.to_string())
}
