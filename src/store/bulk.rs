//! Bulk loading: many edges at once, packed into adjacency pages in memory and written once.
//!
//! The loader rides on a [`WriteTxn`]: nodes, kinds and source indexes go through its ordinary
//! upsert path (so they are idempotent and in the same format), while edges are buffered, sorted
//! by node, packed into full pages and sealed and written straight into the same redb
//! transaction. A list's partly filled tail page is kept in memory, encoded, from one flush to
//! the next (up to half the memory budget) and written once, at `finish`; a page 0 whose page
//! count later flushes change is rewritten once, at `finish`, too. So a page is sealed and
//! written about once per load however many flushes it spans (a stored tail page is read back
//! once, by the first flush that appends to it). Node records (degrees, page counts), the org
//! entry's counters and seal count, and the page cache are updated through the write
//! transaction's own commit.

use super::cache::PageKey;
use super::org::Org;
use super::records::{dir_index, par_map, write_sorted};
use super::state::Addr;
use super::tables::{ADJ, EDGES, NODES};
use super::write::{NodeInput, WriteTxn};
use crate::codec::{
    decode_owned_page, encode_inline, encode_page, first_of, inline_of, page_of, AdjEntry, AdjPage, EdgePage,
    EdgeRecord, EDGES_PER_PAGE, INLINE_MAX, NODES_PER_PAGE, PAGE_CAPACITY,
};
use crate::error::{Error, InputKind, Result};
use crate::graph::visited::{FastMap, FastSet};
use crate::types::{Compartment, Direction, NodeId, Timestamp};

/// Edge pages a flush builds and seals at a time.
const EDGE_PAGES_PER_BATCH: usize = 1024;

/// Default for [`BulkLoader::memory_budget`]: 128 MiB (about 1,000,000 buffered edges).
pub const DEFAULT_BULK_BUDGET: usize = 128 << 20;

/// What one buffered edge costs against the memory budget: the pending edge, then while a
/// flush runs its two entries' places in the grouping, the two entries encoded in their pages
/// and sealed (12 bytes each, twice), and its edge record encoded and sealed. Measured on the
/// 4M-edge R-MAT graph (peak RSS, `/usr/bin/time`): a budget of 128 MiB at the 334 bytes counted
/// before gave 12 flushes and a 527 MB peak, 512 MiB 3 flushes and 577 MB, so a buffered edge
/// costs about 50 bytes of peak, and each flush re-encodes every list it extends (inline
/// entries, kept tail pages): 3 flushes loaded 1.33x faster than 12.
const BYTES_PER_EDGE: usize = std::mem::size_of::<Pending>() + 2 * 8 + 2 * 2 * 12 + 16;

#[derive(Debug, Clone, Copy)]
struct Pending {
    id: u64,
    from: u64,
    to: u64,
    kind: u32,
    valid_from: i64,
    valid_to: i64,
}

/// What a finished bulk load wrote.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BulkStats {
    /// Nodes passed to [`BulkLoader::add_node`] (new or updated).
    pub nodes: u64,
    /// Edges added.
    pub edges: u64,
    /// Adjacency pages written (a page written again, after the loader's memory budget made
    /// it write out its tail pages early, counts again).
    pub pages_written: u64,
    /// Times the buffered edges were flushed into the transaction.
    pub flushes: u64,
}

/// Loads many nodes and edges into one organization in one redb transaction. Made by
/// [`Org::bulk_load`].
///
/// Atomicity: everything goes into one redb write transaction committed by
/// [`BulkLoader::finish`], so a load is all or nothing: dropping the loader, an error, or a
/// crash before `finish` returns leaves the org as it was. While it lives, the loader holds the
/// database's single writer slot (writers of every org wait). A flush that fails part-way (a
/// tampered page it reads back, a storage error) makes the loader refuse every further edge and
/// its `finish` (`InvalidInput` of kind `WrongState`), as a [`WriteTxn`] does.
///
/// Memory: buffered edges are flushed (packed, sealed, written into the transaction) whenever
/// they, with the partly filled tail pages kept between flushes, pass
/// [`BulkLoader::memory_budget`]; tail pages are written out early when they alone pass half of
/// it. redb spills the transaction's dirty pages to the file as it grows. Node records stay in
/// memory until `finish` (about 200 bytes per node).
///
/// Edges added in bulk carry no source reference and no properties (use a [`WriteTxn`] for
/// those); they are visible to every query exactly like edges added by a `WriteTxn`, which can
/// also retract them later.
///
/// ```
/// # fn main() -> silograph::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("ctx.silo");
/// use silograph::{Db, Direction, NodeInput, RootKey};
/// let db = Db::open(&path, RootKey::from_bytes([1; 32]))?;
/// let org = db.create_org("acme")?;
/// let mut bulk = org.bulk_load()?.memory_budget(16 << 20);
/// let a = bulk.add_node(NodeInput::new("person").source("mail", "a"))?;
/// let b = bulk.add_node(NodeInput::new("person").source("mail", "b"))?;
/// bulk.add_edge(a, b, "emailed")?;
/// bulk.add_edge_by_source(("mail", "b"), ("mail", "a"), "emailed")?;
/// let stats = bulk.finish()?;
/// assert_eq!((stats.nodes, stats.edges), (2, 2));
/// assert_eq!(org.read()?.traverse(a).max_depth(1).run()?, vec![(a, 0), (b, 1)]);
/// # Ok(()) }
/// ```
pub struct BulkLoader {
    org: Org,
    w: WriteTxn,
    budget: usize,
    pending: Vec<Pending>,
    changed_pages: Vec<PageKey>,
    /// Addresses of the edge and adjacency pages this load wrote (for the state tree).
    written: FastSet<Addr>,
    /// Lists whose inline entries this load changed (their page-0 keys are invalidated in the
    /// page cache, which keeps inline entries there; computed once, at `finish`).
    inline_changed: FastSet<(u64, u8)>,
    /// Partly filled last pages of `(node, direction)` lists, not written yet: the page number
    /// and its entries, encoded (the page count of a page 0 is set when it is written).
    tails: FastMap<(u64, u8), (u32, AdjPage)>,
    /// Bytes of encoded entries in `tails`, against the memory budget.
    tail_bytes: usize,
    /// Lists whose page 0 holds a page count that a later flush changed: rewritten at `finish`.
    stale_first: FastSet<(u64, u8)>,
    seals: u64,
    stats: BulkStats,
    last_kind: Option<(String, u32)>,
}

impl std::fmt::Debug for BulkLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkLoader").field("stats", &self.stats).finish_non_exhaustive()
    }
}

impl Org {
    /// Starts a bulk load (one write transaction; see [`BulkLoader`]).
    pub fn bulk_load(&self) -> Result<BulkLoader> {
        Ok(BulkLoader {
            org: self.clone(),
            w: WriteTxn::begin_exclusive(self.clone())?,
            budget: DEFAULT_BULK_BUDGET,
            pending: Vec::new(),
            changed_pages: Vec::new(),
            written: FastSet::default(),
            inline_changed: FastSet::default(),
            tails: FastMap::default(),
            tail_bytes: 0,
            stale_first: FastSet::default(),
            seals: 0,
            stats: BulkStats::default(),
            last_kind: None,
        })
    }
}

impl BulkLoader {
    /// Bytes of buffered edges (and unwritten tail pages) after which the edges are flushed into
    /// the transaction (at least one edge is always buffered). Smaller budgets mean more flushes,
    /// and once the tail pages alone pass half the budget they are written out and a later
    /// flush that appends to one reads it back.
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.budget = bytes;
        self
    }

    /// Sets the record time stamped on everything loaded (default: the clock at start).
    pub fn set_time(&mut self, now: Timestamp) {
        self.w.set_time(now);
    }

    /// Upserts a node (idempotent by source, as [`WriteTxn::upsert_node`]).
    pub fn add_node(&mut self, input: NodeInput) -> Result<NodeId> {
        let id = self.w.upsert_node(input)?;
        self.stats.nodes += 1;
        Ok(id)
    }

    /// The node known by `(system, external_id)`, including nodes added by this load.
    pub fn lookup(&self, system: &str, external_id: &str) -> Result<Option<NodeId>> {
        self.w.lookup(system, external_id)
    }

    /// Adds an edge `from → to` of `kind`, valid at all times.
    pub fn add_edge(&mut self, from: NodeId, to: NodeId, kind: &str) -> Result<()> {
        self.add_edge_valid(from, to, kind, None, None)
    }

    /// Adds an edge between two nodes named by `(system, external_id)`; `InvalidInput` if either
    /// is unknown.
    pub fn add_edge_by_source(&mut self, from: (&str, &str), to: (&str, &str), kind: &str) -> Result<()> {
        let resolve = |(s, e): (&str, &str)| -> Result<NodeId> {
            self.w.lookup(s, e)?.ok_or_else(|| Error::invalid(InputKind::UnknownNode, format!("unknown node {s}:{e}")))
        };
        let (a, b) = (resolve(from)?, resolve(to)?);
        self.add_edge(a, b, kind)
    }

    /// Adds an edge with a valid-time interval `[valid_from, valid_to)` (`None`: unbounded).
    pub fn add_edge_valid(
        &mut self,
        from: NodeId,
        to: NodeId,
        kind: &str,
        valid_from: Option<Timestamp>,
        valid_to: Option<Timestamp>,
    ) -> Result<()> {
        self.w.check_not_failed()?;
        let valid_from = valid_from.unwrap_or(i64::MIN);
        let valid_to = valid_to.unwrap_or(i64::MAX);
        if valid_from >= valid_to {
            return Err(Error::invalid(InputKind::InvalidTimeRange, "valid_from must be before valid_to"));
        }
        // Node ids are dense and nodes are never deleted: an id below `next_node` exists. The
        // records themselves are loaded once per flush, when their pages are packed.
        let (entry, _) = self.w.entry_and_now();
        for n in [from, to] {
            if n.0 == 0 || n.0 >= entry.next_node {
                return Err(Error::invalid(InputKind::UnknownNode, format!("unknown node {}", n.0)));
            }
        }
        let kind = match &self.last_kind {
            Some((name, id)) if name == kind => *id,
            _ => {
                let id = self.w.intern_kind(kind)?;
                self.last_kind = Some((kind.to_owned(), id));
                id
            }
        };
        let (entry, _) = self.w.entry_and_now();
        let id = entry.next_edge;
        entry.next_edge += 1;
        entry.edge_count += 1;
        self.pending.push(Pending { id, from: from.0, to: to.0, kind, valid_from, valid_to });
        self.stats.edges += 1;
        if self.pending.len().saturating_mul(BYTES_PER_EDGE).saturating_add(self.tail_bytes) >= self.budget {
            let res = match self.flush(false) {
                Ok(()) if self.tail_bytes > self.budget / 2 => self.write_tails(),
                other => other,
            };
            if res.is_err() {
                // Part of the buffered edges may be in the transaction: it can only be dropped.
                self.w.mark_failed();
            }
            res?;
        }
        Ok(())
    }

    /// Packs, seals and writes the buffered edges into the transaction.
    ///
    /// `last`: the flush of `finish`, which keeps no tail in memory and writes the tails earlier
    /// flushes kept and the page 0s to rewrite in the same batch of sorted rows as its own pages
    /// (one batch packs redb's leaves as tightly as before tails were kept: the file stays the
    /// size it was).
    fn flush(&mut self, last: bool) -> Result<()> {
        if self.pending.is_empty() && !last {
            return Ok(());
        }
        self.stats.flushes += 1;
        let org = self.org.inner.clone();
        let (_, now) = self.w.entry_and_now();
        let pending = std::mem::take(&mut self.pending);
        self.w.count_bulk_edges(pending.len() as u64);
        let version = self.w.version();
        // Edge records go into edge pages of consecutive ids; a page this load already started
        // (or one stored before it) is read back and extended. Built and sealed up to 1,024
        // pages (131,072 edges) at a time, so the records of all buffered edges never exist at once.
        let mut rows = Vec::new();
        let mut pages: Vec<EdgePage> = Vec::new();
        let mut i = 0;
        while i < pending.len() {
            let page = page_of(pending[i].id, EDGES_PER_PAGE);
            let first = first_of(page, EDGES_PER_PAGE);
            let end = first_of(page + 1, EDGES_PER_PAGE);
            let mut edges = if pending[i].id > first { self.read_edge_page(page)? } else { Vec::new() };
            if first + edges.len() as u64 != pending[i].id {
                return Err(Error::corrupt(EDGES.name, &org.edge_page_key(page)));
            }
            while i < pending.len() && pending[i].id < end {
                let p = &pending[i];
                edges.push(EdgeRecord {
                    id: p.id,
                    from: p.from,
                    to: p.to,
                    kind: p.kind,
                    source: None,
                    valid_from: p.valid_from,
                    valid_to: p.valid_to,
                    recorded_at: now,
                    retracted_at: None,
                    props: 0,
                });
                i += 1;
            }
            pages.push(EdgePage { first, edges });
            if pages.len() >= EDGE_PAGES_PER_BATCH || i >= pending.len() {
                rows.extend(par_map(&pages, |p| {
                    let key = org.edge_page_key(page_of(p.first, EDGES_PER_PAGE));
                    Ok((key, org.seal_record(EDGES, &key, Compartment::Core, version, p)?))
                })?);
                let addrs = pages.iter().map(|p| Addr::edge_page(page_of(p.first, EDGES_PER_PAGE)));
                self.changed_pages.extend(addrs.clone().map(|a| org.page_key(a)));
                self.written.extend(addrs);
                pages.clear();
            }
        }
        self.seals += rows.len() as u64;
        write_sorted(self.w.txn_mut()?, EDGES, &mut rows)?;
        drop(rows);

        let (entries, groups) = group_by_node(&pending);
        let mut jobs: Vec<PageJob> = Vec::with_capacity(groups.len());
        for &(node, dir, range) in &groups {
            let run = &entries[range.0..range.1];
            let built = run.iter().map(|&e| entry_of(&pending[e / 2], e % 2, now));
            self.pack(node, dir, built, run.len(), !last, &mut jobs)?;
        }
        drop(entries);
        // The buffer is reused by the next flush's edges: its pages are not faulted in again.
        let mut pending = pending;
        pending.clear();
        self.pending = pending;
        if last {
            jobs.extend(self.tail_jobs()?);
            jobs.extend(self.stale_first_jobs()?);
        }
        self.write_pages(jobs)
    }

    /// Seals and writes adjacency pages.
    fn write_pages(&mut self, jobs: Vec<PageJob>) -> Result<()> {
        let org = self.org.inner.clone();
        let version = self.w.version();
        let mut rows = par_map(&jobs, |(node, dir, page, body)| {
            let key = org.adj_key(*node, *dir, *page);
            Ok((key, org.seal_page(&key, version, body)?))
        })?;
        self.written.extend(jobs.iter().map(|j| Addr::adj(j.0, j.1, j.2)));
        self.changed_pages.extend(jobs.iter().map(|j| org.page_key(Addr::adj(j.0, j.1, j.2))));
        drop(jobs);
        self.seals += rows.len() as u64;
        self.stats.pages_written += rows.len() as u64;
        write_sorted(self.w.txn_mut()?, ADJ, &mut rows)
    }

    /// Writes every tail page kept in memory.
    fn write_tails(&mut self) -> Result<()> {
        let jobs = self.tail_jobs()?;
        self.write_pages(jobs)
    }

    /// Every tail page kept in memory, to write (with its list's page count if it is page 0).
    fn tail_jobs(&mut self) -> Result<Vec<PageJob>> {
        let mut jobs = Vec::with_capacity(self.tails.len());
        for ((node, dir), (page, mut body)) in std::mem::take(&mut self.tails) {
            if page == 0 {
                body.pages = self.w.node_for_update(node)?.side(dir).0;
            }
            jobs.push((node, dir, page, body));
        }
        self.tail_bytes = 0;
        Ok(jobs)
    }

    /// Every page 0 whose page count changed after it was written, with its final count.
    fn stale_first_jobs(&mut self) -> Result<Vec<PageJob>> {
        let mut jobs = Vec::with_capacity(self.stale_first.len());
        for (node, dir) in std::mem::take(&mut self.stale_first) {
            let pages = self.w.node_for_update(node)?.side(dir).0;
            jobs.push((node, dir, 0, encode_page(pages, &self.read_page(node, dir, 0)?)));
        }
        Ok(jobs)
    }

    /// Appends `run` (`len` entries) to the pages of `(node, dir)`: fills the tail page, adds
    /// new full pages, and marks page 0 for a rewrite if the page count changed. Pages to seal
    /// go to `jobs`; with `keep_tail` a partly filled last page goes to `tails` instead.
    fn pack(
        &mut self,
        node: u64,
        dir: u8,
        mut run: impl Iterator<Item = AdjEntry>,
        len: usize,
        keep_tail: bool,
        jobs: &mut Vec<PageJob>,
    ) -> Result<()> {
        // One record lookup for a list that stays inline (most lists of a flush), two otherwise.
        let rec = self.w.node_for_update(node)?;
        let (old_pages, degree, inline) = rec.side(dir);
        // The pages to (re)write: the tail page if it has room, then new ones. Without pages the
        // entries are inline in the node record: they stay there while they fit, else they
        // become the start of page 0.
        let mut first = old_pages;
        let mut current: Vec<AdjEntry> = Vec::new();
        if old_pages == 0 {
            current = inline_of(0, degree, inline)
                .map_err(|_| Error::corrupt(NODES.name, &self.org.inner.node_page_key(page_of(node, NODES_PER_PAGE))))?
                .unwrap_or_default();
            let fits = current.len() + len <= INLINE_MAX;
            if fits {
                current.extend(run.by_ref());
            }
            let side = rec.side_mut(dir);
            if fits {
                *side.degree += len as u64;
                *side.inline = encode_inline(&current);
                // The page cache holds inline entries under the page-0 key.
                self.inline_changed.insert((node, dir));
                return Ok(());
            }
            side.inline.clear();
        }
        if let Some((page, body)) = self.tails.remove(&(node, dir)) {
            // The tail page an earlier flush kept in memory.
            self.tail_bytes -= body.data.len();
            if page + 1 != old_pages {
                return Err(Error::Internal("bulk tail page out of step with its record".into()));
            }
            first = page;
            current = decode_owned_page(&body).map_err(|_| Error::Internal("bulk tail page does not decode".into()))?;
        } else if old_pages > 0 {
            let tail = self.read_page(node, dir, old_pages - 1)?;
            if tail.len() < PAGE_CAPACITY {
                first = old_pages - 1;
                current = tail;
            }
        }
        current.reserve(len.min(PAGE_CAPACITY - current.len()));
        let mut pages: Vec<Vec<AdjEntry>> = Vec::new();
        for e in run {
            if current.len() >= PAGE_CAPACITY {
                pages.push(std::mem::take(&mut current));
                current.reserve(PAGE_CAPACITY);
            }
            current.push(e);
        }
        pages.push(current);
        let total =
            first + u32::try_from(pages.len()).map_err(|_| Error::invalid(InputKind::Exhausted, "too many pages"))?;
        let side = self.w.dirty_node_mut(node)?.side_mut(dir);
        *side.degree += len as u64;
        *side.pages = total;
        if first > 0 && total != old_pages {
            // Page 0 carries the page count: rewritten once, with the final count, at `finish`.
            self.stale_first.insert((node, dir));
        }
        let last = pages.len() - 1;
        for (i, entries) in pages.into_iter().enumerate() {
            let page = first + i as u32;
            if keep_tail && i == last && entries.len() < PAGE_CAPACITY {
                // A partly filled tail: kept for the next flush (page 0's count is set when written).
                let body = encode_page(0, &entries);
                self.tail_bytes += body.data.len();
                self.tails.insert((node, dir), (page, body));
                continue;
            }
            // Encoded now: the decoded entries of the flush's pages never exist all at once.
            jobs.push((node, dir, page, encode_page(if page == 0 { total } else { 0 }, &entries)));
        }
        Ok(())
    }

    /// Reads one page of `(node, dir)` as this transaction sees it.
    fn read_page(&self, node: u64, dir: u8, p: u32) -> Result<Vec<AdjEntry>> {
        let org = &self.org.inner;
        let key = org.adj_key(node, dir, p);
        let sealed = self.read_checked(Addr::adj(node, dir, p), &key)?;
        let (_, entries) = org.open_page(&key, &sealed)?;
        Ok(entries)
    }

    /// A page as this transaction sees it: one this load wrote must be at its version, a stored
    /// one is checked against the org's state root.
    fn read_checked(&self, addr: Addr, key: &[u8]) -> Result<Vec<u8>> {
        let table = addr.kind().table();
        let sealed = self.w.get(table, key)?;
        if self.written.contains(&addr) {
            let s = sealed.ok_or_else(|| Error::corrupt(table.name, key))?;
            if crate::crypto::envelope::peek_version(&s, table.name, key)? != self.w.version() {
                return Err(Error::corrupt(table.name, key));
            }
            return Ok(s);
        }
        self.w.check_stored(addr, key, sealed.as_deref())?;
        sealed.ok_or_else(|| Error::corrupt(table.name, key))
    }

    /// Edge page `page` as this transaction sees it (an earlier flush's or the stored one).
    fn read_edge_page(&self, page: u64) -> Result<Vec<EdgeRecord>> {
        let org = &self.org.inner;
        let key = org.edge_page_key(page);
        let sealed = self.read_checked(Addr::edge_page(page), &key)?;
        Ok(org.open_edge_page(page, &key, &sealed)?.edges)
    }

    /// Flushes what is buffered and commits everything durably (one redb commit).
    pub fn finish(mut self) -> Result<BulkStats> {
        self.w.check_not_failed()?;
        self.flush(true)?;
        let stats = self.stats;
        let written: Vec<Addr> = self.written.iter().copied().collect();
        let org = &self.org.inner;
        self.changed_pages.extend(self.inline_changed.iter().map(|&(n, d)| org.page_key(Addr::adj(n, d, 0))));
        self.w.commit_with(&self.changed_pages, &written, self.seals)?;
        Ok(stats)
    }
}

/// A node, a direction, and the range of its entries in the grouped entry list.
type Group = (u64, u8, (usize, usize));

/// The adjacency entry of `side` (0: the source's out-entry, 1: the target's in-entry) of a
/// pending edge.
fn entry_of(p: &Pending, side: usize, now: Timestamp) -> AdjEntry {
    AdjEntry {
        neighbor: if side == 0 { p.to } else { p.from },
        edge: p.id,
        kind: p.kind,
        valid_from: p.valid_from,
        valid_to: p.valid_to,
        recorded_at: now,
        retracted_at: i64::MAX,
    }
}

/// Both adjacency entries of every pending edge, grouped by (node, direction), each group in
/// edge-id order (the order `pending` is in), as `2 * index in pending + side` (see
/// [`entry_of`]): 8 bytes an entry instead of a 56-byte [`AdjEntry`], built when its page is
/// packed. A counting sort over the dense node ids when they are few enough for it, a
/// comparison sort otherwise.
fn group_by_node(pending: &[Pending]) -> (Vec<usize>, Vec<Group>) {
    let (out, inn) = (u64::from(dir_index(Direction::Out)), u64::from(dir_index(Direction::In)));
    let max_node = pending.iter().map(|p| p.from.max(p.to)).max().unwrap_or(0);
    let buckets = max_node.saturating_add(1).saturating_mul(2);
    if buckets > 16 * pending.len() as u64 + 1024 {
        let mut adj: Vec<(u64, usize)> = Vec::with_capacity(pending.len() * 2);
        for (i, p) in pending.iter().enumerate() {
            adj.push((p.from * 2 + out, 2 * i));
            adj.push((p.to * 2 + inn, 2 * i + 1));
        }
        // (bucket, index) pairs are distinct: an unstable sort keeps edge-id order in a group.
        adj.sort_unstable();
        let mut groups: Vec<Group> = Vec::new();
        let mut start = 0;
        while start < adj.len() {
            let b = adj[start].0;
            let len = adj[start..].iter().take_while(|(x, _)| *x == b).count();
            groups.push((b / 2, (b % 2) as u8, (start, start + len)));
            start += len;
        }
        return (adj.into_iter().map(|(_, e)| e).collect(), groups);
    }
    let buckets = buckets as usize;
    let mut starts = vec![0usize; buckets + 1];
    for p in pending {
        starts[(p.from * 2 + out) as usize + 1] += 1;
        starts[(p.to * 2 + inn) as usize + 1] += 1;
    }
    for b in 0..buckets {
        starts[b + 1] += starts[b];
    }
    let mut fill = starts.clone();
    let mut entries = vec![0usize; pending.len() * 2];
    for (i, p) in pending.iter().enumerate() {
        for (side, b) in [(p.from * 2 + out) as usize, (p.to * 2 + inn) as usize].into_iter().enumerate() {
            entries[fill[b]] = 2 * i + side;
            fill[b] += 1;
        }
    }
    let groups = (0..buckets)
        .filter(|&b| starts[b] < starts[b + 1])
        .map(|b| ((b / 2) as u64, (b % 2) as u8, (starts[b], starts[b + 1])))
        .collect();
    (entries, groups)
}

/// One adjacency page to seal and write: `(node, direction, page number, encoded page)` (page
/// 0's header carries the list's page count, every other page's 0).
type PageJob = (u64, u8, u32, AdjPage);
