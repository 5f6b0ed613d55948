//! Workers and admin tools on the LB's control port: registration (with the
//! saved next ID and the grace after a restart), READY, reports, repair of
//! lagging workers, liveness.

use super::*;

/// Where the LB keeps the next unused worker ID: beside the processed log.
pub(super) fn ids_path(processed_log: &std::path::Path) -> PathBuf {
    let mut name = processed_log.as_os_str().to_owned();
    name.push(".ids");
    PathBuf::from(name)
}

/// The next unused worker ID a previous LB saved, if any.
pub(super) fn saved_next_id(processed_log: &std::path::Path) -> Option<u32> {
    let text = std::fs::read_to_string(ids_path(processed_log)).ok()?;
    text.trim().parse().ok()
}

impl Lb {
    /// Handles every whole frame from a worker or admin tool on `key`.
    pub(super) fn control_frames(&mut self, key: usize) {
        loop {
            let Some(link) = self.links.get_mut(key) else {
                return;
            };
            let input = std::mem::take(link.conn.input_mut());
            let (start, end) = link.conn.input_range();
            let decoded = msg::decode(&input[start..end], self.config.max_content);
            let failed = decoded.is_err();
            let outcome = match decoded {
                Ok(None) => None,
                Ok(Some((m, consumed))) => {
                    match self.links.get_mut(key) {
                        Some(Link { auth: Some(_), .. }) => self.handshake_frame(key, &m),
                        _ => self.control_frame(key, m),
                    }
                    Some(consumed)
                }
                Err(code) => {
                    log::warn!("bad frame on control link {key}: {}", code.name());
                    None
                }
            };
            let Some(link) = self.links.get_mut(key) else {
                return;
            };
            *link.conn.input_mut() = input;
            match outcome {
                Some(n) => link.conn.consume(n),
                None => {
                    if failed {
                        self.close(key);
                    }
                    return;
                }
            }
        }
    }

    pub(super) fn control_frame(&mut self, key: usize, m: Msg<'_>) {
        let worker = match self.links.get(key).map(|l| &l.role) {
            Some(Role::Worker { id, .. }) => Some(*id),
            Some(_) => None,
            None => return,
        };
        match (worker, m) {
            (Some(w), Msg::Stored { req, seq }) => {
                let Some(p) = self.take_pending(req, w) else {
                    return;
                };
                let f = self.frontier.entry(w).or_insert(0);
                *f = (*f).max(seq);
                self.counters.stored += 1;
                self.plog.push(Confirmed {
                    id: p.id,
                    worker: w,
                    version: p.version,
                    micros: unix_micros(),
                });
                self.answer(
                    &p,
                    &Response::Stored {
                        id: p.id,
                        worker: w,
                    },
                );
                self.recycle(p);
            }
            (Some(w), Msg::Value { req, content }) => {
                let Some(p) = self.take_pending(req, w) else {
                    return;
                };
                match content {
                    Some(content) => {
                        self.counters.values += 1;
                        self.answer(&p, &Response::Value { id: p.id, content });
                    }
                    None => {
                        self.counters.not_found += 1;
                        self.answer(&p, &Response::NotFound { id: p.id });
                    }
                }
                self.recycle(p);
            }
            (
                Some(w),
                Msg::Report {
                    records,
                    max_version,
                    digest,
                    vector,
                },
            ) => {
                self.clock = self.clock.max(max_version);
                if let Some(info) = self.members.get_mut(w) {
                    info.records = records;
                    info.digest = Some(digest);
                    info.vector = vector;
                }
                self.status.reported(w, records);
                self.repair_lagging();
            }
            (Some(w), Msg::Ready { vector, markers }) => {
                match self
                    .members
                    .check_ready(&self.frontier, w, &vector, &markers)
                {
                    Readiness::NotYet => {}
                    Readiness::Behind(floor) => {
                        if let Some(link) = self.links.get_mut(key) {
                            msg::encode(link.conn.out(), &Msg::Behind { floor });
                        }
                    }
                    Readiness::Complete => {
                        let join = self.join_of(w);
                        if self.members.activate(w) {
                            log::info!("worker {w} caught up (markers {markers:?}); now active");
                            if let Some(join) = join {
                                self.status.joined(join);
                            }
                            self.membership_changed = true;
                            let parked = std::mem::take(&mut self.parked);
                            self.redispatch(parked);
                        }
                    }
                }
            }
            // Its arrival already counted (see `on_readable`).
            (Some(_), Msg::Heartbeat) => {}
            (Some(w), Msg::Deregister) => {
                log::info!("worker {w} deregistered");
                self.status_event(w, "deregistered: leaving".into());
                self.members.deregister(w);
                self.membership_changed = true;
                if let Some(link) = self.links.get_mut(key) {
                    msg::encode(link.conn.out(), &Msg::DeregisterOk);
                }
            }
            (
                None,
                Msg::Register {
                    id,
                    incarnation,
                    max_version,
                    addr,
                },
            ) => {
                if let Some(who) = self.links.get(key).and_then(|l| l.verified.as_ref()) {
                    if who.id != id || who.addr != addr {
                        self.counters.auth_rejected += 1;
                        log::warn!(
                            "refused registration of worker {id} at {addr}: it authenticated as {} at {:?}",
                            who.id, who.addr
                        );
                        self.close(key);
                        return;
                    }
                }
                if id == 0 && self.started.elapsed() < REGISTRATION_GRACE && self.ids_known_before {
                    // Just restarted: workers that already have IDs come
                    // back first, so a newcomer cannot be given one of theirs.
                    self.deferred.push((key, incarnation, max_version, addr));
                    return;
                }
                self.register_worker(key, id, incarnation, max_version, addr);
            }
            (None, Msg::MembersRequest) => {
                let members = self.members.members();
                self.admin_reply(key, &Msg::Members { members });
            }
            (None, Msg::StatsRequest) => {
                let pairs = self.stats();
                self.admin_reply(key, &Msg::Stats { pairs });
            }
            (_, Msg::AuthHello { .. }) => {
                log::warn!(
                    "control link {key} tries to authenticate, but this LB runs --insecure; closing it"
                );
                self.close(key);
            }
            (_, other) => {
                log::warn!("unexpected {other:?} on control link {key}; closing it");
                self.close(key);
            }
        }
    }

    /// Registers a worker on connection `key`: assigns an ID if it asked
    /// for one (and remembers the highest ID ever given, see
    /// [`Lb::persist_next_id`]), answers WELCOME, or REFUSED and closes.
    pub(super) fn register_worker(
        &mut self,
        key: usize,
        id: u32,
        incarnation: u32,
        max_version: u64,
        addr: String,
    ) {
        self.clock = self.clock.max(max_version);
        let reported = self.members.get(id).map_or(0, |w| lookup(&w.vector, id));
        match self.members.register(id, incarnation, addr.clone(), key) {
            Ok((id, incarnation)) => {
                log::info!(
                    "worker {id} (incarnation {incarnation}) registered from {addr}; joining"
                );
                self.status_event(
                    id,
                    format!("registered from {addr} (incarnation {incarnation}): joining"),
                );
                let welcome = Msg::Welcome {
                    id,
                    members: self.members.members(),
                    max_content: self.config.max_content as u64,
                    your_seq: reported.max(self.frontier.get(&id).copied().unwrap_or(0)),
                    ack_all: self.config.ack_all,
                };
                if let Some(link) = self.links.get_mut(key) {
                    link.role = Role::Worker {
                        id,
                        last_heard: Instant::now(),
                    };
                    msg::encode(link.conn.out(), &welcome);
                }
                self.membership_changed = true;
            }
            Err(reason) => {
                log::warn!("refused registration: {reason}");
                if let Some(link) = self.links.get_mut(key) {
                    msg::encode(link.conn.out(), &Msg::Refused { reason });
                    link.conn.flush();
                }
                self.close(key);
            }
        }
        self.persist_next_id();
    }

    /// Writes the next unused worker ID next to the processed log when it
    /// grows, so that a restarted LB never gives a new worker the ID of one
    /// that has not re-registered yet. A rare, small, synchronous write.
    pub(super) fn persist_next_id(&mut self) {
        let next = self.members.next_id();
        if next <= self.persisted_next_id {
            return;
        }
        let path = ids_path(&self.config.processed_log);
        let tmp = path.with_extension("ids.tmp");
        let written = std::fs::write(&tmp, format!("{next}\n"))
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &path));
        match written {
            Ok(()) => self.persisted_next_id = next,
            Err(e) => log::warn!("cannot save worker IDs in {}: {e}", path.display()),
        }
    }

    /// Registrations held back during [`REGISTRATION_GRACE`], once it is over.
    pub(super) fn register_deferred(&mut self) {
        if self.deferred.is_empty() || self.started.elapsed() < REGISTRATION_GRACE {
            return;
        }
        for (key, incarnation, max_version, addr) in std::mem::take(&mut self.deferred) {
            if self.links.contains(key) {
                self.register_worker(key, 0, incarnation, max_version, addr);
            }
        }
    }

    /// Tells each worker that lacks records of an origin that cannot send
    /// them itself any more (see `Membership::lagging`) what to catch up.
    pub(super) fn repair_lagging(&mut self) {
        for (w, floor) in self.members.lagging(&self.frontier) {
            let Some(info) = self.members.get_mut(w) else {
                continue;
            };
            info.behind = floor.clone();
            if let Some(link) = info.link.and_then(|k| self.links.get_mut(k)) {
                msg::encode(link.conn.out(), &Msg::Behind { floor });
            }
        }
    }

    pub(super) fn admin_reply(&mut self, key: usize, m: &Msg<'_>) {
        if let Some(link) = self.links.get_mut(key) {
            link.role = Role::Admin;
            msg::encode(link.conn.out(), m);
        }
    }

    /// Closes the connection of every worker that has sent nothing for
    /// `--worker-timeout-ms` (it sends a heartbeat every
    /// [`msg::HEARTBEAT_EVERY`]): a paused or wedged process whose socket
    /// stays open. Its requests go to other workers; should it wake up, it
    /// finds the connection closed and registers again.
    pub(super) fn declare_silent_workers_dead(&mut self, now: Instant) {
        let silent: Vec<(usize, u32, Duration)> = self
            .members
            .links()
            .filter_map(|k| match self.links.get(k)?.role {
                Role::Worker { id, last_heard } => {
                    let quiet = now.saturating_duration_since(last_heard);
                    (quiet > self.config.worker_timeout).then_some((k, id, quiet))
                }
                _ => None,
            })
            .collect();
        for (key, id, quiet) in silent {
            log::warn!(
                "worker {id} silent for {} ms; declaring it dead",
                quiet.as_millis()
            );
            self.counters.declared_dead += 1;
            self.status_event(
                id,
                format!("silent for {} ms: declared dead", quiet.as_millis()),
            );
            self.close(key);
        }
    }
}
