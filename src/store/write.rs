//! Write transactions: one redb write transaction per `WriteTxn`, with records decoded once,
//! changed in memory, and sealed and written once at commit.

use std::collections::{HashMap, HashSet};

use redb::ReadableTable;

use super::org::Org;
use super::records::{par_map, write_sorted, Owner};
use super::tables::{index_domain, RecordKey, Table, DICT, EDGES, INDEX, NODES, ORGS, PROPS};
use super::{check_name, now_ms, MAX_EXTERNAL_ID_LEN, MAX_NAME_LEN, MAX_VALUE_LEN};
use crate::codec::{encode_page, AdjEntry, EdgeRecord, NodeRecord, OrgEntry, PropMap, StoredValue, PAGE_CAPACITY};
use crate::error::{Error, Result};
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
        return Err(Error::invalid(format!("property `{name}` is {len} bytes, the limit is {MAX_VALUE_LEN}")));
    }
    Ok(())
}

/// A write transaction of one organization. Dropping it without [`WriteTxn::commit`] aborts.
pub struct WriteTxn {
    org: Org,
    txn: Option<redb::WriteTransaction>,
    entry: OrgEntry,
    now: Timestamp,
    nodes: HashMap<u64, NodeRecord>,
    dirty_nodes: HashSet<u64>,
    edges: HashMap<u64, EdgeRecord>,
    dirty_edges: HashSet<u64>,
    pages: HashMap<PageId, Vec<AdjEntry>>,
    dirty_pages: HashSet<PageId>,
    props: HashMap<(Owner, Compartment), PropMap>,
    dirty_props: HashSet<(Owner, Compartment)>,
    index: HashMap<RecordKey, u64>,
    new_kinds: HashMap<String, u32>,
    stats: WriteStats,
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
        let txn = super::contain("file", &[], || Ok(org.inner.db.redb.begin_write()?))?;
        let entry = {
            let orgs = txn.open_table(ORGS.def)?;
            org.inner.db.read_entry(&orgs, org.inner.tag, &org.inner.name)?
        };
        // A rotation since this handle was opened added an epoch: learn its keys.
        org.inner.learn_epochs(&entry)?;
        Ok(WriteTxn {
            org,
            txn: Some(txn),
            entry,
            now: now_ms(),
            nodes: HashMap::new(),
            dirty_nodes: HashSet::new(),
            edges: HashMap::new(),
            dirty_edges: HashSet::new(),
            pages: HashMap::new(),
            dirty_pages: HashSet::new(),
            props: HashMap::new(),
            dirty_props: HashSet::new(),
            index: HashMap::new(),
            new_kinds: HashMap::new(),
            stats: WriteStats::default(),
        })
    }

    /// Sets the record time this transaction stamps on what it writes (`recorded_at`,
    /// `retracted_at`, `created_at`, `updated_at`). Defaults to the system clock at begin.
    pub fn set_time(&mut self, now: Timestamp) {
        self.now = now;
    }

    pub(crate) fn txn(&self) -> Result<&redb::WriteTransaction> {
        self.txn.as_ref().ok_or_else(|| Error::invalid("transaction already finished"))
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let t = self.txn()?.open_table(table.def)?;
        super::contain(table.name, key, || Ok(t.get(key)?.map(|v| v.value().to_vec())))
    }

    fn index_get(&self, key: &RecordKey) -> Result<Option<u64>> {
        if let Some(v) = self.index.get(key) {
            return Ok(Some(*v));
        }
        match self.get(INDEX, key)? {
            Some(s) => Ok(Some(self.org.inner.open_u64(INDEX, key, &s)?)),
            None => Ok(None),
        }
    }

    /// A node record to change (marked dirty); `InvalidInput` for an unknown node. Used by the
    /// bulk loader.
    pub(crate) fn node_for_update(&mut self, id: u64) -> Result<&mut NodeRecord> {
        if self.node_mut(id)?.is_none() {
            return Err(Error::invalid(format!("unknown node {id}")));
        }
        self.dirty_nodes.insert(id);
        self.nodes.get_mut(&id).ok_or_else(|| Error::invalid("node vanished"))
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
            let key = self.org.inner.node_key(id);
            let Some(sealed) = self.get(NODES, &key)? else { return Ok(None) };
            let rec: NodeRecord = self.org.inner.open_record(NODES, &key, Compartment::Core, &sealed)?;
            if rec.id != id {
                return Err(Error::corrupt(NODES.name, &key));
            }
            self.nodes.insert(id, rec);
        }
        Ok(self.nodes.get_mut(&id))
    }

    fn edge_mut(&mut self, id: u64) -> Result<Option<&mut EdgeRecord>> {
        if !self.edges.contains_key(&id) {
            if id == 0 || id >= self.entry.next_edge {
                return Ok(None);
            }
            let key = self.org.inner.edge_key(id);
            let Some(sealed) = self.get(EDGES, &key)? else { return Ok(None) };
            let rec: EdgeRecord = self.org.inner.open_record(EDGES, &key, Compartment::Core, &sealed)?;
            if rec.id != id {
                return Err(Error::corrupt(EDGES.name, &key));
            }
            self.edges.insert(id, rec);
        }
        Ok(self.edges.get_mut(&id))
    }

    fn page_mut(&mut self, id: PageId) -> Result<&mut Vec<AdjEntry>> {
        if !self.pages.contains_key(&id) {
            let key = self.org.inner.adj_key(id.0, id.1, id.2);
            let sealed = self.get(super::tables::ADJ, &key)?.ok_or_else(|| Error::corrupt("adj", &key))?;
            let (_, entries) = self.org.inner.open_page(&key, &sealed)?;
            self.pages.insert(id, entries);
        }
        self.pages.get_mut(&id).ok_or_else(|| Error::invalid("page vanished"))
    }

    fn props_mut(&mut self, owner: Owner, c: Compartment) -> Result<&mut PropMap> {
        if !self.org.inner.scope.contains(&c) {
            return Err(Error::Denied(c));
        }
        if !self.props.contains_key(&(owner, c)) {
            let key = self.org.inner.props_key(owner, c);
            let map = match self.get(PROPS, &key)? {
                Some(sealed) => self.org.inner.open_record(PROPS, &key, c, &sealed)?,
                None => PropMap::default(),
            };
            self.props.insert((owner, c), map);
        }
        self.dirty_props.insert((owner, c));
        self.stats.props_changed += 1;
        self.props.get_mut(&(owner, c)).ok_or_else(|| Error::invalid("props vanished"))
    }

    pub(crate) fn intern_kind(&mut self, name: &str) -> Result<u32> {
        check_name("kind", name, MAX_NAME_LEN)?;
        if let Some(id) = self.new_kinds.get(name) {
            return Ok(*id);
        }
        if let Some(id) = self.org.inner.shared.kind_id(name) {
            return Ok(id);
        }
        let key = self.org.inner.index_key(index_domain::KIND, &[name.as_bytes()]);
        if let Some(id) = self.index_get(&key)? {
            let id = u32::try_from(id).map_err(|_| Error::corrupt(INDEX.name, &key))?;
            self.org.inner.shared.remember_kind(id, name);
            return Ok(id);
        }
        let id = self.entry.next_kind;
        self.entry.next_kind = id.checked_add(1).ok_or_else(|| Error::invalid("too many kinds"))?;
        self.new_kinds.insert(name.to_owned(), id);
        self.index.insert(key, u64::from(id));
        Ok(id)
    }

    fn source_key(&self, domain: &[u8], s: &SourceRef) -> RecordKey {
        self.org.inner.index_key(domain, &[s.system.as_bytes(), s.external_id.as_bytes()])
    }

    /// Looks a node up by a source reference, seeing this transaction's own writes.
    pub fn lookup(&self, system: &str, external_id: &str) -> Result<Option<NodeId>> {
        let key = self.source_key(index_domain::NODE_SOURCE, &SourceRef::new(system, external_id));
        Ok(self.index_get(&key)?.map(NodeId))
    }

    /// Inserts a node, or updates the node already known by one of `input`'s sources.
    /// Idempotent: the same input twice changes nothing the second time.
    pub fn upsert_node(&mut self, input: NodeInput) -> Result<NodeId> {
        for s in &input.sources {
            check_source(s)?;
        }
        for (_, n, v) in &input.props {
            check_value(n, v)?;
        }
        let kind = self.intern_kind(&input.kind)?;
        let mut existing = None;
        let mut keys = Vec::with_capacity(input.sources.len());
        for s in &input.sources {
            let key = self.source_key(index_domain::NODE_SOURCE, s);
            match (existing, self.index_get(&key)?) {
                (None, Some(id)) => existing = Some(id),
                (Some(a), Some(b)) if a != b => {
                    return Err(Error::invalid("the sources of this input name two different nodes"))
                }
                _ => {}
            }
            keys.push(key);
        }
        let now = self.now;
        let id = match existing {
            Some(id) => {
                let rec = self.node_mut(id)?.ok_or_else(|| Error::corrupt(INDEX.name, &keys[0]))?;
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
        if let Some(s) = &input.source {
            check_source(s)?;
        }
        for (_, n, v) in &input.props {
            check_value(n, v)?;
        }
        let valid_from = input.valid_from.unwrap_or(i64::MIN);
        let valid_to = input.valid_to.unwrap_or(i64::MAX);
        if valid_from >= valid_to {
            return Err(Error::invalid("valid_from must be before valid_to"));
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
                        return Err(Error::invalid(format!("unknown node {}", n.0)));
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
        let rec = self.node_mut(node)?.ok_or_else(|| Error::invalid(format!("unknown node {node}")))?;
        let pages = if dir == 0 { rec.out_pages } else { rec.in_pages };
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
        let rec = self.node_mut(node)?.ok_or_else(|| Error::invalid(format!("unknown node {node}")))?;
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
        let now = self.now;
        let rec = self.edge_mut(edge.0)?.ok_or_else(|| Error::invalid(format!("unknown edge {}", edge.0)))?;
        if rec.retracted_at.is_some() {
            return Ok(false);
        }
        rec.retracted_at = Some(now);
        let (from, to) = (rec.from, rec.to);
        self.stats.edges_retracted += 1;
        self.dirty_edges.insert(edge.0);
        for (node, dir) in [(from, 0u8), (to, 1u8)] {
            let rec = self.node_mut(node)?.ok_or_else(|| Error::corrupt(EDGES.name, &[]))?;
            let pages = if dir == 0 { rec.out_pages } else { rec.in_pages };
            let mut found = false;
            for p in 0..pages {
                if let Some(e) = self.page_mut((node, dir, p))?.iter_mut().find(|e| e.edge == edge.0) {
                    e.retracted_at = now;
                    self.dirty_pages.insert((node, dir, p));
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
        let value = value.into();
        check_value(name, &value)?;
        if self.node_mut(node.0)?.is_none() {
            return Err(Error::invalid(format!("unknown node {}", node.0)));
        }
        self.props_mut(Owner::Node(node.0), c)?.set(name, StoredValue::from(&value));
        Ok(())
    }

    /// Removes a node property; returns whether it was set.
    pub fn remove_node_prop(&mut self, node: NodeId, c: Compartment, name: &str) -> Result<bool> {
        if self.node_mut(node.0)?.is_none() {
            return Err(Error::invalid(format!("unknown node {}", node.0)));
        }
        Ok(self.props_mut(Owner::Node(node.0), c)?.remove(name))
    }

    /// Sets an edge property in compartment `c`. `InvalidInput` for an unknown edge.
    pub fn set_edge_prop(&mut self, edge: EdgeId, c: Compartment, name: &str, value: impl Into<Value>) -> Result<()> {
        let value = value.into();
        check_value(name, &value)?;
        if self.edge_mut(edge.0)?.is_none() {
            return Err(Error::invalid(format!("unknown edge {}", edge.0)));
        }
        self.props_mut(Owner::Edge(edge.0), c)?.set(name, StoredValue::from(&value));
        Ok(())
    }

    /// Removes an edge property; returns whether it was set.
    pub fn remove_edge_prop(&mut self, edge: EdgeId, c: Compartment, name: &str) -> Result<bool> {
        if self.edge_mut(edge.0)?.is_none() {
            return Err(Error::invalid(format!("unknown edge {}", edge.0)));
        }
        Ok(self.props_mut(Owner::Edge(edge.0), c)?.remove(name))
    }

    /// Seals everything this transaction changed, writes it, and commits durably.
    pub fn commit(self) -> Result<()> {
        self.commit_with(&[], 0)
    }

    /// Commits, also invalidating `extra_pages` (adjacency pages written straight into the redb
    /// transaction by the bulk loader) and counting `extra_seals`.
    pub(crate) fn commit_with(mut self, extra_pages: &[[u8; 16]], extra_seals: u64) -> Result<()> {
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
        let txn = self.txn.take().ok_or_else(|| Error::invalid("transaction already finished"))?;
        let org = self.org.inner.clone();
        let mut seals: u64 = extra_seals;
        let mut changed_pages: Vec<[u8; 16]> = Vec::with_capacity(self.dirty_pages.len());
        {
            // Seal on all cores (pure CPU work), then insert each table in key order.
            let ids: Vec<u64> = self.dirty_nodes.iter().copied().collect();
            let mut rows = par_map(&ids, |id| {
                let rec = self.nodes.get(id).ok_or_else(|| Error::invalid("dirty node not loaded"))?;
                let key = org.node_key(*id);
                Ok((key, org.seal_record(NODES, &key, Compartment::Core, rec)?))
            })?;
            seals += rows.len() as u64;
            write_sorted(&txn, NODES, &mut rows)?;

            let ids: Vec<u64> = self.dirty_edges.iter().copied().collect();
            let mut rows = par_map(&ids, |id| {
                let rec = self.edges.get(id).ok_or_else(|| Error::invalid("dirty edge not loaded"))?;
                let key = org.edge_key(*id);
                Ok((key, org.seal_record(EDGES, &key, Compartment::Core, rec)?))
            })?;
            seals += rows.len() as u64;
            write_sorted(&txn, EDGES, &mut rows)?;

            let ids: Vec<PageId> = self.dirty_pages.iter().copied().collect();
            let mut rows = par_map(&ids, |id| {
                let (node, dir, p) = *id;
                let entries = self.pages.get(id).ok_or_else(|| Error::invalid("dirty page not loaded"))?;
                let count = match (p, self.nodes.get(&node)) {
                    (0, Some(n)) if dir == 0 => n.out_pages,
                    (0, Some(n)) => n.in_pages,
                    (0, None) => return Err(Error::invalid("page 0 changed without its node")),
                    _ => 0,
                };
                let key = org.adj_key(node, dir, p);
                Ok((key, org.seal_page(&key, &encode_page(count, entries))?))
            })?;
            seals += rows.len() as u64;
            changed_pages.extend(rows.iter().map(|(key, _)| {
                let mut opaque = [0u8; 16];
                opaque.copy_from_slice(&key[8..]);
                opaque
            }));
            write_sorted(&txn, super::tables::ADJ, &mut rows)?;

            let ids: Vec<(Owner, Compartment)> = self.dirty_props.iter().copied().collect();
            let mut removed = Vec::new();
            let mut rows = Vec::with_capacity(ids.len());
            for id in &ids {
                let map = self.props.get(id).ok_or_else(|| Error::invalid("dirty props not loaded"))?;
                let key = org.props_key(id.0, id.1);
                if map.entries.is_empty() {
                    removed.push(key);
                } else {
                    rows.push((key, org.seal_record(PROPS, &key, id.1, map)?));
                }
            }
            seals += rows.len() as u64;
            write_sorted(&txn, PROPS, &mut rows)?;
            if !removed.is_empty() {
                let mut t = txn.open_table(PROPS.def)?;
                for key in &removed {
                    t.remove(key.as_slice())?;
                }
            }

            let index: Vec<(RecordKey, u64)> = self.index.iter().map(|(k, v)| (*k, *v)).collect();
            let mut rows = par_map(&index, |(key, v)| Ok((*key, org.seal_u64(INDEX, key, *v)?)))?;
            seals += rows.len() as u64;
            write_sorted(&txn, INDEX, &mut rows)?;

            let mut t = txn.open_table(DICT.def)?;
            for (name, id) in &self.new_kinds {
                let key = org.dict_key(*id);
                t.insert(key.as_slice(), org.seal(DICT, &key, Compartment::Core, name.as_bytes())?.as_slice())?;
                seals += 1;
            }
            drop(t);
            let st = self.stats;
            let counts = [
                ("nodes_created", st.nodes_created),
                ("nodes_updated", st.nodes_updated),
                ("edges_added", st.edges_added),
                ("edges_retracted", st.edges_retracted),
                ("props_changed", st.props_changed),
            ];
            super::audit::append(&txn, &org, &mut self.entry, self.org.actor(), "write", &counts, self.now)?;
            seals += 1;
            let current = self.entry.current_epoch;
            let mut over_limit = false;
            if let Some(e) = self.entry.epochs.iter_mut().find(|e| e.epoch == current) {
                e.seal_count = e.seal_count.saturating_add(seals);
                over_limit = e.seal_count >= org.db.rotate_after_seals;
            }
            if over_limit && !self.entry.byok {
                // Near the random-nonce bound: later seals use a fresh epoch; the re-sealing of
                // older records is finished by `Db::rotate_org_key`.
                super::DbInner::start_epoch(&mut self.entry)?;
            }
            let mut t = txn.open_table(ORGS.def)?;
            t.insert(org.tag.0.as_slice(), org.db.seal_entry(org.tag, &self.entry)?.as_slice())?;
        }
        org.shared.cache.begin_commit();
        let res = txn.commit();
        org.shared.cache.end_commit(changed_pages.iter().chain(extra_pages));
        res?;
        for (name, id) in &self.new_kinds {
            org.shared.remember_kind(*id, name);
        }
        Ok(())
    }
}
