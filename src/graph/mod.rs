//! Graph queries over a read snapshot: breadth-first traversal, shortest paths, subgraphs and
//! their export to petgraph (feature `petgraph`).
//!
//! Every query walks adjacency pages through the snapshot's page cache and applies the same
//! edge filter ([`NeighborFilter`](crate::NeighborFilter) semantics: kinds, valid time, record
//! time). A page that fails to open fails the query: results are never silently partial.

mod filter;
mod path;
mod subgraph;
mod traverse;
pub(crate) mod visited;

pub use path::{Path, PathOptions};
pub use subgraph::{Subgraph, SubgraphEdge};
pub use traverse::Traversal;
