//! Lock-free single-producer single-consumer (SPSC) ring buffer.
//!
//! Carries notifications and work items between a mio event loop and its one
//! helper thread: the LB's processed-log writer and the worker's fsync thread.
//! [`channel`] allocates once; `push`/`pop` never lock, block or allocate,
//! and their batch forms ([`Producer::push_iter`], [`Consumer::pop_into`])
//! publish a whole batch with one counter store.
//!
//! # Invariants
//!
//! * `head` (next item to pop) and `tail` (next slot to fill) are monotonically
//!   increasing counters that wrap at `usize::MAX` (all arithmetic on them is
//!   wrapping); only the consumer advances `head`, only the producer `tail`.
//! * `0 <= tail - head <= capacity`.
//! * Counter `i` lives in slot `i & mask`: the slot array is `capacity` rounded
//!   up to a power of two, so this survives wrapping; users never see more
//!   than `capacity` items.
//! * Slot `i & mask` holds a live value iff `i` lies in `[head, tail)` (a
//!   slot outside may hold a value leaked by a panicking `push_iter`
//!   iterator, never read or dropped).
//! * A side publishes its counter with Release and the other loads it with
//!   Acquire, which orders every slot write before the read it enables. Each
//!   side caches the other's counter and reloads it only when the cached one
//!   leaves too little: the ring looks full (producer) or empty (consumer),
//!   or too full or too empty for the batch asked for.

use std::mem::MaybeUninit;

use sync::{Arc, AtomicBool, AtomicUsize, Ordering, UnsafeCell};

/// Switches between loom's model-checked primitives and std's, so the ring
/// code itself is identical in both builds.
mod sync {
    #[cfg(loom)]
    pub(super) use loom::{cell::UnsafeCell, sync::atomic::*, sync::Arc};
    #[cfg(not(loom))]
    pub(super) use std::sync::{atomic::*, Arc};

    /// `std::cell::UnsafeCell` with loom's closure-based access API.
    /// Transparent, so a slice of them is laid out as a slice of `T`
    /// (`Shared::move_out` copies runs of slots at once).
    #[cfg(not(loom))]
    #[repr(transparent)]
    pub(super) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    #[cfg(not(loom))]
    impl<T> UnsafeCell<T> {
        pub(super) fn new(value: T) -> Self {
            Self(std::cell::UnsafeCell::new(value))
        }
        pub(super) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }
        pub(super) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

/// Keeps its contents on a cache line (pair) of its own, so the producer's
/// and consumer's counters do not false-share.
#[repr(align(128))]
struct CachePadded<T>(T);

/// State shared by the two handles.
struct Shared<T> {
    /// Counter of the next item to pop. Any `usize` (wrapping); stored only by
    /// the consumer, always in `[tail - capacity, tail]`.
    head: CachePadded<AtomicUsize>,
    /// Counter of the next slot to fill. Any `usize` (wrapping); stored only by
    /// the producer, always in `[head, head + capacity]`.
    tail: CachePadded<AtomicUsize>,
    /// Set (Release) by whichever handle is dropped first; loaded with Acquire.
    abandoned: AtomicBool,
    /// User-visible capacity, `>= 1`.
    capacity: usize,
    /// `slots.len() - 1`; `slots.len()` is `capacity.next_power_of_two()`.
    mask: usize,
    /// Slot `i & mask` holds a live `T` iff `i` is in `[head, tail)`.
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
}

impl<T> Shared<T> {
    /// Moves the values of counters `from .. from + dst.len()` into `dst`.
    ///
    /// # Safety
    ///
    /// Those counters must lie in `[head, tail)` (so `dst.len() <=
    /// capacity`), the producer's writes to them must have been acquired,
    /// and the caller must advance `head` past them before anything reads
    /// them again: each value is moved out exactly once.
    unsafe fn move_out(&self, from: usize, dst: &mut [MaybeUninit<T>]) {
        #[cfg(not(loom))]
        {
            // The slots are one run, or two when the counters wrap past
            // the end of the array: copied as such, not item by item.
            let start = from & self.mask;
            let first = dst.len().min(self.slots.len() - start);
            // `UnsafeCell` (ours and std's) and `MaybeUninit` are
            // transparent: the slots are laid out as `MaybeUninit<T>`s.
            let base = self.slots.as_ptr().cast::<MaybeUninit<T>>();
            // SAFETY: `start + first <= slots.len()` and the second run,
            // `dst.len() - first <= capacity - first`, ends before `start`
            // when it is not empty (`dst.len() <= capacity <= slots.len()`),
            // so both sources are in bounds and do not overlap `dst`, a
            // separate allocation. The caller guarantees the values are
            // initialised, published and moved out only here.
            unsafe {
                std::ptr::copy_nonoverlapping(base.add(start), dst.as_mut_ptr(), first);
                std::ptr::copy_nonoverlapping(base, dst.as_mut_ptr().add(first), dst.len() - first);
            }
        }
        // Loom tracks each cell's accesses: one at a time through them.
        #[cfg(loom)]
        for (i, d) in dst.iter_mut().enumerate() {
            self.slots[from.wrapping_add(i) & self.mask].with(|p| {
                // SAFETY: as the caller guarantees for every counter here.
                d.write(unsafe { (*p).assume_init_read() });
            });
        }
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Both handles are gone; dropping the last `Arc` ordered their final
        // stores before this point, so Relaxed loads see the final counters.
        let head = self.head.0.load(Ordering::Relaxed);
        let tail = self.tail.0.load(Ordering::Relaxed);
        for n in 0..tail.wrapping_sub(head) {
            self.slots[head.wrapping_add(n) & self.mask].with_mut(|p| {
                // SAFETY: the counter `head + n` is in `[head, tail)`, so the
                // slot is initialised; it is dropped exactly once because no
                // handle is left to pop it (`&mut self`).
                unsafe { (*p).assume_init_drop() }
            });
        }
    }
}

/// Creates a ring holding at most `capacity` items; returns its two ends.
///
/// # Panics
///
/// Panics if `capacity` is 0, or if it is so large (over `usize::MAX / 2 + 1`)
/// that it cannot be rounded up to a power of two.
pub fn channel<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    assert!(capacity >= 1, "ringbuf::channel: capacity must be >= 1");
    let len = capacity
        .checked_next_power_of_two()
        .expect("ringbuf::channel: capacity too large");
    let slots = (0..len).map(|_| UnsafeCell::new(MaybeUninit::uninit()));
    let shared = Arc::new(Shared {
        head: CachePadded(AtomicUsize::new(0)),
        tail: CachePadded(AtomicUsize::new(0)),
        abandoned: AtomicBool::new(false),
        capacity,
        mask: len - 1,
        slots: slots.collect(),
    });
    let producer = Producer {
        shared: Arc::clone(&shared),
        tail: 0,
        head_cache: 0,
    };
    let consumer = Consumer {
        shared,
        head: 0,
        tail_cache: 0,
    };
    (producer, consumer)
}

/// The pushing end of a ring created by [`channel`].
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    /// Our own `tail`; always equal to `shared.tail` (we are its only writer).
    tail: usize,
    /// Last `head` loaded from `shared`; in `[old head, current head]`.
    head_cache: usize,
}

// SAFETY: a `Producer` only moves `T` values into the ring (to be taken out
// by the consumer, possibly on another thread), which is fine for `T: Send`.
// The shared counters are atomics and a slot is touched by only one side at a
// time, as ordered by the Release/Acquire protocol in the module docs.
unsafe impl<T: Send> Send for Producer<T> {}

impl<T> Producer<T> {
    /// Appends `value`, or hands it back as `Err(value)` if the ring is full.
    /// Never blocks.
    pub fn push(&mut self, value: T) -> Result<(), T> {
        let shared = &*self.shared;
        if self.tail.wrapping_sub(self.head_cache) == shared.capacity {
            self.head_cache = shared.head.0.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.head_cache) == shared.capacity {
                return Err(value);
            }
        }
        shared.slots[self.tail & shared.mask].with_mut(|p| {
            // SAFETY: `tail - head < capacity`, so counter `tail` is outside
            // `[head, tail)`: the slot is uninitialised and the consumer does
            // not touch it. The Acquire load of `head` ordered the consumer's
            // read of the slot's previous value before this write.
            unsafe { (*p).write(value) };
        });
        self.tail = self.tail.wrapping_add(1);
        shared.tail.0.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// Moves items from `items` into the ring until it is full or `items`
    /// runs out, and returns how many it moved: a batch costs one store of
    /// our counter, and a load of the consumer's only when the cached one
    /// leaves too little room. The ring had no room for the items left in
    /// `items`, which is not pulled further (keep the iterator to keep
    /// them: a dropped `Drain` drops its rest). Never blocks. At most
    /// `capacity` items per call.
    ///
    /// If `items` panics, the items it already gave are leaked (never
    /// dropped, never popped), not published.
    pub fn push_iter<I: Iterator<Item = T>>(&mut self, items: &mut I) -> usize {
        let shared = &*self.shared;
        let mut tail = self.tail;
        loop {
            let mut free = shared.capacity - tail.wrapping_sub(self.head_cache);
            if free < items.size_hint().0.max(1) {
                self.head_cache = shared.head.0.load(Ordering::Acquire);
                free = shared.capacity - tail.wrapping_sub(self.head_cache);
            }
            if free == 0 {
                break;
            }
            let start = tail;
            for value in items.by_ref().take(free) {
                shared.slots[tail & shared.mask].with_mut(|p| {
                    // SAFETY: `tail < head_cache + capacity <= head +
                    // slots.len()` (the cached head is no later than the
                    // real one), so counter `tail` shares its slot with no
                    // counter in `[head, self.tail)`: the slot holds no live
                    // value (at most one an earlier panic leaked) and the
                    // consumer does not touch it. The Acquire load that set
                    // `head_cache` ordered the consumer's read of the slot's
                    // previous value before this write. Nothing is
                    // published before the loop ends.
                    unsafe { (*p).write(value) };
                });
                tail = tail.wrapping_add(1);
            }
            // `items` ran out before the room did; otherwise look again (the
            // consumer may have made more room, but only of what was already
            // published, so this ends within `capacity` items).
            if tail.wrapping_sub(start) < free {
                break;
            }
        }
        let moved = tail.wrapping_sub(self.tail);
        if moved > 0 {
            self.tail = tail;
            shared.tail.0.store(tail, Ordering::Release);
        }
        moved
    }

    /// Number of items that can be pushed right now without failing (may be
    /// more by the time you push, never fewer).
    pub fn free_slots(&self) -> usize {
        let head = self.shared.head.0.load(Ordering::Acquire);
        self.shared.capacity - self.tail.wrapping_sub(head)
    }

    /// Maximum number of items the ring holds, as passed to [`channel`].
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// `true` once the [`Consumer`] has been dropped; pushed items will then
    /// never be popped (they are dropped with the ring).
    pub fn is_abandoned(&self) -> bool {
        self.shared.abandoned.load(Ordering::Acquire)
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        self.shared.abandoned.store(true, Ordering::Release);
    }
}

/// The popping end of a ring created by [`channel`].
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    /// Our own `head`; always equal to `shared.head` (we are its only writer).
    head: usize,
    /// Last `tail` loaded from `shared`; in `[old tail, current tail]`.
    tail_cache: usize,
}

// SAFETY: a `Consumer` only moves `T` values (pushed on possibly another
// thread) out of the ring, which is fine for `T: Send`. Slot access is
// ordered by the Release/Acquire protocol in the module docs.
unsafe impl<T: Send> Send for Consumer<T> {}

impl<T> Consumer<T> {
    /// Removes and returns the oldest item, or `None` if the ring is empty.
    pub fn pop(&mut self) -> Option<T> {
        let shared = &*self.shared;
        if self.head == self.tail_cache {
            self.tail_cache = shared.tail.0.load(Ordering::Acquire);
            if self.head == self.tail_cache {
                return None;
            }
        }
        let value = shared.slots[self.head & shared.mask].with(|p| {
            // SAFETY: `head` is in `[head, tail)`, so the slot is initialised;
            // the Acquire load of `tail` ordered the producer's write before
            // this read. Advancing `head` below marks it uninitialised, so the
            // value is moved out exactly once.
            unsafe { (*p).assume_init_read() }
        });
        self.head = self.head.wrapping_add(1);
        shared.head.0.store(self.head, Ordering::Release);
        Some(value)
    }

    /// Moves up to `max` of the oldest items, in order, onto the end of
    /// `out`, and returns how many: a batch costs one load of the
    /// producer's counter (at most) and one store of ours, not one each per
    /// item. `out` grows, if it must, before any item leaves the ring, so
    /// no allocation failure can strike halfway.
    pub fn pop_into(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        let shared = &*self.shared;
        if self.tail_cache.wrapping_sub(self.head) < max {
            self.tail_cache = shared.tail.0.load(Ordering::Acquire);
        }
        let n = self.tail_cache.wrapping_sub(self.head).min(max);
        if n == 0 {
            return 0;
        }
        out.reserve(n);
        // SAFETY: counters `head .. head + n` are below `tail_cache`, so in
        // `[head, tail)`, and the Acquire load of `tail` ordered the
        // producer's writes before these reads; `head` is advanced past
        // them below, before any other access.
        unsafe { shared.move_out(self.head, &mut out.spare_capacity_mut()[..n]) };
        // SAFETY: `move_out` initialised the first `n` spare elements (it
        // cannot panic between the reads and here).
        unsafe { out.set_len(out.len() + n) };
        self.head = self.head.wrapping_add(n);
        shared.head.0.store(self.head, Ordering::Release);
        n
    }

    /// Borrows the oldest item without removing it, or `None` if empty.
    pub fn peek(&self) -> Option<&T> {
        let shared = &*self.shared;
        if self.head == self.tail_cache && self.head == shared.tail.0.load(Ordering::Acquire) {
            return None;
        }
        shared.slots[self.head & shared.mask].with(|p| {
            // SAFETY: the slot is initialised (`head` is in `[head, tail)`, the
            // write was acquired through `tail` now or by an earlier load into
            // `tail_cache`). It stays initialised and untouched by the producer
            // while the returned borrow of `self` lives, because only `pop`
            // (which needs `&mut self`) advances `head`.
            Some(unsafe { (*p).assume_init_ref() })
        })
    }

    /// Number of items currently in the ring (may grow by the time you pop).
    pub fn len(&self) -> usize {
        let tail = self.shared.tail.0.load(Ordering::Acquire);
        tail.wrapping_sub(self.head)
    }

    /// `true` if the ring holds no items right now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Maximum number of items the ring holds, as passed to [`channel`].
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// `true` once the [`Producer`] has been dropped. If this returns `true`
    /// and a following `pop` returns `None`, no item will ever arrive.
    pub fn is_abandoned(&self) -> bool {
        self.shared.abandoned.load(Ordering::Acquire)
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        self.shared.abandoned.store(true, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{channel, Consumer, Producer};
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    /// Bumps the counter it points at when dropped.
    struct Counted<'a>(&'a AtomicUsize);
    impl Drop for Counted<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    /// A ring of `usize` whose counters start at `start`.
    fn channel_from(capacity: usize, start: usize) -> (Producer<usize>, Consumer<usize>) {
        let (mut p, mut c) = channel(capacity);
        p.shared.head.0.store(start, Relaxed);
        p.shared.tail.0.store(start, Relaxed);
        (p.tail, p.head_cache, c.head, c.tail_cache) = (start, start, start, start);
        (p, c)
    }

    #[test]
    fn full_returns_value_and_fifo() {
        let (mut p, mut c) = channel(5);
        assert_eq!((p.capacity(), c.capacity(), p.free_slots()), (5, 5, 5));
        (0..5).for_each(|i| p.push(i).unwrap());
        assert_eq!(p.push(99), Err(99));
        assert_eq!((p.free_slots(), c.len()), (0, 5));
        (0..5).for_each(|i| assert_eq!(c.pop(), Some(i)));
        assert_eq!(c.pop(), None);
        assert!(c.is_empty());
    }

    #[test]
    fn wraparound_capacity_3() {
        // Counters just below `usize::MAX`, so that they wrap too.
        let (mut p, mut c) = channel_from(3, usize::MAX - 100);
        let (mut next_in, mut next_out) = (0, 0);
        for round in 0..1000 {
            for _ in 0..round % 4 {
                match p.push(next_in) {
                    Ok(()) => next_in += 1,
                    Err(v) => assert_eq!((v, c.len()), (next_in, 3)),
                }
            }
            for _ in 0..(round + 1) % 4 {
                if let Some(v) = c.pop() {
                    assert_eq!(v, next_out);
                    next_out += 1;
                }
            }
            assert_eq!(c.len(), next_in - next_out);
            assert_eq!(p.free_slots(), 3 - (next_in - next_out));
        }
        assert!(next_out > 1000, "{next_out}");
    }

    #[test]
    fn leftovers_dropped_once() {
        let drops = AtomicUsize::new(0);
        let (mut p, mut c) = channel(4);
        (0..4).for_each(|_| assert!(p.push(Counted(&drops)).is_ok()));
        assert!(p.push(Counted(&drops)).is_err()); // handed back, dropped here
        assert_eq!(drops.load(Relaxed), 1);
        drop(c.pop());
        assert!(p.push(Counted(&drops)).is_ok());
        assert_eq!(drops.load(Relaxed), 2);
        drop(p);
        assert_eq!(drops.load(Relaxed), 2);
        drop(c);
        assert_eq!(drops.load(Relaxed), 6);
    }

    #[test]
    fn abandoned() {
        let (p, c) = channel::<u8>(2);
        assert!(!p.is_abandoned() && !c.is_abandoned());
        drop(c);
        assert!(p.is_abandoned());
        let (mut p, mut c) = channel::<u8>(2);
        p.push(7).unwrap();
        drop(p);
        assert!(c.is_abandoned());
        assert_eq!((c.pop(), c.pop()), (Some(7), None));
    }

    #[test]
    fn peek_then_pop() {
        let (mut p, mut c) = channel(2);
        assert_eq!(c.peek(), None);
        p.push("a").unwrap();
        p.push("b").unwrap();
        assert_eq!((c.peek(), c.peek()), (Some(&"a"), Some(&"a")));
        assert_eq!(c.pop(), Some("a"));
        assert_eq!(c.peek(), Some(&"b"));
        assert_eq!((c.pop(), c.peek()), (Some("b"), None));
    }

    #[test]
    fn capacity_one() {
        let (mut p, mut c) = channel(1);
        for i in 0..100 {
            assert_eq!(p.free_slots(), 1);
            p.push(i).unwrap();
            assert_eq!(p.push(i + 1), Err(i + 1));
            assert_eq!((c.peek(), c.len()), (Some(&i), 1));
            assert_eq!((c.pop(), c.pop()), (Some(i), None));
        }
    }

    #[test]
    fn batches_fill_to_capacity_and_leave_the_rest() {
        let (mut p, mut c) = channel(5);
        let mut items = 0..8;
        assert_eq!(p.push_iter(&mut items), 5);
        assert_eq!(items.next(), Some(5), "not pulled past what fitted");
        assert_eq!(p.push_iter(&mut (100..101)), 0);
        let mut out = vec![-1];
        assert_eq!(c.pop_into(&mut out, 2), 2);
        assert_eq!(out, [-1, 0, 1]);
        assert_eq!(p.push_iter(&mut (6..100)), 2);
        assert_eq!(c.pop_into(&mut out, 100), 5);
        assert_eq!(out, [-1, 0, 1, 2, 3, 4, 6, 7]);
        assert_eq!((c.pop_into(&mut out, 100), c.pop()), (0, None));
        assert_eq!(p.push_iter(&mut std::iter::empty()), 0);
    }

    #[test]
    fn batches_wrap_around_the_counters() {
        let (mut p, mut c) = channel_from(3, usize::MAX - 50);
        let (mut next_in, mut out) = (0, Vec::new());
        for round in 0..200 {
            next_in += p.push_iter(&mut (next_in..next_in + round % 5));
            // Single pops and batches interleave on the same counters.
            if round % 3 == 0 {
                out.extend(c.pop());
            }
            c.pop_into(&mut out, round % 4);
            assert_eq!(c.len(), next_in - out.len());
        }
        out.extend(std::iter::from_fn(|| c.pop()));
        assert_eq!(out, (0..next_in).collect::<Vec<_>>());
        assert!(next_in > 200, "{next_in}");
    }

    #[test]
    fn batched_items_are_dropped_once() {
        let drops = AtomicUsize::new(0);
        let (mut p, mut c) = channel(4);
        let mut items = (0..6).map(|_| Counted(&drops));
        assert_eq!(p.push_iter(&mut items), 4);
        drop(items); // the two it had no room for were never made
        assert_eq!(drops.load(Relaxed), 0);
        let mut out = Vec::new();
        assert_eq!(c.pop_into(&mut out, 3), 3);
        drop(out);
        assert_eq!(drops.load(Relaxed), 3);
        drop((p, c));
        assert_eq!(drops.load(Relaxed), 4);
    }

    #[test]
    fn a_panicking_batch_leaks_what_it_gave_and_publishes_nothing() {
        let drops = AtomicUsize::new(0);
        let (mut p, mut c) = channel(4);
        assert!(p.push(Counted(&drops)).is_ok());
        let mut given = 0;
        let mut items = std::iter::from_fn(|| {
            given += 1;
            assert!(given < 3, "the iterator fails on its third item");
            Some(Counted(&drops))
        });
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.push_iter(&mut items);
        }));
        assert!(panicked.is_err());
        // The two it gave are leaked: not in the ring, never dropped.
        assert_eq!((c.len(), drops.load(Relaxed)), (1, 0));
        // Their slots are reused as empty ones.
        assert_eq!(p.push_iter(&mut (0..3).map(|_| Counted(&drops))), 3);
        let mut out = Vec::new();
        assert_eq!(c.pop_into(&mut out, 10), 4);
        drop(out);
        drop((p, c));
        assert_eq!(drops.load(Relaxed), 4);
    }

    #[test]
    fn a_batch_is_not_stopped_short_by_a_low_size_hint() {
        let (mut p, mut c) = channel(4);
        assert_eq!(p.push_iter(&mut (0..3)), 3);
        assert_eq!(c.pop_into(&mut Vec::new(), 3), 3);
        // The cached head says 1 free slot, and a filter's size hint is 0:
        // the ring really has 4, and all 4 go in.
        assert_eq!(p.push_iter(&mut (10..20).filter(|_| true)), 4);
        assert_eq!(c.len(), 4);
    }

    #[test]
    #[should_panic(expected = "capacity must be >= 1")]
    fn zero_capacity_panics() {
        let _ = channel::<u8>(0);
    }
}
