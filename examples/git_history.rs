//! Who touched what when, on two years of the Git project's real history (2015–2016, see
//! examples/data/README.md): "who else worked on the files I changed in a given year?"
//!
//! The graph, imported with [`silograph_import`] straight from the two TSV slices:
//!
//! ```text
//! person:<email-hash> -authored(valid from author time)-> commit:<sha> -touched-> path:<file>
//! ```
//!
//! The question is a two-hop walk in person–file space (four adjacency hops in the store):
//! my commits in the year (valid-time filter on `authored`), the files they touched, the other
//! commits that touched those files, and their authors — again only within the year. The time
//! filter runs on the adjacency pages themselves: no commit record is fetched to check a date.
//!
//! ```text
//! cargo run --release --example git_history [-- PERSON_HASH [YEAR]]
//! ```

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use silograph::{Db, Direction, NeighborFilter, NodeId, ReadTxn, RootKey, Timestamp};
use silograph_import::{import_edges, parse_timestamp, EdgeImport, Format};

/// Neighbors of `node` in `dir` over edges of `kind`; with a window `[start, end)`, only edges
/// whose valid time starts inside it (the event happened then: an `authored` edge is valid from
/// its author time on, so "valid at end" alone would also keep earlier years).
fn hop(
    r: &ReadTxn,
    node: NodeId,
    dir: Direction,
    kind: &str,
    window: Option<(Timestamp, Timestamp)>,
) -> silograph::Result<Vec<NodeId>> {
    let filter = NeighborFilter {
        kinds: Some(r.kind_id(kind)?.into_iter().collect()),
        valid_at: window.map(|(_, end)| end - 1),
        ..NeighborFilter::default()
    };
    let start = window.map_or(i64::MIN, |(s, _)| s);
    let mut out = Vec::new();
    for n in r.neighbors_filtered(node, dir, filter)? {
        let n = n?;
        if n.valid_from.unwrap_or(i64::MIN) >= start || window.is_none() {
            out.push(n.node);
        }
    }
    Ok(out)
}

fn name(r: &ReadTxn, n: NodeId) -> silograph::Result<String> {
    Ok(r.node(n)?.and_then(|v| v.sources.first().map(|s| s.external_id.clone())).unwrap_or_default())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data");
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path().join("git.silo"), RootKey::generate()?)?;
    let org = db.create_org("git")?;

    let started = Instant::now();
    // An authored edge is valid from the author time on: "authored by then".
    let authored = EdgeImport::new(Format::Tsv)
        .src_col("author_email_hash")
        .src_system("person")
        .dst_col("commit_sha")
        .dst_system("commit")
        .time_col("author_ts")
        .kind("authored");
    let a = import_edges(&org, data.join("git-commits-2015-2016.tsv"), &authored, &mut |_| {})?;
    let touched = EdgeImport::new(Format::Tsv)
        .src_col("commit_sha")
        .src_system("commit")
        .dst_col("path")
        .dst_system("path")
        .kind("touched");
    let t = import_edges(&org, data.join("git-touches-2015-2016.tsv"), &touched, &mut |_| {})?;
    let (nodes, edges) = org.counts()?;
    println!(
        "imported {} commits and {} touches: {nodes} nodes, {edges} edges in {:.2} s",
        a.rows,
        t.rows,
        started.elapsed().as_secs_f64()
    );

    let r = org.read()?;
    let year: i32 = std::env::args().nth(2).map(|y| y.parse()).transpose()?.unwrap_or(2016);
    let window = (parse_timestamp(&format!("{year}-01-01"))?, parse_timestamp(&format!("{}-01-01", year + 1))?);
    let me = match std::env::args().nth(1) {
        Some(h) => r.lookup("person", &h)?.ok_or_else(|| format!("no person {h}"))?,
        None => {
            // The slice's most prolific author of that year.
            let mut best = None;
            for line in std::fs::read_to_string(data.join("git-commits-2015-2016.tsv"))?.lines().skip(1) {
                let author = line.split('\t').nth(1).unwrap_or_default();
                let id = r.lookup("person", author)?.ok_or("author missing")?;
                let n = hop(&r, id, Direction::Out, "authored", Some(window))?.len();
                if best.is_none_or(|(_, b)| n > b) {
                    best = Some((id, n));
                }
            }
            best.ok_or("no commits")?.0
        }
    };

    let q = Instant::now();
    let my_commits = hop(&r, me, Direction::Out, "authored", Some(window))?;
    let mut my_files = HashSet::new();
    for c in &my_commits {
        my_files.extend(hop(&r, *c, Direction::Out, "touched", None)?);
    }
    // co-author -> the files of mine they also touched that year
    let mut shared: HashMap<NodeId, HashSet<NodeId>> = HashMap::new();
    for f in &my_files {
        for c in hop(&r, *f, Direction::In, "touched", None)? {
            for who in hop(&r, c, Direction::In, "authored", Some(window))? {
                if who != me {
                    shared.entry(who).or_default().insert(*f);
                }
            }
        }
    }
    let elapsed = q.elapsed();
    let mut ranked: Vec<_> = shared.into_iter().map(|(who, files)| (files.len(), who)).collect();
    ranked.sort_by(|a, b| b.cmp(a));

    println!(
        "\nperson:{} authored {} commits in {year}, touching {} files; {} other people worked on those files in {year} \
         (query: {:.1} ms)",
        name(&r, me)?,
        my_commits.len(),
        my_files.len(),
        ranked.len(),
        elapsed.as_secs_f64() * 1e3
    );
    println!("\n{:>12}  co-worker (email hash)", "shared files");
    for (n, who) in ranked.iter().take(10) {
        println!("{n:>12}  person:{}", name(&r, *who)?);
    }
    Ok(())
}
