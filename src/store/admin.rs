//! Administrative operations on a `Db`: root key rotation, org key rotation, crypto-shredding
//! deletion and compaction.

use std::sync::Arc;

use zeroize::Zeroize;

use super::kv::{BackendKind, KvRead};
use super::org::Org;
use super::tables::{RecordKind, Table, ADJ, AUDIT, DICT, EDGES, INDEX, META, NODES, ORGS, PROPS, TREE};
use super::{Db, DbInner};
use crate::codec::{EpochEntry, OrgEntry, RotationState};
use crate::crypto::{RootKey, RootKeys, Secret};
use crate::error::{Error, InputKind, Result};
use crate::types::{Compartment, OrgTag};

/// The tables holding an org's records, in the order rotation and purge visit them.
pub(crate) const ORG_TABLES: [Table; 8] = [NODES, PROPS, EDGES, ADJ, INDEX, DICT, TREE, AUDIT];

/// Records re-sealed or purged per write transaction: bounds how long the writer lock is held.
pub const ADMIN_BATCH: usize = 2048;

/// What an org key rotation did.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RotationReport {
    /// The epoch every record is now sealed under.
    pub epoch: u32,
    /// Records re-sealed by this call.
    pub resealed: u64,
    /// Write transactions used.
    pub batches: u64,
    /// True if this call finished a rotation an earlier (interrupted) call had started.
    pub resumed: bool,
}

/// What deleting an org did.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DeleteReport {
    /// Records removed from the org tables.
    pub purged: u64,
}

pub(crate) fn table_by_id(id: u8) -> Option<Table> {
    ORG_TABLES.iter().copied().find(|t| t.id == id)
}

fn next_table(id: u8) -> Option<Table> {
    let pos = ORG_TABLES.iter().position(|t| t.id == id)?;
    ORG_TABLES.get(pos + 1).copied()
}

/// The keys of `table` that belong to `tag`, after `cursor` (exclusive), at most `limit`.
pub(crate) fn org_keys_after(
    kv: &dyn KvRead,
    table: Table,
    tag: OrgTag,
    cursor: &[u8],
    limit: usize,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    kv.scan_after(table, &tag.0, cursor, limit)
}

impl DbInner {
    /// Destroys the custody key of an org under custody (first, so that even if the deletion
    /// stops here no copy of the file opens the org again); nothing for other orgs.
    fn destroy_custody_key(&self, entry: &OrgEntry, tag: OrgTag) -> Result<()> {
        if entry.custody_id.is_empty() {
            return Ok(());
        }
        let id: [u8; 16] = entry.custody_id.as_slice().try_into().map_err(|_| Error::corrupt(ORGS.name, &tag.0))?;
        let custody = self.custody.as_ref().ok_or_else(|| {
            Error::invalid(
                InputKind::KeyKind,
                format!(
                    "org `{}` was created under key custody: open the database with its custody to delete it",
                    entry.name
                ),
            )
        })?;
        custody.0.destroy(&crate::CustodyKeyId(id))
    }

    /// The epoch number after every epoch `entry` has had.
    pub(crate) fn next_epoch(entry: &OrgEntry) -> Result<u32> {
        let next = entry.epochs.iter().map(|e| e.epoch).max().unwrap_or(0).checked_add(1);
        next.ok_or_else(|| Error::invalid(InputKind::Exhausted, "key epochs exhausted"))
    }

    /// Starts a new key epoch for `entry` (fresh random seed; BYOK: none, its keys derive from
    /// the host key) and schedules the re-sealing of every record into it.
    pub(crate) fn start_epoch(entry: &mut OrgEntry) -> Result<u32> {
        let next = DbInner::next_epoch(entry)?;
        let seed = if entry.byok { Vec::new() } else { Secret::generate()?.expose().to_vec() };
        entry.epochs.push(EpochEntry { epoch: next, seed, seal_count: 0 });
        entry.current_epoch = next;
        entry.rotation = Some(RotationState { target_epoch: next, table: NODES.id, cursor: Vec::new() });
        Ok(next)
    }
}

impl Db {
    fn tag_of(&self, name: &str) -> Result<OrgTag> {
        self.inner.tag_of(&*self.inner.kv.snapshot()?, name)
    }

    /// Rotates the root key, and the database secret with it: rewraps every org's seeds under
    /// keys derived from `new_root`, draws a new database secret (the tags of orgs created or
    /// re-keyed from now on, the database root's keys, the anchors' key) and re-seals the
    /// database root under it, in one transaction. O(orgs): no record is re-encrypted, and every
    /// org keeps its tag (the secrets it was tagged under stay in the file, wrapped under the new
    /// key, to find it by name). After it returns, only `new_root` opens the database; someone
    /// who kept the old root key and an old copy of `meta` can no longer map org names to the
    /// tags of orgs created or re-keyed ([`Db::rekey_org`]) since. Anchors taken before stay
    /// valid. The registry must match the database root (`Corrupt` otherwise: a rotation must not
    /// launder a tampered registry into a freshly sealed root).
    #[cfg_attr(feature = "tracing", tracing::instrument(name = "rotate_root_key", level = "debug", skip_all))]
    pub fn rotate_root_key(&self, new_root: RootKey) -> Result<()> {
        self.inner.group.writable()?;
        let inner = &self.inner;
        let new_keys = RootKeys::derive(&new_root, &inner.db_id);
        // The storage writer first (on redb it excludes every other write until the commit),
        // then the root state, held across the commit so no reader or writer pairs the new
        // rows with the old keys. A plain storage transaction: the root record is rebuilt here.
        let mut wtx = inner.kv.begin_write()?;
        let mut root = inner.root.write().map_err(|_| {
            inner.group.poison();
            Error::Internal("an earlier root rotation panicked: reopen the database".into())
        })?;
        let gen = root
            .gen
            .checked_add(1)
            .ok_or_else(|| Error::invalid(InputKind::Exhausted, "root generations exhausted"))?;
        let old = super::root::check_with(root.secrets.current(), &inner.db_id, inner.kv.serializes_commits(), &*wtx)?;
        let secrets = root.secrets.rotated(&inner.db_id)?;
        let mut rewrapped = Vec::new();
        for (key, v) in wtx.scan_prefix(ORGS, &[])? {
            let sealed = inner.rewrap_entry(&root.keys, &new_keys, gen, &key, &v)?;
            rewrapped.push((key, sealed));
        }
        for (k, v) in &rewrapped {
            wtx.put(ORGS, k, v)?;
        }
        let rec = super::root::sums(secrets.current(), old.counter.saturating_add(1), &rewrapped);
        wtx.put(META, super::root::ROOT_RECORD_KEY, &super::root::seal(secrets.current(), &inner.db_id, &rec)?)?;
        super::write_meta(&mut *wtx, &inner.db_id, gen, &new_keys, &secrets)?;
        wtx.commit()?;
        let prev = std::mem::replace(&mut root.keys, new_keys);
        let old_gen = root.gen;
        root.prev.push((old_gen, prev));
        if root.prev.len() > super::ROOT_KEYS_KEPT {
            root.prev.remove(0);
        }
        root.gen = gen;
        root.secrets = Arc::new(secrets);
        Ok(())
    }

    /// Rotates an org's data keys: a new epoch with a fresh random seed. New writes use it at
    /// once; existing records are re-sealed in batches of [`ADMIN_BATCH`] (each its own
    /// transaction, so readers and writers keep working between batches); when all are done,
    /// the old epochs' seeds are destroyed. If a previous rotation was interrupted (crash), this
    /// call resumes it instead of starting another.
    ///
    /// BYOK orgs are rotated with [`Db::rotate_org_key_with_key`] (`InvalidInput` here).
    #[cfg_attr(feature = "tracing", tracing::instrument(name = "rotate_org_key", level = "debug", skip_all))]
    pub fn rotate_org_key(&self, name: &str) -> Result<RotationReport> {
        self.rotate(name, None)
    }

    /// Rotates a BYOK org's data keys: a new epoch whose keys derive from the host key `key`
    /// (through per-compartment chain keys, so the host key itself stays the same), then every
    /// record re-sealed into it as [`Db::rotate_org_key`] does (resumable; it also finishes the
    /// epoch a commit started at the seal limit). `WrongKey` if `key` is not the org's key.
    #[cfg_attr(feature = "tracing", tracing::instrument(name = "rotate_org_key", level = "debug", skip_all))]
    pub fn rotate_org_key_with_key(&self, name: &str, key: &crate::OrgKey) -> Result<RotationReport> {
        self.rotate(name, Some(key))
    }

    fn rotate(&self, name: &str, key: Option<&crate::OrgKey>) -> Result<RotationReport> {
        self.inner.group.writable()?;
        // Checks the key (and the kind of org) before anything changes.
        let org = self.open_org(name, key, &Compartment::FULL_SCOPE)?;
        let tag = self.tag_of(name)?;
        let inner = &self.inner;
        let writer = super::commit::WriterLock::acquire(&inner.shared_for(tag));
        let mut wtx = inner.begin_write()?;
        let resumed;
        {
            let mut entry = inner.read_entry(&*wtx, tag, name)?;
            if entry.state != 0 {
                return Err(Error::OrgNotFound(name.to_owned()));
            }
            if entry.byok != key.is_some() {
                return Err(Error::invalid(InputKind::KeyKind, format!("org `{name}` changed its kind of key")));
            }
            if entry.rotation.as_ref().is_some_and(super::rekey::is_rekey) {
                return Err(Error::invalid(
                    InputKind::WrongState,
                    format!("org `{name}` has a re-key in progress: finish it with rekey_org first"),
                ));
            }
            resumed = entry.rotation.is_some();
            if !resumed {
                DbInner::start_epoch(&mut entry)?;
                wtx.put(ORGS, &tag.0, inner.seal_entry(tag, &entry)?.as_slice())?;
            }
        }
        wtx.commit()?;
        drop(writer);
        let mut report = RotationReport { epoch: 0, resealed: 0, batches: 0, resumed };
        while self.rotation_batch(&org, &mut report)? {}
        super::audit::append_admin_for(&org, tag, "rotate-org-key", &[("resealed", report.resealed)], &inner.actor)?;
        Ok(report)
    }

    /// One batch of re-sealing; returns whether more remain.
    fn rotation_batch(&self, org: &Org, report: &mut RotationReport) -> Result<bool> {
        let inner = &self.inner;
        let oi = &org.inner;
        // Each batch changes the registry entry: writers of the org go between batches.
        let _writer = super::commit::WriterLock::acquire(&oi.shared);
        let mut wtx = inner.begin_write()?;
        let more;
        {
            let mut entry = inner.read_entry(&*wtx, oi.tag, &oi.name)?;
            oi.learn_epochs(&entry)?;
            let Some(rot) = entry.rotation.clone() else {
                report.epoch = entry.current_epoch;
                return Ok(false);
            };
            report.epoch = rot.target_epoch;
            let table = table_by_id(rot.table).ok_or_else(|| Error::corrupt(ORGS.name, &oi.tag.0))?;
            let batch = org_keys_after(&*wtx, table, oi.tag, &rot.cursor, ADMIN_BATCH)?;
            let mut resealed = Vec::with_capacity(batch.len());
            for (k, v) in &batch {
                let c = compartment_of(org, table, k);
                if let Some(sealed) = oi.reseal_at(rot.target_epoch, table, k, c, v)? {
                    resealed.push((k.clone(), sealed));
                }
            }
            for (k, v) in &resealed {
                wtx.put(table, k, v)?;
            }
            report.resealed += resealed.len() as u64;
            if let Some(e) = entry.epochs.iter_mut().find(|e| e.epoch == rot.target_epoch) {
                e.seal_count = e.seal_count.saturating_add(resealed.len() as u64);
            }
            let full = batch.len() >= ADMIN_BATCH;
            entry.rotation = match (full, batch.last(), next_table(table.id)) {
                (true, Some((last, _)), _) => {
                    Some(RotationState { target_epoch: rot.target_epoch, table: table.id, cursor: last.clone() })
                }
                (_, _, Some(next)) => {
                    Some(RotationState { target_epoch: rot.target_epoch, table: next.id, cursor: Vec::new() })
                }
                (_, _, None) => None,
            };
            if entry.rotation.is_none() {
                // Every record is under the target epoch: destroy the older seeds.
                for e in entry.epochs.iter_mut().filter(|e| e.epoch != rot.target_epoch) {
                    e.seed.zeroize();
                }
                entry.epochs.retain(|e| e.epoch == rot.target_epoch);
            }
            more = entry.rotation.is_some();
            wtx.put(ORGS, &oi.tag.0, inner.seal_entry(oi.tag, &entry)?.as_slice())?;
        }
        wtx.commit()?;
        report.batches += 1;
        Ok(more)
    }

    /// Deletes an org by crypto-shredding: an org under key custody first has its custody key
    /// destroyed (from then on no copy of the file opens it either), then one transaction
    /// destroys every wrapped seed (from then on nothing of the org can be decrypted), then its
    /// records are purged in batches.
    /// Interrupted deletions resume on the next call. Run [`Db::compact`] afterwards to rewrite
    /// the file without the freed pages.
    pub fn delete_org(&self, name: &str) -> Result<DeleteReport> {
        self.inner.group.writable()?;
        let tag = self.tag_of(name)?;
        let inner = &self.inner;
        let writer = super::commit::WriterLock::acquire(&inner.shared_for(tag));
        let mut wtx = inner.begin_write()?;
        let shadow;
        {
            let mut entry = inner.read_entry(&*wtx, tag, name)?;
            // An interrupted re-key onto another tag left rows there: they go too.
            shadow = super::rekey::shadow_tag(&entry).filter(|t| *t != tag);
            inner.destroy_custody_key(&entry, tag)?;
            entry.custody_wrapped.clear();
            for e in entry.epochs.iter_mut() {
                e.seed.zeroize();
                e.seed.clear();
            }
            entry.structure_seed.zeroize();
            entry.structure_seed.clear();
            entry.key_check.clear();
            entry.state = 1;
            entry.rotation = None;
            wtx.put(ORGS, &tag.0, inner.seal_entry(tag, &entry)?.as_slice())?;
        }
        wtx.commit()?;
        drop(writer);
        if let Some(shared) = inner.shared.lock().unwrap_or_else(|p| p.into_inner()).remove(&tag) {
            shared.cache.clear();
        }
        let mut purged = 0u64;
        for table in ORG_TABLES {
            loop {
                let mut wtx = inner.begin_write()?;
                let keys = org_keys_after(&*wtx, table, tag, &[], ADMIN_BATCH)?;
                let n = keys.len();
                for (k, _) in keys {
                    wtx.remove(table, &k)?;
                }
                wtx.commit()?;
                purged += n as u64;
                if n < ADMIN_BATCH {
                    break;
                }
            }
        }
        if let Some(t) = shadow {
            purged += super::rekey::purge_shadow(inner, tag, 0, t)?;
        }
        let mut wtx = inner.begin_write()?;
        wtx.remove(ORGS, &tag.0)?;
        wtx.commit()?;
        Ok(DeleteReport { purged })
    }

    /// Rewrites the database into a fresh file (live records only) and replaces the old file
    /// with it, so the bytes of deleted orgs and old key epochs no longer exist in the file.
    /// Consumes the `Db`: every other clone, org handle and transaction must be dropped first
    /// (else `InvalidInput`). Only for databases opened by path.
    ///
    /// Only for the redb backend: on another one it is [`Error::Unsupported`].
    pub fn compact(self) -> Result<Db> {
        let kind = self.inner.kv.kind();
        if kind != BackendKind::Redb {
            return Err(Error::Unsupported { operation: "compact", backend: kind.name() });
        }
        let inner = Arc::try_unwrap(self.inner).map_err(|_| {
            Error::invalid(
                InputKind::WrongState,
                "compact needs the only handle: drop other Db clones, orgs and transactions",
            )
        })?;
        let path = inner
            .path
            .clone()
            .ok_or_else(|| Error::invalid(InputKind::WrongState, "compact needs a database opened by path"))?;
        let mut tmp = path.clone().into_os_string();
        tmp.push(".compact");
        let tmp = std::path::PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let file = inner
            .file
            .clone()
            .ok_or_else(|| Error::invalid(InputKind::WrongState, "compact needs a database opened by path"))?;
        file.copy_into(&tmp)?;
        drop(file);
        // The old file stays open (unlinked) until the new one replaces it in `inner`.
        std::fs::rename(&tmp, &path)?;
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() { std::path::Path::new(".") } else { dir };
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        let mut inner = inner;
        let fresh = Arc::new(super::kv_redb::RedbKv::create(&path)?);
        inner.kv = fresh.clone();
        inner.file = Some(fresh);
        for s in inner.shared.lock().unwrap_or_else(|p| p.into_inner()).values() {
            s.cache.clear();
        }
        Ok(Db { inner: Arc::new(inner) })
    }
}

/// The compartment whose key seals a record of `table` at `key`.
pub(crate) fn compartment_of(org: &Org, table: Table, key: &[u8]) -> Compartment {
    let addr = org.inner.unblind(key);
    let sub = addr.map_or(0, |(_, sub, _, _)| sub);
    RecordKind::of(table, addr).map_or(Compartment::Core, |k| k.compartment(sub))
}

/// Key and lifecycle facts about one org (no secrets).
#[must_use]
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct OrgInfo {
    /// The org's name.
    pub name: String,
    /// True if the host supplies the org key (BYOK).
    pub byok: bool,
    /// The epoch new seals use.
    pub current_epoch: u32,
    /// Epochs whose seeds are still stored, with the seals performed under each.
    pub epochs: Vec<(u32, u64)>,
    /// True while a data-key rotation has records left to re-seal.
    pub rotation_in_progress: bool,
    /// True while a full re-key ([`Db::rekey_org`]) was interrupted and has not finished.
    pub rekey_in_progress: bool,
    /// Audit entries so far.
    pub audit_entries: u64,
    /// Nodes stored.
    pub nodes: u64,
    /// Edges stored (retracted ones included).
    pub edges: u64,
}

impl Db {
    /// Key and lifecycle facts about org `name`.
    pub fn org_info(&self, name: &str) -> Result<OrgInfo> {
        let tag = self.tag_of(name)?;
        let e = self.inner.read_entry(&*self.inner.kv.snapshot()?, tag, name)?;
        if e.state != 0 {
            return Err(Error::OrgNotFound(name.to_owned()));
        }
        Ok(OrgInfo {
            name: e.name.clone(),
            byok: e.byok,
            current_epoch: e.current_epoch,
            epochs: e.epochs.iter().map(|x| (x.epoch, x.seal_count)).collect(),
            rotation_in_progress: e.rotation.as_ref().is_some_and(|r| !super::rekey::is_rekey(r)),
            rekey_in_progress: e.rotation.as_ref().is_some_and(super::rekey::is_rekey),
            audit_entries: e.audit_seq,
            nodes: e.node_count,
            edges: e.edge_count,
        })
    }
}
