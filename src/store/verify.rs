//! Full verification: every record of every org opened, authenticated and validated, and
//! every failure named.

use std::collections::HashMap;

use super::admin::{org_keys_after, ORG_TABLES};
use super::org::Org;
use super::state::{Addr, Roots};
use super::tables::{RecordKey, RecordKind, Table, AUDIT, EDGES, INDEX, NODES, ORGS, TREE};
use super::Db;
use crate::codec::{self, AuditRecord, OrgEntry, PropMap};
use crate::crypto::envelope;
use crate::error::{Error, Result};
use crate::types::{EdgeId, NodeId, OrgTag};

/// One record that failed verification.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CorruptRecord {
    /// The org it belongs to.
    pub org: String,
    /// The table.
    pub table: &'static str,
    /// The opaque storage key, hex.
    pub key: String,
    /// The node the record belongs to, where the key says so (node, adjacency, node props).
    pub node: Option<NodeId>,
    /// The edge the record belongs to, where the key says so (edge, edge props).
    pub edge: Option<EdgeId>,
    /// What failed.
    pub error: String,
}

/// What a verification found.
#[must_use = "a verification finds nothing unless its report is read"]
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct VerifyReport {
    /// Records checked, per table.
    pub checked: Vec<(&'static str, u64)>,
    /// Orgs fully checked.
    pub orgs: Vec<String>,
    /// Orgs skipped because their key is the host's (BYOK): verify them with `Org::verify`.
    pub skipped_byok: Vec<String>,
    /// Orgs whose registry row is live in this file but whose custody key is destroyed: a copy
    /// of the file made before they were deleted (they are shredded; nothing of them is read).
    pub shredded: Vec<String>,
    /// Every record that failed, in table and key order.
    pub corrupt: Vec<CorruptRecord>,
    /// Orgs whose audit chain failed, with the first bad entry.
    pub bad_audit: Vec<(String, u64)>,
}

impl VerifyReport {
    /// True if nothing failed.
    pub fn is_ok(&self) -> bool {
        self.corrupt.is_empty() && self.bad_audit.is_empty()
    }

    /// Total records checked.
    pub fn records(&self) -> u64 {
        self.checked.iter().map(|(_, n)| n).sum()
    }

    fn count(&mut self, table: &'static str) {
        match self.checked.iter_mut().find(|(t, _)| *t == table) {
            Some((_, n)) => *n += 1,
            None => self.checked.push((table, 1)),
        }
    }
}

fn check_record(org: &Org, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
    let oi = &org.inner;
    let addr = oi.unblind(key);
    let kind = RecordKind::of(table, addr).ok_or_else(|| Error::corrupt(table.name, key))?;
    let (sub, page) = addr.map_or((0, 0), |(_, sub, _, id)| (sub, id));
    let c = kind.compartment(sub);
    match kind {
        RecordKind::NodePage => {
            oi.open_node_page(page, key, value)?;
        }
        RecordKind::EdgePage => {
            oi.open_edge_page(page, key, value)?;
        }
        RecordKind::Adj => {
            oi.open_page(key, value)?;
        }
        RecordKind::NodeProps | RecordKind::EdgeProps => {
            if oi.scope.contains(&c) {
                oi.open_record::<PropMap>(table, key, c, value)?;
            }
        }
        RecordKind::Bucket => {
            oi.open_bucket(key, value)?;
        }
        RecordKind::Dict => {
            let b = oi.open(table, key, c, value)?;
            std::str::from_utf8(b.as_slice()).map_err(|_| Error::corrupt(table.name, key))?;
        }
        RecordKind::Audit => {
            oi.open_record::<AuditRecord>(table, key, c, value)?;
        }
        RecordKind::Tree => {
            let n: codec::TreeNode = oi.open_record(table, key, c, value)?;
            n.validate().map_err(|_| Error::corrupt(table.name, key))?;
        }
        RecordKind::Secrets => {
            if oi.scope.contains(&c) {
                oi.open_record::<crate::codec::SecretMap>(table, key, c, value)?;
            }
        }
    }
    Ok(())
}

/// The node or edge a corrupt record belongs to (a node or edge page names the first id it holds).
fn owner(org: &Org, table: Table, key: &[u8]) -> (Option<NodeId>, Option<EdgeId>) {
    let addr = org.inner.unblind(key);
    let id = addr.map_or(0, |(_, _, _, id)| id);
    match RecordKind::of(table, addr) {
        Some(RecordKind::NodePage) => (Some(NodeId(codec::first_of(id, codec::NODES_PER_PAGE))), None),
        Some(RecordKind::EdgePage) => (None, Some(EdgeId(codec::first_of(id, codec::EDGES_PER_PAGE)))),
        Some(RecordKind::Adj | RecordKind::NodeProps) => (Some(NodeId(id)), None),
        Some(RecordKind::EdgeProps) => (None, Some(EdgeId(id))),
        _ => (None, None),
    }
}

impl Org {
    /// Opens, authenticates and validates every record of this org and checks its audit chain.
    /// `progress` is called with the number of records checked so far.
    #[cfg_attr(feature = "tracing", tracing::instrument(name = "org_verify", level = "debug", skip_all))]
    pub fn verify_with_progress(&self, mut progress: impl FnMut(u64)) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        self.verify_into(&mut report, &mut progress)?;
        Ok(report)
    }

    /// [`Org::verify_with_progress`] without progress reports.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.verify_with_progress(|_| {})
    }

    fn verify_into(&self, report: &mut VerifyReport, progress: &mut dyn FnMut(u64)) -> Result<()> {
        let oi = &self.inner;
        oi.refresh_keys()?;
        let snap = oi.db.kv.snapshot()?;
        let entry = oi.db.read_entry(&*snap, oi.tag, &oi.name)?;
        let roots = Roots::decode(&entry.state_root)?;
        let get = |t: Table, k: &[u8]| -> Result<Option<Vec<u8>>> { snap.get(t, k) };
        let mut findings: Vec<CorruptRecord> = Vec::new();
        let finding = |table: Table, key: &[u8], error: String| {
            let (node, edge) = owner(self, table, key);
            CorruptRecord { org: oi.name.clone(), table: table.name, key: hex::encode(key), node, edge, error }
        };
        // What must be in the file: every record and tree node the state tree holds.
        let mut bad_nodes = Vec::new();
        let (records, nodes) = oi.walk_state(&roots, &get, &mut |k, e| bad_nodes.push((k, e)))?;
        for (k, e) in bad_nodes {
            findings.push(finding(TREE, &k, format!("state tree node: {e}")));
        }
        let mut expected: HashMap<RecordKey, (Table, u64)> = HashMap::with_capacity(records.len() + nodes.len());
        for (addr, v) in &records {
            expected.insert(addr.key(oi), (addr.kind().table(), *v));
        }
        for (k, v) in &nodes {
            expected.insert(*k, (TREE, *v));
        }
        let shadow_above = super::rekey::shadow_tag(&entry).filter(|t| *t == oi.tag).map(|_| entry.commit_seq);
        let mut done = report.records();
        for table in ORG_TABLES {
            let mut cursor = Vec::new();
            loop {
                let batch = org_keys_after(&*snap, table, oi.tag, &cursor, 4096)?;
                for (k, v) in &batch {
                    // An interrupted re-key's copy, above every version of the org: not the
                    // org's (`rekey_org` resumes or removes it).
                    if shadow_above.is_some_and(|c| envelope::peek_version(v, table.name, k).is_ok_and(|have| have > c))
                    {
                        continue;
                    }
                    report.count(table.name);
                    if table.id != AUDIT.id {
                        let want = <RecordKey>::try_from(k.as_slice()).ok().and_then(|k| expected.remove(&k));
                        match want {
                            None => findings.push(finding(
                                table,
                                k,
                                "not in the org's state tree (a removed record put back, or another org's)".into(),
                            )),
                            Some((_, want)) => match envelope::peek_version(v, table.name, k) {
                                Ok(have) if have == want => {}
                                Ok(have) => findings.push(finding(
                                    table,
                                    k,
                                    format!("version {have}, the state tree holds {want} (an older or newer copy)"),
                                )),
                                Err(e) => findings.push(finding(table, k, e.to_string())),
                            },
                        }
                    }
                    match check_record(self, table, k, v) {
                        Ok(()) => {}
                        Err(e @ (Error::Corrupt { .. } | Error::UnsupportedFormat(_))) => {
                            findings.push(finding(table, k, e.to_string()));
                        }
                        Err(e) => return Err(e),
                    }
                    done += 1;
                    if done.is_multiple_of(1024) {
                        progress(done);
                    }
                }
                match batch.last() {
                    Some((k, _)) if batch.len() >= 4096 => cursor = k.clone(),
                    _ => break,
                }
            }
        }
        progress(done);
        let mut missing: Vec<(RecordKey, (Table, u64))> = expected.into_iter().collect();
        missing.sort_by_key(|(k, (t, _))| (t.id, *k));
        for (k, (table, v)) in missing {
            findings.push(finding(table, &k, format!("missing: the state tree holds version {v} (record removed)")));
        }
        // The tree's shape against the registry entry, then the records against each other.
        shape_findings(self, &entry, &records, &mut findings);
        if findings.is_empty() {
            let r = self.read()?;
            if let Err(e) = r.check_consistency(&entry, &mut findings) {
                match e {
                    Error::Corrupt { .. } | Error::UnsupportedFormat(_) => {
                        findings.push(finding(NODES, &[], format!("reading the org failed: {e}")))
                    }
                    e => return Err(e),
                }
            }
        }
        report.corrupt.extend(findings);
        let audit = self.audit().verify()?;
        if let Some(seq) = audit.first_bad {
            report.bad_audit.push((oi.name.clone(), seq));
        }
        report.orgs.push(oi.name.clone());
        Ok(())
    }
}

/// The tree must hold exactly the node and edge pages the registry's next ids need, and every
/// bucket of every index run (no bucket of any other slot).
fn shape_findings(org: &Org, entry: &OrgEntry, records: &[(Addr, u64)], out: &mut Vec<CorruptRecord>) {
    let pages = |next: u64, per: u64| if next <= 1 { 0 } else { codec::page_of(next - 1, per) + 1 };
    let mut want = vec![
        (RecordKind::NodePage, None, NODES, pages(entry.next_node, codec::NODES_PER_PAGE)),
        (RecordKind::EdgePage, None, EDGES, pages(entry.next_edge, codec::EDGES_PER_PAGE)),
    ];
    // Every run's slot, and every slot the tree holds buckets at (a slot no run has needs none).
    let mut slots: Vec<u32> = entry.index_runs.iter().map(|r| u32::from(r.slot)).collect();
    slots.extend(records.iter().filter(|(a, _)| a.kind() == RecordKind::Bucket).map(|(a, _)| a.page));
    slots.sort_unstable();
    slots.dedup();
    for slot in slots {
        let run = entry.index_runs.iter().find(|r| u32::from(r.slot) == slot);
        want.push((RecordKind::Bucket, Some(slot), INDEX, run.map_or(0, |r| 1u64 << r.bits)));
    }
    for (kind, slot, table, want) in want {
        let mut ids: Vec<u64> = records
            .iter()
            .filter(|(a, _)| a.kind() == kind && slot.is_none_or(|s| a.page == s))
            .map(|(a, _)| a.id)
            .collect();
        ids.sort_unstable();
        if ids.iter().copied().ne(0..want) {
            let of = slot.map_or(String::new(), |s| format!(" (index run slot {s})"));
            out.push(CorruptRecord {
                org: org.inner.name.clone(),
                table: table.name,
                key: String::new(),
                node: None,
                edge: None,
                error: format!("the state tree holds {} records{of}, the registry entry needs 0..{want}", ids.len()),
            });
        }
    }
}

impl Db {
    /// Verifies every org with a managed key (BYOK orgs are listed as skipped) and every org
    /// registry entry. `progress` is called with (records checked, total records in the file).
    #[cfg_attr(feature = "tracing", tracing::instrument(name = "db_verify", level = "debug", skip_all))]
    pub fn verify_with_progress(&self, mut progress: impl FnMut(u64, u64)) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let (entries, total) = {
            let snap = self.inner.kv.snapshot()?;
            let mut total = 0u64;
            for t in ORG_TABLES {
                total += snap.count(t)?;
            }
            let mut entries = Vec::new();
            for (key, v) in snap.scan_prefix(ORGS, &[])? {
                let tag = <[u8; 8]>::try_from(key.as_slice()).map(OrgTag);
                match tag.map_err(|_| Error::corrupt(ORGS.name, &key)).and_then(|t| self.inner.open_entry(t, &v)) {
                    Ok(e) => entries.push((e.name.clone(), e.byok, e.state)),
                    Err(e) => report.corrupt.push(CorruptRecord {
                        org: String::new(),
                        table: ORGS.name,
                        key: hex::encode(&key),
                        node: None,
                        edge: None,
                        error: e.to_string(),
                    }),
                }
                report.count(ORGS.name);
            }
            (entries, total)
        };
        for (name, byok, state) in entries {
            if state != 0 {
                continue;
            }
            if byok {
                report.skipped_byok.push(name);
                continue;
            }
            let org = match self.org(&name) {
                Ok(org) => org,
                Err(Error::OrgNotFound(_)) => {
                    report.shredded.push(name);
                    continue;
                }
                Err(e) => return Err(e),
            };
            org.verify_into(&mut report, &mut |done| progress(done, total))?;
        }
        Ok(report)
    }

    /// [`Db::verify_with_progress`] without progress reports.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.verify_with_progress(|_, _| {})
    }
}
