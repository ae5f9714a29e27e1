//! The redb backend of the storage interface: one redb file (or a custom redb storage backend).
//!
//! Every read runs under [`contain`]: redb panics on some corrupt files instead of returning an
//! error, and that must reach the host as `Corrupt`, never as a panic. Writes and commits are not
//! contained: a panic there may leave redb's locks poisoned, so it reaches the committer, which
//! poisons the `Db` (see `GroupCommit::poison`).

use std::path::Path;
use std::sync::OnceLock;

use redb::{ReadOnlyTable, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::contain;
use super::kv::{BackendKind, Kv, KvRead, KvSnapshot, KvWrite};
use super::tables::{RecordKey, Table, ALL, META};
use crate::error::{Error, Result};

type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;
type RoTable = ReadOnlyTable<&'static [u8], &'static [u8]>;

fn def(table: Table) -> Def {
    TableDefinition::new(table.name)
}

/// Slots a snapshot has for opened tables: one per table id (ids are small and dense, see
/// `tables::ALL`), so beginning a snapshot initializes no more than it needs.
const SLOTS: usize = {
    let mut max = 0;
    let mut i = 0;
    while i < ALL.len() {
        if ALL[i].id as usize > max {
            max = ALL[i].id as usize;
        }
        i += 1;
    }
    max + 1
};

/// A redb database behind the storage interface.
pub(crate) struct RedbKv {
    db: redb::Database,
}

impl std::fmt::Debug for RedbKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedbKv")
    }
}

/// What an opened redb file holds, before silograph reads its `meta` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// No table at all: a new file (or one that crashed while being created).
    Empty,
    /// Tables, but no `meta`: not a silograph database.
    Foreign,
    /// A `meta` table.
    Silograph,
}

impl RedbKv {
    pub(crate) fn new(db: redb::Database) -> Self {
        RedbKv { db }
    }

    /// Creates (or opens) the redb file at `path` with default settings.
    pub(crate) fn create(path: &Path) -> Result<Self> {
        Ok(RedbKv { db: redb::Database::create(path)? })
    }

    /// What the file holds (redb tells a missing table from an empty one; the engine needs that
    /// only here, at open).
    pub(crate) fn layout(&self) -> Result<Layout> {
        contain("file", &[], || {
            let rtx = self.db.begin_read()?;
            match rtx.open_table(def(META)) {
                Ok(_) => Ok(Layout::Silograph),
                Err(redb::TableError::TableDoesNotExist(_)) => {
                    Ok(if rtx.list_tables()?.next().is_some() { Layout::Foreign } else { Layout::Empty })
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    /// A write transaction that first creates every table (a new file gets them all in its
    /// first commit, together with `meta`).
    pub(crate) fn begin_create(&self) -> Result<Box<dyn KvWrite>> {
        let wtx = contain("file", &[], || Ok(self.db.begin_write()?))?;
        for t in ALL {
            wtx.open_table(def(*t))?;
        }
        Ok(Box::new(RedbWrite { wtx }))
    }

    /// Copies every table, row by row, into a new redb file at `to` (compaction: the copy holds
    /// live records only).
    pub(crate) fn copy_into(&self, to: &Path) -> Result<()> {
        let fresh = redb::Database::create(to)?;
        let rtx = self.db.begin_read()?;
        let wtx = fresh.begin_write()?;
        for t in ALL {
            let src = match rtx.open_table(def(*t)) {
                Ok(src) => src,
                Err(redb::TableError::TableDoesNotExist(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            let mut dst = wtx.open_table(def(*t))?;
            for item in src.iter()? {
                let (k, v) = item?;
                dst.insert(k.value(), v.value())?;
            }
        }
        wtx.commit()?;
        Ok(())
    }
}

impl Kv for RedbKv {
    fn snapshot(&self) -> Result<Box<dyn KvSnapshot>> {
        let rtx = contain("file", &[], || Ok(self.db.begin_read()?))?;
        Ok(Box::new(RedbSnapshot { rtx, tables: std::array::from_fn(|_| OnceLock::new()) }))
    }

    fn begin_write(&self) -> Result<Box<dyn KvWrite>> {
        let wtx = contain("file", &[], || Ok(self.db.begin_write()?))?;
        Ok(Box::new(RedbWrite { wtx }))
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Redb
    }
}

/// An MVCC snapshot whose tables are opened on first use, so beginning one costs one redb read
/// transaction and nothing per table. A table the file does not have reads as empty.
struct RedbSnapshot {
    rtx: redb::ReadTransaction,
    tables: [OnceLock<Option<RoTable>>; SLOTS],
}

impl RedbSnapshot {
    /// `table`, opened once per snapshot (`None`: the file has no such table).
    fn table(&self, table: Table) -> Result<Option<&RoTable>> {
        let slot = self.tables.get(usize::from(table.id)).ok_or_else(|| Error::Internal("table id".into()))?;
        if let Some(t) = slot.get() {
            return Ok(t.as_ref());
        }
        let t = contain(table.name, &[], || match self.rtx.open_table(def(table)) {
            Ok(t) => Ok(Some(t)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(e.into()),
        })?;
        Ok(slot.get_or_init(|| t).as_ref())
    }
}

impl KvSnapshot for RedbSnapshot {}

impl KvRead for RedbSnapshot {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let Some(t) = self.table(table)? else { return Ok(None) };
        get_in(t, table, key)
    }

    fn get_many(&self, table: Table, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        let Some(t) = self.table(table)? else { return Ok(vec![None; keys.len()]) };
        keys.iter().map(|k| get_in(t, table, k)).collect()
    }

    fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let Some(t) = self.table(table)? else { return Ok(Vec::new()) };
        scan_in(t, table, prefix, &[], usize::MAX)
    }

    fn scan_after(&self, table: Table, prefix: &[u8], after: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let Some(t) = self.table(table)? else { return Ok(Vec::new()) };
        scan_in(t, table, prefix, after, limit)
    }

    fn count(&self, table: Table) -> Result<u64> {
        let Some(t) = self.table(table)? else { return Ok(0) };
        contain(table.name, &[], || Ok(t.len()?))
    }
}

/// A redb write transaction (aborted by redb on drop).
struct RedbWrite {
    wtx: redb::WriteTransaction,
}

impl RedbWrite {
    /// `table` in this transaction (created if the file has none yet).
    fn open(&self, table: Table) -> Result<redb::Table<'_, &'static [u8], &'static [u8]>> {
        contain(table.name, &[], || Ok(self.wtx.open_table(def(table))?))
    }
}

impl KvRead for RedbWrite {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let t = self.open(table)?;
        get_in(&t, table, key)
    }

    fn get_many(&self, table: Table, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        let t = self.open(table)?;
        keys.iter().map(|k| get_in(&t, table, k)).collect()
    }

    fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let t = self.open(table)?;
        scan_in(&t, table, prefix, &[], usize::MAX)
    }

    fn scan_after(&self, table: Table, prefix: &[u8], after: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let t = self.open(table)?;
        scan_in(&t, table, prefix, after, limit)
    }

    fn count(&self, table: Table) -> Result<u64> {
        let t = self.open(table)?;
        contain(table.name, &[], || Ok(t.len()?))
    }
}

impl KvWrite for RedbWrite {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.wtx.open_table(def(table))?.insert(key, value)?;
        Ok(())
    }

    fn remove(&mut self, table: Table, key: &[u8]) -> Result<()> {
        self.wtx.open_table(def(table))?.remove(key)?;
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<()> {
        self.wtx.commit()?;
        Ok(())
    }

    /// Rows in key order; a run of new keys that fall into one gap of the table (an index run's
    /// buckets, a commit's new edge pages) goes in through one cursor, which packs redb's leaves
    /// full. One by one, keys ascending through a gap would split every leaf in half and leave
    /// the left halves behind half empty (redb packs only appends past the table's last key).
    fn put_many(&mut self, table: Table, rows: &[(RecordKey, Vec<u8>)]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut order: Vec<&(RecordKey, Vec<u8>)> = rows.iter().collect();
        order.sort_by_key(|r| r.0);
        order.dedup_by(|later, first| {
            // The last put of a key wins, as row by row.
            let same = later.0 == first.0;
            if same {
                std::mem::swap(later, first);
            }
            same
        });
        let mut t = self.wtx.open_table(def(table))?;
        let mut i = 0;
        while let Some((key, value)) = order.get(i).map(|r| (&r.0, &r.1)) {
            let mut cursor = t.lower_bound_mut(std::ops::Bound::Included(key.as_slice()))?;
            let next: Option<Vec<u8>> = cursor.peek_next()?.map(|(k, _)| k.value().to_vec());
            let gap = order[i..].iter().take_while(|r| next.as_deref().is_none_or(|n| r.0.as_slice() < n)).count();
            if gap < 2 {
                // An existing key (replaced in place), or a single new one.
                cursor.close()?;
                t.insert(key.as_slice(), value.as_slice())?;
                i += 1;
                continue;
            }
            for (k, v) in &order[i..i + gap] {
                cursor.insert_before(k.as_slice(), v.as_slice())?;
            }
            cursor.close()?;
            i += gap;
        }
        Ok(())
    }
}

/// One value, copied out.
fn get_in<T: ReadableTable<&'static [u8], &'static [u8]>>(t: &T, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
    contain(table.name, key, || Ok(t.get(key)?.map(|v| v.value().to_vec())))
}

/// At most `limit` rows whose key starts with `prefix` and is greater than `after`, in order.
fn scan_in<T: ReadableTable<&'static [u8], &'static [u8]>>(
    t: &T,
    table: Table,
    prefix: &[u8],
    after: &[u8],
    limit: usize,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let start = if after > prefix { after } else { prefix };
    contain(table.name, start, || {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        for item in t.range::<&[u8]>(start..)? {
            let (k, v) = item?;
            let k = k.value();
            if !k.starts_with(prefix) {
                break;
            }
            if !after.is_empty() && k <= after {
                continue;
            }
            out.push((k.to_vec(), v.value().to_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> RedbKv {
        let db = redb::Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).expect("db");
        RedbKv::new(db)
    }

    #[test]
    fn redb_backend_passes_the_storage_conformance_checks() {
        super::super::kv::conformance(&memory());
    }

    #[test]
    fn redb_backend_passes_the_storage_conformance_checks_on_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = RedbKv::create(&dir.path().join("kv.redb")).expect("create");
        super::super::kv::conformance(&kv);
    }

    #[test]
    fn a_missing_table_reads_as_empty() {
        let kv = memory();
        assert_eq!(kv.layout().expect("layout"), Layout::Empty);
        let snap = kv.snapshot().expect("snapshot");
        assert_eq!(snap.get(META, b"header").expect("get"), None);
        assert_eq!(snap.count(META).expect("count"), 0);
        assert!(snap.scan_prefix(META, b"").expect("scan").is_empty());
        let mut w = kv.begin_create().expect("create");
        w.put(META, b"k", b"v").expect("put");
        w.commit().expect("commit");
        assert_eq!(kv.layout().expect("layout"), Layout::Silograph);
    }

    /// `put_many` in any order: new keys in one gap are packed into full leaves, an existing key
    /// is replaced, and of a key given twice the later value wins (as row by row).
    #[test]
    fn put_many_packs_a_gap_of_new_keys_and_replaces_existing_ones() {
        use super::super::tables::INDEX;
        let kv = memory();
        let key = |hi: u8, n: u16| {
            let mut k = [hi; 24];
            k[22..].copy_from_slice(&n.to_be_bytes());
            k
        };
        let mut w = kv.begin_write().expect("write");
        w.put_many(INDEX, &[(key(1, 0), b"below".to_vec()), (key(3, 0), b"above".to_vec())]).expect("put");
        w.commit().expect("commit");
        // 400 new keys between the two (reversed), one of them twice, and the one below replaced.
        let mut rows: Vec<(RecordKey, Vec<u8>)> = (0..400u16).rev().map(|n| (key(2, n), vec![n as u8; 500])).collect();
        rows.push((key(2, 7), b"later".to_vec()));
        rows.push((key(1, 0), b"replaced".to_vec()));
        let mut w = kv.begin_write().expect("write");
        w.put_many(INDEX, &rows).expect("put_many");
        w.commit().expect("commit");
        let snap = kv.snapshot().expect("snapshot");
        assert_eq!(snap.count(INDEX).expect("count"), 402);
        assert_eq!(snap.get(INDEX, &key(1, 0)).expect("get").as_deref(), Some(&b"replaced"[..]));
        assert_eq!(snap.get(INDEX, &key(3, 0)).expect("get").as_deref(), Some(&b"above"[..]));
        assert_eq!(snap.get(INDEX, &key(2, 7)).expect("get").as_deref(), Some(&b"later"[..]));
        assert_eq!(snap.get(INDEX, &key(2, 399)).expect("get"), Some(vec![143; 500]));
        // Seven 532-byte pairs fill a 4 KiB leaf: packed, 400 take 58 leaves (and the two
        // neighbours' leaves); inserted one by one, each full leaf splits in halves: 80.
        let rtx = kv.db.begin_read().expect("read");
        let leaves = rtx.open_table(def(INDEX)).expect("table").stats().expect("stats").leaf_pages();
        assert!(leaves <= 62, "{leaves} leaves for 402 rows");
    }
}
