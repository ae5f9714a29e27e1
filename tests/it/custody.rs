//! Per-org key custody: shredding that holds against copies of the file.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::common::{root_key, tmp, TmpPath};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use silograph::{
    CallbackCustody, CustodyKeyId, Db, Error, InputKind, KeyCustody, KeyringKey, LocalKeyring, NodeId, NodeInput,
};

type Raw = TableDefinition<'static, &'static [u8], &'static [u8]>;
const TABLES: [&str; 10] = ["meta", "orgs", "nodes", "props", "edges", "adj", "index", "dict", "audit", "tree"];

fn keyring_key() -> KeyringKey {
    KeyringKey::from_bytes([0x4b; 32])
}

fn keyring(path: &TmpPath) -> Arc<LocalKeyring> {
    Arc::new(LocalKeyring::open(path.to_path_buf(), keyring_key()).unwrap())
}

fn open(path: &TmpPath, custody: &Arc<LocalKeyring>) -> Db {
    Db::builder().custody(custody.clone()).open(path, root_key(1)).unwrap()
}

/// Writes `n` people with a property into `org`.
fn fill(db: &Db, org: &str, n: u64) {
    let o = db.org(org).unwrap();
    let mut w = o.write().unwrap();
    for i in 0..n {
        w.upsert_node(
            NodeInput::new("person").source("crm", format!("{org}-{i}")).prop("email", format!("{org}{i}@x")),
        )
        .unwrap();
    }
    w.commit().unwrap();
}

/// Whether `org` opens and reads back what [`fill`] wrote.
fn reads_back(db: &Db, org: &str, n: u64) -> bool {
    let Ok(o) = db.org(org) else { return false };
    let r = o.read().unwrap();
    (0..n).all(|i| {
        let id = r.lookup("crm", &format!("{org}-{i}")).unwrap().unwrap();
        let props = r.node_props(id, silograph::Compartment::Raw).unwrap();
        props.iter().any(|(k, val)| k == "email" && *val == silograph::Value::Str(format!("{org}{i}@x")))
    })
}

fn copy(path: &TmpPath, name: &str) -> TmpPath {
    let dst = tmp(name);
    std::fs::copy(path, &dst).unwrap();
    dst
}

/// Every row of every table: (table, key) → value.
fn rows(path: &std::path::Path) -> BTreeMap<(&'static str, Vec<u8>), Vec<u8>> {
    let raw = redb::Database::open(path).unwrap();
    let rtx = raw.begin_read().unwrap();
    let mut out = BTreeMap::new();
    for t in TABLES {
        let table = rtx.open_table(Raw::new(t)).unwrap();
        for item in table.iter().unwrap() {
            let (k, v) = item.unwrap();
            out.insert((t, k.value().to_vec()), v.value().to_vec());
        }
    }
    out
}

#[test]
fn copy_made_before_delete_cannot_open_the_deleted_org_and_opens_the_others() {
    let path = tmp("custody.silo");
    let ring_path = tmp("custody.keys");
    let ring = keyring(&ring_path);
    let db = open(&path, &ring);
    for org in ["acme", "globex", "initech"] {
        db.create_org(org).unwrap();
        fill(&db, org, 20);
    }
    drop(db);
    let before = copy(&path, "custody-copy.silo");

    let db = open(&path, &ring);
    db.delete_org("acme").unwrap();
    let db = db.compact().unwrap();
    assert!(matches!(db.org("acme"), Err(Error::OrgNotFound(_))));
    drop(db);

    // The copy, with the same root key and the keyring as it is now (reloaded from disk).
    let ring = keyring(&ring_path);
    let old = open(&before, &ring);
    assert!(matches!(old.org("acme"), Err(Error::OrgNotFound(_))), "the deleted org opens from a copy");
    assert!(reads_back(&old, "globex", 20));
    assert!(reads_back(&old, "initech", 20));
    // Verifying the copy checks the others and names the shredded org, reading nothing of it.
    let report = old.verify().unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.shredded, vec!["acme".to_string()]);
    assert_eq!(report.orgs.len(), 2);
    drop(old);

    // The root key alone: the copy opened without custody refuses the custody orgs...
    let bare = Db::open(&before, root_key(1)).unwrap();
    match bare.org("acme") {
        Err(Error::InvalidInput(e)) => assert_eq!(e.kind(), &InputKind::KeyKind),
        other => panic!("{other:?}"),
    }
    drop(bare);
    // ... and an attacker who rewrites the entry without its custody fields (the root key lets
    // them re-seal it) derives wrong keys: nothing of the org reads back.
    let bare = Db::open(&before, root_key(1)).unwrap();
    silograph::fuzzing::strip_custody(&bare, "acme").unwrap();
    let acme = bare.org("acme").unwrap();
    let r = acme.read().unwrap();
    assert!(r.lookup("crm", "acme-0").is_err());
    assert!(r.node(NodeId(1)).is_err());
}

#[test]
fn deleted_orgs_old_rows_put_back_into_the_live_file_stay_deleted() {
    let path = tmp("splice.silo");
    let ring_path = tmp("splice.keys");
    let ring = keyring(&ring_path);
    let db = open(&path, &ring);
    db.create_org("acme").unwrap();
    db.create_org("globex").unwrap();
    fill(&db, "acme", 10);
    fill(&db, "globex", 10);
    drop(db);
    let old = rows(&path);

    let db = open(&path, &ring);
    db.delete_org("acme").unwrap();
    drop(db);
    let live = rows(&path);
    let gone: Vec<_> = old.iter().filter(|(k, _)| !live.contains_key(*k)).collect();
    assert!(gone.iter().any(|((t, _), _)| *t == "orgs"), "the delete removed the registry entry");
    let splice = |rows: Vec<(&'static str, &[u8], &[u8])>| {
        let raw = redb::Database::open(&path).unwrap();
        let wtx = raw.begin_write().unwrap();
        for (t, k, v) in rows {
            wtx.open_table(Raw::new(t)).unwrap().insert(k, v).unwrap();
        }
        wtx.commit().unwrap();
    };
    // The old rows alone: the database root no longer matches the registry.
    splice(gone.iter().map(|((t, k), v)| (*t, k.as_slice(), v.as_slice())).collect());
    match Db::builder().custody(ring.clone()).open(&path, root_key(1)) {
        Err(Error::Corrupt { .. }) => {}
        Ok(db) => assert!(matches!(db.org("acme"), Err(Error::OrgNotFound(_)))),
        Err(e) => panic!("{e:?}"),
    }
    // With the old database root too (every row that changed put back): the registry is
    // consistent again, and acme still does not open: its custody key is gone.
    let changed: Vec<_> = old.iter().filter(|(k, v)| live.get(*k) != Some(*v)).collect();
    splice(changed.iter().map(|((t, k), v)| (*t, k.as_slice(), v.as_slice())).collect());
    let db = open(&path, &ring);
    assert!(matches!(db.org("acme"), Err(Error::OrgNotFound(_))));
    assert!(reads_back(&db, "globex", 10));
    // Deleting it again purges the spliced rows.
    db.delete_org("acme").unwrap();
    assert!(!db.list_orgs().unwrap().contains(&"acme".to_string()));
}

#[test]
fn orgs_created_before_custody_keep_working_and_new_orgs_get_custody() {
    let path = tmp("legacy.silo");
    let ring_path = tmp("legacy.keys");
    let db = Db::open(&path, root_key(1)).unwrap();
    db.create_org("old").unwrap();
    fill(&db, "old", 5);
    drop(db);
    let ring = keyring(&ring_path);
    let db = open(&path, &ring);
    assert!(reads_back(&db, "old", 5));
    db.create_org("new").unwrap();
    fill(&db, "new", 5);
    db.rotate_org_key("new").unwrap();
    db.rotate_root_key(root_key(2)).unwrap();
    drop(db);
    let db = Db::builder().custody(ring.clone()).open(&path, root_key(2)).unwrap();
    assert!(reads_back(&db, "old", 5));
    assert!(reads_back(&db, "new", 5));
    drop(db);
    // Without the custody, the legacy org still opens (it never had copy-proof shredding).
    let db = Db::open(&path, root_key(2)).unwrap();
    assert!(reads_back(&db, "old", 5));
    assert!(db.org("new").is_err());
    drop(db);
    // A full re-key brings the legacy org under custody: then the root key alone opens it no more.
    let db = Db::builder().custody(ring.clone()).open(&path, root_key(2)).unwrap();
    db.rekey_org("old").unwrap();
    assert!(reads_back(&db, "old", 5));
    drop(db);
    let db = Db::open(&path, root_key(2)).unwrap();
    assert!(db.org("old").is_err(), "a re-keyed legacy org still opens without custody");
    drop(db);
    // And a keyring that never held the org's key cannot open it.
    let other = Arc::new(LocalKeyring::open(tmp("other.keys").to_path_buf(), keyring_key()).unwrap());
    let db = Db::builder().custody(other).open(&path, root_key(2)).unwrap();
    assert!(matches!(db.org("new"), Err(Error::WrongKey)));
}

#[test]
fn callback_custody_destroy_shreds_copies() {
    // A toy KMS holding one key per id (here: the plaintext itself, standing in for a wrap).
    type Kms = Arc<Mutex<HashMap<CustodyKeyId, Vec<u8>>>>;
    let kms: Kms = Default::default();
    let calls = Arc::new(Mutex::new(Vec::<&'static str>::new()));
    let custody = |kms: &Kms| {
        let (k1, k2, k3) = (kms.clone(), kms.clone(), kms.clone());
        let (c1, c2, c3) = (calls.clone(), calls.clone(), calls.clone());
        CallbackCustody::new(
            move |id, plain| {
                c1.lock().unwrap().push("wrap");
                k1.lock().unwrap().insert(*id, plain.to_vec());
                Ok(b"wrapped".to_vec())
            },
            move |id, wrapped| {
                c2.lock().unwrap().push("unwrap");
                assert_eq!(wrapped, b"wrapped");
                k2.lock().unwrap().get(id).cloned().map(Into::into).ok_or(Error::CustodyKeyDestroyed)
            },
            move |id| {
                c3.lock().unwrap().push("destroy");
                k3.lock().unwrap().remove(id);
                Ok(())
            },
        )
    };
    let path = tmp("kms.silo");
    let db = Db::builder().custody(custody(&kms)).open(&path, root_key(1)).unwrap();
    db.create_org("acme").unwrap();
    db.create_org("globex").unwrap();
    fill(&db, "acme", 5);
    fill(&db, "globex", 5);
    drop(db);
    let before = copy(&path, "kms-copy.silo");
    let db = Db::builder().custody(custody(&kms)).open(&path, root_key(1)).unwrap();
    db.delete_org("acme").unwrap();
    drop(db);
    assert_eq!(kms.lock().unwrap().len(), 1);
    let old = Db::builder().custody(custody(&kms)).open(&before, root_key(1)).unwrap();
    assert!(matches!(old.org("acme"), Err(Error::OrgNotFound(_))));
    assert!(reads_back(&old, "globex", 5));
    let calls = calls.lock().unwrap();
    assert_eq!(calls.iter().filter(|c| **c == "wrap").count(), 2);
    assert_eq!(calls.iter().filter(|c| **c == "destroy").count(), 1);
}

#[test]
fn local_keyring_is_sealed_private_replaced_atomically_and_forgets_destroyed_keys() {
    let ring_path = tmp("ring.keys");
    let ring = LocalKeyring::open(ring_path.to_path_buf(), keyring_key()).unwrap();
    let (a, b) = (CustodyKeyId::from_bytes([1; 16]), CustodyKeyId::from_bytes([2; 16]));
    let secret = [0x77u8; 32];
    let wa = ring.wrap(&a, &secret).unwrap();
    let wb = ring.wrap(&b, &secret).unwrap();
    assert_eq!(ring.unwrap(&a, &wa).unwrap().as_slice(), &secret);
    assert!(matches!(ring.unwrap(&a, &wb), Err(Error::WrongKey)), "a wrap is bound to its key id");
    let file = std::fs::read(&ring_path).unwrap();
    assert!(!file.windows(32).any(|w| w == secret), "the keyring holds wrapped values in the clear");
    assert!(!file.windows(16).any(|w| w == [1; 16]), "key ids are sealed too");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&ring_path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    ring.destroy(&a).unwrap();
    ring.destroy(&a).unwrap();
    assert!(matches!(ring.unwrap(&a, &wa), Err(Error::CustodyKeyDestroyed)));
    let dir: Vec<_> = std::fs::read_dir(ring_path.parent().unwrap()).unwrap().collect();
    assert_eq!(dir.len(), 1, "no temporary file left beside the keyring");
    drop(ring);

    // Reloaded: the destroyed key stays destroyed, the other still unwraps.
    let ring = LocalKeyring::open(ring_path.to_path_buf(), keyring_key()).unwrap();
    assert!(matches!(ring.unwrap(&a, &wa), Err(Error::CustodyKeyDestroyed)));
    assert!(matches!(ring.wrap(&a, &secret), Err(Error::CustodyKeyDestroyed)));
    assert_eq!(ring.unwrap(&b, &wb).unwrap().as_slice(), &secret);
    drop(ring);
    assert!(matches!(
        LocalKeyring::open(ring_path.to_path_buf(), KeyringKey::from_bytes([9; 32])),
        Err(Error::WrongKey)
    ));
    let mut bytes = std::fs::read(&ring_path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&ring_path, &bytes).unwrap();
    assert!(LocalKeyring::open(ring_path.to_path_buf(), keyring_key()).is_err());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ring_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        match LocalKeyring::open(ring_path.to_path_buf(), keyring_key()) {
            Err(Error::InvalidInput(e)) => assert!(e.message().contains("chmod 600")),
            other => panic!("{other:?}"),
        }
    }
}
