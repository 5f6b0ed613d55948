//! Internal messages: LB↔worker, worker↔worker and admin. A pure codec.
//!
//! Every message uses the frame header of [`crate::wire`]
//! (`len:u32 | op:u8 | tag:u32 | body`); the tag is 0 unless noted. Hot
//! messages (`Put`, `Get`, `Stored`, `Value`, `Record`, `PeerAck`) borrow
//! their bytes from the read buffer; cold ones (membership, admin) own theirs.
//! A decoder never panics on hostile bytes: every read is bounds-checked and
//! a short or overlong body is [`ErrorCode::Malformed`].

use crate::wire::{self, check_header, put_header, put_u16, put_u32, put_u64, ErrorCode};
use byteorder::{BigEndian, ByteOrder};

/// A version vector: `(origin, seq)` pairs, sorted by origin, one per origin.
pub type Vector = Vec<(u32, u64)>;

/// A vector's entries as a frame carries them (`origin:u32 seq:u64`,
/// big-endian, 12 bytes each), every seq at most [`MAX_SEQ`]: a GET's
/// `min` is read in place, on the hot path, and copied only when the GET
/// has to wait ([`VectorRef::to_vec`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VectorRef<'a> {
    entries: &'a [u8],
}

impl<'a> VectorRef<'a> {
    /// `entries` as a vector, or `None` unless it is whole entries with
    /// every seq in range ([`vector_entries`] writes them).
    pub fn new(entries: &'a [u8]) -> Option<VectorRef<'a>> {
        let v = VectorRef { entries };
        let whole = entries.len().is_multiple_of(12);
        (whole && v.iter().all(|(_, seq)| seq <= MAX_SEQ)).then_some(v)
    }

    pub fn len(&self) -> usize {
        self.entries.len() / 12
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, u64)> + Clone + 'a {
        self.entries
            .chunks_exact(12)
            .map(|e| (BigEndian::read_u32(&e[..4]), BigEndian::read_u64(&e[4..])))
    }

    pub fn to_vec(&self) -> Vector {
        self.iter().collect()
    }
}

impl std::fmt::Debug for VectorRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The bytes of `v`'s entries as a frame carries them: what
/// [`VectorRef::new`] reads.
pub fn vector_entries(v: &[(u32, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 * v.len());
    for &(origin, seq) in v {
        put_u32(&mut out, origin);
        put_u64(&mut out, seq);
    }
    out
}

/// Room for everything but the content in the largest internal message.
pub const MAX_OVERHEAD: usize = 64 * 1024;

/// The largest record version: 56 bits. Versions are the LB's clock in
/// µs since 1970 (see `lb.rs`), which reaches this in the year 4253; a
/// worker's store keeps a version in 7 bytes (see `store.rs`). A frame
/// carrying a larger one is [`ErrorCode::Malformed`].
pub const MAX_VERSION: u64 = (1 << 56) - 1;

/// The largest seq: 48 bits. A seq counts one origin's records, and an
/// origin is one worker process (see [`Msg::Register`]): 2.8 * 10^14
/// records, 89 years at 100,000 a second. A store keeps a seq in 6 bytes;
/// a frame carrying a larger one anywhere (a record, a vector, an ack, a
/// marker) is [`ErrorCode::Malformed`], so no peer can push a worker's own
/// seq past it, and a worker whose own seq would pass it stops
/// (`Replica::on_put`).
pub const MAX_SEQ: u64 = (1 << 48) - 1;

/// Whether a record's `version` and `seq` are within [`MAX_VERSION`] and
/// [`MAX_SEQ`], the only ones a store can hold.
pub fn stamp_fits(version: u64, seq: u64) -> bool {
    version <= MAX_VERSION && seq <= MAX_SEQ
}

/// How often a worker sends [`Msg::Heartbeat`] to the LB.
pub const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

pub mod op {
    pub const REGISTER: u8 = 0x10;
    pub const WELCOME: u8 = 0x11;
    pub const MEMBERS: u8 = 0x12;
    pub const READY: u8 = 0x13;
    pub const DEREGISTER: u8 = 0x14;
    pub const DEREGISTER_OK: u8 = 0x15;
    pub const REPORT: u8 = 0x16;
    pub const REFUSED: u8 = 0x17;
    pub const BEHIND: u8 = 0x18;
    pub const HEARTBEAT: u8 = 0x19;
    pub const PUT: u8 = 0x20;
    pub const GET: u8 = 0x21;
    pub const STORED: u8 = 0x22;
    pub const VALUE: u8 = 0x23;
    pub const PEER_HELLO: u8 = 0x30;
    pub const RECORD: u8 = 0x31;
    pub const PEER_ACK: u8 = 0x32;
    pub const CATCHUP_REQUEST: u8 = 0x33;
    pub const CATCHUP_DONE: u8 = 0x34;
    pub const PEER_FLUSH: u8 = 0x35;
    pub const DIGEST_REQUEST: u8 = 0x40;
    pub const DIGEST: u8 = 0x41;
    pub const DUMP_REQUEST: u8 = 0x42;
    pub const DUMP_ENTRY: u8 = 0x43;
    pub const DUMP_END: u8 = 0x44;
    pub const MEMBERS_REQUEST: u8 = 0x48;
    pub const STATS_REQUEST: u8 = 0x4A;
    pub const STATS: u8 = 0x4B;
    pub const AUTH_HELLO: u8 = 0x50;
    pub const AUTH_CHALLENGE: u8 = 0x51;
    pub const AUTH_PROOF: u8 = 0x52;
}

/// Length of a handshake nonce and of an HMAC-SHA256 tag (see `auth.rs`).
pub const NONCE_LEN: usize = 32;
pub const MAC_LEN: usize = 32;

/// A worker's place in the membership, as the LB sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Registered, catching up; not in the round robin yet.
    Joining = 1,
    /// In the round robin.
    Active = 2,
    /// Lost without deregistering; kept in the map, out of the round robin.
    Inactive = 3,
    /// Deregistered, finishing its in-flight work before it exits.
    Leaving = 4,
}

impl Status {
    fn from_u8(v: u8) -> Option<Status> {
        Some(match v {
            1 => Status::Joining,
            2 => Status::Active,
            3 => Status::Inactive,
            4 => Status::Leaving,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Status::Joining => "joining",
            Status::Active => "active",
            Status::Inactive => "inactive",
            Status::Leaving => "leaving",
        }
    }
}

/// One row of the LB's worker map, as sent to workers and admin tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u32,
    /// The origin its current process numbers its records under: given by
    /// the LB at each process start, never to two processes (see
    /// [`Msg::Welcome`]).
    pub origin: u32,
    pub status: Status,
    pub records: u64,
    /// `ip:port` where the worker listens for peers and admin tools.
    pub addr: String,
}

/// A record as it travels between workers: identity `(origin, seq)`, the
/// LB-assigned `version` that orders writes of the same `id`, and content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub origin: u32,
    pub seq: u64,
    pub version: u64,
    pub id: u64,
    pub content: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg<'a> {
    /// W→LB: first frame on a worker's control connection. `id` 0 asks the
    /// LB to assign one; `origin` 0 (a process that just started) asks for a
    /// fresh origin, and a process registering again sends the one it has.
    /// `max_origin` is the highest origin the worker holds records of, so
    /// an LB that lost its saved counter never gives out one in use;
    /// `max_version` lets a restarted LB resume its clock.
    Register {
        id: u32,
        origin: u32,
        max_origin: u32,
        max_version: u64,
        addr: String,
    },
    /// LB→W: registration accepted under `id`; the current membership;
    /// the LB's content limit (the worker accepts at least that); and the
    /// origin this process numbers its records under: drawn from the same
    /// never-reused counter as worker IDs, so a restarted process whose log
    /// lost its newest records can never give a new record the identity
    /// `(origin, seq)` of one that still exists elsewhere. `ack_all`: send STORED only once every active peer has acknowledged
    /// the record (`--ack all`), not as soon as it is logged here.
    Welcome {
        id: u32,
        members: Vec<Member>,
        max_content: u64,
        origin: u32,
        ack_all: bool,
    },
    /// LB→W on every membership change; also the reply to `MembersRequest`.
    Members {
        members: Vec<Member>,
    },
    /// W→LB: the joiner believes it holds everything: its vector, and the
    /// marker each peer announced when it began streaming live records.
    Ready {
        vector: Vector,
        markers: Vector,
    },
    /// W→LB: take me out of the round robin.
    Deregister,
    /// LB→W: nothing more will be sent to you on this connection.
    DeregisterOk,
    /// W→LB, when changed, at most once per loop turn. `digest` is the
    /// store's (as in [`Msg::Digest`]), so the LB's status page can tell
    /// whether the workers agree without asking each one.
    Report {
        records: u64,
        max_version: u64,
        digest: [u8; 16],
        vector: Vector,
    },
    /// Both ways on the LB link, every [`HEARTBEAT_EVERY`]: the sender's
    /// loop is alive. The LB declares a worker dead that has sent nothing
    /// for its `--worker-timeout-ms`, even if its connection stays open (a
    /// paused or wedged process); a worker drops an LB connection silent
    /// for 1.5 s and registers again.
    Heartbeat,
    /// LB→W: a joiner's `Ready` was refused because it lacks acknowledged
    /// records of workers that have left; `floor` is what it must cover.
    Behind {
        floor: Vector,
    },
    /// Either way: the peer refuses this connection; it closes next.
    Refused {
        reason: String,
    },
    /// LB→W: store this record. `req` is never reused by the LB.
    Put {
        req: u64,
        version: u64,
        id: u64,
        content: &'a [u8],
    },
    /// LB→W: read `id` once the worker's vector covers `min`.
    Get {
        req: u64,
        id: u64,
        min: VectorRef<'a>,
    },
    /// W→LB: `req` is stored as record `(worker, seq)`.
    Stored {
        req: u64,
        seq: u64,
    },
    /// W→LB: the answer to a Get; `content` is None for not found.
    Value {
        req: u64,
        content: Option<&'a [u8]>,
    },
    /// Dialer→acceptor: first frame on a peer link. The dialer streams every
    /// record of its own (of origin `origin`) with seq > `marker` on this
    /// link from now on.
    PeerHello {
        id: u32,
        origin: u32,
        marker: u64,
        /// The dialer's registered address: tells a restarted process from
        /// its predecessor.
        addr: String,
    },
    /// A record: live (dialer→acceptor) or catch-up (acceptor→dialer).
    Record(RecordRef<'a>),
    /// Acceptor→dialer: the acceptor's `V[dialer]`, cumulative.
    PeerAck {
        seq: u64,
    },
    /// Acceptor→dialer: a GET waits for the dialer's records, so send what
    /// `--peer-flush-ms` holds back now, not when the interval ends.
    PeerFlush,
    /// Dialer→acceptor: send me what you hold beyond `vector`.
    CatchupRequest {
        vector: Vector,
    },
    /// Acceptor→dialer: catch-up complete; you now hold everything `vector` covers.
    CatchupDone {
        vector: Vector,
    },
    DigestRequest,
    /// The store's order-independent digest (see `store.rs`).
    Digest {
        id: u32,
        records: u64,
        digest: [u8; 16],
        vector: Vector,
    },
    DumpRequest,
    DumpEntry {
        id: u64,
        content: &'a [u8],
    },
    DumpEnd,
    MembersRequest,
    StatsRequest,
    Stats {
        pairs: Vec<(String, u64)>,
    },
    /// Dialer→acceptor, first frame of every internal connection when the
    /// cluster has a secret: the dialer's nonce and who it says it is
    /// (`id` 0 and an empty `addr` for admin tools).
    AuthHello {
        nonce: [u8; NONCE_LEN],
        id: u32,
        addr: String,
    },
    /// Acceptor→dialer: the acceptor's nonce and identity, and its proof
    /// that it holds the secret (see `auth.rs` for what the MAC covers).
    AuthChallenge {
        nonce: [u8; NONCE_LEN],
        id: u32,
        addr: String,
        mac: [u8; MAC_LEN],
    },
    /// Dialer→acceptor: the dialer's proof. Only after it is verified does
    /// the acceptor read any other frame.
    AuthProof {
        mac: [u8; MAC_LEN],
    },
}

/// Decodes one internal message from the front of `buf`: `Ok(None)` while
/// incomplete, `Ok(Some((msg, consumed)))`, or an error for a bad frame, after
/// which the connection must be closed.
pub fn decode(buf: &[u8], max_content: usize) -> Result<Option<(Msg<'_>, usize)>, ErrorCode> {
    let header = match check_header(buf, max_content + MAX_OVERHEAD)? {
        Some(h) => h,
        None => return Ok(None),
    };
    let total = wire::HEADER_LEN + header.body_len;
    if buf.len() < total {
        return Ok(None);
    }
    let mut r = Reader {
        buf: &buf[wire::HEADER_LEN..total],
    };
    let msg = match header.op {
        op::REGISTER => Msg::Register {
            id: r.u32()?,
            origin: r.u32()?,
            max_origin: r.u32()?,
            max_version: r.version()?,
            addr: r.string()?,
        },
        op::WELCOME => Msg::Welcome {
            id: r.u32()?,
            members: r.members()?,
            max_content: r.u64()?,
            origin: r.u32()?,
            ack_all: r.u8()? != 0,
        },
        op::MEMBERS => Msg::Members {
            members: r.members()?,
        },
        op::READY => Msg::Ready {
            vector: r.vector()?,
            markers: r.vector()?,
        },
        op::DEREGISTER => Msg::Deregister,
        op::DEREGISTER_OK => Msg::DeregisterOk,
        op::HEARTBEAT => Msg::Heartbeat,
        op::REPORT => Msg::Report {
            records: r.u64()?,
            max_version: r.version()?,
            digest: r.array16()?,
            vector: r.vector()?,
        },
        op::BEHIND => Msg::Behind { floor: r.vector()? },
        op::REFUSED => Msg::Refused {
            reason: r.string()?,
        },
        op::PUT => Msg::Put {
            req: r.u64()?,
            version: r.version()?,
            id: r.u64()?,
            content: r.rest(),
        },
        op::GET => Msg::Get {
            req: r.u64()?,
            id: r.u64()?,
            min: r.vector_ref()?,
        },
        op::STORED => Msg::Stored {
            req: r.u64()?,
            seq: r.seq()?,
        },
        op::VALUE => {
            let req = r.u64()?;
            let found = r.u8()?;
            Msg::Value {
                req,
                content: (found != 0).then(|| r.rest()),
            }
        }
        op::PEER_HELLO => Msg::PeerHello {
            id: r.u32()?,
            origin: r.u32()?,
            marker: r.seq()?,
            addr: r.string()?,
        },
        op::RECORD => Msg::Record(RecordRef {
            origin: r.u32()?,
            seq: r.seq()?,
            version: r.version()?,
            id: r.u64()?,
            content: r.rest(),
        }),
        op::PEER_ACK => Msg::PeerAck { seq: r.seq()? },
        op::PEER_FLUSH => Msg::PeerFlush,
        op::CATCHUP_REQUEST => Msg::CatchupRequest {
            vector: r.vector()?,
        },
        op::CATCHUP_DONE => Msg::CatchupDone {
            vector: r.vector()?,
        },
        op::DIGEST_REQUEST => Msg::DigestRequest,
        op::DIGEST => Msg::Digest {
            id: r.u32()?,
            records: r.u64()?,
            digest: r.array16()?,
            vector: r.vector()?,
        },
        op::DUMP_REQUEST => Msg::DumpRequest,
        op::DUMP_ENTRY => Msg::DumpEntry {
            id: r.u64()?,
            content: r.rest(),
        },
        op::DUMP_END => Msg::DumpEnd,
        op::MEMBERS_REQUEST => Msg::MembersRequest,
        op::STATS_REQUEST => Msg::StatsRequest,
        op::STATS => {
            let n = r.u16()? as usize;
            let mut pairs = Vec::with_capacity(n.min(256));
            for _ in 0..n {
                pairs.push((r.string()?, r.u64()?));
            }
            Msg::Stats { pairs }
        }
        op::AUTH_HELLO => Msg::AuthHello {
            nonce: r.array32()?,
            id: r.u32()?,
            addr: r.string()?,
        },
        op::AUTH_CHALLENGE => Msg::AuthChallenge {
            nonce: r.array32()?,
            id: r.u32()?,
            addr: r.string()?,
            mac: r.array32()?,
        },
        op::AUTH_PROOF => Msg::AuthProof { mac: r.array32()? },
        _ => return Err(ErrorCode::UnknownOp),
    };
    if !r.buf.is_empty() {
        return Err(ErrorCode::Malformed);
    }
    Ok(Some((msg, total)))
}

/// Appends `msg` as one frame to `out`.
pub fn encode(out: &mut Vec<u8>, msg: &Msg<'_>) {
    let start = out.len();
    put_header(out, 0, 0, 0);
    let op = match msg {
        Msg::Register {
            id,
            origin,
            max_origin,
            max_version,
            addr,
        } => {
            put_u32(out, *id);
            put_u32(out, *origin);
            put_u32(out, *max_origin);
            put_u64(out, *max_version);
            put_string(out, addr);
            op::REGISTER
        }
        Msg::Welcome {
            id,
            members,
            max_content,
            origin,
            ack_all,
        } => {
            put_u32(out, *id);
            put_members(out, members);
            put_u64(out, *max_content);
            put_u32(out, *origin);
            out.push(u8::from(*ack_all));
            op::WELCOME
        }
        Msg::Members { members } => {
            put_members(out, members);
            op::MEMBERS
        }
        Msg::Ready { vector, markers } => {
            put_vector(out, vector);
            put_vector(out, markers);
            op::READY
        }
        Msg::Deregister => op::DEREGISTER,
        Msg::DeregisterOk => op::DEREGISTER_OK,
        Msg::Heartbeat => op::HEARTBEAT,
        Msg::Report {
            records,
            max_version,
            digest,
            vector,
        } => {
            put_u64(out, *records);
            put_u64(out, *max_version);
            out.extend_from_slice(digest);
            put_vector(out, vector);
            op::REPORT
        }
        Msg::Behind { floor } => {
            put_vector(out, floor);
            op::BEHIND
        }
        Msg::Refused { reason } => {
            put_string(out, reason);
            op::REFUSED
        }
        Msg::Put {
            req,
            version,
            id,
            content,
        } => {
            put_u64(out, *req);
            put_u64(out, *version);
            put_u64(out, *id);
            out.extend_from_slice(content);
            op::PUT
        }
        Msg::Get { req, id, min } => {
            put_u64(out, *req);
            put_u64(out, *id);
            put_u16(out, min.len() as u16);
            out.extend_from_slice(min.entries);
            op::GET
        }
        Msg::Stored { req, seq } => {
            put_u64(out, *req);
            put_u64(out, *seq);
            op::STORED
        }
        Msg::Value { req, content } => {
            put_u64(out, *req);
            match content {
                Some(c) => {
                    out.push(1);
                    out.extend_from_slice(c);
                }
                None => out.push(0),
            }
            op::VALUE
        }
        Msg::PeerHello {
            id,
            origin,
            marker,
            addr,
        } => {
            put_u32(out, *id);
            put_u32(out, *origin);
            put_u64(out, *marker);
            put_string(out, addr);
            op::PEER_HELLO
        }
        Msg::Record(r) => {
            put_record_body(out, r);
            op::RECORD
        }
        Msg::PeerAck { seq } => {
            put_u64(out, *seq);
            op::PEER_ACK
        }
        Msg::PeerFlush => op::PEER_FLUSH,
        Msg::CatchupRequest { vector } => {
            put_vector(out, vector);
            op::CATCHUP_REQUEST
        }
        Msg::CatchupDone { vector } => {
            put_vector(out, vector);
            op::CATCHUP_DONE
        }
        Msg::DigestRequest => op::DIGEST_REQUEST,
        Msg::Digest {
            id,
            records,
            digest,
            vector,
        } => {
            put_u32(out, *id);
            put_u64(out, *records);
            out.extend_from_slice(digest);
            put_vector(out, vector);
            op::DIGEST
        }
        Msg::DumpRequest => op::DUMP_REQUEST,
        Msg::DumpEntry { id, content } => {
            put_u64(out, *id);
            out.extend_from_slice(content);
            op::DUMP_ENTRY
        }
        Msg::DumpEnd => op::DUMP_END,
        Msg::MembersRequest => op::MEMBERS_REQUEST,
        Msg::StatsRequest => op::STATS_REQUEST,
        Msg::Stats { pairs } => {
            put_u16(out, pairs.len() as u16);
            for (name, value) in pairs {
                put_string(out, name);
                put_u64(out, *value);
            }
            op::STATS
        }
        Msg::AuthHello { nonce, id, addr } => {
            out.extend_from_slice(nonce);
            put_u32(out, *id);
            put_string(out, addr);
            op::AUTH_HELLO
        }
        Msg::AuthChallenge {
            nonce,
            id,
            addr,
            mac,
        } => {
            out.extend_from_slice(nonce);
            put_u32(out, *id);
            put_string(out, addr);
            out.extend_from_slice(mac);
            op::AUTH_CHALLENGE
        }
        Msg::AuthProof { mac } => {
            out.extend_from_slice(mac);
            op::AUTH_PROOF
        }
    };
    let body_len = out.len() - start - wire::HEADER_LEN;
    let len = (wire::LEN_OVERHEAD + body_len) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    out[start + 4] = op;
}

/// Appends a GET frame whose `min` holds the entries `min` yields (sorted
/// by origin, at most 65,535 are taken), without building a [`Msg`] or a
/// vector: the LB's hot path. The bytes are those [`encode`] writes for
/// `Msg::Get` with the same entries.
pub fn encode_get(out: &mut Vec<u8>, req: u64, id: u64, min: impl Iterator<Item = (u32, u64)>) {
    let start = out.len();
    put_header(out, op::GET, 0, 0);
    put_u64(out, req);
    put_u64(out, id);
    let count_at = out.len();
    put_u16(out, 0);
    let mut count: u16 = 0;
    for (origin, seq) in min.take(u16::MAX as usize) {
        put_u32(out, origin);
        put_u64(out, seq);
        count += 1;
    }
    out[count_at..count_at + 2].copy_from_slice(&count.to_be_bytes());
    let body_len = out.len() - start - wire::HEADER_LEN;
    let len = (wire::LEN_OVERHEAD + body_len) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends a Record frame without building a [`Msg`] (the replication hot path).
pub fn encode_record(out: &mut Vec<u8>, r: &RecordRef<'_>) {
    put_header(out, op::RECORD, 0, 28 + r.content.len());
    put_record_body(out, r);
}

fn put_record_body(out: &mut Vec<u8>, r: &RecordRef<'_>) {
    put_u32(out, r.origin);
    put_u64(out, r.seq);
    put_u64(out, r.version);
    put_u64(out, r.id);
    out.extend_from_slice(r.content);
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    put_u16(out, bytes.len() as u16);
    out.extend_from_slice(bytes);
}

fn put_vector(out: &mut Vec<u8>, v: &[(u32, u64)]) {
    put_u16(out, v.len() as u16);
    for &(origin, seq) in v {
        put_u32(out, origin);
        put_u64(out, seq);
    }
}

fn put_members(out: &mut Vec<u8>, members: &[Member]) {
    put_u16(out, members.len() as u16);
    for m in members {
        put_u32(out, m.id);
        put_u32(out, m.origin);
        out.push(m.status as u8);
        put_u64(out, m.records);
        put_string(out, &m.addr);
    }
}

/// A bounds-checked cursor over a body.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ErrorCode> {
        if self.buf.len() < n {
            return Err(ErrorCode::Malformed);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, ErrorCode> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ErrorCode> {
        Ok(BigEndian::read_u16(self.take(2)?))
    }
    fn u32(&mut self) -> Result<u32, ErrorCode> {
        Ok(BigEndian::read_u32(self.take(4)?))
    }
    fn u64(&mut self) -> Result<u64, ErrorCode> {
        Ok(BigEndian::read_u64(self.take(8)?))
    }
    /// A record version, at most [`MAX_VERSION`].
    fn version(&mut self) -> Result<u64, ErrorCode> {
        let v = self.u64()?;
        if v > MAX_VERSION {
            return Err(ErrorCode::Malformed);
        }
        Ok(v)
    }
    /// A record seq, at most [`MAX_SEQ`].
    fn seq(&mut self) -> Result<u64, ErrorCode> {
        let s = self.u64()?;
        if s > MAX_SEQ {
            return Err(ErrorCode::Malformed);
        }
        Ok(s)
    }
    fn array16(&mut self) -> Result<[u8; 16], ErrorCode> {
        let mut a = [0u8; 16];
        a.copy_from_slice(self.take(16)?);
        Ok(a)
    }
    fn array32(&mut self) -> Result<[u8; 32], ErrorCode> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32)?);
        Ok(a)
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
    fn string(&mut self) -> Result<String, ErrorCode> {
        let n = self.u16()? as usize;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ErrorCode::Malformed)
    }
    fn vector_ref(&mut self) -> Result<VectorRef<'a>, ErrorCode> {
        let n = self.u16()? as usize;
        VectorRef::new(self.take(n * 12)?).ok_or(ErrorCode::Malformed)
    }
    fn vector(&mut self) -> Result<Vector, ErrorCode> {
        let n = self.u16()? as usize;
        // Check the length before reserving anything for it.
        if self.buf.len() < n * 12 {
            return Err(ErrorCode::Malformed);
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push((self.u32()?, self.seq()?));
        }
        Ok(v)
    }
    fn members(&mut self) -> Result<Vec<Member>, ErrorCode> {
        let n = self.u16()? as usize;
        let mut v = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let id = self.u32()?;
            let origin = self.u32()?;
            let status = Status::from_u8(self.u8()?).ok_or(ErrorCode::Malformed)?;
            let records = self.u64()?;
            let addr = self.string()?;
            v.push(Member {
                id,
                origin,
                status,
                records,
                addr,
            });
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_messages() -> Vec<Msg<'static>> {
        let members = vec![Member {
            id: 3,
            origin: 7,
            status: Status::Joining,
            records: 99,
            addr: "127.0.0.1:4000".into(),
        }];
        let vector = vec![(1, 10), (2, 20)];
        let entries: &'static [u8] = Box::leak(vector_entries(&vector).into_boxed_slice());
        vec![
            Msg::Register {
                id: 0,
                origin: 1,
                max_origin: 3,
                max_version: 5,
                addr: "127.0.0.1:1".into(),
            },
            Msg::Welcome {
                id: 4,
                members: members.clone(),
                max_content: 1 << 20,
                origin: 9,
                ack_all: true,
            },
            Msg::Members { members },
            Msg::Ready {
                vector: vector.clone(),
                markers: vec![],
            },
            Msg::Deregister,
            Msg::DeregisterOk,
            Msg::Heartbeat,
            Msg::Report {
                records: 1,
                max_version: 2,
                digest: [5; 16],
                vector: vector.clone(),
            },
            Msg::Refused {
                reason: "duplicate id".into(),
            },
            Msg::Behind {
                floor: vec![(3, 4)],
            },
            Msg::Put {
                req: 1,
                version: 2,
                id: 3,
                content: b"abc",
            },
            Msg::Get {
                req: 1,
                id: 2,
                min: VectorRef::new(entries).expect("whole entries"),
            },
            Msg::Stored { req: 8, seq: 9 },
            Msg::Value {
                req: 1,
                content: Some(b""),
            },
            Msg::Value {
                req: 1,
                content: None,
            },
            Msg::PeerHello {
                id: 1,
                origin: 1,
                marker: 7,
                addr: "127.0.0.1:9".into(),
            },
            Msg::Record(RecordRef {
                origin: 1,
                seq: 2,
                version: 3,
                id: 4,
                content: b"xyz",
            }),
            Msg::PeerAck { seq: 5 },
            Msg::PeerFlush,
            Msg::CatchupRequest {
                vector: vector.clone(),
            },
            Msg::CatchupDone {
                vector: vector.clone(),
            },
            Msg::DigestRequest,
            Msg::Digest {
                id: 1,
                records: 2,
                digest: [7; 16],
                vector,
            },
            Msg::DumpRequest,
            Msg::DumpEntry {
                id: 1,
                content: b"q",
            },
            Msg::DumpEnd,
            Msg::MembersRequest,
            Msg::StatsRequest,
            Msg::Stats {
                pairs: vec![("requests".into(), 3)],
            },
            Msg::AuthHello {
                nonce: [1; NONCE_LEN],
                id: 7,
                addr: "127.0.0.1:9".into(),
            },
            Msg::AuthChallenge {
                nonce: [2; NONCE_LEN],
                id: 0,
                addr: String::new(),
                mac: [3; MAC_LEN],
            },
            Msg::AuthProof { mac: [4; MAC_LEN] },
        ]
    }

    #[test]
    fn every_message_round_trips_and_prefixes_are_incomplete() {
        for msg in all_messages() {
            let mut buf = Vec::new();
            encode(&mut buf, &msg);
            for cut in 0..buf.len() {
                assert_eq!(decode(&buf[..cut], 1024), Ok(None), "{msg:?} cut {cut}");
            }
            assert_eq!(decode(&buf, 1024), Ok(Some((msg.clone(), buf.len()))));
        }
    }

    #[test]
    fn report_carries_the_digest_between_max_version_and_vector() {
        let mut buf = Vec::new();
        let digest: [u8; 16] = std::array::from_fn(|i| i as u8 + 1);
        encode(
            &mut buf,
            &Msg::Report {
                records: 7,
                max_version: 9,
                digest,
                vector: vec![(2, 3)],
            },
        );
        let body = &buf[wire::HEADER_LEN..];
        assert_eq!(buf[4], op::REPORT);
        assert_eq!(body.len(), 8 + 8 + 16 + 2 + 12);
        assert_eq!(&body[..8], &7u64.to_be_bytes());
        assert_eq!(&body[8..16], &9u64.to_be_bytes());
        assert_eq!(&body[16..32], &digest);
        assert_eq!(&body[32..34], &1u16.to_be_bytes());
        // One byte short of the digest is malformed, not a shorter vector.
        let mut short = buf[..wire::HEADER_LEN + 31].to_vec();
        short[..4].copy_from_slice(&((wire::LEN_OVERHEAD + 31) as u32).to_be_bytes());
        assert_eq!(decode(&short, 1024), Err(ErrorCode::Malformed));
    }

    #[test]
    fn a_version_or_seq_a_store_cannot_hold_is_malformed() {
        let record = |version, seq| {
            Msg::Record(RecordRef {
                origin: 1,
                seq,
                version,
                id: 2,
                content: b"x",
            })
        };
        let put = |version| Msg::Put {
            req: 1,
            version,
            id: 2,
            content: b"x",
        };
        let report = |max_version| Msg::Report {
            records: 0,
            max_version,
            digest: [0; 16],
            vector: vec![],
        };
        let decodes = |m: &Msg<'_>| {
            let mut buf = Vec::new();
            encode(&mut buf, m);
            decode(&buf, 1024).map(|d| d.map(|(_, n)| n == buf.len()))
        };
        for m in [
            record(MAX_VERSION, MAX_SEQ),
            put(MAX_VERSION),
            report(MAX_VERSION),
        ] {
            assert_eq!(decodes(&m), Ok(Some(true)), "{m:?}");
        }
        let mut get = Vec::new();
        encode_get(&mut get, 1, 2, [(1, MAX_SEQ + 1)].into_iter());
        assert_eq!(decode(&get, 1024).map(|_| ()), Err(ErrorCode::Malformed));
        for m in [
            record(MAX_VERSION + 1, 1),
            record(1, MAX_SEQ + 1),
            record(u64::MAX, u64::MAX),
            put(MAX_VERSION + 1),
            report(u64::MAX),
        ] {
            assert_eq!(decodes(&m), Err(ErrorCode::Malformed), "{m:?}");
        }
    }

    #[test]
    fn record_fast_path_matches_generic_encoder() {
        let r = RecordRef {
            origin: 9,
            seq: 8,
            version: 7,
            id: 6,
            content: b"content",
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        encode(&mut a, &Msg::Record(r));
        encode_record(&mut b, &r);
        assert_eq!(a, b);
    }

    #[test]
    fn get_fast_path_matches_generic_encoder() {
        for min in [vec![], vec![(1, 5)], vec![(1, 5), (4, MAX_SEQ), (9, 1)]] {
            let entries = vector_entries(&min);
            let min_ref = VectorRef::new(&entries).expect("whole entries");
            assert_eq!(min_ref.to_vec(), min);
            let (mut a, mut b) = (vec![0xAB], vec![0xAB]);
            encode(
                &mut a,
                &Msg::Get {
                    req: 3,
                    id: 4,
                    min: min_ref,
                },
            );
            encode_get(&mut b, 3, 4, min.iter().copied());
            assert_eq!(a, b, "{min:?}");
        }
    }

    #[test]
    fn an_empty_message_with_a_body_is_malformed() {
        let mut frame = Vec::new();
        encode(&mut frame, &Msg::PeerFlush);
        assert_eq!(
            decode(&frame, 1024),
            Ok(Some((Msg::PeerFlush, frame.len())))
        );
        let mut long = Vec::new();
        put_header(&mut long, op::PEER_FLUSH, 0, 1);
        long.push(0);
        assert_eq!(decode(&long, 1024).map(|_| ()), Err(ErrorCode::Malformed));
    }

    #[test]
    fn a_vector_ref_is_whole_entries_with_seqs_in_range() {
        assert!(VectorRef::new(&[0; 11]).is_none());
        assert!(VectorRef::new(&vector_entries(&[(1, MAX_SEQ + 1)])).is_none());
        let ok = vector_entries(&[(1, 2), (3, MAX_SEQ)]);
        let v = VectorRef::new(&ok).expect("in range");
        assert_eq!(
            (v.len(), format!("{v:?}")),
            (2, format!("{:?}", [(1, 2), (3, MAX_SEQ)]))
        );
    }

    #[test]
    fn hostile_bodies_are_errors_not_panics() {
        for msg in all_messages() {
            let mut buf = Vec::new();
            encode(&mut buf, &msg);
            // Shrink the body by one byte at a time, fixing up len, and flip bytes.
            for body_len in 0..buf.len() - wire::HEADER_LEN {
                let mut short = buf[..wire::HEADER_LEN + body_len].to_vec();
                let len = (wire::LEN_OVERHEAD + body_len) as u32;
                short[..4].copy_from_slice(&len.to_be_bytes());
                let _ = decode(&short, 1024);
            }
            for i in wire::HEADER_LEN..buf.len() {
                let mut bad = buf.clone();
                bad[i] ^= 0xFF;
                let _ = decode(&bad, 1024);
            }
        }
        let mut huge_vector = Vec::new();
        put_header(&mut huge_vector, op::CATCHUP_DONE, 0, 2);
        put_u16(&mut huge_vector, u16::MAX);
        assert_eq!(decode(&huge_vector, 1024), Err(ErrorCode::Malformed));
        let mut unknown = Vec::new();
        put_header(&mut unknown, 0x7E, 0, 0);
        assert_eq!(decode(&unknown, 1024), Err(ErrorCode::UnknownOp));
    }
}
