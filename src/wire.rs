//! Client protocol v1: a pure codec over byte slices.
//!
//! Nothing here touches a socket, so it can be fuzzed and benchmarked alone.
//! Every frame on every rrstore port shares one header:
//!
//! ```text
//! frame = len:u32 | op:u8 | tag:u32 | body      (big-endian; len = 5 + body length)
//! ```
//!
//! [`parse_request`] checks, then parses: it reads the fixed header, rejects a
//! length above the limit *before* any memory is reserved, and returns
//! [`Parse::Incomplete`] (not an error) until the whole frame is buffered.
//! Parsed requests borrow from the input buffer, so the hot path allocates
//! nothing; encoders append to a caller-owned `Vec<u8>`.
//!
//! The internal (LB↔worker, worker↔worker, admin) messages reuse this header;
//! their bodies live in [`crate::msg`].

use byteorder::{BigEndian, ByteOrder};

/// Bytes before the body: len (4) + op (1) + tag (4).
pub const HEADER_LEN: usize = 9;
/// `len` counts op and tag as well as the body.
pub const LEN_OVERHEAD: usize = 5;
/// Default largest PUT content (1 MiB).
pub const DEFAULT_MAX_CONTENT: usize = 1 << 20;

/// Request op codes.
pub mod op {
    pub const PUT: u8 = 0x01;
    pub const GET: u8 = 0x02;
    pub const PING: u8 = 0x03;
    pub const STORED: u8 = 0x81;
    pub const VALUE: u8 = 0x82;
    pub const NOT_FOUND: u8 = 0x83;
    pub const PONG: u8 = 0x84;
    pub const AUTH: u8 = 0x04;
    pub const AUTH_OK: u8 = 0x85;
    pub const ERROR: u8 = 0xFF;
}

/// Error codes carried by an ERROR response (docs/PROTOCOL.md).
///
/// Non-exhaustive: a newer LB may send codes this build does not know
/// (the client reports those as [`crate::ClientError::UnknownCode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum ErrorCode {
    /// len < 5, or a body of the wrong size for its op. The LB closes.
    Malformed = 1,
    /// len above the limit; rejected before any allocation. The LB closes.
    TooLarge = 2,
    /// An op the protocol does not define; the connection stays open.
    UnknownOp = 3,
    /// No active worker; nothing was stored.
    Unavailable = 4,
    /// The LB is over its in-flight limit; retry later.
    Busy = 5,
    /// The LB could not confirm the write before its deadline.
    Timeout = 6,
    /// A wrong client token, or a request before AUTH on an LB that wants
    /// one. The LB closes.
    Unauthorized = 7,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 7] = [
        ErrorCode::Malformed,
        ErrorCode::TooLarge,
        ErrorCode::UnknownOp,
        ErrorCode::Unavailable,
        ErrorCode::Busy,
        ErrorCode::Timeout,
        ErrorCode::Unauthorized,
    ];

    /// The code for a number on the wire; `None` for one this build does
    /// not know.
    pub fn from_u16(code: u16) -> Option<ErrorCode> {
        Some(match code {
            1 => ErrorCode::Malformed,
            2 => ErrorCode::TooLarge,
            3 => ErrorCode::UnknownOp,
            4 => ErrorCode::Unavailable,
            5 => ErrorCode::Busy,
            6 => ErrorCode::Timeout,
            7 => ErrorCode::Unauthorized,
            _ => return None,
        })
    }

    /// The name docs/PROTOCOL.md gives it (`TOO_LARGE`, …).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "MALFORMED",
            ErrorCode::TooLarge => "TOO_LARGE",
            ErrorCode::UnknownOp => "UNKNOWN_OP",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Busy => "BUSY",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
        }
    }

    /// Whether the LB closes the connection after sending this error.
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            ErrorCode::Malformed | ErrorCode::TooLarge | ErrorCode::Unauthorized
        )
    }
}

/// A client request, borrowing its content from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    Put {
        id: u64,
        content: &'a [u8],
    },
    Get {
        id: u64,
    },
    Ping,
    /// The client token (LB `--client-token-file`); any length the frame
    /// limit allows.
    Auth {
        token: &'a [u8],
    },
}

/// A response, borrowing its content or message from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response<'a> {
    Stored { id: u64, worker: u32 },
    Value { id: u64, content: &'a [u8] },
    NotFound { id: u64 },
    Pong,
    AuthOk,
    Error { code: u16, message: &'a [u8] },
}

/// The outcome of looking at the front of a read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse<T> {
    /// Not a whole frame yet: read more. Nothing is consumed.
    Incomplete,
    /// A whole, valid frame of `consumed` bytes.
    Frame { tag: u32, msg: T, consumed: usize },
    /// A bad frame. Send ERROR `code` with `tag`; then, if `skip` is
    /// `Some(n)`, drop `n` bytes and go on, else close the connection.
    Reject {
        code: ErrorCode,
        tag: u32,
        skip: Option<usize>,
    },
}

/// The fixed header of a frame whose length has been checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub op: u8,
    pub tag: u32,
    /// Length of the body (the bytes after the header).
    pub body_len: usize,
}

/// Header check shared by every port: `Ok(None)` while fewer than
/// [`HEADER_LEN`] bytes are buffered; `Err(code)` for a length below the
/// minimum or above `max_body`. Reads no body byte and reserves nothing.
pub fn check_header(buf: &[u8], max_body: usize) -> Result<Option<Header>, ErrorCode> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = BigEndian::read_u32(&buf[..4]) as usize;
    if len < LEN_OVERHEAD {
        return Err(ErrorCode::Malformed);
    }
    let body_len = len - LEN_OVERHEAD;
    if body_len > max_body {
        return Err(ErrorCode::TooLarge);
    }
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    Ok(Some(Header {
        op: buf[4],
        tag: BigEndian::read_u32(&buf[5..9]),
        body_len,
    }))
}

/// Largest body a client request may have: id (8) + content.
pub fn max_request_body(max_content: usize) -> usize {
    8 + max_content
}

/// Parses one client request from the front of `buf`, in the order the
/// protocol fixes: length too small, length too large, unknown op, body size.
pub fn parse_request(buf: &[u8], max_content: usize) -> Parse<Request<'_>> {
    let header = match check_header(buf, max_request_body(max_content)) {
        Ok(Some(h)) => h,
        Ok(None) => return Parse::Incomplete,
        Err(code) => {
            return Parse::Reject {
                code,
                tag: 0,
                skip: None,
            }
        }
    };
    let total = HEADER_LEN + header.body_len;
    if buf.len() < total {
        return Parse::Incomplete;
    }
    let body = &buf[HEADER_LEN..total];
    let tag = header.tag;
    let msg = match header.op {
        op::PUT if body.len() >= 8 => Request::Put {
            id: BigEndian::read_u64(&body[..8]),
            content: &body[8..],
        },
        op::GET if body.len() == 8 => Request::Get {
            id: BigEndian::read_u64(body),
        },
        op::PING if body.is_empty() => Request::Ping,
        op::AUTH => Request::Auth { token: body },
        op::PUT | op::GET | op::PING => {
            return Parse::Reject {
                code: ErrorCode::Malformed,
                tag,
                skip: None,
            }
        }
        _ => {
            return Parse::Reject {
                code: ErrorCode::UnknownOp,
                tag,
                skip: Some(total),
            }
        }
    };
    Parse::Frame {
        tag,
        msg,
        consumed: total,
    }
}

/// Parses one response (the client side of the protocol). Responses are
/// trusted less than nothing: a bad one is reported, never panicked on.
pub fn parse_response(buf: &[u8], max_content: usize) -> Parse<Response<'_>> {
    let header = match check_header(buf, max_request_body(max_content).max(2 + 4096)) {
        Ok(Some(h)) => h,
        Ok(None) => return Parse::Incomplete,
        Err(code) => {
            return Parse::Reject {
                code,
                tag: 0,
                skip: None,
            }
        }
    };
    let total = HEADER_LEN + header.body_len;
    if buf.len() < total {
        return Parse::Incomplete;
    }
    let body = &buf[HEADER_LEN..total];
    let msg = match header.op {
        op::STORED if body.len() == 12 => Response::Stored {
            id: BigEndian::read_u64(&body[..8]),
            worker: BigEndian::read_u32(&body[8..]),
        },
        op::VALUE if body.len() >= 8 => Response::Value {
            id: BigEndian::read_u64(&body[..8]),
            content: &body[8..],
        },
        op::NOT_FOUND if body.len() == 8 => Response::NotFound {
            id: BigEndian::read_u64(body),
        },
        op::PONG if body.is_empty() => Response::Pong,
        op::AUTH_OK if body.is_empty() => Response::AuthOk,
        op::ERROR if body.len() >= 2 => Response::Error {
            code: BigEndian::read_u16(&body[..2]),
            message: &body[2..],
        },
        _ => {
            return Parse::Reject {
                code: ErrorCode::Malformed,
                tag: header.tag,
                skip: None,
            }
        }
    };
    Parse::Frame {
        tag: header.tag,
        msg,
        consumed: total,
    }
}

/// Appends a header for a body of `body_len` bytes.
pub fn put_header(out: &mut Vec<u8>, op: u8, tag: u32, body_len: usize) {
    let mut h = [0u8; HEADER_LEN];
    BigEndian::write_u32(&mut h[..4], (LEN_OVERHEAD + body_len) as u32);
    h[4] = op;
    BigEndian::write_u32(&mut h[5..9], tag);
    out.extend_from_slice(&h);
}

pub fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}
pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn encode_request(out: &mut Vec<u8>, tag: u32, req: &Request<'_>) {
    match *req {
        Request::Put { id, content } => {
            put_header(out, op::PUT, tag, 8 + content.len());
            put_u64(out, id);
            out.extend_from_slice(content);
        }
        Request::Get { id } => {
            put_header(out, op::GET, tag, 8);
            put_u64(out, id);
        }
        Request::Ping => put_header(out, op::PING, tag, 0),
        Request::Auth { token } => {
            put_header(out, op::AUTH, tag, token.len());
            out.extend_from_slice(token);
        }
    }
}

pub fn encode_response(out: &mut Vec<u8>, tag: u32, resp: &Response<'_>) {
    match *resp {
        Response::Stored { id, worker } => {
            put_header(out, op::STORED, tag, 12);
            put_u64(out, id);
            put_u32(out, worker);
        }
        Response::Value { id, content } => {
            put_header(out, op::VALUE, tag, 8 + content.len());
            put_u64(out, id);
            out.extend_from_slice(content);
        }
        Response::NotFound { id } => {
            put_header(out, op::NOT_FOUND, tag, 8);
            put_u64(out, id);
        }
        Response::Pong => put_header(out, op::PONG, tag, 0),
        Response::AuthOk => put_header(out, op::AUTH_OK, tag, 0),
        Response::Error { code, message } => {
            put_header(out, op::ERROR, tag, 2 + message.len());
            put_u16(out, code);
            out.extend_from_slice(message);
        }
    }
}

/// Appends an ERROR frame with the code's fixed, documented message.
pub fn encode_error(out: &mut Vec<u8>, tag: u32, code: ErrorCode) {
    let message: &[u8] = match code {
        ErrorCode::Malformed => b"malformed frame",
        ErrorCode::TooLarge => b"frame larger than the content limit",
        ErrorCode::UnknownOp => b"unknown op",
        ErrorCode::Unavailable => b"no active worker",
        ErrorCode::Busy => b"too many requests in flight, retry later",
        ErrorCode::Timeout => {
            b"write not confirmed before the deadline; it may or may not be stored"
        }
        ErrorCode::Unauthorized => b"unauthorized: AUTH with the client token first",
    };
    encode_response(
        out,
        tag,
        &Response::Error {
            code: code as u16,
            message,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024;

    fn frame(op: u8, tag: u32, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        put_header(&mut v, op, tag, body.len());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn requests_round_trip() {
        let reqs = [
            Request::Put {
                id: 7,
                content: b"hello",
            },
            Request::Put {
                id: u64::MAX,
                content: b"",
            },
            Request::Get { id: 42 },
            Request::Ping,
            Request::Auth { token: b"s3cret" },
            Request::Auth { token: b"" },
        ];
        for (i, req) in reqs.iter().enumerate() {
            let mut buf = Vec::new();
            encode_request(&mut buf, i as u32 + 100, req);
            // Every strict prefix is incomplete, never an error.
            for cut in 0..buf.len() {
                assert_eq!(parse_request(&buf[..cut], MAX), Parse::Incomplete);
            }
            buf.extend_from_slice(b"trailing");
            match parse_request(&buf, MAX) {
                Parse::Frame { tag, msg, consumed } => {
                    assert_eq!(tag, i as u32 + 100);
                    assert_eq!(&msg, req);
                    assert_eq!(consumed, buf.len() - 8);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn responses_round_trip() {
        let resps = [
            Response::Stored { id: 1, worker: 3 },
            Response::Value {
                id: 2,
                content: b"abc",
            },
            Response::NotFound { id: 9 },
            Response::Pong,
            Response::Error {
                code: 5,
                message: b"busy",
            },
        ];
        for resp in resps {
            let mut buf = Vec::new();
            encode_response(&mut buf, 77, &resp);
            match parse_response(&buf, MAX) {
                Parse::Frame { tag, msg, consumed } => {
                    assert_eq!((tag, msg, consumed), (77, resp, buf.len()));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn length_below_minimum_is_malformed_with_tag_zero() {
        for len in 0..5u32 {
            let buf = len.to_be_bytes();
            assert_eq!(
                parse_request(&buf, MAX),
                Parse::Reject {
                    code: ErrorCode::Malformed,
                    tag: 0,
                    skip: None
                }
            );
        }
    }

    #[test]
    fn oversize_is_rejected_from_the_length_alone() {
        let len = (LEN_OVERHEAD + 8 + MAX + 1) as u32;
        assert_eq!(
            parse_request(&len.to_be_bytes(), MAX),
            Parse::Reject {
                code: ErrorCode::TooLarge,
                tag: 0,
                skip: None
            }
        );
        // Exactly at the limit is fine (and incomplete until the body is here).
        let len = (LEN_OVERHEAD + 8 + MAX) as u32;
        assert_eq!(parse_request(&len.to_be_bytes(), MAX), Parse::Incomplete);
        assert_eq!(
            parse_request(&u32::MAX.to_be_bytes(), MAX),
            Parse::Reject {
                code: ErrorCode::TooLarge,
                tag: 0,
                skip: None
            }
        );
    }

    #[test]
    fn unknown_op_is_skipped() {
        let buf = frame(0x42, 9, b"whatever");
        assert_eq!(
            parse_request(&buf, MAX),
            Parse::Reject {
                code: ErrorCode::UnknownOp,
                tag: 9,
                skip: Some(buf.len())
            }
        );
        // Unknown op checked before body size, and only once whole.
        assert_eq!(parse_request(&buf[..10], MAX), Parse::Incomplete);
    }

    #[test]
    fn wrong_body_sizes_are_malformed_with_the_tag() {
        let cases = [
            frame(op::PUT, 1, b"1234567"),
            frame(op::GET, 2, b"123456789"),
            frame(op::GET, 3, b""),
            frame(op::PING, 4, b"x"),
        ];
        for (i, buf) in cases.iter().enumerate() {
            assert_eq!(
                parse_request(buf, MAX),
                Parse::Reject {
                    code: ErrorCode::Malformed,
                    tag: i as u32 + 1,
                    skip: None
                }
            );
        }
    }

    #[test]
    fn error_codes_round_trip() {
        for (i, &c) in ErrorCode::ALL.iter().enumerate() {
            let code = i as u16 + 1;
            assert_eq!(ErrorCode::from_u16(code), Some(c));
            assert_eq!(c as u16, code);
            let mut buf = Vec::new();
            encode_error(&mut buf, 5, c);
            assert!(matches!(
                parse_response(&buf, MAX),
                Parse::Frame { tag: 5, msg: Response::Error { code: got, .. }, .. } if got == code
            ));
        }
        assert_eq!(ErrorCode::from_u16(0), None);
        assert_eq!(ErrorCode::from_u16(ErrorCode::ALL.len() as u16 + 1), None);
    }
}
