//! Export and import of one org as a sealed, authenticated, streaming bundle.
//!
//! ```text
//! header  = "SILOBNDL" | version u8 | bundle_id [16] | len u16 | wrapped bundle key
//! chunk*  = len u32 LE | nonce ‖ AES-256-GCM(bundle key, items) ‖ tag
//!           AAD = "silograph/1/bundle" ‖ header ‖ chunk index u64 LE ‖ last u8
//! item    = type u8 | len u32 LE | payload
//! ```
//! Records travel as decrypted archives addressed by what their blind key encodes (kind, sub,
//! page, id), so the importer re-seals them under the target org's own keys and record keys.
//! A chunk is bound to its position and to whether it is the last, so a truncated, reordered
//! or spliced bundle fails; the importer writes everything in one transaction, so a failure
//! imports nothing.

use std::io::{Read, Write};

use zeroize::{Zeroize, Zeroizing};

use super::admin::ADMIN_BATCH;
use super::kv::KvWrite;
use super::org::Org;
use super::tables::{index_domain, RecordKind, Table, ADJ, AUDIT, DICT, EDGES, INDEX, NODES, ORGS, PROPS};
use super::{audit, check_name, now_ms, Db, MAX_NAME_LEN};
use crate::codec::{self, AuditRecord, EdgePage, EpochEntry, NodePage, OrgEntry};
use crate::crypto::{self, sealed, AeadKey, OrgKey, Secret, TransportKey};
use crate::error::{Error, InputKind, Result};
use crate::types::{Compartment, OrgTag};

const MAGIC: &[u8; 8] = b"SILOBNDL";
const BUNDLE_VERSION: u8 = 1;
const CHUNK_BYTES: usize = 64 * 1024;
const MAX_CHUNK: usize = 16 * 1024 * 1024;
/// Bytes before each item's payload in a chunk: kind u8, length u32.
const ITEM_HEADER: usize = 5;
const ITEM_ORG: u8 = 1;
const ITEM_RECORD: u8 = 2;
const ITEM_AUDIT: u8 = 3;

/// Tables whose records travel in a bundle (the index is rebuilt on import).
const BUNDLE_TABLES: [Table; 5] = [NODES, PROPS, EDGES, ADJ, DICT];

/// The org-level facts a bundle carries.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub(super) struct BundleOrg {
    pub(super) name: String,
    pub(super) next_node: u64,
    pub(super) next_edge: u64,
    pub(super) next_kind: u32,
    pub(super) node_count: u64,
    pub(super) edge_count: u64,
    pub(super) created_at: i64,
    /// Audit entries that follow (the source's whole chain).
    pub(super) audit_len: u64,
    /// The source chain's digest (see [`BundleReport::audit_digest`]).
    pub(super) audit_digest: Vec<u8>,
}

impl BundleOrg {
    /// The org item of `entry`, whose audit chain digests to `audit_digest`.
    pub(super) fn of(entry: &OrgEntry, audit_digest: &[u8]) -> BundleOrg {
        BundleOrg {
            name: entry.name.clone(),
            next_node: entry.next_node,
            next_edge: entry.next_edge,
            next_kind: entry.next_kind,
            node_count: entry.node_count,
            edge_count: entry.edge_count,
            created_at: entry.created_at,
            audit_len: entry.audit_seq,
            audit_digest: audit_digest.to_vec(),
        }
    }
}

/// `Corrupt` at the first bad entry unless `org`'s audit chain verifies whole: an export or a
/// re-key carries the chain on, so it must not launder a broken one.
pub(super) fn require_whole_chain(org: &Org) -> Result<()> {
    match org.audit().verify()?.first_bad {
        Some(seq) => Err(Error::Corrupt {
            table: AUDIT.name,
            key: format!("audit entry {seq}"),
            at: crate::error::CorruptAt::AuditEntry(seq),
        }),
        None => Ok(()),
    }
}

/// The digest of an audit chain as a bundle carries it: SHA-256 chained over each entry's
/// archive, starting from 32 zero bytes.
pub(super) fn chain_step(prev: &[u8; 32], entry: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"silograph/1/bundle-audit");
    h.update(prev);
    h.update(entry);
    h.finalize().into()
}

/// What an export or import moved.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BundleReport {
    /// The org's name.
    pub org: String,
    /// Records moved (audit entries included).
    pub records: u64,
    /// Audit entries moved.
    pub audit_entries: u64,
    /// Chunks written or read.
    pub chunks: u64,
    /// Bundle bytes written or read.
    pub bytes: u64,
    /// The digest of the source org's audit chain (hex): the export reports it and the import
    /// checks the bundle's chain against it. Hand it to the importing side out of band and
    /// import with [`Db::import_org_expecting`] to refuse a bundle whose history was replaced
    /// by someone holding the transport key.
    pub audit_digest: String,
}

fn bad_bundle(why: &str) -> Error {
    Error::Corrupt { table: "bundle", key: why.to_owned(), at: crate::error::CorruptAt::Bundle }
}

fn chunk_aad(header: &[u8], index: u64, last: bool) -> Vec<u8> {
    let mut a = Vec::with_capacity(18 + header.len() + 9);
    a.extend_from_slice(b"silograph/1/bundle");
    a.extend_from_slice(header);
    a.extend_from_slice(&index.to_le_bytes());
    a.push(u8::from(last));
    a
}

struct ChunkWriter<W: Write> {
    out: W,
    key: AeadKey,
    header: Vec<u8>,
    buf: Zeroizing<Vec<u8>>,
    index: u64,
    report: BundleReport,
}

impl<W: Write> ChunkWriter<W> {
    fn item(&mut self, kind: u8, payload: &[u8]) -> Result<()> {
        // The importer refuses chunks over MAX_CHUNK: never write one it would refuse.
        if ITEM_HEADER + payload.len() > MAX_CHUNK {
            return Err(Error::invalid(
                InputKind::TooLarge,
                format!("a record of {} bytes is larger than a bundle chunk may be ({MAX_CHUNK} bytes)", payload.len()),
            ));
        }
        if self.buf.len() + ITEM_HEADER + payload.len() > MAX_CHUNK {
            self.flush(false)?;
        }
        let len = u32::try_from(payload.len())
            .map_err(|_| Error::invalid(InputKind::TooLarge, "record too large for a bundle"))?;
        self.buf.push(kind);
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(payload);
        if self.buf.len() >= CHUNK_BYTES {
            self.flush(false)?;
        }
        Ok(())
    }

    fn flush(&mut self, last: bool) -> Result<()> {
        let sealed = sealed::seal(&self.key, &chunk_aad(&self.header, self.index, last), &self.buf)?;
        self.buf.zeroize();
        self.buf.clear();
        self.out.write_all(&(sealed.len() as u32).to_le_bytes())?;
        self.out.write_all(&sealed)?;
        self.index += 1;
        self.report.chunks += 1;
        self.report.bytes += 4 + sealed.len() as u64;
        Ok(())
    }
}

impl Db {
    /// Streams org `name` into `out` as a bundle sealed for `transport` (see the module docs).
    /// The org's audit chain must verify; an `export` entry is appended to it first.
    pub fn export_org(&self, name: &str, transport: &TransportKey, out: impl Write) -> Result<BundleReport> {
        self.export(self.org(name)?, transport, out)
    }

    /// Exports a BYOK org (as [`Db::export_org`]); `key` is its host key. The bundle carries the
    /// records decrypted and re-sealed for `transport`, never the host key.
    pub fn export_org_with_key(
        &self,
        name: &str,
        key: &OrgKey,
        transport: &TransportKey,
        out: impl Write,
    ) -> Result<BundleReport> {
        self.export(self.org_with_key(name, key)?, transport, out)
    }

    fn export(&self, org: Org, transport: &TransportKey, out: impl Write) -> Result<BundleReport> {
        let name = org.inner.name.clone();
        let name = name.as_str();
        require_whole_chain(&org)?;
        audit::append_admin_for(&org, org.inner.tag, "export", &[], org.actor())?;
        let oi = &org.inner;
        let mut bundle_id = [0u8; 16];
        crypto::fill_random(&mut bundle_id)?;
        let bundle_key = Secret::generate()?;
        let wrapped = sealed::seal(
            &crypto::bundle_wrap_key(transport, &bundle_id),
            &[MAGIC.as_slice(), &[BUNDLE_VERSION], &bundle_id].concat(),
            bundle_key.expose(),
        )?;
        let mut header = Vec::with_capacity(8 + 1 + 16 + 2 + wrapped.len());
        header.extend_from_slice(MAGIC);
        header.push(BUNDLE_VERSION);
        header.extend_from_slice(&bundle_id);
        header.extend_from_slice(&(wrapped.len() as u16).to_le_bytes());
        header.extend_from_slice(&wrapped);
        let mut out = out;
        out.write_all(&header)?;
        let mut w = ChunkWriter {
            out,
            key: AeadKey::new(&bundle_key),
            header: header.clone(),
            buf: Zeroizing::new(Vec::with_capacity(CHUNK_BYTES + 1024)),
            index: 0,
            report: BundleReport { org: name.to_owned(), bytes: header.len() as u64, ..Default::default() },
        };
        let snap = oi.db.kv.snapshot()?;
        let entry = oi.db.read_entry(&*snap, oi.tag, name)?;
        oi.learn_epochs(&entry)?;
        // The chain (verified above) is read and digested before anything is written, so the
        // org item can carry its digest.
        let (audit_items, digest) = audit_items(oi, &*snap, &entry)?;
        let meta = BundleOrg::of(&entry, &digest);
        w.report.audit_digest = hex::encode(digest);
        w.item(ITEM_ORG, &codec::encode(&meta).map_err(|_| Error::invalid(InputKind::TooLarge, "org too large"))?)?;
        for item in tree_items(oi, &*snap, &entry)? {
            w.item(ITEM_RECORD, &item)?;
            w.report.records += 1;
        }
        for plain in &audit_items {
            w.item(ITEM_AUDIT, plain)?;
            w.report.records += 1;
            w.report.audit_entries += 1;
        }
        w.flush(true)?;
        w.out.flush()?;
        Ok(w.report)
    }

    /// Imports a bundle made by [`Db::export_org`] for `transport`, as a new org of the same
    /// name with fresh keys. All or nothing: a wrong transport key is `WrongKey`; a truncated,
    /// reordered or tampered bundle is `Corrupt`; an existing org of that name is `OrgExists`;
    /// in every error case nothing is written.
    pub fn import_org(&self, input: impl Read, transport: &TransportKey) -> Result<BundleReport> {
        self.import_bundle(input, transport, None, None)
    }

    /// [`Db::import_org`], also refusing (`Corrupt`, nothing written) a bundle whose audit chain
    /// is not the one the source reported: `audit_digest` is the [`BundleReport::audit_digest`]
    /// of the export, handed over out of band. The transport key alone lets its holder build a
    /// bundle with an invented history; the digest from the source does not.
    pub fn import_org_expecting(
        &self,
        input: impl Read,
        transport: &TransportKey,
        audit_digest: &str,
    ) -> Result<BundleReport> {
        self.import_bundle(input, transport, Some(audit_digest), None)
    }

    /// Imports a bundle (as [`Db::import_org`]) as a BYOK org whose keys derive from the host
    /// key `key` (which need not be the exporting org's key, nor the org a BYOK one).
    pub fn import_org_with_key(
        &self,
        input: impl Read,
        transport: &TransportKey,
        key: &OrgKey,
    ) -> Result<BundleReport> {
        self.import_bundle(input, transport, None, Some(key))
    }

    fn import_bundle(
        &self,
        input: impl Read,
        transport: &TransportKey,
        expected_digest: Option<&str>,
        byok: Option<&OrgKey>,
    ) -> Result<BundleReport> {
        self.inner.group.writable()?;
        let mut input = input;
        let mut fixed = [0u8; 8 + 1 + 16 + 2];
        input.read_exact(&mut fixed).map_err(|_| bad_bundle("truncated header"))?;
        if &fixed[..8] != MAGIC {
            return Err(Error::UnsupportedFormat("not a silograph bundle".into()));
        }
        if fixed[8] != BUNDLE_VERSION {
            return Err(Error::UnsupportedFormat(format!("bundle version {}", fixed[8])));
        }
        let mut bundle_id = [0u8; 16];
        bundle_id.copy_from_slice(&fixed[9..25]);
        let wrapped_len = u16::from_le_bytes([fixed[25], fixed[26]]) as usize;
        let mut wrapped = vec![0u8; wrapped_len];
        input.read_exact(&mut wrapped).map_err(|_| bad_bundle("truncated header"))?;
        let key_bytes = Zeroizing::new(
            sealed::open(&crypto::bundle_wrap_key(transport, &bundle_id), &fixed[..25], &wrapped)
                .ok_or(Error::WrongKey)?,
        );
        let bundle_key = AeadKey::new(&Secret::from_slice(&key_bytes).map_err(|_| bad_bundle("bad key"))?);
        let header = [fixed.as_slice(), &wrapped].concat();
        let mut report = BundleReport { bytes: header.len() as u64, ..Default::default() };
        let mut import: Option<Importer> = None;
        let mut index = 0u64;
        loop {
            let mut len = [0u8; 4];
            input.read_exact(&mut len).map_err(|_| bad_bundle("truncated: no final chunk"))?;
            let len = u32::from_le_bytes(len) as usize;
            if len > MAX_CHUNK + 64 {
                return Err(bad_bundle("chunk too large"));
            }
            let mut chunk = vec![0u8; len];
            input.read_exact(&mut chunk).map_err(|_| bad_bundle("truncated chunk"))?;
            report.bytes += 4 + len as u64;
            let (plain, last) = match sealed::open(&bundle_key, &chunk_aad(&header, index, false), &chunk) {
                Some(p) => (p, false),
                None => match sealed::open(&bundle_key, &chunk_aad(&header, index, true), &chunk) {
                    Some(p) => (p, true),
                    None => return Err(bad_bundle("chunk fails authentication (tampered, reordered or spliced)")),
                },
            };
            let plain = Zeroizing::new(plain);
            report.chunks += 1;
            index += 1;
            let mut pos = 0usize;
            while pos < plain.len() {
                let head = plain.get(pos..pos + 5).ok_or_else(|| bad_bundle("bad item"))?;
                let kind = head[0];
                let n = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
                let payload = plain.get(pos + 5..pos + 5 + n).ok_or_else(|| bad_bundle("bad item"))?;
                pos += 5 + n;
                match (kind, &mut import) {
                    (ITEM_ORG, None) => {
                        let meta: BundleOrg = decode_aligned(payload)?;
                        report.org = meta.name.clone();
                        import = Some(Importer::begin(self, meta, byok)?);
                    }
                    (ITEM_RECORD, Some(imp)) => {
                        imp.record(payload)?;
                        report.records += 1;
                    }
                    (ITEM_AUDIT, Some(imp)) => {
                        imp.audit(payload)?;
                        report.records += 1;
                        report.audit_entries += 1;
                    }
                    _ => return Err(bad_bundle("unexpected item")),
                }
            }
            if last {
                break;
            }
        }
        let mut extra = [0u8; 1];
        if input.read(&mut extra)? != 0 {
            return Err(bad_bundle("data after the final chunk"));
        }
        report.audit_digest = import.ok_or_else(|| bad_bundle("no org in bundle"))?.finish(expected_digest)?;
        Ok(report)
    }
}

/// A decrypted bundle item (or audit entry archive).
pub(super) type Item = Zeroizing<Vec<u8>>;

/// An org's audit entries as archives, in order, and the chain's digest (see [`chain_step`]).
pub(super) fn audit_items(
    oi: &super::org::OrgInner,
    kv: &dyn super::kv::KvRead,
    entry: &OrgEntry,
) -> Result<(Vec<Item>, [u8; 32])> {
    let snap = kv;
    let mut audit_items: Vec<Zeroizing<Vec<u8>>> = Vec::with_capacity(entry.audit_seq as usize);
    let mut digest = [0u8; 32];
    let keys: Vec<[u8; 16]> = (0..entry.audit_seq).map(|seq| audit::audit_key(oi.tag, seq)).collect();
    for chunk in keys.chunks(ADMIN_BATCH) {
        let refs: Vec<&[u8]> = chunk.iter().map(|k| k.as_slice()).collect();
        for (key, v) in chunk.iter().zip(snap.get_many(AUDIT, &refs)?) {
            let v = v.ok_or_else(|| Error::corrupt(AUDIT.name, key))?;
            let plain = Zeroizing::new(oi.open(AUDIT, key, Compartment::Core, &v)?.as_slice().to_vec());
            digest = chain_step(&digest, &plain);
            audit_items.push(plain);
        }
    }
    Ok((audit_items, digest))
}

/// Exactly the records the org's state tree holds (index buckets aside: they are rebuilt), each
/// checked against it, as bundle items: a record put back from an older copy, or a stray row,
/// never travels.
pub(super) fn tree_items(
    oi: &super::org::OrgInner,
    kv: &dyn super::kv::KvRead,
    entry: &OrgEntry,
) -> Result<Vec<Zeroizing<Vec<u8>>>> {
    let snap = kv;
    let mut items = Vec::new();
    // Exactly the records the org's state tree holds, each checked against it: a record put
    // back from an older copy, or a stray row, never travels.
    let roots = super::state::Roots::decode(&entry.state_root)?;
    let get = |t: Table, k: &[u8]| snap.get(t, k);
    let mut bad_node = None;
    let (records, _) = oi.walk_state(&roots, &get, &mut |k, e| {
        bad_node.get_or_insert((k, e));
    })?;
    if let Some((_, e)) = bad_node {
        return Err(e);
    }
    let records: Vec<_> = records.into_iter().filter(|(a, _)| a.kind() != RecordKind::Bucket).collect();
    for (addr, _) in &records {
        let table = addr.kind().table();
        let key = addr.key(oi);
        let v = oi.fetch(&roots, &get, *addr, &key)?.ok_or_else(|| Error::corrupt(table.name, &key))?;
        let c = addr.record_kind().compartment(addr.sub);
        let plain = Zeroizing::new(oi.open(table, &key, c, &v)?.as_slice().to_vec());
        let kind = addr.kind().blind_kind().ok_or_else(|| Error::Internal("unblinded record kind".into()))?;
        let mut item = Zeroizing::new(Vec::with_capacity(15 + plain.len()));
        item.extend_from_slice(&[table.id, kind, addr.sub]);
        item.extend_from_slice(&addr.page.to_le_bytes());
        item.extend_from_slice(&addr.id.to_le_bytes());
        item.extend_from_slice(&plain);
        items.push(item);
    }
    Ok(items)
}

fn decode_aligned<T>(bytes: &[u8]) -> Result<T>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<T, rkyv::rancor::Strategy<rkyv::de::Pool, rkyv::rancor::Error>>,
{
    let mut buf = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    buf.extend_from_slice(bytes);
    let out = codec::decode::<T>(buf.as_slice()).map_err(|_| bad_bundle("record fails validation"));
    buf.as_mut_slice().zeroize();
    out
}

/// The target side of an import: one write transaction, committed only at the end.
pub(super) struct Importer {
    org: Org,
    tag: OrgTag,
    entry: OrgEntry,
    /// The storage transaction written into (`None` only between two batches).
    wtx: Option<Box<dyn KvWrite>>,
    /// Records to replay without writing (see [`Keep::skip`]), and records seen so far.
    skip: u64,
    seen: u64,
    index: Vec<(super::records::IndexHash, u64)>,
    /// Every record written, for the state tree.
    state: Vec<(super::state::Addr, u64)>,
    /// The source chain as read so far: entries, last MAC, digest.
    source_len: u64,
    source_prev: Vec<u8>,
    source_digest: [u8; 32],
    /// What the bundle's org item says the source chain is.
    claimed: (u64, Vec<u8>),
    /// The page version of everything it writes.
    version: u64,
    /// The audit operation that ends it.
    op: &'static str,
}

/// What an import into an existing org's place keeps of it (a full re-key, `Db::rekey_org`).
pub(super) struct Keep {
    /// The org's custody key id and wrapped custody secret.
    pub custody: (Vec<u8>, Vec<u8>),
    /// The epoch number of the new keys (past every old one).
    pub epoch: u32,
    /// The page version of everything written (past every old one: the state tree's node cache
    /// is keyed by version).
    pub version: u64,
    /// The new epoch seed and structure seed.
    pub seeds: (Vec<u8>, Vec<u8>),
    /// Records already written by an interrupted run: replayed (checked, indexed, entered in
    /// the state tree) without being written again.
    pub skip: u64,
}

fn closed() -> Error {
    Error::Internal("the import's transaction is closed".into())
}

/// The page version of every value an import writes (its data is one commit; the audit
/// entries it replays come after).
const IMPORT_VERSION: u64 = 1;

impl Importer {
    fn begin(db: &Db, meta: BundleOrg, byok: Option<&OrgKey>) -> Result<Importer> {
        check_name("org name", &meta.name, MAX_NAME_LEN)?;
        let tag = db.inner.new_tag(&meta.name);
        let wtx = db.inner.begin_write()?;
        if db.inner.name_taken(&*wtx, tag, &meta.name)? {
            return Err(Error::OrgExists(meta.name));
        }
        Importer::start(db, meta, byok, wtx, None)
    }

    /// An importer writing into `wtx` (whose org slot is free or being replaced, see [`Keep`]).
    pub(super) fn start(
        db: &Db,
        meta: BundleOrg,
        byok: Option<&OrgKey>,
        wtx: Box<dyn KvWrite>,
        keep: Option<Keep>,
    ) -> Result<Importer> {
        let inner = &db.inner;
        // A re-keyed org moves to its tag under the current database secret too.
        let tag = inner.new_tag(&meta.name);
        let (epoch, version, op, skip) = match &keep {
            Some(k) => (k.epoch, k.version, "rekey-org", k.skip),
            None => (0, IMPORT_VERSION, "import-org", 0),
        };
        let (custody_id, custody_wrapped, key_check, seed, structure_seed) = match (byok, keep) {
            (Some(k), _) => (Vec::new(), Vec::new(), super::byok_key_check(inner, tag, k)?, Vec::new(), Vec::new()),
            (None, Some(keep)) => {
                let (id, wrapped) = keep.custody;
                (id, wrapped, Vec::new(), keep.seeds.0, keep.seeds.1)
            }
            (None, None) => {
                let (id, wrapped) = inner.new_custody()?;
                let seeds = (Secret::generate()?.expose().to_vec(), Secret::generate()?.expose().to_vec());
                (id, wrapped, Vec::new(), seeds.0, seeds.1)
            }
        };
        let entry = OrgEntry {
            name: meta.name.clone(),
            byok: byok.is_some(),
            key_check,
            current_epoch: epoch,
            epochs: vec![EpochEntry { epoch, seed, seal_count: 0 }],
            structure_seed,
            next_node: meta.next_node,
            next_edge: meta.next_edge,
            next_kind: meta.next_kind,
            node_count: meta.node_count,
            edge_count: meta.edge_count,
            created_at: meta.created_at,
            state: 0,
            rotation: None,
            audit_seq: 0,
            audit_head: Vec::new(),
            commit_seq: version,
            index_runs: Vec::new(),
            state_root: super::state::Roots::default().encode(),
            custody_id,
            custody_wrapped,
        };
        let org = Org::from_entry(db.inner.clone(), tag, &entry, byok, &Compartment::FULL_SCOPE)?;
        let claimed = (meta.audit_len, meta.audit_digest.clone());
        Ok(Importer {
            org,
            tag,
            entry,
            wtx: Some(wtx),
            skip,
            seen: 0,
            index: Vec::new(),
            state: Vec::new(),
            source_len: 0,
            source_prev: Vec::new(),
            source_digest: [0; 32],
            claimed,
            version,
            op,
        })
    }

    /// The storage transaction being written.
    pub(super) fn w(&mut self) -> Result<&mut (dyn KvWrite + 'static)> {
        self.wtx.as_deref_mut().ok_or_else(closed)
    }

    /// Records seen so far (replayed or written).
    pub(super) fn seen(&self) -> u64 {
        self.seen
    }

    /// Commits what was written so far and goes on in a new transaction from `begin` (a re-key
    /// in batches: other writers go between them).
    pub(super) fn commit_batch(&mut self, begin: impl FnOnce() -> Result<Box<dyn KvWrite>>) -> Result<()> {
        self.wtx.take().ok_or_else(closed)?.commit()?;
        self.wtx = Some(begin()?);
        Ok(())
    }

    pub(super) fn record(&mut self, payload: &[u8]) -> Result<()> {
        let head = payload.get(..15).ok_or_else(|| bad_bundle("short record"))?;
        let (table_id, kind, sub) = (head[0], head[1], head[2]);
        let page = u32::from_le_bytes([head[3], head[4], head[5], head[6]]);
        let mut idb = [0u8; 8];
        idb.copy_from_slice(&head[7..15]);
        let id = u64::from_le_bytes(idb);
        let plain = &payload[15..];
        let oi = &self.org.inner;
        let table = BUNDLE_TABLES.iter().copied().find(|t| t.id == table_id).ok_or_else(|| bad_bundle("bad table"))?;
        let rk = RecordKind::of(table, Some((kind, sub, page, id))).ok_or_else(|| bad_bundle("bad record address"))?;
        let key = oi.key_of(rk, sub, page, id).ok_or_else(|| bad_bundle("bad record kind"))?;
        // Validate what the record is before storing it, and collect what the index needs.
        match rk {
            RecordKind::NodePage => {
                let p: NodePage = decode_aligned(plain)?;
                if !codec::dense_page_fits(id, codec::NODES_PER_PAGE, p.first, p.nodes.iter().map(|n| n.id)) {
                    return Err(bad_bundle("bad node page"));
                }
                for n in &p.nodes {
                    for (system, ext) in &n.sources {
                        let h = oi.index_hash(index_domain::NODE_SOURCE, &[system.as_bytes(), ext.as_bytes()]);
                        self.index.push((h, n.id));
                    }
                }
            }
            RecordKind::EdgePage => {
                let p: EdgePage = decode_aligned(plain)?;
                if !codec::dense_page_fits(id, codec::EDGES_PER_PAGE, p.first, p.edges.iter().map(|e| e.id)) {
                    return Err(bad_bundle("bad edge page"));
                }
                for e in &p.edges {
                    if let Some((system, ext)) = &e.source {
                        let h = oi.index_hash(index_domain::EDGE_SOURCE, &[system.as_bytes(), ext.as_bytes()]);
                        self.index.push((h, e.id));
                    }
                }
            }
            RecordKind::Adj => {
                let mut buf = rkyv::util::AlignedVec::<16>::with_capacity(plain.len());
                buf.extend_from_slice(plain);
                codec::access::<codec::ArchivedAdjPage>(buf.as_slice())
                    .and_then(codec::decode_page)
                    .map_err(|_| bad_bundle("bad page"))?;
            }
            RecordKind::Dict => {
                let name = std::str::from_utf8(plain).map_err(|_| bad_bundle("bad kind name"))?;
                let h = oi.index_hash(index_domain::KIND, &[name.as_bytes()]);
                self.index.push((h, id));
            }
            RecordKind::NodeProps | RecordKind::EdgeProps => {
                decode_aligned::<codec::PropMap>(plain)?;
            }
            RecordKind::Secrets => {
                decode_aligned::<codec::SecretMap>(plain)?;
            }
            // The index and the state tree are rebuilt; the audit chain travels as its own items.
            RecordKind::Bucket | RecordKind::Audit | RecordKind::Tree => return Err(bad_bundle("bad record kind")),
        }
        self.state.push((super::state::Addr::new(rk, sub, page, id)?, self.version));
        self.seen += 1;
        if self.seen <= self.skip {
            return Ok(());
        }
        let c = rk.compartment(sub);
        let sealed = oi.seal(table, &key, c, self.version, plain)?;
        self.w()?.put(table, &key, &sealed)
    }

    pub(super) fn audit(&mut self, payload: &[u8]) -> Result<()> {
        let rec: AuditRecord = decode_aligned(payload)?;
        // The source chain: in sequence from 0, each entry linked to the one before.
        if rec.seq != self.entry.audit_seq || rec.seq != self.source_len || rec.prev != self.source_prev {
            return Err(bad_bundle("audit entries out of order or not chained"));
        }
        self.source_len += 1;
        self.source_prev = rec.mac.clone();
        self.source_digest = chain_step(&self.source_digest, payload);
        let counts: Vec<(&str, u64)> = rec.counts.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        let wtx = self.wtx.as_deref_mut().ok_or_else(closed)?;
        audit::append(wtx, &self.org.inner, &mut self.entry, &rec.actor, &rec.op, &counts, rec.time)
    }

    pub(super) fn finish(mut self, expected_digest: Option<&str>) -> Result<String> {
        // The whole source chain arrived, and it is the one the bundle (and the host) names.
        let digest = hex::encode(self.source_digest);
        if self.source_len != self.claimed.0 || self.source_digest.as_slice() != self.claimed.1.as_slice() {
            return Err(bad_bundle("the audit chain is not the one the bundle names (entries missing or replaced)"));
        }
        if expected_digest.is_some_and(|d| !d.eq_ignore_ascii_case(&digest)) {
            return Err(bad_bundle("the audit chain is not the source's (its digest differs from the expected one)"));
        }
        let oi = self.org.inner.clone();
        {
            let entries = std::mem::take(&mut self.index);
            let (run, buckets) = super::records::build_index(entries);
            self.entry.index_runs = run.into_iter().collect();
            for (b, page) in &buckets {
                let key = oi.bucket_key(0, *b);
                let sealed = oi.seal_record(INDEX, &key, Compartment::Core, self.version, page)?;
                self.w()?.put(INDEX, &key, &sealed)?;
                self.state.push((super::state::Addr::bucket(0, *b), self.version));
            }
        }
        {
            // The new org's state tree, over everything written above (nothing is stored yet).
            let none = |_: Table, _: &[u8]| -> Result<Option<Vec<u8>>> { Ok(None) };
            let changes = std::mem::take(&mut self.state);
            let (roots, up) =
                super::state::StateUpdate::apply(&oi, &super::state::Roots::default(), &none, changes, self.version)?;
            self.entry.state_root = roots.encode();
            for (k, v) in &up.puts {
                self.w()?.put(super::tables::TREE, k, v)?;
            }
        }
        let actor = oi.db.actor.clone();
        let mut wtx = self.wtx.take().ok_or_else(closed)?;
        audit::append(&mut *wtx, &oi, &mut self.entry, &actor, self.op, &[], now_ms())?;
        let sealed = oi.db.seal_entry(self.tag, &self.entry)?;
        wtx.put(ORGS, &self.tag.0, &sealed)?;
        wtx.commit()?;
        Ok(digest)
    }
}
