//! The database root: one sealed record in `meta` that authenticates the org registry as a
//! whole, and the anchor a host keeps outside the file.
//!
//! Each org's registry entry roots its state tree (`store::state`), so every page of an org is
//! bound to its entry; the database root binds the entries to each other. It holds a commit
//! counter and two keyed multiset hashes (sums mod 2^256 of HMAC outputs, under a key derived
//! from the database secret): one over every registry row's sealed bytes, one over the set of
//! org tags. Every write transaction that changes a registry row updates it in the same storage
//! transaction ([`RootedWrite`]); opening the database recomputes both sums over the registry and
//! refuses a registry that does not match (`Corrupt` at [`CorruptAt::Registry`]): a registry
//! row removed, put back from an older copy, or moved between orgs is found at open.
//!
//! What the file cannot show is a rollback of the whole file (root record and registry and
//! pages, all from one older copy). For that the host keeps the latest [`Anchor`]
//! ([`Db::anchor`]) outside the file and opens with [`DbBuilder::expect_anchor`]: a file whose
//! counter is below the anchor's, or equal with another state, is [`Error::RolledBack`].
//!
//! On a backend whose writers of different orgs commit concurrently (PostgreSQL), a record
//! every commit rewrites would serialize them, so there the root tracks membership only
//! (created and deleted orgs): see [`Kv::serializes_commits`].

use sha2::Digest;

use super::kv::{Kv, KvRead, KvWrite};
use super::tables::{RecordKey, Table, META, ORGS};
use super::{Db, DbBuilder, DbInner};
use crate::codec::{self, DbRootRecord};
use crate::crypto::{envelope, Binding, DbSecretKeys, DbSecrets};
use crate::error::{CorruptAt, Error, InputKind, Result};

/// The root record's key in `meta`.
pub(crate) const ROOT_RECORD_KEY: &[u8] = b"db-root";

type Sum = [u8; 32];

fn add(acc: &mut Sum, x: &Sum) {
    let mut carry = 0u16;
    for (a, b) in acc.iter_mut().zip(x) {
        let s = u16::from(*a) + u16::from(*b) + carry;
        *a = s as u8;
        carry = s >> 8;
    }
}

fn sub(acc: &mut Sum, x: &Sum) {
    let mut borrow = 0i16;
    for (a, b) in acc.iter_mut().zip(x) {
        let d = i16::from(*a) - i16::from(*b) - borrow;
        *a = d.rem_euclid(256) as u8;
        borrow = i16::from(d < 0);
    }
}

fn sum_of(bytes: &[u8]) -> Result<Sum> {
    bytes.try_into().map_err(|_| Error::corrupt(META.name, ROOT_RECORD_KEY))
}

fn row_hash(keys: &DbSecretKeys, tag: &[u8], sealed: &[u8]) -> Sum {
    let digest = sha2::Sha256::digest(sealed);
    keys.root_mac.mac(&[b"row", tag, digest.as_slice()])
}

fn member_hash(keys: &DbSecretKeys, tag: &[u8]) -> Sum {
    keys.root_mac.mac(&[b"member", tag])
}

fn registry_mismatch() -> Error {
    Error::Corrupt { table: ORGS.name, key: String::new(), at: CorruptAt::Registry }
}

/// Seals the root record.
pub(crate) fn seal(keys: &DbSecretKeys, db_id: &[u8; 16], rec: &DbRootRecord) -> Result<Vec<u8>> {
    let bytes = codec::encode(rec).map_err(|_| Error::Internal("database root does not encode".into()))?;
    envelope::seal(&keys.root_seal, 0, &Binding { db_id, table: META.id, key: ROOT_RECORD_KEY }, &bytes)
}

/// Reads and opens the root record (missing or failing authentication: `Corrupt`).
pub(crate) fn load(keys: &DbSecretKeys, db_id: &[u8; 16], r: &dyn KvRead) -> Result<DbRootRecord> {
    let sealed = r.get(META, ROOT_RECORD_KEY)?.ok_or_else(registry_mismatch)?;
    let plain =
        envelope::open(&keys.root_seal, &Binding { db_id, table: META.id, key: ROOT_RECORD_KEY }, META.name, &sealed)?;
    let rec: DbRootRecord = codec::decode(plain.as_slice()).map_err(|_| Error::corrupt(META.name, ROOT_RECORD_KEY))?;
    if rec.state.len() != 32 || rec.members.len() != 32 {
        return Err(Error::corrupt(META.name, ROOT_RECORD_KEY));
    }
    Ok(rec)
}

/// The root record of an empty registry.
pub(crate) fn empty() -> DbRootRecord {
    DbRootRecord { counter: 0, state: vec![0; 32], members: vec![0; 32], orgs: 0 }
}

/// Recomputes the registry's sums and checks them against the root record: `Corrupt` at
/// [`CorruptAt::Registry`] if a registry row was removed, added, replaced or moved.
pub(crate) fn check(db: &DbInner, r: &dyn KvRead) -> Result<DbRootRecord> {
    check_with(db.secrets().current(), &db.db_id, db.kv.serializes_commits(), r)
}

/// [`check`] under the given keys (`full`: whether the backend serializes commits, so the
/// sum over the rows' contents is kept too).
pub(crate) fn check_with(keys: &DbSecretKeys, db_id: &[u8; 16], full: bool, r: &dyn KvRead) -> Result<DbRootRecord> {
    let rec = load(keys, db_id, r)?;
    let now = sums(keys, rec.counter, &r.scan_prefix(ORGS, &[])?);
    if (full && rec.state != now.state) || rec.members != now.members || rec.orgs != now.orgs {
        return Err(registry_mismatch());
    }
    Ok(rec)
}

/// The root record of a registry holding `rows` (key, sealed entry), under `keys`.
pub(crate) fn sums(keys: &DbSecretKeys, counter: u64, rows: &[(Vec<u8>, Vec<u8>)]) -> DbRootRecord {
    let mut state = [0u8; 32];
    let mut members = [0u8; 32];
    for (tag, sealed) in rows {
        add(&mut state, &row_hash(keys, tag, sealed));
        add(&mut members, &member_hash(keys, tag));
    }
    DbRootRecord { counter, state: state.to_vec(), members: members.to_vec(), orgs: rows.len() as u64 }
}

/// A write transaction that keeps the database root in step with the registry rows it writes:
/// every put or remove of an `orgs` row is folded into the root record, written at commit.
pub(crate) struct RootedWrite {
    inner: Box<dyn KvWrite>,
    keys: std::sync::Arc<DbSecrets>,
    db_id: [u8; 16],
    /// Whether the backend serializes commits (then every registry change is tracked; else
    /// membership only).
    full: bool,
    changed: bool,
    state_plus: Sum,
    state_minus: Sum,
    members_plus: Sum,
    members_minus: Sum,
    orgs_added: u64,
    orgs_removed: u64,
}

impl std::fmt::Debug for RootedWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootedWrite").field("changed", &self.changed).finish_non_exhaustive()
    }
}

impl DbInner {
    /// A storage write transaction that maintains the database root.
    pub(crate) fn begin_write(&self) -> Result<Box<dyn KvWrite>> {
        // The storage transaction first, then the keys: a root rotation holds the storage
        // writer (on a backend that serializes commits) until its new keys are in place, so a
        // write that begins after it sees them; on one that does not, the two conflict on the
        // root record they both write.
        let wtx = self.kv.begin_write()?;
        Ok(Box::new(RootedWrite::new(wtx, self.secrets(), self.db_id, &*self.kv)))
    }
}

impl RootedWrite {
    pub(crate) fn new(inner: Box<dyn KvWrite>, keys: std::sync::Arc<DbSecrets>, db_id: [u8; 16], kv: &dyn Kv) -> Self {
        RootedWrite {
            inner,
            keys,
            db_id,
            full: kv.serializes_commits(),
            changed: false,
            state_plus: [0; 32],
            state_minus: [0; 32],
            members_plus: [0; 32],
            members_minus: [0; 32],
            orgs_added: 0,
            orgs_removed: 0,
        }
    }

    fn note(&mut self, tag: &[u8], new: Option<&[u8]>) -> Result<()> {
        let old = self.inner.get(ORGS, tag)?;
        if self.full {
            if let Some(o) = &old {
                add(&mut self.state_minus, &row_hash(self.keys.current(), tag, o));
            }
            if let Some(n) = new {
                add(&mut self.state_plus, &row_hash(self.keys.current(), tag, n));
            }
            self.changed = true;
        }
        match (&old, new) {
            (None, Some(_)) => {
                add(&mut self.members_plus, &member_hash(self.keys.current(), tag));
                self.orgs_added += 1;
                self.changed = true;
            }
            (Some(_), None) => {
                add(&mut self.members_minus, &member_hash(self.keys.current(), tag));
                self.orgs_removed += 1;
                self.changed = true;
            }
            _ => {}
        }
        Ok(())
    }
}

impl KvRead for RootedWrite {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(table, key)
    }
    fn get_many(&self, table: Table, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        self.inner.get_many(table, keys)
    }
    fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.scan_prefix(table, prefix)
    }
    fn count(&self, table: Table) -> Result<u64> {
        self.inner.count(table)
    }
    fn scan_after(&self, table: Table, prefix: &[u8], after: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.scan_after(table, prefix, after, limit)
    }
}

impl KvWrite for RootedWrite {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        if table.id == ORGS.id {
            self.note(key, Some(value))?;
        }
        self.inner.put(table, key, value)
    }

    fn remove(&mut self, table: Table, key: &[u8]) -> Result<()> {
        if table.id == ORGS.id {
            self.note(key, None)?;
        }
        self.inner.remove(table, key)
    }

    fn put_many(&mut self, table: Table, rows: &[(RecordKey, Vec<u8>)]) -> Result<()> {
        if table.id == ORGS.id {
            for (k, v) in rows {
                self.put(table, k, v)?;
            }
            return Ok(());
        }
        self.inner.put_many(table, rows)
    }

    fn commit(self: Box<Self>) -> Result<()> {
        let mut me = *self;
        if me.changed {
            let mut rec = load(me.keys.current(), &me.db_id, &*me.inner)?;
            let mut state = sum_of(&rec.state)?;
            let mut members = sum_of(&rec.members)?;
            add(&mut state, &me.state_plus);
            sub(&mut state, &me.state_minus);
            add(&mut members, &me.members_plus);
            sub(&mut members, &me.members_minus);
            rec.state = state.to_vec();
            rec.members = members.to_vec();
            rec.orgs = (rec.orgs + me.orgs_added)
                .checked_sub(me.orgs_removed)
                .ok_or_else(|| Error::corrupt(META.name, ROOT_RECORD_KEY))?;
            rec.counter = rec.counter.saturating_add(1);
            let sealed = seal(me.keys.current(), &me.db_id, &rec)?;
            me.inner.put(META, ROOT_RECORD_KEY, &sealed)?;
        }
        me.inner.commit()
    }
}

/// The state of a database as its host last saw it: a commit counter and the root's sums,
/// authenticated under a key derived from the database secret. Small (104 bytes); keep the
/// latest one outside the file (the host's own database, a KMS-backed store) and open with
/// [`DbBuilder::expect_anchor`] to refuse an older copy of the whole file.
///
/// ```
/// # fn main() -> silograph::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("ctx.silo");
/// use silograph::{Anchor, Db, RootKey};
/// let root = || RootKey::from_bytes([7; 32]); // the host's key provider
/// let db = Db::open(&path, root())?;
/// db.create_org("acme")?;
/// let kept = db.anchor()?.to_bytes(); // store these bytes outside the file
/// drop(db);
/// let db = Db::builder().expect_anchor(Anchor::from_bytes(&kept)?).open(&path, root())?;
/// # Ok(()) }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Anchor {
    db_id: [u8; 16],
    counter: u64,
    state: Sum,
    members: Sum,
    mac: Sum,
}

const ANCHOR_LEN: usize = 16 + 8 + 32 + 32 + 32;

impl std::fmt::Debug for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anchor").field("db_id", &hex::encode(self.db_id)).field("counter", &self.counter).finish()
    }
}

impl Anchor {
    /// The commit counter: registry-changing commits up to this state.
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// The anchor as bytes, to keep outside the file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ANCHOR_LEN);
        out.extend_from_slice(&self.db_id);
        out.extend_from_slice(&self.counter.to_le_bytes());
        out.extend_from_slice(&self.state);
        out.extend_from_slice(&self.members);
        out.extend_from_slice(&self.mac);
        out
    }

    /// An anchor from [`Anchor::to_bytes`]; `InvalidInput` if the length is wrong. Its
    /// authenticity is checked when a database is opened with it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Anchor> {
        if bytes.len() != ANCHOR_LEN {
            return Err(Error::invalid(
                InputKind::Anchor,
                format!("an anchor is {ANCHOR_LEN} bytes, got {}", bytes.len()),
            ));
        }
        let mut a = Anchor { db_id: [0; 16], counter: 0, state: [0; 32], members: [0; 32], mac: [0; 32] };
        a.db_id.copy_from_slice(&bytes[..16]);
        let mut c = [0u8; 8];
        c.copy_from_slice(&bytes[16..24]);
        a.counter = u64::from_le_bytes(c);
        a.state.copy_from_slice(&bytes[24..56]);
        a.members.copy_from_slice(&bytes[56..88]);
        a.mac.copy_from_slice(&bytes[88..]);
        Ok(a)
    }

    fn mac_of(keys: &DbSecretKeys, db_id: &[u8; 16], counter: u64, state: &Sum, members: &Sum) -> Sum {
        keys.anchor.mac(&[db_id, &counter.to_le_bytes(), state, members])
    }

    fn of(keys: &DbSecretKeys, db_id: &[u8; 16], rec: &DbRootRecord) -> Result<Anchor> {
        let state = sum_of(&rec.state)?;
        let members = sum_of(&rec.members)?;
        let mac = Self::mac_of(keys, db_id, rec.counter, &state, &members);
        Ok(Anchor { db_id: *db_id, counter: rec.counter, state, members, mac })
    }

    /// Checks the database's current root against this anchor (the host's last known state).
    pub(crate) fn check(&self, db: &DbInner, rec: &DbRootRecord) -> Result<()> {
        // An anchor minted before a root rotation is under an older database secret.
        let secrets = db.secrets();
        let genuine = secrets
            .all()
            .any(|keys| Self::mac_of(keys, &self.db_id, self.counter, &self.state, &self.members) == self.mac);
        if self.db_id != db.db_id || !genuine {
            return Err(Error::invalid(
                InputKind::Anchor,
                "the anchor is not one of this database (another database, or altered)",
            ));
        }
        let now = Self::of(secrets.current(), &db.db_id, rec)?;
        if now.counter < self.counter || (now.counter == self.counter && now != *self) {
            return Err(Error::RolledBack { file: now.counter, anchor: self.counter });
        }
        Ok(())
    }
}

impl Db {
    /// The database's current anchor: keep the latest one outside the file and open with
    /// [`DbBuilder::expect_anchor`], so that an older copy of the whole file (which nothing in
    /// the file can reveal) is refused with [`Error::RolledBack`]. Take a new anchor after each
    /// commit that must not be rolled back (or periodically: an anchor refuses every state older
    /// than itself). Tests: `state::whole_file_rollback_is_refused_with_an_anchor_and_undetected_without`.
    pub fn anchor(&self) -> Result<Anchor> {
        // Held so that no root rotation commits between the snapshot and the keys.
        let root = self.inner.root();
        let snap = self.inner.kv.snapshot()?;
        let rec = load(root.secrets.current(), &self.inner.db_id, &*snap)?;
        Anchor::of(root.secrets.current(), &self.inner.db_id, &rec)
    }
}

impl DbBuilder {
    /// Refuse to open a database older than `anchor` (see [`Anchor`]): [`Error::RolledBack`].
    pub fn expect_anchor(mut self, anchor: Anchor) -> Self {
        self.anchor = Some(anchor);
        self
    }
}
