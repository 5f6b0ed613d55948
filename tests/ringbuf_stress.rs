//! Two-thread stress tests for `rrstore::ringbuf` (real threads; also run under Miri
//! with tiny counts by `.ci/miri.sh`).
#![cfg(not(loom))]

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::thread;

use rrstore::ringbuf::channel;

/// Items per run; Miri is ~1000x slower, so it gets a token amount.
const ITEMS: u64 = if cfg!(miri) { 200 } else { 2_000_000 };

/// Waits a little without sleeping: spin first, then give the core away
/// (the machine may have fewer free cores than threads).
fn backoff(step: &mut u32) {
    if *step < 64 && !cfg!(miri) {
        std::hint::spin_loop();
    } else {
        thread::yield_now();
    }
    *step = step.saturating_add(1);
}

fn run_u64(capacity: usize, items: u64) {
    let (mut p, mut c) = channel::<u64>(capacity);
    let producer = thread::spawn(move || {
        for i in 0..items {
            let (mut v, mut step) = (i, 0);
            while let Err(back) = p.push(v) {
                v = back;
                backoff(&mut step);
            }
        }
    });
    let mut expected = 0;
    let mut step = 0;
    while expected < items {
        match c.pop() {
            Some(v) => {
                assert_eq!(v, expected);
                expected += 1;
                step = 0;
            }
            None => backoff(&mut step),
        }
    }
    producer.join().unwrap();
    assert_eq!(c.pop(), None);
    assert!(c.is_abandoned());
}

#[test]
fn stress_capacity_1024() {
    run_u64(1024, ITEMS);
}

#[test]
fn stress_capacity_1() {
    run_u64(1, ITEMS);
}

/// Bumps `drops[id]` when dropped.
struct Tracked {
    id: usize,
    drops: Arc<Vec<AtomicU8>>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.drops[self.id].fetch_add(1, Ordering::Relaxed);
    }
}

/// The consumer takes half the items and then drops its end while the
/// producer is still pushing; every item ever created must be dropped once:
/// popped ones by the consumer, refused ones by the producer, leftovers by
/// the ring.
#[test]
fn stress_drop_exactly_once() {
    let n = ITEMS as usize / 4;
    let drops: Arc<Vec<AtomicU8>> = Arc::new((0..n).map(|_| AtomicU8::new(0)).collect());
    let (mut p, mut c) = channel::<Tracked>(64);
    let d = Arc::clone(&drops);
    let producer = thread::spawn(move || {
        let mut created = 0;
        'items: for id in 0..n {
            let mut item = Tracked {
                id,
                drops: Arc::clone(&d),
            };
            created += 1;
            let mut step = 0;
            while let Err(back) = p.push(item) {
                if p.is_abandoned() {
                    break 'items; // `back` is dropped here
                }
                item = back;
                backoff(&mut step);
            }
        }
        created
    });
    let mut next = 0;
    let mut step = 0;
    while next < n / 2 {
        match c.pop() {
            Some(item) => {
                assert_eq!(item.id, next);
                next += 1;
            }
            None => backoff(&mut step),
        }
    }
    drop(c);
    let created = producer.join().unwrap();
    assert!(created > n / 2);
    for (id, count) in drops.iter().enumerate() {
        let want = u8::from(id < created);
        assert_eq!(count.load(Ordering::Relaxed), want, "item {id}");
    }
}

/// Batches of every size from 0 to 9 against a ring of 7, popped in
/// batches of 1 to 5, with single pushes and pops mixed in: order kept,
/// nothing lost or repeated.
#[test]
fn stress_batches_capacity_7() {
    let (mut p, mut c) = channel::<u64>(7);
    let producer = thread::spawn(move || {
        let (mut next, mut size) = (0, 0);
        while next < ITEMS {
            size = (size + 1) % 10;
            let mut batch = next..(next + size).min(ITEMS);
            next = batch.end;
            let mut step = 0;
            while !batch.is_empty() {
                let moved = if size == 1 {
                    usize::from(p.push(batch.start).is_ok())
                } else {
                    p.push_iter(&mut batch)
                };
                if moved == 0 {
                    backoff(&mut step);
                } else if size == 1 {
                    batch.start += 1;
                }
            }
        }
    });
    let (mut out, mut max, mut step) = (Vec::new(), 0, 0);
    while (out.len() as u64) < ITEMS {
        max = max % 5 + 1;
        let got = if max == 3 {
            c.pop().map(|v| out.push(v)).is_some()
        } else {
            c.pop_into(&mut out, max) > 0
        };
        if got {
            step = 0;
        } else {
            backoff(&mut step);
        }
    }
    producer.join().unwrap();
    assert!(out.iter().copied().eq(0..ITEMS));
    assert_eq!(c.pop(), None);
}
