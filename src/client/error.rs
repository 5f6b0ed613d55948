//! [`ClientError`]: every way a client call can fail, typed, so that a
//! caller can `match` on each ERROR code of the protocol and tell a server
//! error from a broken connection, a bad frame or a timeout.

use crate::auth::AuthError;
use crate::wire::ErrorCode;
use std::fmt;
use std::io;

/// Why a call failed.
///
/// A GET of an id that does not exist is not an error: it is `Ok(None)`
/// from [`crate::Client::get`] (or [`crate::Reply::NotFound`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The LB answered ERROR with `code`. [`ErrorCode::closes_connection`]
    /// says whether it then closed the connection; BUSY, UNAVAILABLE and
    /// TIMEOUT leave it open (after TIMEOUT a PUT may or may not be stored).
    Server { code: ErrorCode, message: String },
    /// The LB answered ERROR with a code this build does not know (a newer
    /// LB).
    UnknownCode { code: u16, message: String },
    /// No answer within the client's timeout (see
    /// [`crate::Client::connect_timeout`]): the request may or may not have
    /// been applied. Not to be confused with the LB's own TIMEOUT code.
    TimedOut,
    /// The connection failed; `UnexpectedEof` if the LB closed it.
    Io(io::Error),
    /// The LB sent something this client cannot make sense of: a bad frame,
    /// a reply of the wrong kind, or an answer to a tag not in flight.
    Protocol(String),
    /// The cluster handshake failed (admin connections only; a wrong client
    /// token is `Server` with [`ErrorCode::Unauthorized`]).
    Auth(AuthError),
}

impl ClientError {
    /// The typed error for an ERROR frame's code and message.
    pub(crate) fn from_wire(code: u16, message: &[u8]) -> ClientError {
        let message = String::from_utf8_lossy(message).into_owned();
        match ErrorCode::from_u16(code) {
            Some(code) => ClientError::Server { code, message },
            None => ClientError::UnknownCode { code, message },
        }
    }

    /// The ERROR code, if the LB sent a known one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The same error again, for every request a failed connection leaves
    /// unanswered (an `io::Error` keeps its kind and text).
    pub(crate) fn duplicate(&self) -> ClientError {
        match self {
            ClientError::Server { code, message } => ClientError::Server {
                code: *code,
                message: message.clone(),
            },
            ClientError::UnknownCode { code, message } => ClientError::UnknownCode {
                code: *code,
                message: message.clone(),
            },
            ClientError::TimedOut => ClientError::TimedOut,
            ClientError::Io(e) => ClientError::Io(io::Error::new(e.kind(), e.to_string())),
            ClientError::Protocol(m) => ClientError::Protocol(m.clone()),
            ClientError::Auth(e) => ClientError::Protocol(e.to_string()),
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Server { code, message } => {
                write!(f, "{} ({}): {message}", code.name(), *code as u16)
            }
            ClientError::UnknownCode { code, message } => write!(f, "ERROR {code}: {message}"),
            ClientError::TimedOut => write!(f, "no answer within the client's timeout"),
            ClientError::Io(e) => write!(f, "{e}"),
            ClientError::Protocol(m) => write!(f, "protocol error: {m}"),
            ClientError::Auth(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Io(e) => Some(e),
            ClientError::Auth(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for ClientError {
    /// A socket timeout (`WouldBlock` or `TimedOut` from a blocking socket
    /// with a timeout set) is [`ClientError::TimedOut`]; the rest is `Io`.
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::TimedOut,
            _ => ClientError::Io(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_code_is_typed_and_the_rest_are_unknown() {
        for code in ErrorCode::ALL {
            match ClientError::from_wire(code as u16, b"why") {
                ClientError::Server { code: got, message } => {
                    assert_eq!((got, message.as_str()), (code, "why"))
                }
                other => panic!("{code:?}: {other:?}"),
            }
        }
        for raw in [0, ErrorCode::ALL.len() as u16 + 1, u16::MAX] {
            assert!(matches!(
                ClientError::from_wire(raw, b"\xff"),
                ClientError::UnknownCode { code, ref message } if code == raw && message == "\u{fffd}"
            ));
        }
    }

    #[test]
    fn socket_timeouts_are_timed_out_and_duplicates_keep_the_kind() {
        for kind in [io::ErrorKind::WouldBlock, io::ErrorKind::TimedOut] {
            assert!(matches!(
                ClientError::from(io::Error::from(kind)),
                ClientError::TimedOut
            ));
        }
        let eof = ClientError::from(io::Error::from(io::ErrorKind::UnexpectedEof));
        assert!(
            matches!(eof.duplicate(), ClientError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof)
        );
        let busy = ClientError::from_wire(ErrorCode::Busy as u16, b"retry");
        assert_eq!(busy.duplicate().code(), Some(ErrorCode::Busy));
        assert_eq!(busy.to_string(), "BUSY (5): retry");
    }
}
