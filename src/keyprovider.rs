//! Where the root key comes from: an environment variable, a file, or a host callback (KMS).

use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::crypto::{RootKey, KEY_LEN};
use crate::error::{Error, InputKind, Result};

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
        let value = Zeroizing::new(std::env::var(&self.var).map_err(|_| {
            Error::invalid(InputKind::KeyFormat, format!("environment variable {} is not set", self.var))
        })?);
        RootKey::from_hex(&value)
    }
}

/// The root key in a file: either 64 hex digits (whitespace around them ignored) or exactly 32
/// raw bytes.
///
/// On Unix the file must be private to its owner, as ssh requires of private keys: a key file
/// readable or writable by its group or by others (`mode & 0o077 != 0`, e.g. 0644) is refused with
/// [`Error::InvalidInput`] saying how to fix it (`chmod 600 FILE`).
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

/// Refuses a key-bearing file (`what`: "key file", "keyring") that its group or others may read
/// or write, as ssh does, saying how to fix it: `InvalidInput(KeyFormat)`. Checks the file
/// actually opened, not whatever `path` names a moment later. No check off Unix.
pub(crate) fn check_private(file: &std::fs::File, what: &str, path: &std::path::Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata()?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(Error::invalid(
                InputKind::KeyFormat,
                format!(
                    "{what} {path} is accessible by group or others (mode {:04o}); a {what} must be private \
                     to its owner: run `chmod 600 {path}`",
                    mode & 0o7777,
                    path = path.display()
                ),
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = (file, what, path);
    Ok(())
}

impl KeyProvider for FileKey {
    fn root_key(&self) -> Result<RootKey> {
        let mut file = std::fs::File::open(&self.path)?;
        check_private(&file, "key file", &self.path)?;
        let mut bytes = Zeroizing::new(Vec::new());
        std::io::Read::read_to_end(&mut file, &mut bytes)?;
        if bytes.len() == KEY_LEN {
            return RootKey::from_slice(&bytes);
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| Error::invalid(InputKind::KeyFormat, "key file is neither 32 bytes nor hex"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn write_key_file(path: &std::path::Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, "11".repeat(32)).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn key_file_readable_by_group_or_others_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        for mode in [0o644, 0o640, 0o604, 0o666, 0o660, 0o602, 0o620] {
            write_key_file(&path, mode);
            let err = FileKey::new(&path).root_key().unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{mode:o}: {err:?}");
            let msg = err.to_string();
            assert!(msg.contains(&format!("chmod 600 {}", path.display())), "{mode:o}: {msg}");
            assert!(msg.contains(&format!("{mode:04o}")), "{mode:o}: {msg}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn key_file_private_to_its_owner_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        for mode in [0o600, 0o400] {
            write_key_file(&path, mode);
            let key = FileKey::new(&path).root_key().unwrap();
            assert_eq!(key.to_hex().as_str(), "11".repeat(32));
        }
    }
}
