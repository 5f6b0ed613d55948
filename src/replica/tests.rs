//! The state machine driven by hand through one scenario at a time; the
//! seeded simulation (tests/sim) explores the interleavings.

use super::*;
use crate::msg::Status;

/// Records what the replica asked for.
#[derive(Default)]
struct Recorded {
    /// `(peer, vector)` of every catch-up request, in order.
    catchups: Vec<(u32, Vector)>,
    /// `(peer, origin, seq)` of every record sent on a link to a peer.
    records: Vec<(u32, u32, u64)>,
    /// How many READYs went to the LB.
    readies: u32,
    /// Every origin hurried, in order.
    hurried: Vec<u32>,
    /// `(req, found)` of every GET answered, in order.
    values: Vec<(u64, bool)>,
}

impl Outbox for Recorded {
    fn to_lb(&mut self, msg: &Msg<'_>) {
        if matches!(msg, Msg::Ready { .. }) {
            self.readies += 1;
        }
    }
    fn broadcast(&mut self, _: &RecordRef<'_>) {}
    fn to_peer(&mut self, peer: u32, msg: &Msg<'_>) {
        match msg {
            Msg::CatchupRequest { vector } => self.catchups.push((peer, vector.clone())),
            Msg::Record(r) => self.records.push((peer, r.origin, r.seq)),
            _ => {}
        }
    }
    fn persist_record(&mut self, _: &RecordRef<'_>) {}
    fn persist_vector(&mut self, _: &[(u32, u64)]) {}
    fn dial(&mut self, _: u32, _: &str) {}
    fn redial(&mut self, _: u32, _: &str) {}
    fn forget(&mut self, _: u32) {}
    fn stored(&mut self, _: u64, _: u64) {}
    fn value(&mut self, req: u64, content: Option<&[u8]>) {
        self.values.push((req, content.is_some()));
    }
    fn hurry(&mut self, origin: u32) {
        self.hurried.push(origin);
    }
}

fn member(id: u32, status: Status) -> Member {
    Member {
        id,
        origin: id,
        status,
        records: 0,
        addr: format!("w{id}"),
    }
}

/// Worker 1 restarted (its new process numbers as origin 4) having lost
/// records 5..=7 of its previous process, origin 1 (its log kept 1..=4);
/// the LB's floor says 7. Peers 2 and 3 are both asked once while neither
/// holds them yet; they arrive at the peers later. Without a retry nothing
/// would ever ask again.
#[test]
fn a_gap_every_peer_was_asked_about_is_asked_about_again() {
    let mut vv = VersionVector::new();
    vv.observe(1, 1);
    vv.observe(1, 2);
    vv.observe(1, 3);
    vv.observe(1, 4);
    let mut r = Replica::new(1, 4, "w1".into(), Store::new(), vv);
    let mut out = Recorded::default();
    r.on_behind(&[(1, 7)], &mut out);
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
        r.on_hello(peer, u64::from(peer), peer, 0, &mut out);
    }
    // The first, full catch-up, then each peer once about the old gap.
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

fn record(origin: u32, seq: u64, id: u64) -> RecordRef<'static> {
    RecordRef {
        origin,
        seq,
        version: seq,
        id,
        content: b"x",
    }
}

/// Worker 3, active with the workers `peers` (all active), its links to
/// them up.
fn active_worker_3(peers: &[u32]) -> (Replica, Recorded, Vec<Member>) {
    let mut r = Replica::new(3, 3, "w3".into(), Store::new(), VersionVector::new());
    let mut out = Recorded::default();
    let mut all: Vec<Member> = peers.iter().map(|&p| member(p, Status::Active)).collect();
    all.push(member(3, Status::Active));
    all.sort_by_key(|m| m.id);
    r.on_members(&all, &mut out);
    for &peer in peers {
        r.on_link_up(peer, &mut out);
        r.on_hello(peer, u64::from(peer), peer, 0, &mut out);
    }
    (r, out, all)
}

/// Worker 2 restarts (its new process numbers as origin 6): what 3 holds
/// above a gap of origin 2 is stranded as if 2 had died, and its new
/// process's records are a fresh sequence that no old record shares.
#[test]
fn a_restarted_peers_earlier_origin_is_stranded_like_a_dead_one() {
    let (mut r, mut out, all) = active_worker_3(&[1, 2]);
    r.on_link_record(2, &record(2, 1, 10), &mut out);
    r.on_link_record(2, &record(2, 5, 11), &mut out);
    assert!(out.records.is_empty(), "its origin still streams them");
    let mut restarted = all.clone();
    restarted[1].origin = 6;
    r.on_members(&restarted, &mut out);
    assert_eq!(r.peer_origin(2), Some(6));
    assert_eq!(out.records, [(1, 2, 5)], "to the peer whose link is up");
    out.records.clear();
    r.on_link_up(2, &mut out);
    assert_eq!(out.records, [(2, 2, 5)], "and to the new process");
    // The new process's first record: origin 6, seq 1, beside origin 2's.
    r.on_hello(2, 9, 6, 0, &mut out);
    r.on_link_record(2, &record(6, 1, 12), &mut out);
    assert_eq!((r.vv.get(2), r.vv.get(6)), (1, 1));
}

/// Worker 3 holds records of worker 2 above a gap when 2 dies: the gap's
/// records were only ever on 2, so no vector will ask for what 3 holds.
/// It hands them to its peers, now and on every new link.
#[test]
fn records_stranded_above_a_dead_origins_gap_are_handed_over() {
    let (mut r, mut out, all) = active_worker_3(&[1, 2, 4]);
    r.on_link_record(2, &record(2, 1, 10), &mut out);
    r.on_link_record(2, &record(2, 5, 11), &mut out);
    assert!(out.records.is_empty(), "its origin still streams them");

    // 2 is gone: what 3 holds above the gap goes to 1 and 4.
    r.on_members(&[all[0].clone(), all[2].clone(), all[3].clone()], &mut out);
    assert_eq!(out.records, [(1, 2, 5), (4, 2, 5)]);
    // One arriving late (a dead process's socket still delivers) is
    // passed on at once; one that fills the vector is not stranded.
    out.records.clear();
    r.on_link_record(2, &record(2, 7, 12), &mut out);
    r.on_link_record(2, &record(2, 2, 13), &mut out);
    assert_eq!(out.records, [(1, 2, 7), (4, 2, 7)]);
    // Not from a catch-up (it lands above a gap until CATCHUP_DONE), nor
    // handed over by another worker: those reach every peer from there.
    out.records.clear();
    r.on_record(&record(2, 9, 14), &mut out);
    r.on_link_record(4, &record(2, 11, 15), &mut out);
    assert!(out.records.is_empty(), "{:?}", out.records);
    // A new link gets all that is still stranded.
    out.records.clear();
    let mut with_5 = vec![all[0].clone(), all[2].clone(), all[3].clone()];
    with_5.push(member(5, Status::Joining));
    r.on_members(&with_5, &mut out);
    r.on_link_up(5, &mut out);
    assert_eq!(out.records, [(5, 2, 5), (5, 2, 7), (5, 2, 9), (5, 2, 11)]);
}

/// A restarted worker registers while its log's store is still being
/// built: records arriving meanwhile go to a store of their own, nothing
/// calls it complete until the two are joined, and the join holds both.
#[test]
fn a_worker_whose_store_is_still_being_built_is_not_ready_until_it_is() {
    // The log held records 1..=3 of worker 2 (ids 1, 2, 3).
    let mut from_log = Store::new();
    let mut vv = VersionVector::new();
    for seq in 1..=3 {
        from_log.apply(&record(2, seq, seq));
        vv.observe(2, seq);
    }
    let mut r = Replica::new(1, 1, "w1".into(), Store::new(), vv);
    r.store_building();
    let mut out = Recorded::default();
    r.on_members(
        &[member(1, Status::Joining), member(2, Status::Active)],
        &mut out,
    );
    r.on_link_up(2, &mut out);
    r.on_hello(2, 1, 2, 5, &mut out);
    // The catch-up: a record the log had (ignored: the vector covers it),
    // two new ones, one overwriting id 3.
    r.on_record(&record(2, 3, 3), &mut out);
    r.on_record(&record(2, 4, 4), &mut out);
    r.on_record(&record(2, 5, 3), &mut out);
    r.on_catchup_done(2, &[(2, 5)], &mut out);
    assert_eq!(
        out.readies, 0,
        "complete by the vector, but the store is half built"
    );
    assert_eq!(r.store.len(), 2, "only what arrived: ids 3 and 4");

    r.store_built(from_log, &mut out);
    assert_eq!(out.readies, 1, "READY once the store is whole");
    assert_eq!(r.store.len(), 4);
    let id3 = r.store.get(3).expect("id 3");
    assert_eq!(
        (id3.origin, id3.seq),
        (2, 5),
        "the newer write of id 3 wins"
    );
}

/// A joiner that is complete sends READY once; records that move its
/// vector change nothing the LB would answer, a BEHIND asks again.
#[test]
fn a_joiner_sends_ready_when_its_markers_change_not_its_vector() {
    let mut r = Replica::new(3, 3, "w3".into(), Store::new(), VersionVector::new());
    let mut out = Recorded::default();
    r.on_members(
        &[member(1, Status::Active), member(3, Status::Joining)],
        &mut out,
    );
    r.on_link_up(1, &mut out);
    r.on_hello(1, 1, 1, 0, &mut out);
    let (from, _) = out.catchups.pop().expect("the first catch-up");
    r.on_catchup_done(from, &[], &mut out);
    assert_eq!(out.readies, 1);
    r.on_link_record(1, &record(1, 1, 10), &mut out);
    r.on_link_record(1, &record(1, 2, 11), &mut out);
    assert_eq!(out.readies, 1, "the vector moved, nothing else");
    r.on_behind(&[], &mut out);
    assert_eq!(out.readies, 2, "asked again");
}

/// A leaving worker still hands records stranded above a dead origin's
/// gap to its peers (it may hold the only copies), and does not count as
/// done while a hand-over waits for a catch-up in flight.
#[test]
fn a_leaving_worker_hands_over_stranded_records_before_it_is_done() {
    let (mut r, mut out, all) = active_worker_3(&[1, 2]);
    r.on_link_record(2, &record(2, 4, 10), &mut out);
    r.begin_leave(&mut out);
    r.on_deregister_ok();
    r.on_peer_ack(1, 0);
    assert!(r.leave_complete(), "no own records to hand over yet");

    // 1's hello says we lack its records: a catch-up from 1 in flight
    // when 2 dies.
    r.on_hello(1, 1, 1, 5, &mut out);
    assert_eq!(out.catchups.len(), 1, "asked 1 for its records");
    // (Listed inactive: a leaver keeps a peer that is just not listed.)
    r.on_members(
        &[all[0].clone(), member(2, Status::Inactive), all[2].clone()],
        &mut out,
    );
    assert!(out.records.is_empty(), "not during the catch-up");
    assert!(!r.leave_complete(), "a hand-over is due");

    let (from, _) = out.catchups.pop().expect("asked");
    r.on_catchup_done(from, &[(1, 5)], &mut out);
    assert_eq!(
        out.records,
        [(1, 2, 4)],
        "handed over once the catch-up ended"
    );
    assert!(r.leave_complete());
}

/// A GET the vector does not cover waits, and names each origin it lacks
/// records of (the loop asks those processes for what `--peer-flush-ms`
/// holds back), and only those; it is answered once they arrive. A GET
/// the vector covers is answered at once and hurries nobody.
#[test]
fn a_waiting_get_hurries_exactly_the_origins_it_lacks() {
    let mut vv = VersionVector::new();
    vv.observe(2, 1);
    vv.observe(4, 1);
    let mut r = Replica::new(1, 1, "w1".into(), Store::new(), vv);
    let mut out = Recorded::default();
    r.on_get(1, 9, [(2, 1), (4, 1)].into_iter(), &mut out);
    assert_eq!(out.values, [(1, false)]);
    assert!(out.hurried.is_empty());

    r.on_get(2, 10, [(2, 2), (3, 1), (4, 1)].into_iter(), &mut out);
    assert_eq!(out.hurried, [2, 3], "origin 4 is covered");
    assert_eq!(out.values.len(), 1, "the second GET waits");
    r.on_record(&record(2, 2, 10), &mut out);
    assert_eq!(out.values.len(), 1, "origin 3 is still lacking");
    r.on_record(&record(3, 1, 11), &mut out);
    assert_eq!(out.values, [(1, false), (2, true)]);
}
