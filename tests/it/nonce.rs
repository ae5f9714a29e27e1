//! Nonce and key hygiene: random nonces never repeat, the per-epoch seal counter (which drives
//! rotation before the random-nonce limit) is durable, and no key type prints its bytes.
#![cfg(not(feature = "bench-null-cipher"))]

use std::collections::HashSet;

use crate::common::backend::SharedBytes;
use crate::common::open_on;
use silograph::fuzzing::{internal_key_debug_strings, seal_count, EnvelopeKey};
use silograph::{Db, NodeInput, OrgKey, RootKey};

/// The nonce's place in an envelope: after version (1), epoch (4) and page version (8).
const HEADER_NONCE: std::ops::Range<usize> = 13..25;

#[test]
fn two_to_the_17_seals_never_repeat_a_nonce() {
    let key = EnvelopeKey::from_bytes([9; 32]);
    let db_id = [1u8; 16];
    let mut seen = HashSet::with_capacity(1 << 17);
    for i in 0u32..(1 << 17) {
        // Same key, same binding, same plaintext: only the nonce can make the envelopes differ.
        let sealed = key.seal(0, &db_id, 3, b"record-key", b"same plaintext").expect("seal");
        let nonce: [u8; 12] = sealed[HEADER_NONCE].try_into().expect("12-byte nonce");
        assert!(seen.insert(nonce), "nonce repeated after {i} seals");
    }
    assert_eq!(seen.len(), 1 << 17);
}

#[test]
fn identical_plaintexts_seal_to_distinct_ciphertexts() {
    let key = EnvelopeKey::from_bytes([9; 32]);
    let a = key.seal(0, &[1; 16], 3, b"k", b"same").expect("seal");
    let b = key.seal(0, &[1; 16], 3, b"k", b"same").expect("seal");
    assert_ne!(a, b);
    assert_ne!(a[HEADER_NONCE], b[HEADER_NONCE]);
}

fn open(disk: &SharedBytes) -> Db {
    open_on(disk).expect("open")
}

#[test]
fn seal_counter_grows_with_every_commit_and_persists_across_reopen() {
    let disk = SharedBytes::default();
    let db = open(&disk);
    let org = db.create_org("acme").expect("create org");
    let byok = db.create_org_with_key("globex", &OrgKey::from_bytes([5; 32])).expect("create byok org");
    assert_eq!(seal_count(&org).expect("count"), 0);
    let mut w = org.write().expect("write");
    for i in 0..10 {
        w.upsert_node(NodeInput::new("person").source("gmail", format!("p{i}")).prop("title", "x")).expect("upsert");
    }
    w.commit().expect("commit");
    // One node page, one index bucket, 10 property maps, 1 kind name, 1 audit entry at least.
    let after_first = seal_count(&org).expect("count");
    assert!(after_first >= 14, "seal counter after 14+ seals is {after_first}");
    let mut w = byok.write().expect("write");
    w.upsert_node(NodeInput::new("deal").source("sf", "1")).expect("upsert");
    w.commit().expect("commit");
    let byok_count = seal_count(&byok).expect("count");
    assert!(byok_count >= 2);
    drop((org, byok, db));

    let db = open(&disk);
    let org = db.org("acme").expect("reopen org");
    let byok = db.org_with_key("globex", &OrgKey::from_bytes([5; 32])).expect("reopen byok org");
    assert_eq!(seal_count(&org).expect("count"), after_first, "seal counter lost across reopen");
    assert_eq!(seal_count(&byok).expect("count"), byok_count, "byok seal counter lost across reopen");
    let mut w = org.write().expect("write");
    w.upsert_node(NodeInput::new("person").source("gmail", "late")).expect("upsert");
    w.commit().expect("commit");
    assert!(seal_count(&org).expect("count") > after_first, "seal counter did not grow after reopen");
}

#[test]
fn aborted_transaction_does_not_move_the_committed_seal_counter() {
    let disk = SharedBytes::default();
    let db = open(&disk);
    let org = db.create_org("acme").expect("create org");
    let mut w = org.write().expect("write");
    w.upsert_node(NodeInput::new("person").source("gmail", "a")).expect("upsert");
    w.commit().expect("commit");
    let before = seal_count(&org).expect("count");
    let mut w = org.write().expect("write");
    w.upsert_node(NodeInput::new("person").source("gmail", "b")).expect("upsert");
    drop(w);
    // Nothing of an aborted transaction reached the file, so no nonce of it is on disk either.
    assert_eq!(seal_count(&org).expect("count"), before);
}

/// The byte patterns a careless `Debug` would print for a key made of `b` repeated.
fn leaks(s: &str, b: u8) -> bool {
    let hex = format!("{b:02x}").repeat(4);
    let hex_upper = hex.to_uppercase();
    let dec_list = format!("{b}, {b}, {b}");
    let dec_pretty = format!("{b},\n");
    s.contains(&hex) || s.contains(&hex_upper) || s.contains(&dec_list) || s.contains(&dec_pretty)
}

#[test]
fn key_types_debug_print_no_key_bytes() {
    for b in [0xa7u8, 0x3c, 201] {
        let root = RootKey::from_bytes([b; 32]);
        let org = OrgKey::from_bytes([b; 32]);
        for s in [format!("{root:?}"), format!("{root:#?}"), format!("{org:?}"), format!("{org:#?}")] {
            assert!(!leaks(&s, b), "public key type prints key bytes: {s}");
            assert!(s.contains("redacted"), "public key type Debug is not marked redacted: {s}");
        }
        let internal = internal_key_debug_strings([b; 32]);
        assert!(internal.len() >= 7);
        for s in internal {
            assert!(!leaks(&s, b), "internal key type prints key bytes: {s}");
        }
    }
}

#[test]
fn org_and_db_handles_debug_print_no_key_bytes() {
    let disk = SharedBytes::default();
    let db = Db::builder().open_with_backend(disk.backend(), RootKey::from_bytes([0xa7; 32])).expect("open");
    let org = db.create_org_with_key("globex", &OrgKey::from_bytes([0xa7; 32])).expect("create");
    let w = org.write().expect("write");
    let r = org.read().expect("read");
    for s in [format!("{db:#?}"), format!("{org:#?}"), format!("{w:#?}"), format!("{r:#?}")] {
        assert!(!leaks(&s, 0xa7), "handle Debug prints key bytes: {s}");
    }
}
