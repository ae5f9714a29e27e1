//! Record keys and sealing for one org: the only place `store` turns ids into opaque keys and
//! records into sealed bytes and back. Flow: stored bytes → envelope::open → codec validate → value.

use std::sync::Arc;

use rkyv::util::AlignedVec;
use zeroize::Zeroize;

use super::kv::KvWrite;
use super::org::OrgInner;
use super::tables::{blind_kind, record_key, RecordKey, RecordKind, Table, EDGES, INDEX, NODES};
use crate::codec::{
    self, AdjPage, ArchivedAdjPage, BucketPage, CodecError, EdgePage, NodePage, EDGES_PER_PAGE, NODES_PER_PAGE,
};
use crate::crypto::{envelope, AeadKey, Binding, EpochKeys};
use crate::error::{Error, InputKind, Result};
use crate::types::{Compartment, Direction};

/// Which kind of object a property map belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Owner {
    Node(u64),
    Edge(u64),
}

pub(crate) fn dir_index(d: Direction) -> u8 {
    match d {
        Direction::Out | Direction::Both => 0,
        Direction::In => 1,
    }
}

impl OrgInner {
    fn blind(&self, kind: u8, sub: u8, page: u32, id: u64) -> RecordKey {
        record_key(self.tag, &self.structure.blind.blind(kind, sub, page, id))
    }

    /// The key of the record of `kind` addressed by `(sub, page, id)` (`None`: keys of that kind
    /// are not blinded).
    pub(crate) fn key_of(&self, kind: RecordKind, sub: u8, page: u32, id: u64) -> Option<RecordKey> {
        Some(self.blind(kind.blind_kind()?, sub, page, id))
    }

    /// The key of node page `page` (ids `page * NODES_PER_PAGE ..`).
    pub(crate) fn node_page_key(&self, page: u64) -> RecordKey {
        self.blind(blind_kind::NODE, 0, 0, page)
    }

    /// The key of edge page `page` (ids `page * EDGES_PER_PAGE ..`).
    pub(crate) fn edge_page_key(&self, page: u64) -> RecordKey {
        self.blind(blind_kind::EDGE, 0, 0, page)
    }

    /// The key of index bucket `bucket`.
    pub(crate) fn bucket_key(&self, bucket: u32) -> RecordKey {
        self.blind(blind_kind::BUCKET, 0, 0, u64::from(bucket))
    }

    pub(crate) fn adj_key(&self, node: u64, dir: u8, page: u32) -> RecordKey {
        self.blind(blind_kind::ADJ, dir, page, node)
    }

    pub(crate) fn props_key(&self, owner: Owner, c: Compartment) -> RecordKey {
        match owner {
            Owner::Node(id) => self.blind(blind_kind::NODE_PROPS, c.index(), 0, id),
            Owner::Edge(id) => self.blind(blind_kind::EDGE_PROPS, c.index(), 0, id),
        }
    }

    pub(crate) fn dict_key(&self, kind_id: u32) -> RecordKey {
        self.blind(blind_kind::DICT, 0, 0, u64::from(kind_id))
    }

    /// The keyed hash of an index entry: the first 16 bytes of HMAC(index key, domain ‖ parts).
    /// Bytes 0..12 are the entry's fingerprint (which also chooses its bucket).
    pub(crate) fn index_hash(&self, domain: &[u8], parts: &[&[u8]]) -> IndexHash {
        let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        all.push(domain);
        all.extend_from_slice(parts);
        let mac = self.structure.index.mac(&all);
        let mut h = [0u8; 16];
        h.copy_from_slice(&mac[..16]);
        h
    }

    fn epoch(&self, epoch: u32, table: Table, key: &[u8]) -> Result<Arc<EpochKeys>> {
        self.epoch_keys(epoch)?.ok_or_else(|| Error::corrupt(table.name, key))
    }

    /// Packs (compresses, pads) and seals under the current epoch's key of compartment `c`,
    /// with page version `version` (the org's commit counter).
    pub(crate) fn seal(&self, table: Table, key: &[u8], c: Compartment, version: u64, plain: &[u8]) -> Result<Vec<u8>> {
        let epoch = self.current_epoch();
        self.seal_at(epoch, version, table, key, c, plain)
    }

    /// Packs and seals under `epoch`'s key of compartment `c`.
    pub(crate) fn seal_at(
        &self,
        epoch: u32,
        version: u64,
        table: Table,
        key: &[u8],
        c: Compartment,
        plain: &[u8],
    ) -> Result<Vec<u8>> {
        let keys = self.epoch(epoch, table, key)?;
        let aead: &AeadKey = keys.keys[c.index() as usize].as_ref().ok_or(Error::Denied(c))?;
        let packed = codec::pack(plain)
            .map_err(|_| Error::invalid(InputKind::TooLarge, format!("value for `{}` too large", table.name)))?;
        envelope::seal_versioned(
            aead,
            epoch,
            version,
            &Binding { db_id: &self.db.db_id, table: table.id, key },
            &packed,
        )
    }

    /// Opens a sealed value and unpacks it (16-byte aligned, ready for validation).
    pub(crate) fn open(&self, table: Table, key: &[u8], c: Compartment, sealed: &[u8]) -> Result<AlignedVec> {
        let epoch = envelope::peek_epoch(sealed, table.name, key)?;
        let keys = self.epoch(epoch, table, key)?;
        let aead: &AeadKey = keys.keys[c.index() as usize].as_ref().ok_or(Error::Denied(c))?;
        let mut packed =
            envelope::open(aead, &Binding { db_id: &self.db.db_id, table: table.id, key }, table.name, sealed)?;
        let out = codec::unpack(packed.as_slice()).map_err(|_| Error::corrupt(table.name, key));
        packed.as_mut_slice().zeroize();
        out
    }

    /// Re-seals a sealed value under `epoch` keeping its page version (the content is the same
    /// page); `None` if it is sealed under `epoch` already. Rotation's one step.
    pub(crate) fn reseal_at(
        &self,
        epoch: u32,
        table: Table,
        key: &[u8],
        c: Compartment,
        sealed: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        if envelope::peek_epoch(sealed, table.name, key)? == epoch {
            return Ok(None);
        }
        let version = envelope::peek_version(sealed, table.name, key)?;
        let mut plain = self.open(table, key, c, sealed)?;
        let out = self.seal_at(epoch, version, table, key, c, plain.as_slice());
        plain.as_mut_slice().zeroize();
        out.map(Some)
    }

    /// What a record key addresses: `(kind, sub, page, id)` as given to the blind PRP.
    pub(crate) fn unblind(&self, key: &[u8]) -> Option<(u8, u8, u32, u64)> {
        let opaque: [u8; 16] = key.get(8..24)?.try_into().ok()?;
        Some(self.structure.blind.unblind(&opaque))
    }

    /// Encodes and seals a record.
    pub(crate) fn seal_record<T>(
        &self,
        table: Table,
        key: &[u8],
        c: Compartment,
        version: u64,
        value: &T,
    ) -> Result<Vec<u8>>
    where
        T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<AlignedVec, rkyv::ser::allocator::ArenaHandle<'a>, rkyv::rancor::Error>,
        >,
    {
        let mut bytes = codec::encode(value)
            .map_err(|_| Error::invalid(InputKind::TooLarge, format!("record for `{}` too large", table.name)))?;
        let sealed = self.seal(table, key, c, version, &bytes);
        bytes.as_mut_slice().zeroize();
        sealed
    }

    /// Opens, validates and deserializes a record.
    pub(crate) fn open_record<T>(&self, table: Table, key: &[u8], c: Compartment, sealed: &[u8]) -> Result<T>
    where
        T: rkyv::Archive,
        T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
            + rkyv::Deserialize<T, rkyv::rancor::Strategy<rkyv::de::Pool, rkyv::rancor::Error>>,
    {
        let mut buf = self.open(table, key, c, sealed)?;
        let out = codec::decode::<T>(buf.as_slice()).map_err(|_| Error::corrupt(table.name, key));
        buf.as_mut_slice().zeroize();
        out
    }

    /// Opens node page `page`: validated, and holding exactly ids `first ..` without gaps.
    pub(crate) fn open_node_page(&self, page: u64, key: &[u8], sealed: &[u8]) -> Result<NodePage> {
        let p: NodePage = self.open_record(NODES, key, Compartment::Core, sealed)?;
        if !codec::dense_page_fits(page, NODES_PER_PAGE, p.first, p.nodes.iter().map(|n| n.id)) {
            return Err(Error::corrupt(NODES.name, key));
        }
        Ok(p)
    }

    /// One record's adjacency facts in direction `dir` read in place from node page `page`
    /// (validated, not deserialized): `(pages, degree, inline entries)`, where `None` entries
    /// means the record has pages there. `expected` is the number of records the page must hold.
    /// The same checks as [`OrgInner::open_node_page`] plus the inline entries' own.
    pub(crate) fn node_adjacency(
        &self,
        page: u64,
        key: &[u8],
        sealed: &[u8],
        expected: u64,
        slot: usize,
        dir: u8,
    ) -> Result<Option<Vec<codec::AdjEntry>>> {
        let mut buf = self.open(NODES, key, Compartment::Core, sealed)?;
        let out = (|| {
            let p = codec::access::<codec::ArchivedNodePage>(buf.as_slice()).map_err(|_| ())?;
            let ids = p.nodes.iter().map(|n| n.id.to_native());
            if !codec::dense_page_fits(page, NODES_PER_PAGE, p.first.to_native(), ids)
                || p.nodes.len() as u64 != expected
            {
                return Err(());
            }
            let r = p.nodes.get(slot).ok_or(())?;
            let (pages, degree, inline) = if dir == 0 {
                (r.out_pages.to_native(), r.out_degree.to_native(), r.out_adj.as_slice())
            } else {
                (r.in_pages.to_native(), r.in_degree.to_native(), r.in_adj.as_slice())
            };
            codec::inline_of(pages, degree, inline).map_err(|_| ())
        })()
        .map_err(|()| Error::corrupt(NODES.name, key));
        buf.as_mut_slice().zeroize();
        out
    }

    /// Opens edge page `page` (as [`OrgInner::open_node_page`]).
    pub(crate) fn open_edge_page(&self, page: u64, key: &[u8], sealed: &[u8]) -> Result<EdgePage> {
        let p: EdgePage = self.open_record(EDGES, key, Compartment::Core, sealed)?;
        if !codec::dense_page_fits(page, EDGES_PER_PAGE, p.first, p.edges.iter().map(|e| e.id)) {
            return Err(Error::corrupt(EDGES.name, key));
        }
        Ok(p)
    }

    /// Opens an index bucket page and checks its shape.
    pub(crate) fn open_bucket(&self, key: &[u8], sealed: &[u8]) -> Result<BucketPage> {
        let b: BucketPage = self.open_record(INDEX, key, Compartment::Core, sealed)?;
        b.validate().map_err(|_| Error::corrupt(INDEX.name, key))?;
        Ok(b)
    }

    /// Opens an adjacency page: validated zero-copy access, then the entries decoded.
    pub(crate) fn open_page(&self, key: &[u8], sealed: &[u8]) -> Result<(u32, Vec<codec::AdjEntry>)> {
        let table = super::tables::ADJ;
        let mut buf = self.open(table, key, Compartment::Core, sealed)?;
        let out = codec::access::<ArchivedAdjPage>(buf.as_slice())
            .and_then(codec::decode_page)
            .map_err(|_: CodecError| Error::corrupt(table.name, key));
        buf.as_mut_slice().zeroize();
        out
    }

    pub(crate) fn seal_page(&self, key: &[u8], version: u64, page: &AdjPage) -> Result<Vec<u8>> {
        self.seal_record(super::tables::ADJ, key, Compartment::Core, version, page)
    }
}

/// A keyed index hash (see [`OrgInner::index_hash`]).
pub(crate) type IndexHash = [u8; 16];

/// The fingerprint of an index entry in its bucket.
pub(crate) fn fingerprint(h: &IndexHash) -> [u8; 12] {
    let mut fp = [0u8; 12];
    fp.copy_from_slice(&h[..12]);
    fp
}

/// The bucket of an index entry in an index of `2^bits` buckets: the low bits of its
/// fingerprint's first four bytes, so a bucket can be split from its entries alone.
pub(crate) fn bucket_of(fp: &[u8; 12], bits: u8) -> u32 {
    let b = u32::from_le_bytes([fp[0], fp[1], fp[2], fp[3]]);
    if bits >= 32 {
        b
    } else {
        b & ((1u32 << bits) - 1)
    }
}

/// Average entries per bucket above which the index doubles its bucket count.
pub(crate) const BUCKET_LOAD: u64 = 32;

/// An index built from scratch: its bucket bits and every bucket page (all `2^bits` of them,
/// empty ones included, so a missing bucket is always detectable). A fingerprint listed twice
/// keeps its first value.
pub(crate) fn build_index(entries: Vec<(IndexHash, u64)>) -> (u8, Vec<(u32, BucketPage)>) {
    if entries.is_empty() {
        return (0, Vec::new());
    }
    let bits = bits_for(entries.len() as u64, 0);
    let mut split: Vec<Vec<([u8; 12], u64)>> = vec![Vec::new(); 1usize << bits];
    for (h, v) in entries {
        let fp = fingerprint(&h);
        split[bucket_of(&fp, bits) as usize].push((fp, v));
    }
    (bits, split.into_iter().enumerate().map(|(b, e)| (b as u32, BucketPage::from_entries(e))).collect())
}

/// The bucket bits an index of `entries` entries needs.
pub(crate) fn bits_for(entries: u64, current: u8) -> u8 {
    let mut bits = current;
    while bits < 32 && entries > (1u64 << bits) * BUCKET_LOAD {
        bits += 1;
    }
    bits
}

/// Items below which [`par_map`] stays on the calling thread.
const PAR_MIN: usize = 512;

/// Maps `f` over `items` on all cores (sealing is pure CPU work), keeping the order; the first
/// error wins.
pub(crate) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> Result<R> + Sync) -> Result<Vec<R>> {
    // Small sets on this thread: a thread costs more than sealing a few hundred pages.
    if items.len() < PAR_MIN {
        return items.iter().map(&f).collect();
    }
    // `available_parallelism` reads cgroup files on every call: once per process.
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let threads = *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(8));
    if threads < 2 {
        return items.iter().map(&f).collect();
    }
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(items.len().div_ceil(threads))
            .map(|chunk| s.spawn(move || chunk.iter().map(f).collect::<Result<Vec<R>>>()))
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for h in handles {
            out.extend(h.join().map_err(|_| Error::Internal("a sealing thread panicked".into()))??);
        }
        Ok(out)
    })
}

/// Inserts sealed rows in key order (B-tree friendly: blind keys are random).
pub(crate) fn write_sorted(txn: &mut dyn KvWrite, table: Table, rows: &mut [(RecordKey, Vec<u8>)]) -> Result<()> {
    rows.sort_unstable_by_key(|r| r.0);
    txn.put_many(table, rows)
}
