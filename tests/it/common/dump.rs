//! A logical dump of one org through the public read API: everything a reader can observe, in
//! a deterministic order, so two states compare with `==`.
#![allow(dead_code)]

use silograph::{Compartment, Direction, EdgeId, Error, NodeId, Org, ReadTxn};

/// Every observable fact of one org, one line each.
pub type Dump = Vec<String>;

fn read_all(r: &ReadTxn, node_sources: &[(String, String)], edge_sources: &[(String, String)]) -> Result<Dump, Error> {
    let mut out = Vec::new();
    let (nodes, edges) = r.counts()?;
    out.push(format!("counts {nodes} {edges}"));
    for id in 0..=nodes + 1 {
        let n = r.node(NodeId(id))?;
        out.push(format!("node {id} {n:?}"));
        for c in Compartment::ALL {
            out.push(format!("node {id} props {c:?} {:?}", r.node_props(NodeId(id), c)?));
        }
        {
            for dir in [Direction::Out, Direction::In] {
                let mut list = Vec::new();
                for nb in r.neighbors(NodeId(id), dir)? {
                    let nb = nb?;
                    let kind = r.kind_name(nb.kind)?;
                    list.push(format!("{nb:?} {kind:?}"));
                }
                out.push(format!("node {id} {dir:?} {list:?}"));
            }
        }
    }
    for id in 0..=edges + 1 {
        out.push(format!("edge {id} {:?}", r.edge(EdgeId(id))?));
        for c in Compartment::ALL {
            out.push(format!("edge {id} props {c:?} {:?}", r.edge_props(EdgeId(id), c)?));
        }
    }
    for (s, e) in node_sources {
        out.push(format!("lookup {s}:{e} {:?}", r.lookup(s, e)?));
    }
    for (s, e) in edge_sources {
        out.push(format!("lookup_edge {s}:{e} {:?}", r.lookup_edge(s, e)?));
    }
    Ok(out)
}

/// Dumps `org` as of a fresh read snapshot, probing the given sources in the indexes.
pub fn dump_org(
    org: &Org,
    node_sources: &[(String, String)],
    edge_sources: &[(String, String)],
) -> Result<Dump, Error> {
    let r = org.read()?;
    read_all(&r, node_sources, edge_sources)
}
