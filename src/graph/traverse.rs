//! Breadth-first traversal over a read snapshot.

use super::filter::{filter_methods, FilterSpec};
use super::subgraph::Subgraph;
use super::visited::{with_visited, Visited};
use crate::error::{Error, InputKind, Result};
use crate::store::{NeighborFilter, ReadTxn};
use crate::types::{Direction, NodeId};

/// A breadth-first traversal, configured by builder methods and run by [`Traversal::run`] (or
/// [`Traversal::subgraph`]). Made by [`ReadTxn::traverse`] or [`ReadTxn::traverse_from`].
///
/// Semantics:
/// - every reached node appears once, with its BFS depth (the number of hops from the nearest
///   start node); start nodes have depth 0; results are in BFS order (by depth, then discovery);
/// - a start node that does not exist in the org is left out (an unknown single start gives an
///   empty result, not an error);
/// - `max_depth(0)` returns just the (existing) start nodes; without `max_depth` the traversal
///   runs until nothing new is reachable;
/// - `limit(n)` stops after the first `n` nodes in BFS order; `limit(0)` is `InvalidInput`;
/// - an inverted `valid_between` window is `InvalidInput`;
/// - a page that fails to open anywhere the traversal reads fails the whole traversal
///   (`Error::Corrupt`): never a partial result.
///
/// ```
/// # fn main() -> silograph::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("ctx.silo");
/// use silograph::{Db, Direction, EdgeInput, NodeInput, RootKey};
/// let db = Db::open(&path, RootKey::from_bytes([1; 32]))?;
/// let org = db.create_org("acme")?;
/// let mut w = org.write()?;
/// let a = w.upsert_node(NodeInput::new("person").source("mail", "a"))?;
/// let b = w.upsert_node(NodeInput::new("person").source("mail", "b"))?;
/// let c = w.upsert_node(NodeInput::new("person").source("mail", "c"))?;
/// w.add_edge(EdgeInput::new(a, b, "emailed"))?;
/// w.add_edge(EdgeInput::new(b, c, "emailed"))?;
/// w.add_edge(EdgeInput::new(a, c, "owns"))?;
/// w.commit()?;
///
/// let r = org.read()?;
/// let hits = r.traverse(a).max_depth(2).kinds(["emailed"]).direction(Direction::Out).run()?;
/// assert_eq!(hits, vec![(a, 0), (b, 1), (c, 2)]);
/// # Ok(()) }
/// ```
#[must_use = "a traversal does nothing until `run` is called"]
#[derive(Debug, Clone)]
pub struct Traversal<'r> {
    txn: &'r ReadTxn,
    starts: Vec<NodeId>,
    dir: Direction,
    max_depth: u32,
    limit: Option<usize>,
    pub(super) spec: FilterSpec,
}

impl ReadTxn {
    /// A breadth-first traversal from `start`, following out-edges unless told otherwise.
    pub fn traverse(&self, start: NodeId) -> Traversal<'_> {
        self.traverse_from(&[start])
    }

    /// A breadth-first traversal from several start nodes at once (each at depth 0).
    pub fn traverse_from(&self, starts: &[NodeId]) -> Traversal<'_> {
        Traversal {
            txn: self,
            starts: starts.to_vec(),
            dir: Direction::Out,
            max_depth: u32::MAX,
            limit: None,
            spec: FilterSpec::default(),
        }
    }
}

impl<'r> Traversal<'r> {
    /// Adds another start node (depth 0).
    pub fn also(mut self, node: NodeId) -> Self {
        self.starts.push(node);
        self
    }

    /// Follows edges in `dir` (default [`Direction::Out`]).
    pub fn direction(mut self, dir: Direction) -> Self {
        self.dir = dir;
        self
    }

    /// Visits nodes at most `k` hops from a start node (0: just the start nodes).
    pub fn max_depth(mut self, k: u32) -> Self {
        self.max_depth = k;
        self
    }

    /// Stops after `n` nodes (in BFS order, start nodes first). `0` is `InvalidInput` at run.
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    filter_methods!();

    /// Runs the traversal: each reached node once, with its depth, in BFS order.
    pub fn run(&self) -> Result<Vec<(NodeId, u32)>> {
        with_visited(|vis| self.bfs(vis))
    }

    /// Runs the traversal and returns the subgraph it reached: its nodes (with depths) and every
    /// edge between two of them that passes the filter (whatever the traversal direction).
    pub fn subgraph(&self) -> Result<Subgraph> {
        with_visited(|vis| {
            let nodes = self.bfs(vis)?;
            Subgraph::induced(self.txn, nodes, &self.spec.resolve(self.txn)?, vis)
        })
    }

    /// The BFS itself; leaves every reached node marked in `vis`.
    pub(super) fn bfs(&self, vis: &mut Visited) -> Result<Vec<(NodeId, u32)>> {
        let limit = match self.limit {
            Some(0) => return Err(Error::invalid(InputKind::InvalidLimit, "limit must be at least 1")),
            Some(n) => n,
            None => usize::MAX,
        };
        let filter = self.spec.resolve(self.txn)?;
        let mut out: Vec<(NodeId, u32)> = Vec::with_capacity(64);
        for &s in &self.starts {
            if out.len() >= limit {
                return Ok(out);
            }
            if !vis.contains(s.0) && node_exists(self.txn, s)? {
                vis.insert(s.0);
                out.push((s, 0));
            }
        }
        let dirs: &[u8] = match self.dir {
            Direction::Out => &[0],
            Direction::In => &[1],
            Direction::Both => &[0, 1],
        };
        let mut i = 0;
        while i < out.len() && out.len() < limit {
            let (node, depth) = out[i];
            if depth >= self.max_depth {
                // BFS order: every node after this one is at least as deep.
                break;
            }
            if i == 0 || out[i - 1].1 != depth {
                // A new level: every node of it is in `out` already; fetch their pages at once.
                self.txn.prefetch_pages(out[i..].iter().take_while(|(_, d)| *d == depth).map(|(n, _)| n.0), dirs)?;
            }
            i += 1;
            let next = depth + 1;
            for_each_neighbor(self.txn, node, self.dir, &filter, |n| {
                if out.len() < limit && vis.insert(n) {
                    out.push((NodeId(n), next));
                }
            })?;
        }
        Ok(out)
    }
}

/// Whether `node` exists. Node ids are dense and no node is ever removed, so an id the org's
/// registry entry (authenticated with the org's key) has assigned exists: nothing is opened. The
/// walk reads the node's entries next anyway and fails there if they are missing or tampered.
pub(super) fn node_exists(txn: &ReadTxn, node: NodeId) -> Result<bool> {
    txn.assigned(node)
}

/// Calls `f` with the neighbor of every entry of `node` in `dir` that passes `filter`. Like
/// `ReadTxn::for_each_entry`, but a page the filter accepts whole is walked through its compact
/// neighbor list, and a page it rejects whole is skipped. Any page that fails to open is an
/// error: never a partial walk.
pub(super) fn for_each_neighbor(
    txn: &ReadTxn,
    node: NodeId,
    dir: Direction,
    filter: &NeighborFilter,
    mut f: impl FnMut(u64),
) -> Result<()> {
    let dirs: &[u8] = match dir {
        Direction::Out => &[0],
        Direction::In => &[1],
        Direction::Both => &[0, 1],
    };
    for &d in dirs {
        let Some(first) = txn.page(node.0, d, 0)? else { continue };
        let pages = first.pages;
        let mut page = first;
        let mut p = 0;
        loop {
            match page.accepts_all(filter) {
                Some(true) => page.neighbors.iter().for_each(|n| f(*n)),
                Some(false) => {}
                None => page.entries.iter().filter(|e| filter.accepts(e)).for_each(|e| f(e.neighbor)),
            }
            p += 1;
            if p >= pages {
                break;
            }
            page = txn.page(node.0, d, p)?.ok_or_else(|| Error::corrupt("adj", &[]))?;
        }
    }
    Ok(())
}
