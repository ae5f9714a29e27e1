//! Unweighted shortest paths by bidirectional breadth-first search.

use super::filter::{filter_methods, FilterSpec};
use super::traverse::node_exists;
use super::visited::IdMap;
use crate::error::Result;
use crate::store::{NeighborFilter, ReadTxn};
use crate::types::{Direction, EdgeId, NodeId};

/// Options of [`ReadTxn::shortest_path`]: direction, edge filter and a length bound.
///
/// ```
/// use silograph::{Direction, PathOptions};
/// let opts = PathOptions::new().direction(Direction::Both).kinds(["emailed"]).max_depth(6);
/// ```
#[must_use = "options do nothing until passed to `shortest_path`"]
#[derive(Debug, Clone, PartialEq)]
pub struct PathOptions {
    dir: Direction,
    max_depth: u32,
    pub(super) spec: FilterSpec,
}

impl Default for PathOptions {
    fn default() -> Self {
        PathOptions { dir: Direction::Out, max_depth: u32::MAX, spec: FilterSpec::default() }
    }
}

impl PathOptions {
    /// Follow out-edges, any length, current edges of every kind.
    pub fn new() -> Self {
        Self::default()
    }

    /// Which way edges may be followed from `a` towards `b` (default [`Direction::Out`]).
    pub fn direction(mut self, dir: Direction) -> Self {
        self.dir = dir;
        self
    }

    /// Longest path to look for, in edges (0: only `a == b` is found).
    pub fn max_depth(mut self, k: u32) -> Self {
        self.max_depth = k;
        self
    }

    filter_methods!();
}

/// A path: `nodes[0]` is the start, `nodes[len]` the end, and `edges[i]` joins `nodes[i]` and
/// `nodes[i + 1]` (followed in the direction the options allow).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Path {
    /// The nodes along the path, both ends included.
    pub nodes: Vec<NodeId>,
    /// The edges along the path; one fewer than the nodes.
    pub edges: Vec<EdgeId>,
}

impl Path {
    /// Number of edges.
    pub fn len(&self) -> usize {
        self.edges.len()
    }

    /// True for the zero-length path from a node to itself.
    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }
}

fn reverse(d: Direction) -> Direction {
    match d {
        Direction::Out => Direction::In,
        Direction::In => Direction::Out,
        Direction::Both => Direction::Both,
    }
}

/// One side of the bidirectional search: for every reached node, the node it was reached from,
/// the edge used and its distance from this side's root.
struct Side {
    dir: Direction,
    reached: IdMap<(u64, u64, u32)>,
    frontier: Vec<u64>,
    depth: u32,
}

impl Side {
    fn new(root: NodeId, dir: Direction) -> Self {
        let mut reached = IdMap::default();
        reached.insert(root.0, (root.0, 0, 0));
        Side { dir, reached, frontier: vec![root.0], depth: 0 }
    }

    /// Expands one whole level; returns the best meeting `(total length, node)` with `other`.
    fn expand(&mut self, txn: &ReadTxn, filter: &NeighborFilter, other: &Side) -> Result<Option<(u32, u64)>> {
        let next_depth = self.depth + 1;
        let mut next = Vec::new();
        let mut best: Option<(u32, u64)> = None;
        // The whole level's pages in one round trip on a server backend (a no-op on redb).
        txn.prefetch_direction(self.frontier.iter().copied(), self.dir)?;
        for &u in &self.frontier {
            txn.for_each_entry(NodeId(u), self.dir, filter, |e, _| {
                let v = e.neighbor;
                if self.reached.contains_key(&v) {
                    return;
                }
                self.reached.insert(v, (u, e.edge, next_depth));
                next.push(v);
                if let Some(&(_, _, d)) = other.reached.get(&v) {
                    let total = next_depth + d;
                    if best.is_none_or(|(b, _)| total < b) {
                        best = Some((total, v));
                    }
                }
            })?;
        }
        self.frontier = next;
        self.depth = next_depth;
        Ok(best)
    }

    /// The chain from `v` back to this side's root: nodes (from `v`) and edges.
    fn chain(&self, mut v: u64) -> (Vec<NodeId>, Vec<EdgeId>) {
        let mut nodes = vec![NodeId(v)];
        let mut edges = Vec::new();
        while let Some(&(p, e, d)) = self.reached.get(&v) {
            if d == 0 {
                break;
            }
            edges.push(EdgeId(e));
            nodes.push(NodeId(p));
            v = p;
        }
        (nodes, edges)
    }
}

impl ReadTxn {
    /// A shortest path (fewest edges) from `a` to `b` under `opts`, or `None` if there is none
    /// within `opts`' length bound. Unknown `a` or `b` gives `None`; `a == b` gives the
    /// zero-length path. The search runs from both ends at once (out-edges from `a`, in-edges
    /// towards `b`, or both ways for [`Direction::Both`]), always growing the smaller frontier.
    ///
    /// Errors: an inverted `valid_between` window is `InvalidInput`; a page that fails to open
    /// is `Corrupt`.
    ///
    /// ```
    /// # fn main() -> silograph::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("ctx.silo");
    /// use silograph::{Db, EdgeInput, NodeInput, PathOptions, RootKey};
    /// let db = Db::open(&path, RootKey::from_bytes([1; 32]))?;
    /// let org = db.create_org("acme")?;
    /// let mut w = org.write()?;
    /// let a = w.upsert_node(NodeInput::new("person").source("mail", "a"))?;
    /// let b = w.upsert_node(NodeInput::new("person").source("mail", "b"))?;
    /// let c = w.upsert_node(NodeInput::new("person").source("mail", "c"))?;
    /// let ab = w.add_edge(EdgeInput::new(a, b, "emailed"))?;
    /// let bc = w.add_edge(EdgeInput::new(b, c, "emailed"))?;
    /// w.commit()?;
    ///
    /// let p = org.read()?.shortest_path(a, c, &PathOptions::new())?.expect("a path");
    /// assert_eq!(p.nodes, vec![a, b, c]);
    /// assert_eq!(p.edges, vec![ab, bc]);
    /// # Ok(()) }
    /// ```
    pub fn shortest_path(&self, a: NodeId, b: NodeId, opts: &PathOptions) -> Result<Option<Path>> {
        let filter = opts.spec.resolve(self)?;
        if !node_exists(self, a)? || !node_exists(self, b)? {
            return Ok(None);
        }
        if a == b {
            return Ok(Some(Path { nodes: vec![a], edges: Vec::new() }));
        }
        let mut fwd = Side::new(a, opts.dir);
        let mut bwd = Side::new(b, reverse(opts.dir));
        // Invariant: no node is within fwd.depth of `a` and bwd.depth of `b`, so a path is
        // longer than their sum. Expanding one level of one side finds every path of length
        // sum + 1, and any meeting it finds has length at most sum + 1: the best is shortest.
        let meet = loop {
            if fwd.frontier.is_empty()
                || bwd.frontier.is_empty()
                || fwd.depth.saturating_add(bwd.depth) >= opts.max_depth
            {
                return Ok(None);
            }
            let found = if fwd.frontier.len() <= bwd.frontier.len() {
                fwd.expand(self, &filter, &bwd)?
            } else {
                bwd.expand(self, &filter, &fwd)?
            };
            if let Some((_, v)) = found {
                break v;
            }
        };
        let (mut nodes, mut edges) = fwd.chain(meet);
        nodes.reverse();
        edges.reverse();
        let (back_nodes, back_edges) = bwd.chain(meet);
        nodes.extend_from_slice(&back_nodes[1..]);
        edges.extend(back_edges);
        Ok(Some(Path { nodes, edges }))
    }
}
