//! Reachability as of a date on a real temporal network: the first 20,000 messages of the
//! CollegeMsg network (UC Irvine students, 2004-04-15 .. 2004-05-12; see examples/data/README.md).
//!
//! Each message `u → v at t` becomes an edge `user:u -messaged-> user:v` valid from `t`. Two
//! questions, for a few dates T:
//!
//! 1. *Snapshot reachability*: who can user 1 reach over the message graph as it stood at T
//!    (every edge with `valid_from <= T`)? One call: `traverse(..).valid_at(T)`.
//! 2. *Time-respecting reachability*: who could actually have heard something from user 1 by T,
//!    if news only travels forward in time (a message relays what its sender knew when sending)?
//!    An earliest-arrival search over `neighbors_filtered` with a `valid_between` window.
//!
//! The gap between the two is the classic temporal-network effect: the snapshot overstates reach.
//!
//! ```text
//! cargo run --release --example temporal_messages [-- USER]
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;
use std::time::Instant;

use silograph::{Db, Direction, NeighborFilter, NodeId, PathOptions, ReadTxn, RootKey, Timestamp};
use silograph_import::{import_edges, parse_timestamp, EdgeImport, Format};

/// Earliest time each node can have heard from `start` (which knows at `t0`), using only
/// messages sent at or after the sender heard, up to `until`.
fn earliest_arrival(r: &ReadTxn, start: NodeId, t0: Timestamp, until: Timestamp) -> silograph::Result<usize> {
    let kind: Vec<_> = r.kind_id("messaged")?.into_iter().collect();
    let mut best: HashMap<NodeId, Timestamp> = HashMap::from([(start, t0)]);
    let mut heap = BinaryHeap::from([Reverse((t0, start))]);
    while let Some(Reverse((t, u))) = heap.pop() {
        if best.get(&u).is_some_and(|&b| b < t) {
            continue;
        }
        // Messages u sent at or before `until` (valid at `until`), kept if sent at or after `t`.
        let filter = NeighborFilter { kinds: Some(kind.clone()), valid_at: Some(until), ..NeighborFilter::default() };
        for n in r.neighbors_filtered(u, Direction::Out, filter)? {
            let n = n?;
            let sent = n.valid_from.unwrap_or(i64::MIN);
            if sent >= t && best.get(&n.node).is_none_or(|&b| sent < b) {
                best.insert(n.node, sent);
                heap.push(Reverse((sent, n.node)));
            }
        }
    }
    Ok(best.len())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let user = std::env::args().nth(1).unwrap_or_else(|| "1".into());
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/collegemsg-first20k.tsv");
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path().join("messages.silo"), RootKey::generate()?)?;
    let org = db.create_org("uci")?;

    let started = Instant::now();
    let opts = EdgeImport::new(Format::Tsv).system("user").kind("messaged").time_col("ts");
    let report = import_edges(&org, &data, &opts, &mut |_| {})?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "imported {} messages: {} users, {} edges in {secs:.2} s ({:.0} edges/s)",
        report.rows,
        report.nodes_added,
        report.edges_added,
        report.edges_added as f64 / secs
    );

    let r = org.read()?;
    let me = r.lookup("user", &user)?.ok_or_else(|| format!("no user {user} in the data"))?;
    let first_sent = r
        .neighbors(me, Direction::Out)?
        .map(|n| n.map(|n| n.valid_from.unwrap_or(i64::MIN)))
        .collect::<silograph::Result<Vec<_>>>()?
        .into_iter()
        .min()
        .ok_or("this user sent no message")?;
    println!("user:{user} sent a first message at {} ms\n", first_sent);
    println!("{:<12} {:>10} {:>10} {:>16} {:>10}", "as of", "snapshot", "max hops", "time-respecting", "query ms");
    for day in ["2004-04-16", "2004-04-20", "2004-04-27", "2004-05-04", "2004-05-12"] {
        let t = parse_timestamp(day)? + 86_400_000 - 1; // end of that day
        let q = Instant::now();
        let reach = r.traverse(me).kinds(["messaged"]).valid_at(t).run()?;
        let hops = reach.iter().map(|(_, d)| *d).max().unwrap_or(0);
        let temporal = if t >= first_sent { earliest_arrival(&r, me, first_sent, t)? } else { 1 };
        println!("{day:<12} {:>10} {hops:>10} {temporal:>16} {:>10.1}", reach.len(), q.elapsed().as_secs_f64() * 1e3);
    }

    // A shortest chain of messages from user 1 to the last user it reaches, as of the last day.
    let t = parse_timestamp("2004-05-12")?;
    let reach = r.traverse(me).valid_at(t).run()?;
    if let Some(&(far, depth)) = reach.last() {
        let p = r.shortest_path(me, far, &PathOptions::new().valid_at(t))?.ok_or("no path")?;
        let names: Vec<String> = p
            .nodes
            .iter()
            .map(|n| Ok(r.node(*n)?.and_then(|v| v.sources.first().map(|s| s.external_id.clone())).unwrap_or_default()))
            .collect::<silograph::Result<_>>()?;
        println!("\nfarthest user as of 2004-05-12 ({depth} hops): user:{}", names.join(" -> user:"));
    }
    Ok(())
}
