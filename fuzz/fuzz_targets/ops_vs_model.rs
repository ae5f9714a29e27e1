//! An arbitrary sequence of operations over two orgs (create, upsert node, add/retract edge,
//! set/remove properties, commit/abort, reopen, neighbors, lookup, wrong-key opens), applied to
//! an in-memory database and to the `BTreeMap` model of tests/it/common/model.rs; any difference
//! panics.
#![no_main]

#[path = "../../tests/it/common/backend.rs"]
mod backend;
#[path = "../../tests/it/common/model.rs"]
mod model;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let program = model::read_program(data, 48);
    model::run_program(&program);
});
