//! The AES-256-GCM envelope of every stored value (DESIGN §3).
//!
//! ```text
//! version: u8 (=1) | epoch: u32 LE | nonce: [u8; 12] | ciphertext | tag: [u8; 16]
//! AAD = "silograph/1" ‖ db_id ‖ table id ‖ len(key) ‖ key ‖ epoch
//! ```

#[cfg(not(feature = "bench-null-cipher"))]
use aes_gcm::aead::AeadInOut;
#[cfg(not(feature = "bench-null-cipher"))]
use aes_gcm::{Nonce, Tag};
use rkyv::util::AlignedVec;

use super::keys::{random_nonce, AeadKey};
use crate::error::{Error, Result};

/// Envelope format version written by this build.
#[cfg(not(feature = "bench-null-cipher"))]
pub const ENVELOPE_VERSION: u8 = 2;
/// Envelope format version written by this build: 0xFF marks the INSECURE null cipher of the
/// `bench-null-cipher` feature (benchmarks only), so its files and normal files never mix.
#[cfg(feature = "bench-null-cipher")]
pub const ENVELOPE_VERSION: u8 = 0xFF;

// The null cipher must be asked for twice: by the feature and by an environment variable at build
// time, so that `--all-features` alone (cargo build / test / doc) cannot produce a build that
// does not encrypt. Clippy only inspects the code and is let through.
#[cfg(all(feature = "bench-null-cipher", not(clippy)))]
const _: () = assert!(
    option_env!("SILOGRAPH_INSECURE_NULL_CIPHER").is_some(),
    "feature `bench-null-cipher` turns encryption OFF (benchmarks only); \
     set SILOGRAPH_INSECURE_NULL_CIPHER=1 in the build environment to confirm"
);
/// Bytes of envelope overhead: version, epoch, nonce, tag.
pub const OVERHEAD: usize = 1 + 4 + 8 + 12 + 16;
const HEADER: usize = 1 + 4 + 8 + 12;
const DOMAIN: &[u8] = b"silograph/2";

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

fn aad(b: &Binding<'_>, epoch: u32, version: u64) -> Vec<u8> {
    let mut a = Vec::with_capacity(DOMAIN.len() + 16 + 1 + 4 + b.key.len() + 4 + 8);
    a.extend_from_slice(DOMAIN);
    a.extend_from_slice(b.db_id);
    a.push(b.table);
    a.extend_from_slice(&(b.key.len() as u32).to_le_bytes());
    a.extend_from_slice(b.key);
    a.extend_from_slice(&epoch.to_le_bytes());
    a.extend_from_slice(&version.to_le_bytes());
    a
}

/// Seals `plaintext` under `key`, bound to `binding` and `epoch`, with a fresh random nonce.
pub(crate) fn seal(key: &AeadKey, epoch: u32, binding: &Binding<'_>, plaintext: &[u8]) -> Result<Vec<u8>> {
    seal_versioned(key, epoch, 0, binding, plaintext)
}

/// Seals with a page version: the org's commit counter when the page was written, carried in
/// the header and bound into the AAD (so it cannot be changed without the key).
pub(crate) fn seal_versioned(
    key: &AeadKey,
    epoch: u32,
    version: u64,
    binding: &Binding<'_>,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let nonce = random_nonce()?;
    seal_full(key, epoch, version, binding, plaintext, &nonce)
}

#[cfg(all(test, not(feature = "bench-null-cipher")))]
pub(crate) fn seal_with_nonce(
    key: &AeadKey,
    epoch: u32,
    version: u64,
    binding: &Binding<'_>,
    plaintext: &[u8],
    nonce: &[u8; 12],
) -> Result<Vec<u8>> {
    seal_full(key, epoch, version, binding, plaintext, nonce)
}

fn seal_full(
    key: &AeadKey,
    epoch: u32,
    version: u64,
    binding: &Binding<'_>,
    plaintext: &[u8],
    nonce: &[u8; 12],
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
    out.push(ENVELOPE_VERSION);
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(nonce);
    out.extend_from_slice(plaintext);
    let tag = seal_body(key, nonce, &aad(binding, epoch, version), &mut out[HEADER..])?;
    out.extend_from_slice(&tag);
    Ok(out)
}

#[cfg(not(feature = "bench-null-cipher"))]
fn seal_body(key: &AeadKey, nonce: &[u8; 12], aad: &[u8], body: &mut [u8]) -> Result<[u8; 16]> {
    let tag = key
        .0
        .encrypt_inout_detached(&Nonce::from(*nonce), aad, body.into())
        .map_err(|_| Error::invalid(crate::error::InputKind::TooLarge, "value too large to seal"))?;
    Ok(tag.into())
}

/// INSECURE null cipher (feature `bench-null-cipher`, benchmarks only): leaves the body in
/// plaintext and writes a zero tag. It exists to measure what AES-256-GCM costs.
#[cfg(feature = "bench-null-cipher")]
fn seal_body(_key: &AeadKey, _nonce: &[u8; 12], _aad: &[u8], _body: &mut [u8]) -> Result<[u8; 16]> {
    Ok([0u8; 16])
}

#[cfg(not(feature = "bench-null-cipher"))]
fn open_body(key: &AeadKey, nonce: &[u8; 12], aad: &[u8], body: &mut [u8], tag: &[u8]) -> bool {
    let Ok(tag) = Tag::try_from(tag) else { return false };
    key.0.decrypt_inout_detached(&Nonce::from(*nonce), aad, body.into(), &tag).is_ok()
}

/// INSECURE null cipher (feature `bench-null-cipher`): accepts any body whose tag is zero.
#[cfg(feature = "bench-null-cipher")]
fn open_body(_key: &AeadKey, _nonce: &[u8; 12], _aad: &[u8], _body: &mut [u8], tag: &[u8]) -> bool {
    tag.iter().all(|&b| b == 0)
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
/// The page version in a sealed value's header (unauthenticated until the value is opened).
pub(crate) fn peek_version(sealed: &[u8], table: &'static str, key: &[u8]) -> Result<u64> {
    peek_epoch(sealed, table, key)?;
    let mut v = [0u8; 8];
    v.copy_from_slice(&sealed[5..13]);
    Ok(u64::from_le_bytes(v))
}

pub(crate) fn open(key: &AeadKey, binding: &Binding<'_>, table: &'static str, sealed: &[u8]) -> Result<AlignedVec> {
    let epoch = peek_epoch(sealed, table, binding.key)?;
    let version = peek_version(sealed, table, binding.key)?;
    let body = &sealed[HEADER..sealed.len() - 16];
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&sealed[13..HEADER]);
    let tag = &sealed[sealed.len() - 16..];
    let mut buf = AlignedVec::<16>::with_capacity(body.len());
    buf.extend_from_slice(body);
    if open_body(key, &nonce, &aad(binding, epoch, version), buf.as_mut_slice(), tag) {
        Ok(buf)
    } else {
        zeroize::Zeroize::zeroize(buf.as_mut_slice());
        Err(Error::corrupt(table, binding.key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Secret;

    fn binding() -> ([u8; 16], Vec<u8>) {
        ([7u8; 16], b"tag-and-key".to_vec())
    }

    #[test]
    fn sealed_value_round_trips_under_this_builds_version() {
        let key = AeadKey::new(&Secret::from_bytes([3u8; 32]));
        let (db_id, k) = binding();
        let b = Binding { db_id: &db_id, table: 4, key: &k };
        let sealed = seal(&key, 0, &b, b"hello").unwrap();
        assert_eq!(sealed[0], ENVELOPE_VERSION);
        assert_eq!(open(&key, &b, "t", &sealed).unwrap().as_slice(), b"hello");
    }

    /// A file sealed by the other kind of build (normal AES-GCM vs the bench null cipher) must
    /// be refused as an unsupported format, never read.
    #[test]
    fn envelope_of_the_other_cipher_build_is_refused() {
        let key = AeadKey::new(&Secret::from_bytes([3u8; 32]));
        let (db_id, k) = binding();
        let b = Binding { db_id: &db_id, table: 4, key: &k };
        let mut sealed = seal(&key, 0, &b, b"hello").unwrap();
        let other: u8 = if cfg!(feature = "bench-null-cipher") { 1 } else { 0xFF };
        assert_ne!(other, ENVELOPE_VERSION);
        sealed[0] = other;
        assert!(matches!(open(&key, &b, "t", &sealed), Err(Error::UnsupportedFormat(_))));
        assert!(matches!(peek_epoch(&sealed, "t", &k), Err(Error::UnsupportedFormat(_))));
    }

    #[cfg(not(feature = "bench-null-cipher"))]
    #[test]
    fn normal_build_encrypts_and_authenticates() {
        let key = AeadKey::new(&Secret::from_bytes([3u8; 32]));
        let (db_id, k) = binding();
        let b = Binding { db_id: &db_id, table: 4, key: &k };
        let sealed = seal(&key, 0, &b, b"hello world").unwrap();
        assert!(!sealed.windows(11).any(|w| w == b"hello world"));
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(open(&key, &b, "t", &bad), Err(Error::Corrupt { .. })));
    }
}
