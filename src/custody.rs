//! Per-org key custody: a secret per organization kept outside the data file, so that deleting
//! the org (destroying its custody key) shreds it in every copy of the file too.
//!
//! An org created on a [`Db`](crate::Db) opened with [`DbBuilder::custody`](crate::DbBuilder::custody)
//! gets a random 32-byte *custody secret*; the custody wraps it under the org's own custody key
//! and only the wrapped form is stored (in the org's registry entry). The org's data and
//! structure keys derive from its stored seeds **and** its custody secret, so the root key alone
//! opens nothing of it. [`Db::delete_org`](crate::Db::delete_org) asks the custody to destroy the
//! org's key: from then on no copy of the file, made before or after, opens that org.
//!
//! Two custodies ship: [`CallbackCustody`] (the host's KMS: AWS KMS, Vault transit, ... through
//! three closures) and [`LocalKeyring`] (a sealed keyring file kept apart from the data file).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use zeroize::{Zeroize, Zeroizing};

use crate::codec::{self, KeyringBody, KeyringSlot};
use crate::crypto::{self, envelope, Binding, KeyringKey, Secret, KEY_LEN};
use crate::error::{Error, Result};

/// The id of one org's custody key: 16 random bytes chosen when the org is created (a new org of
/// the same name gets a new id). Shown as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CustodyKeyId(pub(crate) [u8; 16]);

impl CustodyKeyId {
    /// A fresh random id.
    pub(crate) fn generate() -> Result<Self> {
        let mut id = [0u8; 16];
        crypto::fill_random(&mut id)?;
        Ok(CustodyKeyId(id))
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The id from its 16 bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        CustodyKeyId(bytes)
    }

    /// The id as 32 lowercase hex digits (e.g. to name a key in the host's KMS).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for CustodyKeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CustodyKeyId({})", self.to_hex())
    }
}

impl std::fmt::Display for CustodyKeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Keeps one key per organization outside the data file and wraps, unwraps and destroys with it.
///
/// The key never has to leave the custody: silograph hands it 32 bytes to wrap when an org is
/// created, asks for them back when the org is opened, and asks it to destroy the key when the
/// org is deleted.
///
/// * [`wrap`](KeyCustody::wrap) creates the key `id` if it does not exist yet, and must make it
///   durable before returning.
/// * [`unwrap`](KeyCustody::unwrap) returns what was wrapped; a key that was destroyed is
///   [`Error::CustodyKeyDestroyed`] (silograph then treats the org as deleted); a wrapped value
///   that does not authenticate is [`Error::WrongKey`].
/// * [`destroy`](KeyCustody::destroy) destroys the key irrevocably; destroying a destroyed or
///   unknown key is not an error (deletion resumes after a crash).
pub trait KeyCustody: Send + Sync {
    /// Wraps `plaintext` (an org's 32-byte custody secret) under the key `id`, creating the key.
    fn wrap(&self, id: &CustodyKeyId, plaintext: &[u8]) -> Result<Vec<u8>>;
    /// Unwraps what [`KeyCustody::wrap`] returned.
    fn unwrap(&self, id: &CustodyKeyId, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>>;
    /// Destroys the key `id`.
    fn destroy(&self, id: &CustodyKeyId) -> Result<()>;
}

impl<T: KeyCustody + ?Sized> KeyCustody for std::sync::Arc<T> {
    fn wrap(&self, id: &CustodyKeyId, plaintext: &[u8]) -> Result<Vec<u8>> {
        (**self).wrap(id, plaintext)
    }

    fn unwrap(&self, id: &CustodyKeyId, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        (**self).unwrap(id, wrapped)
    }

    fn destroy(&self, id: &CustodyKeyId) -> Result<()> {
        (**self).destroy(id)
    }
}

/// A custody as the `Db` holds it.
#[derive(Clone)]
pub(crate) struct CustodyRef(pub(crate) std::sync::Arc<dyn KeyCustody>);

impl std::fmt::Debug for CustodyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyCustody")
    }
}

type WrapFn = dyn Fn(&CustodyKeyId, &[u8]) -> Result<Vec<u8>> + Send + Sync;
type UnwrapFn = dyn Fn(&CustodyKeyId, &[u8]) -> Result<Zeroizing<Vec<u8>>> + Send + Sync;
type DestroyFn = dyn Fn(&CustodyKeyId) -> Result<()> + Send + Sync;

/// Key custody in the host's KMS through three closures, e.g. Vault transit
/// (`encrypt`/`decrypt` on a key named by the id, `delete` to destroy) or AWS KMS (one key per
/// org, `ScheduleKeyDeletion` to destroy).
///
/// ```
/// use silograph::{CallbackCustody, CustodyKeyId, Error};
/// use std::collections::HashMap;
/// use std::sync::{Arc, Mutex};
/// // A toy "KMS": it keeps the plaintext per key id (a real one encrypts under a key it holds).
/// let kms: Arc<Mutex<HashMap<CustodyKeyId, Vec<u8>>>> = Default::default();
/// let (k1, k2, k3) = (kms.clone(), kms.clone(), kms.clone());
/// let custody = CallbackCustody::new(
///     move |id, plain| { k1.lock().unwrap().insert(*id, plain.to_vec()); Ok(id.as_bytes().to_vec()) },
///     move |id, _wrapped| k2.lock().unwrap().get(id).cloned().map(Into::into).ok_or(Error::CustodyKeyDestroyed),
///     move |id| { k3.lock().unwrap().remove(id); Ok(()) },
/// );
/// # let _ = custody;
/// ```
pub struct CallbackCustody {
    wrap: Box<WrapFn>,
    unwrap: Box<UnwrapFn>,
    destroy: Box<DestroyFn>,
}

impl CallbackCustody {
    /// A custody calling `wrap`, `unwrap` and `destroy` (see [`KeyCustody`] for what each must do).
    pub fn new(
        wrap: impl Fn(&CustodyKeyId, &[u8]) -> Result<Vec<u8>> + Send + Sync + 'static,
        unwrap: impl Fn(&CustodyKeyId, &[u8]) -> Result<Zeroizing<Vec<u8>>> + Send + Sync + 'static,
        destroy: impl Fn(&CustodyKeyId) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        CallbackCustody { wrap: Box::new(wrap), unwrap: Box::new(unwrap), destroy: Box::new(destroy) }
    }
}

impl std::fmt::Debug for CallbackCustody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallbackCustody")
    }
}

impl KeyCustody for CallbackCustody {
    fn wrap(&self, id: &CustodyKeyId, plaintext: &[u8]) -> Result<Vec<u8>> {
        (self.wrap)(id, plaintext)
    }

    fn unwrap(&self, id: &CustodyKeyId, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        (self.unwrap)(id, wrapped)
    }

    fn destroy(&self, id: &CustodyKeyId) -> Result<()> {
        (self.destroy)(id)
    }
}

const KEYRING_MAGIC: &[u8; 8] = b"SILOKEYS";
const KEYRING_VERSION: u8 = 1;
const KEYRING_HEADER: usize = 8 + 1 + 16;
/// Envelope "table" ids of the keyring (not redb tables: they only separate the domains).
const KEYRING_BODY_TABLE: u8 = 0xC1;
const KEYRING_WRAP_TABLE: u8 = 0xC2;
const KEYRING: &str = "keyring";

/// The default custody: a keyring file of its own, kept apart from the data file.
///
/// ```text
/// "SILOKEYS" | version u8 (=1) | keyring_id [16] | envelope(body)
/// body key = HKDF(KeyringKey, salt = keyring_id, "silograph/1/keyring")
/// body = rkyv KeyringBody { slots: [(custody key id, 32 random bytes, or empty once destroyed)] }
/// ```
///
/// The whole body is sealed (AES-256-GCM, bound to the header); every change writes a new file
/// next to it (mode 0600, fsync) and renames it over the old one, so a crash leaves the old or
/// the new keyring, never a torn one. A destroyed key's bytes are gone from the new file at
/// once; its id stays as a tombstone. On Unix a keyring file readable or writable by group or
/// others is refused, as key files are.
///
/// One `LocalKeyring` per file per process: share it (it is `Sync`) between `Db`s rather than
/// opening the file twice.
///
/// ```
/// # fn main() -> silograph::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// use silograph::{Db, KeyringKey, LocalKeyring, RootKey};
/// let keyring = LocalKeyring::open(dir.path().join("ctx.keys"), KeyringKey::from_bytes([2; 32]))?;
/// let db = Db::builder().custody(keyring).open(dir.path().join("ctx.silo"), RootKey::from_bytes([1; 32]))?;
/// db.create_org("acme")?;
/// db.delete_org("acme")?; // destroys acme's key in the keyring: no copy of ctx.silo opens acme
/// # Ok(()) }
/// ```
pub struct LocalKeyring {
    path: PathBuf,
    id: [u8; 16],
    key: KeyringKey,
    slots: Mutex<BTreeMap<[u8; 16], Option<Secret>>>,
}

impl std::fmt::Debug for LocalKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeyring").field("path", &self.path).finish_non_exhaustive()
    }
}

impl LocalKeyring {
    /// Opens the keyring at `path`, sealed under `key`, creating it (mode 0600) if missing.
    ///
    /// `WrongKey` if `key` does not open it; `Corrupt` (table `keyring`) if it is damaged;
    /// `InvalidInput` if group or others can access it (Unix).
    pub fn open(path: impl Into<PathBuf>, key: KeyringKey) -> Result<LocalKeyring> {
        let path = path.into();
        match std::fs::File::open(&path) {
            Ok(file) => Self::read(path, file, key),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut id = [0u8; 16];
                crypto::fill_random(&mut id)?;
                let ring = LocalKeyring { path, id, key, slots: Mutex::new(BTreeMap::new()) };
                ring.persist(&BTreeMap::new())?;
                Ok(ring)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn read(path: PathBuf, mut file: std::fs::File, key: KeyringKey) -> Result<LocalKeyring> {
        crate::keyprovider::check_private(&file, "keyring", &path)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes)?;
        let bad = || Error::corrupt(KEYRING, b"header");
        if bytes.len() < KEYRING_HEADER || &bytes[..8] != KEYRING_MAGIC {
            return Err(Error::UnsupportedFormat("not a silograph keyring".into()));
        }
        if bytes[8] != KEYRING_VERSION {
            return Err(Error::UnsupportedFormat(format!("keyring version {}", bytes[8])));
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&bytes[9..KEYRING_HEADER]);
        let header = &bytes[..KEYRING_HEADER];
        let binding = Binding { db_id: &id, table: KEYRING_BODY_TABLE, key: header };
        let mut plain =
            envelope::open(&crypto::keyring_body_key(&key, &id), &binding, KEYRING, &bytes[KEYRING_HEADER..]).map_err(
                |e| match e {
                    Error::Corrupt { .. } => Error::WrongKey,
                    other => other,
                },
            )?;
        let body = codec::decode::<KeyringBody>(plain.as_slice()).map_err(|_| bad());
        plain.as_mut_slice().zeroize();
        let body = body?;
        let mut slots = BTreeMap::new();
        for s in &body.slots {
            let sid: [u8; 16] = s.id.as_slice().try_into().map_err(|_| bad())?;
            let k = match s.key.len() {
                0 => None,
                KEY_LEN => Some(Secret::from_slice(&s.key)?),
                _ => return Err(bad()),
            };
            slots.insert(sid, k);
        }
        Ok(LocalKeyring { path, id, key, slots: Mutex::new(slots) })
    }

    /// Writes `slots` to a new file beside the keyring and renames it over the keyring.
    fn persist(&self, slots: &BTreeMap<[u8; 16], Option<Secret>>) -> Result<()> {
        let body = KeyringBody {
            slots: slots
                .iter()
                .map(|(id, k)| KeyringSlot {
                    id: id.to_vec(),
                    key: k.as_ref().map(|k| k.expose().to_vec()).unwrap_or_default(),
                })
                .collect(),
        };
        let mut plain = codec::encode(&body).map_err(|_| Error::Internal("keyring body".into()))?;
        drop(body);
        let mut header = Vec::with_capacity(KEYRING_HEADER);
        header.extend_from_slice(KEYRING_MAGIC);
        header.push(KEYRING_VERSION);
        header.extend_from_slice(&self.id);
        let binding = Binding { db_id: &self.id, table: KEYRING_BODY_TABLE, key: &header };
        let sealed = envelope::seal(&crypto::keyring_body_key(&self.key, &self.id), 0, &binding, plain.as_slice());
        plain.as_mut_slice().zeroize();
        let sealed = sealed?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".new");
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp)?;
            f.write_all(&header)?;
            f.write_all(&sealed)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        sync_dir(&self.path);
        Ok(())
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<[u8; 16], Option<Secret>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The path of the keyring file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn binding<'a>(&'a self, id: &'a CustodyKeyId) -> Binding<'a> {
        Binding { db_id: &self.id, table: KEYRING_WRAP_TABLE, key: &id.0 }
    }
}

/// Makes a rename in `path`'s directory durable (best effort: not every platform can).
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

impl KeyCustody for LocalKeyring {
    fn wrap(&self, id: &CustodyKeyId, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut slots = self.slots();
        let slot = match slots.get(&id.0) {
            Some(Some(k)) => Secret::copy_from(k.expose()),
            Some(None) => return Err(Error::CustodyKeyDestroyed),
            None => {
                let k = Secret::generate()?;
                let mut next: BTreeMap<[u8; 16], Option<Secret>> =
                    slots.iter().map(|(i, s)| (*i, s.as_ref().map(|s| Secret::copy_from(s.expose())))).collect();
                next.insert(id.0, Some(Secret::copy_from(k.expose())));
                self.persist(&next)?;
                *slots = next;
                k
            }
        };
        envelope::seal(&crypto::keyring_slot_key(&slot, &self.id), 0, &self.binding(id), plaintext)
    }

    fn unwrap(&self, id: &CustodyKeyId, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let slots = self.slots();
        let slot = match slots.get(&id.0) {
            Some(Some(k)) => k,
            Some(None) => return Err(Error::CustodyKeyDestroyed),
            None => return Err(Error::WrongKey),
        };
        let mut plain = envelope::open(&crypto::keyring_slot_key(slot, &self.id), &self.binding(id), KEYRING, wrapped)
            .map_err(|_| Error::WrongKey)?;
        let out = Zeroizing::new(plain.as_slice().to_vec());
        plain.as_mut_slice().zeroize();
        Ok(out)
    }

    fn destroy(&self, id: &CustodyKeyId) -> Result<()> {
        let mut slots = self.slots();
        if matches!(slots.get(&id.0), Some(None)) {
            return Ok(());
        }
        let mut next: BTreeMap<[u8; 16], Option<Secret>> =
            slots.iter().map(|(i, s)| (*i, s.as_ref().map(|s| Secret::copy_from(s.expose())))).collect();
        next.insert(id.0, None);
        self.persist(&next)?;
        *slots = next;
        Ok(())
    }
}
