//! Group commit: write transactions of different orgs, from any threads, commit together in one
//! storage write transaction and one fsync.
//!
//! A [`WriteTxn`](super::WriteTxn) reads from an MVCC snapshot and seals what it changed on its
//! own thread; only the finished [`WriteSet`] (sealed rows, the org's new registry entry) goes
//! to the committer. The first caller that finds no commit running becomes the leader: it takes
//! every queued set, writes them in one storage write transaction, commits once (durably)
//! and hands each caller its own result; callers that arrive meanwhile queue for the next round.
//! So N concurrent writers pay one fsync per round, not one each.
//!
//! Isolation. Two writers of one org never overlap: each holds its org's [`WriterLock`] from
//! begin until its commit is durable (admin operations that change the org's registry entry take
//! it too), so a writer's snapshot of its own org is always current. As a safety net the leader
//! compares the org's registry entry with the one the writer began from and fails that set alone
//! with [`Error::Conflict`] if it changed. A set that fails its check is left out; a storage
//! failure of the whole round is retried set by set, so a failing set fails alone.
//!
//! Across processes (PostgreSQL) the writer lock does not reach: there the check is the
//! database's. Every commit rewrites its org's registry row, and of two transactions that rewrite
//! the same row the later fails with a serialization failure (storage reason `Conflict`), which
//! becomes that org's `Error::Conflict` here.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::cache::{Cached, PageKey};
use super::kv::{BackendKind, KvWrite};
use super::org::{OrgInner, OrgShared};
use super::state::NodeKey;
use super::tables::{RecordKey, Table, AUDIT, ORGS};
use crate::codec::{OrgEntry, TreeNode};
use crate::error::{Error, Result, StorageReason};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section below is a few assignments: a panic cannot leave them half done.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serializes the writers of one org (and the admin operations that change its registry entry).
#[derive(Debug, Default)]
pub(crate) struct WriterLock {
    busy: Mutex<bool>,
    free: Condvar,
}

/// Proof that its holder is the org's only writer; released on drop.
pub(crate) struct WriterToken {
    shared: Arc<OrgShared>,
}

impl std::fmt::Debug for WriterToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriterToken")
    }
}

impl WriterLock {
    /// Waits until no other writer of the org is active, then becomes it.
    pub(crate) fn acquire(shared: &Arc<OrgShared>) -> WriterToken {
        let mut busy = lock(&shared.writer.busy);
        while *busy {
            busy = shared.writer.free.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        *busy = true;
        WriterToken { shared: shared.clone() }
    }
}

impl Drop for WriterToken {
    fn drop(&mut self) {
        *lock(&self.shared.writer.busy) = false;
        self.shared.writer.free.notify_one();
    }
}

/// Sealed rows of one table: `(record key, sealed value)`, sorted by key.
pub(crate) type Rows = Vec<(RecordKey, Vec<u8>)>;

/// Everything one write transaction commits: sealed rows and the org's new registry entry.
pub(crate) struct WriteSet {
    pub org: Arc<OrgInner>,
    /// Digest of the registry entry the transaction began from (the conflict check).
    pub base: [u8; 32],
    /// The registry entry to store (sealed by the committer under the current root key).
    pub entry: OrgEntry,
    /// Rows to insert, per table, each sorted by key.
    pub puts: Vec<(Table, Rows)>,
    /// Keys to remove, per table.
    pub removes: Vec<(Table, Vec<RecordKey>)>,
    /// The audit entry the transaction appends: its key and sealed value.
    pub audit: Option<([u8; 16], Vec<u8>)>,
    /// Page-cache keys of the pages the commit changes (invalidation).
    pub changed_pages: Vec<PageKey>,
    /// Pages the commit writes, decoded, to enter in the page cache once it is durable
    /// (write-through; empty for a large commit).
    pub fresh: Vec<(PageKey, Cached)>,
    /// State tree nodes the commit writes, to enter in the tree cache once it is durable.
    pub fresh_tree: Vec<(NodeKey, Arc<TreeNode>)>,
}

impl std::fmt::Debug for WriteSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteSet").field("org", &self.org.name).finish_non_exhaustive()
    }
}

impl WriteSet {
    /// Checks the org's entry in `wtx` against the one this set began from, then writes the set.
    pub(crate) fn apply(&self, wtx: &mut dyn KvWrite) -> Result<()> {
        let db = &self.org.db;
        let tag = self.org.tag;
        let current = db.read_entry(&*wtx, tag, &self.org.name)?;
        if entry_digest(&current)? != self.base {
            return Err(Error::Conflict(self.org.name.clone()));
        }
        for (table, rows) in &self.puts {
            wtx.put_many(*table, rows)?;
        }
        for (table, keys) in &self.removes {
            for k in keys {
                wtx.remove(*table, k)?;
            }
        }
        if let Some((k, v)) = &self.audit {
            wtx.put(AUDIT, k, v)?;
        }
        let sealed = db.seal_entry(tag, &self.entry)?;
        wtx.put(ORGS, &tag.0, &sealed)?;
        Ok(())
    }

    /// Commits `wtx` (holding this set and possibly others) with the page-cache protocol of every
    /// org involved: readers stop using a cache while its org's pages change under it.
    pub(crate) fn commit_all(wtx: Box<dyn KvWrite>, sets: &[&WriteSet]) -> Result<()> {
        for s in sets {
            s.org.shared.cache.begin_commit();
        }
        let res = wtx.commit();
        let shared = sets.first().is_some_and(|s| s.org.db.kv.kind() != BackendKind::Redb);
        for s in sets {
            s.org.shared.cache.end_commit_at(s.changed_pages.iter(), s.entry.commit_seq, res.is_ok());
            if res.is_ok() {
                // Durable: what it wrote is the org's state at its commit counter.
                s.org.shared.cache.fill(&s.fresh, s.entry.commit_seq, shared);
                for (k, node) in &s.fresh_tree {
                    s.org.shared.tree.insert(*k, node.clone());
                }
            }
        }
        res
    }
}

/// SHA-256 of an entry's archive: equal digests, equal entries (the encoding is deterministic).
pub(crate) fn entry_digest(entry: &OrgEntry) -> Result<[u8; 32]> {
    use sha2::Digest;
    let mut bytes = crate::codec::encode(entry).map_err(|_| Error::Internal("org entry does not encode".into()))?;
    let digest: [u8; 32] = sha2::Sha256::digest(bytes.as_slice()).into();
    zeroize::Zeroize::zeroize(bytes.as_mut_slice());
    Ok(digest)
}

/// A conflict the storage engine found at commit (PostgreSQL: a writer of the same org in another
/// process committed first, SQLSTATE 40001) as the org's [`Error::Conflict`]: nothing of the set
/// was written, and a retry re-reads the new state.
fn as_org_conflict(set: &WriteSet, res: Result<()>) -> Result<()> {
    match res {
        Err(Error::Storage(e)) if e.reason() == StorageReason::Conflict => Err(Error::Conflict(set.org.name.clone())),
        other => other,
    }
}

type Slot = Arc<(Mutex<Option<Result<()>>>, Condvar)>;

#[derive(Default)]
struct Queue {
    pending: VecDeque<(WriteSet, Slot)>,
    leader: bool,
}

/// The group committer of one `Db`.
#[derive(Default)]
pub(crate) struct GroupCommit {
    queue: Mutex<Queue>,
    /// Set once a commit round panicked: the `Db` then refuses writes (see [`GroupCommit::poison`]).
    poisoned: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupCommit")
    }
}

impl GroupCommit {
    /// Marks the `Db` as no longer writable: a write path panicked part-way, and what it held
    /// (the storage write transaction, a lock) may be inconsistent. Reads go on; writes fail with
    /// `Error::Internal` until the database is reopened (redb repairs on open).
    pub(crate) fn poison(&self) {
        self.poisoned.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// `Error::Internal` once a write path has panicked.
    pub(crate) fn writable(&self) -> Result<()> {
        if self.poisoned.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::Internal(
                "an earlier write panicked: this Db refuses writes until the database is reopened".into(),
            ));
        }
        Ok(())
    }

    /// Commits `set` durably, together with whatever other sets are queued; returns once this
    /// set's own data is durable (or failed).
    pub(crate) fn commit(&self, db: &super::DbInner, set: WriteSet) -> Result<()> {
        self.commit_many(db, vec![set]).pop().unwrap_or_else(|| Err(Error::Internal("no commit result".into())))
    }

    /// Queues `sets` together (they land in the same round unless a round is running, then in
    /// the next one together) and returns each set's result once it is durable or failed.
    pub(crate) fn commit_many(&self, db: &super::DbInner, sets: Vec<WriteSet>) -> Vec<Result<()>> {
        let slots: Vec<Slot> = sets.iter().map(|_| Arc::new((Mutex::new(None), Condvar::new()))).collect();
        {
            let mut q = lock(&self.queue);
            q.pending.extend(sets.into_iter().zip(slots.iter().cloned()));
            if q.leader {
                drop(q);
                return slots.iter().map(Self::wait).collect();
            }
            q.leader = true;
        }
        // This thread leads until the queue is empty (its own set is in the first round).
        loop {
            let round: Vec<(WriteSet, Slot)> = {
                let mut q = lock(&self.queue);
                if q.pending.is_empty() {
                    q.leader = false;
                    break;
                }
                q.pending.drain(..).collect()
            };
            let round_slots: Vec<Slot> = round.iter().map(|(_, s)| s.clone()).collect();
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Self::run_round(db, round)));
            if run.is_err() {
                // redb panicked (it does on some corrupt files): fail the round's callers, not hang
                // them, and take no more writes on this handle.
                self.poison();
                for slot in &round_slots {
                    let mut r = lock(&slot.0);
                    if r.is_none() {
                        *r = Some(Err(Error::Internal("a group commit panicked; nothing of it was committed".into())));
                    }
                    slot.1.notify_all();
                }
            }
        }
        slots.iter().map(Self::wait).collect()
    }

    fn wait(slot: &Slot) -> Result<()> {
        let (m, cv) = &**slot;
        let mut r = lock(m);
        loop {
            if let Some(res) = r.take() {
                return res;
            }
            r = cv.wait(r).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn fill(slot: &Slot, res: Result<()>) {
        *lock(&slot.0) = Some(res);
        slot.1.notify_all();
    }

    /// One storage transaction for the whole round; on a storage failure, each set again alone.
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "group_commit_round", level = "debug", skip_all, fields(sets = round.len()))
    )]
    fn run_round(db: &super::DbInner, round: Vec<(WriteSet, Slot)>) {
        let together = (|| -> Result<Vec<Option<Error>>> {
            let mut wtx = db.begin_write()?;
            let mut failed = Vec::with_capacity(round.len());
            for (set, _) in &round {
                match set.apply(&mut *wtx) {
                    Ok(()) => failed.push(None),
                    // A conflict is checked before the set writes anything: leave it out.
                    Err(e @ Error::Conflict(_)) => failed.push(Some(e)),
                    Err(e) => return Err(e),
                }
            }
            let ok: Vec<&WriteSet> =
                round.iter().zip(&failed).filter(|(_, f)| f.is_none()).map(|((s, _), _)| s).collect();
            WriteSet::commit_all(wtx, &ok)?;
            Ok(failed)
        })();
        match together {
            Ok(failed) => {
                for ((_, slot), f) in round.iter().zip(failed) {
                    Self::fill(slot, f.map_or(Ok(()), Err));
                }
            }
            Err(_) if round.len() > 1 => {
                for (set, slot) in round {
                    let res = (|| {
                        let mut wtx = db.begin_write()?;
                        set.apply(&mut *wtx)?;
                        WriteSet::commit_all(wtx, &[&set])
                    })();
                    Self::fill(&slot, as_org_conflict(&set, res));
                }
            }
            Err(e) => {
                // A round of one set: its one caller gets the error.
                if let Some((set, slot)) = round.into_iter().next() {
                    Self::fill(&slot, as_org_conflict(&set, Err(e)));
                }
            }
        }
    }
}
