//! Quickstart: two organizations built from real data in one encrypted file, a neighbors query,
//! a 2-hop walk, and what happens with a wrong root key, a wrong bring-your-own key and a
//! cross-organization lookup.
//!
//! ```sh
//! cargo run --release --example quickstart
//! # the same on PostgreSQL (a fresh schema in that database, dropped at the end):
//! SILOGRAPH_POSTGRES_URL="host=127.0.0.1 user=silo dbname=silo" \
//!   cargo run --release --features postgres --example quickstart
//! ```
//!
//! Data: the slices in `tests/data` (see its README): 6,000 CollegeMsg messages become org
//! "acme" (people and `messaged` edges); 1,000 Git commits and the 2,981 paths they touched
//! become org "globex" (people, commits, paths; `authored` and `touched` edges).

#[path = "../tests/data/slices.rs"]
mod slices;

use std::collections::{HashMap, HashSet};
use std::error::Error as StdError;
use std::path::PathBuf;
use std::time::Instant;

use silograph::{Db, Direction, Error, NeighborFilter, NodeId, NodeInput, OrgKey, ReadTxn, RootKey};

type Result<T> = std::result::Result<T, Box<dyn StdError>>;

fn data(name: &str) -> Result<String> {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "data", name].iter().collect();
    Ok(std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?)
}

/// Nodes reachable from `start` in exactly 1 and exactly 2 hops along `dir` (breadth first).
fn two_hop(r: &ReadTxn, start: NodeId, dir: Direction) -> Result<(HashSet<NodeId>, HashSet<NodeId>)> {
    let mut seen = HashSet::from([start]);
    let mut levels = Vec::new();
    let mut frontier = vec![start];
    for _ in 0..2 {
        let mut next = HashSet::new();
        for n in frontier {
            for nb in r.neighbors(n, dir)? {
                let nb = nb?.node;
                if seen.insert(nb) {
                    next.insert(nb);
                }
            }
        }
        frontier = next.iter().copied().collect();
        levels.push(next);
    }
    let second = levels.pop().unwrap_or_default();
    Ok((levels.pop().unwrap_or_default(), second))
}

/// The external id a node is known by in `system`.
fn external_id(r: &ReadTxn, n: NodeId, system: &str) -> Result<String> {
    let view = r.node(n)?.ok_or("node vanished")?;
    let s = view.sources.into_iter().find(|s| s.system == system).ok_or("no source")?;
    Ok(s.external_id)
}

/// Prints an outcome that must be an error of the expected kind; anything else ends the example.
fn expect_refused<T: std::fmt::Debug>(what: &str, r: silograph::Result<T>, ok: fn(&Error) -> bool) -> Result<()> {
    match r {
        Err(e) if ok(&e) => {
            println!("  {what}: refused with `{e}`");
            Ok(())
        }
        other => Err(format!("{what}: expected a refusal, got {other:?}").into()),
    }
}

/// Where the store lives: a file in a temp dir, or (feature `postgres`, `SILOGRAPH_POSTGRES_URL`
/// set) a fresh schema of that PostgreSQL database.
enum Store {
    File(tempfile::TempDir, PathBuf),
    #[cfg(feature = "postgres")]
    Postgres {
        server: String,
        schema: String,
        url: String,
    },
}

impl Store {
    fn new() -> Result<Store> {
        #[cfg(feature = "postgres")]
        if let Ok(server) = std::env::var("SILOGRAPH_POSTGRES_URL") {
            let schema = format!("silograph_quickstart_{}", std::process::id());
            let mut c = postgres::Client::connect(&server, postgres::NoTls)?;
            c.batch_execute(&format!("CREATE SCHEMA {schema}"))?;
            let url = format!("{server} options='-c search_path={schema}'");
            println!("store: PostgreSQL, schema {schema}");
            return Ok(Store::Postgres { server, schema, url });
        }
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("ctx.silo");
        Ok(Store::File(dir, path))
    }

    fn open(&self, root: RootKey) -> silograph::Result<Db> {
        let b = Db::builder().cache_size(64 << 20);
        match self {
            Store::File(_, path) => b.open(path, root),
            #[cfg(feature = "postgres")]
            Store::Postgres { url, .. } => b.open_postgres(url, root),
        }
    }

    /// What the store holds, as bytes (a file's contents; a schema's rows), to show that a
    /// refused open wrote nothing.
    fn contents(&self) -> Result<Vec<u8>> {
        match self {
            Store::File(_, path) => Ok(std::fs::read(path)?),
            #[cfg(feature = "postgres")]
            Store::Postgres { url, .. } => {
                let mut c = postgres::Client::connect(url, postgres::NoTls)?;
                let mut out = Vec::new();
                for t in ["meta", "orgs", "nodes", "props", "edges", "adj", "index", "dict", "audit", "tree"] {
                    for r in c.query(&format!("SELECT key, value FROM silo_{t} ORDER BY key"), &[])? {
                        out.extend_from_slice(r.get::<_, &[u8]>(0));
                        out.extend_from_slice(r.get::<_, &[u8]>(1));
                    }
                }
                Ok(out)
            }
        }
    }

    fn close(self) -> Result<()> {
        match self {
            Store::File(dir, path) => {
                let size = std::fs::metadata(&path)?.len();
                dir.close()?;
                println!("\nfile size {:.1} MiB (temp dir removed)", size as f64 / (1 << 20) as f64);
            }
            #[cfg(feature = "postgres")]
            Store::Postgres { server, schema, url: _ } => {
                let mut c = postgres::Client::connect(&server, postgres::NoTls)?;
                c.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))?;
                println!("\nschema {schema} dropped");
            }
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    let started = Instant::now();
    let store = Store::new()?;

    // The host owns the root key (env, file or KMS); silograph never stores it.
    let root = RootKey::generate()?;
    let root_hex = root.to_hex();
    let db = store.open(root)?;

    // Org "acme": CollegeMsg messages.
    let messages = slices::parse_collegemsg(&data("collegemsg-first6000.tsv")?)?;
    let acme = db.create_org("acme")?;
    let t = Instant::now();
    let mut w = acme.write()?;
    slices::ingest_messages(&mut w, &messages)?;
    w.commit()?;
    let (n, e) = acme.counts()?;
    println!("acme:   {n} people, {e} `messaged` edges ({} messages ingested in {:.2?})", messages.len(), t.elapsed());

    // Org "globex": Git history.
    let commits = slices::parse_commits(&data("git-commits-first1000.tsv")?)?;
    let touches = slices::parse_touches(&data("git-touches-first1000.tsv")?)?;
    let globex = db.create_org("globex")?;
    let t = Instant::now();
    let mut w = globex.write()?;
    slices::ingest_git(&mut w, &commits, &touches)?;
    w.commit()?;
    let (n, e) = globex.counts()?;
    println!("globex: {n} people/commits/paths, {e} `authored`/`touched` edges (in {:.2?})", t.elapsed());

    // Neighbors: the most active sender's recipients.
    let mut sent: HashMap<u64, usize> = HashMap::new();
    for m in &messages {
        *sent.entry(m.src).or_default() += 1;
    }
    let (&top, &count) = sent.iter().max_by_key(|(id, c)| (**c, std::cmp::Reverse(**id))).ok_or("no messages")?;
    let r = acme.read()?;
    let alice = r.lookup("collegemsg", &top.to_string())?.ok_or("top sender not found")?;
    let out: Vec<_> = r.neighbors(alice, Direction::Out)?.collect::<silograph::Result<_>>()?;
    let distinct: HashSet<NodeId> = out.iter().map(|n| n.node).collect();
    let mut first: Vec<String> = Vec::new();
    for nb in out.iter().take(5) {
        first.push(external_id(&r, nb.node, "collegemsg")?);
    }
    println!(
        "\nneighbors: user {top} sent {count} messages ({} edges) to {} people; first recipients: {}",
        out.len(),
        distinct.len(),
        first.join(", ")
    );
    // The same walk filtered by valid time: messages of the first week of the data.
    let t0 = messages.first().map(|m| m.ts * 1000).ok_or("no messages")?;
    let week = NeighborFilter { valid_between: Some((t0, t0 + 7 * 24 * 3600 * 1000)), ..Default::default() };
    let first_week = r.neighbors_filtered(alice, Direction::Out, week)?.count();
    println!("           of which {first_week} in the first week");

    // 2 hops: people user `top` wrote to, and the people they wrote to.
    let (one, two) = two_hop(&r, alice, Direction::Out)?;
    println!("2-hop:     user {top} reaches {} people in 1 hop and {} more in 2 hops", one.len(), two.len());
    drop(r);

    // 2 hops in globex: the most touched path ← commits ← their authors.
    let mut touched: HashMap<&str, usize> = HashMap::new();
    for t in &touches {
        *touched.entry(t.path.as_str()).or_default() += 1;
    }
    let (&hot, _) = touched.iter().max_by_key(|(p, c)| (**c, std::cmp::Reverse(**p))).ok_or("no touches")?;
    let r = globex.read()?;
    let file = r.lookup("git-path", hot)?.ok_or("path not found")?;
    let (commits_of_file, authors) = two_hop(&r, file, Direction::In)?;
    println!("2-hop:     `{hot}` was touched by {} commits written by {} people", commits_of_file.len(), authors.len());
    drop(r);

    // A third org whose key the host brings (BYOK): silograph stores only a key check.
    let initech_key = OrgKey::generate()?;
    let initech = db.create_org_with_key("initech", &initech_key)?;
    let mut w = initech.write()?;
    w.upsert_node(NodeInput::new("person").source("okta", "peter@initech").prop("title", "engineer"))?;
    w.commit()?;
    println!("\ninitech (BYOK): {} node", initech.counts()?.0);

    println!("\nwhat is refused:");
    expect_refused("initech with a wrong key", db.org_with_key("initech", &OrgKey::generate()?), |e| {
        matches!(e, Error::WrongKey)
    })?;
    expect_refused("initech without its key", db.org("initech"), |e| matches!(e, Error::InvalidInput(_)))?;
    expect_refused("acme with a key", db.org_with_key("acme", &initech_key), |e| matches!(e, Error::InvalidInput(_)))?;

    // Cross-org: acme's handle cannot find globex's records, and the other way round.
    let sha = &commits.first().ok_or("no commits")?.sha;
    let cross = acme.read()?.lookup("git", sha)?;
    println!("  acme looking up globex's commit {}: {cross:?}", &sha[..12]);
    let cross_back = globex.read()?.lookup("collegemsg", &top.to_string())?;
    println!("  globex looking up acme's user {top}: {cross_back:?}");
    if cross.is_some() || cross_back.is_some() {
        return Err("a lookup crossed organizations".into());
    }
    drop((acme, globex, initech, db));

    // The wrong root key is refused before anything is written.
    let before = store.contents()?;
    expect_refused("reopening with a wrong root key", store.open(RootKey::generate()?), |e| {
        matches!(e, Error::WrongKey)
    })?;
    let unchanged = store.contents()? == before;
    println!("  store unchanged by the refused open: {unchanged}");
    if !unchanged {
        return Err("a refused open changed the store".into());
    }
    let db = store.open(RootKey::from_hex(&root_hex)?)?;
    println!("  reopening with the right root key: orgs {:?}", db.list_orgs()?);
    drop(db);

    store.close()?;
    println!("done in {:.2?}", started.elapsed());
    Ok(())
}
