//! An async host: a tokio service that shares one `Db` across its tasks and runs every silograph
//! call on tokio's blocking pool with `tokio::task::spawn_blocking`.
//!
//! Why `spawn_blocking`, for reads as well as writes: silograph's API is synchronous. A
//! `commit()` returns only once its data is durable, so it blocks on an fsync (milliseconds, more
//! on a busy disk), and a commit may wait for the group-commit round of other writers; every read
//! and write opens or seals records with AES-256-GCM and decompresses pages, which is CPU-bound
//! work that takes longer the more a query touches. Run on an executor thread, either would stall
//! every other task scheduled there. On the blocking pool they stall only themselves, and the
//! `Db` (`Clone + Send + Sync`, an `Arc` inside) is cloned into each closure at no cost.
//!
//! The data is built here: three organizations of six people each, who e-mail each other. The
//! three orgs are written by concurrent tasks (their commits share group-commit rounds), then read
//! by concurrent tasks (MVCC snapshots: readers never wait for writers).
//!
//! ```sh
//! cargo run --example async_service
//! ```

use std::error::Error as StdError;

use silograph::{Db, Direction, EdgeInput, NodeId, NodeInput, PathOptions, ReadTxn, RootKey};

type Result<T> = std::result::Result<T, Box<dyn StdError + Send + Sync>>;

/// The tenants and their people.
const ORGS: [(&str, [&str; 6]); 3] = [
    ("acme", ["ada", "bob", "cyd", "dee", "eve", "fay"]),
    ("globex", ["gus", "hal", "ida", "jon", "kim", "lea"]),
    ("initech", ["max", "ned", "oli", "pam", "quy", "ray"]),
];

/// Runs `f` on the blocking pool with a clone of `db`, and waits for it without blocking the
/// executor. A panic inside `f` is re-raised here, as if `f` had run inline.
async fn blocking<T, F>(db: &Db, f: F) -> silograph::Result<T>
where
    F: FnOnce(&Db) -> silograph::Result<T> + Send + 'static,
    T: Send + 'static,
{
    let db = db.clone();
    match tokio::task::spawn_blocking(move || f(&db)).await {
        Ok(result) => result,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("blocking task did not finish: {e}"),
        },
    }
}

/// One tenant's load: its people in one transaction, then its e-mails in three more (each
/// `commit()` is durable when it returns).
async fn load(db: Db, org: &'static str, people: [&'static str; 6]) -> silograph::Result<()> {
    blocking(&db, move |db| {
        let org = db.create_org(org)?;
        let mut w = org.write()?;
        for p in people {
            w.upsert_node(NodeInput::new("person").source("mail", p).prop("name", p))?;
        }
        w.commit()
    })
    .await?;
    for round in 0..3u64 {
        blocking(&db, move |db| {
            let org = db.org(org)?;
            let mut w = org.write()?;
            for (i, from) in people.iter().enumerate() {
                // Round 0: everyone mails the next person; rounds 1 and 2: every other person
                // mails two and three ahead.
                if round > 0 && i % 2 == 1 {
                    continue;
                }
                let to = people[(i + 1 + round as usize) % people.len()];
                let (Some(a), Some(b)) = (w.lookup("mail", from)?, w.lookup("mail", to)?) else { continue };
                let id = format!("msg-{round}-{i}");
                w.add_edge(
                    EdgeInput::new(a, b, "emailed").valid_from(1_700_000_000_000 + round as i64).source("mail", id),
                )?;
            }
            w.commit()
        })
        .await?;
    }
    Ok(())
}

/// A person's mail address, as the name to print.
fn name_of(r: &ReadTxn, n: NodeId) -> silograph::Result<String> {
    let view = r.node(n)?;
    Ok(view.and_then(|v| v.sources.first().map(|s| s.external_id.clone())).unwrap_or_else(|| "?".to_owned()))
}

/// One request: who `person` reaches within two hops, and the shortest mail chain to `target`.
async fn query(db: Db, org: &'static str, person: &'static str, target: &'static str) -> silograph::Result<String> {
    blocking(&db, move |db| {
        let r = db.org(org)?.read()?;
        let (Some(a), Some(b)) = (r.lookup("mail", person)?, r.lookup("mail", target)?) else {
            return Ok(format!("{org}: {person} or {target} not found"));
        };
        let mut out = Vec::new();
        for n in r.neighbors(a, Direction::Out)? {
            out.push(name_of(&r, n?.node)?);
        }
        let two_hops = r.traverse(a).max_depth(2).run()?.len() - 1;
        let path = r.shortest_path(a, b, &PathOptions::new())?;
        let chain = match path {
            Some(p) => p.nodes.iter().map(|&n| name_of(&r, n)).collect::<silograph::Result<Vec<_>>>()?.join(" -> "),
            None => "none".to_owned(),
        };
        let (nodes, edges) = r.counts()?;
        Ok(format!(
            "{org:<8} {nodes} people, {edges} mails; {person} mailed {}; reaches {two_hops} within 2 hops; \
             to {target}: {chain}",
            out.join(", ")
        ))
    })
    .await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("async.silo");

    // Opening creates the file and syncs it: blocking work too.
    let db = {
        let path = path.clone();
        match tokio::task::spawn_blocking(move || Db::open(&path, RootKey::generate()?)).await {
            Ok(db) => db?,
            Err(e) => return Err(e.into()),
        }
    };

    // Writers: one task per tenant, all at once.
    let mut writers = tokio::task::JoinSet::new();
    for (org, people) in ORGS {
        writers.spawn(load(db.clone(), org, people));
    }
    while let Some(done) = writers.join_next().await {
        done??;
    }

    // Readers: one request per tenant, all at once; answers printed in tenant order.
    let mut readers = Vec::new();
    for (org, people) in ORGS {
        readers.push(tokio::spawn(query(db.clone(), org, people[0], people[5])));
    }
    for r in readers {
        println!("{}", r.await??);
    }

    // A request for a tenant that does not exist is refused, not answered with nothing.
    match blocking(&db, |db| db.org("umbrella").map(|_| ())).await {
        Ok(()) => println!("umbrella: unexpectedly found"),
        Err(e) => println!("umbrella: refused — {e}"),
    }

    let report = blocking(&db, |db| db.verify()).await?;
    println!(
        "verify: {} records of {} orgs checked, {}",
        report.records(),
        report.orgs.len(),
        if report.is_ok() { "ok" } else { "CORRUPT" }
    );
    if !report.is_ok() {
        return Err("verification failed".into());
    }
    Ok(())
}
