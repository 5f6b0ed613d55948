//! Cluster authentication: every internal connection (worker→LB, worker→
//! worker, admin tool→LB or worker) proves, before anything else crosses it,
//! that both ends hold the cluster secret. See docs/SECURITY.md for the
//! threat model and docs/PROTOCOL.md §0 for the frames.
//!
//! The handshake, dialer D and acceptor A:
//!
//! ```text
//! D → A  AUTH_HELLO      nonce_d, id_d, addr_d
//! A → D  AUTH_CHALLENGE  nonce_a, id_a, addr_a, mac_a = HMAC(secret, "…acceptor…" | transcript)
//! D → A  AUTH_PROOF      mac_d = HMAC(secret, "…dialer…" | transcript)
//! transcript = nonce_d | nonce_a | id_d:u32 | addr_d:string | id_a:u32 | addr_a:string
//! ```
//!
//! Nonces are 32 bytes from the OS CSPRNG, so no proof can be replayed on
//! another connection. The acceptor proves first, and the two directions use
//! different labels, so a proof one side sends can never pass as the other
//! side's proof (no reflection). MACs are compared in constant time.
//!
//! Everything here is pure over bytes and messages except the CSPRNG,
//! reading the secret, and [`dial_blocking`], which drives a blocking stream.

use crate::msg::{self, Msg, MAC_LEN, NONCE_LEN};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The environment variable holding the secret.
pub const ENV_VAR: &str = "RRSTORE_SECRET";
/// A secret must have at least this many bytes (after trimming whitespace).
pub const MIN_SECRET_LEN: usize = 32;
/// And at most this many: a longer one is surely the wrong file.
pub const MAX_SECRET_LEN: usize = 4096;
/// An accepted connection that has not authenticated by then is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const LABEL_ACCEPTOR: &[u8] = b"rrstore-auth-v1 acceptor proof\0";
const LABEL_DIALER: &[u8] = b"rrstore-auth-v1 dialer proof\0";

/// The cluster secret: the bytes of the file or environment variable with
/// surrounding ASCII whitespace trimmed. Cheap to clone; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8]>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl Secret {
    /// Validates a secret: trimmed, [`MIN_SECRET_LEN`]..=[`MAX_SECRET_LEN`] bytes.
    pub fn from_bytes(raw: &[u8]) -> Result<Secret, String> {
        let s = raw.trim_ascii();
        if s.len() < MIN_SECRET_LEN {
            return Err(format!(
                "the cluster secret has {} bytes, fewer than {MIN_SECRET_LEN} (`rrstore keygen` makes a good one)",
                s.len()
            ));
        }
        if s.len() > MAX_SECRET_LEN {
            return Err(format!(
                "the cluster secret has {} bytes, more than {MAX_SECRET_LEN}: is that the right file?",
                s.len()
            ));
        }
        Ok(Secret(s.into()))
    }

    /// A fresh secret: [`keygen`]'s 64 hex characters.
    pub fn generate() -> Result<Secret, String> {
        Secret::from_bytes(keygen()?.as_bytes())
    }

    /// The secret's bytes, e.g. to hand to a child in [`ENV_VAR`].
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Reads the secret from `file` if given, else from [`ENV_VAR`].
    pub fn load(file: Option<&Path>) -> Result<Secret, String> {
        if let Some(path) = file {
            let raw = std::fs::read(path)
                .map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?;
            return Secret::from_bytes(&raw).map_err(|e| format!("{}: {e}", path.display()));
        }
        match std::env::var_os(ENV_VAR) {
            Some(v) => {
                use std::os::unix::ffi::OsStrExt;
                Secret::from_bytes(v.as_bytes()).map_err(|e| format!("{ENV_VAR}: {e}"))
            }
            None => Err(format!(
                "no cluster secret: give --secret-file PATH or set {ENV_VAR} \
                 (`export {ENV_VAR}=$(rrstore keygen)`), or --insecure to do without authentication"
            )),
        }
    }
}

/// 32 bytes from the OS CSPRNG as 64 lowercase hex characters.
pub fn keygen() -> Result<String, String> {
    let bytes = random32().map_err(|e| e.to_string())?;
    Ok(crate::client::hex(&bytes))
}

fn random32() -> Result<[u8; 32], AuthError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| AuthError::Rng(e.to_string()))?;
    Ok(b)
}

/// The client token an LB started with `--client-token-file` expects in
/// AUTH. Only an HMAC of it, under a key of this process, is kept, so that
/// checking a candidate is a constant-time MAC comparison.
pub struct ClientToken {
    key: [u8; 32],
    mac: [u8; MAC_LEN],
}

/// The client token in a file (the LB's `--client-token-file`, and the
/// same flag of `put` and `get`): its bytes with surrounding whitespace
/// trimmed; it must not be empty.
pub fn read_client_token(path: &Path) -> Result<Vec<u8>, String> {
    let raw = std::fs::read(path)
        .map_err(|e| format!("cannot read the client token {}: {e}", path.display()))?;
    let token = raw.trim_ascii();
    if token.is_empty() {
        return Err(format!("the client token in {} is empty", path.display()));
    }
    Ok(token.to_vec())
}

impl ClientToken {
    /// The token in `path`, as [`read_client_token`] reads it.
    pub fn load(path: &Path) -> Result<ClientToken, String> {
        ClientToken::new(&read_client_token(path)?).map_err(|e| e.to_string())
    }

    pub fn new(token: &[u8]) -> Result<ClientToken, AuthError> {
        let key = random32()?;
        let mac = tag(ClientToken::keyed(&key, token));
        Ok(ClientToken { key, mac })
    }

    fn keyed(key: &[u8; 32], token: &[u8]) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        m.update(token);
        m
    }

    /// Whether `candidate` is the token, in constant time.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        ClientToken::keyed(&self.key, candidate)
            .verify_slice(&self.mac)
            .is_ok()
    }
}

/// Who one end of a connection says it is: a worker's ID and registered
/// address; the LB is ID 0 with its control address; an admin tool is ID 0
/// with an empty address. Both are covered by the MACs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: u32,
    pub addr: String,
}

impl Identity {
    pub fn new(id: u32, addr: impl Into<String>) -> Identity {
        Identity {
            id,
            addr: addr.into(),
        }
    }
}

#[derive(Debug)]
pub enum AuthError {
    /// A frame other than the one the handshake expects (described).
    Unexpected(String),
    /// The other side's MAC did not verify: it does not hold our secret
    /// (or tampered with the handshake).
    BadProof,
    /// The acceptor proved the secret but is not the node we meant to reach.
    WrongPeer { expected: u32, got: u32 },
    /// The connection closed or failed during the handshake.
    Io(io::Error),
    /// The OS random number generator failed.
    Rng(String),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Unexpected(m) => write!(f, "{m} before authentication"),
            AuthError::BadProof => {
                write!(
                    f,
                    "authentication failed: the other side does not hold our cluster secret"
                )
            }
            AuthError::WrongPeer { expected, got } => write!(
                f,
                "authenticated, but the other side is node {got}, not node {expected}"
            ),
            AuthError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => write!(
                f,
                "the other side closed the connection during authentication \
                 (it has another secret, or runs --insecure, or is not an rrstore node)"
            ),
            AuthError::Io(e) => write!(f, "authentication: {e}"),
            AuthError::Rng(e) => write!(f, "no random numbers from the OS: {e}"),
        }
    }
}

impl std::error::Error for AuthError {}

/// The keyed MAC over `label | transcript`.
fn keyed(
    secret: &Secret,
    label: &[u8],
    nonce_d: &[u8; NONCE_LEN],
    nonce_a: &[u8; NONCE_LEN],
    dialer: &Identity,
    acceptor: &Identity,
) -> Hmac<Sha256> {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut m = match <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts every key length"),
    };
    m.update(label);
    m.update(nonce_d);
    m.update(nonce_a);
    for who in [dialer, acceptor] {
        m.update(&who.id.to_be_bytes());
        let addr = &who.addr.as_bytes()[..who.addr.len().min(u16::MAX as usize)];
        m.update(&(addr.len() as u16).to_be_bytes());
        m.update(addr);
    }
    m
}

fn tag(m: Hmac<Sha256>) -> [u8; MAC_LEN] {
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&m.finalize().into_bytes());
    out
}

/// A short description of an unexpected frame (at most ~100 characters
/// of its Debug form, formatted no further than that).
fn describe(m: &Msg<'_>) -> String {
    struct Capped(String);
    impl fmt::Write for Capped {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let room = 100usize.saturating_sub(self.0.len());
            if s.len() > room {
                let cut = (0..=room)
                    .rev()
                    .find(|&i| s.is_char_boundary(i))
                    .unwrap_or(0);
                self.0.push_str(&s[..cut]);
                self.0.push('…');
                return Err(fmt::Error);
            }
            self.0.push_str(s);
            Ok(())
        }
    }
    let mut c = Capped(String::new());
    let _ = fmt::write(&mut c, format_args!("{m:?}"));
    c.0
}

/// The dialer's side. Created with the AUTH_HELLO to send.
pub struct Dialer {
    secret: Secret,
    me: Identity,
    nonce: [u8; NONCE_LEN],
    expect: Option<u32>,
}

impl Dialer {
    /// `expect`: the acceptor's ID we mean to reach, if we know it.
    pub fn start(
        secret: &Secret,
        me: Identity,
        expect: Option<u32>,
    ) -> Result<(Dialer, Msg<'static>), AuthError> {
        let nonce = random32()?;
        let hello = Msg::AuthHello {
            nonce,
            id: me.id,
            addr: me.addr.clone(),
        };
        let d = Dialer {
            secret: secret.clone(),
            me,
            nonce,
            expect,
        };
        Ok((d, hello))
    }

    /// Checks the acceptor's AUTH_CHALLENGE; returns the acceptor's identity
    /// and our AUTH_PROOF.
    pub fn on_challenge(&self, m: &Msg<'_>) -> Result<(Identity, Msg<'static>), AuthError> {
        let Msg::AuthChallenge {
            nonce,
            id,
            addr,
            mac,
        } = m
        else {
            return Err(AuthError::Unexpected(describe(m)));
        };
        let acceptor = Identity::new(*id, addr.clone());
        let t = |label| keyed(&self.secret, label, &self.nonce, nonce, &self.me, &acceptor);
        t(LABEL_ACCEPTOR)
            .verify_slice(mac)
            .map_err(|_| AuthError::BadProof)?;
        if let Some(expected) = self.expect {
            if expected != acceptor.id {
                return Err(AuthError::WrongPeer {
                    expected,
                    got: acceptor.id,
                });
            }
        }
        let proof = Msg::AuthProof {
            mac: tag(t(LABEL_DIALER)),
        };
        Ok((acceptor, proof))
    }
}

enum AcceptorState {
    AwaitHello,
    AwaitProof {
        nonce_d: [u8; NONCE_LEN],
        nonce_a: [u8; NONCE_LEN],
        dialer: Identity,
    },
}

/// The acceptor's side of one connection.
pub struct Acceptor {
    secret: Secret,
    me: Identity,
    state: AcceptorState,
}

/// What an acceptor makes of a frame.
#[derive(Debug)]
pub enum Step {
    /// Send this and wait for the next frame.
    Reply(Msg<'static>),
    /// The dialer proved the secret; it is who it said.
    Done(Identity),
}

impl Acceptor {
    pub fn new(secret: &Secret, me: Identity) -> Acceptor {
        Acceptor {
            secret: secret.clone(),
            me,
            state: AcceptorState::AwaitHello,
        }
    }

    /// Feeds the next frame from the dialer. Any error means: close.
    pub fn on_msg(&mut self, m: &Msg<'_>) -> Result<Step, AuthError> {
        match (&self.state, m) {
            (AcceptorState::AwaitHello, Msg::AuthHello { nonce, id, addr }) => {
                let nonce_a = random32()?;
                let dialer = Identity::new(*id, addr.clone());
                let mac = tag(keyed(
                    &self.secret,
                    LABEL_ACCEPTOR,
                    nonce,
                    &nonce_a,
                    &dialer,
                    &self.me,
                ));
                let reply = Msg::AuthChallenge {
                    nonce: nonce_a,
                    id: self.me.id,
                    addr: self.me.addr.clone(),
                    mac,
                };
                self.state = AcceptorState::AwaitProof {
                    nonce_d: *nonce,
                    nonce_a,
                    dialer,
                };
                Ok(Step::Reply(reply))
            }
            (
                AcceptorState::AwaitProof {
                    nonce_d,
                    nonce_a,
                    dialer,
                },
                Msg::AuthProof { mac },
            ) => {
                keyed(
                    &self.secret,
                    LABEL_DIALER,
                    nonce_d,
                    nonce_a,
                    dialer,
                    &self.me,
                )
                .verify_slice(mac)
                .map_err(|_| AuthError::BadProof)?;
                Ok(Step::Done(dialer.clone()))
            }
            (_, other) => Err(AuthError::Unexpected(describe(other))),
        }
    }
}

/// A connection's handshake in an event loop: either side, and when it began.
pub struct Handshake {
    side: Side,
    pub started: Instant,
}

enum Side {
    /// Waiting for the challenge.
    Dialer(Dialer),
    Acceptor(Acceptor),
}

impl Handshake {
    /// Dials: returns the handshake and appends AUTH_HELLO to `out`.
    pub fn dial(
        secret: &Secret,
        me: Identity,
        expect: Option<u32>,
        out: &mut Vec<u8>,
    ) -> Result<Handshake, AuthError> {
        let (d, hello) = Dialer::start(secret, me, expect)?;
        msg::encode(out, &hello);
        Ok(Handshake {
            side: Side::Dialer(d),
            started: Instant::now(),
        })
    }

    pub fn accept(secret: &Secret, me: Identity) -> Handshake {
        Handshake {
            side: Side::Acceptor(Acceptor::new(secret, me)),
            started: Instant::now(),
        }
    }

    /// Feeds a frame; replies go to `out`. `Ok(Some(other side))` once
    /// authenticated; any error means: close the connection.
    pub fn on_msg(
        &mut self,
        m: &Msg<'_>,
        out: &mut Vec<u8>,
    ) -> Result<Option<Identity>, AuthError> {
        match &mut self.side {
            Side::Dialer(d) => {
                let (acceptor, proof) = d.on_challenge(m)?;
                msg::encode(out, &proof);
                Ok(Some(acceptor))
            }
            Side::Acceptor(a) => match a.on_msg(m)? {
                Step::Reply(reply) => {
                    msg::encode(out, &reply);
                    Ok(None)
                }
                Step::Done(dialer) => Ok(Some(dialer)),
            },
        }
    }

    pub fn timed_out(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.started) > HANDSHAKE_TIMEOUT
    }
}

/// Runs the dialer's side on a blocking stream (its timeouts set by the
/// caller). Bytes read past the challenge are left in `buf`.
pub fn dial_blocking<S: Read + Write>(
    stream: &mut S,
    secret: &Secret,
    me: Identity,
    expect: Option<u32>,
    buf: &mut Vec<u8>,
) -> Result<Identity, AuthError> {
    let (d, hello) = Dialer::start(secret, me, expect)?;
    let mut out = Vec::new();
    msg::encode(&mut out, &hello);
    stream.write_all(&out).map_err(AuthError::Io)?;
    let mut chunk = [0u8; 1024];
    loop {
        match msg::decode(buf, 0) {
            Ok(Some((m, consumed))) => {
                let (acceptor, proof) = d.on_challenge(&m)?;
                buf.drain(..consumed);
                out.clear();
                msg::encode(&mut out, &proof);
                stream.write_all(&out).map_err(AuthError::Io)?;
                return Ok(acceptor);
            }
            Ok(None) => {}
            Err(code) => {
                return Err(AuthError::Unexpected(format!(
                    "a bad frame ({})",
                    code.name()
                )))
            }
        }
        let n = stream.read(&mut chunk).map_err(AuthError::Io)?;
        if n == 0 {
            return Err(AuthError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests;
