//! Tampering with stored values: every flipped byte of every sealed value, and every value moved
//! onto another record key, table or organization, is an error through the public API — never a
//! value, a default, or fewer results — and `Db::verify` names the tampered record.
//!
//! The database lives on an in-memory redb backend whose bytes outlive the [`Db`]: each case
//! starts from a copy of the pristine bytes, changes one stored value (in the raw bytes, or with
//! a plain `redb::Database`), opens the copy and reads everything back.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::time::Instant;

use crate::common::backend::SharedBytes;
use crate::common::open_on as open_db;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use silograph::{Compartment, Db, Direction, EdgeId, EdgeInput, Error, KindId, Neighbor, NodeId, NodeInput, Value};

const ORG_TABLES: &[&str] = &["orgs", "nodes", "props", "edges", "adj", "index", "dict", "audit"];

fn table_def(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

/// Each table's `(key, value)` pairs, by table name.
type Rows = BTreeMap<String, Vec<(Vec<u8>, Vec<u8>)>>;

/// Every `(key, value)` of the named tables, read with plain redb.
fn dump(disk: &SharedBytes, tables: &[&str]) -> Rows {
    let raw = redb::Database::builder().create_with_backend(disk.backend()).unwrap();
    let rtx = raw.begin_read().unwrap();
    let mut out = BTreeMap::new();
    for name in tables {
        let t = rtx.open_table(table_def(name)).unwrap();
        let rows = t.iter().unwrap().map(|r| r.unwrap()).map(|(k, v)| (k.value().to_vec(), v.value().to_vec()));
        out.insert(name.to_string(), rows.collect());
    }
    out
}

/// Writes `value` under `key` in `table` with plain redb, bypassing silograph.
fn poke(disk: &SharedBytes, table: &str, key: &[u8], value: &[u8]) {
    let raw = redb::Database::builder().create_with_backend(disk.backend()).unwrap();
    let wtx = raw.begin_write().unwrap();
    wtx.open_table(table_def(table)).unwrap().insert(key, value).unwrap();
    wtx.commit().unwrap();
}

/// Offsets of every copy of `value` in the raw bytes (the live one, and any copy left in a page
/// redb freed but has not reused yet).
fn occurrences(image: &[u8], value: &[u8]) -> Vec<usize> {
    image.windows(value.len()).enumerate().filter(|(_, w)| *w == value).map(|(o, _)| o).collect()
}

/// What the test knows an org holds: enough to address every record it wrote.
#[derive(Debug, Default)]
struct OrgSpec {
    name: String,
    kinds: Vec<String>,
    node_sources: Vec<(String, String)>,
    edge_sources: Vec<(String, String)>,
    nodes: Vec<NodeId>,
    edges: Vec<EdgeId>,
}

/// One observation through the public API: the data (as its debug form) or the failure.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Data(String),
    Failed(Failure),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Failure {
    Corrupt,
    Unsupported,
    Other,
}

fn failure(e: &Error) -> Failure {
    match e {
        Error::Corrupt { .. } => Failure::Corrupt,
        Error::UnsupportedFormat(_) => Failure::Unsupported,
        _ => Failure::Other,
    }
}

fn seen<T: Debug>(r: silograph::Result<T>) -> Seen {
    match r {
        Ok(v) => Seen::Data(format!("{v:?}")),
        Err(e) => Seen::Failed(failure(&e)),
    }
}

/// Walks a neighbor iterator to its end. An error must be the last item: a walk never goes on
/// (skipping a page) after it.
fn walk(r: silograph::Result<silograph::Neighbors<'_>>) -> Seen {
    let it = match r {
        Ok(it) => it,
        Err(e) => return Seen::Failed(failure(&e)),
    };
    let items: Vec<silograph::Result<Neighbor>> = it.collect();
    match items.iter().position(|i| i.is_err()) {
        Some(p) => {
            assert_eq!(p, items.len() - 1, "a neighbor walk went on after an error");
            Seen::Failed(failure(items[p].as_ref().unwrap_err()))
        }
        None => Seen::Data(format!("{:?}", items.into_iter().map(|i| i.unwrap()).collect::<Vec<_>>())),
    }
}

/// The reads of one probe, by label; `only` restricts a probe to some of them.
struct Reads<'a> {
    only: Option<&'a HashSet<String>>,
    out: Vec<(String, Seen)>,
}

impl Reads<'_> {
    fn wants(&self, label: &str) -> bool {
        self.only.is_none_or(|o| o.contains(label))
    }

    fn call(&mut self, org: &str, what: String, f: impl FnOnce() -> Seen) {
        let label = format!("{org}: {what}");
        if self.wants(&label) {
            let v = f();
            self.out.push((label, v));
        }
    }
}

/// Reads back everything the specs name, through the public API, in a fixed order (or only the
/// reads labelled in `only`, in the same order). With `names_first`, kind names are resolved
/// (from `dict`) before kind ids (from `index`), so that the handle's kind cache does not hide a
/// tampered `dict` record; otherwise the other way round.
fn probe(db: &Db, specs: &[OrgSpec], names_first: bool, only: Option<&HashSet<String>>) -> Vec<(String, Seen)> {
    let mut reads = Reads { only, out: Vec::new() };
    reads.call("db", "list_orgs".into(), || seen(db.list_orgs()));
    for s in specs {
        let prefix = format!("{}: ", s.name);
        if only.is_some_and(|o| !o.iter().any(|l| l.starts_with(&prefix))) {
            continue;
        }
        let org = match db.org(&s.name) {
            Ok(o) => o,
            Err(e) => {
                reads.out.push((format!("{prefix}open"), Seen::Failed(failure(&e))));
                continue;
            }
        };
        let r = match org.read() {
            Ok(r) => r,
            Err(e) => {
                reads.out.push((format!("{prefix}read"), Seen::Failed(failure(&e))));
                continue;
            }
        };
        let o = s.name.as_str();
        let kind_ids: Vec<KindId> = (1..=s.kinds.len() as u32 + 1).map(KindId).collect();
        for pass in [names_first, !names_first] {
            if pass {
                for &k in &kind_ids {
                    reads.call(o, format!("kind_name {k:?}"), || seen(r.kind_name(k)));
                }
            } else {
                for n in &s.kinds {
                    reads.call(o, format!("kind_id {n}"), || seen(r.kind_id(n)));
                }
            }
        }
        reads.call(o, "audit entries".into(), || seen(org.audit().entries()));
        reads.call(o, "audit verify".into(), || match org.audit().verify() {
            Ok(report) if !report.is_ok() => Seen::Failed(Failure::Corrupt),
            other => seen(other),
        });
        reads.call(o, "counts".into(), || seen(r.counts()));
        reads.call(o, "org.counts".into(), || seen(org.counts()));
        for (sys, ext) in &s.node_sources {
            reads.call(o, format!("lookup {sys}/{ext}"), || seen(r.lookup(sys, ext)));
        }
        for (sys, ext) in &s.edge_sources {
            reads.call(o, format!("lookup_edge {sys}/{ext}"), || seen(r.lookup_edge(sys, ext)));
        }
        let absent_node = NodeId(s.nodes.iter().map(|n| n.0).max().unwrap_or(0) + 1);
        for &n in s.nodes.iter().chain([&absent_node]) {
            reads.call(o, format!("node {n:?}"), || seen(r.node(n)));
            reads.call(o, format!("degree {n:?}"), || seen(r.degree(n, Direction::Both)));
            for c in Compartment::ALL {
                reads.call(o, format!("node_props {n:?} {c:?}"), || seen(r.node_props(n, c)));
            }
            for d in [Direction::Out, Direction::In, Direction::Both] {
                reads.call(o, format!("neighbors {n:?} {d:?}"), || walk(r.neighbors(n, d)));
            }
        }
        let absent_edge = EdgeId(s.edges.iter().map(|e| e.0).max().unwrap_or(0) + 1);
        for &e in s.edges.iter().chain([&absent_edge]) {
            reads.call(o, format!("edge {e:?}"), || seen(r.edge(e)));
            for c in Compartment::ALL {
                reads.call(o, format!("edge_props {e:?} {c:?}"), || seen(r.edge_props(e, c)));
            }
        }
    }
    reads.out
}

/// Opens the database and reads everything (or the reads in `only`); an open that fails is one
/// failed observation.
fn observe(
    disk: &SharedBytes,
    specs: &[OrgSpec],
    names_first: bool,
    only: Option<&HashSet<String>>,
) -> Vec<(String, Seen)> {
    match open_db(disk) {
        Ok(db) => probe(&db, specs, names_first, only),
        Err(e) => vec![("open db".into(), Seen::Failed(failure(&e)))],
    }
}

/// The labels of the reads that failed.
fn failed_reads(seen: &[(String, Seen)]) -> HashSet<String> {
    seen.iter().filter(|(_, v)| matches!(v, Seen::Failed(_))).map(|(k, _)| k.clone()).collect()
}

/// The property every tampered database must have: at least one read reports `expected`, every
/// other read returns exactly what the untouched database returned, and no read fails otherwise.
fn assert_detected(baseline: &[(String, Seen)], tampered: &[(String, Seen)], expected: Failure, case: &str) {
    let mut detected = 0;
    if tampered.len() == 1 && tampered[0].0 == "open db" {
        // The registry (orgs) and the database root (meta) are checked as a whole at open.
        match &tampered[0].1 {
            Seen::Failed(f) if *f == expected => return,
            other => panic!("{case}: opening the database failed with {other:?}"),
        }
    }
    let base: BTreeMap<&str, &Seen> = baseline.iter().map(|(k, v)| (k.as_str(), v)).collect();
    for (what, v) in tampered {
        match v {
            Seen::Failed(f) if *f == expected => detected += 1,
            Seen::Failed(f) => panic!("{case}: `{what}` failed with {f:?}, expected {expected:?}"),
            Seen::Data(d) => {
                let Some(Seen::Data(b)) = base.get(what.as_str()) else {
                    panic!("{case}: `{what}` returned data the untouched database did not read");
                };
                assert_eq!(d, b, "{case}: `{what}` returned different data");
            }
        }
    }
    assert!(detected > 0, "{case}: no read noticed the tampered value");
}

/// Two orgs, ~60 records over every org table: nodes with one or two sources and properties in
/// all three compartments, edges with and without sources, valid times, a self loop, edge
/// properties, a retracted edge, and records rewritten by a second transaction.
fn build_fixture(disk: &SharedBytes) -> Vec<OrgSpec> {
    let db = open_db(disk).unwrap();
    let mut specs = Vec::new();

    let acme = db.create_org("acme").unwrap();
    let mut s = OrgSpec { name: "acme".into(), ..Default::default() };
    let mut w = acme.write().unwrap();
    w.set_time(1_700_000_000_000);
    let p1 = w
        .upsert_node(NodeInput::new("person").source("gmail", "alice").prop("title", "CTO").label("segment", "vip"))
        .unwrap();
    let p2 = w.upsert_node(NodeInput::new("person").source("gmail", "bob").source("slack", "U2")).unwrap();
    let a1 =
        w.upsert_node(NodeInput::new("account").source("sf", "ACC1").prop_in(Compartment::Core, "tier", 1i64)).unwrap();
    let d1 = w.upsert_node(NodeInput::new("deal").source("sf", "006A")).unwrap();
    let d2 = w
        .upsert_node(NodeInput::new("deal").source("sf", "006B").prop("amount", 12.5f64).prop("blob", vec![1u8, 2, 3]))
        .unwrap();
    let p3 = w.upsert_node(NodeInput::new("person").source("gmail", "carol")).unwrap();
    let e1 = w.add_edge(EdgeInput::new(p1, p2, "emailed").valid_from(10).source("gmail", "m1")).unwrap();
    let e2 = w.add_edge(EdgeInput::new(p2, p1, "emailed").valid_from(20).valid_to(30).source("gmail", "m2")).unwrap();
    let e3 = w.add_edge(EdgeInput::new(p1, d1, "owns").source("sf", "e1").prop("note", "renewal")).unwrap();
    let e4 = w.add_edge(EdgeInput::new(p3, a1, "owns")).unwrap();
    let e5 = w.add_edge(EdgeInput::new(p2, d2, "owns").source("sf", "e2")).unwrap();
    let e6 = w.add_edge(EdgeInput::new(p1, p1, "emailed").source("gmail", "m3")).unwrap();
    // More edges than a node record keeps inline: p3's out-entries and d2's in-entries are in
    // adjacency pages, the other nodes' inline in their records.
    for _ in 0..17 {
        w.add_edge(EdgeInput::new(p3, d2, "owns")).unwrap();
    }
    w.commit().unwrap();
    let mut w = acme.write().unwrap();
    w.set_time(1_700_000_100_000);
    assert!(w.retract_edge(e5).unwrap());
    w.set_node_prop(p3, Compartment::Labels, "segment", "smb").unwrap();
    w.set_edge_prop(e1, Compartment::Labels, "topic", Value::from("pricing")).unwrap();
    w.commit().unwrap();
    s.kinds = ["person", "account", "deal", "emailed", "owns"].map(String::from).to_vec();
    s.node_sources = [("gmail", "alice"), ("gmail", "bob"), ("slack", "U2"), ("sf", "ACC1"), ("sf", "006A")]
        .iter()
        .chain(&[("sf", "006B"), ("gmail", "carol")])
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    s.edge_sources = [("gmail", "m1"), ("gmail", "m2"), ("sf", "e1"), ("sf", "e2"), ("gmail", "m3")]
        .map(|(a, b)| (a.into(), b.into()))
        .to_vec();
    s.nodes = vec![p1, p2, a1, d1, d2, p3];
    s.edges = vec![e1, e2, e3, e4, e5, e6];
    specs.push(s);

    let globex = db.create_org("globex").unwrap();
    let mut s = OrgSpec { name: "globex".into(), ..Default::default() };
    let mut w = globex.write().unwrap();
    let g1 = w.upsert_node(NodeInput::new("person").source("gmail", "alice").prop("title", "CEO")).unwrap();
    let g2 = w.upsert_node(NodeInput::new("ticket").source("jira", "T-1")).unwrap();
    let ge = w.add_edge(EdgeInput::new(g1, g2, "filed").source("jira", "ev-1")).unwrap();
    w.commit().unwrap();
    s.kinds = ["person", "ticket", "filed"].map(String::from).to_vec();
    s.node_sources = vec![("gmail".into(), "alice".into()), ("jira".into(), "T-1".into())];
    s.edge_sources = vec![("jira".into(), "ev-1".into())];
    s.nodes = vec![g1, g2];
    s.edges = vec![ge];
    specs.push(s);
    specs
}

/// A fixture, its pristine bytes, and what an untouched database reads (both probe orders).
struct Fixture {
    pristine: Vec<u8>,
    specs: Vec<OrgSpec>,
    baseline: [Vec<(String, Seen)>; 2],
}

impl Fixture {
    fn new() -> Self {
        let disk = SharedBytes::default();
        let specs = build_fixture(&disk);
        let baseline = [observe(&disk, &specs, false, None), observe(&disk, &specs, true, None)];
        for b in &baseline {
            assert!(b.iter().all(|(_, v)| matches!(v, Seen::Data(_))), "untouched database failed: {b:?}");
        }
        let pristine = disk.snapshot();
        Fixture { pristine, specs, baseline }
    }

    /// A fresh copy of the pristine bytes.
    fn disk(&self) -> SharedBytes {
        SharedBytes::from_vec(self.pristine.clone())
    }

    /// Stores `value` under `table`/`key` in a copy, reads everything back, checks the result.
    fn check(&self, table: &str, key: &[u8], value: &[u8], expected: Failure, case: &str) {
        let disk = self.disk();
        poke(&disk, table, key, value);
        self.check_reads(&disk, table, expected, case, None);
    }

    /// Reads back everything (or the reads in `only`) from the tampered database and checks the
    /// result; returns the labels of the reads that failed.
    fn check_reads(
        &self,
        disk: &SharedBytes,
        table: &str,
        expected: Failure,
        case: &str,
        only: Option<&HashSet<String>>,
    ) -> HashSet<String> {
        let names_first = table == "dict";
        let tampered = observe(disk, &self.specs, names_first, only);
        assert_detected(&self.baseline[names_first as usize], &tampered, expected, case);
        failed_reads(&tampered)
    }
}

/// `Db::verify` on the tampered database names the tampered record (the audit chain may be
/// reported as broken instead of, or as well as, naming the entry).
fn assert_verify_names(disk: &SharedBytes, table: &str, key: &[u8], case: &str) {
    let db = match open_db(disk) {
        // A registry row is checked as a whole at open: the database does not open at all.
        Err(Error::Corrupt { at: silograph::CorruptAt::Registry, .. }) if table == "orgs" => return,
        other => other.unwrap(),
    };
    let report = db.verify().unwrap();
    let named = report.corrupt.iter().any(|c| c.table == table && c.key == hex::encode(key));
    let audit = table == "audit" && !report.bad_audit.is_empty();
    assert!(named || audit, "{case}: verify did not name the record: {report:?}");
    assert!(!report.is_ok(), "{case}: verify passed");
}

#[test]
fn every_flipped_byte_of_every_stored_value_is_an_error() {
    let fx = Fixture::new();
    let rows = dump(&fx.disk(), ORG_TABLES);
    for t in ["orgs", "nodes", "props", "edges", "adj", "index", "dict"] {
        assert!(!rows[t].is_empty(), "fixture wrote nothing to `{t}`");
    }
    let records: usize = rows.values().map(Vec::len).sum();
    // Format v2 packs nodes, edges and index entries into pages, and small nodes' adjacency into
    // their node records: fewer, larger values.
    assert!(records >= 30, "fixture has only {records} records");
    let start = Instant::now();
    let mut flips = 0usize;
    for (table, kvs) in &rows {
        for (key, value) in kvs {
            // Values are sealed (random-looking) and at least 33 bytes, so they are found only
            // where they are stored. Flipping the byte in the raw image, as an attacker editing
            // the file would, is much faster than a redb write per case (redb checks its page
            // checksums only when repairing after a crash, not on reads).
            let at = occurrences(&fx.pristine, value);
            assert!(!at.is_empty(), "{table} value not found in the image");
            // The first and last bytes are checked against every read; they find the reads that
            // touch this record (which reads touch a record does not depend on its content, up
            // to the point where it fails). Every other byte is checked against those reads.
            let last = value.len() - 1;
            let mut readers = HashSet::new();
            for i in [0, last].into_iter().chain(1..last) {
                let mut image = fx.pristine.clone();
                for o in &at {
                    image[o + i] ^= 0x01;
                }
                // A registry row is hashed into the database root before it is opened: any
                // change to it, its version byte included, is a registry mismatch at open.
                let expected = if i == 0 && *table != "orgs" { Failure::Unsupported } else { Failure::Corrupt };
                let case = format!("{table} key {} byte {i}/{}", hex::encode(key), value.len());
                let only = (i != 0 && i != last).then_some(&readers);
                let disk = SharedBytes::from_vec(image);
                let failed = fx.check_reads(&disk, table, expected, &case, only);
                if only.is_none() {
                    readers.extend(failed);
                }
                if i == last {
                    assert_verify_names(&disk, table, key, &case);
                }
                flips += 1;
            }
        }
    }
    eprintln!("{records} records, {flips} flipped bytes checked in {:.1?}", start.elapsed());
}

#[test]
fn value_moved_onto_another_key_of_the_same_table_is_rejected() {
    // Same table: every value under the next four keys (in key order, so mostly records of the
    // same org: node 1's value under node 2's key) and under two keys of the other org.
    let fx = Fixture::new();
    let rows = dump(&fx.disk(), ORG_TABLES);
    let (mut same_org, mut cross_org) = (0, 0);
    for (table, kvs) in &rows {
        for (i, (from_key, value)) in kvs.iter().enumerate() {
            let next = (1..kvs.len()).take(4).map(|d| &kvs[(i + d) % kvs.len()].0);
            let other = kvs.iter().map(|(k, _)| k).filter(|k| k.get(..8) != from_key.get(..8)).take(2);
            let mut targets: Vec<&Vec<u8>> = next.chain(other).collect();
            targets.sort();
            targets.dedup();
            for to_key in targets {
                if from_key.get(..8) == to_key.get(..8) {
                    same_org += 1;
                } else {
                    cross_org += 1;
                }
                let case = format!("{table}: value of {} under {}", hex::encode(from_key), hex::encode(to_key));
                fx.check(table, to_key, value, Failure::Corrupt, &case);
            }
        }
    }
    assert!(same_org >= 40 && cross_org >= 50, "moved {same_org} within and {cross_org} across orgs");
}

#[test]
fn value_moved_into_another_table_is_rejected() {
    // Every value of every table, stored under a key that exists in each other table (a node
    // value under an edge's key, an index value under a node's key, ...): a key of the same org
    // or of the other org, alternately.
    let fx = Fixture::new();
    let rows = dump(&fx.disk(), ORG_TABLES);
    let mut moved = 0;
    for (from_table, kvs) in &rows {
        for (i, (from_key, value)) in kvs.iter().enumerate() {
            for (to_table, targets) in rows.iter().filter(|(t, _)| *t != from_table) {
                let same = |k: &&(Vec<u8>, Vec<u8>)| k.0.get(..8) == from_key.get(..8);
                let pick = if i % 2 == 0 { targets.iter().find(same) } else { targets.iter().find(|k| !same(k)) };
                let Some((to_key, _)) = pick.or(targets.first()) else { continue };
                let case =
                    format!("value of {from_table}/{} under {to_table}/{}", hex::encode(from_key), hex::encode(to_key));
                fx.check(to_table, to_key, value, Failure::Corrupt, &case);
                moved += 1;
            }
        }
    }
    assert!(moved >= 200, "only {moved} values moved");
}

#[test]
fn every_flipped_byte_of_the_meta_records_fails_the_open() {
    let fx = Fixture::new();
    let rows = dump(&fx.disk(), &["meta"]);
    assert!(rows["meta"].len() >= 3, "meta holds {} records", rows["meta"].len());
    let mut refused = 0;
    for (key, value) in &rows["meta"] {
        for i in 0..value.len() {
            let mut bad = value.clone();
            bad[i] ^= 0x01;
            let disk = fx.disk();
            poke(&disk, "meta", key, &bad);
            let case = format!("meta {} byte {i}", String::from_utf8_lossy(key));
            match open_db(&disk) {
                Err(Error::WrongKey | Error::UnsupportedFormat(_) | Error::Corrupt { .. }) => refused += 1,
                Err(e) => panic!("{case}: open failed with {e:?}"),
                Ok(_) => panic!("{case}: open succeeded"),
            }
        }
    }
    let total: usize = rows["meta"].iter().map(|(_, v)| v.len()).sum();
    assert_eq!(refused, total, "every flipped byte of meta must refuse the open");
}

/// Reads every item of a neighbor walk, errors included.
fn walk_items(db: &Db, org: &str, node: NodeId, dir: Direction) -> Vec<silograph::Result<Neighbor>> {
    let r = db.org(org).unwrap().read().unwrap();
    let items = r.neighbors(node, dir).unwrap().collect();
    items
}

#[test]
fn corrupt_adjacency_page_yields_an_error_item_not_fewer_neighbors() {
    let mem = SharedBytes::default();
    let db = open_db(&mem).unwrap();
    let org = db.create_org("acme").unwrap();
    let mut w = org.write().unwrap();
    let ids: Vec<NodeId> =
        (0..4).map(|i| w.upsert_node(NodeInput::new("n").source("s", format!("{i}"))).unwrap()).collect();
    // 17 of each edge: more than a node record keeps inline, so every list is in pages.
    for _ in 0..17 {
        for &to in &ids[1..] {
            w.add_edge(EdgeInput::new(ids[0], to, "to")).unwrap();
        }
        w.add_edge(EdgeInput::new(ids[3], ids[2], "to")).unwrap();
    }
    w.commit().unwrap();
    drop((org, db));
    let walks: Vec<(NodeId, Direction)> =
        ids.iter().flat_map(|&n| [Direction::Out, Direction::In].map(|d| (n, d))).collect();
    let db = open_db(&mem).unwrap();
    let baseline: Vec<Vec<Neighbor>> =
        walks.iter().map(|&(n, d)| walk_items(&db, "acme", n, d).into_iter().map(|i| i.unwrap()).collect()).collect();
    drop(db);
    let pristine = mem.snapshot();
    let pages = dump(&mem, &["adj"]).remove("adj").unwrap();
    assert_eq!(pages.len(), 5, "two out pages (nodes 0 and 3) and three in pages (nodes 1, 2, 3)");
    let mut walks_hit = std::collections::HashSet::new();
    for (key, value) in &pages {
        for i in [1, value.len() / 2, value.len() - 1] {
            let mut bad = value.clone();
            bad[i] ^= 0x80;
            let disk = SharedBytes::from_vec(pristine.clone());
            poke(&disk, "adj", key, &bad);
            let db = open_db(&disk).unwrap();
            let mut failed = Vec::new();
            for (w, &(n, d)) in walks.iter().enumerate() {
                let items = walk_items(&db, "acme", n, d);
                match items.iter().position(|i| i.is_err()) {
                    Some(p) => {
                        assert_eq!(p, items.len() - 1, "the walk went on after the error");
                        assert!(matches!(items[p], Err(Error::Corrupt { .. })), "{:?}", items[p]);
                        let both = walk_items(&db, "acme", n, Direction::Both);
                        assert!(both.iter().any(|i| i.is_err()), "Both did not report the corrupt page");
                        failed.push(w);
                    }
                    None => {
                        let got: Vec<Neighbor> = items.into_iter().map(|i| i.unwrap()).collect();
                        assert_eq!(got, baseline[w], "walk {n:?} {d:?} changed without an error");
                    }
                }
            }
            assert_eq!(failed.len(), 1, "one corrupt page must fail exactly one walk, failed {failed:?}");
            walks_hit.insert(failed[0]);
            drop(db);
        }
    }
    assert_eq!(walks_hit.len(), 5, "every page was found by its walk");
}

#[test]
fn corrupt_second_page_of_a_multi_page_node_yields_an_error_after_the_first_page() {
    let mem = SharedBytes::default();
    let db = open_db(&mem).unwrap();
    let org = db.create_org("acme").unwrap();
    let mut w = org.write().unwrap();
    let hub = w.upsert_node(NodeInput::new("hub").source("s", "hub")).unwrap();
    let leaves: Vec<NodeId> =
        (0..512).map(|i| w.upsert_node(NodeInput::new("leaf").source("s", format!("{i}"))).unwrap()).collect();
    for &l in &leaves {
        w.add_edge(EdgeInput::new(hub, l, "to")).unwrap();
    }
    w.commit().unwrap();
    drop((org, db));
    let before: Vec<Vec<u8>> = dump(&mem, &["adj"])["adj"].iter().map(|(k, _)| k.clone()).collect();
    let db = open_db(&mem).unwrap();
    let org = db.org("acme").unwrap();
    // A second edge to leaves that already have an in-page: the only new adj record is the
    // hub's second out page.
    let mut w = org.write().unwrap();
    for &l in &leaves[..88] {
        w.add_edge(EdgeInput::new(hub, l, "again")).unwrap();
    }
    w.commit().unwrap();
    drop((org, db));
    let after = dump(&mem, &["adj"]).remove("adj").unwrap();
    let new: Vec<&(Vec<u8>, Vec<u8>)> = after.iter().filter(|(k, _)| !before.contains(k)).collect();
    assert_eq!(new.len(), 1, "exactly one new page");
    let (page2_key, page2) = new[0].clone();

    let db = open_db(&mem).unwrap();
    let full: Vec<Neighbor> = walk_items(&db, "acme", hub, Direction::Out).into_iter().map(|i| i.unwrap()).collect();
    assert_eq!(full.len(), 600);
    drop(db);
    for i in [1, 5, 17, page2.len() / 2, page2.len() - 1] {
        let mut bad = page2.clone();
        bad[i] ^= 0x04;
        poke(&mem, "adj", &page2_key, &bad);
        let db = open_db(&mem).unwrap();
        let items = walk_items(&db, "acme", hub, Direction::Out);
        assert_eq!(items.len(), 513, "byte {i}: page one's 512 neighbors, then one error");
        for (got, want) in items[..512].iter().zip(&full) {
            assert_eq!(got.as_ref().unwrap(), want);
        }
        assert!(matches!(items[512], Err(Error::Corrupt { .. })), "byte {i}: {:?}", items[512]);
        let both = walk_items(&db, "acme", hub, Direction::Both);
        assert!(both.iter().any(|i| i.is_err()), "byte {i}: Both skipped the corrupt page");
        assert_eq!(walk_items(&db, "acme", leaves[0], Direction::In).len(), 2, "other nodes still read");
        let r = db.org("acme").unwrap().read().unwrap();
        assert_eq!(r.degree(hub, Direction::Out).unwrap(), Some(600), "degree comes from the node record");
        drop((r, db));
        poke(&mem, "adj", &page2_key, &page2);
    }
}

/// With the page cache off a snapshot reads a small node's inline adjacency in place from its
/// node page (validated, not deserialized: `OrgInner::node_adjacency`), and keeps a page it
/// reads twice. Either way a flipped byte anywhere in a node page, or an older copy of the page
/// put back, fails the neighbor walk of every node on that page, whichever read comes first;
/// it never reads as fewer or other neighbors, and nodes of other pages still read.
#[test]
fn inline_adjacency_read_without_the_cache_fails_closed_on_a_tampered_or_older_node_page() {
    let disk = SharedBytes::default();
    let open = |d: &SharedBytes| Db::builder().cache_size(0).open_with_backend(d.backend(), crate::common::root());
    let ids: Vec<NodeId> = {
        let db = open(&disk).unwrap();
        let org = db.create_org("acme").unwrap();
        let mut w = org.write().unwrap();
        // 40 nodes: node pages of ids 1–15, 16–31 and 32–40; a ring plus chords, all inline.
        let ids: Vec<NodeId> =
            (0..40).map(|i| w.upsert_node(NodeInput::new("n").source("s", format!("{i}"))).unwrap()).collect();
        for i in 0..40 {
            w.add_edge(EdgeInput::new(ids[i], ids[(i + 1) % 40], "to")).unwrap();
            w.add_edge(EdgeInput::new(ids[i], ids[(i * 7 + 3) % 40], "to")).unwrap();
        }
        w.commit().unwrap();
        ids
    };
    let walk = |db: &Db| -> Vec<silograph::Result<Vec<NodeId>>> {
        // One snapshot for all: the second and later nodes of a page hit the snapshot's memo.
        let r = db.org("acme").unwrap().read().unwrap();
        ids.iter()
            .map(|&n| r.neighbors(n, Direction::Out).and_then(|it| it.map(|x| x.map(|x| x.node)).collect()))
            .collect()
    };
    let baseline: Vec<Vec<NodeId>> = walk(&open(&disk).unwrap()).into_iter().map(|r| r.unwrap()).collect();
    assert!(baseline.iter().all(|n| n.len() == 2));
    let pristine = disk.snapshot();
    let pages = dump(&disk, &["nodes"]).remove("nodes").unwrap();
    assert_eq!(pages.len(), 3);
    assert!(dump(&disk, &["adj"])["adj"].is_empty(), "every list is inline");
    // An older copy of each node page: the pages after one more edge of every node.
    let newer = SharedBytes::from_vec(pristine.clone());
    {
        let db = open(&newer).unwrap();
        let mut w = db.org("acme").unwrap().write().unwrap();
        for i in 0..40 {
            w.add_edge(EdgeInput::new(ids[i], ids[(i + 2) % 40], "to")).unwrap();
        }
        w.commit().unwrap();
    }
    let newer_pages = dump(&newer, &["nodes"]).remove("nodes").unwrap();
    let newer_bytes = newer.snapshot();
    let mut cases = 0;
    for (key, value) in &pages {
        let mut tampered: Vec<(SharedBytes, String)> = Vec::new();
        for i in [0, 30, value.len() / 2, value.len() - 1] {
            let mut bad = value.clone();
            bad[i] ^= 0x40;
            let d = SharedBytes::from_vec(pristine.clone());
            poke(&d, "nodes", key, &bad);
            tampered.push((d, format!("byte {i} of node page {}", hex::encode(key))));
        }
        // The pristine page put back into the newer file: an older version.
        let d = SharedBytes::from_vec(newer_bytes.clone());
        assert!(newer_pages.iter().any(|(k, _)| k == key));
        poke(&d, "nodes", key, value);
        tampered.push((d, format!("older node page {}", hex::encode(key))));
        for (d, case) in tampered {
            let got = walk(&open(&d).unwrap());
            // A changed version byte is `UnsupportedFormat`, everything else `Corrupt`.
            let failed =
                got.iter().filter(|r| matches!(r, Err(Error::Corrupt { .. } | Error::UnsupportedFormat(_)))).count();
            assert!(got.iter().all(|r| r.is_ok() || failed > 0), "{case}: {got:?}");
            assert!(failed >= 9, "{case}: only {failed} walks failed: {got:?}");
            for (r, want) in got.iter().zip(&baseline) {
                if let Ok(n) = r {
                    // A node of an untouched page reads as before (the newer file: one more).
                    assert!(n.starts_with(want), "{case}: {n:?} vs {want:?}");
                }
            }
            cases += 1;
        }
    }
    assert_eq!(cases, 15);
}

/// Org `o` on `disk`: a hub with an in-edge from each of 40 leaves (so its in-list is in an
/// adjacency page, the only one: every leaf keeps its one out-entry inline). Returns the hub and
/// the leaves.
fn hub_with_leaves(disk: &SharedBytes) -> (NodeId, Vec<NodeId>) {
    let db = open_db(disk).unwrap();
    let org = db.create_org("o").unwrap();
    let mut w = org.write().unwrap();
    let b = w.upsert_node(NodeInput::new("hub")).unwrap();
    let mut leaves = Vec::new();
    for i in 0..40 {
        let n = w.upsert_node(NodeInput::new("leaf").source("t", i.to_string())).unwrap();
        w.add_edge(EdgeInput::new(n, b, "x")).unwrap();
        leaves.push(n);
    }
    w.commit().unwrap();
    (b, leaves)
}

/// Flips the last byte of `adj` value `value` (under `key`) on `disk` and opens it without a page
/// cache, so every read of that page reaches the tampered bytes.
fn with_adj_value_flipped(disk: &SharedBytes, key: &[u8], value: &[u8]) -> Db {
    let mut bad = value.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0x01;
    poke(disk, "adj", key, &bad);
    Db::builder().cache_size(0).open_with_backend(disk.backend(), crate::common::root()).unwrap()
}

/// A change that fails part-way must not be committed half done. `b` is a hub whose in-edges
/// are in an adjacency page, `a` a leaf whose one entry is inline: `add_edge(a, b)` first
/// appends `a`'s out-entry (in memory), then reads `b`'s in-page. With that page tampered the
/// second step fails `Corrupt` after the first changed `a`; the transaction then refuses every
/// further change and its commit (`WrongState`), and nothing of it is written. Each `adj` value
/// is tampered in turn; the one that is `b`'s in-page must take this path.
#[test]
fn a_change_that_fails_part_way_fails_the_whole_transaction_and_writes_nothing() {
    let disk = SharedBytes::from_vec(Vec::new());
    let (b, leaves) = hub_with_leaves(&disk);
    let (a, c) = (leaves[0], leaves[1]);
    let pristine = disk.snapshot();
    let rows = dump(&disk, &["adj"]);
    assert!(!rows["adj"].is_empty(), "the hub has an adjacency page");
    let mut part_way = 0;
    for (key, value) in &rows["adj"] {
        let case = SharedBytes::from_vec(pristine.clone());
        let db = with_adj_value_flipped(&case, key, value);
        let org = db.org("o").unwrap();
        let before = (org.counts().unwrap(), org.read().unwrap().degree(a, Direction::Out).unwrap());
        let mut w = org.write().unwrap();
        match w.add_edge(EdgeInput::new(a, b, "x")) {
            Ok(_) => {
                w.commit().unwrap();
                continue;
            }
            Err(Error::Corrupt { .. }) => {}
            Err(e) => panic!("tampered adj value {}: {e:?}", hex::encode(key)),
        }
        part_way += 1;
        let refused = |r: silograph::Result<()>| matches!(r, Err(Error::InvalidInput(ref e)) if *e.kind() == silograph::InputKind::WrongState);
        assert!(refused(w.add_edge(EdgeInput::new(a, c, "x")).map(drop)), "a further change is refused");
        assert!(refused(w.upsert_node(NodeInput::new("n")).map(drop)), "a further node is refused");
        assert!(refused(w.commit()), "the commit is refused");
        let after = (org.counts().unwrap(), org.read().unwrap().degree(a, Direction::Out).unwrap());
        assert_eq!(before, after, "nothing of the failed transaction was written");
        // The org takes new writes that avoid the tampered page.
        let mut w = org.write().unwrap();
        w.add_edge(EdgeInput::new(a, c, "x")).unwrap();
        w.commit().unwrap();
        assert_eq!(org.counts().unwrap().1, before.0 .1 + 1);
    }
    assert_eq!(part_way, 1, "only the hub's in-page fails add_edge(a, b) part-way");
}

/// The bulk loader's flush fails part-way on a tampered stored page (the hub's in-page, which
/// the flush reads back to extend): the loader then refuses further edges and its `finish`
/// (`WrongState`), and nothing of the load is written.
#[test]
fn a_bulk_flush_that_fails_part_way_fails_the_whole_load_and_writes_nothing() {
    let disk = SharedBytes::from_vec(Vec::new());
    let (b, leaves) = hub_with_leaves(&disk);
    let rows = dump(&disk, &["adj"]);
    assert_eq!(rows["adj"].len(), 1, "only the hub's in-list has a page");
    let (key, value) = &rows["adj"][0];
    let db = with_adj_value_flipped(&disk, key, value);
    let org = db.org("o").unwrap();
    let before = org.counts().unwrap();
    let mut bulk = org.bulk_load().unwrap().memory_budget(2_000);
    let mut failed = None;
    for (i, &n) in leaves.iter().enumerate() {
        if let Err(e) = bulk.add_edge(n, b, "y") {
            failed = Some((i, e));
            break;
        }
    }
    let (i, e) = failed.expect("a flush reads the tampered page back");
    assert!(matches!(e, Error::Corrupt { .. }), "edge {i}: {e:?}");
    let refused = |e: &Error| matches!(e, Error::InvalidInput(x) if *x.kind() == silograph::InputKind::WrongState);
    let e = bulk.add_edge(leaves[0], b, "y").unwrap_err();
    assert!(refused(&e), "a further edge is refused: {e:?}");
    let e = bulk.finish().unwrap_err();
    assert!(refused(&e), "the finish is refused: {e:?}");
    assert_eq!(org.counts().unwrap(), before, "nothing of the load was written");
}

/// The other side of the rule above: a change refused as bad input or outside the handle's
/// scope changes nothing (a node with a property in the `Secrets` compartment, or in one the
/// scoped handle lacks, is not created half), and the transaction goes on to commit the rest.
#[test]
fn a_refused_change_changes_nothing_and_the_transaction_goes_on() {
    let db = crate::common::mem_db();
    let org = db.create_org("o").unwrap();
    let scoped = db.org_scoped("o", None, &[Compartment::Core, Compartment::Labels]).unwrap();
    let mut w = scoped.write().unwrap();
    let kept = w.upsert_node(NodeInput::new("person").source("t", "kept")).unwrap();
    let refused = [
        NodeInput::new("secretive").source("t", "s").prop_in(Compartment::Secrets, "k", "v"),
        NodeInput::new("raw").source("t", "r").prop_in(Compartment::Raw, "k", "v"),
    ];
    for input in refused {
        let e = w.upsert_node(input).unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_) | Error::Denied(_)), "{e:?}");
    }
    let e = w.add_edge(EdgeInput::new(kept, kept, "x").prop_in(Compartment::Raw, "k", "v")).unwrap_err();
    assert!(matches!(e, Error::Denied(Compartment::Raw)), "{e:?}");
    w.add_edge(EdgeInput::new(kept, kept, "y")).unwrap();
    w.commit().unwrap();
    let r = org.read().unwrap();
    assert_eq!(r.counts().unwrap(), (1, 1), "only the accepted node and edge");
    assert_eq!(r.lookup("t", "s").unwrap(), None);
    assert_eq!(r.lookup("t", "r").unwrap(), None);
    assert_eq!(r.kind_id("secretive").unwrap(), None, "a refused node interns no kind");
    assert_eq!(r.kind_id("x").unwrap(), None, "a refused edge interns no kind");
}
