//! Sealed secrets per org: own compartment key, never in the file in the clear, rotated,
//! exported and shredded with the org, readable only by handles scoped for them.

use crate::common::{root_key, tmp};
use silograph::{Compartment, Db, Error, InputKind, NodeInput, SecretValue, TransportKey};

const NAME: &str = "zz-canary-secret-name-salesforce-oauth";
const VALUE: &str = "ya29.CANARY-TOKEN-3f9c1b7e-never-in-the-file";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn secret(s: &str) -> SecretValue {
    SecretValue::from(s)
}

#[test]
fn secret_names_and_values_never_appear_in_the_file() {
    let path = tmp("secrets.silo");
    let db = Db::open(&path, root_key(1)).unwrap();
    let acme = db.create_org("acme").unwrap();
    let s = acme.secrets().unwrap();
    s.put(NAME, secret(VALUE)).unwrap();
    s.put("api-key", secret(&VALUE.repeat(40))).unwrap();
    assert_eq!(s.get(NAME).unwrap().unwrap().expose(), VALUE.as_bytes());
    drop((s, acme));
    db.rotate_org_key("acme").unwrap();
    drop(db);
    let file = std::fs::read(&path).unwrap();
    assert!(!contains(&file, VALUE.as_bytes()), "a secret value is in the file");
    assert!(!contains(&file, &VALUE.as_bytes()[..16]), "part of a secret value is in the file");
    assert!(!contains(&file, NAME.as_bytes()), "a secret name is in the file");
}

#[test]
fn secrets_put_get_list_delete_and_survive_rotation_reopen_and_export() {
    let path = tmp("secrets2.silo");
    let db = Db::open(&path, root_key(1)).unwrap();
    let acme = db.create_org("acme").unwrap();
    let s = acme.secrets().unwrap();
    assert_eq!(s.list().unwrap(), Vec::<String>::new());
    assert!(s.get("nope").unwrap().is_none());
    s.put("b", secret("2")).unwrap();
    s.put("a", secret("1")).unwrap();
    s.put("b", secret("22")).unwrap();
    assert_eq!(s.list().unwrap(), ["a", "b"]);
    assert!(s.delete("a").unwrap());
    assert!(!s.delete("a").unwrap());
    s.put(NAME, secret(VALUE)).unwrap();
    assert!(matches!(s.put("", secret("x")), Err(Error::InvalidInput(_))));
    assert!(matches!(s.put("big", SecretValue::new(vec![0; 64 * 1024 + 1])), Err(Error::InvalidInput(_))));
    drop((s, acme));
    let report = db.rotate_org_key("acme").unwrap();
    assert!(report.resealed > 0);
    assert_eq!(db.org_info("acme").unwrap().epochs.len(), 1, "old epochs destroyed");
    db.rotate_root_key(root_key(2)).unwrap();
    drop(db);
    let db = Db::open(&path, root_key(2)).unwrap();
    let s = db.org("acme").unwrap().secrets().unwrap();
    assert_eq!(s.get("b").unwrap().unwrap().expose(), b"22");
    assert_eq!(s.get(NAME).unwrap().unwrap().expose(), VALUE.as_bytes());
    assert!(db.verify().unwrap().corrupt.is_empty());

    let transport = TransportKey::from_bytes([7; 32]);
    let mut bundle = Vec::new();
    db.export_org("acme", &transport, &mut bundle).unwrap();
    assert!(!contains(&bundle, VALUE.as_bytes()));
    let other = Db::open(tmp("secrets-import.silo"), root_key(3)).unwrap();
    other.import_org(bundle.as_slice(), &transport).unwrap();
    let s = other.org("acme").unwrap().secrets().unwrap();
    assert_eq!(s.list().unwrap(), ["b", NAME]);
    assert_eq!(s.get(NAME).unwrap().unwrap().expose(), VALUE.as_bytes());
}

#[test]
fn secrets_vanish_with_the_org() {
    let path = tmp("secrets3.silo");
    let db = Db::open(&path, root_key(1)).unwrap();
    db.create_org("acme").unwrap().secrets().unwrap().put(NAME, secret(VALUE)).unwrap();
    db.create_org("globex").unwrap().secrets().unwrap().put("k", secret("v")).unwrap();
    db.delete_org("acme").unwrap();
    let again = db.create_org("acme").unwrap();
    assert_eq!(again.secrets().unwrap().list().unwrap(), Vec::<String>::new());
    assert!(again.secrets().unwrap().get(NAME).unwrap().is_none());
    drop(again);
    let db = db.compact().unwrap();
    assert_eq!(db.org("globex").unwrap().secrets().unwrap().get("k").unwrap().unwrap().expose(), b"v");
}

#[test]
fn only_handles_scoped_for_secrets_hold_the_secrets_key() {
    let db = Db::open(tmp("secrets4.silo"), root_key(1)).unwrap();
    let full = db.create_org("acme").unwrap();
    assert!(full.holds_key_for(Compartment::Secrets));
    full.secrets().unwrap().put("k", secret("v")).unwrap();

    let core = db.org_scoped("acme", None, &[Compartment::Core, Compartment::Raw]).unwrap();
    assert!(!core.holds_key_for(Compartment::Secrets));
    assert!(matches!(core.secrets(), Err(Error::Denied(Compartment::Secrets))));

    let vault = db.org_scoped("acme", None, &[Compartment::Core, Compartment::Secrets]).unwrap();
    assert!(vault.holds_key_for(Compartment::Secrets));
    assert!(!vault.holds_key_for(Compartment::Raw) && !vault.holds_key_for(Compartment::Labels));
    assert_eq!(vault.secrets().unwrap().get("k").unwrap().unwrap().expose(), b"v");

    // The compartment holds no properties.
    let mut w = full.write().unwrap();
    let n = w.upsert_node(NodeInput::new("p").source("s", "1")).unwrap();
    match w.set_node_prop(n, Compartment::Secrets, "x", 1i64) {
        Err(Error::InvalidInput(e)) => assert_eq!(e.kind(), &InputKind::InvalidScope),
        other => panic!("{other:?}"),
    }
    drop(w);
}

#[test]
fn secrets_are_audited_without_names_or_values_and_never_printed() {
    let db = Db::open(tmp("secrets5.silo"), root_key(1)).unwrap();
    let acme = db.create_org("acme").unwrap();
    let s = acme.as_actor("connector-sync").unwrap().secrets().unwrap();
    s.put(NAME, secret(VALUE)).unwrap();
    s.delete(NAME).unwrap();
    let entries = acme.audit().entries().unwrap();
    let ops: Vec<&str> = entries.iter().map(|e| e.op.as_str()).collect();
    assert_eq!(ops, ["create-org", "secret-put", "secret-delete"]);
    assert_eq!(entries[1].actor, "connector-sync");
    let printed = format!("{entries:?}");
    assert!(!printed.contains(NAME) && !printed.contains(VALUE));
    assert!(acme.audit().verify().unwrap().first_bad.is_none());
    let v = secret(VALUE);
    assert_eq!(format!("{v:?}"), "SecretValue(<redacted>)");
    assert!(!format!("{s:?}").contains(VALUE));
}

#[test]
fn an_older_secrets_record_put_back_is_corrupt() {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};
    let dict: TableDefinition<'static, &'static [u8], &'static [u8]> = TableDefinition::new("dict");
    let rows = |path: &std::path::Path| -> Vec<(Vec<u8>, Vec<u8>)> {
        let raw = redb::Database::open(path).unwrap();
        let rtx = raw.begin_read().unwrap();
        let t = rtx.open_table(dict).unwrap();
        t.iter().unwrap().map(|r| r.unwrap()).map(|(k, v)| (k.value().to_vec(), v.value().to_vec())).collect()
    };
    let path = tmp("secrets-rollback.silo");
    let db = Db::open(&path, root_key(1)).unwrap();
    db.create_org("acme").unwrap().secrets().unwrap().put("token", secret("old")).unwrap();
    drop(db);
    let old = rows(&path);
    let db = Db::open(&path, root_key(1)).unwrap();
    db.org("acme").unwrap().secrets().unwrap().put("token", secret("new")).unwrap();
    drop(db);
    let changed: Vec<_> = old.iter().filter(|r| !rows(&path).contains(r)).cloned().collect();
    assert_eq!(changed.len(), 1, "one secrets record");
    {
        let raw = redb::Database::open(&path).unwrap();
        let wtx = raw.begin_write().unwrap();
        wtx.open_table(dict).unwrap().insert(changed[0].0.as_slice(), changed[0].1.as_slice()).unwrap();
        wtx.commit().unwrap();
    }
    let db = Db::open(&path, root_key(1)).unwrap();
    let s = db.org("acme").unwrap().secrets().unwrap();
    assert!(matches!(s.get("token"), Err(Error::Corrupt { .. })), "an older secret was served");
    assert!(!db.verify().unwrap().corrupt.is_empty());
}
