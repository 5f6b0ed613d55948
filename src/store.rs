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

use crate::msg::RecordRef;
use std::collections::HashMap;
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

#[derive(Debug, Default)]
pub struct Store {
    map: HashMap<u64, Entry>,
    digest: u128,
    content_bytes: u64,
    max_version: u64,
}

/// Whether `a` beats `b` under last-writer-wins: higher version first, then
/// higher origin as the deterministic tie-break. Equal keys are the same write.
fn beats(a: (u64, u32), b: (u64, u32)) -> bool {
    a > b
}

fn entry_hash(id: u64, content: &[u8]) -> u128 {
    xxh3_128_with_seed(content, id)
}

impl Store {
    pub fn new() -> Store {
        Store::default()
    }

    /// A store with room for `records` entries (replay sizes it from the
    /// log, so it does not rehash its way up).
    pub fn with_capacity(records: usize) -> Store {
        Store {
            map: HashMap::with_capacity(records),
            ..Store::default()
        }
    }

    /// Applies `r`; returns true if it became the live entry for its id.
    pub fn apply(&mut self, r: &RecordRef<'_>) -> bool {
        self.max_version = self.max_version.max(r.version);
        // One hash of the id, whether it is new or not.
        match self.map.entry(r.id) {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let e = o.get_mut();
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
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Entry {
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

    pub fn get(&self, id: u64) -> Option<&Entry> {
        self.map.get(&id)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn content_bytes(&self) -> u64 {
        self.content_bytes
    }

    pub fn max_version(&self) -> u64 {
        self.max_version
    }

    pub fn digest(&self) -> [u8; 16] {
        self.digest.to_be_bytes()
    }

    /// Every id, unsorted: the frozen key list a catch-up walks.
    pub fn ids(&self) -> Vec<u64> {
        self.map.keys().copied().collect()
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
}
