//! rkyv record types, their encoding, and validation. No crypto, no I/O.
//!
//! Every decode validates the archive (bytecheck) before any field is read, even though the
//! bytes were authenticated: a format bug or a fuzzer never reaches unchecked memory.

mod adj;
mod edges;

#[cfg(feature = "fuzzing")]
pub(crate) use adj::decode_inline;
pub(crate) use adj::{decode_owned_page, decode_page, encode_inline, encode_page, inline_of};
pub use adj::{AdjEntry, INLINE_MAX, PAGE_CAPACITY};

use rkyv::rancor;
use rkyv::util::AlignedVec;
use zeroize::Zeroize;

use crate::types::Value;

/// A value failed archive validation or could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecError;

/// A node as stored (Core compartment: structure only).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct NodeRecord {
    /// The node's id.
    pub id: u64,
    /// Interned kind id.
    pub kind: u32,
    /// `(system, external_id)` pairs this node is known by.
    pub sources: Vec<(String, String)>,
    /// When the node was first stored.
    pub created_at: i64,
    /// When the node last changed.
    pub updated_at: i64,
    /// Number of outgoing edge entries (retracted ones included).
    pub out_degree: u64,
    /// Number of incoming edge entries (retracted ones included).
    pub in_degree: u64,
    /// Number of outgoing adjacency pages; 0: the entries are inline, in `out_adj`.
    pub out_pages: u32,
    /// Number of incoming adjacency pages; 0: the entries are inline, in `in_adj`.
    pub in_pages: u32,
    /// The outgoing adjacency entries while there are at most [`INLINE_MAX`] and no page
    /// (`out_pages == 0`), encoded as [`encode_inline`] writes them; empty otherwise.
    pub out_adj: Vec<u8>,
    /// The incoming adjacency entries, as `out_adj`.
    pub in_adj: Vec<u8>,
    /// Bit `i` set: compartment `i` holds a property record for this node (so a missing one is
    /// detected, not read as "no properties").
    pub props: u8,
}

/// One direction of a [`NodeRecord`]: its degree, page count and inline entries.
pub(crate) struct SideMut<'a> {
    pub degree: &'a mut u64,
    pub pages: &'a mut u32,
    pub inline: &'a mut Vec<u8>,
}

impl NodeRecord {
    /// Direction `dir` (0 out, 1 in): `(pages, degree, inline bytes)`.
    pub(crate) fn side(&self, dir: u8) -> (u32, u64, &[u8]) {
        if dir == 0 {
            (self.out_pages, self.out_degree, &self.out_adj)
        } else {
            (self.in_pages, self.in_degree, &self.in_adj)
        }
    }

    /// Direction `dir` (0 out, 1 in), to change.
    pub(crate) fn side_mut(&mut self, dir: u8) -> SideMut<'_> {
        if dir == 0 {
            SideMut { degree: &mut self.out_degree, pages: &mut self.out_pages, inline: &mut self.out_adj }
        } else {
            SideMut { degree: &mut self.in_degree, pages: &mut self.in_pages, inline: &mut self.in_adj }
        }
    }
}

/// Node ids per node page (page `p` holds ids `p * 16 ..` — page 0 from id 1, as 0 is never
/// assigned).
pub const NODES_PER_PAGE: u64 = 16;
/// Edge ids per edge page.
pub const EDGES_PER_PAGE: u64 = 128;

/// The page number holding record `id` (nodes or edges, `per` ids per page).
pub fn page_of(id: u64, per: u64) -> u64 {
    id / per
}

/// The first id page `page` holds (`per` ids per page; ids start at 1).
pub fn first_of(page: u64, per: u64) -> u64 {
    (page * per).max(1)
}

/// Whether a page numbered `page` (`per` ids per page) that says it starts at `first` and holds
/// records with `ids` (in order) is well formed: it starts at the page's first id and holds a
/// dense run of ids that fits in the page.
pub fn dense_page_fits(page: u64, per: u64, first: u64, ids: impl ExactSizeIterator<Item = u64>) -> bool {
    let start = first_of(page, per);
    first == start
        && ids.len() as u64 <= first_of(page + 1, per) - start
        && ids.enumerate().all(|(i, id)| id == start + i as u64)
}

/// Consecutive node records, sealed as one value: `nodes[i].id == first + i`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct NodePage {
    /// The id of `nodes[0]`.
    pub first: u64,
    /// The records, in id order, without gaps.
    pub nodes: Vec<NodeRecord>,
}

/// Consecutive edge records, sealed as one value: `edges[i].id == first + i`. The records are
/// archived as one delta/varint byte string (`codec::edges`), not as rkyv structs.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct EdgePage {
    /// The id of `edges[0]`.
    pub first: u64,
    /// The records, in id order, without gaps.
    #[rkyv(with = edges::EdgeColumns)]
    pub edges: Vec<EdgeRecord>,
}

/// One node of an org's state tree (`store::state`): `(slot, version)` pairs, slots strictly
/// increasing, versions non-zero. In a leaf a slot names one record (its id's low bits, its sub
/// and page); in an inner node a slot is a child's position and the version is the child's.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct TreeNode {
    /// The entries, by slot.
    pub entries: Vec<(u64, u64)>,
}

impl TreeNode {
    /// Checks the shape: strictly increasing slots, no zero version.
    pub fn validate(&self) -> Result<(), CodecError> {
        if self.entries.iter().any(|e| e.1 == 0) || self.entries.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(CodecError);
        }
        Ok(())
    }

    /// The version at `slot` (0: none).
    pub fn get(&self, slot: u64) -> u64 {
        self.entries.binary_search_by_key(&slot, |e| e.0).map_or(0, |i| self.entries[i].1)
    }

    /// Sets the version at `slot`; 0 removes the slot.
    pub fn set(&mut self, slot: u64, version: u64) {
        match self.entries.binary_search_by_key(&slot, |e| e.0) {
            Ok(i) if version == 0 => {
                self.entries.remove(i);
            }
            Ok(i) => self.entries[i].1 = version,
            Err(_) if version == 0 => {}
            Err(i) => self.entries.insert(i, (slot, version)),
        }
    }
}

/// The database root (`meta`, key `db-root`): authenticates the org registry as a whole.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct DbRootRecord {
    /// Commits that changed the registry so far (monotonic).
    pub counter: u64,
    /// Registry rows: sum mod 2^256 of each row's keyed hash (tag and sealed bytes), 32 bytes LE.
    pub state: Vec<u8>,
    /// Registry membership: sum mod 2^256 of each tag's keyed hash, 32 bytes LE.
    pub members: Vec<u8>,
    /// Registry rows.
    pub orgs: u64,
}

/// Bytes of an index entry's fingerprint (the first 12 bytes of the entry's keyed hash).
pub const FINGERPRINT: usize = 12;

/// One bucket of an org's hashed index: entries sorted by fingerprint, fingerprints unique, each
/// a 12-byte fingerprint and the u64 it maps to in `width` little-endian bytes, the fewest that
/// hold the page's largest value (format version 6; a fixed 8 before). Ids are dense from 0, so
/// on a graph of under 16M records an entry takes 15 bytes, not 20, and stays fixed-width, so a
/// probe still finds an entry by binary search or by its position.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Default)]
pub struct BucketPage {
    /// Bytes of each value: 1–8, 0 only in an empty page.
    pub width: u8,
    /// `FINGERPRINT + width`-byte entries.
    pub entries: Vec<u8>,
}

/// A value of at most 8 little-endian bytes (the page's `width` is checked to be at most 8).
fn le_value(v: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = v.len().min(8);
    b[..n].copy_from_slice(&v[..n]);
    u64::from_le_bytes(b)
}

/// Bytes a value takes in a bucket entry: the fewest that hold it, at least one.
fn value_width(v: u64) -> u8 {
    ((64 - v.leading_zeros()).div_ceil(8)).max(1) as u8
}

impl BucketPage {
    /// Bytes of one entry.
    pub fn stride(&self) -> usize {
        FINGERPRINT + usize::from(self.width)
    }

    /// Checks the shape: a width that fits the values exactly (0 for no entries), whole entries,
    /// strictly increasing fingerprints.
    pub fn validate(&self) -> Result<(), CodecError> {
        if self.entries.is_empty() {
            return if self.width == 0 { Ok(()) } else { Err(CodecError) };
        }
        if !(1..=8).contains(&self.width) || !self.entries.len().is_multiple_of(self.stride()) {
            return Err(CodecError);
        }
        let mut prev: Option<&[u8]> = None;
        let mut max = 0u64;
        for e in self.entries.chunks_exact(self.stride()) {
            let (fp, v) = e.split_at(FINGERPRINT);
            if prev.is_some_and(|p| p >= fp) {
                return Err(CodecError);
            }
            prev = Some(fp);
            max = max.max(le_value(v));
        }
        if value_width(max) != self.width {
            return Err(CodecError);
        }
        Ok(())
    }

    /// The fingerprint of entry `i`.
    pub fn fingerprint_at(&self, i: usize) -> Option<&[u8]> {
        self.entries.get(i * self.stride()..i * self.stride() + FINGERPRINT)
    }

    /// The value of entry `i`.
    pub fn value_at(&self, i: usize) -> Option<u64> {
        let at = i * self.stride() + FINGERPRINT;
        self.entries.get(at..at + usize::from(self.width)).map(le_value)
    }

    /// The value stored under fingerprint `fp`.
    pub fn get(&self, fp: &[u8; 12]) -> Option<u64> {
        let (mut lo, mut hi) = (0usize, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.fingerprint_at(mid)?.cmp(fp.as_slice()) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return self.value_at(mid),
            }
        }
        None
    }

    /// Every `(fingerprint, value)` entry.
    pub fn iter(&self) -> impl Iterator<Item = ([u8; 12], u64)> + '_ {
        (0..self.len()).filter_map(|i| {
            let mut fp = [0u8; 12];
            fp.copy_from_slice(self.fingerprint_at(i)?);
            Some((fp, self.value_at(i)?))
        })
    }

    /// A page of `entries` (any order; a later duplicate fingerprint is dropped).
    pub fn from_entries(mut entries: Vec<([u8; 12], u64)>) -> Self {
        entries.sort_by_key(|e| e.0);
        entries.dedup_by(|b, a| a.0 == b.0);
        let width = entries.iter().map(|e| value_width(e.1)).max().unwrap_or(0);
        let mut out = Vec::with_capacity(entries.len() * (FINGERPRINT + usize::from(width)));
        for (fp, v) in entries {
            out.extend_from_slice(&fp);
            out.extend_from_slice(&v.to_le_bytes()[..usize::from(width)]);
        }
        BucketPage { width, entries: out }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len().checked_div(self.stride()).unwrap_or(0)
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// An edge as stored.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct EdgeRecord {
    /// The edge's id.
    pub id: u64,
    /// Source node.
    pub from: u64,
    /// Target node.
    pub to: u64,
    /// Interned kind id.
    pub kind: u32,
    /// Where the edge came from.
    pub source: Option<(String, String)>,
    /// Valid-time start (inclusive).
    pub valid_from: i64,
    /// Valid-time end (exclusive).
    pub valid_to: i64,
    /// When the store learned the edge.
    pub recorded_at: i64,
    /// When the store retracted the edge, if it did.
    pub retracted_at: Option<i64>,
    /// Bit `i` set: compartment `i` holds a property record for this edge.
    pub props: u8,
}

/// One adjacency page: a run of compactly encoded entries (see [`AdjEntry`]).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct AdjPage {
    /// Number of pages of this (node, direction); meaningful in page 0 only.
    pub pages: u32,
    /// Number of entries in this page.
    pub count: u32,
    /// Delta/varint encoded entries.
    pub data: Vec<u8>,
    /// Zero padding up to a size class, so the sealed size hides the exact degree.
    pub pad: Vec<u8>,
}

/// A stored property value (mirror of [`Value`]).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub enum StoredValue {
    /// See [`Value::Null`].
    Null,
    /// See [`Value::Bool`].
    Bool(bool),
    /// See [`Value::I64`].
    I64(i64),
    /// See [`Value::F64`].
    F64(f64),
    /// See [`Value::Str`].
    Str(String),
    /// See [`Value::Bytes`].
    Bytes(Vec<u8>),
    /// See [`Value::Timestamp`].
    Timestamp(i64),
}

impl From<&Value> for StoredValue {
    fn from(v: &Value) -> Self {
        match v {
            Value::Null => StoredValue::Null,
            Value::Bool(b) => StoredValue::Bool(*b),
            Value::I64(i) => StoredValue::I64(*i),
            Value::F64(f) => StoredValue::F64(*f),
            Value::Str(s) => StoredValue::Str(s.clone()),
            Value::Bytes(b) => StoredValue::Bytes(b.clone()),
            Value::Timestamp(t) => StoredValue::Timestamp(*t),
        }
    }
}

impl From<StoredValue> for Value {
    fn from(v: StoredValue) -> Self {
        match v {
            StoredValue::Null => Value::Null,
            StoredValue::Bool(b) => Value::Bool(b),
            StoredValue::I64(i) => Value::I64(i),
            StoredValue::F64(f) => Value::F64(f),
            StoredValue::Str(s) => Value::Str(s),
            StoredValue::Bytes(b) => Value::Bytes(b),
            StoredValue::Timestamp(t) => Value::Timestamp(t),
        }
    }
}

/// The properties of one node or edge in one compartment.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Default)]
pub struct PropMap {
    /// `(name, value)` pairs, sorted by name, names unique.
    pub entries: Vec<(String, StoredValue)>,
}

impl PropMap {
    /// Sets `name` to `value`; returns whether anything changed.
    pub fn set(&mut self, name: &str, value: StoredValue) -> bool {
        match self.entries.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => {
                if self.entries[i].1 == value {
                    return false;
                }
                self.entries[i].1 = value;
            }
            Err(i) => self.entries.insert(i, (name.to_owned(), value)),
        }
        true
    }

    /// Removes `name`; returns whether it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        match self.entries.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => {
                self.entries.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&StoredValue> {
        self.entries.binary_search_by(|(n, _)| n.as_str().cmp(name)).ok().map(|i| &self.entries[i].1)
    }
}

/// One run of an org's hashed index: `2^bits` bucket pages at `slot`, holding `entries`
/// entries. A source is in at most one run; a commit adds its new entries to the newest run in
/// place or as a new run that absorbs the runs no bigger than itself (see
/// `store::records::plan_index`).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexRun {
    /// Where its bucket pages live (the `page` of their record address).
    pub slot: u8,
    /// It has `2^bits` bucket pages.
    pub bits: u8,
    /// Entries it holds.
    pub entries: u64,
}

/// One key epoch of an organization. Holds a seed: no `Clone`, and `Debug` redacts it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, PartialEq)]
pub struct EpochEntry {
    /// The epoch number.
    pub epoch: u32,
    /// The random seed (empty for BYOK orgs). The whole registry entry is sealed under the KEK.
    pub seed: Vec<u8>,
    /// Seals performed under this epoch's keys (for nonce-limit rotation).
    pub seal_count: u64,
}

/// An organization's registry entry (sealed under the KEK). Holds seeds: no `Clone`, and `Debug`
/// redacts them.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, PartialEq, Default)]
pub struct OrgEntry {
    /// The organization's name.
    pub name: String,
    /// True if the org key is supplied by the host (BYOK).
    pub byok: bool,
    /// BYOK only: a known value sealed under a key derived from the host key.
    pub key_check: Vec<u8>,
    /// The epoch new values are sealed under.
    pub current_epoch: u32,
    /// Every epoch that may still be referenced.
    pub epochs: Vec<EpochEntry>,
    /// The long-lived seed of the blind / index / audit keys (empty for BYOK orgs).
    pub structure_seed: Vec<u8>,
    /// Next node id to assign.
    pub next_node: u64,
    /// Next edge id to assign.
    pub next_edge: u64,
    /// Next kind id to assign.
    pub next_kind: u32,
    /// Nodes stored.
    pub node_count: u64,
    /// Edges stored (retracted ones included).
    pub edge_count: u64,
    /// When the org was created.
    pub created_at: i64,
    /// Lifecycle state: 0 active, 1 being deleted (seeds destroyed, records being purged).
    pub state: u8,
    /// An org key rotation in progress, if any.
    pub rotation: Option<RotationState>,
    /// Sequence number of the next audit entry.
    pub audit_seq: u64,
    /// HMAC of the last audit entry (empty before the first).
    pub audit_head: Vec<u8>,
    /// Commits of this org so far: the page version sealed into every value a commit writes.
    pub commit_seq: u64,
    /// The runs of the hashed index, newest first (see [`IndexRun`]); empty while it holds no
    /// entry.
    pub index_runs: Vec<IndexRun>,
    /// The root of the org's state tree (`store::state::Roots`): each record kind's depth and top
    /// node version.
    pub state_root: Vec<u8>,
    /// Orgs under key custody: the id of the org's custody key (16 bytes); empty for orgs
    /// created without custody (their seeds alone derive their keys).
    pub custody_id: Vec<u8>,
    /// Orgs under key custody: the org's custody secret, wrapped by the host's custody (the root
    /// key cannot unwrap it).
    pub custody_wrapped: Vec<u8>,
}

/// An org's sealed secrets: `(name, value)` sorted by name. Values are zeroized on drop.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Default)]
pub struct SecretMap {
    /// The secrets, sorted by name.
    pub entries: Vec<(String, Vec<u8>)>,
}

impl Drop for SecretMap {
    fn drop(&mut self) {
        for (_, v) in &mut self.entries {
            v.zeroize();
        }
    }
}

/// The body of a local keyring file (sealed as a whole under the keyring key).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Default)]
pub struct KeyringBody {
    /// One slot per custody key, sorted by id.
    pub slots: Vec<KeyringSlot>,
}

/// One custody key of a local keyring.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct KeyringSlot {
    /// The custody key id (16 bytes).
    pub id: Vec<u8>,
    /// The key (32 random bytes); empty once destroyed (the id stays, so a destroyed key is told
    /// apart from one this keyring never held).
    pub key: Vec<u8>,
}

impl Drop for KeyringSlot {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

/// One audit entry: who did what to an org and how much, chained to the previous entry by HMAC.
/// Never holds property values.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Position in the org's chain, from 0.
    pub seq: u64,
    /// When (milliseconds since the Unix epoch).
    pub time: i64,
    /// Who, as supplied by the host.
    pub actor: String,
    /// What: `write`, `create-org`, `rotate-org-key`, `export`, `scoped-open`, ...
    pub op: String,
    /// How much: named counts (e.g. `nodes_upserted`).
    pub counts: Vec<(String, u64)>,
    /// The previous entry's `mac` (empty for the first).
    pub prev: Vec<u8>,
    /// HMAC(audit key, seq ‖ time ‖ actor ‖ op ‖ counts ‖ prev).
    pub mac: Vec<u8>,
}

/// Progress of an org key rotation: records are re-sealed table by table in key order.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct RotationState {
    /// The epoch records are being re-sealed into.
    pub target_epoch: u32,
    /// The table id being re-sealed.
    pub table: u8,
    /// The last key re-sealed in that table (empty: start of the table).
    pub cursor: Vec<u8>,
}

/// Prints the length of a seed, never its bytes.
struct Redacted(usize);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<redacted, {} bytes>", self.0)
    }
}

impl std::fmt::Debug for EpochEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochEntry")
            .field("epoch", &self.epoch)
            .field("seed", &Redacted(self.seed.len()))
            .field("seal_count", &self.seal_count)
            .finish()
    }
}

impl std::fmt::Debug for OrgEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrgEntry")
            .field("name", &self.name)
            .field("byok", &self.byok)
            .field("key_check", &self.key_check)
            .field("current_epoch", &self.current_epoch)
            .field("epochs", &self.epochs)
            .field("structure_seed", &Redacted(self.structure_seed.len()))
            .field("next_node", &self.next_node)
            .field("next_edge", &self.next_edge)
            .field("next_kind", &self.next_kind)
            .field("node_count", &self.node_count)
            .field("edge_count", &self.edge_count)
            .field("created_at", &self.created_at)
            .field("state", &self.state)
            .field("rotation", &self.rotation)
            .field("audit_seq", &self.audit_seq)
            .field("audit_head", &self.audit_head)
            .field("custody_id", &self.custody_id)
            .field("custody_wrapped", &Redacted(self.custody_wrapped.len()))
            .finish_non_exhaustive()
    }
}

impl Drop for OrgEntry {
    fn drop(&mut self) {
        self.structure_seed.zeroize();
        for e in &mut self.epochs {
            e.seed.zeroize();
        }
    }
}

/// Packed body header: format byte, raw length u32, payload length u32.
const PACK_HEADER: usize = 9;
/// Largest raw body a packed value may claim (a bound for decompression).
const MAX_RAW: usize = 1 << 28;

/// The padded size of a packed body of `n` bytes: at least 32, then steps of 1/8 of the next
/// power of two, so a sealed size reveals only its class (at most 12.5% overhead).
pub fn size_class(n: usize) -> usize {
    let step = (n.next_power_of_two() / 8).max(16);
    n.max(32).div_ceil(step) * step
}

/// Compresses (when it helps) and pads a plaintext before it is sealed:
/// `format u8 (0 raw, 1 lz4) | raw_len u32 | payload_len u32 | payload | zeros`.
pub fn pack(raw: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, CodecError> {
    let raw_len = u32::try_from(raw.len()).map_err(|_| CodecError)?;
    let mut compressed =
        zeroize::Zeroizing::new(if raw.len() >= 64 { lz4_flex::block::compress(raw) } else { Vec::new() });
    let (format, payload): (u8, &[u8]) =
        if !compressed.is_empty() && compressed.len() < raw.len() { (1, &compressed) } else { (0, raw) };
    let total = size_class(PACK_HEADER + payload.len());
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(total));
    out.push(format);
    out.extend_from_slice(&raw_len.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out.resize(total, 0);
    compressed.zeroize();
    Ok(out)
}

/// Reverses [`pack`] into a 16-byte aligned buffer; any malformed body is `CodecError`.
pub fn unpack(packed: &[u8]) -> Result<AlignedVec, CodecError> {
    let head = packed.get(..PACK_HEADER).ok_or(CodecError)?;
    let raw_len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let payload_len = u32::from_le_bytes([head[5], head[6], head[7], head[8]]) as usize;
    let end = PACK_HEADER.checked_add(payload_len).ok_or(CodecError)?;
    let payload = packed.get(PACK_HEADER..end).ok_or(CodecError)?;
    if raw_len > MAX_RAW || packed[end..].iter().any(|b| *b != 0) || packed.len() != size_class(end) {
        return Err(CodecError);
    }
    let mut out = AlignedVec::<16>::with_capacity(raw_len);
    match head[0] {
        0 if payload_len == raw_len => out.extend_from_slice(payload),
        1 => {
            out.resize(raw_len, 0);
            let n = lz4_flex::block::decompress_into(payload, out.as_mut_slice()).map_err(|_| CodecError);
            if n != Ok(raw_len) {
                out.as_mut_slice().zeroize();
                return Err(CodecError);
            }
        }
        _ => return Err(CodecError),
    }
    Ok(out)
}

/// Encodes any record into an aligned archive.
pub fn encode<T>(value: &T) -> Result<AlignedVec, CodecError>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<AlignedVec, rkyv::ser::allocator::ArenaHandle<'a>, rancor::Error>,
    >,
{
    rkyv::to_bytes::<rancor::Error>(value).map_err(|_| CodecError)
}

/// Validates an archive and deserializes it. `bytes` must be 16-byte aligned (as the buffers
/// returned by the envelope are).
pub fn decode<T>(bytes: &[u8]) -> Result<T, CodecError>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, rkyv::rancor::Strategy<rkyv::de::Pool, rancor::Error>>,
{
    rkyv::from_bytes::<T, rancor::Error>(bytes).map_err(|_| CodecError)
}

/// Validates an archive and returns a zero-copy view of it.
pub fn access<T>(bytes: &[u8]) -> Result<&T, CodecError>
where
    T: rkyv::Portable + for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>,
{
    rkyv::access::<T, rancor::Error>(bytes).map_err(|_| CodecError)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(i: u8) -> [u8; 12] {
        let mut f = [i; 12];
        f[0] = i.wrapping_mul(37);
        f
    }

    /// Values of every width read back exactly; the page takes the fewest bytes that hold its
    /// largest value; the lookup finds every entry and nothing else.
    #[test]
    fn bucket_pages_store_values_in_the_fewest_bytes_and_read_them_back() {
        for (max, width) in [(0u64, 1u8), (255, 1), (256, 2), (367_662, 3), (1 << 32, 5), (u64::MAX, 8)] {
            let entries: Vec<([u8; 12], u64)> =
                (0..40u8).map(|i| (fp(i), max / 40 * u64::from(i))).chain([(fp(200), max)]).collect();
            let page = BucketPage::from_entries(entries.clone());
            assert_eq!(page.width, width, "max {max}");
            assert_eq!(page.entries.len(), entries.len() * (12 + usize::from(width)));
            page.validate().unwrap();
            for (f, v) in &entries {
                assert_eq!(page.get(f), Some(*v));
            }
            assert_eq!(page.get(&fp(201)), None);
            let mut sorted = entries.clone();
            sorted.sort_by_key(|e| e.0);
            assert_eq!(page.iter().collect::<Vec<_>>(), sorted);
        }
        let empty = BucketPage::from_entries(vec![]);
        assert_eq!((empty.width, empty.len()), (0, 0));
        empty.validate().unwrap();
    }

    /// A width wider than the values need, a zero or oversized width, a partial entry or
    /// unsorted fingerprints are refused: one page has one encoding.
    #[test]
    fn bucket_pages_refuse_every_non_canonical_shape() {
        let page = BucketPage::from_entries(vec![(fp(1), 300), (fp(2), 7)]);
        assert_eq!(page.width, 2);
        let mut wide = Vec::new();
        for (f, v) in page.iter() {
            wide.extend_from_slice(&f);
            wide.extend_from_slice(&v.to_le_bytes()[..3]);
        }
        let bad = [
            BucketPage { width: 3, entries: wide },
            BucketPage { width: 0, entries: page.entries.clone() },
            BucketPage { width: 9, entries: vec![0; 21] },
            BucketPage { width: 1, entries: vec![] },
            BucketPage { width: 2, entries: page.entries[..20].to_vec() },
            BucketPage { width: 2, entries: [&page.entries[14..], &page.entries[..14]].concat() },
        ];
        for (i, b) in bad.iter().enumerate() {
            assert!(b.validate().is_err(), "shape {i} accepted: {b:?}");
        }
    }
}
