//! Internals exposed for fuzz targets and hardening tests only (feature `fuzzing`).
//!
//! Nothing here is part of the public API: it exists so that `fuzz/` and the hardening tests
//! can reach the envelope and the record decoders through the same code paths the store uses,
//! without making those paths public.

use crate::codec::{self, AdjPage};
use crate::crypto::{self, envelope, AeadKey, Binding, BlindKey, MacKey, Secret};
use crate::error::{Error, Result};
use crate::store::tables::{blind_kind, record_key, ADJ, EDGES, INDEX, NODES, ORGS, PROPS};
use crate::store::{Db, Org};
use crate::types::{Compartment, OrgTag};

pub use redb;

// The record types and the codec entry points the `record_decode` target builds inputs with.
pub use crate::codec::{
    encode, AdjEntry, BucketPage, EdgePage, EdgeRecord, EpochEntry, NodePage, NodeRecord, OrgEntry, PropMap,
    StoredValue, INLINE_MAX, NODES_PER_PAGE, PAGE_CAPACITY,
};

/// An AES-256-GCM envelope key built from 32 raw bytes.
#[derive(Debug)]
pub struct EnvelopeKey(AeadKey);

impl EnvelopeKey {
    /// A key from raw bytes (HKDF-expanded first, as every real key is).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        EnvelopeKey(AeadKey::new(&crypto::derive(&bytes, b"fuzz", &[b"envelope"])))
    }

    /// Seals `plaintext` with a fresh random nonce, exactly as the store does.
    pub fn seal(&self, epoch: u32, db_id: &[u8; 16], table: u8, key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        envelope::seal(&self.0, epoch, &Binding { db_id, table, key }, plaintext)
    }

    /// Opens a sealed value bound to `(db_id, table, key)`; returns the plaintext.
    pub fn open(&self, db_id: &[u8; 16], table: u8, key: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        envelope::open(&self.0, &Binding { db_id, table, key }, "fuzz", sealed).map(|b| b.as_slice().to_vec())
    }
}

/// The record types a sealed value can hold, for the `record_decode` target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A `NodePage` (page 0: ids from 1) in `nodes`.
    Node,
    /// An `EdgePage` (page 0) in `edges`.
    Edge,
    /// A `BucketPage` (bucket 0) in `index`.
    Bucket,
    /// An `AdjPage` in `adj`.
    AdjPage,
    /// A `PropMap` in `props` (Raw compartment).
    PropMap,
    /// An `OrgEntry` in `orgs` (sealed under the KEK).
    OrgEntry,
}

/// A record decoded through the store's own read path.
#[derive(Debug)]
pub enum Decoded {
    /// A node page.
    Node(NodePage),
    /// An edge page.
    Edge(EdgePage),
    /// An index bucket page.
    Bucket(BucketPage),
    /// An adjacency page: its page count and entries.
    AdjPage(u32, Vec<AdjEntry>),
    /// A property map.
    PropMap(PropMap),
    /// An org registry entry that also yielded an org handle.
    OrgEntry(Box<OrgEntry>),
}

/// One in-memory database with one org, whose keys seal and open records exactly as the store
/// does (same storage keys, same AAD, same decoders).
#[derive(Debug)]
pub struct RecordHarness {
    db: Db,
    org: Org,
}

impl RecordHarness {
    /// An in-memory database (fixed root key) with one org called `fuzz`.
    pub fn new() -> Result<Self> {
        let backend = redb::backends::InMemoryBackend::new();
        let db = Db::builder().cache_size(0).open_with_backend(backend, crate::RootKey::from_bytes([0x5a; 32]))?;
        let org = db.create_org("fuzz")?;
        Ok(RecordHarness { db, org })
    }

    fn tag(&self) -> OrgTag {
        self.org.inner.tag
    }

    fn storage_key(&self, kind: RecordKind) -> Vec<u8> {
        let o = &self.org.inner;
        match kind {
            RecordKind::Node => o.node_page_key(0).to_vec(),
            RecordKind::Edge => o.edge_page_key(0).to_vec(),
            RecordKind::Bucket => o.bucket_key(0, 0).to_vec(),
            RecordKind::AdjPage => o.adj_key(1, 0, 0).to_vec(),
            RecordKind::PropMap => {
                let opaque = o.structure.blind.blind(blind_kind::NODE_PROPS, Compartment::Raw.index(), 0, 1);
                record_key(o.tag, &opaque).to_vec()
            }
            RecordKind::OrgEntry => self.tag().0.to_vec(),
        }
    }

    /// Seals `plaintext` (an archive, valid or not) with the right key for `kind`, bound to the
    /// record's real storage key (packed — compressed and padded — as the store does).
    pub fn seal(&self, kind: RecordKind, plaintext: &[u8]) -> Result<Vec<u8>> {
        let o = &self.org.inner;
        let key = self.storage_key(kind);
        match kind {
            RecordKind::Node => o.seal(NODES, &key, Compartment::Core, 1, plaintext),
            RecordKind::Edge => o.seal(EDGES, &key, Compartment::Core, 1, plaintext),
            RecordKind::Bucket => o.seal(INDEX, &key, Compartment::Core, 1, plaintext),
            RecordKind::AdjPage => o.seal(ADJ, &key, Compartment::Core, 1, plaintext),
            RecordKind::PropMap => o.seal(PROPS, &key, Compartment::Raw, 1, plaintext),
            RecordKind::OrgEntry => {
                let db = &self.db.inner;
                let root = db.root();
                envelope::seal(
                    &root.keys.kek,
                    root.gen,
                    &Binding { db_id: &db.db_id, table: ORGS.id, key: &key },
                    plaintext,
                )
            }
        }
    }

    /// Seals `body` as it is — no packing — so a fuzzer can damage the packed layer (format
    /// byte, lengths, lz4 stream, padding) that every read unpacks.
    pub fn seal_unpacked(&self, kind: RecordKind, body: &[u8]) -> Result<Vec<u8>> {
        let o = &self.org.inner;
        let key = self.storage_key(kind);
        let (table, c) = match kind {
            RecordKind::Node => (NODES, Compartment::Core),
            RecordKind::Edge => (EDGES, Compartment::Core),
            RecordKind::Bucket => (INDEX, Compartment::Core),
            RecordKind::AdjPage => (ADJ, Compartment::Core),
            RecordKind::PropMap => (PROPS, Compartment::Raw),
            RecordKind::OrgEntry => return self.seal(kind, body),
        };
        let keys = o.epoch_keys(o.current_epoch())?.ok_or_else(|| Error::corrupt(table.name, &key))?;
        let aead = keys.keys[c.index() as usize].as_ref().ok_or(Error::Denied(c))?;
        envelope::seal_versioned(
            aead,
            o.current_epoch(),
            1,
            &Binding { db_id: &o.db.db_id, table: table.id, key: &key },
            body,
        )
    }

    /// Opens and decodes a sealed value through the store's read path for `kind`. An org entry
    /// is also turned into an org handle (which checks its seeds).
    pub fn open(&self, kind: RecordKind, sealed: &[u8]) -> Result<Decoded> {
        let o = &self.org.inner;
        let key = self.storage_key(kind);
        match kind {
            RecordKind::Node => {
                let page = o.open_node_page(0, &key, sealed)?;
                // The inline adjacency entries are decoded as a reader decodes them.
                for r in &page.nodes {
                    for inline in [&r.out_adj, &r.in_adj] {
                        codec::decode_inline(inline).map_err(|_| Error::corrupt(NODES.name, &key))?;
                    }
                }
                Ok(Decoded::Node(page))
            }
            RecordKind::Edge => o.open_edge_page(0, &key, sealed).map(Decoded::Edge),
            RecordKind::Bucket => o.open_bucket(&key, sealed).map(Decoded::Bucket),
            RecordKind::AdjPage => o.open_page(&key, sealed).map(|(p, e)| Decoded::AdjPage(p, e)),
            RecordKind::PropMap => o.open_record(PROPS, &key, Compartment::Raw, sealed).map(Decoded::PropMap),
            RecordKind::OrgEntry => {
                let entry = self.db.inner.open_entry(self.tag(), sealed)?;
                Org::from_entry(self.db.inner.clone(), self.tag(), &entry, None, &Compartment::FULL_SCOPE)?;
                Ok(Decoded::OrgEntry(Box::new(entry)))
            }
        }
    }

    /// The org registry entry of this harness's org, as stored (a valid starting point).
    pub fn org_entry(&self) -> Result<OrgEntry> {
        read_org_entry(&self.org)
    }
}

/// Packs a plaintext (compression, padding) exactly as the store does before sealing.
pub fn pack(plain: &[u8]) -> Option<Vec<u8>> {
    codec::pack(plain).ok().map(|p| p.to_vec())
}

/// Encodes adjacency entries for a node record's inline lists exactly as the writer does.
pub fn encode_inline(entries: &[AdjEntry]) -> Vec<u8> {
    codec::encode_inline(entries)
}

/// Encodes adjacency entries into a page exactly as the writer does.
pub fn encode_adj_page(pages: u32, entries: &[AdjEntry]) -> AdjPage {
    codec::encode_page(pages, entries)
}

fn read_org_entry(org: &Org) -> Result<OrgEntry> {
    let inner = &org.inner;
    inner.db.read_entry(&*inner.db.kv.snapshot()?, inner.tag, &inner.name)
}

/// The seal counter of the org's current key epoch, as committed.
pub fn seal_count(org: &Org) -> Result<u64> {
    let entry = read_org_entry(org)?;
    entry
        .epochs
        .iter()
        .find(|e| e.epoch == entry.current_epoch)
        .map(|e| e.seal_count)
        .ok_or_else(|| Error::corrupt(ORGS.name, &org.inner.tag.0))
}

/// The `Debug` output of every internal key type, each built from `secret`.
pub fn internal_key_debug_strings(secret: [u8; 32]) -> Vec<String> {
    let s = Secret::from_bytes(secret);
    let aead = AeadKey::new(&s);
    let mac = MacKey::new(&s);
    let blind = BlindKey::new(&s);
    let tag = OrgTag([7; 8]);
    let structure = crypto::derive_structure_keys(&s, &[1; 16], tag);
    let epoch = crypto::derive_epoch_keys(&s, &[1; 16], tag, 0, &Compartment::FULL_SCOPE);
    vec![
        format!("{s:?}"),
        format!("{s:#?}"),
        format!("{aead:?}"),
        format!("{mac:?}"),
        format!("{blind:?}"),
        format!("{structure:?}"),
        format!("{structure:#?}"),
        format!("{epoch:?}"),
        format!("{epoch:#?}"),
    ]
}

/// Commits write transactions of different orgs as one group commit round (one storage commit),
/// returning each one's result: the crash sweep uses it to strike a group commit at every write.
pub fn commit_together(txns: Vec<crate::WriteTxn>) -> Result<Vec<Result<()>>> {
    crate::WriteTxn::commit_together(txns)
}

/// What an attacker holding the root key can do to a file: rewrite org `name`'s registry entry
/// without its custody fields (re-sealed under the KEK), so that the org opens without custody
/// and derives its keys from the stored seeds alone.
pub fn strip_custody(db: &Db, name: &str) -> Result<()> {
    let inner = &db.inner;
    let snap = inner.kv.snapshot()?;
    let tag = inner.tag_of(&*snap, name)?;
    let mut entry = inner.read_entry(&*snap, tag, name)?;
    entry.custody_id.clear();
    entry.custody_wrapped.clear();
    let sealed = inner.seal_entry(tag, &entry)?;
    // The root key also opens the database root: such an attacker keeps it consistent.
    let mut wtx = inner.begin_write()?;
    wtx.put(ORGS, &tag.0, &sealed)?;
    wtx.commit()
}

/// The compartments whose BYOK chain keys a handle holds (`None`: not a BYOK handle). A BYOK
/// handle keeps these and nothing else of the host key.
pub fn byok_chain_scope(org: &Org) -> Option<Vec<Compartment>> {
    org.inner.byok.as_ref().map(|c| c.held())
}

/// What someone holding a root key and a copy of `meta` can compute: the tags the org called
/// `name` would have under every database secret `db` knows (the current one first). An org
/// keeps the tag it was created or last re-keyed under.
pub fn org_tags(db: &Db, name: &str) -> Vec<[u8; 8]> {
    db.inner.secrets().tags_of(name).into_iter().map(|t| t.0).collect()
}
