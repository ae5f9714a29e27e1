//! Key types and the HKDF derivation tree (DESIGN §2).

use aes_gcm::aead::KeyInit;
use aes_gcm::Aes256Gcm;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, InputKind, Result};

/// Length of every secret key in silograph.
pub const KEY_LEN: usize = 32;

macro_rules! secret_key_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Zeroize, ZeroizeOnDrop)]
        pub struct $name([u8; KEY_LEN]);

        // The crate-private `Secret` needs only some of these constructors.
        #[allow(dead_code)]
        impl $name {
            /// Wraps 32 key bytes. The caller should zeroize its own copy.
            pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
                $name(bytes)
            }

            /// Reads a key from a slice; it must be exactly 32 bytes.
            pub fn from_slice(bytes: &[u8]) -> Result<Self> {
                let arr: [u8; KEY_LEN] = bytes.try_into().map_err(|_| {
                    Error::invalid(InputKind::KeyFormat, format!("a key must be {KEY_LEN} bytes, got {}", bytes.len()))
                })?;
                Ok($name(arr))
            }

            /// Parses a key from 64 hex digits (surrounding whitespace is ignored).
            pub fn from_hex(text: &str) -> Result<Self> {
                let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
                hex::decode_to_slice(text.trim(), bytes.as_mut())
                    .map_err(|_| Error::invalid(InputKind::KeyFormat, "a hex key must be exactly 64 hex digits"))?;
                Ok($name(*bytes))
            }

            /// A fresh key from the operating system's random number generator.
            pub fn generate() -> Result<Self> {
                let mut bytes = [0u8; KEY_LEN];
                fill_random(&mut bytes)?;
                Ok($name(bytes))
            }

            /// The key as 64 lowercase hex digits, in a zeroizing string (for writing a key file).
            pub fn to_hex(&self) -> Zeroizing<String> {
                Zeroizing::new(hex::encode(self.0))
            }

            pub(crate) fn expose(&self) -> &[u8; KEY_LEN] {
                &self.0
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }
    };
}

secret_key_type!(
    /// The database's root key, supplied by the host (never stored).
    ///
    /// ```
    /// let root = silograph::RootKey::from_bytes([7u8; 32]);
    /// assert_eq!(format!("{root:?}"), "RootKey(<redacted>)");
    /// ```
    RootKey
);

secret_key_type!(
    /// A bring-your-own organization key, supplied by the host for one organization and never
    /// stored (only a key-check record is).
    OrgKey
);

secret_key_type!(
    /// The key an org export bundle is wrapped for: the exporting and the importing host both
    /// hold it (e.g. one agreed through the hosts' KMS). Never stored in the bundle.
    TransportKey
);

secret_key_type!(
    /// The key a [`LocalKeyring`](crate::LocalKeyring) file is sealed under, supplied by the
    /// host (never stored). Keep it with the root key, not with the keyring file.
    KeyringKey
);

secret_key_type!(
    /// A random per-organization seed, or any other 32-byte secret; stored only wrapped.
    Secret
);

impl Secret {
    pub(crate) fn copy_from(bytes: &[u8; KEY_LEN]) -> Self {
        Secret(*bytes)
    }
}

/// Fills `buf` with operating-system randomness.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<()> {
    // The OS error stays the source: `Io` of kind `Other` wrapping getrandom's error.
    getrandom::fill(buf).map_err(|e| Error::Io(std::io::Error::other(e)))
}

/// Random bytes drawn per refill of the nonce pool.
const NONCE_POOL: usize = 4096;

/// A per-thread pool of operating-system randomness for nonces: one `getrandom` call per 341
/// nonces instead of one per seal (a syscall per seal was a quarter of commit CPU). Nonces need
/// uniqueness, which random 96-bit values give as long as no bytes are ever handed out twice:
/// bytes are consumed once, and the pool is refilled when the process id changes, so a forked
/// child never reuses its parent's pool.
struct NoncePool {
    bytes: Zeroizing<[u8; NONCE_POOL]>,
    pos: usize,
    pid: u32,
}

thread_local! {
    static NONCES: std::cell::RefCell<NoncePool> = std::cell::RefCell::new(NoncePool {
        bytes: Zeroizing::new([0u8; NONCE_POOL]),
        pos: NONCE_POOL,
        pid: 0,
    });
}

/// A fresh random 96-bit nonce.
pub(crate) fn random_nonce() -> Result<[u8; 12]> {
    NONCES.with(|pool| {
        let mut pool = pool.borrow_mut();
        let pid = std::process::id();
        if pool.pos + 12 > NONCE_POOL || pool.pid != pid {
            fill_random(pool.bytes.as_mut())?;
            pool.pos = 0;
            pool.pid = pid;
        }
        let mut nonce = [0u8; 12];
        let start = pool.pos;
        nonce.copy_from_slice(&pool.bytes[start..start + 12]);
        pool.bytes[start..start + 12].fill(0);
        pool.pos += 12;
        Ok(nonce)
    })
}

/// HKDF-SHA256 (RFC 5869): extract with `salt` (an empty salt is the RFC's "not provided"),
/// then expand with the concatenation of the `info` parts into `out`.
///
/// `InvalidInput` if `out` is longer than HKDF-SHA256 can produce (255 × 32 bytes).
pub(crate) fn hkdf_sha256(ikm: &[u8], salt: &[u8], info: &[&[u8]], out: &mut [u8]) -> Result<()> {
    let hk = Hkdf::<Sha256>::new(Some(salt), ikm);
    hk.expand_multi_info(info, out)
        .map_err(|_| Error::invalid(InputKind::TooLarge, "HKDF-SHA256 output longer than 8160 bytes"))
}

/// HKDF-SHA256 expansion of `ikm` with `salt` and `info` into a 32-byte secret.
pub(crate) fn derive(ikm: &[u8], salt: &[u8], info: &[&[u8]]) -> Secret {
    let mut out = [0u8; KEY_LEN];
    // 32 bytes is always a valid HKDF-SHA256 output length, so this cannot fail.
    if hkdf_sha256(ikm, salt, info, &mut out).is_err() {
        out.zeroize();
    }
    Secret(out)
}

/// An AES-256-GCM key, ready to use. Zeroized on drop by aes-gcm's `zeroize` feature.
pub(crate) struct AeadKey(pub(crate) Aes256Gcm);

impl AeadKey {
    pub(crate) fn new(secret: &Secret) -> Self {
        AeadKey(Aes256Gcm::new(secret.expose().into()))
    }
}

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AeadKey(<redacted>)")
    }
}

/// An HMAC-SHA256 key, pre-keyed so each use costs only the message blocks.
#[derive(Clone)]
pub(crate) struct MacKey(Hmac<Sha256>);

impl MacKey {
    pub(crate) fn new(secret: &Secret) -> Self {
        // HMAC-SHA256 takes a key of up to one block (64 bytes) as is: zero-pad the 32-byte key.
        let mut block = Zeroizing::new([0u8; 64]);
        block[..KEY_LEN].copy_from_slice(secret.expose());
        let arr: &[u8; 64] = &block;
        MacKey(<Hmac<Sha256> as KeyInit>::new(arr.into()))
    }

    /// HMAC over the concatenation of `parts`, each prefixed with its length so that different
    /// splits of the same bytes never collide.
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut m = self.0.clone();
        for p in parts {
            m.update(&(p.len() as u32).to_le_bytes());
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(<redacted>)")
    }
}
