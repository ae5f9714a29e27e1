//! Streaming import of edge lists and node lists (TSV, CSV and, with the `jsonl` feature, JSON
//! Lines) into one organization. The command-line tool and the examples share this code.
//!
//! # Identity and idempotency
//!
//! Nodes are named by `(system, external_id)`: importing a node that already exists reuses it.
//! An edge gets the source reference of its input row: the row's own id (`id` column, or the
//! `"source"` field of a JSONL edge) when it has one, otherwise `(system, "<file-stem>:line-<N>")`
//! with `N` the physical line number (header included). Importing the same file twice therefore
//! changes nothing. Line numbers are the right identity for append-only exports (logs, activity
//! feeds, SNAP edge lists): appending rows keeps the old rows' identities. They are the wrong one
//! for a file whose rows are edited, reordered or deleted: then rows get new identities and are
//! added again. Give such files an id column.
//!
//! # Atomicity and memory
//!
//! An import reads its file line by line (bounded memory) in batches of
//! [`EdgeImport::batch_size`] rows, one write transaction per batch, because a write transaction
//! buffers every record it touches until commit. The first pass is a check: it parses every row
//! and applies it in a write transaction that is then dropped, so the store's own validation
//! (`WriteTxn`: name and value limits, time intervals) is the one that judges each row. A
//! malformed or refused row is an error naming the file, the line and (for parse errors) the
//! column, and nothing of that import is committed. A file that fits in one batch is committed by
//! that first pass; a longer one is read a second time and written batch by batch. If that second
//! pass fails midway (a storage error, a crash), the committed batches stay; running the same
//! import again is the resume: committed rows are recognized by their identity and skipped, the
//! rest is added.
//!
//! Every row of a TSV/CSV file must have as many fields as the header (or, without a header, the
//! first row); [`EdgeImport::flexible`] accepts rows of other lengths.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let tmp = tempfile::tempdir()?;
//! # let dir = tmp.path();
//! use silograph::{Db, RootKey};
//! use silograph_import::{import_edges, EdgeImport, Format};
//! let edges = dir.join("msgs.tsv");
//! std::fs::write(&edges, "src\tdst\tts\n1\t2\t1082040961\n2\t3\t1082040999\n")?;
//! let db = Db::open(dir.join("db.silo"), RootKey::from_bytes([1; 32]))?;
//! let org = db.create_org("uci")?;
//! let opts = EdgeImport::new(Format::Tsv).system("user").kind("messaged").time_col("ts");
//! let report = import_edges(&org, &edges, &opts, &mut |_| {})?;
//! assert_eq!((report.nodes_added, report.edges_added), (3, 2));
//! let again = import_edges(&org, &edges, &opts, &mut |_| {})?;
//! assert_eq!((again.nodes_added, again.edges_added), (0, 0));
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::fs::File;
#[cfg(feature = "jsonl")]
use std::io::BufRead;
use std::io::{BufReader, Read};
use std::path::Path;
use std::str::FromStr;

use silograph::{EdgeInput, NodeId, NodeInput, Org, SourceRef, Timestamp, Value, WriteTxn};

/// Why an import, or parsing one of its settings, failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input cannot be imported as it is: a malformed or refused row (named by file, line and,
    /// where known, column), a missing file, an unknown column name or setting.
    #[error("invalid input: {0}")]
    Input(String),
    /// The store failed (storage, I/O, a wrong key, …) on something not tied to one row.
    #[error(transparent)]
    Store(#[from] silograph::Error),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Compiles the README's Rust example as a doc test.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

fn invalid(msg: impl Into<String>) -> Error {
    Error::Input(msg.into())
}

/// Input file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// Tab-separated values, no quoting.
    Tsv,
    /// Comma-separated values with RFC 4180 quoting.
    Csv,
    /// JSON Lines: one JSON object per line (needs the `jsonl` feature).
    Jsonl,
}

impl Format {
    /// The format a file name suggests (`.csv`, `.jsonl`/`.ndjson`/`.json`, anything else TSV).
    pub fn from_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("csv") => Format::Csv,
            Some("jsonl" | "ndjson" | "json") => Format::Jsonl,
            _ => Format::Tsv,
        }
    }
}

impl FromStr for Format {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tsv" => Ok(Format::Tsv),
            "csv" => Ok(Format::Csv),
            "jsonl" => Ok(Format::Jsonl),
            other => Err(invalid(format!("unknown format `{other}` (tsv, csv or jsonl)"))),
        }
    }
}

/// The unit of the numbers in a time column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeUnit {
    /// Seconds since the Unix epoch.
    Seconds,
    /// Milliseconds since the Unix epoch (silograph's own unit).
    Millis,
}

impl TimeUnit {
    fn to_ms(self, t: i64) -> Option<Timestamp> {
        match self {
            TimeUnit::Seconds => t.checked_mul(1000),
            TimeUnit::Millis => Some(t),
        }
    }
}

impl FromStr for TimeUnit {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "s" => Ok(TimeUnit::Seconds),
            "ms" => Ok(TimeUnit::Millis),
            other => Err(invalid(format!("unknown time unit `{other}` (s or ms)"))),
        }
    }
}

/// A column of a TSV/CSV file: a 1-based position, or a header name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    /// The column at this 1-based position.
    Position(usize),
    /// The column with this header name (the file must have a header).
    Name(String),
}

impl FromStr for Column {
    type Err = Error;

    /// A number is a 1-based position, anything else a header name.
    fn from_str(s: &str) -> Result<Self> {
        match s.parse::<usize>() {
            Ok(0) => Err(invalid("column positions start at 1")),
            Ok(n) => Ok(Column::Position(n)),
            Err(_) if s.is_empty() => Err(invalid("empty column name")),
            Err(_) => Ok(Column::Name(s.to_owned())),
        }
    }
}

impl From<&str> for Column {
    fn from(s: &str) -> Self {
        Column::from_str(s).unwrap_or_else(|_| Column::Name(s.to_owned()))
    }
}

impl From<usize> for Column {
    fn from(n: usize) -> Self {
        Column::Position(n)
    }
}

/// Parses a node named `system:external_id` (split at the first `:`, so the system cannot
/// contain one but the id can).
///
/// ```
/// let s = silograph_import::parse_node_ref("path:src/main.rs").unwrap();
/// assert_eq!((s.system.as_str(), s.external_id.as_str()), ("path", "src/main.rs"));
/// assert!(silograph_import::parse_node_ref("no-colon").is_err());
/// ```
pub fn parse_node_ref(s: &str) -> Result<SourceRef> {
    match s.split_once(':') {
        Some((sys, id)) if !sys.is_empty() && !id.is_empty() => Ok(SourceRef::new(sys, id)),
        _ => Err(invalid(format!("`{s}` is not a node name of the form system:external_id"))),
    }
}

/// Where an edge's kind comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KindSpec {
    Fixed(String),
    Column(Column),
}

/// How to read an edge file: format, column mapping, naming and batching.
#[derive(Debug, Clone)]
#[must_use]
pub struct EdgeImport {
    format: Format,
    header: bool,
    system: Option<String>,
    src_system: Option<String>,
    dst_system: Option<String>,
    src_col: Column,
    dst_col: Column,
    time_col: Option<Column>,
    id_col: Option<Column>,
    kind: KindSpec,
    time_unit: TimeUnit,
    batch_size: usize,
    flexible: bool,
}

impl EdgeImport {
    /// Defaults: a header line, source in column 1, target in column 2, kind `"edge"`, no time,
    /// times in seconds, system = the file's stem, 50,000 rows per write transaction.
    pub fn new(format: Format) -> Self {
        EdgeImport {
            format,
            header: true,
            system: None,
            src_system: None,
            dst_system: None,
            src_col: Column::Position(1),
            dst_col: Column::Position(2),
            time_col: None,
            id_col: None,
            kind: KindSpec::Fixed("edge".into()),
            time_unit: TimeUnit::Seconds,
            batch_size: 50_000,
            flexible: false,
        }
    }

    /// The system of both endpoints' external ids (default: the file's stem).
    pub fn system(mut self, s: impl Into<String>) -> Self {
        self.system = Some(s.into());
        self
    }

    /// The system of the source endpoints, overriding [`EdgeImport::system`].
    pub fn src_system(mut self, s: impl Into<String>) -> Self {
        self.src_system = Some(s.into());
        self
    }

    /// The system of the target endpoints, overriding [`EdgeImport::system`].
    pub fn dst_system(mut self, s: impl Into<String>) -> Self {
        self.dst_system = Some(s.into());
        self
    }

    /// The column holding the source endpoint's external id.
    pub fn src_col(mut self, c: impl Into<Column>) -> Self {
        self.src_col = c.into();
        self
    }

    /// The column holding the target endpoint's external id.
    pub fn dst_col(mut self, c: impl Into<Column>) -> Self {
        self.dst_col = c.into();
        self
    }

    /// The column holding the edge's valid-from time (see [`EdgeImport::time_unit`]).
    pub fn time_col(mut self, c: impl Into<Column>) -> Self {
        self.time_col = Some(c.into());
        self
    }

    /// The column holding the edge's own external id (its identity for idempotent re-import).
    pub fn id_col(mut self, c: impl Into<Column>) -> Self {
        self.id_col = Some(c.into());
        self
    }

    /// The unit of the time column.
    pub fn time_unit(mut self, u: TimeUnit) -> Self {
        self.time_unit = u;
        self
    }
}

/// The setters [`EdgeImport`] and [`NodeImport`] share: header, kind, batching, strictness.
macro_rules! row_setters {
    ($t:ty, $row:literal) => {
        impl $t {
            /// Whether the first line is a header (TSV/CSV).
            pub fn header(mut self, yes: bool) -> Self {
                self.header = yes;
                self
            }

            #[doc = concat!("Every ", $row, " of the file has this kind.")]
            pub fn kind(mut self, k: impl Into<String>) -> Self {
                self.kind = KindSpec::Fixed(k.into());
                self
            }

            #[doc = concat!("The column holding each ", $row, "'s kind.")]
            pub fn kind_col(mut self, c: impl Into<Column>) -> Self {
                self.kind = KindSpec::Column(c.into());
                self
            }

            /// Rows per write transaction (at least 1).
            pub fn batch_size(mut self, n: usize) -> Self {
                self.batch_size = n.max(1);
                self
            }

            /// Accept TSV/CSV rows with more or fewer fields than the header (default: such a row
            /// is an error naming its file, line and field count).
            pub fn flexible(mut self, yes: bool) -> Self {
                self.flexible = yes;
                self
            }
        }
    };
}

row_setters!(EdgeImport, "edge");
row_setters!(NodeImport, "node");

/// How to read a node file (TSV/CSV: one node per row, the other columns become `Raw`
/// properties named by the header; JSONL: `{"kind":..,"source":{"system":..,"id":..},"props":{..}}`).
#[derive(Debug, Clone)]
#[must_use]
pub struct NodeImport {
    format: Format,
    header: bool,
    system: Option<String>,
    id_col: Column,
    kind: KindSpec,
    batch_size: usize,
    flexible: bool,
}

impl NodeImport {
    /// Defaults: a header line, the id in column 1, kind = the system, system = the file's stem.
    pub fn new(format: Format) -> Self {
        NodeImport {
            format,
            header: true,
            system: None,
            id_col: Column::Position(1),
            kind: KindSpec::Fixed(String::new()),
            batch_size: 50_000,
            flexible: false,
        }
    }

    /// The system of the nodes' external ids (default: the file's stem).
    pub fn system(mut self, s: impl Into<String>) -> Self {
        self.system = Some(s.into());
        self
    }

    /// The column holding each node's external id.
    pub fn id_col(mut self, c: impl Into<Column>) -> Self {
        self.id_col = c.into();
        self
    }
}

/// Which pass an import is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Parsing every row and checking it in a write transaction that is dropped (or, for a
    /// file that fits in one batch, committed).
    Check,
    /// Writing rows in batches.
    Write,
}

/// Progress of an import, reported after every few thousand rows and at the end of each pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// The current pass.
    pub phase: Phase,
    /// Bytes of the file consumed so far in this pass.
    pub bytes: u64,
    /// Rows handled so far in this pass.
    pub rows: u64,
}

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ImportReport {
    /// Data rows read (header and blank lines excluded).
    pub rows: u64,
    /// Nodes that did not exist before.
    pub nodes_added: u64,
    /// Edges that did not exist before.
    pub edges_added: u64,
    /// Write transactions committed.
    pub batches: u64,
}

/// One parsed edge row.
#[derive(Debug)]
struct EdgeRow {
    line: u64,
    from: SourceRef,
    to: SourceRef,
    kind: String,
    time: Option<Timestamp>,
    valid_to: Option<Timestamp>,
    source: SourceRef,
    props: Vec<(String, Value)>,
}

/// One parsed node row.
#[derive(Debug)]
struct NodeRow {
    line: u64,
    kind: String,
    source: SourceRef,
    props: Vec<(String, Value)>,
}

const PROGRESS_EVERY: u64 = 4096;

fn file_stem(path: &Path) -> Result<String> {
    path.file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| invalid(format!("{}: cannot name a system after this file", path.display())))
}

fn at(path: &Path, line: u64, col: u64, msg: impl std::fmt::Display) -> Error {
    invalid(format!("{}:{line}:{col}: {msg}", path.display()))
}

fn at_line(path: &Path, line: u64, msg: impl std::fmt::Display) -> Error {
    invalid(format!("{}:{line}: {msg}", path.display()))
}

/// Counts bytes consumed by the reader it wraps, for progress.
struct Counting<R> {
    inner: R,
    count: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

fn open_counting(path: &Path) -> Result<(Counting<File>, std::rc::Rc<std::cell::Cell<u64>>)> {
    let file = File::open(path).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    let count = std::rc::Rc::new(std::cell::Cell::new(0));
    Ok((Counting { inner: file, count: count.clone() }, count))
}

/// Resolved column positions (0-based) of a delimited file.
struct Layout {
    header: Vec<String>,
}

impl Layout {
    fn index(&self, path: &Path, c: &Column) -> Result<usize> {
        match c {
            Column::Position(n) => Ok(n.saturating_sub(1)),
            Column::Name(name) => self
                .header
                .iter()
                .position(|h| h == name)
                .ok_or_else(|| at(path, 1, 1, format!("no column named `{name}` in the header"))),
        }
    }
}

/// Streams the rows of a TSV/CSV file, calling `row(line, fields)` for each data row.
fn for_each_delimited<T>(
    path: &Path,
    format: Format,
    (header, flexible): (bool, bool),
    phase: Phase,
    progress: &mut dyn FnMut(Progress),
    setup: impl FnOnce(&Layout) -> Result<T>,
    mut row: impl FnMut(&T, u64, &csv::StringRecord) -> Result<()>,
) -> Result<u64> {
    let (reader, bytes) = open_counting(path)?;
    let mut b = csv::ReaderBuilder::new();
    b.has_headers(header).flexible(flexible);
    if format == Format::Tsv {
        b.delimiter(b'\t').quoting(false);
    }
    let mut rdr = b.from_reader(BufReader::with_capacity(1 << 16, reader));
    let csv_err = |e: csv::Error| -> Error {
        let line = e.position().map(|p| p.line()).unwrap_or(0);
        match e.kind() {
            csv::ErrorKind::Io(_) => invalid(format!("{}: {e}", path.display())),
            csv::ErrorKind::Utf8 { err, .. } => at(path, line, err.field() as u64 + 1, "not valid UTF-8"),
            csv::ErrorKind::UnequalLengths { expected_len, len, .. } => at_line(
                path,
                line,
                format!(
                    "the row has {len} fields, the {} has {expected_len} (a flexible import accepts this)",
                    if header { "header" } else { "first row" }
                ),
            ),
            _ => at(path, line, 1, e),
        }
    };
    let layout = Layout {
        header: if header { rdr.headers().map_err(csv_err)?.iter().map(str::to_owned).collect() } else { Vec::new() },
    };
    let cols = setup(&layout)?;
    let mut rec = csv::StringRecord::new();
    let mut rows = 0u64;
    while rdr.read_record(&mut rec).map_err(csv_err)? {
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        if rec.len() == 1 && rec.get(0).is_some_and(str::is_empty) {
            continue;
        }
        row(&cols, line, &rec)?;
        rows += 1;
        if rows.is_multiple_of(PROGRESS_EVERY) {
            progress(Progress { phase, bytes: bytes.get(), rows });
        }
    }
    progress(Progress { phase, bytes: bytes.get(), rows });
    Ok(rows)
}

/// Streams the lines of a JSONL file, calling `row(line, text)` for each non-blank line.
#[cfg(feature = "jsonl")]
fn for_each_line(
    path: &Path,
    phase: Phase,
    progress: &mut dyn FnMut(Progress),
    mut row: impl FnMut(u64, &str) -> Result<()>,
) -> Result<u64> {
    let (reader, bytes) = open_counting(path)?;
    let mut r = BufReader::with_capacity(1 << 16, reader);
    let mut buf = String::new();
    let (mut line, mut rows) = (0u64, 0u64);
    loop {
        buf.clear();
        let n = r.read_line(&mut buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => at(path, line + 1, 1, "not valid UTF-8"),
            _ => invalid(format!("{}: {e}", path.display())),
        })?;
        if n == 0 {
            break;
        }
        line += 1;
        let text = buf.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        row(line, text)?;
        rows += 1;
        if rows.is_multiple_of(PROGRESS_EVERY) {
            progress(Progress { phase, bytes: bytes.get(), rows });
        }
    }
    progress(Progress { phase, bytes: bytes.get(), rows });
    Ok(rows)
}

/// Resolved edge column positions.
struct EdgeCols {
    src: usize,
    dst: usize,
    time: Option<usize>,
    id: Option<usize>,
    kind: Option<usize>,
}

fn field<'r>(path: &Path, line: u64, rec: &'r csv::StringRecord, i: usize, what: &str) -> Result<&'r str> {
    match rec.get(i) {
        Some(s) if !s.is_empty() => Ok(s),
        Some(_) => Err(at(path, line, i as u64 + 1, format!("empty {what}"))),
        None => Err(at(path, line, i as u64 + 1, format!("missing {what} column (the row has {} fields)", rec.len()))),
    }
}

fn parse_time(path: &Path, line: u64, col: u64, s: &str, unit: TimeUnit) -> Result<Timestamp> {
    let t: i64 = s.trim().parse().map_err(|_| at(path, line, col, format!("time `{s}` is not an integer")))?;
    unit.to_ms(t).ok_or_else(|| at(path, line, col, format!("time `{s}` is out of range")))
}

fn delimited_edges(
    path: &Path,
    o: &EdgeImport,
    phase: Phase,
    progress: &mut dyn FnMut(Progress),
    mut sink: impl FnMut(EdgeRow) -> Result<()>,
) -> Result<u64> {
    let stem = file_stem(path)?;
    let system = o.system.clone().unwrap_or_else(|| stem.clone());
    let src_sys = o.src_system.clone().unwrap_or_else(|| system.clone());
    let dst_sys = o.dst_system.clone().unwrap_or_else(|| system.clone());
    for_each_delimited(
        path,
        o.format,
        (o.header, o.flexible),
        phase,
        progress,
        |l| {
            Ok(EdgeCols {
                src: l.index(path, &o.src_col)?,
                dst: l.index(path, &o.dst_col)?,
                time: o.time_col.as_ref().map(|c| l.index(path, c)).transpose()?,
                id: o.id_col.as_ref().map(|c| l.index(path, c)).transpose()?,
                kind: match &o.kind {
                    KindSpec::Column(c) => Some(l.index(path, c)?),
                    KindSpec::Fixed(_) => None,
                },
            })
        },
        |cols, line, rec| {
            let from = SourceRef::new(src_sys.as_str(), field(path, line, rec, cols.src, "source")?);
            let to = SourceRef::new(dst_sys.as_str(), field(path, line, rec, cols.dst, "target")?);
            let kind = match (&o.kind, cols.kind) {
                (_, Some(i)) => field(path, line, rec, i, "kind")?.to_owned(),
                (KindSpec::Fixed(k), None) => k.clone(),
                (KindSpec::Column(_), None) => String::new(),
            };
            let time = match cols.time {
                Some(i) => Some(parse_time(path, line, i as u64 + 1, field(path, line, rec, i, "time")?, o.time_unit)?),
                None => None,
            };
            let source = match cols.id {
                Some(i) => SourceRef::new(system.as_str(), field(path, line, rec, i, "edge id")?),
                None => SourceRef::new(system.as_str(), format!("{stem}:line-{line}")),
            };
            sink(EdgeRow { line, from, to, kind, time, valid_to: None, source, props: Vec::new() })
        },
    )
}

fn delimited_nodes(
    path: &Path,
    o: &NodeImport,
    phase: Phase,
    progress: &mut dyn FnMut(Progress),
    mut sink: impl FnMut(NodeRow) -> Result<()>,
) -> Result<u64> {
    let system = match &o.system {
        Some(s) => s.clone(),
        None => file_stem(path)?,
    };
    for_each_delimited(
        path,
        o.format,
        (o.header, o.flexible),
        phase,
        progress,
        |l| {
            let kind_i = match &o.kind {
                KindSpec::Column(c) => Some(l.index(path, c)?),
                KindSpec::Fixed(_) => None,
            };
            Ok((l.index(path, &o.id_col)?, kind_i, l.header.clone()))
        },
        |(id_i, kind_i, names), line, rec| {
            let (id_i, kind_i) = (*id_i, *kind_i);
            let id = field(path, line, rec, id_i, "node id")?;
            let kind = match (&o.kind, kind_i) {
                (_, Some(i)) => field(path, line, rec, i, "kind")?.to_owned(),
                (KindSpec::Fixed(k), None) if !k.is_empty() => k.clone(),
                _ => system.clone(),
            };
            let props = rec
                .iter()
                .enumerate()
                .filter(|(i, v)| *i != id_i && Some(*i) != kind_i && !v.is_empty())
                .map(|(i, v)| (names.get(i).cloned().unwrap_or_else(|| format!("col{}", i + 1)), Value::from(v)))
                .collect();
            sink(NodeRow { line, kind, source: SourceRef::new(system.as_str(), id), props })
        },
    )
}

#[cfg(feature = "jsonl")]
mod jsonl {
    //! JSON Lines rows: parsed with serde_json, errors carry serde_json's line-relative column.

    use super::*;
    use serde_json::{Map, Value as J};

    fn parse_obj(path: &Path, line: u64, text: &str) -> Result<Map<String, J>> {
        match serde_json::from_str::<J>(text) {
            Ok(J::Object(m)) => Ok(m),
            Ok(_) => Err(at(path, line, 1, "expected a JSON object")),
            Err(e) => Err(at(path, line, e.column() as u64, e)),
        }
    }

    fn col_of(text: &str, key: &str) -> u64 {
        text.find(&format!("\"{key}\"")).map(|i| i as u64 + 1).unwrap_or(1)
    }

    fn str_field<'m>(path: &Path, line: u64, text: &str, m: &'m Map<String, J>, key: &str) -> Result<&'m str> {
        match m.get(key) {
            Some(J::String(s)) if !s.is_empty() => Ok(s),
            Some(_) => Err(at(path, line, col_of(text, key), format!("`{key}` must be a non-empty string"))),
            None => Err(at(path, line, 1, format!("missing `{key}`"))),
        }
    }

    fn source_field(path: &Path, line: u64, text: &str, m: &Map<String, J>, key: &str) -> Result<Option<SourceRef>> {
        let bad = |msg: &str| at(path, line, col_of(text, key), format!("`{key}` {msg}"));
        match m.get(key) {
            None | Some(J::Null) => Ok(None),
            Some(J::String(s)) => parse_node_ref(s).map(Some).map_err(|_| bad("must be \"system:id\"")),
            Some(J::Object(o)) => match (o.get("system"), o.get("id")) {
                (Some(J::String(s)), Some(J::String(i))) if !s.is_empty() && !i.is_empty() => {
                    Ok(Some(SourceRef::new(s.as_str(), i.as_str())))
                }
                _ => Err(bad("must have non-empty string fields `system` and `id`")),
            },
            Some(_) => Err(bad("must be \"system:id\" or {\"system\":..,\"id\":..}")),
        }
    }

    fn time_field(
        path: &Path,
        line: u64,
        text: &str,
        m: &Map<String, J>,
        key: &str,
        unit: TimeUnit,
    ) -> Result<Option<Timestamp>> {
        match m.get(key) {
            None | Some(J::Null) => Ok(None),
            Some(J::Number(n)) => match n.as_i64().and_then(|t| unit.to_ms(t)) {
                Some(t) => Ok(Some(t)),
                None => Err(at(path, line, col_of(text, key), format!("`{key}` must be an integer time in range"))),
            },
            Some(_) => Err(at(path, line, col_of(text, key), format!("`{key}` must be an integer"))),
        }
    }

    fn props_field(path: &Path, line: u64, text: &str, m: &Map<String, J>) -> Result<Vec<(String, Value)>> {
        let Some(p) = m.get("props") else { return Ok(Vec::new()) };
        let J::Object(p) = p else { return Err(at(path, line, col_of(text, "props"), "`props` must be an object")) };
        p.iter()
            .map(|(k, v)| {
                let v = match v {
                    J::Null => Value::Null,
                    J::Bool(b) => Value::Bool(*b),
                    J::String(s) => Value::Str(s.clone()),
                    J::Number(n) => match (n.as_i64(), n.as_f64()) {
                        (Some(i), _) => Value::I64(i),
                        (None, Some(f)) => Value::F64(f),
                        (None, None) => {
                            return Err(at(path, line, col_of(text, k), format!("property `{k}` is out of range")))
                        }
                    },
                    _ => return Err(at(path, line, col_of(text, k), format!("property `{k}` must be a scalar"))),
                };
                Ok((k.clone(), v))
            })
            .collect()
    }

    pub(super) fn edges(
        path: &Path,
        o: &EdgeImport,
        phase: Phase,
        progress: &mut dyn FnMut(Progress),
        mut sink: impl FnMut(EdgeRow) -> Result<()>,
    ) -> Result<u64> {
        let stem = file_stem(path)?;
        let system = o.system.clone().unwrap_or_else(|| stem.clone());
        let default_kind = match &o.kind {
            KindSpec::Fixed(k) => k.clone(),
            KindSpec::Column(_) => "edge".to_owned(),
        };
        for_each_line(path, phase, progress, |line, text| {
            let m = parse_obj(path, line, text)?;
            let need = |key: &str| -> Result<SourceRef> {
                source_field(path, line, text, &m, key)?.ok_or_else(|| at(path, line, 1, format!("missing `{key}`")))
            };
            let (from, to) = (need("from")?, need("to")?);
            let kind = match m.get("kind") {
                None => default_kind.clone(),
                Some(_) => str_field(path, line, text, &m, "kind")?.to_owned(),
            };
            let source = source_field(path, line, text, &m, "source")?
                .unwrap_or_else(|| SourceRef::new(system.as_str(), format!("{stem}:line-{line}")));
            sink(EdgeRow {
                line,
                from,
                to,
                kind,
                time: time_field(path, line, text, &m, "time", o.time_unit)?,
                valid_to: time_field(path, line, text, &m, "valid_to", o.time_unit)?,
                source,
                props: props_field(path, line, text, &m)?,
            })
        })
    }

    pub(super) fn nodes(
        path: &Path,
        phase: Phase,
        progress: &mut dyn FnMut(Progress),
        mut sink: impl FnMut(NodeRow) -> Result<()>,
    ) -> Result<u64> {
        for_each_line(path, phase, progress, |line, text| {
            let m = parse_obj(path, line, text)?;
            let source =
                source_field(path, line, text, &m, "source")?.ok_or_else(|| at(path, line, 1, "missing `source`"))?;
            let kind = str_field(path, line, text, &m, "kind")?.to_owned();
            sink(NodeRow { line, kind, source, props: props_field(path, line, text, &m)? })
        })
    }
}

#[cfg(not(feature = "jsonl"))]
mod jsonl {
    //! Without the `jsonl` feature, JSON Lines input is refused.

    use super::*;

    fn refuse(path: &Path) -> Error {
        invalid(format!("{}: JSON Lines input needs silograph-import's `jsonl` feature", path.display()))
    }

    pub(super) fn edges(
        path: &Path,
        _: &EdgeImport,
        _: Phase,
        _: &mut dyn FnMut(Progress),
        _: impl FnMut(EdgeRow) -> Result<()>,
    ) -> Result<u64> {
        Err(refuse(path))
    }

    pub(super) fn nodes(
        path: &Path,
        _: Phase,
        _: &mut dyn FnMut(Progress),
        _: impl FnMut(NodeRow) -> Result<()>,
    ) -> Result<u64> {
        Err(refuse(path))
    }
}

fn read_edges(
    path: &Path,
    o: &EdgeImport,
    phase: Phase,
    progress: &mut dyn FnMut(Progress),
    sink: impl FnMut(EdgeRow) -> Result<()>,
) -> Result<u64> {
    match o.format {
        Format::Tsv | Format::Csv => delimited_edges(path, o, phase, progress, sink),
        Format::Jsonl => jsonl::edges(path, o, phase, progress, sink),
    }
}

fn read_nodes(
    path: &Path,
    o: &NodeImport,
    phase: Phase,
    progress: &mut dyn FnMut(Progress),
    sink: impl FnMut(NodeRow) -> Result<()>,
) -> Result<u64> {
    match o.format {
        Format::Tsv | Format::Csv => delimited_nodes(path, o, phase, progress, sink),
        Format::Jsonl => jsonl::nodes(path, phase, progress, sink),
    }
}

/// What a parsed row needs to be written: the line it came from, for errors.
trait Row {
    fn line(&self) -> u64;
}

impl Row for EdgeRow {
    fn line(&self) -> u64 {
        self.line
    }
}

impl Row for NodeRow {
    fn line(&self) -> u64 {
        self.line
    }
}

/// Writes rows in batches of `batch` rows, one write transaction per batch. In the check pass a
/// full batch is dropped instead of committed; only a file that never fills a batch is committed
/// by the check pass.
struct Batcher<'o> {
    org: &'o Org,
    txn: Option<WriteTxn>,
    in_batch: usize,
    batch: usize,
    batches: u64,
    check: bool,
    /// The check pass dropped a full batch: the file needs the write pass.
    spilled: bool,
}

impl<'o> Batcher<'o> {
    fn new(org: &'o Org, batch: usize, check: bool) -> Self {
        Batcher { org, txn: None, in_batch: 0, batch, batches: 0, check, spilled: false }
    }

    fn txn(&mut self) -> Result<&mut WriteTxn> {
        match &mut self.txn {
            Some(t) => Ok(t),
            empty => Ok(empty.insert(self.org.write()?)),
        }
    }

    fn row_done(&mut self) -> Result<()> {
        self.in_batch += 1;
        if self.in_batch >= self.batch {
            if self.check {
                // Dropping the transaction aborts it: the rows were checked, nothing is written.
                self.txn = None;
                self.in_batch = 0;
                self.spilled = true;
            } else {
                self.commit()?;
            }
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        if let Some(t) = self.txn.take() {
            t.commit()?;
            self.batches += 1;
        }
        self.in_batch = 0;
        Ok(())
    }
}

/// Reads the file with `read` (once per pass) and applies each row with `apply`: the check pass
/// in dropped write transactions, then, if the file did not fit in one batch, the write pass.
fn import_batched<R: Row>(
    org: &Org,
    path: &Path,
    batch: usize,
    progress: &mut dyn FnMut(Progress),
    mut read: impl FnMut(Phase, &mut dyn FnMut(Progress), &mut dyn FnMut(R) -> Result<()>) -> Result<u64>,
    apply: impl Fn(&mut WriteTxn, R) -> Result<()>,
) -> Result<ImportReport> {
    let (n0, e0) = org.counts()?;
    let mut rows = 0;
    let mut batches = 0;
    for phase in [Phase::Check, Phase::Write] {
        let mut b = Batcher::new(org, batch, phase == Phase::Check);
        rows = read(phase, progress, &mut |r: R| {
            let line = r.line();
            apply(b.txn()?, r).map_err(|e| row_error(path, line, e))?;
            b.row_done()
        })?;
        if b.check && b.spilled {
            continue;
        }
        b.commit()?;
        batches = b.batches;
        break;
    }
    let (n1, e1) = org.counts()?;
    Ok(ImportReport { rows, nodes_added: n1.saturating_sub(n0), edges_added: e1.saturating_sub(e0), batches })
}

/// The node known by `s`, created with kind `s.system` if missing (an existing node keeps its
/// kind: an edge file does not say what its endpoints are).
fn endpoint(w: &mut WriteTxn, s: &SourceRef) -> Result<NodeId> {
    match w.lookup(&s.system, &s.external_id)? {
        Some(id) => Ok(id),
        None => Ok(w.upsert_node(NodeInput::new(s.system.as_str()).source(s.system.as_str(), s.external_id.as_str()))?),
    }
}

/// A row the store refused, named by its file and line (the store's message says what is wrong).
fn row_error(path: &Path, line: u64, e: Error) -> Error {
    match e {
        Error::Store(silograph::Error::InvalidInput(msg)) => at_line(path, line, msg),
        other => other,
    }
}

fn write_edge(w: &mut WriteTxn, r: EdgeRow) -> Result<()> {
    let from = endpoint(w, &r.from)?;
    let to = endpoint(w, &r.to)?;
    let mut e = EdgeInput::new(from, to, r.kind).source(r.source.system, r.source.external_id);
    if let Some(t) = r.time {
        e = e.valid_from(t);
    }
    if let Some(t) = r.valid_to {
        e = e.valid_to(t);
    }
    for (k, v) in r.props {
        e = e.prop(k, v);
    }
    w.add_edge(e)?;
    Ok(())
}

fn write_node(w: &mut WriteTxn, r: NodeRow) -> Result<()> {
    let mut n = NodeInput::new(r.kind).source(r.source.system, r.source.external_id);
    for (k, v) in r.props {
        n = n.prop(k, v);
    }
    w.upsert_node(n)?;
    Ok(())
}

/// Imports an edge file into `org`; see the [crate docs](crate) for identity, atomicity and
/// memory. `progress` is called during both passes.
pub fn import_edges(
    org: &Org,
    path: impl AsRef<Path>,
    opts: &EdgeImport,
    progress: &mut dyn FnMut(Progress),
) -> Result<ImportReport> {
    let path = path.as_ref();
    import_batched(
        org,
        path,
        opts.batch_size,
        progress,
        |phase, progress, sink| read_edges(path, opts, phase, progress, sink),
        write_edge,
    )
}

/// Imports an edge file into an org that has no edges yet through the bulk loader
/// ([`Org::bulk_load`]): one write transaction for the whole file, adjacency pages packed in
/// memory and written once — several times faster than [`import_edges`], for a first load.
///
/// The price: bulk edges carry no source reference, so this import is *not* idempotent. It
/// therefore refuses an org that already has edges (so running it twice is an error, not a
/// duplicate graph), and refuses rows with properties (the bulk loader stores none). Nodes are
/// still upserted by `(system, id)`. Memory: the loader flushes edges past `memory_budget`
/// bytes; node records stay in memory until the commit. The check pass only parses: a row the
/// store refuses fails the one transaction, so nothing is committed either.
pub fn import_edges_bulk(
    org: &Org,
    path: impl AsRef<Path>,
    opts: &EdgeImport,
    memory_budget: usize,
    progress: &mut dyn FnMut(Progress),
) -> Result<ImportReport> {
    let path = path.as_ref();
    read_edges(path, opts, Phase::Check, progress, |r| {
        if r.props.is_empty() {
            Ok(())
        } else {
            Err(at_line(path, r.line, "a bulk import stores no edge properties: use the ordinary import"))
        }
    })?;
    let (n0, e0) = org.counts()?;
    if e0 > 0 {
        return Err(invalid(format!(
            "org `{}` already has {e0} edges: a bulk import is for a first load (it is not idempotent); \
             use the ordinary import",
            org.name()
        )));
    }
    let mut bulk = org.bulk_load()?.memory_budget(memory_budget);
    let rows = read_edges(path, opts, Phase::Write, progress, |r| {
        let line = r.line;
        let mut add = || -> Result<()> {
            let mut end = |s: &SourceRef| -> Result<NodeId> {
                match bulk.lookup(&s.system, &s.external_id)? {
                    Some(id) => Ok(id),
                    None => Ok(bulk.add_node(
                        NodeInput::new(s.system.as_str()).source(s.system.as_str(), s.external_id.as_str()),
                    )?),
                }
            };
            let (from, to) = (end(&r.from)?, end(&r.to)?);
            Ok(bulk.add_edge_valid(from, to, &r.kind, r.time, r.valid_to)?)
        };
        add().map_err(|e| row_error(path, line, e))
    })?;
    bulk.finish()?;
    let (n1, e1) = org.counts()?;
    Ok(ImportReport { rows, nodes_added: n1.saturating_sub(n0), edges_added: e1.saturating_sub(e0), batches: 1 })
}

/// Imports a node file into `org` (upsert by `(system, id)`); same passes and batching as
/// [`import_edges`].
pub fn import_nodes(
    org: &Org,
    path: impl AsRef<Path>,
    opts: &NodeImport,
    progress: &mut dyn FnMut(Progress),
) -> Result<ImportReport> {
    let path = path.as_ref();
    import_batched(
        org,
        path,
        opts.batch_size,
        progress,
        |phase, progress, sink| read_nodes(path, opts, phase, progress, sink),
        write_node,
    )
}

/// Parses a time given by a person: an integer is milliseconds since the Unix epoch,
/// `YYYY-MM-DD` is that day's midnight UTC.
///
/// ```
/// use silograph_import::parse_timestamp;
/// assert_eq!(parse_timestamp("2004-04-15").unwrap(), 1_081_987_200_000);
/// assert_eq!(parse_timestamp("1082040961000").unwrap(), 1_082_040_961_000);
/// assert!(parse_timestamp("2004-02-30").is_err());
/// ```
pub fn parse_timestamp(s: &str) -> Result<Timestamp> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let bad = || invalid(format!("`{s}` is neither milliseconds since the epoch nor a YYYY-MM-DD date"));
    let mut parts = s.splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else { return Err(bad()) };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let (y, m, d): (i64, i64, i64) =
        (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?, d.parse().map_err(|_| bad())?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_len = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if !(1..=month_len).contains(&d) {
        return Err(bad());
    }
    Ok(days_from_civil(y, m, d) * 86_400_000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use silograph::{Compartment, Db, Direction, RootKey, MAX_EXTERNAL_ID_LEN};

    fn org(dir: &Path) -> Org {
        let db = Db::open(dir.join("t.silo"), RootKey::from_bytes([4; 32])).unwrap();
        db.create_org("o").unwrap()
    }

    fn import(org: &Org, path: &Path, o: &EdgeImport) -> Result<ImportReport> {
        import_edges(org, path, o, &mut |_| {})
    }

    #[test]
    fn appending_rows_to_a_file_adds_only_the_new_rows() {
        let dir = tempfile::tempdir().unwrap();
        let org = org(dir.path());
        let f = dir.path().join("log.tsv");
        std::fs::write(&f, "a\tb\n1\t2\n2\t3\n").unwrap();
        let o = EdgeImport::new(Format::Tsv);
        assert_eq!(import(&org, &f, &o).unwrap().edges_added, 2);
        std::fs::write(&f, "a\tb\n1\t2\n2\t3\n3\t4\n1\t2\n").unwrap();
        let r = import(&org, &f, &o).unwrap();
        assert_eq!((r.rows, r.edges_added, r.nodes_added), (4, 2, 1), "a repeated pair on a new line is a new edge");
    }

    #[test]
    fn an_id_column_keeps_a_reordered_file_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let org = org(dir.path());
        let f = dir.path().join("events.csv");
        std::fs::write(&f, "id,from,to\ne1,a,b\ne2,b,c\n").unwrap();
        let o = EdgeImport::new(Format::Csv).id_col("id").src_col("from").dst_col("to");
        assert_eq!(import(&org, &f, &o).unwrap().edges_added, 2);
        std::fs::write(&f, "id,from,to\ne2,b,c\ne1,a,b\n").unwrap();
        assert_eq!(import(&org, &f, &o).unwrap().edges_added, 0);
    }

    #[test]
    fn csv_quoted_fields_keep_their_commas() {
        let dir = tempfile::tempdir().unwrap();
        let org = org(dir.path());
        let f = dir.path().join("people.csv");
        std::fs::write(&f, "src,dst,kind\n\"Doe, Jane\",\"Roe, Rick\",knows\n").unwrap();
        let o = EdgeImport::new(Format::Csv).system("name").kind_col("kind");
        import(&org, &f, &o).unwrap();
        let r = org.read().unwrap();
        let jane = r.lookup("name", "Doe, Jane").unwrap().unwrap();
        let out: Vec<_> = r.neighbors(jane, Direction::Out).unwrap().collect::<silograph::Result<_>>().unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(r.kind_name(out[0].kind).unwrap().as_deref(), Some("knows"));
        assert_eq!(Some(out[0].node), r.lookup("name", "Roe, Rick").unwrap());
    }

    #[test]
    fn a_missing_field_of_a_flexible_import_is_named_by_line_and_column_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let org = org(dir.path());
        let f = dir.path().join("short.tsv");
        std::fs::write(&f, "1\t2\n2\t3\n3\n").unwrap();
        let o = EdgeImport::new(Format::Tsv).header(false).batch_size(1).flexible(true);
        let err = import(&org, &f, &o).unwrap_err().to_string();
        assert!(err.contains("short.tsv:3:2"), "{err}");
        assert_eq!(org.counts().unwrap(), (0, 0));
    }

    #[test]
    fn a_row_longer_than_the_header_is_refused_with_file_line_and_field_count() {
        let dir = tempfile::tempdir().unwrap();
        let org = org(dir.path());
        let f = dir.path().join("wide.tsv");
        std::fs::write(&f, "src\tdst\tts\n1\t2\t3\n4\t5\t6\t7\t8\t9\n").unwrap();
        let err = import(&org, &f, &EdgeImport::new(Format::Tsv).batch_size(1)).unwrap_err().to_string();
        assert!(err.contains("wide.tsv:3:") && err.contains("6 fields") && err.contains("header has 3"), "{err}");
        assert_eq!(org.counts().unwrap(), (0, 0));
    }

    #[test]
    fn a_row_shorter_than_the_first_row_is_refused_without_a_header() {
        let dir = tempfile::tempdir().unwrap();
        let org = org(dir.path());
        let f = dir.path().join("short.csv");
        std::fs::write(&f, "1,2,x\n2,3\n").unwrap();
        let err = import(&org, &f, &EdgeImport::new(Format::Csv).header(false)).unwrap_err().to_string();
        assert!(err.contains("short.csv:2:") && err.contains("2 fields") && err.contains("first row has 3"), "{err}");
        assert_eq!(org.counts().unwrap(), (0, 0));
    }

    #[test]
    fn a_flexible_import_accepts_rows_of_other_lengths() {
        let dir = tempfile::tempdir().unwrap();
        let org = org(dir.path());
        let f = dir.path().join("ragged.tsv");
        std::fs::write(&f, "src\tdst\tts\n1\t2\n2\t3\t4\t5\n").unwrap();
        let r = import(&org, &f, &EdgeImport::new(Format::Tsv).flexible(true)).unwrap();
        assert_eq!((r.rows, r.edges_added), (2, 2));
        let n = dir.path().join("ragged-nodes.tsv");
        std::fs::write(&n, "id\ttitle\nalice\nbob\tCTO\textra\n").unwrap();
        assert!(import_nodes(&org, &n, &NodeImport::new(Format::Tsv), &mut |_| {}).is_err());
        let r = import_nodes(&org, &n, &NodeImport::new(Format::Tsv).flexible(true), &mut |_| {}).unwrap();
        assert_eq!(r.nodes_added, 2);
    }

    #[test]
    fn a_row_the_store_refuses_is_named_by_file_and_line_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let org = org(dir.path());
        let f = dir.path().join("people.tsv");
        // The third column's header is one byte longer than a property name may be: the store's
        // own validation refuses it on the first row that has a value in that column.
        let long = "p".repeat(silograph::MAX_NAME_LEN + 1);
        std::fs::write(&f, format!("id\ttitle\t{long}\nalice\tCTO\t\nbob\tCFO\tx\n")).unwrap();
        let o = NodeImport::new(Format::Tsv).batch_size(1);
        let err = import_nodes(&org, &f, &o, &mut |_| {}).unwrap_err();
        assert!(matches!(err, Error::Input(_)), "{err:?}");
        let err = err.to_string();
        assert!(err.contains("people.tsv:3: ") && err.contains("property name"), "{err}");
        assert_eq!(org.counts().unwrap(), (0, 0));
    }

    #[test]
    fn a_file_that_fits_in_one_batch_is_committed_by_the_check_pass() {
        let dir = tempfile::tempdir().unwrap();
        let org = org(dir.path());
        let f = dir.path().join("small.tsv");
        std::fs::write(&f, "a\tb\n1\t2\n2\t3\n").unwrap();
        let mut phases = Vec::new();
        let r = import_edges(&org, &f, &EdgeImport::new(Format::Tsv), &mut |p| phases.push(p.phase)).unwrap();
        assert_eq!((r.edges_added, r.batches), (2, 1));
        assert!(!phases.contains(&Phase::Write), "one pass: {phases:?}");
        let mut phases = Vec::new();
        let o = EdgeImport::new(Format::Tsv).batch_size(1);
        std::fs::write(&f, "a\tb\n1\t2\n2\t3\n3\t4\n").unwrap();
        let r = import_edges(&org, &f, &o, &mut |p| phases.push(p.phase)).unwrap();
        assert_eq!((r.edges_added, r.batches), (1, 3));
        assert!(phases.contains(&Phase::Check) && phases.contains(&Phase::Write), "{phases:?}");
    }

    #[test]
    fn an_unknown_header_name_is_refused_before_any_write() {
        let dir = tempfile::tempdir().unwrap();
        let org = org(dir.path());
        let f = dir.path().join("x.tsv");
        std::fs::write(&f, "src\tdst\n1\t2\n").unwrap();
        let err = import(&org, &f, &EdgeImport::new(Format::Tsv).time_col("when")).unwrap_err().to_string();
        assert!(err.contains("x.tsv:1:1") && err.contains("`when`"), "{err}");
        assert_eq!(org.counts().unwrap(), (0, 0));
    }

    #[test]
    fn an_overlong_id_is_caught_in_the_check_pass_not_halfway_through_the_writes() {
        let dir = tempfile::tempdir().unwrap();
        let org = org(dir.path());
        let f = dir.path().join("long.tsv");
        let long = "x".repeat(MAX_EXTERNAL_ID_LEN + 1);
        std::fs::write(&f, format!("a\tb\n1\t2\n2\t{long}\n")).unwrap();
        let err = import(&org, &f, &EdgeImport::new(Format::Tsv).batch_size(1)).unwrap_err().to_string();
        assert!(err.contains("long.tsv:3:"), "{err}");
        assert_eq!(org.counts().unwrap(), (0, 0));
    }

    #[test]
    fn batches_commit_separately_and_a_rerun_completes_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let org = org(dir.path());
        let f = dir.path().join("b.tsv");
        std::fs::write(&f, "a\tb\n1\t2\n2\t3\n3\t4\n4\t5\n5\t6\n").unwrap();
        let o = EdgeImport::new(Format::Tsv).batch_size(2);
        assert_eq!(import(&org, &f, &o).unwrap().batches, 3);
        let again = import(&org, &f, &o).unwrap();
        assert_eq!((again.edges_added, again.nodes_added), (0, 0));
        assert_eq!(org.counts().unwrap(), (6, 5));
    }

    #[test]
    fn node_files_set_kind_and_raw_properties_by_header_name() {
        let dir = tempfile::tempdir().unwrap();
        let org = org(dir.path());
        let f = dir.path().join("people.tsv");
        std::fs::write(&f, "email\ttitle\nalice@x\tCTO\n").unwrap();
        let r =
            import_nodes(&org, &f, &NodeImport::new(Format::Tsv).system("mail").kind("person"), &mut |_| {}).unwrap();
        assert_eq!(r.nodes_added, 1);
        let t = org.read().unwrap();
        let id = t.lookup("mail", "alice@x").unwrap().unwrap();
        assert_eq!(t.node(id).unwrap().unwrap().kind, "person");
        assert_eq!(t.node_props(id, Compartment::Raw).unwrap(), vec![("title".to_owned(), Value::from("CTO"))]);
    }

    #[test]
    fn dates_parse_to_utc_midnight_and_impossible_dates_are_refused() {
        assert_eq!(parse_timestamp("1970-01-01").unwrap(), 0);
        assert_eq!(parse_timestamp("2000-03-01").unwrap() - parse_timestamp("2000-02-28").unwrap(), 2 * 86_400_000);
        assert_eq!(parse_timestamp("1969-12-31").unwrap(), -86_400_000);
        for bad in ["2001-02-29", "2004-13-01", "2004-00-10", "04-01-01", "soon", ""] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn columns_are_one_based_positions_or_header_names() {
        assert_eq!("3".parse::<Column>().unwrap(), Column::Position(3));
        assert_eq!("ts".parse::<Column>().unwrap(), Column::Name("ts".into()));
        assert!("0".parse::<Column>().is_err());
        assert_eq!(Format::from_path(Path::new("x.CSV")), Format::Csv);
        assert_eq!(Format::from_path(Path::new("x.ndjson")), Format::Jsonl);
        assert_eq!(Format::from_path(Path::new("x.txt")), Format::Tsv);
    }
}
