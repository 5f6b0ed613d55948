//! `--metrics ADDR`: `/metrics` in the Prometheus text exposition format.
//!
//! Served by a [`crate::http::Server`] thread: the event loop renders its
//! metrics once a second ([`REFRESH`]) and hands the text over through the
//! SPSC ring, so the loop never blocks on a scraper, never touches its
//! socket, and pays one rendering a second however often it is scraped. A
//! scrape sees figures at most a second old.
//!
//! [`Exposition`] builds the text: one `# TYPE` line per metric family,
//! then its samples.

use crate::http::{Route, Server};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How often the loop renders a fresh snapshot.
pub const REFRESH: Duration = Duration::from_secs(1);

/// Where the text is served.
pub const PATH: &str = "/metrics";

/// The `/metrics` route, for a server that also serves other things.
pub const ROUTE: Route = Route::live(PATH, "text/plain; version=0.0.4; charset=utf-8");

/// The loop's end of a server that serves `/metrics` alone (a worker's).
pub struct Metrics {
    server: Server,
    next: Instant,
}

impl Metrics {
    /// Binds `addr` and starts the serving thread.
    pub fn start(addr: SocketAddr, name: &str) -> Result<Metrics, String> {
        Ok(Metrics {
            server: Server::start(addr, name, vec![ROUTE])?,
            next: Instant::now(),
        })
    }

    /// Where it listens (the port is the kernel's choice for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Whether a rendering is due.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// Hands a rendering to the serving thread (dropped if it is behind).
    pub fn publish(&mut self, now: Instant, text: String) {
        self.next = now + REFRESH;
        self.server.publish(PATH, text);
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
