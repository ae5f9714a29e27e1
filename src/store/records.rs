//! Record keys and sealing for one org: the only place `store` turns ids into opaque keys and
//! records into sealed bytes and back. Flow: redb bytes → envelope::open → codec validate → value.

use std::sync::Arc;

use rkyv::util::AlignedVec;
use zeroize::Zeroize;

use super::org::OrgInner;
use super::tables::{blind_kind, record_key, RecordKey, Table};
use crate::codec::{self, AdjPage, ArchivedAdjPage, CodecError};
use crate::crypto::{envelope, AeadKey, Binding, EpochKeys};
use crate::error::{Error, Result};
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

    pub(crate) fn node_key(&self, id: u64) -> RecordKey {
        self.blind(blind_kind::NODE, 0, 0, id)
    }

    pub(crate) fn edge_key(&self, id: u64) -> RecordKey {
        self.blind(blind_kind::EDGE, 0, 0, id)
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

    /// Index key: tag ‖ first 16 bytes of HMAC(index key, domain ‖ parts).
    pub(crate) fn index_key(&self, domain: &[u8], parts: &[&[u8]]) -> RecordKey {
        let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        all.push(domain);
        all.extend_from_slice(parts);
        let mac = self.structure.index.mac(&all);
        let mut opaque = [0u8; 16];
        opaque.copy_from_slice(&mac[..16]);
        record_key(self.tag, &opaque)
    }

    fn epoch(&self, epoch: u32, table: Table, key: &[u8]) -> Result<Arc<EpochKeys>> {
        self.epoch_keys(epoch)?.ok_or_else(|| Error::corrupt(table.name, key))
    }

    /// Seals under the current epoch's key of compartment `c`.
    pub(crate) fn seal(&self, table: Table, key: &[u8], c: Compartment, plaintext: &[u8]) -> Result<Vec<u8>> {
        let epoch = self.current_epoch();
        self.seal_at(epoch, table, key, c, plaintext)
    }

    /// Seals under `epoch`'s key of compartment `c`.
    pub(crate) fn seal_at(
        &self,
        epoch: u32,
        table: Table,
        key: &[u8],
        c: Compartment,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let keys = self.epoch(epoch, table, key)?;
        let aead: &AeadKey = keys.keys[c.index() as usize].as_ref().ok_or(Error::Denied(c))?;
        envelope::seal(aead, epoch, &Binding { db_id: &self.db.db_id, table: table.id, key }, plaintext)
    }

    pub(crate) fn open(&self, table: Table, key: &[u8], c: Compartment, sealed: &[u8]) -> Result<AlignedVec> {
        let epoch = envelope::peek_epoch(sealed, table.name, key)?;
        let keys = self.epoch(epoch, table, key)?;
        let aead: &AeadKey = keys.keys[c.index() as usize].as_ref().ok_or(Error::Denied(c))?;
        envelope::open(aead, &Binding { db_id: &self.db.db_id, table: table.id, key }, table.name, sealed)
    }

    /// What a record key addresses: `(kind, sub, page, id)` as given to the blind PRP.
    pub(crate) fn unblind(&self, key: &[u8]) -> Option<(u8, u8, u32, u64)> {
        let opaque: [u8; 16] = key.get(8..24)?.try_into().ok()?;
        Some(self.structure.blind.unblind(&opaque))
    }

    /// Encodes and seals a record.
    pub(crate) fn seal_record<T>(&self, table: Table, key: &[u8], c: Compartment, value: &T) -> Result<Vec<u8>>
    where
        T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<AlignedVec, rkyv::ser::allocator::ArenaHandle<'a>, rkyv::rancor::Error>,
        >,
    {
        let mut bytes =
            codec::encode(value).map_err(|_| Error::invalid(format!("record for `{}` too large", table.name)))?;
        let sealed = self.seal(table, key, c, &bytes);
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

    pub(crate) fn seal_page(&self, key: &[u8], page: &AdjPage) -> Result<Vec<u8>> {
        self.seal_record(super::tables::ADJ, key, Compartment::Core, page)
    }

    /// Seals a bare u64 (index values).
    pub(crate) fn seal_u64(&self, table: Table, key: &[u8], v: u64) -> Result<Vec<u8>> {
        self.seal(table, key, Compartment::Core, &v.to_le_bytes())
    }

    pub(crate) fn open_u64(&self, table: Table, key: &[u8], sealed: &[u8]) -> Result<u64> {
        let buf = self.open(table, key, Compartment::Core, sealed)?;
        let arr: [u8; 8] = buf.as_slice().try_into().map_err(|_| Error::corrupt(table.name, key))?;
        Ok(u64::from_le_bytes(arr))
    }
}

/// Maps `f` over `items` on all cores (sealing is pure CPU work), keeping the order; the first
/// error wins.
pub(crate) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> Result<R> + Sync) -> Result<Vec<R>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if threads < 2 || items.len() < 4096 {
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
            out.extend(h.join().map_err(|_| Error::invalid("a sealing thread panicked"))??);
        }
        Ok(out)
    })
}

/// Inserts sealed rows in key order (B-tree friendly: blind keys are random).
pub(crate) fn write_sorted(
    txn: &redb::WriteTransaction,
    table: Table,
    rows: &mut [(RecordKey, Vec<u8>)],
) -> Result<()> {
    rows.sort_unstable_by_key(|r| r.0);
    let mut t = txn.open_table(table.def)?;
    for (k, v) in rows.iter() {
        t.insert(k.as_slice(), v.as_slice())?;
    }
    Ok(())
}
