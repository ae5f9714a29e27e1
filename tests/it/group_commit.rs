//! Group commit: concurrent writers of different orgs share storage commits, lose nothing, and
//! fail alone; writers of one org take turns.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::Duration;

use crate::common::backend::{MemBackend, SharedBytes};
use silograph::{Db, Direction, EdgeInput, Error, NodeInput, RootKey};

fn root() -> RootKey {
    RootKey::from_bytes([7; 32])
}

/// An in-memory backend that counts syncs and can hold the next sync until released, so a test
/// can line writers up behind a commit in progress.
#[derive(Clone)]
struct GatedDisk {
    bytes: SharedBytes,
    syncs: Arc<AtomicU64>,
    /// While true, a sync waits.
    closed: Arc<(Mutex<bool>, Condvar)>,
    /// Set by the first sync that found the gate closed.
    waiting: Arc<AtomicBool>,
}

impl GatedDisk {
    fn new() -> Self {
        GatedDisk {
            bytes: SharedBytes::default(),
            syncs: Arc::default(),
            closed: Arc::new((Mutex::new(false), Condvar::new())),
            waiting: Arc::default(),
        }
    }

    fn backend(&self) -> HookBackend {
        let disk = self.clone();
        let before_sync = move || {
            let (m, cv) = &*disk.closed;
            let mut closed = m.lock().unwrap();
            while *closed {
                disk.waiting.store(true, Ordering::SeqCst);
                closed = cv.wait(closed).unwrap();
            }
            disk.syncs.fetch_add(1, Ordering::SeqCst);
        };
        HookBackend { before_sync: Box::new(before_sync), ..HookBackend::new(&self.bytes) }
    }

    fn set_closed(&self, closed: bool) {
        *self.closed.0.lock().unwrap() = closed;
        self.closed.1.notify_all();
    }
}

/// An in-memory backend that runs a hook before every write and every sync.
struct HookBackend {
    mem: MemBackend,
    before_write: Box<dyn Fn() + Send + Sync>,
    before_sync: Box<dyn Fn() + Send + Sync>,
}

impl HookBackend {
    fn new(bytes: &SharedBytes) -> Self {
        HookBackend { mem: bytes.backend(), before_write: Box::new(|| {}), before_sync: Box::new(|| {}) }
    }
}

impl redb::StorageBackend for HookBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.mem.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.mem.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.mem.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        (self.before_sync)();
        self.mem.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        (self.before_write)();
        self.mem.write(offset, data)
    }
}

impl std::fmt::Debug for HookBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookBackend")
    }
}

/// One durable commit of one new node and one edge from the org's hub.
fn commit_one(org: &silograph::Org, hub: silograph::NodeId, i: usize) {
    let mut w = org.write().unwrap();
    let n = w.upsert_node(NodeInput::new("person").source("crm", format!("p{i}"))).unwrap();
    w.add_edge(EdgeInput::new(hub, n, "knows").source("crm", format!("e{i}"))).unwrap();
    w.commit().unwrap();
}

fn hub_of(org: &silograph::Org) -> silograph::NodeId {
    let mut w = org.write().unwrap();
    let hub = w.upsert_node(NodeInput::new("hub").source("crm", "hub")).unwrap();
    w.commit().unwrap();
    hub
}

#[test]
fn concurrent_writers_of_eight_orgs_share_storage_commits_and_lose_nothing() {
    const ORGS: usize = 8;
    let disk = GatedDisk::new();
    let db = Db::builder().open_with_backend(disk.backend(), root()).unwrap();
    let orgs: Vec<_> = (0..ORGS).map(|i| db.create_org(&format!("org-{i}")).unwrap()).collect();
    let hubs: Vec<_> = orgs.iter().map(hub_of).collect();

    // Round 1: hold the first commit's sync until every other writer has asked to commit, so
    // they queue behind it and must be written together in the next storage commit.
    disk.set_closed(true);
    let before = disk.syncs.load(Ordering::SeqCst);
    let ready = Arc::new(Barrier::new(ORGS));
    std::thread::scope(|s| {
        for (k, org) in orgs.iter().enumerate() {
            let (ready, hub) = (ready.clone(), hubs[k]);
            s.spawn(move || {
                if k > 0 {
                    ready.wait();
                }
                commit_one(org, hub, 0);
            });
        }
        // Writer 0 is blocked in its sync; release the others, give them time to queue.
        while !disk.waiting.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        ready.wait();
        std::thread::sleep(Duration::from_millis(200));
        disk.set_closed(false);
    });
    let syncs = disk.syncs.load(Ordering::SeqCst) - before;
    assert!(syncs < ORGS as u64, "8 commits of 8 orgs took {syncs} storage syncs: none were grouped");

    // Round 2: free-running writers, 25 commits each.
    std::thread::scope(|s| {
        for (k, org) in orgs.iter().enumerate() {
            let hub = hubs[k];
            s.spawn(move || {
                for i in 1..=25 {
                    commit_one(org, hub, i);
                }
            });
        }
    });
    let check = |db: &Db| {
        for (k, hub) in hubs.iter().enumerate() {
            let org = db.org(&format!("org-{k}")).unwrap();
            let r = org.read().unwrap();
            assert_eq!(r.counts().unwrap(), (27, 26), "org {k}");
            let out = r.neighbors(*hub, Direction::Out).unwrap().count();
            assert_eq!(out, 26, "org {k}");
            for i in 0..=25 {
                assert!(r.lookup("crm", &format!("p{i}")).unwrap().is_some(), "org {k} lost p{i}");
            }
            assert!(org.audit().verify().unwrap().is_ok());
        }
        assert!(db.verify().unwrap().is_ok());
    };
    check(&db);
    drop((orgs, db));
    // Everything is in the storage, not only in this process.
    let db = Db::builder().open_with_backend(SharedBytes::from_vec(disk.bytes.snapshot()).backend(), root()).unwrap();
    check(&db);
}

#[test]
fn concurrent_writers_of_one_org_take_turns_and_each_sees_the_last_commit() {
    let db = Db::builder().open_with_backend(SharedBytes::default().backend(), root()).unwrap();
    let org = db.create_org("acme").unwrap();
    let hub = hub_of(&org);
    let active = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (org, active) = (&org, &active);
            s.spawn(move || {
                for i in 0..20 {
                    let mut w = org.write().unwrap();
                    assert_eq!(active.fetch_add(1, Ordering::SeqCst), 0, "two writers of one org at once");
                    // Read-modify-write of the hub's degree through the transaction's own view.
                    let n = w.upsert_node(NodeInput::new("person").source("crm", format!("{t}-{i}"))).unwrap();
                    w.add_edge(EdgeInput::new(hub, n, "knows")).unwrap();
                    active.fetch_sub(1, Ordering::SeqCst);
                    w.commit().unwrap();
                }
            });
        }
    });
    let r = org.read().unwrap();
    assert_eq!(r.degree(hub, Direction::Out).unwrap(), Some(80), "an edge of a concurrent writer was lost");
    assert_eq!(r.counts().unwrap(), (81, 80));
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn concurrent_failed_transaction_fails_alone_and_leaves_nothing() {
    let db = Db::builder().open_with_backend(SharedBytes::default().backend(), root()).unwrap();
    let good = db.create_org("good").unwrap();
    let bad = db.create_org("bad").unwrap();
    let hub = hub_of(&good);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..30 {
                commit_one(&good, hub, i);
            }
        });
        s.spawn(|| {
            for i in 0..30 {
                let mut w = bad.write().unwrap();
                w.upsert_node(NodeInput::new("person").source("crm", format!("b{i}"))).unwrap();
                // Bad input: the transaction is abandoned, nothing of it lands.
                let err = w.add_edge(EdgeInput::new(silograph::NodeId(9_999), silograph::NodeId(1), "x"));
                assert!(matches!(err, Err(Error::InvalidInput(_))));
                drop(w);
            }
        });
    });
    assert_eq!(good.read().unwrap().counts().unwrap(), (31, 30));
    assert_eq!(bad.read().unwrap().counts().unwrap(), (0, 0));
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn concurrent_admin_operation_and_writer_of_one_org_do_not_conflict() {
    // Rotation batches change the registry entry; writers of the org go between batches and
    // never see `Conflict`.
    let db = Db::builder().open_with_backend(SharedBytes::default().backend(), root()).unwrap();
    let org = db.create_org("acme").unwrap();
    let hub = hub_of(&org);
    for i in 0..40 {
        commit_one(&org, hub, i);
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 40..80 {
                commit_one(&org, hub, i);
            }
        });
        s.spawn(|| {
            for _ in 0..3 {
                db.rotate_org_key("acme").unwrap();
            }
        });
    });
    let r = org.read().unwrap();
    assert_eq!(r.degree(hub, Direction::Out).unwrap(), Some(80));
    assert!(db.verify().unwrap().is_ok());
    assert!(org.audit().verify().unwrap().is_ok());
}

#[test]
fn a_commit_that_panics_fails_alone_and_the_db_then_refuses_writes_until_reopened() {
    let bytes = SharedBytes::default();
    let armed = Arc::new(AtomicBool::new(false));
    // A backend whose writes panic once armed (as redb does on some corrupt files, from inside
    // a commit).
    let flag = armed.clone();
    let before_write = move || assert!(!flag.load(Ordering::SeqCst), "injected panic inside a storage write");
    let backend = HookBackend { before_write: Box::new(before_write), ..HookBackend::new(&bytes) };
    let db = Db::builder().open_with_backend(backend, root()).unwrap();
    let org = db.create_org("acme").unwrap();
    let hub = hub_of(&org);
    commit_one(&org, hub, 0);
    let committed = bytes.snapshot();
    // Keep the injected panic's message out of the test output.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    armed.store(true, Ordering::SeqCst);
    let mut w = org.write().unwrap();
    w.upsert_node(NodeInput::new("person").source("crm", "lost")).unwrap();
    let res = w.commit();
    armed.store(false, Ordering::SeqCst);
    std::panic::set_hook(hook);
    assert!(matches!(res, Err(Error::Internal(_))), "a panicked commit is an Internal error: {res:?}");
    // From now on this Db takes no writes (what the panic left half done is not trusted)...
    assert!(matches!(org.write(), Err(Error::Internal(_))));
    assert!(matches!(db.create_org("other"), Err(Error::Internal(_))));
    assert!(matches!(db.rotate_org_key("acme"), Err(Error::Internal(_))));
    drop((org, db));
    // ...and reopening recovers the last committed state.
    let db = Db::builder().open_with_backend(SharedBytes::from_vec(committed).backend(), root()).unwrap();
    let r = db.org("acme").unwrap().read().unwrap();
    assert!(r.lookup("crm", "p0").unwrap().is_some());
    assert!(r.lookup("crm", "lost").unwrap().is_none());
    let mut w = db.org("acme").unwrap().write().unwrap();
    w.upsert_node(NodeInput::new("person").source("crm", "after")).unwrap();
    w.commit().unwrap();
}
