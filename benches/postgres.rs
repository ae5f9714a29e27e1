//! The PostgreSQL backend against the redb backend, in one run (feature `postgres`; the server
//! from `SILOGRAPH_POSTGRES_URL`, e.g. `bash .ci/pg.sh cargo bench --features postgres --bench
//! postgres`, a loopback server).
//!
//! - `pg_ingest`: Enron from nothing, bulk loader (one transaction) and write transactions of
//!   10k rows each (`common::silo_ingest_rows`), on a fresh redb file and a fresh PostgreSQL
//!   schema: edges/s and the ratio.
//! - `pg_q1` / `pg_q2` / `pg_q3`: the traversal workload (benches/README.md) on both backends,
//!   page cache 256 MiB (hit: every page decrypted once already) and `cache_size(0)` (miss: every
//!   page fetched — on PostgreSQL, one `get_many` round trip per BFS level — opened and
//!   validated); one snapshot held for all queries. Checksums first, then p50 / p99 per query
//!   (one-off pass), then criterion side by side.
//! - `pg_commits`: durable commits/s (one node and one edge each) of 1 writer against 8 writers
//!   on 8 orgs, each for `$SILOGRAPH_BENCH_LOAD_SECS` s (default 5): on PostgreSQL 1 and 8 writer
//!   *processes* (this binary run again as a child), on redb 1 and 8 writer threads of one `Db`
//!   (a redb file is opened by one process).

mod common;

use std::collections::HashMap;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use criterion::{BenchmarkId, Criterion};
use silograph::{Db, EdgeInput, NodeId, NodeInput, Org};

const CHILD: &str = "SILOGRAPH_BENCH_PG_CHILD";

/// A fresh schema on the server; the connection string that uses it.
fn fresh_schema(server: &str, name: &str) -> String {
    let schema = format!("bench_{name}_{}", std::process::id());
    let mut c = postgres::Client::connect(server, postgres::NoTls).expect("connect to the bench server");
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")).expect("schema");
    format!("{server} options='-c search_path={schema}'")
}

fn drop_schemas(server: &str) {
    if let Ok(mut c) = postgres::Client::connect(server, postgres::NoTls) {
        let rows = c
            .query(
                "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE $1",
                &[&format!("bench\\_%\\_{}", std::process::id())],
            )
            .unwrap_or_default();
        for r in rows {
            let name: String = r.get(0);
            let _ = c.batch_execute(&format!("DROP SCHEMA {name} CASCADE"));
        }
    }
}

fn open_pg(url: &str, cache: usize) -> Db {
    Db::builder().cache_size(cache).open_postgres(url, root_key()).expect("open postgres")
}

fn open_file(name: &str, cache: usize) -> Db {
    Db::builder().cache_size(cache).open(tmp_path(name), root_key()).expect("open file")
}

fn timed(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

fn ingest(server: &str, w: &Workload) {
    let edges = w.edges.len() as f64;
    for (what, load) in [
        ("bulk-load", (|org: &Org, w: &Workload| drop(silo_ingest_bulk(org, w))) as fn(&Org, &Workload)),
        ("write-txn-10k", |org, w| drop(silo_ingest_rows(org, w, ROWS_PER_TXN))),
    ] {
        let redb = timed(|| load(&open_file(&format!("ingest-{what}.silo"), 64 << 20).create_org("bench").unwrap(), w));
        let url = fresh_schema(server, &format!("ingest_{}", what.replace('-', "_")));
        let pg = timed(|| load(&open_pg(&url, 64 << 20).create_org("bench").unwrap(), w));
        record("postgres", "pg_ingest", &format!("redb/{what}"), "edges_per_s", edges / redb);
        record("postgres", "pg_ingest", &format!("postgres/{what}"), "edges_per_s", edges / pg);
        record("postgres", "pg_ingest", &format!("postgres-over-redb/{what}"), "time_ratio", pg / redb);
    }
}

/// One store, read through one held snapshot.
struct Variant {
    name: String,
    read: SiloRead,
    seeds: Vec<NodeId>,
    _db: Db,
}

impl Variant {
    fn new(name: &str, db: Db, ids: &HashMap<u64, NodeId>, w: &Workload) -> Variant {
        let org = db.org("bench").expect("org");
        let read = SiloRead { r: org.read().expect("read") };
        Variant { name: name.into(), read, seeds: w.seeds.iter().map(|s| ids[s]).collect(), _db: db }
    }

    fn q(&self, i: usize, depth: u32) -> u64 {
        if depth == 1 {
            self.read.q1(self.seeds[i]).len() as u64
        } else {
            self.read.reach(self.seeds[i], depth)
        }
    }
}

fn queries(c: &mut Criterion, server: &str, w: &Workload) {
    let file = tmp_path("queries.silo");
    let ids = {
        let db = Db::builder().open(&file, root_key()).expect("open file");
        silo_ingest_bulk(&db.create_org("bench").unwrap(), w)
    };
    let url = fresh_schema(server, "queries");
    silo_ingest_bulk(&open_pg(&url, 0).create_org("bench").unwrap(), w);
    let reopen = |cache: usize| Db::builder().cache_size(cache).open(&file, root_key()).expect("reopen");
    // One file opened twice at once is refused; the two redb variants run one after the other.
    let groups: [(&str, usize, u32); 3] =
        [("pg_q1", w.seeds.len(), 1), ("pg_q2", w.seeds.len(), 2), ("pg_q3", w.q3_seeds().len(), 3)];
    let (e1, e2, e3) = expected_checksums(w);
    let mut p50: HashMap<(String, &str), f64> = HashMap::new();
    for (backend, path) in [("redb", true), ("postgres", false)] {
        for (cache, label) in [(256usize << 20, "hit"), (0, "miss")] {
            let db = if path { reopen(cache) } else { open_pg(&url, cache) };
            let v = Variant::new(&format!("{backend}/{label}"), db, &ids, w);
            let sums = (
                (0..w.seeds.len()).map(|i| v.q(i, 1)).sum::<u64>(),
                (0..w.seeds.len()).map(|i| v.q(i, 2)).sum::<u64>(),
                (0..w.q3_seeds().len()).map(|i| v.q(i, 3)).sum::<u64>(),
            );
            assert_eq!(sums, (e1, e2, e3), "checksums of {}", v.name);
            for (group, n, depth) in groups {
                let idx: Vec<usize> = (0..n).collect();
                let p = percentiles(&idx, |i| v.q(i, depth));
                record_percentiles("postgres", group, &v.name, p);
                p50.insert((v.name.clone(), group), p.p50);
            }
            for (group, n, depth) in groups {
                let mut g = c.benchmark_group(group);
                let mut i = 0;
                g.bench_function(BenchmarkId::from_parameter(&v.name), |b| {
                    b.iter(|| {
                        i = (i + 1) % n;
                        v.q(i, depth)
                    })
                });
                g.finish();
            }
        }
    }
    for (group, _, _) in groups {
        for label in ["hit", "miss"] {
            let r = p50[&(format!("postgres/{label}"), group)] / p50[&(format!("redb/{label}"), group)];
            record("postgres", group, &format!("postgres-over-redb/{label}"), "p50_ratio", r);
        }
    }
}

/// Commits of one node and one edge each on `org` until `until`; the number that succeeded.
fn commit_loop(org: &Org, tag: &str, until: Instant) -> u64 {
    let (mut ok, mut prev): (u64, Option<NodeId>) = (0, None);
    while Instant::now() < until {
        let mut tx = org.write().expect("write");
        let n = tx.upsert_node(NodeInput::new("person").source(SYSTEM, format!("{tag}-n{ok}"))).expect("node");
        tx.add_edge(EdgeInput::new(n, prev.unwrap_or(n), KIND).source(EDGE_SYSTEM, format!("{tag}-e{ok}")))
            .expect("edge");
        tx.commit().expect("commit");
        prev = Some(n);
        ok += 1;
    }
    ok
}

fn window() -> Duration {
    Duration::from_secs_f64(std::env::var("SILOGRAPH_BENCH_LOAD_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(5.0))
}

/// The child: `URL\tORG`; waits for a line on stdin (the start), commits for the window, prints
/// its count.
fn child(job: &str) {
    let (url, org) = job.split_once('\t').expect("job");
    let db = open_pg(url, 64 << 20);
    let org = db.org(org).expect("org");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).expect("start signal");
    println!("commits {}", commit_loop(&org, "w", Instant::now() + window()));
}

fn commits(server: &str) {
    let mut rates = HashMap::new();
    for writers in [1usize, 8] {
        // PostgreSQL: one process per writer, each on its own org.
        let url = fresh_schema(server, &format!("commits{writers}"));
        let db = open_pg(&url, 64 << 20);
        let mut kids: Vec<_> = (0..writers)
            .map(|t| {
                db.create_org(&format!("load-{t}")).expect("org");
                Command::new(std::env::current_exe().expect("exe"))
                    .env(CHILD, format!("{url}\tload-{t}"))
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("spawn writer")
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500)); // every child connected
        for k in &mut kids {
            use std::io::Write;
            writeln!(k.stdin.as_mut().expect("stdin")).expect("start");
        }
        let total: u64 = kids
            .into_iter()
            .map(|k| {
                let out = k.wait_with_output().expect("writer");
                assert!(out.status.success(), "a writer process failed");
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                text.lines()
                    .find_map(|l| l.strip_prefix("commits "))
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .expect("count")
            })
            .sum();
        let pg = total as f64 / window().as_secs_f64();
        record("postgres", "pg_commits", &format!("postgres/{writers}-processes"), "commits_per_s", pg);
        // redb: threads of one process.
        let db = open_file(&format!("commits{writers}.silo"), 64 << 20);
        let orgs: Vec<Org> = (0..writers).map(|t| db.create_org(&format!("load-{t}")).expect("org")).collect();
        let until = Instant::now() + window();
        let total: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = orgs.iter().map(|o| s.spawn(move || commit_loop(o, "w", until))).collect();
            hs.into_iter().map(|h| h.join().expect("writer")).sum()
        });
        let redb = total as f64 / window().as_secs_f64();
        record("postgres", "pg_commits", &format!("redb/{writers}-threads"), "commits_per_s", redb);
        rates.insert(writers, (pg, redb));
    }
    record("postgres", "pg_commits", "postgres/8-vs-1", "ratio", rates[&8].0 / rates[&1].0);
    record("postgres", "pg_commits", "redb/8-vs-1", "ratio", rates[&8].1 / rates[&1].1);
}

fn main() {
    if let Ok(job) = std::env::var(CHILD) {
        child(&job);
        return;
    }
    let Ok(server) = std::env::var("SILOGRAPH_POSTGRES_URL") else {
        println!("skipped: SILOGRAPH_POSTGRES_URL is not set (bash .ci/pg.sh cargo bench --features postgres --bench postgres)");
        return;
    };
    let w = Workload::enron();
    let mut c = criterion();
    if wants("pg_ingest") {
        ingest(&server, &w);
    }
    if wants("pg_q") {
        queries(&mut c, &server, &w);
    }
    if wants("pg_commits") {
        commits(&server);
    }
    c.final_summary();
    drop_schemas(&server);
    cleanup();
}
