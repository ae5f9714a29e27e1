//! Helpers shared by the hardening tests (and, through `#[path]`, by the `ops_vs_model` fuzz
//! target): in-memory and fault-injecting storage backends, the `BTreeMap` model, and a
//! logical dump of an org through the public read API.
#![allow(dead_code)]

pub mod backend;
pub mod dump;
pub mod model;

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
