//! Our SPSC ring ([`rrstore::ringbuf`]) beside three bounded queues of the
//! same capacity: `rtrb` (an SPSC ring), crossbeam's `ArrayQueue` (MPMC) and
//! `std::sync::mpsc::sync_channel` (MPSC, blocking).
//!
//! * `ringbuf_transfer`: `N` u64 items from a producer thread to a consumer
//!   thread, one push / pop at a time, timed from a barrier both threads pass
//!   until the consumer has checked the last item. Items/s.
//! * `ringbuf_transfer_batch`: the same `N` items in batches of up to
//!   [`BATCH`]: our `push_iter` / `pop_into` and rtrb's write and read
//!   chunks publish a batch with one counter store; crossbeam and
//!   `sync_channel` have no batch calls, so they move a batch item by item
//!   (`sync_channel`: one blocking `recv`, then `try_recv` for the rest).
//!   Items/s.
//! * `ringbuf_push_pop`: one push then one pop on the same thread (ring
//!   never contended, never full): the fixed cost of a call pair. Items/s.
//!
//! The lock-free queues spin (then yield) on full / empty, the same way for
//! each; `sync_channel` uses its blocking `send` / `recv`, as it is meant to
//! be used.
//!
//! Run: `cargo bench -p rrstore --bench ringbuf`.

use std::hint::black_box;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use crossbeam_queue::ArrayQueue;
use rrstore::ringbuf;

const CAPACITY: usize = 1024;
const N: u64 = 1_000_000;
/// Items per batch in `ringbuf_transfer_batch`.
const BATCH: usize = 64;

/// Waits politely: spin a little, then give the core away. On a 2-core
/// shared machine a pure spin can starve the other side.
#[inline]
fn backoff(misses: &mut u32) {
    *misses += 1;
    if *misses < 64 {
        std::hint::spin_loop();
    } else {
        thread::yield_now();
    }
}

/// One queue under test: build a fresh pair, then move `N` items through it
/// with `send` on a new thread and `recv` here.
trait Queue {
    type Tx: Send + 'static;
    type Rx;
    fn pair() -> (Self::Tx, Self::Rx);
    fn send(tx: &mut Self::Tx, v: u64);
    fn recv(rx: &mut Self::Rx) -> u64;
}

struct Ours;
impl Queue for Ours {
    type Tx = ringbuf::Producer<u64>;
    type Rx = ringbuf::Consumer<u64>;
    fn pair() -> (Self::Tx, Self::Rx) {
        ringbuf::channel(CAPACITY)
    }
    fn send(tx: &mut Self::Tx, mut v: u64) {
        let mut misses = 0;
        while let Err(back) = tx.push(v) {
            v = back;
            backoff(&mut misses);
        }
    }
    fn recv(rx: &mut Self::Rx) -> u64 {
        let mut misses = 0;
        loop {
            if let Some(v) = rx.pop() {
                return v;
            }
            backoff(&mut misses);
        }
    }
}

struct Rtrb;
impl Queue for Rtrb {
    type Tx = rtrb::Producer<u64>;
    type Rx = rtrb::Consumer<u64>;
    fn pair() -> (Self::Tx, Self::Rx) {
        rtrb::RingBuffer::new(CAPACITY)
    }
    fn send(tx: &mut Self::Tx, mut v: u64) {
        let mut misses = 0;
        while let Err(rtrb::PushError::Full(back)) = tx.push(v) {
            v = back;
            backoff(&mut misses);
        }
    }
    fn recv(rx: &mut Self::Rx) -> u64 {
        let mut misses = 0;
        loop {
            if let Ok(v) = rx.pop() {
                return v;
            }
            backoff(&mut misses);
        }
    }
}

struct Crossbeam;
impl Queue for Crossbeam {
    type Tx = Arc<ArrayQueue<u64>>;
    type Rx = Arc<ArrayQueue<u64>>;
    fn pair() -> (Self::Tx, Self::Rx) {
        let q = Arc::new(ArrayQueue::new(CAPACITY));
        (Arc::clone(&q), q)
    }
    fn send(tx: &mut Self::Tx, mut v: u64) {
        let mut misses = 0;
        while let Err(back) = tx.push(v) {
            v = back;
            backoff(&mut misses);
        }
    }
    fn recv(rx: &mut Self::Rx) -> u64 {
        let mut misses = 0;
        loop {
            if let Some(v) = rx.pop() {
                return v;
            }
            backoff(&mut misses);
        }
    }
}

struct StdSync;
impl Queue for StdSync {
    type Tx = mpsc::SyncSender<u64>;
    type Rx = mpsc::Receiver<u64>;
    fn pair() -> (Self::Tx, Self::Rx) {
        mpsc::sync_channel(CAPACITY)
    }
    fn send(tx: &mut Self::Tx, v: u64) {
        tx.send(v).expect("receiver alive");
    }
    fn recv(rx: &mut Self::Rx) -> u64 {
        rx.recv().expect("sender alive")
    }
}

/// Moves `N` items producer → consumer `iters` times; returns the time from
/// the start barrier until the consumer has received and checked them all.
fn transfer<Q: Queue>(iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let (mut tx, mut rx) = Q::pair();
        let start = Arc::new(Barrier::new(2));
        let producer = {
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                for i in 0..N {
                    Q::send(&mut tx, i);
                }
            })
        };
        start.wait();
        let t0 = Instant::now();
        for i in 0..N {
            // In order, nothing lost: the check also keeps the loop honest.
            assert_eq!(Q::recv(&mut rx), i);
        }
        total += t0.elapsed();
        producer.join().expect("producer panicked");
    }
    total
}

/// A queue moving items in batches: `send_batch` pushes all of `items`,
/// `recv_batch` appends at least one item to `out`.
trait BatchQueue: Queue {
    fn send_batch(tx: &mut Self::Tx, items: std::ops::Range<u64>);
    fn recv_batch(rx: &mut Self::Rx, out: &mut Vec<u64>);
}

impl BatchQueue for Ours {
    fn send_batch(tx: &mut Self::Tx, mut items: std::ops::Range<u64>) {
        let mut misses = 0;
        while !items.is_empty() {
            if tx.push_iter(&mut items) == 0 {
                backoff(&mut misses);
            }
        }
    }
    fn recv_batch(rx: &mut Self::Rx, out: &mut Vec<u64>) {
        let mut misses = 0;
        while rx.pop_into(out, BATCH) == 0 {
            backoff(&mut misses);
        }
    }
}

/// rtrb's own pattern: ask for the whole rest, and on `TooFewSlots(k)` for
/// the `k` there are (its chunk calls load the other side's counter only
/// when their cached one is short, as ours do).
impl BatchQueue for Rtrb {
    fn send_batch(tx: &mut Self::Tx, mut items: std::ops::Range<u64>) {
        let mut misses = 0;
        while !items.is_empty() {
            let rest = (items.end - items.start) as usize;
            let chunk = match tx.write_chunk_uninit(rest) {
                Ok(chunk) => chunk,
                Err(rtrb::chunks::ChunkError::TooFewSlots(k)) if k > 0 => {
                    match tx.write_chunk_uninit(k) {
                        Ok(chunk) => chunk,
                        Err(_) => unreachable!("{k} slots were free"),
                    }
                }
                Err(_) => {
                    backoff(&mut misses);
                    continue;
                }
            };
            chunk.fill_from_iter(&mut items);
        }
    }
    fn recv_batch(rx: &mut Self::Rx, out: &mut Vec<u64>) {
        let mut misses = 0;
        loop {
            let chunk = match rx.read_chunk(BATCH) {
                Ok(chunk) => chunk,
                Err(rtrb::chunks::ChunkError::TooFewSlots(k)) if k > 0 => match rx.read_chunk(k) {
                    Ok(chunk) => chunk,
                    Err(_) => unreachable!("{k} items were there"),
                },
                Err(_) => {
                    backoff(&mut misses);
                    continue;
                }
            };
            let (a, b) = chunk.as_slices();
            out.extend_from_slice(a);
            out.extend_from_slice(b);
            chunk.commit_all();
            return;
        }
    }
}

impl BatchQueue for Crossbeam {
    fn send_batch(tx: &mut Self::Tx, items: std::ops::Range<u64>) {
        items.for_each(|v| Self::send(tx, v));
    }
    fn recv_batch(rx: &mut Self::Rx, out: &mut Vec<u64>) {
        out.push(Self::recv(rx));
        while out.len() < BATCH {
            match rx.pop() {
                Some(v) => out.push(v),
                None => break,
            }
        }
    }
}

impl BatchQueue for StdSync {
    fn send_batch(tx: &mut Self::Tx, items: std::ops::Range<u64>) {
        items.for_each(|v| Self::send(tx, v));
    }
    fn recv_batch(rx: &mut Self::Rx, out: &mut Vec<u64>) {
        out.push(Self::recv(rx));
        while out.len() < BATCH {
            match rx.try_recv() {
                Ok(v) => out.push(v),
                Err(_) => break,
            }
        }
    }
}

/// [`transfer`] in batches of up to [`BATCH`] items each way.
fn transfer_batch<Q: BatchQueue>(iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let (mut tx, mut rx) = Q::pair();
        let start = Arc::new(Barrier::new(2));
        let producer = {
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                let mut next = 0;
                while next < N {
                    let end = (next + BATCH as u64).min(N);
                    Q::send_batch(&mut tx, next..end);
                    next = end;
                }
            })
        };
        let mut out = Vec::with_capacity(BATCH);
        start.wait();
        let t0 = Instant::now();
        let mut expected = 0;
        while expected < N {
            out.clear();
            Q::recv_batch(&mut rx, &mut out);
            for &v in &out {
                // In order, nothing lost.
                assert_eq!(v, expected);
                expected += 1;
            }
        }
        total += t0.elapsed();
        producer.join().expect("producer panicked");
    }
    total
}

/// A queue's name and its run: [`transfer`] or [`transfer_batch`] of it.
type Run = (&'static str, fn(u64) -> Duration);

/// One two-thread group: the four queues, each through its run.
fn two_thread_group(c: &mut Criterion, name: &str, runs: [Run; 4]) {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(N))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (queue, run) in runs {
        g.bench_function(queue, |b| b.iter_custom(run));
    }
    g.finish();
}

fn two_threads(c: &mut Criterion) {
    two_thread_group(
        c,
        "ringbuf_transfer",
        [
            ("rrstore ringbuf", transfer::<Ours>),
            ("rtrb", transfer::<Rtrb>),
            ("crossbeam ArrayQueue", transfer::<Crossbeam>),
            ("std sync_channel", transfer::<StdSync>),
        ],
    );
    two_thread_group(
        c,
        "ringbuf_transfer_batch",
        [
            ("rrstore ringbuf", transfer_batch::<Ours>),
            ("rtrb", transfer_batch::<Rtrb>),
            ("crossbeam ArrayQueue", transfer_batch::<Crossbeam>),
            ("std sync_channel", transfer_batch::<StdSync>),
        ],
    );
}

fn same_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("ringbuf_push_pop");
    g.throughput(Throughput::Elements(1))
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1200));

    let (mut p, mut c_) = ringbuf::channel::<u64>(CAPACITY);
    g.bench_function("rrstore ringbuf", |b| {
        b.iter(|| {
            p.push(black_box(7)).unwrap();
            black_box(c_.pop().unwrap())
        })
    });
    let (mut p, mut c_) = rtrb::RingBuffer::<u64>::new(CAPACITY);
    g.bench_function("rtrb", |b| {
        b.iter(|| {
            p.push(black_box(7)).unwrap();
            black_box(c_.pop().unwrap())
        })
    });
    let q = ArrayQueue::<u64>::new(CAPACITY);
    g.bench_function("crossbeam ArrayQueue", |b| {
        b.iter(|| {
            q.push(black_box(7)).unwrap();
            black_box(q.pop().unwrap())
        })
    });
    let (tx, rx) = mpsc::sync_channel::<u64>(CAPACITY);
    g.bench_function("std sync_channel", |b| {
        b.iter(|| {
            tx.try_send(black_box(7)).unwrap();
            black_box(rx.try_recv().unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, two_threads, same_thread);
criterion_main!(benches);
