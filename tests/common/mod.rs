//! Helpers shared by the hardening tests (and, through `#[path]`, by the `ops_vs_model` fuzz
//! target): in-memory and fault-injecting storage backends, and the `BTreeMap` model.
#![allow(dead_code)]

pub mod backend;
pub mod model;
