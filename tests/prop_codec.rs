//! Property-based tests of both codecs: whatever the fields, a message
//! round-trips; whatever the bytes, decoding never panics; and a frame cut
//! anywhere is incomplete, never misread.

use proptest::prelude::*;
use rrstore::msg::{self, Msg, RecordRef};
use rrstore::wire::{self, Parse, Request};

const MAX_CONTENT: usize = 1 << 12;

fn request() -> impl Strategy<Value = (u32, u8, u64, Vec<u8>)> {
    (
        any::<u32>(),
        0u8..3,
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..MAX_CONTENT),
    )
}

fn build(kind: u8, id: u64, content: &[u8]) -> Request<'_> {
    match kind {
        0 => Request::Put { id, content },
        1 => Request::Get { id },
        _ => Request::Ping,
    }
}

/// `entries` is `vector` as a frame carries it (a GET's `min` is read in place).
fn internal<'a>(
    kind: u8,
    a: u64,
    b: u64,
    content: &'a [u8],
    entries: &'a [u8],
    vector: Vec<(u32, u64)>,
) -> Msg<'a> {
    match kind {
        0 => Msg::Put {
            req: a,
            version: b & msg::MAX_VERSION,
            id: a ^ b,
            content,
        },
        1 => Msg::Get {
            req: a,
            id: b,
            min: msg::VectorRef::new(entries).expect("seqs in range"),
        },
        2 => Msg::Stored {
            req: a,
            seq: b & msg::MAX_SEQ,
        },
        3 => Msg::Value {
            req: a,
            content: b.is_multiple_of(2).then_some(content),
        },
        4 => Msg::Record(RecordRef {
            origin: a as u32,
            seq: b & msg::MAX_SEQ,
            version: a & msg::MAX_VERSION,
            id: b,
            content,
        }),
        5 => Msg::Report {
            records: a,
            max_version: b & msg::MAX_VERSION,
            digest: (u128::from(a) << 64 | u128::from(b)).to_be_bytes(),
            vector,
        },
        6 => Msg::CatchupDone { vector },
        7 => Msg::PeerFlush,
        _ => Msg::PeerAck {
            seq: a & msg::MAX_SEQ,
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn client_requests_round_trip_and_every_prefix_is_incomplete(
        (tag, kind, id, content) in request(),
        cut in any::<prop::sample::Index>(),
    ) {
        let req = build(kind, id, &content);
        let mut buf = Vec::new();
        wire::encode_request(&mut buf, tag, &req);
        match wire::parse_request(&buf, MAX_CONTENT) {
            Parse::Frame { tag: t, msg, consumed } => {
                prop_assert_eq!(t, tag);
                prop_assert_eq!(msg, req);
                prop_assert_eq!(consumed, buf.len());
            }
            other => prop_assert!(false, "{:?}", other),
        }
        let cut = cut.index(buf.len());
        prop_assert!(matches!(wire::parse_request(&buf[..cut], MAX_CONTENT), Parse::Incomplete));
    }

    #[test]
    fn internal_messages_round_trip(
        kind in 0u8..9,
        a in any::<u64>(),
        b in any::<u64>(),
        content in proptest::collection::vec(any::<u8>(), 0..MAX_CONTENT),
        vector in proptest::collection::vec((any::<u32>(), 0..=msg::MAX_SEQ), 0..20),
    ) {
        let entries = msg::vector_entries(&vector);
        let m = internal(kind, a, b, &content, &entries, vector);
        let mut buf = Vec::new();
        msg::encode(&mut buf, &m);
        match msg::decode(&buf, MAX_CONTENT) {
            Ok(Some((got, n))) => {
                prop_assert_eq!(got, m);
                prop_assert_eq!(n, buf.len());
            }
            other => prop_assert!(false, "{:?}", other),
        }
        prop_assert!(matches!(msg::decode(&buf[..buf.len() - 1], MAX_CONTENT), Ok(None)));
    }

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        rrstore::fuzzing::client_frames(&bytes);
        rrstore::fuzzing::internal_frames(&bytes);
    }

    #[test]
    fn a_mutated_frame_is_rejected_or_decodes_consistently(
        (tag, kind, id, content) in request(),
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let mut buf = Vec::new();
        wire::encode_request(&mut buf, tag, &build(kind, id, &content));
        let i = at.index(buf.len());
        buf[i] ^= xor;
        rrstore::fuzzing::client_frames(&buf);
        let mut ibuf = Vec::new();
        let entries = msg::vector_entries(&[(1, 2)]);
        let m = internal(kind, id, tag as u64, &content, &entries, vec![(1, 2)]);
        msg::encode(&mut ibuf, &m);
        let j = at.index(ibuf.len());
        ibuf[j] ^= xor;
        rrstore::fuzzing::internal_frames(&ibuf);
    }
}
