//! A worker's record store: the live set of records, last-writer-wins.
//!
//! Invariants:
//! - For every id the store holds the record with the greatest
//!   `(version, origin)` of all records of that id ever applied. Applying is
//!   therefore commutative, associative and idempotent (a join), so two
//!   workers that applied the same set of records in any order hold the same
//!   store.
//! - `digest` is the wrapping sum over live entries of
//!   XXH3-128(content, seed = id): order-independent and updated in O(1) per
//!   apply, so `verify` never has to walk or sort the store.
//! - Each id lives in exactly one shard, chosen by [`shard_of`] from the
//!   id alone; each shard keeps its own digest and counters, and the
//!   store's figures are their sums, whatever the shard count.

use crate::msg::{stamp_fits, RecordRef, MAX_SEQ, MAX_VERSION};
use std::hash::{BuildHasher, RandomState};
use xxhash_rust::xxh3::xxh3_128_with_seed;

/// Records a bulk build lays out before indexing them ([`Shard::index_pending`]):
/// 262,144, about 29 MB beside the live set at most (97 in unit tests, so
/// that their few thousand records cross chunk boundaries).
const BUILD_CHUNK: usize = if cfg!(test) { 97 } else { 1 << 18 };

/// A bulk build's state for one shard (see [`Shard::push_unindexed`]).
#[derive(Default)]
struct Bulk {
    /// Laid out but not indexed yet: hash and position.
    pending: Vec<(u64, u32)>,
    /// Duplicates that lost: out of the index, the digest and the slab,
    /// still in the dense arrays.
    dead: Vec<u32>,
}

/// Contents up to this many bytes live inside their [`Entry`]; longer
/// ones in their shard's `overflow` slab. 64 B covers the small values a
/// record store mostly holds (and the benchmarks' 64 B records) with no
/// heap allocation per record: a boxed content costs an allocation on
/// every PUT, and 16 B of pointer plus the allocator's header and rounding
/// (a 64 B content took 80 B with glibc) on top of the bytes.
pub const INLINE_CONTENT: usize = 64;

/// One live record, without its id (that sits beside it in `Shard::ids`).
/// 82 bytes, packed: the 18 B header and the inline bytes.
///
/// Packed, an entry is 6 B smaller than the aligned one with two u64s
/// (88 B), 6 MB per million records: 3 B of padding after the length, and
/// 3 B because a version fits in 7 bytes and a seq in 6 ([`MAX_VERSION`],
/// [`MAX_SEQ`]; the decoders refuse larger ones, and [`Shard::apply`]
/// stops the process rather than store one). x86-64 and AArch64 load
/// unaligned words at no extra cost, and an 88 B entry spanned two cache
/// lines as often as this one does. Fields are only ever read and written
/// by value (`inline`, a byte array, has no alignment to lose). Not
/// `Clone`: a copy of a long entry would share its overflow slot.
#[repr(C, packed)]
struct Entry {
    /// The version (bytes 0..7) and the seq (7..13), little-endian.
    stamp: [u8; 13],
    origin: u32,
    /// The content's length when it is inline (at most
    /// [`INLINE_CONTENT`]), or [`LONG`].
    len: u8,
    /// The content when it is inline; otherwise the first four bytes are
    /// the little-endian key of the content in `Shard::overflow`.
    inline: [u8; INLINE_CONTENT],
}

/// [`Entry::len`] of an entry whose content sits in `Shard::overflow`
/// (which knows its length).
const LONG: u8 = u8::MAX;
const _: () = assert!(INLINE_CONTENT < LONG as usize);
const _: () = assert!(std::mem::size_of::<Entry>() == 18 + INLINE_CONTENT);
const _: () = assert!(MAX_VERSION < 1 << 56 && MAX_SEQ < 1 << 48);

impl Entry {
    fn is_long(&self) -> bool {
        self.len == LONG
    }

    /// One 8-byte load: bytes 0..8, less the seq's first byte.
    fn version(&self) -> u64 {
        let [a, b, c, d, e, f, g, h, ..] = self.stamp;
        u64::from_le_bytes([a, b, c, d, e, f, g, h]) & MAX_VERSION
    }

    /// One 8-byte load: bytes 5..13, less the version's last two bytes.
    fn seq(&self) -> u64 {
        let [.., a, b, c, d, e, f, g, h] = self.stamp;
        u64::from_le_bytes([a, b, c, d, e, f, g, h]) >> 16
    }

    /// Sets version and seq. Decoders refuse records whose stamp does not
    /// fit ([`stamp_fits`]), so only a worker's own seq could get here out
    /// of range, after 2^48 writes: cutting it would break convergence
    /// silently, so the process stops loudly instead (as [`next_position`]).
    fn set_stamp(&mut self, version: u64, seq: u64) {
        if !stamp_fits(version, seq) {
            log::error!("a record's version {version} or seq {seq} is out of range; stopping");
            std::process::exit(2);
        }
        self.stamp[..7].copy_from_slice(&version.to_le_bytes()[..7]);
        self.stamp[7..].copy_from_slice(&seq.to_le_bytes()[..6]);
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // By value: a packed struct's fields cannot be borrowed.
        let (origin, len) = (self.origin, self.len);
        f.debug_struct("Entry")
            .field("version", &self.version())
            .field("seq", &self.seq())
            .field("origin", &origin)
            .field("len", &len)
            .finish_non_exhaustive()
    }
}

/// A position in a [`Store::walk`].
#[derive(Debug)]
pub struct StoreWalk {
    shard: usize,
    pos: usize,
    /// Each shard's length when the walk began.
    ends: Vec<usize>,
}

/// One part of the store: the records whose id maps to it (see
/// [`shard_of`]), with its own digest and counters.
///
/// Layout: the records sit densely in `ids` and `entries` (same index;
/// a live record is never removed, only overwritten in place; a bulk
/// build drops the duplicates it laid out), and `index` is
/// an open-addressing table of 4-byte positions into them, hashed by id.
/// A map of `id -> Entry` would keep whole entries in its buckets, about
/// half of them empty at any time; this keeps 4 bytes per bucket.
/// Contents longer than [`INLINE_CONTENT`] sit in `overflow`, one slot per
/// such entry, freed when its entry is overwritten by a shorter content
/// or dropped as a duplicate by a bulk build.
#[derive(Debug, Default)]
struct Shard {
    index: hashbrown::HashTable<u32>,
    ids: Vec<u64>,
    entries: Vec<Entry>,
    overflow: slab::Slab<Long>,
    /// Keyed SipHash (std's default): clients choose ids, so the table's
    /// hashing must not be predictable.
    hasher: RandomState,
    digest: u128,
    content_bytes: u64,
    max_version: u64,
}

/// The live records, in one or more shards by id. The loop sees one store;
/// the shards exist so that a restart can rebuild them on several threads
/// at once ([`Store::apply_sharded`]). Every figure (`len`, `digest`, ...)
/// is the sum over the shards, so it does not depend on the shard count.
#[derive(Debug)]
pub struct Store {
    shards: Box<[Shard]>,
}

impl Default for Store {
    fn default() -> Store {
        Store::with_shards(1, 0)
    }
}

/// Whether `a` beats `b` under last-writer-wins: higher version first, then
/// higher origin as the deterministic tie-break. Equal keys are the same write.
fn beats(a: (u64, u32), b: (u64, u32)) -> bool {
    a > b
}

/// The dense position a shard's `len`-th record takes. Positions are u32:
/// 4 billion records per shard, far beyond any memory this runs in.
/// Dropping a record would break convergence silently: stop loudly instead.
fn next_position(len: usize) -> u32 {
    let Ok(position) = u32::try_from(len) else {
        log::error!("a store shard holds 2^32 records; stopping");
        std::process::exit(2);
    };
    position
}

/// A content longer than [`INLINE_CONTENT`], in its shard's `overflow`,
/// with its digest term ([`entry_hash`]) kept beside it: an overwrite
/// takes the old term out of the digest without hashing the old content
/// again (at 1 KiB contents, XXH3 over old and new contents was 7 % of
/// the cluster's CPU). 16 B more per long record; none for inline ones.
#[derive(Debug)]
struct Long {
    hash: u128,
    bytes: Box<[u8]>,
}

/// A new entry holding `r`, its content inline or in `overflow`; `hash`
/// is its [`entry_hash`].
fn new_entry(overflow: &mut slab::Slab<Long>, r: &RecordRef<'_>, hash: u128) -> Entry {
    let mut e = Entry {
        stamp: [0; 13],
        origin: r.origin,
        len: 0,
        inline: [0; INLINE_CONTENT],
    };
    e.set_stamp(r.version, r.seq);
    Shard::store(overflow, &mut e, r.content, hash);
    e
}

/// `e`'s digest term: kept for a long content, computed for an inline one.
fn hash_of(overflow: &slab::Slab<Long>, id: u64, e: &Entry) -> u128 {
    if e.is_long() {
        if let Some(long) = overflow.get(overflow_key(e)) {
            return long.hash;
        }
    }
    entry_hash(id, content_of(overflow, e))
}

/// `e`'s content, inline or in `overflow` (its shard's).
fn content_of<'a>(overflow: &'a slab::Slab<Long>, e: &'a Entry) -> &'a [u8] {
    if !e.is_long() {
        return &e.inline[..usize::from(e.len)];
    }
    // Every long entry holds a live key: `Shard::store`
    // puts one there, and only it and `Shard::index_pending` (for a
    // duplicate that lost, which is then never read again) free a slot.
    match overflow.get(overflow_key(e)) {
        Some(long) => &long.bytes,
        None => unreachable!("an entry's overflow slot is missing"),
    }
}

/// The overflow key of an entry whose content is longer than INLINE_CONTENT.
fn overflow_key(e: &Entry) -> usize {
    let [a, b, c, d, ..] = e.inline;
    u32::from_le_bytes([a, b, c, d]) as usize
}

fn entry_hash(id: u64, content: &[u8]) -> u128 {
    xxh3_128_with_seed(content, id)
}

/// Which of `shards` holds `id`: a multiplicative hash of the id, scaled
/// to the shard count (no division).
fn shard_of(id: u64, shards: usize) -> usize {
    let h = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    ((h * shards as u64) >> 32) as usize
}

impl Shard {
    fn with_capacity(records: usize) -> Shard {
        Shard {
            index: hashbrown::HashTable::with_capacity(records),
            ids: Vec::with_capacity(records),
            entries: Vec::with_capacity(records),
            ..Shard::default()
        }
    }

    fn position(&self, id: u64) -> Option<usize> {
        let hash = self.hasher.hash_one(id);
        let ids = &self.ids;
        self.index
            .find(hash, |&i| ids[i as usize] == id)
            .map(|&i| i as usize)
    }

    /// The record at dense position `at` (which must be below `ids.len()`).
    fn record(&self, at: usize) -> RecordRef<'_> {
        let e = &self.entries[at];
        RecordRef {
            origin: e.origin,
            seq: e.seq(),
            version: e.version(),
            id: self.ids[at],
            content: content_of(&self.overflow, e),
        }
    }

    /// Writes `content` (whose [`entry_hash`] is `hash`) into `e`, reusing
    /// or freeing `e`'s overflow slot. `e` must be new (`len` 0) or one of
    /// this shard's entries.
    fn store(overflow: &mut slab::Slab<Long>, e: &mut Entry, content: &[u8], hash: u128) {
        let was_long = e.is_long();
        if content.len() <= INLINE_CONTENT {
            if was_long {
                overflow.remove(overflow_key(e));
            }
            e.inline[..content.len()].copy_from_slice(content);
            e.len = content.len() as u8; // at most INLINE_CONTENT
            return;
        }
        if was_long {
            let slot = &mut overflow[overflow_key(e)];
            if slot.bytes.len() == content.len() {
                slot.bytes.copy_from_slice(content);
            } else {
                slot.bytes = content.into();
            }
            slot.hash = hash;
        } else {
            // Keys are dense (one per long entry) and entries are fewer
            // than 2^32 per shard, so this always fits.
            let long = Long {
                hash,
                bytes: content.into(),
            };
            let Ok(key) = u32::try_from(overflow.insert(long)) else {
                log::error!("a store shard holds 2^32 long contents; stopping");
                std::process::exit(2);
            };
            e.inline[..4].copy_from_slice(&key.to_le_bytes());
        }
        e.len = LONG;
    }

    fn reserve(&mut self, additional: usize) {
        let (ids, hasher) = (&self.ids, &self.hasher);
        self.index
            .reserve(additional, |&i| hasher.hash_one(ids[i as usize]));
        self.ids.reserve(additional);
        self.entries.reserve(additional);
    }

    fn apply(&mut self, r: &RecordRef<'_>) -> bool {
        self.max_version = self.max_version.max(r.version);
        // One hash of the id, whether it is new or not.
        let hash = self.hasher.hash_one(r.id);
        let (ids, hasher) = (&self.ids, &self.hasher);
        let slot = self.index.entry(
            hash,
            |&i| ids[i as usize] == r.id,
            |&i| hasher.hash_one(ids[i as usize]),
        );
        match slot {
            hashbrown::hash_table::Entry::Occupied(o) => {
                let e = &mut self.entries[*o.get() as usize];
                if !beats((r.version, r.origin), (e.version(), e.origin)) {
                    return false;
                }
                let hash = entry_hash(r.id, r.content);
                self.digest = self
                    .digest
                    .wrapping_sub(hash_of(&self.overflow, r.id, e))
                    .wrapping_add(hash);
                self.content_bytes -= content_of(&self.overflow, e).len() as u64;
                e.set_stamp(r.version, r.seq);
                e.origin = r.origin;
                Shard::store(&mut self.overflow, e, r.content, hash);
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(next_position(self.entries.len()));
                self.ids.push(r.id);
                let hash = entry_hash(r.id, r.content);
                self.digest = self.digest.wrapping_add(hash);
                self.entries.push(new_entry(&mut self.overflow, r, hash));
            }
        }
        self.content_bytes += r.content.len() as u64;
        true
    }

    /// Lays `r` out densely as [`Shard::apply`] would for a new id, but
    /// leaves it out of the index: [`Shard::index_pending`] indexes the
    /// records `bulk` collects (hash and position), a chunk of
    /// [`BUILD_CHUNK`] at a time. Its content counts in the digest at once
    /// (read here, while it is in cache); a duplicate id's loser is taken
    /// out again when the chunk is indexed.
    fn push_unindexed(&mut self, r: &RecordRef<'_>, bulk: &mut Bulk) {
        let position = next_position(self.ids.len());
        bulk.pending.push((self.hasher.hash_one(r.id), position));
        self.ids.push(r.id);
        let hash = entry_hash(r.id, r.content);
        self.entries.push(new_entry(&mut self.overflow, r, hash));
        self.digest = self.digest.wrapping_add(hash);
        self.content_bytes += r.content.len() as u64;
        self.max_version = self.max_version.max(r.version);
        if bulk.pending.len() >= BUILD_CHUNK {
            self.index_pending(bulk);
        }
    }

    /// Indexes the records [`Shard::push_unindexed`] laid out since the
    /// last call (`bulk.pending`, emptied): the shard then reads as the one
    /// applying every record pushed so far one by one would give.
    ///
    /// Inserting into the index in the order records arrive touches a
    /// random bucket each time: at millions of records, a cache miss per
    /// record that took 60 % of a rebuild. Here a chunk is indexed in the
    /// order of its buckets, so the table is written front to back.
    /// Hashbrown starts probing at `hash & (buckets - 1)`; were that ever
    /// not so, the result would be the same, only slower. Of records with
    /// the same id, the last-writer-wins winner stays; the others leave the
    /// digest at once and the dense arrays once they are half of them (or
    /// at the end, [`Shard::finish_build`]), so an overwritten log needs
    /// room for about twice its live set and a chunk, and each record is
    /// moved a bounded number of times.
    fn index_pending(&mut self, bulk: &mut Bulk) {
        let (ids, hasher, entries) = (&self.ids, &self.hasher, &self.entries);
        self.index
            .reserve(bulk.pending.len(), |&i| hasher.hash_one(ids[i as usize]));
        // Buckets are the power of two above the capacity (7/8 of them).
        let mask = (self.index.capacity() as u64 + 1).next_power_of_two() - 1;
        bulk.pending.sort_unstable_by_key(|&(hash, _)| hash & mask);
        let first_loser = bulk.dead.len();
        for (hash, position) in bulk.pending.drain(..) {
            let id = ids[position as usize];
            match self.index.entry(
                hash,
                |&i| ids[i as usize] == id,
                |&i| hasher.hash_one(ids[i as usize]),
            ) {
                hashbrown::hash_table::Entry::Vacant(v) => {
                    v.insert(position);
                }
                hashbrown::hash_table::Entry::Occupied(mut o) => {
                    let new = &entries[position as usize];
                    let old = &entries[*o.get() as usize];
                    if beats((new.version(), new.origin), (old.version(), old.origin)) {
                        bulk.dead.push(std::mem::replace(o.get_mut(), position));
                    } else {
                        bulk.dead.push(position);
                    }
                }
            }
        }
        for &position in &bulk.dead[first_loser..] {
            let (id, e) = (
                self.ids[position as usize],
                &self.entries[position as usize],
            );
            self.digest = self.digest.wrapping_sub(hash_of(&self.overflow, id, e));
            self.content_bytes -= content_of(&self.overflow, e).len() as u64;
            if e.is_long() {
                self.overflow.remove(overflow_key(e));
            }
        }
        if bulk.dead.len() * 2 > self.ids.len() {
            self.drop_dead(&mut bulk.dead);
        }
    }

    /// Ends a bulk build: indexes what is pending, removes the dead and
    /// gives back room sized for them.
    fn finish_build(&mut self, bulk: &mut Bulk) {
        self.index_pending(bulk);
        self.drop_dead(&mut bulk.dead);
        self.trim_after_build();
    }

    /// Removes the entries at `dead` (emptied; positions no bucket points
    /// to, already out of the digest and the overflow slab) from the dense
    /// arrays, moving later entries down and renumbering the index.
    fn drop_dead(&mut self, dead: &mut Vec<u32>) {
        if dead.is_empty() {
            return;
        }
        dead.sort_unstable();
        let mut renumber: Vec<u32> = Vec::with_capacity(self.ids.len());
        let (mut kept, mut next_dead) = (0u32, dead.iter().peekable());
        for position in 0..self.ids.len() {
            if next_dead.next_if_eq(&&(position as u32)).is_some() {
                renumber.push(u32::MAX);
            } else {
                self.ids.swap(kept as usize, position);
                self.entries.swap(kept as usize, position);
                renumber.push(kept);
                kept += 1;
            }
        }
        self.ids.truncate(kept as usize);
        self.entries.truncate(kept as usize);
        for position in self.index.iter_mut() {
            *position = renumber[*position as usize];
        }
        dead.clear();
    }

    /// After a build: gives back what was sized for records that turned
    /// out to be overwritten (replay sizes the shard for every record in
    /// the log). Nothing happens when most of them were live.
    fn trim_after_build(&mut self) {
        let live = self.ids.len();
        if self.ids.capacity() > live + live / 4 + BUILD_CHUNK {
            self.ids.shrink_to(live);
            self.entries.shrink_to(live);
        }
        if self.index.capacity() > 4 * live.max(BUILD_CHUNK) {
            let (ids, hasher) = (&self.ids, &self.hasher);
            self.index
                .shrink_to(live, |&i| hasher.hash_one(ids[i as usize]));
        }
    }
}

impl Store {
    pub fn new() -> Store {
        Store::default()
    }

    /// A store with room for `records` entries (replay sizes it from the
    /// log, so it does not rehash its way up).
    pub fn with_capacity(records: usize) -> Store {
        Store::with_shards(1, records)
    }

    /// `shards` shards (at least 1) with room for `records` entries in all.
    pub fn with_shards(shards: usize, records: usize) -> Store {
        let shards = shards.max(1);
        let each = records.div_ceil(shards);
        Store {
            shards: (0..shards).map(|_| Shard::with_capacity(each)).collect(),
        }
    }

    /// Makes room for `records` entries in all, so that a joiner about to
    /// catch up that many does not rehash its way up (each doubling leaves
    /// the old table behind as freed heap between live contents).
    pub fn reserve_total(&mut self, records: usize) {
        let shards = self.shards.len();
        for s in self.shards.iter_mut() {
            let want = records.div_ceil(shards);
            s.reserve(want.saturating_sub(s.ids.len()));
        }
    }

    fn shard(&self, id: u64) -> &Shard {
        &self.shards[shard_of(id, self.shards.len())]
    }

    /// Applies `r`; returns true if it became the live entry for its id.
    pub fn apply(&mut self, r: &RecordRef<'_>) -> bool {
        let i = shard_of(r.id, self.shards.len());
        self.shards[i].apply(r)
    }

    /// Applies every record `feed` produces, one thread per shard: each
    /// thread runs `feed` itself (a replay re-reads the log) and keeps the
    /// records of its own shard, so no two threads touch one map; each
    /// builds in bulk, as [`Store::build`]. The result is the store a
    /// single thread would build from the same records (applying is a
    /// join: order does not matter). The first error any thread meets is
    /// returned.
    pub fn apply_sharded<E: Send>(
        &mut self,
        feed: impl Fn(&mut dyn FnMut(&RecordRef<'_>)) -> Result<(), E> + Sync,
    ) -> Result<(), E> {
        let n = self.shards.len();
        let feed = &feed;
        std::thread::scope(|scope| {
            let threads: Vec<_> = self
                .shards
                .iter_mut()
                .enumerate()
                .map(|(i, shard)| {
                    scope.spawn(move || {
                        let mut bulk = Bulk::default();
                        let fed = feed(&mut |r: &RecordRef<'_>| {
                            if shard_of(r.id, n) == i {
                                shard.push_unindexed(r, &mut bulk);
                            }
                        });
                        // Even after an error the shard stays consistent.
                        shard.finish_build(&mut bulk);
                        fed
                    })
                })
                .collect();
            let mut result = Ok(());
            for t in threads {
                match t.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        if result.is_ok() {
                            result = Err(e);
                        }
                    }
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            result
        })
    }

    /// Applies every record `feed` produces, on this thread, in bulk: the
    /// same store as applying them one by one, built faster (see
    /// `Shard::index_pending`). [`Store::apply_sharded`] is the same on a
    /// thread per shard. After an error from `feed` the store holds what
    /// came before it.
    pub fn build<E>(
        &mut self,
        feed: impl FnOnce(&mut dyn FnMut(&RecordRef<'_>)) -> Result<(), E>,
    ) -> Result<(), E> {
        let n = self.shards.len();
        let mut bulk: Vec<Bulk> = (0..n).map(|_| Bulk::default()).collect();
        let shards = &mut self.shards;
        let fed = feed(&mut |r: &RecordRef<'_>| {
            let i = shard_of(r.id, n);
            shards[i].push_unindexed(r, &mut bulk[i]);
        });
        for (shard, bulk) in self.shards.iter_mut().zip(&mut bulk) {
            shard.finish_build(bulk);
        }
        fed
    }

    /// The live record of `id`, if any.
    pub fn get(&self, id: u64) -> Option<RecordRef<'_>> {
        let shard = self.shard(id);
        shard.position(id).map(|at| shard.record(at))
    }

    /// Applies every entry of `other`: the join of both stores (a worker's
    /// records that arrived while its log's store was still being built).
    pub fn absorb(&mut self, other: Store) {
        for shard in other.shards.iter() {
            for at in 0..shard.ids.len() {
                self.apply(&shard.record(at));
            }
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.ids.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.ids.is_empty())
    }

    pub fn content_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.content_bytes).sum()
    }

    /// The bytes these records take in a log (see `crate::log`): what a
    /// fully compacted log of this store would hold.
    pub fn log_bytes(&self) -> u64 {
        self.len() as u64 * crate::log::RECORD_ENTRY_OVERHEAD + self.content_bytes()
    }

    pub fn max_version(&self) -> u64 {
        self.shards.iter().map(|s| s.max_version).max().unwrap_or(0)
    }

    pub fn digest(&self) -> [u8; 16] {
        let sum = self
            .shards
            .iter()
            .fold(0u128, |acc, s| acc.wrapping_add(s.digest));
        sum.to_be_bytes()
    }

    /// A walk over the records held now, in the store's dense order (see
    /// [`Store::next_in`]): nothing is copied, and a record is read when
    /// the walk reaches it, so it may be newer than when the walk began.
    pub fn walk(&self) -> StoreWalk {
        StoreWalk {
            shard: 0,
            pos: 0,
            ends: self.shards.iter().map(|s| s.ids.len()).collect(),
        }
    }

    /// The next record of `walk`, or `None` once it has visited every
    /// record the store held when it began (applying never removes a
    /// record, so their positions stay; later ones are not visited; only a
    /// bulk build moves records, and the worker builds only a store of its
    /// own, before it serves from it). A walk belongs
    /// to the store it came from: given another, it reads whatever sits at
    /// its positions there. The worker starts catch-ups only once its store
    /// is whole, and never replaces it afterwards (see `Worker`'s deferred
    /// catch-ups), so that never happens.
    pub fn next_in(&self, walk: &mut StoreWalk) -> Option<RecordRef<'_>> {
        loop {
            let end = *walk.ends.get(walk.shard)?;
            let shard = self.shards.get(walk.shard)?;
            if walk.pos < end.min(shard.ids.len()) {
                let at = walk.pos;
                walk.pos += 1;
                return Some(shard.record(at));
            }
            walk.shard += 1;
            walk.pos = 0;
        }
    }

    /// Every id, unsorted.
    pub fn ids(&self) -> Vec<u64> {
        let mut ids = Vec::with_capacity(self.len());
        for s in self.shards.iter() {
            ids.extend_from_slice(&s.ids);
        }
        ids
    }

    /// Every id in ascending order (for `dump`).
    pub fn sorted_ids(&self) -> Vec<u64> {
        let mut ids = self.ids();
        ids.sort_unstable();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(origin: u32, seq: u64, version: u64, id: u64, content: &[u8]) -> RecordRef<'_> {
        RecordRef {
            origin,
            seq,
            version,
            id,
            content,
        }
    }

    #[test]
    fn last_writer_wins_in_any_order() {
        let records = [
            rec(1, 1, 10, 5, b"a"),
            rec(2, 1, 12, 5, b"b"),
            rec(3, 1, 12, 5, b"c"), // same version: higher origin wins
            rec(1, 2, 11, 5, b"d"),
            rec(2, 2, 1, 6, b"e"),
        ];
        let mut forward = Store::new();
        let mut backward = Store::new();
        for r in &records {
            forward.apply(r);
        }
        for r in records.iter().rev() {
            backward.apply(r);
            backward.apply(r); // idempotent
        }
        assert_eq!(forward.get(5).unwrap().content, b"c");
        assert_eq!(forward.digest(), backward.digest());
        assert_eq!(forward.len(), 2);
        assert_eq!(forward.content_bytes(), 2);
        assert_eq!(forward.max_version(), 12);
    }

    #[test]
    fn contents_on_either_side_of_the_inline_limit_survive_overwrites() {
        // Lengths around INLINE_CONTENT, overwritten in every order: each
        // id always reads back its newest content, the digest matches a
        // store that saw only the final records, and exactly the long
        // live contents hold an overflow slot.
        let lens = [
            0,
            1,
            4,
            INLINE_CONTENT - 1,
            INLINE_CONTENT,
            INLINE_CONTENT + 1,
            300,
        ];
        let contents: Vec<Vec<u8>> = (0..lens.len() * 3)
            .map(|i| vec![i as u8; lens[i % lens.len()]])
            .collect();
        let mut s = Store::new();
        let mut newest = std::collections::BTreeMap::new();
        let mut version = 0;
        for round in 0..contents.len() {
            for id in 0..20u64 {
                version += 1;
                let c = &contents[(round * 7 + id as usize * 3) % contents.len()];
                assert!(s.apply(&rec(1, version, version, id, c)));
                newest.insert(id, (version, c));
                let got = s.get(id).expect("just written");
                assert_eq!(got.content, &c[..], "id {id} round {round}");
                assert_eq!((got.version, got.seq, got.origin), (version, version, 1));
            }
        }
        let mut fresh = Store::new();
        for (&id, &(v, c)) in &newest {
            fresh.apply(&rec(1, v, v, id, c));
        }
        assert_eq!(s.digest(), fresh.digest());
        assert_eq!(s.content_bytes(), fresh.content_bytes());
        let long = newest
            .values()
            .filter(|(_, c)| c.len() > INLINE_CONTENT)
            .count();
        assert_eq!(s.shards[0].overflow.len(), long, "no overflow slot leaks");
        let mut absorbed = Store::with_shards(2, 0);
        absorbed.absorb(s);
        assert_eq!(absorbed.digest(), fresh.digest());
    }

    #[test]
    fn a_bulk_build_is_the_store_of_applying_one_by_one() {
        // Duplicated ids in every order, the same write twice, contents on
        // both sides of the inline limit (so losers free overflow slots).
        let contents: Vec<Vec<u8>> = (0..40).map(|i| vec![i as u8; i * 5]).collect();
        let mut records: Vec<RecordRef<'_>> = (0..4_000u64)
            .map(|i| {
                let id = (i * 7919) % 900;
                rec(
                    (i % 4) as u32 + 1,
                    i,
                    i % 613,
                    id,
                    &contents[(i % 40) as usize],
                )
            })
            .collect();
        records.extend_from_within(100..300);
        let mut one = Store::new();
        for r in &records {
            one.apply(r);
        }
        let check = |built: &mut Store, what: &str| {
            assert_eq!(built.digest(), one.digest(), "{what}");
            assert_eq!(built.len(), one.len(), "{what}");
            assert_eq!(built.content_bytes(), one.content_bytes(), "{what}");
            assert_eq!(built.max_version(), one.max_version(), "{what}");
            for id in one.sorted_ids() {
                assert_eq!(built.get(id), one.get(id), "{what}: id {id}");
            }
            let slots: usize = built.shards.iter().map(|s| s.overflow.len()).sum();
            let long = one
                .ids()
                .iter()
                .filter(|&&id| one.get(id).unwrap().content.len() > INLINE_CONTENT)
                .count();
            assert_eq!(slots, long, "{what}: losers' overflow slots are freed");
            // The index points at the right places: later applies find them.
            for id in one.sorted_ids() {
                assert!(built.apply(&rec(9, id, 10_000, id, b"later")), "{what}");
                assert_eq!(built.get(id).unwrap().content, b"later", "{what}");
            }
            assert_eq!(built.len(), one.len(), "{what}: no id was indexed twice");
        };
        for shards in [1, 3] {
            let mut built = Store::with_shards(shards, 0);
            built
                .build(|apply| {
                    records.iter().for_each(&mut *apply);
                    Ok::<(), ()>(())
                })
                .unwrap();
            check(&mut built, &format!("build, {shards} shards"));
            let mut sharded = Store::with_shards(shards, records.len());
            sharded
                .apply_sharded(|apply| {
                    records.iter().for_each(&mut *apply);
                    Ok::<(), ()>(())
                })
                .unwrap();
            check(&mut sharded, &format!("apply_sharded, {shards} shards"));
        }
        // Built on top of records already applied (a duplicate of a held
        // id may win or lose against the one held).
        let mut on_top = Store::with_shards(2, 0);
        for r in &records[..1_000] {
            on_top.apply(r);
        }
        on_top
            .build(|apply| {
                records[1_000..].iter().for_each(&mut *apply);
                Ok::<(), ()>(())
            })
            .unwrap();
        check(&mut on_top, "build on a non-empty store");
        // A feed that fails midway leaves a consistent (partial) store.
        let mut partial = Store::with_shards(2, 0);
        let r = partial.build(|apply| {
            records[..500].iter().for_each(&mut *apply);
            Err("torn")
        });
        assert_eq!(r, Err("torn"));
        for id in partial.sorted_ids() {
            assert!(partial.get(id).is_some());
        }
    }

    #[test]
    fn an_entry_is_82_bytes_and_a_long_content_slot_32() {
        assert_eq!(std::mem::size_of::<Entry>(), 18 + INLINE_CONTENT);
        assert_eq!(std::mem::align_of::<Entry>(), 1);
        assert_eq!(std::mem::size_of::<Long>(), 32);
    }

    #[test]
    fn versions_and_seqs_keep_every_bit_up_to_their_limits() {
        let mut s = Store::new();
        let stamps = [
            (0, 0),
            (1, 2),
            (MAX_VERSION, MAX_SEQ),
            (MAX_VERSION - 1, 1 << 47),
            (0x00AB_CDEF_0123_4567, 0x0000_8765_4321_0FED),
        ];
        for (id, &(version, seq)) in stamps.iter().enumerate() {
            s.apply(&rec(7, seq, version, id as u64, b"c"));
        }
        for (id, &(version, seq)) in stamps.iter().enumerate() {
            let got = s.get(id as u64).expect("applied");
            assert_eq!((got.version, got.seq, got.origin), (version, seq, 7));
        }
        // Ordering reads the whole version back: one below the limit loses.
        assert!(!s.apply(&rec(9, 1, MAX_VERSION - 1, 2, b"older")));
        assert!(s.apply(&rec(9, 1, MAX_VERSION, 1, b"newer")));
        assert_eq!(s.get(1).map(|r| r.content), Some(&b"newer"[..]));
    }

    #[test]
    fn digest_tracks_content_not_history() {
        let mut a = Store::new();
        a.apply(&rec(1, 1, 1, 1, b"x"));
        a.apply(&rec(1, 2, 2, 1, b"y"));
        let mut b = Store::new();
        b.apply(&rec(2, 1, 3, 1, b"y"));
        assert_eq!(a.digest(), b.digest());
        let mut c = Store::new();
        c.apply(&rec(2, 1, 3, 2, b"y")); // same content under another id
        assert_ne!(a.digest(), c.digest());
    }

    #[test]
    fn sharded_apply_builds_the_same_store_as_one_thread() {
        let contents: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; i as usize]).collect();
        let records: Vec<RecordRef<'_>> = (0..5_000u64)
            .map(|i| {
                let id = (i * 7919) % 1_500; // overwrites, in no order
                rec(
                    (i % 3) as u32 + 1,
                    i,
                    i % 977,
                    id,
                    &contents[(i % 64) as usize],
                )
            })
            .collect();
        let mut one = Store::new();
        for r in &records {
            one.apply(r);
        }
        for shards in [1, 2, 3, 8] {
            let mut many = Store::with_shards(shards, records.len());
            many.apply_sharded(|apply| {
                records.iter().for_each(&mut *apply);
                Ok::<(), ()>(())
            })
            .unwrap();
            assert_eq!(many.digest(), one.digest(), "{shards} shards");
            assert_eq!(many.len(), one.len());
            assert_eq!(many.content_bytes(), one.content_bytes());
            assert_eq!(many.max_version(), one.max_version());
            assert_eq!(many.sorted_ids(), one.sorted_ids());
            for id in one.sorted_ids() {
                assert_eq!(many.get(id), one.get(id), "id {id}");
            }
        }
    }

    #[test]
    fn a_walk_visits_the_records_held_when_it_began_once_each() {
        let mut s = Store::with_shards(4, 0);
        for id in 0..100u64 {
            s.apply(&rec(1, id + 1, 1, id, b"a"));
        }
        let mut walk = s.walk();
        let mut seen = Vec::new();
        for _ in 0..10 {
            let r = s.next_in(&mut walk).expect("a record");
            seen.push(r.id);
        }
        // Overwrites are read as they are when reached; newer ids are not.
        for id in 0..100u64 {
            s.apply(&rec(2, id + 1, 2, id, b"b"));
        }
        s.apply(&rec(2, 101, 3, 1_000, b"new"));
        while let Some(r) = s.next_in(&mut walk) {
            assert_eq!(r.content, b"b", "id {}", r.id);
            seen.push(r.id);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<u64>>());
        assert!(s.next_in(&mut walk).is_none(), "a walk ends for good");
    }

    #[test]
    fn absorbing_a_store_is_applying_its_records() {
        let contents: Vec<Vec<u8>> = (0..16u8).map(|i| vec![i; i as usize]).collect();
        let records: Vec<RecordRef<'_>> = (0..3_000u64)
            .map(|i| {
                rec(
                    (i % 2) as u32 + 1,
                    i,
                    i % 541,
                    (i * 31) % 700,
                    &contents[(i % 16) as usize],
                )
            })
            .collect();
        let mut one = Store::new();
        records.iter().for_each(|r| {
            one.apply(r);
        });
        // Split in two (overlapping ids, either half newer), then joined.
        let (mut built, mut arrived) = (Store::with_shards(3, 0), Store::new());
        for (i, r) in records.iter().enumerate() {
            if i % 3 == 0 {
                arrived.apply(r);
            } else {
                built.apply(r);
            }
        }
        built.absorb(arrived);
        assert_eq!(built.digest(), one.digest());
        assert_eq!(built.len(), one.len());
        assert_eq!(built.content_bytes(), one.content_bytes());
        assert_eq!(built.max_version(), one.max_version());
        for id in one.sorted_ids() {
            assert_eq!(built.get(id), one.get(id), "id {id}");
        }
    }

    #[test]
    fn reserve_total_makes_room_in_every_shard() {
        let mut s = Store::with_shards(3, 0);
        s.reserve_total(3_000);
        assert!(s.shards.iter().all(|sh| sh.index.capacity() >= 1_000));
        s.apply(&rec(1, 1, 1, 7, b"x"));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn sharded_apply_reports_a_feed_error() {
        let mut s = Store::with_shards(2, 0);
        let r = s.apply_sharded(|_| Err::<(), _>("bad log"));
        assert_eq!(r, Err("bad log"));
    }

    #[test]
    fn ids_spread_over_every_shard() {
        let mut counts = [0usize; 4];
        for id in 0..4_000u64 {
            counts[shard_of(id, 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
