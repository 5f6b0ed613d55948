//! The client library against a scripted fake LB on a loopback socket
//! (answers in any order, any ERROR code, tag 0, silence, garbage), and
//! against a real LB and workers in this process (`rrstore::testing`).

use rrstore::testing::LocalCluster;
use rrstore::wire::{self, Parse, Response};
use rrstore::{Client, ClientError, ErrorCode, Reply, Request};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

/// A request as the fake LB saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Put(u64, Vec<u8>),
    Get(u64),
    Ping,
    Auth(Vec<u8>),
}

/// The fake LB's end of one connection.
struct Peer {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Peer {
    /// The next request frame and its tag.
    fn request(&mut self) -> (u32, Seen) {
        loop {
            match wire::parse_request(&self.buf, 1 << 20) {
                Parse::Frame { tag, msg, consumed } => {
                    let seen = match msg {
                        Request::Put { id, content } => Seen::Put(id, content.to_vec()),
                        Request::Get { id } => Seen::Get(id),
                        Request::Ping => Seen::Ping,
                        Request::Auth { token } => Seen::Auth(token.to_vec()),
                    };
                    self.buf.drain(..consumed);
                    return (tag, seen);
                }
                Parse::Reject { code, .. } => panic!("the client sent a bad frame: {code:?}"),
                Parse::Incomplete => {}
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("fake LB read");
            assert!(n > 0, "the client closed early");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn answer(&mut self, tag: u32, response: &Response<'_>) {
        let mut out = Vec::new();
        wire::encode_response(&mut out, tag, response);
        self.stream.write_all(&out).expect("fake LB write");
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("fake LB write");
    }
}

/// The answer a well-behaved LB would give: STORED by worker `id % 7`,
/// VALUE `id` in decimal for even ids, NOT_FOUND for odd ones.
fn honest(peer: &mut Peer, tag: u32, seen: &Seen) {
    match seen {
        Seen::Put(id, _) => peer.answer(
            tag,
            &Response::Stored {
                id: *id,
                worker: (*id % 7) as u32,
            },
        ),
        Seen::Get(id) if id.is_multiple_of(2) => peer.answer(
            tag,
            &Response::Value {
                id: *id,
                content: id.to_string().as_bytes(),
            },
        ),
        Seen::Get(id) => peer.answer(tag, &Response::NotFound { id: *id }),
        Seen::Ping => peer.answer(tag, &Response::Pong),
        Seen::Auth(_) => peer.answer(tag, &Response::AuthOk),
    }
}

/// Runs `script` as the fake LB for one connection; returns the address
/// and the thread (join it to see the script's own assertions).
fn fake_lb(script: impl FnOnce(&mut Peer) + Send + 'static) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let thread = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        script(&mut Peer {
            stream,
            buf: Vec::new(),
        });
    });
    (addr, thread)
}

fn connect(addr: &str) -> Client {
    Client::connect_timeout(addr, Duration::from_secs(10)).expect("connect")
}

#[test]
fn pipeline_matches_answers_given_in_reverse_order() {
    const N: usize = 300;
    const CHUNK: usize = 8;
    let (addr, lb) = fake_lb(|peer| {
        let mut left = N;
        while left > 0 {
            let batch: Vec<(u32, Seen)> = (0..CHUNK.min(left)).map(|_| peer.request()).collect();
            left -= batch.len();
            for (tag, seen) in batch.iter().rev() {
                honest(peer, *tag, seen);
            }
        }
    });
    let contents: Vec<Vec<u8>> = (0..N as u64).map(|i| vec![i as u8; i as usize]).collect();
    let reqs: Vec<Request<'_>> = (0..N as u64)
        .map(|i| match i % 3 {
            0 => Request::Put {
                id: i,
                content: &contents[i as usize],
            },
            1 => Request::Get { id: i },
            _ => Request::Ping,
        })
        .collect();
    let mut client = connect(&addr);
    let answers = client.pipeline(&reqs);
    assert_eq!(answers.len(), N);
    for (i, answer) in answers.into_iter().enumerate() {
        let i = i as u64;
        let want = match i % 3 {
            0 => Reply::Stored {
                id: i,
                worker: (i % 7) as u32,
            },
            1 if i.is_multiple_of(2) => Reply::Value {
                id: i,
                content: i.to_string().into_bytes(),
            },
            1 => Reply::NotFound { id: i },
            _ => Reply::Pong,
        };
        assert_eq!(answer.expect("an answer"), want, "request {i}");
    }
    lb.join().expect("fake LB");
}

#[test]
fn recv_returns_each_answer_with_its_tag_in_arrival_order() {
    let (addr, lb) = fake_lb(|peer| {
        let batch: Vec<(u32, Seen)> = (0..5).map(|_| peer.request()).collect();
        for (tag, seen) in batch.iter().rev() {
            honest(peer, *tag, seen);
        }
    });
    let mut client = connect(&addr);
    let sent: Vec<(u32, u64)> = (10..15u64)
        .map(|id| (client.send(&Request::Get { id }), id))
        .collect();
    for &(tag, id) in sent.iter().rev() {
        let (got, answer) = client.recv().expect("an answer");
        assert_eq!(got, tag);
        match answer.expect("not an error") {
            Reply::Value { id: got, .. } | Reply::NotFound { id: got } => assert_eq!(got, id),
            other => panic!("{other:?}"),
        }
    }
    lb.join().expect("fake LB");
}

#[test]
fn every_error_code_is_its_own_variant_and_unknown_ones_keep_their_number() {
    let mut codes: Vec<u16> = ErrorCode::ALL.iter().map(|&c| c as u16).collect();
    codes.extend([0, 99, u16::MAX]);
    let script_codes = codes.clone();
    let (addr, lb) = fake_lb(move |peer| {
        // Once through calls, once through a pipeline.
        for round in 0..2 {
            for &code in &script_codes {
                let (tag, _) = peer.request();
                let message = format!("round {round} code {code}");
                peer.answer(
                    tag,
                    &Response::Error {
                        code,
                        message: message.as_bytes(),
                    },
                );
            }
        }
    });
    let mut client = connect(&addr);
    let check = |code: u16, result: Result<(), ClientError>, round: u32| {
        let message_ok = |m: &str| m == format!("round {round} code {code}");
        match (ErrorCode::from_u16(code), result) {
            (Some(want), Err(ClientError::Server { code: got, message })) => {
                assert_eq!(got, want);
                assert!(message_ok(&message), "{message}");
            }
            (None, Err(ClientError::UnknownCode { code: got, message })) => {
                assert_eq!(got, code);
                assert!(message_ok(&message), "{message}");
            }
            (_, other) => panic!("code {code}: {other:?}"),
        }
    };
    for (i, &code) in codes.iter().enumerate() {
        let result = match i % 3 {
            0 => client.put(1, b"x").map(drop),
            1 => client.get(1).map(drop),
            _ => client.ping(),
        };
        check(code, result, 0);
    }
    let reqs = vec![Request::Ping; codes.len()];
    for (&code, answer) in codes.iter().zip(client.pipeline(&reqs)) {
        check(code, answer.map(drop), 1);
    }
    // The typed codes read as the protocol names them.
    let e = ClientError::Server {
        code: ErrorCode::TooLarge,
        message: "frame larger than the content limit".into(),
    };
    assert_eq!(e.code(), Some(ErrorCode::TooLarge));
    assert_eq!(
        e.to_string(),
        "TOO_LARGE (2): frame larger than the content limit"
    );
    lb.join().expect("fake LB");
}

#[test]
fn an_error_with_tag_zero_fails_what_is_left_after_the_answers_in_flight() {
    let (addr, lb) = fake_lb(|peer| {
        let first = peer.request();
        let second = peer.request();
        honest(peer, first.0, &first.1);
        let mut out = Vec::new();
        wire::encode_error(&mut out, 0, ErrorCode::TooLarge);
        peer.raw(&out);
        // Earlier requests are still answered before the close.
        honest(peer, second.0, &second.1);
        let _ = peer.stream.shutdown(std::net::Shutdown::Both);
    });
    let big = vec![7u8; 100];
    let mut client = connect(&addr);
    let answers = client.pipeline(&[
        Request::Put {
            id: 1,
            content: b"a",
        },
        Request::Get { id: 2 },
        Request::Put {
            id: 3,
            content: &big,
        },
    ]);
    assert!(
        matches!(answers[0], Ok(Reply::Stored { id: 1, .. })),
        "{answers:?}"
    );
    assert!(
        matches!(answers[1], Ok(Reply::Value { id: 2, .. })),
        "{answers:?}"
    );
    assert!(
        matches!(
            answers[2],
            Err(ClientError::Server {
                code: ErrorCode::TooLarge,
                ..
            })
        ),
        "{answers:?}"
    );
    lb.join().expect("fake LB");
}

#[test]
fn a_client_timeout_is_typed_and_the_late_answer_is_dropped() {
    let (addr, lb) = fake_lb(|peer| {
        let (late, _) = peer.request();
        // Silent until the next request, which the client sends only once
        // the first has timed out.
        let (next, _) = peer.request();
        peer.answer(late, &Response::Pong);
        peer.answer(next, &Response::NotFound { id: 4 });
    });
    let mut client = connect(&addr);
    client
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    assert!(matches!(client.ping(), Err(ClientError::TimedOut)));
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    assert_eq!(client.get(4).expect("GET after a timeout"), None);
    lb.join().expect("fake LB");
}

#[test]
fn answers_to_sent_requests_are_kept_for_recv_while_a_call_waits() {
    let (addr, lb) = fake_lb(|peer| {
        let sent = peer.request();
        let call = peer.request();
        honest(peer, sent.0, &sent.1);
        honest(peer, call.0, &call.1);
    });
    let mut client = connect(&addr);
    let tag = client.send(&Request::Get { id: 8 });
    assert_eq!(client.put(9, b"nine").expect("PUT"), 9 % 7);
    match client.recv().expect("the kept answer") {
        (got, Ok(Reply::Value { id: 8, content })) if got == tag => assert_eq!(content, b"8"),
        other => panic!("{other:?}"),
    }
    lb.join().expect("fake LB");
}

#[test]
fn a_bad_frame_or_a_stray_tag_is_a_protocol_error() {
    // An answer to a tag never sent.
    let (addr, lb) = fake_lb(|peer| {
        let (tag, _) = peer.request();
        peer.answer(tag + 1000, &Response::Pong);
    });
    let mut client = connect(&addr);
    assert!(matches!(client.ping(), Err(ClientError::Protocol(_))));
    lb.join().expect("fake LB");

    // A length below the minimum.
    let (addr, lb) = fake_lb(|peer| {
        peer.request();
        peer.raw(&[0, 0, 0, 1, 0x84]);
    });
    let mut client = connect(&addr);
    assert!(matches!(client.ping(), Err(ClientError::Protocol(_))));
    lb.join().expect("fake LB");

    // A VALUE above the client's limit, refused from its length.
    let (addr, lb) = fake_lb(|peer| {
        let (tag, _) = peer.request();
        peer.answer(
            tag,
            &Response::Value {
                id: 2,
                content: &[1u8; 8192],
            },
        );
    });
    let mut client = connect(&addr);
    client.set_max_content(1024);
    assert!(matches!(client.get(2), Err(ClientError::Protocol(_))));
    lb.join().expect("fake LB");

    // A close is Io with UnexpectedEof.
    let (addr, lb) = fake_lb(|peer| {
        peer.request();
    });
    let mut client = connect(&addr);
    match client.ping() {
        Err(ClientError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof),
        other => panic!("{other:?}"),
    }
    lb.join().expect("fake LB");
}

#[test]
fn a_local_cluster_serves_pipelines_and_leaves_nothing_behind() {
    let cluster = LocalCluster::start(2).expect("local cluster");
    let dir = cluster.dir().to_path_buf();
    assert!(dir.join("worker-1").is_dir() && dir.join("worker-2").is_dir());
    let contents: Vec<Vec<u8>> = (0..500u64).map(|i| i.to_be_bytes().to_vec()).collect();
    let puts: Vec<Request<'_>> = contents
        .iter()
        .enumerate()
        .map(|(i, c)| Request::Put {
            id: i as u64,
            content: c,
        })
        .collect();
    let mut client = Client::connect(cluster.addr()).expect("connect");
    let mut workers = std::collections::BTreeSet::new();
    for (i, answer) in client.pipeline(&puts).into_iter().enumerate() {
        match answer {
            Ok(Reply::Stored { id, worker }) if id == i as u64 => workers.insert(worker),
            other => panic!("PUT {i}: {other:?}"),
        };
    }
    assert_eq!(
        workers.into_iter().collect::<Vec<_>>(),
        [1, 2],
        "round robin"
    );
    let gets: Vec<Request<'_>> = (0..500u64).map(|id| Request::Get { id }).collect();
    for (i, answer) in client.pipeline(&gets).into_iter().enumerate() {
        match answer {
            Ok(Reply::Value { content, .. }) => assert_eq!(content, contents[i]),
            other => panic!("GET {i}: {other:?}"),
        }
    }
    let members =
        rrstore::client::members(cluster.control_addr(), Some(cluster.secret())).expect("members");
    assert_eq!(members.iter().map(|m| m.id).collect::<Vec<_>>(), [1, 2]);

    // Dropping stops every loop and removes the directory; bounded, so a
    // loop that would not stop fails the test instead of hanging it.
    let addr = cluster.addr().to_string();
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(cluster);
        let _ = done_tx.send(());
    });
    done.recv_timeout(Duration::from_secs(10))
        .expect("the cluster to stop");
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(client.ping().is_err(), "the LB still answers");
    assert!(
        matches!(Client::connect(&addr), Err(ClientError::Io(_))),
        "the LB still listens"
    );
}
