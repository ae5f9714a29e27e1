//! Traversal benchmark on the ANCHORS.md workload: Enron, 1000 seeds, q1 (out-neighbours as a
//! list), q2 (≤ 2-hop reach count), q3 (≤ 3-hop reach count, first 200 seeds).
//!
//! Every variant is checked against the ANCHORS.md checksums before anything is timed; then
//! `TIMED_PASSES` per-query timing passes over the seeds (pooled) print p50 / p99 (µs); then
//! criterion compares the variants side by side in one group per query (`enron_q1`, `enron_q2`,
//! `enron_q3`).
//!
//! silograph answers q1 with `ReadTxn::neighbors` and q2 / q3 with `ReadTxn::traverse`; the
//! peers (and petgraph) share one breadth-first search with an Fx-hashed visited set.
//!
//! Variants: silograph encrypted with the page cache (hit path) and with `cache_size(0)` (miss
//! path); redb plaintext with a `(src, dst)` key; each of these three twice: with one read
//! snapshot held across all queries, and `…/per-request`, which begins a snapshot per query
//! (`org.read()`, resp. `begin_read()` + `open_table`) as a host serving requests would; SQLite
//! (clustered `(src, dst)` WITHOUT ROWID, recursive CTE); SQLCipher (feature `bench-sqlcipher`);
//! petgraph `Csr` in memory. Run again with `--features bench-null-cipher` to get the same
//! harness with the null cipher (the silograph variants are then named
//! `silograph-null-cipher/…`).
//!
//! Also `q1_powerlaw`: q1 latency on synthetic power-law graphs of 10^5 and 10^6 edges (10^7
//! with `SILOGRAPH_BENCH_LARGE=1`).

mod common;

use common::*;
use criterion::{BenchmarkId, Criterion};
use silograph::NodeId;

/// Timed passes over the seeds behind each recorded p50 / p99 (pooled, see `percentiles_passes`).
const TIMED_PASSES: usize = 5;

/// One system under test, answering the three queries for seed number `i`.
trait Variant {
    fn name(&self) -> String;
    /// q1: the out-neighbours of seed `i` as a list; returns its length.
    fn q1(&mut self, i: usize) -> u64;
    /// Distinct nodes within ≤ `depth` out-hops of seed `i`.
    fn reach(&mut self, i: usize, depth: u32) -> u64;
}

/// silograph: one snapshot held for every query (`held`), or `org.read()` begun per query (a
/// host serving requests: the snapshot's cost is part of the query).
struct SiloVariant {
    name: String,
    held: Option<SiloRead>,
    seeds: Vec<NodeId>,
    silo: Silo,
}

impl SiloVariant {
    fn new(name: String, silo: Silo, seeds: &[u64]) -> Self {
        let mut v = Self::per_request(name, silo, seeds);
        v.held = Some(SiloRead { r: v.silo.org.read().expect("read txn") });
        v
    }

    fn per_request(name: String, silo: Silo, seeds: &[u64]) -> Self {
        let seeds = seeds.iter().map(|s| silo.ids[s]).collect();
        SiloVariant { name, held: None, seeds, silo }
    }

    fn with_read<T>(&self, f: impl FnOnce(&SiloRead) -> T) -> T {
        match &self.held {
            Some(r) => f(r),
            None => f(&SiloRead { r: self.silo.org.read().expect("read txn") }),
        }
    }
}

impl Variant for SiloVariant {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn q1(&mut self, i: usize) -> u64 {
        self.with_read(|r| r.q1(self.seeds[i]).len() as u64)
    }
    fn reach(&mut self, i: usize, depth: u32) -> u64 {
        self.with_read(|r| r.reach(self.seeds[i], depth))
    }
}

/// redb plaintext: one read transaction and table held for every query, or both begun per query.
struct RedbVariant {
    held: Option<RedbRead>,
    seeds: Vec<u64>,
    db: std::sync::Arc<redb::Database>,
}

impl RedbVariant {
    fn new(db: std::sync::Arc<redb::Database>, seeds: &[u64], per_request: bool) -> Self {
        let held = (!per_request).then(|| RedbRead::new(&db));
        RedbVariant { held, seeds: seeds.to_vec(), db }
    }

    fn with_read<T>(&mut self, f: impl FnOnce(&mut RedbRead, u64) -> T, i: usize) -> T {
        let seed = self.seeds[i];
        match &mut self.held {
            Some(r) => f(r, seed),
            None => f(&mut RedbRead::new(&self.db), seed),
        }
    }
}

impl Variant for RedbVariant {
    fn name(&self) -> String {
        if self.held.is_some() { "redb-plaintext" } else { "redb-plaintext/per-request" }.into()
    }
    fn q1(&mut self, i: usize) -> u64 {
        self.with_read(
            |r, seed| {
                let mut v = Vec::new();
                r.out(seed, &mut v);
                v.len() as u64
            },
            i,
        )
    }
    fn reach(&mut self, i: usize, depth: u32) -> u64 {
        self.with_read(|r, seed| reach(r, seed, depth), i)
    }
}

/// The silograph variants of one store `warm` (hit path, and a copy with `cache_size(0)` for the
/// miss path), each held and per request, and redb plaintext held and per request.
fn silo_and_redb_variants(w: &Workload, tag: &str, warm: Silo) -> Vec<Box<dyn Variant>> {
    let cipher = cipher_label();
    let cold = silo_reopen_copy(&warm, &format!("{tag}-cold.silo"), 0);
    let redb = std::sync::Arc::new(redb_build(w, &tmp_path(&format!("{tag}.redb"))));
    vec![
        Box::new(SiloVariant::new(format!("silograph-{cipher}/cache"), warm.clone(), &w.seeds)),
        Box::new(SiloVariant::per_request(format!("silograph-{cipher}/cache/per-request"), warm, &w.seeds)),
        Box::new(SiloVariant::new(format!("silograph-{cipher}/no-cache"), cold.clone(), &w.seeds)),
        Box::new(SiloVariant::per_request(format!("silograph-{cipher}/no-cache/per-request"), cold, &w.seeds)),
        Box::new(RedbVariant::new(redb.clone(), &w.seeds, false)),
        Box::new(RedbVariant::new(redb, &w.seeds, true)),
    ]
}

struct SqliteVariant {
    name: &'static str,
    conn: rusqlite::Connection,
    seeds: Vec<u64>,
}

impl Variant for SqliteVariant {
    fn name(&self) -> String {
        self.name.into()
    }
    fn q1(&mut self, i: usize) -> u64 {
        sqlite_q1(&self.conn, self.seeds[i]).len() as u64
    }
    fn reach(&mut self, i: usize, depth: u32) -> u64 {
        sqlite_reach(&self.conn, self.seeds[i], depth)
    }
}

struct CsrVariant {
    g: CsrGraph,
    seeds: Vec<u32>,
}

impl Variant for CsrVariant {
    fn name(&self) -> String {
        "petgraph-csr-memory".into()
    }
    fn q1(&mut self, i: usize) -> u64 {
        self.g.g.neighbors_slice(self.seeds[i]).to_vec().len() as u64
    }
    fn reach(&mut self, i: usize, depth: u32) -> u64 {
        reach(&mut self.g, self.seeds[i], depth)
    }
}

fn sqlite_variant(w: &Workload, encrypted: bool) -> SqliteVariant {
    let name = if encrypted { "sqlcipher-rawkey" } else { "sqlite-plaintext" };
    let path = tmp_path(&format!("{name}.sqlite"));
    sqlite_build(w, &path, encrypted);
    SqliteVariant { name, conn: sqlite_open(&path, encrypted), seeds: w.seeds.clone() }
}

fn variants(w: &Workload) -> Vec<Box<dyn Variant>> {
    let warm = silo_build(w, "enron-warm.silo", 256 << 20);
    let mut v = silo_and_redb_variants(w, "enron", warm);
    if cfg!(feature = "bench-unchecked-state") {
        // The same store without the state tree: what the authenticated state costs.
        let cipher = cipher_label();
        let warm = silo_build_with(w, "enron-warm-unchecked.silo", 256 << 20, true);
        let cold = silo_reopen_copy_with(&warm, "enron-cold-unchecked.silo", 0, true);
        v.push(Box::new(SiloVariant::new(format!("silograph-{cipher}/cache/unchecked-state"), warm.clone(), &w.seeds)));
        v.push(Box::new(SiloVariant::per_request(
            format!("silograph-{cipher}/cache/per-request/unchecked-state"),
            warm,
            &w.seeds,
        )));
        v.push(Box::new(SiloVariant::new(
            format!("silograph-{cipher}/no-cache/unchecked-state"),
            cold.clone(),
            &w.seeds,
        )));
        v.push(Box::new(SiloVariant::per_request(
            format!("silograph-{cipher}/no-cache/per-request/unchecked-state"),
            cold,
            &w.seeds,
        )));
    }
    v.push(Box::new(sqlite_variant(w, false)));
    if cfg!(feature = "bench-sqlcipher") {
        v.push(Box::new(sqlite_variant(w, true)));
    }
    let g = CsrGraph::new(w);
    let seeds = w.seeds.iter().map(|s| g.index[s]).collect();
    v.push(Box::new(CsrVariant { g, seeds }));
    v
}

/// Asserts every variant's checksums, then records p50 / p99 per query.
fn check_and_time(w: &Workload, vs: &mut [Box<dyn Variant>], prefix: &str) {
    let (e1, e2, e3) = expected_checksums(w);
    let n = w.seeds.len();
    let n3 = w.q3_seeds().len();
    for v in vs.iter_mut() {
        let name = v.name();
        let q1: u64 = (0..n).map(|i| v.q1(i)).sum();
        let q2: u64 = (0..n).map(|i| v.reach(i, 2)).sum();
        let q3: u64 = (0..n3).map(|i| v.reach(i, 3)).sum();
        assert_eq!((q1, q2, q3), (e1, e2, e3), "checksums of {name} on {}", w.name);
        let idx: Vec<usize> = (0..n).collect();
        let (g1, g2, g3) = (format!("{prefix}_q1"), format!("{prefix}_q2"), format!("{prefix}_q3"));
        record_percentiles("traversal", &g1, &name, percentiles_passes(&idx, TIMED_PASSES, |i| v.q1(i)));
        record_percentiles("traversal", &g2, &name, percentiles_passes(&idx, TIMED_PASSES, |i| v.reach(i, 2)));
        record_percentiles("traversal", &g3, &name, percentiles_passes(&idx[..n3], TIMED_PASSES, |i| v.reach(i, 3)));
    }
}

/// What the state tree costs: each silograph variant against its `/unchecked-state` twin, one
/// seed at a time alternately (checked, unchecked, unchecked, checked, ...), so both see the same
/// machine load; records the ratio of their p50 and mean per query (feature
/// `bench-unchecked-state`).
fn paired_state_cost(w: &Workload, vs: &mut [Box<dyn Variant>], prefix: &str) {
    let names: Vec<String> = vs.iter().map(|v| v.name()).collect();
    let n = w.seeds.len();
    let n3 = w.q3_seeds().len();
    for (ci, name) in names.iter().enumerate() {
        let Some(ui) = names.iter().position(|u| *u == format!("{name}/unchecked-state")) else { continue };
        for (q, count, depth) in [("q1", n, 1u32), ("q2", n, 2), ("q3", n3, 3)] {
            let mut times: [Vec<f64>; 2] = [Vec::with_capacity(count), Vec::with_capacity(count)];
            for i in 0..count {
                let order = if i % 2 == 0 { [ci, ui] } else { [ui, ci] };
                for (slot, &vi) in order.iter().enumerate() {
                    let v = &mut vs[vi];
                    let start = std::time::Instant::now();
                    std::hint::black_box(if depth == 1 { v.q1(i) } else { v.reach(i, depth) });
                    let us = start.elapsed().as_secs_f64() * 1e6;
                    times[usize::from((slot == 0) != (i % 2 == 0))].push(us);
                }
            }
            let p50 = |t: &mut Vec<f64>| {
                t.sort_by(f64::total_cmp);
                t[t.len() / 2]
            };
            let mean = |t: &Vec<f64>| t.iter().sum::<f64>() / t.len() as f64;
            let (mc, mu) = (mean(&times[0]), mean(&times[1]));
            let (pc, pu) = (p50(&mut times[0]), p50(&mut times[1]));
            let group = format!("{prefix}_{q}");
            record("traversal", &group, name, "tree_cost_p50", pc / pu);
            record("traversal", &group, name, "tree_cost_mean", mc / mu);
        }
    }
}

fn bench_enron(c: &mut Criterion) {
    if !wants("enron_q") {
        return;
    }
    let w = Workload::enron();
    let mut vs = variants(&w);
    check_and_time(&w, &mut vs, "enron");
    if cfg!(feature = "bench-unchecked-state") {
        // Twice: the first pass also warms what the second measures.
        paired_state_cost(&w, &mut vs, "enron-warmup");
        paired_state_cost(&w, &mut vs, "enron");
    }
    let n = w.seeds.len();
    let n3 = w.q3_seeds().len();
    let cases: [(&str, usize, u32); 3] = [("enron_q1", n, 1), ("enron_q2", n, 2), ("enron_q3", n3, 3)];
    for (group, count, depth) in cases {
        let mut g = c.benchmark_group(group);
        for v in vs.iter_mut() {
            g.bench_function(BenchmarkId::from_parameter(v.name()), |b| {
                let mut i = 0usize;
                b.iter(|| {
                    i = (i + 1) % count;
                    if depth == 1 {
                        v.q1(i)
                    } else {
                        v.reach(i, depth)
                    }
                })
            });
        }
        g.finish();
    }
}

/// q1 latency growth with graph size on synthetic power-law graphs.
fn bench_powerlaw(c: &mut Criterion) {
    if !wants("q1_powerlaw") {
        return;
    }
    let mut sizes = vec![100_000usize, 1_000_000];
    if std::env::var_os("SILOGRAPH_BENCH_LARGE").is_some_and(|v| v == "1") {
        sizes.push(10_000_000);
    }
    let cipher = cipher_label();
    let mut g = c.benchmark_group("q1_powerlaw");
    for m in sizes {
        let w = Workload::power_law((m / 10) as u64, m, 11);
        let (e1, _, _) = reference_checksums(&w);
        let start = std::time::Instant::now();
        let warm = silo_build(&w, &format!("pl-{m}-warm.silo"), 256 << 20);
        let secs = start.elapsed().as_secs_f64();
        record(
            "traversal",
            &format!("powerlaw_{m}"),
            &format!("silograph-{cipher}"),
            "ingest_edges_s",
            m as f64 / secs,
        );
        let mut vs = silo_and_redb_variants(&w, &format!("pl-{m}"), warm);
        let n = w.seeds.len();
        let idx: Vec<usize> = (0..n).collect();
        for v in vs.iter_mut() {
            let name = v.name();
            assert_eq!((0..n).map(|i| v.q1(i)).sum::<u64>(), e1, "q1 checksum of {name} on {}", w.name);
            record_percentiles("traversal", &format!("powerlaw_{m}_q1"), &name, percentiles(&idx, |i| v.q1(i)));
            g.bench_function(BenchmarkId::new(name, m), |b| {
                let mut i = 0usize;
                b.iter(|| {
                    i = (i + 1) % n;
                    v.q1(i)
                })
            });
        }
    }
    g.finish();
}

fn main() {
    let mut c = criterion();
    bench_enron(&mut c);
    bench_powerlaw(&mut c);
    c.final_summary();
    cleanup();
}
