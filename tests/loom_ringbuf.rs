//! Loom model tests for `rrstore::ringbuf`.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release --test loom_ringbuf`.
#![cfg(loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use rrstore::ringbuf::channel;

const ITEMS: usize = 3;

#[test]
fn items_arrive_in_order() {
    loom::model(|| {
        let (mut p, mut c) = channel::<usize>(2);
        let producer = thread::spawn(move || {
            for i in 0..ITEMS {
                let mut item = i;
                while let Err(back) = p.push(item) {
                    item = back;
                    thread::yield_now();
                }
            }
        });
        for expected in 0..ITEMS {
            loop {
                if let Some(v) = c.pop() {
                    assert_eq!(v, expected);
                    break;
                }
                thread::yield_now();
            }
        }
        assert_eq!(c.pop(), None);
        producer.join().unwrap();
    });
}

/// The batch forms against each other: a whole batch is published with
/// one store, so every item of it must be visible once that store is.
#[test]
fn batches_arrive_in_order() {
    loom::model(|| {
        let (mut p, mut c) = channel::<usize>(2);
        let producer = thread::spawn(move || {
            let mut items = 0..ITEMS;
            while items.len() > 0 {
                if p.push_iter(&mut items) == 0 {
                    thread::yield_now();
                }
            }
        });
        let mut got = Vec::new();
        while got.len() < ITEMS {
            if c.pop_into(&mut got, ITEMS) == 0 {
                thread::yield_now();
            }
        }
        assert_eq!(got, (0..ITEMS).collect::<Vec<_>>());
        assert_eq!(c.pop(), None);
        producer.join().unwrap();
    });
}

/// Small batches, so that each side often goes on its cached view of the
/// other's counter instead of reloading it; and batched items dropped
/// exactly once, whether popped or left in the ring.
#[test]
fn small_batches_and_their_drops() {
    loom::model(|| {
        let drops = drop_counts();
        let (mut p, mut c) = channel::<Tracked>(2);
        let d = Arc::clone(&drops);
        let producer = thread::spawn(move || {
            let make = |id| Tracked {
                id,
                drops: Arc::clone(&d),
            };
            let mut first = (0..1).map(make);
            while p.push_iter(&mut first) == 0 {
                thread::yield_now();
            }
            // Whatever does not fit is dropped with the iterator.
            let rest: Vec<Tracked> = (1..ITEMS).map(make).collect();
            p.push_iter(&mut rest.into_iter());
        });
        let mut got = Vec::new();
        while got.is_empty() {
            if c.pop_into(&mut got, 1) == 0 {
                thread::yield_now();
            }
        }
        assert_eq!(got[0].id, 0);
        c.pop_into(&mut got, 1);
        drop(got);
        drop(c);
        producer.join().unwrap();
        assert_each_dropped_once(&drops);
    });
}

#[test]
fn abandoned_then_empty_means_done() {
    loom::model(|| {
        let (mut p, mut c) = channel::<usize>(2);
        let producer = thread::spawn(move || {
            p.push(0).unwrap();
            p.push(1).unwrap();
        });
        let mut got = Vec::new();
        loop {
            let abandoned = c.is_abandoned();
            match c.pop() {
                Some(v) => got.push(v),
                None if abandoned => break,
                None => thread::yield_now(),
            }
        }
        assert_eq!(got, [0, 1]);
        producer.join().unwrap();
    });
}

/// Records, per item id, how many times that item was dropped.
struct Tracked {
    id: usize,
    drops: Arc<[AtomicUsize; ITEMS]>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.drops[self.id].fetch_add(1, Ordering::Relaxed);
    }
}

/// One drop counter per item id, all at 0.
fn drop_counts() -> Arc<[AtomicUsize; ITEMS]> {
    Arc::new(std::array::from_fn(|_| AtomicUsize::new(0)))
}

fn assert_each_dropped_once(drops: &[AtomicUsize; ITEMS]) {
    for (id, n) in drops.iter().enumerate() {
        assert_eq!(n.load(Ordering::Relaxed), 1, "item {id}");
    }
}

#[test]
fn leftovers_dropped_exactly_once() {
    loom::model(|| {
        let drops = drop_counts();
        let (mut p, mut c) = channel::<Tracked>(2);
        let d = Arc::clone(&drops);
        let producer = thread::spawn(move || {
            for id in 0..ITEMS {
                // A full ring hands the item back; it is dropped right here.
                let _ = p.push(Tracked {
                    id,
                    drops: Arc::clone(&d),
                });
            }
        });
        if let Some(item) = c.pop() {
            assert_eq!(item.id, 0);
        }
        drop(c);
        producer.join().unwrap();
        assert_each_dropped_once(&drops);
    });
}
