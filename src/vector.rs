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
//!
//! `above` is a bitmap from just below `V[O] + 1` ([`Above`]): a catch-up
//! delivers an origin's records in its donor's store order, so hundreds of
//! thousands of them can wait above a gap at once, at one bit each instead
//! of a tree node's share (about 10 B) each. Seqs further than
//! [`BITMAP_SPAN`] above go to a sorted set, so a worker that missed a
//! long stretch of an origin does not allocate a bit per missed seq.

use crate::msg::Vector;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// How far above its base the bitmap reaches: 2^20 seqs, 128 KiB.
const BITMAP_SPAN: u64 = 1 << 20;

/// A set of seqs, all above some floor the owner keeps: bits for the
/// seqs from `base` (a multiple of 64, at most the floor + 1) up to
/// `base + BITMAP_SPAN`, and a sorted set for any beyond.
#[derive(Debug, Default, Clone)]
struct Above {
    base: u64,
    /// Bit `i` of `words[w]` is seq `base + 64 * w + i`.
    words: VecDeque<u64>,
    /// Bits set in `words`.
    bits: usize,
    far: BTreeSet<u64>,
}

impl Above {
    fn len(&self) -> usize {
        self.bits + self.far.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The word and bit of `seq`, if the bitmap's range holds it.
    fn slot(&self, seq: u64) -> Option<(usize, u64)> {
        let offset = seq.checked_sub(self.base)?;
        (offset < BITMAP_SPAN).then(|| ((offset / 64) as usize, 1 << (offset % 64)))
    }

    /// A seq lives in one place: its bit if the bitmap's range held it
    /// when it came, else `far` (where it stays when the range moves up).
    fn contains(&self, seq: u64) -> bool {
        let in_bits = self
            .slot(seq)
            .is_some_and(|(w, bit)| self.words.get(w).is_some_and(|&word| word & bit != 0));
        in_bits || self.far.contains(&seq)
    }

    fn insert(&mut self, seq: u64) {
        if self.far.contains(&seq) {
            return;
        }
        let Some((w, bit)) = self.slot(seq) else {
            self.far.insert(seq);
            return;
        };
        if self.words.len() <= w {
            self.words.resize(w + 1, 0);
        }
        if self.words[w] & bit == 0 {
            self.words[w] |= bit;
            self.bits += 1;
        }
    }

    /// Every seq held, in no particular order.
    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let bits = self.words.iter().enumerate().flat_map(move |(w, &word)| {
            (0..64u64)
                .filter(move |i| word & (1 << i) != 0)
                .map(move |i| self.base + 64 * w as u64 + i)
        });
        bits.chain(self.far.iter().copied())
    }

    /// Takes `seq` out; returns whether it was in.
    fn remove(&mut self, seq: u64) -> bool {
        if let Some((w, bit)) = self.slot(seq) {
            if let Some(word) = self.words.get_mut(w) {
                if *word & bit != 0 {
                    *word &= !bit;
                    self.bits -= 1;
                    return true;
                }
            }
        }
        !self.far.is_empty() && self.far.remove(&seq)
    }

    /// Drops every seq `<= floor` and moves the bitmap's base up to the
    /// word holding `floor + 1`.
    fn drop_through(&mut self, floor: u64) {
        if floor == u64::MAX {
            *self = Above::default();
            return;
        }
        let next = floor + 1;
        if self.far.first().is_some_and(|&s| s < next) {
            self.far = self.far.split_off(&next);
        }
        let new_base = next & !63;
        while self.base < new_base {
            match self.words.pop_front() {
                Some(word) => self.bits -= word.count_ones() as usize,
                None => {
                    self.base = new_base;
                    break;
                }
            }
            self.base += 64;
        }
        if let Some(first) = self.words.front_mut() {
            // Seqs base..=floor within the first word.
            let below = (next - self.base) as u32;
            let keep = if below >= 64 { 0 } else { u64::MAX << below };
            self.bits -= (*first & !keep).count_ones() as usize;
            *first &= keep;
        }
        if self.words.is_empty() {
            // Nothing waits: the bitmap starts over at the floor.
            self.base = new_base;
        }
    }

    /// Empties the set (which holds nothing) and bases it at `floor + 1`.
    fn restart_at(&mut self, floor: u64) {
        debug_assert!(self.is_empty());
        if self.words.capacity() > 64 {
            // A catch-up's worth of bitmap (up to 128 KiB, per origin, and
            // origins only add up): not kept once nothing waits.
            self.words = VecDeque::new();
        }
        self.words.clear();
        self.base = floor.saturating_add(1) & !63;
    }

    /// The smallest seq held (for assertions).
    fn first(&self) -> Option<u64> {
        let in_bits = self
            .words
            .iter()
            .enumerate()
            .find(|(_, &word)| word != 0)
            .map(|(w, &word)| self.base + 64 * w as u64 + u64::from(word.trailing_zeros()));
        match (in_bits, self.far.first()) {
            (Some(a), Some(&b)) => Some(a.min(b)),
            (a, b) => a.or(b.copied()),
        }
    }
}

#[derive(Debug, Default, Clone)]
struct OriginState {
    contiguous: u64,
    above: Above,
}

impl OriginState {
    fn advance(&mut self) {
        if self.above.is_empty() {
            // The common case, records in order: nothing waits.
            self.above.restart_at(self.contiguous);
            return;
        }
        // At u64::MAX nothing lies above (a peer or a log could name it).
        while self.contiguous < u64::MAX && self.above.remove(self.contiguous + 1) {
            self.contiguous += 1;
        }
        self.above.drop_through(self.contiguous);
        debug_assert!(self
            .above
            .first()
            .is_none_or(|s| s > self.contiguous.saturating_add(1)));
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
            .is_some_and(|o| seq <= o.contiguous || o.above.contains(seq))
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

    /// The records applied above a gap, `(origin, seq)`: what the vector
    /// holds besides [`VersionVector::to_vec`].
    pub fn above(&self) -> Vec<(u32, u64)> {
        let mut v = Vec::with_capacity(self.pending_above());
        for (&origin, o) in &self.origins {
            v.extend(o.above.iter().map(|seq| (origin, seq)));
        }
        v
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

    /// The vector as it was before the bitmap: a sorted set above a gap.
    #[derive(Default)]
    struct Model(BTreeMap<u32, (u64, BTreeSet<u64>)>);

    impl Model {
        fn settle(o: &mut (u64, BTreeSet<u64>)) {
            o.1 = o.1.split_off(&(o.0 + 1));
            while o.1.first() == Some(&(o.0 + 1)) {
                o.1.pop_first();
                o.0 += 1;
            }
        }
        fn observe(&mut self, origin: u32, seq: u64) {
            let o = self.0.entry(origin).or_default();
            if seq > o.0 {
                o.1.insert(seq);
                Model::settle(o);
            }
        }
        fn merge(&mut self, origin: u32, seq: u64) {
            let o = self.0.entry(origin).or_default();
            o.0 = o.0.max(seq);
            Model::settle(o);
        }
    }

    #[test]
    fn the_highest_seq_ends_an_origin_without_wrapping() {
        let mut v = VersionVector::new();
        v.observe(1, u64::MAX);
        v.observe(1, 5);
        assert!(v.has(1, u64::MAX) && v.get(1) == 0);
        v.merge(&[(1, u64::MAX - 1)]);
        assert_eq!(v.get(1), u64::MAX);
        v.merge(&[(2, u64::MAX)]);
        assert!(!v.observe(2, u64::MAX));
        assert_eq!((v.get(2), v.pending_above()), (u64::MAX, 0));
    }

    #[test]
    fn the_bitmap_holds_what_a_sorted_set_would() {
        // Seqs in bursts around the vector, far jumps past BITMAP_SPAN,
        // duplicates and merges; checked against the sorted-set model.
        for seed in 0..8u64 {
            let mut rng = crate::rng::SplitMix64::new(seed);
            let (mut v, mut m) = (VersionVector::new(), Model::default());
            for step in 0..1_500 {
                let origin = 1 + rng.below(2) as u32;
                let floor = v.get(origin);
                let seq = match rng.below(10) {
                    0 => floor + 1 + rng.below(3 * BITMAP_SPAN),
                    1 => floor.saturating_sub(rng.below(100)),
                    _ => floor + 1 + rng.below(200),
                };
                if rng.below(40) == 0 {
                    v.merge(&[(origin, seq)]);
                    m.merge(origin, seq);
                } else {
                    v.observe(origin, seq);
                    m.observe(origin, seq);
                }
                let want = m.0.get(&origin).cloned().unwrap_or_default();
                assert_eq!(v.get(origin), want.0, "seed {seed} step {step}");
                let pending: usize = m.0.values().map(|o| o.1.len()).sum();
                assert_eq!(v.pending_above(), pending, "seed {seed} step {step}");
                if step % 100 == 0 {
                    let mut above = v.above();
                    above.sort_unstable();
                    let want: Vec<(u32, u64)> =
                        m.0.iter()
                            .flat_map(|(&o, (_, a))| a.iter().map(move |&s| (o, s)))
                            .collect();
                    assert_eq!(above, want, "seed {seed} step {step}");
                }
                for probe in [seq, seq + 1, want.0 + 1, want.0 + 2] {
                    let held = probe <= want.0 || want.1.contains(&probe);
                    assert_eq!(
                        v.has(origin, probe),
                        held,
                        "seed {seed} step {step} seq {probe}"
                    );
                }
            }
            // A donor's vector covering everything leaves nothing waiting.
            for (&origin, (_, above)) in &m.0 {
                if let Some(&top) = above.last() {
                    v.merge(&[(origin, top)]);
                    assert_eq!(v.get(origin), top, "seed {seed}");
                }
            }
            assert_eq!(v.pending_above(), 0, "seed {seed}");
        }
    }
}
