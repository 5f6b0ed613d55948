//! Client connections at the LB: framing, the client token check, and the
//! once-a-second sweep (idle, slowloris, buffer trimming).

use super::*;

/// What the client token check makes of a request.
pub(super) enum Gate {
    /// Go on and dispatch it.
    Pass,
    /// It was AUTH, and is answered.
    Answered,
    /// UNAUTHORIZED was sent; close the connection.
    Close,
}

impl Lb {
    /// Handles every whole client frame buffered on `key`. The read buffer
    /// is detached while its frames are handled, so a PUT's content goes
    /// straight from it into the worker's output buffer with no copy between.
    pub(super) fn client_frames(&mut self, key: usize) {
        let Some(link) = self.links.get_mut(key) else {
            return;
        };
        let Role::Client(Client { serial, .. }) = link.role else {
            return;
        };
        let input = std::mem::take(link.conn.input_mut());
        let (start, end) = link.conn.input_range();
        let mut pos = start;
        let backlogged = self.workers_backlogged();
        loop {
            let Some(link) = self.links.get_mut(key) else {
                return;
            };
            let full = match &link.role {
                Role::Client(c) => c.inflight >= self.config.max_inflight_per_client,
                _ => false,
            };
            if link.conn.pending_out() > self.config.client_output_cap || backlogged || full {
                if let Role::Client(c) = &mut link.role {
                    c.paused = true;
                }
                break;
            }
            match wire::parse_request(&input[pos..end], self.config.max_content) {
                Parse::Incomplete => break,
                Parse::Reject { code, tag, skip } => {
                    self.counters.errors[code as usize] += 1;
                    wire::encode_error(link.conn.out(), tag, code);
                    match skip {
                        Some(n) => pos += n,
                        None => {
                            if let Role::Client(c) = &mut link.role {
                                c.closing = true;
                            }
                            break;
                        }
                    }
                }
                Parse::Frame { tag, msg, consumed } => {
                    pos += consumed;
                    match self.authorize(key, tag, &msg) {
                        Gate::Pass => self.request(key, serial, tag, msg),
                        Gate::Answered => {}
                        Gate::Close => {
                            if let Some(Link {
                                role: Role::Client(c),
                                ..
                            }) = self.links.get_mut(key)
                            {
                                c.closing = true;
                            }
                            break;
                        }
                    }
                }
            }
        }
        if let Some(link) = self.links.get_mut(key) {
            *link.conn.input_mut() = input;
            link.conn.consume(pos - start);
            let partial = !link.conn.input().is_empty();
            if let Role::Client(c) = &mut link.role {
                let now = self.turn_start;
                c.last_input = now;
                // A frame held back by backpressure is not the client's delay.
                c.partial_since = match (partial && !c.paused, c.partial_since) {
                    (false, _) => None,
                    (true, Some(t)) => Some(t),
                    (true, None) => Some(now),
                };
            }
        }
    }

    /// The client token check (`--client-token-file`): AUTH is answered
    /// here; any other request before a good AUTH, or a wrong token, gets
    /// UNAUTHORIZED and the connection closes.
    pub(super) fn authorize(&mut self, key: usize, tag: u32, req: &Request<'_>) -> Gate {
        if self.client_token.is_none() && !matches!(req, Request::Auth { .. }) {
            return Gate::Pass; // the common case: no token, nothing to look up
        }
        let Some(Link {
            role: Role::Client(c),
            conn,
            ..
        }) = self.links.get_mut(key)
        else {
            return Gate::Answered;
        };
        let verdict = match (req, &self.client_token) {
            (Request::Auth { .. }, None) => Ok(()),
            (Request::Auth { token }, Some(expected)) => {
                if expected.matches(token) {
                    c.authed = true;
                    Ok(())
                } else {
                    Err(())
                }
            }
            (_, _) if c.authed => return Gate::Pass,
            (_, _) => Err(()),
        };
        match verdict {
            Ok(()) => {
                wire::encode_response(conn.out(), tag, &Response::AuthOk);
                Gate::Answered
            }
            Err(()) => {
                self.counters.errors[ErrorCode::Unauthorized as usize] += 1;
                wire::encode_error(conn.out(), tag, ErrorCode::Unauthorized);
                Gate::Close
            }
        }
    }

    /// Once a second: closes clients idle past `--idle-timeout-secs`, answers
    /// TIMEOUT (tag 0) to clients that have not finished a frame within
    /// `--frame-timeout-secs` and closes them, and frees the large buffers of
    /// clients that went quiet.
    pub(super) fn sweep_clients(&mut self, now: Instant) {
        let mut idle = Vec::new();
        for (key, link) in self.links.iter_mut() {
            let Role::Client(c) = &mut link.role else {
                continue;
            };
            if c.closing || c.lingering {
                continue;
            }
            let quiet = now.saturating_duration_since(c.last_input);
            if c.partial_since
                .is_some_and(|t| now.saturating_duration_since(t) > self.config.frame_timeout)
            {
                self.counters.slow_closed += 1;
                self.counters.errors[ErrorCode::Timeout as usize] += 1;
                wire::encode_error(link.conn.out(), 0, ErrorCode::Timeout);
                c.closing = true;
            } else if quiet > self.config.idle_timeout
                && c.inflight == 0
                && link.conn.input().is_empty()
                && link.conn.pending_out() == 0
            {
                idle.push(key);
            } else if quiet >= Duration::from_secs(1) {
                link.conn.trim();
            }
        }
        for key in idle {
            self.counters.idle_closed += 1;
            self.close(key);
        }
    }
}
