//! The records the writers put: ids unique per run and content derived
//! from the id alone, so the check needs no copy of what was written.
//!
//! An id is `(client + 1) << 40 | seq` with `seq` counting from 1 in each
//! writer, so a stored id names the writer and tells whether it was ever
//! sent. Content is 8 to 71 bytes: the id in big-endian, then bytes from a
//! xorshift stream seeded by the id (zeros, high bytes, not UTF-8), so a
//! record holding another id's content is recognisable.

const SEQ_BITS: u32 = 40;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

/// The id of writer `client`'s `seq`-th record (`seq` from 1).
pub fn id(client: usize, seq: u64) -> u64 {
    ((client as u64 + 1) << SEQ_BITS) | (seq & SEQ_MASK)
}

/// The writer index and sequence number of an id, if it has the shape of
/// one of ours.
pub fn split(id: u64) -> Option<(usize, u64)> {
    let hi = id >> SEQ_BITS;
    let seq = id & SEQ_MASK;
    if hi == 0 || seq == 0 {
        return None;
    }
    Some(((hi - 1) as usize, seq))
}

/// The content written under `id`.
pub fn content(id: u64) -> Vec<u8> {
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let extra = (x >> 58) as usize; // 0..=63
    let mut out = Vec::with_capacity(8 + extra);
    out.extend_from_slice(&id.to_be_bytes());
    for _ in 0..extra {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push((x >> 24) as u8);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for client in [0usize, 1, 7, 1000] {
            for seq in [1u64, 2, 99_999, SEQ_MASK] {
                assert_eq!(split(id(client, seq)), Some((client, seq)));
            }
        }
        assert_eq!(split(0), None);
        assert_eq!(split(5), None);
        assert_eq!(split(1 << SEQ_BITS), None);
    }

    #[test]
    fn content_is_deterministic_and_names_its_id() {
        let a = content(id(2, 5));
        assert_eq!(a, content(id(2, 5)));
        assert_eq!(&a[..8], &id(2, 5).to_be_bytes());
        assert!((8..72).contains(&a.len()));
        assert_ne!(a, content(id(2, 6)));
    }
}
