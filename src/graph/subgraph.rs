//! Subgraphs reached by a traversal, and their export to petgraph (feature `petgraph`).

#[cfg(feature = "petgraph")]
use petgraph::graph::{Graph, NodeIndex};

use super::visited::Visited;
use crate::error::Result;
use crate::store::{NeighborFilter, ReadTxn};
use crate::types::{Direction, EdgeId, KindId, NodeId};

/// An edge of a [`Subgraph`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SubgraphEdge {
    /// The edge.
    pub id: EdgeId,
    /// Its source node.
    pub from: NodeId,
    /// Its target node.
    pub to: NodeId,
    /// Its kind (see [`ReadTxn::kind_name`]).
    pub kind: KindId,
}

/// The nodes a traversal reached and the edges among them.
///
/// ```
/// # fn main() -> silograph::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("ctx.silo");
/// use silograph::{Db, EdgeInput, NodeInput, RootKey};
/// let db = Db::open(&path, RootKey::from_bytes([1; 32]))?;
/// let org = db.create_org("acme")?;
/// let mut w = org.write()?;
/// let a = w.upsert_node(NodeInput::new("person").source("mail", "a"))?;
/// let b = w.upsert_node(NodeInput::new("person").source("mail", "b"))?;
/// w.add_edge(EdgeInput::new(a, b, "emailed"))?;
/// w.add_edge(EdgeInput::new(b, a, "emailed"))?;
/// w.commit()?;
///
/// let sub = org.read()?.subgraph(a, 1)?;
/// assert_eq!(sub.nodes, vec![(a, 0), (b, 1)]);
/// assert_eq!(sub.edges.len(), 2);
/// # Ok(()) }
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Subgraph {
    /// The nodes with their BFS depth, in BFS order. In `Subgraph::to_petgraph` (feature
    /// `petgraph`), node `i` of this list has `NodeIndex::new(i)`.
    pub nodes: Vec<(NodeId, u32)>,
    /// Every edge between two of the nodes that passes the traversal's filter, each once.
    pub edges: Vec<SubgraphEdge>,
}

impl ReadTxn {
    /// The subgraph within `depth` hops of `start` following edges in both directions: its nodes
    /// and every current edge among them. For other directions or filters use
    /// [`Traversal::subgraph`](super::Traversal::subgraph).
    pub fn subgraph(&self, start: NodeId, depth: u32) -> Result<Subgraph> {
        self.traverse(start).direction(Direction::Both).max_depth(depth).subgraph()
    }
}

/// Nodes whose out-pages one prefetch fetches while collecting a subgraph's edges.
const INDUCED_BATCH: usize = 4096;

impl Subgraph {
    /// Collects the edges among `nodes` (all marked in `vis`) by walking each node's out-pages.
    pub(super) fn induced(
        txn: &ReadTxn,
        nodes: Vec<(NodeId, u32)>,
        filter: &NeighborFilter,
        vis: &Visited,
    ) -> Result<Subgraph> {
        let mut edges = Vec::new();
        // The BFS read the out-pages of the nodes it expanded (if it walked out-edges), not of
        // its last level: fetch the missing ones a batch at a time (one round trip per batch on
        // a server backend, a no-op on redb).
        for batch in nodes.chunks(INDUCED_BATCH) {
            txn.prefetch_direction(batch.iter().map(|(n, _)| n.0), Direction::Out)?;
            for &(n, _) in batch {
                txn.for_each_entry(n, Direction::Out, filter, |e, _| {
                    if vis.contains(e.neighbor) {
                        edges.push(SubgraphEdge {
                            id: EdgeId(e.edge),
                            from: n,
                            to: NodeId(e.neighbor),
                            kind: KindId(e.kind),
                        });
                    }
                })?;
            }
        }
        Ok(Subgraph { nodes, edges })
    }

    /// The position of `node` in [`Subgraph::nodes`] as a petgraph index, if it is there (a
    /// linear search: build a map for many look-ups). Feature `petgraph` (on by default).
    #[cfg(feature = "petgraph")]
    pub fn index_of(&self, node: NodeId) -> Option<NodeIndex> {
        self.nodes.iter().position(|(n, _)| *n == node).map(NodeIndex::new)
    }

    /// A directed petgraph `Graph` with node weights `NodeId` and edge weights `EdgeId`, ready for
    /// petgraph's algorithms (PageRank, strongly connected components, Dijkstra, …). Feature
    /// `petgraph` (on by default): petgraph's types are part of this function's signature, so a
    /// build without the feature does not depend on petgraph at all.
    ///
    /// ```
    /// # fn main() -> silograph::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("ctx.silo");
    /// use silograph::{Db, EdgeInput, NodeInput, RootKey};
    /// let db = Db::open(&path, RootKey::from_bytes([1; 32]))?;
    /// let org = db.create_org("acme")?;
    /// let mut w = org.write()?;
    /// let a = w.upsert_node(NodeInput::new("person").source("mail", "a"))?;
    /// let b = w.upsert_node(NodeInput::new("person").source("mail", "b"))?;
    /// w.add_edge(EdgeInput::new(a, b, "emailed"))?;
    /// w.add_edge(EdgeInput::new(b, a, "emailed"))?;
    /// w.commit()?;
    ///
    /// let g = org.read()?.subgraph(a, 1)?.to_petgraph();
    /// assert_eq!((g.node_count(), g.edge_count()), (2, 2));
    /// assert_eq!(petgraph::algo::kosaraju_scc(&g).len(), 1);
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "petgraph")]
    pub fn to_petgraph(&self) -> Graph<NodeId, EdgeId> {
        let mut g = Graph::with_capacity(self.nodes.len(), self.edges.len());
        let mut index: super::visited::IdMap<NodeIndex> = Default::default();
        index.reserve(self.nodes.len());
        for &(n, _) in &self.nodes {
            index.insert(n.0, g.add_node(n));
        }
        for e in &self.edges {
            if let (Some(&a), Some(&b)) = (index.get(&e.from.0), index.get(&e.to.0)) {
                g.add_edge(a, b, e.id);
            }
        }
        g
    }
}
