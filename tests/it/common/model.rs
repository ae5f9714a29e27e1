//! A `BTreeMap` model of the public API of one silograph database with two orgs, an operation
//! language decoded from raw bytes (so proptest and the `ops_vs_model` fuzz target share it),
//! and a runner that applies every operation to both and panics on the first difference.
#![allow(dead_code)]

use std::collections::BTreeMap;

use silograph::{
    Compartment, Db, Direction, EdgeId, EdgeInput, Error, NeighborFilter, NodeId, NodeInput, Org, OrgKey, ReadTxn,
    RootKey, Value, WriteTxn,
};

use super::backend::SharedBytes;

/// The two orgs: a managed one and a bring-your-own-key one.
pub const ORG_NAMES: [&str; 2] = ["acme", "globex"];
/// The root key every model database uses.
pub const ROOT: [u8; 32] = [0x11; 32];
/// The BYOK key of `globex`.
pub const GLOBEX_KEY: [u8; 32] = [0x22; 32];
const NODE_KINDS: [&str; 3] = ["person", "deal", "doc"];
const EDGE_KINDS: [&str; 2] = ["owns", "emailed"];
const PROP_NAMES: [&str; 3] = ["title", "stage", "n"];
const N_NODE_SOURCES: u8 = 6;
const N_EDGE_SOURCES: u8 = 5;

/// The node source with index `i` of the pool.
pub fn node_source(i: u8) -> (String, String) {
    let system = if i.is_multiple_of(2) { "gmail" } else { "crm" };
    (system.to_string(), format!("n{}", i % N_NODE_SOURCES))
}

/// The edge source with index `i` of the pool.
pub fn edge_source(i: u8) -> (String, String) {
    ("sf".to_string(), format!("e{}", i % N_EDGE_SOURCES))
}

/// A property value chosen by two bytes.
pub fn value_of(tag: u8, v: u8) -> Value {
    match tag % 7 {
        0 => Value::Null,
        1 => Value::Bool(v % 2 == 1),
        2 => Value::I64(i64::from(v) - 128),
        3 => Value::F64(f64::from(v) / 4.0),
        4 => Value::Str(format!("s{v}")),
        5 => Value::Bytes(vec![v; usize::from(v % 5)]),
        _ => Value::Timestamp(i64::from(v) * 1000),
    }
}

/// A compartment chosen by a byte.
pub fn compartment_of(b: u8) -> Compartment {
    Compartment::ALL[usize::from(b % 3)]
}

/// One operation inside a write transaction, with ids already chosen.
#[derive(Debug, Clone)]
pub enum WOp {
    /// `upsert_node(kind, sources, props)`.
    Upsert { kind: &'static str, sources: Vec<(String, String)>, props: Vec<(Compartment, String, Value)> },
    /// `add_edge`.
    AddEdge {
        from: u64,
        to: u64,
        kind: &'static str,
        source: Option<(String, String)>,
        valid_from: Option<i64>,
        valid_to: Option<i64>,
        props: Vec<(Compartment, String, Value)>,
    },
    /// `retract_edge`.
    Retract(u64),
    /// `set_node_prop`.
    SetNodeProp(u64, Compartment, String, Value),
    /// `remove_node_prop`.
    RemoveNodeProp(u64, Compartment, String),
    /// `set_edge_prop`.
    SetEdgeProp(u64, Compartment, String, Value),
    /// `remove_edge_prop`.
    RemoveEdgeProp(u64, Compartment, String),
    /// `WriteTxn::lookup` (sees the transaction's own writes).
    Lookup((String, String)),
    /// A read snapshot taken during the write transaction sees only committed state.
    SnapshotCheck,
}

/// A top-level operation.
#[derive(Debug, Clone)]
pub enum Top {
    /// Create org 0 or 1 (again: `OrgExists`).
    Create(usize),
    /// One write transaction on an org, committed or aborted (dropped).
    Txn { org: usize, ops: Vec<WOp>, commit: bool },
    /// Compare every read of an org with the model.
    Check(usize),
    /// Drop every handle and reopen the database from its bytes.
    Reopen,
    /// Opening with a wrong root key is `WrongKey`, and changes nothing.
    WrongRoot,
    /// Opening the BYOK org with a wrong key is `WrongKey`; with `org()` `InvalidInput`.
    WrongOrgKey,
}

/// What an operation returned, reduced to what the model can predict.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Node(u64),
    Edge(u64),
    Bool(bool),
    Unit,
    Found(Option<u64>),
    Invalid,
}

/// A node as the model knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct MNode {
    pub kind: &'static str,
    pub sources: Vec<(String, String)>,
    pub created_at: i64,
    pub updated_at: i64,
    pub out_degree: u64,
    pub in_degree: u64,
}

/// An edge as the model knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct MEdge {
    pub from: u64,
    pub to: u64,
    pub kind: &'static str,
    pub source: Option<(String, String)>,
    pub valid_from: i64,
    pub valid_to: i64,
    pub recorded_at: i64,
    pub retracted_at: Option<i64>,
}

/// One org as the model knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct OrgModel {
    pub nodes: BTreeMap<u64, MNode>,
    pub edges: BTreeMap<u64, MEdge>,
    pub node_index: BTreeMap<(String, String), u64>,
    pub edge_index: BTreeMap<(String, String), u64>,
    pub node_props: BTreeMap<(u64, Compartment), BTreeMap<String, Value>>,
    pub edge_props: BTreeMap<(u64, Compartment), BTreeMap<String, Value>>,
    pub next_node: u64,
    pub next_edge: u64,
}

impl Default for OrgModel {
    fn default() -> Self {
        OrgModel {
            nodes: BTreeMap::new(),
            edges: BTreeMap::new(),
            node_index: BTreeMap::new(),
            edge_index: BTreeMap::new(),
            node_props: BTreeMap::new(),
            edge_props: BTreeMap::new(),
            next_node: 1,
            next_edge: 1,
        }
    }
}

fn set_prop(
    map: &mut BTreeMap<(u64, Compartment), BTreeMap<String, Value>>,
    id: u64,
    c: Compartment,
    n: &str,
    v: &Value,
) {
    map.entry((id, c)).or_default().insert(n.to_string(), v.clone());
}

fn remove_prop(
    map: &mut BTreeMap<(u64, Compartment), BTreeMap<String, Value>>,
    id: u64,
    c: Compartment,
    n: &str,
) -> bool {
    match map.get_mut(&(id, c)) {
        Some(m) => {
            let had = m.remove(n).is_some();
            if m.is_empty() {
                map.remove(&(id, c));
            }
            had
        }
        None => false,
    }
}

impl OrgModel {
    /// Applies one write operation at record time `now`.
    pub fn apply(&mut self, op: &WOp, now: i64) -> Outcome {
        match op {
            WOp::Upsert { kind, sources, props } => {
                let mut existing = None;
                for s in sources {
                    match (existing, self.node_index.get(s).copied()) {
                        (None, Some(id)) => existing = Some(id),
                        (Some(a), Some(b)) if a != b => return Outcome::Invalid,
                        _ => {}
                    }
                }
                let id = match existing {
                    Some(id) => {
                        let n = self.nodes.get_mut(&id).expect("indexed node exists in the model");
                        let mut changed = n.kind != *kind;
                        n.kind = kind;
                        for s in sources {
                            if !n.sources.contains(s) {
                                n.sources.push(s.clone());
                                changed = true;
                            }
                        }
                        if changed {
                            n.updated_at = now;
                        }
                        id
                    }
                    None => {
                        let id = self.next_node;
                        self.next_node += 1;
                        self.nodes.insert(
                            id,
                            MNode {
                                kind,
                                // A source listed twice is stored once.
                                sources: sources.iter().fold(Vec::new(), |mut acc, s| {
                                    if !acc.contains(s) {
                                        acc.push(s.clone());
                                    }
                                    acc
                                }),
                                created_at: now,
                                updated_at: now,
                                out_degree: 0,
                                in_degree: 0,
                            },
                        );
                        id
                    }
                };
                for s in sources {
                    self.node_index.entry(s.clone()).or_insert(id);
                }
                for (c, n, v) in props {
                    set_prop(&mut self.node_props, id, *c, n, v);
                }
                Outcome::Node(id)
            }
            WOp::AddEdge { from, to, kind, source, valid_from, valid_to, props } => {
                let vf = valid_from.unwrap_or(i64::MIN);
                let vt = valid_to.unwrap_or(i64::MAX);
                if vf >= vt {
                    return Outcome::Invalid;
                }
                let existing = source.as_ref().and_then(|s| self.edge_index.get(s).copied());
                let id = match existing {
                    Some(id) => id,
                    None => {
                        if !self.nodes.contains_key(from) || !self.nodes.contains_key(to) {
                            return Outcome::Invalid;
                        }
                        let id = self.next_edge;
                        self.next_edge += 1;
                        self.nodes.get_mut(from).expect("checked").out_degree += 1;
                        self.nodes.get_mut(to).expect("checked").in_degree += 1;
                        self.edges.insert(
                            id,
                            MEdge {
                                from: *from,
                                to: *to,
                                kind,
                                source: source.clone(),
                                valid_from: vf,
                                valid_to: vt,
                                recorded_at: now,
                                retracted_at: None,
                            },
                        );
                        if let Some(s) = source {
                            self.edge_index.insert(s.clone(), id);
                        }
                        id
                    }
                };
                for (c, n, v) in props {
                    set_prop(&mut self.edge_props, id, *c, n, v);
                }
                Outcome::Edge(id)
            }
            WOp::Retract(id) => match self.edges.get_mut(id) {
                None => Outcome::Invalid,
                Some(e) if e.retracted_at.is_some() => Outcome::Bool(false),
                Some(e) => {
                    e.retracted_at = Some(now);
                    Outcome::Bool(true)
                }
            },
            WOp::SetNodeProp(id, c, n, v) => {
                if !self.nodes.contains_key(id) {
                    return Outcome::Invalid;
                }
                set_prop(&mut self.node_props, *id, *c, n, v);
                Outcome::Unit
            }
            WOp::RemoveNodeProp(id, c, n) => {
                if !self.nodes.contains_key(id) {
                    return Outcome::Invalid;
                }
                Outcome::Bool(remove_prop(&mut self.node_props, *id, *c, n))
            }
            WOp::SetEdgeProp(id, c, n, v) => {
                if !self.edges.contains_key(id) {
                    return Outcome::Invalid;
                }
                set_prop(&mut self.edge_props, *id, *c, n, v);
                Outcome::Unit
            }
            WOp::RemoveEdgeProp(id, c, n) => {
                if !self.edges.contains_key(id) {
                    return Outcome::Invalid;
                }
                Outcome::Bool(remove_prop(&mut self.edge_props, *id, *c, n))
            }
            WOp::Lookup(s) => Outcome::Found(self.node_index.get(s).copied()),
            WOp::SnapshotCheck => Outcome::Unit,
        }
    }

    /// The current neighbors of `node` in `dir` as `neighbors()` lists them: out-entries then
    /// in-entries, each in edge-id order, filtered like `NeighborFilter { known_at, .. }`.
    pub fn neighbors(&self, node: u64, dir: Direction, known_at: Option<i64>) -> Vec<NeighborRow> {
        let mut out = Vec::new();
        let dirs: &[Direction] = match dir {
            Direction::Both => &[Direction::Out, Direction::In],
            Direction::Out => &[Direction::Out],
            Direction::In => &[Direction::In],
        };
        for d in dirs {
            for (id, e) in &self.edges {
                let (here, there) = if *d == Direction::Out { (e.from, e.to) } else { (e.to, e.from) };
                if here != node {
                    continue;
                }
                let visible = match known_at {
                    Some(r) => e.recorded_at <= r && e.retracted_at.is_none_or(|t| r < t),
                    None => e.retracted_at.is_none(),
                };
                if visible {
                    out.push(NeighborRow {
                        node: there,
                        edge: *id,
                        kind: e.kind.to_string(),
                        direction: *d,
                        valid_from: (e.valid_from != i64::MIN).then_some(e.valid_from),
                        valid_to: (e.valid_to != i64::MAX).then_some(e.valid_to),
                        recorded_at: e.recorded_at,
                        retracted_at: e.retracted_at,
                    });
                }
            }
        }
        out
    }
}

/// A neighbor as compared: the kind by name (kind ids are an implementation detail).
#[derive(Debug, Clone, PartialEq)]
pub struct NeighborRow {
    pub node: u64,
    pub edge: u64,
    pub kind: String,
    pub direction: Direction,
    pub valid_from: Option<i64>,
    pub valid_to: Option<i64>,
    pub recorded_at: i64,
    pub retracted_at: Option<i64>,
}

fn props_vec(m: Option<&BTreeMap<String, Value>>) -> Vec<(String, Value)> {
    m.map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default()
}

/// Compares every read of a snapshot with the model; panics with `what` on the first difference.
/// `times` are record times to ask `known_at` queries about.
pub fn check_org(r: &ReadTxn, m: &OrgModel, times: &[i64], what: &str) {
    let ctx = |s: &str| format!("{what}: {s}");
    assert_eq!(r.counts().expect("counts"), (m.nodes.len() as u64, m.edges.len() as u64), "{}", ctx("counts"));
    for id in 0..m.next_node + 2 {
        let got = r.node(NodeId(id)).unwrap_or_else(|e| panic!("{}: {e}", ctx("node read failed")));
        match (m.nodes.get(&id), got) {
            (None, None) => {}
            (Some(n), Some(v)) => {
                assert_eq!(v.id, NodeId(id), "{}", ctx("node id"));
                assert_eq!(v.kind, n.kind, "{}", ctx("node kind"));
                let src: Vec<(String, String)> =
                    v.sources.iter().map(|s| (s.system.clone(), s.external_id.clone())).collect();
                assert_eq!(src, n.sources, "{}", ctx("node sources"));
                assert_eq!((v.created_at, v.updated_at), (n.created_at, n.updated_at), "{}", ctx("node times"));
                assert_eq!((v.out_degree, v.in_degree), (n.out_degree, n.in_degree), "{}", ctx("node degrees"));
                assert_eq!(r.degree(NodeId(id), Direction::Both).expect("degree"), Some(n.out_degree + n.in_degree));
            }
            (want, got) => panic!("{}: node {id}: model {want:?}, store {got:?}", what),
        }
        for c in Compartment::ALL {
            let got = r.node_props(NodeId(id), c).unwrap_or_else(|e| panic!("{}: {e}", ctx("node props")));
            assert_eq!(got, props_vec(m.node_props.get(&(id, c))), "{}", ctx(&format!("node {id} props {c:?}")));
        }
        if id == 0 || m.nodes.contains_key(&id) {
            for dir in [Direction::Out, Direction::In, Direction::Both] {
                let mut queries = vec![None];
                if dir == Direction::Both {
                    queries.extend(times.iter().map(|t| Some(*t)));
                }
                for known_at in queries {
                    let filter = NeighborFilter { known_at, ..NeighborFilter::default() };
                    let got: Vec<NeighborRow> = r
                        .neighbors_filtered(NodeId(id), dir, filter)
                        .expect("neighbors")
                        .map(|n| {
                            let n = n.unwrap_or_else(|e| panic!("{}: {e}", ctx("neighbor page")));
                            NeighborRow {
                                node: n.node.0,
                                edge: n.edge.0,
                                kind: r.kind_name(n.kind).expect("kind name").expect("kind known"),
                                direction: n.direction,
                                valid_from: n.valid_from,
                                valid_to: n.valid_to,
                                recorded_at: n.recorded_at,
                                retracted_at: n.retracted_at,
                            }
                        })
                        .collect();
                    let want = m.neighbors(id, dir, known_at);
                    assert_eq!(got, want, "{}", ctx(&format!("neighbors of {id} {dir:?} known_at {known_at:?}")));
                }
            }
        }
    }
    for id in 0..m.next_edge + 2 {
        let got = r.edge(EdgeId(id)).unwrap_or_else(|e| panic!("{}: {e}", ctx("edge read failed")));
        match (m.edges.get(&id), got) {
            (None, None) => {}
            (Some(e), Some(v)) => {
                assert_eq!((v.from, v.to), (NodeId(e.from), NodeId(e.to)), "{}", ctx("edge ends"));
                assert_eq!(v.kind, e.kind, "{}", ctx("edge kind"));
                let src = v.source.map(|s| (s.system, s.external_id));
                assert_eq!(src, e.source, "{}", ctx("edge source"));
                assert_eq!(v.valid_from, (e.valid_from != i64::MIN).then_some(e.valid_from), "{}", ctx("valid_from"));
                assert_eq!(v.valid_to, (e.valid_to != i64::MAX).then_some(e.valid_to), "{}", ctx("valid_to"));
                assert_eq!((v.recorded_at, v.retracted_at), (e.recorded_at, e.retracted_at), "{}", ctx("edge times"));
            }
            (want, got) => panic!("{}: edge {id}: model {want:?}, store {got:?}", what),
        }
        for c in Compartment::ALL {
            let got = r.edge_props(EdgeId(id), c).unwrap_or_else(|e| panic!("{}: {e}", ctx("edge props")));
            assert_eq!(got, props_vec(m.edge_props.get(&(id, c))), "{}", ctx(&format!("edge {id} props {c:?}")));
        }
    }
    for i in 0..N_NODE_SOURCES {
        let (s, e) = node_source(i);
        let got = r.lookup(&s, &e).expect("lookup").map(|n| n.0);
        assert_eq!(got, m.node_index.get(&(s.clone(), e.clone())).copied(), "{}", ctx(&format!("lookup {s}:{e}")));
    }
    for i in 0..N_EDGE_SOURCES {
        let (s, e) = edge_source(i);
        let got = r.lookup_edge(&s, &e).expect("lookup_edge").map(|n| n.0);
        assert_eq!(got, m.edge_index.get(&(s.clone(), e.clone())).copied(), "{}", ctx(&format!("lookup_edge {s}:{e}")));
    }
}

/// Applies one write operation to a real transaction.
pub fn apply_real(w: &mut WriteTxn, op: &WOp) -> Outcome {
    let ok_or_invalid = |r: Result<Outcome, Error>| match r {
        Ok(o) => o,
        Err(Error::InvalidInput(_)) => Outcome::Invalid,
        Err(e) => panic!("{op:?} failed with an unexpected error: {e}"),
    };
    ok_or_invalid(match op {
        WOp::Upsert { kind, sources, props } => {
            let mut n = NodeInput::new(*kind);
            for (s, e) in sources {
                n = n.source(s.as_str(), e.as_str());
            }
            for (c, name, v) in props {
                n = n.prop_in(*c, name.as_str(), v.clone());
            }
            w.upsert_node(n).map(|id| Outcome::Node(id.0))
        }
        WOp::AddEdge { from, to, kind, source, valid_from, valid_to, props } => {
            let mut e = EdgeInput::new(NodeId(*from), NodeId(*to), *kind);
            if let Some((s, x)) = source {
                e = e.source(s.as_str(), x.as_str());
            }
            if let Some(t) = valid_from {
                e = e.valid_from(*t);
            }
            if let Some(t) = valid_to {
                e = e.valid_to(*t);
            }
            for (c, name, v) in props {
                e = e.prop_in(*c, name.as_str(), v.clone());
            }
            w.add_edge(e).map(|id| Outcome::Edge(id.0))
        }
        WOp::Retract(id) => w.retract_edge(EdgeId(*id)).map(Outcome::Bool),
        WOp::SetNodeProp(id, c, n, v) => w.set_node_prop(NodeId(*id), *c, n, v.clone()).map(|()| Outcome::Unit),
        WOp::RemoveNodeProp(id, c, n) => w.remove_node_prop(NodeId(*id), *c, n).map(Outcome::Bool),
        WOp::SetEdgeProp(id, c, n, v) => w.set_edge_prop(EdgeId(*id), *c, n, v.clone()).map(|()| Outcome::Unit),
        WOp::RemoveEdgeProp(id, c, n) => w.remove_edge_prop(EdgeId(*id), *c, n).map(Outcome::Bool),
        WOp::Lookup((s, e)) => w.lookup(s, e).map(|n| Outcome::Found(n.map(|n| n.0))),
        WOp::SnapshotCheck => Ok(Outcome::Unit),
    })
}

/// Reads bytes as a stream of small choices; an exhausted stream reads as zeros.
pub struct ByteReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        ByteReader { bytes, pos: 0 }
    }

    pub fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    pub fn u8(&mut self) -> u8 {
        let b = self.bytes.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
}

fn read_props(r: &mut ByteReader<'_>) -> Vec<(Compartment, String, Value)> {
    let n = r.u8() % 3;
    (0..n)
        .map(|_| {
            let c = compartment_of(r.u8());
            let name = PROP_NAMES[usize::from(r.u8() % 3)].to_string();
            let v = value_of(r.u8(), r.u8());
            (c, name, v)
        })
        .collect()
}

fn small_time(b: u8) -> Option<i64> {
    (!b.is_multiple_of(4)).then_some(i64::from(b) * 100)
}

/// Decodes one write operation. Ids are chosen among the model's known ids plus a few unknown
/// ones (0 and the next id).
pub fn read_wop(r: &mut ByteReader<'_>, m: &OrgModel) -> WOp {
    let node = |b: u8| u64::from(b) % (m.next_node + 1);
    let edge = |b: u8| u64::from(b) % (m.next_edge + 1);
    match r.u8() % 10 {
        0 | 1 => {
            let kind = NODE_KINDS[usize::from(r.u8() % 3)];
            let n = r.u8() % 3;
            let sources = (0..n).map(|_| node_source(r.u8())).collect();
            WOp::Upsert { kind, sources, props: read_props(r) }
        }
        2 | 3 => {
            let from = node(r.u8());
            let to = node(r.u8());
            let kind = EDGE_KINDS[usize::from(r.u8() % 2)];
            let sb = r.u8();
            let source = (!sb.is_multiple_of(3)).then(|| edge_source(sb / 3));
            let valid_from = small_time(r.u8());
            let valid_to = small_time(r.u8());
            WOp::AddEdge { from, to, kind, source, valid_from, valid_to, props: read_props(r) }
        }
        4 => WOp::Retract(edge(r.u8())),
        5 => {
            let id = node(r.u8());
            let c = compartment_of(r.u8());
            let name = PROP_NAMES[usize::from(r.u8() % 3)].to_string();
            WOp::SetNodeProp(id, c, name, value_of(r.u8(), r.u8()))
        }
        6 => {
            let id = node(r.u8());
            WOp::RemoveNodeProp(id, compartment_of(r.u8()), PROP_NAMES[usize::from(r.u8() % 3)].to_string())
        }
        7 => {
            let id = edge(r.u8());
            let c = compartment_of(r.u8());
            let name = PROP_NAMES[usize::from(r.u8() % 3)].to_string();
            WOp::SetEdgeProp(id, c, name, value_of(r.u8(), r.u8()))
        }
        8 => {
            let id = edge(r.u8());
            WOp::RemoveEdgeProp(id, compartment_of(r.u8()), PROP_NAMES[usize::from(r.u8() % 3)].to_string())
        }
        _ => {
            if r.u8().is_multiple_of(2) {
                WOp::Lookup(node_source(r.u8()))
            } else {
                WOp::SnapshotCheck
            }
        }
    }
}

/// The database under test, its disk, its org handles and the model.
pub struct Runner {
    pub disk: SharedBytes,
    pub db: Option<Db>,
    pub orgs: [Option<Org>; 2],
    pub models: [Option<OrgModel>; 2],
    /// Record time of the next transaction (each transaction gets its own).
    pub clock: i64,
    /// Record times of past transactions (a few are asked about in `known_at` queries).
    pub times: Vec<i64>,
    /// How to (re)open the database with a root key; `None`: on `disk`.
    pub opener: Option<Opener>,
}

/// Opens a database with a root key (another backend than the in-memory redb one).
pub type Opener = Box<dyn Fn([u8; 32]) -> Result<Db, Error>>;

fn open_db(disk: &SharedBytes, root: [u8; 32]) -> Result<Db, Error> {
    Db::builder()
        .cache_size(1 << 20)
        .storage_cache_size(1 << 20)
        .open_with_backend(disk.backend(), RootKey::from_bytes(root))
}

impl Runner {
    /// A fresh in-memory database with no orgs.
    pub fn new() -> Self {
        let disk = SharedBytes::default();
        let db = open_db(&disk, ROOT).expect("create the database");
        Runner {
            disk,
            db: Some(db),
            orgs: [None, None],
            models: [None, None],
            clock: 1000,
            times: Vec::new(),
            opener: None,
        }
    }

    /// A fresh database opened by `opener` (which must give an empty database the first time).
    pub fn with_opener(opener: Opener) -> Self {
        let db = opener(ROOT).expect("create the database");
        let mut r = Runner::new();
        r.db = Some(db);
        r.opener = Some(opener);
        r
    }

    fn open_with(&self, root: [u8; 32]) -> Result<Db, Error> {
        match &self.opener {
            Some(open) => open(root),
            None => open_db(&self.disk, root),
        }
    }

    /// The first, a middle and the last record time, plus one between two transactions.
    fn sample_times(&self) -> Vec<i64> {
        match self.times.as_slice() {
            [] => Vec::new(),
            t => vec![t[0], t[t.len() / 2] + 500, t[t.len() - 1]],
        }
    }

    fn db(&self) -> &Db {
        self.db.as_ref().expect("database open")
    }

    fn open_org(&self, i: usize) -> Result<Org, Error> {
        if i == 0 {
            self.db().org(ORG_NAMES[0])
        } else {
            self.db().org_with_key(ORG_NAMES[1], &OrgKey::from_bytes(GLOBEX_KEY))
        }
    }

    fn reopen(&mut self) {
        self.orgs = [None, None];
        self.db = None;
        self.db = Some(self.open_with(ROOT).expect("reopen the database"));
        for i in 0..2 {
            if self.models[i].is_some() {
                self.orgs[i] = Some(self.open_org(i).expect("reopen an existing org"));
            } else {
                assert!(matches!(self.open_org(i), Err(Error::OrgNotFound(_))), "missing org must be OrgNotFound");
            }
        }
    }

    /// Runs one top-level operation against the store and the model; panics on a difference.
    pub fn run(&mut self, op: &Top) {
        match op {
            Top::Create(i) => {
                let res = if *i == 0 {
                    self.db().create_org(ORG_NAMES[0])
                } else {
                    self.db().create_org_with_key(ORG_NAMES[1], &OrgKey::from_bytes(GLOBEX_KEY))
                };
                match (&self.models[*i], res) {
                    (None, Ok(org)) => {
                        self.orgs[*i] = Some(org);
                        self.models[*i] = Some(OrgModel::default());
                    }
                    (Some(_), Err(Error::OrgExists(_))) => {}
                    (m, r) => panic!("create org {i}: model has it: {}, store: {r:?}", m.is_some()),
                }
            }
            Top::Txn { org, ops, commit } => self.run_txn(*org, ops, *commit),
            Top::Check(i) => match (&self.orgs[*i], &self.models[*i]) {
                (Some(org), Some(m)) => {
                    let r = org.read().expect("begin read");
                    check_org(&r, m, &self.sample_times(), &format!("check org {i}"));
                    assert_eq!(org.counts().expect("counts"), (m.nodes.len() as u64, m.edges.len() as u64));
                }
                _ => assert!(matches!(self.open_org(*i), Err(Error::OrgNotFound(_)))),
            },
            Top::Reopen => self.reopen(),
            Top::WrongRoot => {
                self.orgs = [None, None];
                self.db = None;
                let res = self.open_with([0x99; 32]);
                assert!(matches!(res, Err(Error::WrongKey)), "wrong root key: {res:?}");
                drop(res);
                self.reopen();
            }
            Top::WrongOrgKey => {
                let res = self.db().org_with_key(ORG_NAMES[1], &OrgKey::from_bytes([0x33; 32]));
                match &self.models[1] {
                    Some(_) => assert!(matches!(res, Err(Error::WrongKey)), "wrong org key: {res:?}"),
                    None => assert!(matches!(res, Err(Error::OrgNotFound(_))), "missing org: {res:?}"),
                }
                let res = self.db().org(ORG_NAMES[1]);
                match &self.models[1] {
                    Some(_) => assert!(matches!(res, Err(Error::InvalidInput(_))), "byok org via org(): {res:?}"),
                    None => assert!(matches!(res, Err(Error::OrgNotFound(_))), "missing org: {res:?}"),
                }
            }
        }
    }

    fn run_txn(&mut self, i: usize, ops: &[WOp], commit: bool) {
        let (Some(org), Some(committed)) = (self.orgs[i].clone(), self.models[i].clone()) else {
            assert!(matches!(self.open_org(i), Err(Error::OrgNotFound(_))));
            return;
        };
        let now = self.clock;
        self.clock += 1000;
        let mut w = org.write().expect("begin write");
        w.set_time(now);
        let mut working = committed.clone();
        for op in ops {
            if let WOp::SnapshotCheck = op {
                let r = org.read().expect("begin read");
                check_org(&r, &committed, &self.sample_times(), "snapshot during a write transaction");
                continue;
            }
            let want = working.apply(op, now);
            let got = apply_real(&mut w, op);
            assert_eq!(got, want, "{op:?} in org {i}");
        }
        if commit {
            w.commit().expect("commit");
            self.models[i] = Some(working);
            self.times.push(now);
        } else {
            drop(w);
        }
    }
}

impl Default for Runner {
    fn default() -> Self {
        Runner::new()
    }
}

/// Decodes a whole program: top-level operations until the bytes run out (at most `max_top`).
/// Programs start by creating both orgs unless the first byte says otherwise, so most inputs
/// reach the write path.
pub fn read_program(bytes: &[u8], max_top: usize) -> Vec<Top> {
    let mut r = ByteReader::new(bytes);
    let mut models = [Some(OrgModel::default()), Some(OrgModel::default())];
    let mut out = Vec::new();
    if !r.u8().is_multiple_of(8) {
        out.push(Top::Create(0));
        out.push(Top::Create(1));
    } else {
        models = [None, None];
    }
    // Ids are chosen against a model kept in step with the program (committed transactions
    // only), so they mostly name existing nodes and edges.
    while !r.done() && out.len() < max_top {
        let op = match r.u8() % 12 {
            0 => Top::Create(usize::from(r.u8() % 2)),
            1..=6 => {
                let org = usize::from(r.u8() % 2);
                let commit = !r.u8().is_multiple_of(4);
                let n = 1 + r.u8() % 8;
                let mut scratch = models[org].clone().unwrap_or_default();
                let mut ops = Vec::new();
                for _ in 0..n {
                    let op = read_wop(&mut r, &scratch);
                    scratch.apply(&op, 0);
                    ops.push(op);
                }
                if commit && models[org].is_some() {
                    models[org] = Some(scratch);
                }
                Top::Txn { org, ops, commit }
            }
            7 | 8 => Top::Check(usize::from(r.u8() % 2)),
            9 => Top::Reopen,
            10 => Top::WrongRoot,
            _ => Top::WrongOrgKey,
        };
        if let Top::Create(i) = op {
            if models[i].is_none() {
                models[i] = Some(OrgModel::default());
            }
        }
        out.push(op);
    }
    out
}

/// Runs a program and finishes by checking both orgs, after a reopen.
pub fn run_program(program: &[Top]) {
    run_program_on(Runner::new(), program);
}

/// [`run_program`] on a given runner (e.g. one on another backend).
pub fn run_program_on(mut runner: Runner, program: &[Top]) {
    for op in program {
        runner.run(op);
    }
    runner.run(&Top::Check(0));
    runner.run(&Top::Check(1));
    runner.run(&Top::Reopen);
    runner.run(&Top::Check(0));
    runner.run(&Top::Check(1));
}
