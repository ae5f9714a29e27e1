//! Keys: a wrong root key or a wrong bring-your-own org key is `WrongKey`, never data, and a
//! refused open leaves the file byte-for-byte as it was (also after an unclean close); an org
//! opened the wrong way (managed with a key, BYOK without one) is `InvalidInput`.

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;

use crate::common::backend::SharedBytes;
use crate::common::{byok, open_on, root, tmp, BYOK, ROOT};
use silograph::{Compartment, Db, EdgeInput, Error, NodeInput, OrgKey, RootKey};

/// Wrong root keys worth trying: all zeros, one flipped bit in the first and last byte, all ones.
fn wrong_roots() -> Vec<RootKey> {
    let mut first = ROOT;
    first[0] ^= 0x01;
    let mut last = ROOT;
    last[31] ^= 0x80;
    vec![
        RootKey::from_bytes([0; 32]),
        RootKey::from_bytes(first),
        RootKey::from_bytes(last),
        RootKey::from_bytes([0xff; 32]),
    ]
}

/// A database at `path` with a managed org "acme" (two nodes, one edge) and a BYOK org "globex".
fn populate(path: &Path) -> Db {
    let db = Db::open(path, root()).unwrap();
    let acme = db.create_org("acme").unwrap();
    let mut w = acme.write().unwrap();
    let a = w.upsert_node(NodeInput::new("person").source("gmail", "alice")).unwrap();
    let b = w.upsert_node(NodeInput::new("deal").source("sf", "006")).unwrap();
    w.add_edge(EdgeInput::new(a, b, "owns")).unwrap();
    w.commit().unwrap();
    let globex = db.create_org_with_key("globex", &byok()).unwrap();
    let mut w = globex.write().unwrap();
    w.upsert_node(NodeInput::new("person").source("gmail", "gina")).unwrap();
    w.commit().unwrap();
    db
}

/// Checks that the data `populate` wrote reads back.
fn assert_populated(db: &Db) {
    let r = db.org("acme").unwrap().read().unwrap();
    let a = r.lookup("gmail", "alice").unwrap().expect("alice");
    assert_eq!(r.node(a).unwrap().unwrap().kind, "person");
    assert_eq!(r.counts().unwrap(), (2, 1));
    let r = db.org_with_key("globex", &byok()).unwrap().read().unwrap();
    assert!(r.lookup("gmail", "gina").unwrap().is_some());
}

fn assert_wrong_key<T: std::fmt::Debug>(r: silograph::Result<T>, what: &str) {
    assert!(matches!(r, Err(Error::WrongKey)), "{what}: expected WrongKey, got {r:?}");
}

fn assert_invalid_input<T: std::fmt::Debug>(r: silograph::Result<T>, what: &str) {
    assert!(matches!(r, Err(Error::InvalidInput(_))), "{what}: expected InvalidInput, got {r:?}");
}

#[test]
fn wrong_root_key_is_refused_at_open_and_leaves_the_file_unchanged() {
    let path = tmp("ctx.silo");
    drop(populate(&path));
    let before = std::fs::read(&path).unwrap();
    for (i, wrong) in wrong_roots().into_iter().enumerate() {
        assert_wrong_key(Db::open(&path, wrong), &format!("wrong root {i}"));
        assert!(std::fs::read(&path).unwrap() == before, "wrong root {i} changed the file");
    }
    assert_wrong_key(Db::builder().cache_size(0).open(&path, wrong_roots().remove(0)), "builder");
    assert!(std::fs::read(&path).unwrap() == before, "builder open changed the file");
    assert_populated(&Db::open(&path, root()).unwrap());
}

#[test]
fn wrong_root_key_leaves_an_uncleanly_closed_file_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.silo");
    // Never closed: redb's "needs repair" state stays in the file, as after a crash. The leaked
    // handle keeps its lock on `live`, so the test works on copies of its bytes.
    std::mem::forget(populate(&live));
    let crashed = std::fs::read(&live).unwrap();

    // The copy really is in the state a crash leaves: plain redb has to repair it.
    let probe = dir.path().join("probe.silo");
    std::fs::write(&probe, &crashed).unwrap();
    let repaired = Rc::new(Cell::new(false));
    let flag = repaired.clone();
    drop(redb::Database::builder().set_repair_callback(move |_| flag.set(true)).create(&probe).unwrap());
    assert!(repaired.get(), "the forgotten database was closed cleanly after all");

    let path = dir.path().join("ctx.silo");
    std::fs::write(&path, &crashed).unwrap();
    for (i, wrong) in wrong_roots().into_iter().enumerate() {
        assert_wrong_key(Db::open(&path, wrong), &format!("wrong root {i}"));
        assert!(std::fs::read(&path).unwrap() == crashed, "wrong root {i} changed the crashed file");
    }
    // The right key repairs it and reads everything committed before the crash.
    let db = Db::open(&path, root()).unwrap();
    assert_populated(&db);
}

#[test]
fn wrong_root_key_on_a_custom_backend_is_refused() {
    let disk = SharedBytes::default();
    let db = open_on(&disk).unwrap();
    db.create_org("acme").unwrap();
    drop(db);
    for (i, wrong) in wrong_roots().into_iter().enumerate() {
        assert_wrong_key(Db::builder().open_with_backend(disk.backend(), wrong), &format!("wrong root {i}"));
    }
    let db = open_on(&disk).unwrap();
    assert_eq!(db.list_orgs().unwrap(), vec!["acme".to_string()]);
}

#[test]
fn wrong_byok_key_is_refused_without_writing_anything() {
    let path = tmp("ctx.silo");
    let db = populate(&path);
    let right = byok();
    let audit_before = db.org_with_key("globex", &right).unwrap().audit().entries().unwrap();
    let mut near = BYOK;
    near[17] ^= 0x04;
    for (i, wrong) in [[0u8; 32], near, ROOT, [0xff; 32]].into_iter().enumerate() {
        let wrong = OrgKey::from_bytes(wrong);
        assert_wrong_key(db.org_with_key("globex", &wrong), &format!("org_with_key {i}"));
        assert_wrong_key(db.org_scoped("globex", Some(&wrong), &Compartment::ALL), &format!("org_scoped {i}"));
        assert_wrong_key(db.org_scoped("globex", Some(&wrong), &[Compartment::Core]), &format!("core scope {i}"));
    }
    let globex = db.org_with_key("globex", &right).unwrap();
    assert_eq!(globex.audit().entries().unwrap(), audit_before, "a refused open wrote an audit entry");
    assert_eq!(globex.counts().unwrap(), (1, 0));
    drop((globex, db));
    // Also refused on a fresh open of the file (nothing cached from the right key).
    let db = Db::open(&path, root()).unwrap();
    assert_wrong_key(db.org_with_key("globex", &OrgKey::from_bytes(near)), "after reopen");
    assert_populated(&db);
}

#[test]
fn managed_org_opened_with_a_key_is_invalid_input() {
    let path = tmp("ctx.silo");
    let db = populate(&path);
    let key = byok();
    assert_invalid_input(db.org_with_key("acme", &key), "org_with_key on a managed org");
    assert_invalid_input(db.org_scoped("acme", Some(&key), &Compartment::ALL), "org_scoped with a key");
    assert!(db.org("acme").is_ok());
}

#[test]
fn byok_org_opened_without_its_key_is_invalid_input() {
    let path = tmp("ctx.silo");
    let db = populate(&path);
    assert_invalid_input(db.org("globex"), "org on a BYOK org");
    assert_invalid_input(db.org_scoped("globex", None, &Compartment::ALL), "org_scoped without a key");
    assert!(db.org_with_key("globex", &byok()).is_ok());
}

#[test]
fn unknown_org_is_org_not_found_whatever_the_key() {
    let path = tmp("ctx.silo");
    let db = populate(&path);
    assert!(matches!(db.org("initech"), Err(Error::OrgNotFound(_))));
    assert!(matches!(db.org_with_key("initech", &byok()), Err(Error::OrgNotFound(_))));
}

#[test]
fn byok_org_created_twice_is_org_exists_and_keeps_its_key() {
    let path = tmp("ctx.silo");
    let db = populate(&path);
    let other = OrgKey::from_bytes([0x33; 32]);
    assert!(matches!(db.create_org_with_key("globex", &other), Err(Error::OrgExists(_))));
    assert!(matches!(db.create_org("globex"), Err(Error::OrgExists(_))));
    assert_wrong_key(db.org_with_key("globex", &other), "the second key did not replace the first");
    assert!(db.org_with_key("globex", &byok()).is_ok());
}

#[test]
fn key_types_and_key_errors_never_print_key_bytes() {
    let root = RootKey::from_bytes([0xab; 32]);
    let org = OrgKey::from_bytes([0xcd; 32]);
    assert_eq!(format!("{root:?}"), "RootKey(<redacted>)");
    assert_eq!(format!("{org:?}"), "OrgKey(<redacted>)");
    let path = tmp("ctx.silo");
    let db = populate(&path);
    let err = db.org_with_key("globex", &org).unwrap_err();
    drop(db);
    let err_root = Db::open(&path, root).unwrap_err();
    for text in [format!("{err:?} {err}"), format!("{err_root:?} {err_root}")] {
        for key_hex in ["abababab", "cdcdcdcd", "11111111", "22222222"] {
            assert!(!text.to_lowercase().contains(key_hex), "error text shows key bytes: {text}");
        }
    }
}
