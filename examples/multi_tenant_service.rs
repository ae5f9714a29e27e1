//! A host service over one silograph file with many tenants: one writer thread and several reader
//! threads share one `Db` (it is `Clone + Send + Sync`), every request opens its own org handle,
//! and requests that carry the wrong org or the wrong bring-your-own key are refused.
//!
//! Tenants are cut from two years of the Git project's history (examples/data/README.md): each
//! top-level directory of the repository (`t`, `builtin`, `Documentation`, …) is one organization
//! holding the commits that touched it. `contrib` brings its own key (BYOK): the service holds it
//! in a stand-in for a KMS and the store keeps only a key check.
//!
//! ```text
//! cargo run --release --example multi_tenant_service
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use silograph::{Db, EdgeInput, Error, NodeInput, Org, OrgKey, RootKey};

/// The tenants: top-level directories of git.git; everything else goes to `core`.
const TENANTS: [&str; 8] = ["t", "builtin", "Documentation", "po", "contrib", "refs", "compat", "core"];
/// The tenant whose key the host brings.
const BYOK_TENANT: &str = "contrib";

fn tenant_of(path: &str) -> &'static str {
    let top = path.split_once('/').map(|(d, _)| d).unwrap_or("");
    TENANTS.iter().find(|t| **t == top).copied().unwrap_or("core")
}

/// One touch: who changed which file in which commit, when (milliseconds).
#[derive(Debug, Clone)]
struct Touch {
    author: String,
    commit: String,
    path: String,
    time: i64,
}

/// The host service: the shared store and its key service (here: keys in memory).
#[derive(Clone)]
struct Service {
    db: Db,
    kms: Arc<HashMap<String, OrgKey>>,
}

impl Service {
    /// The org handle for one request. A BYOK tenant's key comes from the request (as a host
    /// that forwards a customer-held key would do); managed tenants take none.
    fn org(&self, tenant: &str, presented: Option<&OrgKey>) -> silograph::Result<Org> {
        match presented {
            Some(k) => self.db.org_with_key(tenant, k),
            None => self.db.org(tenant),
        }
    }

    fn key_for(&self, tenant: &str) -> Option<&OrgKey> {
        self.kms.get(tenant)
    }

    /// Writes one batch of a tenant's activity in one transaction.
    fn ingest(&self, tenant: &str, batch: &[Touch]) -> silograph::Result<()> {
        let mut w = self.org(tenant, self.key_for(tenant))?.write()?;
        for t in batch {
            let who = w.upsert_node(NodeInput::new("person").source("person", t.author.as_str()))?;
            let commit = w.upsert_node(NodeInput::new("commit").source("commit", t.commit.as_str()))?;
            let file = w.upsert_node(NodeInput::new("path").source("path", t.path.as_str()))?;
            let ev = format!("{}:{}", t.commit, t.path);
            w.add_edge(EdgeInput::new(who, commit, "authored").valid_from(t.time).source("git", t.commit.as_str()))?;
            w.add_edge(EdgeInput::new(commit, file, "touched").source("git", ev))?;
        }
        w.commit()
    }

    /// "Which files of this tenant has this person touched?" — a 2-hop walk. `None` if the
    /// tenant does not know the person.
    fn files_of(&self, tenant: &str, presented: Option<&OrgKey>, person: &str) -> silograph::Result<Option<usize>> {
        let r = self.org(tenant, presented)?.read()?;
        let Some(p) = r.lookup("person", person)? else { return Ok(None) };
        let reached = r.traverse(p).max_depth(2).kinds(["authored", "touched"]).run()?;
        Ok(Some(reached.iter().filter(|(_, depth)| *depth == 2).count()))
    }
}

fn load(data: &Path) -> Result<BTreeMap<&'static str, Vec<Touch>>, Box<dyn std::error::Error>> {
    let commits = std::fs::read_to_string(data.join("git-commits-2015-2016.tsv"))?;
    let mut by_sha = HashMap::new();
    for line in commits.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let [sha, author, ts, ..] = f[..] else { return Err(format!("bad commit row: {line}").into()) };
        by_sha.insert(sha.to_owned(), (author.to_owned(), ts.parse::<i64>()? * 1000));
    }
    let touches = std::fs::read_to_string(data.join("git-touches-2015-2016.tsv"))?;
    let mut out: BTreeMap<&'static str, Vec<Touch>> = BTreeMap::new();
    for line in touches.lines().skip(1) {
        let (sha, path) = line.split_once('\t').ok_or_else(|| format!("bad touch row: {line}"))?;
        let (author, time) = by_sha.get(sha).cloned().ok_or_else(|| format!("unknown commit {sha}"))?;
        let t = Touch { author, commit: sha.to_owned(), path: path.to_owned(), time };
        out.entry(tenant_of(path)).or_default().push(t);
    }
    Ok(out)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted.get(((sorted.len() as f64 - 1.0) * p) as usize).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data");
    let work = load(&data)?;
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path().join("service.silo"), RootKey::generate()?)?;
    let kms = HashMap::from([(BYOK_TENANT.to_owned(), OrgKey::generate()?)]);
    let svc = Service { db, kms: Arc::new(kms) };
    for t in TENANTS {
        match svc.key_for(t) {
            Some(k) => svc.db.create_org_with_key(t, k)?,
            None => svc.db.create_org(t)?,
        };
    }

    // (tenant, person) pairs the writer has committed: what readers may ask about.
    let known: Arc<Mutex<Vec<(&'static str, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();

    let writer = {
        let (svc, known, done) = (svc.clone(), known.clone(), done.clone());
        let work = work.clone();
        std::thread::spawn(move || -> silograph::Result<(u64, u64)> {
            let (mut rows, mut txns) = (0u64, 0u64);
            // Round-robin over tenants, 200 touches per request, as interleaved traffic would.
            let mut cursors: Vec<(&'static str, std::slice::Chunks<'_, Touch>)> =
                work.iter().map(|(t, v)| (*t, v.chunks(200))).collect();
            loop {
                let mut progressed = false;
                for (tenant, chunks) in cursors.iter_mut() {
                    if let Some(batch) = chunks.next() {
                        svc.ingest(tenant, batch)?;
                        rows += batch.len() as u64;
                        txns += 1;
                        progressed = true;
                        let mut k = known.lock().unwrap_or_else(|p| p.into_inner());
                        k.extend(batch.iter().map(|t| (*tenant, t.author.clone())));
                    }
                }
                if !progressed {
                    break;
                }
            }
            done.store(true, Ordering::Release);
            Ok((rows, txns))
        })
    };

    let served = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..3)
        .map(|i| {
            let (svc, known, done, served) = (svc.clone(), known.clone(), done.clone(), served.clone());
            std::thread::spawn(move || -> silograph::Result<Vec<Duration>> {
                let mut lat = Vec::new();
                let mut n = i;
                while !done.load(Ordering::Acquire) || lat.len() < 2000 {
                    let pick = {
                        let k = known.lock().unwrap_or_else(|p| p.into_inner());
                        (!k.is_empty()).then(|| k[(n * 7919) % k.len()].clone())
                    };
                    n += 1;
                    let Some((tenant, person)) = pick else {
                        std::thread::yield_now();
                        continue;
                    };
                    let q = Instant::now();
                    let files = svc.files_of(tenant, svc.key_for(tenant), &person)?;
                    lat.push(q.elapsed());
                    if files.is_none_or(|f| f == 0) {
                        return Err(Error::Internal(format!("{tenant} lost {person}")));
                    }
                    served.fetch_add(1, Ordering::Relaxed);
                }
                Ok(lat)
            })
        })
        .collect();

    let (rows, txns) = writer.join().map_err(|_| "writer panicked")??;
    let write_secs = started.elapsed().as_secs_f64();
    let mut lat = Vec::new();
    for r in readers {
        lat.extend(r.join().map_err(|_| "reader panicked")??);
    }
    lat.sort();
    let mut edges = 0;
    for t in TENANTS {
        edges += svc.org(t, svc.key_for(t))?.counts()?.1;
    }
    println!(
        "writer: {rows} touches ({edges} edges) in {txns} transactions over {} tenants, {write_secs:.2} s \
         ({:.0} edges/s, sharing the CPU with the readers)",
        TENANTS.len(),
        edges as f64 / write_secs
    );
    println!(
        "readers: {} requests while and after writing; 2-hop latency p50 {:.0} µs, p99 {:.0} µs",
        served.load(Ordering::Relaxed),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );

    println!("\n{:<14} {:>7} {:>7}  key", "tenant", "nodes", "edges");
    for t in TENANTS {
        let (n, e) = svc.org(t, svc.key_for(t))?.counts()?;
        println!("{t:<14} {n:>7} {e:>7}  {}", if svc.key_for(t).is_some() { "BYOK" } else { "managed" });
    }

    // Requests that carry the wrong tenant or the wrong key.
    println!("\nmisdirected requests:");
    let (tenant, person) = work["contrib"].first().map(|t| ("contrib", t.author.clone())).ok_or("no contrib data")?;
    let elsewhere = TENANTS
        .iter()
        .find(|t| work.get(**t).is_some_and(|v| v.iter().all(|x| x.author != person)))
        .ok_or("every tenant knows this person")?;
    let show = |what: &str, r: silograph::Result<Option<usize>>| match r {
        Ok(Some(n)) => println!("  {what}: {n} file(s)"),
        Ok(None) => println!("  {what}: not found (this tenant has no such person)"),
        Err(e) => println!("  {what}: refused — {e}"),
    };
    show(&format!("{tenant} with its own key"), svc.files_of(tenant, svc.key_for(tenant), &person));
    show(&format!("same person asked of tenant {elsewhere}"), svc.files_of(elsewhere, None, &person));
    let wrong = OrgKey::generate()?;
    show(&format!("{tenant} with a wrong BYOK key"), svc.files_of(tenant, Some(&wrong), &person));
    show(&format!("{tenant} without its key"), svc.files_of(tenant, None, &person));
    show("managed tenant t with a BYOK key", svc.files_of("t", Some(&wrong), &person));
    show("unknown tenant globex", svc.files_of("globex", None, &person));
    Ok(())
}
