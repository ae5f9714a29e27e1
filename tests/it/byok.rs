//! Bring-your-own-key parity: epochs past the seal limit, rotation with the host key, export
//! and import, scoped handles that hold only their compartments' keys.

use crate::common::{root_key, tmp};
use silograph::{Compartment, Db, Direction, Error, InputKind, NodeInput, Org, OrgKey, TransportKey};

fn host_key() -> OrgKey {
    OrgKey::from_bytes([0x42; 32])
}

/// Writes `n` people, each with a label and a raw property, linked in a ring, in `commits`
/// write transactions.
fn fill(org: &Org, n: u64, commits: u64) {
    for c in 0..commits {
        let mut w = org.write().unwrap();
        for i in (c * n / commits)..((c + 1) * n / commits) {
            let id = w
                .upsert_node(
                    NodeInput::new("person")
                        .source("crm", format!("p{i}"))
                        .prop("email", format!("p{i}@x"))
                        .label("tier", i as i64 % 3),
                )
                .unwrap();
            if i > 0 {
                let prev = w.lookup("crm", &format!("p{}", i - 1)).unwrap().unwrap();
                w.add_edge(silograph::EdgeInput::new(prev, id, "knows")).unwrap();
            }
        }
        w.commit().unwrap();
    }
}

/// Everything readable about the `n` people, as text.
fn snapshot(org: &Org, n: u64) -> Vec<String> {
    let r = org.read().unwrap();
    (0..n)
        .map(|i| {
            let id = r.lookup("crm", &format!("p{i}")).unwrap().unwrap();
            let node = r.node(id).unwrap().unwrap();
            let nb: Vec<_> = r.neighbors(id, Direction::Both).unwrap().map(|x| x.unwrap()).collect();
            let raw = r.node_props(id, Compartment::Raw).unwrap();
            let labels = r.node_props(id, Compartment::Labels).unwrap();
            format!("{node:?} {nb:?} {raw:?} {labels:?}")
        })
        .collect()
}

#[test]
fn byok_org_past_the_seal_limit_is_in_a_new_epoch_and_reopens_with_the_host_key() {
    let path = tmp("byok-limit.silo");
    let db = Db::builder().rotate_after_seals(50).open(&path, root_key(1)).unwrap();
    let org = db.create_org_with_key("globex", &host_key()).unwrap();
    fill(&org, 60, 3);
    let info = db.org_info("globex").unwrap();
    assert!(info.current_epoch >= 1, "crossing the seal limit moved new seals to a new epoch");
    assert!(info.rotation_in_progress);
    let before = snapshot(&org, 60);
    drop((org, db));

    let db = Db::open(&path, root_key(1)).unwrap();
    let org = db.org_with_key("globex", &host_key()).unwrap();
    assert_eq!(snapshot(&org, 60), before);
    match db.rotate_org_key("globex") {
        Err(Error::InvalidInput(e)) => assert_eq!(e.kind(), &InputKind::KeyKind),
        other => panic!("{other:?}"),
    }
    assert!(matches!(db.rotate_org_key_with_key("globex", &OrgKey::from_bytes([1; 32])), Err(Error::WrongKey)));
    let report = db.rotate_org_key_with_key("globex", &host_key()).unwrap();
    assert!(report.resumed);
    let info = db.org_info("globex").unwrap();
    assert_eq!(info.epochs.len(), 1, "older epochs retired");
    assert!(!info.rotation_in_progress);
    assert_eq!(snapshot(&org, 60), before);
    drop((org, db));
    let db = Db::open(&path, root_key(1)).unwrap();
    assert_eq!(snapshot(&db.org_with_key("globex", &host_key()).unwrap(), 60), before);
    assert!(matches!(db.org_with_key("globex", &OrgKey::from_bytes([1; 32])), Err(Error::WrongKey)));
}

#[test]
fn byok_org_rotates_and_reseals_with_the_host_key() {
    let path = tmp("byok-rot.silo");
    let db = Db::open(&path, root_key(1)).unwrap();
    let org = db.create_org_with_key("globex", &host_key()).unwrap();
    fill(&org, 30, 1);
    let before = snapshot(&org, 30);
    let report = db.rotate_org_key_with_key("globex", &host_key()).unwrap();
    assert_eq!(report.epoch, 1);
    assert!(report.resealed > 30);
    assert!(!report.resumed);
    assert_eq!(db.org_info("globex").unwrap().epochs.iter().map(|e| e.0).collect::<Vec<_>>(), [1]);
    // The open handle learns the new epoch; writes after it read back.
    assert_eq!(snapshot(&org, 30), before);
    let mut w = org.write().unwrap();
    w.upsert_node(NodeInput::new("person").source("crm", "later").label("tier", 9i64)).unwrap();
    w.commit().unwrap();
    drop((org, db));
    let db = Db::open(&path, root_key(1)).unwrap();
    let org = db.org_with_key("globex", &host_key()).unwrap();
    assert_eq!(snapshot(&org, 30), before);
    let r = org.read().unwrap();
    let later = r.lookup("crm", "later").unwrap().unwrap();
    assert_eq!(r.node_props(later, Compartment::Labels).unwrap(), [("tier".to_string(), silograph::Value::I64(9))]);
    drop(r);
    assert!(org.verify().unwrap().corrupt.is_empty());
    let audit = org.audit().entries().unwrap();
    assert!(audit.iter().any(|e| e.op == "rotate-org-key"));
}

#[test]
fn byok_org_exports_and_imports() {
    let db = Db::open(tmp("byok-export.silo"), root_key(1)).unwrap();
    let org = db.create_org_with_key("globex", &host_key()).unwrap();
    fill(&org, 20, 1);
    org.secrets().unwrap().put("token", "t0k3n".into()).unwrap();
    let before = snapshot(&org, 20);
    let transport = TransportKey::from_bytes([7; 32]);
    let mut sink = Vec::new();
    match db.export_org("globex", &transport, &mut sink) {
        Err(Error::InvalidInput(e)) => assert_eq!(e.kind(), &InputKind::KeyKind),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        db.export_org_with_key("globex", &OrgKey::from_bytes([1; 32]), &transport, &mut sink),
        Err(Error::WrongKey)
    ));
    let mut bundle = Vec::new();
    db.export_org_with_key("globex", &host_key(), &transport, &mut bundle).unwrap();
    assert!(!bundle.windows(32).any(|w| w == [0x42; 32]), "the host key travels in the bundle");

    // Into a managed org elsewhere ...
    let managed = Db::open(tmp("byok-import-managed.silo"), root_key(2)).unwrap();
    managed.import_org(bundle.as_slice(), &transport).unwrap();
    assert_eq!(snapshot(&managed.org("globex").unwrap(), 20), before);
    // ... and into a BYOK org under another host key.
    let other = Db::open(tmp("byok-import.silo"), root_key(3)).unwrap();
    let new_key = OrgKey::from_bytes([0x24; 32]);
    other.import_org_with_key(bundle.as_slice(), &transport, &new_key).unwrap();
    assert!(matches!(other.org_with_key("globex", &host_key()), Err(Error::WrongKey)));
    let imported = other.org_with_key("globex", &new_key).unwrap();
    assert_eq!(snapshot(&imported, 20), before);
    assert_eq!(imported.secrets().unwrap().get("token").unwrap().unwrap().expose(), b"t0k3n");
    assert!(other.org_info("globex").unwrap().byok);
    assert!(imported.audit().verify().unwrap().first_bad.is_none());
}

#[test]
fn scoped_byok_handle_holds_only_its_compartments_keys() {
    let db = Db::open(tmp("byok-scope.silo"), root_key(1)).unwrap();
    let full = db.create_org_with_key("globex", &host_key()).unwrap();
    fill(&full, 10, 1);
    assert_eq!(silograph::fuzzing::byok_chain_scope(&full).unwrap(), Compartment::FULL_SCOPE);

    let scoped = db.org_scoped("globex", Some(&host_key()), &[Compartment::Core, Compartment::Labels]).unwrap();
    assert_eq!(silograph::fuzzing::byok_chain_scope(&scoped).unwrap(), [Compartment::Core, Compartment::Labels]);
    for c in [Compartment::Raw, Compartment::Secrets] {
        assert!(!scoped.holds_key_for(c), "{c:?}");
    }
    // A rotation while the scoped handle is open: it derives the new epoch's keys of its own
    // compartments (from its chain keys) and still none of the others.
    db.rotate_org_key_with_key("globex", &host_key()).unwrap();
    let r = scoped.read().unwrap();
    let id = r.lookup("crm", "p3").unwrap().unwrap();
    assert_eq!(r.node_props(id, Compartment::Labels).unwrap().len(), 1);
    assert!(matches!(r.node_props(id, Compartment::Raw), Err(Error::Denied(Compartment::Raw))));
    assert!(matches!(scoped.secrets(), Err(Error::Denied(Compartment::Secrets))));
    assert!(!scoped.holds_key_for(Compartment::Raw));
    assert!(scoped.holds_key_for(Compartment::Labels));
}
