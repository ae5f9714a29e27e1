#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
//! silograph: an embedded, encrypted, multi-tenant context-graph store.
//!
//! One redb file holds many organizations. Every organization's records are sealed with keys
//! derived from that organization's own random seed; a handle for one organization cannot
//! address, let alone decrypt, another's records; every failure to authenticate is an error,
//! never data. See the README and `docs/design.md`.
//!
//! # Features
//!
//! - `petgraph` (on by default): `Subgraph::to_petgraph` exports a traversal's subgraph to a
//!   petgraph `Graph`. Turn default features off to build without petgraph.
//! - `tracing`: [`tracing`](https://docs.rs/tracing) spans at level `debug` on
//!   [`DbBuilder::open`], [`WriteTxn::commit`], each group-commit round (field `sets`: how many
//!   orgs' write sets it committed together), [`Db::rotate_root_key`], [`Db::rotate_org_key`],
//!   [`Db::verify`] and [`Org::verify`]. Their fields are counts only: never a key, an org name,
//!   an id or a property value. Without the feature no tracing code is compiled in.
//! - `serde`: `serde::Serialize` for the reports ([`VerifyReport`], [`CorruptRecord`],
//!   [`RotationReport`], [`DeleteReport`], [`BundleReport`], [`OrgInfo`], [`AuditEntry`],
//!   [`AuditReport`], [`BulkStats`]) and views ([`NodeView`], [`EdgeView`], [`Neighbor`],
//!   [`Path`], [`Subgraph`], [`SubgraphEdge`]); `Serialize` and `Deserialize` for the plain
//!   values they hold ([`NodeId`], [`EdgeId`], [`KindId`], [`Direction`], [`Compartment`],
//!   [`Value`], [`SourceRef`]; the two enums as lowercase strings, `"out"`, `"raw"`). Key types
//!   never implement either.
//! - `fuzzing`: internal hooks for the fuzz targets and the hardening tests; not part of the API.
//!
//! # Async hosts
//!
//! Every call blocks: a commit waits for its fsync, and sealing and opening records is
//! CPU-bound crypto. An async host runs them on a blocking pool (`tokio::task::spawn_blocking`),
//! never on its executor's threads; `examples/async_service.rs` shows how.

mod codec;
mod crypto;
mod custody;
mod error;
mod filter;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod graph;
mod keyprovider;
mod store;
mod types;

pub use crypto::{KeyringKey, OrgKey, RootKey, TransportKey};
pub use custody::{CallbackCustody, CustodyKeyId, KeyCustody, LocalKeyring};
pub use error::{CorruptAt, Error, InputError, InputKind, Result, StorageError, StorageReason};
pub use graph::{Path, PathOptions, Subgraph, SubgraphEdge, Traversal};
pub use keyprovider::{CallbackKey, EnvKey, FileKey, KeyProvider};
#[cfg(feature = "postgres")]
pub use store::DEFAULT_POSTGRES_MAX_CONNECTIONS;
pub use store::{Anchor, BulkLoader, BulkStats, DEFAULT_BULK_BUDGET};
pub use store::{
    Audit, AuditEntry, AuditReport, BundleReport, CorruptRecord, DeleteReport, OrgInfo, RotationReport, SecretValue,
    Secrets, VerifyReport, ADMIN_BATCH, DEFAULT_ROTATE_AFTER_SEALS,
};
pub use store::{
    Db, DbBuilder, EdgeInput, EdgeView, Neighbor, NeighborFilter, Neighbors, NodeInput, NodeView, Org, ReadTxn,
    WriteTxn, FORMAT_VERSION, MAX_EXTERNAL_ID_LEN, MAX_NAME_LEN, MAX_VALUE_LEN,
};
pub use types::{Compartment, Direction, EdgeId, KindId, NodeId, OrgTag, SourceRef, Timestamp, Value};

/// Compiles the README's Rust examples as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
