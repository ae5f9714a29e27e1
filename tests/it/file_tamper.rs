//! On-disk tamper sweep: bit flips, zeroed ranges and truncations of the redb FILE itself (the v1
//! golden fixture, so every trial is reproducible from its offset), at 900 deterministic
//! offsets. Every trial must end in an error (at open or at read) or in exactly the committed
//! data: never different data, never a panic.
//!
//! Findings, and how they were closed:
//! - redb panics on some corrupt pages, at open (debug builds: `Malformed allocator state`,
//!   `Invalid page type byte`) and at read time in every build (slice indexing in
//!   `btree_base.rs`, `unreachable!()` in `table_tree_base.rs` / `btree.rs`). silograph contains
//!   them (`store::contain` around every redb call on the open and read paths): they surface as
//!   `Corrupt`, never as a panic in the host.
//! - A damaged B-tree key makes a record unreachable. A node or edge whose id the org assigned,
//!   a page 0 of a node whose record counts pages there, and a property map whose owner's
//!   record marks its compartment, all read as `Corrupt` when missing; `verify()` compares
//!   record counts with the registry.
#![cfg(not(feature = "bench-null-cipher"))]

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Once;

use crate::common::dump::{dump_org, Dump};
use crate::common::{copy_of_golden, golden_fixture, tmp, Rng, GOLDEN_GLOBEX_KEY, GOLDEN_ROOT};
use silograph::{Db, Error, OrgKey, RootKey};

type Sources = Vec<(String, String)>;

fn sources() -> (Sources, Sources) {
    let mut nodes: Vec<(String, String)> =
        (0..6).map(|i| (if i % 2 == 0 { "gmail" } else { "crm" }.to_string(), format!("n{i}"))).collect();
    nodes.push(("gmail".into(), "hub".into()));
    nodes.push(("gmail".into(), "alias-of-n2".into()));
    (nodes, (0..4).map(|i| ("sf".to_string(), format!("e{i}"))).collect())
}

fn state(db: &Db) -> Result<Vec<Dump>, Error> {
    let (ns, es) = sources();
    let acme = db.org("acme")?;
    let globex = db.org_with_key("globex", &OrgKey::from_bytes(GOLDEN_GLOBEX_KEY))?;
    Ok(vec![dump_org(&acme, &ns, &es)?, dump_org(&globex, &ns, &es)?])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    OpenError,
    ReadError,
    Correct,
    Wrong,
    Panic,
}

fn trial(path: &Path, bytes: &[u8], expected: &[Dump]) -> (Outcome, String) {
    std::fs::write(path, bytes).expect("write the tampered file");
    let phase = std::cell::Cell::new("Db::open");
    let res = catch_unwind(AssertUnwindSafe(|| {
        let db = match Db::open(path, RootKey::from_bytes(GOLDEN_ROOT)) {
            Ok(db) => db,
            Err(e) => return (Outcome::OpenError, e.to_string()),
        };
        phase.set("read");
        match state(&db) {
            Ok(s) if s == expected => (Outcome::Correct, String::new()),
            Ok(s) => (Outcome::Wrong, describe_difference(&s, expected)),
            Err(e) => (Outcome::ReadError, e.to_string()),
        }
    }));
    res.unwrap_or_else(|p| {
        let at = PANIC_AT.with(|at| at.take()).unwrap_or_default();
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        (Outcome::Panic, format!("during {}: {msg} at {at}", phase.get()))
    })
}

/// Describes how `got` differs from `want`: `absent: …` if every differing fact is a record
/// that reads as missing (`None` or an empty list) where the committed state has it.
fn describe_difference(got: &[Dump], want: &[Dump]) -> String {
    let got: Vec<&String> = got.iter().flatten().collect();
    let want: Vec<&String> = want.iter().flatten().collect();
    if got.len() != want.len() {
        return format!("different number of facts: {} vs {}", got.len(), want.len());
    }
    let diffs: Vec<(&&String, &&String)> = got.iter().zip(&want).filter(|(a, b)| a != b).collect();
    let absent = |g: &str, w: &str| {
        [" None", " []"]
            .iter()
            .any(|suffix| g.strip_suffix(suffix).is_some_and(|head| w.starts_with(&format!("{head} "))))
    };
    let first = diffs.first().map(|(g, w)| format!("got `{g}`, want `{w}`")).unwrap_or_default();
    if diffs.iter().all(|(g, w)| absent(g, w)) {
        format!("absent: {} facts, first {first}", diffs.len())
    } else {
        format!("changed: {first}")
    }
}

thread_local! {
    /// Set while this thread runs trials: its panics are counted, not printed.
    static QUIET: Cell<bool> = const { Cell::new(false) };
    /// Where this thread's last caught panic was raised (set by the panic hook).
    static PANIC_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Keeps the panics of the calling thread out of the test output (noting where each was raised)
/// until [`QUIET`] is cleared. The hook is process-wide and other tests of this binary run in
/// parallel, so it is installed once, for good, and hands every other thread's panic to the
/// previous hook: their failures still print.
fn quiet_panics_on_this_thread() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) {
                let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
                PANIC_AT.with(|p| *p.borrow_mut() = Some(at));
            } else {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
}

/// The outcome counts and the bad trials of one sweep.
struct Sweep {
    trials: u32,
    counts: std::collections::BTreeMap<(&'static str, Outcome), u32>,
    /// `(trial description, outcome, detail)` of every wrong or panicking trial.
    bad: Vec<(String, Outcome, String)>,
}

impl Sweep {
    fn count(&self, o: Outcome) -> u32 {
        self.counts.iter().filter(|((_, x), _)| *x == o).map(|(_, n)| *n).sum()
    }

    fn print(&self, len: usize) {
        eprintln!("tamper trials: {} over the {len}-byte v2 fixture", self.trials);
        for ((kind, outcome), n) in &self.counts {
            eprintln!("  {kind:9} {outcome:?}: {n}");
        }
        let mut sites = std::collections::BTreeMap::<String, u32>::new();
        for (_, o, detail) in &self.bad {
            if *o == Outcome::Panic {
                let phase = detail.split(": ").next().unwrap_or_default();
                let site = detail.rsplit('/').next().unwrap_or_default();
                *sites.entry(format!("{phase} at {site}")).or_insert(0) += 1;
            }
        }
        for (site, n) in &sites {
            eprintln!("  panics {site}: {n}");
        }
        for (what, o, detail) in self.bad.iter().take(40) {
            eprintln!("  BAD {what}: {o:?}: {detail}");
        }
    }
}

fn sweep() -> (Sweep, usize) {
    let original = std::fs::read(golden_fixture()).expect("the v2 fixture is checked in");
    let clean = copy_of_golden("clean.silo");
    let expected = state(&Db::open(&clean, RootKey::from_bytes(GOLDEN_ROOT)).expect("open the clean fixture"))
        .expect("read the clean fixture");
    drop(clean);
    // Offsets of bytes in use (non-zero): flips there hit headers, B-tree pages and sealed values
    // far more often than uniform offsets in a file that is mostly free space.
    let used: Vec<usize> = original.iter().enumerate().filter(|(_, b)| **b != 0).map(|(i, _)| i).collect();
    assert!(!used.is_empty());

    // Panics are caught and counted per trial; keep their messages out of the test output.
    quiet_panics_on_this_thread();
    let path = tmp("trial.silo");
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut sw = Sweep { trials: 0, counts: std::collections::BTreeMap::new(), bad: Vec::new() };
    let run = |kind: &'static str, bytes: Vec<u8>, note: String, sw: &mut Sweep| {
        let (outcome, detail) = trial(&path, &bytes, &expected);
        *sw.counts.entry((kind, outcome)).or_insert(0) += 1;
        sw.trials += 1;
        if matches!(outcome, Outcome::Wrong | Outcome::Panic) {
            sw.bad.push((format!("{kind} {note}"), outcome, detail));
        }
    };
    // Single-bit flips: in the first 4 KiB (redb's header and commit slots), in used bytes, anywhere.
    for i in 0..600 {
        let pos = match i % 3 {
            0 => rng.below(4096.min(original.len())),
            1 => used[rng.below(used.len())],
            _ => rng.below(original.len()),
        };
        let bit = rng.below(8);
        let mut b = original.clone();
        b[pos] ^= 1 << bit;
        run("flip", b, format!("offset {pos} bit {bit}"), &mut sw);
    }
    // Zeroed ranges of 1 byte to 8 KiB, starting at used bytes or anywhere.
    for i in 0..200 {
        let start = if i % 2 == 0 { used[rng.below(used.len())] } else { rng.below(original.len()) };
        let len = 1 + rng.below(if i % 4 < 2 { 64 } else { 8192 });
        let end = (start + len).min(original.len());
        let mut b = original.clone();
        b[start..end].fill(0);
        run("zero", b, format!("{start}..{end}"), &mut sw);
    }
    // Truncations: at page boundaries and at arbitrary offsets.
    for i in 0..100 {
        let len = if i % 2 == 0 { rng.below(original.len() / 4096 + 1) * 4096 } else { rng.below(original.len()) };
        run("truncate", original[..len.min(original.len())].to_vec(), format!("to {len}"), &mut sw);
    }
    QUIET.with(|q| q.set(false));
    (sw, original.len())
}

#[test]
fn tampered_file_yields_an_error_or_the_committed_data_never_wrong_data_or_a_panic() {
    let (sw, len) = sweep();
    sw.print(len);
    assert_eq!(sw.count(Outcome::Panic), 0, "panics on tampered files (see the BAD lines above)");
    assert_eq!(sw.count(Outcome::Wrong), 0, "wrong data from tampered files (see the BAD lines above)");
}
