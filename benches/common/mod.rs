//! Shared helpers of the benches: the Enron workload (or a synthetic stand-in when the data is
//! missing), the seeds, reference checksums, the peers (redb plaintext, SQLite / SQLCipher,
//! petgraph `Csr`), per-query p50 / p99 timing and peak-memory probes.
//!
//! Every bench includes this file with `mod common;` and uses only part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use petgraph::csr::Csr;
use redb::{ReadableDatabase, TableDefinition};
use silograph::{Db, Direction, EdgeInput, NodeId, NodeInput, Org, ReadTxn, RootKey};

/// Checksums of the Enron workload (ANCHORS.md): q1 sum of out-degrees over 1000 seeds, q2 sum
/// of ≤2-hop reach over 1000 seeds, q3 sum of ≤3-hop reach over the first 200 seeds (the seed
/// counted when it is reachable from itself).
pub const ENRON_Q1: u64 = 10_386;
pub const ENRON_Q2: u64 = 845_481;
pub const ENRON_Q3: u64 = 1_653_190;
pub const Q3_SEEDS: usize = 200;

/// Seeds: Python `random.Random(7).sample(sorted(node_ids), 1000)` over Enron.
const ENRON_SEEDS: &str = include_str!("../data/enron_seeds.txt");

/// Edge kind used for every benchmark edge.
pub const KIND: &str = "emailed";
/// Source system of every benchmark node.
pub const SYSTEM: &str = "enron";

/// Where the benchmark data lives: `$SILOGRAPH_DATA`, else `../shared/data` next to the crate.
pub fn data_dir() -> PathBuf {
    std::env::var_os("SILOGRAPH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data")))
}

/// A directed graph as an edge list with external node ids, plus its seeds.
pub struct Workload {
    /// `true` for the real Enron file, `false` for the synthetic fallback.
    pub real: bool,
    pub name: String,
    /// Distinct node ids, sorted.
    pub nodes: Vec<u64>,
    /// Directed edges `(src, dst)`, sorted and distinct.
    pub edges: Vec<(u64, u64)>,
    pub seeds: Vec<u64>,
}

impl Workload {
    /// Enron from the data directory, or (file missing) a synthetic power-law graph of the same
    /// size so that `cargo bench` works on a fresh clone.
    pub fn enron() -> Workload {
        let path = data_dir().join("enron.tsv");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mut edges = Vec::with_capacity(370_000);
                for line in text.lines().skip(1) {
                    let mut it = line.split('\t');
                    let (Some(a), Some(b)) = (it.next(), it.next()) else { continue };
                    edges.push((a.trim().parse().expect("enron src"), b.trim().parse().expect("enron dst")));
                }
                let seeds = ENRON_SEEDS.lines().map(|l| l.trim().parse().expect("seed")).collect();
                Workload::from_edges("enron", true, edges, Some(seeds))
            }
            Err(_) => {
                eprintln!("note: {} not found: using a synthetic power-law graph instead", path.display());
                Workload::power_law(36_692, 367_662, 7)
            }
        }
    }

    /// A synthetic power-law graph (Chung–Lu with Zipf-like weights, fixed seed): `n` nodes,
    /// about `m` distinct directed edges, 1000 seeds drawn with the same RNG.
    pub fn power_law(n: u64, m: usize, seed: u64) -> Workload {
        let mut rng = SplitMix64(seed);
        // weight of node i ∝ (i + 1)^(-1/(γ-1)) with γ = 2.5
        let weights: Vec<f64> = (0..n).map(|i| ((i + 1) as f64).powf(-1.0 / 1.5)).collect();
        let mut cum = Vec::with_capacity(weights.len());
        let mut acc = 0.0;
        for w in &weights {
            acc += w;
            cum.push(acc);
        }
        let pick = |rng: &mut SplitMix64| -> u64 {
            let x = rng.next_f64() * acc;
            cum.partition_point(|&c| c < x).min(n as usize - 1) as u64
        };
        // scramble ids so that hubs are not all at the low end of the key space
        let perm = |i: u64| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5851_F42D) % (n * 8);
        let mut edges = Vec::with_capacity(m + m / 8);
        while edges.len() < m + m / 16 {
            let a = pick(&mut rng);
            let b = pick(&mut rng);
            if a != b {
                edges.push((perm(a), perm(b)));
            }
        }
        let mut w = Workload::from_edges(&format!("powerlaw-{m}"), false, edges, None);
        w.edges.truncate(m);
        let mut seen = std::collections::HashSet::new();
        w.nodes = w.edges.iter().flat_map(|&(a, b)| [a, b]).filter(|x| seen.insert(*x)).collect();
        w.nodes.sort_unstable();
        let mut seeds = Vec::with_capacity(1000);
        while seeds.len() < 1000.min(w.nodes.len()) {
            seeds.push(w.nodes[(rng.next() % w.nodes.len() as u64) as usize]);
        }
        w.seeds = seeds;
        w
    }

    /// The graph a bench names: `rmat-<edges>` (about 8 edges per possible id, as in issue 11's
    /// 4M-edge / 440k-node graph), anything else Enron.
    pub fn named(spec: &str) -> Workload {
        match spec.strip_prefix("rmat-").and_then(|m| m.parse::<usize>().ok()) {
            Some(m) => Workload::rmat((m as f64 / 8.0).log2().ceil().max(4.0) as u32, m, 13),
            None => Workload::enron(),
        }
    }

    /// An R-MAT graph (Chakrabarti et al.; a = 0.57, b = c = 0.19, d = 0.05, fixed seed): ids in
    /// `0..2^scale`, `m` distinct directed edges without self-loops, no seeds. Hubs sit at low
    /// ids, as R-MAT draws them; only ids that occur in an edge are nodes.
    pub fn rmat(scale: u32, m: usize, seed: u64) -> Workload {
        let mut rng = SplitMix64(seed);
        let mut seen = FxSet::with_capacity_and_hasher(m, Default::default());
        let mut edges = Vec::with_capacity(m);
        while edges.len() < m {
            let (mut a, mut b) = (0u64, 0u64);
            for _ in 0..scale {
                let (da, db) = match rng.next_f64() {
                    x if x < 0.57 => (0, 0),
                    x if x < 0.76 => (0, 1),
                    x if x < 0.95 => (1, 0),
                    _ => (1, 1),
                };
                a = (a << 1) | da;
                b = (b << 1) | db;
            }
            if a != b && seen.insert((a, b)) {
                edges.push((a, b));
            }
        }
        Workload::from_edges(&format!("rmat-{m}"), false, edges, None)
    }

    fn from_edges(name: &str, real: bool, mut edges: Vec<(u64, u64)>, seeds: Option<Vec<u64>>) -> Workload {
        edges.sort_unstable();
        edges.dedup();
        let mut nodes: Vec<u64> = edges.iter().flat_map(|&(a, b)| [a, b]).collect();
        nodes.sort_unstable();
        nodes.dedup();
        let seeds = seeds.unwrap_or_default();
        Workload { real, name: name.to_owned(), nodes, edges, seeds }
    }

    /// The q3 seeds (the first 200).
    pub fn q3_seeds(&self) -> &[u64] {
        &self.seeds[..Q3_SEEDS.min(self.seeds.len())]
    }
}

/// A tiny deterministic RNG (SplitMix64), so the synthetic graphs need no extra crate.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn next_f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

// ---------------------------------------------------------------------------------------------
// Queries over any graph
// ---------------------------------------------------------------------------------------------

/// Something whose out-neighbours can be listed.
pub trait OutNeighbors {
    /// Node id type of the system.
    type Id: Copy + Eq + std::hash::Hash;
    /// Appends the out-neighbours of `n` to `out`.
    fn out(&mut self, n: Self::Id, out: &mut Vec<Self::Id>);
}

/// The Fx hash (as in rustc-hash) for the peers' visited sets: SipHash would dominate a
/// traversal over in-memory or cached adjacency and hide the storage layer being measured.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A hash set with [`FxHasher`].
pub type FxSet<T> = std::collections::HashSet<T, std::hash::BuildHasherDefault<FxHasher>>;

/// Number of distinct nodes reachable from `seed` in 1..=`depth` out-hops (the seed counts only
/// if some walk returns to it), by breadth-first search.
pub fn reach<G: OutNeighbors>(g: &mut G, seed: G::Id, depth: u32) -> u64 {
    let mut visited = FxSet::with_capacity_and_hasher(1024, Default::default());
    visited.insert(seed);
    let mut seed_reached = false;
    let mut frontier = vec![seed];
    let mut next = Vec::new();
    let mut buf = Vec::new();
    for _ in 0..depth {
        for &u in &frontier {
            buf.clear();
            g.out(u, &mut buf);
            for &v in &buf {
                if v == seed {
                    seed_reached = true;
                } else if visited.insert(v) {
                    next.push(v);
                }
            }
        }
        std::mem::swap(&mut frontier, &mut next);
        next.clear();
        if frontier.is_empty() {
            break;
        }
    }
    visited.len() as u64 - 1 + u64::from(seed_reached)
}

/// Reference answers from an in-memory adjacency list: (q1, q2, q3) checksums.
pub fn reference_checksums(w: &Workload) -> (u64, u64, u64) {
    let mut g = MemAdj::new(w);
    let q1 = w.seeds.iter().map(|&s| g.adj.get(&s).map_or(0, |v| v.len() as u64)).sum();
    let q2 = w.seeds.iter().map(|&s| reach(&mut g, s, 2)).sum();
    let q3 = w.q3_seeds().iter().map(|&s| reach(&mut g, s, 3)).sum();
    (q1, q2, q3)
}

/// Checks the workload's own checksums: against ANCHORS.md for Enron, else just computed.
pub fn expected_checksums(w: &Workload) -> (u64, u64, u64) {
    let got = reference_checksums(w);
    if w.real {
        assert_eq!(got, (ENRON_Q1, ENRON_Q2, ENRON_Q3), "Enron reference checksums differ from ANCHORS.md");
    }
    got
}

/// A hash-map adjacency list (reference only).
pub struct MemAdj {
    adj: HashMap<u64, Vec<u64>>,
}

impl MemAdj {
    pub fn new(w: &Workload) -> Self {
        let mut adj: HashMap<u64, Vec<u64>> = HashMap::new();
        for &(a, b) in &w.edges {
            adj.entry(a).or_default().push(b);
        }
        MemAdj { adj }
    }
}

impl OutNeighbors for MemAdj {
    type Id = u64;
    fn out(&mut self, n: u64, out: &mut Vec<u64>) {
        if let Some(v) = self.adj.get(&n) {
            out.extend_from_slice(v);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Timing helpers
// ---------------------------------------------------------------------------------------------

/// p50 and p99 of per-query latencies, in microseconds.
#[derive(Clone, Copy, Debug)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub mean: f64,
}

/// Times `q` once per seed after one untimed warm pass; returns p50 / p99 / mean in µs.
pub fn percentiles<T: Copy>(seeds: &[T], q: impl FnMut(T) -> u64) -> Percentiles {
    percentiles_passes(seeds, 1, q)
}

/// [`percentiles`] over `passes` timed passes, each over every seed once, pooled: a burst of
/// machine load then costs one sample of many seeds instead of the only sample of each, and a
/// p50 resolves differences of a few percent between runs (one pass did not resolve 10%).
pub fn percentiles_passes<T: Copy>(seeds: &[T], passes: usize, mut q: impl FnMut(T) -> u64) -> Percentiles {
    for &s in seeds {
        std::hint::black_box(q(s));
    }
    let mut t: Vec<Duration> = Vec::with_capacity(seeds.len() * passes.max(1));
    for _ in 0..passes.max(1) {
        t.extend(seeds.iter().map(|&s| {
            let start = Instant::now();
            std::hint::black_box(q(s));
            start.elapsed()
        }));
    }
    t.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let at = |p: f64| us(t[((t.len() as f64 * p).ceil() as usize).clamp(1, t.len()) - 1]);
    Percentiles { p50: at(0.50), p99: at(0.99), mean: t.iter().map(|&d| us(d)).sum::<f64>() / t.len() as f64 }
}

/// Where the benches append machine-readable results (one TSV line per figure), for
/// `docs/bench/plot.py`: `$CARGO_TARGET_DIR` (or `target/`) `/silograph-bench/results.tsv`.
pub fn results_file() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")));
    target.join("silograph-bench").join("results.tsv")
}

/// Prints one figure and appends it to [`results_file`]: `bench  group  variant  metric  value`.
pub fn record(bench: &str, group: &str, variant: &str, metric: &str, value: f64) {
    println!("[{bench}] {group:<18} {variant:<34} {metric:<14} {value:>16.4}");
    let path = results_file();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&path) {
        let _ = writeln!(f, "{bench}\t{group}\t{variant}\t{metric}\t{value:.4}");
    }
}

/// Records p50 / p99 / mean of one variant.
pub fn record_percentiles(bench: &str, group: &str, variant: &str, p: Percentiles) {
    record(bench, group, variant, "p50_us", p.p50);
    record(bench, group, variant, "p99_us", p.p99);
    record(bench, group, variant, "mean_us", p.mean);
}

/// Peak resident set size of this process so far (VmHWM), in bytes; 0 where unknown.
pub fn peak_rss() -> u64 {
    proc_status_kb("VmHWM:") * 1024
}

/// Current resident set size (VmRSS), in bytes; 0 where unknown.
pub fn current_rss() -> u64 {
    proc_status_kb("VmRSS:") * 1024
}

fn proc_status_kb(field: &str) -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else { return 0 };
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resets VmHWM to the current RSS (Linux: `echo 5 > /proc/self/clear_refs`); false if unsupported.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// A fresh path for a benchmark database, removed first if it exists.
pub fn tmp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("silograph-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// Removes this process's benchmark files (call at the end of `main`).
pub fn cleanup() {
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("silograph-bench-{}", std::process::id())));
}

/// Size of a file, or of all files under a directory, in bytes.
pub fn disk_size(path: &Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            std::fs::read_dir(path).map(|rd| rd.flatten().map(|e| disk_size(&e.path())).sum()).unwrap_or(0)
        }
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

/// Criterion settings for the noisy shared machine: short warm-up and measurement, few samples.
pub fn criterion() -> criterion::Criterion {
    criterion::Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args()
}

/// Whether criterion's command-line filter (the first free argument) may select `group`: the
/// benches skip the setup of groups that the filter rules out.
pub fn wants(group: &str) -> bool {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--bench" || a == "--test" || a == "--list" {
            continue;
        }
        if a.starts_with("--") {
            // flags with a value
            if !a.contains('=')
                && matches!(
                    a.as_str(),
                    "--warm-up-time"
                        | "--measurement-time"
                        | "--sample-size"
                        | "--save-baseline"
                        | "--baseline"
                        | "--load-baseline"
                        | "--output-format"
                        | "--color"
                        | "--profile-time"
                        | "--noise-threshold"
                        | "--confidence-level"
                        | "--significance-level"
                        | "--nresamples"
                        | "--plotting-backend"
                        | "--format"
                )
            {
                args.next();
            }
            continue;
        }
        if a.starts_with('-') {
            continue;
        }
        let f = a.split('/').next().unwrap_or("");
        return group.contains(f) || f.contains(group);
    }
    true
}

/// Which cipher this build of silograph seals with (`bench-null-cipher` swaps AES-256-GCM out).
pub fn cipher_label() -> &'static str {
    if cfg!(feature = "bench-null-cipher") {
        "null-cipher"
    } else {
        "aes-gcm"
    }
}

// ---------------------------------------------------------------------------------------------
// silograph
// ---------------------------------------------------------------------------------------------

/// The benchmark root key (fixed: benches are not about key handling).
pub fn root_key() -> RootKey {
    RootKey::from_bytes([0x42; 32])
}

/// A silograph store holding one org with the workload, and the id map (a clone shares the
/// same open database).
#[derive(Clone)]
pub struct Silo {
    pub db: Db,
    pub org: Org,
    pub ids: HashMap<u64, NodeId>,
    pub path: PathBuf,
}

/// Rows (edges) per write transaction of the incremental loader: issue 11's "`WriteTxn`, 10k
/// rows per txn, sources on nodes and edges".
pub const ROWS_PER_TXN: usize = 10_000;

/// Source system of the benchmark edges (edge `i` is `("mail", "m{i}")`).
pub const EDGE_SYSTEM: &str = "mail";

/// Loads `w` row by row as a connector sync (or the CLI import) would: per row, each endpoint is
/// looked up by its source (no host-side id cache) and upserted with it if missing, then the
/// edge is added with its own source `("mail", "m{i}")`; `rows_per_txn` rows per write
/// transaction, every commit durable. Returns the id map.
pub fn silo_ingest_rows(org: &Org, w: &Workload, rows_per_txn: usize) -> HashMap<u64, NodeId> {
    let mut ids = HashMap::with_capacity(w.nodes.len());
    for (c, chunk) in w.edges.chunks(rows_per_txn).enumerate() {
        let mut tx = org.write().expect("write txn");
        for (j, &(a, b)) in chunk.iter().enumerate() {
            let mut endpoint = |n: u64| -> NodeId {
                let ext = n.to_string();
                let id = match tx.lookup(SYSTEM, &ext).expect("lookup") {
                    Some(id) => id,
                    None => tx.upsert_node(NodeInput::new("person").source(SYSTEM, ext)).expect("upsert node"),
                };
                ids.insert(n, id);
                id
            };
            let (from, to) = (endpoint(a), endpoint(b));
            let i = c * rows_per_txn + j;
            tx.add_edge(EdgeInput::new(from, to, KIND).source(EDGE_SYSTEM, format!("m{i}"))).expect("add edge");
        }
        tx.commit().expect("commit rows");
    }
    ids
}

/// Loads `w` into a fresh org with the bulk loader (one durable transaction). Returns the id map.
pub fn silo_ingest_bulk(org: &Org, w: &Workload) -> HashMap<u64, NodeId> {
    let mut ids = HashMap::with_capacity(w.nodes.len());
    let mut bulk = org.bulk_load().expect("bulk load");
    for &n in &w.nodes {
        ids.insert(n, bulk.add_node(NodeInput::new("person").source(SYSTEM, n.to_string())).expect("bulk node"));
    }
    for &(a, b) in &w.edges {
        bulk.add_edge(ids[&a], ids[&b], KIND).expect("bulk edge");
    }
    bulk.finish().expect("bulk finish");
    ids
}

/// Builds a silograph store of `w` at a fresh path (page cache `cache` bytes) with the bulk
/// loader.
pub fn silo_build(w: &Workload, name: &str, cache: usize) -> Silo {
    silo_build_with(w, name, cache, false)
}

/// The builder the benches open silograph with; `unchecked`: the state tree off (feature
/// `bench-unchecked-state`, to measure what the authenticated state costs).
pub fn silo_builder(cache: usize, unchecked: bool) -> silograph::DbBuilder {
    let b = Db::builder().cache_size(cache);
    #[cfg(feature = "bench-unchecked-state")]
    let b = if unchecked { b.unchecked_state_for_benchmarks() } else { b };
    #[cfg(not(feature = "bench-unchecked-state"))]
    assert!(!unchecked, "build with --features bench-unchecked-state");
    b
}

/// [`silo_build`], with the state tree off if `unchecked`.
pub fn silo_build_with(w: &Workload, name: &str, cache: usize, unchecked: bool) -> Silo {
    let path = tmp_path(name);
    let db = silo_builder(cache, unchecked).open(&path, root_key()).expect("open silograph");
    let org = db.create_org("bench").expect("create org");
    let ids = silo_ingest_bulk(&org, w);
    Silo { db, org, ids, path }
}

/// Reopens a copy of an existing store's file with another page-cache size.
pub fn silo_reopen_copy(src: &Silo, name: &str, cache: usize) -> Silo {
    silo_reopen_copy_with(src, name, cache, false)
}

/// [`silo_reopen_copy`], with the state tree off if `unchecked` (as the source was written).
pub fn silo_reopen_copy_with(src: &Silo, name: &str, cache: usize, unchecked: bool) -> Silo {
    let path = tmp_path(name);
    std::fs::copy(&src.path, &path).expect("copy store");
    let db = silo_builder(cache, unchecked).open(&path, root_key()).expect("reopen silograph");
    let org = db.org("bench").expect("org");
    Silo { db, org, ids: src.ids.clone(), path }
}

/// A silograph read snapshot.
pub struct SiloRead {
    pub r: ReadTxn,
}

impl SiloRead {
    /// q1: the out-neighbours of `n` as a list.
    pub fn q1(&self, n: NodeId) -> Vec<NodeId> {
        self.r.neighbors(n, Direction::Out).expect("neighbors").map(|nb| nb.expect("neighbor").node).collect()
    }

    /// q2 / q3 through the public traversal API (`traverse(seed).max_depth(k)`), which lists the
    /// seed at depth 0: it is counted only if one of its in-neighbours was reached within
    /// `depth - 1` hops, i.e. if a walk of 1..=`depth` hops returns to it.
    pub fn reach(&self, seed: NodeId, depth: u32) -> u64 {
        let hits = self.r.traverse(seed).max_depth(depth).direction(Direction::Out).run().expect("traverse");
        if hits.is_empty() {
            return 0;
        }
        let mut back: Vec<NodeId> =
            self.r.neighbors(seed, Direction::In).expect("neighbors").map(|nb| nb.expect("neighbor").node).collect();
        back.sort_unstable();
        let seed_reached = hits.iter().take_while(|&&(_, d)| d < depth).any(|(n, _)| back.binary_search(n).is_ok());
        hits.len() as u64 - 1 + u64::from(seed_reached)
    }
}

/// BFS over `neighbors()` (the bench's own loop, for comparison with `traverse`).
impl OutNeighbors for SiloRead {
    type Id = NodeId;
    fn out(&mut self, n: NodeId, out: &mut Vec<NodeId>) {
        for nb in self.r.neighbors(n, Direction::Out).expect("neighbors") {
            out.push(nb.expect("neighbor").node);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// redb plaintext: (src, dst) composite key, range scan per node
// ---------------------------------------------------------------------------------------------

pub const REDB_EDGES: TableDefinition<(u64, u64), ()> = TableDefinition::new("edges");

/// Loads `w` into a fresh plaintext redb file in one durable write transaction.
pub fn redb_build(w: &Workload, path: &Path) -> redb::Database {
    let db = redb::Database::create(path).expect("redb create");
    let tx = db.begin_write().expect("redb write");
    {
        let mut t = tx.open_table(REDB_EDGES).expect("redb table");
        for &(a, b) in &w.edges {
            t.insert((a, b), ()).expect("redb insert");
        }
    }
    tx.commit().expect("redb commit");
    db
}

/// A read snapshot of the plaintext redb peer.
pub struct RedbRead {
    pub t: redb::ReadOnlyTable<(u64, u64), ()>,
}

impl RedbRead {
    pub fn new(db: &redb::Database) -> Self {
        let tx = db.begin_read().expect("redb read");
        RedbRead { t: tx.open_table(REDB_EDGES).expect("redb table") }
    }
}

impl OutNeighbors for RedbRead {
    type Id = u64;
    fn out(&mut self, n: u64, out: &mut Vec<u64>) {
        for e in self.t.range((n, 0)..=(n, u64::MAX)).expect("redb range") {
            out.push(e.expect("redb entry").0.value().1);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite / SQLCipher: clustered (src, dst) WITHOUT ROWID table, recursive CTE for k hops
// ---------------------------------------------------------------------------------------------

/// The raw 256-bit SQLCipher key (hex), used as `PRAGMA key = "x'…'"`.
pub const SQLCIPHER_KEY_HEX: &str = "4242424242424242424242424242424242424242424242424242424242424242";

/// Opens (creating) a SQLite database; with `encrypted`, keys it as SQLCipher in raw-key mode.
/// `encrypted` needs the `bench-sqlcipher` feature (the library is SQLCipher then).
pub fn sqlite_open(path: &Path, encrypted: bool) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).expect("sqlite open");
    if encrypted {
        c.execute_batch(&format!("PRAGMA key = \"x'{SQLCIPHER_KEY_HEX}'\";")).expect("sqlcipher key");
    }
    // 64 MiB page cache: the whole file fits, as silograph's default 64 MiB page cache does.
    c.execute_batch("PRAGMA cache_size = -65536; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
        .expect("sqlite pragmas");
    c
}

/// Loads `w` into a fresh SQLite / SQLCipher file in one durable transaction; closes it.
pub fn sqlite_build(w: &Workload, path: &Path, encrypted: bool) {
    let mut c = sqlite_open(path, encrypted);
    c.execute_batch(
        "CREATE TABLE edges (src INTEGER NOT NULL, dst INTEGER NOT NULL, PRIMARY KEY (src, dst)) WITHOUT ROWID;",
    )
    .expect("sqlite schema");
    let tx = c.transaction().expect("sqlite txn");
    {
        let mut st = tx.prepare("INSERT INTO edges (src, dst) VALUES (?1, ?2)").expect("sqlite prepare");
        for &(a, b) in &w.edges {
            st.execute((a as i64, b as i64)).expect("sqlite insert");
        }
    }
    tx.commit().expect("sqlite commit");
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").expect("sqlite checkpoint");
}

/// SQL of the k-hop reach count: distinct nodes at depth 1..=k (the seed counts if reached).
pub const SQL_REACH: &str = "WITH RECURSIVE r(n, d) AS (SELECT ?1, 0 UNION SELECT e.dst, r.d + 1 FROM r JOIN edges e ON e.src = r.n WHERE r.d < ?2) SELECT count(DISTINCT n) FROM r WHERE d > 0";
/// SQL of q1.
pub const SQL_OUT: &str = "SELECT dst FROM edges WHERE src = ?1";

/// q1 on SQLite: the out-neighbours as a list.
pub fn sqlite_q1(c: &rusqlite::Connection, seed: u64) -> Vec<u64> {
    let mut st = c.prepare_cached(SQL_OUT).expect("prepare q1");
    let rows = st.query_map([seed as i64], |r| r.get::<_, i64>(0)).expect("q1");
    rows.map(|r| r.expect("q1 row") as u64).collect()
}

/// q2 / q3 on SQLite: the recursive CTE.
pub fn sqlite_reach(c: &rusqlite::Connection, seed: u64, depth: u32) -> u64 {
    let mut st = c.prepare_cached(SQL_REACH).expect("prepare reach");
    st.query_row((seed as i64, depth as i64), |r| r.get::<_, i64>(0)).expect("reach") as u64
}

// ---------------------------------------------------------------------------------------------
// petgraph Csr in memory (the ceiling)
// ---------------------------------------------------------------------------------------------

/// A petgraph `Csr` of the workload, with the external-id → index map.
pub struct CsrGraph {
    pub g: Csr<(), ()>,
    pub index: HashMap<u64, u32>,
}

impl CsrGraph {
    pub fn new(w: &Workload) -> Self {
        let index: HashMap<u64, u32> = w.nodes.iter().enumerate().map(|(i, &n)| (n, i as u32)).collect();
        let mut edges: Vec<(u32, u32)> = w.edges.iter().map(|&(a, b)| (index[&a], index[&b])).collect();
        edges.sort_unstable();
        let mut g: Csr<(), ()> = Csr::from_sorted_edges(&edges).expect("csr");
        while g.node_count() < w.nodes.len() {
            g.add_node(());
        }
        CsrGraph { g, index }
    }
}

impl OutNeighbors for CsrGraph {
    type Id = u32;
    fn out(&mut self, n: u32, out: &mut Vec<u32>) {
        out.extend_from_slice(self.g.neighbors_slice(n));
    }
}
