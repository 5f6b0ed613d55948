//! Client requests at the LB: dispatch to the next active worker, re-dispatch
//! of a dead worker's requests (same version, new request id), answers, and
//! the content buffers kept for re-dispatch.

use super::*;

impl Lb {
    pub(super) fn workers_backlogged(&self) -> bool {
        self.held_bytes > HELD_CONTENT_CAP
            || self.members.links().any(|k| {
                self.links
                    .get(k)
                    .is_some_and(|l| l.conn.pending_out() > WORKER_OUT_CAP)
            })
    }

    /// Dispatches one client request to the next active worker.
    pub(super) fn request(&mut self, key: usize, serial: u64, tag: u32, req: Request<'_>) {
        let id = match req {
            Request::Ping => {
                self.counters.pings += 1;
                if let Some(l) = self.links.get_mut(key) {
                    wire::encode_response(l.conn.out(), tag, &Response::Pong);
                }
                return;
            }
            Request::Put { id, .. } | Request::Get { id } => id,
            Request::Auth { .. } => return, // answered by `authorize`
        };
        let reject = if self.members.active().is_empty() {
            Some(ErrorCode::Unavailable)
        } else if self.pending.len() + self.parked.len() >= self.config.max_inflight {
            Some(ErrorCode::Busy)
        } else if matches!(req, Request::Put { .. }) && self.clock >= msg::MAX_VERSION {
            // No worker can store a later version (the year 4253, or a
            // worker that reported the largest one): refuse the PUT rather
            // than send one every worker must reject as malformed.
            log::error!("the version clock is at its limit; refusing PUTs");
            Some(ErrorCode::Unavailable)
        } else {
            None
        };
        if let Some(code) = reject {
            self.counters.errors[code as usize] += 1;
            if let Some(l) = self.links.get_mut(key) {
                wire::encode_error(l.conn.out(), tag, code);
            }
            return;
        }
        let now = self.turn_start;
        let (put, version, content) = match req {
            Request::Put { content, .. } => {
                self.counters.puts += 1;
                self.clock = self.clock.saturating_add(1).max(self.turn_micros);
                let mut buf = self.spare.pop().unwrap_or_default();
                buf.extend_from_slice(content);
                self.held_bytes += buf.len();
                (true, self.clock, buf)
            }
            _ => {
                self.counters.gets += 1;
                (false, 0, Vec::new())
            }
        };
        let deadline = now + self.config.request_timeout;
        let p = Pending {
            client: key,
            serial,
            tag,
            id,
            worker: 0,
            put,
            version,
            content,
            start: now,
            deadline,
        };
        let req_id = self.next_req;
        self.next_req += 1;
        if let Some(p) = self.dispatch(req_id, p) {
            // Not reached: there is an active worker (checked above).
            self.parked.push(p);
        }
        if let Some(Link {
            role: Role::Client(c),
            ..
        }) = self.links.get_mut(key)
        {
            c.inflight += 1;
        }
        self.deadlines.push_back((deadline, req_id));
    }

    /// Sends a request to the next active worker and records it as
    /// pending under `req_id`; gives it back if no worker can take it.
    pub(super) fn dispatch(&mut self, req_id: u64, mut p: Pending) -> Option<Pending> {
        let Some(worker) = self.members.next_worker() else {
            return Some(p);
        };
        let (wid, Some(wlink)) = (worker.id, worker.link) else {
            return Some(p);
        };
        let Some(wconn) = self.links.get_mut(wlink) else {
            return Some(p);
        };
        let out = wconn.conn.out();
        if p.put {
            let put = Msg::Put {
                req: req_id,
                version: p.version,
                id: p.id,
                content: &p.content,
            };
            msg::encode(out, &put);
        } else {
            // A GET carries only the part of the frontier this worker may
            // lack, written straight into the link's buffer.
            let lacking = self
                .frontier
                .iter()
                .filter(|&(&o, &s)| lookup(&worker.vector, o) < s)
                .map(|(&o, &s)| (o, s));
            msg::encode_get(out, req_id, p.id, lacking);
        }
        p.worker = wid;
        self.pending.insert(req_id, p);
        None
    }

    /// Sends the requests a dead worker left unconfirmed to other workers,
    /// each under a new request id (an answer from the dead one, should it
    /// wake up, matches nothing) and with its version and first deadline.
    /// With no active worker they wait in `parked` until one is, or until
    /// their deadline.
    pub(super) fn redispatch(&mut self, mut orphans: Vec<Pending>) {
        orphans.sort_by_key(|p| p.start);
        for p in orphans {
            // Nobody is waiting for the answer any more.
            let asker_gone = !matches!(
                self.links.get(p.client),
                Some(Link { role: Role::Client(c), .. }) if c.serial == p.serial
            );
            if asker_gone {
                self.recycle(p);
                continue;
            }
            let req_id = self.next_req;
            self.next_req += 1;
            let deadline = p.deadline;
            match self.dispatch(req_id, p) {
                Some(p) => self.parked.push(p),
                None => {
                    self.counters.redispatched += 1;
                    self.retry_deadlines.push(Reverse((deadline, req_id)));
                }
            }
        }
    }

    /// Returns a finished PUT's content buffer to the pool.
    pub(super) fn recycle(&mut self, p: Pending) {
        if !p.put {
            return;
        }
        let mut content = p.content;
        self.held_bytes -= content.len();
        if content.capacity() <= SPARE_MAX_CAPACITY && self.spare.len() < SPARE_BUFFERS {
            content.clear();
            self.spare.push(content);
        }
    }

    /// The output buffer of the client that sent `p`, if that connection
    /// is still there; counts the request as answered. A client already
    /// past its output limit gets nothing more (it is disconnected at the
    /// end of the turn), so its buffer cannot grow within a turn either.
    pub(super) fn client_out(&mut self, p: &Pending) -> Option<&mut Vec<u8>> {
        let link = self.links.get_mut(p.client)?;
        let limit = self.config.client_output_cap * OUTPUT_LIMIT_FACTOR;
        match &mut link.role {
            Role::Client(c) if c.serial == p.serial => {
                c.inflight -= 1;
                (link.conn.pending_out() <= limit).then(|| link.conn.out())
            }
            _ => None,
        }
    }

    /// Answers a client, if the connection that asked is still there.
    pub(super) fn answer(&mut self, p: &Pending, resp: &Response<'_>) {
        if let Some(out) = self.client_out(p) {
            wire::encode_response(out, p.tag, resp);
        }
        // Turn to turn: from the turn that read the request to the one
        // that read its answer.
        let micros = self
            .turn_start
            .saturating_duration_since(p.start)
            .as_micros() as u64;
        let _ = self.latency.record(micros.max(1));
    }

    pub(super) fn answer_error(&mut self, p: &Pending, code: ErrorCode) {
        self.counters.errors[code as usize] += 1;
        if let Some(out) = self.client_out(p) {
            wire::encode_error(out, p.tag, code);
        }
    }

    /// Removes a pending request answered by `worker`; a stale or foreign
    /// answer (its id unknown, or sent to another worker) matches nothing.
    pub(super) fn take_pending(&mut self, req: u64, worker: u32) -> Option<Pending> {
        match self.pending.get(&req) {
            Some(p) if p.worker == worker => self.pending.remove(&req),
            _ => None,
        }
    }

    pub(super) fn time_out(&mut self, p: Pending) {
        self.counters.timeouts += 1;
        self.answer_error(&p, ErrorCode::Timeout);
        self.recycle(p);
    }
}
