//! The LB's side of cluster authentication: frames on a control connection
//! that has not authenticated yet go to its [`crate::auth::Handshake`] and
//! nowhere else; a failed, skipped or late proof closes the connection.

use super::Lb;
use crate::msg::Msg;
use std::time::Instant;

impl Lb {
    /// A frame on a control connection that has not authenticated yet:
    /// the handshake's, or the connection is closed (and counted).
    pub(super) fn handshake_frame(&mut self, key: usize, m: &Msg<'_>) {
        let Some(link) = self.links.get_mut(key) else {
            return;
        };
        let Some(h) = link.auth.as_mut() else {
            return;
        };
        match h.on_msg(m, link.conn.out()) {
            Ok(None) => {}
            Ok(Some(who)) => {
                link.auth = None;
                link.verified = Some(who);
            }
            Err(e) => {
                link.auth = None;
                self.counters.auth_rejected += 1;
                let from = link.conn.stream.peer_addr().map(|a| a.to_string());
                log::warn!(
                    "control connection from {} refused: {e}; closing it",
                    from.as_deref().unwrap_or("?")
                );
                self.close(key);
            }
        }
    }

    /// Closes control connections that have not authenticated within
    /// [`crate::auth::HANDSHAKE_TIMEOUT`].
    pub(super) fn expire_handshakes(&mut self, now: Instant) {
        let late: Vec<usize> = self
            .links
            .iter()
            .filter(|(_, l)| l.auth.as_ref().is_some_and(|h| h.timed_out(now)))
            .map(|(k, _)| k)
            .collect();
        for key in late {
            if let Some(link) = self.links.get_mut(key) {
                link.auth = None;
            }
            self.counters.auth_rejected += 1;
            log::warn!("control connection {key} did not authenticate in time; closing it");
            self.close(key);
        }
    }
}
