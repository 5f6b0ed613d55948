//! Liveness around the worker loop: the LB link (heartbeats, losing it,
//! registering again with bounded attempts), the outbound peer links'
//! watchdog (re-dial a link that makes no progress), asking again about a
//! gap no peer could fill, and the once-a-second
//! `--metrics` snapshot.

use super::*;

/// What [`Worker::check_peer_links`] remembers of one outbound link.
pub(super) struct LinkWatch {
    key: usize,
    up: bool,
    acked: u64,
    /// Our output the kernel had not taken yet.
    queued: usize,
    since: Instant,
}

impl Worker {
    /// The LB connection closed. Requests it sent die with it; a leaving
    /// worker can get nothing more (it counts as deregistered); every
    /// worker keeps replicating with its peers and registers again when an
    /// LB answers, a leaving one too: a restarted LB that did not list it
    /// would have its peers drop it before it handed its records over.
    pub(super) fn lost_lb(&mut self) {
        if let Some(mut link) = self.io.links.try_remove(self.io.lb) {
            link.conn.deregister(self.io.poll.registry());
        }
        self.io.lb = usize::MAX;
        self.io.held.clear();
        self.lb_paused = false;
        self.lb_resume = false;
        if matches!(self.replica.phase(), Phase::Leaving { .. }) {
            self.replica.on_deregister_ok();
            log::warn!("lost the LB connection while leaving; registering again to deregister");
        } else {
            log::warn!("lost the LB connection; re-registering when it is back");
        }
        self.replica.on_lb_lost();
        self.lb_retry = Some((Instant::now(), LB_RETRY_MIN));
    }

    /// Drops an LB connection that has been silent past [`LB_SILENCE`] (the
    /// LB stopped, or a partition: TCP alone would notice only after its
    /// retransmissions give up), and so starts re-registering.
    pub(super) fn check_lb_alive(&mut self) {
        let lb = self.io.lb;
        // A leaving worker too: the LB heartbeats it after DEREGISTER_OK.
        if lb == usize::MAX || self.lb_heard.elapsed() <= LB_SILENCE {
            return;
        }
        log::warn!(
            "nothing from the LB for {} ms; dropping the connection",
            self.lb_heard.elapsed().as_millis()
        );
        self.close_link(lb);
    }

    /// Closes outbound peer links stuck connecting, or whose peer has not
    /// acknowledged anything for [`PEER_SILENCE`] while it lacks our records;
    /// the replica re-dials them, and the new link's hello resumes replication.
    pub(super) fn check_peer_links(&mut self) {
        let now = Instant::now();
        if now < self.next_link_check {
            return;
        }
        self.next_link_check = now + PEER_SILENCE / 8;
        self.check_gaps(now);
        let own = self.replica.own_seq();
        let mut stale = Vec::new();
        let links: Vec<(u32, usize)> = self.io.out_links.iter().map(|(&p, &k)| (p, k)).collect();
        self.link_watch
            .retain(|p, _| links.iter().any(|(q, _)| q == p));
        for (peer, key) in links {
            let Some(link) = self.io.links.get(key) else {
                continue;
            };
            let up = matches!(link.role, Role::Out { up: true, .. });
            let acked = self.replica.peer_acked(peer).unwrap_or(0);
            let queued = link.conn.pending_out();
            let w = self.link_watch.entry(peer).or_insert(LinkWatch {
                key,
                up,
                acked,
                queued,
                since: now,
            });
            let progress =
                up && (acked >= own || acked > w.acked || queued == 0 || queued < w.queued);
            if w.key != key || w.up != up || progress {
                *w = LinkWatch {
                    key,
                    up,
                    acked,
                    queued,
                    since: now,
                };
            } else if now.saturating_duration_since(w.since) > PEER_SILENCE {
                stale.push((peer, key, up));
            }
        }
        for (peer, key, up) in stale {
            log::warn!(
                "link to peer {peer} {} for {} ms; re-dialling",
                if up {
                    "unacknowledged"
                } else {
                    "still connecting"
                },
                PEER_SILENCE.as_millis()
            );
            self.link_watch.remove(&peer);
            self.close_link(key);
        }
    }

    /// Asks about a gap again once [`GAP_RETRY`] (doubling while the gap
    /// lasts) passed with every peer asked: records can reach a peer after
    /// it answered. (Checked with the links, a few times a second, not
    /// every turn.)
    fn check_gaps(&mut self, now: Instant) {
        if !self.replica.wants_retry() {
            self.gap_retry_at = None;
            // A catch-up in flight is no progress yet: the pause grows on
            // until nothing is lacking.
            if !self.replica.lacks_anything() {
                self.gap_retry_pause = GAP_RETRY;
            }
            return;
        }
        match self.gap_retry_at {
            None => self.gap_retry_at = Some(now + self.gap_retry_pause),
            Some(at) if now >= at => {
                if self.gap_retry_pause >= GAP_RETRY_MAX / 4 {
                    log::warn!(
                        "no peer has filled a gap in our records for {} s; asking again ({})",
                        self.gap_retry_pause.as_secs(),
                        self.replica.describe()
                    );
                }
                self.gap_retry_at = None;
                self.gap_retry_pause = (self.gap_retry_pause * 2).min(GAP_RETRY_MAX);
                self.replica.retry_gaps(&mut self.io);
            }
            Some(_) => {}
        }
    }

    /// One attempt to re-register, if one is due; backs off on failure.
    pub(super) fn reconnect_lb(&mut self) -> Result<(), Box<dyn Error>> {
        let Some((when, backoff)) = self.lb_retry else {
            return Ok(());
        };
        if Instant::now() < when {
            return Ok(());
        }
        let r = &self.replica;
        let attempt = register(
            &self.config.lb,
            Duration::ZERO,
            LB_ATTEMPT_TIMEOUT,
            // The loop itself looks at signals, right after.
            &mut || false,
            r.id,
            r.origin,
            r.vv.max_origin(),
            r.store.max_version().max(self.log_max_version),
            &r.addr,
            self.config.secret.as_ref(),
        );
        let reg = match attempt {
            Ok(reg) => reg,
            Err(e) => {
                if backoff >= LB_RETRY_MAX {
                    log::warn!("LB not back yet: {e}");
                }
                self.lb_retry = Some((Instant::now() + backoff, (backoff * 2).min(LB_RETRY_MAX)));
                return Ok(());
            }
        };
        if reg.id != self.replica.id {
            return Err(format!(
                "the LB re-registered us as {}, not {}",
                reg.id, self.replica.id
            )
            .into());
        }
        let mut conn = Conn::new(reg.stream);
        conn.push_input(&reg.early);
        self.io.lb = self.io.links.insert(Link::new(conn, Role::Lb));
        self.lb_retry = None;
        self.lb_heard = Instant::now();
        self.last_report = None;
        // The new LB knows nothing of us yet: report even if nothing changes.
        self.replica.vector_dirty = true;
        log::info!("re-registered with the LB");
        self.config.max_content = self.config.max_content.max(reg.max_content);
        self.io.ack_all = reg.ack_all;
        self.replica.on_lb_welcome(&reg.members, &mut self.io);
        if matches!(self.replica.phase(), Phase::Leaving { .. }) {
            // Listed as leaving, so its peers keep it until it is done;
            // the LB weighs our release on what we report first.
            self.report();
            self.io.to_lb(&Msg::Deregister);
        }
        self.handle_input(self.io.lb)
    }

    /// Renders `/metrics` once a second, if `--metrics` is on: the store,
    /// the log, the phase, and per peer how many of our records it has not
    /// acknowledged (replication lag, in records) and since when (in
    /// seconds, see [`super::lag`]).
    pub(super) fn publish_metrics(&mut self) {
        let now = Instant::now();
        if !self.metrics.as_ref().is_some_and(|m| m.due(now)) {
            return;
        }
        let r = &self.replica;
        let id = r.id.to_string();
        let me = [("id", id.as_str())];
        let mut e = crate::metrics::Exposition::new();
        e.sample("rrstore_worker_records", "gauge", &me, r.store.len() as f64);
        e.sample(
            "rrstore_worker_content_bytes",
            "gauge",
            &me,
            r.store.content_bytes() as f64,
        );
        e.sample(
            "rrstore_worker_log_bytes",
            "gauge",
            &me,
            segments::log_bytes(&self.config.data_dir) as f64,
        );
        e.sample("rrstore_worker_own_seq", "gauge", &me, r.own_seq() as f64);
        let phase = match r.phase() {
            Phase::Joining => "joining",
            Phase::Active => "active",
            Phase::Leaving { .. } => "leaving",
        };
        e.sample(
            "rrstore_worker_phase",
            "gauge",
            &[("id", &id), ("phase", phase)],
            1.0,
        );
        e.sample(
            "rrstore_worker_catchup_records",
            "gauge",
            &me,
            self.catchup_records as f64,
        );
        let lags = r.peer_lags();
        for &(peer, lag) in &lags {
            e.sample(
                "rrstore_worker_peer_unacked_records",
                "gauge",
                &[("id", &id), ("peer", &peer.to_string())],
                lag as f64,
            );
        }
        let own = r.own_seq();
        for &(peer, lag) in &lags {
            let acked = own.saturating_sub(lag);
            e.sample(
                "rrstore_worker_peer_lag_seconds",
                "gauge",
                &[("id", &id), ("peer", &peer.to_string())],
                self.lag_clock.lag(acked, now).as_secs_f64(),
            );
        }
        let max_lag = lags.iter().map(|&(_, lag)| lag).max().unwrap_or(0);
        self.lag_clock.trim(own.saturating_sub(max_lag));
        let text = e.finish();
        if let Some(m) = self.metrics.as_mut() {
            m.publish(now, text);
        }
    }
}
