//! The worker's state updates: [`Store::apply`] (last-writer-wins map plus
//! the O(1) order-independent digest) and [`VersionVector::observe`], each
//! beside the plainest map doing the same inserts.
//!
//! * `store_apply_new`: 10,000 records with distinct ids into an empty store
//!   (growth and rehashing included), 64 B content. Baseline: the same ids
//!   and content into an empty `HashMap<u64, Vec<u8>>`.
//! * `store_apply_overwrite`: one record with a higher version for an id
//!   already held (10,000 live ids), 64 B content. Baseline:
//!   `HashMap::insert` over an existing key.
//! * `vector_observe_in_order`: the next seq of one of 4 origins, in order
//!   (the common case: no gap). Baseline: `BTreeMap<u32, u64>::insert` of the
//!   same pair, i.e. the same map without gap tracking.
//! * `store_build`: 3,000,000 records with distinct spread-out ids (64 B
//!   contents) into an empty store sized for them: [`Store::build`], the
//!   bulk build a restart's replay uses (laid out first, then indexed in
//!   bucket order). Baseline: [`Store::apply`] one record at a time, as
//!   replay did before. Three million, because the difference is in cache
//!   misses on the id index: at 1,000,000 records its 10 MB fit in this
//!   machine's 32 MB L3 and both take the same time.
//! * `compact`: compacting two sealed segments holding 730,000 records of
//!   64 B over 100,000 ids (what workload 2's overwrites leave): the
//!   store's 100,000 live records walked, encoded in chunks as the worker's
//!   loop does, and written, fsynced and put in place as its compaction
//!   thread does. Baseline: one plain read of the same segments
//!   (`log::replay`), the least a compaction that re-reads the log must do
//!   (the one before read them twice).
//! * `recover`: a worker's start-up replay of a 500,000-record log (40 B
//!   contents) into its store, on one thread and on
//!   [`rrstore::recover::default_threads`] threads (one shard each).
//!   Baseline: the one-thread replay.
//!
//! Run: `cargo bench -p rrstore --bench store`.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rrstore::msg::RecordRef;
use rrstore::store::Store;
use rrstore::vector::VersionVector;

const IDS: usize = 10_000;
const ORIGINS: u64 = 4;

/// Spread-out ids, as clients pick them (not 0, 1, 2...).
fn ids() -> Vec<u64> {
    (0..IDS as u64)
        .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5555)
        .collect()
}

fn content() -> Vec<u8> {
    (0..64u8).map(|i| i.wrapping_mul(37)).collect()
}

fn record(id: u64, version: u64, content: &[u8]) -> RecordRef<'_> {
    RecordRef {
        origin: (version % ORIGINS) as u32 + 1,
        seq: version,
        version,
        id,
        content,
    }
}

fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500));
    g
}

fn apply_new(c: &mut Criterion) {
    let (ids, body) = (ids(), content());
    let records: Vec<RecordRef<'_>> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| record(id, i as u64 + 1, &body))
        .collect();
    let mut g = group(c, "store_apply_new");
    g.throughput(Throughput::Elements(IDS as u64));
    g.bench_function("rrstore Store::apply", |b| {
        b.iter_batched(
            Store::new,
            |mut s| {
                for r in &records {
                    assert!(s.apply(black_box(r)));
                }
                s // dropped outside the timing
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("HashMap<u64, Vec<u8>>::insert", |b| {
        b.iter_batched(
            HashMap::<u64, Vec<u8>>::new,
            |mut m| {
                for r in &records {
                    let r = black_box(r);
                    assert!(m.insert(r.id, r.content.to_vec()).is_none());
                }
                m
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn apply_overwrite(c: &mut Criterion) {
    let (ids, body) = (ids(), content());
    let mut g = group(c, "store_apply_overwrite");
    g.throughput(Throughput::Elements(1));

    let mut store = Store::new();
    for (i, &id) in ids.iter().enumerate() {
        store.apply(&record(id, i as u64 + 1, &body));
    }
    let mut version = IDS as u64;
    g.bench_function("rrstore Store::apply", |b| {
        b.iter(|| {
            version += 1;
            let id = ids[version as usize % IDS];
            // A higher version always wins, so every call replaces an entry.
            assert!(store.apply(black_box(&record(id, version, &body))));
        })
    });
    assert_eq!(store.len(), IDS);

    let mut map: HashMap<u64, Vec<u8>> = ids.iter().map(|&id| (id, body.clone())).collect();
    let mut n = 0usize;
    g.bench_function("HashMap<u64, Vec<u8>>::insert", |b| {
        b.iter(|| {
            n += 1;
            let r = black_box(record(ids[n % IDS], n as u64, &body));
            assert!(map.insert(r.id, r.content.to_vec()).is_some());
        })
    });
    g.finish();
}

fn observe_in_order(c: &mut Criterion) {
    let mut g = group(c, "vector_observe_in_order");
    g.throughput(Throughput::Elements(1));

    let mut vv = VersionVector::new();
    let mut i = 0u64;
    g.bench_function("rrstore VersionVector::observe", |b| {
        b.iter(|| {
            let (origin, seq) = ((i % ORIGINS) as u32 + 1, i / ORIGINS + 1);
            i += 1;
            assert!(vv.observe(black_box(origin), black_box(seq)));
        })
    });
    assert_eq!(vv.pending_above(), 0, "observations were not in order");

    let mut map = BTreeMap::<u32, u64>::new();
    let mut i = 0u64;
    g.bench_function("BTreeMap<u32, u64>::insert", |b| {
        b.iter(|| {
            let (origin, seq) = ((i % ORIGINS) as u32 + 1, i / ORIGINS + 1);
            i += 1;
            black_box(map.insert(black_box(origin), black_box(seq)));
        })
    });
    g.finish();
}

fn build(c: &mut Criterion) {
    const RECORDS: u64 = 3_000_000;
    let body = content();
    let records: Vec<RecordRef<'_>> = (0..RECORDS)
        .map(|i| record(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5555, i + 1, &body))
        .collect();
    let mut g = c.benchmark_group("store_build");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(RECORDS));
    g.bench_function("rrstore Store::build", |b| {
        b.iter_batched(
            || Store::with_capacity(records.len()),
            |mut s| {
                s.build(|apply| {
                    records.iter().for_each(|r| apply(black_box(r)));
                    Ok::<(), ()>(())
                })
                .expect("infallible feed");
                assert_eq!(s.len() as u64, RECORDS);
                s
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("Store::apply one by one", |b| {
        b.iter_batched(
            || Store::with_capacity(records.len()),
            |mut s| {
                for r in &records {
                    s.apply(black_box(r));
                }
                assert_eq!(s.len() as u64, RECORDS);
                s
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn compact(c: &mut Criterion) {
    const RECORDS: u64 = 730_000;
    let dir = std::env::temp_dir().join(format!("rrstore-bench-compact-{}", std::process::id()));
    let content = [7u8; 64];
    let write_segments = || {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("bench dir");
        let mut seq = 0;
        for n in 1..=2u64 {
            let path = rrstore::segments::sealed_path(&dir, n);
            let mut log = rrstore::log::LogWriter::open(&path).expect("segment");
            for _ in 0..RECORDS / 2 {
                seq += 1;
                let id = (seq * 7919) % 100_000;
                log.append_record(&record(id, seq, &content));
                if seq % 10_000 == 0 {
                    log.flush().expect("flush");
                }
            }
            log.flush().expect("flush");
        }
        rrstore::segments::sealed(&dir).expect("segments")
    };
    let segs = write_segments();
    // The live set those segments replay to: what the worker holds.
    let mut store = Store::new();
    let mut vv = VersionVector::new();
    for (_, path) in &segs {
        rrstore::log::replay(path, |e| {
            if let rrstore::log::LogEntry::Record(r) = &e {
                store.apply(r);
            }
            e.note_in(&mut vv);
        })
        .expect("replay");
    }
    let vector = vv.to_vec();
    let mut g = c.benchmark_group("compact");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(RECORDS));
    g.bench_function("one read of the segments (log::replay)", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for (_, path) in &segs {
                rrstore::log::replay(path, |_| n += 1).expect("replay");
            }
            assert_eq!(n, RECORDS);
        })
    });
    // Replaces the segments by the live set: after the first run, each
    // run replaces the previous output (the same work).
    let mut chunk = Vec::with_capacity(rrstore::segments::CHUNK_BYTES + (64 << 10));
    g.bench_function("rrstore compaction from the store", |b| {
        b.iter(|| {
            let upto = rrstore::segments::sealed(&dir).expect("segments")[0].0;
            let mut rewrite = rrstore::segments::Rewrite::begin(&dir, upto).expect("begin");
            let mut walk = store.walk();
            loop {
                chunk.clear();
                let done = rrstore::segments::encode_live(&store, &mut walk, &mut chunk);
                rewrite.write(&chunk).expect("write");
                if done {
                    break;
                }
            }
            rewrite.commit(&vector, &[]).expect("commit")
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn recover(c: &mut Criterion) {
    const RECORDS: u64 = 500_000;
    let dir = std::env::temp_dir().join(format!("rrstore-bench-recover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    let mut log = rrstore::log::LogWriter::open(&dir.join("records.log")).expect("log");
    let content = [7u8; 40];
    for i in 0..RECORDS {
        log.append_record(&record(
            i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            i + 1,
            &content,
        ));
        if i % 10_000 == 0 {
            log.flush().expect("flush");
        }
    }
    log.flush().expect("flush");
    let mut g = c.benchmark_group("recover");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(RECORDS));
    let threads = rrstore::recover::default_threads();
    for t in [1, threads] {
        g.bench_function(format!("{t} thread(s)"), |b| {
            b.iter(|| {
                let (store, _, _) = rrstore::recover::recover(&dir, t).expect("recover");
                assert_eq!(store.len() as u64, RECORDS);
                store
            })
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(
    benches,
    apply_new,
    apply_overwrite,
    observe_in_order,
    build,
    compact,
    recover
);
criterion_main!(benches);
