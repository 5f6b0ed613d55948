//! `--metrics ADDR`: `/metrics` in the Prometheus text exposition format.
//!
//! A dedicated thread runs a small HTTP server (tiny_http). The event loop
//! renders its metrics once a second and hands the text to that thread
//! through the SPSC ring ([`crate::ringbuf`]): the loop never blocks on a
//! scraper, never touches its socket, and pays one rendering a second
//! however often it is scraped. A scrape sees figures at most a second old.
//!
//! [`Exposition`] builds the text: one `# TYPE` line per metric family,
//! then its samples.

use crate::ringbuf::{channel, Producer};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How often the loop renders a fresh snapshot.
pub const REFRESH: Duration = Duration::from_secs(1);

/// The loop's end: publishes snapshots to the serving thread.
pub struct Metrics {
    tx: Producer<String>,
    next: Instant,
    addr: SocketAddr,
}

impl Metrics {
    /// Binds `addr` and starts the serving thread.
    pub fn start(addr: SocketAddr, name: &str) -> Result<Metrics, String> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
        let bound = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| format!("metrics server on {addr} has no IP address"))?;
        let (tx, mut rx) = channel::<String>(4);
        std::thread::Builder::new()
            .name(format!("{name}-metrics"))
            .spawn(move || {
                let mut latest = String::new();
                loop {
                    while let Some(text) = rx.pop() {
                        latest = text;
                    }
                    if rx.is_abandoned() && rx.is_empty() {
                        return; // the loop is gone
                    }
                    let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(250)) else {
                        continue;
                    };
                    let response = if request.url() == "/metrics" {
                        let content_type = tiny_http::Header::from_bytes(
                            &b"Content-Type"[..],
                            &b"text/plain; version=0.0.4; charset=utf-8"[..],
                        );
                        let mut r = tiny_http::Response::from_string(latest.clone());
                        if let Ok(h) = content_type {
                            r.add_header(h);
                        }
                        r
                    } else {
                        tiny_http::Response::from_string("not found: try /metrics\n")
                            .with_status_code(404)
                    };
                    let _ = request.respond(response);
                }
            })
            .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
        Ok(Metrics {
            tx,
            next: Instant::now(),
            addr: bound,
        })
    }

    /// Where it listens (the port is the kernel's choice for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// When the loop should render next.
    pub fn next(&self) -> Instant {
        self.next
    }

    /// Whether a rendering is due.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// Hands a rendering to the serving thread (dropped if it is behind).
    pub fn publish(&mut self, now: Instant, text: String) {
        self.next = now + REFRESH;
        let _ = self.tx.push(text);
    }
}

/// Builds Prometheus text: families in order, each with its `# TYPE` line.
#[derive(Default)]
pub struct Exposition {
    text: String,
    last_family: String,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// One sample; `kind` is `counter` or `gauge` (written once per family),
    /// `labels` are `(name, value)` pairs.
    pub fn sample(&mut self, family: &str, kind: &str, labels: &[(&str, &str)], value: f64) {
        if self.last_family != family {
            let _ = writeln!(self.text, "# TYPE {family} {kind}");
            self.last_family = family.to_string();
        }
        self.text.push_str(family);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let v = v.replace('\\', "\\\\").replace('"', "\\\"");
                let _ = write!(self.text, "{k}=\"{v}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    pub fn finish(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_get_one_type_line_and_labels_are_escaped() {
        let mut e = Exposition::new();
        e.sample("x_total", "counter", &[], 3.0);
        e.sample("y", "gauge", &[("id", "1"), ("addr", "a\"b")], 1.5);
        e.sample("y", "gauge", &[("id", "2")], 2.0);
        assert_eq!(
            e.finish(),
            "# TYPE x_total counter\nx_total 3\n# TYPE y gauge\ny{id=\"1\",addr=\"a\\\"b\"} 1.5\ny{id=\"2\"} 2\n"
        );
    }
}
