//! Blind record keys: a keyed PRP (AES-256 on one block) that turns `(table, id, …)` into an
//! opaque 16-byte key, so the file shows neither ids nor which records belong together.

use aes::cipher::{BlockCipherEncrypt, KeyInit};
use aes::Aes256;

use super::keys::Secret;

/// The blinding key of one organization.
pub(crate) struct BlindKey(Aes256);

impl BlindKey {
    pub(crate) fn new(secret: &Secret) -> Self {
        BlindKey(Aes256::new(secret.expose().into()))
    }

    /// The opaque 16-byte key of record `(kind, sub, page, id)`.
    ///
    /// A block cipher is a permutation, so distinct inputs give distinct keys: no collisions.
    pub(crate) fn blind(&self, kind: u8, sub: u8, page: u32, id: u64) -> [u8; 16] {
        let mut block = [0u8; 16];
        block[0] = kind;
        block[1] = sub;
        block[4..8].copy_from_slice(&page.to_le_bytes());
        block[8..16].copy_from_slice(&id.to_le_bytes());
        let mut b = block.into();
        self.0.encrypt_block(&mut b);
        b.into()
    }
}

impl std::fmt::Debug for BlindKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlindKey(<redacted>)")
    }
}

impl BlindKey {
    /// Inverts [`BlindKey::blind`]: `(kind, sub, page, id)` of an opaque key (used by rotation,
    /// verification and export to learn what a record is without a side table).
    pub(crate) fn unblind(&self, opaque: &[u8; 16]) -> (u8, u8, u32, u64) {
        use aes::cipher::BlockCipherDecrypt;
        let mut b = (*opaque).into();
        self.0.decrypt_block(&mut b);
        let block: [u8; 16] = b.into();
        let page = u32::from_le_bytes([block[4], block[5], block[6], block[7]]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&block[8..16]);
        (block[0], block[1], page, u64::from_le_bytes(id))
    }
}
