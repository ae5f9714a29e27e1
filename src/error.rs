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
    /// The root key (or a bring-your-own org key) does not match the one the data was sealed with
    /// — also on a `Db` whose root key another instance has rotated since (PostgreSQL): reopen
    /// it with the new key.
    #[error("wrong key")]
    WrongKey,
    /// No organization with this name exists in the database.
    #[error("organization not found: {0}")]
    OrgNotFound(String),
    /// An organization with this name already exists.
    #[error("organization already exists: {0}")]
    OrgExists(String),
    /// A stored value (or a bundle being imported) failed authentication or validation.
    #[error("corrupt {at}: table `{table}`, key {key}")]
    Corrupt {
        /// The table holding the record (`bundle` for an import bundle).
        table: &'static str,
        /// The opaque storage key, hex encoded (reveals nothing beyond what the file already
        /// does); for a bundle, what was wrong with it.
        key: String,
        /// What failed: a stored record, an import bundle, an audit entry.
        at: CorruptAt,
    },
    /// The file or a value uses a format version this build does not understand.
    #[error("unsupported format: {0}")]
    UnsupportedFormat(String),
    /// The org's custody key was destroyed (the org was deleted): nothing of it can be opened,
    /// in this file or any copy. A [`KeyCustody`](crate::KeyCustody) returns it from `unwrap`;
    /// silograph reports such an org as [`Error::OrgNotFound`].
    #[error("the custody key was destroyed")]
    CustodyKeyDestroyed,
    /// The handle's scope does not include this compartment.
    #[error("access denied: the handle's scope does not include the {0:?} compartment")]
    Denied(Compartment),
    /// The caller passed a value that cannot be accepted: [`InputError::kind`] says which rule it
    /// broke, the message says how.
    #[error("invalid input: {0}")]
    InvalidInput(InputError),
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
    /// The operation is not available on this storage backend (e.g. `compact` rewrites a redb
    /// file; a PostgreSQL database is compacted by the server).
    #[error("`{operation}` is not supported by the {backend} storage backend")]
    Unsupported {
        /// The operation asked for.
        operation: &'static str,
        /// The backend the database is on.
        backend: &'static str,
    },
    /// The database is older than the anchor the host kept ([`crate::Anchor`],
    /// [`crate::DbBuilder::expect_anchor`]): a copy of the whole file from before the anchor was
    /// put back (or a different history with the same commit count). Nothing was written.
    #[error("the database was rolled back: its commit counter is {file}, the host's anchor is at {anchor}")]
    RolledBack {
        /// The file's commit counter.
        file: u64,
        /// The anchor's commit counter.
        anchor: u64,
    },
    /// An I/O operation failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Where corruption was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptAt {
    /// A stored record (page, property map, registry entry, ...).
    Record,
    /// An export bundle being imported.
    Bundle,
    /// The audit entry with this sequence number.
    AuditEntry(u64),
    /// The org registry as a whole: it does not match the database root (a registry row was
    /// removed, put back from an older copy, added, or moved between orgs).
    Registry,
}

impl std::fmt::Display for CorruptAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CorruptAt::Record => f.write_str("record"),
            CorruptAt::Bundle => f.write_str("bundle"),
            CorruptAt::AuditEntry(seq) => write!(f, "audit entry {seq}"),
            CorruptAt::Registry => f.write_str("org registry (it does not match the database root)"),
        }
    }
}

/// Which rule an input broke (the kind of an [`InputError`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputKind {
    /// A name, id or actor is empty.
    Empty {
        /// What was empty (`"kind"`, `"external id"`, `"org name"`, ...).
        field: &'static str,
    },
    /// A name, id or value is longer than its limit.
    TooLong {
        /// What was too long.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A value, record or bundle item is larger than the store can seal or carry.
    TooLarge,
    /// No node with this id exists in the org (or no node with this source, for the bulk
    /// loader's `add_edge_by_source`).
    UnknownNode,
    /// No edge with this id exists in the org.
    UnknownEdge,
    /// A name the store does not know (e.g. a compartment).
    UnknownName,
    /// An empty or inverted time window (`valid_from >= valid_to`, `valid_between(a, b)` with
    /// `a >= b`).
    InvalidTimeRange,
    /// A traversal limit of 0.
    InvalidLimit,
    /// The sources of one node input name two different stored nodes.
    ConflictingSources,
    /// A key of the wrong kind for this org: a managed org opened with a key, a BYOK org opened
    /// without one, or a BYOK org asked to rotate its host-held key.
    KeyKind,
    /// A key, or a key file or variable, is not 32 bytes or 64 hex digits, or is unreadable or
    /// too widely readable.
    KeyFormat,
    /// A scope without the `Core` compartment.
    InvalidScope,
    /// A counter ran out (kind ids, key epochs, root generations, pages of one node).
    Exhausted,
    /// The operation needs another state (compact needs the only handle and a file path; a bulk
    /// load cannot join a group commit; a write transaction or bulk load one of whose changes
    /// failed part-way takes no further change and no commit, only a drop).
    WrongState,
    /// An anchor of another database, altered, or of the wrong length.
    Anchor,
}

/// A refused input: its [`InputKind`] and a message saying what exactly was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    kind: InputKind,
    message: String,
}

impl InputError {
    /// Which rule the input broke.
    pub fn kind(&self) -> &InputKind {
        &self.kind
    }

    /// What exactly was wrong, for people.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error {
    pub(crate) fn corrupt(table: &'static str, key: &[u8]) -> Self {
        Error::Corrupt { table, key: hex::encode(key), at: CorruptAt::Record }
    }

    pub(crate) fn invalid(kind: InputKind, msg: impl Into<String>) -> Self {
        Error::InvalidInput(InputError { kind, message: msg.into() })
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
/// assert_eq!(storage.reason(), silograph::StorageReason::AlreadyOpen);
/// assert!(storage.source().is_some(), "the engine's error is kept for logs");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct StorageError {
    operation: &'static str,
    reason: StorageReason,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// Why the storage engine failed (the kind of a [`StorageError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageReason {
    /// The database file is locked by another handle or process.
    AlreadyOpen,
    /// An I/O operation failed.
    Io,
    /// The storage engine found its file or data damaged.
    Damaged,
    /// The file is in an older storage-engine format.
    UpgradeRequired,
    /// A value exceeds the storage engine's size limit.
    ValueTooLarge,
    /// The connection to a database server failed or was lost.
    Connection,
    /// The engine refused the transaction because a concurrent one conflicted with it.
    Conflict,
    /// Every connection of the pool stayed busy for the whole wait (PostgreSQL: the cap set by
    /// `DbBuilder::postgres_max_connections`; a thread holding a snapshot while it waits for a
    /// second connection can exhaust a small cap by itself).
    PoolExhausted,
    /// Any other failure of the engine (or of a custom storage backend).
    Other,
}

impl StorageError {
    /// A storage failure of `operation` (`"commit"`, `"read"`, ...) for `reason`, keeping the
    /// engine's own error as the source.
    #[allow(dead_code)]
    pub(crate) fn new(
        operation: &'static str,
        reason: StorageReason,
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        StorageError { operation, reason, source }
    }

    /// Why the engine failed.
    pub fn reason(&self) -> StorageReason {
        self.reason
    }

    /// The storage operation that failed (`"open"`, `"begin"`, `"open table"`, `"read/write"`,
    /// `"commit"`, `"compact"`, ...), for logs.
    pub fn operation(&self) -> &'static str {
        self.operation
    }
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.reason {
            StorageReason::AlreadyOpen => "the database file is already open",
            StorageReason::Io => "an I/O operation failed",
            StorageReason::Damaged => "the storage engine found the file damaged",
            StorageReason::UpgradeRequired => "the file is in an older storage format",
            StorageReason::ValueTooLarge => "a value exceeds the storage engine's size limit",
            StorageReason::Connection => "the connection to the database server failed",
            StorageReason::Conflict => "the storage engine refused a conflicting transaction",
            StorageReason::PoolExhausted => "no pooled connection became free in time",
            StorageReason::Other => "the storage engine failed",
        })
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl StorageError {
    fn from_redb(operation: &'static str, e: redb::Error) -> Self {
        let reason = match &e {
            redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => StorageReason::AlreadyOpen,
            redb::Error::Io(_) | redb::Error::PreviousIo => StorageReason::Io,
            redb::Error::Corrupted(_) => StorageReason::Damaged,
            redb::Error::UpgradeRequired(_) => StorageReason::UpgradeRequired,
            redb::Error::ValueTooLarge(_) => StorageReason::ValueTooLarge,
            _ => StorageReason::Other,
        };
        StorageError { operation, reason, source: Some(Box::new(e)) }
    }
}

macro_rules! storage_from {
    ($($t:ty => $op:literal),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Storage(StorageError::from_redb($op, redb::Error::from(e)))
            }
        }
    )*};
}

storage_from!(
    redb::Error => "storage",
    redb::DatabaseError => "open",
    redb::TransactionError => "begin",
    redb::TableError => "open table",
    redb::StorageError => "read/write",
    redb::CommitError => "commit",
    redb::CompactionError => "compact",
    redb::CursorError => "write"
);
