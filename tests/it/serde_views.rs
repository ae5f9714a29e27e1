//! Feature `serde`: reports and views serialize to JSON with their fields, and the plain value
//! types round-trip.

use crate::common::mem_db;
use silograph::{Compartment, Direction, EdgeInput, NodeId, NodeInput, SourceRef, Value};

#[test]
fn verify_report_and_node_view_serialize_with_their_fields() {
    let db = mem_db();
    let acme = db.create_org("acme").unwrap();
    let mut w = acme.write().unwrap();
    let a = w.upsert_node(NodeInput::new("person").source("gmail", "a@x")).unwrap();
    let b = w.upsert_node(NodeInput::new("deal").source("sf", "1")).unwrap();
    w.add_edge(EdgeInput::new(a, b, "owns")).unwrap();
    w.commit().unwrap();

    let report = db.verify().unwrap();
    assert!(report.is_ok());
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["orgs"], serde_json::json!(["acme"]));
    assert_eq!(json["corrupt"], serde_json::json!([]));
    let checked: u64 = json["checked"].as_array().unwrap().iter().map(|p| p[1].as_u64().unwrap()).sum();
    assert_eq!(checked, report.records());

    let view = acme.read().unwrap().node(a).unwrap().unwrap();
    let json = serde_json::to_value(&view).unwrap();
    assert_eq!(json["id"], serde_json::json!(a.0));
    assert_eq!(json["kind"], "person");
    assert_eq!(json["sources"], serde_json::json!([{"system": "gmail", "external_id": "a@x"}]));
    assert_eq!(json["out_degree"], 1);
}

#[test]
fn plain_value_types_round_trip_through_json() {
    let id: NodeId = serde_json::from_str(&serde_json::to_string(&NodeId(7)).unwrap()).unwrap();
    assert_eq!(id, NodeId(7));
    assert_eq!(serde_json::to_string(&Direction::Out).unwrap(), r#""out""#);
    assert_eq!(serde_json::from_str::<Compartment>(r#""labels""#).unwrap(), Compartment::Labels);
    for v in [Value::Null, Value::I64(-3), Value::Str("x".into()), Value::Bytes(vec![0, 255]), Value::Timestamp(5)] {
        assert_eq!(serde_json::from_str::<Value>(&serde_json::to_string(&v).unwrap()).unwrap(), v);
    }
    let s = SourceRef::new("gmail", "a@x");
    assert_eq!(serde_json::from_value::<SourceRef>(serde_json::to_value(&s).unwrap()).unwrap(), s);
}
