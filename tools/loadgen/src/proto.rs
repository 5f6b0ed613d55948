//! The two protocols loadgen speaks, as pure functions over bytes.
//!
//! - rrstore client protocol v1 (docs/PROTOCOL.md §1): frames encoded and
//!   parsed by `rrstore::wire`; responses are matched to requests by tag.
//! - Redis RESP: `SET k:<id> <content>` and `GET k:<id>` as arrays of bulk
//!   strings; replies come back in order, so they are matched FIFO. With
//!   `--redis-wait N` each SET is followed by `WAIT N 0` on the same
//!   connection, and the pair is one request (see [`wait_outcome`]).
//!
//! Encoders append to a caller-owned buffer and parsers borrow the read
//! buffer, so the hot path allocates nothing. Every parser returns
//! [`Decoded::Incomplete`] for a partial frame and never panics on bad input.

use crate::workload::Op;
use rrstore::wire::{self, ErrorCode, Parse, Request, Response};

/// Which protocol a target speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Rrstore,
    Redis,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Rrstore => "rrstore",
            Protocol::Redis => "redis",
        }
    }

    pub fn parse(s: &str) -> Result<Protocol, String> {
        match s {
            "rrstore" => Ok(Protocol::Rrstore),
            "redis" => Ok(Protocol::Redis),
            _ => Err(format!("unknown protocol {s:?} (rrstore or redis)")),
        }
    }
}

/// Splits `rrstore://HOST:PORT` or `redis://HOST:PORT` into the protocol
/// and the address.
pub fn parse_target(target: &str) -> Result<(Protocol, String), String> {
    let (scheme, addr) = target.split_once("://").ok_or_else(|| {
        format!("target {target:?}: expected rrstore://HOST:PORT or redis://HOST:PORT")
    })?;
    let protocol = Protocol::parse(scheme).map_err(|e| format!("target {target:?}: {e}"))?;
    let addr = addr.trim_end_matches('/');
    if addr.is_empty() || !addr.contains(':') {
        return Err(format!(
            "target {target:?}: expected HOST:PORT after the scheme"
        ));
    }
    Ok((protocol, addr.to_string()))
}

/// Why a request failed; each kind is counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// An rrstore ERROR code (every one in [`ErrorCode::ALL`]).
    Server(ErrorCode),
    /// An rrstore ERROR code this build does not know.
    UnknownCode,
    /// A Redis `-ERR …` (any error reply).
    RedisError,
    /// The connection failed with the request in flight.
    Io,
    /// `WAIT N 0` answered with fewer than N replicas (`--redis-wait`).
    WaitShort,
    /// A reply that makes no sense (bad frame, unknown tag, wrong id).
    Protocol,
}

impl ErrorKind {
    /// Number of kinds (the length of a counter array).
    pub const COUNT: usize = ErrorCode::ALL.len() + 5;

    /// Every kind, in [`ErrorKind::index`] order.
    pub const ALL: [ErrorKind; ErrorKind::COUNT] = [
        ErrorKind::Server(ErrorCode::Malformed),
        ErrorKind::Server(ErrorCode::TooLarge),
        ErrorKind::Server(ErrorCode::UnknownOp),
        ErrorKind::Server(ErrorCode::Unavailable),
        ErrorKind::Server(ErrorCode::Busy),
        ErrorKind::Server(ErrorCode::Timeout),
        ErrorKind::Server(ErrorCode::Unauthorized),
        ErrorKind::UnknownCode,
        ErrorKind::RedisError,
        ErrorKind::Io,
        ErrorKind::Protocol,
        ErrorKind::WaitShort,
    ];

    pub fn index(self) -> usize {
        match self {
            ErrorKind::Server(c) => c as usize - 1,
            ErrorKind::UnknownCode => ErrorCode::ALL.len(),
            ErrorKind::RedisError => ErrorCode::ALL.len() + 1,
            ErrorKind::Io => ErrorCode::ALL.len() + 2,
            ErrorKind::Protocol => ErrorCode::ALL.len() + 3,
            ErrorKind::WaitShort => ErrorCode::ALL.len() + 4,
        }
    }

    /// rrstore's names for its codes (`BUSY`, …); lower case for the rest.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Server(c) => c.name(),
            ErrorKind::UnknownCode => "unknown_code",
            ErrorKind::RedisError => "redis_error",
            ErrorKind::Io => "io",
            ErrorKind::Protocol => "protocol",
            ErrorKind::WaitShort => "wait_short",
        }
    }
}

/// A reply, reduced to what the generator needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// rrstore STORED.
    Stored { id: u64 },
    /// rrstore VALUE.
    Value { id: u64 },
    /// rrstore NOT_FOUND.
    NotFound { id: u64 },
    /// rrstore PONG.
    Pong,
    /// RESP simple string (`+OK`).
    Simple,
    /// RESP bulk string (a GET hit).
    Bulk,
    /// RESP null bulk or null array (a GET miss).
    Nil,
    /// RESP integer (the answer to WAIT: how many replicas acknowledged).
    Integer(i64),
    /// RESP array: valid, but not an answer to SET, GET or WAIT.
    Other,
    /// A failed request.
    Error(ErrorKind),
}

impl Reply {
    /// Whether this reply is a success for `op`.
    pub fn answers(self, op: Op) -> bool {
        matches!(
            (op, self),
            (Op::Put, Reply::Stored { .. } | Reply::Simple)
                | (
                    Op::Get,
                    Reply::Value { .. } | Reply::NotFound { .. } | Reply::Bulk | Reply::Nil
                )
        )
    }
}

/// The outcome of looking at the front of a read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// Not a whole frame yet; nothing consumed.
    Incomplete,
    /// One whole reply of `consumed` bytes (`tag` is 0 for RESP).
    Frame {
        tag: u32,
        reply: Reply,
        consumed: usize,
    },
    /// Garbage: the connection cannot be resynchronised.
    Invalid(&'static str),
}

/// Appends one rrstore request with `tag`.
pub fn encode_rrstore(out: &mut Vec<u8>, tag: u32, op: Op, id: u64, content: &[u8]) {
    let req = match op {
        Op::Put => Request::Put { id, content },
        Op::Get => Request::Get { id },
    };
    wire::encode_request(out, tag, &req);
}

/// Parses one rrstore response; `max_content` bounds a VALUE.
pub fn decode_rrstore(buf: &[u8], max_content: usize) -> Decoded {
    match wire::parse_response(buf, max_content) {
        Parse::Incomplete => Decoded::Incomplete,
        Parse::Reject { .. } => Decoded::Invalid("bad rrstore response frame"),
        Parse::Frame { tag, msg, consumed } => {
            let reply = match msg {
                Response::Stored { id, .. } => Reply::Stored { id },
                Response::Value { id, .. } => Reply::Value { id },
                Response::NotFound { id } => Reply::NotFound { id },
                // loadgen sends no AUTH; an answer to one it did not send
                // counts like any other reply out of place.
                Response::Pong | Response::AuthOk => Reply::Pong,
                Response::Error { code, .. } => Reply::Error(
                    ErrorCode::from_u16(code).map_or(ErrorKind::UnknownCode, ErrorKind::Server),
                ),
            };
            Decoded::Frame {
                tag,
                reply,
                consumed,
            }
        }
    }
}

/// Decimal digits of `v` in `buf`, returned as a slice of it.
fn decimal(v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &buf[i..];
        }
    }
}

fn put_bulk_header(out: &mut Vec<u8>, len: usize) {
    let mut d = [0u8; 20];
    out.push(b'$');
    out.extend_from_slice(decimal(len as u64, &mut d));
    out.extend_from_slice(b"\r\n");
}

/// The key of record `id`: `k:<id in decimal>`.
fn put_key(out: &mut Vec<u8>, id: u64) {
    let mut d = [0u8; 20];
    let digits = decimal(id, &mut d);
    put_bulk_header(out, 2 + digits.len());
    out.extend_from_slice(b"k:");
    out.extend_from_slice(digits);
    out.extend_from_slice(b"\r\n");
}

/// Appends `SET k:<id> <content>` or `GET k:<id>` as a RESP array.
pub fn encode_resp(out: &mut Vec<u8>, op: Op, id: u64, content: &[u8]) {
    match op {
        Op::Put => {
            out.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
            put_key(out, id);
            put_bulk_header(out, content.len());
            out.extend_from_slice(content);
            out.extend_from_slice(b"\r\n");
        }
        Op::Get => {
            out.extend_from_slice(b"*2\r\n$3\r\nGET\r\n");
            put_key(out, id);
        }
    }
}

/// Appends `WAIT <replicas> <timeout_ms>`: the server answers once that many
/// replicas have acknowledged every write this connection made before it
/// (timeout 0: wait as long as it takes), with the number that did.
pub fn encode_resp_wait(out: &mut Vec<u8>, replicas: u32, timeout_ms: u64) {
    let mut d = [0u8; 20];
    out.extend_from_slice(b"*3\r\n$4\r\nWAIT\r\n");
    let digits = decimal(replicas as u64, &mut d);
    put_bulk_header(out, digits.len());
    out.extend_from_slice(digits);
    out.extend_from_slice(b"\r\n");
    let digits = decimal(timeout_ms, &mut d);
    put_bulk_header(out, digits.len());
    out.extend_from_slice(digits);
    out.extend_from_slice(b"\r\n");
}

/// The outcome of a SET + `WAIT replicas 0` pair, from the two replies: the
/// SET must be `+OK`, and WAIT must count at least `replicas` replicas.
pub fn wait_outcome(set: Reply, wait: Reply, replicas: u32) -> Result<(), ErrorKind> {
    match set {
        Reply::Simple => {}
        Reply::Error(kind) => return Err(kind),
        _ => return Err(ErrorKind::Protocol),
    }
    match wait {
        Reply::Integer(n) if n >= i64::from(replicas) => Ok(()),
        Reply::Integer(_) => Err(ErrorKind::WaitShort),
        Reply::Error(kind) => Err(kind),
        _ => Err(ErrorKind::Protocol),
    }
}

/// Largest bulk string or array accepted from a peer.
const RESP_MAX_LEN: i64 = 512 << 20;
/// Deepest array nesting accepted.
const RESP_MAX_DEPTH: u32 = 8;

/// The line starting at `from` (without its CRLF) and the offset after it;
/// `Ok(None)` if the CRLF has not arrived.
fn line(buf: &[u8], from: usize) -> Result<Option<(&[u8], usize)>, &'static str> {
    let rest = &buf[from.min(buf.len())..];
    match rest.iter().position(|&b| b == b'\n') {
        None => Ok(None),
        Some(nl) if nl > 0 && rest[nl - 1] == b'\r' => Ok(Some((&rest[..nl - 1], from + nl + 1))),
        Some(_) => Err("RESP line without CR"),
    }
}

/// A RESP integer (`-1`, `42`).
fn integer(digits: &[u8]) -> Result<i64, &'static str> {
    let (neg, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 18 {
        return Err("bad RESP integer");
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err("bad RESP integer");
        }
        v = v * 10 + (d - b'0') as i64;
    }
    Ok(if neg { -v } else { v })
}

/// The body of a bulk string whose header line ends at `start`, declared
/// `len` bytes long: its end and the offset after its CRLF.
fn bulk_body(buf: &[u8], start: usize, len: i64) -> Result<Option<(usize, usize)>, &'static str> {
    if !(0..=RESP_MAX_LEN).contains(&len) {
        return Err("bad RESP bulk length");
    }
    let end = start + len as usize;
    if buf.len() < end + 2 {
        Ok(None)
    } else if &buf[end..end + 2] != b"\r\n" {
        Err("RESP bulk string without CRLF")
    } else {
        Ok(Some((end, end + 2)))
    }
}

/// One RESP value starting at `from`: its reply kind and the offset after it.
fn value_at(buf: &[u8], from: usize, depth: u32) -> Result<Option<(Reply, usize)>, &'static str> {
    let Some(&kind) = buf.get(from) else {
        return Ok(None);
    };
    let Some((text, after)) = line(buf, from + 1)? else {
        return Ok(None);
    };
    match kind {
        b'+' => Ok(Some((Reply::Simple, after))),
        b'-' => Ok(Some((Reply::Error(ErrorKind::RedisError), after))),
        b':' => integer(text).map(|n| Some((Reply::Integer(n), after))),
        b'$' => match integer(text)? {
            -1 => Ok(Some((Reply::Nil, after))),
            n => Ok(bulk_body(buf, after, n)?.map(|(_, next)| (Reply::Bulk, next))),
        },
        b'*' => match integer(text)? {
            -1 => Ok(Some((Reply::Nil, after))),
            n if (0..=RESP_MAX_LEN).contains(&n) && depth < RESP_MAX_DEPTH => {
                let mut at = after;
                for _ in 0..n {
                    match value_at(buf, at, depth + 1)? {
                        Some((_, next)) => at = next,
                        None => return Ok(None),
                    }
                }
                Ok(Some((Reply::Other, at)))
            }
            _ => Err("bad RESP array"),
        },
        _ => Err("unknown RESP type byte"),
    }
}

/// Parses one RESP reply from the front of `buf`.
pub fn decode_resp(buf: &[u8]) -> Decoded {
    match value_at(buf, 0, 0) {
        Ok(None) => Decoded::Incomplete,
        Ok(Some((reply, consumed))) => Decoded::Frame {
            tag: 0,
            reply,
            consumed,
        },
        Err(e) => Decoded::Invalid(e),
    }
}

/// A RESP command as a server sees it: its name (first element), its first
/// argument (empty if it has none) and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    Incomplete,
    Whole {
        name: &'a [u8],
        arg: &'a [u8],
        consumed: usize,
    },
    Invalid(&'static str),
}

type Whole<'a> = (&'a [u8], &'a [u8], usize);

/// The command at the front of `buf`: the first two elements and the size.
fn command(buf: &[u8]) -> Result<Option<Whole<'_>>, &'static str> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first != b'*' {
        return Err("expected a RESP array");
    }
    let Some((text, mut at)) = line(buf, 1)? else {
        return Ok(None);
    };
    let n = integer(text)?;
    if !(1..=RESP_MAX_LEN).contains(&n) {
        return Err("bad RESP command length");
    }
    let mut name: &[u8] = &[];
    let mut arg: &[u8] = &[];
    for i in 0..n {
        match buf.get(at) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(_) => return Err("expected a RESP bulk string"),
        }
        let Some((text, start)) = line(buf, at + 1)? else {
            return Ok(None);
        };
        let Some((end, next)) = bulk_body(buf, start, integer(text)?)? else {
            return Ok(None);
        };
        match i {
            0 => name = &buf[start..end],
            1 => arg = &buf[start..end],
            _ => {}
        }
        at = next;
    }
    Ok(Some((name, arg, at)))
}

/// Parses one command (an array of bulk strings) from the front of `buf`.
pub fn decode_resp_command(buf: &[u8]) -> Command<'_> {
    match command(buf) {
        Ok(None) => Command::Incomplete,
        Ok(Some((name, arg, consumed))) => Command::Whole {
            name,
            arg,
            consumed,
        },
        Err(e) => Command::Invalid(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rrstore::wire::{encode_response, Response};

    /// Every strict prefix of `frame` is incomplete; the whole is `want`.
    fn check_prefixes(frame: &[u8], decode: impl Fn(&[u8]) -> Decoded, want: Reply) {
        for cut in 0..frame.len() {
            assert_eq!(decode(&frame[..cut]), Decoded::Incomplete, "cut {cut}");
        }
        let mut more = frame.to_vec();
        more.extend_from_slice(b"+NEXT\r\n");
        match decode(&more) {
            Decoded::Frame {
                reply, consumed, ..
            } => assert_eq!((reply, consumed), (want, frame.len())),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("rrstore://127.0.0.1:5059").unwrap(),
            (Protocol::Rrstore, "127.0.0.1:5059".to_string())
        );
        assert_eq!(
            parse_target("redis://localhost:6379/").unwrap(),
            (Protocol::Redis, "localhost:6379".to_string())
        );
        assert!(parse_target("http://x:1").is_err());
        assert!(parse_target("127.0.0.1:5059").is_err());
        assert!(parse_target("redis://").is_err());
    }

    #[test]
    fn rrstore_responses_and_partial_frames() {
        let cases = [
            (
                Response::Stored { id: 9, worker: 2 },
                Reply::Stored { id: 9 },
            ),
            (
                Response::Value {
                    id: 3,
                    content: b"abcdef",
                },
                Reply::Value { id: 3 },
            ),
            (Response::NotFound { id: 4 }, Reply::NotFound { id: 4 }),
            (Response::Pong, Reply::Pong),
            (
                Response::Error {
                    code: 5,
                    message: b"busy",
                },
                Reply::Error(ErrorKind::Server(ErrorCode::Busy)),
            ),
            (
                Response::Error {
                    code: 99,
                    message: b"?",
                },
                Reply::Error(ErrorKind::UnknownCode),
            ),
        ];
        for (resp, want) in cases {
            let mut frame = Vec::new();
            encode_response(&mut frame, 77, &resp);
            for cut in 0..frame.len() {
                assert_eq!(decode_rrstore(&frame[..cut], 64), Decoded::Incomplete);
            }
            frame.extend_from_slice(&[0, 0]);
            assert_eq!(
                decode_rrstore(&frame, 64),
                Decoded::Frame {
                    tag: 77,
                    reply: want,
                    consumed: frame.len() - 2
                }
            );
        }
        // A length below the minimum is garbage, not a panic.
        assert!(matches!(
            decode_rrstore(&[0, 0, 0, 1, 0x81], 64),
            Decoded::Invalid(_)
        ));
    }

    #[test]
    fn rrstore_requests_round_trip_through_the_wire_codec() {
        let mut out = Vec::new();
        encode_rrstore(&mut out, 5, Op::Put, 11, b"xyz");
        encode_rrstore(&mut out, 6, Op::Get, 12, b"ignored");
        match wire::parse_request(&out, 1024) {
            Parse::Frame { tag, msg, consumed } => {
                assert_eq!(
                    (tag, msg),
                    (
                        5,
                        Request::Put {
                            id: 11,
                            content: b"xyz"
                        }
                    )
                );
                assert_eq!(
                    wire::parse_request(&out[consumed..], 1024),
                    Parse::Frame {
                        tag: 6,
                        msg: Request::Get { id: 12 },
                        consumed: out.len() - consumed
                    }
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn resp_replies_and_partial_frames() {
        check_prefixes(b"+OK\r\n", decode_resp, Reply::Simple);
        check_prefixes(
            b"-ERR wrong\r\n",
            decode_resp,
            Reply::Error(ErrorKind::RedisError),
        );
        check_prefixes(b":1234\r\n", decode_resp, Reply::Integer(1234));
        check_prefixes(b"$-1\r\n", decode_resp, Reply::Nil);
        check_prefixes(b"$5\r\nhe\r\no\r\n", decode_resp, Reply::Bulk);
        check_prefixes(b"$0\r\n\r\n", decode_resp, Reply::Bulk);
        check_prefixes(b"*2\r\n$1\r\na\r\n*1\r\n:5\r\n", decode_resp, Reply::Other);
        check_prefixes(b"*-1\r\n", decode_resp, Reply::Nil);
    }

    #[test]
    fn resp_garbage_is_invalid() {
        for bad in [
            &b"?what\r\n"[..],
            b"+OK\n",
            b"$abc\r\n",
            b"$-2\r\n",
            b"$3\r\nabcXY",
            b":\r\n",
            b"*99999999999999999999\r\n",
        ] {
            assert!(matches!(decode_resp(bad), Decoded::Invalid(_)), "{bad:?}");
        }
    }

    #[test]
    fn resp_commands_encode_and_parse() {
        let mut out = Vec::new();
        encode_resp(&mut out, Op::Put, 123, b"v\r\nv");
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$5\r\nk:123\r\n$4\r\nv\r\nv\r\n");
        let put_len = out.len();
        encode_resp(&mut out, Op::Get, 0, b"");
        assert_eq!(&out[put_len..], b"*2\r\n$3\r\nGET\r\n$3\r\nk:0\r\n");
        for cut in 0..put_len {
            assert_eq!(decode_resp_command(&out[..cut]), Command::Incomplete);
        }
        assert_eq!(
            decode_resp_command(&out),
            Command::Whole {
                name: b"SET",
                arg: b"k:123",
                consumed: put_len
            }
        );
        assert_eq!(
            decode_resp_command(&out[put_len..]),
            Command::Whole {
                name: b"GET",
                arg: b"k:0",
                consumed: out.len() - put_len
            }
        );
        assert!(matches!(
            decode_resp_command(b"PING\r\n"),
            Command::Invalid(_)
        ));
        assert!(matches!(
            decode_resp_command(b"*1\r\n:1\r\n"),
            Command::Invalid(_)
        ));
    }

    #[test]
    fn set_then_wait_encodes_and_decodes() {
        let mut out = Vec::new();
        encode_resp(&mut out, Op::Put, 7, b"v");
        let set_len = out.len();
        encode_resp_wait(&mut out, 2, 0);
        assert_eq!(
            &out[set_len..],
            b"*3\r\n$4\r\nWAIT\r\n$1\r\n2\r\n$1\r\n0\r\n"
        );
        let mut wide = Vec::new();
        encode_resp_wait(&mut wide, 12, 1500);
        assert_eq!(wide, b"*3\r\n$4\r\nWAIT\r\n$2\r\n12\r\n$4\r\n1500\r\n");
        // A server sees two commands, the second WAIT with its replica count.
        assert!(matches!(
            decode_resp_command(&out),
            Command::Whole { name: b"SET", consumed, .. } if consumed == set_len
        ));
        assert_eq!(
            decode_resp_command(&out[set_len..]),
            Command::Whole {
                name: b"WAIT",
                arg: b"2",
                consumed: out.len() - set_len
            }
        );
        // The replies come back in order: +OK, then the replica count.
        let replies = b"+OK\r\n:2\r\n";
        let Decoded::Frame {
            reply: set,
            consumed,
            ..
        } = decode_resp(replies)
        else {
            panic!("no SET reply")
        };
        assert_eq!((set, consumed), (Reply::Simple, 5));
        check_prefixes(&replies[consumed..], decode_resp, Reply::Integer(2));
        let wait = Reply::Integer(2);
        assert_eq!(wait_outcome(set, wait, 2), Ok(()));
        assert_eq!(wait_outcome(set, Reply::Integer(3), 2), Ok(()));
        assert_eq!(
            wait_outcome(set, Reply::Integer(1), 2),
            Err(ErrorKind::WaitShort)
        );
        assert_eq!(
            wait_outcome(Reply::Error(ErrorKind::RedisError), wait, 2),
            Err(ErrorKind::RedisError)
        );
        assert_eq!(
            wait_outcome(set, Reply::Error(ErrorKind::RedisError), 2),
            Err(ErrorKind::RedisError)
        );
        assert_eq!(wait_outcome(set, Reply::Nil, 2), Err(ErrorKind::Protocol));
        assert_eq!(wait_outcome(Reply::Bulk, wait, 2), Err(ErrorKind::Protocol));
    }

    #[test]
    fn error_kinds_have_distinct_indices_and_names() {
        for (i, k) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
        // Every code of the protocol is counted under its own name.
        for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
            assert_eq!(ErrorKind::ALL[i], ErrorKind::Server(code));
            let mut frame = Vec::new();
            wire::encode_error(&mut frame, 1, code);
            assert!(matches!(
                decode_rrstore(&frame, 64),
                Decoded::Frame { reply: Reply::Error(ErrorKind::Server(c)), .. } if c == code
            ));
        }
        assert_eq!(
            ErrorKind::Server(ErrorCode::Unauthorized).name(),
            "UNAUTHORIZED"
        );
        assert_eq!(ErrorKind::Server(ErrorCode::Timeout).name(), "TIMEOUT");
        assert_eq!(ErrorKind::RedisError.name(), "redis_error");
    }
}
