//! Key lifecycle, compartments, audit trail, verification and org portability.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::common::backend::{Fault, FaultDisk, SharedBytes};
use crate::common::{root_key, tmp, TmpPath};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use silograph::{
    CallbackKey, Compartment, Db, Direction, EdgeInput, EnvKey, Error, FileKey, KeyProvider, NodeId, NodeInput, OrgKey,
    RootKey, TransportKey, Value,
};

type Raw = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// A little graph: `n` people in a ring with labelled and raw properties.
fn fill(db: &Db, org: &str, n: u64) -> Vec<NodeId> {
    let o = db.org(org).unwrap();
    let mut w = o.write().unwrap();
    let ids: Vec<NodeId> = (0..n)
        .map(|i| {
            w.upsert_node(
                NodeInput::new("person")
                    .source("crm", format!("{org}-{i}"))
                    .prop("email", format!("p{i}@{org}"))
                    .label("tier", i as i64 % 3),
            )
            .unwrap()
        })
        .collect();
    for i in 0..n as usize {
        let e = w
            .add_edge(
                EdgeInput::new(ids[i], ids[(i + 1) % ids.len()], "emailed")
                    .valid_from(i as i64)
                    .source("mail", format!("{org}-m{i}")),
            )
            .unwrap();
        w.set_edge_prop(e, Compartment::Raw, "subject", format!("hello {i}")).unwrap();
    }
    w.commit().unwrap();
    ids
}

/// Everything observable about an org, for before/after comparisons.
fn snapshot(db: &Db, org: &str, n: u64) -> Vec<String> {
    let o = db.org(org).unwrap();
    let r = o.read().unwrap();
    let mut out = vec![format!("{:?}", r.counts().unwrap())];
    for i in 0..n {
        let id = r.lookup("crm", &format!("{org}-{i}")).unwrap().unwrap();
        let node = r.node(id).unwrap().unwrap();
        let nb: Vec<_> = r.neighbors(id, Direction::Both).unwrap().map(|x| x.unwrap()).collect();
        let props = r.node_props(id, Compartment::Raw).unwrap();
        let labels = r.node_props(id, Compartment::Labels).unwrap();
        let eprops: Vec<_> = nb.iter().map(|x| r.edge_props(x.edge, Compartment::Raw).unwrap()).collect();
        out.push(format!("{node:?} {nb:?} {props:?} {labels:?} {eprops:?}"));
    }
    out
}

#[test]
fn root_rotation_rewraps_seeds_and_only_the_new_root_opens() {
    let path = tmp("rootrot");
    let db = Db::open(&path, root_key(1)).unwrap();
    for name in ["a", "b", "c"] {
        db.create_org(name).unwrap();
        fill(&db, name, 20);
    }
    let before = snapshot(&db, "b", 20);
    db.rotate_root_key(root_key(2)).unwrap();
    assert_eq!(snapshot(&db, "b", 20), before, "the live handle keeps reading after root rotation");
    drop(db);
    assert!(matches!(Db::open(&path, root_key(1)), Err(Error::WrongKey)));
    let db = Db::open(&path, root_key(2)).unwrap();
    assert_eq!(db.list_orgs().unwrap(), vec!["a", "b", "c"]);
    assert_eq!(snapshot(&db, "b", 20), before);
    drop(db);
}

/// Every envelope of every org record, as (table, epoch).
fn envelope_epochs(path: &std::path::Path) -> Vec<(String, u32)> {
    let raw = redb::Database::open(path).unwrap();
    let rtx = raw.begin_read().unwrap();
    let mut out = Vec::new();
    for name in ["nodes", "props", "edges", "adj", "index", "dict", "audit"] {
        let t = rtx.open_table(Raw::new(name)).unwrap();
        for item in t.iter().unwrap() {
            let (_, v) = item.unwrap();
            let v = v.value();
            out.push((name.to_string(), u32::from_le_bytes([v[1], v[2], v[3], v[4]])));
        }
    }
    out
}

#[test]
fn org_rotation_reseals_every_record_and_destroys_old_seeds() {
    let path = tmp("orgrot");
    let db = Db::open(&path, root_key(1)).unwrap();
    db.create_org("acme").unwrap();
    // More records than one batch, so rotation spans several transactions.
    fill(&db, "acme", 900);
    let before = snapshot(&db, "acme", 900);
    let report = db.rotate_org_key("acme").unwrap();
    assert_eq!(report.epoch, 1);
    assert!(report.batches > 7, "{report:?}");
    assert!(!report.resumed);
    let info = db.org_info("acme").unwrap();
    assert_eq!(info.current_epoch, 1);
    assert_eq!(info.epochs.iter().map(|e| e.0).collect::<Vec<_>>(), vec![1], "epoch 0's seed is destroyed");
    assert!(!info.rotation_in_progress);
    assert_eq!(snapshot(&db, "acme", 900), before);
    {
        let rep = db.verify().unwrap();
        assert!(rep.is_ok(), "{:#?}", rep.corrupt.iter().take(5).collect::<Vec<_>>());
    }
    drop(db);
    let epochs = envelope_epochs(&path);
    // Small nodes keep their adjacency inline in their node pages: fewer values than records.
    assert!(epochs.len() > 2500, "{}", epochs.len());
    assert!(epochs.iter().all(|(_, e)| *e == 1), "a record is still under the old epoch");
}

#[test]
fn concurrent_readers_and_writers_keep_working_while_an_org_rotates() {
    let path = tmp("rotconc");
    let db = Db::open(&path, root_key(1)).unwrap();
    db.create_org("acme").unwrap();
    let ids = fill(&db, "acme", 600);
    let org = db.org("acme").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // Set once the writer's `commit()` has returned: every snapshot begun after that sees the edge.
    let committed = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reads_after_commit = Arc::new(AtomicU64::new(0));
    let reader = {
        let (org, stop, committed, reads, reads_after, ids) =
            (org.clone(), stop.clone(), committed.clone(), reads.clone(), reads_after_commit.clone(), ids.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let after_commit = committed.load(Ordering::SeqCst);
                let r = org.read().unwrap();
                // The writer's commit is atomic: a snapshot sees its node iff it sees its edge.
                let sees_commit = r.lookup("crm", "late").unwrap().is_some();
                assert!(sees_commit || !after_commit, "a snapshot begun after the commit misses it");
                for (k, id) in ids.iter().enumerate().step_by(37) {
                    let degree =
                        r.neighbors(*id, Direction::Both).unwrap().collect::<Result<Vec<_>, _>>().unwrap().len();
                    // ids[0] gains the writer's edge: 2 neighbours before the commit, 3 after.
                    let expected = if k == 0 && sees_commit { 3 } else { 2 };
                    assert_eq!(degree, expected, "node {k}, snapshot sees the commit: {sees_commit}");
                    assert!(r.node_props(*id, Compartment::Raw).unwrap().len() == 1);
                }
                reads.fetch_add(1, Ordering::SeqCst);
                if after_commit {
                    reads_after.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    db.rotate_org_key("acme").unwrap();
    // The writer works with a handle opened before the rotation.
    let mut w = org.write().unwrap();
    let n = w.upsert_node(NodeInput::new("person").source("crm", "late")).unwrap();
    w.add_edge(EdgeInput::new(n, ids[0], "emailed")).unwrap();
    w.commit().unwrap();
    committed.store(true, Ordering::SeqCst);
    // Let the reader check at least one snapshot begun after the commit.
    while reads_after_commit.load(Ordering::SeqCst) == 0 && !reader.is_finished() {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::SeqCst);
    reader.join().unwrap();
    assert!(reads.load(Ordering::SeqCst) > 0);
    assert!(reads_after_commit.load(Ordering::SeqCst) > 0);
    assert!(db.verify().unwrap().is_ok());
    drop((org, db));
}

#[test]
fn seal_counter_limit_starts_a_new_epoch_and_rotation_resumes_after_reopen() {
    let path = tmp("autorot");
    let db = Db::builder().rotate_after_seals(50).open(&path, root_key(1)).unwrap();
    db.create_org("acme").unwrap();
    fill(&db, "acme", 40);
    let info = db.org_info("acme").unwrap();
    assert_eq!(info.current_epoch, 1, "crossing the seal limit moved new seals to a new epoch");
    assert!(info.rotation_in_progress);
    let before = snapshot(&db, "acme", 40);
    drop(db);
    // Reopen mid-rotation: both epochs still open everything.
    let db = Db::open(&path, root_key(1)).unwrap();
    assert_eq!(snapshot(&db, "acme", 40), before);
    let report = db.rotate_org_key("acme").unwrap();
    assert!(report.resumed);
    let info = db.org_info("acme").unwrap();
    assert_eq!(info.epochs.len(), 1);
    assert_eq!(snapshot(&db, "acme", 40), before);
    drop(db);
}

/// The bytes of a settled database with org "acme" (30 people).
fn prepared_image() -> Vec<u8> {
    let mem = SharedBytes::default();
    {
        let db = Db::builder().open_with_backend(mem.backend(), root_key(1)).unwrap();
        db.create_org("acme").unwrap();
        fill(&db, "acme", 30);
    }
    mem.snapshot()
}

#[test]
fn rotation_survives_a_crash_at_every_write_and_resumes() {
    let pristine = prepared_image();
    let expected = snapshot(
        &Db::builder().open_with_backend(SharedBytes::from_vec(pristine.clone()).backend(), root_key(1)).unwrap(),
        "acme",
        30,
    );
    // Count the writes and syncs of one full rotation.
    let disk = FaultDisk::from_bytes(pristine.clone());
    let db = Db::builder().open_with_backend(disk.backend(), root_key(1)).unwrap();
    let start = disk.events();
    db.rotate_org_key("acme").unwrap();
    let total = disk.events() - start;
    drop(db);
    assert!(total > 10);
    let mut swept = 0;
    for n in 0..total {
        let disk = FaultDisk::from_bytes(pristine.clone());
        let db = Db::builder().open_with_backend(disk.backend(), root_key(1)).unwrap();
        let fault = if n % 3 == 0 { Fault::Fail } else { Fault::Tear { keep_num: (n % 8) as u8 } };
        disk.arm(n, fault);
        let outcome = db.rotate_org_key("acme");
        drop(db);
        if !disk.crashed() {
            assert!(outcome.is_ok(), "no fault struck at event {n}, yet rotation failed: {outcome:?}");
            continue;
        }
        swept += 1;
        // Reboot on what a power cut could leave (every pending write, or none): the state is
        // intact, and rotating again finishes the job.
        for img in disk.images_after_power_cut(&[u64::MAX, 0]) {
            let mem = SharedBytes::from_vec(img);
            let db = Db::builder().open_with_backend(mem.backend(), root_key(1)).unwrap();
            assert_eq!(snapshot(&db, "acme", 30), expected, "crash at event {n}");
            db.rotate_org_key("acme").unwrap();
            assert_eq!(db.org_info("acme").unwrap().epochs.len(), 1, "crash at event {n}");
            assert_eq!(snapshot(&db, "acme", 30), expected, "crash at event {n}");
            assert!(db.verify().unwrap().is_ok(), "crash at event {n}");
        }
    }
    eprintln!("rotation crash points swept: {swept} of {total} writes and syncs, 2 power-cut images each");
    assert!(swept > 10);
}

/// Every (table, key, value) of the file's org tables and registry.
fn raw_records(path: &std::path::Path) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let raw = redb::Database::open(path).unwrap();
    let rtx = raw.begin_read().unwrap();
    let mut out = Vec::new();
    for name in ["orgs", "nodes", "props", "edges", "adj", "index", "dict", "audit"] {
        let t = rtx.open_table(Raw::new(name)).unwrap();
        for item in t.iter().unwrap() {
            let (k, v) = item.unwrap();
            out.push((name.to_string(), k.value().to_vec(), v.value().to_vec()));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn deleted_org_is_shredded_and_compaction_removes_its_bytes() {
    let path = tmp("shred");
    let db = Db::open(&path, root_key(1)).unwrap();
    db.create_org("victim").unwrap();
    fill(&db, "victim", 50);
    drop(db);
    let victim = raw_records(&path);
    assert!(victim.len() > 150, "{}", victim.len());
    let db = Db::open(&path, root_key(1)).unwrap();
    db.create_org("keeper").unwrap();
    fill(&db, "keeper", 50);
    let keeper = snapshot(&db, "keeper", 50);
    let report = db.delete_org("victim").unwrap();
    assert!(report.purged as usize >= victim.len() - 1);
    assert!(matches!(db.org("victim"), Err(Error::OrgNotFound(_))));
    assert!(matches!(db.delete_org("victim"), Err(Error::OrgNotFound(_))));
    assert!(matches!(db.delete_org("nobody"), Err(Error::OrgNotFound(_))));
    let db = db.compact().unwrap();
    assert_eq!(snapshot(&db, "keeper", 50), keeper);
    drop(db);
    let file = std::fs::read(&path).unwrap();
    for (table, key, value) in &victim {
        assert!(!contains(&file, value), "a {table} value of the deleted org is still in the file");
        if table != "orgs" {
            assert!(!contains(&file, key), "a {table} key of the deleted org is still in the file");
        }
    }
    // Re-created under the same name: a new org that sees nothing of the old one.
    let db = Db::open(&path, root_key(1)).unwrap();
    let again = db.create_org("victim").unwrap();
    let r = again.read().unwrap();
    assert_eq!(r.counts().unwrap(), (0, 0));
    assert_eq!(r.lookup("crm", "victim-0").unwrap(), None);
    assert_eq!(r.node(NodeId(1)).unwrap(), None);
    drop((r, again, db));
}

#[test]
fn compact_refuses_while_other_handles_are_open() {
    let path = tmp("compactbusy");
    let db = Db::open(&path, root_key(1)).unwrap();
    let org = db.create_org("acme").unwrap();
    assert!(matches!(db.compact(), Err(Error::InvalidInput(_))));
    drop(org);
}

#[test]
fn key_providers_supply_the_root_key() {
    let path = tmp("providers");
    let key_hex = "11".repeat(32);
    let file = tmp("providers.key");
    std::fs::write(&file, format!("{key_hex}\n")).unwrap();
    #[cfg(unix)] // FileKey refuses a key file that group or others can read
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    Db::builder().open_with_provider(&path, &FileKey::new(file.to_path_buf())).unwrap().create_org("acme").unwrap();
    std::env::set_var("SILOGRAPH_TEST_ROOT_KEY", &key_hex);
    let db = Db::builder().open_with_provider(&path, &EnvKey::new("SILOGRAPH_TEST_ROOT_KEY")).unwrap();
    assert_eq!(db.list_orgs().unwrap(), vec!["acme"]);
    drop(db);
    let kms = CallbackKey::new(|| Ok(RootKey::from_bytes([0x11; 32])));
    assert!(Db::builder().open_with_provider(&path, &kms).is_ok());
    let wrong = CallbackKey::new(|| Ok(RootKey::from_bytes([0x12; 32])));
    assert!(matches!(Db::builder().open_with_provider(&path, &wrong), Err(Error::WrongKey)));
    assert!(matches!(EnvKey::new("SILOGRAPH_TEST_UNSET_VAR").root_key(), Err(Error::InvalidInput(_))));
    std::fs::write(&file, "not hex").unwrap();
    assert!(matches!(FileKey::new(file.to_path_buf()).root_key(), Err(Error::InvalidInput(_))));
}

#[test]
fn scoped_handle_holds_no_key_outside_its_scope() {
    let path = tmp("scope");
    let db = Db::open(&path, root_key(1)).unwrap();
    db.create_org("acme").unwrap();
    let ids = fill(&db, "acme", 5);
    let scoped = db.org_scoped("acme", None, &[Compartment::Core, Compartment::Labels]).unwrap();
    // By inspection of the derived key set, not only by the error.
    assert!(scoped.holds_key_for(Compartment::Core));
    assert!(scoped.holds_key_for(Compartment::Labels));
    assert!(!scoped.holds_key_for(Compartment::Raw));
    let r = scoped.read().unwrap();
    assert_eq!(r.neighbors(ids[0], Direction::Out).unwrap().count(), 1, "a scoped handle traverses");
    assert_eq!(r.node_props(ids[0], Compartment::Labels).unwrap(), vec![("tier".into(), Value::I64(0))]);
    assert!(matches!(r.node_props(ids[0], Compartment::Raw), Err(Error::Denied(Compartment::Raw))));
    drop(r);
    let mut w = scoped.write().unwrap();
    assert!(matches!(w.set_node_prop(ids[0], Compartment::Raw, "x", 1i64), Err(Error::Denied(Compartment::Raw))));
    drop(w);
    assert!(matches!(db.org_scoped("acme", None, &[Compartment::Labels]), Err(Error::InvalidInput(_))));
    assert!(matches!("secret".parse::<Compartment>(), Err(Error::InvalidInput(_))));
    assert!(db.audit("acme").unwrap().entries().unwrap().iter().any(|e| e.op == "scoped-open"));
    drop((scoped, db));
}

#[test]
fn byok_org_needs_its_key_and_rotation_of_unknown_org_fails() {
    let path = tmp("byok");
    let db = Db::open(&path, root_key(1)).unwrap();
    let key = OrgKey::from_bytes([5; 32]);
    db.create_org_with_key("globex", &key).unwrap();
    assert!(matches!(db.org_with_key("globex", &OrgKey::from_bytes([6; 32])), Err(Error::WrongKey)));
    assert!(matches!(db.rotate_org_key("globex"), Err(Error::InvalidInput(_))));
    assert!(matches!(db.rotate_org_key("nobody"), Err(Error::OrgNotFound(_))));
    assert!(matches!(db.create_org("globex"), Err(Error::OrgExists(_))));
    drop(db);
}

/// The org's audit keys and values, in order (the only org in the file).
fn audit_rows(path: &std::path::Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    raw_records(path).into_iter().filter(|r| r.0 == "audit").map(|r| (r.1, r.2)).collect()
}

fn with_raw_table(
    path: &std::path::Path,
    table: &'static str,
    f: impl FnOnce(&mut redb::Table<&'static [u8], &'static [u8]>),
) {
    let raw = redb::Database::open(path).unwrap();
    let wtx = raw.begin_write().unwrap();
    {
        let mut t = wtx.open_table(Raw::new(table)).unwrap();
        f(&mut t);
    }
    wtx.commit().unwrap();
}

fn audited_db(name: &str) -> TmpPath {
    let path = tmp(name);
    let db = Db::builder().actor("ingest-svc").open(&path, root_key(1)).unwrap();
    let org = db.create_org("acme").unwrap();
    for i in 0..5 {
        let mut w = org.as_actor(&format!("user-{i}")).unwrap().write().unwrap();
        w.upsert_node(NodeInput::new("person").source("crm", format!("{i}")).prop("ssn", "CANARY-VALUE")).unwrap();
        w.commit().unwrap();
    }
    let entries = db.audit("acme").unwrap().entries().unwrap();
    assert_eq!(entries.len(), 6);
    assert_eq!(entries[0].op, "create-org");
    assert_eq!(entries[0].actor, "ingest-svc");
    assert_eq!(entries[3].actor, "user-2");
    assert!(entries[3].counts.contains(&("nodes_created".to_string(), 1)));
    assert!(!format!("{entries:?}").contains("CANARY-VALUE"), "audit entries never hold property values");
    assert!(db.audit("acme").unwrap().verify().unwrap().is_ok());
    assert!(matches!(org.as_actor(""), Err(Error::InvalidInput(_))));
    path
}

fn audit_verdict(path: &std::path::Path) -> Option<u64> {
    let db = Db::open(path, root_key(1)).unwrap();
    let report = db.audit("acme").unwrap().verify().unwrap();
    report.first_bad
}

#[test]
fn audit_chain_names_the_first_edited_removed_reordered_or_replayed_entry() {
    // edited
    let path = audited_db("audit-edit");
    let rows = audit_rows(&path);
    with_raw_table(&path, "audit", |t| {
        let mut v = rows[3].1.clone();
        v[30] ^= 1;
        t.insert(rows[3].0.as_slice(), v.as_slice()).unwrap();
    });
    assert_eq!(audit_verdict(&path), Some(3));
    // removed
    let path = audited_db("audit-remove");
    let rows = audit_rows(&path);
    with_raw_table(&path, "audit", |t| {
        t.remove(rows[2].0.as_slice()).unwrap();
    });
    assert_eq!(audit_verdict(&path), Some(2));
    // removed at the end
    let path = audited_db("audit-truncate");
    let rows = audit_rows(&path);
    with_raw_table(&path, "audit", |t| {
        t.remove(rows[5].0.as_slice()).unwrap();
    });
    assert_eq!(audit_verdict(&path), Some(5));
    // reordered
    let path = audited_db("audit-reorder");
    let rows = audit_rows(&path);
    with_raw_table(&path, "audit", |t| {
        t.insert(rows[1].0.as_slice(), rows[2].1.as_slice()).unwrap();
        t.insert(rows[2].0.as_slice(), rows[1].1.as_slice()).unwrap();
    });
    assert_eq!(audit_verdict(&path), Some(1));
    // replayed: an old entry written again in place of a later one
    let path = audited_db("audit-replay");
    let rows = audit_rows(&path);
    with_raw_table(&path, "audit", |t| {
        t.insert(rows[4].0.as_slice(), rows[1].1.as_slice()).unwrap();
    });
    assert_eq!(audit_verdict(&path), Some(4));
}

#[test]
fn verify_reports_the_exact_corrupt_record_and_its_node() {
    let path = tmp("verify");
    let db = Db::open(&path, root_key(1)).unwrap();
    db.create_org("acme").unwrap();
    db.create_org_with_key("byok", &OrgKey::from_bytes([4; 32])).unwrap();
    // 150 nodes: three node pages (ids 1–63, 64–127, 128–150).
    let ids = fill(&db, "acme", 150);
    let mut calls = 0;
    let report = db.verify_with_progress(|_, _| calls += 1).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert!(report.records() > 150);
    assert!(calls > 0);
    assert_eq!(report.skipped_byok, vec!["byok"]);
    drop(db);
    // Flip a ciphertext byte of one node page (past the 25-byte envelope header).
    let rows: Vec<_> = raw_records(&path).into_iter().filter(|r| r.0 == "nodes").collect();
    assert_eq!(rows.len(), 10, "150 nodes fill ten node pages of 16 ids (page 0 from id 1)");
    with_raw_table(&path, "nodes", |t| {
        let mut v = rows[1].2.clone();
        v[30] ^= 0x80;
        t.insert(rows[1].1.as_slice(), v.as_slice()).unwrap();
    });
    let db = Db::open(&path, root_key(1)).unwrap();
    let report = db.verify().unwrap();
    assert_eq!(report.corrupt.len(), 1, "{report:?}");
    let bad = &report.corrupt[0];
    assert_eq!(bad.table, "nodes");
    assert_eq!(bad.key, hex_of(&rows[1].1));
    let node = bad.node.expect("a node page names the first node it holds");
    assert!(ids.contains(&node));
    assert!(node.0 == 1 || node.0.is_multiple_of(16), "{node:?} does not start a page");
    let r = db.org("acme").unwrap().read().unwrap();
    assert!(matches!(r.node(node), Err(Error::Corrupt { .. })), "the named node is one that fails to read");
    let last = NodeId(if node.0 == 1 { 15 } else { (node.0 + 15).min(150) });
    assert!(matches!(r.node(last), Err(Error::Corrupt { .. })), "every node of the page fails to read");
    let elsewhere = NodeId(if node.0 == 1 { 16 } else { 1 });
    assert!(r.node(elsewhere).unwrap().is_some(), "nodes of other pages still read");
    drop((r, db));
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn export_import_round_trips_every_record_and_audit_entry() {
    let (src, dst) = (tmp("export-src"), tmp("export-dst"));
    let db = Db::open(&src, root_key(1)).unwrap();
    db.create_org("acme").unwrap();
    fill(&db, "acme", 400);
    let expected = snapshot(&db, "acme", 400);
    let transport = TransportKey::from_bytes([9; 32]);
    let mut bundle = Vec::new();
    let out = db.export_org("acme", &transport, &mut bundle).unwrap();
    assert!(out.chunks >= 2, "{out:?}");
    let src_audit = db.audit("acme").unwrap().entries().unwrap();
    let target = Db::open(&dst, root_key(2)).unwrap();
    let got = target.import_org(bundle.as_slice(), &transport).unwrap();
    assert_eq!(got.records, out.records);
    assert_eq!(snapshot(&target, "acme", 400), expected);
    let dst_audit = target.audit("acme").unwrap().entries().unwrap();
    assert_eq!(&dst_audit[..src_audit.len()], &src_audit[..]);
    assert_eq!(dst_audit.last().unwrap().op, "import-org");
    assert!(target.audit("acme").unwrap().verify().unwrap().is_ok());
    assert!(target.verify().unwrap().is_ok());
    // Importing again: the org exists, nothing changes.
    assert!(matches!(target.import_org(bundle.as_slice(), &transport), Err(Error::OrgExists(_))));
    assert_eq!(snapshot(&target, "acme", 400), expected);
    drop((db, target));
}

#[test]
fn import_checks_the_source_audit_chain_against_the_digest_the_source_reported() {
    let (src, dst) = (tmp("chain-src"), tmp("chain-dst"));
    let db = Db::open(&src, root_key(1)).unwrap();
    db.create_org("acme").unwrap();
    fill(&db, "acme", 30);
    let transport = TransportKey::from_bytes([9; 32]);
    let mut bundle = Vec::new();
    let out = db.export_org("acme", &transport, &mut bundle).unwrap();
    assert_eq!(out.audit_digest.len(), 64, "the export reports the chain's digest");
    let target = Db::open(&dst, root_key(2)).unwrap();
    // A digest other than the source's (as when the bundle's history was replaced): refused,
    // nothing written.
    let mut wrong = out.audit_digest.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).unwrap();
    assert!(matches!(
        target.import_org_expecting(bundle.as_slice(), &transport, &wrong),
        Err(Error::Corrupt { at: silograph::CorruptAt::Bundle, .. })
    ));
    assert!(matches!(target.org("acme"), Err(Error::OrgNotFound(_))));
    // The source's digest: imported, and the import reports the same digest.
    let got = target.import_org_expecting(bundle.as_slice(), &transport, &out.audit_digest).unwrap();
    assert_eq!(got.audit_digest, out.audit_digest);
    assert!(target.verify().unwrap().is_ok());
}

#[test]
fn export_refuses_a_record_put_back_from_an_older_copy() {
    let path = tmp("export-stale");
    let db = Db::open(&path, root_key(1)).unwrap();
    db.create_org("acme").unwrap();
    fill(&db, "acme", 30);
    drop(db);
    let old = raw_records(&path);
    {
        let db = Db::open(&path, root_key(1)).unwrap();
        let o = db.org("acme").unwrap();
        let mut w = o.write().unwrap();
        let id = w.lookup("crm", "acme-3").unwrap().unwrap();
        w.set_node_prop(id, Compartment::Raw, "email", "changed").unwrap();
        w.commit().unwrap();
    }
    let new = raw_records(&path);
    let (table, key, value) = old
        .into_iter()
        .find(|(t, k, v)| t == "props" && new.iter().any(|(t2, k2, v2)| t2 == t && k2 == k && v2 != v))
        .expect("a property record changed");
    with_raw_table(&path, "props", |t| {
        t.insert(key.as_slice(), value.as_slice()).unwrap();
    });
    let db = Db::open(&path, root_key(1)).unwrap();
    let mut bundle = Vec::new();
    let r = db.export_org("acme", &TransportKey::from_bytes([9; 32]), &mut bundle);
    assert!(matches!(r, Err(Error::Corrupt { .. })), "{table}: an older record must not travel: {r:?}");
}

#[test]
fn truncated_reordered_or_tampered_bundles_import_nothing() {
    let (src, dst) = (tmp("bundle-bad-src"), tmp("bundle-bad-dst"));
    let db = Db::open(&src, root_key(1)).unwrap();
    db.create_org("acme").unwrap();
    fill(&db, "acme", 400);
    let transport = TransportKey::from_bytes([9; 32]);
    let mut bundle = Vec::new();
    db.export_org("acme", &transport, &mut bundle).unwrap();
    let target = Db::open(&dst, root_key(2)).unwrap();
    let rejected = |b: &[u8], key: &TransportKey| {
        let r = target.import_org(b, key);
        assert!(r.is_err(), "a bad bundle was accepted");
        assert!(matches!(target.org("acme"), Err(Error::OrgNotFound(_))), "a failed import left an org behind");
        r.unwrap_err()
    };
    assert!(matches!(rejected(&bundle, &TransportKey::from_bytes([8; 32])), Error::WrongKey));
    for cut in [10, 80, 200, bundle.len() / 2, bundle.len() - 1] {
        rejected(&bundle[..cut], &transport);
    }
    for at in [100, bundle.len() / 3, bundle.len() - 20] {
        let mut b = bundle.clone();
        b[at] ^= 1;
        rejected(&b, &transport);
    }
    // Swap the first two chunks.
    let header = 8 + 1 + 16 + 2 + u16::from_le_bytes([bundle[25], bundle[26]]) as usize;
    let len = |at: usize| 4 + u32::from_le_bytes(bundle[at..at + 4].try_into().unwrap()) as usize;
    let (a, b) = (len(header), len(header + len(header)));
    let mut swapped = bundle[..header].to_vec();
    swapped.extend_from_slice(&bundle[header + a..header + a + b]);
    swapped.extend_from_slice(&bundle[header..header + a]);
    swapped.extend_from_slice(&bundle[header + a + b..]);
    rejected(&swapped, &transport);
    // Drop a middle chunk.
    let mut dropped = bundle[..header + a].to_vec();
    dropped.extend_from_slice(&bundle[header + a + b..]);
    rejected(&dropped, &transport);
    assert!(target.import_org(bundle.as_slice(), &transport).is_ok(), "the intact bundle still imports");
    drop((db, target));
}

/// The figures of the key-lifecycle issue. `cargo test --release --test it lifecycle:: -- --ignored --nocapture`
#[test]
#[ignore]
fn lifecycle_figures() {
    use std::time::Instant;
    let path = tmp("figures");
    let db = Db::open(&path, root_key(1)).unwrap();
    let t = Instant::now();
    for i in 0..10_000 {
        db.create_org(&format!("org-{i}")).unwrap();
    }
    eprintln!("created 10k orgs in {:?}", t.elapsed());
    let t = Instant::now();
    db.rotate_root_key(root_key(2)).unwrap();
    eprintln!("root rotation, 10k orgs: {:?}", t.elapsed());
    db.create_org("big").unwrap();
    fill(&db, "big", 20_000);
    let org = db.org("big").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (org, stop) = (org.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let r = org.read().unwrap();
                n += r.neighbors(NodeId(1 + n % 20_000), Direction::Both).unwrap().count() as u64;
            }
            n
        })
    };
    let t = Instant::now();
    let rep = db.rotate_org_key("big").unwrap();
    let el = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().unwrap();
    eprintln!("org rotation with a reader running: {} records in {:?} = {:.0} records/s ({} batches; reader saw {reads} entries)", rep.resealed, el, rep.resealed as f64 / el.as_secs_f64(), rep.batches);
    let t = Instant::now();
    let v = org.verify().unwrap();
    let el = t.elapsed();
    eprintln!("verify: {} records in {:?} = {:.0} records/s", v.records(), el, v.records() as f64 / el.as_secs_f64());
    let transport = TransportKey::from_bytes([1; 32]);
    let mut bundle = Vec::new();
    let t = Instant::now();
    db.export_org("big", &transport, &mut bundle).unwrap();
    let el = t.elapsed();
    eprintln!("export: {} bytes in {:?} = {:.1} MB/s", bundle.len(), el, bundle.len() as f64 / 1e6 / el.as_secs_f64());
    let dst = tmp("figures-dst");
    let target = Db::open(&dst, root_key(3)).unwrap();
    let t = Instant::now();
    target.import_org(bundle.as_slice(), &transport).unwrap();
    let el = t.elapsed();
    eprintln!("import: {} bytes in {:?} = {:.1} MB/s", bundle.len(), el, bundle.len() as f64 / 1e6 / el.as_secs_f64());
    drop((org, db, target));
}

#[test]
fn removed_node_page_reads_as_corrupt_and_verify_counts_it() {
    let path = tmp("removed");
    let db = Db::open(&path, root_key(1)).unwrap();
    db.create_org("acme").unwrap();
    // 70 nodes: five node pages (ids 1–15, 16–31, 32–47, 48–63 and 64–70).
    fill(&db, "acme", 70);
    drop(db);
    let victim = raw_records(&path).into_iter().find(|r| r.0 == "nodes").unwrap();
    with_raw_table(&path, "nodes", |t| {
        t.remove(victim.1.as_slice()).unwrap();
    });
    let db = Db::open(&path, root_key(1)).unwrap();
    let report = db.verify().unwrap();
    assert!(
        report
            .corrupt
            .iter()
            .any(|c| c.table == "nodes" && c.key == hex::encode(&victim.1) && c.error.contains("missing")),
        "{report:?}"
    );
    let r = db.org("acme").unwrap().read().unwrap();
    let outcomes: Vec<_> = (1..=70).map(|i| r.node(NodeId(i))).collect();
    let corrupt = outcomes.iter().filter(|o| matches!(o, Err(Error::Corrupt { .. }))).count();
    assert!([15, 16, 7].contains(&corrupt), "every node of the removed page, and only those: {corrupt}");
    assert_eq!(outcomes.iter().filter(|o| matches!(o, Ok(Some(_)))).count(), 70 - corrupt);
    assert_eq!(r.node(NodeId(71)).unwrap(), None, "an id never assigned is simply absent");
    drop((r, db));
}

#[test]
fn a_source_listed_twice_is_stored_once() {
    let path = tmp("dupsource");
    let db = Db::open(&path, root_key(1)).unwrap();
    let org = db.create_org("acme").unwrap();
    let mut w = org.write().unwrap();
    let n = w.upsert_node(NodeInput::new("person").source("crm", "1").source("crm", "1").source("mail", "a")).unwrap();
    w.commit().unwrap();
    assert_eq!(org.read().unwrap().node(n).unwrap().unwrap().sources.len(), 2);
    drop((org, db));
}

#[test]
fn removed_property_record_reads_as_corrupt_not_as_no_properties() {
    let path = tmp("removedprops");
    let db = Db::open(&path, root_key(1)).unwrap();
    let org = db.create_org("acme").unwrap();
    let mut w = org.write().unwrap();
    let n = w.upsert_node(NodeInput::new("person").source("crm", "1").prop("email", "a@b")).unwrap();
    let m = w.upsert_node(NodeInput::new("person").source("crm", "2")).unwrap();
    w.commit().unwrap();
    drop((org, db));
    let props: Vec<_> = raw_records(&path).into_iter().filter(|r| r.0 == "props").collect();
    assert_eq!(props.len(), 1);
    with_raw_table(&path, "props", |t| {
        t.remove(props[0].1.as_slice()).unwrap();
    });
    let db = Db::open(&path, root_key(1)).unwrap();
    let r = db.org("acme").unwrap().read().unwrap();
    assert!(matches!(r.node_props(n, Compartment::Raw), Err(Error::Corrupt { .. })));
    assert_eq!(r.node_props(n, Compartment::Labels).unwrap(), vec![], "a compartment never written is empty");
    assert_eq!(r.node_props(m, Compartment::Raw).unwrap(), vec![]);
    drop((r, db));
}

/// Export never writes a chunk that import would refuse: a record too large for a bundle chunk
/// (16 MiB) is refused at export with a typed error, and one just under it travels.
#[test]
fn export_refuses_a_record_import_would_refuse_and_exports_one_just_under_the_limit() {
    let db = Db::builder().open_with_backend(SharedBytes::default().backend(), root_key(1)).unwrap();
    let mut rng = crate::common::Rng(0x5eed);
    let mut noise = |n: usize| -> Vec<u8> { (0..n / 8).flat_map(|_| rng.next().to_le_bytes()).collect() };
    for (name, props) in [("small", 200usize), ("large", 270)] {
        let org = db.create_org(name).unwrap();
        let mut w = org.write().unwrap();
        let n = w.upsert_node(NodeInput::new("blob").source("s", "1")).unwrap();
        for i in 0..props {
            // Incompressible 64 KiB values: the property map is ~13 MB (small) or ~17.7 MB (large).
            w.set_node_prop(n, Compartment::Raw, &format!("p{i}"), Value::Bytes(noise(64 * 1024))).unwrap();
        }
        w.commit().unwrap();
    }
    let transport = TransportKey::from_bytes([9; 32]);
    let mut bundle = Vec::new();
    match db.export_org("large", &transport, &mut bundle) {
        Err(Error::InvalidInput(e)) => {
            assert_eq!(e.kind(), &silograph::InputKind::TooLarge);
            assert!(e.message().contains("larger than a bundle chunk"), "{e}");
        }
        other => panic!("a record over the chunk limit must be refused at export, got {other:?}"),
    }
    let mut bundle = Vec::new();
    db.export_org("small", &transport, &mut bundle).unwrap();
    let target = Db::builder().open_with_backend(SharedBytes::default().backend(), root_key(2)).unwrap();
    target.import_org(bundle.as_slice(), &transport).unwrap();
    let r = target.org("small").unwrap().read().unwrap();
    let n = r.lookup("s", "1").unwrap().unwrap();
    assert_eq!(r.node_props(n, Compartment::Raw).unwrap().len(), 200);
}
