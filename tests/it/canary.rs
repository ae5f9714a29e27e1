//! Canaries: names, sources, kinds and property values written with a unique marker never appear
//! in the database file — neither while the database is open nor after it is closed — and
//! neither do the org names or the key bytes.

use std::path::Path;

use crate::common::tmp;
use silograph::{Compartment, Db, EdgeInput, NodeInput, OrgKey, RootKey, Value};

pub(crate) const MARKER: &str = "CANARY-7f3a9";
pub(crate) const ROOT: [u8; 32] = *b"root-key-bytes-CANARY-7f3a9-root";
pub(crate) const BYOK: [u8; 32] = *b"org-key-bytes-CANARY-7f3a9-byok!";
pub(crate) const ORG: &str = "acme-CANARY-7f3a9-org";
pub(crate) const BYOK_ORG: &str = "globex-CANARY-7f3a9-byok-org";

/// Byte patterns that must never appear in the file: the marker and its parts, in UTF-8 and
/// UTF-16, the org names, the keys and their hex.
pub(crate) fn needles() -> Vec<(String, Vec<u8>)> {
    let mut n: Vec<(String, Vec<u8>)> = vec![
        ("marker".into(), MARKER.as_bytes().to_vec()),
        ("marker suffix".into(), b"7f3a9".to_vec()),
        ("marker prefix".into(), b"CANARY".to_vec()),
        ("marker utf-16".into(), MARKER.encode_utf16().flat_map(u16::to_le_bytes).collect()),
        ("org name".into(), ORG.as_bytes().to_vec()),
        ("byok org name".into(), BYOK_ORG.as_bytes().to_vec()),
        ("root key".into(), ROOT.to_vec()),
        ("byok key".into(), BYOK.to_vec()),
        ("root key hex".into(), hex::encode(ROOT).into_bytes()),
        ("byok key hex".into(), hex::encode(BYOK).into_bytes()),
    ];
    for common in ["acme", "globex"] {
        n.push((format!("plain name {common}"), common.as_bytes().to_vec()));
    }
    n
}

/// The first needle found in `bytes`, with its offset.
pub(crate) fn find_canary(bytes: &[u8]) -> Option<(String, usize)> {
    needles().into_iter().find_map(|(what, needle)| {
        bytes.windows(needle.len()).position(|w| w == needle.as_slice()).map(|at| (what, at))
    })
}

fn assert_no_canary(path: &Path, when: &str) {
    let bytes = std::fs::read(path).unwrap();
    assert!(bytes.len() > 4096, "{when}: the file is suspiciously small");
    assert_eq!(find_canary(&bytes), None, "{when}: found in the file");
}

fn m(s: &str) -> String {
    format!("{s}-{MARKER}")
}

/// Writes the marker into every place a host can put a string: kinds, sources, property names
/// and values (strings and bytes) of every compartment, edge kinds, edge sources, edge
/// properties; then overwrites and removes some of it.
pub(crate) fn write_canaries(org: &silograph::Org) {
    let mut w = org.write().unwrap();
    let mut nodes = Vec::new();
    for i in 0..20 {
        let input = NodeInput::new(m("kind"))
            .source(m("system"), format!("{}-{i}", m("external-id")))
            .source("gmail", format!("{}@example.com", m(&format!("user{i}"))))
            .prop(m("raw-name"), m("raw-value"))
            .prop(m("raw-bytes"), Value::Bytes(m("bytes").into_bytes()))
            .label(m("label-name"), m("label-value"))
            .prop_in(Compartment::Core, m("core-name"), m("core-value"));
        nodes.push(w.upsert_node(input).unwrap());
    }
    for (i, pair) in nodes.windows(2).enumerate() {
        let e = EdgeInput::new(pair[0], pair[1], m("edge-kind"))
            .valid_from(1_700_000_000_000)
            .source(m("edge-system"), format!("{}-{i}", m("edge-id")))
            .prop(m("edge-prop"), m("edge-value"));
        w.add_edge(e).unwrap();
    }
    w.commit().unwrap();
    let mut w = org.write().unwrap();
    for &n in &nodes[..5] {
        w.set_node_prop(n, Compartment::Raw, &m("raw-name"), m("overwritten")).unwrap();
        w.remove_node_prop(n, Compartment::Labels, &m("label-name")).unwrap();
    }
    let edge = w.add_edge(EdgeInput::new(nodes[0], nodes[19], m("late-kind")).source(m("s"), m("late"))).unwrap();
    w.retract_edge(edge).unwrap();
    w.commit().unwrap();
}

#[test]
fn canary_strings_never_reach_the_file() {
    let path = tmp("ctx.silo");
    let db = Db::open(&path, RootKey::from_bytes(ROOT)).unwrap();
    let managed = db.create_org(ORG).unwrap();
    write_canaries(&managed);
    let byok = db.create_org_with_key(BYOK_ORG, &OrgKey::from_bytes(BYOK)).unwrap();
    write_canaries(&byok);
    // The data is really there: read it back through the API.
    let r = managed.read().unwrap();
    let n = r.lookup(&m("system"), &format!("{}-7", m("external-id"))).unwrap().expect("canary node");
    assert_eq!(r.node(n).unwrap().unwrap().kind, m("kind"));
    assert_eq!(r.node_props(n, Compartment::Labels).unwrap(), vec![(m("label-name"), Value::from(m("label-value")))]);
    drop(r);
    assert_no_canary(&path, "while open");
    drop((managed, byok, db));
    assert_no_canary(&path, "after close");

    // Reopen, read, write a little more, close again: still nothing.
    let db = Db::open(&path, RootKey::from_bytes(ROOT)).unwrap();
    assert_eq!(db.list_orgs().unwrap().len(), 2);
    let org = db.org(ORG).unwrap();
    let mut w = org.write().unwrap();
    w.upsert_node(NodeInput::new(m("kind")).source(m("system"), m("after-reopen")).prop(m("p"), m("v"))).unwrap();
    w.commit().unwrap();
    drop((org, db));
    assert_no_canary(&path, "after reopen and write");
}

#[test]
fn canary_search_finds_every_planted_needle() {
    // The search itself works: each needle planted in otherwise empty bytes is found where it is.
    for (what, needle) in needles() {
        let mut bytes = vec![0u8; 8192];
        bytes[5000..5000 + needle.len()].copy_from_slice(&needle);
        // Found where it was planted (a needle may contain another one, e.g. the marker).
        let at = find_canary(&bytes).map(|(_, at)| at);
        assert!(at.is_some_and(|at| (5000..5000 + needle.len()).contains(&at)), "{what} went unnoticed: {at:?}");
    }
    assert_eq!(find_canary(&[0u8; 8192]), None);
}
