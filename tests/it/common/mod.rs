//! The fixtures shared by every test module: keys, temporary paths, in-memory databases; and
//! (also used, through `#[path]`, by the `ops_vs_model` fuzz target) in-memory and
//! fault-injecting storage backends, the `BTreeMap` model, a logical dump of an org through the
//! public read API, and the real-data slices of `tests/data`.
#![allow(dead_code)]

use std::ops::Deref;
use std::path::{Path, PathBuf};

use silograph::{Db, OrgKey, RootKey};

use backend::SharedBytes;

pub mod backend;
pub mod dump;
pub mod model;
#[cfg(feature = "postgres")]
pub mod pg;
#[path = "../../data/slices.rs"]
pub mod slices;

/// A tiny deterministic xorshift generator, so sweeps are reproducible from their seed.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (0 for `n == 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The bring-your-own org key of every test that needs no particular one (the model's `globex`).
pub use model::GLOBEX_KEY as BYOK;
/// The root key of every test that needs no particular one (the model's).
pub use model::ROOT;

/// [`ROOT`] as a key.
pub fn root() -> RootKey {
    RootKey::from_bytes(ROOT)
}

/// The root key `[b; 32]`, for tests that need several distinct ones.
pub fn root_key(b: u8) -> RootKey {
    RootKey::from_bytes([b; 32])
}

/// [`BYOK`] as a key.
pub fn byok() -> OrgKey {
    OrgKey::from_bytes(BYOK)
}

/// The root key and the `globex` key of the v7 golden fixture (`tests/fixtures/v7`).
pub const GOLDEN_ROOT: [u8; 32] = [0x5e; 32];
/// The `globex` (bring-your-own-key) org key of the golden fixture.
pub const GOLDEN_GLOBEX_KEY: [u8; 32] = [0x6f; 32];

/// The checked-in golden database (never opened in place: see [`copy_of_golden`]).
pub fn golden_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v7/golden.silo")
}

/// A private copy of the golden fixture: opening may write (recovery flags), and the committed
/// fixture must stay byte-for-byte as generated.
pub fn copy_of_golden(name: &str) -> TmpPath {
    let dst = tmp(name);
    std::fs::copy(golden_fixture(), &dst).expect("the v7 fixture is checked in (tests/fixtures/v7/golden.silo)");
    dst
}

/// A path named `name` inside a fresh temporary directory that is deleted, with everything in
/// it, when this value drops. Unique per call, so tests in one process never share a file.
#[derive(Debug)]
pub struct TmpPath {
    path: PathBuf,
    // Dropped after `path`'s users: the directory outlives every borrow of the path.
    _dir: tempfile::TempDir,
}

/// A fresh [`TmpPath`] (nothing exists at it yet).
pub fn tmp(name: &str) -> TmpPath {
    let dir = tempfile::Builder::new().prefix("silograph-test-").tempdir().expect("create a temporary directory");
    TmpPath { path: dir.path().join(name), _dir: dir }
}

impl Deref for TmpPath {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for TmpPath {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

/// A database on a fresh in-memory redb backend, under [`root`].
pub fn mem_db() -> Db {
    Db::builder().open_with_backend(redb::backends::InMemoryBackend::new(), root()).expect("open an in-memory db")
}

/// Opens the database on `disk` under [`root`].
pub fn open_on(disk: &SharedBytes) -> silograph::Result<Db> {
    Db::builder().open_with_backend(disk.backend(), root())
}

/// The 6,000 CollegeMsg messages of `tests/data`.
pub fn collegemsg() -> Vec<slices::Message> {
    slices::parse_collegemsg(include_str!("../../data/collegemsg-first6000.tsv")).expect("parse the CollegeMsg slice")
}

/// The 1,000 git commits of `tests/data`.
pub fn git_commits() -> Vec<slices::Commit> {
    slices::parse_commits(include_str!("../../data/git-commits-first1000.tsv")).expect("parse the commit slice")
}

/// The files touched by [`git_commits`].
pub fn git_touches() -> Vec<slices::Touch> {
    slices::parse_touches(include_str!("../../data/git-touches-first1000.tsv")).expect("parse the touch slice")
}
