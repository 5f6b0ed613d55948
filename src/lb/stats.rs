//! The LB's counters and latency percentiles, as `rrstore stats` shows
//! them, and as `--metrics` exposes them with the per-worker figures
//! (`status.rs` turns the same figures into `/status.json`).

use super::*;

impl Lb {
    pub(super) fn stats(&self) -> Vec<(String, u64)> {
        let c = &self.counters;
        let mut v: Vec<(String, u64)> = vec![
            ("requests_put".into(), c.puts),
            ("requests_get".into(), c.gets),
            ("requests_ping".into(), c.pings),
            ("responses_stored".into(), c.stored),
            ("responses_value".into(), c.values),
            ("responses_not_found".into(), c.not_found),
            ("responses_timeout".into(), c.timeouts),
            ("redispatched".into(), c.redispatched),
            ("workers_declared_dead".into(), c.declared_dead),
            (
                "in_flight".into(),
                (self.pending.len() + self.parked.len()) as u64,
            ),
            ("held_content_bytes".into(), self.held_bytes as u64),
            ("clients_accepted".into(), c.clients_accepted),
            (
                "workers_active".into(),
                self.members.count(Status::Active) as u64,
            ),
            (
                "workers_joining".into(),
                self.members.count(Status::Joining) as u64,
            ),
            (
                "workers_inactive".into(),
                self.members.count(Status::Inactive) as u64,
            ),
            ("read_syscalls".into(), c.reads),
            ("write_syscalls".into(), c.writes),
            ("loop_turns".into(), c.turns),
            ("discarded_bytes".into(), c.discarded_bytes),
            ("clients_connected".into(), self.client_count as u64),
            ("clients_idle_closed".into(), c.idle_closed),
            ("clients_slow_closed".into(), c.slow_closed),
            ("accept_paused".into(), c.accept_paused),
            ("clients_output_closed".into(), c.output_closed),
            ("auth_rejected".into(), c.auth_rejected),
            ("processed_log_backlog".into(), self.plog.backlog() as u64),
        ];
        for code in 1..=7u16 {
            if let Some(e) = ErrorCode::from_u16(code) {
                v.push((
                    format!("errors_{}", e.name().to_lowercase()),
                    c.errors[code as usize],
                ));
            }
        }
        let h = &self.latency;
        for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
            v.push((format!("latency_us_{name}"), h.value_at_quantile(q)));
        }
        v.push(("latency_us_max".into(), h.max()));
        v.push(("latency_samples".into(), h.len()));
        v
    }

    /// Replication lag of a worker that reported `vector`: acknowledged
    /// records of any origin it does not hold yet.
    pub(super) fn lag(&self, vector: &[(u32, u64)]) -> u64 {
        self.frontier
            .iter()
            .map(|(&o, &s)| s.saturating_sub(lookup(vector, o)))
            .sum()
    }

    /// `/metrics`: every counter of [`Lb::stats`], latency quantiles, and per
    /// worker its status, record count and replication lag (acknowledged
    /// records of any origin it does not hold yet, from its last REPORT).
    pub(super) fn render_metrics(&self) -> String {
        let mut e = crate::metrics::Exposition::new();
        for (name, value) in self.stats() {
            if let Some(q) = name.strip_prefix("latency_us_p") {
                let quantile = match q {
                    "50" => "0.5",
                    "90" => "0.9",
                    "99" => "0.99",
                    "999" => "0.999",
                    _ => continue,
                };
                e.sample(
                    "rrstore_lb_request_latency_seconds",
                    "gauge",
                    &[("quantile", quantile)],
                    value as f64 / 1e6,
                );
                continue;
            }
            let gauge = matches!(
                name.as_str(),
                "in_flight"
                    | "held_content_bytes"
                    | "clients_connected"
                    | "processed_log_backlog"
                    | "latency_us_max"
                    | "latency_samples"
                    | "workers_active"
                    | "workers_joining"
                    | "workers_inactive"
            );
            let (family, kind) = if gauge {
                (format!("rrstore_lb_{name}"), "gauge")
            } else {
                (format!("rrstore_lb_{name}_total"), "counter")
            };
            e.sample(&family, kind, &[], value as f64);
        }
        let members = self.members.members();
        for m in &members {
            let id = m.id.to_string();
            e.sample(
                "rrstore_lb_worker_records",
                "gauge",
                &[("id", &id), ("addr", &m.addr), ("status", m.status.name())],
                m.records as f64,
            );
        }
        for m in &members {
            let vector = self
                .members
                .get(m.id)
                .map(|w| w.vector.as_slice())
                .unwrap_or(&[]);
            let lag = self.lag(vector);
            e.sample(
                "rrstore_lb_worker_lag_records",
                "gauge",
                &[("id", &m.id.to_string())],
                lag as f64,
            );
        }
        e.finish()
    }
}
