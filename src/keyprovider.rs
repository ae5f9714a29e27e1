//! Where the root key comes from: an environment variable, a file, or a host callback (KMS).

use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::crypto::{RootKey, KEY_LEN};
use crate::error::{Error, Result};

/// A source of the root key. The key is fetched once per open and never stored by silograph.
///
/// ```
/// use silograph::{KeyProvider, RootKey};
/// // A host callback, e.g. one that asks a KMS to unwrap a data key.
/// let kms = silograph::CallbackKey::new(|| Ok(RootKey::from_bytes([3u8; 32])));
/// let root = kms.root_key()?;
/// # Ok::<(), silograph::Error>(())
/// ```
pub trait KeyProvider {
    /// Produces the root key.
    fn root_key(&self) -> Result<RootKey>;
}

/// The root key as 64 hex digits in an environment variable.
#[derive(Debug, Clone)]
pub struct EnvKey {
    var: String,
}

impl EnvKey {
    /// Reads the key from the environment variable `var`.
    pub fn new(var: impl Into<String>) -> Self {
        EnvKey { var: var.into() }
    }
}

impl KeyProvider for EnvKey {
    fn root_key(&self) -> Result<RootKey> {
        let value = Zeroizing::new(
            std::env::var(&self.var)
                .map_err(|_| Error::invalid(format!("environment variable {} is not set", self.var)))?,
        );
        RootKey::from_hex(&value)
    }
}

/// The root key in a file: either 64 hex digits (whitespace around them ignored) or exactly 32
/// raw bytes.
#[derive(Debug, Clone)]
pub struct FileKey {
    path: PathBuf,
}

impl FileKey {
    /// Reads the key from the file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileKey { path: path.into() }
    }
}

impl KeyProvider for FileKey {
    fn root_key(&self) -> Result<RootKey> {
        let bytes = Zeroizing::new(std::fs::read(&self.path)?);
        if bytes.len() == KEY_LEN {
            return RootKey::from_slice(&bytes);
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| Error::invalid("key file is neither 32 bytes nor hex"))?;
        RootKey::from_hex(text)
    }
}

/// The root key from a host callback, e.g. a KMS client.
pub struct CallbackKey<F> {
    f: F,
}

impl<F: Fn() -> Result<RootKey>> CallbackKey<F> {
    /// Calls `f` for the key at each open.
    pub fn new(f: F) -> Self {
        CallbackKey { f }
    }
}

impl<F> std::fmt::Debug for CallbackKey<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallbackKey")
    }
}

impl<F: Fn() -> Result<RootKey>> KeyProvider for CallbackKey<F> {
    fn root_key(&self) -> Result<RootKey> {
        (self.f)()
    }
}

impl crate::DbBuilder {
    /// Opens the database at `path` with the root key from `provider`.
    pub fn open_with_provider(
        self,
        path: impl AsRef<std::path::Path>,
        provider: &dyn KeyProvider,
    ) -> Result<crate::Db> {
        self.open(path, provider.root_key()?)
    }
}
