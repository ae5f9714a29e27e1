//! A bounded cache of decrypted, validated pages (adjacency, node, edge and index bucket pages),
//! one per organization.
//!
//! Keys are blind record keys, which only a holder of the org's keys can compute. Entries are
//! zeroized when the last reference goes (eviction or invalidation).
//!
//! Consistency with MVCC snapshots uses a generation counter (a seqlock): a writer makes it odd
//! before its redb commit, invalidates what it changed after, and makes it even again. A reader
//! uses the cache only while the generation equals the even value it saw around the start of
//! its snapshot; otherwise it reads from its snapshot, never from the cache.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use zeroize::{Zeroize, Zeroizing};

use crate::codec::{AdjEntry, BucketPage, EdgeRecord, NodeRecord};
use crate::filter::NeighborFilter;

/// A decoded adjacency page.
#[derive(Debug)]
pub(crate) struct Page {
    /// Page count of the (node, direction), from page 0's header.
    pub pages: u32,
    /// The page's entries.
    pub entries: Zeroizing<Vec<AdjEntry>>,
    /// The neighbor of every entry, in order: a compact copy for walks whose filter accepts or
    /// rejects the whole page (8 bytes an entry to scan instead of 56).
    pub neighbors: Zeroizing<Vec<u64>>,
    /// No entry is retracted.
    all_current: bool,
    /// Every entry is valid at all times.
    all_unbounded: bool,
    /// The kind of every entry, if they all have the same one.
    kind: Option<u32>,
}

impl Page {
    pub(crate) fn new(pages: u32, entries: Vec<AdjEntry>) -> Self {
        let neighbors = Zeroizing::new(entries.iter().map(|e| e.neighbor).collect());
        let all_current = entries.iter().all(|e| e.retracted_at == i64::MAX);
        let all_unbounded = entries.iter().all(|e| e.valid_from == i64::MIN && e.valid_to == i64::MAX);
        let kind = entries.first().map(|e| e.kind).filter(|k| entries.iter().all(|e| e.kind == *k));
        Page { pages, entries: Zeroizing::new(entries), neighbors, all_current, all_unbounded, kind }
    }

    pub(crate) fn cost(&self) -> usize {
        64 + self.entries.len() * (std::mem::size_of::<AdjEntry>() + std::mem::size_of::<u64>())
    }

    /// `Some(true)` if `filter` accepts every entry, `Some(false)` if it accepts none, `None` if
    /// entries must be checked one by one. Agrees with [`NeighborFilter::accepts`].
    pub(crate) fn accepts_all(&self, filter: &NeighborFilter) -> Option<bool> {
        if filter.known_at.is_some() || !self.all_current {
            return None;
        }
        // Unbounded validity passes any valid_at below i64::MAX and any non-empty window.
        let timed = filter.valid_at.is_some() || filter.valid_between.is_some();
        if timed && (!self.all_unbounded || filter.valid_at == Some(i64::MAX)) {
            return None;
        }
        match (&filter.kinds, self.kind) {
            (None, _) => Some(true),
            (Some(kinds), Some(k)) => Some(kinds.iter().any(|x| x.0 == k)),
            (Some(kinds), None) if kinds.is_empty() => Some(false),
            (Some(_), None) => None,
        }
    }
}

/// The records of one node or edge page, zeroized when the last reference goes.
#[derive(Debug)]
pub(crate) struct Records<T: Scrub>(pub Vec<T>);

/// Wipes the strings a record holds (external ids).
pub(crate) trait Scrub {
    fn scrub(&mut self);
}

impl Scrub for NodeRecord {
    fn scrub(&mut self) {
        for (s, e) in &mut self.sources {
            s.zeroize();
            e.zeroize();
        }
        self.out_adj.zeroize();
        self.in_adj.zeroize();
    }
}

impl Scrub for EdgeRecord {
    fn scrub(&mut self) {
        if let Some((s, e)) = &mut self.source {
            s.zeroize();
            e.zeroize();
        }
    }
}

impl<T: Scrub> Drop for Records<T> {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(Scrub::scrub);
    }
}

/// A bucket page's entries, zeroized when dropped, with a 2-byte tag per entry: bytes 4 and 5
/// of its fingerprint (the bucket number comes from bytes 0–3, so these vary within a bucket).
/// A probe compares the tags first, one or two cache lines, and reads an entry only where its
/// tag matches: a fingerprint the bucket does not hold (every run but one, for a source that
/// exists; every run, for a new one) costs no walk over the 20-byte entries.
#[derive(Debug)]
pub(crate) struct Bucket(pub BucketPage, Vec<u16>);

/// The tag of a fingerprint (or of an entry, whose first 12 bytes are its fingerprint).
fn tag_of(fp: &[u8]) -> u16 {
    match fp {
        [_, _, _, _, a, b, ..] => u16::from_le_bytes([*a, *b]),
        _ => 0,
    }
}

impl Bucket {
    /// The bucket of a validated page.
    pub(crate) fn new(page: BucketPage) -> Self {
        let tags = page.entries.chunks_exact(page.stride()).map(tag_of).collect();
        Bucket(page, tags)
    }

    /// The value stored under fingerprint `fp` (as [`BucketPage::get`]).
    pub(crate) fn get(&self, fp: &[u8; 12]) -> Option<u64> {
        let t = tag_of(fp);
        self.1.iter().enumerate().filter(|(_, x)| **x == t).find_map(|(i, _)| {
            if self.0.fingerprint_at(i)? == fp.as_slice() {
                self.0.value_at(i)
            } else {
                None
            }
        })
    }
}

impl Drop for Bucket {
    fn drop(&mut self) {
        self.0.entries.zeroize();
        self.1.zeroize();
    }
}

/// One decrypted, validated page as the cache holds it.
#[derive(Debug, Clone)]
pub(crate) enum Cached {
    Adj(Arc<Page>),
    Nodes(Arc<Records<NodeRecord>>),
    Edges(Arc<Records<EdgeRecord>>),
    Bucket(Arc<Bucket>),
}

impl Cached {
    /// Approximate bytes held (the cache's weight).
    pub(crate) fn cost(&self) -> u64 {
        let strings = |s: &(String, String)| s.0.len() + s.1.len() + 48;
        let bytes = match self {
            Cached::Adj(p) => p.cost(),
            Cached::Nodes(r) => {
                r.0.iter()
                    .map(|n| 96 + n.out_adj.len() + n.in_adj.len() + n.sources.iter().map(strings).sum::<usize>())
                    .sum()
            }
            Cached::Edges(r) => r.0.iter().map(|e| 104 + e.source.as_ref().map_or(0, strings)).sum(),
            Cached::Bucket(b) => b.0.entries.len() + 2 * b.1.len(),
        };
        64 + bytes as u64
    }
}

#[derive(Clone)]
struct Weight;

impl quick_cache::Weighter<PageKey, Cached> for Weight {
    fn weight(&self, _key: &PageKey, val: &Cached) -> u64 {
        val.cost()
    }
}

/// What the page cache keys a page by: the first 8 bytes of the reading handle's structure
/// fingerprint, then the page's plaintext address ([`super::state::Addr::packed`]). A lookup
/// then costs no blind-key encryption (an AES block per page: a tenth of a cached 3-hop walk).
/// A handle from before a re-key never shares this cache (a re-keyed org's handles get their
/// own `OrgShared`, whose incarnation digests the structure fingerprint); the prefix keeps it
/// out even so: it misses every page and fails closed reading the store, as it did with blind
/// keys (test `rekey::a_handle_from_before_a_rekey_reads_nothing_through_pages_a_new_handle_cached`).
pub(crate) type PageKey = [u8; 24];

/// The page cache of one organization: bounded by bytes (decoded size), scan resistant
/// (quick_cache's S3-FIFO-like policy), keyed by [`PageKey`].
pub(crate) struct PageCache {
    gen: AtomicU64,
    /// For a store other processes write too (PostgreSQL): the org commit counter the cached
    /// pages are of (changed under the write lock only).
    seen: AtomicU64,
    /// Lookups and inserts share the lock (the map is concurrent); a commit's generation steps
    /// take it alone, so no lookup or insert interleaves with them.
    lock: RwLock<()>,
    map: Option<quick_cache::sync::Cache<PageKey, Cached, Weight>>,
}

impl std::fmt::Debug for PageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCache").field("gen", &self.gen).finish_non_exhaustive()
    }
}

impl PageCache {
    pub(crate) fn new(capacity: usize) -> Self {
        let map = (capacity > 0).then(|| {
            let items = (capacity / 2048).clamp(16, 1 << 20);
            quick_cache::sync::Cache::with_weighter(items, capacity as u64, Weight)
        });
        PageCache { gen: AtomicU64::new(0), seen: AtomicU64::new(0), lock: RwLock::new(()), map }
    }

    /// The bound of the cache in the weight of [`Cached::cost`] (0: off).
    pub(crate) fn capacity(&self) -> u64 {
        self.map.as_ref().map_or(0, |m| m.capacity())
    }

    fn write(&self) -> RwLockWriteGuard<'_, ()> {
        // The guarded data is `()`: poison carries no broken state.
        self.lock.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> RwLockReadGuard<'_, ()> {
        self.lock.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The generation to remember before beginning a snapshot.
    pub(crate) fn generation(&self) -> u64 {
        self.gen.load(Ordering::Acquire)
    }

    pub(crate) fn enabled(&self) -> bool {
        self.map.is_some()
    }

    pub(crate) fn get(&self, key: &PageKey, gen: u64) -> Option<Cached> {
        let map = self.map.as_ref()?;
        let _g = self.read();
        if self.gen.load(Ordering::Acquire) != gen {
            return None;
        }
        map.get(key)
    }

    pub(crate) fn insert(&self, key: PageKey, page: Cached, gen: u64) {
        let Some(map) = self.map.as_ref() else { return };
        let _g = self.read();
        if self.gen.load(Ordering::Acquire) != gen {
            return;
        }
        map.insert(key, page);
    }

    /// Marks a commit as in progress: readers stop using the cache.
    pub(crate) fn begin_commit(&self) {
        let _g = self.write();
        self.gen.fetch_add(1, Ordering::AcqRel);
    }

    /// For a store that other processes write too: `seq` is the org's commit counter in a snapshot
    /// just begun. Returns the generation the snapshot may use the cache at, or `None`.
    ///
    /// A counter past the one the cached pages are of means another instance committed: every
    /// entry is dropped first (and the generation steps, so older snapshots' inserts are refused).
    /// A counter below it (a snapshot older than the cache) or a local commit in progress: the
    /// snapshot reads without the cache.
    pub(crate) fn observe(&self, seq: u64) -> Option<u64> {
        let map = self.map.as_ref()?;
        {
            let _g = self.read();
            let gen = self.gen.load(Ordering::Acquire);
            if seq == self.seen.load(Ordering::Acquire) {
                return gen.is_multiple_of(2).then_some(gen);
            }
        }
        let _g = self.write();
        let gen = self.gen.load(Ordering::Acquire);
        let seen = self.seen.load(Ordering::Acquire);
        if !gen.is_multiple_of(2) || seq < seen {
            return None;
        }
        if seq > seen {
            map.clear();
            self.seen.store(seq, Ordering::Release);
            return Some(self.gen.fetch_add(2, Ordering::AcqRel) + 2);
        }
        Some(gen)
    }

    /// Ends a commit: drops what it changed and lets new snapshots use the cache again. The commit
    /// moved the org's commit counter to `seq` (`committed`: it succeeded): if the cache was of
    /// the state just before, it is now of `seq` (its changed pages are gone), so the next
    /// snapshot of a shared store keeps it.
    pub(crate) fn end_commit_at<'a>(&self, changed: impl Iterator<Item = &'a PageKey>, seq: u64, committed: bool) {
        let _g = self.write();
        if let Some(map) = &self.map {
            for k in changed {
                map.remove(k);
            }
        }
        if committed && seq > 0 && self.seen.load(Ordering::Acquire) == seq - 1 {
            self.seen.store(seq, Ordering::Release);
        }
        self.gen.fetch_add(1, Ordering::AcqRel);
    }

    /// Enters the pages a commit just made durable (write-through), of the org's state at commit
    /// counter `seq`. Taken only while no other commit is in progress and, for a store other
    /// processes write too (`shared`), only if the cache is of `seq` (else another instance's
    /// commit came between and the pages may be stale: they are left out).
    pub(crate) fn fill(&self, pages: &[(PageKey, Cached)], seq: u64, shared: bool) {
        let Some(map) = &self.map else { return };
        if pages.is_empty() {
            return;
        }
        let _g = self.write();
        if !self.gen.load(Ordering::Acquire).is_multiple_of(2) || (shared && self.seen.load(Ordering::Acquire) != seq) {
            return;
        }
        for (k, page) in pages {
            map.insert(*k, page.clone());
        }
    }

    /// Drops every entry (after rotation or deletion).
    pub(crate) fn clear(&self) {
        let _g = self.write();
        if let Some(map) = &self.map {
            map.clear();
        }
        self.gen.fetch_add(2, Ordering::AcqRel);
    }

    /// Entries and bytes held (tests).
    #[cfg(test)]
    fn usage(&self) -> (usize, u64) {
        self.map.as_ref().map_or((0, 0), |m| (m.len(), m.weight()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(n: u64) -> Cached {
        let entries = (0..n)
            .map(|i| AdjEntry {
                neighbor: i,
                edge: i,
                kind: 0,
                valid_from: i64::MIN,
                valid_to: i64::MAX,
                recorded_at: 0,
                retracted_at: i64::MAX,
            })
            .collect();
        Cached::Adj(Arc::new(Page::new(1, entries)))
    }

    #[test]
    fn a_buckets_tagged_probe_answers_as_the_pages_binary_search() {
        // Fingerprints from a simple generator, a third of them sharing their tag bytes (4, 5)
        // with another entry, so that a tag match is not yet a match.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut entries: Vec<([u8; 12], u64)> = Vec::new();
        for i in 0..96u64 {
            let mut fp = [0u8; 12];
            fp[..8].copy_from_slice(&next().to_le_bytes());
            fp[8..].copy_from_slice(&next().to_le_bytes()[..4]);
            if i % 3 == 2 {
                let (a, b) = (entries[i as usize - 1].0[4], entries[i as usize - 1].0[5]);
                fp[4] = a;
                fp[5] = b;
            }
            entries.push((fp, next()));
        }
        let (held, absent) = entries.split_at(64);
        let page = BucketPage::from_entries(held.to_vec());
        let bucket = Bucket::new(page.clone());
        for (fp, v) in held {
            assert_eq!(bucket.get(fp), Some(*v));
            assert_eq!(bucket.get(fp), page.get(fp));
        }
        for (fp, _) in absent {
            assert_eq!(bucket.get(fp), None);
            assert_eq!(page.get(fp), None);
        }
        // An absent fingerprint with the tag of a held one.
        let mut near = held[5].0;
        near[11] ^= 1;
        assert_eq!(bucket.get(&near), None);
        assert_eq!(Bucket::new(BucketPage::default()).get(&near), None);
    }

    #[test]
    fn many_invalidations_do_not_grow_the_cache_past_its_bound() {
        let cache = PageCache::new(64 << 10);
        for round in 0..20_000u64 {
            let mut key = [0u8; 24];
            key[..8].copy_from_slice(&round.to_le_bytes());
            let gen = cache.generation();
            cache.insert(key, page(8), gen);
            // Every commit invalidates what was just inserted (the leak this replaces kept a
            // queue entry per invalidated insert forever).
            cache.begin_commit();
            cache.end_commit_at(std::iter::once(&key), 0, false);
        }
        let (items, bytes) = cache.usage();
        assert_eq!(items, 0, "invalidated entries stay");
        assert_eq!(bytes, 0);
        for round in 0..20_000u64 {
            let mut key = [0u8; 24];
            key[16..].copy_from_slice(&round.to_le_bytes());
            cache.insert(key, page(8), cache.generation());
        }
        let (items, bytes) = cache.usage();
        assert!(bytes <= 64 << 10, "{bytes} bytes held, bound 64 KiB");
        assert!(items > 0 && items < 20_000);
    }

    #[test]
    fn a_newer_commit_counter_drops_the_cache_and_an_older_one_bypasses_it() {
        let cache = PageCache::new(1 << 20);
        let gen = cache.observe(0).expect("a fresh cache serves counter 0");
        cache.insert([1; 24], page(1), gen);
        assert!(cache.get(&[1; 24], cache.observe(0).expect("same counter")).is_some());
        // Another instance committed twice: everything goes, the old generation is dead.
        let newer = cache.observe(2).expect("a newer counter");
        assert!(cache.get(&[1; 24], newer).is_none());
        cache.insert([1; 24], page(1), gen);
        assert!(cache.get(&[1; 24], newer).is_none(), "an insert of an older snapshot was kept");
        cache.insert([2; 24], page(1), newer);
        assert_eq!(cache.observe(1), None, "a snapshot older than the cache used it");
        // A local commit from 2 to 3 keeps what it did not change.
        cache.insert([3; 24], page(1), newer);
        cache.begin_commit();
        assert_eq!(cache.observe(2), None, "a snapshot used the cache during a commit");
        cache.end_commit_at(std::iter::once(&[3; 24]), 3, true);
        let after = cache.observe(3).expect("the cache follows the local commit");
        assert!(cache.get(&[2; 24], after).is_some());
        assert!(cache.get(&[3; 24], after).is_none());
        // A failed local commit does not move it.
        cache.begin_commit();
        cache.end_commit_at(std::iter::empty(), 4, false);
        let next = cache.observe(4).expect("a newer counter");
        assert!(cache.get(&[2; 24], next).is_none(), "a failed commit's counter was taken as the cache's");
    }

    #[test]
    fn a_lookup_with_a_stale_generation_misses_and_its_insert_is_dropped() {
        let cache = PageCache::new(1 << 20);
        let gen = cache.generation();
        cache.begin_commit();
        cache.insert([1; 24], page(1), gen);
        cache.end_commit_at(std::iter::empty(), 0, false);
        assert!(cache.get(&[1; 24], cache.generation()).is_none());
        assert!(cache.get(&[1; 24], gen).is_none());
    }
}
