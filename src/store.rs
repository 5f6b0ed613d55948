//! A worker's record store: the live set of records, last-writer-wins.
//!
//! Invariants:
//! - For every id the store holds the record with the greatest
//!   `(version, origin)` of all records of that id ever applied. Applying is
//!   therefore commutative, associative and idempotent (a join), so two
//!   workers that applied the same set of records in any order hold the same
//!   store.
//! - `digest` is the wrapping sum over live entries of
//!   XXH3-128(content, seed = id): order-independent and updated in O(1) per
//!   apply, so `verify` never has to walk or sort the store.
//! - Each id lives in exactly one shard, chosen by [`shard_of`] from the
//!   id alone; each shard keeps its own digest and counters, and the
//!   store's figures are their sums, whatever the shard count.

use crate::msg::RecordRef;
use std::hash::{BuildHasher, RandomState};
use xxhash_rust::xxh3::xxh3_128_with_seed;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub version: u64,
    pub origin: u32,
    pub seq: u64,
    pub content: Box<[u8]>,
}

impl Entry {
    pub fn as_record(&self, id: u64) -> RecordRef<'_> {
        RecordRef {
            origin: self.origin,
            seq: self.seq,
            version: self.version,
            id,
            content: &self.content,
        }
    }
}

/// A position in a [`Store::walk`].
#[derive(Debug)]
pub struct StoreWalk {
    shard: usize,
    pos: usize,
    /// Each shard's length when the walk began.
    ends: Vec<usize>,
}

/// One part of the store: the records whose id maps to it (see
/// [`shard_of`]), with its own digest and counters.
///
/// Layout: the records sit densely in `ids` and `entries` (same index;
/// records are never removed, only overwritten in place), and `index` is
/// an open-addressing table of 4-byte positions into them, hashed by id.
/// A map of `id -> Entry` would keep whole 48-byte entries in its buckets,
/// about half of them empty at any time; this keeps 4 bytes per bucket.
#[derive(Debug, Default)]
struct Shard {
    index: hashbrown::HashTable<u32>,
    ids: Vec<u64>,
    entries: Vec<Entry>,
    /// Keyed SipHash (std's default): clients choose ids, so the table's
    /// hashing must not be predictable.
    hasher: RandomState,
    digest: u128,
    content_bytes: u64,
    max_version: u64,
}

/// The live records, in one or more shards by id. The loop sees one store;
/// the shards exist so that a restart can rebuild them on several threads
/// at once ([`Store::apply_sharded`]). Every figure (`len`, `digest`, ...)
/// is the sum over the shards, so it does not depend on the shard count.
#[derive(Debug)]
pub struct Store {
    shards: Box<[Shard]>,
}

impl Default for Store {
    fn default() -> Store {
        Store::with_shards(1, 0)
    }
}

/// Whether `a` beats `b` under last-writer-wins: higher version first, then
/// higher origin as the deterministic tie-break. Equal keys are the same write.
fn beats(a: (u64, u32), b: (u64, u32)) -> bool {
    a > b
}

fn entry_hash(id: u64, content: &[u8]) -> u128 {
    xxh3_128_with_seed(content, id)
}

/// Which of `shards` holds `id`: a multiplicative hash of the id, scaled
/// to the shard count (no division).
fn shard_of(id: u64, shards: usize) -> usize {
    let h = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    ((h * shards as u64) >> 32) as usize
}

impl Shard {
    fn with_capacity(records: usize) -> Shard {
        Shard {
            index: hashbrown::HashTable::with_capacity(records),
            ids: Vec::with_capacity(records),
            entries: Vec::with_capacity(records),
            ..Shard::default()
        }
    }

    fn position(&self, id: u64) -> Option<usize> {
        let hash = self.hasher.hash_one(id);
        let ids = &self.ids;
        self.index
            .find(hash, |&i| ids[i as usize] == id)
            .map(|&i| i as usize)
    }

    fn get(&self, id: u64) -> Option<&Entry> {
        self.position(id).map(|i| &self.entries[i])
    }

    fn reserve(&mut self, additional: usize) {
        let (ids, hasher) = (&self.ids, &self.hasher);
        self.index
            .reserve(additional, |&i| hasher.hash_one(ids[i as usize]));
        self.ids.reserve(additional);
        self.entries.reserve(additional);
    }

    fn apply(&mut self, r: &RecordRef<'_>) -> bool {
        self.max_version = self.max_version.max(r.version);
        // One hash of the id, whether it is new or not.
        let hash = self.hasher.hash_one(r.id);
        let (ids, hasher) = (&self.ids, &self.hasher);
        let slot = self.index.entry(
            hash,
            |&i| ids[i as usize] == r.id,
            |&i| hasher.hash_one(ids[i as usize]),
        );
        match slot {
            hashbrown::hash_table::Entry::Occupied(o) => {
                let e = &mut self.entries[*o.get() as usize];
                if !beats((r.version, r.origin), (e.version, e.origin)) {
                    return false;
                }
                self.digest = self.digest.wrapping_sub(entry_hash(r.id, &e.content));
                self.content_bytes -= e.content.len() as u64;
                e.version = r.version;
                e.origin = r.origin;
                e.seq = r.seq;
                e.content = r.content.into();
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                // Positions are u32: 4 billion records per shard, far
                // beyond any memory this runs in. Dropping a record would
                // break convergence silently: stop loudly instead.
                let Ok(position) = u32::try_from(self.entries.len()) else {
                    log::error!("a store shard holds 2^32 records; stopping");
                    std::process::exit(2);
                };
                v.insert(position);
                self.ids.push(r.id);
                self.entries.push(Entry {
                    version: r.version,
                    origin: r.origin,
                    seq: r.seq,
                    content: r.content.into(),
                });
            }
        }
        self.digest = self.digest.wrapping_add(entry_hash(r.id, r.content));
        self.content_bytes += r.content.len() as u64;
        true
    }
}

impl Store {
    pub fn new() -> Store {
        Store::default()
    }

    /// A store with room for `records` entries (replay sizes it from the
    /// log, so it does not rehash its way up).
    pub fn with_capacity(records: usize) -> Store {
        Store::with_shards(1, records)
    }

    /// `shards` shards (at least 1) with room for `records` entries in all.
    pub fn with_shards(shards: usize, records: usize) -> Store {
        let shards = shards.max(1);
        let each = records.div_ceil(shards);
        Store {
            shards: (0..shards).map(|_| Shard::with_capacity(each)).collect(),
        }
    }

    /// Makes room for `records` entries in all, so that a joiner about to
    /// catch up that many does not rehash its way up (each doubling leaves
    /// the old table behind as freed heap between live contents).
    pub fn reserve_total(&mut self, records: usize) {
        let shards = self.shards.len();
        for s in self.shards.iter_mut() {
            let want = records.div_ceil(shards);
            s.reserve(want.saturating_sub(s.ids.len()));
        }
    }

    fn shard(&self, id: u64) -> &Shard {
        &self.shards[shard_of(id, self.shards.len())]
    }

    /// Applies `r`; returns true if it became the live entry for its id.
    pub fn apply(&mut self, r: &RecordRef<'_>) -> bool {
        let i = shard_of(r.id, self.shards.len());
        self.shards[i].apply(r)
    }

    /// Applies every record `feed` produces, one thread per shard: each
    /// thread runs `feed` itself (a replay re-reads the log) and keeps the
    /// records of its own shard, so no two threads touch one map. The
    /// result is the store a single thread would build from the same
    /// records (applying is a join: order does not matter). The first
    /// error any thread meets is returned.
    pub fn apply_sharded<E: Send>(
        &mut self,
        feed: impl Fn(&mut dyn FnMut(&RecordRef<'_>)) -> Result<(), E> + Sync,
    ) -> Result<(), E> {
        let n = self.shards.len();
        let feed = &feed;
        std::thread::scope(|scope| {
            let threads: Vec<_> = self
                .shards
                .iter_mut()
                .enumerate()
                .map(|(i, shard)| {
                    scope.spawn(move || {
                        feed(&mut |r: &RecordRef<'_>| {
                            if shard_of(r.id, n) == i {
                                shard.apply(r);
                            }
                        })
                    })
                })
                .collect();
            let mut result = Ok(());
            for t in threads {
                match t.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        if result.is_ok() {
                            result = Err(e);
                        }
                    }
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            result
        })
    }

    pub fn get(&self, id: u64) -> Option<&Entry> {
        self.shard(id).get(id)
    }

    /// Applies every entry of `other`: the join of both stores (a worker's
    /// records that arrived while its log's store was still being built).
    pub fn absorb(&mut self, other: Store) {
        for shard in other.shards.into_vec() {
            for (id, e) in shard.ids.into_iter().zip(shard.entries) {
                self.apply(&e.as_record(id));
            }
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.ids.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.ids.is_empty())
    }

    pub fn content_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.content_bytes).sum()
    }

    pub fn max_version(&self) -> u64 {
        self.shards.iter().map(|s| s.max_version).max().unwrap_or(0)
    }

    pub fn digest(&self) -> [u8; 16] {
        let sum = self
            .shards
            .iter()
            .fold(0u128, |acc, s| acc.wrapping_add(s.digest));
        sum.to_be_bytes()
    }

    /// A walk over the records held now, in the store's dense order (see
    /// [`Store::next_in`]): nothing is copied, and a record is read when
    /// the walk reaches it, so it may be newer than when the walk began.
    pub fn walk(&self) -> StoreWalk {
        StoreWalk {
            shard: 0,
            pos: 0,
            ends: self.shards.iter().map(|s| s.ids.len()).collect(),
        }
    }

    /// The next record of `walk`, or `None` once it has visited every
    /// record the store held when it began (records are never removed, so
    /// their positions stay; later ones are not visited). A walk belongs
    /// to the store it came from: given another, it reads whatever sits at
    /// its positions there. The worker starts catch-ups only once its store
    /// is whole, and never replaces it afterwards (see `Worker`'s deferred
    /// catch-ups), so that never happens.
    pub fn next_in(&self, walk: &mut StoreWalk) -> Option<(u64, &Entry)> {
        loop {
            let end = *walk.ends.get(walk.shard)?;
            let shard = self.shards.get(walk.shard)?;
            if walk.pos < end.min(shard.ids.len()) {
                let at = walk.pos;
                walk.pos += 1;
                return Some((shard.ids[at], &shard.entries[at]));
            }
            walk.shard += 1;
            walk.pos = 0;
        }
    }

    /// Every id, unsorted.
    pub fn ids(&self) -> Vec<u64> {
        let mut ids = Vec::with_capacity(self.len());
        for s in self.shards.iter() {
            ids.extend_from_slice(&s.ids);
        }
        ids
    }

    /// Every id in ascending order (for `dump`).
    pub fn sorted_ids(&self) -> Vec<u64> {
        let mut ids = self.ids();
        ids.sort_unstable();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(origin: u32, seq: u64, version: u64, id: u64, content: &[u8]) -> RecordRef<'_> {
        RecordRef {
            origin,
            seq,
            version,
            id,
            content,
        }
    }

    #[test]
    fn last_writer_wins_in_any_order() {
        let records = [
            rec(1, 1, 10, 5, b"a"),
            rec(2, 1, 12, 5, b"b"),
            rec(3, 1, 12, 5, b"c"), // same version: higher origin wins
            rec(1, 2, 11, 5, b"d"),
            rec(2, 2, 1, 6, b"e"),
        ];
        let mut forward = Store::new();
        let mut backward = Store::new();
        for r in &records {
            forward.apply(r);
        }
        for r in records.iter().rev() {
            backward.apply(r);
            backward.apply(r); // idempotent
        }
        assert_eq!(&*forward.get(5).unwrap().content, b"c");
        assert_eq!(forward.digest(), backward.digest());
        assert_eq!(forward.len(), 2);
        assert_eq!(forward.content_bytes(), 2);
        assert_eq!(forward.max_version(), 12);
    }

    #[test]
    fn digest_tracks_content_not_history() {
        let mut a = Store::new();
        a.apply(&rec(1, 1, 1, 1, b"x"));
        a.apply(&rec(1, 2, 2, 1, b"y"));
        let mut b = Store::new();
        b.apply(&rec(2, 1, 3, 1, b"y"));
        assert_eq!(a.digest(), b.digest());
        let mut c = Store::new();
        c.apply(&rec(2, 1, 3, 2, b"y")); // same content under another id
        assert_ne!(a.digest(), c.digest());
    }

    #[test]
    fn sharded_apply_builds_the_same_store_as_one_thread() {
        let contents: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; i as usize]).collect();
        let records: Vec<RecordRef<'_>> = (0..5_000u64)
            .map(|i| {
                let id = (i * 7919) % 1_500; // overwrites, in no order
                rec(
                    (i % 3) as u32 + 1,
                    i,
                    i % 977,
                    id,
                    &contents[(i % 64) as usize],
                )
            })
            .collect();
        let mut one = Store::new();
        for r in &records {
            one.apply(r);
        }
        for shards in [1, 2, 3, 8] {
            let mut many = Store::with_shards(shards, records.len());
            many.apply_sharded(|apply| {
                records.iter().for_each(&mut *apply);
                Ok::<(), ()>(())
            })
            .unwrap();
            assert_eq!(many.digest(), one.digest(), "{shards} shards");
            assert_eq!(many.len(), one.len());
            assert_eq!(many.content_bytes(), one.content_bytes());
            assert_eq!(many.max_version(), one.max_version());
            assert_eq!(many.sorted_ids(), one.sorted_ids());
            for id in one.sorted_ids() {
                assert_eq!(many.get(id), one.get(id), "id {id}");
            }
        }
    }

    #[test]
    fn a_walk_visits_the_records_held_when_it_began_once_each() {
        let mut s = Store::with_shards(4, 0);
        for id in 0..100u64 {
            s.apply(&rec(1, id + 1, 1, id, b"a"));
        }
        let mut walk = s.walk();
        let mut seen = Vec::new();
        for _ in 0..10 {
            let (id, _) = s.next_in(&mut walk).expect("a record");
            seen.push(id);
        }
        // Overwrites are read as they are when reached; newer ids are not.
        for id in 0..100u64 {
            s.apply(&rec(2, id + 1, 2, id, b"b"));
        }
        s.apply(&rec(2, 101, 3, 1_000, b"new"));
        while let Some((id, e)) = s.next_in(&mut walk) {
            assert_eq!(&e.content[..], b"b", "id {id}");
            seen.push(id);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<u64>>());
        assert!(s.next_in(&mut walk).is_none(), "a walk ends for good");
    }

    #[test]
    fn absorbing_a_store_is_applying_its_records() {
        let contents: Vec<Vec<u8>> = (0..16u8).map(|i| vec![i; i as usize]).collect();
        let records: Vec<RecordRef<'_>> = (0..3_000u64)
            .map(|i| {
                rec(
                    (i % 2) as u32 + 1,
                    i,
                    i % 541,
                    (i * 31) % 700,
                    &contents[(i % 16) as usize],
                )
            })
            .collect();
        let mut one = Store::new();
        records.iter().for_each(|r| {
            one.apply(r);
        });
        // Split in two (overlapping ids, either half newer), then joined.
        let (mut built, mut arrived) = (Store::with_shards(3, 0), Store::new());
        for (i, r) in records.iter().enumerate() {
            if i % 3 == 0 {
                arrived.apply(r);
            } else {
                built.apply(r);
            }
        }
        built.absorb(arrived);
        assert_eq!(built.digest(), one.digest());
        assert_eq!(built.len(), one.len());
        assert_eq!(built.content_bytes(), one.content_bytes());
        assert_eq!(built.max_version(), one.max_version());
        for id in one.sorted_ids() {
            assert_eq!(built.get(id), one.get(id), "id {id}");
        }
    }

    #[test]
    fn reserve_total_makes_room_in_every_shard() {
        let mut s = Store::with_shards(3, 0);
        s.reserve_total(3_000);
        assert!(s.shards.iter().all(|sh| sh.index.capacity() >= 1_000));
        s.apply(&rec(1, 1, 1, 7, b"x"));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn sharded_apply_reports_a_feed_error() {
        let mut s = Store::with_shards(2, 0);
        let r = s.apply_sharded(|_| Err::<(), _>("bad log"));
        assert_eq!(r, Err("bad log"));
    }

    #[test]
    fn ids_spread_over_every_shard() {
        let mut counts = [0usize; 4];
        for id in 0..4_000u64 {
            counts[shard_of(id, 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
