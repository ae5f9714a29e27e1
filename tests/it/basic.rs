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

/// Every refused input says which rule it broke (a typed kind), not only a message.
#[test]
fn input_errors_name_the_rule_they_broke() {
    use silograph::{InputKind, NodeId};
    let kind = |r: Result<silograph::NodeId, Error>| match r {
        Err(Error::InvalidInput(e)) => e.kind().clone(),
        other => panic!("expected InvalidInput, got {other:?}"),
    };
    let db = crate::common::mem_db();
    let org = db.create_org("acme").unwrap();
    let mut w = org.write().unwrap();
    assert_eq!(kind(w.upsert_node(NodeInput::new(""))), InputKind::Empty { field: "kind" });
    let long = "x".repeat(1025);
    assert_eq!(
        kind(w.upsert_node(NodeInput::new("p").source("s", long))),
        InputKind::TooLong { field: "external id", len: 1025, limit: silograph::MAX_EXTERNAL_ID_LEN }
    );
    let big = Value::Bytes(vec![0; silograph::MAX_VALUE_LEN + 1]);
    assert!(matches!(
        kind(w.upsert_node(NodeInput::new("p").prop("blob", big))),
        InputKind::TooLong { field: "property value", .. }
    ));
    let a = w.upsert_node(NodeInput::new("p").source("s", "a")).unwrap();
    let b = w.upsert_node(NodeInput::new("p").source("s", "b")).unwrap();
    assert!(matches!(
        w.add_edge(EdgeInput::new(a, NodeId(999), "x")),
        Err(Error::InvalidInput(e)) if *e.kind() == InputKind::UnknownNode
    ));
    assert!(matches!(
        w.add_edge(EdgeInput::new(a, b, "x").valid_from(5).valid_to(5)),
        Err(Error::InvalidInput(e)) if *e.kind() == InputKind::InvalidTimeRange
    ));
    assert_eq!(
        kind(w.upsert_node(NodeInput::new("p").source("s", "a").source("s", "b"))),
        InputKind::ConflictingSources
    );
    drop(w);
    db.create_org_with_key("byok", &OrgKey::from_bytes([3; 32])).unwrap();
    assert!(matches!(db.org("byok"), Err(Error::InvalidInput(e)) if *e.kind() == InputKind::KeyKind));
    assert!(matches!(
        db.org_scoped("acme", None, &[Compartment::Raw]),
        Err(Error::InvalidInput(e)) if *e.kind() == InputKind::InvalidScope
    ));
}
