//! The storage interface: the few operations the engine needs of a backend (redb, the embedded
//! file; PostgreSQL, shared). Everything above it sees tables of opaque `(key, value)` byte rows;
//! no backend type crosses it. See DESIGN "Storage interface" for what a backend must guarantee.

use crate::error::Result;

use super::tables::{RecordKey, Table};

/// Which backend a [`Kv`] is (for the few backend-only operations: compact, file paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackendKind {
    /// One redb file (or a custom redb storage backend).
    Redb,
    /// A PostgreSQL database shared by many processes.
    #[allow(dead_code)]
    Postgres,
}

impl BackendKind {
    /// The backend's name, for errors.
    pub(crate) fn name(self) -> &'static str {
        match self {
            BackendKind::Redb => "redb",
            BackendKind::Postgres => "PostgreSQL",
        }
    }
}

/// A storage backend: redb (the embedded file) or PostgreSQL (shared).
pub(crate) trait Kv: Send + Sync + std::fmt::Debug {
    /// A consistent read snapshot (redb: a read transaction; PostgreSQL: a REPEATABLE READ,
    /// READ ONLY transaction on a pooled connection, held while the snapshot lives).
    fn snapshot(&self) -> Result<Box<dyn KvSnapshot>>;
    /// A write transaction: sees its own writes; nothing visible to others until `commit`;
    /// dropped without `commit`, nothing of it is kept.
    ///
    /// Owned (`'static`, `Send`): a `WriteTxn` and the bulk loader keep it from begin to commit
    /// and may move between threads.
    fn begin_write(&self) -> Result<Box<dyn KvWrite>>;
    /// Which backend (for the few redb-only operations: compact, file paths).
    fn kind(&self) -> BackendKind;
    /// Whether commits are serialized (redb: one writer at a time). Then the database root
    /// (`store::root`) is rewritten by every commit; a backend whose writers of different orgs
    /// commit concurrently (PostgreSQL) says `false`, and the root tracks membership only.
    fn serializes_commits(&self) -> bool {
        true
    }
    /// Round trips to the server so far (statements, prepares, BEGIN / COMMIT / ROLLBACK), for
    /// tests that count them; 0 for a local backend.
    #[cfg(all(test, feature = "postgres"))]
    fn round_trips(&self) -> u64 {
        0
    }
}

/// Reads, in a snapshot or in a write transaction (which sees its own writes).
pub(crate) trait KvRead {
    /// One value.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Many keys of one table in one round trip; results in `keys` order.
    fn get_many(&self, table: Table, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>>;
    /// Every row of `table` whose key starts with `prefix` (empty prefix: all), in key order.
    fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Number of rows in `table`.
    fn count(&self, table: Table) -> Result<u64>;

    /// At most `limit` rows of `table` whose key starts with `prefix` and is greater than `after`
    /// (empty: from the first), in key order: batched scans (rotation, purge, verify, export)
    /// without reading an org's whole table per batch. The default filters
    /// [`KvRead::scan_prefix`]; a backend overrides it with a bounded range read.
    fn scan_after(&self, table: Table, prefix: &[u8], after: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut rows = self.scan_prefix(table, prefix)?;
        if !after.is_empty() {
            rows.retain(|(k, _)| k.as_slice() > after);
        }
        rows.truncate(limit);
        Ok(rows)
    }
}

/// A read snapshot: later commits are not visible to it.
pub(crate) trait KvSnapshot: KvRead + Send + Sync {}

/// A write transaction. Dropping it without [`KvWrite::commit`] aborts it.
pub(crate) trait KvWrite: KvRead + Send {
    /// Inserts or replaces one row.
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()>;
    /// Removes one row (absent: nothing happens).
    fn remove(&mut self, table: Table, key: &[u8]) -> Result<()>;
    /// Durable commit; on failure nothing of the transaction is visible.
    fn commit(self: Box<Self>) -> Result<()>;

    /// Inserts many rows of one table (record keys, as the engine writes them). The default
    /// puts them one by one; a backend overrides it to write them in one go (redb: one table
    /// open; PostgreSQL: one multi-row statement).
    fn put_many(&mut self, table: Table, rows: &[(RecordKey, Vec<u8>)]) -> Result<()> {
        for (k, v) in rows {
            self.put(table, k, v)?;
        }
        Ok(())
    }
}

/// The checks every backend must pass, written against the trait: each backend's tests call
/// it on a fresh, empty store.
#[cfg(test)]
pub(crate) fn conformance(kv: &dyn Kv) {
    use super::tables::{ADJ, AUDIT, NODES};

    // Empty store: reads see nothing.
    let snap = kv.snapshot().expect("snapshot");
    assert_eq!(snap.get(NODES, b"a").expect("get"), None);
    assert_eq!(snap.count(NODES).expect("count"), 0);
    assert!(snap.scan_prefix(NODES, b"").expect("scan").is_empty());
    drop(snap);

    // Read-your-writes inside a write transaction; nothing visible outside until commit.
    let before = kv.snapshot().expect("snapshot");
    let mut w = kv.begin_write().expect("begin_write");
    for (k, v) in [(&b"org1\x02"[..], &b"v2"[..]), (b"org1\x01", b"v1"), (b"org2\x01", b"w1"), (b"org1", b"v0")] {
        w.put(NODES, k, v).expect("put");
    }
    w.put(ADJ, b"org1\x01", b"adj").expect("put");
    assert_eq!(w.get(NODES, b"org1\x01").expect("get").as_deref(), Some(&b"v1"[..]));
    assert_eq!(w.count(NODES).expect("count"), 4);
    w.put(NODES, b"org1\x01", b"v1'").expect("overwrite");
    assert_eq!(w.get(NODES, b"org1\x01").expect("get").as_deref(), Some(&b"v1'"[..]));
    assert_eq!(w.count(NODES).expect("count"), 4, "an overwrite adds no row");
    let in_txn: Vec<Vec<u8>> = w.scan_prefix(NODES, b"org1").expect("scan").into_iter().map(|(k, _)| k).collect();
    assert_eq!(in_txn, vec![b"org1".to_vec(), b"org1\x01".to_vec(), b"org1\x02".to_vec()]);
    let other = kv.snapshot().expect("snapshot");
    assert_eq!(other.get(NODES, b"org1\x01").expect("get"), None, "uncommitted writes are invisible");
    drop(other);
    w.commit().expect("commit");

    // A snapshot begun before the commit does not see it; one begun after does.
    assert_eq!(before.get(NODES, b"org1\x01").expect("get"), None, "snapshot isolation");
    assert_eq!(before.count(NODES).expect("count"), 0);
    drop(before);
    let snap = kv.snapshot().expect("snapshot");
    assert_eq!(snap.get(NODES, b"org1\x01").expect("get").as_deref(), Some(&b"v1'"[..]));
    assert_eq!(snap.get(ADJ, b"org1\x01").expect("get").as_deref(), Some(&b"adj"[..]), "tables are separate");
    assert_eq!(snap.get(AUDIT, b"org1\x01").expect("get"), None);
    assert_eq!(snap.count(NODES).expect("count"), 4);
    assert_eq!(snap.count(ADJ).expect("count"), 1);

    // get_many: results in the order asked, misses as None, duplicates allowed.
    let got = snap.get_many(NODES, &[b"org2\x01", b"nope", b"org1", b"org2\x01"]).expect("get_many");
    assert_eq!(got, vec![Some(b"w1".to_vec()), None, Some(b"v0".to_vec()), Some(b"w1".to_vec())]);
    assert!(snap.get_many(NODES, &[]).expect("get_many").is_empty());

    // scan_prefix: key order, exact prefix bounds, empty prefix is the whole table.
    let keys = |rows: Vec<(Vec<u8>, Vec<u8>)>| rows.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        keys(snap.scan_prefix(NODES, b"org1").expect("scan")),
        vec![b"org1".to_vec(), b"org1\x01".to_vec(), b"org1\x02".to_vec()]
    );
    assert_eq!(keys(snap.scan_prefix(NODES, b"org1\x01").expect("scan")), vec![b"org1\x01".to_vec()]);
    assert_eq!(keys(snap.scan_prefix(NODES, b"org2").expect("scan")), vec![b"org2\x01".to_vec()]);
    assert!(snap.scan_prefix(NODES, b"org3").expect("scan").is_empty());
    assert!(snap.scan_prefix(NODES, b"org").expect("scan").len() == 4);
    assert_eq!(keys(snap.scan_prefix(NODES, b"").expect("scan")).len(), 4);
    let rows = snap.scan_prefix(NODES, b"org1").expect("scan");
    assert_eq!(rows[1].1, b"v1'".to_vec(), "values travel with their keys");

    // scan_after: strictly after the cursor, bounded by the prefix and the limit.
    assert_eq!(
        keys(snap.scan_after(NODES, b"org1", b"", 2).expect("scan")),
        vec![b"org1".to_vec(), b"org1\x01".to_vec()]
    );
    assert_eq!(keys(snap.scan_after(NODES, b"org1", b"org1\x01", 10).expect("scan")), vec![b"org1\x02".to_vec()]);
    assert!(snap.scan_after(NODES, b"org1", b"org1\x02", 10).expect("scan").is_empty());
    drop(snap);

    // Removes, and a transaction dropped without commit leaves nothing behind.
    let mut w = kv.begin_write().expect("begin_write");
    w.remove(NODES, b"org1").expect("remove");
    w.remove(NODES, b"absent").expect("removing an absent key is no error");
    assert_eq!(w.get(NODES, b"org1").expect("get"), None, "a write transaction sees its removes");
    w.put(NODES, b"org9", b"gone").expect("put");
    drop(w);
    let snap = kv.snapshot().expect("snapshot");
    assert_eq!(snap.get(NODES, b"org1").expect("get").as_deref(), Some(&b"v0"[..]), "abort on drop");
    assert_eq!(snap.get(NODES, b"org9").expect("get"), None, "abort on drop");
    drop(snap);

    let mut w = kv.begin_write().expect("begin_write");
    w.remove(NODES, b"org1").expect("remove");
    let rows: Vec<(RecordKey, Vec<u8>)> = vec![([3; 24], b"c".to_vec()), ([1; 24], b"a".to_vec())];
    w.put_many(ADJ, &rows).expect("put_many");
    w.commit().expect("commit");
    let snap = kv.snapshot().expect("snapshot");
    assert_eq!(snap.get(NODES, b"org1").expect("get"), None, "a committed remove is visible");
    assert_eq!(snap.count(NODES).expect("count"), 3);
    assert_eq!(
        snap.get_many(ADJ, &[&[1; 24], &[3; 24]]).expect("get_many"),
        vec![Some(b"a".to_vec()), Some(b"c".to_vec())]
    );
    assert_eq!(snap.count(ADJ).expect("count"), 3);

    // Large values and binary keys round-trip unchanged.
    drop(snap);
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut w = kv.begin_write().expect("begin_write");
    w.put(AUDIT, &[0, 0xff, 0], &big).expect("put");
    w.commit().expect("commit");
    let snap = kv.snapshot().expect("snapshot");
    assert_eq!(snap.get(AUDIT, &[0, 0xff, 0]).expect("get").as_deref(), Some(big.as_slice()));
    assert!(snap.scan_prefix(AUDIT, &[0, 0xff]).expect("scan").len() == 1);
}
