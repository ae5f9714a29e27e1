//! The PostgreSQL backend (feature `postgres`) against a real server: `.ci/pg.sh` starts one and
//! exports `SILOGRAPH_POSTGRES_URL`; each test works in its own schema. Outside CI, without the
//! variable, every test here prints a line and passes; in CI (`CI=true`) it fails instead.
//!
//! Instances are separate `Db` values on one database (as N service instances would be);
//! processes are this test binary run again as a child (`postgres_child_writer`, which does
//! nothing unless its environment names a job).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::pg::{exclusive_server, pg_ctl, Schema};
use crate::common::{root, root_key};
use silograph::{Compartment, Db, Direction, EdgeInput, Error, NodeInput, StorageReason, Value};

fn neighbors(db: &Db, org: &str, node: silograph::NodeId) -> Vec<silograph::NodeId> {
    let r = db.org(org).unwrap().read().unwrap();
    let mut v: Vec<_> = r.neighbors(node, Direction::Out).unwrap().map(|n| n.unwrap().node).collect();
    v.sort();
    v
}

#[test]
fn postgres_round_trip_is_seen_by_another_instance() {
    let Some(s) = Schema::new("round_trip") else { return };
    let a = s.open(root()).unwrap();
    let acme = a.create_org("acme").unwrap();
    let mut w = acme.write().unwrap();
    let x = w.upsert_node(NodeInput::new("person").source("mail", "x").prop("title", "CTO")).unwrap();
    let y = w.upsert_node(NodeInput::new("deal").source("crm", "1").label("stage", "won")).unwrap();
    let e = w.add_edge(EdgeInput::new(x, y, "owns").valid_from(10)).unwrap();
    w.commit().unwrap();

    let b = s.open(root()).unwrap();
    assert_eq!(b.list_orgs().unwrap(), vec!["acme".to_string()]);
    let r = b.org("acme").unwrap().read().unwrap();
    assert_eq!(r.lookup("mail", "x").unwrap(), Some(x));
    assert_eq!(r.node(y).unwrap().unwrap().kind, "deal");
    assert_eq!(r.node_props(x, Compartment::Raw).unwrap(), vec![("title".to_string(), Value::from("CTO"))]);
    assert_eq!(r.edge(e).unwrap().unwrap().valid_from, Some(10));
    assert_eq!(r.counts().unwrap(), (2, 1));
    assert_eq!(neighbors(&b, "acme", x), vec![y]);
    assert!(b.verify().unwrap().is_ok());
}

#[test]
fn postgres_page_cache_follows_commits_of_other_instances() {
    let Some(s) = Schema::new("cache") else { return };
    let a = s.open(root()).unwrap();
    let org = a.create_org("acme").unwrap();
    let mut w = org.write().unwrap();
    let hub = w.upsert_node(NodeInput::new("n").source("s", "hub")).unwrap();
    let first = w.upsert_node(NodeInput::new("n").source("s", "first")).unwrap();
    w.add_edge(EdgeInput::new(hub, first, "to")).unwrap();
    w.commit().unwrap();
    // Warm instance a's cache with the hub's page, twice (the second read is a hit).
    assert_eq!(neighbors(&a, "acme", hub), vec![first]);
    assert_eq!(neighbors(&a, "acme", hub), vec![first]);

    let b = s.open(root()).unwrap();
    let mut w = b.org("acme").unwrap().write().unwrap();
    let second = w.upsert_node(NodeInput::new("n").source("s", "second")).unwrap();
    w.add_edge(EdgeInput::new(hub, second, "to")).unwrap();
    w.commit().unwrap();

    assert_eq!(neighbors(&a, "acme", hub), vec![first, second], "instance a served a stale cached page");
    // And a's own next write builds on b's commit, not on its stale view.
    let mut w = org.write().unwrap();
    let third = w.upsert_node(NodeInput::new("n").source("s", "third")).unwrap();
    w.add_edge(EdgeInput::new(hub, third, "to")).unwrap();
    w.commit().unwrap();
    assert_eq!(neighbors(&b, "acme", hub), vec![first, second, third]);
    assert_eq!(neighbors(&a, "acme", hub), vec![first, second, third]);
}

#[test]
fn postgres_two_instances_writing_one_org_conflict_typed_and_lose_nothing() {
    let Some(s) = Schema::new("conflict") else { return };
    let a = s.open(root()).unwrap();
    a.create_org("acme").unwrap();
    a.create_org("globex").unwrap();
    let b = s.open(root()).unwrap();
    let (oa, ob) = (a.org("acme").unwrap(), b.org("acme").unwrap());
    let mut wa = oa.write().unwrap();
    let mut wb = ob.write().unwrap();
    let mut wg = b.org("globex").unwrap().write().unwrap();
    wa.upsert_node(NodeInput::new("n").source("s", "from-a")).unwrap();
    wb.upsert_node(NodeInput::new("n").source("s", "from-b")).unwrap();
    wg.upsert_node(NodeInput::new("n").source("s", "globex")).unwrap();
    wa.commit().unwrap();
    wg.commit().expect("a writer of another org never conflicts");
    match wb.commit() {
        Err(Error::Conflict(org)) => assert_eq!(org, "acme"),
        other => panic!("expected a conflict on acme, got {other:?}"),
    }
    let r = ob.read().unwrap();
    assert!(r.lookup("s", "from-a").unwrap().is_some());
    assert_eq!(r.lookup("s", "from-b").unwrap(), None, "a failed commit left something behind");
    drop(r);
    // The retry succeeds.
    let mut wb = ob.write().unwrap();
    wb.upsert_node(NodeInput::new("n").source("s", "from-b")).unwrap();
    wb.commit().unwrap();
    assert_eq!(oa.read().unwrap().counts().unwrap(), (2, 0));
}

#[test]
fn postgres_wrong_root_key_is_refused_and_writes_nothing() {
    let Some(s) = Schema::new("wrong_key") else { return };
    let db = s.open(root()).unwrap();
    let org = db.create_org("acme").unwrap();
    let mut w = org.write().unwrap();
    w.upsert_node(NodeInput::new("n").source("s", "1")).unwrap();
    w.commit().unwrap();
    let before = s.rows();
    assert!(matches!(s.open(root_key(2)), Err(Error::WrongKey)));
    assert_eq!(s.rows(), before, "a wrong root key changed the database");
    s.open(root()).unwrap();
}

#[test]
fn postgres_schema_of_another_version_is_unsupported_format() {
    let Some(s) = Schema::new("version") else { return };
    drop(s.open(root()).unwrap());
    s.client().batch_execute("UPDATE silo_schema SET version = 7").unwrap();
    match s.open(root()) {
        Err(Error::UnsupportedFormat(m)) => assert!(m.contains('7'), "{m}"),
        other => panic!("expected UnsupportedFormat, got {other:?}"),
    }
}

#[test]
fn postgres_value_tampered_through_sql_is_corrupt() {
    let Some(s) = Schema::new("tamper") else { return };
    let db = s.open(root()).unwrap();
    let org = db.create_org("acme").unwrap();
    let mut w = org.write().unwrap();
    let a = w.upsert_node(NodeInput::new("n").source("s", "a").prop("p", "v")).unwrap();
    let b = w.upsert_node(NodeInput::new("n").source("s", "b")).unwrap();
    // More edges than a node record keeps inline: a's out-entries are in an adjacency page.
    for _ in 0..17 {
        w.add_edge(EdgeInput::new(a, b, "to")).unwrap();
    }
    w.commit().unwrap();
    drop((org, db));
    // One flipped byte in every adjacency value, as the database's administrator could.
    let n =
        s.client().execute("UPDATE silo_adj SET value = set_byte(value, 30, get_byte(value, 30) # 1)", &[]).unwrap();
    assert!(n >= 2);
    let db = s.open(root()).unwrap();
    let r = db.org("acme").unwrap().read().unwrap();
    match r.neighbors(a, Direction::Out).and_then(|mut it| it.next().transpose()) {
        Err(Error::Corrupt { table: "adj", .. }) => {}
        other => panic!("expected Corrupt in adj, got {other:?}"),
    }
    // A value swapped onto another key of the same table.
    s.client()
        .batch_execute(
            "UPDATE silo_props SET value = (SELECT value FROM silo_nodes LIMIT 1);
             UPDATE silo_nodes SET value = value || '\\x00'::bytea",
        )
        .unwrap();
    // A fresh instance: the first one's page cache still holds the node page it authenticated
    // before the tampering (the neighbor read above went through it).
    drop(r);
    let db = s.open(root()).unwrap();
    let r = db.org("acme").unwrap().read().unwrap();
    assert!(matches!(r.node(a), Err(Error::Corrupt { .. })), "a lengthened node page was accepted");
    assert!(matches!(r.node_props(a, Compartment::Raw), Err(Error::Corrupt { .. })));
    assert!(!db.verify().unwrap().is_ok());
}

#[test]
fn postgres_canary_strings_never_reach_a_pg_dump() {
    let Some(s) = Schema::new("canary") else { return };
    let db = s.open(silograph::RootKey::from_bytes(crate::canary::ROOT)).unwrap();
    let managed = db.create_org(crate::canary::ORG).unwrap();
    crate::canary::write_canaries(&managed);
    let byok =
        db.create_org_with_key(crate::canary::BYOK_ORG, &silograph::OrgKey::from_bytes(crate::canary::BYOK)).unwrap();
    crate::canary::write_canaries(&byok);
    let dump = s.pg_dump();
    assert!(dump.len() > 4096, "the dump is suspiciously small");
    assert!(String::from_utf8_lossy(&dump).contains("silo_adj"), "the dump holds no store");
    // bytea is dumped as `\x` and hex digits: search the raw needles in the dump with those runs
    // taken out and in the bytes they decode to (a raw needle made of hex digits, such as the
    // marker's suffix, would otherwise match random ciphertext hex now and then), and the
    // needles' own hex in the text.
    let text = String::from_utf8_lossy(&dump).into_owned();
    let (mut plain, mut decoded) = (Vec::new(), Vec::new());
    for (i, part) in text.split("\\x").enumerate() {
        let digits = if i == 0 { 0 } else { part.bytes().take_while(u8::is_ascii_hexdigit).count() };
        decoded.extend(hex::decode(&part[..digits - digits % 2]).unwrap_or_default());
        plain.extend_from_slice(&part.as_bytes()[digits..]);
    }
    assert!(decoded.len() > 4096, "the dump's bytea values were not found");
    assert_eq!(crate::canary::find_canary(&plain), None, "found in the pg_dump");
    assert_eq!(crate::canary::find_canary(&decoded), None, "found in the pg_dump's bytea values");
    for (what, needle) in crate::canary::needles() {
        let hex = hex::encode(&needle);
        let text = String::from_utf8_lossy(&dump).to_lowercase();
        assert!(!text.contains(&hex), "{what} found hex-encoded in the pg_dump");
    }
}

#[test]
fn postgres_compact_is_a_typed_error() {
    let Some(s) = Schema::new("compact") else { return };
    let db = s.open(root()).unwrap();
    match db.compact() {
        Err(Error::Unsupported { operation: "compact", backend: "PostgreSQL" }) => {}
        Err(other) => panic!("expected Unsupported, got {other:?}"),
        Ok(_) => panic!("compact on PostgreSQL succeeded"),
    }
}

/// The child side of the multi-process tests: runs only when `SILO_PG_CHILD` names a job.
/// `write ORG FIRST COUNT`: COUNT commits of one node each (sources FIRST..), each retried on
/// `Conflict` (anything else fails the child); prints `conflicts N`. `batches ORG`: commits of
/// 200 nodes each until killed, printing `committing K` before each.
#[test]
fn postgres_child_writer() {
    let Ok(job) = std::env::var("SILO_PG_CHILD") else { return };
    let url = std::env::var("SILO_PG_CHILD_URL").unwrap();
    let db = Db::builder().open_postgres(&url, root()).unwrap();
    let words: Vec<&str> = job.split(' ').collect();
    let org = db.org(words[1]).unwrap();
    match words[0] {
        "write" => {
            let (first, count): (u64, u64) = (words[2].parse().unwrap(), words[3].parse().unwrap());
            let mut conflicts = 0u64;
            for i in first..first + count {
                loop {
                    let mut w = org.write().unwrap();
                    w.upsert_node(NodeInput::new("n").source("s", i.to_string())).unwrap();
                    match w.commit() {
                        Ok(_) => break,
                        Err(Error::Conflict(name)) => {
                            assert_eq!(name, words[1]);
                            conflicts += 1;
                        }
                        Err(e) => panic!("commit {i}: {e}"),
                    }
                }
            }
            println!("conflicts {conflicts}");
        }
        "batches" => {
            for k in 0u64.. {
                let mut w = org.write().unwrap();
                for j in 0..200 {
                    w.upsert_node(NodeInput::new("n").source("batch", format!("{k}-{j}")).prop("p", "v")).unwrap();
                }
                println!("committing {k}");
                w.commit().unwrap();
            }
        }
        other => panic!("unknown job {other}"),
    }
}

fn child(url: &str, job: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["postgres::postgres_child_writer", "--exact", "--nocapture", "--test-threads=1"])
        .env("SILO_PG_CHILD", job)
        .env("SILO_PG_CHILD_URL", url)
        .stdout(Stdio::piped());
    c
}

#[test]
fn postgres_processes_writing_different_and_same_orgs_lose_nothing() {
    let Some(s) = Schema::new("processes") else { return };
    let db = s.open(root()).unwrap();
    for org in ["a", "b", "shared"] {
        db.create_org(org).unwrap();
    }
    const N: u64 = 25;
    let jobs = [("a", 0), ("b", 0), ("shared", 0), ("shared", 1000)];
    let children: Vec<_> =
        jobs.iter().map(|(org, first)| child(&s.url, &format!("write {org} {first} {N}")).spawn().unwrap()).collect();
    let mut conflicts = 0;
    for ((org, _), c) in jobs.iter().zip(children) {
        let out = c.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "a writer process failed:\n{text}");
        // The harness prints the test's name on the same line before the child's own output.
        let at = text.find("conflicts ").unwrap_or_else(|| panic!("the child did not run its job:\n{text}"));
        let digits: String = text[at + 10..].chars().take_while(char::is_ascii_digit).collect();
        let n = digits.parse::<u64>().unwrap();
        // The only writer of its org: a conflict could only come from a writer of another org.
        if *org != "shared" {
            assert_eq!(n, 0, "the writer of {org} conflicted with writers of other orgs");
        }
        conflicts += n;
    }
    println!("{conflicts} conflicts retried on the shared org");
    for (org, expected) in [("a", N), ("b", N), ("shared", 2 * N)] {
        let r = db.org(org).unwrap().read().unwrap();
        assert_eq!(r.counts().unwrap().0, expected, "org {org} lost commits");
    }
    for first in [0, 1000] {
        let r = db.org("shared").unwrap().read().unwrap();
        for i in first..first + N {
            assert!(r.lookup("s", &i.to_string()).unwrap().is_some(), "node {i} of shared is missing");
        }
    }
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn postgres_writer_killed_mid_commit_leaves_the_old_or_the_new_state() {
    let Some(s) = Schema::new("kill") else { return };
    let db = s.open(root()).unwrap();
    db.create_org("acme").unwrap();
    for round in 0..3u64 {
        let mut c = child(&s.url, "batches acme").spawn().unwrap();
        // Wait until it is about to commit its (round+2)-th batch, then a little more.
        let mut out = std::io::BufReader::new(c.stdout.take().unwrap());
        let target = format!("committing {}", round + 1);
        let mut line = String::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while !line.contains(&target) {
            line.clear();
            assert!(std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0, "the child stopped early");
            assert!(Instant::now() < deadline);
        }
        std::thread::sleep(Duration::from_millis(round * 3));
        c.kill().unwrap();
        c.wait().unwrap();
        let r = db.org("acme").unwrap().read().unwrap();
        let (nodes, _) = r.counts().unwrap();
        assert_eq!(nodes % 200, 0, "a partial batch is visible: {nodes} nodes");
        for k in 0..nodes / 200 {
            for j in [0, 199] {
                assert!(r.lookup("batch", &format!("{k}-{j}")).unwrap().is_some(), "batch {k} is incomplete");
            }
        }
        assert!(db.verify().unwrap().is_ok());
    }
}

#[test]
fn postgres_server_restart_is_a_clear_error_then_recovers_without_reopening() {
    let _alone = exclusive_server();
    let Some(s) = Schema::unguarded("restart") else { return };
    let db = s.open(root()).unwrap();
    let org = db.create_org("acme").unwrap();
    let mut w = org.write().unwrap();
    let a = w.upsert_node(NodeInput::new("n").source("s", "a")).unwrap();
    w.commit().unwrap();

    // A snapshot open across a restart: its next read of the server fails clearly (a second
    // handle, whose page cache does not hold what the first one's commit wrote through).
    let reader = s.open(root()).unwrap();
    let r = reader.org("acme").unwrap().read().unwrap();
    pg_ctl("restart");
    match r.node(a) {
        Err(Error::Storage(e)) => {
            assert_eq!(e.reason(), StorageReason::Connection, "{e}");
            assert!(["get", "get_many", "scan", "count"].contains(&e.operation()), "{}", e.operation());
        }
        other => panic!("expected a lost connection, got {other:?}"),
    }
    drop(r);
    // The next snapshot and write just work (dead pooled connections are replaced).
    assert!(org.read().unwrap().node(a).unwrap().is_some());
    let mut w = org.write().unwrap();
    w.upsert_node(NodeInput::new("n").source("s", "b")).unwrap();
    w.commit().unwrap();

    // The server down: every call is a storage error naming what failed; nothing half-done.
    pg_ctl("stop");
    let err = org.read().map(|_| ()).and_then(|_| org.write().map(|_| ()));
    let started = std::panic::catch_unwind(|| pg_ctl("start"));
    match err {
        Err(Error::Storage(e)) => {
            assert_eq!(e.reason(), StorageReason::Connection, "{e}");
            assert_eq!(e.operation(), "connect", "{e}");
        }
        other => panic!("expected a storage error while the server is down, got {other:?}"),
    }
    assert!(started.is_ok(), "the server did not start again");
    let r = org.read().unwrap();
    assert_eq!(r.counts().unwrap().0, 2);
    assert!(r.lookup("s", "b").unwrap().is_some());
}

/// The model test (tests/it/model.rs) on PostgreSQL: a fixed program with every operation kind
/// (commits, aborts, reopen, wrong root and org keys), checked read by read against the model.
#[test]
fn postgres_fixed_program_with_every_operation_kind_matches_the_model() {
    use crate::common::model::{read_program, run_program_on, Runner};
    let Some(s) = Schema::new("model") else { return };
    let url = s.url.clone();
    let runner = Runner::with_opener(Box::new(move |root| {
        Db::builder().cache_size(1 << 20).open_postgres(&url, silograph::RootKey::from_bytes(root))
    }));
    let bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    run_program_on(runner, &read_program(&bytes, 200));
}

/// The isolation suite's core (tests/it/isolation.rs) on PostgreSQL, across two instances: one
/// org's handle finds nothing of another's by external id, and another org's node ids read as
/// its own records or nothing.
#[test]
fn postgres_lookup_by_another_orgs_external_id_finds_nothing() {
    use crate::common::{collegemsg, git_commits, git_touches, slices};
    let Some(s) = Schema::new("isolation") else { return };
    let a = s.open(root()).unwrap();
    let acme = a.create_org("acme").unwrap();
    let mut messages = collegemsg();
    messages.truncate(200);
    let mut w = acme.write().unwrap();
    slices::ingest_messages(&mut w, &messages).unwrap();
    w.commit().unwrap();
    let b = s.open(root()).unwrap();
    let globex = b.create_org("globex").unwrap();
    let mut commits = git_commits();
    commits.truncate(40);
    let mut w = globex.write().unwrap();
    slices::ingest_git(&mut w, &commits, &git_touches()).unwrap();
    w.commit().unwrap();

    let (ra, rg) = (a.org("acme").unwrap().read().unwrap(), b.org("globex").unwrap().read().unwrap());
    for c in &commits {
        assert!(rg.lookup("git", &c.sha).unwrap().is_some());
        assert_eq!(ra.lookup("git", &c.sha).unwrap(), None, "acme found globex's commit");
    }
    for m in &messages {
        assert!(ra.lookup("collegemsg", &m.src.to_string()).unwrap().is_some());
        assert_eq!(rg.lookup("collegemsg", &m.src.to_string()).unwrap(), None, "globex found acme's user");
    }
    let (acme_nodes, _) = ra.counts().unwrap();
    for id in 0..acme_nodes + 50 {
        let id = silograph::NodeId(id);
        if let Some(n) = ra.node(id).unwrap() {
            assert!(n.sources.iter().all(|s| s.system == "collegemsg"), "acme read a record of globex");
        }
    }
}

/// The key lifecycle on PostgreSQL, with two instances: custody, sealed secrets, org rotation,
/// root rotation (the database secret with it), full re-key onto the new secret, and shredding.
#[test]
fn postgres_key_lifecycle_custody_secrets_rotation_rekey_and_shredding() {
    use silograph::{KeyringKey, LocalKeyring, SecretValue};
    use std::sync::Arc;
    let Some(s) = Schema::new("lifecycle") else { return };
    let ring_path = crate::common::tmp("pg-lifecycle.keys");
    let ring = Arc::new(LocalKeyring::open(ring_path.to_path_buf(), KeyringKey::from_bytes([0x4b; 32])).unwrap());
    let open = |k: u8| Db::builder().custody(ring.clone()).open_postgres(&s.url, root_key(k));
    let a = open(1).unwrap();
    for name in ["acme", "globex"] {
        let org = a.create_org(name).unwrap();
        let mut w = org.write().unwrap();
        for i in 0..30 {
            w.upsert_node(NodeInput::new("person").source("crm", format!("{name}-{i}")).prop("n", i as i64)).unwrap();
        }
        w.commit().unwrap();
        org.secrets().unwrap().put("oauth", SecretValue::from(format!("token-of-{name}").as_str())).unwrap();
    }
    let check = |db: &Db, name: &str| {
        let org = db.org(name).unwrap();
        let r = org.read().unwrap();
        assert_eq!(r.counts().unwrap().0, 30, "{name}");
        assert!(r.lookup("crm", &format!("{name}-29")).unwrap().is_some(), "{name}");
        let token = org.secrets().unwrap().get("oauth").unwrap().unwrap();
        assert_eq!(token.expose(), format!("token-of-{name}").as_bytes());
    };
    a.rotate_org_key("acme").unwrap();
    let b = open(1).unwrap();
    check(&b, "acme");
    a.rotate_root_key(root_key(2)).unwrap();
    assert!(matches!(open(1), Err(Error::WrongKey)));
    // An instance still on the old key learns it at its next registry read.
    assert!(matches!(b.org("acme"), Err(Error::WrongKey)), "{:?}", b.org("acme").map(|_| ()));
    a.rekey_org("acme").unwrap();
    let c = open(2).unwrap();
    check(&c, "acme");
    check(&c, "globex");
    assert!(c.verify().unwrap().is_ok());
    c.delete_org("globex").unwrap();
    assert!(matches!(c.org("globex"), Err(Error::OrgNotFound(_))));
    assert!(matches!(open(2).unwrap().org("globex"), Err(Error::OrgNotFound(_))));
    check(&open(2).unwrap(), "acme");
}

#[test]
fn postgres_two_instances_creating_one_org_name_one_wins_the_other_gets_org_exists() {
    let Some(s) = Schema::new("create_race") else { return };
    let dbs = [s.open(root()).unwrap(), s.open(root()).unwrap()];
    let barrier = std::sync::Barrier::new(2);
    for round in 0..40 {
        // The same name from both instances at once; then two different names at once (both
        // rewrite the database root's membership: neither may fail).
        for same in [true, false] {
            let results: Vec<silograph::Result<silograph::Org>> = std::thread::scope(|sc| {
                let hs: Vec<_> = dbs
                    .iter()
                    .enumerate()
                    .map(|(i, db)| {
                        let name = if same { format!("same-{round}") } else { format!("own-{round}-{i}") };
                        let barrier = &barrier;
                        sc.spawn(move || {
                            barrier.wait();
                            db.create_org(&name)
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            if same {
                let won = results.iter().filter(|r| r.is_ok()).count();
                assert_eq!(won, 1, "round {round}: {won} instances created the same org");
                for r in &results {
                    match r {
                        Ok(_) => {}
                        Err(Error::OrgExists(n)) => assert_eq!(n, &format!("same-{round}")),
                        Err(e) => panic!("round {round}: the loser got {e:?}, not OrgExists"),
                    }
                }
            } else {
                for r in &results {
                    assert!(r.is_ok(), "round {round}: creating a distinct name failed: {:?}", r.as_ref().err());
                }
            }
        }
    }
    let mut names = dbs[1].list_orgs().unwrap();
    names.sort();
    assert_eq!(names.len(), 40 * 3);
    assert!(dbs[0].verify().unwrap().is_ok());
    assert!(s.open(root()).is_ok(), "the registry and the database root agree after the races");
}

/// What instance B's handle does after instance A deleted its org: reads and writes are
/// `OrgNotFound`, nothing else.
fn assert_gone(org: &silograph::Org, what: &str) {
    match org.read().and_then(|r| r.counts().map(|_| ())) {
        Err(Error::OrgNotFound(n)) => assert_eq!(n, "acme"),
        other => panic!("{what}: a read of a deleted org gave {other:?}"),
    }
    let w = org.write().and_then(|mut w| {
        w.upsert_node(NodeInput::new("n").source("s", "late"))?;
        w.commit()
    });
    match w {
        Err(Error::OrgNotFound(n)) => assert_eq!(n, "acme"),
        other => panic!("{what}: a write to a deleted org gave {other:?}"),
    }
}

#[test]
fn postgres_org_deleted_by_another_instance_is_org_not_found_to_an_open_handle() {
    let Some(s) = Schema::new("admin_delete") else { return };
    let (a, b) = (s.open(root()).unwrap(), s.open(root()).unwrap());
    a.create_org("acme").unwrap();
    let held = b.org("acme").unwrap();
    let mut w = held.write().unwrap();
    let x = w.upsert_node(NodeInput::new("n").source("s", "x")).unwrap();
    let y = w.upsert_node(NodeInput::new("n").source("s", "y")).unwrap();
    w.add_edge(EdgeInput::new(x, y, "to")).unwrap();
    w.commit().unwrap();
    // B's page cache holds the org's pages (written through, then read).
    assert_eq!(neighbors(&b, "acme", x), vec![y]);
    assert!(held.read().unwrap().node(x).unwrap().is_some());

    a.delete_org("acme").unwrap();
    assert_gone(&held, "after delete");
    assert_gone(&held, "again");
    // Nothing came back: not in the registry, not to a new handle, not to B's other calls.
    assert!(a.list_orgs().unwrap().is_empty());
    assert!(b.list_orgs().unwrap().is_empty());
    assert!(matches!(b.org("acme"), Err(Error::OrgNotFound(_))));
    assert!(matches!(s.open(root()).unwrap().org("acme"), Err(Error::OrgNotFound(_))));
    assert!(a.verify().unwrap().is_ok());
    // The name can be taken again, as a new org: B's old handle stays dead to it (another
    // seed, another org).
    let again = a.create_org("acme").unwrap();
    assert_eq!(again.read().unwrap().counts().unwrap(), (0, 0));
    match held.read().and_then(|r| r.node(x)) {
        Err(Error::OrgNotFound(_)) | Ok(None) => {}
        other => panic!("the old handle read the new org's data or failed otherwise: {other:?}"),
    }
    // The new org, written by A with other kinds and as many commits as the old one had: B
    // (whose caches held the old org's pages, state-tree nodes and kind names under the same
    // tag and commit counters) reads it as it is.
    for (i, kind) in ["deal", "account"].iter().enumerate() {
        let mut w = again.write().unwrap();
        let n = w.upsert_node(NodeInput::new(*kind).source("crm", format!("{i}"))).unwrap();
        w.add_edge(EdgeInput::new(n, n, "self")).unwrap();
        w.commit().unwrap();
    }
    let fresh = b.org("acme").unwrap();
    let r = fresh.read().unwrap();
    assert_eq!(r.counts().unwrap(), (2, 2));
    let n0 = r.lookup("crm", "0").unwrap().expect("the new org's node");
    assert_eq!(r.node(n0).unwrap().unwrap().kind, "deal", "a kind name of the deleted org");
    assert!(r.lookup("s", "x").unwrap().is_none(), "the deleted org's node resurfaced");
    drop(r);
    let mut w = fresh.write().unwrap();
    w.upsert_node(NodeInput::new("deal").source("crm", "b")).unwrap();
    w.commit().unwrap();
    assert!(b.verify().unwrap().is_ok());
    assert_eq!(a.org("acme").unwrap().read().unwrap().counts().unwrap().0, 3);
}

#[test]
fn postgres_org_key_rotated_by_another_instance_keeps_an_open_handle_reading_and_writing() {
    let Some(s) = Schema::new("admin_rotate") else { return };
    let (a, b) = (s.open(root()).unwrap(), s.open(root()).unwrap());
    a.create_org("acme").unwrap();
    let held = b.org("acme").unwrap();
    let (mut ids, mut extras) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let mut w = held.write().unwrap();
        for i in 0..30i64 {
            let n = w.upsert_node(NodeInput::new("n").source("s", format!("{round}-{i}")).prop("i", i)).unwrap();
            if let Some(&prev) = ids.last() {
                w.add_edge(EdgeInput::new(prev, n, "next")).unwrap();
            }
            ids.push(n);
        }
        w.commit().unwrap();
        // Warm B's cache, then A re-seals every record under a new epoch.
        assert!(neighbors(&b, "acme", ids[0]).contains(&ids[1]));
        let report = a.rotate_org_key("acme").unwrap();
        assert!(report.resealed > 0, "{report:?}");
        // B reads everything (cache or not) and writes on top, learning the new epoch.
        let r = held.read().unwrap();
        assert_eq!(r.counts().unwrap().0, (ids.len() + extras.len()) as u64);
        for (k, &id) in ids.iter().enumerate() {
            assert!(r.node(id).unwrap().is_some(), "round {round}: node {k} lost");
            assert_eq!(
                r.node_props(id, Compartment::Raw).unwrap(),
                vec![("i".to_string(), Value::from((k % 30) as i64))],
                "round {round}: node {k}"
            );
        }
        drop(r);
        let mut w = held.write().unwrap();
        let extra = w.upsert_node(NodeInput::new("n").source("s", format!("extra-{round}"))).unwrap();
        w.add_edge(EdgeInput::new(ids[0], extra, "next")).unwrap();
        w.commit().unwrap();
        extras.push(extra);
        let mut want = extras.clone();
        want.push(ids[1]);
        want.sort();
        assert_eq!(neighbors(&b, "acme", ids[0]), want, "round {round}");
        assert_eq!(neighbors(&a, "acme", ids[0]), want, "round {round}");
    }
    // A fresh instance sees all of it, and the store verifies.
    let c = s.open(root()).unwrap();
    let r = c.org("acme").unwrap().read().unwrap();
    assert_eq!(r.counts().unwrap().0, (ids.len() + extras.len()) as u64);
    assert!(c.verify().unwrap().is_ok());
    assert!(a.verify().unwrap().is_ok());
}

#[test]
fn postgres_connection_cap_makes_extra_threads_wait_and_is_never_exceeded() {
    let Some(s) = Schema::new("cap") else { return };
    let app = format!("silo_cap_{}", std::process::id());
    let db = Db::builder()
        .postgres_max_connections(2)
        .open_postgres(&format!("{} application_name={app}", s.url), root())
        .unwrap();
    let orgs: Vec<_> = (0..8).map(|t| db.create_org(&format!("o{t}")).unwrap()).collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let peak = std::thread::scope(|sc| {
        let monitor = sc.spawn(|| {
            let mut c = s.client();
            let mut peak = 0i64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let n: i64 = c
                    .query_one("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", &[&app])
                    .unwrap()
                    .get(0);
                peak = peak.max(n);
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        });
        let writers: Vec<_> = orgs
            .iter()
            .map(|org| {
                sc.spawn(move || {
                    for i in 0..15 {
                        let mut w = org.write().unwrap();
                        w.upsert_node(NodeInput::new("n").source("s", format!("{i}"))).unwrap();
                        w.commit().unwrap();
                        assert_eq!(org.read().unwrap().counts().unwrap().0, i + 1);
                    }
                })
            })
            .collect();
        for h in writers {
            h.join().expect("a writer failed");
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        monitor.join().unwrap()
    });
    assert!(peak >= 1, "the monitor saw none of the pool's connections");
    assert!(peak <= 2, "{peak} connections open at once, cap 2");
    for org in &orgs {
        assert_eq!(org.read().unwrap().counts().unwrap().0, 15);
    }
}
