//! Model tests: random operation sequences over two orgs (one managed, one bring-your-own-key),
//! including commit, abort, reopen and wrong-key opens, checked read by read against a
//! `BTreeMap` model. The operation language is the one the `ops_vs_model` fuzz target uses.

use crate::common::model::{node_source, read_program, run_program, Runner, Top, WOp};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_op_sequences_over_two_orgs_match_the_btreemap_model(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let program = read_program(&bytes, 40);
        run_program(&program);
    }
}

#[test]
fn aborted_transaction_leaves_committed_state_unchanged_across_reopen() {
    let mut r = Runner::new();
    r.run(&Top::Create(0));
    let up = |i: u8| WOp::Upsert {
        kind: "person",
        sources: vec![node_source(i)],
        props: vec![(silograph::Compartment::Raw, "title".into(), silograph::Value::from("x"))],
    };
    r.run(&Top::Txn { org: 0, ops: vec![up(0), up(1)], commit: true });
    r.run(&Top::Txn { org: 0, ops: vec![up(2), WOp::Retract(1), up(3)], commit: false });
    r.run(&Top::Check(0));
    r.run(&Top::Reopen);
    r.run(&Top::Check(0));
    assert_eq!(r.models[0].as_ref().map(|m| m.nodes.len()), Some(2));
}

#[test]
fn fixed_program_with_every_operation_kind_matches_the_model() {
    // Every byte value once, twice: exercises each decoder branch deterministically.
    let bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let program = read_program(&bytes, 200);
    assert!(program.iter().any(|t| matches!(t, Top::Txn { commit: true, .. })));
    assert!(program.iter().any(|t| matches!(t, Top::Reopen)));
    run_program(&program);
}
