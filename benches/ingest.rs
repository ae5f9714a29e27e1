//! Ingest benchmark: Enron from nothing to a closed, durable store.
//!
//! A one-off pass per system prints edges/s, file size and peak memory (each system in a child
//! process; VmHWM growth over the RSS before the ingest); then criterion times the same ingests
//! side by side in the group `ingest_enron` (throughput in edges).
//!
//! Systems: silograph with the bulk loader (`Org::bulk_load`, one durable transaction) and with
//! batched write transactions (50k operations per transaction, every
//! commit durable); redb plaintext `(src, dst)` in one transaction; SQLite clustered
//! `(src, dst)` in one transaction (WAL, synchronous=FULL, checkpointed); SQLCipher (feature
//! `bench-sqlcipher`).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use criterion::{BenchmarkId, Criterion, Throughput};
use silograph::Db;

/// One ingest from nothing to a closed store at `path`; returns the time the load phases took
/// as (nodes, edges) — `None` for systems where the phases are not separate.
type Ingest = fn(&Workload, &Path) -> Option<(Duration, Duration)>;

fn silo_batched(w: &Workload, path: &Path) -> Option<(Duration, Duration)> {
    let db = Db::builder().open(path, root_key()).expect("open");
    let org = db.create_org("bench").expect("org");
    let mut ids = std::collections::HashMap::with_capacity(w.nodes.len());
    let t0 = Instant::now();
    for chunk in w.nodes.chunks(BATCH) {
        let mut tx = org.write().expect("write");
        for &n in chunk {
            ids.insert(
                n,
                tx.upsert_node(silograph::NodeInput::new("person").source(SYSTEM, n.to_string())).expect("node"),
            );
        }
        tx.commit().expect("commit");
    }
    let t1 = Instant::now();
    for chunk in w.edges.chunks(BATCH) {
        let mut tx = org.write().expect("write");
        for &(a, b) in chunk {
            tx.add_edge(silograph::EdgeInput::new(ids[&a], ids[&b], KIND)).expect("edge");
        }
        tx.commit().expect("commit");
    }
    let t2 = Instant::now();
    drop(org);
    drop(db);
    Some((t1 - t0, t2 - t1))
}

fn silo_bulk(w: &Workload, path: &Path) -> Option<(Duration, Duration)> {
    let db = Db::builder().open(path, root_key()).expect("open");
    let org = db.create_org("bench").expect("org");
    silo_ingest_bulk(&org, w);
    drop(org);
    drop(db);
    None
}

fn redb_plain(w: &Workload, path: &Path) -> Option<(Duration, Duration)> {
    drop(redb_build(w, path));
    None
}

fn sqlite_plain(w: &Workload, path: &Path) -> Option<(Duration, Duration)> {
    sqlite_build(w, path, false);
    None
}

fn sqlcipher(w: &Workload, path: &Path) -> Option<(Duration, Duration)> {
    sqlite_build(w, path, true);
    None
}

fn systems() -> Vec<(String, Ingest)> {
    let mut v: Vec<(String, Ingest)> = vec![
        (format!("silograph-{}/bulk-load", cipher_label()), silo_bulk),
        (format!("silograph-{}/write-txn-batched", cipher_label()), silo_batched),
        ("redb-plaintext".into(), redb_plain),
        ("sqlite-plaintext".into(), sqlite_plain),
    ];
    if cfg!(feature = "bench-sqlcipher") {
        v.push(("sqlcipher-rawkey".into(), sqlcipher));
    }
    v
}

fn fresh(name: &str) -> std::path::PathBuf {
    let p = tmp_path(name);
    for suffix in ["-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
    }
    p
}

/// The one-off pass: throughput, file size, peak memory. Each system runs in a child process
/// (this executable again, with `SILOGRAPH_INGEST_CHILD` naming the system) so that its peak
/// RSS (VmHWM) is its own; the figure is the growth of VmHWM over the RSS after loading the
/// workload.
fn report() {
    for (name, _) in systems() {
        let out = std::process::Command::new(std::env::current_exe().expect("current exe"))
            .env("SILOGRAPH_INGEST_CHILD", &name)
            .stdout(std::process::Stdio::inherit())
            .stderr(std::process::Stdio::inherit())
            .status();
        if !out.map(|s| s.success()).unwrap_or(false) {
            eprintln!("ingest report for {name} failed");
        }
    }
}

fn report_child(w: &Workload, name: &str) {
    let Some((_, f)) = systems().into_iter().find(|(n, _)| n == name) else { return };
    let edges = w.edges.len() as f64;
    let path = fresh(&format!("ingest-report-{}", name.replace('/', "_")));
    let rss_before = current_rss();
    let start = Instant::now();
    let phases = f(w, &path);
    let secs = start.elapsed().as_secs_f64();
    let peak = peak_rss();
    let g = &w.name;
    record("ingest", g, name, "edges_per_s", edges / secs);
    record("ingest", g, name, "total_s", secs);
    record("ingest", g, name, "file_mb", disk_size(&path) as f64 / 1e6);
    record("ingest", g, name, "peak_rss_mb", peak.saturating_sub(rss_before) as f64 / 1e6);
    if let Some((tn, te)) = phases {
        record("ingest", g, name, "nodes_per_s", w.nodes.len() as f64 / tn.as_secs_f64());
        record("ingest", g, name, "edge_phase_per_s", edges / te.as_secs_f64());
    }
    let _ = std::fs::remove_file(&path);
}

fn bench(c: &mut Criterion, w: &Workload) {
    let mut g = c.benchmark_group("ingest_enron");
    g.sample_size(10).throughput(Throughput::Elements(w.edges.len() as u64));
    // The write-transaction loader takes ~10 s per ingest: it is in the one-off report only.
    for (name, f) in systems().into_iter().filter(|(n, _)| !n.ends_with("write-txn-batched")) {
        g.bench_function(BenchmarkId::from_parameter(&name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let path = fresh(&format!("ingest-{}", name.replace('/', "_")));
                    let start = Instant::now();
                    f(w, &path);
                    total += start.elapsed();
                    let _ = std::fs::remove_file(&path);
                }
                total
            })
        });
    }
    g.finish();
}

fn main() {
    let w = Workload::enron();
    if let Ok(name) = std::env::var("SILOGRAPH_INGEST_CHILD") {
        report_child(&w, &name);
        cleanup();
        return;
    }
    if !wants("ingest_enron") {
        return;
    }
    report();
    let mut c = criterion();
    bench(&mut c, &w);
    c.final_summary();
    cleanup();
}
