//! Write transactions: one redb write transaction per `WriteTxn`, with records decoded once,
//! changed in memory, and sealed and written once at commit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::cache::{Bucket, Cached, Page, PageKey, Records, Scrub};
use super::commit::{Rows, WriteSet, WriterLock, WriterToken};
use super::kv::{BackendKind, KvSnapshot, KvWrite};
use super::org::Org;
use super::read::DensePage;
use super::records::{bucket_of, fingerprint, par_map, plan_index, split_run, IndexHash, IndexPlan, Owner, Runs};
use super::state::{Addr, Roots, StateUpdate};
use super::tables::{index_domain, RecordKey, Table, ADJ, DICT, EDGES, INDEX, NODES, PROPS, TREE};
use super::{check_name, now_ms, MAX_EXTERNAL_ID_LEN, MAX_NAME_LEN, MAX_VALUE_LEN};
use crate::codec::{
    encode_inline, encode_page, first_of, inline_of, page_of, AdjEntry, BucketPage, EdgePage, EdgeRecord, IndexRun,
    NodePage, NodeRecord, OrgEntry, PropMap, StoredValue, EDGES_PER_PAGE, INLINE_MAX, NODES_PER_PAGE, PAGE_CAPACITY,
};
use crate::error::{Error, InputKind, Result};
use crate::graph::visited::{FastMap, FastSet, IdMap, IdSet};
use crate::types::{Compartment, EdgeId, NodeId, SourceRef, Timestamp, Value};

type PageId = (u64, u8, u32);

/// What to upsert as a node: a kind, the sources it is known by, and properties.
///
/// ```
/// use silograph::{Compartment, NodeInput};
/// let n = NodeInput::new("person")
///     .source("gmail", "alice@acme.com")
///     .prop("title", "CTO")                // Raw: copied from the source
///     .label("segment", "enterprise")      // Labels: the host's annotation
///     .prop_in(Compartment::Core, "tier", 1i64);
/// ```
#[must_use = "an input does nothing until it is passed to `upsert_node`"]
#[derive(Debug, Clone)]
pub struct NodeInput {
    kind: String,
    sources: Vec<SourceRef>,
    props: Vec<(Compartment, String, Value)>,
}

impl NodeInput {
    /// A node of `kind` (e.g. `"person"`).
    pub fn new(kind: impl Into<String>) -> Self {
        NodeInput { kind: kind.into(), sources: Vec::new(), props: Vec::new() }
    }

    /// Adds a source reference; upsert is idempotent by `(system, external_id)`.
    pub fn source(mut self, system: impl Into<String>, external_id: impl Into<String>) -> Self {
        self.sources.push(SourceRef::new(system, external_id));
        self
    }

    /// Sets a property in the `Raw` compartment (values copied from the source system).
    pub fn prop(self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.prop_in(Compartment::Raw, name, value)
    }

    /// Sets a property in the `Labels` compartment.
    pub fn label(self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.prop_in(Compartment::Labels, name, value)
    }

    /// Sets a property in the given compartment.
    pub fn prop_in(mut self, c: Compartment, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.props.push((c, name.into(), value.into()));
        self
    }
}

/// What to add as an edge: endpoints, kind, bi-temporal validity, source and properties.
#[must_use = "an input does nothing until it is passed to `add_edge`"]
#[derive(Debug, Clone)]
pub struct EdgeInput {
    from: NodeId,
    to: NodeId,
    kind: String,
    valid_from: Option<Timestamp>,
    valid_to: Option<Timestamp>,
    source: Option<SourceRef>,
    props: Vec<(Compartment, String, Value)>,
}

impl EdgeInput {
    /// An edge `from → to` of `kind` (e.g. `"emailed"`), valid at all times until told otherwise.
    pub fn new(from: NodeId, to: NodeId, kind: impl Into<String>) -> Self {
        EdgeInput { from, to, kind: kind.into(), valid_from: None, valid_to: None, source: None, props: Vec::new() }
    }

    /// Valid-time start (inclusive).
    pub fn valid_from(mut self, t: Timestamp) -> Self {
        self.valid_from = Some(t);
        self
    }

    /// Valid-time end (exclusive).
    pub fn valid_to(mut self, t: Timestamp) -> Self {
        self.valid_to = Some(t);
        self
    }

    /// The edge's source; adding an edge is idempotent by `(system, external_id)`.
    pub fn source(mut self, system: impl Into<String>, external_id: impl Into<String>) -> Self {
        self.source = Some(SourceRef::new(system, external_id));
        self
    }

    /// Sets a property in the `Raw` compartment.
    pub fn prop(self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.prop_in(Compartment::Raw, name, value)
    }

    /// Sets a property in the given compartment.
    pub fn prop_in(mut self, c: Compartment, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.props.push((c, name.into(), value.into()));
        self
    }
}

fn check_source(s: &SourceRef) -> Result<()> {
    check_name("source system", &s.system, MAX_NAME_LEN)?;
    check_name("external id", &s.external_id, MAX_EXTERNAL_ID_LEN)
}

fn check_value(name: &str, v: &Value) -> Result<()> {
    check_name("property name", name, MAX_NAME_LEN)?;
    let len = match v {
        Value::Str(s) => s.len(),
        Value::Bytes(b) => b.len(),
        _ => 0,
    };
    if len > MAX_VALUE_LEN {
        return Err(Error::invalid(
            InputKind::TooLong { field: "property value", len, limit: MAX_VALUE_LEN },
            format!("property `{name}` is {len} bytes, the limit is {MAX_VALUE_LEN}"),
        ));
    }
    Ok(())
}

/// What a write transaction needs of the registry entry it began from.
#[derive(Debug, Clone, Copy)]
struct Start {
    next_node: u64,
    next_edge: u64,
    /// The index runs, newest first.
    runs: Runs,
    commit_seq: u64,
    /// Digest of the whole entry (the commit's conflict check).
    digest: [u8; 32],
    /// The org's state root as of begin: every stored record read is checked against it.
    roots: Roots,
}

/// What a write transaction reads from.
enum Base {
    /// An MVCC snapshot (tables opened on first use); the commit goes through the group
    /// committer. The org's writer lock makes the snapshot current for this org.
    Snapshot(Box<dyn KvSnapshot>),
    /// A storage write transaction held from begin to commit (the bulk loader writes into it).
    Exclusive(Box<dyn KvWrite>),
}

/// A write transaction of one organization. Dropping it without [`WriteTxn::commit`] aborts.
///
/// Writers of one org take turns (a second `write()` on the same org waits until the first
/// commits or drops); writers of different orgs run in parallel and their commits are grouped
/// into one durable storage commit.
///
/// Failures: a change refused as bad input ([`Error::InvalidInput`]) or outside the handle's
/// scope ([`Error::Denied`]) changes nothing, and the transaction goes on. Any other failure of a change (a corrupt or missing record, a storage
/// error) may have left it half done, so the transaction then refuses every further change and
/// its commit with `InvalidInput` of kind [`InputKind::WrongState`](crate::InputKind::WrongState):
/// drop it (nothing of it was written) and retry.
pub struct WriteTxn {
    org: Org,
    base: Option<Base>,
    /// The registry entry as this transaction began from it.
    start: Start,
    entry: OrgEntry,
    now: Timestamp,
    nodes: IdMap<NodeRecord>,
    dirty_nodes: IdSet,
    edges: IdMap<EdgeRecord>,
    dirty_edges: IdSet,
    pages: FastMap<PageId, Vec<AdjEntry>>,
    dirty_pages: FastSet<PageId>,
    props: HashMap<(Owner, Compartment), PropMap>,
    dirty_props: HashSet<(Owner, Compartment)>,
    /// Node and edge pages as stored when this transaction began, loaded on first use.
    node_pages: IdMap<Arc<Records<NodeRecord>>>,
    edge_pages: IdMap<Arc<Records<EdgeRecord>>>,
    /// Index entries this transaction adds (keyed hash → id): only sources and kinds the
    /// stored index does not hold (each is looked up before it goes in).
    index: FastMap<IndexHash, u64>,
    /// Index buckets as stored when this transaction began, loaded on first use: per run (in
    /// `start.runs` order), by bucket number.
    buckets: Mutex<Vec<Vec<Option<Arc<Bucket>>>>>,
    new_kinds: HashMap<String, u32>,
    stats: WriteStats,
    /// An operation failed part-way (storage or integrity error): what it changed may be half
    /// done, so the transaction refuses every further change and its commit.
    failed: bool,
    /// The page-cache generation this transaction's base may read the org's cache at (`None`:
    /// not at all), by the same rule as a read snapshot's (`ReadTxn::begin`).
    cache_gen: Option<u64>,
    /// Held until the commit is durable or the transaction is dropped.
    _writer: WriterToken,
}

/// What a write transaction did, for its audit entry.
#[derive(Debug, Default, Clone, Copy)]
struct WriteStats {
    nodes_created: u64,
    nodes_updated: u64,
    edges_added: u64,
    edges_retracted: u64,
    props_changed: u64,
}

impl std::fmt::Debug for WriteTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTxn").field("org", &self.org.name()).finish_non_exhaustive()
    }
}

impl WriteTxn {
    pub(crate) fn begin(org: Org) -> Result<Self> {
        Self::begin_in(org, false)
    }

    /// A transaction holding the storage's write lock from begin to commit (the bulk loader
    /// writes pages into it as it goes).
    pub(crate) fn begin_exclusive(org: Org) -> Result<Self> {
        Self::begin_in(org, true)
    }

    fn begin_in(org: Org, exclusive: bool) -> Result<Self> {
        org.inner.db.group.writable()?;
        let writer = WriterLock::acquire(&org.inner.shared);
        let db = &org.inner.db;
        let cache = &org.inner.shared.cache;
        let g1 = cache.generation();
        let (base, entry) = if exclusive {
            let txn = db.begin_write()?;
            let entry = db.read_entry(&*txn, org.inner.tag, &org.inner.name)?;
            (Base::Exclusive(txn), entry)
        } else {
            let snap = db.kv.snapshot()?;
            let entry = db.read_entry(&*snap, org.inner.tag, &org.inner.name)?;
            (Base::Snapshot(snap), entry)
        };
        if entry.state != 0 {
            return Err(Error::OrgNotFound(org.inner.name.clone()));
        }
        // A rotation since this handle was opened added an epoch: learn its keys.
        org.inner.learn_epochs(&entry)?;
        // The bulk loader writes pages straight into its transaction: it reads without the cache.
        let cache_gen = if exclusive || !cache.enabled() {
            None
        } else if db.kv.kind() != BackendKind::Redb {
            cache.observe(entry.commit_seq)
        } else {
            let g2 = cache.generation();
            (g1 == g2 && g1.is_multiple_of(2)).then_some(g1)
        };
        Ok(WriteTxn {
            org,
            base: Some(base),
            start: Start {
                next_node: entry.next_node,
                next_edge: entry.next_edge,
                runs: Runs::of(&entry.index_runs)?,
                commit_seq: entry.commit_seq,
                digest: super::commit::entry_digest(&entry)?,
                roots: Roots::decode(&entry.state_root)?,
            },
            entry,
            now: now_ms(),
            nodes: Default::default(),
            dirty_nodes: Default::default(),
            edges: Default::default(),
            dirty_edges: Default::default(),
            pages: Default::default(),
            dirty_pages: Default::default(),
            props: HashMap::new(),
            dirty_props: HashSet::new(),
            node_pages: Default::default(),
            edge_pages: Default::default(),
            index: Default::default(),
            buckets: Mutex::new(Vec::new()),
            new_kinds: HashMap::new(),
            stats: WriteStats::default(),
            failed: false,
            cache_gen,
            _writer: writer,
        })
    }

    /// Runs one change. A change refused as bad input (`InvalidInput`) or outside the handle's
    /// scope (`Denied`) is refused before it changes anything, and the transaction goes on; any
    /// other failure (a corrupt or missing
    /// record, a storage error) may leave the change half done, so from then on every change and
    /// the commit fail with `InvalidInput` of kind `WrongState` and nothing of the transaction is
    /// ever written.
    fn guarded<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.check_not_failed()?;
        let res = f(self);
        if matches!(&res, Err(e) if !matches!(e, Error::InvalidInput(_) | Error::Denied(_))) {
            self.failed = true;
        }
        res
    }

    /// `WrongState` if an earlier change of this transaction failed part-way.
    pub(crate) fn check_not_failed(&self) -> Result<()> {
        if self.failed {
            return Err(Error::invalid(
                InputKind::WrongState,
                "an earlier change of this transaction failed part-way: drop it (nothing was written) and retry",
            ));
        }
        Ok(())
    }

    /// Marks the transaction failed (the bulk loader, when a flush fails part-way).
    pub(crate) fn mark_failed(&mut self) {
        self.failed = true;
    }

    /// Sets the record time this transaction stamps on what it writes (`recorded_at`,
    /// `retracted_at`, `created_at`, `updated_at`). Defaults to the system clock at begin.
    pub fn set_time(&mut self, now: Timestamp) {
        self.now = now;
    }

    /// The storage write transaction of an exclusive transaction (the bulk loader's), to write
    /// into.
    pub(crate) fn txn_mut(&mut self) -> Result<&mut dyn KvWrite> {
        match &mut self.base {
            Some(Base::Exclusive(txn)) => Ok(&mut **txn),
            _ => Err(Error::Internal("not an exclusive write transaction".into())),
        }
    }

    /// A stored value as this transaction sees it (unchecked: see [`WriteTxn::check_stored`]).
    pub(crate) fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match &self.base {
            Some(Base::Exclusive(txn)) => txn.get(table, key),
            Some(Base::Snapshot(snap)) => snap.get(table, key),
            None => Err(Error::Internal("transaction already finished".into())),
        }
    }

    /// The stored record at `addr` (key `key`) as of begin, checked against the state root.
    fn fetch(&self, addr: Addr, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.org.inner.fetch(&self.start.roots, &|t, k| self.get(t, k), addr, key)
    }

    /// Checks a record read at `addr` against the state root as of begin.
    pub(crate) fn check_stored(&self, addr: Addr, key: &[u8], sealed: Option<&[u8]>) -> Result<()> {
        self.org.inner.check_state(&self.start.roots, &|t, k| self.get(t, k), addr, key, sealed)
    }

    /// A page of the org's page cache (decrypted and checked when it went in), if this
    /// transaction's base may use the cache.
    fn cached(&self, addr: Addr) -> Option<Cached> {
        self.org.inner.shared.cache.get(&self.org.inner.page_key(addr), self.cache_gen?)
    }

    /// Bucket `b` of run `run` (its position in `start.runs`) as stored when this transaction
    /// began (a missing bucket of a run is `Corrupt`), from the memo `memo` of loaded buckets.
    fn stored_bucket_in(&self, memo: &mut Vec<Vec<Option<Arc<Bucket>>>>, run: usize, b: u32) -> Result<Arc<Bucket>> {
        let r = self.start.runs.as_slice().get(run).ok_or_else(|| Error::Internal("no such index run".into()))?;
        if memo.len() <= run {
            memo.resize_with(run + 1, Vec::new);
        }
        let pages = &mut memo[run];
        if pages.is_empty() {
            pages.resize(1usize << r.bits, None);
        }
        let slot = pages.get_mut(b as usize).ok_or_else(|| Error::Internal("bucket out of range".into()))?;
        if let Some(page) = slot {
            return Ok(page.clone());
        }
        // The cache's own page when it has one (shared, not copied).
        let page = match self.cached(Addr::bucket(r.slot, b)) {
            Some(Cached::Bucket(page)) => page,
            _ => {
                let key = self.org.inner.bucket_key(r.slot, b);
                let sealed =
                    self.fetch(Addr::bucket(r.slot, b), &key)?.ok_or_else(|| Error::corrupt(INDEX.name, &key))?;
                Arc::new(Bucket::new(self.org.inner.open_bucket(&key, &sealed)?))
            }
        };
        *slot = Some(page.clone());
        Ok(page)
    }

    /// Bucket `b` of run `run` (its position in `start.runs`) as stored when this transaction
    /// began.
    fn stored_bucket(&self, run: usize, b: u32) -> Result<Arc<Bucket>> {
        let mut memo = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        self.stored_bucket_in(&mut memo, run, b)
    }

    /// The value the index held for fingerprint `fp` when this transaction began (runs probed
    /// oldest, that is largest, first: most entries are there).
    fn stored_index_get(&self, fp: &[u8; 12]) -> Result<Option<u64>> {
        let mut memo = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        for (i, run) in self.start.runs.as_slice().iter().enumerate().rev() {
            if let Some(v) = self.stored_bucket_in(&mut memo, i, bucket_of(fp, run.bits))?.get(fp) {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    fn index_get(&self, h: &IndexHash) -> Result<Option<u64>> {
        if let Some(v) = self.index.get(h) {
            return Ok(Some(*v));
        }
        self.stored_index_get(&fingerprint(h))
    }

    /// Page `page` of node or edge records as stored when this transaction began (empty if it
    /// held no record then: `next` is the next id as of begin): the page cache's own records
    /// when it has them (shared, not copied: a commit touches most node pages, and
    /// [`merge_dense`] copies only the records it keeps unchanged).
    fn stored_records<P: DensePage>(&self, page: u64, next: u64) -> Result<Arc<Records<P::Rec>>> {
        if first_of(page, P::PER) >= next {
            return Ok(Arc::new(Records(Vec::new())));
        }
        if let Some(r) = self.cached(P::addr(page)).as_ref().and_then(P::unwrap) {
            return Ok(r);
        }
        let key = P::key(&self.org.inner, page);
        let sealed = self.fetch(P::addr(page), &key)?.ok_or_else(|| Error::corrupt(P::TABLE.name, &key))?;
        Ok(Arc::new(Records(P::open(&self.org.inner, page, &key, &sealed)?)))
    }

    /// Node page `page` as stored when this transaction began, loaded once.
    fn stored_node_page(&mut self, page: u64) -> Result<&Records<NodeRecord>> {
        if !self.node_pages.contains_key(&page) {
            let recs = self.stored_records::<NodePage>(page, self.start.next_node)?;
            self.node_pages.insert(page, recs);
        }
        self.node_pages.get(&page).map(|r| &**r).ok_or_else(|| Error::Internal("node page not loaded".into()))
    }

    /// Edge page `page` as stored when this transaction began, loaded once.
    fn stored_edge_page(&mut self, page: u64) -> Result<&Records<EdgeRecord>> {
        if !self.edge_pages.contains_key(&page) {
            let recs = self.stored_records::<EdgePage>(page, self.start.next_edge)?;
            self.edge_pages.insert(page, recs);
        }
        self.edge_pages.get(&page).map(|r| &**r).ok_or_else(|| Error::Internal("edge page not loaded".into()))
    }

    /// The page version every value this transaction writes is sealed with.
    pub(crate) fn version(&self) -> u64 {
        self.start.commit_seq + 1
    }

    /// A node record to change (marked dirty); `InvalidInput` for an unknown node. Used by the
    /// bulk loader.
    pub(crate) fn node_for_update(&mut self, id: u64) -> Result<&mut NodeRecord> {
        if self.node_mut(id)?.is_none() {
            return Err(Error::invalid(InputKind::UnknownNode, format!("unknown node {id}")));
        }
        self.dirty_nodes.insert(id);
        self.nodes.get_mut(&id).ok_or_else(|| Error::Internal("node vanished".into()))
    }

    /// A node record [`WriteTxn::node_for_update`] already loaded and marked dirty. Used by the
    /// bulk loader.
    pub(crate) fn dirty_node_mut(&mut self, id: u64) -> Result<&mut NodeRecord> {
        self.nodes.get_mut(&id).ok_or_else(|| Error::Internal("node record not loaded".into()))
    }

    /// The org entry being updated (counters), and the record time. Used by the bulk loader.
    pub(crate) fn entry_and_now(&mut self) -> (&mut OrgEntry, Timestamp) {
        (&mut self.entry, self.now)
    }

    /// Counts edges the bulk loader wrote into this transaction, for the audit entry.
    pub(crate) fn count_bulk_edges(&mut self, n: u64) {
        self.stats.edges_added += n;
    }

    fn node_mut(&mut self, id: u64) -> Result<Option<&mut NodeRecord>> {
        if !self.nodes.contains_key(&id) {
            if id == 0 || id >= self.entry.next_node {
                return Ok(None);
            }
            let page = page_of(id, NODES_PER_PAGE);
            let slot = (id - first_of(page, NODES_PER_PAGE)) as usize;
            let rec = self.stored_node_page(page)?.0.get(slot).cloned();
            let rec = rec.ok_or_else(|| Error::corrupt(NODES.name, &self.org.inner.node_page_key(page)))?;
            self.nodes.insert(id, rec);
        }
        Ok(self.nodes.get_mut(&id))
    }

    fn edge_mut(&mut self, id: u64) -> Result<Option<&mut EdgeRecord>> {
        if !self.edges.contains_key(&id) {
            if id == 0 || id >= self.entry.next_edge {
                return Ok(None);
            }
            let page = page_of(id, EDGES_PER_PAGE);
            let slot = (id - first_of(page, EDGES_PER_PAGE)) as usize;
            let rec = self.stored_edge_page(page)?.0.get(slot).cloned();
            let rec = rec.ok_or_else(|| Error::corrupt(EDGES.name, &self.org.inner.edge_page_key(page)))?;
            self.edges.insert(id, rec);
        }
        Ok(self.edges.get_mut(&id))
    }

    fn page_mut(&mut self, id: PageId) -> Result<&mut Vec<AdjEntry>> {
        if !self.pages.contains_key(&id) && id.2 == 0 {
            // A (node, direction) without pages keeps its entries inline in the node record.
            let key = self.org.inner.node_page_key(page_of(id.0, NODES_PER_PAGE));
            let rec = self.node_mut(id.0)?.ok_or_else(|| Error::corrupt(NODES.name, &key))?;
            let (pages, degree, inline) = rec.side(id.1);
            if let Some(entries) = inline_of(pages, degree, inline).map_err(|_| Error::corrupt(NODES.name, &key))? {
                self.pages.insert(id, entries);
            }
        }
        if !self.pages.contains_key(&id) {
            let addr = Addr::adj(id.0, id.1, id.2);
            // A cached page 0 of count 0 is a checked absence: then the stored page decides.
            let cached = match self.cached(addr) {
                Some(Cached::Adj(page)) if id.2 > 0 || page.pages > 0 => Some(page.entries.to_vec()),
                _ => None,
            };
            let entries = match cached {
                Some(entries) => entries,
                None => {
                    let key = self.org.inner.adj_key(id.0, id.1, id.2);
                    let sealed = self.fetch(addr, &key)?.ok_or_else(|| Error::corrupt("adj", &key))?;
                    self.org.inner.open_page(&key, &sealed)?.1
                }
            };
            self.pages.insert(id, entries);
        }
        self.pages.get_mut(&id).ok_or_else(|| Error::Internal("page vanished".into()))
    }

    /// `c` can hold properties and this handle's scope includes it (`InvalidInput` or `Denied`).
    fn check_compartment(&self, c: Compartment) -> Result<()> {
        c.check_property()?;
        if !self.org.inner.scope.contains(&c) {
            return Err(Error::Denied(c));
        }
        Ok(())
    }

    fn props_mut(&mut self, owner: Owner, c: Compartment) -> Result<&mut PropMap> {
        self.check_compartment(c)?;
        if !self.props.contains_key(&(owner, c)) {
            let key = self.org.inner.props_key(owner, c);
            let map = match self.fetch(Addr::props(owner, c), &key)? {
                Some(sealed) => self.org.inner.open_record(PROPS, &key, c, &sealed)?,
                None => PropMap::default(),
            };
            self.props.insert((owner, c), map);
        }
        self.dirty_props.insert((owner, c));
        self.stats.props_changed += 1;
        self.props.get_mut(&(owner, c)).ok_or_else(|| Error::Internal("props vanished".into()))
    }

    pub(crate) fn intern_kind(&mut self, name: &str) -> Result<u32> {
        check_name("kind", name, MAX_NAME_LEN)?;
        if let Some(id) = self.new_kinds.get(name) {
            return Ok(*id);
        }
        if let Some(id) = self.org.inner.shared.kind_id(name) {
            return Ok(id);
        }
        let key = self.org.inner.index_hash(index_domain::KIND, &[name.as_bytes()]);
        if let Some(id) = self.index_get(&key)? {
            let id = u32::try_from(id).map_err(|_| Error::corrupt(INDEX.name, &[]))?;
            self.org.inner.shared.remember_kind(id, name);
            return Ok(id);
        }
        let id = self.entry.next_kind;
        self.entry.next_kind =
            id.checked_add(1).ok_or_else(|| Error::invalid(InputKind::Exhausted, "too many kinds"))?;
        self.new_kinds.insert(name.to_owned(), id);
        self.index.insert(key, u64::from(id));
        Ok(id)
    }

    fn source_key(&self, domain: &[u8], s: &SourceRef) -> IndexHash {
        self.org.inner.index_hash(domain, &[s.system.as_bytes(), s.external_id.as_bytes()])
    }

    /// Looks a node up by a source reference, seeing this transaction's own writes.
    pub fn lookup(&self, system: &str, external_id: &str) -> Result<Option<NodeId>> {
        let key = self.source_key(index_domain::NODE_SOURCE, &SourceRef::new(system, external_id));
        Ok(self.index_get(&key)?.map(NodeId))
    }

    /// Inserts a node, or updates the node already known by one of `input`'s sources.
    /// Idempotent: the same input twice changes nothing the second time.
    pub fn upsert_node(&mut self, input: NodeInput) -> Result<NodeId> {
        self.guarded(|t| t.upsert_node_unguarded(input))
    }

    fn upsert_node_unguarded(&mut self, input: NodeInput) -> Result<NodeId> {
        for s in &input.sources {
            check_source(s)?;
        }
        for (c, n, v) in &input.props {
            check_value(n, v)?;
            self.check_compartment(*c)?;
        }
        let mut existing = None;
        let mut keys = Vec::with_capacity(input.sources.len());
        for s in &input.sources {
            let key = self.source_key(index_domain::NODE_SOURCE, s);
            match (existing, self.index_get(&key)?) {
                (None, Some(id)) => existing = Some(id),
                (Some(a), Some(b)) if a != b => {
                    return Err(Error::invalid(
                        InputKind::ConflictingSources,
                        "the sources of this input name two different nodes",
                    ))
                }
                (_, Some(_)) => {}
                // Not indexed yet (neither stored nor added by this transaction): a new entry.
                (_, None) => keys.push(key),
            }
        }
        // After every check that refuses the input: a refused input interns no kind.
        let kind = self.intern_kind(&input.kind)?;
        let now = self.now;
        let id = match existing {
            Some(id) => {
                let rec = self.node_mut(id)?.ok_or_else(|| Error::corrupt(INDEX.name, &[]))?;
                let mut changed = rec.kind != kind;
                rec.kind = kind;
                for s in &input.sources {
                    let pair = (s.system.clone(), s.external_id.clone());
                    if !rec.sources.contains(&pair) {
                        rec.sources.push(pair);
                        changed = true;
                    }
                }
                if changed {
                    rec.updated_at = now;
                    self.dirty_nodes.insert(id);
                    self.stats.nodes_updated += 1;
                }
                id
            }
            None => {
                let id = self.entry.next_node;
                self.entry.next_node += 1;
                self.entry.node_count += 1;
                let mut sources: Vec<(String, String)> = Vec::with_capacity(input.sources.len());
                for s in &input.sources {
                    let pair = (s.system.clone(), s.external_id.clone());
                    if !sources.contains(&pair) {
                        sources.push(pair);
                    }
                }
                let rec = NodeRecord {
                    id,
                    kind,
                    sources,
                    created_at: now,
                    updated_at: now,
                    out_degree: 0,
                    in_degree: 0,
                    out_pages: 0,
                    in_pages: 0,
                    out_adj: Vec::new(),
                    in_adj: Vec::new(),
                    props: 0,
                };
                self.nodes.insert(id, rec);
                self.dirty_nodes.insert(id);
                self.stats.nodes_created += 1;
                id
            }
        };
        for key in keys {
            self.index.entry(key).or_insert(id);
        }
        for (c, name, v) in &input.props {
            self.props_mut(Owner::Node(id), *c)?.set(name, StoredValue::from(v));
        }
        Ok(NodeId(id))
    }

    /// Adds an edge. With a source, idempotent by `(system, external_id)`: adding it again
    /// returns the existing edge's id and changes nothing but the given properties.
    pub fn add_edge(&mut self, input: EdgeInput) -> Result<EdgeId> {
        self.guarded(|t| t.add_edge_unguarded(input))
    }

    fn add_edge_unguarded(&mut self, input: EdgeInput) -> Result<EdgeId> {
        if let Some(s) = &input.source {
            check_source(s)?;
        }
        for (c, n, v) in &input.props {
            check_value(n, v)?;
            self.check_compartment(*c)?;
        }
        let valid_from = input.valid_from.unwrap_or(i64::MIN);
        let valid_to = input.valid_to.unwrap_or(i64::MAX);
        if valid_from >= valid_to {
            return Err(Error::invalid(InputKind::InvalidTimeRange, "valid_from must be before valid_to"));
        }
        let source_key = input.source.as_ref().map(|s| self.source_key(index_domain::EDGE_SOURCE, s));
        let existing = match &source_key {
            Some(k) => self.index_get(k)?,
            None => None,
        };
        let id = match existing {
            Some(id) => id,
            None => {
                for n in [input.from, input.to] {
                    if self.node_mut(n.0)?.is_none() {
                        return Err(Error::invalid(InputKind::UnknownNode, format!("unknown node {}", n.0)));
                    }
                }
                let kind = self.intern_kind(&input.kind)?;
                let id = self.entry.next_edge;
                self.entry.next_edge += 1;
                self.entry.edge_count += 1;
                let now = self.now;
                let entry = |neighbor: u64| AdjEntry {
                    neighbor,
                    edge: id,
                    kind,
                    valid_from,
                    valid_to,
                    recorded_at: now,
                    retracted_at: i64::MAX,
                };
                self.append_adj(input.from.0, 0, entry(input.to.0))?;
                self.append_adj(input.to.0, 1, entry(input.from.0))?;
                let source = input.source.as_ref().map(|s| (s.system.clone(), s.external_id.clone()));
                let rec = EdgeRecord {
                    id,
                    from: input.from.0,
                    to: input.to.0,
                    kind,
                    source,
                    valid_from,
                    valid_to,
                    recorded_at: now,
                    retracted_at: None,
                    props: 0,
                };
                self.edges.insert(id, rec);
                self.dirty_edges.insert(id);
                self.stats.edges_added += 1;
                if let Some(k) = source_key {
                    self.index.insert(k, id);
                }
                id
            }
        };
        for (c, name, v) in &input.props {
            self.props_mut(Owner::Edge(id), *c)?.set(name, StoredValue::from(v));
        }
        Ok(EdgeId(id))
    }

    fn append_adj(&mut self, node: u64, dir: u8, e: AdjEntry) -> Result<()> {
        let rec = self
            .node_mut(node)?
            .ok_or_else(|| Error::invalid(InputKind::UnknownNode, format!("unknown node {node}")))?;
        let pages = rec.side(dir).0;
        if pages == 0 {
            // Inline while there are few entries; past `INLINE_MAX` they become page 0.
            let inline = self.page_mut((node, dir, 0))?;
            inline.push(e);
            let spill = inline.len() > INLINE_MAX;
            let rec = self
                .node_mut(node)?
                .ok_or_else(|| Error::invalid(InputKind::UnknownNode, format!("unknown node {node}")))?;
            let side = rec.side_mut(dir);
            *side.degree += 1;
            if spill {
                *side.pages = 1;
                side.inline.clear();
            }
            self.dirty_nodes.insert(node);
            self.dirty_pages.insert((node, dir, 0));
            return Ok(());
        }
        let mut target = pages.checked_sub(1);
        if let Some(last) = target {
            if self.page_mut((node, dir, last))?.len() >= PAGE_CAPACITY {
                target = None;
            }
        }
        let page = match target {
            Some(p) => p,
            None => {
                if pages > 0 {
                    // Page 0 carries the page count: load it so its header is rewritten.
                    self.page_mut((node, dir, 0))?;
                    self.dirty_pages.insert((node, dir, 0));
                }
                self.pages.insert((node, dir, pages), Vec::new());
                pages
            }
        };
        let rec = self
            .node_mut(node)?
            .ok_or_else(|| Error::invalid(InputKind::UnknownNode, format!("unknown node {node}")))?;
        if dir == 0 {
            rec.out_degree += 1;
            rec.out_pages = rec.out_pages.max(page + 1);
        } else {
            rec.in_degree += 1;
            rec.in_pages = rec.in_pages.max(page + 1);
        }
        self.dirty_nodes.insert(node);
        self.page_mut((node, dir, page))?.push(e);
        self.dirty_pages.insert((node, dir, page));
        Ok(())
    }

    /// Retracts an edge as of this transaction's time: it stays in history (visible to
    /// queries about earlier record times) but is no longer current. Returns `false` if it was
    /// already retracted; `InvalidInput` for an unknown edge.
    pub fn retract_edge(&mut self, edge: EdgeId) -> Result<bool> {
        self.guarded(|t| t.retract_edge_unguarded(edge))
    }

    fn retract_edge_unguarded(&mut self, edge: EdgeId) -> Result<bool> {
        let now = self.now;
        let rec = self
            .edge_mut(edge.0)?
            .ok_or_else(|| Error::invalid(InputKind::UnknownEdge, format!("unknown edge {}", edge.0)))?;
        if rec.retracted_at.is_some() {
            return Ok(false);
        }
        rec.retracted_at = Some(now);
        let (from, to) = (rec.from, rec.to);
        self.stats.edges_retracted += 1;
        self.dirty_edges.insert(edge.0);
        for (node, dir) in [(from, 0u8), (to, 1u8)] {
            let rec = self.node_mut(node)?.ok_or_else(|| Error::corrupt(EDGES.name, &[]))?;
            let pages = rec.side(dir).0;
            let mut found = false;
            // No pages: the entries are inline (page 0 of `page_mut`).
            for p in 0..pages.max(1) {
                if let Some(e) = self.page_mut((node, dir, p))?.iter_mut().find(|e| e.edge == edge.0) {
                    e.retracted_at = now;
                    self.dirty_pages.insert((node, dir, p));
                    if pages == 0 {
                        self.dirty_nodes.insert(node);
                    }
                    found = true;
                    break;
                }
            }
            if !found {
                return Err(Error::corrupt("adj", &self.org.inner.adj_key(node, dir, 0)));
            }
        }
        Ok(true)
    }

    /// Sets a node property in compartment `c`. `InvalidInput` for an unknown node.
    pub fn set_node_prop(&mut self, node: NodeId, c: Compartment, name: &str, value: impl Into<Value>) -> Result<()> {
        self.guarded(|t| t.set_node_prop_unguarded(node, c, name, value))
    }

    fn set_node_prop_unguarded(
        &mut self,
        node: NodeId,
        c: Compartment,
        name: &str,
        value: impl Into<Value>,
    ) -> Result<()> {
        let value = value.into();
        check_value(name, &value)?;
        if self.node_mut(node.0)?.is_none() {
            return Err(Error::invalid(InputKind::UnknownNode, format!("unknown node {}", node.0)));
        }
        self.props_mut(Owner::Node(node.0), c)?.set(name, StoredValue::from(&value));
        Ok(())
    }

    /// Removes a node property; returns whether it was set.
    pub fn remove_node_prop(&mut self, node: NodeId, c: Compartment, name: &str) -> Result<bool> {
        self.guarded(|t| t.remove_node_prop_unguarded(node, c, name))
    }

    fn remove_node_prop_unguarded(&mut self, node: NodeId, c: Compartment, name: &str) -> Result<bool> {
        if self.node_mut(node.0)?.is_none() {
            return Err(Error::invalid(InputKind::UnknownNode, format!("unknown node {}", node.0)));
        }
        Ok(self.props_mut(Owner::Node(node.0), c)?.remove(name))
    }

    /// Sets an edge property in compartment `c`. `InvalidInput` for an unknown edge.
    pub fn set_edge_prop(&mut self, edge: EdgeId, c: Compartment, name: &str, value: impl Into<Value>) -> Result<()> {
        self.guarded(|t| t.set_edge_prop_unguarded(edge, c, name, value))
    }

    fn set_edge_prop_unguarded(
        &mut self,
        edge: EdgeId,
        c: Compartment,
        name: &str,
        value: impl Into<Value>,
    ) -> Result<()> {
        let value = value.into();
        check_value(name, &value)?;
        if self.edge_mut(edge.0)?.is_none() {
            return Err(Error::invalid(InputKind::UnknownEdge, format!("unknown edge {}", edge.0)));
        }
        self.props_mut(Owner::Edge(edge.0), c)?.set(name, StoredValue::from(&value));
        Ok(())
    }

    /// Removes an edge property; returns whether it was set.
    pub fn remove_edge_prop(&mut self, edge: EdgeId, c: Compartment, name: &str) -> Result<bool> {
        self.guarded(|t| t.remove_edge_prop_unguarded(edge, c, name))
    }

    fn remove_edge_prop_unguarded(&mut self, edge: EdgeId, c: Compartment, name: &str) -> Result<bool> {
        if self.edge_mut(edge.0)?.is_none() {
            return Err(Error::invalid(InputKind::UnknownEdge, format!("unknown edge {}", edge.0)));
        }
        Ok(self.props_mut(Owner::Edge(edge.0), c)?.remove(name))
    }

    /// Moves the changed entries of every (node, direction) without pages into its node record
    /// (`out_adj` / `in_adj`): they are not written as adjacency pages. Returns those
    /// (node, direction, 0) ids.
    fn fold_inline(&mut self) -> Result<Vec<PageId>> {
        let mut inline: Vec<PageId> = Vec::new();
        for &(node, dir, p) in &self.dirty_pages {
            let rec = self.nodes.get(&node).ok_or_else(|| Error::Internal("page changed without its node".into()))?;
            if p == 0 && rec.side(dir).0 == 0 {
                inline.push((node, dir, p));
            }
        }
        for id in &inline {
            self.dirty_pages.remove(id);
            let bytes =
                encode_inline(self.pages.get(id).ok_or_else(|| Error::Internal("inline page not loaded".into()))?);
            let rec = self.nodes.get_mut(&id.0).ok_or_else(|| Error::Internal("node vanished".into()))?;
            *rec.side_mut(id.1).inline = bytes;
            self.dirty_nodes.insert(id.0);
        }
        Ok(inline)
    }

    /// The node pages this transaction changes: each stored page with its changed and new
    /// records put in.
    fn merged_node_pages(&mut self) -> Result<Vec<NodePage>> {
        let by_page = dirty_by_page(&self.dirty_nodes, NODES_PER_PAGE);
        for page in by_page.keys() {
            self.stored_node_page(*page)?;
        }
        let merged = merge_dense(by_page, NODES_PER_PAGE, &mut self.nodes, &mut self.node_pages)?;
        Ok(merged.into_iter().map(|(first, nodes)| NodePage { first, nodes }).collect())
    }

    /// The edge pages this transaction changes (as [`WriteTxn::merged_node_pages`]).
    fn merged_edge_pages(&mut self) -> Result<Vec<EdgePage>> {
        let by_page = dirty_by_page(&self.dirty_edges, EDGES_PER_PAGE);
        for page in by_page.keys() {
            self.stored_edge_page(*page)?;
        }
        let merged = merge_dense(by_page, EDGES_PER_PAGE, &mut self.edges, &mut self.edge_pages)?;
        Ok(merged.into_iter().map(|(first, edges)| EdgePage { first, edges }).collect())
    }

    /// The index pages this transaction writes and removes, its new entries added as
    /// [`plan_index`] says; sets the registry entry's runs.
    fn merged_index(&mut self) -> Result<IndexChange> {
        let mut change = IndexChange::default();
        // Only new entries: each was looked up before it went in.
        let adds: Vec<([u8; 12], u64)> = self.index.iter().map(|(h, v)| (fingerprint(h), *v)).collect();
        if adds.is_empty() {
            return Ok(change);
        }
        let runs = self.start.runs;
        let list = runs.as_slice();
        let added = adds.len() as u64;
        let mut after: Vec<IndexRun> = list.to_vec();
        match plan_index(&runs, added) {
            IndexPlan::InPlace => {
                let r0 = list.first().ok_or_else(|| Error::Internal("in place into no index run".into()))?;
                let mut by_bucket: BTreeMap<u32, Vec<([u8; 12], u64)>> = BTreeMap::new();
                for (fp, v) in adds {
                    by_bucket.entry(bucket_of(&fp, r0.bits)).or_default().push((fp, v));
                }
                for (b, add) in by_bucket {
                    let mut all: Vec<([u8; 12], u64)> = self.stored_bucket(0, b)?.0.iter().collect();
                    all.extend(add);
                    change.puts.push((r0.slot, b, BucketPage::from_entries(all)));
                }
                after[0].entries += added;
            }
            IndexPlan::NewRun { merge, slot } => {
                let mut all = adds;
                for (i, r) in list[..merge].iter().enumerate() {
                    for b in 0..(1u32 << r.bits) {
                        all.extend(self.stored_bucket(i, b)?.0.iter());
                    }
                }
                let entries = all.len() as u64;
                let (bits, buckets) = split_run(all);
                // The absorbed runs' buckets go (the new run's slot is none of theirs).
                for r in &list[..merge] {
                    change.removes.extend((0..(1u32 << r.bits)).map(|b| (r.slot, b)));
                }
                change.puts.extend(buckets.into_iter().map(|(b, page)| (slot, b, page)));
                after.splice(..merge, [IndexRun { slot, bits, entries }]);
            }
        }
        self.entry.index_runs = after;
        Ok(change)
    }

    /// Seals everything this transaction changed, writes it, and commits durably.
    pub fn commit(self) -> Result<()> {
        self.commit_with(&[], &[], 0)
    }

    /// Commits, also invalidating `extra_pages` (adjacency pages written straight into the redb
    /// transaction by the bulk loader), entering `extra_state` (the addresses of the records it
    /// wrote) in the state tree and counting `extra_seals`.
    #[cfg_attr(feature = "tracing", tracing::instrument(name = "commit", level = "debug", skip_all))]
    pub(crate) fn commit_with(self, extra_pages: &[PageKey], extra_state: &[Addr], extra_seals: u64) -> Result<()> {
        let (set, base, new_kinds, writer) = self.prepare(extra_pages, extra_state, extra_seals)?;
        let org = set.org.clone();
        match base {
            Base::Exclusive(mut txn) => {
                // A panic here (redb panics on some corrupt files) reaches the caller; the Db
                // then refuses further writes, as after a panicked group commit round.
                let _guard = PoisonOnPanic(&org.db.group);
                set.apply(&mut *txn)?;
                WriteSet::commit_all(txn, &[&set])?;
            }
            Base::Snapshot(snap) => {
                // The snapshot is no longer needed: let redb reclaim what it pinned.
                drop(snap);
                org.db.group.commit(&org.db, set)?;
            }
        }
        for (name, id) in &new_kinds {
            org.shared.remember_kind(*id, name);
        }
        drop(writer);
        Ok(())
    }

    /// Commits several transactions (of different orgs) as one group commit round, in one storage
    /// commit; each result is its transaction's. The fault-injection sweep uses it to crash a
    /// group commit at every write deterministically.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn commit_together(txns: Vec<WriteTxn>) -> Result<Vec<Result<()>>> {
        let mut sets = Vec::with_capacity(txns.len());
        let mut held = Vec::with_capacity(txns.len());
        let mut db = None;
        for t in txns {
            let (set, base, new_kinds, writer) = t.prepare(&[], &[], 0)?;
            if matches!(base, Base::Exclusive(_)) {
                return Err(Error::invalid(InputKind::WrongState, "a bulk load cannot join a group commit"));
            }
            db = Some(set.org.db.clone());
            held.push((set.org.clone(), new_kinds, writer));
            sets.push(set);
        }
        let Some(db) = db else { return Ok(Vec::new()) };
        let results = db.group.commit_many(&db, sets);
        for ((org, new_kinds, _), res) in held.iter().zip(&results) {
            if res.is_ok() {
                for (name, id) in new_kinds {
                    org.shared.remember_kind(*id, name);
                }
            }
        }
        Ok(results)
    }

    /// Seals everything this transaction changed into a write set for the committer.
    #[allow(clippy::type_complexity)]
    fn prepare(
        mut self,
        extra_pages: &[PageKey],
        extra_state: &[Addr],
        extra_seals: u64,
    ) -> Result<(WriteSet, Base, HashMap<String, u32>, WriterToken)> {
        self.check_not_failed()?;
        // First, while the transaction is still ours (owner records may need loading): record in
        // each owner which compartments hold a property record.
        let props: Vec<((Owner, Compartment), bool)> = self
            .dirty_props
            .iter()
            .map(|id| (*id, self.props.get(id).is_some_and(|m| !m.entries.is_empty())))
            .collect();
        for ((owner, c), present) in props {
            let bit = 1u8 << c.index();
            let mask = match owner {
                Owner::Node(id) => self.node_mut(id)?.map(|r| &mut r.props),
                Owner::Edge(id) => self.edge_mut(id)?.map(|r| &mut r.props),
            };
            let Some(mask) = mask else { continue };
            let before = *mask;
            *mask = if present { before | bit } else { before & !bit };
            if *mask != before {
                match owner {
                    Owner::Node(id) => self.dirty_nodes.insert(id),
                    Owner::Edge(id) => self.dirty_edges.insert(id),
                };
            }
        }
        let inline = self.fold_inline()?;
        // The page counts page 0 of an adjacency list records: the node records move into their
        // pages next.
        let page_counts: IdMap<(u32, u32)> = self
            .dirty_pages
            .iter()
            .filter(|(_, _, p)| *p == 0)
            .filter_map(|(n, _, _)| self.nodes.get(n).map(|r| (*n, (r.out_pages, r.in_pages))))
            .collect();
        // Everything that reads stored pages happens before the snapshot is released.
        let node_pages = self.merged_node_pages()?;
        let edge_pages = self.merged_edge_pages()?;
        let index = self.merged_index()?;
        let version = self.version();
        // The state tree over everything this commit writes, read from the base.
        let state = {
            let mut changes: Vec<(Addr, u64)> = Vec::with_capacity(
                node_pages.len()
                    + edge_pages.len()
                    + self.dirty_pages.len()
                    + index.puts.len()
                    + index.removes.len()
                    + extra_state.len(),
            );
            changes.extend(node_pages.iter().map(|p| (Addr::node_page(page_of(p.first, NODES_PER_PAGE)), version)));
            changes.extend(edge_pages.iter().map(|p| (Addr::edge_page(page_of(p.first, EDGES_PER_PAGE)), version)));
            changes.extend(self.dirty_pages.iter().map(|&(n, d, p)| (Addr::adj(n, d, p), version)));
            for id in &self.dirty_props {
                let present = self.props.get(id).is_some_and(|m| !m.entries.is_empty());
                changes.push((Addr::props(id.0, id.1), if present { version } else { 0 }));
            }
            changes.extend(index.puts.iter().map(|(slot, b, _)| (Addr::bucket(*slot, *b), version)));
            changes.extend(index.removes.iter().map(|(slot, b)| (Addr::bucket(*slot, *b), 0)));
            changes.extend(self.new_kinds.values().map(|id| (Addr::dict(*id), version)));
            changes.extend(extra_state.iter().map(|a| (*a, version)));
            if self.org.inner.db.unchecked_state {
                changes.clear();
            }
            let (roots, up) =
                StateUpdate::apply(&self.org.inner, &self.start.roots, &|t, k| self.get(t, k), changes, version)?;
            self.entry.state_root = roots.encode();
            (up.seals(), up.puts, up.removes, up.fresh)
        };
        let base = self.base.take().ok_or_else(|| Error::Internal("transaction already finished".into()))?;
        let org = self.org.inner.clone();
        // Write-through: the pages a small commit writes go into the page cache once it is
        // durable, so this instance's next commit (or read) of the org fetches none of them.
        let through = org.shared.cache.enabled()
            && !matches!(base, Base::Exclusive(_))
            && node_pages.len() + edge_pages.len() + self.dirty_pages.len() + index.puts.len() <= WRITE_THROUGH_PAGES;
        // Index pages are written through whatever their number: the next commit's lookups and
        // duplicate checks read a bucket of every run.
        let through_index = org.shared.cache.enabled() && !matches!(base, Base::Exclusive(_));
        let mut fresh: Vec<(PageKey, Cached)> = Vec::new();
        let mut seals: u64 = extra_seals + state.0;
        let mut changed_pages: Vec<PageKey> = Vec::with_capacity(self.dirty_pages.len() + extra_pages.len());
        changed_pages.extend_from_slice(extra_pages);
        let mut puts: Vec<(Table, Rows)> = Vec::with_capacity(8);
        let mut put = |table: Table, mut rows: Rows| {
            // In key order: B-tree friendly (blind keys are random).
            rows.sort_unstable_by_key(|r| r.0);
            puts.push((table, rows));
        };
        self.entry.commit_seq = version;
        // Seal on all cores (pure CPU work), on this thread's turn: the committer only writes.
        let rows = par_map(&node_pages, |p| {
            let key = org.node_page_key(page_of(p.first, NODES_PER_PAGE));
            Ok((key, org.seal_record(NODES, &key, Compartment::Core, version, p)?))
        })?;
        let node_key = |p: &NodePage| org.page_key(Addr::node_page(page_of(p.first, NODES_PER_PAGE)));
        changed_pages.extend(node_pages.iter().map(node_key));
        if through_index {
            // Node pages too while they take at most a quarter of the cache: a commit of many
            // edges touches most node pages, and the next one reads them all back.
            let pages: Vec<(PageKey, Cached)> =
                node_pages.into_iter().map(|p| (node_key(&p), Cached::Nodes(Arc::new(Records(p.nodes))))).collect();
            if through || pages.iter().map(|(_, c)| c.cost()).sum::<u64>() <= org.shared.cache.capacity() / 4 {
                fresh.extend(pages);
            }
        } else {
            drop(node_pages);
        }
        seals += rows.len() as u64;
        put(NODES, rows);

        let rows = par_map(&edge_pages, |p| {
            let key = org.edge_page_key(page_of(p.first, EDGES_PER_PAGE));
            Ok((key, org.seal_record(EDGES, &key, Compartment::Core, version, p)?))
        })?;
        let edge_key = |p: &EdgePage| org.page_key(Addr::edge_page(page_of(p.first, EDGES_PER_PAGE)));
        changed_pages.extend(edge_pages.iter().map(edge_key));
        if through {
            for p in edge_pages {
                fresh.push((edge_key(&p), Cached::Edges(Arc::new(Records(p.edges)))));
            }
        } else {
            drop(edge_pages);
        }
        seals += rows.len() as u64;
        put(EDGES, rows);

        let ids: Vec<PageId> = self.dirty_pages.iter().copied().collect();
        let count_of = |&(node, dir, p): &PageId| match (p, page_counts.get(&node)) {
            (0, Some(&(out, _))) if dir == 0 => Ok(out),
            (0, Some(&(_, inn))) => Ok(inn),
            (0, None) => Err(Error::Internal("page 0 changed without its node".into())),
            _ => Ok(0),
        };
        let rows = par_map(&ids, |id| {
            let (node, dir, p) = *id;
            let entries = self.pages.get(id).ok_or_else(|| Error::Internal("dirty page not loaded".into()))?;
            let key = org.adj_key(node, dir, p);
            Ok((key, org.seal_page(&key, version, &encode_page(count_of(id)?, entries))?))
        })?;
        let adj_key = |&(node, dir, p): &PageId| org.page_key(Addr::adj(node, dir, p));
        if through {
            for id in &ids {
                let entries = self.pages.get(id).ok_or_else(|| Error::Internal("dirty page not loaded".into()))?;
                fresh.push((adj_key(id), Cached::Adj(Arc::new(Page::new(count_of(id)?, entries.clone())))));
            }
        }
        seals += rows.len() as u64;
        changed_pages.extend(ids.iter().map(adj_key));
        put(ADJ, rows);
        // Inline entries live in the node pages sealed above; the page cache holds them under
        // their (node, direction)'s page-0 key, so that key is invalidated (or written through).
        for id in &inline {
            let key = org.page_key(Addr::adj(id.0, id.1, 0));
            if through {
                let entries = self.pages.get(id).ok_or_else(|| Error::Internal("inline page not loaded".into()))?;
                fresh.push((key, Cached::Adj(Arc::new(Page::new(0, entries.clone())))));
            }
            changed_pages.push(key);
        }

        let ids: Vec<(Owner, Compartment)> = self.dirty_props.iter().copied().collect();
        let mut removed = Vec::new();
        let mut rows = Vec::with_capacity(ids.len());
        for id in &ids {
            let map = self.props.get(id).ok_or_else(|| Error::Internal("dirty props not loaded".into()))?;
            let key = org.props_key(id.0, id.1);
            if map.entries.is_empty() {
                removed.push(key);
            } else {
                rows.push((key, org.seal_record(PROPS, &key, id.1, version, map)?));
            }
        }
        seals += rows.len() as u64;
        put(PROPS, rows);

        let rows = par_map(&index.puts, |(slot, b, page)| {
            let key = org.bucket_key(*slot, *b);
            Ok((key, org.seal_record(INDEX, &key, Compartment::Core, version, page)?))
        })?;
        let gone: Vec<RecordKey> = index.removes.iter().map(|(slot, b)| org.bucket_key(*slot, *b)).collect();
        let bucket_key = |slot: u8, b: u32| org.page_key(Addr::bucket(slot, b));
        changed_pages.extend(index.puts.iter().map(|(slot, b, _)| bucket_key(*slot, *b)));
        changed_pages.extend(index.removes.iter().map(|(slot, b)| bucket_key(*slot, *b)));
        if through_index {
            for (slot, b, page) in index.puts {
                fresh.push((bucket_key(slot, b), Cached::Bucket(Arc::new(Bucket::new(page)))));
            }
        } else {
            drop(index.puts);
        }
        seals += rows.len() as u64;
        put(INDEX, rows);

        let mut rows = Vec::with_capacity(self.new_kinds.len());
        for (name, id) in &self.new_kinds {
            let key = org.dict_key(*id);
            rows.push((key, org.seal(DICT, &key, Compartment::Core, version, name.as_bytes())?));
        }
        seals += rows.len() as u64;
        put(DICT, rows);
        put(TREE, state.1);

        let st = self.stats;
        let counts = [
            ("nodes_created", st.nodes_created),
            ("nodes_updated", st.nodes_updated),
            ("edges_added", st.edges_added),
            ("edges_retracted", st.edges_retracted),
            ("props_changed", st.props_changed),
        ];
        let audit =
            super::audit::entry_row(&org, &mut self.entry, self.org.actor(), "write", &counts, self.now, version)?;
        seals += 1;
        let current = self.entry.current_epoch;
        let mut over_limit = false;
        if let Some(e) = self.entry.epochs.iter_mut().find(|e| e.epoch == current) {
            e.seal_count = e.seal_count.saturating_add(seals);
            over_limit = e.seal_count >= org.db.rotate_after_seals;
        }
        if over_limit {
            // Near the random-nonce bound: later seals use a fresh epoch (BYOK: keys derived
            // from the host key's chain keys); the re-sealing of older records is finished by
            // `Db::rotate_org_key` (BYOK: `rotate_org_key_with_key`).
            super::DbInner::start_epoch(&mut self.entry)?;
        }
        let set = WriteSet {
            org: org.clone(),
            base: self.start.digest,
            entry: std::mem::take(&mut self.entry),
            puts,
            removes: vec![(PROPS, removed), (INDEX, gone), (TREE, state.2)],
            audit: Some(audit),
            changed_pages,
            fresh,
            fresh_tree: state.3,
        };
        Ok((set, base, std::mem::take(&mut self.new_kinds), self._writer))
    }
}

/// What a commit does to the index: bucket pages `(slot, bucket, page)` it writes and
/// `(slot, bucket)` it removes (of runs merged into a new one).
#[derive(Default)]
struct IndexChange {
    puts: Vec<(u8, u32, BucketPage)>,
    removes: Vec<(u8, u32)>,
}

/// At most this many pages go into the page cache after a commit (write-through); a larger
/// commit (an import) only invalidates what it changed.
const WRITE_THROUGH_PAGES: usize = 64;

/// Poisons the group committer (the `Db` refuses writes) if dropped during a panic.
struct PoisonOnPanic<'a>(&'a super::commit::GroupCommit);

impl Drop for PoisonOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poison();
        }
    }
}

/// Dirty record ids grouped by their page, each group sorted.
fn dirty_by_page(dirty: &IdSet, per: u64) -> BTreeMap<u64, Vec<u64>> {
    let mut by_page: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for id in dirty {
        by_page.entry(page_of(*id, per)).or_default().push(*id);
    }
    for ids in by_page.values_mut() {
        ids.sort_unstable();
    }
    by_page
}

/// Each page of `by_page` (its changed ids, sorted) as stored (`stored`, loaded beforehand) with
/// the transaction's changed and new `records` put in: `(first id, records)`. Both are taken
/// out: the commit reads neither again. A stored page this transaction alone holds is reused;
/// one it shares with the page cache is copied record by record, skipping the changed ones.
fn merge_dense<R: Clone + Scrub>(
    by_page: BTreeMap<u64, Vec<u64>>,
    per: u64,
    records: &mut IdMap<R>,
    stored: &mut IdMap<Arc<Records<R>>>,
) -> Result<Vec<(u64, Vec<R>)>> {
    let mut out = Vec::with_capacity(by_page.len());
    for (page, ids) in by_page {
        let page_recs = stored.remove(&page).ok_or_else(|| Error::Internal("page not loaded".into()))?;
        let first = first_of(page, per);
        let mut take = |id: u64| records.remove(&id).ok_or_else(|| Error::Internal("dirty record not loaded".into()));
        let mut changed = ids.into_iter().peekable();
        let mut recs = match Arc::try_unwrap(page_recs) {
            Ok(mut own) => std::mem::take(&mut own.0),
            Err(shared) => {
                let mut recs = Vec::with_capacity(shared.0.len());
                for (slot, rec) in shared.0.iter().enumerate() {
                    let id = first + slot as u64;
                    recs.push(if changed.next_if_eq(&id).is_some() { take(id)? } else { rec.clone() });
                }
                recs
            }
        };
        for id in changed {
            put_in_page(&mut recs, (id - first) as usize, take(id)?)?;
        }
        out.push((first, recs));
    }
    Ok(out)
}

/// Puts `rec` at `slot` of a page's dense record list: replaces a stored record, or appends the
/// next new one. A gap means a record was not loaded (a bug): `Internal`.
fn put_in_page<T>(records: &mut Vec<T>, slot: usize, rec: T) -> Result<()> {
    match slot.cmp(&records.len()) {
        std::cmp::Ordering::Less => records[slot] = rec,
        std::cmp::Ordering::Equal => records.push(rec),
        std::cmp::Ordering::Greater => return Err(Error::Internal("a gap in a record page".into())),
    }
    Ok(())
}
