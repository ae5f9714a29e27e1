//! Authenticated state (issue 12): an attacker with write access to the file and no key edits
//! single rows — reverts a changed row to its older version, deletes a new row, puts a removed
//! row back, deletes an unchanged row — and must never get a clean read of a state that never
//! existed; `verify()` must name every edit.
//!
//! The sweep is table-agnostic: it diffs every table of the redb file (whatever tables the
//! format has) between two committed states.
#![cfg(not(feature = "bench-null-cipher"))]

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::{root_key, tmp};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use silograph::{Compartment, Db, Direction, EdgeInput, NeighborFilter, NodeId, NodeInput};

type Rows = BTreeMap<(String, Vec<u8>), Vec<u8>>;

/// Every row of every table of the file.
fn rows(path: &Path) -> Rows {
    let raw = redb::Database::open(path).unwrap();
    let rtx = raw.begin_read().unwrap();
    let mut out = Rows::new();
    let names: Vec<String> = rtx.list_tables().unwrap().map(|t| t.name().to_string()).collect();
    for name in names {
        let t = rtx.open_table(TableDefinition::<&[u8], &[u8]>::new(&name)).unwrap();
        for item in t.iter().unwrap() {
            let (k, v) = item.unwrap();
            out.insert((name.clone(), k.value().to_vec()), v.value().to_vec());
        }
    }
    out
}

/// Applies one row edit through redb directly: `Some(v)` puts `v`, `None` deletes.
fn edit(path: &Path, table: &str, key: &[u8], value: Option<&[u8]>) {
    let raw = redb::Database::open(path).unwrap();
    let wtx = raw.begin_write().unwrap();
    {
        let mut t = wtx.open_table(TableDefinition::<&[u8], &[u8]>::new(table)).unwrap();
        match value {
            Some(v) => {
                t.insert(key, v).unwrap();
            }
            None => {
                t.remove(key).unwrap();
            }
        }
    }
    wtx.commit().unwrap();
}

const ORGS: [&str; 2] = ["acme", "beta"];

fn person(org: &str, i: u64) -> NodeInput {
    NodeInput::new("person").source("crm", format!("{org}-{i}")).prop_in(
        Compartment::Core,
        "email",
        format!("p{i}@{org}"),
    )
}

/// State 1: two orgs with nodes, edges (a hub over two adjacency pages), properties in every
/// compartment and sources on nodes and edges.
fn state1(db: &Db) {
    for org in ORGS {
        let o = db.create_org(org).unwrap();
        let mut w = o.write().unwrap();
        let ids: Vec<NodeId> =
            (0..40).map(|i| w.upsert_node(person(org, i).label("tier", i as i64 % 3)).unwrap()).collect();
        for i in 0..40usize {
            let e = w
                .add_edge(
                    EdgeInput::new(ids[i], ids[(i * 7 + 1) % 40], "emailed").source("mail", format!("{org}-m{i}")),
                )
                .unwrap();
            w.set_edge_prop(e, Compartment::Raw, "subject", format!("hello {i}")).unwrap();
        }
        w.commit().unwrap();
        let mut w = o.write().unwrap();
        for i in 0..520usize {
            w.add_edge(EdgeInput::new(ids[0], ids[1 + i % 39], "cc")).unwrap();
        }
        w.set_node_prop(ids[3], Compartment::Raw, "ssn", "123").unwrap();
        w.commit().unwrap();
    }
}

/// State 2: only `acme` changes — new nodes, edges and a kind; retracted edges; properties
/// set, changed and removed (a property record disappears); a new source on an old node.
fn state2(db: &Db) {
    let o = db.org("acme").unwrap();
    let r = o.read().unwrap();
    let id = |i: u64| r.lookup("crm", &format!("acme-{i}")).unwrap().unwrap();
    let (a0, a1, a2, a3, a5) = (id(0), id(1), id(2), id(3), id(5));
    let edges: Vec<_> = r.neighbors(a0, Direction::Out).unwrap().map(|n| n.unwrap().edge).take(3).collect();
    drop(r);
    let mut w = o.write().unwrap();
    let new: Vec<NodeId> = (40..70).map(|i| w.upsert_node(person("acme", i)).unwrap()).collect();
    for (i, n) in new.iter().enumerate() {
        w.add_edge(EdgeInput::new(*n, a1, "replied").source("mail", format!("acme-r{i}"))).unwrap();
    }
    for i in 0..8 {
        w.add_edge(EdgeInput::new(a0, new[i], "cc")).unwrap();
    }
    for e in edges {
        assert!(w.retract_edge(e).unwrap());
    }
    w.set_node_prop(a2, Compartment::Labels, "tier", 9).unwrap();
    assert!(w.remove_node_prop(a3, Compartment::Raw, "ssn").unwrap());
    w.commit().unwrap();
    let mut w = o.write().unwrap();
    w.upsert_node(NodeInput::new("person").source("crm", "acme-5").source("gmail", "five")).unwrap();
    w.set_node_prop(a5, Compartment::Core, "email", "new@acme").unwrap();
    w.commit().unwrap();
}

/// Everything the API shows of the database, as text; `Err` at the first read that fails.
fn observe(db: &Db) -> silograph::Result<Vec<String>> {
    let mut out = vec![format!("{:?}", db.list_orgs()?)];
    let all = NeighborFilter { known_at: Some(i64::MAX - 1), ..Default::default() };
    for org in ORGS {
        let o = db.org(org)?;
        let r = o.read()?;
        let (nodes, edges) = r.counts()?;
        out.push(format!("{org} counts {nodes} {edges}"));
        for i in 1..=nodes + 2 {
            let id = NodeId(i);
            out.push(format!("node {:?}", r.node(id)?));
            for dir in [Direction::Out, Direction::In] {
                let current: Vec<_> = r.neighbors(id, dir)?.collect::<silograph::Result<_>>()?;
                let every: Vec<_> = r.neighbors_filtered(id, dir, all.clone())?.collect::<silograph::Result<_>>()?;
                out.push(format!("nb {i} {dir:?} {current:?} {every:?} {:?}", r.degree(id, dir)?));
            }
            for c in Compartment::ALL {
                out.push(format!("np {i} {c:?} {:?}", r.node_props(id, c)?));
            }
        }
        for e in 1..=edges + 2 {
            let id = silograph::EdgeId(e);
            out.push(format!("edge {:?}", r.edge(id)?));
            for c in Compartment::ALL {
                out.push(format!("ep {e} {c:?} {:?}", r.edge_props(id, c)?));
            }
        }
        for i in 0..75 {
            out.push(format!("lk {i} {:?}", r.lookup("crm", &format!("{org}-{i}"))?));
            out.push(format!("le {i} {:?}", r.lookup_edge("mail", &format!("{org}-m{i}"))?));
            out.push(format!("lr {i} {:?}", r.lookup_edge("mail", &format!("{org}-r{i}"))?));
        }
        out.push(format!("gmail {:?}", r.lookup("gmail", "five")?));
        for k in ["person", "emailed", "cc", "replied", "absent"] {
            out.push(format!("kind {k} {:?}", r.kind_id(k)?));
        }
        let audit = db.audit(org)?.entries()?;
        out.push(format!(
            "audit {:?}",
            audit.iter().map(|a| (a.seq, a.op.clone(), a.counts.clone())).collect::<Vec<_>>()
        ));
    }
    Ok(out)
}

/// What one edit led to.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum Outcome {
    /// Open or a read failed with an error.
    Error,
    /// Every read answered as in state 2.
    Unchanged,
    /// Some read answered differently from state 2 without an error: a state that never existed.
    Clean,
}

#[test]
fn single_row_edits_between_two_states_never_read_clean_and_verify_names_each() {
    let path = tmp("sweep");
    {
        let db = Db::open(&path, root_key(1)).unwrap();
        state1(&db);
    }
    let s1 = rows(&path);
    {
        let db = Db::open(&path, root_key(1)).unwrap();
        state2(&db);
    }
    let s2 = rows(&path);
    let s2_bytes = std::fs::read(&path).unwrap();
    let truth = {
        let db = Db::open(&path, root_key(1)).unwrap();
        assert!(db.verify().unwrap().is_ok());
        observe(&db).unwrap()
    };
    // Every single-row edit between the two states, then deletions of unchanged rows.
    let mut edits: Vec<(String, Vec<u8>, Option<Vec<u8>>, &str)> = Vec::new();
    for ((t, k), v2) in &s2 {
        match s1.get(&(t.clone(), k.clone())) {
            Some(v1) if v1 != v2 => edits.push((t.clone(), k.clone(), Some(v1.clone()), "reverted")),
            Some(_) => edits.push((t.clone(), k.clone(), None, "unchanged row deleted")),
            None => edits.push((t.clone(), k.clone(), None, "new row deleted")),
        }
    }
    for ((t, k), v1) in &s1 {
        if !s2.contains_key(&(t.clone(), k.clone())) {
            edits.push((t.clone(), k.clone(), Some(v1.clone()), "removed row put back"));
        }
    }
    let reverted = edits.iter().filter(|e| e.3 == "reverted").count();
    assert!(reverted >= 10, "the two states differ in many rows: {reverted} of {} ({} rows)", edits.len(), s2.len());
    let per_table = |r: &Rows| {
        r.keys().fold(BTreeMap::<String, usize>::new(), |mut m, (t, _)| {
            *m.entry(t.clone()).or_default() += 1;
            m
        })
    };
    assert!(
        edits.iter().any(|e| e.3 == "removed row put back"),
        "state 2 removed a record: {:?} {:?}",
        per_table(&s1),
        per_table(&s2)
    );
    let edited = tmp("sweep-edit");
    let mut tally: BTreeMap<(&str, Outcome), usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for (table, key, value, what) in &edits {
        std::fs::write(&edited, &s2_bytes).unwrap();
        edit(&edited, table, key, value.as_deref());
        let (outcome, verified) = match Db::open(&edited, root_key(1)) {
            Err(_) => (Outcome::Error, None),
            Ok(db) => {
                let o = match observe(&db) {
                    Err(_) => Outcome::Error,
                    Ok(seen) if seen == truth => Outcome::Unchanged,
                    Ok(_) => Outcome::Clean,
                };
                (o, Some(db.verify()))
            }
        };
        *tally.entry((what, outcome)).or_default() += 1;
        let named = match &verified {
            None => true,
            Some(Ok(report)) => !report.is_ok(),
            // verify() itself refusing (e.g. an org that fails to open) names the problem too.
            Some(Err(_)) => true,
        };
        if outcome == Outcome::Clean || !named {
            failures.push(format!("{what} {table}/{}: {outcome:?}, verify {verified:?}", hex::encode(key)));
        }
    }
    eprintln!("{} single-row edits: {tally:?}", edits.len());
    assert!(
        failures.is_empty(),
        "{} of {} edits went undetected:\n{}",
        failures.len(),
        edits.len(),
        failures.join("\n")
    );
}

fn registry_error(r: silograph::Result<Db>) -> bool {
    matches!(r, Err(silograph::Error::Corrupt { at: silograph::CorruptAt::Registry, .. }))
}

#[test]
fn a_registry_row_removed_restored_or_swapped_is_refused_at_open() {
    let path = tmp("registry");
    {
        let db = Db::open(&path, root_key(1)).unwrap();
        state1(&db);
        db.create_org("gamma").unwrap();
    }
    let before = rows(&path);
    {
        let db = Db::open(&path, root_key(1)).unwrap();
        state2(&db);
        db.delete_org("gamma").unwrap();
    }
    let after = rows(&path);
    let orgs_of = |r: &Rows| -> Vec<(Vec<u8>, Vec<u8>)> {
        r.iter().filter(|((t, _), _)| t == "orgs").map(|((_, k), v)| (k.clone(), v.clone())).collect()
    };
    let (old, new) = (orgs_of(&before), orgs_of(&after));
    assert_eq!((old.len(), new.len()), (3, 2));
    let bytes = std::fs::read(&path).unwrap();
    let edited = tmp("registry-edit");
    let mut cases: Vec<(&str, Vec<(Vec<u8>, Option<Vec<u8>>)>)> = Vec::new();
    // Removed: each live org's row.
    for (k, _) in &new {
        cases.push(("removed", vec![(k.clone(), None)]));
    }
    // Restored: the deleted org's row from before the delete; a live org's older row.
    let gamma = old.iter().find(|(k, _)| !new.iter().any(|(n, _)| n == k)).unwrap().clone();
    cases.push(("deleted org restored", vec![(gamma.0.clone(), Some(gamma.1.clone()))]));
    for (k, v) in &old {
        if new.iter().any(|(n, nv)| n == k && nv != v) {
            cases.push(("older row restored", vec![(k.clone(), Some(v.clone()))]));
        }
    }
    // Swapped: the two live orgs' rows exchanged.
    cases.push((
        "swapped",
        vec![(new[0].0.clone(), Some(new[1].1.clone())), (new[1].0.clone(), Some(new[0].1.clone()))],
    ));
    assert!(cases.iter().any(|c| c.0 == "older row restored"));
    for (what, edits) in &cases {
        std::fs::write(&edited, &bytes).unwrap();
        for (k, v) in edits {
            edit(&edited, "orgs", k, v.as_deref());
        }
        assert!(registry_error(Db::open(&edited, root_key(1))), "{what}: the registry must not open");
    }
    // The unedited file opens.
    std::fs::write(&edited, &bytes).unwrap();
    assert!(Db::open(&edited, root_key(1)).is_ok());
}

#[test]
fn whole_file_rollback_is_refused_with_an_anchor_and_undetected_without() {
    let path = tmp("anchor");
    let old_copy;
    let anchor;
    {
        let db = Db::open(&path, root_key(1)).unwrap();
        state1(&db);
        let a1 = db.anchor().unwrap();
        drop(db);
        old_copy = std::fs::read(&path).unwrap();
        let db = Db::open(&path, root_key(1)).unwrap();
        state2(&db);
        anchor = db.anchor().unwrap();
        assert!(anchor.counter() > a1.counter(), "every commit advances the counter");
        // The anchor round-trips through bytes, and an anchor of an older state opens a newer file.
        assert_eq!(silograph::Anchor::from_bytes(&anchor.to_bytes()).unwrap(), anchor);
        drop(db);
        assert!(Db::builder().expect_anchor(a1).open(&path, root_key(1)).is_ok());
    }
    assert!(Db::builder().expect_anchor(anchor.clone()).open(&path, root_key(1)).is_ok());
    // The whole file put back from the older copy: consistent in itself, so without the anchor
    // it opens and reads (documented: undetectable from inside the file) ...
    std::fs::write(&path, &old_copy).unwrap();
    let db = Db::open(&path, root_key(1)).unwrap();
    assert!(db.verify().unwrap().is_ok());
    drop(db);
    // ... and with the host's anchor it is refused, before anything is read.
    match Db::builder().expect_anchor(anchor.clone()).open(&path, root_key(1)) {
        Err(silograph::Error::RolledBack { file, anchor: a }) => assert!(file < a),
        other => panic!("a rolled-back file must be RolledBack, got {other:?}"),
    }
    // An anchor of another database, or an altered one, is refused as such.
    let other = tmp("anchor-other");
    let foreign = Db::open(&other, root_key(1)).unwrap().anchor().unwrap();
    let bad = |r: silograph::Result<Db>| matches!(r, Err(silograph::Error::InvalidInput(e)) if *e.kind() == silograph::InputKind::Anchor);
    assert!(bad(Db::builder().expect_anchor(foreign).open(&path, root_key(1))));
    let mut altered = anchor.to_bytes();
    altered[20] ^= 1;
    assert!(bad(Db::builder()
        .expect_anchor(silograph::Anchor::from_bytes(&altered).unwrap())
        .open(&path, root_key(1))));
    assert!(silograph::Anchor::from_bytes(&altered[1..]).is_err());
}

#[test]
fn the_state_tree_grows_at_the_top_across_commits_and_every_record_still_checks() {
    // Node ids past 64 and 4096 make the adjacency and property trees one and two levels deeper
    // in later commits (the old top becomes child 0 of new levels).
    let path = tmp("grow");
    let db = Db::open(&path, root_key(1)).unwrap();
    let o = db.create_org("acme").unwrap();
    let mut prev = None;
    for batch in 0..6u64 {
        let mut w = o.write().unwrap();
        for i in batch * 900..(batch + 1) * 900 {
            let n = w.upsert_node(person("acme", i)).unwrap();
            if let Some(p) = prev {
                w.add_edge(EdgeInput::new(p, n, "next")).unwrap();
            }
            prev = Some(n);
        }
        w.commit().unwrap();
        let report = db.verify().unwrap();
        assert!(report.is_ok(), "after batch {batch}: {:?}", report.corrupt.iter().take(3).collect::<Vec<_>>());
    }
    drop(o);
    drop(db);
    let db = Db::open(&path, root_key(1)).unwrap();
    let r = db.org("acme").unwrap().read().unwrap();
    for i in [0u64, 63, 64, 4095, 4096, 5399] {
        let id = r.lookup("crm", &format!("acme-{i}")).unwrap().unwrap();
        assert_eq!(r.node_props(id, Compartment::Core).unwrap().len(), 1);
        let nb = r.neighbors(id, Direction::Both).unwrap().count();
        assert!(nb >= 1, "node {i} has its chain neighbours");
    }
}

/// Index runs (format version 5): commits of different sizes give runs that merge, and a
/// bucket row of a run merged away put back (since format version 7 a merge writes its run in
/// a fresh slot, so every bucket it absorbs is removed, none rewritten in place), or a bucket a
/// later commit rewrote in place reverted to its version before, never reads clean (every lookup
/// answers as before or fails) and `verify()` names it.
#[test]
fn index_runs_merge_and_a_merged_away_or_reverted_bucket_never_reads_clean() {
    let path = tmp("runs");
    let sizes = [100u64, 30, 200, 2];
    let lookups = |db: &Db| -> silograph::Result<Vec<Option<NodeId>>> {
        let r = db.org("acme")?.read()?;
        (0..sizes.iter().sum::<u64>() + 5).map(|i| r.lookup("crm", &format!("acme-{i}"))).collect()
    };
    let index_rows = |rows: &Rows| -> BTreeMap<Vec<u8>, Vec<u8>> {
        rows.iter().filter(|((t, _), _)| t == "index").map(|((_, k), v)| (k.clone(), v.clone())).collect()
    };
    let mut states = Vec::new();
    let mut next = 0;
    for n in sizes {
        {
            let db = Db::open(&path, root_key(1)).unwrap();
            let o = if next == 0 { db.create_org("acme") } else { db.org("acme") }.unwrap();
            let mut w = o.write().unwrap();
            for i in next..next + n {
                w.upsert_node(person("acme", i)).unwrap();
            }
            next += n;
            w.commit().unwrap();
            assert!(db.verify().unwrap().is_ok(), "after a commit of {n} sources");
            assert!(lookups(&db).unwrap().iter().take(next as usize).all(Option::is_some));
        }
        states.push(index_rows(&rows(&path)));
    }
    // 101 entries (100 sources and a kind: 4 buckets), then 30 in a run of their own (1 bucket),
    // then 200 that absorb both into one run of 331 (16 buckets) in a slot neither held (format
    // version 7): all five buckets of the absorbed runs go, none is overwritten.
    // Then 2 go into that run in place: the buckets they fall in are rewritten under their keys.
    let [first, second, merged, last] = [&states[0], &states[1], &states[2], &states[3]];
    assert_eq!((first.len(), second.len(), merged.len(), last.len()), (4, 5, 16, 16), "bucket rows per state");
    let removed: Vec<_> = second.iter().filter(|(k, _)| !merged.contains_key(*k)).collect();
    let overwritten = second.iter().filter(|(k, v)| merged.get(*k).is_some_and(|l| l != *v)).count();
    assert_eq!((removed.len(), overwritten), (5, 0), "the merge removed both absorbed runs and wrote a new one");
    assert!(removed.iter().all(|(k, _)| !last.contains_key(*k)));
    let reverted: Vec<_> = merged.iter().filter(|(k, v)| last.get(*k).is_some_and(|l| l != *v)).collect();
    assert!((1..=2).contains(&reverted.len()), "{} buckets rewritten in place", reverted.len());
    let truth = lookups(&Db::open(&path, root_key(1)).unwrap()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let edited = tmp("runs-edit");
    for (what, (key, value)) in
        removed.iter().map(|r| ("put back", *r)).chain(reverted.iter().map(|r| ("reverted", *r)))
    {
        std::fs::write(&edited, &bytes).unwrap();
        edit(&edited, "index", key, Some(value));
        let db = Db::open(&edited, root_key(1)).unwrap();
        match lookups(&db) {
            Ok(seen) => assert_eq!(seen, truth, "{what} bucket read clean with other answers"),
            Err(e) => assert!(matches!(e, silograph::Error::Corrupt { .. }), "{what}: {e:?}"),
        }
        assert!(!db.verify().unwrap().is_ok(), "verify() names the {what} bucket {}", hex::encode(key));
    }
}

/// A walk asks the state tree whether a (node, direction) has a page 0 and, when it does, reads
/// that page without opening the node page (the miss path of a walk over hubs). With every
/// node-page row deleted, a hub's neighbors still read — exactly, from its authenticated
/// adjacency page — while its record and the neighbors of a small node (inline in the node
/// page) read `Corrupt`; the hub's page 0 deleted as well reads `Corrupt`, never as no
/// neighbors.
#[test]
fn a_hubs_neighbors_come_from_its_page_through_the_state_tree_and_a_missing_page_is_corrupt() {
    let path = tmp("hub");
    {
        let db = Db::open(&path, root_key(1)).unwrap();
        let o = db.create_org("acme").unwrap();
        let mut w = o.write().unwrap();
        let ids: Vec<NodeId> = (0..21).map(|i| w.upsert_node(person("acme", i)).unwrap()).collect();
        for n in &ids[1..] {
            w.add_edge(EdgeInput::new(ids[0], *n, "cc")).unwrap();
        }
        w.add_edge(EdgeInput::new(ids[1], ids[2], "cc")).unwrap();
        w.commit().unwrap();
    }
    let before = rows(&path);
    let open = || {
        let db = Db::builder().cache_size(0).open(&path, root_key(1)).unwrap();
        let r = db.org("acme").unwrap().read().unwrap();
        (db, r)
    };
    let (db, r) = open();
    let hub_pages: Vec<Vec<u8>> = before.keys().filter(|(t, _)| t == "adj").map(|(_, k)| k.clone()).collect();
    assert_eq!(hub_pages.len(), 1, "the hub (20 out-edges) has one adjacency page; every other list is inline");
    let want: Vec<NodeId> = r.neighbors(NodeId(1), Direction::Out).unwrap().map(|n| n.unwrap().node).collect();
    assert_eq!(want, (2..=21).map(NodeId).collect::<Vec<_>>());
    drop((r, db));

    for (_, key) in before.keys().filter(|(t, _)| t == "nodes") {
        edit(&path, "nodes", key, None);
    }
    let (db, r) = open();
    let got: Vec<NodeId> = r.neighbors(NodeId(1), Direction::Out).unwrap().map(|n| n.unwrap().node).collect();
    assert_eq!(got, want, "the hub's neighbors need no node page");
    assert!(matches!(r.node(NodeId(1)), Err(silograph::Error::Corrupt { .. })));
    let small = r.neighbors(NodeId(2), Direction::Out).unwrap().next();
    assert!(matches!(small, Some(Err(silograph::Error::Corrupt { .. }))), "{small:?}");
    drop((r, db));

    edit(&path, "adj", &hub_pages[0], None);
    let (_db, r) = open();
    let hub = r.neighbors(NodeId(1), Direction::Out).unwrap().next();
    assert!(matches!(hub, Some(Err(silograph::Error::Corrupt { .. }))), "{hub:?}");
}
