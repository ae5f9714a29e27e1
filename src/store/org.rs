//! Organization handles: the keys of one org and its shared page cache and kind dictionary.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use super::cache::PageCache;
use super::read::ReadTxn;
use super::write::WriteTxn;
use super::DbInner;
use crate::codec::OrgEntry;
use crate::crypto::{self, EpochKeys, OrgKey, Secret, StructureKeys};
use crate::error::{Error, Result};
use crate::types::{Compartment, OrgTag};

/// State shared by every handle of one organization in one `Db`.
#[derive(Debug)]
pub(crate) struct OrgShared {
    pub cache: PageCache,
    /// One writer of this org at a time (write transactions, and admin operations that change
    /// its registry entry).
    pub writer: super::commit::WriterLock,
    /// Committed kind names, both ways. Only committed entries go in (kind ids are never reused).
    pub kinds: RwLock<KindDict>,
    /// State tree nodes, by (kind, level, index, version): a version names one content, so
    /// this cache is never invalidated (see `store::state`).
    pub tree: quick_cache::sync::Cache<super::state::NodeKey, Arc<crate::codec::TreeNode>, TreeWeight>,
    /// Which org of this tag the state is of (a digest of its structure fingerprint and creation
    /// time), set by the first handle: another instance may delete the org and create a new one
    /// under the same name, whose versions and kind ids start over.
    pub incarnation: std::sync::OnceLock<[u8; 32]>,
    /// The registry entry a snapshot of this org last opened, as its sealed bytes, and the facts
    /// snapshots take from it: a snapshot that reads the very same bytes takes them without
    /// decrypting the entry again (the same sealed value always opens to the same entry).
    pub facts: RwLock<Option<(Vec<u8>, super::read::Facts)>>,
}

/// Weighs a cached tree node by its entries' bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TreeWeight;

impl quick_cache::Weighter<super::state::NodeKey, Arc<crate::codec::TreeNode>> for TreeWeight {
    fn weight(&self, _key: &super::state::NodeKey, val: &Arc<crate::codec::TreeNode>) -> u64 {
        64 + 16 * val.entries.len() as u64
    }
}

#[derive(Debug, Default)]
pub(crate) struct KindDict {
    pub by_name: HashMap<String, u32>,
    pub by_id: HashMap<u32, String>,
}

impl OrgShared {
    /// `tree_bytes` bounds the state tree cache (kept even when the page cache is off: every
    /// page read checks its version through it).
    pub(crate) fn new(cache: PageCache, tree_bytes: u64) -> Self {
        OrgShared {
            cache,
            writer: Default::default(),
            kinds: RwLock::new(KindDict::default()),
            tree: quick_cache::sync::Cache::with_weighter(1024, tree_bytes, TreeWeight),
            incarnation: std::sync::OnceLock::new(),
            facts: RwLock::new(None),
        }
    }

    pub(crate) fn kind_id(&self, name: &str) -> Option<u32> {
        self.kinds.read().unwrap_or_else(|p| p.into_inner()).by_name.get(name).copied()
    }

    pub(crate) fn kind_name(&self, id: u32) -> Option<String> {
        self.kinds.read().unwrap_or_else(|p| p.into_inner()).by_id.get(&id).cloned()
    }

    pub(crate) fn remember_kind(&self, id: u32, name: &str) {
        let mut d = self.kinds.write().unwrap_or_else(|p| p.into_inner());
        d.by_name.insert(name.to_owned(), id);
        d.by_id.insert(id, name.to_owned());
    }
}

/// A handle for one organization: holds that org's keys (only those of its scope). Cheap to
/// clone; share it between threads.
///
/// ```
/// # fn main() -> silograph::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("ctx.silo");
/// use silograph::{Db, Direction, EdgeInput, NodeInput, RootKey};
/// let db = Db::open(&path, RootKey::from_bytes([1; 32]))?;
/// let acme = db.create_org("acme")?;
/// let mut w = acme.write()?;
/// let alice = w.upsert_node(NodeInput::new("person").source("gmail", "alice@acme.com").prop("title", "CTO"))?;
/// let deal = w.upsert_node(NodeInput::new("deal").source("salesforce", "006A0"))?;
/// w.add_edge(EdgeInput::new(alice, deal, "owns").valid_from(1_700_000_000_000))?;
/// w.commit()?;
///
/// let r = acme.read()?;
/// assert_eq!(r.lookup("gmail", "alice@acme.com")?, Some(alice));
/// let out: Vec<_> = r.neighbors(alice, Direction::Out)?.collect::<Result<_, _>>()?;
/// assert_eq!(out[0].node, deal);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Org {
    pub(crate) inner: Arc<OrgInner>,
    pub(crate) actor: Option<Arc<str>>,
}

pub(crate) struct OrgInner {
    pub db: Arc<DbInner>,
    pub name: String,
    pub tag: OrgTag,
    pub structure: StructureKeys,
    /// Data keys by epoch. Grows when a rotation adds an epoch (see [`OrgInner::refresh_keys`]).
    pub epochs: RwLock<EpochSet>,
    /// BYOK orgs: the chain keys of this handle's scope, from which the keys of epochs learned
    /// later derive (the handle never keeps the host key itself).
    pub byok: Option<crypto::ByokChain>,
    /// Orgs under key custody: the custody secret every seed is mixed with.
    pub custody: Option<Secret>,
    /// A keyed fingerprint of the stored structure seed this handle's keys derive from: a
    /// registry entry with another one was re-keyed (`Db::rekey_org`) after the handle opened.
    pub structure_fp: [u8; 32],
    pub scope: Vec<Compartment>,
    pub shared: Arc<OrgShared>,
}

/// The data keys a handle holds, by epoch, and the epoch new seals use.
#[derive(Debug, Default)]
pub(crate) struct EpochSet {
    pub current: u32,
    pub keys: BTreeMap<u32, Arc<EpochKeys>>,
}

impl OrgInner {
    /// Derives the keys of every epoch of `entry` this handle does not hold yet.
    pub(crate) fn learn_epochs(&self, entry: &OrgEntry) -> Result<()> {
        if structure_fingerprint(&self.structure, entry) != self.structure_fp {
            return Err(Error::invalid(
                crate::error::InputKind::WrongState,
                format!("org `{}` was re-keyed after this handle was opened: open a new handle", self.name),
            ));
        }
        let mut set = self.epochs.write().unwrap_or_else(|p| p.into_inner());
        for e in &entry.epochs {
            if set.keys.contains_key(&e.epoch) {
                continue;
            }
            if let Some(chain) = &self.byok {
                set.keys.insert(e.epoch, chain.epoch_keys(&self.db.db_id, self.tag, e.epoch));
                continue;
            }
            let seed = match &self.custody {
                Some(c) => crypto::custody_seed(c, &self.db.db_id, self.tag, b"epoch", &e.seed),
                None => {
                    Secret::from_slice(&e.seed).map_err(|_| Error::corrupt(super::tables::ORGS.name, &self.tag.0))?
                }
            };
            let keys = crypto::derive_epoch_keys(&seed, &self.db.db_id, self.tag, e.epoch, &self.scope);
            set.keys.insert(e.epoch, Arc::new(keys));
        }
        set.current = entry.current_epoch;
        Ok(())
    }

    /// Reloads the org's registry entry and derives keys for epochs added since (a rotation ran).
    pub(crate) fn refresh_keys(&self) -> Result<()> {
        let entry = self.db.read_entry(&*self.db.kv.snapshot()?, self.tag, &self.name)?;
        self.learn_epochs(&entry)
    }

    /// The keys of `epoch`, refreshing once from the registry if this handle has not seen it.
    pub(crate) fn epoch_keys(&self, epoch: u32) -> Result<Option<Arc<EpochKeys>>> {
        let found = self.epochs.read().unwrap_or_else(|p| p.into_inner()).keys.get(&epoch).cloned();
        if found.is_some() {
            return Ok(found);
        }
        self.refresh_keys()?;
        Ok(self.epochs.read().unwrap_or_else(|p| p.into_inner()).keys.get(&epoch).cloned())
    }

    /// The epoch new seals use.
    pub(crate) fn current_epoch(&self) -> u32 {
        self.epochs.read().unwrap_or_else(|p| p.into_inner()).current
    }
}

/// A fingerprint of `entry`'s stored structure seed under `structure`'s index key.
fn structure_fingerprint(structure: &StructureKeys, entry: &OrgEntry) -> [u8; 32] {
    structure.index.mac(&[b"silograph/1/structure-fingerprint", &entry.structure_seed])
}

impl std::fmt::Debug for Org {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Org").field("name", &self.inner.name).field("scope", &self.inner.scope).finish_non_exhaustive()
    }
}

impl Org {
    pub(crate) fn from_entry(
        db: Arc<DbInner>,
        tag: OrgTag,
        entry: &OrgEntry,
        byok: Option<&OrgKey>,
        scope: &[Compartment],
    ) -> Result<Org> {
        let custody = match byok {
            Some(_) => None,
            None => db.custody_secret(entry, tag)?,
        };
        let structure_seed = match (byok, &custody) {
            (Some(k), _) => crypto::byok_seed(k),
            (None, Some(c)) => crypto::custody_seed(c, &db.db_id, tag, b"structure", &entry.structure_seed),
            (None, None) => Secret::from_slice(&entry.structure_seed)
                .map_err(|_| Error::corrupt(super::tables::ORGS.name, &tag.0))?,
        };
        let structure = crypto::derive_structure_keys(&structure_seed, &db.db_id, tag);
        let mut scope = scope.to_vec();
        scope.sort();
        scope.dedup();
        let byok = byok.map(|k| crypto::ByokChain::derive(k, &db.db_id, tag, &scope));
        let structure_fp = structure_fingerprint(&structure, entry);
        let incarnation: [u8; 32] = {
            use sha2::Digest;
            sha2::Sha256::new()
                .chain_update(structure_fp)
                .chain_update(entry.created_at.to_le_bytes())
                .finalize()
                .into()
        };
        let shared = db.shared_for_org(tag, incarnation);
        let inner = OrgInner {
            structure_fp,
            db,
            name: entry.name.clone(),
            tag,
            structure,
            epochs: RwLock::new(EpochSet::default()),
            byok,
            custody,
            scope,
            shared,
        };
        inner.learn_epochs(entry)?;
        Ok(Org { inner: Arc::new(inner), actor: None })
    }

    /// A handle that records `actor` in the audit entries of its writes (the default is the
    /// `Db`'s actor). `InvalidInput` for an empty actor.
    pub fn as_actor(&self, actor: &str) -> Result<Org> {
        super::check_name("actor", actor, super::MAX_NAME_LEN)?;
        Ok(Org { inner: self.inner.clone(), actor: Some(Arc::from(actor)) })
    }

    /// The actor this handle's audit entries name.
    pub fn actor(&self) -> &str {
        self.actor.as_deref().unwrap_or(&self.inner.db.actor)
    }

    /// The organization's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The compartments this handle holds keys for.
    pub fn scope(&self) -> &[Compartment] {
        &self.inner.scope
    }

    /// Whether this handle holds a key for `compartment` (in any epoch). A scoped handle derives
    /// no key outside its scope, so this is a statement about the key set, not a policy flag.
    pub fn holds_key_for(&self, compartment: Compartment) -> bool {
        let set = self.inner.epochs.read().unwrap_or_else(|p| p.into_inner());
        set.keys.values().any(|e| e.keys[compartment.index() as usize].is_some())
    }

    /// Begins a write transaction (dropping it without [`WriteTxn::commit`] aborts). Writers of
    /// one org take turns: this waits while another transaction of the org is open. Writers of
    /// different orgs run in parallel, and their commits share one durable storage commit.
    pub fn write(&self) -> Result<WriteTxn> {
        WriteTxn::begin(self.clone())
    }

    /// Begins a read snapshot (MVCC: later commits are not visible to it).
    pub fn read(&self) -> Result<ReadTxn> {
        ReadTxn::begin(self.clone())
    }

    /// Node and edge counts as of now (edges include retracted ones).
    pub fn counts(&self) -> Result<(u64, u64)> {
        let e = self.inner.db.read_entry(&*self.inner.db.kv.snapshot()?, self.inner.tag, &self.inner.name)?;
        Ok((e.node_count, e.edge_count))
    }
}
