//! Hostile and malformed input on the client port (5059): each case gets
//! the documented ERROR (docs/PROTOCOL.md, section 1), the connection is
//! closed or kept as documented, and the LB keeps serving other clients.

mod common;

use common::*;
use rrstore::client::{Client, ClientError, Reply};
use rrstore::wire::{self, op, ErrorCode, Request};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// A PUT and a GET on a fresh connection both work.
#[track_caller]
fn assert_serves(c: &TestCluster, id: u64) {
    let mut client = c.client();
    let value = content(id, 77);
    let worker = client.put(id, &value).expect("PUT on a fresh connection");
    assert!(c.ids.contains(&worker), "STORED by unknown worker {worker}");
    assert_eq!(
        client.get(id).expect("GET on a fresh connection"),
        Some(value),
        "GET id={id}"
    );
}

/// A connection whose reads give up after 5 s (an answer that needs more
/// input from us would never come).
#[track_caller]
fn quick_client(c: &TestCluster) -> Client {
    Client::connect_timeout(&c.lb_addr, Duration::from_secs(5)).expect("connect")
}

fn put_frame(tag: u32, id: u64, content: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    wire::encode_request(&mut v, tag, &Request::Put { id, content });
    v
}

#[test]
fn length_below_five_is_malformed_with_tag_zero_and_closes() {
    let c = TestCluster::start("bad_len_small", 1);
    for (i, len) in [0u32, 1, 4].into_iter().enumerate() {
        let mut client = quick_client(&c);
        client.send_raw(&len.to_be_bytes());
        client.flush().expect("write");
        expect_error(&mut client, ErrorCode::Malformed, 0);
        expect_eof(&mut client);
        assert_serves(&c, 1_000 + i as u64);
    }
    // After a good request on the same connection: PONG first, then ERROR.
    let mut client = quick_client(&c);
    let mut bytes = frame(op::PING, 9, b"");
    bytes.extend_from_slice(&3u32.to_be_bytes());
    client.send_raw(&bytes);
    client.flush().expect("write");
    assert!(matches!(client.recv(), Ok((9, Ok(Reply::Pong)))));
    expect_error(&mut client, ErrorCode::Malformed, 0);
    expect_eof(&mut client);
    assert_serves(&c, 1_010);
    assert_eq!(c.stats()["errors_malformed"], 4);
}

#[test]
fn oversize_length_is_too_large_at_once_and_closes() {
    let c = TestCluster::start("bad_len_large", 2);
    let limit = (wire::LEN_OVERHEAD + 8 + wire::DEFAULT_MAX_CONTENT) as u32;
    let cases: [Vec<u8>; 3] = [
        // The four length bytes alone must be enough to decide.
        (limit + 1).to_be_bytes().to_vec(),
        u32::MAX.to_be_bytes().to_vec(),
        // A whole header of a PUT one byte over the limit, body never sent.
        {
            let mut h = Vec::new();
            wire::put_header(&mut h, op::PUT, 5, 8 + wire::DEFAULT_MAX_CONTENT + 1);
            h
        },
    ];
    for (i, bytes) in cases.iter().enumerate() {
        let mut client = quick_client(&c);
        client.send_raw(bytes);
        client.flush().expect("write");
        let start = Instant::now();
        expect_error(&mut client, ErrorCode::TooLarge, 0);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "case {i}: TOO_LARGE took {:?}",
            start.elapsed()
        );
        expect_eof(&mut client);
        assert_serves(&c, 2_000 + i as u64);
    }
    // Exactly at the limit is fine, and replicates.
    let big: Vec<u8> = (0..wire::DEFAULT_MAX_CONTENT)
        .map(|i| (i % 251) as u8)
        .collect();
    let mut client = c.client();
    client.put(7, &big).expect("PUT of the largest content");
    assert_eq!(client.get(7).expect("GET"), Some(big.clone()));
    assert_eq!(client.get(7).expect("GET"), Some(big.clone()));
    assert_eq!(c.converged(&c.ids).get(&7), Some(&big));
    assert_eq!(c.stats()["errors_too_large"], 3);
}

/// After TOO_LARGE the LB half-closes and discards whatever the client
/// still sends, so a client that streams the rest of its oversized body after
/// reading the ERROR ends with a clean EOF, not a reset. (Closing with input
/// unread sends a TCP reset, which can also destroy the ERROR in flight.)
#[test]
fn the_rest_of_a_too_large_frame_is_discarded_without_a_reset() {
    let c = TestCluster::start("too_large_linger", 1);
    let mut client = quick_client(&c);
    let body = 8 + wire::DEFAULT_MAX_CONTENT + 1;
    let mut header = Vec::new();
    wire::put_header(&mut header, op::PUT, 9, body);
    client.send_raw(&header);
    client.flush().expect("write the header");
    // Decided from the length alone, before the tag is read: tag 0.
    expect_error(&mut client, ErrorCode::TooLarge, 0);
    // Several LB loop turns pass while the body arrives in pieces.
    let piece = vec![0xAB; 64 * 1024];
    let mut sent = 0;
    while sent < body {
        let n = piece.len().min(body - sent);
        client.send_raw(&piece[..n]);
        client
            .flush()
            .unwrap_or_else(|e| panic!("the LB reset the connection after {sent} bytes: {e}"));
        sent += n;
        // One piece per LB turn: wait until the LB has read this one.
        wait_until(Duration::from_secs(10), "the LB discards the piece", || {
            c.stats()["discarded_bytes"] >= sent as u64
        });
    }
    client.shutdown_write().expect("half-close our side");
    expect_eof(&mut client);
    assert_serves(&c, 3_000);
}

#[test]
fn unknown_op_is_skipped_and_the_connection_stays_open() {
    let c = TestCluster::start("bad_op", 1);
    let mut client = quick_client(&c);
    client.send_raw(&frame(0x42, 77, b"abc"));
    client.flush().expect("write");
    expect_error(&mut client, ErrorCode::UnknownOp, 77);
    client.ping().expect("PING on the same connection");

    // Pipelined with good requests: exactly the unknown frames are skipped,
    // whatever their body (a response op, an empty body, a large body).
    let mut bytes = frame(0x00, 5, b"");
    bytes.extend(frame(op::STORED, 6, &[0u8; 12]));
    bytes.extend(put_frame(7, 4_242, b"after unknown ops"));
    bytes.extend(frame(0x7F, 8, &vec![op::PUT; 100_000]));
    bytes.extend(frame(op::PING, 9, b""));
    client.send_raw(&bytes);
    client.flush().expect("write");
    let mut replies = HashMap::new();
    for _ in 0..5 {
        let (tag, reply) = client.recv().expect("reply");
        assert!(
            replies.insert(tag, reply).is_none(),
            "two replies for tag {tag}"
        );
    }
    for tag in [5, 6, 8] {
        assert!(
            matches!(
                &replies[&tag],
                Err(ClientError::Server {
                    code: ErrorCode::UnknownOp,
                    ..
                })
            ),
            "tag {tag}: {:?}",
            replies[&tag]
        );
    }
    assert!(
        matches!(replies[&7], Ok(Reply::Stored { id: 4_242, .. })),
        "{:?}",
        replies[&7]
    );
    assert!(matches!(replies[&9], Ok(Reply::Pong)));
    assert_eq!(
        client.get(4_242).expect("GET"),
        Some(b"after unknown ops".to_vec())
    );
    assert_serves(&c, 3_000);
    assert_eq!(c.stats()["errors_unknown_op"], 4);
}

#[test]
fn wrong_body_size_is_malformed_with_the_tag_and_closes() {
    let c = TestCluster::start("bad_body", 1);
    let cases = [
        ("PUT with a 7-byte body", frame(op::PUT, 11, b"1234567")),
        ("PUT with an empty body", frame(op::PUT, 12, b"")),
        ("GET with a 9-byte body", frame(op::GET, 13, b"123456789")),
        ("GET with an empty body", frame(op::GET, 14, b"")),
        ("PING with a body", frame(op::PING, 15, b"x")),
    ];
    for (i, (what, bytes)) in cases.iter().enumerate() {
        let mut client = quick_client(&c);
        client.send_raw(bytes);
        client.flush().expect("write");
        let tag = 11 + i as u32;
        match client.recv() {
            Ok((t, Err(ClientError::Server { code, .. }))) => {
                assert_eq!((t, code), (tag, ErrorCode::Malformed), "{what}")
            }
            other => panic!("{what}: {other:?}"),
        }
        expect_eof(&mut client);
        assert_serves(&c, 4_000 + i as u64);
    }
    assert_eq!(c.stats()["errors_malformed"], cases.len() as u64);
}

#[test]
fn no_active_worker_is_unavailable_and_the_connection_stays_open() {
    let mut c = TestCluster::start("unavailable", 0);
    let mut client = quick_client(&c);
    client.send_raw(&put_frame(21, 5_000, b"nowhere"));
    client.flush().expect("write");
    expect_error(&mut client, ErrorCode::Unavailable, 21);
    let get = client.send(&Request::Get { id: 5_000 });
    client.flush().expect("write");
    expect_error(&mut client, ErrorCode::Unavailable, get);
    client.ping().expect("PING on the same connection");
    assert_eq!(c.stats()["errors_unavailable"], 2);

    // Once a worker is active the same connection is served, and the
    // rejected PUT was not stored.
    c.add_active_worker();
    assert_eq!(client.get(5_000).expect("GET"), None);
    client.put(5_001, b"somewhere").expect("PUT");
    assert_eq!(client.get(5_001).expect("GET"), Some(b"somewhere".to_vec()));
}

#[test]
fn over_max_inflight_is_busy_and_every_request_gets_one_answer() {
    let c = TestCluster::start_with("busy", 1, &["--max-inflight", "1"]);
    let records: Vec<(u64, Vec<u8>)> = (0..2_000u64).map(|i| (60_000 + i, content(i, 5))).collect();
    let reqs = puts(&records);
    let mut client = c.client();
    // All at once; `pipeline` checks each tag is answered exactly once.
    let replies = pipeline(&mut client, &reqs, usize::MAX);
    let mut busy = Vec::new();
    let mut stored = Vec::new();
    for (reply, (id, content)) in replies.iter().zip(&records) {
        match reply {
            Ok(Reply::Stored { id: got, .. }) if got == id => stored.push((*id, content)),
            Err(ClientError::Server {
                code: ErrorCode::Busy,
                ..
            }) => busy.push(*id),
            other => panic!("PUT id={id}: {other:?}"),
        }
    }
    assert!(!busy.is_empty(), "no BUSY with --max-inflight 1");
    assert!(!stored.is_empty(), "nothing stored");
    // BUSY means not stored; STORED means stored.
    for id in &busy {
        assert_eq!(
            client.get(*id).expect("GET"),
            None,
            "BUSY id {id} was stored"
        );
    }
    for (id, content) in &stored {
        assert_eq!(
            client.get(*id).expect("GET").as_ref(),
            Some(*content),
            "id {id}"
        );
    }
    let stats = c.stats();
    assert_eq!(stats["errors_busy"], busy.len() as u64);
    assert_eq!(stats["requests_put"], stored.len() as u64);
    assert_serves(&c, 70_000);
}

#[test]
fn garbage_and_truncated_frames_do_not_disturb_other_clients() {
    let c = TestCluster::start("garbage", 2);
    let lb = c.lb_addr.clone();
    // A well-behaved client writes throughout.
    let good = std::thread::spawn(move || {
        let mut client = connect(&lb);
        let records: Vec<(u64, Vec<u8>)> = (0..3_000u64).map(|id| (id, content(id, 6))).collect();
        for chunk in records.chunks(100) {
            put_all(&mut client, chunk, 16);
        }
        records
    });

    // Garbage with a documented answer, then the LB closes.
    let cases: [(&str, Vec<u8>, ErrorCode, u32); 4] = [
        (
            "an HTTP request",
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            ErrorCode::TooLarge,
            0,
        ),
        ("0xFF bytes", vec![0xFF; 64], ErrorCode::TooLarge, 0),
        ("zero bytes", vec![0; 64], ErrorCode::Malformed, 0),
        (
            "a PUT frame too short for an id, then noise",
            {
                let mut v = frame(op::PUT, 31, b"ab");
                v.extend_from_slice(&[0x13, 0x37, 0xC0, 0xDE, 0x00, 0xFF]);
                v
            },
            ErrorCode::Malformed,
            31,
        ),
    ];
    for (i, (what, bytes, code, tag)) in cases.iter().enumerate() {
        let mut client = quick_client(&c);
        client.send_raw(bytes);
        client.flush().expect("write");
        match client.recv() {
            Ok((t, Err(ClientError::Server { code: got, .. }))) => {
                assert_eq!((t, got), (*tag, *code), "{what}")
            }
            other => panic!("{what}: {other:?}"),
        }
        expect_eof(&mut client);
        assert_serves(&c, 100_000 + i as u64);
    }

    // Truncated frames, then the client goes away.
    for (i, keep) in [3usize, 9, 40].into_iter().enumerate() {
        let id = 200_000 + i as u64;
        let bytes = put_frame(40 + i as u32, id, &[0xAB; 100]);
        let mut s = TcpStream::connect(&c.lb_addr).expect("connect");
        s.write_all(&bytes[..keep]).expect("write");
        drop(s);
        assert_serves(&c, 300_000 + i as u64);
        assert_eq!(
            c.client().get(id).expect("GET"),
            None,
            "a truncated PUT was stored"
        );
    }
    // Half-closed after a partial frame: the LB closes without an answer.
    let mut s = TcpStream::connect(&c.lb_addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(&put_frame(50, 400_000, b"cut")[..12])
        .expect("write");
    s.shutdown(Shutdown::Write).expect("shutdown");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .expect("the LB closes a half-closed connection");
    assert!(rest.is_empty(), "answer to a partial frame: {rest:?}");

    let written = good.join().expect("good client");
    let mut expected = last_writes(&written);
    for i in 0..4 {
        expected.insert(100_000 + i, content(100_000 + i, 77));
    }
    for i in 0..3 {
        expected.insert(300_000 + i, content(300_000 + i, 77));
    }
    assert_records(&c.converged(&c.ids), &expected);
    assert_serves(&c, 500_000);
}

#[test]
fn answers_for_a_closed_client_never_reach_a_new_one() {
    let c = TestCluster::start("closed_client", 2);
    // A client pipelines PUTs and goes away without reading an answer.
    let mut gone = c.client();
    for i in 0..2_000u64 {
        gone.send(&Request::Put {
            id: 600_000 + i,
            content: b"orphan",
        });
    }
    gone.flush().expect("write");
    drop(gone);
    // A new client (likely in the same connection slot at the LB), with the
    // same tags as the first one.
    let mut client = c.client();
    assert_eq!(client.send(&Request::Ping), 1);
    let put = client.send(&Request::Put {
        id: 7,
        content: b"mine",
    });
    client.flush().expect("write");
    let mut replies = HashMap::new();
    for _ in 0..2 {
        let (tag, reply) = client.recv().expect("reply");
        assert!(
            replies.insert(tag, reply).is_none(),
            "two replies for tag {tag}"
        );
    }
    assert!(matches!(replies[&1], Ok(Reply::Pong)), "{replies:?}");
    assert!(
        matches!(replies[&put], Ok(Reply::Stored { id: 7, .. })),
        "{replies:?}"
    );
    // Once the LB has nothing in flight, the next frame is the next answer:
    // nothing meant for the first client came in between.
    wait_until(CONVERGE_TIMEOUT, "no request in flight at the LB", || {
        c.stats()["in_flight"] == 0
    });
    let ping = client.send(&Request::Ping);
    client.flush().expect("write");
    assert!(matches!(client.recv(), Ok((t, Ok(Reply::Pong))) if t == ping));
    assert_eq!(client.get(7).expect("GET"), Some(b"mine".to_vec()));
    // Whatever of the orphans was stored, the workers agree on it.
    let data = c.converged(&c.ids);
    assert!(data
        .iter()
        .all(|(id, v)| (*id == 7 && v == b"mine") || (*id >= 600_000 && v == b"orphan")));
}

#[test]
fn a_client_that_never_reads_does_not_block_others() {
    let c = TestCluster::start("slow_reader", 2);
    let value = vec![0x5A; 1024];
    c.client().put(1, &value).expect("PUT");
    // 12,000 GETs of a 1 KiB value: about 12 MiB of answers nobody reads.
    const GETS: usize = 12_000;
    let mut hog = c.client();
    let mut tags = std::collections::HashSet::new();
    for _ in 0..GETS {
        tags.insert(hog.send(&Request::Get { id: 1 }));
    }
    hog.flush().expect("write");
    // Meanwhile another client is served normally.
    for i in 0..200u64 {
        assert_serves(&c, 800_000 + i);
    }
    // When the hog finally reads, every answer is there, once.
    for n in 0..GETS {
        let (tag, reply) = hog
            .recv()
            .unwrap_or_else(|e| panic!("after {n} of {GETS} answers: {e}"));
        assert!(tags.remove(&tag), "unexpected or repeated tag {tag}");
        assert_eq!(
            reply.expect("VALUE"),
            Reply::Value {
                id: 1,
                content: value.clone()
            }
        );
    }
    hog.ping().expect("PING after the backlog");
}

#[test]
fn a_half_closed_client_still_gets_its_answers() {
    // `printf ... | nc` style: send the requests, shut down the write side,
    // read the answers. Every request is answered (only MALFORMED and
    // TOO_LARGE close a connection, docs/PROTOCOL.md section 1).
    let c = TestCluster::start("half_close", 1);
    let mut bytes = Vec::new();
    wire::encode_request(&mut bytes, 1, &Request::Ping);
    bytes.extend(put_frame(2, 900, b"half-closed"));
    let mut s = TcpStream::connect(&c.lb_addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(&bytes).expect("write");
    s.shutdown(Shutdown::Write).expect("shutdown");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    let mut replies = HashMap::new();
    let mut rest = &out[..];
    while let wire::Parse::Frame { tag, msg, consumed } =
        wire::parse_response(rest, wire::DEFAULT_MAX_CONTENT)
    {
        replies.insert(tag, format!("{msg:?}"));
        rest = &rest[consumed..];
    }
    // Whatever happens to the answers, the PUT itself went through.
    let stored = c.client().get(900).expect("GET");
    assert_eq!(
        replies.len(),
        2,
        "answers to a half-closed connection: {replies:?} (raw {} bytes); the PUT was {}",
        out.len(),
        if stored.is_some() {
            "stored anyway"
        } else {
            "not stored"
        }
    );
    assert_eq!(replies[&1], "Pong");
    assert!(replies[&2].starts_with("Stored { id: 900,"), "{replies:?}");
    assert_eq!(stored, Some(b"half-closed".to_vec()));
}
