//! Isolation between organizations of one database: a handle of org A cannot find org B's nodes
//! or edges by B's external ids, and reading B's ids through A yields A's own records (ids are
//! per org) or nothing — never B's data. A restricted scope holds no key for what it excludes.

use crate::common::{collegemsg, git_commits, git_touches, root, slices, tmp, TmpPath};
use silograph::{Compartment, Db, Direction, EdgeId, EdgeInput, Error, NodeId, NodeInput, Org};

/// Two orgs in one file: "acme" holds 300 CollegeMsg messages, "globex" 60 git commits with their
/// touches — more nodes than acme, so some of globex's ids do not exist in acme at all. The
/// file's path comes first, so that it is dropped last.
fn two_orgs() -> (TmpPath, Db, Org, Org) {
    let path = tmp("ctx.silo");
    let db = Db::open(&path, root()).unwrap();
    let acme = db.create_org("acme").unwrap();
    let mut messages = collegemsg();
    messages.truncate(300);
    let mut w = acme.write().unwrap();
    slices::ingest_messages(&mut w, &messages).unwrap();
    w.commit().unwrap();
    let globex = db.create_org("globex").unwrap();
    let mut commits = git_commits();
    commits.truncate(60);
    let mut w = globex.write().unwrap();
    slices::ingest_git(&mut w, &commits, &git_touches()).unwrap();
    w.commit().unwrap();
    assert!(globex.counts().unwrap().0 > acme.counts().unwrap().0, "globex must have more nodes than acme");
    (path, db, acme, globex)
}

#[test]
fn lookup_by_another_orgs_external_id_finds_nothing() {
    let (_path, _db, acme, globex) = two_orgs();
    let commits = git_commits();
    let (a, g) = (acme.read().unwrap(), globex.read().unwrap());
    for c in &commits[..60] {
        assert!(g.lookup("git", &c.sha).unwrap().is_some(), "globex knows its own commit");
        assert_eq!(a.lookup("git", &c.sha).unwrap(), None, "acme found globex's commit {}", c.sha);
        assert_eq!(a.lookup("git-email-sha256", &c.author).unwrap(), None);
        assert_eq!(a.lookup_edge("git", &format!("authored/{}", c.sha)).unwrap(), None);
    }
    let messages = collegemsg();
    for m in &messages[..300] {
        assert!(a.lookup("collegemsg", &m.src.to_string()).unwrap().is_some());
        assert_eq!(g.lookup("collegemsg", &m.src.to_string()).unwrap(), None, "globex found acme's user");
        assert_eq!(g.lookup_edge("collegemsg", &format!("row-{}", m.row)).unwrap(), None);
    }
    // Kinds are per org too.
    assert_eq!(a.kind_id("commit").unwrap(), None);
    assert_eq!(g.kind_id("messaged").unwrap(), None);
}

#[test]
fn reading_another_orgs_node_ids_never_returns_its_data() {
    let (_path, _db, acme, globex) = two_orgs();
    let (a, g) = (acme.read().unwrap(), globex.read().unwrap());
    let (acme_nodes, _) = acme.counts().unwrap();
    let (globex_nodes, _) = globex.counts().unwrap();
    for id in (1..=globex_nodes).map(NodeId) {
        let theirs = g.node(id).unwrap().expect("globex's own node");
        let ours = a.node(id).unwrap();
        if id.0 > acme_nodes {
            assert_eq!(ours, None, "acme read globex's node {id:?}");
        } else {
            let ours = ours.expect("acme has a node with this id");
            assert_ne!(ours.sources, theirs.sources, "acme's node {id:?} carries globex's sources");
            assert_eq!(ours.kind, "person", "acme only has people");
        }
        for c in Compartment::ALL {
            let theirs = g.node_props(id, c).unwrap();
            if !theirs.is_empty() {
                assert_ne!(a.node_props(id, c).unwrap(), theirs, "acme read globex's props of {id:?}");
            }
        }
    }
}

#[test]
fn neighbors_of_another_orgs_node_id_are_not_its_neighbors() {
    let (_path, _db, acme, globex) = two_orgs();
    let (a, g) = (acme.read().unwrap(), globex.read().unwrap());
    let (acme_nodes, _) = acme.counts().unwrap();
    let (globex_nodes, _) = globex.counts().unwrap();
    let mut compared = 0;
    for id in (1..=globex_nodes).map(NodeId) {
        let theirs: Vec<_> = g.neighbors(id, Direction::Both).unwrap().map(|n| n.unwrap()).collect();
        let ours: Vec<_> = a.neighbors(id, Direction::Both).unwrap().map(|n| n.unwrap()).collect();
        if id.0 > acme_nodes {
            assert!(ours.is_empty(), "acme walked globex's node {id:?}");
        }
        if !theirs.is_empty() {
            compared += 1;
            assert_ne!(ours, theirs, "acme saw globex's neighbors of {id:?}");
        }
        // What acme sees is acme's own adjacency: every neighbor and edge exists in acme.
        for n in &ours {
            assert!(a.node(n.node).unwrap().is_some());
            let e = a.edge(n.edge).unwrap().expect("acme's own edge");
            assert_eq!(e.kind, "messaged");
        }
    }
    assert!(compared > 50, "only {compared} globex nodes had neighbors");
    for id in (1..=globex.counts().unwrap().1).map(EdgeId) {
        let theirs = g.edge(id).unwrap().expect("globex's own edge");
        if let Some(ours) = a.edge(id).unwrap() {
            assert_eq!(ours.kind, "messaged");
            assert_ne!(ours.source, theirs.source);
        }
    }
}

#[test]
fn same_external_id_in_two_orgs_names_two_independent_nodes() {
    let (_path, _db, acme, globex) = two_orgs();
    let mut ids = Vec::new();
    for (org, title) in [(&acme, "CTO at acme"), (&globex, "CEO at globex")] {
        let mut w = org.write().unwrap();
        let n =
            w.upsert_node(NodeInput::new("person").source("gmail", "pat@example.com").prop("title", title)).unwrap();
        let other = w.upsert_node(NodeInput::new("deal").source("crm", format!("deal-{}", org.name()))).unwrap();
        w.add_edge(EdgeInput::new(n, other, "owns").source("crm", "evt-1")).unwrap();
        w.commit().unwrap();
        ids.push(n);
    }
    let (a, g) = (acme.read().unwrap(), globex.read().unwrap());
    assert_eq!(a.lookup("gmail", "pat@example.com").unwrap(), Some(ids[0]));
    assert_eq!(g.lookup("gmail", "pat@example.com").unwrap(), Some(ids[1]));
    assert_eq!(a.node_props(ids[0], Compartment::Raw).unwrap()[0].1, "CTO at acme".into());
    assert_eq!(g.node_props(ids[1], Compartment::Raw).unwrap()[0].1, "CEO at globex".into());
    let a_out: Vec<_> = a.neighbors(ids[0], Direction::Out).unwrap().map(|n| n.unwrap().node).collect();
    assert_eq!(a_out.len(), 1);
    assert_eq!(a.node(a_out[0]).unwrap().unwrap().sources[0].external_id, "deal-acme");
    let g_edge = g.lookup_edge("crm", "evt-1").unwrap().unwrap();
    assert_eq!(g.edge(g_edge).unwrap().unwrap().from, ids[1]);
    assert_eq!(a.edge(a.lookup_edge("crm", "evt-1").unwrap().unwrap()).unwrap().unwrap().from, ids[0]);
}

#[test]
fn writes_of_one_org_do_not_change_another() {
    let (_path, _db, acme, globex) = two_orgs();
    let before = globex.counts().unwrap();
    let g_before: Vec<_> = {
        let g = globex.read().unwrap();
        (1..=before.0).map(|id| g.node(NodeId(id)).unwrap()).collect()
    };
    let mut w = acme.write().unwrap();
    for i in 0..50 {
        let n = w.upsert_node(NodeInput::new("person").source("collegemsg", format!("new-{i}"))).unwrap();
        w.set_node_prop(n, Compartment::Labels, "segment", "new").unwrap();
    }
    w.commit().unwrap();
    assert_eq!(globex.counts().unwrap(), before);
    let g = globex.read().unwrap();
    let g_after: Vec<_> = (1..=before.0).map(|id| g.node(NodeId(id)).unwrap()).collect();
    assert_eq!(g_after, g_before);
}

#[test]
fn scoped_handle_holds_no_key_for_excluded_compartments() {
    let (_path, db, acme, _globex) = two_orgs();
    let mut w = acme.write().unwrap();
    let n = w
        .upsert_node(NodeInput::new("person").source("gmail", "sam@acme").prop("salary", 100i64).label("team", "core"))
        .unwrap();
    w.commit().unwrap();
    let core = db.org_scoped("acme", None, &[Compartment::Core]).unwrap();
    assert!(!core.holds_key_for(Compartment::Raw) && !core.holds_key_for(Compartment::Labels));
    assert!(core.holds_key_for(Compartment::Core));
    let r = core.read().unwrap();
    assert!(matches!(r.node_props(n, Compartment::Raw), Err(Error::Denied(Compartment::Raw))));
    assert!(matches!(r.node_props(n, Compartment::Labels), Err(Error::Denied(Compartment::Labels))));
    // It can still traverse.
    assert_eq!(r.lookup("gmail", "sam@acme").unwrap(), Some(n));
    let user = r.lookup("collegemsg", "1").unwrap().expect("user 1 is in the first 300 messages");
    assert!(r.neighbors(user, Direction::Both).unwrap().next().is_some());
    let labels = db.org_scoped("acme", None, &[Compartment::Core, Compartment::Labels]).unwrap();
    let r = labels.read().unwrap();
    assert_eq!(r.node_props(n, Compartment::Labels).unwrap(), vec![("team".to_string(), "core".into())]);
    assert!(matches!(r.node_props(n, Compartment::Raw), Err(Error::Denied(Compartment::Raw))));
    assert!(matches!(db.org_scoped("acme", None, &[Compartment::Raw]), Err(Error::InvalidInput(_))));
}
