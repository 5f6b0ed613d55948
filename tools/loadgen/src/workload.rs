//! What each request is: its op (PUT or GET) and id, and the content a PUT
//! carries.
//!
//! Content is a pure function of the id and the size (the id's 8 bytes,
//! little-endian, repeated), so `--verify` can check a worker's copy without
//! keeping what was sent.

/// The two operations, on either protocol (PUT is Redis SET).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    Get,
}

/// A small, fast generator (SplitMix64); one per connection.
pub use rrstore::rng::SplitMix64 as Rng;

/// The mix of requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Workload {
    /// Ids are drawn uniformly from `[0, keys)`.
    pub keys: u64,
    /// Share of GETs, `0..=1`.
    pub get_ratio: f64,
    /// `Some(base)`: verify mode; every request is a PUT of the fresh id
    /// `base + global index`.
    pub fresh_ids: Option<u64>,
}

impl Workload {
    /// The op and id of global request `index`.
    pub fn pick(&self, rng: &mut Rng, index: u64) -> (Op, u64) {
        if let Some(base) = self.fresh_ids {
            return (Op::Put, base.wrapping_add(index));
        }
        let op = if self.get_ratio > 0.0 && rng.next_f64() < self.get_ratio {
            Op::Get
        } else {
            Op::Put
        };
        (op, rng.below(self.keys.max(1)))
    }
}

/// Fills `out` with the content of record `id`.
pub fn fill_content(id: u64, out: &mut [u8]) {
    let pattern = id.to_le_bytes();
    for (i, b) in out.iter_mut().enumerate() {
        *b = pattern[i % 8];
    }
}

/// Whether `content` is what [`fill_content`] makes for `id` and `size`.
pub fn content_matches(id: u64, size: usize, content: &[u8]) -> bool {
    let pattern = id.to_le_bytes();
    content.len() == size
        && content
            .iter()
            .enumerate()
            .all(|(i, b)| *b == pattern[i % 8])
}

/// A base for fresh ids that no earlier run used: the Unix time in seconds
/// in the high 32 bits (ids of a run are `base + 0, 1, …`), far above any
/// `--keys` space.
pub fn fresh_id_base() -> u64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs().max(1));
    secs << 32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_reproducible_from_the_id() {
        let mut a = vec![0u8; 21];
        fill_content(0x0102_0304_0506_0708, &mut a);
        assert_eq!(&a[..9], &[8, 7, 6, 5, 4, 3, 2, 1, 8]);
        assert!(content_matches(0x0102_0304_0506_0708, 21, &a));
        assert!(!content_matches(0x0102_0304_0506_0709, 21, &a));
        assert!(!content_matches(0x0102_0304_0506_0708, 20, &a[..19]));
        assert!(content_matches(5, 0, &[]));
    }

    #[test]
    fn ratio_and_key_space_are_respected() {
        let w = Workload {
            keys: 10,
            get_ratio: 0.25,
            fresh_ids: None,
        };
        let mut rng = Rng::new(42);
        let mut gets = 0;
        for i in 0..100_000 {
            let (op, id) = w.pick(&mut rng, i);
            assert!(id < 10);
            gets += (op == Op::Get) as u32;
        }
        assert!((23_000..27_000).contains(&gets), "{gets}");
    }

    #[test]
    fn verify_mode_uses_fresh_ids_and_only_puts() {
        let w = Workload {
            keys: 10,
            get_ratio: 0.9,
            fresh_ids: Some(1 << 40),
        };
        let mut rng = Rng::new(1);
        assert_eq!(w.pick(&mut rng, 0), (Op::Put, 1 << 40));
        assert_eq!(w.pick(&mut rng, 7), (Op::Put, (1 << 40) + 7));
    }
}
