//! Write-path benchmarks.
//!
//! `ingest_enron`: Enron from nothing to a closed, durable store. A one-off pass per system
//! prints edges/s, file size and peak memory (each system in a child process; VmHWM growth over
//! the RSS before the ingest) and the ratios to redb plaintext; then criterion times the same
//! ingests side by side (throughput in edges). Systems: silograph with the bulk loader
//! (`Org::bulk_load`, one durable transaction) and with write transactions of 10k rows each,
//! sources on nodes and edges, every commit durable (`common::silo_ingest_rows`; one-off pass
//! only); redb plaintext `(src, dst)` in one transaction; SQLite clustered `(src, dst)` in one
//! transaction (WAL, synchronous=FULL, checkpointed); SQLCipher (feature `bench-sqlcipher`).
//!
//! `commits_parallel`: durable commits/s of 1 writer thread on 1 org against 8 writer threads on
//! 8 orgs of one `Db` (each commit: one node and one edge, both with a source), each for
//! `$SILOGRAPH_BENCH_LOAD_SECS` seconds (default 5) in the one-off pass, then criterion
//! (throughput in commits).
//!
//! `ingest_rmat` (only with `SILOGRAPH_BENCH_LARGE=1`): silograph bulk / `WriteTxn` and redb
//! plaintext on an R-MAT graph of `$SILOGRAPH_BENCH_RMAT_EDGES` edges (default 4,000,000) and on
//! Enron in the same run: ingest cost per edge at that size relative to Enron, and file size
//! relative to redb. One-off pass only.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use common::*;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use silograph::{Db, EdgeInput, NodeId, NodeInput, Org};

/// One ingest from nothing to a closed store at `path`.
type Ingest = fn(&Workload, &Path);

/// Opens a fresh silograph file with one org, runs `load` on it, closes it.
fn silo_with(path: &Path, unchecked: bool, load: impl FnOnce(&Org)) {
    let db = silo_builder(64 << 20, unchecked).open(path, root_key()).expect("open");
    let org = db.create_org("bench").expect("org");
    load(&org);
}

fn silo_rows(w: &Workload, path: &Path) {
    silo_with(path, false, |org| drop(silo_ingest_rows(org, w, ROWS_PER_TXN)));
}

fn silo_bulk(w: &Workload, path: &Path) {
    silo_with(path, false, |org| drop(silo_ingest_bulk(org, w)));
}

/// The same loads without the state tree (feature `bench-unchecked-state`).
fn silo_rows_unchecked(w: &Workload, path: &Path) {
    silo_with(path, true, |org| drop(silo_ingest_rows(org, w, ROWS_PER_TXN)));
}

fn silo_bulk_unchecked(w: &Workload, path: &Path) {
    silo_with(path, true, |org| drop(silo_ingest_bulk(org, w)));
}

fn redb_plain(w: &Workload, path: &Path) {
    drop(redb_build(w, path));
}

fn sqlite_plain(w: &Workload, path: &Path) {
    sqlite_build(w, path, false);
}

fn sqlcipher(w: &Workload, path: &Path) {
    sqlite_build(w, path, true);
}

const BULK: &str = "bulk-load";
const ROWS: &str = "write-txn-10k-sources";
const REDB: &str = "redb-plaintext";

fn silo_name(variant: &str) -> String {
    format!("silograph-{}/{variant}", cipher_label())
}

fn systems() -> Vec<(String, Ingest)> {
    let mut v: Vec<(String, Ingest)> = vec![
        (silo_name(BULK), silo_bulk),
        (silo_name(ROWS), silo_rows),
        (REDB.into(), redb_plain),
        ("sqlite-plaintext".into(), sqlite_plain),
    ];
    if cfg!(feature = "bench-sqlcipher") {
        v.push(("sqlcipher-rawkey".into(), sqlcipher));
    }
    if cfg!(feature = "bench-unchecked-state") {
        v.push((format!("{}/unchecked-state", silo_name(BULK)), silo_bulk_unchecked));
        v.push((format!("{}/unchecked-state", silo_name(ROWS)), silo_rows_unchecked));
    }
    v
}

fn fresh(name: &str) -> PathBuf {
    let p = tmp_path(name);
    for suffix in ["-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
    }
    p
}

/// What one ingest measured.
#[derive(Clone, Copy)]
struct Figures {
    edges_per_s: f64,
    file_mb: f64,
}

/// Runs the ingest `name` of graph `spec` in a child process (this executable again, with
/// `SILOGRAPH_INGEST_CHILD` naming the system) so that its peak RSS (VmHWM) is its own.
fn run_child(spec: &str, name: &str) -> Option<Figures> {
    let out = tmp_path(&format!("child-{spec}-{}.tsv", name.replace('/', "_")));
    let status = std::process::Command::new(std::env::current_exe().expect("current exe"))
        .env("SILOGRAPH_INGEST_CHILD", name)
        .env("SILOGRAPH_INGEST_GRAPH", spec)
        .env("SILOGRAPH_INGEST_OUT", &out)
        .status();
    let figures = std::fs::read_to_string(&out).ok().and_then(|s| {
        let mut it = s.split('\t').map(|x| x.trim().parse::<f64>().ok());
        Some(Figures { edges_per_s: it.next()??, file_mb: it.next()?? })
    });
    if !status.map(|s| s.success()).unwrap_or(false) || figures.is_none() {
        eprintln!("ingest report for {name} on {spec} failed");
        return None;
    }
    figures
}

/// The child side of [`run_child`]: one ingest, its figures recorded and written back.
fn report_child(name: &str) {
    let w = Workload::named(&std::env::var("SILOGRAPH_INGEST_GRAPH").unwrap_or_default());
    let Some((_, f)) = systems().into_iter().find(|(n, _)| n == name) else { return };
    let edges = w.edges.len() as f64;
    let path = fresh(&format!("ingest-report-{}", name.replace('/', "_")));
    let rss_before = current_rss();
    let start = Instant::now();
    f(&w, &path);
    let secs = start.elapsed().as_secs_f64();
    let peak = peak_rss();
    let fig = Figures { edges_per_s: edges / secs, file_mb: disk_size(&path) as f64 / 1e6 };
    let g = &w.name;
    record("ingest", g, name, "edges_per_s", fig.edges_per_s);
    record("ingest", g, name, "total_s", secs);
    record("ingest", g, name, "file_mb", fig.file_mb);
    record("ingest", g, name, "peak_rss_mb", peak.saturating_sub(rss_before) as f64 / 1e6);
    record("ingest", g, name, "nodes", w.nodes.len() as f64);
    if let Some(out) = std::env::var_os("SILOGRAPH_INGEST_OUT") {
        let _ = std::fs::write(out, format!("{}\t{}", fig.edges_per_s, fig.file_mb));
    }
    let _ = std::fs::remove_file(&path);
}

/// Runs `names` on graph `spec`, each in its own child; records every silograph system's
/// throughput and file size relative to redb plaintext's in the same run.
fn report(spec: &str, names: &[String]) -> Vec<(String, Figures)> {
    let figs: Vec<(String, Figures)> =
        names.iter().filter_map(|n| run_child(spec, n).map(|f| (n.clone(), f))).collect();
    if let Some(&(_, redb)) = figs.iter().find(|(n, _)| n == REDB) {
        for (n, f) in figs.iter().filter(|(n, _)| n.starts_with("silograph")) {
            record("ingest", spec, n, "rate_vs_redb", f.edges_per_s / redb.edges_per_s);
            record("ingest", spec, n, "file_vs_redb", f.file_mb / redb.file_mb);
        }
    }
    figs
}

/// `iters` loads by `load`, each into a fresh file named `name` (removed after): their total time.
fn timed_loads(iters: u64, name: &str, load: impl Fn(&Path)) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let path = fresh(name);
        let start = Instant::now();
        load(&path);
        total += start.elapsed();
        let _ = std::fs::remove_file(&path);
    }
    total
}

fn bench_enron(c: &mut Criterion, w: &Workload) {
    let mut g = c.benchmark_group("ingest_enron");
    g.sample_size(10).throughput(Throughput::Elements(w.edges.len() as u64));
    // The write-transaction loader takes tens of seconds per ingest: it is in the one-off report only.
    for (name, f) in systems().into_iter().filter(|(n, _)| !n.contains(ROWS)) {
        g.bench_function(BenchmarkId::from_parameter(&name), |b| {
            b.iter_custom(|iters| timed_loads(iters, &format!("ingest-{}", name.replace('/', "_")), |p| f(w, p)))
        });
    }
    g.finish();
}

/// What the state tree costs at ingest: checked and unchecked loads alternately in this one
/// process, `rounds` of each; records the ratio of their median times (feature
/// `bench-unchecked-state`).
fn paired_ingest_cost(w: &Workload, name: &str, rounds: usize, checked: Ingest, unchecked: Ingest) {
    let mut t: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for r in 0..rounds {
        let order: [(usize, Ingest); 2] =
            if r % 2 == 0 { [(0, checked), (1, unchecked)] } else { [(1, unchecked), (0, checked)] };
        for (slot, f) in order {
            let path = fresh(&format!("paired-{}-{slot}", name.replace('/', "_")));
            let start = Instant::now();
            f(w, &path);
            t[slot].push(start.elapsed().as_secs_f64());
            let _ = std::fs::remove_file(&path);
        }
    }
    for v in &mut t {
        v.sort_by(f64::total_cmp);
    }
    record("ingest", "enron", name, "tree_cost_time", t[0][rounds / 2] / t[1][rounds / 2]);
}

fn ingest_enron(c: &mut Criterion) {
    let names: Vec<String> = systems().into_iter().map(|(n, _)| n).collect();
    if cfg!(feature = "bench-unchecked-state") {
        let w = Workload::enron();
        paired_ingest_cost(&w, &silo_name(BULK), 7, silo_bulk, silo_bulk_unchecked);
        paired_ingest_cost(&w, &silo_name(ROWS), 3, silo_rows, silo_rows_unchecked);
    }
    report("enron", &names);
    bench_enron(c, &Workload::enron());
}

/// Ingest cost per edge at R-MAT scale relative to Enron, and file size relative to redb: the
/// one-off report of every loader (one load each, in a child process for its peak memory), then
/// the bulk loader on both graphs as a criterion group (10 loads each, side by side), whose
/// per-edge cost ratio does not hang on one Enron load.
fn ingest_rmat(c: &mut Criterion) {
    if std::env::var_os("SILOGRAPH_BENCH_LARGE").is_none_or(|v| v != "1") {
        eprintln!("ingest_rmat: skipped (set SILOGRAPH_BENCH_LARGE=1)");
        return;
    }
    let m: usize = std::env::var("SILOGRAPH_BENCH_RMAT_EDGES").ok().and_then(|v| v.parse().ok()).unwrap_or(4_000_000);
    let spec = format!("rmat-{m}");
    let names = [silo_name(BULK), silo_name(ROWS), REDB.to_owned()];
    let enron = report("enron", &names);
    let rmat = report(&spec, &names);
    for (n, big) in &rmat {
        if let Some((_, small)) = enron.iter().find(|(e, _)| e == n) {
            // cost per edge = 1 / rate
            record("ingest", &format!("{spec}_vs_enron"), n, "cost_per_edge", small.edges_per_s / big.edges_per_s);
        }
    }
    let mut g = c.benchmark_group("ingest_rmat_bulk");
    // Flat: ten samples of one load each for a multi-second load, not 1 + 2 + … + 10.
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    let mut per_edge = Vec::new();
    for (label, w) in [("enron".to_owned(), Workload::enron()), (spec.clone(), Workload::named(&spec))] {
        g.throughput(Throughput::Elements(w.edges.len() as u64));
        let (mut spent, mut edges) = (Duration::ZERO, 0u64);
        g.bench_function(BenchmarkId::new(silo_name(BULK), &label), |b| {
            b.iter_custom(|iters| {
                let total = timed_loads(iters, &format!("ingest-rmat-bulk-{label}"), |p| silo_bulk(&w, p));
                spent += total;
                edges += iters * w.edges.len() as u64;
                total
            })
        });
        per_edge.push(spent.as_secs_f64() / edges.max(1) as f64);
    }
    g.finish();
    if let [small, big] = per_edge[..] {
        record("ingest", &format!("{spec}_vs_enron"), &silo_name(BULK), "cost_per_edge_criterion", big / small);
    }
}

// ---------------------------------------------------------------------------------------------
// commits_parallel: durable commits of one node + one edge, 1 writer vs 8 writers on 8 orgs
// ---------------------------------------------------------------------------------------------

/// Writer threads of the multi-writer case.
const WRITERS: usize = 8;

/// One writer thread's org and state: commit `i` adds node `t{t}-n{i}` and an edge `t{t}-e{i}`
/// from it to the previous node.
struct Writer {
    org: Org,
    t: usize,
    next: u64,
    prev: Option<NodeId>,
    ok: u64,
    errors: u64,
}

impl Writer {
    fn commit_one(&mut self) -> silograph::Result<NodeId> {
        let i = self.next;
        self.next += 1;
        let mut tx = self.org.write()?;
        let n = tx.upsert_node(NodeInput::new("person").source(SYSTEM, format!("t{}-n{i}", self.t)))?;
        let to = self.prev.unwrap_or(n);
        tx.add_edge(EdgeInput::new(n, to, KIND).source(EDGE_SYSTEM, format!("t{}-e{i}", self.t)))?;
        tx.commit()?;
        Ok(n)
    }

    fn step(&mut self) {
        match self.commit_one() {
            Ok(n) => {
                self.prev = Some(n);
                self.ok += 1;
            }
            Err(e) => {
                if self.errors == 0 {
                    eprintln!("commits_parallel: writer {} failed: {e}", self.t);
                }
                self.errors += 1;
            }
        }
    }
}

/// A fresh database file with `threads` orgs, one writer each.
fn writers(threads: usize) -> (Db, Vec<Writer>) {
    let db = Db::builder().open(tmp_path(&format!("commits-{threads}.silo")), root_key()).expect("open");
    let ws = (0..threads)
        .map(|t| Writer {
            org: db.create_org(&format!("load-{t}")).expect("org"),
            t,
            next: 0,
            prev: None,
            ok: 0,
            errors: 0,
        })
        .collect();
    (db, ws)
}

/// Runs every writer on its own thread, all starting together, each until `stop` says so
/// (given its commit count and the start); returns the wall time until the last one finished.
fn run_writers(ws: &mut [Writer], stop: impl Fn(u64, Instant) -> bool + Sync) -> Duration {
    let barrier = Barrier::new(ws.len());
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let handles: Vec<_> = ws
            .iter_mut()
            .map(|w| {
                let (barrier, stop) = (&barrier, &stop);
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    let mut done = 0;
                    while !stop(done, start) {
                        w.step();
                        done += 1;
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("writer thread")).collect()
    });
    let first = spans.iter().map(|s| s.0).min().expect("writers");
    spans.iter().map(|s| s.1.duration_since(first)).max().unwrap_or_default()
}

fn commits_parallel(c: &mut Criterion) {
    let secs: f64 = std::env::var("SILOGRAPH_BENCH_LOAD_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(5.0);
    let window = Duration::from_secs_f64(secs);
    let mut rates = Vec::new();
    let mut setups = Vec::new();
    for threads in [1, WRITERS] {
        let (db, mut ws) = writers(threads);
        let wall = run_writers(&mut ws, |_, start| start.elapsed() >= window);
        let ok: u64 = ws.iter().map(|w| w.ok).sum();
        let errors: u64 = ws.iter().map(|w| w.errors).sum();
        // nothing lost: every org holds exactly one node and one edge per successful commit
        let stored: u64 = ws
            .iter()
            .map(|w| {
                let (nodes, edges) = w.org.counts().expect("counts");
                nodes.min(edges)
            })
            .sum();
        let name = silo_name(&format!("{threads}-writer{}", if threads == 1 { "" } else { "s" }));
        let rate = ok as f64 / wall.as_secs_f64();
        record("ingest", "commits_parallel", &name, "commits_per_s", rate);
        record("ingest", "commits_parallel", &name, "errors", errors as f64);
        record("ingest", "commits_parallel", &name, "lost", ok.saturating_sub(stored) as f64);
        // fairness: the slowest writer's commits over the fastest one's (criterion's fixed-count
        // iterations wait for the slowest writer)
        let per_writer = ws.iter().map(|w| w.ok);
        let (min, max) = (per_writer.clone().min().unwrap_or(0), per_writer.max().unwrap_or(0));
        record("ingest", "commits_parallel", &name, "min_over_max", min as f64 / max.max(1) as f64);
        rates.push(rate);
        setups.push((threads, db, ws));
    }
    record("ingest", "commits_parallel", &silo_name("8-vs-1"), "ratio", rates[1] / rates[0]);

    let mut g = c.benchmark_group("commits_parallel");
    g.sample_size(10);
    for (threads, _db, ws) in setups.iter_mut() {
        g.throughput(Throughput::Elements(*threads as u64));
        g.bench_function(BenchmarkId::new(silo_name("writers"), *threads), |b| {
            b.iter_custom(|iters| run_writers(ws, |done, _| done >= iters))
        });
    }
    g.finish();
}

fn main() {
    if let Ok(name) = std::env::var("SILOGRAPH_INGEST_CHILD") {
        report_child(&name);
        cleanup();
        return;
    }
    let mut c = criterion();
    if wants("ingest_enron") {
        ingest_enron(&mut c);
    }
    if wants("commits_parallel") {
        commits_parallel(&mut c);
    }
    if wants("ingest_rmat") {
        ingest_rmat(&mut c);
    }
    c.final_summary();
    cleanup();
}
