//! Full re-key: new structure and data keys, every record key re-blinded.

use std::collections::BTreeMap;

use crate::common::backend::{Fault, FaultDisk, SharedBytes};
use crate::common::{root_key, tmp};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use silograph::{Compartment, Db, DbBuilder, Direction, EdgeInput, Error, InputKind, NodeInput, Org};

type Raw = TableDefinition<'static, &'static [u8], &'static [u8]>;
const TABLES: [&str; 10] = ["meta", "orgs", "nodes", "props", "edges", "adj", "index", "dict", "audit", "tree"];

/// People `from..to` with a raw property and a label, linked in a chain.
fn add_people(org: &Org, from: u64, to: u64) {
    let mut w = org.write().unwrap();
    for i in from..to {
        let id = w
            .upsert_node(
                NodeInput::new("person")
                    .source("crm", format!("p{i}"))
                    .prop("email", format!("p{i}@x"))
                    .label("t", 1i64),
            )
            .unwrap();
        if i > 0 {
            if let Some(prev) = w.lookup("crm", &format!("p{}", i - 1)).unwrap() {
                w.add_edge(EdgeInput::new(prev, id, "knows").source("mail", format!("m{i}"))).unwrap();
            }
        }
    }
    w.commit().unwrap();
}

fn snapshot(org: &Org, n: u64) -> Vec<String> {
    let r = org.read().unwrap();
    let mut out = vec![format!("{:?}", r.counts().unwrap())];
    for i in 0..n {
        let id = r.lookup("crm", &format!("p{i}")).unwrap().unwrap();
        let node = r.node(id).unwrap().unwrap();
        let nb: Vec<_> = r.neighbors(id, Direction::Both).unwrap().map(|x| x.unwrap()).collect();
        let raw = r.node_props(id, Compartment::Raw).unwrap();
        let labels = r.node_props(id, Compartment::Labels).unwrap();
        let edge = i.checked_sub(1).map(|j| r.lookup_edge("mail", &format!("m{}", j + 1)).unwrap());
        out.push(format!("{node:?} {nb:?} {raw:?} {labels:?} {edge:?}"));
    }
    out
}

fn rows(path: &std::path::Path) -> BTreeMap<(&'static str, Vec<u8>), Vec<u8>> {
    let raw = redb::Database::open(path).unwrap();
    let rtx = raw.begin_read().unwrap();
    let mut out = BTreeMap::new();
    for t in TABLES {
        for item in rtx.open_table(Raw::new(t)).unwrap().iter().unwrap() {
            let (k, v) = item.unwrap();
            out.insert((t, k.value().to_vec()), v.value().to_vec());
        }
    }
    out
}

#[test]
fn full_rekey_moves_every_record_to_new_keys_and_keeps_the_data() {
    let path = tmp("rekey.silo");
    let db = Db::open(&path, root_key(1)).unwrap();
    let org = db.create_org("acme").unwrap();
    db.create_org("globex").unwrap();
    add_people(&org, 0, 40);
    org.secrets().unwrap().put("token", "t".into()).unwrap();
    let before = snapshot(&org, 40);
    drop((org, db));
    let old_rows = rows(&path);

    let db = Db::open(&path, root_key(1)).unwrap();
    let stale = db.org("acme").unwrap();
    let report = db.rekey_org("acme").unwrap();
    assert!(report.resealed > 40);
    let acme = db.org("acme").unwrap();
    assert_eq!(snapshot(&acme, 40), before);
    assert_eq!(acme.secrets().unwrap().get("token").unwrap().unwrap().expose(), b"t");
    assert!(db.verify().unwrap().is_ok());
    let audit = acme.audit();
    assert!(audit.verify().unwrap().first_bad.is_none());
    assert_eq!(audit.entries().unwrap().last().unwrap().op, "rekey-org");
    // A handle from before the re-key holds the old keys: its writes are refused.
    match stale.write() {
        Err(Error::InvalidInput(e)) => assert_eq!(e.kind(), &InputKind::WrongState),
        other => panic!("{other:?}"),
    }
    // Writes after the re-key read back after reopening.
    add_people(&acme, 40, 50);
    drop((audit, stale, acme, db));
    let db = Db::open(&path, root_key(1)).unwrap();
    let acme = db.org("acme").unwrap();
    let after = snapshot(&acme, 50);
    assert_eq!(after[1..40], before[1..40], "records from before the re-key changed");
    drop((acme, db));
    // No record key of the org survived (audit keys are sequence numbers: same keys, new values).
    let new_rows = rows(&path);
    // acme's tag: its registry row is the one that changed (globex's is untouched).
    let tags: Vec<&Vec<u8>> = old_rows
        .iter()
        .filter(|((t, k), v)| *t == "orgs" && new_rows.get(&(*t, k.clone())) != Some(v))
        .map(|((_, k), _)| k)
        .collect();
    assert_eq!(tags.len(), 1);
    let mut checked = 0;
    for ((t, k), v) in &old_rows {
        if ["meta", "orgs"].contains(t) || !k.starts_with(tags[0]) {
            continue;
        }
        checked += 1;
        match new_rows.get(&(*t, k.clone())) {
            None => {}
            Some(nv) => {
                assert!(*t == "audit" || nv == v, "a {t} key of the old structure is still in use");
                if *t == "audit" {
                    assert_ne!(nv, v, "an audit entry was not re-sealed");
                }
            }
        }
    }
    assert!(checked > 40);
}

/// The page cache is keyed by plaintext addresses (`store::cache::PageKey`), not blind keys: a
/// handle from before a re-key must still not read, through the cache, the pages a new handle
/// decrypted under the new keys. Two things keep it out, each enough alone (checked by breaking
/// each, then both: only both fail this test): a re-keyed org's handles get their own shared
/// state (`OrgShared::incarnation` digests the structure fingerprint), and every page key starts
/// with the reading handle's structure fingerprint.
#[test]
fn a_handle_from_before_a_rekey_reads_nothing_through_pages_a_new_handle_cached() {
    let path = tmp("rekey-stale-cache.silo");
    let db = Db::open(&path, root_key(1)).unwrap();
    add_people(&db.create_org("acme").unwrap(), 0, 40);
    let stale = db.org("acme").unwrap();
    let ids: Vec<_> = {
        let r = stale.read().unwrap();
        (0..40).map(|i| r.lookup("crm", &format!("p{i}")).unwrap().unwrap()).collect()
    };
    let before = snapshot(&stale, 40);
    db.rekey_org("acme").unwrap();
    let acme = db.org("acme").unwrap();
    // Every page the walk below needs is now in the cache, decrypted under the new keys.
    assert_eq!(snapshot(&acme, 40), before);
    let r = stale.read().unwrap();
    for (i, &id) in ids.iter().enumerate() {
        assert!(r.node(id).is_err(), "node p{i} read through a handle from before the re-key");
        let nb: Result<Vec<_>, _> = r.neighbors(id, Direction::Both).and_then(|it| it.collect());
        assert!(nb.is_err(), "neighbors of p{i} read through a handle from before the re-key");
        assert!(r.lookup("crm", &format!("p{i}")).is_err(), "lookup of p{i} through a stale handle");
    }
}

#[test]
fn after_root_rotation_and_rekey_old_root_key_and_old_rows_tell_present_from_absent_ids_apart_no_more() {
    let path = tmp("rekey-oracle.silo");
    let db = Db::open(&path, root_key(1)).unwrap();
    let org = db.create_org("acme").unwrap();
    add_people(&org, 0, 20);
    drop((org, db));
    // What someone holding root key 1 kept: the meta rows and acme's registry row.
    let kept: Vec<_> = rows(&path).into_iter().filter(|((t, _), _)| ["meta", "orgs"].contains(t)).collect();

    let db = Db::open(&path, root_key(1)).unwrap();
    db.rotate_root_key(root_key(2)).unwrap();
    db.rekey_org("acme").unwrap();
    add_people(&db.org("acme").unwrap(), 20, 40);
    drop(db);

    // Splice the old rows into a copy of the current file and use the old key.
    let spliced = tmp("rekey-spliced.silo");
    std::fs::copy(&path, &spliced).unwrap();
    {
        let raw = redb::Database::open(&spliced).unwrap();
        let wtx = raw.begin_write().unwrap();
        for ((t, k), v) in &kept {
            wtx.open_table(Raw::new(t)).unwrap().insert(k.as_slice(), v.as_slice()).unwrap();
        }
        wtx.commit().unwrap();
    }
    let outcome = |id: &str| -> String {
        let db = match Db::open(&spliced, root_key(1)) {
            Ok(db) => db,
            Err(e) => {
                return format!("open: {}", std::mem::discriminant(&e) == std::mem::discriminant(&Error::WrongKey))
            }
        };
        let org = match db.org("acme") {
            Ok(o) => o,
            Err(e) => return format!("org: {e}"),
        };
        let r = match org.read() {
            Ok(r) => r,
            Err(e) => return format!("read: {e}"),
        };
        match r.lookup("crm", id) {
            Ok(Some(_)) => "found".into(),
            Ok(None) => "absent".into(),
            // The error names the table and an opaque key; what matters is that it is the same.
            Err(Error::Corrupt { table, .. }) => format!("corrupt in {table}"),
            Err(e) => format!("error: {e}"),
        }
    };
    let present_after = outcome("p30");
    let present_before = outcome("p3");
    let absent = outcome("nobody");
    eprintln!("with the old key and old rows, every lookup: {absent}");
    assert_eq!(present_after, absent, "an id added after the re-key is told apart from an absent one");
    assert_eq!(present_before, absent, "an id from before the re-key is told apart from an absent one");
    assert_ne!(absent, "found");
}

#[test]
fn rekey_survives_a_crash_at_every_write_and_can_be_repeated() {
    let pristine = {
        let mem = SharedBytes::default();
        let db = Db::builder().open_with_backend(mem.backend(), root_key(1)).unwrap();
        add_people(&db.create_org("acme").unwrap(), 0, 20);
        drop(db);
        mem.snapshot()
    };
    let expected = {
        let db =
            Db::builder().open_with_backend(SharedBytes::from_vec(pristine.clone()).backend(), root_key(1)).unwrap();
        snapshot(&db.org("acme").unwrap(), 20)
    };
    let swept = crash_sweep(
        &pristine,
        |db| db.rekey_org("acme").map(|_| ()),
        |img, n| {
            let db = Db::builder().open_with_backend(SharedBytes::from_vec(img).backend(), root_key(1)).unwrap();
            assert_eq!(snapshot(&db.org("acme").unwrap(), 20), expected, "crash at event {n}");
            db.rekey_org("acme").unwrap();
            assert_eq!(snapshot(&db.org("acme").unwrap(), 20), expected, "crash at event {n}");
            assert!(db.verify().unwrap().is_ok(), "crash at event {n}");
        },
    );
    eprintln!("re-key crash points swept: {swept}");
}

/// Runs `run` on a database opened with root key 1 from `pristine`, once per sampled write or
/// sync (about 24 of them), failing or tearing it; every image a power cut could leave goes to
/// `check` (with the event number). Returns how many points crashed (asserted to be over 5).
fn crash_sweep(pristine: &[u8], run: impl Fn(&Db) -> silograph::Result<()>, check: impl Fn(Vec<u8>, u64)) -> usize {
    crash_sweep_with(pristine, Db::builder, run, check)
}

/// [`crash_sweep`] with the databases opened from `builder`.
fn crash_sweep_with(
    pristine: &[u8],
    builder: impl Fn() -> DbBuilder,
    run: impl Fn(&Db) -> silograph::Result<()>,
    check: impl Fn(Vec<u8>, u64),
) -> usize {
    let disk = FaultDisk::from_bytes(pristine.to_vec());
    let db = builder().open_with_backend(disk.backend(), root_key(1)).unwrap();
    let start = disk.events();
    run(&db).unwrap();
    let total = disk.events() - start;
    drop(db);
    let mut swept = 0;
    for n in (0..total).step_by(usize::try_from(total / 24).unwrap_or(1).max(1)) {
        let disk = FaultDisk::from_bytes(pristine.to_vec());
        let db = builder().open_with_backend(disk.backend(), root_key(1)).unwrap();
        disk.arm(n, if n % 2 == 0 { Fault::Fail } else { Fault::Tear { keep_num: (n % 8) as u8 } });
        let outcome = run(&db);
        drop(db);
        if !disk.crashed() {
            assert!(outcome.is_ok(), "no fault at event {n}, yet it failed: {outcome:?}");
            continue;
        }
        swept += 1;
        for img in disk.images_after_power_cut(&[u64::MAX, 0]) {
            check(img, n);
        }
    }
    assert!(swept > 5, "only {swept} of {total} points crashed");
    swept
}

#[test]
fn rekey_refuses_byok_orgs_and_a_rotation_in_progress() {
    let db = Db::builder().rotate_after_seals(20).open(tmp("rekey-refuse.silo"), root_key(1)).unwrap();
    db.create_org_with_key("globex", &crate::common::byok()).unwrap();
    match db.rekey_org("globex") {
        Err(Error::InvalidInput(e)) => assert_eq!(e.kind(), &InputKind::KeyKind),
        other => panic!("{other:?}"),
    }
    let acme = db.create_org("acme").unwrap();
    add_people(&acme, 0, 30);
    assert!(db.org_info("acme").unwrap().rotation_in_progress);
    match db.rekey_org("acme") {
        Err(Error::InvalidInput(e)) => assert_eq!(e.kind(), &InputKind::WrongState),
        other => panic!("{other:?}"),
    }
    db.rotate_org_key("acme").unwrap();
    db.rekey_org("acme").unwrap();
    assert!(db.verify().unwrap().is_ok());
}

/// The record-key prefixes (org tags) that occur in the file's org tables.
fn tags_in(path: &std::path::Path) -> std::collections::BTreeSet<Vec<u8>> {
    rows(path).into_keys().filter(|(t, _)| !["meta", "orgs"].contains(t)).map(|(_, k)| k[..8].to_vec()).collect()
}

#[test]
fn root_rotation_rotates_the_database_secret_so_old_secrets_name_no_org_created_or_rekeyed_since() {
    let path = tmp("rekey-db-secret.silo");
    let db = Db::open(&path, root_key(1)).unwrap();
    for name in ["acme", "gamma"] {
        add_people(&db.create_org(name).unwrap(), 0, 10);
    }
    let anchor_before = db.anchor().unwrap();
    drop(db);
    // What someone holding root key 1 kept: a copy of the file (its `meta` holds secret 1).
    let old_copy = tmp("rekey-db-secret-old.silo");
    std::fs::copy(&path, &old_copy).unwrap();

    let db = Db::open(&path, root_key(1)).unwrap();
    db.rotate_root_key(root_key(2)).unwrap();
    add_people(&db.create_org("beta").unwrap(), 0, 10);
    db.rekey_org("acme").unwrap();
    // gamma is neither re-keyed nor recreated: found under the secret it was tagged under.
    assert!(matches!(db.create_org("gamma"), Err(Error::OrgExists(_))));
    let current: Vec<_> = ["acme", "beta", "gamma"].iter().map(|n| silograph::fuzzing::org_tags(&db, n)).collect();
    drop(db);

    let old = Db::open(&old_copy, root_key(1)).unwrap();
    let old_tag = |name: &str| -> Vec<u8> {
        let tags = silograph::fuzzing::org_tags(&old, name);
        assert_eq!(tags.len(), 1, "the old copy knows one database secret");
        tags[0].to_vec()
    };
    let in_file = tags_in(&path);
    assert!(!in_file.contains(&old_tag("acme")), "the re-keyed org is still under its old tag");
    assert!(!in_file.contains(&old_tag("beta")), "an org created after the rotation is under the old secret's tag");
    // The control: what the old secret still names (documented), and the probe works.
    assert!(in_file.contains(&old_tag("gamma")), "an org neither re-keyed nor created since keeps its tag");
    assert!(in_file.contains(current[0][0].as_slice()) && in_file.contains(current[1][0].as_slice()));
    assert_eq!(current[2].len(), 2, "the current and the retired secret");
    assert_eq!(current[2][1].to_vec(), old_tag("gamma"));
    drop(old);

    // Everything opens under the new key, and across a second rotation; the anchor from before
    // both rotations still verifies.
    let db = Db::open(&path, root_key(2)).unwrap();
    db.rotate_root_key(root_key(3)).unwrap();
    drop(db);
    let db = Db::builder().expect_anchor(anchor_before).open(&path, root_key(3)).unwrap();
    for name in ["acme", "beta", "gamma"] {
        let org = db.org(name).unwrap();
        assert_eq!(snapshot(&org, 10).len(), 11, "{name}");
        add_people(&org, 10, 12);
    }
    assert_eq!(silograph::fuzzing::org_tags(&db, "gamma").len(), 3);
    db.delete_org("gamma").unwrap();
    assert!(matches!(db.org("gamma"), Err(Error::OrgNotFound(_))));
    let fresh = db.create_org("gamma").unwrap();
    add_people(&fresh, 0, 3);
    let report = db.verify().unwrap();
    assert!(report.is_ok(), "{report:?}");
    let kept = db.anchor().unwrap();
    drop((fresh, db));
    let db = Db::builder().expect_anchor(kept).open(&path, root_key(3)).unwrap();
    assert_eq!(db.org("gamma").unwrap().read().unwrap().counts().unwrap().0, 3);
}

/// Opens `img` with whichever of the root keys `keys` opens it.
fn open_either(img: Vec<u8>, keys: &[u8]) -> (Db, u8) {
    for &k in keys {
        match Db::builder().open_with_backend(SharedBytes::from_vec(img.clone()).backend(), root_key(k)) {
            Ok(db) => return (db, k),
            Err(Error::WrongKey) => continue,
            Err(e) => panic!("root key {k}: {e}"),
        }
    }
    panic!("no root key of {keys:?} opens the image")
}

#[test]
fn root_rotation_then_rekey_onto_the_new_secret_survive_a_crash_at_every_write() {
    let pristine = {
        let mem = SharedBytes::default();
        let db = Db::builder().open_with_backend(mem.backend(), root_key(1)).unwrap();
        add_people(&db.create_org("acme").unwrap(), 0, 12);
        add_people(&db.create_org("beta").unwrap(), 0, 12);
        drop(db);
        mem.snapshot()
    };
    let both = |db: &Db| -> Vec<_> { ["acme", "beta"].iter().map(|n| snapshot(&db.org(n).unwrap(), 12)).collect() };
    let expected =
        both(&Db::builder().open_with_backend(SharedBytes::from_vec(pristine.clone()).backend(), root_key(1)).unwrap());
    let run = |db: &Db| -> silograph::Result<()> {
        db.rotate_root_key(root_key(2))?;
        db.rekey_org("acme").map(|_| ())
    };
    let swept = crash_sweep(&pristine, run, |img, n| {
        // The old key or the new one opens it, never neither, and both orgs are whole.
        let (db, key) = open_either(img, &[1, 2]);
        assert_eq!(both(&db), expected, "crash at event {n}, opened with root key {key}");
        if key == 1 {
            db.rotate_root_key(root_key(2)).unwrap();
        }
        db.rekey_org("acme").unwrap();
        assert_eq!(both(&db), expected, "crash at event {n}, finished");
        assert!(db.verify().unwrap().is_ok(), "crash at event {n}");
    });
    eprintln!("root rotation + re-key crash points swept: {swept}");
}

#[test]
fn root_rotations_while_writers_of_other_orgs_commit_lose_nothing() {
    let path = tmp("rekey-rotate-concurrent.silo");
    let db = Db::open(&path, root_key(1)).unwrap();
    let names: Vec<String> = (0..3).map(|i| format!("org{i}")).collect();
    for n in &names {
        db.create_org(n).unwrap();
    }
    let writers: Vec<_> = names
        .iter()
        .map(|n| {
            let org = db.org(n).unwrap();
            std::thread::spawn(move || {
                for i in 0..40u64 {
                    let mut w = org.write().unwrap();
                    w.upsert_node(NodeInput::new("person").source("crm", format!("p{i}"))).unwrap();
                    w.commit().unwrap();
                }
            })
        })
        .collect();
    for k in 2..6u8 {
        db.rotate_root_key(root_key(k)).unwrap();
        db.create_org(&format!("new{k}")).unwrap();
    }
    for w in writers {
        w.join().unwrap();
    }
    let kept = db.anchor().unwrap();
    drop(db);
    let db = Db::builder().expect_anchor(kept).open(&path, root_key(5)).unwrap();
    for n in &names {
        assert_eq!(db.org(n).unwrap().read().unwrap().counts().unwrap().0, 40, "{n}");
    }
    assert_eq!(db.list_orgs().unwrap().len(), 7);
    assert!(db.verify().unwrap().is_ok());
}

/// A re-key in batches of a few records: a builder for it.
fn small_batches() -> DbBuilder {
    Db::builder().rekey_batch(8)
}

#[test]
fn rekey_in_batches_resumes_after_a_crash_at_every_write_where_it_stopped() {
    let pristine = {
        let mem = SharedBytes::default();
        let db = small_batches().open_with_backend(mem.backend(), root_key(1)).unwrap();
        add_people(&db.create_org("acme").unwrap(), 0, 16);
        add_people(&db.create_org("beta").unwrap(), 0, 4);
        drop(db);
        mem.snapshot()
    };
    let open = |img: Vec<u8>| small_batches().open_with_backend(SharedBytes::from_vec(img).backend(), root_key(1));
    let expected = snapshot(&open(pristine.clone()).unwrap().org("acme").unwrap(), 16);
    let clean = open(pristine.clone()).unwrap().rekey_org("acme").unwrap();
    assert!(clean.batches > 3, "{clean:?}");
    let resumed = std::cell::Cell::new(0);
    let swept = crash_sweep_with(
        &pristine,
        small_batches,
        |db| db.rekey_org("acme").map(|_| ()),
        |img, n| {
            let db = open(img).unwrap();
            assert_eq!(snapshot(&db.org("acme").unwrap(), 16), expected, "crash at event {n}");
            // An interrupted copy is not the org's: it verifies, and no rotation may start on it.
            let v = db.verify().unwrap();
            assert!(v.is_ok(), "crash at event {n}: {:?}", v.corrupt.first());
            let info = db.org_info("acme").unwrap();
            assert!(!info.rotation_in_progress);
            if info.rekey_in_progress {
                match db.rotate_org_key("acme") {
                    Err(Error::InvalidInput(e)) => assert_eq!(e.kind(), &InputKind::WrongState),
                    other => panic!("crash at event {n}: rotation during a re-key: {other:?}"),
                }
            }
            let report = db.rekey_org("acme").unwrap();
            resumed.set(resumed.get() + usize::from(report.resumed));
            assert_eq!(snapshot(&db.org("acme").unwrap(), 16), expected, "crash at event {n}");
            assert_eq!(snapshot(&db.org("beta").unwrap(), 4).len(), 5);
            let v = db.verify().unwrap();
            assert!(v.is_ok(), "crash at event {n}: {:?}", v.corrupt.first());
        },
    );
    eprintln!("batched re-key crash points swept: {swept}, resumed after {} of them", resumed.get());
    assert!(resumed.get() > 0, "no crash point left a re-key to resume");
}

#[test]
fn an_interrupted_rekey_of_an_org_written_since_starts_again_and_leaves_no_copy_behind() {
    let pristine = {
        let mem = SharedBytes::default();
        let db = small_batches().open_with_backend(mem.backend(), root_key(1)).unwrap();
        add_people(&db.create_org("acme").unwrap(), 0, 16);
        drop(db);
        mem.snapshot()
    };
    let disk = FaultDisk::from_bytes(pristine.clone());
    let db = small_batches().open_with_backend(disk.backend(), root_key(1)).unwrap();
    let start = disk.events();
    db.rekey_org("acme").unwrap();
    let total = disk.events() - start;
    drop(db);
    let mut interrupted = 0;
    for n in [total / 3, total / 2, 2 * total / 3] {
        let disk = FaultDisk::from_bytes(pristine.clone());
        let db = small_batches().open_with_backend(disk.backend(), root_key(1)).unwrap();
        disk.arm(n, Fault::Fail);
        assert!(db.rekey_org("acme").is_err());
        drop(db);
        let img = disk.images_after_power_cut(&[u64::MAX]).remove(0);
        let db = small_batches().open_with_backend(SharedBytes::from_vec(img).backend(), root_key(1)).unwrap();
        if !db.org_info("acme").unwrap().rekey_in_progress {
            continue;
        }
        interrupted += 1;
        // The org moves on, so the partial copy no longer fits it.
        add_people(&db.org("acme").unwrap(), 16, 20);
        let report = db.rekey_org("acme").unwrap();
        assert!(!report.resumed, "event {n}: resumed a copy of an older state");
        assert_eq!(snapshot(&db.org("acme").unwrap(), 20).len(), 21);
        let v = db.verify().unwrap();
        assert!(v.is_ok(), "event {n}: {:?}", v.corrupt.first());
    }
    assert!(interrupted > 0);
}

#[test]
fn other_orgs_commit_between_the_batches_of_a_rekey() {
    let path = tmp("rekey-batches-online.silo");
    let db = small_batches().open(&path, root_key(1)).unwrap();
    add_people(&db.create_org("acme").unwrap(), 0, 200);
    let beta = db.create_org("beta").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut w = beta.write().unwrap();
                w.upsert_node(NodeInput::new("person").source("crm", format!("b{n}"))).unwrap();
                w.commit().unwrap();
                n += 1;
            }
            n
        })
    };
    let expected = snapshot(&db.org("acme").unwrap(), 200);
    let report = db.rekey_org("acme").unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let commits = writer.join().unwrap();
    eprintln!("re-key in {} transactions; beta committed {commits} times meanwhile", report.batches);
    assert!(report.batches > 10, "{report:?}");
    assert_eq!(snapshot(&db.org("acme").unwrap(), 200), expected);
    assert_eq!(db.org("beta").unwrap().read().unwrap().counts().unwrap().0, commits);
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn a_handle_opened_during_a_rekey_waits_for_it_and_its_write_is_kept() {
    let path = tmp("rekey-new-handle.silo");
    let db = small_batches().open(&path, root_key(1)).unwrap();
    add_people(&db.create_org("acme").unwrap(), 0, 150);
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            let mut done = 0u64;
            for i in 0..20u64 {
                // A new handle each time: it may open the org during the re-key.
                let org = db.org("acme").unwrap();
                let Ok(mut w) = org.write() else { continue };
                w.upsert_node(NodeInput::new("person").source("crm", format!("late{i}"))).unwrap();
                if w.commit().is_ok() {
                    done += 1;
                }
            }
            done
        })
    };
    let rekeyed = db.rekey_org("acme");
    let done = writer.join().unwrap();
    assert!(matches!(rekeyed, Ok(_) | Err(Error::Conflict(_))), "{rekeyed:?}");
    // Every write that committed is there, re-keyed or not.
    let org = db.org("acme").unwrap();
    let r = org.read().unwrap();
    let kept = (0..20).filter(|i| r.lookup("crm", &format!("late{i}")).unwrap().is_some()).count() as u64;
    assert_eq!(kept, done, "a write committed during the re-key was lost");
    assert_eq!(r.counts().unwrap().0, 150 + done);
    assert!(db.verify().unwrap().is_ok());
}
