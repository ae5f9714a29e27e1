//! Blind record keys: a keyed PRP (AES-256 on one block) that turns `(table, id, …)` into an
//! opaque 16-byte key, so the file shows neither ids nor which records belong together.
//!
//! Two kinds of record are **clustered** instead (format version 6): the keys of one index
//! run's buckets share a keyed 12-byte prefix followed by the bucket number (big endian), and
//! the keys of edge pages share a keyed 8-byte prefix followed by the page number. A commit
//! writes a run's buckets, or a range of consecutive edge pages, together; with scattered keys
//! every one of those rows landed in its own B-tree leaf, which redb copies on write, so a
//! 10k-row commit copied about a thousand index leaves and the file doubled under the copies.
//! Clustered, they fill a few adjacent leaves. What this shows a holder of the file is in
//! `docs/design.md` (leakage profile): which rows form one run and the order of the edge
//! pages, never what they hold.

use aes::cipher::{BlockCipherEncrypt, KeyInit};
use aes::Aes256;

use super::keys::Secret;
use crate::store::tables::blind_kind;

/// Index run slots with a precomputed key prefix: one more than `store::records::MAX_RUNS`, so a
/// new run always has a slot no live run holds (a run slot is below this).
pub(crate) const RUN_SLOTS: usize = 9;

/// Set in the kind byte of the block whose encryption is a clustered prefix: no record key is
/// the encryption of such a block, so a prefix is never another record's key.
const PREFIX: u8 = 0x80;

/// The blinding key of one organization.
pub(crate) struct BlindKey {
    aes: Aes256,
    /// Key prefix of each index run slot's buckets.
    runs: [[u8; 12]; RUN_SLOTS],
    /// Key prefix of the edge pages.
    edges: [u8; 8],
}

impl BlindKey {
    pub(crate) fn new(secret: &Secret) -> Self {
        let aes = Aes256::new(secret.expose().into());
        let runs = std::array::from_fn(|slot| run_prefix(&aes, slot as u32));
        let b = encrypt(&aes, PREFIX | blind_kind::EDGE, 0, 0, 0);
        let mut edges = [0u8; 8];
        edges.copy_from_slice(&b[..8]);
        BlindKey { aes, runs, edges }
    }

    /// The opaque 16-byte key of record `(kind, sub, page, id)`.
    ///
    /// Distinct inputs give distinct keys: a block cipher is a permutation, a clustered key is
    /// its prefix and its number, and a clustered input is never encrypted whole.
    pub(crate) fn blind(&self, kind: u8, sub: u8, page: u32, id: u64) -> [u8; 16] {
        let mut out = [0u8; 16];
        match clustered(kind, sub, page, id) {
            Some(Cluster::Run(slot, bucket)) => {
                let p = self.runs.get(usize::from(slot)).copied().unwrap_or_else(|| run_prefix(&self.aes, page));
                out[..12].copy_from_slice(&p);
                out[12..].copy_from_slice(&bucket.to_be_bytes());
            }
            Some(Cluster::Edges(page)) => {
                out[..8].copy_from_slice(&self.edges);
                out[8..].copy_from_slice(&page.to_be_bytes());
            }
            None => out = encrypt(&self.aes, kind, sub, page, id),
        }
        out
    }
}

/// The clustered layouts: an index bucket `(slot, bucket)` and an edge page.
enum Cluster {
    Run(u8, u32),
    Edges(u64),
}

/// The clustered layout of `(kind, sub, page, id)`, if it has one.
fn clustered(kind: u8, sub: u8, page: u32, id: u64) -> Option<Cluster> {
    match (kind, sub, page) {
        (blind_kind::BUCKET, 0, slot) => Some(Cluster::Run(u8::try_from(slot).ok()?, u32::try_from(id).ok()?)),
        (blind_kind::EDGE, 0, 0) => Some(Cluster::Edges(id)),
        _ => None,
    }
}

/// The key prefix of the buckets of index run `slot` (precomputed for the slots in use).
fn run_prefix(aes: &Aes256, slot: u32) -> [u8; 12] {
    let b = encrypt(aes, PREFIX | blind_kind::BUCKET, 0, slot, 0);
    let mut p = [0u8; 12];
    p.copy_from_slice(&b[..12]);
    p
}

fn encrypt(aes: &Aes256, kind: u8, sub: u8, page: u32, id: u64) -> [u8; 16] {
    let mut block = [0u8; 16];
    block[0] = kind;
    block[1] = sub;
    block[4..8].copy_from_slice(&page.to_le_bytes());
    block[8..16].copy_from_slice(&id.to_le_bytes());
    let mut b = block.into();
    aes.encrypt_block(&mut b);
    b.into()
}

impl std::fmt::Debug for BlindKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlindKey(<redacted>)")
    }
}

/// What [`BlindKey::unblind`] returns for a key no record of this org can have (kind 0 is no
/// blind kind, so `RecordKind::of` refuses it).
const NO_RECORD: (u8, u8, u32, u64) = (0, 0, 0, 0);

impl BlindKey {
    /// Inverts [`BlindKey::blind`]: `(kind, sub, page, id)` of an opaque key (used by rotation,
    /// verification and export to learn what a record is without a side table). A key that
    /// [`BlindKey::blind`] gives no input is `(0, 0, 0, 0)`, which no record kind has.
    pub(crate) fn unblind(&self, opaque: &[u8; 16]) -> (u8, u8, u32, u64) {
        use aes::cipher::BlockCipherDecrypt;
        if let Some(slot) = self.runs.iter().position(|p| opaque[..12] == p[..]) {
            let bucket = u32::from_be_bytes([opaque[12], opaque[13], opaque[14], opaque[15]]);
            return (blind_kind::BUCKET, 0, slot as u32, u64::from(bucket));
        }
        if opaque[..8] == self.edges[..] {
            let mut page = [0u8; 8];
            page.copy_from_slice(&opaque[8..]);
            return (blind_kind::EDGE, 0, 0, u64::from_be_bytes(page));
        }
        let mut b = (*opaque).into();
        self.aes.decrypt_block(&mut b);
        let block: [u8; 16] = b.into();
        let page = u32::from_le_bytes([block[4], block[5], block[6], block[7]]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&block[8..16]);
        let id = u64::from_le_bytes(id);
        // A clustered input is never encrypted whole, nor is a prefix block, nor a nonzero pad.
        if clustered(block[0], block[1], page, id).is_some() || block[0] & PREFIX != 0 || block[2..4] != [0, 0] {
            return NO_RECORD;
        }
        (block[0], block[1], page, id)
    }
}
