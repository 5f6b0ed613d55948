//! The version vector a worker keeps, with gap tracking.
//!
//! `V[O] = s` means: this worker holds (the effect of) every record of origin
//! `O` with sequence number `<= s`. Records may arrive out of order (from the
//! origin and from a catch-up donor at once); one above `V[O] + 1` is applied
//! and remembered in `above`, and `V[O]` never moves past a gap. A catch-up
//! donor's vector may be merged in wholesale ([`VersionVector::merge`]) once
//! everything it covers has been applied.
//!
//! Invariant: every seq in `above[O]` is `> V[O] + 1`.

use crate::msg::Vector;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default, Clone)]
struct OriginState {
    contiguous: u64,
    above: BTreeSet<u64>,
}

impl OriginState {
    fn advance(&mut self) {
        while self.above.first() == Some(&self.contiguous.saturating_add(1)) {
            self.above.pop_first();
            self.contiguous += 1;
        }
        debug_assert!(self
            .above
            .first()
            .is_none_or(|&s| s > self.contiguous.saturating_add(1)));
    }
}

#[derive(Debug, Default, Clone)]
pub struct VersionVector {
    origins: BTreeMap<u32, OriginState>,
}

impl VersionVector {
    pub fn new() -> VersionVector {
        VersionVector::default()
    }

    /// The highest origin named (0 if none).
    pub fn max_origin(&self) -> u32 {
        self.origins.keys().next_back().copied().unwrap_or(0)
    }

    pub fn get(&self, origin: u32) -> u64 {
        self.origins.get(&origin).map_or(0, |o| o.contiguous)
    }

    /// Whether record `(origin, seq)` is already covered.
    pub fn has(&self, origin: u32, seq: u64) -> bool {
        self.origins
            .get(&origin)
            .is_some_and(|o| seq <= o.contiguous || o.above.contains(&seq))
    }

    /// Notes that record `(origin, seq)` has been applied. Returns true if
    /// `V[origin]` moved.
    pub fn observe(&mut self, origin: u32, seq: u64) -> bool {
        let o = self.origins.entry(origin).or_default();
        if seq <= o.contiguous {
            return false;
        }
        if seq == o.contiguous.saturating_add(1) {
            o.contiguous = seq;
            o.advance();
            return true;
        }
        o.above.insert(seq);
        false
    }

    /// Merges a donor's vector whose records have all been applied here.
    pub fn merge(&mut self, other: &[(u32, u64)]) -> bool {
        let mut moved = false;
        for &(origin, seq) in other {
            let o = self.origins.entry(origin).or_default();
            if seq > o.contiguous {
                o.contiguous = seq;
                o.above = o.above.split_off(&seq.saturating_add(1));
                o.advance();
                moved = true;
            }
        }
        moved
    }

    /// Whether every `(origin, seq)` in `min` is covered.
    pub fn covers(&self, min: &[(u32, u64)]) -> bool {
        min.iter().all(|&(o, s)| self.get(o) >= s)
    }

    pub fn to_vec(&self) -> Vector {
        self.origins
            .iter()
            .filter(|(_, o)| o.contiguous > 0)
            .map(|(&id, o)| (id, o.contiguous))
            .collect()
    }

    /// The origins with records applied above a gap.
    pub fn gapped(&self) -> impl Iterator<Item = u32> + '_ {
        self.origins
            .iter()
            .filter(|(_, o)| !o.above.is_empty())
            .map(|(&id, _)| id)
    }

    /// Records applied above a gap, waiting for it to fill (for stats).
    pub fn pending_above(&self) -> usize {
        self.origins.values().map(|o| o.above.len()).sum()
    }
}

/// Looks up `origin` in a sorted wire vector.
pub fn lookup(v: &[(u32, u64)], origin: u32) -> u64 {
    v.binary_search_by_key(&origin, |&(o, _)| o)
        .map_or(0, |i| v[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_moves_past_a_gap() {
        let mut v = VersionVector::new();
        assert!(v.observe(1, 1));
        assert!(!v.observe(1, 3));
        assert!(!v.observe(1, 4));
        assert_eq!(v.get(1), 1);
        assert!(v.has(1, 3) && !v.has(1, 2));
        assert!(v.observe(1, 2));
        assert_eq!(v.get(1), 4);
        assert!(!v.observe(1, 2), "duplicates change nothing");
        assert_eq!(v.pending_above(), 0);
    }

    #[test]
    fn merge_fills_gaps_and_keeps_higher_pending() {
        let mut v = VersionVector::new();
        v.observe(1, 5);
        v.observe(1, 9);
        v.merge(&[(1, 6), (2, 3)]);
        assert_eq!(v.get(1), 6);
        assert_eq!(v.get(2), 3);
        v.observe(1, 7);
        v.observe(1, 8);
        assert_eq!(v.get(1), 9);
        assert_eq!(v.to_vec(), vec![(1, 9), (2, 3)]);
        assert!(v.covers(&[(1, 9), (2, 1)]));
        assert!(!v.covers(&[(3, 1)]));
        assert_eq!(lookup(&v.to_vec(), 2), 3);
        assert_eq!(lookup(&v.to_vec(), 7), 0);
    }
}
