//! Traversal engine: BFS, shortest paths and subgraphs, checked against plain in-memory oracles,
//! the published LDBC Graphalytics BFS / SSSP answers, and a corrupted file.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path as FsPath;

use crate::common::{mem_db, root, tmp};
use proptest::prelude::*;
use silograph::{Db, Direction, EdgeId, EdgeInput, Error, NodeId, NodeInput, Org, PathOptions};

const LDBC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/ldbc");

fn mem_org() -> (Db, Org) {
    let db = mem_db();
    let org = db.create_org("t").unwrap();
    (db, org)
}

// ---------------------------------------------------------------------------------------------
// The oracle: a plain edge list and a textbook BFS over it.

#[derive(Debug, Clone)]
struct OEdge {
    id: EdgeId,
    from: usize,
    to: usize,
    kind: &'static str,
    valid_from: i64,
    valid_to: i64,
    recorded_at: i64,
    retracted_at: Option<i64>,
}

#[derive(Debug, Clone, Default)]
struct Query {
    kinds: Option<Vec<&'static str>>,
    valid_at: Option<i64>,
    valid_between: Option<(i64, i64)>,
    known_at: Option<i64>,
}

impl Query {
    fn accepts(&self, e: &OEdge) -> bool {
        if let Some(k) = &self.kinds {
            if !k.contains(&e.kind) {
                return false;
            }
        }
        if let Some(t) = self.valid_at {
            if !(e.valid_from <= t && t < e.valid_to) {
                return false;
            }
        }
        if let Some((a, b)) = self.valid_between {
            if !(e.valid_from < b && a < e.valid_to) {
                return false;
            }
        }
        match self.known_at {
            Some(r) => e.recorded_at <= r && e.retracted_at.is_none_or(|x| r < x),
            None => e.retracted_at.is_none(),
        }
    }
}

/// Neighbors of `u` following `dir`.
fn oracle_steps(edges: &[OEdge], q: &Query, u: usize, dir: Direction) -> Vec<usize> {
    let mut out = Vec::new();
    for e in edges.iter().filter(|e| q.accepts(e)) {
        if matches!(dir, Direction::Out | Direction::Both) && e.from == u {
            out.push(e.to);
        }
        if matches!(dir, Direction::In | Direction::Both) && e.to == u {
            out.push(e.from);
        }
    }
    out
}

fn oracle_bfs(edges: &[OEdge], q: &Query, starts: &[usize], dir: Direction, max_depth: u32) -> HashMap<usize, u32> {
    let mut depth = HashMap::new();
    let mut queue = VecDeque::new();
    for &s in starts {
        if let std::collections::hash_map::Entry::Vacant(v) = depth.entry(s) {
            v.insert(0);
            queue.push_back(s);
        }
    }
    while let Some(u) = queue.pop_front() {
        let d = depth[&u];
        if d >= max_depth {
            continue;
        }
        for v in oracle_steps(edges, q, u, dir) {
            if let std::collections::hash_map::Entry::Vacant(slot) = depth.entry(v) {
                slot.insert(d + 1);
                queue.push_back(v);
            }
        }
    }
    depth
}

// ---------------------------------------------------------------------------------------------
// Random bi-temporal graphs.

const KINDS: [&str; 3] = ["emailed", "owns", "attended"];
/// Record times of the write transactions that add edges, and of the two that retract.
const ADD_TIMES: [i64; 3] = [10, 20, 30];
const RETRACT_TIMES: [i64; 2] = [25, 40];

/// (from, to, kind, valid_from, valid_to, add batch, retract: 0 never / 1 at 25 / 2 at 40)
type EdgeSpec = (usize, usize, usize, Option<i64>, Option<i64>, usize, u8);

#[derive(Debug, Clone)]
struct GraphSpec {
    nodes: usize,
    edges: Vec<EdgeSpec>,
}

fn graph_spec() -> impl Strategy<Value = GraphSpec> {
    (2usize..=60).prop_flat_map(|n| {
        let edge = (
            0..n,
            0..n,
            0..KINDS.len(),
            prop::option::of(0i64..60),
            prop::option::of(1i64..60),
            0..ADD_TIMES.len(),
            prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
        );
        prop::collection::vec(edge, 0..=300).prop_map(move |edges| GraphSpec { nodes: n, edges })
    })
}

/// Writes the graph (three add batches at their record times, then two retraction batches)
/// and returns the oracle's view of it.
fn build(org: &Org, spec: &GraphSpec) -> (Vec<NodeId>, Vec<OEdge>) {
    let mut w = org.write().unwrap();
    w.set_time(1);
    let ids: Vec<NodeId> =
        (0..spec.nodes).map(|i| w.upsert_node(NodeInput::new("n").source("t", i.to_string())).unwrap()).collect();
    w.commit().unwrap();
    let mut edges = Vec::new();
    for (batch, &t) in ADD_TIMES.iter().enumerate() {
        let mut w = org.write().unwrap();
        w.set_time(t);
        for &(from, to, kind, vf, vt, b, _) in &spec.edges {
            if b != batch {
                continue;
            }
            // An empty or inverted valid interval is rejected by add_edge: widen it instead.
            let (vf, vt) = match (vf, vt) {
                (Some(a), Some(z)) if a >= z => (Some(a), Some(a + 1)),
                other => other,
            };
            let mut input = EdgeInput::new(ids[from], ids[to], KINDS[kind]);
            if let Some(a) = vf {
                input = input.valid_from(a);
            }
            if let Some(z) = vt {
                input = input.valid_to(z);
            }
            let id = w.add_edge(input).unwrap();
            edges.push(OEdge {
                id,
                from,
                to,
                kind: KINDS[kind],
                valid_from: vf.unwrap_or(i64::MIN),
                valid_to: vt.unwrap_or(i64::MAX),
                recorded_at: t,
                retracted_at: None,
            });
        }
        w.commit().unwrap();
    }
    // Edge i of `edges` is the i-th spec edge in batch order: map back to retraction choices.
    let mut retract_of = Vec::new();
    for batch in 0..ADD_TIMES.len() {
        for &(_, _, _, _, _, b, r) in &spec.edges {
            if b == batch {
                retract_of.push(r);
            }
        }
    }
    for (which, &t) in RETRACT_TIMES.iter().enumerate() {
        let mut w = org.write().unwrap();
        w.set_time(t);
        for (e, &r) in edges.iter_mut().zip(&retract_of) {
            // Retract only edges that exist at that record time.
            if r as usize == which + 1 && e.recorded_at <= t {
                assert!(w.retract_edge(e.id).unwrap());
                e.retracted_at = Some(t);
            }
        }
        w.commit().unwrap();
    }
    (ids, edges)
}

fn query_strategy() -> impl Strategy<Value = (Query, Direction, u32)> {
    let kinds = prop::option::of(prop::sample::subsequence(vec!["emailed", "owns", "attended", "unknown-kind"], 0..=3));
    let window = prop::option::of((0i64..60, 1i64..30).prop_map(|(a, len)| (a, a + len)));
    let known = prop::option::of(prop::sample::select(vec![5i64, 10, 15, 20, 25, 27, 30, 35, 40, 50]));
    let dir = prop::sample::select(vec![Direction::Out, Direction::In, Direction::Both]);
    (kinds, prop::option::of(0i64..60), window, known, dir, 1u32..=4).prop_map(|(kinds, at, between, known, dir, d)| {
        (Query { kinds, valid_at: at, valid_between: between, known_at: known }, dir, d)
    })
}

/// Applies a query's filters to a `Traversal` or `PathOptions` (same builder methods).
macro_rules! with_filters {
    ($builder:expr, $q:expr) => {{
        let (mut b, q) = ($builder, $q);
        if let Some(k) = &q.kinds {
            b = b.kinds(k.iter().copied());
        }
        if let Some(a) = q.valid_at {
            b = b.valid_at(a);
        }
        if let Some((a, z)) = q.valid_between {
            b = b.valid_between(a, z);
        }
        if let Some(r) = q.known_at {
            b = b.known_at(r);
        }
        b
    }};
}

fn apply<'r>(t: silograph::Traversal<'r>, q: &Query) -> silograph::Traversal<'r> {
    with_filters!(t, q)
}

fn path_options(q: &Query, dir: Direction) -> PathOptions {
    with_filters!(PathOptions::new().direction(dir), q)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn traversal_and_shortest_path_agree_with_oracle_bfs(
        spec in graph_spec(),
        queries in prop::collection::vec((query_strategy(), any::<prop::sample::Index>(), any::<prop::sample::Index>()), 12),
    ) {
        let (_db, org) = mem_org();
        let (ids, edges) = build(&org, &spec);
        let index_of: HashMap<NodeId, usize> = ids.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let by_id: HashMap<EdgeId, &OEdge> = edges.iter().map(|e| (e.id, e)).collect();
        let r = org.read().unwrap();
        for ((q, dir, depth), a, b) in &queries {
            let (a, b) = (a.index(spec.nodes), b.index(spec.nodes));
            // Single and multi-source BFS.
            for starts in [vec![a], vec![a, b]] {
                let start_ids: Vec<NodeId> = starts.iter().map(|&i| ids[i]).collect();
                let got = apply(r.traverse_from(&start_ids), q).direction(*dir).max_depth(*depth).run().unwrap();
                let want = oracle_bfs(&edges, q, &starts, *dir, *depth);
                let got_map: HashMap<usize, u32> = got.iter().map(|(n, d)| (index_of[n], *d)).collect();
                prop_assert_eq!(got_map.len(), got.len(), "a node was reported twice");
                prop_assert_eq!(&got_map, &want);
                prop_assert!(got.windows(2).all(|w| w[0].1 <= w[1].1), "not in BFS order");
            }
            // Shortest path: the oracle's distance, and a real path under the filter.
            let want = oracle_bfs(&edges, q, &[a], *dir, u32::MAX).get(&b).copied();
            let got = r.shortest_path(ids[a], ids[b], &path_options(q, *dir)).unwrap();
            prop_assert_eq!(got.as_ref().map(|p| p.len() as u32), want);
            if let Some(p) = got {
                prop_assert_eq!(p.nodes.first(), Some(&ids[a]));
                prop_assert_eq!(p.nodes.last(), Some(&ids[b]));
                prop_assert_eq!(p.nodes.len(), p.edges.len() + 1);
                for (i, e) in p.edges.iter().enumerate() {
                    let oe = by_id[e];
                    prop_assert!(q.accepts(oe), "path uses a filtered-out edge");
                    let (u, v) = (index_of[&p.nodes[i]], index_of[&p.nodes[i + 1]]);
                    let fits = match dir {
                        Direction::Out => (oe.from, oe.to) == (u, v),
                        Direction::In => (oe.to, oe.from) == (u, v),
                        Direction::Both => (oe.from, oe.to) == (u, v) || (oe.to, oe.from) == (u, v),
                    };
                    prop_assert!(fits, "edge {:?} does not join {} and {}", e, u, v);
                }
                // A length bound just below the shortest length finds nothing.
                if !p.is_empty() {
                    let bounded = path_options(q, *dir).max_depth(p.len() as u32 - 1);
                    prop_assert_eq!(r.shortest_path(ids[a], ids[b], &bounded).unwrap(), None);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// LDBC Graphalytics validation graphs: published BFS depths and SSSP distances.

fn read(rel: &str) -> String {
    std::fs::read_to_string(FsPath::new(LDBC).join(rel)).unwrap()
}

/// Parses a vertex-based adjacency list (`v n1 n2 …`, last line maybe without newline).
fn adjacency(text: &str) -> Vec<(u64, u64)> {
    let mut edges = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut it = line.split_whitespace().map(|t| t.parse::<u64>().unwrap());
        let v = it.next().unwrap();
        edges.extend(it.map(|n| (v, n)));
    }
    edges
}

/// `v value` lines.
fn expected(text: &str) -> Vec<(u64, String)> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut it = l.split_whitespace();
            (it.next().unwrap().parse().unwrap(), it.next().unwrap().to_owned())
        })
        .collect()
}

/// Loads vertices `vertices` and `edges` (by LDBC vertex id) into a fresh org.
fn load_ldbc(vertices: &[u64], edges: &[(u64, u64)]) -> (Db, Org, HashMap<u64, NodeId>, Vec<EdgeId>) {
    let (db, org) = mem_org();
    let mut w = org.write().unwrap();
    let ids: HashMap<u64, NodeId> = vertices
        .iter()
        .map(|&v| (v, w.upsert_node(NodeInput::new("vertex").source("ldbc", v.to_string())).unwrap()))
        .collect();
    let eids = edges.iter().map(|(a, b)| w.add_edge(EdgeInput::new(ids[a], ids[b], "edge")).unwrap()).collect();
    w.commit().unwrap();
    (db, org, ids, eids)
}

fn check_ldbc_bfs(input: &str, output: &str) {
    let edges = adjacency(&read(input));
    let want = expected(&read(output));
    let vertices: Vec<u64> = want.iter().map(|(v, _)| *v).collect();
    let (_db, org, ids, _) = load_ldbc(&vertices, &edges);
    let r = org.read().unwrap();
    let got: HashMap<NodeId, u32> = r.traverse(ids[&1]).direction(Direction::Out).run().unwrap().into_iter().collect();
    for (v, depth) in &want {
        let depth: i64 = depth.parse().unwrap();
        let node = ids[v];
        if depth == i64::MAX {
            assert!(!got.contains_key(&node), "vertex {v} is unreachable in the published answer");
            assert_eq!(r.shortest_path(ids[&1], node, &PathOptions::new()).unwrap(), None);
        } else {
            assert_eq!(got.get(&node).map(|d| i64::from(*d)), Some(depth), "vertex {v}");
            let p = r.shortest_path(ids[&1], node, &PathOptions::new()).unwrap().unwrap();
            assert_eq!(p.len() as i64, depth, "shortest path to vertex {v}");
        }
    }
    assert_eq!(got.len(), want.iter().filter(|(_, d)| d != "9223372036854775807").count());
}

#[test]
fn ldbc_bfs_validation_graph_gives_published_depths() {
    check_ldbc_bfs("bfs/dir-input", "bfs/dir-output");
}

#[test]
fn ldbc_example_directed_graph_gives_published_depths() {
    check_ldbc_bfs("example/example-directed-input", "example/example-directed-BFS");
}

#[cfg(feature = "petgraph")]
#[test]
fn petgraph_dijkstra_on_exported_subgraph_gives_published_ldbc_distances() {
    let vertices: Vec<u64> = read("example/example-directed.v").lines().map(|l| l.trim().parse().unwrap()).collect();
    let weighted: Vec<(u64, u64, f64)> = read("example/example-directed.e")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].parse().unwrap(), f[1].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect();
    let edges: Vec<(u64, u64)> = weighted.iter().map(|(a, b, _)| (*a, *b)).collect();
    let (_db, org, ids, eids) = load_ldbc(&vertices, &edges);
    let weight: HashMap<EdgeId, f64> = eids.iter().zip(&weighted).map(|(e, w)| (*e, w.2)).collect();
    let r = org.read().unwrap();
    let sub = r.traverse(ids[&1]).direction(Direction::Out).subgraph().unwrap();
    let g = sub.to_petgraph();
    let source = sub.index_of(ids[&1]).unwrap();
    let dist = petgraph::algo::dijkstra(&g, source, None, |e| weight[e.weight()]);
    for (v, want) in expected(&read("example/example-directed-SSSP")) {
        let got = sub.index_of(ids[&v]).and_then(|i| dist.get(&i).copied());
        match want.as_str() {
            "Infinity" => assert_eq!(got, None, "vertex {v}"),
            w => assert!((got.unwrap() - w.parse::<f64>().unwrap()).abs() < 1e-9, "vertex {v}: {got:?} vs {w}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// petgraph interop.

/// Two 3-cycles joined by one edge, plus a tail: a → b → c → a → d → e → f → d, f → g.
fn two_cycles() -> (Db, Org, Vec<NodeId>) {
    let (db, org) = mem_org();
    let mut w = org.write().unwrap();
    let n: Vec<NodeId> =
        (0..7).map(|i| w.upsert_node(NodeInput::new("n").source("t", i.to_string())).unwrap()).collect();
    for (a, b) in [(0, 1), (1, 2), (2, 0), (0, 3), (3, 4), (4, 5), (5, 3), (5, 6)] {
        w.add_edge(EdgeInput::new(n[a], n[b], "link")).unwrap();
    }
    w.commit().unwrap();
    (db, org, n)
}

#[cfg(feature = "petgraph")]
#[test]
fn exported_subgraph_has_the_induced_edges_and_scc_finds_both_cycles() {
    let (_db, org, n) = two_cycles();
    let r = org.read().unwrap();
    let sub = r.subgraph(n[0], 10).unwrap();
    assert_eq!(sub.nodes.len(), 7);
    assert_eq!(sub.edges.len(), 8);
    let g = sub.to_petgraph();
    let mut sccs: Vec<Vec<NodeId>> = petgraph::algo::kosaraju_scc(&g)
        .into_iter()
        .map(|c| {
            let mut c: Vec<NodeId> = c.into_iter().map(|i| g[i]).collect();
            c.sort();
            c
        })
        .collect();
    sccs.sort();
    assert_eq!(sccs, vec![vec![n[0], n[1], n[2]], vec![n[3], n[4], n[5]], vec![n[6]]]);
    // Depth-limited: the edges leaving the boundary are not in the subgraph.
    let near = r.subgraph(n[0], 1).unwrap();
    let near_nodes: HashSet<NodeId> = near.nodes.iter().map(|(x, _)| *x).collect();
    assert_eq!(near_nodes, HashSet::from([n[0], n[1], n[2], n[3]]));
    assert!(near.edges.iter().all(|e| near_nodes.contains(&e.from) && near_nodes.contains(&e.to)));
    assert_eq!(near.edges.len(), 4);
}

#[cfg(feature = "petgraph")]
#[test]
fn pagerank_on_exported_subgraph_ranks_the_sink_side_highest() {
    let (_db, org, n) = two_cycles();
    let g = org.read().unwrap().subgraph(n[0], 10).unwrap().to_petgraph();
    let ranks = petgraph::algo::page_rank(&g, 0.85_f64, 50);
    let total: f64 = ranks.iter().sum();
    assert!((total - 1.0).abs() < 1e-6, "ranks sum to {total}");
    let rank_of = |node: NodeId| ranks[g.node_indices().find(|i| g[*i] == node).unwrap().index()];
    // Rank flows from the first cycle into the second one.
    assert!(rank_of(n[3]) > rank_of(n[1]));
    for e in g.edge_references() {
        assert!(e.weight().0 > 0);
    }
}

// ---------------------------------------------------------------------------------------------
// Options and bad input.

#[test]
fn unknown_start_gives_empty_result_and_no_path() {
    let (_db, org, n) = two_cycles();
    let r = org.read().unwrap();
    assert_eq!(r.traverse(NodeId(999)).run().unwrap(), vec![]);
    assert_eq!(r.traverse(NodeId(0)).max_depth(3).run().unwrap(), vec![]);
    // An unknown start among known ones is left out.
    assert_eq!(r.traverse(NodeId(999)).also(n[6]).run().unwrap(), vec![(n[6], 0)]);
    assert_eq!(r.shortest_path(n[0], NodeId(999), &PathOptions::new()).unwrap(), None);
    assert_eq!(r.shortest_path(NodeId(999), n[0], &PathOptions::new()).unwrap(), None);
    assert_eq!(r.subgraph(NodeId(999), 2).unwrap().nodes, vec![]);
}

#[test]
fn max_depth_zero_returns_exactly_the_start_nodes() {
    let (_db, org, n) = two_cycles();
    let r = org.read().unwrap();
    assert_eq!(r.traverse(n[0]).max_depth(0).run().unwrap(), vec![(n[0], 0)]);
    assert_eq!(r.traverse_from(&[n[0], n[4], n[0]]).max_depth(0).run().unwrap(), vec![(n[0], 0), (n[4], 0)]);
    let p = r.shortest_path(n[2], n[2], &PathOptions::new().max_depth(0)).unwrap().unwrap();
    assert!(p.is_empty() && p.nodes == vec![n[2]]);
    assert_eq!(r.shortest_path(n[0], n[1], &PathOptions::new().max_depth(0)).unwrap(), None);
}

#[test]
fn inverted_time_window_and_zero_limit_are_invalid_input() {
    let (_db, org, n) = two_cycles();
    let r = org.read().unwrap();
    assert!(matches!(r.traverse(n[0]).valid_between(10, 10).run(), Err(Error::InvalidInput(_))));
    assert!(matches!(r.traverse(n[0]).valid_between(10, 5).run(), Err(Error::InvalidInput(_))));
    assert!(matches!(r.traverse(n[0]).limit(0).run(), Err(Error::InvalidInput(_))));
    let bad = PathOptions::new().valid_between(3, 1);
    assert!(matches!(r.shortest_path(n[0], n[1], &bad), Err(Error::InvalidInput(_))));
}

#[test]
fn limit_returns_a_prefix_of_the_bfs_order() {
    let (_db, org, n) = two_cycles();
    let r = org.read().unwrap();
    let all = r.traverse(n[0]).direction(Direction::Both).run().unwrap();
    assert_eq!(all.len(), 7);
    for k in 1..=8 {
        let some = r.traverse(n[0]).direction(Direction::Both).limit(k).run().unwrap();
        assert_eq!(some, all[..k.min(7)].to_vec());
    }
}

#[test]
fn unknown_kind_name_matches_nothing() {
    let (_db, org, n) = two_cycles();
    let r = org.read().unwrap();
    assert_eq!(r.traverse(n[0]).kinds(["no-such-kind"]).run().unwrap(), vec![(n[0], 0)]);
    assert_eq!(r.traverse(n[0]).kinds(Vec::<&str>::new()).run().unwrap(), vec![(n[0], 0)]);
    assert_eq!(r.traverse(n[0]).kinds(["no-such-kind", "link"]).max_depth(1).run().unwrap().len(), 3);
}

#[test]
fn whole_page_filter_shortcuts_agree_with_per_entry_semantics_at_the_extremes() {
    // Every edge here has one kind and unbounded validity, so cached pages are accepted or
    // rejected whole: the extremes of the time filters must still follow the per-entry rules.
    let (_db, org, n) = two_cycles();
    let r = org.read().unwrap();
    assert_eq!(r.traverse(n[0]).run().unwrap().len(), 7, "warms the page cache");
    let reach = |t: silograph::Traversal<'_>| t.max_depth(1).run().unwrap().len();
    assert_eq!(reach(r.traverse(n[0])), 3);
    assert_eq!(reach(r.traverse(n[0]).valid_at(i64::MAX)), 1, "valid_to is exclusive, even unbounded");
    assert_eq!(reach(r.traverse(n[0]).valid_at(i64::MIN)), 3);
    assert_eq!(reach(r.traverse(n[0]).valid_between(i64::MIN, i64::MIN + 1)), 3);
    assert_eq!(reach(r.traverse(n[0]).valid_between(i64::MAX - 1, i64::MAX)), 3);
    assert_eq!(reach(r.traverse(n[0]).kinds(["link"])), 3);
    assert_eq!(reach(r.traverse(n[0]).kinds(["other", "link"])), 3);
    assert_eq!(reach(r.traverse(n[0]).kinds(["other"])), 1);
    assert_eq!(reach(r.traverse(n[0]).known_at(i64::MAX - 1)), 3);
}

#[test]
fn retracted_edge_is_visible_only_to_record_times_before_its_retraction() {
    let (_db, org) = mem_org();
    let mut w = org.write().unwrap();
    w.set_time(100);
    let a = w.upsert_node(NodeInput::new("p").source("t", "a")).unwrap();
    let b = w.upsert_node(NodeInput::new("p").source("t", "b")).unwrap();
    let e = w.add_edge(EdgeInput::new(a, b, "emailed")).unwrap();
    w.commit().unwrap();
    let mut w = org.write().unwrap();
    w.set_time(200);
    w.retract_edge(e).unwrap();
    w.commit().unwrap();
    let r = org.read().unwrap();
    let reach = |t: Option<i64>| {
        let tr = r.traverse(a);
        match t {
            Some(t) => tr.known_at(t).run().unwrap().len(),
            None => tr.run().unwrap().len(),
        }
    };
    assert_eq!(reach(None), 1, "retracted edge is not current");
    assert_eq!(reach(Some(99)), 1, "edge recorded after the record time is invisible");
    assert_eq!(reach(Some(100)), 2);
    assert_eq!(reach(Some(199)), 2, "edge visible before its retraction");
    assert_eq!(reach(Some(200)), 1, "edge invisible from its retraction on");
}

#[test]
fn concurrent_traversals_see_exactly_their_snapshot_while_a_writer_commits() {
    // Each commit adds one edge from the hub (rewriting its cached page); a traversal must
    // agree with the degree its own snapshot's node record gives, never a page from another
    // snapshot served by the cache.
    let (_db, org) = mem_org();
    let mut w = org.write().unwrap();
    let hub = w.upsert_node(NodeInput::new("hub").source("t", "hub")).unwrap();
    let leaves: Vec<NodeId> =
        (0..150).map(|i| w.upsert_node(NodeInput::new("leaf").source("t", i.to_string())).unwrap()).collect();
    w.commit().unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                let mut checked = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) || checked == 0 {
                    let r = org.read().unwrap();
                    let reached = r.traverse(hub).max_depth(1).run().unwrap().len() as u64 - 1;
                    assert_eq!(Some(reached), r.degree(hub, Direction::Out).unwrap());
                    checked += 1;
                }
            });
        }
        for leaf in &leaves {
            let mut w = org.write().unwrap();
            w.add_edge(EdgeInput::new(hub, *leaf, "x")).unwrap();
            w.commit().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(org.read().unwrap().traverse(hub).run().unwrap().len(), 151);
}

// ---------------------------------------------------------------------------------------------
// Corruption.

fn adj_keys(path: &FsPath) -> HashSet<Vec<u8>> {
    let db = redb::Database::open(path).unwrap();
    let r = redb::ReadableDatabase::begin_read(&db).unwrap();
    let t = r.open_table(redb::TableDefinition::<&[u8], &[u8]>::new("adj")).unwrap();
    redb::ReadableTable::iter(&t).unwrap().map(|kv| kv.unwrap().0.value().to_vec()).collect()
}

#[test]
fn corrupt_page_on_the_frontier_fails_the_whole_traversal() {
    let path = tmp("corrupt");
    let (a, b, c);
    {
        let db = Db::open(&path, root()).unwrap();
        let org = db.create_org("o").unwrap();
        let mut w = org.write().unwrap();
        a = w.upsert_node(NodeInput::new("p").source("t", "a")).unwrap();
        b = w.upsert_node(NodeInput::new("p").source("t", "b")).unwrap();
        c = w.upsert_node(NodeInput::new("p").source("t", "c")).unwrap();
        w.add_edge(EdgeInput::new(a, b, "x")).unwrap();
        w.commit().unwrap();
    }
    let before = adj_keys(&path);
    {
        let db = Db::open(&path, root()).unwrap();
        let mut w = db.org("o").unwrap().write().unwrap();
        // More edges than a node record keeps inline: b's out-entries and c's in-entries go to
        // adjacency pages.
        for _ in 0..17 {
            w.add_edge(EdgeInput::new(b, c, "x")).unwrap();
        }
        w.commit().unwrap();
    }
    // The new keys are b's out-page and c's in-page: flip the last byte (the GCM tag) of both.
    let fresh: Vec<Vec<u8>> = adj_keys(&path).difference(&before).cloned().collect();
    assert_eq!(fresh.len(), 2);
    {
        let db = redb::Database::open(&path).unwrap();
        let w = db.begin_write().unwrap();
        {
            let mut t = w.open_table(redb::TableDefinition::<&[u8], &[u8]>::new("adj")).unwrap();
            for k in &fresh {
                let mut v = redb::ReadableTable::get(&t, k.as_slice()).unwrap().unwrap().value().to_vec();
                *v.last_mut().unwrap() ^= 1;
                t.insert(k.as_slice(), v.as_slice()).unwrap();
            }
        }
        w.commit().unwrap();
    }
    let db = Db::open(&path, root()).unwrap();
    let r = db.org("o").unwrap().read().unwrap();
    // Depth 1 reads only a's page, which is intact.
    assert_eq!(r.traverse(a).max_depth(1).run().unwrap(), vec![(a, 0), (b, 1)]);
    // Depth 2 must expand b: the corrupt page fails the traversal, the path search and the subgraph.
    assert!(matches!(r.traverse(a).max_depth(2).run(), Err(Error::Corrupt { table: "adj", .. })));
    assert!(matches!(r.traverse(a).run(), Err(Error::Corrupt { .. })));
    assert!(matches!(r.traverse(c).direction(Direction::In).run(), Err(Error::Corrupt { .. })));
    assert!(matches!(r.shortest_path(a, c, &PathOptions::new()), Err(Error::Corrupt { .. })));
    assert!(matches!(r.subgraph(a, 1), Err(Error::Corrupt { .. })));
    drop(r);
    drop(db);
}

// ---------------------------------------------------------------------------------------------
// Timing on the Enron workload of ANCHORS.md (ignored: run it in release by hand).

#[cfg(feature = "petgraph")]
fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}

/// q1 / q2 / q3 of ANCHORS.md, warm and with the page cache off, against a plain BFS over a
/// petgraph `Csr` of the same edges (which also checks every count). With
/// `SILOGRAPH_ENRON=path/to/enron.tsv` it loads the real SNAP file and checks the published
/// checksums with the seeds in `tests/data/traversal_enron_seeds.txt`; otherwise it uses an
/// Enron-sized synthetic graph. `cargo test --release --test it traversal:: -- --ignored --nocapture`
#[cfg(feature = "petgraph")]
#[test]
#[ignore]
fn enron_khop_timing() {
    let real = std::env::var("SILOGRAPH_ENRON").ok();
    let edges: Vec<(u32, u32)> = match &real {
        Some(p) => std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| {
                let mut it = l.split('\t').map(|t| t.trim().parse::<u32>().unwrap());
                (it.next().unwrap(), it.next().unwrap())
            })
            .collect(),
        None => {
            let mut x: u64 = 88172645463325252;
            (0..367_662)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let a = ((x % 36_692) * (x % 36_692) / 36_692) as u32;
                    (a, ((x >> 32) % 36_692) as u32)
                })
                .collect()
        }
    };
    let n = edges.iter().map(|(a, b)| *a.max(b)).max().unwrap() as usize + 1;
    let seeds: Vec<u32> =
        if real.is_some() { read_seeds() } else { (0..1000u32).map(|i| (i * 7919) % n as u32).collect() };

    let mut sorted = edges.clone();
    sorted.sort_unstable();
    let csr: petgraph::csr::Csr<(), ()> = petgraph::csr::Csr::from_sorted_edges(&sorted).unwrap();
    let mut stamp = vec![0u32; n];
    let mut gen = 0u32;
    let mut csr_khop = |s: u32, k: u32| -> usize {
        gen += 1;
        let mut frontier = vec![s];
        stamp[s as usize] = gen;
        let mut count = 1;
        for _ in 0..k {
            let mut next = Vec::new();
            for &u in &frontier {
                for &v in csr.neighbors_slice(u) {
                    if stamp[v as usize] != gen {
                        stamp[v as usize] = gen;
                        next.push(v);
                        count += 1;
                    }
                }
            }
            frontier = next;
        }
        count
    };

    for cache in [256usize << 20, 0] {
        let path = tmp(&format!("enron-{cache}"));
        let db = Db::builder().cache_size(cache).open(&path, root()).unwrap();
        let org = db.create_org("enron").unwrap();
        let t = std::time::Instant::now();
        let mut bulk = org.bulk_load().unwrap();
        let ids: Vec<NodeId> =
            (0..n).map(|i| bulk.add_node(NodeInput::new("address").source("enron", i.to_string())).unwrap()).collect();
        for (a, b) in &edges {
            bulk.add_edge(ids[*a as usize], ids[*b as usize], "emailed").unwrap();
        }
        bulk.finish().unwrap();
        let load = t.elapsed().as_secs_f64();
        println!("cache {cache}: bulk load {:.2}s = {:.0} edges/s", load, edges.len() as f64 / load);
        let r = org.read().unwrap();
        let report = |name: &str, k: u32, seeds: &[u32], csr_khop: &mut dyn FnMut(u32, u32) -> usize| {
            let mut sum = 0usize;
            let run = |s: u32| -> usize {
                if k == 1 {
                    r.neighbors(ids[s as usize], Direction::Out).unwrap().count()
                } else {
                    r.traverse(ids[s as usize]).max_depth(k).run().unwrap().len()
                }
            };
            for &s in seeds {
                sum += run(s);
            }
            let mut times = Vec::with_capacity(seeds.len());
            for &s in seeds {
                let t = std::time::Instant::now();
                std::hint::black_box(run(s));
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
            let mut csr_times = Vec::with_capacity(seeds.len());
            for &s in seeds {
                let t = std::time::Instant::now();
                let c = csr_khop(s, k);
                csr_times.push(t.elapsed().as_secs_f64() * 1e6);
                if k > 1 {
                    assert_eq!(c, run(s), "seed {s}: silograph and Csr disagree");
                }
            }
            let (p50, p99) = percentiles(times.clone());
            let (c50, c99) = percentiles(csr_times.clone());
            let ratio = csr_times.iter().sum::<f64>() / times.iter().sum::<f64>();
            println!(
                "  {name}: checksum {sum}, p50 {p50:.1} µs, p99 {p99:.1} µs | Csr p50 {c50:.1} µs, p99 {c99:.1} µs | \
                 throughput vs Csr {ratio:.2}"
            );
            sum
        };
        let q1 = report("q1", 1, &seeds, &mut csr_khop);
        let q2 = report("q2", 2, &seeds, &mut csr_khop);
        let q3 = report("q3", 3, &seeds[..200], &mut csr_khop);
        if real.is_some() {
            assert_eq!((q1, q2, q3), (10_386, 845_481, 1_653_190));
        }
        drop(r);
        drop(org);
        drop(db);
    }
}

#[cfg(feature = "petgraph")]
fn read_seeds() -> Vec<u32> {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/traversal_enron_seeds.txt");
    std::fs::read_to_string(p).unwrap().lines().map(|l| l.trim().parse().unwrap()).collect()
}
