//! The worker's connections and the [`Outbox`] over them: what the
//! replica's effects become on real sockets and the log.

use super::REDIAL_PAUSE;
use crate::auth::{Handshake, Identity, Secret};
use crate::conn::Conn;
use crate::fsync::Syncer;
use crate::log::{FsyncPolicy, LogWriter};
use crate::msg::{self, Msg, RecordRef, Vector};
use crate::replica::Outbox;
use crate::store::{Store, StoreWalk};
use crate::vector::lookup;
use mio::net::TcpStream;
use mio::{Interest, Poll, Token};
use slab::Slab;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

/// Stop refilling a link's output from a catch-up or dump above this.
const STREAM_HIGH_WATER: usize = 4 << 20;

/// Records a stream looks at per loop turn, sent or skipped: a catch-up
/// that skips almost everything (a peer lacking a few records of a store
/// of millions) would otherwise walk the whole store in one turn.
const STREAM_STEP: usize = 65_536;

/// What a stream walks: a catch-up, the store in place (records held when
/// it began); a dump, a frozen list of ids in ascending order.
pub(super) enum Walk {
    Store(StoreWalk),
    Ids { ids: Vec<u64>, pos: usize },
}

/// A stream to a peer (catch-up) or a tool (dump).
pub(super) struct Cursor {
    pub(super) walk: Walk,
    /// Catch-up: skip entries the requester already covers; dump: empty.
    pub(super) filter: Vector,
    /// Catch-up: our vector when the walk began, sent at the end.
    pub(super) done: Option<Vector>,
}

pub(super) enum Role {
    Lb,
    /// Our outbound link to `peer`; `up` once connected and Hello queued.
    Out {
        peer: u32,
        up: bool,
    },
    /// A peer's link to us, identified by its Hello.
    In {
        peer: u32,
        /// The origin its hello announced: what our PEER_ACKs count.
        origin: u32,
        /// Unique per connection, unlike slab keys (see `Replica::on_inbound_down`).
        serial: u64,
        acked: u64,
        cursor: Option<Cursor>,
    },
    Admin {
        cursor: Option<Cursor>,
    },
    /// Accepted, first frame not yet seen.
    New,
}

pub(super) struct Link {
    pub(super) conn: Conn,
    pub(super) role: Role,
    /// Authenticating: no other frame is acted on until this is gone. An
    /// outbound link gets it once connected (it stays `up: false` until
    /// the acceptor's proof is checked); an accepted one, at once.
    pub(super) auth: Option<Box<Handshake>>,
    /// Who an accepted link proved to be (its PEER_HELLO must match).
    pub(super) verified: Option<Identity>,
    /// A catch-up or dump stream on this link ended: its buffers (up to
    /// megabytes) are freed as soon as they drain, not at the next
    /// once-a-second trim.
    pub(super) trim_when_drained: bool,
    /// A peer's link to us: a GET waits for that peer's records, so a
    /// PEER_FLUSH goes out on it at the end of the turn (once per turn).
    pub(super) send_flush: bool,
    /// Our link to a peer: it sent PEER_FLUSH, so `--peer-flush-ms` holds
    /// nothing for it until its output is all written.
    pub(super) flush_now: bool,
}

impl Link {
    pub(super) fn new(conn: Conn, role: Role) -> Link {
        Link {
            conn,
            role,
            auth: None,
            verified: None,
            trim_when_drained: false,
            send_flush: false,
            flush_now: false,
        }
    }
}

/// Everything the replica's effects touch: the [`Outbox`] implementation.
pub(super) struct Io {
    pub(super) poll: Poll,
    pub(super) links: Slab<Link>,
    pub(super) lb: usize,
    /// Outbound link per peer.
    pub(super) out_links: HashMap<u32, usize>,
    pub(super) log: LogWriter,
    pub(super) syncer: Option<Syncer>,
    pub(super) fsync: FsyncPolicy,
    /// STORED replies waiting for the log to be written (and synced).
    pub(super) held: VecDeque<(u64, u64, u64)>,
    /// Log offset known durable (under `always`).
    pub(super) durable: u64,
    /// `--ack all` at the LB: STORED also waits for every active peer's ack.
    pub(super) ack_all: bool,
    /// Outbound links to re-open: (when, peer, address).
    pub(super) redials: Vec<(Instant, u32, String)>,
    /// Numbers inbound peer links: never reused.
    pub(super) link_serial: u64,
    /// The cluster secret (`None`: `--insecure`, no handshakes).
    pub(super) secret: Option<Secret>,
    /// Who we are in handshakes: our ID and registered address.
    pub(super) me: Identity,
    /// Connections closed for failing or skipping authentication.
    pub(super) auth_rejected: u64,
}

impl Io {
    fn out_buf(&mut self, key: usize) -> Option<&mut Vec<u8>> {
        self.links.get_mut(key).map(|l| l.conn.out())
    }
}

impl Outbox for Io {
    fn to_lb(&mut self, msg: &Msg<'_>) {
        if let Msg::Ready { vector, markers } = msg {
            log::info!("ready: vector {vector:?} covers the peers' markers {markers:?}");
        }
        let lb = self.lb;
        if let Some(out) = self.out_buf(lb) {
            msg::encode(out, msg);
        }
    }

    fn broadcast(&mut self, rec: &RecordRef<'_>) {
        for &key in self.out_links.values() {
            if let Some(link) = self.links.get_mut(key) {
                if matches!(link.role, Role::Out { up: true, .. }) {
                    msg::encode_record(link.conn.out(), rec);
                }
            }
        }
    }

    fn to_peer(&mut self, peer: u32, msg: &Msg<'_>) {
        if let Some(&key) = self.out_links.get(&peer) {
            if let Some(out) = self.out_buf(key) {
                msg::encode(out, msg);
            }
        }
    }

    fn persist_record(&mut self, rec: &RecordRef<'_>) {
        self.log.append_record(rec);
    }

    fn persist_vector(&mut self, vector: &[(u32, u64)]) {
        self.log.append_vector(vector);
    }

    fn dial(&mut self, peer: u32, addr: &str) {
        let Ok(sock) = addr.parse::<SocketAddr>() else {
            log::warn!("peer {peer} has an unusable address {addr:?}");
            return;
        };
        match TcpStream::connect(sock) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                let entry = self.links.vacant_entry();
                let key = entry.key();
                let mut conn = Conn::new(stream);
                // Writable tells us the connect finished (or failed).
                if self
                    .poll
                    .registry()
                    .register(&mut conn.stream, Token(key), Interest::WRITABLE)
                    .is_err()
                {
                    self.redial(peer, addr);
                    return;
                }
                conn.mark_registered(Interest::WRITABLE);
                entry.insert(Link::new(conn, Role::Out { peer, up: false }));
                self.out_links.insert(peer, key);
            }
            Err(e) => {
                log::warn!("cannot dial peer {peer} at {addr}: {e}");
                self.redial(peer, addr);
            }
        }
    }

    fn redial(&mut self, peer: u32, addr: &str) {
        self.redials.retain(|(_, p, _)| *p != peer);
        self.redials
            .push((Instant::now() + REDIAL_PAUSE, peer, addr.to_string()));
    }

    fn forget(&mut self, peer: u32) {
        self.redials.retain(|(_, p, _)| *p != peer);
        if let Some(key) = self.out_links.remove(&peer) {
            if self.links.contains(key) {
                // Flush what is queued (the last records) before closing.
                let mut link = self.links.remove(key);
                link.conn.flush();
                link.conn.deregister(self.poll.registry());
            }
        }
    }

    fn stored(&mut self, req: u64, seq: u64) {
        let offset = self.log.written() + 1; // any byte of this turn's write
        self.held.push_back((offset, req, seq));
    }

    fn value(&mut self, req: u64, content: Option<&[u8]>) {
        self.to_lb(&Msg::Value { req, content });
    }

    fn hurry(&mut self, origin: u32) {
        // Under `--ack all` no worker holds its peers' output back.
        if self.ack_all {
            return;
        }
        for (_, link) in self.links.iter_mut() {
            if matches!(link.role, Role::In { origin: o, .. } if o == origin) {
                link.send_flush = true;
            }
        }
    }
}

/// Streams the next entries of a catch-up or dump while the link has room,
/// looking at most [`STREAM_STEP`] of them (the loop calls again next turn);
/// returns true when the stream is complete.
pub(super) fn pump(c: &mut Cursor, store: &Store, conn: &mut Conn) -> bool {
    for _ in 0..STREAM_STEP {
        if conn.pending_out() >= STREAM_HIGH_WATER {
            return false;
        }
        let record = match &mut c.walk {
            Walk::Store(w) => match store.next_in(w) {
                Some(r) => Some(r),
                None => return finish(c, conn),
            },
            Walk::Ids { ids, pos } => match ids.get(*pos) {
                Some(&id) => {
                    *pos += 1;
                    store.get(id)
                }
                None => return finish(c, conn),
            },
        };
        let Some(r) = record else { continue };
        match &c.done {
            Some(_) if r.seq <= lookup(&c.filter, r.origin) => {}
            Some(_) => msg::encode_record(conn.out(), &r),
            None => msg::encode(
                conn.out(),
                &Msg::DumpEntry {
                    id: r.id,
                    content: r.content,
                },
            ),
        }
    }
    false
}

/// The stream's last frame; true (complete).
fn finish(c: &mut Cursor, conn: &mut Conn) -> bool {
    match c.done.take() {
        Some(vector) => msg::encode(conn.out(), &Msg::CatchupDone { vector }),
        None => msg::encode(conn.out(), &Msg::DumpEnd),
    }
    true
}
