//! Sealed secrets per org: connector OAuth tokens and API keys, under their own compartment key.
//!
//! All secrets of an org live in one record (`dict` table, address `(SECRETS_SUB, 0, 0)` of the
//! `DICT` blind kind, so the org's `Dict` state tree covers it), sealed under the `Secrets`
//! compartment's key of the current epoch: never in any index, re-sealed by rotation, carried by
//! export, purged (and shredded) with the org.

use zeroize::{Zeroize, Zeroizing};

use super::kv::KvRead;
use super::org::Org;
use super::state::{Addr, Roots, StateUpdate};
use super::tables::{RecordKey, RecordKind, Table, DICT, ORGS, SECRETS_SUB, TREE};
use super::{check_name, MAX_NAME_LEN, MAX_VALUE_LEN};
use crate::codec::SecretMap;
use crate::error::{Error, InputKind, Result};
use crate::types::Compartment;

/// A secret value (a token, an API key): zeroized on drop, never printed, no `Clone`.
///
/// ```
/// let token = silograph::SecretValue::new(b"ya29.a0Af".to_vec());
/// assert_eq!(format!("{token:?}"), "SecretValue(<redacted>)");
/// assert_eq!(token.expose(), b"ya29.a0Af");
/// ```
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    /// Wraps `bytes` (moved, so no copy is left behind).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        SecretValue(Zeroizing::new(bytes.into()))
    }

    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for SecretValue {
    fn from(s: &str) -> Self {
        SecretValue::new(s.as_bytes().to_vec())
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// The sealed secrets of one org (from [`Org::secrets`]). Only a handle whose scope includes
/// [`Compartment::Secrets`] holds their key.
///
/// ```
/// # fn main() -> silograph::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// let db = silograph::Db::open(dir.path().join("ctx.silo"), silograph::RootKey::from_bytes([1; 32]))?;
/// let acme = db.create_org("acme")?;
/// let secrets = acme.secrets()?;
/// secrets.put("salesforce/oauth", "ya29.a0Af".into())?;
/// assert_eq!(secrets.get("salesforce/oauth")?.unwrap().expose(), b"ya29.a0Af");
/// assert_eq!(secrets.list()?, ["salesforce/oauth"]);
/// assert!(secrets.delete("salesforce/oauth")?);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Secrets {
    org: Org,
}

impl Org {
    /// The org's sealed secrets. `Denied(Secrets)` for a handle whose scope lacks them.
    pub fn secrets(&self) -> Result<Secrets> {
        if !self.inner.scope.contains(&Compartment::Secrets) {
            return Err(Error::Denied(Compartment::Secrets));
        }
        Ok(Secrets { org: self.clone() })
    }
}

impl Secrets {
    fn addr() -> Result<Addr> {
        Addr::new(RecordKind::Secrets, SECRETS_SUB, 0, 0)
    }

    fn key(&self) -> Result<RecordKey> {
        self.org
            .inner
            .key_of(RecordKind::Secrets, SECRETS_SUB, 0, 0)
            .ok_or_else(|| Error::Internal("secrets key".into()))
    }

    /// The secrets record in `kv` as of the org's registry entry `state_root`, checked against
    /// the org's state tree (an older copy put back, or a removed one, is `Corrupt`).
    fn load(&self, kv: &dyn KvRead, state_root: &[u8]) -> Result<SecretMap> {
        let roots = Roots::decode(state_root)?;
        let key = self.key()?;
        let get = |t: Table, k: &[u8]| kv.get(t, k);
        match self.org.inner.fetch(&roots, &get, Self::addr()?, &key)? {
            Some(sealed) => self.org.inner.open_record(DICT, &key, Compartment::Secrets, &sealed),
            None => Ok(SecretMap::default()),
        }
    }

    fn current(&self) -> Result<SecretMap> {
        let oi = &self.org.inner;
        let snap = oi.db.kv.snapshot()?;
        let entry = oi.db.read_entry(&*snap, oi.tag, &oi.name)?;
        if entry.state != 0 {
            return Err(Error::OrgNotFound(oi.name.clone()));
        }
        oi.learn_epochs(&entry)?;
        self.load(&*snap, &entry.state_root)
    }

    /// The secret called `name`, if set.
    pub fn get(&self, name: &str) -> Result<Option<SecretValue>> {
        let map = self.current()?;
        Ok(map.get(name).map(|v| SecretValue::new(v.to_vec())))
    }

    /// The names of the org's secrets, sorted.
    pub fn list(&self) -> Result<Vec<String>> {
        Ok(self.current()?.names())
    }

    /// Sets the secret `name` (1–256 bytes) to `value` (at most 64 KiB). Audited as
    /// `secret-put` with the number of secrets, never the name or the value.
    pub fn put(&self, name: &str, value: SecretValue) -> Result<()> {
        check_name("secret name", name, MAX_NAME_LEN)?;
        if value.expose().len() > MAX_VALUE_LEN {
            let kind = InputKind::TooLong { field: "secret", len: value.expose().len(), limit: MAX_VALUE_LEN };
            return Err(Error::invalid(kind, format!("a secret is at most {MAX_VALUE_LEN} bytes")));
        }
        self.update("secret-put", |map| {
            map.set(name, value.expose());
            true
        })
        .map(|_| ())
    }

    /// Removes the secret `name`; returns whether it was set. Audited as `secret-delete`.
    pub fn delete(&self, name: &str) -> Result<bool> {
        check_name("secret name", name, MAX_NAME_LEN)?;
        self.update("secret-delete", |map| map.remove(name))
    }

    /// Changes the secrets record in one transaction, holding the org's writer lock, with an
    /// audit entry; nothing is written if `change` says nothing changed.
    fn update(&self, op: &str, change: impl FnOnce(&mut SecretMap) -> bool) -> Result<bool> {
        let oi = &self.org.inner;
        let db = &oi.db;
        db.group.writable()?;
        let _writer = super::commit::WriterLock::acquire(&oi.shared);
        let key = self.key()?;
        let mut wtx = db.begin_write()?;
        let mut entry = db.read_entry(&*wtx, oi.tag, &oi.name)?;
        if entry.state != 0 {
            return Err(Error::OrgNotFound(oi.name.clone()));
        }
        oi.learn_epochs(&entry)?;
        let mut map = self.load(&*wtx, &entry.state_root)?;
        if !change(&mut map) {
            return Ok(false);
        }
        // One commit of the org: a new page version, and the state tree moved to it.
        let version = entry.commit_seq + 1;
        let sealed = oi.seal_record(DICT, &key, Compartment::Secrets, version, &map)?;
        let (roots, up) = {
            let get = |t: Table, k: &[u8]| wtx.get(t, k);
            let (roots, up) =
                StateUpdate::apply(oi, &Roots::decode(&entry.state_root)?, &get, [(Self::addr()?, version)], version)?;
            (roots, (up.seals(), up.puts, up.removes))
        };
        let (tree_seals, tree_puts, tree_removes) = up;
        wtx.put(DICT, &key, &sealed)?;
        for (k, v) in &tree_puts {
            wtx.put(TREE, k, v)?;
        }
        for k in &tree_removes {
            wtx.remove(TREE, k)?;
        }
        entry.state_root = roots.encode();
        entry.commit_seq = version;
        let current = entry.current_epoch;
        if let Some(e) = entry.epochs.iter_mut().find(|e| e.epoch == current) {
            e.seal_count = e.seal_count.saturating_add(2 + tree_seals);
        }
        let counts = [("secrets", map.len() as u64)];
        super::audit::append(&mut *wtx, oi, &mut entry, self.org.actor(), op, &counts, super::now_ms())?;
        wtx.put(ORGS, &oi.tag.0, &db.seal_entry(oi.tag, &entry)?)?;
        wtx.commit()?;
        Ok(true)
    }
}

impl SecretMap {
    /// The value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&[u8]> {
        self.entries.binary_search_by(|(n, _)| n.as_str().cmp(name)).ok().map(|i| self.entries[i].1.as_slice())
    }

    /// Sets `name` to `value`, zeroizing the value it replaces.
    pub(crate) fn set(&mut self, name: &str, value: &[u8]) {
        match self.entries.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => {
                self.entries[i].1.zeroize();
                self.entries[i].1 = value.to_vec();
            }
            Err(i) => self.entries.insert(i, (name.to_owned(), value.to_vec())),
        }
    }

    /// Removes `name` (zeroizing its value); whether it was set.
    pub(crate) fn remove(&mut self, name: &str) -> bool {
        match self.entries.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => {
                let (_, mut v) = self.entries.remove(i);
                v.zeroize();
                true
            }
            Err(_) => false,
        }
    }

    /// The names, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        self.entries.iter().map(|(n, _)| n.clone()).collect()
    }

    /// How many secrets.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}
