//! Full re-key of an org: a new structure seed (record-key blinding, index and audit keys) and
//! new data keys, every record moved to its new key.
//!
//! A data-key rotation keeps record keys and the structure seed, so someone who once held the
//! root key and kept the org's old registry row can still compute where records live (and
//! answer "is this external id present?" from the index). A re-key leaves nothing under the old
//! structure: every record is opened under the old keys, removed, and written again under fresh
//! seeds, the index and the state tree are rebuilt, and the audit chain is re-chained under the
//! new audit key, all in one storage transaction (crash-safe: a crash leaves the old org whole;
//! readers keep reading the old org until it commits).

use super::admin::{RotationReport, ORG_TABLES};
use super::bundle::{audit_items, require_whole_chain, tree_items, BundleOrg, Importer, Keep};
use super::tables::ORGS;
use super::Db;
use crate::error::{Error, InputKind, Result};
use crate::types::Compartment;

impl Db {
    /// Re-keys org `name` completely: new structure and data seeds, every record key re-blinded,
    /// the index, state tree and audit chain rebuilt under the new keys (the audit chain keeps
    /// its entries and gains `rekey-org`), and the org moved to its tag under the current
    /// database secret. After [`Db::rotate_root_key`] and this, an old root key with the org's
    /// old registry row finds nothing of the org: every lookup fails the same way, whether the id
    /// exists or not, and the old database secret does not give the org's new tag.
    ///
    /// One storage transaction, holding the org's writer lock (writers of the org wait; readers
    /// keep reading the old state until it commits): a crash changes nothing, and the call can
    /// simply be repeated. The org must verify first (`Corrupt` otherwise: a re-key must not
    /// launder a tampered record into a freshly authenticated state). Handles opened before the
    /// re-key hold the old keys: their writes are refused (`InvalidInput(WrongState)`, or
    /// `OrgNotFound` once the org moved to a new tag) and their reads fail; open new ones. Managed orgs only (a BYOK org is re-keyed onto a new host key by
    /// `export_org_with_key` + `import_org_with_key`): `InvalidInput(KeyKind)`. On a `Db` opened
    /// with [`DbBuilder::custody`](crate::DbBuilder::custody), an org created without custody
    /// comes under it (its shredding then holds against copies made from then on).
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
        let mut wtx = inner.begin_write()?;
        let old = inner.read_entry(&*wtx, oi.tag, name)?;
        if old.state != 0 {
            return Err(Error::OrgNotFound(name.to_owned()));
        }
        if old.rotation.is_some() {
            return Err(Error::invalid(
                InputKind::WrongState,
                format!("org `{name}` has a key rotation in progress: finish it with rotate_org_key first"),
            ));
        }
        oi.learn_epochs(&old)?;
        // Everything the old state tree holds, opened under the old keys; then every old row goes.
        let items = tree_items(oi, &*wtx, &old)?;
        let (audits, digest) = audit_items(oi, &*wtx, &old)?;
        let mut old_keys = Vec::new();
        for table in ORG_TABLES {
            for (k, _) in wtx.scan_prefix(table, &oi.tag.0)? {
                old_keys.push((table, k));
            }
        }
        for (table, k) in &old_keys {
            wtx.remove(*table, k)?;
        }
        // After a root rotation the org moves to its tag under the new database secret (which
        // no holder of an older root key can compute); the importer writes its new entry there.
        let new_tag = inner.new_tag(name);
        if new_tag != oi.tag {
            if wtx.get(ORGS, &new_tag.0)?.is_some() {
                return Err(Error::OrgExists(name.to_owned()));
            }
            wtx.remove(ORGS, &oi.tag.0)?;
        }
        let epoch = old.epochs.iter().map(|e| e.epoch).max().unwrap_or(0).checked_add(1);
        let epoch = epoch.ok_or_else(|| Error::invalid(InputKind::Exhausted, "key epochs exhausted"))?;
        // An org created before custody comes under it now, if the `Db` has one.
        let custody = match old.custody_id.is_empty() {
            true => inner.new_custody()?,
            false => (old.custody_id.clone(), old.custody_wrapped.clone()),
        };
        let keep = Keep { custody, epoch, version: old.commit_seq + 1 };
        let meta = BundleOrg::of(&old, &digest);
        let mut import = Importer::start(self, meta, None, wtx, Some(keep))?;
        let resealed = items.len() as u64;
        for item in &items {
            import.record(item)?;
        }
        for a in &audits {
            import.audit(a)?;
        }
        import.finish(None)?;
        // Cached pages and tree nodes belong to the old keys.
        oi.shared.cache.clear();
        oi.shared.tree.clear();
        drop(writer);
        if new_tag != oi.tag {
            inner.shared.lock().unwrap_or_else(|p| p.into_inner()).remove(&oi.tag);
        }
        Ok(RotationReport { epoch, resealed, batches: 1, resumed: false })
    }
}
