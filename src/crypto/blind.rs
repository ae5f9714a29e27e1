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
