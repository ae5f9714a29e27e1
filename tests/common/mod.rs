//! Helpers shared by the hardening tests (and, through `#[path]`, by the `ops_vs_model` fuzz
//! target): in-memory and fault-injecting storage backends, the `BTreeMap` model, and a
//! logical dump of an org through the public read API.
#![allow(dead_code)]

pub mod backend;
pub mod dump;
pub mod model;
