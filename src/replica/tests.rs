//! The state machine driven by hand through one scenario at a time; the
//! seeded simulation (tests/sim) explores the interleavings.

use super::*;
use crate::msg::Status;

/// Records what the replica asked for.
#[derive(Default)]
struct Recorded {
    /// `(peer, vector)` of every catch-up request, in order.
    catchups: Vec<(u32, Vector)>,
}

impl Outbox for Recorded {
    fn to_lb(&mut self, _: &Msg<'_>) {}
    fn broadcast(&mut self, _: &RecordRef<'_>) {}
    fn to_peer(&mut self, peer: u32, msg: &Msg<'_>) {
        if let Msg::CatchupRequest { vector } = msg {
            self.catchups.push((peer, vector.clone()));
        }
    }
    fn persist_record(&mut self, _: &RecordRef<'_>) {}
    fn persist_vector(&mut self, _: &[(u32, u64)]) {}
    fn dial(&mut self, _: u32, _: &str) {}
    fn redial(&mut self, _: u32, _: &str) {}
    fn forget(&mut self, _: u32) {}
    fn stored(&mut self, _: u64, _: u64) {}
    fn value(&mut self, _: u64, _: Option<&[u8]>) {}
}

fn member(id: u32, status: Status) -> Member {
    Member {
        id,
        incarnation: 1,
        status,
        records: 0,
        addr: format!("w{id}"),
    }
}

/// Worker 1 restarted having lost its own records 5..=7 (its log kept
/// 1..=4); the LB knows of 7. Peers 2 and 3 are both asked once while
/// neither holds them yet; they arrive at the peers later. Without a retry
/// nothing would ever ask again.
#[test]
fn a_gap_every_peer_was_asked_about_is_asked_about_again() {
    let mut vv = VersionVector::new();
    vv.observe(1, 1);
    vv.observe(1, 2);
    vv.observe(1, 3);
    vv.observe(1, 4);
    let mut r = Replica::new(1, 1, "w1".into(), Store::new(), vv);
    let mut out = Recorded::default();
    r.on_lb_floor(7, &mut out);
    r.on_members(
        &[
            member(1, Status::Joining),
            member(2, Status::Active),
            member(3, Status::Active),
        ],
        &mut out,
    );
    for peer in [2, 3] {
        r.on_link_up(peer, &mut out);
        r.on_hello(peer, u64::from(peer), &format!("w{peer}"), 0, 4, &mut out);
    }
    // The first, full catch-up, then each peer once about our own gap.
    let mut donors = Vec::new();
    while let Some((peer, _)) = out.catchups.pop() {
        donors.push(peer);
        r.on_catchup_done(peer, &[(1, 4)], &mut out);
    }
    assert_eq!(donors.len(), 3, "{donors:?}");
    assert!(r.wants_retry(), "{}", r.describe());
    assert!(out.catchups.is_empty());

    r.retry_gaps(&mut out);
    let (peer, vector) = out.catchups.pop().expect("asked again");
    assert_eq!(lookup(&vector, 1), 4);
    assert!(!r.wants_retry(), "one request in flight at a time");
    r.on_catchup_done(peer, &[(1, 7)], &mut out);
    assert_eq!(r.vv.get(1), 7);
    assert!(!r.wants_retry(), "{}", r.describe());
}
