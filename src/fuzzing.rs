//! Fuzz target bodies, shared by the cargo-fuzz targets in `fuzz/` and by
//! `tests/fuzz_corpus.rs`, which replays every kept corpus and regression
//! input on the stable toolchain in CI.
//!
//! Each function takes arbitrary bytes and panics only when an invariant is
//! broken; a decoder that errors cleanly is the expected outcome for most
//! inputs.

use crate::auth::{Acceptor, Dialer, Identity, Secret, Step};
use crate::log::{self, LogEntry};
use crate::msg;
use crate::wire::{self, Parse};
use std::path::{Path, PathBuf};

/// A small content limit, so that fuzzed lengths can reach it.
const MAX_CONTENT: usize = 4096;

/// Client protocol v1, as the LB reads it: a stream of frames. Every frame
/// that parses re-encodes to exactly its bytes; a rejected frame is either
/// skipped (and the stream goes on) or ends the stream; nothing consumes
/// more than it was given.
pub fn client_frames(data: &[u8]) {
    let mut pos = 0;
    while pos < data.len() {
        match wire::parse_request(&data[pos..], MAX_CONTENT) {
            Parse::Incomplete => return,
            Parse::Frame { tag, msg, consumed } => {
                assert!(consumed >= wire::HEADER_LEN && pos + consumed <= data.len());
                let mut again = Vec::new();
                wire::encode_request(&mut again, tag, &msg);
                assert_eq!(again, &data[pos..pos + consumed], "re-encoding {msg:?}");
                pos += consumed;
            }
            Parse::Reject { skip, .. } => match skip {
                Some(n) => {
                    assert!(n > 0 && pos + n <= data.len(), "skip {n} at {pos}");
                    pos += n;
                }
                None => return,
            },
        }
    }
    // Responses go through the same header checks on the client's side.
    let _ = wire::parse_response(data, MAX_CONTENT);
}

/// Internal messages (LB↔worker, worker↔worker, admin): every message that
/// decodes encodes to bytes that decode to the same message.
pub fn internal_frames(data: &[u8]) {
    let mut pos = 0;
    while pos < data.len() {
        match msg::decode(&data[pos..], MAX_CONTENT) {
            Ok(None) | Err(_) => return,
            Ok(Some((m, consumed))) => {
                assert!(consumed >= wire::HEADER_LEN && pos + consumed <= data.len());
                let mut again = Vec::new();
                msg::encode(&mut again, &m);
                match msg::decode(&again, MAX_CONTENT) {
                    Ok(Some((m2, n))) => {
                        assert_eq!(m, m2);
                        assert_eq!(n, again.len());
                    }
                    other => panic!("{m:?} re-encoded does not decode: {other:?}"),
                }
                pos += consumed;
            }
        }
    }
}

/// The cluster handshake, from an attacker's side: frames decoded from the
/// input are fed to an acceptor (the LB or a worker) and to a dialer
/// waiting for a challenge. Without the secret, no input may ever
/// authenticate, and nothing may panic.
pub fn handshake(data: &[u8]) {
    let Ok(secret) = Secret::from_bytes(&[0x42; 32]) else {
        return;
    };
    let mut acceptor = Acceptor::new(&secret, Identity::new(0, "127.0.0.1:5060"));
    let Ok((dialer, _hello)) = Dialer::start(&secret, Identity::new(3, "127.0.0.1:7003"), None)
    else {
        return;
    };
    let mut pos = 0;
    while pos < data.len() {
        let Ok(Some((m, consumed))) = msg::decode(&data[pos..], MAX_CONTENT) else {
            return;
        };
        pos += consumed;
        assert!(
            dialer.on_challenge(&m).is_err(),
            "a forged challenge was accepted: {m:?}"
        );
        match acceptor.on_msg(&m) {
            Ok(Step::Reply(_)) => {}
            Ok(Step::Done(who)) => panic!("a forged proof authenticated {who:?}"),
            Err(_) => return,
        }
    }
}

/// Log recovery over an arbitrary file: never panics, keeps a prefix of
/// whole, checksummed entries and cuts the rest, and replaying what it kept
/// yields the same entries with nothing more to cut.
pub fn log_recovery(data: &[u8]) {
    let path = scratch_file("log");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let first = replayed(&path);
    let second = replayed(&path);
    let _ = std::fs::remove_file(&path);
    let (Some((entries, stats)), Some((again, stats2))) = (first, second) else {
        return;
    };
    assert!(stats.truncated <= data.len() as u64);
    assert_eq!(entries, again, "a second replay saw other entries");
    assert_eq!(stats2.truncated, 0, "a second replay cut more");
}

/// Debug renderings of the entries a replay of `path` yields.
fn replayed(path: &Path) -> Option<(Vec<String>, log::ReplayStats)> {
    let mut entries = Vec::new();
    let stats = log::replay(path, |e| {
        entries.push(match e {
            LogEntry::Record(r) => format!("{r:?}"),
            LogEntry::Vector(v) => format!("{v:?}"),
            LogEntry::Above { origin, seqs } => format!("above {origin} {seqs:?}"),
        })
    })
    .ok()?;
    Some((entries, stats))
}

/// A file of this process's own, reused from one input to the next.
fn scratch_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rrstore-fuzz-{}-{name}", std::process::id()))
}
