//! AES-256-GCM with caller-chosen associated data, for framing outside the record envelope
//! (export bundles): `nonce ‖ ciphertext ‖ tag`.

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Nonce, Tag};

use super::keys::{random_nonce, AeadKey};
use crate::error::{Error, InputKind, Result};

/// Seals `plaintext` bound to `aad` under a fresh random nonce.
pub(crate) fn seal(key: &AeadKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let nonce = random_nonce()?;
    let mut out = Vec::with_capacity(12 + plaintext.len() + 16);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = key
        .0
        .encrypt_inout_detached(&Nonce::from(nonce), aad, (&mut out[12..]).into())
        .map_err(|_| Error::invalid(InputKind::TooLarge, "chunk too large"))?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Opens what [`seal`] produced with the same `aad`; `None` on any failure.
pub(crate) fn open(key: &AeadKey, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < 28 {
        return None;
    }
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&sealed[..12]);
    let tag = Tag::try_from(&sealed[sealed.len() - 16..]).ok()?;
    let mut buf = sealed[12..sealed.len() - 16].to_vec();
    match key.0.decrypt_inout_detached(&Nonce::from(nonce), aad, buf.as_mut_slice().into(), &tag) {
        Ok(()) => Some(buf),
        Err(_) => {
            zeroize::Zeroize::zeroize(&mut buf);
            None
        }
    }
}
