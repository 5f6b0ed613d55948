//! The worker's side of cluster authentication in the loop: frames on a
//! link that has not authenticated yet go to its [`crate::auth::Handshake`]
//! and nowhere else; a failed, skipped or late proof closes the link.

use super::links::Role;
use super::Worker;
use crate::msg::Msg;
use std::time::Instant;

impl Worker {
    /// A frame on a link that has not authenticated yet: the handshake's,
    /// or the link is closed (and counted).
    pub(super) fn handshake_frame(&mut self, key: usize, m: &Msg<'_>) {
        let Some(link) = self.io.links.get_mut(key) else {
            return;
        };
        let Some(h) = link.auth.as_mut() else {
            return;
        };
        match h.on_msg(m, link.conn.out()) {
            Ok(None) => {}
            Ok(Some(who)) => {
                link.auth = None;
                if let Role::Out { peer, .. } = link.role {
                    self.out_link_up(key, peer);
                } else {
                    link.verified = Some(who);
                }
            }
            Err(e) => self.refuse(key, &e.to_string()),
        }
    }

    /// Our link to `peer` is usable (connected, and authenticated if the
    /// cluster has a secret): replication to it starts.
    pub(super) fn out_link_up(&mut self, key: usize, peer: u32) {
        if let Some(link) = self.io.links.get_mut(key) {
            link.role = Role::Out { peer, up: true };
        }
        log::info!("link to peer {peer} up");
        self.replica.on_link_up(peer, &mut self.io);
    }

    /// Closes a link that failed or skipped authentication, and counts it.
    pub(super) fn refuse(&mut self, key: usize, why: &str) {
        if let Some(link) = self.io.links.get_mut(key) {
            link.auth = None;
        }
        self.io.auth_rejected += 1;
        let from = self
            .io
            .links
            .get(key)
            .and_then(|l| l.conn.stream.peer_addr().ok())
            .map_or("?".to_string(), |a| a.to_string());
        log::warn!(
            "link {key} with {from} refused: {why}; closing it ({} refused so far)",
            self.io.auth_rejected
        );
        self.close_link(key);
    }

    /// Closes links that have not authenticated within
    /// [`crate::auth::HANDSHAKE_TIMEOUT`] (an outbound one is re-dialled).
    pub(super) fn expire_handshakes(&mut self) {
        let now = Instant::now();
        let late: Vec<usize> = self
            .io
            .links
            .iter()
            .filter(|(_, l)| l.auth.as_ref().is_some_and(|h| h.timed_out(now)))
            .map(|(k, _)| k)
            .collect();
        for key in late {
            self.refuse(key, "no authentication in time");
        }
    }
}
