//! Where the bytes of a file go: loads Enron (`SILOGRAPH_LAYOUT=bulk`: with the bulk loader;
//! default: the incremental `WriteTxn` ingest of `ingest_enron`, 10k rows per transaction with
//! sources on nodes and edges), then opens the file with plain redb and prints, per table, its
//! rows and their key and value bytes, redb's page statistics, the file size, and the size after
//! `Db::compact`. The figures behind `docs/design.md` §4's size table.
//!
//! `SILOGRAPH_LAYOUT_GRAPH=rmat-<edges>` loads an R-MAT graph of that many edges instead (the
//! graphs of `ingest_rmat`).
//!
//! `cargo bench --bench layout` (one load, no criterion: sizes are not timings).

mod common;

use common::*;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};

fn main() {
    // `cargo bench` passes `--bench`; a name filter other than this bench's skips it.
    if std::env::args().skip(1).any(|a| !a.starts_with('-') && !"layout".contains(a.as_str())) {
        return;
    }
    let bulk = std::env::var("SILOGRAPH_LAYOUT").is_ok_and(|v| v == "bulk");
    let w = Workload::named(&std::env::var("SILOGRAPH_LAYOUT_GRAPH").unwrap_or_default());
    let path = tmp_path("layout");
    let _ = std::fs::remove_file(&path);
    {
        let db = silo_builder(64 << 20, false).open(&path, root_key()).expect("open");
        let org = db.create_org("bench").expect("org");
        if bulk {
            silo_ingest_bulk(&org, &w);
        } else {
            silo_ingest_rows(&org, &w, ROWS_PER_TXN);
        }
    }
    let load = if bulk { "bulk load" } else { "incremental WriteTxn ingest" };
    println!("{} ({} edges), {load}: file {:.1} MB", w.name, w.edges.len(), disk_size(&path) as f64 / 1e6);
    {
        let raw = redb::Database::open(&path).expect("redb open");
        let wtx = raw.begin_write().expect("redb write");
        let st = wtx.stats().expect("stats");
        println!(
            "redb: {} pages allocated ({:.1} MB: {} leaf, {} branch), stored leaf bytes {:.2} MB, metadata {:.2} MB",
            st.allocated_pages(),
            (st.allocated_pages() * st.page_size() as u64) as f64 / 1e6,
            st.leaf_pages(),
            st.branch_pages(),
            st.stored_bytes() as f64 / 1e6,
            st.metadata_bytes() as f64 / 1e6,
        );
        wtx.abort().expect("abort");
        let rtx = raw.begin_read().expect("redb read");
        println!(
            "{:>8} {:>8} {:>10} {:>11} {:>9} {:>7} {:>7}",
            "table", "rows", "key bytes", "value bytes", "per row", "leaves", "fill"
        );
        for h in rtx.list_tables().expect("tables") {
            let name = h.name().to_string();
            let t = rtx.open_table(TableDefinition::<&[u8], &[u8]>::new(&name)).expect("table");
            let (mut rows, mut keys, mut values) = (0u64, 0u64, 0u64);
            for item in t.iter().expect("iter") {
                let (k, v) = item.expect("row");
                rows += 1;
                keys += k.value().len() as u64;
                values += v.value().len() as u64;
            }
            let ts = t.stats().expect("table stats");
            println!(
                "{name:>8} {rows:>8} {keys:>10} {values:>11} {:>9} {:>7} {:>6.0}%",
                values.checked_div(rows).unwrap_or(0),
                ts.leaf_pages(),
                100.0 * ts.stored_bytes() as f64 / (ts.leaf_pages().max(1) * st.page_size() as u64) as f64
            );
        }
    }
    let db = silo_builder(64 << 20, false).open(&path, root_key()).expect("reopen");
    drop(db.compact().expect("compact"));
    println!("after compact(): {:.1} MB", disk_size(&path) as f64 / 1e6);
    let _ = std::fs::remove_file(&path);
    cleanup();
}
