//! The AES-256-GCM envelope of every stored value (DESIGN §3).
//!
//! ```text
//! version: u8 (=1) | epoch: u32 LE | nonce: [u8; 12] | ciphertext | tag: [u8; 16]
//! AAD = "silograph/1" ‖ db_id ‖ table id ‖ len(key) ‖ key ‖ epoch
//! ```

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Nonce, Tag};
use rkyv::util::AlignedVec;

use super::keys::{fill_random, AeadKey};
use crate::error::{Error, Result};

/// Envelope format version written by this build.
pub const ENVELOPE_VERSION: u8 = 1;
/// Bytes of envelope overhead: version, epoch, nonce, tag.
pub const OVERHEAD: usize = 1 + 4 + 12 + 16;
const HEADER: usize = 1 + 4 + 12;
const DOMAIN: &[u8] = b"silograph/1";

/// What a sealed value is bound to: the database, the table and the full storage key.
#[derive(Clone, Copy, Debug)]
pub struct Binding<'a> {
    /// The database's random id.
    pub db_id: &'a [u8; 16],
    /// The table id.
    pub table: u8,
    /// The full redb key bytes of the record.
    pub key: &'a [u8],
}

fn aad(b: &Binding<'_>, epoch: u32) -> Vec<u8> {
    let mut a = Vec::with_capacity(DOMAIN.len() + 16 + 1 + 4 + b.key.len() + 4);
    a.extend_from_slice(DOMAIN);
    a.extend_from_slice(b.db_id);
    a.push(b.table);
    a.extend_from_slice(&(b.key.len() as u32).to_le_bytes());
    a.extend_from_slice(b.key);
    a.extend_from_slice(&epoch.to_le_bytes());
    a
}

/// Seals `plaintext` under `key`, bound to `binding` and `epoch`, with a fresh random nonce.
pub(crate) fn seal(key: &AeadKey, epoch: u32, binding: &Binding<'_>, plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut nonce = [0u8; 12];
    fill_random(&mut nonce)?;
    seal_with_nonce(key, epoch, binding, plaintext, &nonce)
}

pub(crate) fn seal_with_nonce(
    key: &AeadKey,
    epoch: u32,
    binding: &Binding<'_>,
    plaintext: &[u8],
    nonce: &[u8; 12],
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
    out.push(ENVELOPE_VERSION);
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(nonce);
    out.extend_from_slice(plaintext);
    let tag = key
        .0
        .encrypt_inout_detached(&Nonce::from(*nonce), &aad(binding, epoch), (&mut out[HEADER..]).into())
        .map_err(|_| Error::invalid("value too large to seal"))?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// The epoch a sealed value claims, after checking the version. Used to pick the key.
pub(crate) fn peek_epoch(sealed: &[u8], table: &'static str, key: &[u8]) -> Result<u32> {
    let Some(&version) = sealed.first() else {
        return Err(Error::corrupt(table, key));
    };
    if version != ENVELOPE_VERSION {
        return Err(Error::UnsupportedFormat(format!("envelope version {version} in table `{table}`")));
    }
    if sealed.len() < OVERHEAD {
        return Err(Error::corrupt(table, key));
    }
    let mut e = [0u8; 4];
    e.copy_from_slice(&sealed[1..5]);
    Ok(u32::from_le_bytes(e))
}

/// Opens a sealed value into a 16-byte aligned buffer, ready for archive validation.
///
/// Any failure is `Corrupt` (or `UnsupportedFormat` for an unknown version); nothing of the
/// plaintext is returned on failure.
pub(crate) fn open(key: &AeadKey, binding: &Binding<'_>, table: &'static str, sealed: &[u8]) -> Result<AlignedVec> {
    let epoch = peek_epoch(sealed, table, binding.key)?;
    let body = &sealed[HEADER..sealed.len() - 16];
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&sealed[5..HEADER]);
    let tag = Tag::try_from(&sealed[sealed.len() - 16..]).map_err(|_| Error::corrupt(table, binding.key))?;
    let mut buf = AlignedVec::<16>::with_capacity(body.len());
    buf.extend_from_slice(body);
    match key.0.decrypt_inout_detached(&Nonce::from(nonce), &aad(binding, epoch), buf.as_mut_slice().into(), &tag) {
        Ok(()) => Ok(buf),
        Err(_) => {
            zeroize::Zeroize::zeroize(buf.as_mut_slice());
            Err(Error::corrupt(table, binding.key))
        }
    }
}
