//! The one error type of silograph.

use crate::types::Compartment;

/// Result alias used throughout silograph.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, as variants a caller can act on.
///
/// Errors never carry key material, plaintext or property values: `Corrupt` names the table and
/// the opaque (blinded) record key only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The root key (or a bring-your-own org key) does not match the one the data was sealed with.
    #[error("wrong key")]
    WrongKey,
    /// No organization with this name exists in the database.
    #[error("organization not found: {0}")]
    OrgNotFound(String),
    /// An organization with this name already exists.
    #[error("organization already exists: {0}")]
    OrgExists(String),
    /// A stored value failed authentication or archive validation.
    #[error("corrupt record in table `{table}` at key {key}")]
    Corrupt {
        /// The table holding the record.
        table: &'static str,
        /// The opaque storage key, hex encoded (reveals nothing beyond what the file already does).
        key: String,
    },
    /// The file or a value uses a format version this build does not understand.
    #[error("unsupported format: {0}")]
    UnsupportedFormat(String),
    /// The handle's scope does not include this compartment.
    #[error("access denied: the handle's scope does not include the {0:?} compartment")]
    Denied(Compartment),
    /// The caller passed a value that cannot be accepted; the message says what was wrong.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Another writer changed this organization's registry entry while the transaction was
    /// open (e.g. an administrative operation on another handle); nothing of the transaction
    /// was written. Retry it.
    #[error("write conflict in organization {0}: nothing was committed; retry")]
    Conflict(String),
    /// An internal invariant broke (a bug, or a panic contained on the way); nothing of the
    /// operation was committed.
    #[error("internal error: {0}")]
    Internal(String),
    /// The storage engine underneath failed (a lock held by another process, an I/O failure,
    /// a damaged file); see [`StorageError`].
    #[error("storage error: {0}")]
    Storage(#[from] StorageError),
    /// An I/O operation failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    pub(crate) fn corrupt(table: &'static str, key: &[u8]) -> Self {
        Error::Corrupt { table, key: hex::encode(key) }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidInput(msg.into())
    }
}

/// A failure of the storage engine underneath silograph.
///
/// Opaque on purpose: the engine is an implementation detail, so its error types are not part of
/// silograph's API. `Display` names the kind of failure; the engine's own error, with the details
/// (which lock, which I/O error), is the [`source`](std::error::Error::source), for logs. Print
/// the whole chain to see both.
///
/// ```
/// use std::error::Error as _;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("ctx.silo");
/// let root = || silograph::RootKey::from_bytes([1; 32]);
/// let _first = silograph::Db::open(&path, root())?;
/// // The file is locked by the first handle.
/// let err = silograph::Db::open(&path, root()).unwrap_err();
/// let silograph::Error::Storage(storage) = &err else { panic!("expected a storage error, got {err}") };
/// assert_eq!(storage.to_string(), "the database file is already open");
/// assert!(storage.source().is_some(), "the engine's error is kept for logs");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct StorageError(redb::Error);

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match &self.0 {
            redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => "the database file is already open",
            redb::Error::Io(_) | redb::Error::PreviousIo => "an I/O operation failed",
            redb::Error::Backend(_) => "the storage backend failed",
            redb::Error::Corrupted(_) => "the storage engine found the file damaged",
            redb::Error::UpgradeRequired(_) => "the file is in an older storage format",
            redb::Error::ValueTooLarge(_) => "a value exceeds the storage engine's size limit",
            _ => "the storage engine failed",
        })
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Storage(StorageError(redb::Error::from(e)))
            }
        }
    )*};
}

storage_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::CompactionError
);
