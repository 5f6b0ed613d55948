//! Workers and admin tools on the LB's control port: registration (with the
//! saved next ID and the grace after a restart), READY, reports, repair of
//! lagging workers, liveness.

use super::*;

/// Where the LB keeps the next unused worker ID and the IDs of the workers
/// it lists (see [`Lb::persist_ids`]): beside the processed log.
pub(super) fn ids_path(processed_log: &std::path::Path) -> PathBuf {
    let mut name = processed_log.as_os_str().to_owned();
    name.push(".ids");
    PathBuf::from(name)
}

/// What a previous LB saved, if anything: the next unused worker ID, and
/// (a second line, absent in files of older versions) the IDs of the
/// workers it listed.
pub(super) fn saved_ids(processed_log: &std::path::Path) -> (Option<u32>, Option<Vec<u32>>) {
    let Ok(text) = std::fs::read_to_string(ids_path(processed_log)) else {
        return (None, None);
    };
    let mut lines = text.lines();
    let next = lines.next().and_then(|l| l.trim().parse().ok());
    let members = lines
        .next()
        .and_then(|l| l.split_whitespace().map(|w| w.parse().ok()).collect());
    (next, members)
}

/// A worker's REGISTER, as held during a restarted LB's grace.
pub(super) struct Registration {
    pub(super) key: usize,
    pub(super) id: u32,
    pub(super) origin: u32,
    pub(super) max_origin: u32,
    pub(super) max_version: u64,
    pub(super) addr: String,
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
                // `seq` numbers a record of the worker's current origin.
                if let Some(origin) = self.members.origin_of(w) {
                    let f = self.frontier.entry(origin).or_insert(0);
                    *f = (*f).max(seq);
                }
                self.counters.stored += 1;
                self.plog.push(Confirmed {
                    id: p.id,
                    worker: w,
                    version: p.version,
                    micros: self.turn_micros,
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
                }
                self.status.reported(w, records);
                if self.members.note_report(w, vector) {
                    self.repair_lagging();
                }
            }
            (Some(w), Msg::Ready { vector, markers }) => {
                let readiness = if self.in_grace() {
                    // Asked again when the grace ends (`end_grace`).
                    Readiness::NotYet
                } else {
                    self.members
                        .check_ready(&self.frontier, w, &vector, &markers)
                };
                // What it holds counts as reported (see `lagging`) before
                // its first REPORT.
                if self.members.note_report(w, vector) {
                    self.repair_lagging();
                }
                match readiness {
                    // It sends no new READY unless its own view changes,
                    // but ours may (a joiner it lacked a marker of died):
                    // asked again at the next membership change.
                    Readiness::NotYet => self.held_ready = true,
                    Readiness::Behind(floor) => {
                        let floor = self.members.add_behind(w, &floor);
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
                self.release_leavers();
            }
            (
                None,
                Msg::Register {
                    id,
                    origin,
                    max_origin,
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
                let registration = Registration {
                    key,
                    id,
                    origin,
                    max_origin,
                    max_version,
                    addr,
                };
                // Just restarted: workers that already have IDs come back
                // first, so a newcomer cannot be given one of theirs; and
                // without the saved list (so without the saved counter,
                // likely) processes that have origins too, before a new
                // process is given one.
                let wants_new = id == 0 || (origin == 0 && self.awaited.is_none());
                if wants_new && self.in_grace() {
                    self.deferred.push(registration);
                    return;
                }
                self.register_worker(registration);
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
    /// [`Lb::persist_ids`]), answers WELCOME, or REFUSED and closes.
    pub(super) fn register_worker(&mut self, r: Registration) {
        let (key, addr) = (r.key, r.addr);
        self.clock = self.clock.max(r.max_version);
        let registered = self
            .members
            .register(r.id, r.origin, r.max_origin, addr.clone(), key)
            .and_then(|(id, origin)| match self.persist_ids() {
                Ok(()) => Ok((id, origin)),
                Err(e) => {
                    // Its ID or origin could be given again after a restart.
                    self.members.lost(id);
                    Err(format!("cannot save the ID counter: {e}"))
                }
            });
        match registered {
            Ok((id, origin)) => {
                if let Some(awaited) = &mut self.awaited {
                    awaited.remove(&id);
                }
                log::info!("worker {id} (origin {origin}) registered from {addr}; joining");
                self.status_event(
                    id,
                    format!("registered from {addr} (origin {origin}): joining"),
                );
                let welcome = Msg::Welcome {
                    id,
                    members: self.members.members(),
                    max_content: self.config.max_content as u64,
                    origin,
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
        // Its earlier process's origin may be one nobody streams now.
        self.repair_lagging();
    }

    /// Writes the next unused worker ID and the IDs of the workers listed
    /// next to the processed log when they change, so that a restarted LB
    /// never gives a new worker the ID of one that has not re-registered
    /// yet, and knows whom its grace waits for. A rare, small, synchronous
    /// write: at every registration of a new process (each one takes an
    /// origin from the counter) and when a worker leaves.
    pub(super) fn persist_ids(&mut self) -> std::io::Result<()> {
        let next = self.members.next_id();
        let mut listed = self.members.listed();
        if !self.grace_over {
            // Those not back yet still count: should this LB crash in its
            // grace, the next one waits for them too.
            if let Some(awaited) = &self.awaited {
                listed.extend(awaited);
                listed.sort_unstable();
                listed.dedup();
            }
        }
        if next <= self.persisted_next_id && listed == self.persisted_members {
            return Ok(());
        }
        let path = ids_path(&self.config.processed_log);
        let tmp = path.with_extension("ids.tmp");
        let ids: Vec<String> = listed.iter().map(u32::to_string).collect();
        let text = format!("{next}\n{}\n", ids.join(" "));
        let written = std::fs::write(&tmp, text)
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &path));
        match written {
            Ok(()) => {
                self.persisted_next_id = next;
                self.persisted_members = listed;
                Ok(())
            }
            Err(e) => {
                log::warn!("cannot save worker IDs in {}: {e}", path.display());
                Err(e)
            }
        }
    }

    /// Within [`REGISTRATION_GRACE`] of a restart, with workers the
    /// previous LB listed not back yet.
    pub(super) fn in_grace(&self) -> bool {
        !self.grace_over
            && self.started.elapsed() < REGISTRATION_GRACE
            && self.awaited.as_ref().is_none_or(|a| !a.is_empty())
    }

    /// Once the grace is over: registers the newcomers held back, and has
    /// every joining worker asked to send its READY again if one was held
    /// (see [`Lb::ask_ready_again`]).
    pub(super) fn end_grace(&mut self) {
        if self.grace_over || self.in_grace() {
            return;
        }
        self.grace_over = true;
        match self.awaited.as_ref().filter(|a| !a.is_empty()) {
            None if self.started.elapsed() < REGISTRATION_GRACE => {
                log::info!("restart grace over: every worker listed before is back")
            }
            None => log::info!("restart grace over after {REGISTRATION_GRACE:?}"),
            Some(missing) => log::info!(
                "restart grace over after {REGISTRATION_GRACE:?}; not back: workers {:?}",
                missing.iter().collect::<Vec<_>>()
            ),
        }
        for registration in std::mem::take(&mut self.deferred) {
            if self.links.contains(registration.key) {
                self.register_worker(registration);
            }
        }
        if self.held_ready {
            // The members go out first, then the question (`end_of_turn`).
            self.membership_changed = true;
        }
    }

    /// Asks every joining worker for its READY again with a BEHIND that
    /// repeats its floor,
    /// after one was not acted on (held in the grace, or incomplete by
    /// the membership then: a joiner it lacked a marker of may have died
    /// since, and the worker has no reason to send it again). Queued after
    /// this turn's membership
    /// frame on the same connection, so the new READY answers for every
    /// worker that came back, including those registered in this turn.
    pub(super) fn ask_ready_again(&mut self) {
        if !self.grace_over || !std::mem::take(&mut self.held_ready) {
            return;
        }
        let joining: Vec<(u32, usize)> = self.members.joining_links().collect();
        for (id, key) in joining {
            // Its floor as it stands: BEHIND replaces it.
            let floor = self.members.behind_of(id);
            if let Some(link) = self.links.get_mut(key) {
                msg::encode(link.conn.out(), &Msg::Behind { floor });
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
            info.behind = Some(floor.clone());
            if let Some(link) = info.link.and_then(|k| self.links.get_mut(k)) {
                msg::encode(link.conn.out(), &Msg::Behind { floor });
            }
        }
        self.release_leavers();
    }

    /// DEREGISTER_OK to each leaving worker whose records of origins
    /// nobody streams any more are held by every worker that stays (see
    /// `Membership::leavers_to_release`); until then it keeps serving
    /// catch-ups.
    pub(super) fn release_leavers(&mut self) {
        for w in self.members.leavers_to_release() {
            let link = self.members.get(w).and_then(|i| i.link);
            if let Some(link) = link.and_then(|k| self.links.get_mut(k)) {
                msg::encode(link.conn.out(), &Msg::DeregisterOk);
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

#[cfg(test)]
mod tests {
    use super::saved_ids;

    #[test]
    fn saved_ids_reads_both_formats_and_ignores_what_it_cannot_parse() {
        let dir = std::env::temp_dir().join(format!("rrstore-ids-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("processed.log");
        let ids = dir.join("processed.log.ids");
        type Saved = (Option<u32>, Option<Vec<u32>>);
        let cases: [(&str, Saved); 5] = [
            // Written by an older LB: the next ID alone (the full grace).
            ("7\n", (Some(7), None)),
            ("7\n1 2 5\n", (Some(7), Some(vec![1, 2, 5]))),
            // Nobody listed: nobody to wait for.
            ("7\n\n", (Some(7), Some(vec![]))),
            ("7\n1 x 5\n", (Some(7), None)),
            ("garbage\n1 2\n", (None, Some(vec![1, 2]))),
        ];
        for (text, want) in cases {
            std::fs::write(&ids, text).unwrap();
            assert_eq!(saved_ids(&log), want, "{text:?}");
        }
        std::fs::remove_file(&ids).unwrap();
        assert_eq!(saved_ids(&log), (None, None), "no file");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
