//! Bulk loading: the same graph as ordinary writes, whatever the memory budget, interoperating
//! with write transactions before and after, atomic, and visible through the page cache.

use std::collections::HashMap;
use std::time::Instant;

use crate::common::{mem_db, root, tmp};
use silograph::fuzzing::PAGE_CAPACITY;
use silograph::{BulkLoader, Db, Direction, EdgeId, EdgeInput, NeighborFilter, NodeId, NodeInput, Org};

/// `(from, to, kind, valid_from, valid_to)` by node index.
type Edge = (u64, u64, &'static str, Option<i64>, Option<i64>);

/// A deterministic pseudo-random edge list with a hub (node 0) whose degree spans several pages;
/// with `timed`, three edges in four have a bounded valid time on one or both sides.
fn edge_list(nodes: u64, edges: usize, seed: u64, timed: bool) -> Vec<Edge> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..edges)
        .map(|i| {
            let kind = ["emailed", "owns", "met"][(next() % 3) as usize];
            let t = (next() % 1000) as i64;
            let (vf, vt) = match i % 4 {
                _ if !timed => (None, None),
                0 => (Some(t), None),
                1 => (None, Some(t)),
                2 => (Some(t), Some(t + 1 + i as i64)),
                _ => (None, None),
            };
            let from = if i % 3 == 0 { 0 } else { next() % nodes };
            (from, next() % nodes, kind, vf, vt)
        })
        .collect()
}

fn node_input(i: u64) -> NodeInput {
    NodeInput::new("n").source("t", i.to_string())
}

fn bulk_load(org: &Org, nodes: u64, edges: &[Edge], budget: usize) -> silograph::BulkStats {
    let mut bulk: BulkLoader = org.bulk_load().unwrap().memory_budget(budget);
    bulk.set_time(1000);
    let ids: Vec<NodeId> = (0..nodes).map(|i| bulk.add_node(node_input(i)).unwrap()).collect();
    for &(a, b, k, vf, vt) in edges {
        bulk.add_edge_valid(ids[a as usize], ids[b as usize], k, vf, vt).unwrap();
    }
    bulk.finish().unwrap()
}

fn write_load(org: &Org, nodes: u64, edges: &[Edge]) {
    let mut w = org.write().unwrap();
    w.set_time(1000);
    let ids: Vec<NodeId> = (0..nodes).map(|i| w.upsert_node(node_input(i)).unwrap()).collect();
    for &(a, b, k, vf, vt) in edges {
        let mut input = EdgeInput::new(ids[a as usize], ids[b as usize], k);
        if let Some(t) = vf {
            input = input.valid_from(t);
        }
        if let Some(t) = vt {
            input = input.valid_to(t);
        }
        w.add_edge(input).unwrap();
    }
    w.commit().unwrap();
}

type Adjacency = Vec<(NodeId, EdgeId, String, Option<i64>, Option<i64>, Option<i64>)>;
/// Adjacency per (node, is-out), (node count, edge count), degrees (out, in) per node.
type Snapshot = (HashMap<(NodeId, bool), Adjacency>, (u64, u64), HashMap<NodeId, (u64, u64)>);

/// Everything a reader can see of the graph, per node and direction, in stored order.
fn snapshot(org: &Org) -> Snapshot {
    let r = org.read().unwrap();
    let (n, e) = r.counts().unwrap();
    let mut adj = HashMap::new();
    let mut degrees = HashMap::new();
    for id in 1..=n {
        let node = NodeId(id);
        for (dir, out) in [(Direction::Out, true), (Direction::In, false)] {
            // Every edge is recorded at 1000 and retractions happen at 2000: this sees them all.
            let everything = NeighborFilter { known_at: Some(1500), ..NeighborFilter::default() };
            let list: Adjacency = r
                .neighbors_filtered(node, dir, everything)
                .unwrap()
                .map(|x| {
                    let x = x.unwrap();
                    (x.node, x.edge, r.kind_name(x.kind).unwrap().unwrap(), x.valid_from, x.valid_to, x.retracted_at)
                })
                .collect();
            adj.insert((node, out), list);
        }
        degrees.insert(
            node,
            (r.degree(node, Direction::Out).unwrap().unwrap(), r.degree(node, Direction::In).unwrap().unwrap()),
        );
    }
    (adj, (n, e), degrees)
}

#[test]
fn bulk_load_stores_the_same_graph_as_write_transactions() {
    let edges = edge_list(200, 3000, 7, true);
    let db = mem_db();
    let (a, b) = (db.create_org("bulk").unwrap(), db.create_org("write").unwrap());
    let stats = bulk_load(&a, 200, &edges, usize::MAX);
    write_load(&b, 200, &edges);
    assert_eq!((stats.nodes, stats.edges, stats.flushes), (200, 3000, 1));
    assert_eq!(snapshot(&a), snapshot(&b));
    // The hub spans several pages.
    let r = a.read().unwrap();
    assert!(r.degree(NodeId(1), Direction::Out).unwrap().unwrap() > PAGE_CAPACITY as u64);
}

/// Loads the same edges with a 10 kB budget and an unbounded one; asserts both stored the same
/// graph and that the small budget flushed more than `min_flushes` times.
fn assert_budget_does_not_change_the_graph(nodes: u64, edges: usize, seed: u64, min_flushes: u64) {
    let edges = edge_list(nodes, edges, seed, true);
    let db = mem_db();
    let (small, large) = (db.create_org("small").unwrap(), db.create_org("large").unwrap());
    let s = bulk_load(&small, nodes, &edges, 10_000);
    let l = bulk_load(&large, nodes, &edges, usize::MAX);
    assert!(s.flushes > min_flushes, "only {} flushes", s.flushes);
    assert_eq!(l.flushes, 1);
    assert_eq!(snapshot(&small), snapshot(&large));
}

#[test]
fn small_memory_budget_gives_the_same_graph_as_a_large_one() {
    // About 30 edges per flush: many flushes, each appending to partly filled tail pages.
    assert_budget_does_not_change_the_graph(150, 4000, 11, 50);
}

#[test]
fn small_flushes_over_many_nodes_give_the_same_graph_as_one_flush() {
    // Few edges per flush over many node ids: grouping falls back from the counting sort
    // (one bucket per node) to a comparison sort.
    assert_budget_does_not_change_the_graph(1500, 2000, 13, 20);
}

#[test]
fn tail_pages_kept_between_flushes_are_written_once() {
    // A budget of 5 flushes over the load (128 bytes an edge, plus the kept tails) whose tail
    // pages (about 120 lists of up to a few hundred bytes) never pass half of it: every partly
    // filled tail stays in memory from flush to flush, and a page 0 whose page count grows after it was written is rewritten once, at
    // finish. So the load writes the pages one flush writes, plus one page 0 per list of more
    // than one page, and the graph is the same.
    let edges = edge_list(60, 6000, 19, true);
    let db = mem_db();
    let (many, one) = (db.create_org("many").unwrap(), db.create_org("one").unwrap());
    let m = bulk_load(&many, 60, &edges, 200_000);
    let o = bulk_load(&one, 60, &edges, usize::MAX);
    assert!(m.flushes >= 4, "only {} flushes", m.flushes);
    assert_eq!(o.flushes, 1);
    let (_, _, degrees) = snapshot(&one);
    let multi_page = degrees.values().flat_map(|&(out, inn)| [out, inn]).filter(|&d| d > PAGE_CAPACITY as u64).count();
    assert!(multi_page >= 1, "the hub's out-list spans pages");
    assert_eq!(m.pages_written, o.pages_written + multi_page as u64, "a page of the load is written once");
    assert_eq!(snapshot(&many), snapshot(&one));
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn every_budget_between_spilling_each_flush_and_never_gives_the_same_graph() {
    // Budgets from "tails written out at every flush" to "tails kept to the end", over a graph
    // with a hub (several pages), lists that move from inline to pages mid-load, and small lists.
    let edges = edge_list(90, 5000, 23, true);
    let db = mem_db();
    let one = db.create_org("one").unwrap();
    let o = bulk_load(&one, 90, &edges, usize::MAX);
    let expected = snapshot(&one);
    for (i, budget) in [1_500usize, 4_000, 9_000, 20_000, 45_000, 100_000, 400_000].into_iter().enumerate() {
        let org = db.create_org(&format!("b{i}")).unwrap();
        let s = bulk_load(&org, 90, &edges, budget);
        assert!(s.flushes > 1, "budget {budget}: one flush");
        assert!(s.pages_written >= o.pages_written, "budget {budget}: fewer pages than one flush writes");
        assert_eq!(snapshot(&org), expected, "budget {budget}");
    }
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn bulk_load_interoperates_with_writes_before_and_after() {
    let db = mem_db();
    let (a, b) = (db.create_org("mixed").unwrap(), db.create_org("plain").unwrap());
    let before = edge_list(100, 700, 3, true);
    // Loaded by source below, which takes no valid times.
    let during = edge_list(100, 900, 5, false);
    let after = edge_list(100, 300, 9, true);
    for org in [&a, &b] {
        write_load(org, 100, &before);
    }
    // Warm the page cache of `a` so a stale cached page would show after the load.
    let warm = a.read().unwrap().traverse(NodeId(1)).direction(Direction::Both).run().unwrap();
    assert!(!warm.is_empty());

    let mut bulk = a.bulk_load().unwrap().memory_budget(20_000);
    bulk.set_time(1000);
    for (x, y, k, _, _) in &during {
        let (x, y) = (x.to_string(), y.to_string());
        bulk.add_edge_by_source(("t", &x), ("t", &y), k).unwrap();
    }
    // Re-adding a known node through the loader is an idempotent upsert.
    assert_eq!(bulk.add_node(node_input(0)).unwrap(), NodeId(1));
    bulk.finish().unwrap();
    write_load(&b, 100, &during);

    for org in [&a, &b] {
        write_load(org, 100, &after);
        // Retract an edge the bulk load added (the first during-edge is edge 701).
        let mut w = org.write().unwrap();
        w.set_time(2000);
        assert!(w.retract_edge(EdgeId(701)).unwrap());
        w.commit().unwrap();
    }
    assert_eq!(snapshot(&a), snapshot(&b));
    let r = a.read().unwrap();
    assert_eq!(r.counts().unwrap(), (100, 1900));
    assert_eq!(r.edge(EdgeId(701)).unwrap().unwrap().retracted_at, Some(2000));
}

#[test]
fn bulk_load_is_one_audited_write_counting_its_nodes_and_edges() {
    let db = mem_db();
    let org = db.create_org("o").unwrap();
    let before = org.audit().entries().unwrap().len();
    let stats = bulk_load(&org, 50, &edge_list(50, 700, 17, true), 5_000);
    assert!(stats.flushes > 1);
    let entries = org.audit().entries().unwrap();
    assert_eq!(entries.len(), before + 1, "one commit, one audit entry");
    let last = entries.last().unwrap();
    assert_eq!(last.op, "write");
    let count = |name: &str| last.counts.iter().find(|(n, _)| n == name).map(|(_, c)| *c);
    assert_eq!(count("edges_added"), Some(700));
    assert_eq!(count("nodes_created"), Some(50));
}

#[test]
fn dropped_bulk_loader_writes_nothing() {
    let db = mem_db();
    let org = db.create_org("o").unwrap();
    {
        let mut bulk = org.bulk_load().unwrap().memory_budget(1000);
        let ids: Vec<NodeId> = (0..10).map(|i| bulk.add_node(node_input(i)).unwrap()).collect();
        for i in 0..100 {
            bulk.add_edge(ids[i % 10], ids[(i * 7) % 10], "x").unwrap();
        }
        // Dropped without finish, after several flushes into the transaction.
    }
    assert_eq!(org.counts().unwrap(), (0, 0));
    assert_eq!(org.read().unwrap().lookup("t", "0").unwrap(), None);
}

#[test]
fn bulk_edge_to_unknown_node_or_with_empty_validity_is_rejected() {
    let db = mem_db();
    let org = db.create_org("o").unwrap();
    let mut bulk = org.bulk_load().unwrap();
    let a = bulk.add_node(node_input(1)).unwrap();
    assert!(matches!(bulk.add_edge(a, NodeId(99), "x"), Err(silograph::Error::InvalidInput(_))));
    assert!(matches!(bulk.add_edge_by_source(("t", "1"), ("t", "nope"), "x"), Err(silograph::Error::InvalidInput(_))));
    assert!(matches!(bulk.add_edge_valid(a, a, "x", Some(5), Some(5)), Err(silograph::Error::InvalidInput(_))));
    bulk.add_edge_valid(a, a, "x", Some(5), Some(6)).unwrap();
    assert_eq!(bulk.finish().unwrap().edges, 1);
    let r = org.read().unwrap();
    assert_eq!(r.traverse(a).valid_at(5).run().unwrap().len(), 1);
    assert_eq!(r.neighbors(a, Direction::Both).unwrap().count(), 2);
}

/// Throughput on an Enron-sized synthetic graph (36,692 nodes, 367,662 edges) into a real file.
/// `cargo test --release --test it bulk:: -- --ignored --nocapture`; set `SILOGRAPH_ENRON=path/to/enron.tsv`
/// to load the real SNAP file instead.
#[test]
#[ignore]
fn bulk_load_throughput() {
    let edges: Vec<(u64, u64)> = match std::env::var("SILOGRAPH_ENRON") {
        Ok(p) => std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| {
                let mut it = l.split('\t').map(|t| t.parse::<u64>().unwrap());
                (it.next().unwrap(), it.next().unwrap())
            })
            .collect(),
        Err(_) => edge_list(36_692, 367_662, 1, false).into_iter().map(|(a, b, ..)| (a, b)).collect(),
    };
    let max = edges.iter().map(|(a, b)| *a.max(b)).max().unwrap_or(0);
    let path = tmp("bulk-bench.silo");
    let db = Db::open(&path, root()).unwrap();
    let org = db.create_org("enron").unwrap();
    let t0 = Instant::now();
    let mut bulk = org.bulk_load().unwrap();
    let ids: Vec<NodeId> = (0..=max).map(|i| bulk.add_node(node_input(i)).unwrap()).collect();
    let t1 = Instant::now();
    for (a, b) in &edges {
        bulk.add_edge(ids[*a as usize], ids[*b as usize], "emailed").unwrap();
    }
    let stats = bulk.finish().unwrap();
    let t2 = Instant::now();
    let secs = (t2 - t0).as_secs_f64();
    println!(
        "bulk: {} nodes in {:.3}s, {} edges in {:.3}s total ({:.0} edges/s end to end), {} pages, {} flushes, file {:.1} MB",
        stats.nodes,
        (t1 - t0).as_secs_f64(),
        stats.edges,
        secs,
        stats.edges as f64 / secs,
        stats.pages_written,
        stats.flushes,
        std::fs::metadata(&path).unwrap().len() as f64 / 1e6
    );
}

/// Inline adjacency (a node record keeps up to `INLINE_MAX` entries a direction; the next one
/// moves them all to page 0): the threshold is crossed by a bulk load and by a write
/// transaction, in both orders, with a retraction of an entry written while it was inline; the
/// walk is the same through the cache, without it, and after reopening, and only the nodes past
/// the threshold have adjacency rows.
#[test]
fn inline_adjacency_moves_to_a_page_past_the_threshold_in_bulk_and_write_transactions() {
    use silograph::fuzzing::INLINE_MAX;
    let path = tmp("inline");
    let inline = INLINE_MAX as u64;
    let (hub, hub2, leaf);
    {
        let db = Db::open(&path, root()).unwrap();
        let org = db.create_org("acme").unwrap();
        let mut bulk = org.bulk_load().unwrap();
        hub = bulk.add_node(NodeInput::new("p").source("s", "hub")).unwrap();
        hub2 = bulk.add_node(NodeInput::new("p").source("s", "hub2")).unwrap();
        leaf = bulk.add_node(NodeInput::new("p").source("s", "leaf")).unwrap();
        let mut others = Vec::new();
        for i in 0..inline + 4 {
            others.push(bulk.add_node(NodeInput::new("p").source("s", format!("o{i}"))).unwrap());
        }
        // hub: INLINE_MAX - 2 inline by the bulk load; hub2: INLINE_MAX inline.
        for &o in &others[..INLINE_MAX - 2] {
            bulk.add_edge(hub, o, "to").unwrap();
        }
        for &o in &others[..INLINE_MAX] {
            bulk.add_edge(hub2, o, "to").unwrap();
        }
        bulk.add_edge(leaf, hub, "to").unwrap();
        bulk.finish().unwrap();
        let r = org.read().unwrap();
        assert_eq!(r.neighbors(hub, Direction::Out).unwrap().count() as u64, inline - 2);
        drop(r);
        // A write transaction takes hub from inline past the threshold, and retracts an entry
        // written inline; a second bulk load takes hub2 past it.
        let mut w = org.write().unwrap();
        let retracted = w.add_edge(EdgeInput::new(hub, others[0], "to")).unwrap();
        for &o in &others[..5] {
            w.add_edge(EdgeInput::new(hub, o, "to")).unwrap();
        }
        w.commit().unwrap();
        let mut w = org.write().unwrap();
        assert!(w.retract_edge(EdgeId(1)).unwrap());
        assert!(w.retract_edge(retracted).unwrap());
        w.commit().unwrap();
        let mut bulk = org.bulk_load().unwrap();
        for &o in &others[..3] {
            bulk.add_edge(hub2, o, "to").unwrap();
        }
        bulk.finish().unwrap();
        // And back through a write transaction onto hub2's page.
        let mut w = org.write().unwrap();
        w.add_edge(EdgeInput::new(hub2, leaf, "to")).unwrap();
        w.commit().unwrap();
        let r = org.read().unwrap();
        // hub: 14 + 6 entries, 2 retracted; hub2: 16 + 3 + 1; leaf: 1 out, 1 in.
        assert_eq!(edges(&r, hub, Direction::Out).len(), INLINE_MAX + 2);
        assert_eq!(r.degree(hub, Direction::Out).unwrap(), Some(inline + 4));
        assert_eq!(edges(&r, hub2, Direction::Out).len(), INLINE_MAX + 4);
        assert_eq!(edges(&r, hub2, Direction::Out).last(), Some(&leaf));
        assert_eq!(edges(&r, leaf, Direction::Out), vec![hub]);
        assert_eq!(edges(&r, leaf, Direction::In), vec![hub2]);
        assert!(db.verify().unwrap().is_ok());
    }
    // Only hub and hub2 (out) have an adjacency row; everything else is inline.
    {
        let raw = redb::Database::open(&*path).unwrap();
        let rtx = redb::ReadableDatabase::begin_read(&raw).unwrap();
        let t = rtx.open_table(redb::TableDefinition::<&[u8], &[u8]>::new("adj")).unwrap();
        assert_eq!(redb::ReadableTableMetadata::len(&t).unwrap(), 2);
    }
    for cache in [0, 1 << 20] {
        let db = Db::builder().cache_size(cache).open(&path, root()).unwrap();
        let r = db.org("acme").unwrap().read().unwrap();
        assert_eq!(edges(&r, hub, Direction::Out).len(), INLINE_MAX + 2);
        assert_eq!(edges(&r, hub2, Direction::Out).len(), INLINE_MAX + 4);
        assert_eq!(edges(&r, leaf, Direction::In), vec![hub2]);
        // leaf, hub, and the 14 nodes hub points to.
        assert_eq!(r.traverse(leaf).max_depth(2).run().unwrap().len(), 2 + INLINE_MAX - 2);
    }
}

fn edges(r: &silograph::ReadTxn, n: NodeId, d: Direction) -> Vec<NodeId> {
    r.neighbors(n, d).unwrap().map(|x| x.unwrap().node).collect()
}
