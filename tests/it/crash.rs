//! Crash consistency: a workload of committed write transactions (with adjacency page splits, a
//! retraction pass, a bring-your-own-key org and a bulk load) runs on a fault-injecting disk
//! that fails or tears the n-th write or sync, for every n. After the "power cut" the disk holds
//! its state at the last successful sync plus any subset of the writes after it (the torn one
//! included); the database reopened on those bytes must be exactly the last committed state or
//! the one being committed (each commit is atomic), with no `Corrupt` error anywhere, and must
//! accept new commits.

use crate::common::backend::{Fault, FaultDisk, SharedBytes};
use crate::common::dump::{dump_org, Dump};
use crate::common::model::ORG_NAMES as ORGS;
use crate::common::{byok as globex_key, root, Rng};
use silograph::{Compartment, Db, EdgeId, EdgeInput, Error, NodeId, NodeInput};

fn node_sources() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = (0..22).map(|i| ("gmail".to_string(), format!("n{i}"))).collect();
    v.push(("gmail".into(), "hub".into()));
    v.extend((0..62).map(|i| ("bulk".to_string(), format!("b{i}"))));
    v
}

fn edge_sources() -> Vec<(String, String)> {
    (0..10).map(|i| ("sf".to_string(), format!("e{i}"))).collect()
}

/// The workload: each step is exactly one commit.
const STEPS: usize = 7;

fn step(db: &Db, k: usize) -> Result<(), Error> {
    let t = 1_000 * (k as i64 + 1);
    match k {
        0 => db.create_org(ORGS[0]).map(|_| ()),
        1 => {
            let org = db.org(ORGS[0])?;
            let mut w = org.write()?;
            w.set_time(t);
            let mut ids = Vec::new();
            for i in 0..20 {
                let n = NodeInput::new(if i % 3 == 0 { "person" } else { "deal" })
                    .source("gmail", format!("n{i}"))
                    .prop("title", format!("t{i}"))
                    .label("segment", i as i64);
                ids.push(w.upsert_node(n)?);
            }
            for i in 0..25usize {
                let mut e = EdgeInput::new(ids[i % 20], ids[(i * 7 + 1) % 20], "emailed").valid_from(i as i64);
                if i < 10 {
                    e = e.source("sf", format!("e{i}")).prop("subject", format!("s{i}"));
                }
                w.add_edge(e)?;
            }
            w.commit()
        }
        2 => {
            let org = db.org(ORGS[0])?;
            let mut w = org.write()?;
            w.set_time(t);
            let hub = w.upsert_node(NodeInput::new("hub").source("gmail", "hub"))?;
            // 520 > PAGE_CAPACITY: the hub's out-adjacency splits into two pages.
            for i in 0..520u64 {
                w.add_edge(EdgeInput::new(hub, NodeId(1 + i % 20), "touched"))?;
            }
            w.commit()
        }
        3 => {
            let org = db.org(ORGS[0])?;
            let mut w = org.write()?;
            w.set_time(t);
            for e in [1u64, 5, 9, 40, 300] {
                w.retract_edge(EdgeId(e))?;
            }
            w.set_node_prop(NodeId(2), Compartment::Raw, "title", "changed")?;
            w.remove_node_prop(NodeId(3), Compartment::Labels, "segment")?;
            w.upsert_node(NodeInput::new("account").source("gmail", "n4").source("gmail", "n21"))?;
            let hub = w.lookup("gmail", "hub")?.ok_or_else(|| Error::Internal("no hub".into()))?;
            for i in 0..10u64 {
                w.add_edge(EdgeInput::new(NodeId(1 + i), hub, "replied"))?;
                w.add_edge(EdgeInput::new(hub, NodeId(1 + i), "touched"))?;
            }
            w.commit()
        }
        4 => db.create_org_with_key(ORGS[1], &globex_key()).map(|_| ()),
        5 => {
            let org = db.org_with_key(ORGS[1], &globex_key())?;
            let mut bulk = org.bulk_load()?.memory_budget(2048);
            bulk.set_time(t);
            let mut ids = Vec::new();
            for i in 0..60 {
                ids.push(bulk.add_node(NodeInput::new("doc").source("bulk", format!("b{i}")).prop("n", i as i64))?);
            }
            for i in 0..150usize {
                bulk.add_edge(ids[i % 60], ids[(i * 13 + 5) % 60], if i % 2 == 0 { "cites" } else { "links" })?;
            }
            bulk.finish().map(|_| ())
        }
        6 => {
            let org = db.org_with_key(ORGS[1], &globex_key())?;
            let mut w = org.write()?;
            w.set_time(t);
            w.retract_edge(EdgeId(3))?;
            w.set_edge_prop(EdgeId(4), Compartment::Labels, "weight", 0.5)?;
            w.upsert_node(NodeInput::new("doc").source("bulk", "b61"))?;
            w.commit()
        }
        _ => Ok(()),
    }
}

/// The state of both orgs (`None`: the org does not exist). Any read error is returned.
fn state(db: &Db) -> Result<Vec<Option<Dump>>, Error> {
    let (ns, es) = (node_sources(), edge_sources());
    let mut out = Vec::new();
    for (i, name) in ORGS.iter().enumerate() {
        let org = if i == 0 { db.org(name) } else { db.org_with_key(name, &globex_key()) };
        match org {
            Ok(org) => out.push(Some(dump_org(&org, &ns, &es)?)),
            Err(Error::OrgNotFound(_)) => out.push(None),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn open(disk: &FaultDisk) -> Db {
    Db::builder().cache_size(0).open_with_backend(disk.backend(), root()).expect("open on a healthy disk")
}

/// The committed state after each step of a fault-free run (`[0]`: before the first step).
fn reference() -> Vec<Vec<Option<Dump>>> {
    let disk = FaultDisk::default();
    let db = open(&disk);
    let mut states = vec![state(&db).expect("state")];
    for k in 0..STEPS {
        step(&db, k).unwrap_or_else(|e| panic!("fault-free step {k}: {e}"));
        states.push(state(&db).expect("state"));
    }
    states
}

/// Reopens the database on one post-crash disk image and checks it against the two states the
/// crash may legally leave; then checks a new commit survives another reopen.
fn check_image(img: Vec<u8>, expected: &[&Vec<Option<Dump>>], probe: bool, what: &str) -> usize {
    let disk = SharedBytes::from_vec(img);
    let db = Db::builder()
        .cache_size(0)
        .open_with_backend(disk.backend(), root())
        .unwrap_or_else(|e| panic!("{what}: reopen after the crash failed: {e}"));
    let got = state(&db).unwrap_or_else(|e| panic!("{what}: read after the crash failed: {e}"));
    let which = expected.iter().position(|s| **s == got).unwrap_or_else(|| {
        panic!("{what}: the recovered state is neither the last committed state nor the one being committed")
    });
    // The recovered database accepts a new commit, which survives a clean reopen.
    if probe && got[0].is_some() {
        let org = db.org(ORGS[0]).expect("org");
        let mut w = org.write().expect("write after recovery");
        w.upsert_node(NodeInput::new("probe").source("probe", "after-crash")).expect("upsert after recovery");
        w.commit().unwrap_or_else(|e| panic!("{what}: commit after recovery failed: {e}"));
        drop((org, db));
        let db = Db::builder().open_with_backend(disk.backend(), root()).expect("reopen after the probe commit");
        let r = db.org(ORGS[0]).expect("org").read().expect("read");
        assert!(r.lookup("probe", "after-crash").expect("lookup").is_some(), "{what}: the probe commit was lost");
    }
    which
}

#[test]
fn crash_at_every_write_and_sync_recovers_the_last_or_the_committing_state() {
    let states = reference();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut points, mut images) = (0u64, 0u64);
    let mut mid_commit = [0u64; 2];
    let mut recovered = [0u64; 2];
    for n in 0.. {
        let disk = FaultDisk::default();
        let db = open(&disk);
        // Vary how much of the struck write lands: nothing (a failed write) up to all of it.
        let fault = if n % 3 == 0 { Fault::Fail } else { Fault::Tear { keep_num: (n % 8) as u8 } };
        disk.arm(n, fault);
        let mut done = 0;
        while done < STEPS && step(&db, done).is_ok() {
            done += 1;
        }
        drop(db);
        if !disk.crashed() {
            assert_eq!(done, STEPS, "a step failed without an injected fault");
            break;
        }
        points += 1;
        let expected: Vec<&Vec<Option<Dump>>> = states[done..(done + 2).min(states.len())].iter().collect();
        let masks = [u64::MAX, 0, rng.next()];
        for (i, img) in disk.images_after_power_cut(&masks).into_iter().enumerate() {
            let what = format!("crash point {n} ({fault:?}) in step {done}, image {i}");
            recovered[check_image(img, &expected, i == 0, &what)] += 1;
            images += 1;
        }
        mid_commit[usize::from(disk.pending_len() > 0)] += 1;
    }
    eprintln!(
        "crash points swept: {points}, disk images checked: {images}, points with unsynced writes: {}, \
         recovered to the last committed state: {}, to the state being committed: {}",
        mid_commit[1], recovered[0], recovered[1]
    );
    assert!(recovered[0] > 0 && recovered[1] > 0, "both outcomes of a crash during commit should occur");
    assert!(points > 100, "the workload should have many crash points, swept {points}");
}

/// Two orgs' transactions committed as one group commit round: a crash at any write or sync of
/// that one storage commit leaves both orgs as before it or both as after it — never one org's
/// half of the round.
#[test]
fn crash_during_a_group_commit_of_two_orgs_recovers_both_or_neither() {
    let names = ["north", "south"];
    let pristine = {
        let mem = SharedBytes::default();
        let db = Db::builder().open_with_backend(mem.backend(), root()).unwrap();
        for name in names {
            let org = db.create_org(name).unwrap();
            let mut w = org.write().unwrap();
            for i in 0..30 {
                w.upsert_node(NodeInput::new("person").source("crm", format!("{name}-{i}"))).unwrap();
            }
            w.commit().unwrap();
        }
        drop(db);
        mem.snapshot()
    };
    // Each org's view: how many of the round's nodes it holds (0 before, 40 after).
    let seen = |db: &Db| -> Vec<usize> {
        names
            .iter()
            .map(|name| {
                let r = db.org(name).unwrap().read().unwrap();
                (0..40).filter(|i| r.lookup("round", &format!("{name}-{i}")).unwrap().is_some()).count()
            })
            .collect()
    };
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (mut points, mut outcomes) = (0u64, [0u64; 2]);
    for n in 0.. {
        let disk = FaultDisk::from_bytes(pristine.clone());
        let db = open(&disk);
        let fault = if n % 3 == 0 { Fault::Fail } else { Fault::Tear { keep_num: (n % 8) as u8 } };
        // Armed after the open: the sweep strikes the round's own writes and syncs.
        disk.arm(n, fault);
        let mut txns = Vec::new();
        for name in names {
            let org = db.org(name).unwrap();
            let mut w = org.write().unwrap();
            let hub = w.lookup("crm", &format!("{name}-0")).unwrap().unwrap();
            for i in 0..40 {
                let node = w.upsert_node(NodeInput::new("person").source("round", format!("{name}-{i}"))).unwrap();
                w.add_edge(EdgeInput::new(hub, node, "knows")).unwrap();
            }
            txns.push(w);
        }
        let results = silograph::fuzzing::commit_together(txns).unwrap();
        drop(db);
        if !disk.crashed() {
            assert!(results.iter().all(Result::is_ok), "{results:?}");
            break;
        }
        points += 1;
        for (i, img) in disk.images_after_power_cut(&[u64::MAX, 0, rng.next()]).into_iter().enumerate() {
            let what = format!("group commit crash point {n} ({fault:?}), image {i}");
            let db = Db::builder()
                .cache_size(0)
                .open_with_backend(SharedBytes::from_vec(img).backend(), root())
                .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
            let counts = seen(&db);
            assert!(counts == [0, 0] || counts == [40, 40], "{what}: orgs recovered to {counts:?}");
            outcomes[usize::from(counts == [40, 40])] += 1;
            assert!(db.verify().unwrap().is_ok(), "{what}: verify failed");
        }
    }
    eprintln!("group commit crash points: {points}; images before the round: {}, after: {}", outcomes[0], outcomes[1]);
    assert!(points > 5, "the round should have several writes and syncs, swept {points}");
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "both outcomes of a crash during the round should occur");
}
