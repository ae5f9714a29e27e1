//! A bounded cache of decrypted, validated adjacency pages, one per organization.
//!
//! Keys are blind record keys, which only a holder of the org's keys can compute. Entries are
//! zeroized when the last reference goes (eviction or invalidation).
//!
//! Consistency with MVCC snapshots uses a generation counter (a seqlock): a writer makes it odd
//! before its redb commit, invalidates what it changed after, and makes it even again. A reader
//! uses the cache only while the generation equals the even value it saw around the start of
//! its snapshot; otherwise it reads from its snapshot, never from the cache.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use zeroize::Zeroizing;

use crate::codec::AdjEntry;

/// A decoded adjacency page.
#[derive(Debug)]
pub(crate) struct Page {
    /// Page count of the (node, direction), from page 0's header.
    pub pages: u32,
    /// The page's entries.
    pub entries: Zeroizing<Vec<AdjEntry>>,
}

impl Page {
    fn cost(&self) -> usize {
        64 + self.entries.len() * std::mem::size_of::<AdjEntry>()
    }
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<[u8; 16], Arc<Page>>,
    order: VecDeque<[u8; 16]>,
    bytes: usize,
}

/// The page cache of one organization.
#[derive(Debug)]
pub(crate) struct PageCache {
    capacity: usize,
    gen: AtomicU64,
    inner: Mutex<Inner>,
}

impl PageCache {
    pub(crate) fn new(capacity: usize) -> Self {
        PageCache { capacity, gen: AtomicU64::new(0), inner: Mutex::new(Inner::default()) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a consistent map (every mutation is one step).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The generation to remember before beginning a snapshot.
    pub(crate) fn generation(&self) -> u64 {
        self.gen.load(Ordering::Acquire)
    }

    pub(crate) fn enabled(&self) -> bool {
        self.capacity > 0
    }

    pub(crate) fn get(&self, key: &[u8; 16], gen: u64) -> Option<Arc<Page>> {
        let inner = self.lock();
        if self.gen.load(Ordering::Acquire) != gen {
            return None;
        }
        inner.map.get(key).cloned()
    }

    pub(crate) fn insert(&self, key: [u8; 16], page: Arc<Page>, gen: u64) {
        let cost = page.cost();
        if cost > self.capacity {
            return;
        }
        let mut inner = self.lock();
        if self.gen.load(Ordering::Acquire) != gen {
            return;
        }
        while inner.bytes + cost > self.capacity {
            let Some(old) = inner.order.pop_front() else { break };
            if let Some(p) = inner.map.remove(&old) {
                inner.bytes -= p.cost();
            }
        }
        if let Some(p) = inner.map.insert(key, page) {
            inner.bytes -= p.cost();
        }
        inner.bytes += cost;
        inner.order.push_back(key);
    }

    /// Marks a commit as in progress: readers stop using the cache.
    pub(crate) fn begin_commit(&self) {
        let _inner = self.lock();
        self.gen.fetch_add(1, Ordering::AcqRel);
    }

    /// Ends a commit: drops what it changed and lets new snapshots use the cache again.
    pub(crate) fn end_commit<'a>(&self, changed: impl Iterator<Item = &'a [u8; 16]>) {
        let mut inner = self.lock();
        for k in changed {
            if let Some(p) = inner.map.remove(k) {
                inner.bytes -= p.cost();
            }
        }
        self.gen.fetch_add(1, Ordering::AcqRel);
    }

    /// Drops every entry (after rotation or deletion).
    #[allow(dead_code)]
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.map.clear();
        inner.order.clear();
        inner.bytes = 0;
        self.gen.fetch_add(2, Ordering::AcqRel);
    }
}
