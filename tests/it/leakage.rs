//! What successive copies of the file reveal: diff the stored rows before and after one small
//! commit, as someone who keeps copies (backups, snapshots, replicas) can. The counts here are
//! the figures of the README's leakage profile; a format change that makes a commit touch more
//! (or less) shows up as a failure to update them.

use std::collections::BTreeMap;

use crate::common::backend::SharedBytes;
use crate::common::open_on;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use silograph::{EdgeInput, NodeId, NodeInput};

const TABLES: &[&str] = &["orgs", "nodes", "props", "edges", "adj", "index", "dict", "audit"];

/// Every stored row, by table, read with plain redb (what a copy of the file holds).
fn rows(disk: &SharedBytes) -> BTreeMap<&'static str, BTreeMap<Vec<u8>, Vec<u8>>> {
    let raw = redb::Database::builder().create_with_backend(disk.backend()).unwrap();
    let rtx = raw.begin_read().unwrap();
    let mut out = BTreeMap::new();
    for name in TABLES {
        let t = rtx.open_table(TableDefinition::<&[u8], &[u8]>::new(name)).unwrap();
        let kv = t.iter().unwrap().map(|r| r.unwrap()).map(|(k, v)| (k.value().to_vec(), v.value().to_vec()));
        out.insert(*name, kv.collect());
    }
    out
}

/// Rows added or changed between two copies, per table.
fn changed(before: &SharedBytes, after: &SharedBytes) -> BTreeMap<&'static str, usize> {
    let (a, b) = (rows(before), rows(after));
    TABLES
        .iter()
        .map(|t| {
            let n = b[t].iter().filter(|(k, v)| a[t].get(*k) != Some(*v)).count();
            (*t, n)
        })
        .collect()
}

/// An org of 300 people and 600 sourced edges, then a copy of the bytes.
fn populated() -> (SharedBytes, Vec<NodeId>) {
    let disk = SharedBytes::default();
    let db = open_on(&disk).unwrap();
    let org = db.create_org("acme").unwrap();
    let mut w = org.write().unwrap();
    let ids: Vec<NodeId> =
        (0..300).map(|i| w.upsert_node(NodeInput::new("person").source("crm", format!("p{i}"))).unwrap()).collect();
    for i in 0..600usize {
        let e = EdgeInput::new(ids[i % 300], ids[(i * 7 + 3) % 300], "emailed").source("mail", format!("m{i}"));
        w.add_edge(e).unwrap();
    }
    // A hub: more out-edges than a node record keeps inline, so it has an adjacency page.
    for i in 0..40usize {
        w.add_edge(EdgeInput::new(ids[0], ids[100 + i], "emailed")).unwrap();
    }
    w.commit().unwrap();
    drop((org, db));
    (disk, ids)
}

/// The rows one commit of `write` (on the populated org) adds or rewrites, per table.
fn diff_of_one_commit(
    what: &str,
    write: impl FnOnce(&mut silograph::WriteTxn, &[NodeId]),
) -> BTreeMap<&'static str, usize> {
    let (disk, ids) = populated();
    let before = SharedBytes::from_vec(disk.snapshot());
    {
        let db = open_on(&disk).unwrap();
        let org = db.org("acme").unwrap();
        let mut w = org.write().unwrap();
        write(&mut w, &ids);
        w.commit().unwrap();
    }
    let diff = changed(&before, &disk);
    eprintln!("rows {what} adds or rewrites: {diff:?}");
    diff
}

#[test]
fn one_edge_commit_between_small_nodes_rewrites_their_node_pages_and_no_adjacency_page() {
    let diff = diff_of_one_commit("a one-edge commit", |w, ids| {
        w.add_edge(EdgeInput::new(ids[10], ids[200], "emailed").source("mail", "late")).unwrap();
    });
    // Both endpoints have few edges: their entries are inline in their node records, so no
    // adjacency page (no per-node key) changes. What changes are the node pages holding them
    // (ids 11 and 201: pages 0 and 12): 16 ids each, not the endpoint's own record.
    assert_eq!(diff["adj"], 0, "{diff:?}");
    assert_eq!(diff["nodes"], 2, "{diff:?}");
    // The edge page of the new edge id, one index bucket (its source), one audit entry, the
    // registry entry.
    assert_eq!(diff["edges"], 1, "{diff:?}");
    assert_eq!(diff["index"], 1, "{diff:?}");
    assert_eq!(diff["audit"], 1, "{diff:?}");
    assert_eq!(diff["orgs"], 1, "{diff:?}");
    assert_eq!(diff["props"] + diff["dict"], 0, "{diff:?}");
}

#[test]
fn one_edge_commit_from_a_hub_rewrites_the_hubs_adjacency_page() {
    let diff = diff_of_one_commit("a one-edge commit from a hub", |w, ids| {
        w.add_edge(EdgeInput::new(ids[0], ids[250], "emailed").source("mail", "late")).unwrap();
    });
    // The hub's out-page (its opaque per-node key is visible to whoever diffs copies, as in
    // v1); the small target's entries are inline in its node record.
    assert_eq!(diff["adj"], 1, "{diff:?}");
    // The node pages of both endpoints (ids 1 and 251: pages 0 and 15).
    assert_eq!(diff["nodes"], 2, "{diff:?}");
    assert_eq!(diff["edges"] + diff["index"] + diff["audit"] + diff["orgs"], 4, "{diff:?}");
    assert_eq!(diff["props"] + diff["dict"], 0, "{diff:?}");
}

#[test]
fn one_node_update_rewrites_its_node_page_and_nothing_of_other_nodes() {
    // A known node gains a second source: its page and the new source's bucket change.
    let diff = diff_of_one_commit("a one-node update", |w, _| {
        w.upsert_node(NodeInput::new("person").source("crm", "p42").source("mail", "p42@acme")).unwrap();
    });
    assert_eq!(diff["nodes"], 1, "{diff:?}");
    assert_eq!(diff["index"], 1, "{diff:?}");
    assert_eq!(diff["adj"] + diff["edges"] + diff["props"] + diff["dict"], 0, "{diff:?}");
    assert_eq!(diff["audit"] + diff["orgs"], 2, "{diff:?}");
}

/// What one copy shows of the clustered keys (format version 6): the index rows fall into one
/// group per run, each with a power-of-two number of buckets numbered from 0, and the edge
/// pages into one group numbered 0.. in id order. The rows of every other table stay
/// scattered: no two node pages share even a 4-byte key prefix.
#[test]
fn one_copy_groups_index_rows_by_run_and_orders_edge_pages_and_nothing_else() {
    let (disk, _) = populated();
    {
        // A second commit of a few sources: its entries start a new (small) run or join the
        // newest run in place.
        let db = open_on(&disk).unwrap();
        let org = db.org("acme").unwrap();
        let mut w = org.write().unwrap();
        for i in 0..5 {
            w.upsert_node(NodeInput::new("person").source("crm", format!("late{i}"))).unwrap();
        }
        w.commit().unwrap();
    }
    let all = rows(&disk);
    let mut runs: BTreeMap<Vec<u8>, Vec<u32>> = BTreeMap::new();
    for k in all["index"].keys() {
        let bucket = u32::from_be_bytes(k[20..24].try_into().unwrap());
        runs.entry(k[..20].to_vec()).or_default().push(bucket);
    }
    assert!((1..=8).contains(&runs.len()), "{} index key groups", runs.len());
    for buckets in runs.values() {
        assert!(buckets.len().is_power_of_two(), "a run of {} buckets", buckets.len());
        assert!(buckets.iter().copied().eq(0..buckets.len() as u32), "run buckets {buckets:?}");
    }
    let edges: Vec<&Vec<u8>> = all["edges"].keys().collect();
    assert_eq!(edges.len(), 6, "640 edges in pages of 128");
    for (i, k) in edges.iter().enumerate() {
        assert_eq!(k[..16], edges[0][..16], "edge pages share one prefix");
        assert_eq!(u64::from_be_bytes(k[16..24].try_into().unwrap()), i as u64, "edge pages in id order");
    }
    let mut node_prefixes: Vec<&[u8]> = all["nodes"].keys().map(|k| &k[..12]).collect();
    let n = node_prefixes.len();
    node_prefixes.dedup();
    assert_eq!(node_prefixes.len(), n, "node page keys share a prefix");
    assert!(n >= 19, "300 nodes and 5 more in pages of 16, {n} pages");
}
