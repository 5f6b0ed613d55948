//! The LB's counters and latency percentiles, as `rrstore stats` shows them.

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
}
