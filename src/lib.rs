//! rrstore: a load balancer (LB) spreads client records round robin over N
//! workers; each worker stores a record, notifies every other worker, and
//! confirms; all workers converge to identical stores.
//!
//! # Layout
//! - Event loops (single-threaded mio): [`lb`] (ports 5059 and control) and
//!   [`worker`] (the LB link, peer links, admin).
//! - Codecs, pure functions over bytes: [`wire`] (client protocol v1 and the
//!   shared frame header) and [`msg`] (internal messages).
//! - Connection buffers and interest tracking: [`conn`].
//! - Cluster authentication (the secret, the HMAC-SHA256 handshake, pure
//!   over messages): [`auth`].
//! - Replication and membership state machine, no I/O: [`replica`], over the
//!   [`store`] (last-writer-wins map + digest) and the [`vector`] (version
//!   vector with gap tracking).
//! - The LB's worker map and round-robin array: [`membership`].
//! - Persistence: [`log`] (data dir, lock, CRC'd log entries), [`segments`]
//!   (segments, and the thread that writes their compaction; the worker's
//!   loop encodes it from its store in `worker/compaction.rs`) and [`fsync`] (the fsync
//!   thread); rebuilding a worker's store from its log at start, on
//!   several threads: [`recover`]; the LB's processed log: [`plog`].
//! - Lock-free SPSC ring between a loop and its helper thread: [`ringbuf`].
//! - HTTP, on a thread of its own fed through that ring: [`http`] (the
//!   server), [`metrics`] (`--metrics`, Prometheus text) and [`status`]
//!   (the LB's `--http` status page and its `/status.json`).
//! - `--config FILE` (TOML) into flags: [`config`].
//! - The client library: [`client`] ([`Client`]: protocol v1, blocking,
//!   pipelined by tag, typed errors; its `admin` submodule: members, stats,
//!   digest, dump over the internal messages). [`testing`]: an LB and
//!   workers on threads of this process, for tests and doc examples;
//!   [`stop`] lets such a loop be stopped from another thread.
//! - Tools: [`admin`] (the member table, verify, dump), [`cluster`] (child
//!   processes), [`demo`].
//! - A seedable generator for tools and tests: [`rng`].
//! - Fuzz target bodies (for `fuzz/` and `tests/fuzz_corpus.rs`): `fuzzing`.

pub mod admin;
pub mod auth;
pub mod client;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod demo;
pub mod fsync;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod lb;
pub mod log;
pub mod membership;
pub mod metrics;
pub mod msg;
pub mod plog;
pub mod recover;
pub mod replica;
pub mod ringbuf;
pub mod rng;
pub mod segments;
pub mod status;
pub mod stop;
pub mod store;
pub mod testing;
pub mod vector;
pub mod wire;
pub mod worker;

pub use client::{Client, ClientError, Reply};
pub use wire::{ErrorCode, Request};

/// Lowers the calling thread's CPU priority (nice 10), for a helper thread
/// no request waits for (the compaction writer): on a loaded machine the
/// event loops, whose delays every request waits for, get the CPU first,
/// and the helper still gets about a tenth of a contended core. Linux
/// keeps a nice value per thread. Best effort: a failure leaves the
/// thread at normal priority. (The fsync thread keeps its priority:
/// under `--fsync always` every STORED waits for it.)
pub(crate) fn background_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority reads no memory; `who = 0` is the calling thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}
