//! The audit trail: every write transaction and admin operation appends a sealed entry to its
//! org's chain; each entry carries the HMAC of the previous one.

use super::kv::KvWrite;
use super::org::{Org, OrgInner};
use super::tables::{AUDIT, ORGS};
use super::{now_ms, Db};
use crate::codec::{AuditRecord, OrgEntry};
use crate::error::{Error, Result};
use crate::types::{Compartment, OrgTag, Timestamp};

/// One audit entry as read back.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct AuditEntry {
    /// Position in the chain, from 0.
    pub seq: u64,
    /// When.
    pub time: Timestamp,
    /// Who (host-supplied).
    pub actor: String,
    /// What.
    pub op: String,
    /// How much.
    pub counts: Vec<(String, u64)>,
}

/// The result of checking an org's audit chain.
#[must_use = "an audit check finds nothing unless its report is read"]
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct AuditReport {
    /// Entries that checked out before the first bad one (all of them if none is bad).
    pub valid_entries: u64,
    /// The sequence number of the first bad (edited, missing, reordered or replayed) entry.
    pub first_bad: Option<u64>,
    /// Why it is bad.
    pub reason: Option<String>,
}

impl AuditReport {
    /// True if the whole chain verified.
    pub fn is_ok(&self) -> bool {
        self.first_bad.is_none()
    }
}

pub(crate) fn audit_key(tag: OrgTag, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&tag.0);
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn mac_of(org: &OrgInner, r: &AuditRecord) -> Vec<u8> {
    let seq = r.seq.to_le_bytes();
    let time = r.time.to_le_bytes();
    let mut parts: Vec<&[u8]> = vec![b"audit/1", &seq, &time, r.actor.as_bytes(), r.op.as_bytes()];
    let counts: Vec<[u8; 8]> = r.counts.iter().map(|(_, v)| v.to_le_bytes()).collect();
    for ((name, _), v) in r.counts.iter().zip(&counts) {
        parts.push(name.as_bytes());
        parts.push(v);
    }
    parts.push(&r.prev);
    org.structure.audit.mac(&parts).to_vec()
}

/// Appends an entry inside the write transaction `wtx`, advancing `entry`'s chain head (the
/// caller writes `entry` back in the same transaction).
pub(crate) fn append(
    wtx: &mut dyn KvWrite,
    org: &OrgInner,
    entry: &mut OrgEntry,
    actor: &str,
    op: &str,
    counts: &[(&str, u64)],
    time: Timestamp,
) -> Result<()> {
    entry.commit_seq += 1;
    let version = entry.commit_seq;
    let (key, sealed) = entry_row(org, entry, actor, op, counts, time, version)?;
    wtx.put(AUDIT, &key, &sealed)
}

/// The next audit entry as a sealed row `(key, value)`, advancing `entry`'s chain head; the
/// caller writes both the row and `entry` in one transaction.
pub(crate) fn entry_row(
    org: &OrgInner,
    entry: &mut OrgEntry,
    actor: &str,
    op: &str,
    counts: &[(&str, u64)],
    time: Timestamp,
    version: u64,
) -> Result<([u8; 16], Vec<u8>)> {
    let mut rec = AuditRecord {
        seq: entry.audit_seq,
        time,
        actor: actor.to_owned(),
        op: op.to_owned(),
        counts: counts.iter().map(|(n, v)| ((*n).to_owned(), *v)).collect(),
        prev: entry.audit_head.clone(),
        mac: Vec::new(),
    };
    rec.mac = mac_of(org, &rec);
    let key = audit_key(org.tag, rec.seq);
    let sealed = org.seal_record(AUDIT, &key, Compartment::Core, version, &rec)?;
    entry.audit_seq += 1;
    entry.audit_head = rec.mac;
    Ok((key, sealed))
}

pub(crate) fn append_admin_for(org: &Org, tag: OrgTag, op: &str, counts: &[(&str, u64)], actor: &str) -> Result<()> {
    let db = &org.inner.db;
    // Changes the org's registry entry: take the org's writer turn first.
    let _writer = super::commit::WriterLock::acquire(&org.inner.shared);
    let mut wtx = db.begin_write()?;
    let mut entry = db.read_entry(&*wtx, tag, &org.inner.name)?;
    org.inner.learn_epochs(&entry)?;
    append(&mut *wtx, &org.inner, &mut entry, actor, op, counts, now_ms())?;
    wtx.put(ORGS, &tag.0, db.seal_entry(tag, &entry)?.as_slice())?;
    wtx.commit()
}

/// An audit record as scanned: its sequence number from the key, and the opened record.
type ScannedEntry = (u64, Result<AuditRecord>);

/// An org's audit trail.
#[derive(Debug, Clone)]
pub struct Audit {
    org: Org,
}

impl Db {
    /// The audit trail of an org with a managed key.
    pub fn audit(&self, name: &str) -> Result<Audit> {
        Ok(Audit { org: self.org(name)? })
    }
}

impl Org {
    /// This org's audit trail.
    pub fn audit(&self) -> Audit {
        Audit { org: self.clone() }
    }
}

impl Audit {
    fn scan(&self) -> Result<(Vec<ScannedEntry>, OrgEntry)> {
        let inner = &self.org.inner;
        let snap = inner.db.kv.snapshot()?;
        let entry = inner.db.read_entry(&*snap, inner.tag, &inner.name)?;
        inner.learn_epochs(&entry)?;
        let mut out = Vec::new();
        for (key, v) in snap.scan_prefix(AUDIT, &inner.tag.0)? {
            let seq = key.get(8..16).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes);
            let Some(seq) = seq else { continue };
            out.push((seq, inner.open_record::<AuditRecord>(AUDIT, &key, Compartment::Core, &v)));
        }
        Ok((out, entry))
    }

    /// Every entry, in order. Fails closed (`Corrupt` naming the first bad entry) unless the
    /// whole chain verifies: a removed, edited, reordered or replayed entry, or a chain shorter
    /// or longer than its head in the registry entry, never reads as a shorter history.
    pub fn entries(&self) -> Result<Vec<AuditEntry>> {
        let report = self.verify()?;
        if let Some(seq) = report.first_bad {
            return Err(Error::Corrupt {
                table: AUDIT.name,
                key: String::new(),
                at: crate::error::CorruptAt::AuditEntry(seq),
            });
        }
        let (recs, _) = self.scan()?;
        recs.into_iter()
            .map(|(_, r)| {
                r.map(|r| AuditEntry { seq: r.seq, time: r.time, actor: r.actor, op: r.op, counts: r.counts })
            })
            .collect()
    }

    /// Checks the whole chain: every entry authentic, in place, in sequence, chained to its
    /// predecessor, and the last one matching the head recorded in the org's registry entry.
    /// Names the first bad entry.
    pub fn verify(&self) -> Result<AuditReport> {
        let (recs, entry) = self.scan()?;
        let inner = &self.org.inner;
        let bad = |valid: u64, seq: u64, why: &str| AuditReport {
            valid_entries: valid,
            first_bad: Some(seq),
            reason: Some(why.to_owned()),
        };
        let mut prev: Vec<u8> = Vec::new();
        let mut expected = 0u64;
        for (seq, rec) in recs {
            if seq != expected {
                return Ok(bad(expected, expected, "entry missing (removed)"));
            }
            let rec = match rec {
                Ok(r) => r,
                Err(Error::Corrupt { .. }) => {
                    return Ok(bad(expected, seq, "entry fails authentication (edited, moved or replayed)"))
                }
                Err(e) => return Err(e),
            };
            if rec.seq != seq || rec.prev != prev {
                return Ok(bad(expected, seq, "entry out of sequence (reordered or replayed)"));
            }
            if rec.mac != mac_of(inner, &rec) {
                return Ok(bad(expected, seq, "entry MAC mismatch (edited)"));
            }
            prev = rec.mac;
            expected += 1;
        }
        if expected != entry.audit_seq || prev != entry.audit_head {
            return Ok(bad(expected, expected, "chain shorter than recorded (entries removed at the end)"));
        }
        Ok(AuditReport { valid_entries: expected, first_bad: None, reason: None })
    }
}
