//! Idempotent ingest: ingesting the same real activity again — in a later transaction, in the
//! same transaction, or after reopening the database — changes no count, no node, no edge, no
//! neighbor list, and stores no new record.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::backend::SharedBytes;
use crate::common::slices::{self, Commit, Message, Touch};
use crate::common::{collegemsg, git_commits, git_touches, open_on, root, tmp};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use silograph::{Compartment, Db, Direction, EdgeId, NodeId, Org};

const T1: i64 = 1_800_000_000_000;
const T2: i64 = 1_800_000_360_000;
const DATA_TABLES: &[&str] = &["nodes", "props", "edges", "adj", "index", "dict"];

/// The first 2,000 CollegeMsg messages and the first 200 commits with their touches.
fn input() -> (Vec<Message>, Vec<Commit>, Vec<Touch>) {
    let mut messages = collegemsg();
    messages.truncate(2000);
    let mut commits = git_commits();
    commits.truncate(200);
    (messages, commits, git_touches())
}

fn open(disk: &SharedBytes) -> Db {
    open_on(disk).unwrap()
}

/// Ingests the input into `org`, `times` times within one write transaction stamped `now`.
fn ingest(org: &Org, input: &(Vec<Message>, Vec<Commit>, Vec<Touch>), times: usize, now: i64) {
    let mut w = org.write().unwrap();
    w.set_time(now);
    for _ in 0..times {
        slices::ingest_messages(&mut w, &input.0).unwrap();
        slices::ingest_git(&mut w, &input.1, &input.2).unwrap();
    }
    w.commit().unwrap();
}

/// Everything a reader can see of an org: counts, every node with its properties and both
/// neighbor lists, every edge, and the ids its sources resolve to.
#[derive(Debug, PartialEq)]
struct Snapshot {
    counts: (u64, u64),
    nodes: Vec<String>,
    edges: Vec<String>,
    lookups: Vec<Option<NodeId>>,
    edge_lookups: Vec<Option<EdgeId>>,
}

fn snapshot(org: &Org, input: &(Vec<Message>, Vec<Commit>, Vec<Touch>)) -> Snapshot {
    let r = org.read().unwrap();
    let counts = r.counts().unwrap();
    assert_eq!(org.counts().unwrap(), counts);
    let mut nodes = Vec::new();
    for id in 1..=counts.0 + 1 {
        let n = NodeId(id);
        let props: Vec<_> = Compartment::ALL.iter().map(|c| r.node_props(n, *c).unwrap()).collect();
        let out: Vec<_> = r.neighbors(n, Direction::Out).unwrap().map(|x| x.unwrap()).collect();
        let inn: Vec<_> = r.neighbors(n, Direction::In).unwrap().map(|x| x.unwrap()).collect();
        nodes.push(format!("{:?} {props:?} out {out:?} in {inn:?}", r.node(n).unwrap()));
    }
    let edges = (1..=counts.1 + 1).map(|id| format!("{:?}", r.edge(EdgeId(id)).unwrap())).collect();
    let (messages, commits, touches) = input;
    let mut lookups: Vec<Option<NodeId>> = Vec::new();
    let mut edge_lookups: Vec<Option<EdgeId>> = Vec::new();
    for m in messages {
        lookups.push(r.lookup("collegemsg", &m.src.to_string()).unwrap());
        edge_lookups.push(r.lookup_edge("collegemsg", &format!("row-{}", m.row)).unwrap());
    }
    for c in commits {
        lookups.push(r.lookup("git", &c.sha).unwrap());
        lookups.push(r.lookup("git-email-sha256", &c.author).unwrap());
        edge_lookups.push(r.lookup_edge("git", &format!("authored/{}", c.sha)).unwrap());
    }
    for t in touches.iter().take(500) {
        lookups.push(r.lookup("git-path", &t.path).unwrap());
    }
    Snapshot { counts, nodes, edges, lookups, edge_lookups }
}

/// The record keys of the data tables (the org registry and the audit chain excepted).
fn stored_keys(disk: &SharedBytes) -> BTreeMap<&'static str, BTreeSet<Vec<u8>>> {
    let raw = redb::Database::builder().create_with_backend(disk.backend()).unwrap();
    let rtx = raw.begin_read().unwrap();
    let mut out = BTreeMap::new();
    for name in DATA_TABLES {
        let t = rtx.open_table(TableDefinition::<&[u8], &[u8]>::new(name)).unwrap();
        out.insert(*name, t.iter().unwrap().map(|kv| kv.unwrap().0.value().to_vec()).collect());
    }
    out
}

#[test]
fn ingesting_the_same_real_data_twice_changes_nothing() {
    let input = input();
    let disk = SharedBytes::default();
    let db = open(&disk);
    let org = db.create_org("acme").unwrap();
    ingest(&org, &input, 1, T1);
    let first = snapshot(&org, &input);
    // 2,000 messages and 200 commits are all distinct activities: one edge each, plus touches.
    let touched = input.2.iter().filter(|t| input.1.iter().any(|c| c.sha == t.sha)).count() as u64;
    assert_eq!(first.counts.1, 2000 + 200 + touched);
    assert!(first.lookups.iter().all(Option::is_some) && first.edge_lookups.iter().all(Option::is_some));
    drop((org, db));
    let keys_first = stored_keys(&disk);

    let db = open(&disk);
    let org = db.org("acme").unwrap();
    // A later record time: anything the second ingest touched would show a new `updated_at`.
    ingest(&org, &input, 1, T2);
    assert_eq!(snapshot(&org, &input), first, "a second ingest in a later transaction changed the org");
    drop((org, db));
    assert_eq!(stored_keys(&disk), keys_first, "a second ingest stored new records");
}

#[test]
fn ingesting_twice_in_one_transaction_equals_ingesting_once() {
    let input = input();
    let db_once = open(&SharedBytes::default());
    let once = db_once.create_org("acme").unwrap();
    ingest(&once, &input, 1, T1);
    let db_twice = open(&SharedBytes::default());
    let twice = db_twice.create_org("acme").unwrap();
    ingest(&twice, &input, 2, T1);
    assert_eq!(snapshot(&twice, &input), snapshot(&once, &input));
}

#[test]
fn reingesting_after_reopen_keeps_ids_and_neighbors() {
    let input = input();
    let path = tmp("ctx.silo");
    let db = Db::open(&path, root()).unwrap();
    let org = db.create_org("acme").unwrap();
    ingest(&org, &input, 1, T1);
    let first = snapshot(&org, &input);
    drop((org, db));
    // A fresh process: no cached kinds, pages or index entries.
    let db = Db::open(&path, root()).unwrap();
    let org = db.org("acme").unwrap();
    ingest(&org, &input, 1, T2);
    assert_eq!(snapshot(&org, &input), first);
}
