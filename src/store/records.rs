//! Record keys and sealing for one org: the only place `store` turns ids into opaque keys and
//! records into sealed bytes and back. Flow: stored bytes → envelope::open → codec validate → value.

use std::sync::Arc;

use rkyv::util::AlignedVec;
use zeroize::Zeroize;

use super::kv::KvWrite;
use super::org::OrgInner;
use super::state::Addr;
use super::tables::{blind_kind, record_key, RecordKey, RecordKind, Table, EDGES, INDEX, NODES, ORGS};
use crate::codec::{
    self, AdjPage, ArchivedAdjPage, BucketPage, CodecError, EdgePage, IndexRun, NodePage, EDGES_PER_PAGE,
    NODES_PER_PAGE,
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
    /// The page cache's key of the record at `addr`, for this handle (see
    /// [`super::cache::PageKey`]).
    pub(crate) fn page_key(&self, addr: Addr) -> super::cache::PageKey {
        let mut k = [0u8; 24];
        k[..8].copy_from_slice(&self.structure_fp[..8]);
        k[8..].copy_from_slice(&addr.packed());
        k
    }

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

    /// The key of bucket `bucket` of the index run at `slot`.
    pub(crate) fn bucket_key(&self, slot: u8, bucket: u32) -> RecordKey {
        self.blind(blind_kind::BUCKET, 0, u32::from(slot), u64::from(bucket))
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
    /// (`plain`: the page opened, see [`OrgInner::open`]; validated here, not deserialized):
    /// `(pages, degree, inline entries)`, where `None` entries means the record has pages there.
    /// `expected` is the number of records the page must hold. The same checks as
    /// [`OrgInner::open_node_page`] plus the inline entries' own.
    pub(crate) fn node_adjacency(
        &self,
        page: u64,
        key: &[u8],
        plain: &[u8],
        expected: u64,
        slot: usize,
        dir: u8,
    ) -> Result<Option<Vec<codec::AdjEntry>>> {
        (|| {
            let p = codec::access::<codec::ArchivedNodePage>(plain).map_err(|_| ())?;
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
        .map_err(|()| Error::corrupt(NODES.name, key))
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

/// An index built from scratch as one run at slot 0: the run and every bucket page (all
/// `2^bits` of them, empty ones included, so a missing bucket is always detectable). A
/// fingerprint listed twice keeps its first value.
pub(crate) fn build_index(entries: Vec<(IndexHash, u64)>) -> (Option<IndexRun>, Vec<(u32, BucketPage)>) {
    if entries.is_empty() {
        return (None, Vec::new());
    }
    let entries: Vec<([u8; 12], u64)> = entries.into_iter().map(|(h, v)| (fingerprint(&h), v)).collect();
    let (bits, buckets) = split_run(entries);
    let n = buckets.iter().map(|(_, b)| b.len() as u64).sum();
    (Some(IndexRun { slot: 0, bits, entries: n }), buckets)
}

/// The buckets of a run of `entries` (bucket bits from their count).
pub(crate) fn split_run(entries: Vec<([u8; 12], u64)>) -> (u8, Vec<(u32, BucketPage)>) {
    let bits = bits_for(entries.len() as u64, 0);
    let mut split: Vec<Vec<([u8; 12], u64)>> = vec![Vec::new(); 1usize << bits];
    for (fp, v) in entries {
        split[bucket_of(&fp, bits) as usize].push((fp, v));
    }
    (bits, split.into_iter().enumerate().map(|(b, e)| (b as u32, BucketPage::from_entries(e))).collect())
}

/// Most runs an index has: a lookup reads one bucket of each.
pub(crate) const MAX_RUNS: usize = 8;
/// Slots a run may live in, each with a clustered key prefix (`crypto::blind`).
pub(crate) use crate::crypto::RUN_SLOTS;
// One more slot than runs, so a new run always has a slot no live run holds and its buckets are
// new keys (packed into redb's leaves, see `kv_redb::put_many`), never overwrites of the buckets
// of a run it absorbs.
const _: () = assert!(RUN_SLOTS == MAX_RUNS + 1);

/// A commit's new entries go into the newest run in place (its touched buckets rewritten) while
/// they are at most `1/IN_PLACE_SPREAD` of its bucket count and that count holds.
const IN_PLACE_SPREAD: u64 = 4;

/// The runs of an org's index, newest first: a checked copy of the registry entry's list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Runs {
    len: u8,
    runs: [IndexRun; MAX_RUNS],
}

impl Runs {
    /// The registry entry's runs; a list no commit writes (too many runs, a slot twice or out of
    /// range, an empty run, a bucket count its entries do not give) is `Corrupt`.
    pub(crate) fn of(list: &[IndexRun]) -> Result<Runs> {
        let bad = || Error::corrupt(ORGS.name, &[]);
        if list.len() > MAX_RUNS {
            return Err(bad());
        }
        let mut out = Runs { len: list.len() as u8, ..Runs::default() };
        let mut slots = 0u32;
        for (i, r) in list.iter().enumerate() {
            if usize::from(r.slot) >= RUN_SLOTS {
                return Err(bad());
            }
            let slot_bit = 1u32 << r.slot;
            if slots & slot_bit != 0 || r.entries == 0 || r.bits > 32 || bits_for(r.entries, 0) > r.bits {
                return Err(bad());
            }
            slots |= slot_bit;
            out.runs[i] = *r;
        }
        Ok(out)
    }

    /// The runs, newest first.
    pub(crate) fn as_slice(&self) -> &[IndexRun] {
        &self.runs[..usize::from(self.len)]
    }

    /// Entries in all runs.
    pub(crate) fn entries(&self) -> u64 {
        self.as_slice().iter().map(|r| r.entries).sum()
    }
}

/// What a commit that adds `adds` new entries (none already indexed) does to the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IndexPlan {
    /// Into the newest run, rewriting only the buckets the new entries fall in.
    InPlace,
    /// A new run of the new entries and the `merge` newest runs (all their entries rewritten),
    /// at `slot`; the merged runs' other buckets are removed.
    NewRun {
        /// How many of the newest runs it absorbs.
        merge: usize,
        /// Where it lives: the lowest slot no run holds.
        slot: u8,
    },
}

/// The index policy. A commit's new entries go into the newest run in place if they are few
/// against its bucket count; otherwise they start a new run, which absorbs each next run not
/// bigger than itself (and, at [`MAX_RUNS`], the newest run regardless). Runs thus grow
/// geometrically from newest to oldest: an entry is rewritten about log2(index / commit) times
/// over its life, not on every commit that touches its bucket, and a lookup reads at most
/// `MAX_RUNS` buckets.
pub(crate) fn plan_index(runs: &Runs, adds: u64) -> IndexPlan {
    let list = runs.as_slice();
    if let Some(r0) = list.first() {
        let buckets = 1u64 << r0.bits;
        if adds.saturating_mul(IN_PLACE_SPREAD) <= buckets && bits_for(r0.entries + adds, r0.bits) == r0.bits {
            return IndexPlan::InPlace;
        }
    }
    let mut size = adds;
    let mut merge = 0;
    while merge < list.len() && (list[merge].entries <= size || list.len() - merge >= MAX_RUNS) {
        size += list[merge].entries;
        merge += 1;
    }
    // At most MAX_RUNS runs hold slots, so one of the RUN_SLOTS is free.
    let slot = (0..RUN_SLOTS as u8).find(|s| list.iter().all(|r| r.slot != *s)).unwrap_or(0);
    IndexPlan::NewRun { merge, slot }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies `plan_index` as a commit does; returns the entries it rewrote.
    fn commit(runs: &mut Vec<IndexRun>, adds: u64) -> u64 {
        let plan = plan_index(&Runs::of(runs).expect("runs"), adds);
        match plan {
            IndexPlan::InPlace => {
                let r0 = &mut runs[0];
                // Each touched bucket is rewritten whole: about `load` entries each.
                let load = r0.entries.div_ceil(1 << r0.bits);
                r0.entries += adds;
                adds * (load + 1)
            }
            IndexPlan::NewRun { merge, slot } => {
                let entries = adds + runs[..merge].iter().map(|r| r.entries).sum::<u64>();
                assert!(runs.iter().all(|r| r.slot != slot), "a new run takes a slot no run holds");
                runs.splice(..merge, [IndexRun { slot, bits: bits_for(entries, 0), entries }]);
                entries
            }
        }
    }

    #[test]
    fn runs_stay_bounded_and_each_entry_is_rewritten_about_log_times() {
        // Import-sized commits (10k new entries each, as the Enron ingest) and tiny ones (one
        // node and one edge with sources).
        for (adds, commits, max_rewrites) in [(10_000u64, 40u64, 6.0), (2, 100_000, 40.0)] {
            let mut runs = Vec::new();
            let mut rewritten = 0;
            for _ in 0..commits {
                rewritten += commit(&mut runs, adds);
                assert!(runs.len() <= MAX_RUNS, "{} runs", runs.len());
                // Sizes fall from oldest to newest, and every run is a valid registry list.
                Runs::of(&runs).expect("a list the policy writes is valid");
            }
            assert_eq!(runs.iter().map(|r| r.entries).sum::<u64>(), adds * commits);
            let per_entry = rewritten as f64 / (adds * commits) as f64;
            assert!(per_entry <= max_rewrites, "{adds} per commit: each entry rewritten {per_entry:.1} times");
        }
    }

    #[test]
    fn a_few_entries_go_into_a_large_newest_run_in_place() {
        let runs = [IndexRun { slot: 3, bits: 10, entries: 20_000 }];
        assert_eq!(plan_index(&Runs::of(&runs).expect("runs"), 5), IndexPlan::InPlace);
        // Too many for its buckets: a new run in a free slot (none merged: the run is bigger).
        assert_eq!(plan_index(&Runs::of(&runs).expect("runs"), 1_000), IndexPlan::NewRun { merge: 0, slot: 0 });
        // As many as the run holds: merged into one run, in a slot no run holds.
        assert_eq!(plan_index(&Runs::of(&runs).expect("runs"), 20_000), IndexPlan::NewRun { merge: 1, slot: 0 });
        let full: Vec<IndexRun> = (0..MAX_RUNS as u8).map(|s| IndexRun { slot: s + 1, bits: 0, entries: 1 }).collect();
        // Every run slot but one held: the new run takes that one.
        assert_eq!(plan_index(&Runs::of(&full).expect("runs"), 1), IndexPlan::NewRun { merge: MAX_RUNS, slot: 0 });
    }

    #[test]
    fn a_registry_list_no_commit_writes_is_corrupt() {
        let run = |slot, bits, entries| IndexRun { slot, bits, entries };
        for bad in [
            vec![run(0, 0, 1), run(0, 0, 1)],
            vec![run(RUN_SLOTS as u8, 0, 1)],
            vec![run(0, 0, 0)],
            vec![run(0, 0, 33)],
            vec![run(0, 33, 1)],
            (0..=MAX_RUNS as u8).map(|s| run(s, 0, 1)).collect(),
        ] {
            assert!(matches!(Runs::of(&bad), Err(Error::Corrupt { .. })), "{bad:?}");
        }
        assert_eq!(Runs::of(&[run(1, 1, 33), run(0, 0, 1)]).expect("valid").entries(), 34);
    }
}
