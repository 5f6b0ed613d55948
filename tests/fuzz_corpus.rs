//! Replays every input kept for the fuzz targets (`fuzz/corpus/TARGET/`,
//! grown by `cargo fuzz run TARGET`, and `fuzz/regressions/TARGET/`, every
//! crash ever found) through the same target bodies, on stable Rust: a
//! decoder bug fixed once stays fixed.
//!
//! `cargo test --release --test fuzz_corpus -- --ignored` rewrites the seed
//! inputs (`seed-*` files) from the encoders.

use rrstore::fuzzing;
use rrstore::log::LogWriter;
use rrstore::msg::{self, Member, Msg, RecordRef, Status};
use rrstore::wire::{self, ErrorCode, Request, Response};
use std::path::{Path, PathBuf};

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 4] = [
    ("client_frames", fuzzing::client_frames),
    ("internal_frames", fuzzing::internal_frames),
    ("log_recovery", fuzzing::log_recovery),
    ("handshake", fuzzing::handshake),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn every_kept_fuzz_input_passes_its_target() {
    for (name, target) in TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(name));
        assert!(!corpus.is_empty(), "no corpus for {name}");
        let regressions = files(&fuzz_dir().join("regressions").join(name));
        for path in corpus.iter().chain(&regressions) {
            let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name} fails on {}", path.display());
        }
        eprintln!(
            "{name}: {} corpus inputs, {} regressions",
            corpus.len(),
            regressions.len()
        );
    }
}

fn seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = fuzz_dir().join("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed");
}

#[test]
#[ignore = "rewrites fuzz/corpus/*/seed-*"]
fn write_seed_corpus() {
    let mut all = Vec::new();
    let requests = [
        (
            "put",
            Request::Put {
                id: 7,
                content: b"hello",
            },
        ),
        (
            "put-empty",
            Request::Put {
                id: 8,
                content: b"",
            },
        ),
        ("get", Request::Get { id: 7 }),
        ("ping", Request::Ping),
    ];
    for (i, (name, req)) in requests.iter().enumerate() {
        let mut b = Vec::new();
        wire::encode_request(&mut b, i as u32 + 1, req);
        all.extend_from_slice(&b);
        seed("client_frames", name, &b);
    }
    seed("client_frames", "pipeline", &all);
    seed(
        "client_frames",
        "unknown-op",
        &[0, 0, 0, 6, 0x09, 0, 0, 0, 1, 0xEE],
    );
    seed("client_frames", "short-len", &[0, 0, 0, 3, 0x01, 0, 0]);
    let mut resp = Vec::new();
    wire::encode_response(&mut resp, 3, &Response::Stored { id: 7, worker: 2 });
    wire::encode_error(&mut resp, 4, ErrorCode::Busy);
    seed("client_frames", "responses", &resp);

    let record = RecordRef {
        origin: 2,
        seq: 9,
        version: 1_700_000_000_000_000,
        id: 7,
        content: b"hello",
    };
    let members = vec![Member {
        id: 1,
        origin: 1,
        status: Status::Active,
        records: 3,
        addr: "127.0.0.1:7000".into(),
    }];
    let get_min = msg::vector_entries(&[(2, 9)]);
    let messages = [
        (
            "register",
            Msg::Register {
                id: 0,
                origin: 0,
                max_origin: 2,
                max_version: 5,
                addr: "127.0.0.1:7000".into(),
            },
        ),
        ("members", Msg::Members { members }),
        (
            "ready",
            Msg::Ready {
                vector: vec![(1, 3), (2, 9)],
                markers: vec![(1, 2)],
            },
        ),
        (
            "put",
            Msg::Put {
                req: 11,
                version: 12,
                id: 7,
                content: b"hello",
            },
        ),
        (
            "get",
            Msg::Get {
                req: 13,
                id: 7,
                min: msg::VectorRef::new(&get_min).expect("whole entries"),
            },
        ),
        ("stored", Msg::Stored { req: 11, seq: 9 }),
        (
            "value",
            Msg::Value {
                req: 13,
                content: Some(b"hello"),
            },
        ),
        ("record", Msg::Record(record)),
        (
            "catchup",
            Msg::CatchupRequest {
                vector: vec![(1, 1)],
            },
        ),
        ("heartbeat", Msg::Heartbeat),
        (
            "stats",
            Msg::Stats {
                pairs: vec![("requests_put".into(), 3)],
            },
        ),
    ];
    let mut stream = Vec::new();
    for (name, m) in &messages {
        let mut b = Vec::new();
        msg::encode(&mut b, m);
        stream.extend_from_slice(&b);
        seed("internal_frames", name, &b);
    }
    seed("internal_frames", "stream", &stream);

    let mut hs = Vec::new();
    msg::encode(
        &mut hs,
        &Msg::AuthHello {
            nonce: [7; 32],
            id: 0,
            addr: "127.0.0.1:7000".into(),
        },
    );
    msg::encode(&mut hs, &Msg::AuthProof { mac: [9; 32] });
    seed("handshake", "hello-proof", &hs);
    let mut ch = Vec::new();
    msg::encode(
        &mut ch,
        &Msg::AuthChallenge {
            nonce: [1; 32],
            id: 2,
            addr: "127.0.0.1:7002".into(),
            mac: [3; 32],
        },
    );
    seed("handshake", "challenge", &ch);

    let path = std::env::temp_dir().join(format!("rrstore-seed-log-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut log = LogWriter::open(&path).expect("log");
    log.append_record(&record);
    log.append_vector(&[(1, 3), (2, 9)]);
    log.append_record(&RecordRef {
        seq: 10,
        content: b"",
        ..record
    });
    log.flush().expect("flush");
    drop(log);
    let bytes = std::fs::read(&path).expect("read log");
    let _ = std::fs::remove_file(&path);
    seed("log_recovery", "three-entries", &bytes);
    seed("log_recovery", "torn", &bytes[..bytes.len() - 3]);
    let mut flipped = bytes.clone();
    flipped[20] ^= 1;
    seed("log_recovery", "bit-flip", &flipped);
}
