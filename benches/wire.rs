//! Codec micro-benchmarks: the client protocol ([`rrstore::wire`]) and the
//! internal RECORD frame ([`rrstore::msg`]), each beside a naive codec that
//! copies every body into an owned `Vec<u8>`, as a codec without borrowing
//! would.
//!
//! Before the timed groups run, a plain loop counts heap allocations per
//! parsed frame through a counting global allocator and *asserts* that our
//! parsers allocate nothing, so an allocation creeping into the hot path
//! fails `cargo bench`.
//!
//! Run: `cargo bench -p rrstore --bench wire`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rrstore::msg::{self, Msg, RecordRef};
use rrstore::wire::{self, Parse, Request};

// ---------------------------------------------------------------------------
// Counting allocator
// ---------------------------------------------------------------------------

/// `System`, plus a count of allocations while [`COUNTING`] is set. The flag
/// keeps the atomic increment out of the timed benchmarks, where it would
/// tax the allocating baseline and flatter us.
struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

fn note_allocation() {
    if COUNTING.load(Relaxed) {
        ALLOCATIONS.fetch_add(1, Relaxed);
    }
}

// SAFETY: every method forwards its arguments unchanged to `System`, which
// implements `GlobalAlloc` correctly; counting touches no memory we hand out.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: our caller upholds `GlobalAlloc::alloc`'s contract, which
        // is all `System.alloc` needs.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: `ptr` came from this allocator, i.e. from `System`, with
        // `layout`; the caller upholds the rest of `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. from `System`, with
        // `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Runs `f` and returns how many allocations it made (on any thread; the
/// check runs before criterion starts any).
fn count_allocations(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.store(0, Relaxed);
    COUNTING.store(true, Relaxed);
    f();
    COUNTING.store(false, Relaxed);
    ALLOCATIONS.load(Relaxed)
}

// ---------------------------------------------------------------------------
// The naive baseline codec: same bytes on the wire, owned bodies.
// ---------------------------------------------------------------------------

/// A client request that owns its content.
#[derive(Debug, PartialEq, Eq)]
struct NaiveRequest {
    op: u8,
    tag: u32,
    id: u64,
    content: Vec<u8>,
}

impl NaiveRequest {
    fn from_request(tag: u32, r: &Request<'_>) -> NaiveRequest {
        let (op, id, content) = match *r {
            Request::Put { id, content } => (wire::op::PUT, id, content.to_vec()),
            Request::Get { id } => (wire::op::GET, id, Vec::new()),
            Request::Ping => (wire::op::PING, 0, Vec::new()),
            Request::Auth { token } => (wire::op::AUTH, 0, token.to_vec()),
        };
        NaiveRequest {
            op,
            tag,
            id,
            content,
        }
    }

    /// Encodes into a fresh `Vec`.
    fn encode(&self) -> Vec<u8> {
        let body_len = match self.op {
            wire::op::PING => 0,
            _ => 8 + self.content.len(),
        };
        let mut out = Vec::with_capacity(wire::HEADER_LEN + body_len);
        out.extend_from_slice(&((wire::LEN_OVERHEAD + body_len) as u32).to_be_bytes());
        out.push(self.op);
        out.extend_from_slice(&self.tag.to_be_bytes());
        if self.op != wire::op::PING {
            out.extend_from_slice(&self.id.to_be_bytes());
            out.extend_from_slice(&self.content);
        }
        out
    }

    /// `Ok(None)` until a whole frame is buffered; `Err` on a bad frame.
    /// Checks what `wire::parse_request` checks, then copies the content.
    fn parse(buf: &[u8], max_content: usize) -> Result<Option<(NaiveRequest, usize)>, ()> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
        if len < wire::LEN_OVERHEAD || len - wire::LEN_OVERHEAD > 8 + max_content {
            return Err(());
        }
        let total = 4 + len;
        if buf.len() < total {
            return Ok(None);
        }
        let op = buf[4];
        let tag = u32::from_be_bytes(buf[5..9].try_into().unwrap());
        let body = &buf[wire::HEADER_LEN..total];
        let (id, content) = match op {
            wire::op::PUT if body.len() >= 8 => (
                u64::from_be_bytes(body[..8].try_into().unwrap()),
                body[8..].to_vec(),
            ),
            wire::op::GET if body.len() == 8 => {
                (u64::from_be_bytes(body.try_into().unwrap()), Vec::new())
            }
            wire::op::PING if body.is_empty() => (0, Vec::new()),
            _ => return Err(()),
        };
        Ok(Some((
            NaiveRequest {
                op,
                tag,
                id,
                content,
            },
            total,
        )))
    }
}

/// A RECORD that owns its content.
#[derive(Debug, PartialEq, Eq)]
struct NaiveRecord {
    origin: u32,
    seq: u64,
    version: u64,
    id: u64,
    content: Vec<u8>,
}

impl NaiveRecord {
    fn encode(&self) -> Vec<u8> {
        let body_len = 28 + self.content.len();
        let mut out = Vec::with_capacity(wire::HEADER_LEN + body_len);
        out.extend_from_slice(&((wire::LEN_OVERHEAD + body_len) as u32).to_be_bytes());
        out.push(msg::op::RECORD);
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&self.origin.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.content);
        out
    }

    fn decode(buf: &[u8], max_content: usize) -> Result<Option<(NaiveRecord, usize)>, ()> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
        if len < wire::LEN_OVERHEAD || len - wire::LEN_OVERHEAD > max_content + msg::MAX_OVERHEAD {
            return Err(());
        }
        let total = 4 + len;
        if buf.len() < total {
            return Ok(None);
        }
        let body = &buf[wire::HEADER_LEN..total];
        if buf[4] != msg::op::RECORD || body.len() < 28 {
            return Err(());
        }
        let u64_at = |i: usize| u64::from_be_bytes(body[i..i + 8].try_into().unwrap());
        Ok(Some((
            NaiveRecord {
                origin: u32::from_be_bytes(body[..4].try_into().unwrap()),
                seq: u64_at(4),
                version: u64_at(12),
                id: u64_at(20),
                content: body[28..].to_vec(),
            },
            total,
        )))
    }
}

// ---------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------

const MAX_CONTENT: usize = wire::DEFAULT_MAX_CONTENT;
const BATCH: usize = 64;

/// Deterministic, non-constant content.
fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

/// The four request shapes, by name. Contents live in `c64` / `c4k`.
fn requests<'a>(c64: &'a [u8], c4k: &'a [u8]) -> [(&'static str, Request<'a>); 4] {
    [
        (
            "PUT 64 B",
            Request::Put {
                id: 0x0123_4567_89ab_cdef,
                content: c64,
            },
        ),
        (
            "PUT 4 KiB",
            Request::Put {
                id: 0x0123_4567_89ab_cdef,
                content: c4k,
            },
        ),
        ("GET", Request::Get { id: 42 }),
        ("PING", Request::Ping),
    ]
}

fn encoded(tag: u32, req: &Request<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    wire::encode_request(&mut v, tag, req);
    v
}

/// `BATCH` pipelined frames: the shapes in `reqs`, round robin, tags 0.. .
fn pipelined(reqs: &[Request<'_>]) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..BATCH {
        wire::encode_request(&mut v, i as u32, &reqs[i % reqs.len()]);
    }
    v
}

fn record(c: &[u8]) -> RecordRef<'_> {
    RecordRef {
        origin: 3,
        seq: 1_000_001,
        version: 77_000_123,
        id: 0x0123_4567_89ab_cdef,
        content: c,
    }
}

/// Parses every frame in `buf` with our parser, as a connection's read loop
/// does; returns the number of frames.
fn parse_all(buf: &[u8]) -> usize {
    let (mut off, mut n) = (0, 0);
    while let Parse::Frame { msg, consumed, .. } = wire::parse_request(&buf[off..], MAX_CONTENT) {
        black_box(msg);
        off += consumed;
        n += 1;
    }
    n
}

/// The same loop over the naive parser.
fn naive_parse_all(buf: &[u8]) -> usize {
    let (mut off, mut n) = (0, 0);
    while let Ok(Some((req, consumed))) = NaiveRequest::parse(&buf[off..], MAX_CONTENT) {
        black_box(&req);
        off += consumed;
        n += 1;
    }
    n
}

// ---------------------------------------------------------------------------
// Allocation check (runs first, not timed)
// ---------------------------------------------------------------------------

const CHECK_CALLS: u64 = 100_000;

fn allocations_per_frame() {
    let (c64, c4k) = (content(64), content(4096));
    let reqs = requests(&c64, &c4k);
    println!(
        "allocations per frame ({CHECK_CALLS} parse calls per line, counting global allocator):"
    );
    let report = |what: &str, allocs: u64, frames: u64| {
        println!(
            "  {what:<48} allocations per frame: {}",
            if allocs == 0 {
                "0".to_string()
            } else {
                format!("{:.2}", allocs as f64 / frames as f64)
            }
        );
    };

    for (name, req) in &reqs {
        let frame = encoded(9, req);
        // Same result from both parsers, so they do the same work.
        let naive = NaiveRequest::parse(&frame, MAX_CONTENT).unwrap().unwrap();
        assert_eq!(naive, (NaiveRequest::from_request(9, req), frame.len()));
        assert_eq!(NaiveRequest::from_request(9, req).encode(), frame);

        let ours = count_allocations(|| {
            for _ in 0..CHECK_CALLS {
                match wire::parse_request(black_box(&frame), MAX_CONTENT) {
                    Parse::Frame { msg, .. } => {
                        black_box(msg);
                    }
                    other => panic!("{other:?}"),
                }
            }
        });
        let theirs = count_allocations(|| {
            for _ in 0..CHECK_CALLS {
                black_box(NaiveRequest::parse(black_box(&frame), MAX_CONTENT).unwrap());
            }
        });
        report(&format!("wire::parse_request, {name}"), ours, CHECK_CALLS);
        report(
            &format!("naive baseline parse, {name}"),
            theirs,
            CHECK_CALLS,
        );
        assert_eq!(ours, 0, "wire::parse_request allocated on {name}");
        if let Request::Put { .. } = req {
            // Proves the counter counts: the baseline copies every PUT body.
            assert!(theirs >= CHECK_CALLS, "counting allocator saw nothing");
        }
    }

    let mixed: Vec<Request<'_>> = reqs.iter().map(|(_, r)| *r).collect();
    let batch = pipelined(&mixed);
    let rounds = CHECK_CALLS / BATCH as u64;
    let frames = rounds * BATCH as u64;
    let ours = count_allocations(|| {
        for _ in 0..rounds {
            assert_eq!(parse_all(black_box(&batch)), BATCH);
        }
    });
    let theirs = count_allocations(|| {
        for _ in 0..rounds {
            assert_eq!(naive_parse_all(black_box(&batch)), BATCH);
        }
    });
    report("wire::parse_request, pipelined mixed x64", ours, frames);
    report("naive baseline parse, pipelined mixed x64", theirs, frames);
    assert_eq!(
        ours, 0,
        "wire::parse_request allocated on a pipelined batch"
    );

    let mut out = Vec::with_capacity(8192);
    let put = reqs[0].1;
    let ours = count_allocations(|| {
        for i in 0..CHECK_CALLS {
            out.clear();
            wire::encode_request(&mut out, i as u32, black_box(&put));
            black_box(&out);
        }
    });
    report(
        "wire::encode_request (reused buffer), PUT 64 B",
        ours,
        CHECK_CALLS,
    );
    assert_eq!(ours, 0, "wire::encode_request allocated into a warm buffer");

    let rec = record(&c64);
    let mut frame = Vec::new();
    msg::encode_record(&mut frame, &rec);
    let ours = count_allocations(|| {
        for _ in 0..CHECK_CALLS {
            match msg::decode(black_box(&frame), MAX_CONTENT) {
                Ok(Some((Msg::Record(r), _))) => {
                    black_box(r);
                }
                other => panic!("{other:?}"),
            }
        }
    });
    let theirs = count_allocations(|| {
        for _ in 0..CHECK_CALLS {
            black_box(NaiveRecord::decode(black_box(&frame), MAX_CONTENT).unwrap());
        }
    });
    report("msg::decode, RECORD 64 B", ours, CHECK_CALLS);
    report("naive baseline decode, RECORD 64 B", theirs, CHECK_CALLS);
    assert_eq!(ours, 0, "msg::decode allocated on a RECORD");
    println!();
}

// ---------------------------------------------------------------------------
// Timed groups
// ---------------------------------------------------------------------------

fn quick<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1200));
    g
}

/// One frame encoded and parsed back, per kind. Frames/s.
fn roundtrip(c: &mut Criterion) {
    let (c64, c4k) = (content(64), content(4096));
    let mut g = quick(c, "wire_roundtrip");
    g.throughput(Throughput::Elements(1));
    for (name, req) in requests(&c64, &c4k) {
        let mut buf = Vec::with_capacity(8192);
        g.bench_with_input(BenchmarkId::new("rrstore", name), &req, |b, req| {
            b.iter(|| {
                buf.clear();
                wire::encode_request(&mut buf, 7, black_box(req));
                match wire::parse_request(black_box(&buf), MAX_CONTENT) {
                    Parse::Frame { msg, consumed, .. } => {
                        black_box((msg, consumed));
                    }
                    _ => unreachable!(),
                }
            })
        });
        let naive = NaiveRequest::from_request(7, &req);
        g.bench_with_input(BenchmarkId::new("naive", name), &naive, |b, naive| {
            b.iter(|| {
                let bytes = black_box(naive).encode();
                let parsed = NaiveRequest::parse(black_box(&bytes), MAX_CONTENT);
                black_box(parsed.unwrap().unwrap());
            })
        });
    }
    g.finish();
}

/// A read buffer holding 64 pipelined frames, parsed front to back. Bytes/s.
fn pipelined_parse(c: &mut Criterion) {
    let (c64, c4k) = (content(64), content(4096));
    let reqs = requests(&c64, &c4k);
    let batches = [
        ("PUT 64 B x64", pipelined(&[reqs[0].1])),
        ("PUT 4 KiB x64", pipelined(&[reqs[1].1])),
        (
            "mixed x64",
            pipelined(&reqs.iter().map(|(_, r)| *r).collect::<Vec<_>>()),
        ),
    ];
    let mut g = quick(c, "wire_pipelined_parse");
    for (name, buf) in &batches {
        g.throughput(Throughput::Bytes(buf.len() as u64));
        g.bench_with_input(BenchmarkId::new("rrstore", name), buf, |b, buf| {
            b.iter(|| assert_eq!(parse_all(black_box(buf)), BATCH))
        });
        g.bench_with_input(BenchmarkId::new("naive", name), buf, |b, buf| {
            b.iter(|| assert_eq!(naive_parse_all(black_box(buf)), BATCH))
        });
    }
    g.finish();
}

/// The replication hot path: `msg::encode_record` then `msg::decode`.
fn record_roundtrip(c: &mut Criterion) {
    let mut g = quick(c, "msg_record_roundtrip");
    g.throughput(Throughput::Elements(1));
    for (name, len) in [("64 B", 64), ("4 KiB", 4096)] {
        let body = content(len);
        let rec = record(&body);
        let mut buf = Vec::with_capacity(8192);
        g.bench_with_input(BenchmarkId::new("rrstore", name), &rec, |b, rec| {
            b.iter(|| {
                buf.clear();
                msg::encode_record(&mut buf, black_box(rec));
                match msg::decode(black_box(&buf), MAX_CONTENT) {
                    Ok(Some((Msg::Record(r), n))) => {
                        black_box((r, n));
                    }
                    _ => unreachable!(),
                }
            })
        });
        let naive = NaiveRecord {
            origin: rec.origin,
            seq: rec.seq,
            version: rec.version,
            id: rec.id,
            content: body.clone(),
        };
        // Same bytes as ours, so both decoders see the same frame.
        buf.clear();
        msg::encode_record(&mut buf, &rec);
        assert_eq!(naive.encode(), buf);
        g.bench_with_input(BenchmarkId::new("naive", name), &naive, |b, naive| {
            b.iter(|| {
                let bytes = black_box(naive).encode();
                let parsed = NaiveRecord::decode(black_box(&bytes), MAX_CONTENT);
                black_box(parsed.unwrap().unwrap());
            })
        });
    }
    g.finish();
}

criterion_group!(codecs, roundtrip, pipelined_parse, record_roundtrip);
criterion_main!(allocations_per_frame, codecs);
