//! Small HTTP servers fed by an event loop: `--metrics` (`/metrics`) and the
//! LB's `--http` status page (`/`, `/status.json`).
//!
//! Each [`Server`] is one thread running tiny_http on its own address, with
//! a fixed set of [`Route`]s: *fixed* ones answer a `&'static str` compiled
//! into the binary (the status page), *live* ones answer the latest text the
//! loop published for that path.
//!
//! Invariants:
//! - The loop never blocks on HTTP and never touches a socket of it:
//!   [`Server::publish`] pushes a rendering through the SPSC ring
//!   ([`crate::ringbuf`]); if the ring is full the rendering is dropped and
//!   the server keeps answering the previous one.
//! - The serving thread answers every request from what it already holds,
//!   so however often it is asked, the loop pays one rendering per refresh.
//!   A live route answers 503 until its first rendering has arrived.
//! - The thread ends once the loop's end is dropped (the ring is abandoned).

use crate::ringbuf::{channel, Producer};
use std::net::SocketAddr;
use std::time::Duration;

/// One path a server answers, and with what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub path: &'static str,
    pub content_type: &'static str,
    /// `Some`: always this body. `None`: the latest published text.
    pub fixed: Option<&'static str>,
}

impl Route {
    /// A path whose body the loop publishes.
    pub const fn live(path: &'static str, content_type: &'static str) -> Route {
        Route {
            path,
            content_type,
            fixed: None,
        }
    }

    /// A path with a constant body.
    pub const fn fixed(
        path: &'static str,
        content_type: &'static str,
        body: &'static str,
    ) -> Route {
        Route {
            path,
            content_type,
            fixed: Some(body),
        }
    }
}

/// Groups routes by address: routes asked for on the same address are
/// served by one server (one thread, one port). Port 0 means "any free
/// port", so two of those are never merged.
pub fn group(wanted: &[(SocketAddr, Vec<Route>)]) -> Vec<(SocketAddr, Vec<Route>)> {
    let mut out: Vec<(SocketAddr, Vec<Route>)> = Vec::new();
    for (addr, routes) in wanted {
        match out.iter_mut().find(|(a, _)| a == addr && addr.port() != 0) {
            Some((_, existing)) => existing.extend(routes.iter().copied()),
            None => out.push((*addr, routes.clone())),
        }
    }
    out
}

/// The loop's end of one serving thread.
pub struct Server {
    tx: Producer<(&'static str, String)>,
    addr: SocketAddr,
    routes: Vec<Route>,
}

impl Server {
    /// Binds `addr` and starts the thread (named `{name}-http`).
    pub fn start(addr: SocketAddr, name: &str, routes: Vec<Route>) -> Result<Server, String> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| format!("cannot serve HTTP on {addr}: {e}"))?;
        let bound = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| format!("HTTP server on {addr} has no IP address"))?;
        // Room for a few refreshes of every live route.
        let (tx, mut rx) = channel::<(&'static str, String)>(4 * routes.len().max(1));
        let served = routes.clone();
        std::thread::Builder::new()
            .name(format!("{name}-http"))
            .spawn(move || {
                let mut latest: Vec<(&'static str, String)> = Vec::new();
                loop {
                    while let Some((path, text)) = rx.pop() {
                        match latest.iter_mut().find(|(p, _)| *p == path) {
                            Some(slot) => slot.1 = text,
                            None => latest.push((path, text)),
                        }
                    }
                    if rx.is_abandoned() && rx.is_empty() {
                        return; // the loop is gone
                    }
                    let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(250)) else {
                        continue;
                    };
                    let response = answer(&served, &latest, request.method(), request.url());
                    let _ = request.respond(response);
                }
            })
            .map_err(|e| format!("cannot start the HTTP thread: {e}"))?;
        Ok(Server {
            tx,
            addr: bound,
            routes,
        })
    }

    /// Where it listens (the port is the kernel's choice for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether it has a live route for `path`.
    pub fn serves(&self, path: &str) -> bool {
        self.routes
            .iter()
            .any(|r| r.path == path && r.fixed.is_none())
    }

    /// Hands a rendering of `path` to the thread (dropped if it is behind).
    pub fn publish(&mut self, path: &'static str, text: String) {
        let _ = self.tx.push((path, text));
    }
}

/// The response to `method url` from the routes and the latest renderings.
fn answer(
    routes: &[Route],
    latest: &[(&'static str, String)],
    method: &tiny_http::Method,
    url: &str,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    if !matches!(method, tiny_http::Method::Get | tiny_http::Method::Head) {
        return text_response(405, "only GET\n".into(), "text/plain; charset=utf-8");
    }
    let Some(route) = routes.iter().find(|r| r.path == path) else {
        let paths: Vec<&str> = routes.iter().map(|r| r.path).collect();
        return text_response(
            404,
            format!("not found: try {}\n", paths.join(" ")),
            "text/plain; charset=utf-8",
        );
    };
    let body = match route.fixed {
        Some(body) => body.to_string(),
        None => match latest.iter().find(|(p, _)| *p == path) {
            Some((_, text)) => text.clone(),
            None => {
                return text_response(
                    503,
                    "not rendered yet; retry in a second\n".into(),
                    "text/plain; charset=utf-8",
                )
            }
        },
    };
    text_response(200, body, route.content_type)
}

fn text_response(
    status: u16,
    body: String,
    content_type: &str,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let mut r = tiny_http::Response::from_string(body).with_status_code(status);
    for (name, value) in [
        ("Content-Type", content_type),
        ("Cache-Control", "no-store"),
    ] {
        if let Ok(h) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            r.add_header(h);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    const PAGE: Route = Route::fixed("/", "text/html", "<p>hi</p>");
    const JSON: Route = Route::live("/status.json", "application/json");
    const METRICS: Route = Route::live("/metrics", "text/plain");

    fn body(r: tiny_http::Response<std::io::Cursor<Vec<u8>>>) -> (u16, String) {
        let status = r.status_code().0;
        let mut text = String::new();
        let _ = r.into_reader().read_to_string(&mut text);
        (status, text)
    }

    #[test]
    fn routes_answer_fixed_latest_or_not_yet() {
        let routes = [PAGE, JSON];
        let get = tiny_http::Method::Get;
        assert_eq!(
            body(answer(&routes, &[], &get, "/")),
            (200, "<p>hi</p>".into())
        );
        assert_eq!(body(answer(&routes, &[], &get, "/status.json")).0, 503);
        let latest = [("/status.json", "{}".to_string())];
        assert_eq!(
            body(answer(&routes, &latest, &get, "/status.json?t=1")),
            (200, "{}".into())
        );
        let (status, text) = body(answer(&routes, &latest, &get, "/metrics"));
        assert_eq!(status, 404);
        assert!(text.contains("/status.json"), "{text}");
        assert_eq!(
            body(answer(&routes, &latest, &tiny_http::Method::Post, "/")).0,
            405
        );
    }

    #[test]
    fn routes_on_one_address_share_a_server_but_port_zero_never_does() {
        let a: SocketAddr = "127.0.0.1:9100".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:9101".parse().expect("addr");
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        assert_eq!(
            group(&[(a, vec![METRICS]), (a, vec![PAGE, JSON])]),
            vec![(a, vec![METRICS, PAGE, JSON])]
        );
        assert_eq!(group(&[(a, vec![METRICS]), (b, vec![JSON])]).len(), 2);
        assert_eq!(group(&[(any, vec![METRICS]), (any, vec![JSON])]).len(), 2);
    }
}
