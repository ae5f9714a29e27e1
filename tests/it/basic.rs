//! Basic behaviour of the public API: open, orgs, upsert, edges, reads.

use crate::common::{root, root_key, tmp};
use silograph::{Compartment, Db, Direction, EdgeInput, Error, NodeInput, OrgKey, Value};

#[test]
fn round_trip_nodes_edges_props() {
    let path = tmp("roundtrip");
    let db = Db::open(&path, root()).unwrap();
    let acme = db.create_org("acme").unwrap();
    let mut w = acme.write().unwrap();
    let a = w.upsert_node(NodeInput::new("person").source("gmail", "a@x").prop("title", "CTO")).unwrap();
    let b = w.upsert_node(NodeInput::new("deal").source("sf", "1").label("stage", "won")).unwrap();
    let e = w.add_edge(EdgeInput::new(a, b, "owns").valid_from(10).source("sf", "evt")).unwrap();
    w.commit().unwrap();
    let r = acme.read().unwrap();
    assert_eq!(r.lookup("gmail", "a@x").unwrap(), Some(a));
    let n = r.node(a).unwrap().unwrap();
    assert_eq!(n.kind, "person");
    assert_eq!(n.out_degree, 1);
    let out: Vec<_> = r.neighbors(a, Direction::Out).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].node, b);
    assert_eq!(out[0].edge, e);
    let inn: Vec<_> = r.neighbors(b, Direction::In).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(inn[0].node, a);
    assert_eq!(r.node_props(a, Compartment::Raw).unwrap(), vec![("title".to_string(), Value::from("CTO"))]);
    assert_eq!(r.edge(e).unwrap().unwrap().valid_from, Some(10));
    assert_eq!(r.counts().unwrap(), (2, 1));
    drop(r);
    drop(acme);
    drop(db);
    let db = Db::open(&path, root()).unwrap();
    assert_eq!(db.list_orgs().unwrap(), vec!["acme".to_string()]);
    let r = db.org("acme").unwrap().read().unwrap();
    assert_eq!(r.lookup("sf", "1").unwrap(), Some(b));
    drop(r);
    drop(db);
    assert!(matches!(Db::open(&path, root_key(2)), Err(Error::WrongKey)));
    let db = Db::open(&path, root()).unwrap();
    let k = OrgKey::from_bytes([9; 32]);
    db.create_org_with_key("globex", &k).unwrap();
    assert!(matches!(db.org_with_key("globex", &OrgKey::from_bytes([8; 32])), Err(Error::WrongKey)));
    db.org_with_key("globex", &k).unwrap();
}

#[test]
fn many_edges_span_pages() {
    let path = tmp("pages");
    let db = Db::open(&path, root()).unwrap();
    let org = db.create_org("o").unwrap();
    let mut w = org.write().unwrap();
    let hub = w.upsert_node(NodeInput::new("hub").source("s", "hub")).unwrap();
    let mut ids = Vec::new();
    for i in 0..1300 {
        let n = w.upsert_node(NodeInput::new("leaf").source("s", format!("{i}"))).unwrap();
        w.add_edge(EdgeInput::new(hub, n, "to")).unwrap();
        ids.push(n);
    }
    w.commit().unwrap();
    // a second transaction appends to the tail page
    let mut w = org.write().unwrap();
    for n in &ids[..100] {
        w.add_edge(EdgeInput::new(*n, hub, "back")).unwrap();
        w.add_edge(EdgeInput::new(hub, *n, "again")).unwrap();
    }
    w.commit().unwrap();
    let r = org.read().unwrap();
    assert_eq!(r.neighbors(hub, Direction::Out).unwrap().count(), 1400);
    assert_eq!(r.neighbors(hub, Direction::In).unwrap().count(), 100);
    assert_eq!(r.neighbors(hub, Direction::Both).unwrap().count(), 1500);
    assert_eq!(r.degree(hub, Direction::Out).unwrap(), Some(1400));
}

/// Regression (fuzz `ops_vs_model`): a property set through an idempotent `add_edge` on an edge
/// that the transaction had not loaded made `commit` fail with "transaction already finished".
#[test]
fn props_on_an_edge_found_again_by_its_source_commit_in_a_later_transaction() {
    let path = tmp("edgeprops-later");
    let db = Db::open(&path, root()).unwrap();
    let org = db.create_org("o").unwrap();
    let mut w = org.write().unwrap();
    let a = w.upsert_node(NodeInput::new("n").source("s", "a")).unwrap();
    let b = w.upsert_node(NodeInput::new("n").source("s", "b")).unwrap();
    let e = w.add_edge(EdgeInput::new(a, b, "k").source("s", "e1")).unwrap();
    w.commit().unwrap();
    let mut w = org.write().unwrap();
    assert_eq!(w.add_edge(EdgeInput::new(a, b, "k").source("s", "e1").prop("p", 1i64)).unwrap(), e);
    w.commit().unwrap();
    let r = org.read().unwrap();
    assert_eq!(r.edge_props(e, Compartment::Raw).unwrap(), vec![("p".to_string(), Value::I64(1))]);
    drop((r, org, db));
}
