//! End-to-end tests of the `silograph` command-line tool: every command run as a process on real
//! data shipped in the repository's `examples/data/`, JSON output parsed and checked against the
//! input file, and the exit codes (0 ok, 1 integrity failure, 2 usage, 3 wrong key).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// A scratch directory with a database and its root key file, created by `init`.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let env = Env { dir: tempfile::tempdir().unwrap() };
        let out = env.run_raw(&[
            "--db",
            env.db().to_str().unwrap(),
            "init",
            "--generate-key-file",
            env.key().to_str().unwrap(),
        ]);
        assert_ok(&out);
        env
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn db(&self) -> PathBuf {
        self.path("ctx.silo")
    }

    fn key(&self) -> PathBuf {
        self.path("root.key")
    }

    fn run_raw(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_silograph")).args(args).output().unwrap()
    }

    /// Runs `silograph --db DB --root-key-file KEY args…`.
    fn run(&self, args: &[&str]) -> Output {
        let (db, key) = (self.db(), self.key());
        let mut all = vec!["--db", db.to_str().unwrap(), "--root-key-file", key.to_str().unwrap()];
        all.extend_from_slice(args);
        self.run_raw(&all)
    }

    /// Runs a command with `--json` that must succeed, and parses its output.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.run(&all);
        assert_ok(&out);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(&out)))
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_ok(o: &Output) {
    assert!(o.status.success(), "exit {:?}\nstdout: {}\nstderr: {}", o.status.code(), stdout(o), stderr(o));
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/data").join(name)
}

/// Writes `hex` as a key file private to its owner (the CLI refuses any other).
fn write_key(path: &Path, hex: &str) {
    std::fs::write(path, hex).unwrap();
    set_mode(path, 0o600);
}

fn set_mode(path: &Path, mode: u32) {
    #[cfg(unix)]
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    #[cfg(not(unix))]
    let _ = (path, mode);
}

/// The first `rows` messages of the shipped CollegeMsg slice, as a file in `env`.
fn messages(env: &Env, rows: usize) -> (PathBuf, Vec<(String, String, i64)>) {
    let text = std::fs::read_to_string(data("collegemsg-first20k.tsv")).unwrap();
    let lines: Vec<&str> = text.lines().take(rows + 1).collect();
    let path = env.path("msgs.tsv");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let parsed = lines[1..]
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_owned(), f[1].to_owned(), f[2].parse::<i64>().unwrap())
        })
        .collect();
    (path, parsed)
}

/// The arguments that import the messages file at `path` into `org`, then `extra` ones.
fn import_messages<'a>(org: &'a str, path: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "import",
        org,
        "--edges",
        path.to_str().unwrap(),
        "--system",
        "user",
        "--kind",
        "messaged",
        "--time-col",
        "ts",
        "--time-unit",
        "s",
    ];
    args.extend_from_slice(extra);
    args
}

/// An env with org `uci` holding the first `rows` messages.
fn loaded(rows: usize) -> (Env, Vec<(String, String, i64)>) {
    let env = Env::new();
    assert_ok(&env.run(&["org", "create", "uci"]));
    let (path, msgs) = messages(&env, rows);
    let report = env.json(&import_messages("uci", &path, &[]));
    assert_eq!(report["rows"], rows as u64);
    assert_eq!(report["edges_added"], rows as u64);
    (env, msgs)
}

/// Flips one ciphertext byte of the first record of `table` with plain redb, bypassing silograph.
fn flip_a_byte_of_the_first_record(db: &Path, table: &str) {
    use redb::ReadableTable;
    let def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new(table);
    let raw = redb::Database::create(db).unwrap();
    let wtx = raw.begin_write().unwrap();
    {
        let mut t = wtx.open_table(def).unwrap();
        let (k, mut v) = {
            let (k, v) = t.first().unwrap().unwrap();
            (k.value().to_vec(), v.value().to_vec())
        };
        let mid = v.len() / 2;
        v[mid] ^= 1;
        t.insert(k.as_slice(), v.as_slice()).unwrap();
    }
    wtx.commit().unwrap();
}

fn names(v: &Value) -> BTreeSet<String> {
    v.as_array().unwrap().iter().map(|n| n["node"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn init_writes_an_owner_only_key_file_and_refuses_to_overwrite_a_database() {
    let env = Env::new();
    let key = std::fs::read_to_string(env.key()).unwrap();
    assert_eq!(key.trim().len(), 64);
    assert!(key.trim().bytes().all(|b| b.is_ascii_hexdigit()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(env.key()).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let again = env.run(&["init"]);
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    assert_eq!(std::fs::read_to_string(env.key()).unwrap(), key, "the key file is never rewritten");
}

#[test]
fn root_key_from_an_environment_variable_opens_the_same_database() {
    let env = Env::new();
    assert_ok(&env.run(&["org", "create", "acme"]));
    let key = std::fs::read_to_string(env.key()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_silograph"))
        .args(["--db", env.db().to_str().unwrap(), "--root-key-env", "SILO_TEST_ROOT", "--json", "org", "list"])
        .env("SILO_TEST_ROOT", key.trim())
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), serde_json::json!(["acme"]));
}

#[test]
fn import_of_real_messages_matches_the_file_and_a_second_import_changes_nothing() {
    let (env, msgs) = loaded(1500);
    let users: BTreeSet<&str> = msgs.iter().flat_map(|(a, b, _)| [a.as_str(), b.as_str()]).collect();
    let stats = env.json(&["stats", "uci"]);
    assert_eq!(stats["nodes"], users.len() as u64);
    assert_eq!(stats["edges"], msgs.len() as u64);

    // Again, with tiny caches (the memory bound of a big import): same answer, nothing added.
    let (path, _) = messages(&env, 1500);
    let again = env.json(&import_messages("uci", &path, &["--page-cache-mb", "1", "--storage-cache-mb", "1"]));
    assert_eq!((again["nodes_added"].as_u64(), again["edges_added"].as_u64()), (Some(0), Some(0)));
    assert_eq!(env.json(&["stats", "uci"]), stats);
}

#[test]
fn neighbors_json_lists_exactly_the_recipients_in_the_file_with_their_times() {
    let (env, msgs) = loaded(1500);
    let out = env.json(&["neighbors", "uci", "user:1"]);
    let mut got: Vec<(String, i64)> = out
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            assert_eq!(n["kind"], "messaged");
            assert_eq!(n["direction"], "out");
            (n["node"].as_str().unwrap().to_owned(), n["valid_from"].as_i64().unwrap())
        })
        .collect();
    let mut want: Vec<(String, i64)> =
        msgs.iter().filter(|(a, _, _)| a == "1").map(|(_, b, t)| (format!("user:{b}"), t * 1000)).collect();
    got.sort();
    want.sort();
    assert!(!want.is_empty());
    assert_eq!(got, want);

    let incoming = env.json(&["neighbors", "uci", "user:1", "--direction", "in"]);
    let senders: BTreeSet<String> =
        msgs.iter().filter(|(_, b, _)| b == "1").map(|(a, _, _)| format!("user:{a}")).collect();
    assert_eq!(names(&incoming), senders);
}

#[test]
fn valid_at_hides_messages_sent_after_that_time() {
    let (env, msgs) = loaded(1500);
    let mine: Vec<i64> = msgs.iter().filter(|(a, _, _)| a == "1").map(|(_, _, t)| t * 1000).collect();
    let cut = mine[mine.len() / 2];
    let out = env.json(&["neighbors", "uci", "user:1", "--valid-at", &cut.to_string()]);
    let times: Vec<i64> = out.as_array().unwrap().iter().map(|n| n["valid_from"].as_i64().unwrap()).collect();
    assert_eq!(times.len(), mine.iter().filter(|&&t| t <= cut).count());
    assert!(times.iter().all(|&t| t <= cut));
    let before_all = env.json(&["neighbors", "uci", "user:1", "--valid-at", "2004-01-01"]);
    assert_eq!(before_all, serde_json::json!([]));
}

#[test]
fn khop_and_path_json_agree_with_a_bfs_over_the_file() {
    let (env, msgs) = loaded(1500);
    let mut adj: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (a, b, _) in &msgs {
        adj.entry(a.as_str()).or_default().insert(b.as_str());
    }
    // BFS depths from user 1 in the file itself.
    let mut depth: BTreeMap<&str, u64> = BTreeMap::from([("1", 0)]);
    let mut frontier = vec!["1"];
    for d in 1..=2 {
        let mut next = Vec::new();
        for u in frontier {
            for v in adj.get(u).into_iter().flatten() {
                if !depth.contains_key(v) {
                    depth.insert(v, d);
                    next.push(*v);
                }
            }
        }
        frontier = next;
    }
    let hits = env.json(&["khop", "uci", "user:1", "--depth", "2"]);
    let got: BTreeMap<String, u64> = hits
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["node"].as_str().unwrap().to_owned(), h["depth"].as_u64().unwrap()))
        .collect();
    let want: BTreeMap<String, u64> = depth.iter().map(|(k, d)| (format!("user:{k}"), *d)).collect();
    assert_eq!(got, want);

    let (far, d) = want.iter().find(|(_, d)| **d == 2).unwrap();
    let p = env.json(&["path", "uci", "user:1", far]);
    assert_eq!(p["length"].as_u64(), Some(*d));
    let nodes: Vec<&str> = p["nodes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert_eq!((nodes[0], nodes[2]), ("user:1", far.as_str()));
    let hop = |a: &str, b: &str| adj.get(&a[5..]).is_some_and(|s| s.contains(&b[5..]));
    assert!(hop(nodes[0], nodes[1]) && hop(nodes[1], nodes[2]), "each step of {nodes:?} is a message in the file");
}

#[test]
fn wrong_root_key_exits_3_and_leaves_the_file_unchanged() {
    let (env, _) = loaded(200);
    let before = std::fs::read(env.db()).unwrap();
    let wrong = env.path("wrong.key");
    write_key(&wrong, &"11".repeat(32));
    let out =
        env.run_raw(&["--db", env.db().to_str().unwrap(), "--root-key-file", wrong.to_str().unwrap(), "stats", "uci"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("wrong key"));
    assert_eq!(std::fs::read(env.db()).unwrap(), before);
}

#[test]
fn malformed_row_is_reported_by_file_line_and_column_and_nothing_is_committed() {
    let env = Env::new();
    assert_ok(&env.run(&["org", "create", "uci"]));
    let bad = env.path("bad.tsv");
    std::fs::write(&bad, "src\tdst\tts\n1\t2\t1082040961\n2\t3\t1082040962\n3\t4\tnot-a-time\n4\t5\t1082040964\n")
        .unwrap();
    let out = env.run(&[
        "import",
        "uci",
        "--edges",
        bad.to_str().unwrap(),
        "--system",
        "user",
        "--time-col",
        "ts",
        "--batch-size",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("bad.tsv:4:3"), "error names file:line:column: {err}");
    let stats = env.json(&["stats", "uci"]);
    assert_eq!((stats["nodes"].as_u64(), stats["edges"].as_u64()), (Some(0), Some(0)));
}

#[test]
fn malformed_jsonl_line_is_reported_with_line_and_column() {
    let env = Env::new();
    assert_ok(&env.run(&["org", "create", "acme"]));
    let f = env.path("edges.jsonl");
    std::fs::write(
        &f,
        "{\"from\":\"mail:a\",\"to\":\"mail:b\",\"kind\":\"emailed\"}\n{\"from\":\"mail:b\",\"to\": }\n",
    )
    .unwrap();
    let out = env.run(&["import", "acme", "--edges", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("edges.jsonl:2:"), "{}", stderr(&out));
    assert_eq!(env.json(&["stats", "acme"])["edges"], 0);
}

#[test]
fn jsonl_nodes_and_edges_import_with_their_sources_and_times() {
    let env = Env::new();
    assert_ok(&env.run(&["org", "create", "acme"]));
    let nodes = env.path("nodes.jsonl");
    std::fs::write(
        &nodes,
        "{\"kind\":\"person\",\"source\":{\"system\":\"mail\",\"id\":\"alice\"},\"props\":{\"title\":\"CTO\"}}\n\
         {\"kind\":\"deal\",\"source\":{\"system\":\"crm\",\"id\":\"006A0\"},\"props\":{\"amount\":125000}}\n",
    )
    .unwrap();
    let edges = env.path("edges.jsonl");
    std::fs::write(
        &edges,
        "{\"from\":\"mail:alice\",\"to\":\"crm:006A0\",\"kind\":\"owns\",\"time\":1700000000000,\"source\":\"crm:evt-1\"}\n",
    )
    .unwrap();
    let args =
        ["import", "acme", "--nodes", nodes.to_str().unwrap(), "--edges", edges.to_str().unwrap(), "--time-unit", "ms"];
    let r = env.json(&args);
    assert_eq!((r["nodes_added"].as_u64(), r["edges_added"].as_u64()), (Some(2), Some(1)));
    assert_eq!(env.json(&args)["edges_added"], 0, "the edge's own source makes re-import idempotent");
    let n = env.json(&["neighbors", "acme", "mail:alice"]);
    assert_eq!(n[0]["node"], "crm:006A0");
    assert_eq!(n[0]["kind"], "owns");
    assert_eq!(n[0]["valid_from"], 1_700_000_000_000i64);
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    for args in [
        vec!["frobnicate"],
        vec!["khop", "uci", "user:1"],          // --depth missing
        vec!["neighbors", "uci", "not-a-node"], // not system:id
        vec!["neighbors", "nope", "user:1"],    // unknown org
        vec!["import", "uci"],                  // no file
    ] {
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    let no_key = env.run_raw(&["--db", env.db().to_str().unwrap(), "stats", "uci"]);
    assert_eq!(no_key.status.code(), Some(2), "{}", stderr(&no_key));
}

#[test]
fn rotation_keeps_every_answer_and_the_audit_chain_and_verify_pass() {
    let (env, _) = loaded(500);
    let before = env.json(&["khop", "uci", "user:1", "--depth", "3"]);
    let r = env.json(&["org", "rotate", "uci"]);
    assert_eq!(r["epoch"], 1);
    assert!(r["resealed"].as_u64().unwrap() > 0);
    assert_eq!(env.json(&["khop", "uci", "user:1", "--depth", "3"]), before);
    let audit = env.json(&["audit", "uci", "verify"]);
    assert_eq!(audit["ok"], true);
    let v = env.json(&["verify"]);
    assert_eq!(v["ok"], true);
    assert_eq!(v["corrupt"], serde_json::json!([]));
}

#[test]
fn export_then_import_org_into_another_database_gives_the_same_answers() {
    let (env, _) = loaded(500);
    let tk = env.path("transport.key");
    write_key(&tk, &"ab".repeat(32));
    let bundle = env.path("uci.bundle");
    let e =
        env.json(&["export", "uci", "--out", bundle.to_str().unwrap(), "--transport-key-file", tk.to_str().unwrap()]);
    assert!(e["records"].as_u64().unwrap() > 0);
    let before = env.json(&["neighbors", "uci", "user:1"]);

    let other = Env::new();
    let i = other.json(&["import-org", bundle.to_str().unwrap(), "--transport-key-file", tk.to_str().unwrap()]);
    assert_eq!(i["org"], "uci");
    assert_eq!(other.json(&["stats", "uci"]), env.json(&["stats", "uci"]));
    assert_eq!(other.json(&["neighbors", "uci", "user:1"]), before);

    let wrong = env.path("wrong-transport.key");
    write_key(&wrong, &"cd".repeat(32));
    let third = Env::new();
    let out = third.run(&["import-org", bundle.to_str().unwrap(), "--transport-key-file", wrong.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "a wrong transport key is a wrong key: {}", stderr(&out));
    assert_eq!(third.json(&["org", "list"]), serde_json::json!([]));
}

#[test]
fn deleted_org_disappears_and_its_name_can_be_reused_empty() {
    let (env, _) = loaded(200);
    let d = env.json(&["org", "delete", "uci"]);
    assert!(d["purged"].as_u64().unwrap() > 0);
    assert_eq!(env.json(&["org", "list"]), serde_json::json!([]));
    assert_eq!(env.run(&["stats", "uci"]).status.code(), Some(2));
    assert_ok(&env.run(&["org", "create", "uci"]));
    assert_eq!(env.json(&["stats", "uci"])["edges"], 0);
}

#[test]
fn a_tampered_record_fails_verify_with_exit_1_and_is_named() {
    let (env, _) = loaded(300);
    flip_a_byte_of_the_first_record(&env.db(), "edges");
    let out = env.run(&["verify", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let corrupt = report["corrupt"].as_array().unwrap();
    assert_eq!(corrupt.len(), 1);
    assert_eq!((corrupt[0]["org"].as_str(), corrupt[0]["table"].as_str()), (Some("uci"), Some("edges")));
}

#[test]
fn bulk_import_answers_like_the_ordinary_import_and_refuses_a_second_run() {
    let (env, _) = loaded(1000);
    assert_ok(&env.run(&["org", "create", "fast"]));
    let (path, _) = messages(&env, 1000);
    let args = import_messages("fast", &path, &["--bulk"]);
    let r = env.json(&args);
    assert_eq!(r["edges_added"], 1000);
    let strip = |v: Value| -> BTreeSet<(String, u64)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|h| (h["node"].as_str().unwrap().to_owned(), h["depth"].as_u64().unwrap()))
            .collect()
    };
    for at in ["2004-04-20", "2004-04-25"] {
        let q = |org: &str| strip(env.json(&["khop", org, "user:1", "--depth", "3", "--valid-at", at]));
        assert_eq!(q("fast"), q("uci"), "as of {at}");
    }
    assert_eq!(env.json(&["stats", "fast"])["edges"], env.json(&["stats", "uci"])["edges"]);
    let again = env.run(&args);
    assert_eq!(again.status.code(), Some(2), "a second bulk run would duplicate edges: refused");
    assert_eq!(env.json(&["stats", "fast"])["edges"], 1000);
}

#[test]
fn a_byok_org_opens_only_with_its_own_key_and_a_wrong_one_exits_3() {
    let env = Env::new();
    let ok = env.path("globex.key");
    write_key(&ok, &"42".repeat(32));
    let bad = env.path("bad-org.key");
    write_key(&bad, &"43".repeat(32));
    let created = env.json(&["--org-key-file", ok.to_str().unwrap(), "org", "create", "globex"]);
    assert_eq!(created["byok"], true);
    let (path, msgs) = messages(&env, 100);
    let r = env.json(&[
        "import",
        "globex",
        "--edges",
        path.to_str().unwrap(),
        "--system",
        "user",
        "--org-key-file",
        ok.to_str().unwrap(),
    ]);
    assert_eq!(r["edges_added"], msgs.len() as u64);
    let stats = env.json(&["stats", "globex", "--org-key-file", ok.to_str().unwrap()]);
    assert_eq!(stats["edges"], msgs.len() as u64);

    let wrong = env.run(&["stats", "globex", "--org-key-file", bad.to_str().unwrap()]);
    assert_eq!(wrong.status.code(), Some(3), "{}", stderr(&wrong));
    let keyless = env.run(&["stats", "globex"]);
    assert_eq!(keyless.status.code(), Some(2), "a BYOK org without its key is a usage error: {}", stderr(&keyless));
}

#[test]
fn a_tampered_audit_entry_fails_audit_verify_with_exit_1() {
    let (env, _) = loaded(100);
    assert_eq!(env.json(&["audit", "uci", "verify"])["ok"], true);
    flip_a_byte_of_the_first_record(&env.db(), "audit");
    let out = env.run(&["audit", "uci", "verify"]);
    assert_eq!(out.status.code(), Some(1), "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
}

#[cfg(unix)]
#[test]
fn a_key_file_readable_by_group_or_others_is_refused_with_how_to_fix_it() {
    let env = Env::new();
    assert_ok(&env.run(&["org", "create", "acme"]));
    for mode in [0o644, 0o640, 0o666] {
        set_mode(&env.key(), mode);
        let out = env.run(&["org", "list"]);
        assert_eq!(out.status.code(), Some(2), "mode {mode:o}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(&format!("chmod 600 {}", env.key().display())), "mode {mode:o}: {err}");
    }
    set_mode(&env.key(), 0o600);
    assert_eq!(env.json(&["org", "list"]), serde_json::json!(["acme"]));

    // The same rule for every key file: a transport key too.
    let tk = env.path("transport.key");
    std::fs::write(&tk, "ab".repeat(32)).unwrap();
    set_mode(&tk, 0o644);
    let bundle = env.path("acme.bundle");
    let out =
        env.run(&["export", "acme", "--out", bundle.to_str().unwrap(), "--transport-key-file", tk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    assert!(!bundle.exists());
}

#[test]
fn init_refuses_an_existing_generate_key_file_and_creates_no_database() {
    let dir = tempfile::tempdir().unwrap();
    let (db, key) = (dir.path().join("ctx.silo"), dir.path().join("planted.key"));
    let planted = "5a".repeat(32);
    write_key(&key, &planted);
    let out = Command::new(env!("CARGO_BIN_EXE_silograph"))
        .args(["--db", db.to_str().unwrap(), "init", "--generate-key-file", key.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&key).unwrap(), planted, "the existing file is left alone");
    assert!(!db.exists(), "no database is created with a key someone else may have written");
}

#[test]
fn a_row_with_the_wrong_number_of_fields_is_refused_unless_flexible() {
    let env = Env::new();
    assert_ok(&env.run(&["org", "create", "uci"]));
    let f = env.path("ragged.tsv");
    std::fs::write(&f, "src\tdst\tts\n1\t2\t1082040961\n2\t3\t1082040962\t9\t9\t9\n").unwrap();
    let args = ["import", "uci", "--edges", f.to_str().unwrap(), "--system", "user", "--time-col", "ts"];
    let out = env.run(&args);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("ragged.tsv:3:") && err.contains("6 fields") && err.contains("header has 3"), "{err}");
    assert_eq!(env.json(&["stats", "uci"])["edges"], 0, "nothing of a refused import is committed");

    let mut flexible = args.to_vec();
    flexible.push("--flexible");
    assert_eq!(env.json(&flexible)["edges_added"], 2);
}

#[test]
fn a_failed_init_leaves_no_generated_key_file_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (db, key) = (dir.path().join("missing-dir").join("ctx.silo"), dir.path().join("root.key"));
    let out = Command::new(env!("CARGO_BIN_EXE_silograph"))
        .args(["--db", db.to_str().unwrap(), "init", "--generate-key-file", key.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(!key.exists(), "a key that protects nothing is removed, so init can be run again");
}

/// Built with `--features postgres` and run without `--db`, the tool works on the PostgreSQL
/// database of `SILOGRAPH_POSTGRES_URL` (`.ci/pg.sh` starts one; without it this test prints a
/// line and passes, except in CI, where it fails).
#[cfg(feature = "postgres")]
#[test]
fn postgres_without_db_the_tool_uses_the_postgres_database() {
    let Ok(url) = std::env::var("SILOGRAPH_POSTGRES_URL") else {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "SILOGRAPH_POSTGRES_URL is not set in CI");
        println!("skipped: SILOGRAPH_POSTGRES_URL is not set");
        return;
    };
    let run = |key: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_silograph"))
            .env("SILOGRAPH_POSTGRES_URL", &url)
            .env("CLI_TEST_KEY", key)
            .args(["--root-key-env", "CLI_TEST_KEY"])
            .args(args)
            .output()
            .unwrap()
    };
    let key = "07".repeat(32);
    let org = format!("cli-{}", std::process::id());
    let edges = data("collegemsg-first20k.tsv");
    assert_ok(&run(&key, &["init"]));
    assert_ok(&run(&key, &["org", "create", &org]));
    let import = ["import", &org, "--edges", edges.to_str().unwrap(), "--system", "user", "--kind", "messaged"];
    assert_ok(&run(&key, &import));
    let out = run(&key, &["stats", &org, "--json"]);
    assert_ok(&out);
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["edges"], 20_000, "{stats}");
    let wrong = run(&"08".repeat(32), &["org", "list"]);
    assert_eq!(wrong.status.code(), Some(3), "a wrong root key: {}", stdout(&wrong));
    // An explicit --db still means the file.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ctx.silo");
    assert_ok(&run(&key, &["--db", db.to_str().unwrap(), "init"]));
    assert!(db.exists(), "--db was ignored");
}

/// Runs `silograph args…` with `input` on its stdin.
fn run_with_stdin(args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_silograph"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// `args` after `--db DB --root-key-file KEY` (or another database and root key file).
fn with_db<'a>(db: &'a Path, key: &'a Path, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--db", db.to_str().unwrap(), "--root-key-file", key.to_str().unwrap()];
    all.extend_from_slice(args);
    all
}

/// The keys of every record in redb table `table` of the file `db`, read with plain redb.
fn record_keys(db: &Path, table: &str) -> BTreeSet<Vec<u8>> {
    use redb::{ReadableDatabase, ReadableTable};
    let def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new(table);
    let raw = redb::Database::open(db).unwrap();
    let rtx = raw.begin_read().unwrap();
    let t = rtx.open_table(def).unwrap();
    t.iter().unwrap().map(|r| r.unwrap().0.value().to_vec()).collect()
}

/// Whether `needle` occurs anywhere in the bytes of the file at `path`.
fn file_contains(path: &Path, needle: &[u8]) -> bool {
    std::fs::read(path).unwrap().windows(needle.len()).any(|w| w == needle)
}

/// A keyring path (not created) and its key file (mode 0600) in `env`, in a directory of their
/// own apart from the database.
fn keyring_files(env: &Env) -> (PathBuf, PathBuf) {
    let dir = env.path("custody");
    std::fs::create_dir_all(&dir).unwrap();
    let key = env.path("keyring.key");
    write_key(&key, &"5c".repeat(32));
    (dir.join("ctx.keys"), key)
}

/// `--keyring RING --keyring-key-file KEY` followed by `args`.
fn with_keyring<'a>(ring: &'a Path, key: &'a Path, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--keyring", ring.to_str().unwrap(), "--keyring-key-file", key.to_str().unwrap()];
    all.extend_from_slice(args);
    all
}

#[test]
fn an_org_under_a_keyring_opens_only_with_it_and_its_deletion_holds_against_copies() {
    let env = Env::new();
    let (ring, ring_key) = keyring_files(&env);
    let created = env.json(&with_keyring(&ring, &ring_key, &["org", "create", "acme"]));
    assert_eq!(created, serde_json::json!({"byok": false, "created": "acme", "custody": true}));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&ring).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let (path, msgs) = messages(&env, 200);
    let import = import_messages("acme", &path, &[]);
    assert_eq!(env.json(&with_keyring(&ring, &ring_key, &import))["edges_added"], msgs.len() as u64);
    assert_eq!(env.json(&with_keyring(&ring, &ring_key, &["stats", "acme"]))["edges"], msgs.len() as u64);

    // Without the keyring the org's keys cannot be derived: a usage error saying what to give.
    for args in [&["stats", "acme"][..], &["neighbors", "acme", "user:1"], &["audit", "acme", "verify"]] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("key custody") && err.contains("--keyring"), "{args:?}: {err}");
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
    }
    // The wrong keyring key does not open the keyring: exit 3, naming the keyring.
    let bad = env.path("bad-keyring.key");
    write_key(&bad, &"5d".repeat(32));
    let out = env.run(&with_keyring(&ring, &bad, &["stats", "acme"]));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains(ring.to_str().unwrap()), "{}", stderr(&out));

    assert_ok(&env.run(&with_keyring(&ring, &ring_key, &["org", "create", "beta"])));
    let small = import_messages("beta", &path, &[]);
    assert_ok(&env.run(&with_keyring(&ring, &ring_key, &small)));

    // A copy of the database made before the deletion, then the deletion (it destroys acme's key
    // in the keyring).
    let copy = env.path("copy.silo");
    std::fs::copy(env.db(), &copy).unwrap();
    assert_eq!(env.json(&with_keyring(&ring, &ring_key, &["org", "delete", "acme"]))["deleted"], "acme");

    let key = env.key();
    let on_copy = |args: &[&str]| {
        let mut all = with_keyring(&ring, &ring_key, args);
        all.splice(0..0, with_db(&copy, &key, &[]));
        env.run_raw(&all)
    };
    let out = on_copy(&["stats", "acme", "--json"]);
    assert!(!out.status.success(), "the copy still opens the deleted org: {}", stdout(&out));
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    let out = on_copy(&["neighbors", "acme", &format!("user:{}", msgs[0].0), "--json"]);
    assert!(!out.status.success(), "the copy still opens the deleted org: {}", stdout(&out));
    // The other org of the copy opens, with all its edges.
    let out = on_copy(&["stats", "beta", "--json"]);
    assert_ok(&out);
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap()["edges"], msgs.len() as u64);
    // Verifying the copy checks beta and names acme as shredded.
    let out = on_copy(&["verify", "--json"]);
    assert_ok(&out);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["shredded"], serde_json::json!(["acme"]), "{v}");
}

#[test]
fn a_keyring_needs_exactly_one_private_key_and_only_init_and_org_create_make_one() {
    let env = Env::new();
    let (ring, ring_key) = keyring_files(&env);
    assert_ok(&env.run(&["org", "create", "acme"]));

    // A missing keyring is an error naming it for every other command, and stays missing.
    let acme_secret = ["secret", "list", "acme"];
    for args in [&["org", "list"][..], &["stats", "acme"], &["verify"], &acme_secret, &["org", "rekey", "acme"]] {
        let out = env.run(&with_keyring(&ring, &ring_key, args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(&format!("no keyring at {}", ring.display())), "{args:?}: {}", stderr(&out));
        assert!(!ring.exists(), "{args:?} created the keyring");
    }
    assert_eq!(env.json(&["stats", "acme"])["edges"], 0, "the org was left without custody");

    // The key: exactly one of file and variable, with --keyring; a file private to its owner.
    let cases: [(&[&str], &str); 3] = [
        (&["--keyring", ring.to_str().unwrap(), "org", "create", "x"], "--keyring-key-file"),
        (&["--keyring-key-file", ring_key.to_str().unwrap(), "org", "create", "x"], "--keyring F"),
        (
            &[
                "--keyring",
                ring.to_str().unwrap(),
                "--keyring-key-file",
                ring_key.to_str().unwrap(),
                "--keyring-key-env",
                "SILO_TEST_KEYRING",
                "org",
                "create",
                "x",
            ],
            "not both",
        ),
    ];
    for (args, says) in cases {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert!(!ring.exists(), "{args:?} created the keyring");
    }
    let short = env.path("short.key");
    write_key(&short, &"5c".repeat(31));
    let out = env.run(&with_keyring(&ring, &short, &["org", "create", "x"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("64 hex digits"), "{}", stderr(&out));
    #[cfg(unix)]
    {
        set_mode(&ring_key, 0o640);
        let out = env.run(&with_keyring(&ring, &ring_key, &["org", "create", "x"]));
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(&format!("chmod 600 {}", ring_key.display())), "{}", stderr(&out));
        set_mode(&ring_key, 0o600);
    }
    assert!(!ring.exists());
    let out = env.run(&with_keyring(env.db().as_path(), &ring_key, &["org", "create", "x"]));
    assert_eq!(out.status.code(), Some(2), "the database file as the keyring: {}", stderr(&out));
    assert_eq!(env.json(&["org", "list"]), serde_json::json!(["acme"]), "no org was created by a refused command");

    // `org create` makes the keyring; the key may come from a variable as well.
    let hex = std::fs::read_to_string(&ring_key).unwrap();
    let (db, key) = (env.db(), env.key());
    let via_env = |args: &[&str]| {
        let mut all = with_db(&db, &key, &["--keyring", ring.to_str().unwrap()]);
        all.extend_from_slice(&["--keyring-key-env", "SILO_TEST_KEYRING"]);
        all.extend_from_slice(args);
        Command::new(env!("CARGO_BIN_EXE_silograph")).args(&all).env("SILO_TEST_KEYRING", hex.trim()).output().unwrap()
    };
    assert_ok(&via_env(&["org", "create", "globex"]));
    assert!(ring.exists());
    assert_ok(&via_env(&["stats", "globex"]));
    assert_eq!(env.json(&with_keyring(&ring, &ring_key, &["stats", "globex"]))["nodes"], 0);
    #[cfg(unix)]
    {
        set_mode(&ring, 0o644);
        let out = env.run(&with_keyring(&ring, &ring_key, &["stats", "globex"]));
        assert_eq!(out.status.code(), Some(2), "a keyring readable by others: {}", stderr(&out));
        assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
        set_mode(&ring, 0o600);
    }

    // `init` makes one too, and reports it.
    let (db2, key2, ring2) = (env.path("second.silo"), env.path("second.key"), env.path("custody/second.keys"));
    let args = with_keyring(
        &ring2,
        &ring_key,
        &["--db", db2.to_str().unwrap(), "init", "--generate-key-file", key2.to_str().unwrap(), "--json"],
    );
    let out = env.run_raw(&args);
    assert_ok(&out);
    let init: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(init["keyring"], ring2.to_str().unwrap());
    assert!(ring2.exists() && db2.exists());
}

#[test]
fn org_rekey_moves_every_record_to_new_keys_and_answers_stay_the_same() {
    let (env, msgs) = loaded(300);
    let node = format!("user:{}", msgs[0].0);
    let before = env.json(&["neighbors", "uci", &node]);
    let (edges, nodes) = (record_keys(&env.db(), "edges"), record_keys(&env.db(), "nodes"));
    assert!(!edges.is_empty() && !nodes.is_empty());

    let r = env.json(&["org", "rekey", "uci"]);
    assert_eq!(r["org"], "uci");
    assert_eq!(r["resumed"], false);
    // Records are pages (up to 128 edges, 64 nodes each), index buckets, audit entries...
    assert!(r["resealed"].as_u64().unwrap() > 0, "{r}");
    let epoch = r["epoch"].as_u64().unwrap();
    assert!(epoch >= 1, "{r}");
    assert!(r["batches"].as_u64().unwrap() >= 1, "{r}");
    // Nothing is left under the old record keys (a data-key rotation would keep them all).
    assert!(record_keys(&env.db(), "edges").is_disjoint(&edges), "edge records kept their keys");
    assert!(record_keys(&env.db(), "nodes").is_disjoint(&nodes), "node records kept their keys");
    assert_eq!(env.json(&["neighbors", "uci", &node]), before);
    assert_eq!(env.json(&["stats", "uci"])["edges"], msgs.len() as u64);
    assert_eq!(env.json(&["audit", "uci", "verify"])["ok"], true);
    assert_eq!(env.json(&["verify"])["ok"], true);
    let text = env.run(&["org", "rekey", "uci"]);
    assert_ok(&text);
    assert!(stdout(&text).starts_with("re-keyed uci"), "{}", stdout(&text));
    assert!(env.json(&["org", "rekey", "uci"])["epoch"].as_u64().unwrap() > epoch, "each re-key is a new epoch");

    // With --keyring, a re-key brings an org created without custody under it.
    let (ring, ring_key) = keyring_files(&env);
    assert_ok(&env.run(&with_keyring(&ring, &ring_key, &["org", "create", "other"])));
    assert_ok(&env.run(&with_keyring(&ring, &ring_key, &["org", "rekey", "uci"])));
    assert_eq!(env.json(&with_keyring(&ring, &ring_key, &["stats", "uci"]))["edges"], msgs.len() as u64);
    let out = env.run(&["stats", "uci"]);
    assert_eq!(out.status.code(), Some(2), "re-keyed under custody, it needs the keyring: {}", stderr(&out));

    // A BYOK org is refused, saying why; so is an unknown one.
    let k = env.path("byok.key");
    write_key(&k, &"42".repeat(32));
    assert_ok(&env.run(&["--org-key-file", k.to_str().unwrap(), "org", "create", "globex"]));
    for args in [&["org", "rekey", "globex"][..], &["org", "rekey", "globex", "--org-key-file", k.to_str().unwrap()]] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("managed key only"), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(env.run(&["org", "rekey", "nope"]).status.code(), Some(2));
}

#[test]
fn rotate_root_makes_only_the_new_key_open_the_database() {
    let (env, msgs) = loaded(100);
    let node = format!("user:{}", msgs[0].0);
    let before = env.json(&["neighbors", "uci", &node]);
    let new_key = env.path("new-root.key");
    write_key(&new_key, &"61".repeat(32));

    // Refused without touching anything: the current key again, a key file others can read.
    let out = env.run(&["rotate-root", "--new-root-key-file", env.key().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("current one"), "{}", stderr(&out));
    #[cfg(unix)]
    {
        set_mode(&new_key, 0o644);
        let out = env.run(&["rotate-root", "--new-root-key-file", new_key.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
        set_mode(&new_key, 0o600);
    }
    assert_eq!(env.run(&["rotate-root"]).status.code(), Some(2), "the new key is required");
    assert_eq!(env.json(&["neighbors", "uci", &node]), before, "the old key still opens it");

    let r = env.json(&["rotate-root", "--new-root-key-file", new_key.to_str().unwrap()]);
    assert_eq!(r, serde_json::json!({"db": env.db().to_str().unwrap(), "rotated_root": true}));
    let old = env.run(&["org", "list"]);
    assert_eq!(old.status.code(), Some(3), "the old root key still opens the database: {}", stdout(&old));
    let db = env.db();
    let with_new = |args: &[&str]| {
        let mut all = with_db(&db, &new_key, args);
        all.push("--json");
        let out = env.run_raw(&all);
        assert_ok(&out);
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    assert_eq!(with_new(&["neighbors", "uci", &node]), before);
    assert_eq!(with_new(&["verify"])["ok"], true);

    // Again, the new key from a variable: then only that one opens it.
    let third = "62".repeat(32);
    let out = Command::new(env!("CARGO_BIN_EXE_silograph"))
        .args(with_db(&env.db(), &new_key, &["rotate-root", "--new-root-key-env", "SILO_TEST_NEW_ROOT"]))
        .env("SILO_TEST_NEW_ROOT", &third)
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(stdout(&out).contains("only the new key opens it"), "{}", stdout(&out));
    assert_eq!(env.run_raw(&with_db(&env.db(), &new_key, &["org", "list"])).status.code(), Some(3));
    let third_key = env.path("third.key");
    write_key(&third_key, &third);
    let out = env.run_raw(&with_db(&env.db(), &third_key, &["stats", "uci", "--json"]));
    assert_ok(&out);
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap()["edges"], msgs.len() as u64);
}

#[test]
fn secrets_round_trip_through_stdin_and_the_value_is_never_in_the_file_or_the_output() {
    let env = Env::new();
    assert_ok(&env.run(&["org", "create", "acme"]));
    let (db, key) = (env.db(), env.key());
    let canary = "sk-live-CANARY-5f0c1d2e9a8b7c6d-never-in-plain";
    let put = |name: &str, input: &[u8], extra: &[&str]| {
        let mut args = with_db(&db, &key, &["secret", "put", "acme", name]);
        args.extend_from_slice(extra);
        run_with_stdin(&args, input)
    };
    let no_canary = |o: &Output, what: &str| {
        assert!(!stdout(o).contains(canary), "{what}: the value is on stdout: {}", stdout(o));
        assert!(!stderr(o).contains(canary), "{what}: the value is on stderr: {}", stderr(o));
    };

    // The value is stored byte for byte; --strip-newline drops one trailing newline.
    let out = put("salesforce/oauth", format!("{canary}\n").as_bytes(), &["--strip-newline", "--json"]);
    assert_ok(&out);
    no_canary(&out, "put --json");
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        serde_json::json!({"org": "acme", "put": "salesforce/oauth"})
    );
    let out = put("raw", b"two\nlines\n", &[]);
    assert_ok(&out);
    assert!(stdout(&out).contains("stored secret raw"), "{}", stdout(&out));
    let get = |name: &str| env.run(&["secret", "get", "acme", name]);
    let out = get("salesforce/oauth");
    assert_ok(&out);
    assert_eq!(out.stdout, canary.as_bytes(), "exactly the value, no newline added");
    assert_eq!(get("raw").stdout, b"two\nlines\n");
    assert_eq!(
        env.json(&["secret", "get", "acme", "salesforce/oauth"]),
        serde_json::json!({"name": "salesforce/oauth", "org": "acme", "value": canary})
    );

    let out = env.run(&["secret", "list", "acme", "--json"]);
    assert_ok(&out);
    no_canary(&out, "list --json");
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), serde_json::json!(["raw", "salesforce/oauth"]));
    let out = env.run(&["secret", "list", "acme"]);
    no_canary(&out, "list");
    assert_eq!(stdout(&out), "raw\nsalesforce/oauth\n");
    assert!(!file_contains(&db, canary.as_bytes()), "the value is in the database file in plain");

    // Never from the command line; an empty value is refused.
    let out = env.run(&["secret", "put", "acme", "argv", canary]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = put("empty", b"", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = put("empty", b"\n", &["--strip-newline"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = put("huge", &vec![b'x'; 64 * 1024 + 1], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(env.json(&["secret", "list", "acme"]), serde_json::json!(["raw", "salesforce/oauth"]));

    // Replace, delete; a secret that is not set exits 1 with a message.
    assert_ok(&put("raw", b"replaced", &[]));
    assert_eq!(get("raw").stdout, b"replaced");
    assert_eq!(
        env.json(&["secret", "delete", "acme", "salesforce/oauth"]),
        serde_json::json!({"deleted": "salesforce/oauth", "org": "acme"})
    );
    for args in [&["secret", "get", "acme", "salesforce/oauth"][..], &["secret", "delete", "acme", "salesforce/oauth"]]
    {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("no secret salesforce/oauth in organization acme"), "{}", stderr(&out));
        assert!(out.stdout.is_empty());
    }
    assert_eq!(env.json(&["secret", "list", "acme"]), serde_json::json!(["raw"]));
    assert_eq!(env.run(&["secret", "list", "nope"]).status.code(), Some(2), "an unknown org");
    assert!(!file_contains(&db, canary.as_bytes()), "the value is in the database file in plain");
}
