//! Full re-key of an org: a new structure seed (record-key blinding, index and audit keys) and
//! new data keys, every record moved to its new key.
//!
//! A data-key rotation keeps record keys and the structure seed, so someone who once held the
//! root key and kept the org's old registry row can still compute where records live (and
//! answer "is this external id present?" from the index). A re-key leaves nothing under the old
//! structure: every record is opened under the old keys and written again under fresh seeds (a
//! *shadow* copy, in batches: other orgs' writers commit between them), then one storage
//! transaction switches over: the index and the state tree are rebuilt, the audit chain is
//! re-chained under the new audit key, the new registry entry replaces the old one and every old
//! row goes. Readers read the old org until the switch.
//!
//! Progress lives in the old registry entry (`rotation`, marked [`REKEY_MARK`]; the new epoch's
//! seed in its `epochs`): an interrupted re-key resumes where its last batch ended, as long as
//! the org has not changed since; otherwise its shadow rows are removed and it starts again.
//! Shadow rows are told from the org's own by their page version: a re-key writes at the org's
//! commit counter plus [`VERSION_JUMP`], above every version the org has written or will write
//! before it resumes.

use super::admin::{org_keys_after, RotationReport, ADMIN_BATCH, ORG_TABLES};
use super::bundle::{audit_items, require_whole_chain, tree_items, BundleOrg, Importer, Keep};
use super::org::Org;
use super::tables::ORGS;
use super::{Db, DbInner};
use crate::codec::{EpochEntry, RotationState};
use crate::crypto::{self, envelope, Secret};
use crate::error::{Error, InputKind, Result};
use crate::types::{Compartment, OrgTag};

/// `RotationState::table` of a re-key in progress (no table has this id).
pub(crate) const REKEY_MARK: u8 = 0xFE;

/// How far a re-key moves the org's page versions ahead (see the module docs).
pub(crate) const VERSION_JUMP: u64 = 1 << 40;

const INFO_REKEY_STRUCTURE: &[u8] = b"silograph/1/rekey-structure";

/// Whether `r` is a re-key in progress rather than a data-key rotation.
pub(crate) fn is_rekey(r: &RotationState) -> bool {
    r.table == REKEY_MARK
}

/// The tag an interrupted re-key of the org of `entry` copies to, if one is in progress.
pub(crate) fn shadow_tag(entry: &crate::codec::OrgEntry) -> Option<OrgTag> {
    entry.rotation.as_ref().and_then(Marker::of).and_then(|m| m.ok()).map(|m| m.tag)
}

/// A re-key in progress: where its shadow copy goes, what org state it copies, how far it got.
struct Marker {
    /// The new epoch (its seed is in the old entry's `epochs`).
    epoch: u32,
    /// The tag the org moves to.
    tag: OrgTag,
    /// The org's commit counter and audit length when the copy began.
    base: u64,
    audits: u64,
    /// Records copied.
    done: u64,
    /// A custody key id and wrapped secret drawn for an org not under custody yet (empty: the
    /// org keeps its own).
    custody: (Vec<u8>, Vec<u8>),
}

impl Marker {
    fn of(r: &RotationState) -> Option<Result<Marker>> {
        if !is_rekey(r) {
            return None;
        }
        let c = &r.cursor;
        let bad = || Error::corrupt(ORGS.name, b"rekey progress");
        let u64_at = |i: usize| -> Result<u64> {
            let b: [u8; 8] = c.get(i..i + 8).and_then(|b| b.try_into().ok()).ok_or_else(bad)?;
            Ok(u64::from_le_bytes(b))
        };
        Some((|| {
            let tag: [u8; 8] = c.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(bad)?;
            let custody = match c.get(32..) {
                Some([]) => (Vec::new(), Vec::new()),
                Some(rest) if rest.len() > 16 => (rest[..16].to_vec(), rest[16..].to_vec()),
                _ => return Err(bad()),
            };
            Ok(Marker {
                epoch: r.target_epoch,
                tag: OrgTag(tag),
                base: u64_at(8)?,
                audits: u64_at(16)?,
                done: u64_at(24)?,
                custody,
            })
        })())
    }

    fn state(&self) -> RotationState {
        let mut cursor = Vec::with_capacity(32 + self.custody.0.len() + self.custody.1.len());
        cursor.extend_from_slice(&self.tag.0);
        for v in [self.base, self.audits, self.done] {
            cursor.extend_from_slice(&v.to_le_bytes());
        }
        cursor.extend_from_slice(&self.custody.0);
        cursor.extend_from_slice(&self.custody.1);
        RotationState { target_epoch: self.epoch, table: REKEY_MARK, cursor }
    }

    /// The page version of everything the copy writes.
    fn version(&self) -> Result<u64> {
        self.base
            .checked_add(VERSION_JUMP)
            .ok_or_else(|| Error::invalid(InputKind::Exhausted, "page versions exhausted"))
    }
}

/// Removes, in batches, the rows under `prefix` that an interrupted re-key of the org tagged
/// `org_tag` (commit counter `commit_seq`) left: every row under another tag (no registry row
/// names it), and under the org's own tag the rows newer than the org.
pub(crate) fn purge_shadow(inner: &DbInner, org_tag: OrgTag, commit_seq: u64, prefix: OrgTag) -> Result<u64> {
    if prefix != org_tag && inner.kv.snapshot()?.get(ORGS, &prefix.0)?.is_some() {
        return Ok(0);
    }
    let mut purged = 0;
    for table in ORG_TABLES {
        let mut cursor = Vec::new();
        loop {
            let mut wtx = inner.begin_write()?;
            let rows = org_keys_after(&*wtx, table, prefix, &cursor, ADMIN_BATCH)?;
            for (k, v) in &rows {
                if prefix != org_tag || envelope::peek_version(v, table.name, k)? > commit_seq {
                    wtx.remove(table, k)?;
                    purged += 1;
                }
            }
            wtx.commit()?;
            match rows.last() {
                Some((k, _)) if rows.len() >= ADMIN_BATCH => cursor = k.clone(),
                _ => break,
            }
        }
    }
    Ok(purged)
}

impl Db {
    /// Re-keys org `name` completely: new structure and data seeds, every record key re-blinded,
    /// the index, state tree and audit chain rebuilt under the new keys (the audit chain keeps
    /// its entries and gains `rekey-org`), and the org moved to its tag under the current
    /// database secret. After [`Db::rotate_root_key`] and this, an old root key with the org's
    /// old registry row finds nothing of the org: every lookup fails the same way, whether the id
    /// exists or not, and the old database secret does not give the org's new tag.
    ///
    /// Online and resumable: records are copied under the new keys in batches of
    /// [`DbBuilder::rekey_batch`](crate::DbBuilder::rekey_batch) records, each its own storage
    /// transaction (other orgs' writers commit between them), then one transaction switches over
    /// (it also removes the old rows). Readers read the old org until the switch; the org's
    /// writers wait for the whole re-key. A crash leaves the old org whole (or the new one, after
    /// the switch); calling this again resumes after the last batch (`resumed` in the report),
    /// or, if the org changed meanwhile, discards the partial copy and starts again. Memory
    /// grows with the org, as an import does.
    ///
    /// The org must verify first (`Corrupt` otherwise: a re-key must not launder a tampered
    /// record into a freshly authenticated state). A data-key rotation in progress is
    /// `InvalidInput(WrongState)` (finish it first); while a re-key is in progress,
    /// `rotate_org_key` is refused the same way. Handles opened before the re-key hold the old
    /// keys: their writes are refused (`InvalidInput(WrongState)`, or `OrgNotFound` once the org
    /// moved to a new tag) and their reads fail; open new ones. Managed orgs only (a BYOK org is
    /// re-keyed onto a new host key by `export_org_with_key` + `import_org_with_key`):
    /// `InvalidInput(KeyKind)`. On a `Db` opened with
    /// [`DbBuilder::custody`](crate::DbBuilder::custody), an org created without custody comes
    /// under it (its shredding then holds against copies made from then on).
    #[cfg_attr(feature = "tracing", tracing::instrument(name = "rekey_org", level = "debug", skip_all))]
    pub fn rekey_org(&self, name: &str) -> Result<RotationReport> {
        self.inner.group.writable()?;
        let org = self.open_org(name, None, &Compartment::FULL_SCOPE)?;
        let oi = &org.inner;
        let inner = &self.inner;
        let check = org.verify()?;
        if let Some(bad) = check.corrupt.first() {
            return Err(Error::Corrupt { table: bad.table, key: bad.key.clone(), at: crate::error::CorruptAt::Record });
        }
        require_whole_chain(&org)?;
        let writer = super::commit::WriterLock::acquire(&oi.shared);
        let new_tag = inner.new_tag(name);
        let (marker, resumed) = self.rekey_begin(&org, new_tag)?;

        // The copy, from the org as it stands (its writers wait on the lock held above).
        let snap = inner.kv.snapshot()?;
        let old = inner.read_entry(&*snap, oi.tag, name)?;
        // Another instance (PostgreSQL) is not held off by this process's writer lock.
        if old.commit_seq != marker.base || old.audit_seq != marker.audits {
            return Err(Error::Conflict(name.to_owned()));
        }
        oi.learn_epochs(&old)?;
        let items = tree_items(oi, &*snap, &old)?;
        let (audits, digest) = audit_items(oi, &*snap, &old)?;
        drop(snap);
        let seed = old
            .epochs
            .iter()
            .find(|e| e.epoch == marker.epoch)
            .map(|e| e.seed.clone())
            .ok_or_else(|| Error::corrupt(ORGS.name, &oi.tag.0))?;
        let structure = crypto::derive(&seed, &inner.db_id, &[INFO_REKEY_STRUCTURE]).expose().to_vec();
        let custody = match marker.custody.0.is_empty() {
            true => (old.custody_id.clone(), old.custody_wrapped.clone()),
            false => marker.custody.clone(),
        };
        let keep = Keep {
            custody,
            epoch: marker.epoch,
            version: marker.version()?,
            seeds: (seed, structure),
            skip: marker.done,
        };
        let mut import = Importer::start(self, BundleOrg::of(&old, &digest), None, inner.begin_write()?, Some(keep))?;
        // The importer's handle on the new keys registered fresh per-org state for the tag (a new
        // incarnation); until the switch the org is the old one, whose writers must keep meeting
        // the writer lock held above.
        if new_tag == oi.tag {
            inner.shared.lock().unwrap_or_else(|p| p.into_inner()).insert(oi.tag, oi.shared.clone());
        }
        let batch = inner.rekey_batch as u64;
        let mut batches = 1;
        for item in &items {
            import.record(item)?;
            let seen = import.seen();
            if seen > marker.done && seen.is_multiple_of(batch) && seen < items.len() as u64 {
                let w = import.w()?;
                let mut e = inner.read_entry(w, oi.tag, name)?;
                e.rotation = Some(Marker { done: seen, custody: marker.custody.clone(), ..marker }.state());
                w.put(ORGS, &oi.tag.0, &inner.seal_entry(oi.tag, &e)?)?;
                import.commit_batch(|| inner.begin_write())?;
                batches += 1;
            }
        }

        // The switch: the chain, then every old row goes, then the new entry replaces the old.
        for a in &audits {
            import.audit(a)?;
        }
        {
            let w = import.w()?;
            // The copy is of the org as it was when it began: if anything committed to the org
            // since (the writer lock excludes this process's writers; this catches any other
            // path), the switch must not drop it. The partial copy stays and is redone.
            let now = inner.read_entry(w, oi.tag, name)?;
            if now.commit_seq != marker.base || now.audit_seq != marker.audits {
                return Err(Error::Conflict(name.to_owned()));
            }
            for table in ORG_TABLES {
                for (k, v) in w.scan_prefix(table, &oi.tag.0)? {
                    if new_tag != oi.tag || envelope::peek_version(&v, table.name, &k)? <= old.commit_seq {
                        w.remove(table, &k)?;
                    }
                }
            }
            if new_tag != oi.tag {
                w.remove(ORGS, &oi.tag.0)?;
            }
        }
        import.finish(None)?;
        // Cached pages and tree nodes belong to the old keys.
        oi.shared.cache.clear();
        oi.shared.tree.clear();
        drop(writer);
        if new_tag != oi.tag {
            inner.shared.lock().unwrap_or_else(|p| p.into_inner()).remove(&oi.tag);
        }
        let resealed = items.len() as u64 - marker.done.min(items.len() as u64);
        Ok(RotationReport { epoch: marker.epoch, resealed, batches, resumed })
    }

    /// Starts a re-key of `org` onto `new_tag`, or finds the interrupted one to resume; under
    /// the org's writer lock.
    fn rekey_begin(&self, org: &Org, new_tag: OrgTag) -> Result<(Marker, bool)> {
        let (oi, inner) = (&org.inner, &self.inner);
        let name = oi.name.as_str();
        let pending = {
            let snap = inner.kv.snapshot()?;
            let old = inner.read_entry(&*snap, oi.tag, name)?;
            if old.state != 0 {
                return Err(Error::OrgNotFound(name.to_owned()));
            }
            if new_tag != oi.tag && snap.get(ORGS, &new_tag.0)?.is_some() {
                return Err(Error::OrgExists(name.to_owned()));
            }
            let pending = match &old.rotation {
                None => None,
                Some(r) => match Marker::of(r) {
                    Some(m) => Some(m?),
                    None => {
                        return Err(Error::invalid(
                            InputKind::WrongState,
                            format!("org `{name}` has a key rotation in progress: finish it with rotate_org_key first"),
                        ))
                    }
                },
            };
            match pending {
                Some(m)
                    if m.base == old.commit_seq
                        && m.audits == old.audit_seq
                        && m.tag == new_tag
                        && old.epochs.iter().any(|e| e.epoch == m.epoch) =>
                {
                    return Ok((m, true))
                }
                other => (other, old.commit_seq),
            }
        };
        let (stale, commit_seq) = pending;
        // Whatever an interrupted re-key left goes before a new copy starts (its marker may even
        // be gone: a commit past the seal limit replaces it).
        purge_shadow(inner, oi.tag, commit_seq, new_tag)?;
        if let Some(m) = stale.as_ref().filter(|m| m.tag != new_tag) {
            purge_shadow(inner, oi.tag, commit_seq, m.tag)?;
        }
        let mut wtx = inner.begin_write()?;
        let mut e = inner.read_entry(&*wtx, oi.tag, name)?;
        if let Some(m) = &stale {
            let current = e.current_epoch;
            e.epochs.retain(|x| x.epoch != m.epoch || x.epoch == current);
        }
        let epoch = DbInner::next_epoch(&e)?;
        e.epochs.push(EpochEntry { epoch, seed: Secret::generate()?.expose().to_vec(), seal_count: 0 });
        let custody = match e.custody_id.is_empty() {
            true => inner.new_custody()?,
            false => (Vec::new(), Vec::new()),
        };
        let m = Marker { epoch, tag: new_tag, base: e.commit_seq, audits: e.audit_seq, done: 0, custody };
        e.rotation = Some(m.state());
        wtx.put(ORGS, &oi.tag.0, &inner.seal_entry(oi.tag, &e)?)?;
        wtx.commit()?;
        oi.learn_epochs(&e)?;
        Ok((m, false))
    }
}
