//! Read snapshots: point reads, index lookups and adjacency walks over one MVCC snapshot.

use rkyv::util::AlignedVec;
use std::collections::HashMap;
use std::sync::Arc;
use zeroize::Zeroize;

use super::cache::{Bucket, Cached, Page, Records, Scrub};
use super::kv::{BackendKind, KvSnapshot};
use super::org::Org;
use super::org::OrgInner;
use super::records::{bucket_of, dir_index, fingerprint, IndexHash, Owner, Runs};
use super::state::{Addr, Roots};
use super::tables::{index_domain, RecordKey, Table, ADJ, DICT, EDGES, INDEX, NODES, ORGS, PROPS};
use crate::codec::{
    first_of, page_of, AdjEntry, EdgePage, EdgeRecord, NodePage, NodeRecord, PropMap, EDGES_PER_PAGE, NODES_PER_PAGE,
};
use crate::error::{Error, Result};
pub use crate::filter::NeighborFilter;
use crate::types::{Compartment, Direction, EdgeId, KindId, NodeId, SourceRef, Timestamp, Value};

/// A node as read from a snapshot.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct NodeView {
    /// The node's id.
    pub id: NodeId,
    /// The node's kind.
    pub kind: String,
    /// The sources it is known by.
    pub sources: Vec<SourceRef>,
    /// When it was first stored.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// Outgoing edges (retracted ones included).
    pub out_degree: u64,
    /// Incoming edges (retracted ones included).
    pub in_degree: u64,
}

/// An edge as read from a snapshot.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct EdgeView {
    /// The edge's id.
    pub id: EdgeId,
    /// Source node.
    pub from: NodeId,
    /// Target node.
    pub to: NodeId,
    /// The edge's kind.
    pub kind: String,
    /// Where the edge came from.
    pub source: Option<SourceRef>,
    /// Valid-time start (inclusive), if bounded.
    pub valid_from: Option<Timestamp>,
    /// Valid-time end (exclusive), if bounded.
    pub valid_to: Option<Timestamp>,
    /// When the store learned it.
    pub recorded_at: Timestamp,
    /// When the store retracted it, if it did.
    pub retracted_at: Option<Timestamp>,
}

/// One adjacency entry seen from a node: the neighbor and the edge that leads there, with
/// everything needed to filter by kind and time without fetching the edge record.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Neighbor {
    /// The node at the other end.
    pub node: NodeId,
    /// The edge.
    pub edge: EdgeId,
    /// The edge's kind.
    pub kind: KindId,
    /// `Out` if the edge leaves the node asked about, `In` if it arrives there.
    pub direction: Direction,
    /// Valid-time start (inclusive), if bounded.
    pub valid_from: Option<Timestamp>,
    /// Valid-time end (exclusive), if bounded.
    pub valid_to: Option<Timestamp>,
    /// When the store learned the edge.
    pub recorded_at: Timestamp,
    /// When the store retracted the edge, if it did.
    pub retracted_at: Option<Timestamp>,
}

impl Neighbor {
    pub(crate) fn from_entry(e: &AdjEntry, direction: Direction) -> Self {
        Neighbor {
            node: NodeId(e.neighbor),
            edge: EdgeId(e.edge),
            kind: KindId(e.kind),
            direction,
            valid_from: (e.valid_from != i64::MIN).then_some(e.valid_from),
            valid_to: (e.valid_to != i64::MAX).then_some(e.valid_to),
            recorded_at: e.recorded_at,
            retracted_at: (e.retracted_at != i64::MAX).then_some(e.retracted_at),
        }
    }
}

/// Node pages and edge pages, as snapshots and write transactions read them (and snapshots cache
/// them).
pub(super) trait DensePage {
    type Rec: Scrub;
    const TABLE: Table;
    const PER: u64;
    fn key(org: &OrgInner, page: u64) -> RecordKey;
    fn addr(page: u64) -> Addr;
    fn open(org: &OrgInner, page: u64, key: &[u8], sealed: &[u8]) -> Result<Vec<Self::Rec>>;
    fn next(facts: &Facts) -> u64;
    fn wrap(r: Arc<Records<Self::Rec>>) -> Cached;
    fn unwrap(c: &Cached) -> Option<Arc<Records<Self::Rec>>>;
}

impl DensePage for NodePage {
    type Rec = NodeRecord;
    const TABLE: Table = NODES;
    const PER: u64 = NODES_PER_PAGE;
    fn key(org: &OrgInner, page: u64) -> RecordKey {
        org.node_page_key(page)
    }
    fn addr(page: u64) -> Addr {
        Addr::node_page(page)
    }
    fn open(org: &OrgInner, page: u64, key: &[u8], sealed: &[u8]) -> Result<Vec<NodeRecord>> {
        Ok(org.open_node_page(page, key, sealed)?.nodes)
    }
    fn next(facts: &Facts) -> u64 {
        facts.next_node
    }
    fn wrap(r: Arc<Records<NodeRecord>>) -> Cached {
        Cached::Nodes(r)
    }
    fn unwrap(c: &Cached) -> Option<Arc<Records<NodeRecord>>> {
        match c {
            Cached::Nodes(r) => Some(r.clone()),
            _ => None,
        }
    }
}

impl DensePage for EdgePage {
    type Rec = EdgeRecord;
    const TABLE: Table = EDGES;
    const PER: u64 = EDGES_PER_PAGE;
    fn key(org: &OrgInner, page: u64) -> RecordKey {
        org.edge_page_key(page)
    }
    fn addr(page: u64) -> Addr {
        Addr::edge_page(page)
    }
    fn open(org: &OrgInner, page: u64, key: &[u8], sealed: &[u8]) -> Result<Vec<EdgeRecord>> {
        Ok(org.open_edge_page(page, key, sealed)?.edges)
    }
    fn next(facts: &Facts) -> u64 {
        facts.next_edge
    }
    fn wrap(r: Arc<Records<EdgeRecord>>) -> Cached {
        Cached::Edges(r)
    }
    fn unwrap(c: &Cached) -> Option<Arc<Records<EdgeRecord>>> {
        match c {
            Cached::Edges(r) => Some(r.clone()),
            _ => None,
        }
    }
}

/// What a snapshot needs from its org's registry entry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts {
    next_node: u64,
    next_edge: u64,
    /// The index runs, newest first.
    runs: Runs,
    node_count: u64,
    edge_count: u64,
    /// The org's state root: every record read is checked against it.
    pub(super) roots: Roots,
    /// The org's commit counter (cache validity across processes).
    commit_seq: u64,
}

impl Facts {
    /// Whether node id `node` was assigned: ids are dense and nodes are never removed, so
    /// assigned means it exists.
    fn assigned(&self, node: u64) -> bool {
        node != 0 && node < self.next_node
    }
}

/// A read snapshot of one organization.
pub struct ReadTxn {
    org: Org,
    gen: u64,
    cache_ok: bool,
    snap: Box<dyn KvSnapshot>,
    /// The org's registry facts in this snapshot, read on first need.
    facts: std::sync::OnceLock<Facts>,
    /// Adjacency pages fetched ahead for one traversal level (a server backend: one round trip
    /// for the level), each taken out by the first [`ReadTxn::page`] that asks for it (`None`: a
    /// checked-missing page 0, which `page` then verifies against the node record); cleared at
    /// the next level.
    prefetched: std::sync::Mutex<HashMap<RecordKey, Option<Arc<Page>>>>,
    /// Node pages fetched ahead for one traversal level (they hold most nodes' adjacency
    /// inline); read only while the cache does not serve this snapshot.
    prefetched_nodes: std::sync::Mutex<HashMap<u64, Arc<Records<NodeRecord>>>>,
    /// Node pages this snapshot opened while the cache does not serve it, kept as their
    /// decrypted archives (at most `SNAPSHOT_NODE_PAGES`): a walk reads a node's inline entries
    /// in place from them, and a page it comes back to is neither decrypted nor decoded again.
    plain: std::sync::Mutex<HashMap<u64, Arc<Plain>>>,
}

/// Node pages a snapshot the page cache does not serve keeps open (a few KiB each: ~3 on Enron).
const SNAPSHOT_NODE_PAGES: usize = 256;

/// A decrypted archive, wiped when the last reference goes.
struct Plain(AlignedVec);

impl Drop for Plain {
    fn drop(&mut self) {
        self.0.as_mut_slice().zeroize();
    }
}

impl std::fmt::Debug for ReadTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadTxn").field("org", &self.org.name()).finish_non_exhaustive()
    }
}

impl ReadTxn {
    pub(crate) fn begin(org: Org) -> Result<Self> {
        let cache = &org.inner.shared.cache;
        let g1 = cache.generation();
        let snap = org.inner.db.kv.snapshot()?;
        if org.inner.db.kv.kind() != BackendKind::Redb {
            // Other processes commit too: the cache may serve this snapshot only if its pages are
            // of the org's commit counter in this snapshot (else it is dropped or bypassed).
            let txn = ReadTxn {
                gen: 0,
                cache_ok: false,
                snap,
                facts: Default::default(),
                prefetched: Default::default(),
                prefetched_nodes: Default::default(),
                plain: Default::default(),
                org,
            };
            let seq = txn.facts()?.commit_seq;
            let gen = txn.org.inner.shared.cache.observe(seq);
            return Ok(ReadTxn { gen: gen.unwrap_or(0), cache_ok: gen.is_some(), ..txn });
        }
        let g2 = cache.generation();
        Ok(ReadTxn {
            gen: g1,
            cache_ok: g1 == g2 && g1.is_multiple_of(2) && cache.enabled(),
            snap,
            facts: std::sync::OnceLock::new(),
            prefetched: Default::default(),
            prefetched_nodes: Default::default(),
            plain: Default::default(),
            org,
        })
    }

    /// The organization this snapshot reads.
    pub fn org(&self) -> &Org {
        &self.org
    }

    /// One value, copied out; a panic inside redb (it panics on some corrupt files) is `Corrupt`.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.snap.get(table, key)
    }

    /// The registry facts of this snapshot: next ids and index shape.
    fn facts(&self) -> Result<&Facts> {
        if let Some(v) = self.facts.get() {
            return Ok(v);
        }
        let oi = &self.org.inner;
        let sealed = self.get(ORGS, &oi.tag.0)?.ok_or_else(|| Error::OrgNotFound(oi.name.clone()))?;
        // The entry this instance opened last, if these are its very bytes.
        let known = oi.shared.facts.read().ok().and_then(|g| g.as_ref().filter(|(b, _)| *b == sealed).map(|(_, f)| *f));
        let f = match known {
            Some(f) => f,
            None => {
                let e = oi.db.open_entry(oi.tag, &sealed)?;
                let f = Facts {
                    next_node: e.next_node,
                    next_edge: e.next_edge,
                    runs: Runs::of(&e.index_runs)?,
                    node_count: e.node_count,
                    edge_count: e.edge_count,
                    roots: Roots::decode(&e.state_root)?,
                    commit_seq: e.commit_seq,
                };
                if let Ok(mut g) = oi.shared.facts.write() {
                    *g = Some((sealed, f));
                }
                f
            }
        };
        Ok(self.facts.get_or_init(|| f))
    }

    /// The record at `addr` (key `key`), checked against this snapshot's state root.
    fn fetch(&self, addr: Addr, key: &RecordKey) -> Result<Option<Vec<u8>>> {
        let roots = self.facts()?.roots;
        self.org.inner.fetch(&roots, &|t, k| self.get(t, k), addr, key)
    }

    /// A cached page, if the cache may serve this snapshot.
    fn cached(&self, addr: Addr) -> Option<Cached> {
        if !self.cache_ok {
            return None;
        }
        self.org.inner.shared.cache.get(&self.org.inner.page_key(addr), self.gen)
    }

    fn remember(&self, addr: Addr, page: Cached) {
        if self.cache_ok {
            self.org.inner.shared.cache.insert(self.org.inner.page_key(addr), page, self.gen);
        }
    }

    /// Page `page` of node or edge records, holding exactly the ids this snapshot's org has
    /// there (a page with fewer or more records, or a missing page below the next id, is
    /// `Corrupt`).
    fn dense_page<P: DensePage>(&self, page: u64) -> Result<Arc<Records<P::Rec>>> {
        if let Some(r) = self.cached(P::addr(page)).as_ref().and_then(P::unwrap) {
            return Ok(r);
        }
        let key = P::key(&self.org.inner, page);
        let first = first_of(page, P::PER);
        let expected = P::next(self.facts()?).min(first_of(page + 1, P::PER)).saturating_sub(first);
        let sealed = self.fetch(P::addr(page), &key)?.ok_or_else(|| Error::corrupt(P::TABLE.name, &key))?;
        let records = P::open(&self.org.inner, page, &key, &sealed)?;
        if records.len() as u64 != expected {
            return Err(Error::corrupt(P::TABLE.name, &key));
        }
        let r = Arc::new(Records(records));
        self.remember(P::addr(page), P::wrap(r.clone()));
        Ok(r)
    }

    /// Calls `f` with record `id`, read in place from its (cached) page; `None` for an id this
    /// org never assigned.
    fn with_record<P: DensePage, T>(&self, id: u64, f: impl FnOnce(&P::Rec) -> T) -> Result<Option<T>> {
        if id == 0 || id >= P::next(self.facts()?) {
            return Ok(None);
        }
        let page = page_of(id, P::PER);
        let r = self.dense_page::<P>(page)?;
        let rec = r.0.get((id - first_of(page, P::PER)) as usize);
        let rec = rec.ok_or_else(|| Error::corrupt(P::TABLE.name, &P::key(&self.org.inner, page)))?;
        Ok(Some(f(rec)))
    }

    fn with_node<T>(&self, id: NodeId, f: impl FnOnce(&NodeRecord) -> T) -> Result<Option<T>> {
        // Pages fetched ahead or kept by a snapshot the cache does not serve (for one it does
        // serve, they are in the cache).
        if !self.cache_ok && self.facts()?.assigned(id.0) {
            let page = page_of(id.0, NODES_PER_PAGE);
            let ahead = self.prefetched_nodes.lock().ok().and_then(|m| m.get(&page).cloned());
            if let Some(r) = ahead {
                let rec = r.0.get((id.0 - first_of(page, NODES_PER_PAGE)) as usize);
                let rec = rec.ok_or_else(|| Error::corrupt(NODES.name, &self.org.inner.node_page_key(page)))?;
                return Ok(Some(f(rec)));
            }
        }
        self.with_record::<NodePage, T>(id.0, f)
    }

    fn with_edge<T>(&self, id: EdgeId, f: impl FnOnce(&EdgeRecord) -> T) -> Result<Option<T>> {
        self.with_record::<EdgePage, T>(id.0, f)
    }

    fn node_record(&self, id: NodeId) -> Result<Option<NodeRecord>> {
        self.with_node(id, NodeRecord::clone)
    }

    fn edge_record(&self, id: EdgeId) -> Result<Option<EdgeRecord>> {
        self.with_edge(id, EdgeRecord::clone)
    }

    /// The value the hashed index holds for `h`, if any: the run whose bucket holds its
    /// fingerprint (a source is in at most one run), probed oldest (largest) first, where most
    /// entries are.
    fn index_lookup(&self, h: &IndexHash) -> Result<Option<u64>> {
        let fp = fingerprint(h);
        for run in self.facts()?.runs.as_slice().iter().rev() {
            let b = bucket_of(&fp, run.bits);
            let addr = Addr::bucket(run.slot, b);
            let found = match self.cached(addr) {
                Some(Cached::Bucket(page)) => page.get(&fp),
                _ => {
                    let key = self.org.inner.bucket_key(run.slot, b);
                    let sealed = self.fetch(addr, &key)?.ok_or_else(|| Error::corrupt(INDEX.name, &key))?;
                    let page = Arc::new(Bucket::new(self.org.inner.open_bucket(&key, &sealed)?));
                    let found = page.get(&fp);
                    self.remember(addr, Cached::Bucket(page));
                    found
                }
            };
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// The name of a kind id, `None` if the id is unknown.
    pub fn kind_name(&self, kind: KindId) -> Result<Option<String>> {
        let shared = &self.org.inner.shared;
        if let Some(n) = shared.kind_name(kind.0) {
            return Ok(Some(n));
        }
        let key = self.org.inner.dict_key(kind.0);
        let Some(sealed) = self.fetch(Addr::dict(kind.0), &key)? else { return Ok(None) };
        let buf = self.org.inner.open(DICT, &key, Compartment::Core, &sealed)?;
        let name = String::from_utf8(buf.as_slice().to_vec()).map_err(|_| Error::corrupt(DICT.name, &key))?;
        shared.remember_kind(kind.0, &name);
        Ok(Some(name))
    }

    /// The id of a kind name, `None` if no node or edge of this org has that kind.
    pub fn kind_id(&self, name: &str) -> Result<Option<KindId>> {
        let shared = &self.org.inner.shared;
        if let Some(id) = shared.kind_id(name) {
            return Ok(Some(KindId(id)));
        }
        let h = self.org.inner.index_hash(index_domain::KIND, &[name.as_bytes()]);
        let Some(id) = self.index_lookup(&h)? else { return Ok(None) };
        let id = u32::try_from(id).map_err(|_| Error::corrupt(INDEX.name, &[]))?;
        shared.remember_kind(id, name);
        Ok(Some(KindId(id)))
    }

    fn kind_name_or_corrupt(&self, kind: u32, table: Table, key: &[u8]) -> Result<String> {
        self.kind_name(KindId(kind))?.ok_or_else(|| Error::corrupt(table.name, key))
    }

    /// Reads a node; `None` if this org has no such node.
    pub fn node(&self, id: NodeId) -> Result<Option<NodeView>> {
        let Some(rec) = self.node_record(id)? else { return Ok(None) };
        let kind =
            self.kind_name_or_corrupt(rec.kind, NODES, &self.org.inner.node_page_key(page_of(id.0, NODES_PER_PAGE)))?;
        Ok(Some(NodeView {
            id,
            kind,
            sources: rec.sources.into_iter().map(|(s, e)| SourceRef { system: s, external_id: e }).collect(),
            created_at: rec.created_at,
            updated_at: rec.updated_at,
            out_degree: rec.out_degree,
            in_degree: rec.in_degree,
        }))
    }

    /// Reads an edge; `None` if this org has no such edge.
    pub fn edge(&self, id: EdgeId) -> Result<Option<EdgeView>> {
        let Some(rec) = self.edge_record(id)? else { return Ok(None) };
        let kind =
            self.kind_name_or_corrupt(rec.kind, EDGES, &self.org.inner.edge_page_key(page_of(id.0, EDGES_PER_PAGE)))?;
        Ok(Some(EdgeView {
            id,
            from: NodeId(rec.from),
            to: NodeId(rec.to),
            kind,
            source: rec.source.map(|(s, e)| SourceRef { system: s, external_id: e }),
            valid_from: (rec.valid_from != i64::MIN).then_some(rec.valid_from),
            valid_to: (rec.valid_to != i64::MAX).then_some(rec.valid_to),
            recorded_at: rec.recorded_at,
            retracted_at: rec.retracted_at,
        }))
    }

    fn lookup_in(&self, domain: &[u8], system: &str, external_id: &str) -> Result<Option<u64>> {
        let h = self.org.inner.index_hash(domain, &[system.as_bytes(), external_id.as_bytes()]);
        self.index_lookup(&h)
    }

    /// The node known by `(system, external_id)`, if any.
    pub fn lookup(&self, system: &str, external_id: &str) -> Result<Option<NodeId>> {
        Ok(self.lookup_in(index_domain::NODE_SOURCE, system, external_id)?.map(NodeId))
    }

    /// The edge known by `(system, external_id)`, if any.
    pub fn lookup_edge(&self, system: &str, external_id: &str) -> Result<Option<EdgeId>> {
        Ok(self.lookup_in(index_domain::EDGE_SOURCE, system, external_id)?.map(EdgeId))
    }

    fn props(&self, owner: Owner, c: Compartment) -> Result<Vec<(String, Value)>> {
        c.check_property()?;
        if !self.org.inner.scope.contains(&c) {
            return Err(Error::Denied(c));
        }
        let key = self.org.inner.props_key(owner, c);
        let Some(sealed) = self.fetch(Addr::props(owner, c), &key)? else {
            // No record: fine unless the owner says this compartment holds one.
            let mask = match owner {
                Owner::Node(id) => self.with_node(NodeId(id), |r| r.props)?,
                Owner::Edge(id) => self.with_edge(EdgeId(id), |r| r.props)?,
            };
            if mask.is_some_and(|m| m & (1 << c.index()) != 0) {
                return Err(Error::corrupt(PROPS.name, &key));
            }
            return Ok(Vec::new());
        };
        let map: PropMap = self.org.inner.open_record(PROPS, &key, c, &sealed)?;
        Ok(map.entries.into_iter().map(|(n, v)| (n, Value::from(v))).collect())
    }

    /// A node's properties in compartment `c`, sorted by name. `Error::Denied` if the handle's
    /// scope does not include `c`.
    pub fn node_props(&self, node: NodeId, c: Compartment) -> Result<Vec<(String, Value)>> {
        self.props(Owner::Node(node.0), c)
    }

    /// An edge's properties in compartment `c`, sorted by name.
    pub fn edge_props(&self, edge: EdgeId, c: Compartment) -> Result<Vec<(String, Value)>> {
        self.props(Owner::Edge(edge.0), c)
    }

    /// A node's degree in `dir` (retracted edges included), read from the node record without
    /// touching adjacency pages. `None` for an unknown node.
    pub fn degree(&self, node: NodeId, dir: Direction) -> Result<Option<u64>> {
        self.with_node(node, |r| match dir {
            Direction::Out => r.out_degree,
            Direction::In => r.in_degree,
            Direction::Both => r.out_degree + r.in_degree,
        })
    }

    /// Node and edge counts of this snapshot (edges include retracted ones).
    pub fn counts(&self) -> Result<(u64, u64)> {
        let f = self.facts()?;
        Ok((f.node_count, f.edge_count))
    }

    /// Whether this snapshot's org has assigned node id `node` (see [`Facts::assigned`]), from
    /// the registry entry alone.
    pub(crate) fn assigned(&self, node: NodeId) -> Result<bool> {
        Ok(self.facts()?.assigned(node.0))
    }

    /// One adjacency page; `None` if the node has no page there.
    pub(crate) fn page(&self, node: u64, dir: u8, p: u32) -> Result<Option<Arc<Page>>> {
        let addr = Addr::adj(node, dir, p);
        if let Some(Cached::Adj(page)) = self.cached(addr) {
            // In page 0, a page count of 0 marks the inline entries of the node record (none:
            // no neighbors there); later pages always carry 0.
            return Ok((p > 0 || page.pages > 0 || !page.entries.is_empty()).then_some(page));
        }
        // The node record says whether its entries are inline or in pages; so does the state
        // tree, which answers from memory: a node it says has pages (a hub, which is what a walk
        // expands most) goes straight to its page 0, without opening its node page.
        let roots = self.facts()?.roots;
        let paged = p > 0 || self.org.inner.holds(&roots, &|t, k| self.get(t, k), addr)? == Some(true);
        if !paged {
            match self.inline_entries(node, dir)? {
                None => return Ok(None),
                Some(Some(entries)) => {
                    let page = Arc::new(Page::new(0, entries));
                    self.remember(addr, Cached::Adj(page.clone()));
                    return Ok((!page.entries.is_empty()).then_some(page));
                }
                Some(None) => {}
            }
        }
        let key = self.org.inner.adj_key(node, dir, p);
        let ahead = self.prefetched.lock().ok().and_then(|mut m| m.remove(&key));
        let sealed = match ahead {
            // Opened and checked against the state tree by the prefetch.
            Some(Some(page)) => return Ok(Some(page)),
            Some(None) => {
                self.org.inner.check_state(&roots, &|t, k| self.get(t, k), addr, &key, None)?;
                None
            }
            None => self.fetch(addr, &key)?,
        };
        // The node record or the state tree says there are pages (page 0 only comes here then):
        // a removed page must not read as "no neighbors".
        let Some(sealed) = sealed else {
            return Err(Error::corrupt(ADJ.name, &key));
        };
        let (pages, entries) = self.org.inner.open_page(&key, &sealed)?;
        if p == 0 && pages == 0 {
            return Err(Error::corrupt(ADJ.name, &key));
        }
        let page = Arc::new(Page::new(pages, entries));
        self.remember(addr, Cached::Adj(page.clone()));
        Ok(Some(page))
    }

    /// Node page `page` (key `key`) decrypted: from this snapshot's memo, or read, checked
    /// against the state tree, opened and kept there while there is room.
    fn node_plain(&self, page: u64, key: &RecordKey) -> Result<Arc<Plain>> {
        let memo = || self.plain.lock().map_err(|_| Error::Internal("snapshot memo lock poisoned".into()));
        if let Some(p) = memo()?.get(&page) {
            return Ok(p.clone());
        }
        let sealed = self.fetch(Addr::node_page(page), key)?.ok_or_else(|| Error::corrupt(NODES.name, key))?;
        let plain = Arc::new(Plain(self.org.inner.open(NODES, key, Compartment::Core, &sealed)?));
        let mut m = memo()?;
        if m.len() < SNAPSHOT_NODE_PAGES {
            m.insert(page, plain.clone());
        }
        Ok(plain)
    }

    /// The entries of `node` in `dir` if its record keeps them inline (`Some(Some(_))`: no
    /// adjacency page), `Some(None)` if it has pages, `None` for an id this org never assigned.
    /// Inline entries must number the record's degree; a record with pages holds none inline.
    fn inline_entries(&self, node: u64, dir: u8) -> Result<Option<Option<Vec<AdjEntry>>>> {
        let f = self.facts()?;
        if !f.assigned(node) {
            return Ok(None);
        }
        let page = page_of(node, NODES_PER_PAGE);
        let key = self.org.inner.node_page_key(page);
        // Nothing keeps a decoded page for a snapshot the cache does not serve: read the one
        // record in place from the page's archive (decrypted once for this snapshot, see
        // `node_plain`) instead of deserializing all of them.
        if !self.cache_ok && !self.prefetched_nodes.lock().is_ok_and(|m| m.contains_key(&page)) {
            let plain = self.node_plain(page, &key)?;
            let first = first_of(page, NODES_PER_PAGE);
            let expected = f.next_node.min(first_of(page + 1, NODES_PER_PAGE)).saturating_sub(first);
            let slot = (node - first) as usize;
            return self.org.inner.node_adjacency(page, &key, plain.0.as_slice(), expected, slot, dir).map(Some);
        }
        let got = self.with_node(NodeId(node), |r| {
            let (pages, degree, inline) = r.side(dir);
            crate::codec::inline_of(pages, degree, inline)
        })?;
        match got {
            None => Ok(None),
            Some(Ok(v)) => Ok(Some(v)),
            Some(Err(_)) => Err(Error::corrupt(NODES.name, &key)),
        }
    }

    /// Fetches the adjacency pages of `nodes` in direction `dir` that neither the cache nor an
    /// earlier prefetch holds, in one `get_many` for the pages 0 and one for the further pages of
    /// nodes that have more: a traversal calls it once per BFS level, so on a server backend a
    /// level costs two round trips, not two per node. A no-op on redb (a local read is as cheap
    /// one by one). Pages are opened and validated here; one that fails is left for
    /// [`ReadTxn::page`] to read again and report, so a prefetch never fails a walk that would
    /// not have read that page.
    pub(crate) fn prefetch_direction(&self, nodes: impl Iterator<Item = u64>, dir: Direction) -> Result<()> {
        let dirs: &[u8] = match dir {
            Direction::Out => &[0],
            Direction::In => &[1],
            Direction::Both => &[0, 1],
        };
        self.prefetch_pages(nodes, dirs)
    }

    /// [`ReadTxn::prefetch_direction`] by page direction bytes (0 out, 1 in).
    pub(crate) fn prefetch_pages(&self, nodes: impl Iterator<Item = u64>, dirs: &[u8]) -> Result<()> {
        if self.org.inner.db.kv.kind() == BackendKind::Redb {
            return Ok(());
        }
        // The previous level's leftovers (pages the cache served instead) are of no more use.
        self.prefetched.lock().map_err(|_| Error::Internal("prefetch lock poisoned".into()))?.clear();
        let nodes: Vec<u64> = nodes.collect();
        // Node pages first: most nodes keep their entries inline, and the others' records say
        // how many pages they have.
        self.prefetch_node_pages(&nodes)?;
        let mut wanted: Vec<(u64, u8)> = Vec::new();
        for &n in &nodes {
            for &d in dirs {
                // Only nodes with pages there (or whose record is not at hand) need page 0.
                let inline = self.prefetched_record(n, |r| if d == 0 { r.out_pages == 0 } else { r.in_pages == 0 });
                if inline != Some(true) {
                    wanted.push((n, d));
                }
            }
        }
        // Pages 0, then every further page of the nodes whose page 0 says there are more.
        let more = self.prefetch_round(wanted.iter().map(|&(n, d)| (n, d, 0)).collect())?;
        self.prefetch_round(more)?;
        Ok(())
    }

    /// A node record already at hand (cached or prefetched), without reading anything.
    fn prefetched_record<T>(&self, id: u64, f: impl FnOnce(&NodeRecord) -> T) -> Option<T> {
        let page = page_of(id, NODES_PER_PAGE);
        let recs = match self.cached(Addr::node_page(page)).as_ref().and_then(NodePage::unwrap) {
            Some(r) => r,
            None => self.prefetched_nodes.lock().ok()?.get(&page).cloned()?,
        };
        recs.0.get(id.checked_sub(first_of(page, NODES_PER_PAGE))? as usize).map(f)
    }

    /// One `get_many` of the node pages of `nodes` that neither the cache nor this level's
    /// prefetch holds. Each is checked against the state tree and opened; one that fails is left
    /// for the one-by-one read to report.
    fn prefetch_node_pages(&self, nodes: &[u64]) -> Result<()> {
        let f = self.facts()?;
        let mut pages: Vec<u64> =
            nodes.iter().filter(|&&n| f.assigned(n)).map(|&n| page_of(n, NODES_PER_PAGE)).collect();
        pages.sort_unstable();
        pages.dedup();
        let mut held = self.prefetched_nodes.lock().map_err(|_| Error::Internal("prefetch lock poisoned".into()))?;
        held.retain(|p, _| pages.binary_search(p).is_ok());
        let keys: Vec<(u64, RecordKey)> = pages
            .into_iter()
            .filter(|p| !held.contains_key(p) && self.cached(Addr::node_page(*p)).is_none())
            .map(|p| (p, NodePage::key(&self.org.inner, p)))
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        let refs: Vec<&[u8]> = keys.iter().map(|(_, k)| k.as_slice()).collect();
        let values = self.snap.get_many(NODES, &refs)?;
        let get = |t: Table, k: &[u8]| self.get(t, k);
        for ((page, key), sealed) in keys.into_iter().zip(values) {
            let Some(sealed) = sealed else { continue };
            if self.org.inner.check_state(&f.roots, &get, Addr::node_page(page), &key, Some(&sealed)).is_err() {
                continue;
            }
            let Ok(records) = NodePage::open(&self.org.inner, page, &key, &sealed) else { continue };
            let first = first_of(page, NODES_PER_PAGE);
            if records.len() as u64 != f.next_node.min(first_of(page + 1, NODES_PER_PAGE)).saturating_sub(first) {
                continue;
            }
            let r = Arc::new(Records(records));
            self.remember(Addr::node_page(page), Cached::Nodes(r.clone()));
            held.insert(page, r);
        }
        Ok(())
    }

    /// One `get_many` of the pages `(node, dir, page)` not already at hand; returns the further
    /// pages that the fetched pages 0 announce.
    fn prefetch_round(&self, pages: Vec<(u64, u8, u32)>) -> Result<Vec<(u64, u8, u32)>> {
        let mut keys: Vec<(RecordKey, (u64, u8, u32))> = Vec::with_capacity(pages.len());
        {
            let held = self.prefetched.lock().map_err(|_| Error::Internal("prefetch lock poisoned".into()))?;
            for (n, d, p) in pages {
                if self.cached(Addr::adj(n, d, p)).is_some() {
                    continue;
                }
                let key = self.org.inner.adj_key(n, d, p);
                if !held.contains_key(&key) {
                    keys.push((key, (n, d, p)));
                }
            }
        }
        keys.sort_unstable_by_key(|a| a.0);
        keys.dedup_by(|a, b| a.0 == b.0);
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let roots = self.facts()?.roots;
        let refs: Vec<&[u8]> = keys.iter().map(|(k, _)| k.as_slice()).collect();
        let values = self.snap.get_many(ADJ, &refs)?;
        let mut more = Vec::new();
        let mut held = self.prefetched.lock().map_err(|_| Error::Internal("prefetch lock poisoned".into()))?;
        for ((key, (n, d, p)), sealed) in keys.into_iter().zip(values) {
            let Some(sealed) = sealed else {
                if p == 0 {
                    held.insert(key, None);
                }
                continue;
            };
            // The state tree's word on this page first (a page put back from an older copy is
            // `Corrupt`), as `fetch` does on the one-by-one path.
            let get = |t: Table, k: &[u8]| self.get(t, k);
            if self.org.inner.check_state(&roots, &get, Addr::adj(n, d, p), &key, Some(&sealed)).is_err() {
                continue;
            }
            let Ok((pages, entries)) = self.org.inner.open_page(&key, &sealed) else { continue };
            if p == 0 {
                if pages == 0 {
                    continue;
                }
                more.extend((1..pages).map(|q| (n, d, q)));
            }
            let page = Arc::new(Page::new(pages, entries));
            self.remember(Addr::adj(n, d, p), Cached::Adj(page.clone()));
            held.insert(key, Some(page));
        }
        Ok(more)
    }

    /// Calls `f` for every entry of `node` in `dir` that passes `filter`, page by page. Any page
    /// that fails to open is an error: never a partial walk.
    pub(crate) fn for_each_entry(
        &self,
        node: NodeId,
        dir: Direction,
        filter: &NeighborFilter,
        mut f: impl FnMut(&AdjEntry, Direction),
    ) -> Result<()> {
        let dirs: &[Direction] = match dir {
            Direction::Both => &[Direction::Out, Direction::In],
            Direction::Out => &[Direction::Out],
            Direction::In => &[Direction::In],
        };
        for &d in dirs {
            let di = dir_index(d);
            let Some(first) = self.page(node.0, di, 0)? else { continue };
            let pages = first.pages;
            for e in first.entries.iter().filter(|e| filter.accepts(e)) {
                f(e, d);
            }
            for p in 1..pages {
                let page = self.page(node.0, di, p)?.ok_or_else(|| Error::corrupt(ADJ.name, &[]))?;
                for e in page.entries.iter().filter(|e| filter.accepts(e)) {
                    f(e, d);
                }
            }
        }
        Ok(())
    }

    /// The current neighbors of `node` in `dir` (retracted edges hidden): one cached or
    /// decrypted page per up to 512 entries. An unknown node has none.
    pub fn neighbors(&self, node: NodeId, dir: Direction) -> Result<Neighbors<'_>> {
        self.neighbors_filtered(node, dir, NeighborFilter::default())
    }

    /// Neighbors that pass `filter` (kinds, valid time, record time).
    pub fn neighbors_filtered(&self, node: NodeId, dir: Direction, filter: NeighborFilter) -> Result<Neighbors<'_>> {
        filter.validate()?;
        let dirs = match dir {
            Direction::Both => vec![Direction::Out, Direction::In],
            d => vec![d],
        };
        Ok(Neighbors {
            r: self,
            node,
            dirs,
            dir_pos: 0,
            page_no: 0,
            pages: 0,
            page: None,
            pos: 0,
            filter,
            failed: false,
        })
    }
}

/// Iterator over a node's adjacency entries; yields an error (once) if a page fails to open.
pub struct Neighbors<'r> {
    r: &'r ReadTxn,
    node: NodeId,
    dirs: Vec<Direction>,
    dir_pos: usize,
    page_no: u32,
    pages: u32,
    page: Option<Arc<Page>>,
    pos: usize,
    filter: NeighborFilter,
    failed: bool,
}

impl std::fmt::Debug for Neighbors<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Neighbors").field("node", &self.node).finish_non_exhaustive()
    }
}

impl Iterator for Neighbors<'_> {
    type Item = Result<Neighbor>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(page) = &self.page {
                while self.pos < page.entries.len() {
                    let e = &page.entries[self.pos];
                    self.pos += 1;
                    if self.filter.accepts(e) {
                        return Some(Ok(Neighbor::from_entry(e, self.dirs[self.dir_pos])));
                    }
                }
                self.page = None;
                self.page_no += 1;
                if self.page_no >= self.pages {
                    self.dir_pos += 1;
                    self.page_no = 0;
                }
            }
            let dir = *self.dirs.get(self.dir_pos)?;
            match self.r.page(self.node.0, dir_index(dir), self.page_no) {
                Ok(Some(p)) => {
                    if self.page_no == 0 {
                        self.pages = p.pages;
                    }
                    self.page = Some(p);
                    self.pos = 0;
                }
                Ok(None) => {
                    self.dir_pos += 1;
                    self.page_no = 0;
                }
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl ReadTxn {
    /// `verify()`'s cross-checks over one snapshot: every source and kind leads through the index
    /// to its node, edge or kind, and the index holds nothing else; every edge is in its source's
    /// out-pages and its target's in-pages exactly once, with its record's fields; every node's
    /// degrees and page counts match its pages. Each failed check is pushed to `out`, naming the
    /// record; a record that fails to read is the error.
    pub(super) fn check_consistency(
        &self,
        entry: &crate::codec::OrgEntry,
        out: &mut Vec<super::verify::CorruptRecord>,
    ) -> Result<()> {
        let oi = &self.org.inner;
        let f = self.facts()?;
        let mut push = |table: Table, key: &[u8], node: Option<u64>, edge: Option<u64>, error: String| {
            out.push(super::verify::CorruptRecord {
                org: oi.name.clone(),
                table: table.name,
                key: hex::encode(key),
                node: node.map(NodeId),
                edge: edge.map(EdgeId),
                error,
            })
        };
        let mut index_entries = 0u64;
        for kind in 1..entry.next_kind {
            index_entries += 1;
            match self.kind_name(KindId(kind))? {
                None => push(DICT, &oi.dict_key(kind), None, None, format!("kind {kind} has no name")),
                Some(name) => {
                    let h = oi.index_hash(index_domain::KIND, &[name.as_bytes()]);
                    if self.index_lookup(&h)? != Some(u64::from(kind)) {
                        push(INDEX, &[], None, None, format!("kind {kind} is not in the index"));
                    }
                }
            }
        }
        // 2 bits per edge: seen in its source's out-pages, in its target's in-pages.
        let mut seen = vec![0u8; usize::try_from(f.next_edge).unwrap_or(0)];
        for id in 1..f.next_node {
            let Some(rec) = self.node_record(NodeId(id))? else { continue };
            for (system, ext) in &rec.sources {
                index_entries += 1;
                if self.lookup(system, ext)? != Some(NodeId(id)) {
                    push(INDEX, &[], Some(id), None, format!("source ({system}, {ext}) does not lead to node {id}"));
                }
            }
            for (di, degree, pages) in [(0u8, rec.out_degree, rec.out_pages), (1, rec.in_degree, rec.in_pages)] {
                let mut entries = 0u64;
                for p in 0..pages.max(1) {
                    let key = oi.adj_key(id, di, p);
                    let Some(page) = self.page(id, di, p)? else { break };
                    if p == 0 && page.pages != pages {
                        push(ADJ, &key, Some(id), None, format!("page count {}, node says {pages}", page.pages));
                    }
                    for e in page.entries.iter() {
                        entries += 1;
                        let (from, to) = if di == 0 { (id, e.neighbor) } else { (e.neighbor, id) };
                        let ok = self.with_edge(EdgeId(e.edge), |r| {
                            r.from == from
                                && r.to == to
                                && r.kind == e.kind
                                && r.valid_from == e.valid_from
                                && r.valid_to == e.valid_to
                                && r.recorded_at == e.recorded_at
                                && r.retracted_at.unwrap_or(i64::MAX) == e.retracted_at
                        })?;
                        let bit = 1u8 << di;
                        let slot = usize::try_from(e.edge).ok().and_then(|i| seen.get_mut(i));
                        match (ok, slot) {
                            (Some(true), Some(s)) if *s & bit == 0 => *s |= bit,
                            _ => push(
                                ADJ,
                                &key,
                                Some(id),
                                Some(e.edge),
                                format!("entry for edge {} does not match the edge record or repeats", e.edge),
                            ),
                        }
                    }
                }
                if entries != degree {
                    let key = oi.adj_key(id, di, 0);
                    push(
                        ADJ,
                        &key,
                        Some(id),
                        None,
                        format!("{entries} adjacency entries, the node's degree is {degree}"),
                    );
                }
            }
        }
        for id in 1..f.next_edge {
            let Some(rec) = self.edge_record(EdgeId(id))? else { continue };
            if let Some((system, ext)) = &rec.source {
                index_entries += 1;
                if self.lookup_edge(system, ext)? != Some(EdgeId(id)) {
                    push(INDEX, &[], None, Some(id), format!("source ({system}, {ext}) does not lead to edge {id}"));
                }
            }
            if seen.get(id as usize).copied() != Some(3) {
                let key = oi.edge_page_key(page_of(id, EDGES_PER_PAGE));
                push(EDGES, &key, Some(rec.from), Some(id), "edge missing from its nodes' adjacency pages".into());
            }
        }
        // Every bucket of every run in place, holding only its own fingerprints, each run as many
        // as the registry says, and nothing beyond the sources (so no source in two runs).
        let mut in_buckets = 0u64;
        for run in f.runs.as_slice() {
            let mut in_run = 0u64;
            for b in 0..(1u32 << run.bits) {
                let key = oi.bucket_key(run.slot, b);
                let sealed =
                    self.fetch(Addr::bucket(run.slot, b), &key)?.ok_or_else(|| Error::corrupt(INDEX.name, &key))?;
                let page = oi.open_bucket(&key, &sealed)?;
                in_run += page.len() as u64;
                if page.iter().any(|(fp, _)| bucket_of(&fp, run.bits) != b) {
                    push(
                        INDEX,
                        &key,
                        None,
                        None,
                        format!("bucket {b} of run {} holds another bucket's entry", run.slot),
                    );
                }
            }
            if in_run != run.entries {
                let n = run.entries;
                push(INDEX, &[], None, None, format!("run {} holds {in_run} entries, the registry says {n}", run.slot));
            }
            in_buckets += in_run;
        }
        if in_buckets != index_entries || f.runs.entries() != index_entries {
            push(
                INDEX,
                &[],
                None,
                None,
                format!(
                    "the index holds {in_buckets} entries (registry: {}), the org's sources and kinds need {index_entries}",
                    f.runs.entries()
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::SNAPSHOT_NODE_PAGES;
    use crate::codec::NODES_PER_PAGE;
    use crate::{Db, NodeId, NodeInput, RootKey};

    /// A walk over more node pages than a snapshot without the cache keeps: every node is
    /// reached, and the snapshot holds exactly its bound of decrypted pages, no more.
    #[test]
    fn a_snapshot_without_the_cache_keeps_at_most_its_bound_of_node_pages() {
        let db = Db::builder()
            .cache_size(0)
            .open_with_backend(redb::backends::InMemoryBackend::new(), RootKey::from_bytes([5; 32]))
            .expect("open");
        let org = db.create_org("acme").expect("org");
        let pages = SNAPSHOT_NODE_PAGES as u64 + 40;
        let n = pages * NODES_PER_PAGE;
        let mut bulk = org.bulk_load().expect("bulk");
        let hub = bulk.add_node(NodeInput::new("hub").source("s", "hub")).expect("hub");
        let ids: Vec<NodeId> =
            (0..n).map(|i| bulk.add_node(NodeInput::new("n").source("s", format!("{i}"))).expect("node")).collect();
        for (i, id) in ids.iter().enumerate() {
            bulk.add_edge(hub, *id, "to").expect("edge");
            bulk.add_edge(*id, ids[(i + 1) % ids.len()], "to").expect("edge");
        }
        bulk.finish().expect("finish");
        let r = org.read().expect("read");
        assert_eq!(r.traverse(hub).max_depth(2).run().expect("walk").len() as u64, n + 1);
        let kept = r.plain.lock().expect("memo").len();
        assert_eq!(kept, SNAPSHOT_NODE_PAGES, "{pages} pages walked");
        // A page past the bound is read again (in place) as often as it is needed.
        assert_eq!(r.traverse(hub).max_depth(2).run().expect("walk").len() as u64, n + 1);
        assert_eq!(r.plain.lock().expect("memo").len(), SNAPSHOT_NODE_PAGES);
    }
}
