//! What encryption costs on the hot paths: a node read, the neighbours of a 100-edge node
//! (page cache on and off), and batched durable upserts (nodes/s, edges/s).
//!
//! The same harness runs twice: normally (AES-256-GCM) and with `--features bench-null-cipher`
//! (INSECURE null cipher, envelope version 0xFF). Variant names carry the cipher, so the two
//! runs' figures sit side by side in criterion's report and in `results.tsv`.
//!
//! Issue targets: node read ≤ 3 µs, neighbours of a 100-edge node ≤ 6 µs, ≥ 100k nodes/s and
//! ≥ 150k edges/s durable.

mod common;

use std::time::{Duration, Instant};

use common::*;
use criterion::{BenchmarkId, Criterion, Throughput};
use silograph::{Db, Direction, EdgeInput, NodeId, NodeInput, Org};

/// Hubs with exactly 100 out-edges each, over a pool of 10,000 leaf nodes.
const HUBS: usize = 200;
const LEAVES: usize = 10_000;
const DEGREE: usize = 100;
/// Operations per write transaction in the upsert benches.
const UPSERT_BATCH: usize = 10_000;

struct Store {
    _db: Db,
    org: Org,
    hubs: Vec<NodeId>,
    leaves: Vec<NodeId>,
}

fn build(name: &str, cache: usize) -> Store {
    let path = tmp_path(name);
    let db = Db::builder().cache_size(cache).open(&path, root_key()).expect("open");
    let org = db.create_org("bench").expect("org");
    let mut rng = SplitMix64(3);
    let mut tx = org.write().expect("write");
    let leaves: Vec<NodeId> = (0..LEAVES)
        .map(|i| tx.upsert_node(NodeInput::new("person").source(SYSTEM, format!("leaf-{i}"))).expect("leaf"))
        .collect();
    let hubs: Vec<NodeId> = (0..HUBS)
        .map(|i| tx.upsert_node(NodeInput::new("account").source(SYSTEM, format!("hub-{i}"))).expect("hub"))
        .collect();
    for &h in &hubs {
        for _ in 0..DEGREE {
            let to = leaves[(rng.next() % LEAVES as u64) as usize];
            tx.add_edge(EdgeInput::new(h, to, KIND)).expect("edge");
        }
    }
    tx.commit().expect("commit");
    Store { _db: db, org, hubs, leaves }
}

fn bench_reads(c: &mut Criterion) {
    let cipher = cipher_label();
    let warm = build("crypto-warm.silo", 64 << 20);
    let cold = build("crypto-cold.silo", 0);

    let mut g = c.benchmark_group("crypto_node_read");
    let r = warm.org.read().expect("read");
    let name = format!("silograph-{cipher}");
    let nodes = &warm.leaves;
    let p = percentiles(&(0..nodes.len()).collect::<Vec<_>>(), |i| {
        r.node(nodes[i]).expect("node").map_or(0, |n| n.out_degree)
    });
    record_percentiles("crypto", "node_read", &name, p);
    g.bench_function(BenchmarkId::from_parameter(&name), |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % nodes.len();
            r.node(nodes[i]).expect("node")
        })
    });
    g.finish();

    let mut g = c.benchmark_group("crypto_neighbors_100");
    for (label, store) in [("cache", &warm), ("no-cache", &cold)] {
        let r = store.org.read().expect("read");
        let hubs = &store.hubs;
        let q = |i: usize| -> u64 {
            r.neighbors(hubs[i], Direction::Out).expect("neighbors").map(|n| n.expect("neighbor").node.0).sum()
        };
        for &h in hubs {
            assert_eq!(r.neighbors(h, Direction::Out).expect("neighbors").count(), DEGREE);
        }
        let name = format!("silograph-{cipher}/{label}");
        record_percentiles("crypto", "neighbors_100", &name, percentiles(&(0..hubs.len()).collect::<Vec<_>>(), q));
        g.bench_function(BenchmarkId::from_parameter(&name), |b| {
            let mut i = 0usize;
            b.iter(|| {
                i = (i + 1) % hubs.len();
                q(i)
            })
        });
    }
    g.finish();
}

/// One durable transaction of `UPSERT_BATCH` new nodes; `next` numbers them uniquely.
fn upsert_nodes(org: &Org, next: &mut u64) -> Vec<NodeId> {
    let mut tx = org.write().expect("write");
    let ids = (0..UPSERT_BATCH)
        .map(|_| {
            *next += 1;
            tx.upsert_node(NodeInput::new("person").source(SYSTEM, format!("n-{next}"))).expect("node")
        })
        .collect();
    tx.commit().expect("commit");
    ids
}

/// One durable transaction of `UPSERT_BATCH` new edges between random existing nodes.
fn add_edges(org: &Org, pool: &[NodeId], rng: &mut SplitMix64) {
    let mut tx = org.write().expect("write");
    for _ in 0..UPSERT_BATCH {
        let a = pool[(rng.next() % pool.len() as u64) as usize];
        let b = pool[(rng.next() % pool.len() as u64) as usize];
        tx.add_edge(EdgeInput::new(a, b, KIND)).expect("edge");
    }
    tx.commit().expect("commit");
}

fn bench_upserts(c: &mut Criterion) {
    let cipher = cipher_label();
    let name = format!("silograph-{cipher}");
    let store = build("crypto-upsert.silo", 64 << 20);
    let mut next = 0u64;
    let mut rng = SplitMix64(5);
    let pool = store.leaves.clone();

    // One-off rates over 5 transactions each.
    let start = Instant::now();
    for _ in 0..5 {
        upsert_nodes(&store.org, &mut next);
    }
    record("crypto", "upsert", &name, "nodes_per_s", (5 * UPSERT_BATCH) as f64 / start.elapsed().as_secs_f64());
    let start = Instant::now();
    for _ in 0..5 {
        add_edges(&store.org, &pool, &mut rng);
    }
    record("crypto", "upsert", &name, "edges_per_s", (5 * UPSERT_BATCH) as f64 / start.elapsed().as_secs_f64());

    let mut g = c.benchmark_group("crypto_upsert_batched");
    g.sample_size(10).throughput(Throughput::Elements(UPSERT_BATCH as u64));
    g.bench_function(BenchmarkId::new(format!("{name}/nodes"), UPSERT_BATCH), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                upsert_nodes(&store.org, &mut next);
            }
            start.elapsed()
        })
    });
    g.bench_function(BenchmarkId::new(format!("{name}/edges"), UPSERT_BATCH), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                add_edges(&store.org, &pool, &mut rng);
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

fn main() {
    let mut c = criterion();
    bench_reads(&mut c);
    bench_upserts(&mut c);
    c.final_summary();
    cleanup();
}
