//! Graph queries over a read snapshot: traversal, shortest paths, subgraphs, petgraph export.
