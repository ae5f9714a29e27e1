//! Tables, the org registry and transactions: glues `crypto` and `codec` to the storage
//! interface ([`kv`]), which redb implements ([`kv_redb`]).

mod admin;
mod audit;
mod bulk;
mod bundle;
mod cache;
mod commit;
pub(crate) mod kv;
mod kv_redb;
mod org;
mod overlay;
#[cfg(feature = "postgres")]
pub(crate) mod pg;
mod read;
mod records;
mod rekey;
mod root;
mod secrets;
mod state;
pub(crate) mod tables;
mod verify;
mod write;

pub use admin::{DeleteReport, OrgInfo, RotationReport, ADMIN_BATCH};
pub use audit::{Audit, AuditEntry, AuditReport};
pub use bulk::{BulkLoader, BulkStats, DEFAULT_BULK_BUDGET};
pub use bundle::BundleReport;
pub use org::Org;
pub use read::{EdgeView, Neighbor, NeighborFilter, Neighbors, NodeView, ReadTxn};
pub use root::Anchor;
pub use secrets::{SecretValue, Secrets};
pub use verify::{CorruptRecord, VerifyReport};
pub use write::{EdgeInput, NodeInput, WriteTxn};

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use zeroize::Zeroizing;

use crate::codec::{self, OrgEntry};
use crate::crypto::{self, envelope, Binding, DbSecrets, OrgKey, RootKey, RootKeys, Secret, KEY_LEN};
use crate::error::{Error, InputKind, Result};
use crate::types::{Compartment, OrgTag};
use cache::PageCache;
use kv::{Kv, KvRead, KvWrite};
use kv_redb::{Layout, RedbKv};
use tables::{META, ORGS};

/// On-disk format version of the database file.
pub const FORMAT_VERSION: u32 = 7;
const MAGIC: &[u8; 10] = b"SILOGRAPH\0";
const HEADER_KEY: &[u8] = b"header";
const ROOT_CHECK_KEY: &[u8] = b"root-check";
const DB_SECRET_KEY: &[u8] = b"db-secret";
/// The database secrets earlier root rotations retired, newest first (absent before the first).
const DB_SECRET_PRIOR_KEY: &[u8] = b"db-secret-prior";
const ROOT_CHECK_VALUE: &[u8] = b"silograph root check v1";
const BYOK_CHECK_VALUE: &[u8] = b"silograph byok check v1";
/// The layout of registry entries this build writes, carried in the entry envelope's (otherwise
/// unused) page version; another layout is `Corrupt`.
const ENTRY_LAYOUT: u64 = 1;

/// Longest org, kind, system or property name, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Longest external id, in bytes.
pub const MAX_EXTERNAL_ID_LEN: usize = 1024;
/// Largest string or bytes property value, in bytes.
pub const MAX_VALUE_LEN: usize = 64 * 1024;

pub(crate) fn check_name(what: &'static str, s: &str, max: usize) -> Result<()> {
    if s.is_empty() {
        return Err(Error::invalid(InputKind::Empty { field: what }, format!("{what} is empty")));
    }
    if s.len() > max {
        let kind = InputKind::TooLong { field: what, len: s.len(), limit: max };
        return Err(Error::invalid(kind, format!("{what} is {} bytes, the limit is {max}", s.len())));
    }
    Ok(())
}

/// Configuration for opening a [`Db`].
///
/// ```no_run
/// # fn main() -> silograph::Result<()> {
/// let root = silograph::RootKey::generate()?;
/// let db = silograph::Db::builder().cache_size(256 << 20).open("ctx.silo", root)?;
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until `open` is called"]
#[derive(Debug, Clone)]
pub struct DbBuilder {
    page_cache: usize,
    storage_cache: Option<usize>,
    rotate_after_seals: u64,
    rekey_batch: usize,
    actor: String,
    anchor: Option<root::Anchor>,
    unchecked_state: bool,
    custody: Option<crate::custody::CustodyRef>,
    #[cfg(feature = "postgres")]
    pg_max_connections: usize,
}

/// Default of [`DbBuilder::postgres_max_connections`]: connections one `Db` keeps open to
/// PostgreSQL at most.
#[cfg(feature = "postgres")]
pub const DEFAULT_POSTGRES_MAX_CONNECTIONS: usize = pg::DEFAULT_MAX_CONNECTIONS;

/// Seals under one key epoch after which a commit moves the org to a new epoch: far below the
/// 2^32 random-nonce bound of AES-GCM (collision probability below 2^-33 at this count).
pub const DEFAULT_ROTATE_AFTER_SEALS: u64 = 1 << 30;

impl Default for DbBuilder {
    fn default() -> Self {
        DbBuilder {
            page_cache: 64 << 20,
            storage_cache: None,
            rotate_after_seals: DEFAULT_ROTATE_AFTER_SEALS,
            rekey_batch: admin::ADMIN_BATCH,
            actor: "host".to_owned(),
            anchor: None,
            unchecked_state: false,
            custody: None,
            #[cfg(feature = "postgres")]
            pg_max_connections: DEFAULT_POSTGRES_MAX_CONNECTIONS,
        }
    }
}

impl DbBuilder {
    /// Bytes of decrypted adjacency pages to keep per organization (0 disables the cache).
    pub fn cache_size(mut self, bytes: usize) -> Self {
        self.page_cache = bytes;
        self
    }

    /// PostgreSQL only (feature `postgres`): the most connections this `Db` opens to the server
    /// at once (default [`DEFAULT_POSTGRES_MAX_CONNECTIONS`]; at least 1). Every live snapshot
    /// ([`Org::read`](crate::Org::read), and the one a write transaction reads from) and every
    /// storage write transaction (a commit round) holds one connection until it ends; when all
    /// are busy the next one waits for a connection to come back, and fails with
    /// `Error::Storage` of reason [`StorageReason::PoolExhausted`](crate::StorageReason) after
    /// 30 s. A thread that holds a snapshot while it opens a write transaction needs two. Up to
    /// 16 idle connections are kept for reuse. Size it so that instances × cap stays below the
    /// server's `max_connections`.
    #[cfg(feature = "postgres")]
    pub fn postgres_max_connections(mut self, max: usize) -> Self {
        self.pg_max_connections = max.max(1);
        self
    }

    /// Bytes of redb's own (encrypted) page cache; redb's default if unset.
    pub fn storage_cache_size(mut self, bytes: usize) -> Self {
        self.storage_cache = Some(bytes);
        self
    }

    /// Seals under one key epoch after which a commit starts a new epoch automatically
    /// (default [`DEFAULT_ROTATE_AFTER_SEALS`]). Lower it only to test rotation.
    pub fn rotate_after_seals(mut self, seals: u64) -> Self {
        self.rotate_after_seals = seals.max(1);
        self
    }

    /// Records [`Db::rekey_org`] re-keys per storage transaction (default
    /// [`ADMIN_BATCH`](crate::ADMIN_BATCH)): between two, other orgs' writers commit, and an
    /// interrupted re-key resumes after the last one. Smaller: shorter waits, more commits.
    pub fn rekey_batch(mut self, records: usize) -> Self {
        self.rekey_batch = records.max(1);
        self
    }

    /// The actor recorded in audit entries by handles that name none (default `"host"`).
    /// An empty actor is `InvalidInput` at open.
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = actor.into();
        self
    }

    /// INSECURE, benchmarks only (feature `bench-unchecked-state`): no state tree — reads are
    /// not checked against it and commits do not maintain it — to measure what the
    /// authenticated state costs in one process. A database written so is `Corrupt` to a
    /// normal open.
    #[cfg(feature = "bench-unchecked-state")]
    #[doc(hidden)]
    pub fn unchecked_state_for_benchmarks(mut self) -> Self {
        self.unchecked_state = true;
        self
    }

    /// Keeps a per-org key outside the data file in `custody` (a [`crate::LocalKeyring`], or the
    /// host's KMS through [`crate::CallbackCustody`]): orgs created from then on derive their keys
    /// from their stored seeds and a custody secret only the custody can unwrap, so
    /// [`Db::delete_org`] (which destroys the org's custody key) shreds them in every copy of the
    /// file. Orgs created without custody keep working as before, without copy-proof shredding.
    /// Opening an org that was created under custody needs the same custody.
    pub fn custody(mut self, custody: impl crate::KeyCustody + 'static) -> Self {
        self.custody = Some(crate::custody::CustodyRef(Arc::new(custody)));
        self
    }

    fn redb_builder(&self) -> redb::Builder {
        let mut b = redb::Database::builder();
        if let Some(c) = self.storage_cache {
            b.set_cache_size(c);
        }
        b
    }

    /// Opens the database at `path`, creating it if missing.
    ///
    /// A wrong root key is `Error::WrongKey`, detected before anything is written: the file is
    /// left byte-for-byte unchanged.
    pub fn open(self, path: impl AsRef<Path>, root: RootKey) -> Result<Db> {
        check_name("actor", &self.actor, MAX_NAME_LEN)?;
        let path = path.as_ref();
        contain("file", &[], || self.open_path(path, root))
    }

    #[cfg_attr(feature = "tracing", tracing::instrument(name = "open", level = "debug", skip_all))]
    fn open_path(self, path: &Path, root: RootKey) -> Result<Db> {
        let existing = match std::fs::metadata(path) {
            Ok(m) => m.len() > 0,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(e.into()),
        };
        if existing {
            // Dry run through an in-memory overlay: nothing reaches the file unless the key is right.
            let file = std::fs::File::open(path)?;
            let probe = RedbKv::new(self.redb_builder().create_with_backend(overlay::OverlayBackend::new(file)?)?);
            load_redb_meta(&probe, &root)?;
        }
        let redb = RedbKv::new(self.redb_builder().create(path)?);
        self.finish_open_redb(redb, root, Some(path.to_path_buf()))
    }

    /// Opens (or creates) a database on a custom redb storage backend, e.g. an in-memory one or
    /// a fault-injecting one for crash tests.
    ///
    /// A wrong root key is still `Error::WrongKey`, but unlike [`DbBuilder::open`] this path does
    /// not first check the key on a read-only overlay, so redb's own open-time writes (recovery
    /// flags) may already have reached the backend.
    ///
    /// Hidden: the test and fault-injection hook. It takes a redb type, and the storage engine is
    /// not part of silograph's API.
    #[doc(hidden)]
    pub fn open_with_backend(self, backend: impl redb::StorageBackend, root: RootKey) -> Result<Db> {
        check_name("actor", &self.actor, MAX_NAME_LEN)?;
        contain("file", &[], || {
            let redb = RedbKv::new(self.redb_builder().create_with_backend(backend)?);
            self.finish_open_redb(redb, root, None)
        })
    }

    /// Opens (or creates) a store in a PostgreSQL database (feature `postgres`): `url` is a libpq
    /// connection string (`"host=… user=… dbname=…"`) or URI. Many processes may open the same
    /// database at once, each with its own page cache; see the README's "PostgreSQL" section for
    /// the schema, the isolation level and the deployment picture.
    ///
    /// The schema is created if missing, and its version checked (another version:
    /// `UnsupportedFormat`). A wrong root key is `Error::WrongKey`, detected before the store
    /// writes anything. An unreachable server is `Error::Storage` (operation `"connect"`).
    #[cfg(feature = "postgres")]
    #[cfg_attr(feature = "tracing", tracing::instrument(name = "open_postgres", level = "debug", skip_all))]
    pub fn open_postgres(self, url: &str, root: RootKey) -> Result<Db> {
        check_name("actor", &self.actor, MAX_NAME_LEN)?;
        let kv = Arc::new(pg::PgKv::open(url, self.pg_max_connections)?);
        // Several instances may create a new store at once: the first commit of `meta` wins, the
        // others conflict on its rows (REPEATABLE READ) and read the winner's.
        let mut tries = 0;
        let meta = loop {
            if kv.snapshot()?.get(META, HEADER_KEY)?.is_some() {
                break load_meta(&*kv, &root)?;
            }
            let wtx = kv.begin_write()?;
            if wtx.get(META, HEADER_KEY)?.is_some() {
                continue;
            }
            match init_meta(wtx, &root) {
                Err(Error::Storage(e)) if e.reason() == crate::error::StorageReason::Conflict && tries < 3 => {
                    tries += 1
                }
                other => break other?,
            }
        };
        self.finish_open(kv, None, root, meta, None)
    }

    #[cfg_attr(feature = "tracing", tracing::instrument(name = "finish_open", level = "debug", skip_all))]
    fn finish_open_redb(self, redb: RedbKv, root: RootKey, path: Option<std::path::PathBuf>) -> Result<Db> {
        let meta = match load_redb_meta(&redb, &root)? {
            Some(m) => m,
            None => init_meta(redb.begin_create()?, &root)?,
        };
        let redb = Arc::new(redb);
        self.finish_open(redb.clone(), Some(redb), root, meta, path)
    }

    /// The `Db` over an opened backend whose `meta` has been checked (`file`: the redb handle,
    /// when the backend is redb).
    fn finish_open(
        self,
        kv: Arc<dyn Kv>,
        file: Option<Arc<RedbKv>>,
        root: RootKey,
        meta: Meta,
        path: Option<std::path::PathBuf>,
    ) -> Result<Db> {
        let anchor = self.anchor.clone();
        let db = Db {
            inner: Arc::new(DbInner {
                kv,
                file,
                db_id: meta.db_id,
                root: std::sync::RwLock::new(RootState {
                    keys: RootKeys::derive(&root, &meta.db_id),
                    gen: meta.root_gen,
                    secrets: Arc::new(meta.secrets),
                    prev: Vec::new(),
                }),
                path,
                rotate_after_seals: self.rotate_after_seals,
                rekey_batch: self.rekey_batch,
                actor: self.actor,
                custody: self.custody,
                page_cache: self.page_cache,
                unchecked_state: self.unchecked_state,
                shared: Mutex::new(HashMap::new()),
                group: commit::GroupCommit::default(),
            }),
        };
        // The registry must match the database root, and the root must not be older than the
        // host's anchor.
        let rec = root::check(&db.inner, &*db.inner.kv.snapshot()?)?;
        if let Some(a) = anchor {
            a.check(&db.inner, &rec)?;
        }
        Ok(db)
    }
}

struct Meta {
    db_id: [u8; 16],
    root_gen: u32,
    secrets: DbSecrets,
}

/// The root generation a header (from [`header_bytes`]) names.
fn header_root_gen(header: &[u8]) -> Option<u32> {
    header.get(30..34).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes)
}

fn header_bytes(db_id: &[u8; 16], root_gen: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(34);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    h.extend_from_slice(db_id);
    h.extend_from_slice(&root_gen.to_le_bytes());
    h
}

/// Reads and checks a redb file's `meta`: `None` for a file with no tables yet (new, or crashed
/// while being created), `WrongKey` if the root key does not open the root check.
fn load_redb_meta(redb: &RedbKv, root: &RootKey) -> Result<Option<Meta>> {
    match redb.layout()? {
        Layout::Empty => Ok(None),
        Layout::Foreign => Err(Error::UnsupportedFormat("not a silograph database (no meta table)".into())),
        Layout::Silograph => load_meta(redb, root).map(Some),
    }
}

/// Reads and checks `meta`: `WrongKey` if the root key does not open the root check.
fn load_meta(kv: &dyn Kv, root: &RootKey) -> Result<Meta> {
    let table = kv.snapshot()?;
    let header = table
        .get(META, HEADER_KEY)?
        .ok_or_else(|| Error::UnsupportedFormat("not a silograph database (no header)".into()))?;
    if header.len() != 34 || &header[..10] != MAGIC {
        return Err(Error::UnsupportedFormat("not a silograph database (bad header)".into()));
    }
    let version = u32::from_le_bytes([header[10], header[11], header[12], header[13]]);
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedFormat(format!(
            "file format version {version}, this build reads {FORMAT_VERSION}"
        )));
    }
    let mut db_id = [0u8; 16];
    db_id.copy_from_slice(&header[14..30]);
    let root_gen = header_root_gen(&header).ok_or_else(|| Error::corrupt(META.name, HEADER_KEY))?;
    let keys = RootKeys::derive(root, &db_id);
    let check = |key: &[u8]| -> Result<Zeroizing<Vec<u8>>> {
        let sealed = table.get(META, key)?.ok_or(Error::WrongKey)?;
        let aead = if key == ROOT_CHECK_KEY { &keys.check } else { &keys.kek };
        let binding = Binding { db_id: &db_id, table: META.id, key };
        envelope::open(aead, &binding, META.name, &sealed).map(|b| Zeroizing::new(b.as_slice().to_vec())).map_err(|e| {
            match e {
                Error::Corrupt { .. } => Error::WrongKey,
                other => other,
            }
        })
    };
    if check(ROOT_CHECK_KEY)?.as_slice() != ROOT_CHECK_VALUE {
        return Err(Error::WrongKey);
    }
    // The header's root generation is plaintext: it must equal the authenticated epoch the
    // root check was sealed under, or the header was edited.
    let sealed_check = table.get(META, ROOT_CHECK_KEY)?.ok_or(Error::WrongKey)?;
    if envelope::peek_epoch(&sealed_check, META.name, ROOT_CHECK_KEY)? != root_gen {
        return Err(Error::corrupt(META.name, HEADER_KEY));
    }
    let secret = Secret::from_slice(&check(DB_SECRET_KEY)?).map_err(|_| Error::corrupt(META.name, DB_SECRET_KEY))?;
    let mut priors = Vec::new();
    if table.get(META, DB_SECRET_PRIOR_KEY)?.is_some() {
        let bytes = check(DB_SECRET_PRIOR_KEY).map_err(|e| match e {
            Error::WrongKey => Error::corrupt(META.name, DB_SECRET_PRIOR_KEY),
            other => other,
        })?;
        if bytes.is_empty() || bytes.len() % KEY_LEN != 0 {
            return Err(Error::corrupt(META.name, DB_SECRET_PRIOR_KEY));
        }
        for chunk in bytes.chunks(KEY_LEN) {
            priors.push(Secret::from_slice(chunk).map_err(|_| Error::corrupt(META.name, DB_SECRET_PRIOR_KEY))?);
        }
    }
    Ok(Meta { db_id, root_gen, secrets: DbSecrets::new(secret, priors, &db_id) })
}

/// Writes a new database's `meta` in `wtx` and commits it.
fn init_meta(mut wtx: Box<dyn KvWrite>, root: &RootKey) -> Result<Meta> {
    let mut db_id = [0u8; 16];
    crypto::fill_random(&mut db_id)?;
    let secrets = DbSecrets::new(Secret::generate()?, Vec::new(), &db_id);
    let keys = RootKeys::derive(root, &db_id);
    write_meta(&mut *wtx, &db_id, 0, &keys, &secrets)?;
    let root = root::seal(secrets.current(), &db_id, &root::empty())?;
    wtx.put(META, root::ROOT_RECORD_KEY, &root)?;
    wtx.commit()?;
    Ok(Meta { db_id, root_gen: 0, secrets })
}

/// Writes the header, the root check and the wrapped database secrets (the current one and the
/// retired ones) for root generation `gen`.
pub(crate) fn write_meta(
    wtx: &mut dyn KvWrite,
    db_id: &[u8; 16],
    gen: u32,
    keys: &RootKeys,
    secrets: &DbSecrets,
) -> Result<()> {
    wtx.put(META, HEADER_KEY, header_bytes(db_id, gen).as_slice())?;
    let seal =
        |aead, key: &[u8], value: &[u8]| envelope::seal(aead, gen, &Binding { db_id, table: META.id, key }, value);
    wtx.put(META, ROOT_CHECK_KEY, seal(&keys.check, ROOT_CHECK_KEY, ROOT_CHECK_VALUE)?.as_slice())?;
    let secret_bytes: &[u8; KEY_LEN] = secrets.current_secret().expose();
    wtx.put(META, DB_SECRET_KEY, seal(&keys.kek, DB_SECRET_KEY, secret_bytes)?.as_slice())?;
    let mut priors = Zeroizing::new(Vec::new());
    for s in secrets.prior_secrets() {
        priors.extend_from_slice(s.expose());
    }
    if !priors.is_empty() {
        wtx.put(META, DB_SECRET_PRIOR_KEY, seal(&keys.kek, DB_SECRET_PRIOR_KEY, &priors)?.as_slice())?;
    }
    Ok(())
}

/// An open silograph database: one file, many organizations. Cheap to clone; share it between
/// threads.
#[derive(Clone)]
pub struct Db {
    pub(crate) inner: Arc<DbInner>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

pub(crate) struct DbInner {
    /// The storage backend. Shared so that a poisoned `Db` can leak it on drop instead of running
    /// redb's drop, which panics on the locks a panicked write left poisoned.
    pub kv: Arc<dyn Kv>,
    /// The same backend as a redb file, when it is one (compaction rewrites the file).
    pub file: Option<Arc<RedbKv>>,
    pub db_id: [u8; 16],
    /// Keys derived from the root key, and its generation (the envelope epoch of `orgs` values).
    pub root: std::sync::RwLock<RootState>,
    /// The file, when opened by path (compaction rewrites it).
    pub path: Option<std::path::PathBuf>,
    /// Seals under one epoch after which a commit starts a new epoch (AES-GCM random-nonce limit).
    pub rotate_after_seals: u64,
    /// Records re-keyed per storage transaction.
    pub rekey_batch: usize,
    /// The actor recorded in audit entries when a handle names none.
    pub actor: String,
    /// Where per-org custody keys live, if the `Db` was opened with one.
    pub custody: Option<crate::custody::CustodyRef>,
    /// Benchmarks only: the state tree is neither checked nor maintained.
    pub unchecked_state: bool,
    pub page_cache: usize,
    /// Per-org state shared by all handles of one org (page cache, kind dictionary).
    pub shared: Mutex<HashMap<OrgTag, Arc<org::OrgShared>>>,
    /// Groups concurrent commits of different orgs into one storage commit.
    pub group: commit::GroupCommit,
}

impl Drop for DbInner {
    fn drop(&mut self) {
        if self.group.writable().is_err() {
            // A write panicked inside redb: its drop would panic again on poisoned locks. Leak
            // the handle (the process keeps the file open until it exits; a reopen recovers).
            std::mem::forget(self.kv.clone());
        }
    }
}

/// How many earlier root generations' keys a `Db` keeps after rotating (for snapshots begun
/// before a rotation; a snapshot older than that many rotations reads its entries as `Corrupt`).
pub(crate) const ROOT_KEYS_KEPT: usize = 8;

pub(crate) struct RootState {
    pub keys: RootKeys,
    pub gen: u32,
    /// The database secrets (wrapped under the KEK on disk): they rotate with the root key.
    pub secrets: Arc<DbSecrets>,
    /// The keys of the last few generations before, after rotations by this process (newest
    /// last): a snapshot begun before a rotation holds registry entries sealed under them.
    pub prev: Vec<(u32, RootKeys)>,
}

impl DbInner {
    pub(crate) fn root(&self) -> std::sync::RwLockReadGuard<'_, RootState> {
        self.root.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn shared_for(&self, tag: OrgTag) -> Arc<org::OrgShared> {
        let mut map = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(tag).or_insert_with(|| self.new_shared()).clone()
    }

    fn new_shared(&self) -> Arc<org::OrgShared> {
        let tree = (self.page_cache as u64 / 8).max(16 << 20);
        Arc::new(org::OrgShared::new(PageCache::new(self.page_cache), tree))
    }

    /// The shared state of the org `incarnation` names (see `OrgShared::incarnation`). State of
    /// an earlier org under the same tag (deleted by another instance, the name taken again) is
    /// replaced, not reused: its cached tree nodes and kind names are keyed by versions and ids
    /// the new org reuses.
    pub(crate) fn shared_for_org(&self, tag: OrgTag, incarnation: [u8; 32]) -> Arc<org::OrgShared> {
        let mut map = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let shared = map.entry(tag).or_insert_with(|| self.new_shared());
        if *shared.incarnation.get_or_init(|| incarnation) != incarnation {
            let fresh = self.new_shared();
            let _ = fresh.incarnation.set(incarnation);
            *shared = fresh;
        }
        shared.clone()
    }

    /// Seals an org registry entry under the KEK, bound to its key.
    pub(crate) fn seal_entry(&self, tag: OrgTag, entry: &OrgEntry) -> Result<Vec<u8>> {
        let bytes = Zeroizing::new(
            codec::encode(entry).map_err(|_| Error::invalid(InputKind::TooLarge, "org entry too large"))?.to_vec(),
        );
        let root = self.root();
        let binding = Binding { db_id: &self.db_id, table: ORGS.id, key: &tag.0 };
        envelope::seal_versioned(&root.keys.kek, root.gen, ENTRY_LAYOUT, &binding, &bytes)
    }

    /// A custody id and wrapped custody secret for a new org: empty if the `Db` has no custody.
    pub(crate) fn new_custody(&self) -> Result<(Vec<u8>, Vec<u8>)> {
        let Some(custody) = &self.custody else { return Ok((Vec::new(), Vec::new())) };
        let id = crate::CustodyKeyId::generate()?;
        let secret = Secret::generate()?;
        let wrapped = custody.0.wrap(&id, secret.expose())?;
        Ok((id.as_bytes().to_vec(), wrapped))
    }

    /// The custody secret of an org under custody (`None` for an org created without one).
    /// A destroyed custody key is `OrgNotFound`: the org was deleted.
    pub(crate) fn custody_secret(&self, entry: &OrgEntry, tag: OrgTag) -> Result<Option<Secret>> {
        if entry.custody_id.is_empty() {
            return Ok(None);
        }
        let id: [u8; 16] = entry.custody_id.as_slice().try_into().map_err(|_| Error::corrupt(ORGS.name, &tag.0))?;
        let custody = self.custody.as_ref().ok_or_else(|| {
            Error::invalid(
                InputKind::KeyKind,
                format!("org `{}` was created under key custody: open the database with its custody", entry.name),
            )
        })?;
        let plain = custody.0.unwrap(&crate::CustodyKeyId(id), &entry.custody_wrapped).map_err(|e| match e {
            Error::CustodyKeyDestroyed => Error::OrgNotFound(entry.name.clone()),
            other => other,
        })?;
        Secret::from_slice(&plain).map(Some).map_err(|_| Error::WrongKey)
    }

    /// Opens a sealed registry entry under `from`'s KEK and seals it again under `to`'s, for root
    /// generation `gen` (root rotation).
    pub(crate) fn rewrap_entry(
        &self,
        from: &RootKeys,
        to: &RootKeys,
        gen: u32,
        key: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        let binding = Binding { db_id: &self.db_id, table: ORGS.id, key };
        let layout = envelope::peek_version(sealed, ORGS.name, key)?;
        let mut plain = envelope::open(&from.kek, &binding, ORGS.name, sealed)?;
        let out = envelope::seal_versioned(&to.kek, gen, layout, &binding, plain.as_slice());
        zeroize::Zeroize::zeroize(plain.as_mut_slice());
        out
    }

    /// Opens and validates an org registry entry.
    pub(crate) fn open_entry(&self, tag: OrgTag, sealed: &[u8]) -> Result<OrgEntry> {
        let binding = Binding { db_id: &self.db_id, table: ORGS.id, key: &tag.0 };
        let layout = envelope::peek_version(sealed, ORGS.name, &tag.0)?;
        let epoch = envelope::peek_epoch(sealed, ORGS.name, &tag.0)?;
        let root = self.root();
        let keys = root.prev.iter().find(|(g, _)| *g == epoch).map_or(&root.keys, |(_, k)| k);
        let opened = envelope::open(&keys.kek, &binding, ORGS.name, sealed);
        let gen = root.gen;
        drop(root);
        let mut buf = match opened {
            Ok(b) => b,
            // Another instance rotated the root key (PostgreSQL): this one's key no longer opens
            // the database. Not a tampered entry: the database's own header says so too.
            Err(Error::Corrupt { .. }) if epoch > gen && self.stored_root_gen()? > gen => return Err(Error::WrongKey),
            Err(e) => return Err(e),
        };
        let entry = match layout {
            ENTRY_LAYOUT => codec::decode::<OrgEntry>(buf.as_slice()),
            _ => Err(codec::CodecError),
        };
        zeroize::Zeroize::zeroize(buf.as_mut_slice());
        entry.map_err(|_| Error::corrupt(ORGS.name, &tag.0))
    }

    /// The root generation the stored header names.
    fn stored_root_gen(&self) -> Result<u32> {
        let header = self.kv.snapshot()?.get(META, HEADER_KEY)?.unwrap_or_default();
        header_root_gen(&header).ok_or_else(|| Error::corrupt(META.name, HEADER_KEY))
    }

    pub(crate) fn read_entry(&self, kv: &dyn KvRead, tag: OrgTag, name: &str) -> Result<OrgEntry> {
        let sealed = kv.get(ORGS, &tag.0)?;
        self.open_entry(tag, &sealed.ok_or_else(|| Error::OrgNotFound(name.to_owned()))?)
    }

    /// The database secrets of the current root generation.
    pub(crate) fn secrets(&self) -> Arc<DbSecrets> {
        self.root().secrets.clone()
    }

    /// The tag a new org called `name` gets (or a re-keyed one moves to): its tag under the
    /// current database secret.
    pub(crate) fn new_tag(&self, name: &str) -> OrgTag {
        self.root().secrets.current().org_tag(name)
    }

    /// The tag of the org called `name` as `kv` holds it (deleted or not), and its entry:
    /// an org keeps the tag of the database secret it was created or last re-keyed under, so
    /// every generation's tag is looked up (in one round trip), the current one first.
    /// `None` if no registry row is the org's; `Corrupt` if a row at one of its tags is not.
    pub(crate) fn find_org(&self, kv: &dyn KvRead, name: &str) -> Result<Option<(OrgTag, OrgEntry)>> {
        let tags = self.secrets().tags_of(name);
        let keys: Vec<&[u8]> = tags.iter().map(|t| t.0.as_slice()).collect();
        for (tag, sealed) in tags.iter().zip(kv.get_many(ORGS, &keys)?) {
            let Some(sealed) = sealed else { continue };
            let entry = self.open_entry(*tag, &sealed)?;
            if entry.name != name {
                return Err(Error::corrupt(ORGS.name, &tag.0));
            }
            return Ok(Some((*tag, entry)));
        }
        Ok(None)
    }

    /// Whether a new org called `name` (to be tagged `tag`) cannot be created: an org of that
    /// name exists under any generation's tag (deleted or not), or another org holds `tag`.
    pub(crate) fn name_taken(&self, kv: &dyn KvRead, tag: OrgTag, name: &str) -> Result<bool> {
        Ok(kv.get(ORGS, &tag.0)?.is_some() || self.find_org(kv, name)?.is_some())
    }

    /// The tag of the org called `name` (deleted or not): `OrgNotFound` if there is none.
    pub(crate) fn tag_of(&self, kv: &dyn KvRead, name: &str) -> Result<OrgTag> {
        check_name("org name", name, MAX_NAME_LEN)?;
        match self.find_org(kv, name)? {
            Some((tag, _)) => Ok(tag),
            None => Err(Error::OrgNotFound(name.to_owned())),
        }
    }
}

impl Db {
    /// A builder with default settings.
    pub fn builder() -> DbBuilder {
        DbBuilder::default()
    }

    /// Opens (or creates) the database at `path` with default settings.
    pub fn open(path: impl AsRef<Path>, root: RootKey) -> Result<Db> {
        DbBuilder::default().open(path, root)
    }

    /// Creates an organization with a fresh random seed, wrapped under the root key.
    pub fn create_org(&self, name: &str) -> Result<Org> {
        self.create(name, None)
    }

    /// Creates an organization whose key the host supplies (bring your own key). The key is
    /// never stored; only a key-check record is.
    pub fn create_org_with_key(&self, name: &str, key: &OrgKey) -> Result<Org> {
        self.create(name, Some(key))
    }

    fn create(&self, name: &str, byok: Option<&OrgKey>) -> Result<Org> {
        self.inner.group.writable()?;
        check_name("org name", name, MAX_NAME_LEN)?;
        let inner = &self.inner;
        let tag = inner.new_tag(name);
        let (seed, structure_seed) = match byok {
            Some(_) => (Vec::new(), Vec::new()),
            None => (Secret::generate()?.expose().to_vec(), Secret::generate()?.expose().to_vec()),
        };
        let (custody_id, custody_wrapped) = match byok {
            Some(_) => (Vec::new(), Vec::new()),
            None => inner.new_custody()?,
        };
        let key_check = match byok {
            Some(k) => byok_key_check(inner, tag, k)?,
            None => Vec::new(),
        };
        let entry = OrgEntry {
            name: name.to_owned(),
            byok: byok.is_some(),
            key_check,
            current_epoch: 0,
            epochs: vec![codec::EpochEntry { epoch: 0, seed, seal_count: 0 }],
            structure_seed,
            next_node: 1,
            next_edge: 1,
            next_kind: 1,
            node_count: 0,
            edge_count: 0,
            created_at: now_ms(),
            state: 0,
            rotation: None,
            audit_seq: 0,
            audit_head: Vec::new(),
            commit_seq: 0,
            index_runs: Vec::new(),
            state_root: state::Roots::default().encode(),
            custody_id,
            custody_wrapped,
        };
        let mut entry = entry;
        let org = Org::from_entry(self.inner.clone(), tag, &entry, byok, &Compartment::FULL_SCOPE)?;
        self.insert_org(&org, tag, &mut entry)?;
        Ok(org)
    }

    /// Writes a new org's registry entry and first audit entry, unless the name is taken
    /// (`OrgExists`). On a shared store two instances may create orgs at once: the loser of a
    /// race for the same name fails at commit (a unique violation or a serialization failure on
    /// the registry row), and so may two creations of different names (both rewrite the database
    /// root's membership). Such a commit is retried: the name is then found taken, or the
    /// creation goes through.
    fn insert_org(&self, org: &Org, tag: OrgTag, entry: &mut OrgEntry) -> Result<()> {
        const ATTEMPTS: u32 = 16;
        let inner = &self.inner;
        let start = (entry.commit_seq, entry.audit_seq, entry.audit_head.clone());
        for attempt in 1..=ATTEMPTS {
            (entry.commit_seq, entry.audit_seq, entry.audit_head) = (start.0, start.1, start.2.clone());
            let mut wtx = inner.begin_write()?;
            if inner.name_taken(&*wtx, tag, &entry.name)? {
                return Err(Error::OrgExists(entry.name.clone()));
            }
            audit::append(&mut *wtx, &org.inner, entry, &inner.actor, "create-org", &[], now_ms())?;
            wtx.put(ORGS, &tag.0, inner.seal_entry(tag, entry)?.as_slice())?;
            match wtx.commit() {
                Err(Error::Storage(e)) if e.reason() == crate::error::StorageReason::Conflict && attempt < ATTEMPTS => {
                    continue
                }
                other => return other,
            }
        }
        Err(Error::Internal("org creation retries exhausted".into()))
    }

    /// A handle for an existing organization with a managed seed.
    ///
    /// `Error::OrgNotFound` if there is none; `Error::InvalidInput` for a BYOK org (use
    /// [`Db::org_with_key`]).
    pub fn org(&self, name: &str) -> Result<Org> {
        self.open_org(name, None, &Compartment::FULL_SCOPE)
    }

    /// A handle for a BYOK organization; `Error::WrongKey` if `key` is not its key.
    pub fn org_with_key(&self, name: &str, key: &OrgKey) -> Result<Org> {
        self.open_org(name, Some(key), &Compartment::FULL_SCOPE)
    }

    /// A handle restricted to `scope`: it derives no key for the compartments outside it, so
    /// reading them is `Error::Denied`. `Core` is always needed and must be in the scope.
    pub fn org_scoped(&self, name: &str, key: Option<&OrgKey>, scope: &[Compartment]) -> Result<Org> {
        if !scope.contains(&Compartment::Core) {
            return Err(Error::invalid(InputKind::InvalidScope, "a scope must include the Core compartment"));
        }
        self.open_org(name, key, scope)
    }

    pub(crate) fn open_org(&self, name: &str, key: Option<&OrgKey>, scope: &[Compartment]) -> Result<Org> {
        check_name("org name", name, MAX_NAME_LEN)?;
        let snap = self.inner.kv.snapshot()?;
        let (tag, entry) = self.inner.find_org(&*snap, name)?.ok_or_else(|| Error::OrgNotFound(name.to_owned()))?;
        if entry.state != 0 {
            return Err(Error::OrgNotFound(name.to_owned()));
        }
        match (entry.byok, key) {
            (true, None) => {
                return Err(Error::invalid(
                    InputKind::KeyKind,
                    format!("org `{name}` uses a host-supplied key: open it with org_with_key"),
                ))
            }
            (false, Some(_)) => {
                return Err(Error::invalid(
                    InputKind::KeyKind,
                    format!("org `{name}` has a managed key: open it with org"),
                ))
            }
            (true, Some(k)) => {
                let binding = Binding { db_id: &self.inner.db_id, table: ORGS.id, key: &tag.0 };
                let ok = envelope::open(
                    &crypto::byok_check_key(k, &self.inner.db_id, tag),
                    &binding,
                    ORGS.name,
                    &entry.key_check,
                )
                .map(|b| b.as_slice() == BYOK_CHECK_VALUE)
                .unwrap_or(false);
                if !ok {
                    return Err(Error::WrongKey);
                }
            }
            (false, None) => {}
        }
        drop(snap);
        let org = Org::from_entry(self.inner.clone(), tag, &entry, key, scope)?;
        if scope.len() < Compartment::FULL_SCOPE.len() {
            let scope_count = [("compartments", scope.len() as u64)];
            audit::append_admin_for(&org, tag, "scoped-open", &scope_count, &self.inner.actor)?;
        }
        Ok(org)
    }

    /// The names of all organizations, sorted.
    pub fn list_orgs(&self) -> Result<Vec<String>> {
        let rows = self.inner.kv.snapshot()?.scan_prefix(ORGS, &[])?;
        let mut names = Vec::with_capacity(rows.len());
        for (k, v) in rows {
            let tag = OrgTag(k.as_slice().try_into().map_err(|_| Error::corrupt(ORGS.name, &k))?);
            let entry = self.inner.open_entry(tag, &v)?;
            if entry.state == 0 {
                names.push(entry.name.clone());
            }
        }
        names.sort();
        Ok(names)
    }
}

/// The key-check record of a BYOK org: a known value sealed under a key derived from its key.
pub(crate) fn byok_key_check(inner: &DbInner, tag: OrgTag, key: &OrgKey) -> Result<Vec<u8>> {
    envelope::seal(
        &crypto::byok_check_key(key, &inner.db_id, tag),
        0,
        &Binding { db_id: &inner.db_id, table: ORGS.id, key: &tag.0 },
        BYOK_CHECK_VALUE,
    )
}

/// Runs storage calls, turning a panic inside redb (it panics on some corrupt files instead of
/// returning an error) into `Corrupt` for `table` / `key`: never a panic in the host.
pub(crate) fn contain<T>(table: &'static str, key: &[u8], f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| Err(Error::corrupt(table, key)))
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::kv::{BackendKind, Kv, KvSnapshot, KvWrite};
    use super::*;

    /// A redb store that says it is another backend.
    #[derive(Debug)]
    struct OtherBackend(RedbKv);

    impl Kv for OtherBackend {
        fn snapshot(&self) -> Result<Box<dyn KvSnapshot>> {
            self.0.snapshot()
        }
        fn begin_write(&self) -> Result<Box<dyn KvWrite>> {
            self.0.begin_write()
        }
        fn kind(&self) -> BackendKind {
            BackendKind::Postgres
        }
    }

    fn other_backend_db(root: RootKey) -> Db {
        let redb = redb::Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).expect("db");
        let kv = OtherBackend(RedbKv::new(redb));
        let meta = init_meta(kv.0.begin_create().expect("create"), &root).expect("init");
        DbBuilder::default().finish_open(Arc::new(kv), None, root, meta, None).expect("open")
    }

    #[test]
    fn the_engine_runs_on_any_backend_of_the_storage_interface() {
        let db = other_backend_db(RootKey::from_bytes([3; 32]));
        let org = db.create_org("acme").expect("create org");
        let mut w = org.write().expect("write");
        let a = w.upsert_node(NodeInput::new("person").source("crm", "a")).expect("node");
        let b = w.upsert_node(NodeInput::new("person").source("crm", "b")).expect("node");
        w.add_edge(EdgeInput::new(a, b, "knows")).expect("edge");
        w.commit().expect("commit");
        assert_eq!(org.counts().expect("counts"), (2, 1));
        assert_eq!(db.list_orgs().expect("list"), vec!["acme".to_owned()]);
        assert!(db.verify().expect("verify").is_ok());
    }

    #[test]
    fn compact_on_a_backend_other_than_redb_is_unsupported() {
        let db = other_backend_db(RootKey::from_bytes([4; 32]));
        match db.compact() {
            Err(Error::Unsupported { operation: "compact", backend: "PostgreSQL" }) => {}
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }
}
