//! The integration tests, one module per concern, linked into one test binary (one link instead
//! of one per file). Run one concern with a name filter: `cargo test --test it crash::`.
//! `tests/cli.rs` stays a binary of its own: it needs the `cli` feature and runs the tool.

mod common;

mod basic;
mod bulk;
mod byok;
mod canary;
mod crash;
mod custody;
mod file_tamper;
mod golden;
mod group_commit;
mod idempotent;
mod isolation;
mod keys;
mod leakage;
mod lifecycle;
mod model;
mod nonce;
#[cfg(feature = "postgres")]
mod postgres;
mod rekey;
mod secrets;
#[cfg(feature = "serde")]
mod serde_views;
mod state;
mod tamper;
mod traversal;
