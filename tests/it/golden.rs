//! Golden files: databases written by an earlier build (tests/fixtures/v7/, made by the ignored
//! `generate` test with a fixed root key and deterministic content) must still open and read
//! back every record exactly. A format change without a version bump fails here.
//!
//! Regenerate (only together with a deliberate format change and a `FORMAT_VERSION` bump, into a
//! new `vN` directory): `cargo test --test it -- --ignored golden::generate`.
#![cfg(not(feature = "bench-null-cipher"))]

use crate::common::model::{apply_real, check_org, node_source, OrgModel, Outcome, WOp, ORG_NAMES as ORGS};
use crate::common::{copy_of_golden, golden_fixture, GOLDEN_GLOBEX_KEY, GOLDEN_ROOT};
use silograph::{Compartment, Db, Error, NodeId, OrgKey, RootKey, Value, FORMAT_VERSION};

fn every_value() -> Vec<Value> {
    vec![
        Value::Null,
        Value::Bool(true),
        Value::I64(-42),
        Value::F64(2.5),
        Value::Str("naïve ✓".into()),
        Value::Bytes(vec![0, 1, 2, 255]),
        Value::Timestamp(1_700_000_000_000),
    ]
}

/// The fixture's content: per transaction, the org, its record time and its operations.
fn program() -> Vec<(usize, i64, Vec<WOp>)> {
    let mut txns = Vec::new();
    for org in 0..2 {
        let mut ops = Vec::new();
        for i in 0..6u8 {
            let props = every_value()
                .into_iter()
                .enumerate()
                .filter(|(j, _)| (j + usize::from(i)) % 3 == 0)
                .map(|(j, v)| (Compartment::ALL[j % 3], format!("p{j}"), v))
                .collect();
            let kind = ["person", "deal", "doc"][usize::from(i % 3)];
            ops.push(WOp::Upsert { kind, sources: vec![node_source(i)], props });
        }
        for i in 0..8u64 {
            ops.push(WOp::AddEdge {
                from: 1 + i % 6,
                to: 1 + (i * 5 + 1) % 6,
                kind: if i % 2 == 0 { "owns" } else { "emailed" },
                source: (i < 4).then(|| ("sf".to_string(), format!("e{i}"))),
                valid_from: (i % 3 != 0).then_some(i as i64 * 10),
                valid_to: (i % 4 == 1).then_some(1_000 + i as i64),
                props: vec![(Compartment::Labels, "w".into(), Value::F64(i as f64))],
            });
        }
        txns.push((org, 1_000 + org as i64, ops));
    }
    // A hub whose out-adjacency spans two pages, then retractions and property changes.
    let mut hub = vec![WOp::Upsert { kind: "hub", sources: vec![("gmail".into(), "hub".into())], props: vec![] }];
    for i in 0..520u64 {
        hub.push(WOp::AddEdge {
            from: 7,
            to: 1 + i % 6,
            kind: "touched",
            source: None,
            valid_from: None,
            valid_to: None,
            props: vec![],
        });
    }
    txns.push((0, 2_000, hub));
    txns.push((
        0,
        3_000,
        vec![
            WOp::Retract(2),
            WOp::Retract(100),
            WOp::SetNodeProp(1, Compartment::Raw, "title".into(), Value::Str("CTO".into())),
            WOp::RemoveNodeProp(1, Compartment::Core, "p0".into()),
            WOp::SetEdgeProp(3, Compartment::Raw, "subject".into(), Value::Str("hello".into())),
            WOp::Upsert {
                kind: "account",
                sources: vec![node_source(2), ("gmail".into(), "alias-of-n2".into())],
                props: vec![],
            },
        ],
    ));
    txns.push((1, 3_500, vec![WOp::Retract(1), WOp::RemoveEdgeProp(1, Compartment::Labels, "w".into())]));
    txns
}

/// The expected content of both orgs, from the model.
fn expected() -> [OrgModel; 2] {
    let mut models = [OrgModel::default(), OrgModel::default()];
    for (org, t, ops) in program() {
        for op in &ops {
            assert_ne!(models[org].apply(op, t), Outcome::Invalid, "the golden program is valid");
        }
    }
    models
}

fn times() -> Vec<i64> {
    vec![1_000, 1_001, 2_500, 3_000, 3_500]
}

#[test]
#[ignore = "writes tests/fixtures/v7/golden.silo; run only to regenerate the fixture"]
fn generate() {
    let path = golden_fixture();
    let _ = std::fs::remove_file(&path);
    let db = Db::open(&path, RootKey::from_bytes(GOLDEN_ROOT)).expect("create");
    let orgs = [
        db.create_org(ORGS[0]).expect("org"),
        db.create_org_with_key(ORGS[1], &OrgKey::from_bytes(GOLDEN_GLOBEX_KEY)).expect("byok org"),
    ];
    for (org, t, ops) in program() {
        let mut w = orgs[org].write().expect("write");
        w.set_time(t);
        for op in &ops {
            assert_ne!(apply_real(&mut w, op), Outcome::Invalid);
        }
        w.commit().expect("commit");
    }
    let models = expected();
    for (org, m) in orgs.iter().zip(&models) {
        check_org(&org.read().expect("read"), m, &times(), "freshly generated fixture");
    }
    drop(orgs);
    drop(db);
    // Compact so the fixture is small.
    let mut redb = silograph::fuzzing::redb::Database::open(&path).expect("redb open");
    while redb.compact().expect("compact") {}
}

#[test]
fn v7_fixture_opens_and_reads_back_every_record() {
    assert_eq!(FORMAT_VERSION, 7, "format version changed: add a tests/fixtures/vN and keep v7 readable or rejected");
    let path = copy_of_golden("read");
    let db = Db::open(&path, RootKey::from_bytes(GOLDEN_ROOT)).expect("open the v7 fixture");
    assert_eq!(db.list_orgs().expect("list"), vec!["acme".to_string(), "globex".to_string()]);
    let orgs = [
        db.org(ORGS[0]).expect("acme"),
        db.org_with_key(ORGS[1], &OrgKey::from_bytes(GOLDEN_GLOBEX_KEY)).expect("globex"),
    ];
    let models = expected();
    for (i, (org, m)) in orgs.iter().zip(&models).enumerate() {
        let r = org.read().expect("read");
        check_org(&r, m, &times(), &format!("v7 fixture org {}", ORGS[i]));
        // The hub's out-adjacency spans two pages.
        if i == 0 {
            assert_eq!(r.degree(NodeId(7), silograph::Direction::Out).expect("degree"), Some(520));
        }
    }
}

#[test]
fn v7_fixture_rejects_a_wrong_root_key_and_a_wrong_org_key() {
    let path = copy_of_golden("keys");
    let before = std::fs::read(&path).expect("read");
    assert!(matches!(Db::open(&path, RootKey::from_bytes([0; 32])), Err(Error::WrongKey)));
    assert_eq!(std::fs::read(&path).expect("read"), before, "a wrong root key changed the file");
    let db = Db::open(&path, RootKey::from_bytes(GOLDEN_ROOT)).expect("open");
    assert!(matches!(db.org_with_key(ORGS[1], &OrgKey::from_bytes([0; 32])), Err(Error::WrongKey)));
}

#[test]
fn v7_fixture_accepts_new_commits_that_survive_reopen() {
    let path = copy_of_golden("write");
    let mut models = expected();
    {
        let db = Db::open(&path, RootKey::from_bytes(GOLDEN_ROOT)).expect("open");
        let org = db.org(ORGS[0]).expect("acme");
        let mut w = org.write().expect("write");
        w.set_time(9_000);
        let op = WOp::Upsert {
            kind: "person",
            sources: vec![node_source(5), ("gmail".into(), "new".into())],
            props: vec![],
        };
        assert_eq!(apply_real(&mut w, &op), models[0].apply(&op, 9_000));
        w.commit().expect("commit");
    }
    let db = Db::open(&path, RootKey::from_bytes(GOLDEN_ROOT)).expect("reopen");
    check_org(&db.org(ORGS[0]).expect("acme").read().expect("read"), &models[0], &times(), "v7 fixture after a write");
}

/// Files of the formats before this one were never released: v1 (one sealed record per node and
/// edge), v2 (pages without the state tree, written before issue 12), v3 (edge pages as rkyv
/// records, every adjacency list in pages of its own), v4 (the index as one run of buckets), v5
/// (every index bucket and edge page under a key of its own, not clustered) and v6 (a new
/// index run took the slot of the oldest run it absorbed, overwriting its buckets; a v6 build
/// refuses a run in the ninth slot) are refused with a typed error, before anything is written.
#[test]
fn v1_to_v6_files_are_refused_as_unsupported_formats_and_left_unchanged() {
    for v in [1, 2, 3, 4, 5, 6] {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/v{v}/golden.silo"));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("old.silo");
        std::fs::copy(&src, &path).expect("the old fixture is checked in");
        let before = std::fs::read(&path).expect("read");
        match Db::open(&path, RootKey::from_bytes(GOLDEN_ROOT)) {
            Err(Error::UnsupportedFormat(msg)) => assert!(msg.contains(&format!("version {v}")), "{msg}"),
            other => panic!("a v{v} file must be UnsupportedFormat, got {other:?}"),
        }
        assert_eq!(std::fs::read(&path).expect("read"), before, "refusing a v{v} file changed it");
    }
}
