//! `silograph`: the command-line tool (feature `cli`).
//!
//! ```text
//! silograph --db FILE (--root-key-file F | --root-key-env VAR) <command>
//! ```
//!
//! The root key is read from a file or an environment variable (64 hex digits), never from the
//! command line, where it would end up in shell history and `ps` output.
//!
//! Exit codes: 0 ok; 1 integrity or verification failure (and storage/I/O failures); 2 usage
//! (bad arguments, a malformed input file, an unknown organization); 3 wrong key.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value as Json};
use silograph::import::{self, Column, EdgeImport, Format, ImportReport, NodeImport, Phase, TimeUnit};
use silograph::{Db, Direction, Error, NeighborFilter, NodeId, Org, PathOptions, ReadTxn, RootKey};

/// An embedded, encrypted, multi-tenant context-graph store.
#[derive(Debug, Parser)]
#[command(name = "silograph", version, about, long_about = None)]
struct Cli {
    /// The database file.
    #[arg(long, value_name = "FILE")]
    db: PathBuf,
    #[command(flatten)]
    key: KeyArgs,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// Where the root key comes from (64 hex digits). Never from the command line itself.
#[derive(Debug, Args)]
#[group(multiple = false)]
struct KeyArgs {
    /// A file holding the root key as 64 hex digits.
    #[arg(long, value_name = "F")]
    root_key_file: Option<PathBuf>,
    /// An environment variable holding the root key as 64 hex digits.
    #[arg(long, value_name = "VAR")]
    root_key_env: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new database file.
    Init {
        /// Write a fresh random root key to this file (mode 0600) if it does not exist, and use it.
        #[arg(long, value_name = "F")]
        generate_key_file: Option<PathBuf>,
    },
    /// Manage organizations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Import nodes and edges from TSV, CSV or JSONL files (idempotent).
    Import(ImportArgs),
    /// List a node's neighbors.
    Neighbors {
        /// The organization.
        org: String,
        /// The node, as system:external_id.
        node: String,
        /// Which edges to follow.
        #[arg(long, value_enum, default_value_t = Dir::Out)]
        direction: Dir,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Nodes within K hops of a node, with their depth.
    Khop {
        /// The organization.
        org: String,
        /// The start node, as system:external_id.
        node: String,
        /// Maximum number of hops.
        #[arg(long)]
        depth: u32,
        /// Which edges to follow.
        #[arg(long, value_enum, default_value_t = Dir::Out)]
        direction: Dir,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// A shortest path between two nodes.
    Path {
        /// The organization.
        org: String,
        /// The start node, as system:external_id.
        from: String,
        /// The end node, as system:external_id.
        to: String,
        /// Which edges to follow from the start towards the end.
        #[arg(long, value_enum, default_value_t = Dir::Out)]
        direction: Dir,
        /// Longest path to look for, in edges.
        #[arg(long)]
        max_depth: Option<u32>,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Node and edge counts of an organization.
    Stats {
        /// The organization.
        org: String,
    },
    /// The organization's audit trail.
    Audit {
        /// The organization.
        org: String,
        #[command(subcommand)]
        action: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
enum OrgCommand {
    /// Create an organization (with a managed, randomly generated key).
    Create {
        /// Its name.
        name: String,
    },
    /// List the organizations.
    List,
    /// Delete an organization by crypto-shredding its keys, then purge its records.
    Delete {
        /// Its name.
        name: String,
    },
    /// Rotate an organization's data keys (re-seals every record under a fresh seed).
    Rotate {
        /// Its name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the organization's audit hash chain end to end.
    Verify,
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// The organization to import into.
    org: String,
    /// The edge file.
    #[arg(long, value_name = "F")]
    edges: Option<PathBuf>,
    /// The node file (imported before the edges).
    #[arg(long, value_name = "F")]
    nodes: Option<PathBuf>,
    /// Input format (default: from the file extension; .csv, .jsonl, otherwise tsv).
    #[arg(long, value_enum)]
    format: Option<Fmt>,
    /// The files have no header line (TSV/CSV).
    #[arg(long)]
    no_header: bool,
    /// Source column (1-based position or header name).
    #[arg(long, default_value = "1")]
    src_col: String,
    /// Target column (1-based position or header name).
    #[arg(long, default_value = "2")]
    dst_col: String,
    /// Valid-from time column.
    #[arg(long)]
    time_col: Option<String>,
    /// Column holding each edge's kind.
    #[arg(long, conflicts_with = "kind")]
    kind_col: Option<String>,
    /// Kind of every edge (default "edge").
    #[arg(long)]
    kind: Option<String>,
    /// Column holding each edge's own id (its identity on re-import; default: file:line).
    #[arg(long)]
    id_col: Option<String>,
    /// System of the nodes' external ids (default: the file's stem).
    #[arg(long)]
    system: Option<String>,
    /// System of the source endpoints (overrides --system).
    #[arg(long)]
    src_system: Option<String>,
    /// System of the target endpoints (overrides --system).
    #[arg(long)]
    dst_system: Option<String>,
    /// Unit of the time column.
    #[arg(long, value_enum, default_value_t = Unit::S)]
    time_unit: Unit,
    /// Column holding each node's id in the node file.
    #[arg(long, default_value = "1")]
    node_id_col: String,
    /// Kind of every node in the node file (default: its system).
    #[arg(long)]
    node_kind: Option<String>,
    /// Rows per write transaction.
    #[arg(long, default_value_t = 50_000)]
    batch_size: usize,
}

#[derive(Debug, Args)]
struct FilterArgs {
    /// Follow only edges of this kind (repeatable).
    #[arg(long)]
    kind: Vec<String>,
    /// Follow only edges valid at this time (milliseconds since the epoch, or YYYY-MM-DD).
    #[arg(long, value_name = "T")]
    valid_at: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Dir {
    Out,
    In,
    Both,
}

impl From<Dir> for Direction {
    fn from(d: Dir) -> Direction {
        match d {
            Dir::Out => Direction::Out,
            Dir::In => Direction::In,
            Dir::Both => Direction::Both,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Fmt {
    Tsv,
    Csv,
    Jsonl,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Unit {
    S,
    Ms,
}

/// Why the command failed, mapped to the exit code.
#[derive(Debug)]
enum Failure {
    /// The store said no.
    Store(Error),
    /// Verification found problems (already reported).
    Integrity(String),
    /// A usage problem clap cannot see (e.g. no key given).
    Usage(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Store(e)
    }
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Store(Error::WrongKey) => 3,
            Failure::Store(Error::InvalidInput(_) | Error::OrgNotFound(_) | Error::OrgExists(_) | Error::Denied(_))
            | Failure::Usage(_) => 2,
            Failure::Store(_) | Failure::Integrity(_) => 1,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Store(e) => write!(f, "{e}"),
            Failure::Integrity(m) | Failure::Usage(m) => f.write_str(m),
        }
    }
}

type Outcome<T = ()> = std::result::Result<T, Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("silograph: error: {f}");
            ExitCode::from(f.exit_code())
        }
    }
}

fn run(cli: Cli) -> Outcome {
    let json = cli.json;
    if let Command::Init { generate_key_file } = &cli.command {
        return init(&cli, generate_key_file.as_deref());
    }
    if !cli.db.exists() {
        return Err(Failure::Usage(format!("no database at {} (create one with `init`)", cli.db.display())));
    }
    let db = Db::open(&cli.db, root_key(&cli.key)?)?;
    match cli.command {
        Command::Init { .. } => Ok(()),
        Command::Org(OrgCommand::Create { name }) => {
            db.create_org(&name)?;
            emit(json, json!({ "created": name }), || format!("created organization {name}"))
        }
        Command::Org(OrgCommand::List) => {
            let names = db.list_orgs()?;
            emit(json, json!(names), || names.join("\n"))
        }
        Command::Org(OrgCommand::Delete { name }) => {
            let report = with_spinner(format!("deleting {name}"), || db.delete_org(&name))?;
            emit(json, json!({ "deleted": name, "purged": report.purged }), || {
                format!("deleted organization {name}: keys shredded, {} records purged", report.purged)
            })
        }
        Command::Org(OrgCommand::Rotate { name }) => {
            let r = with_spinner(format!("rotating {name}"), || db.rotate_org_key(&name))?;
            emit(
                json,
                json!({ "org": name, "epoch": r.epoch, "resealed": r.resealed, "batches": r.batches, "resumed": r.resumed }),
                || {
                    let resumed = if r.resumed { " (finished an interrupted rotation)" } else { "" };
                    format!(
                        "rotated {name} to key epoch {}: {} records re-sealed in {} batches{resumed}",
                        r.epoch, r.resealed, r.batches
                    )
                },
            )
        }
        Command::Audit { org, action: AuditCommand::Verify } => {
            let report = db.audit(&org)?.verify()?;
            emit(
                json,
                json!({ "org": org, "ok": report.is_ok(), "valid_entries": report.valid_entries,
                        "first_bad": report.first_bad, "reason": report.reason }),
                || match (&report.first_bad, &report.reason) {
                    (None, _) => format!("audit chain of {org}: ok, {} entries verified", report.valid_entries),
                    (Some(seq), why) => format!(
                        "audit chain of {org}: BROKEN at entry {seq} ({}); {} entries verified before it",
                        why.as_deref().unwrap_or("no reason given"),
                        report.valid_entries
                    ),
                },
            )?;
            match report.first_bad {
                None => Ok(()),
                Some(seq) => Err(Failure::Integrity(format!("audit chain of {org} is broken at entry {seq}"))),
            }
        }
        Command::Import(args) => import_cmd(&db, &args, json),
        Command::Neighbors { org, node, direction, filter } => {
            let r = db.org(&org)?.read()?;
            let id = resolve(&r, &node)?;
            neighbors_cmd(&r, id, direction.into(), &filter, json)
        }
        Command::Khop { org, node, depth, direction, filter } => {
            let r = db.org(&org)?.read()?;
            let id = resolve(&r, &node)?;
            let mut t = r.traverse(id).max_depth(depth).direction(direction.into());
            if !filter.kind.is_empty() {
                t = t.kinds(&filter.kind);
            }
            if let Some(at) = valid_at(&filter)? {
                t = t.valid_at(at);
            }
            let hits = t.run()?;
            let rows = hits
                .iter()
                .map(|(n, d)| Ok(json!({ "node": node_name(&r, *n)?, "id": n.0, "depth": d })))
                .collect::<Outcome<Vec<Json>>>()?;
            emit(json, Json::Array(rows.clone()), || {
                rows.iter().map(|v| format!("{}\t{}", v["depth"], text(&v["node"]))).collect::<Vec<_>>().join("\n")
            })
        }
        Command::Path { org, from, to, direction, max_depth, filter } => {
            let r = db.org(&org)?.read()?;
            let (a, b) = (resolve(&r, &from)?, resolve(&r, &to)?);
            let mut opts = PathOptions::new().direction(direction.into());
            if let Some(k) = max_depth {
                opts = opts.max_depth(k);
            }
            if !filter.kind.is_empty() {
                opts = opts.kinds(&filter.kind);
            }
            if let Some(at) = valid_at(&filter)? {
                opts = opts.valid_at(at);
            }
            match r.shortest_path(a, b, &opts)? {
                None => emit(json, Json::Null, || format!("no path from {from} to {to}")),
                Some(p) => {
                    let names = p.nodes.iter().map(|n| node_name(&r, *n)).collect::<Outcome<Vec<_>>>()?;
                    let edges = p.edges.iter().map(|e| e.0).collect::<Vec<_>>();
                    emit(json, json!({ "length": p.edges.len(), "nodes": names, "edges": edges }), || {
                        names.join(" -> ")
                    })
                }
            }
        }
        Command::Stats { org } => {
            let o = db.org(&org)?;
            let (nodes, edges) = o.counts()?;
            emit(json, json!({ "org": org, "nodes": nodes, "edges": edges }), || {
                format!("org\t{org}\nnodes\t{nodes}\nedges\t{edges}")
            })
        }
    }
}

/// Prints `value` as JSON, or the text `human` makes.
fn emit(json: bool, value: Json, human: impl FnOnce() -> String) -> Outcome {
    let out = if json { value.to_string() } else { human() };
    let mut stdout = std::io::stdout().lock();
    if !out.is_empty() {
        match writeln!(stdout, "{out}") {
            // A closed pipe (`| head`) is the reader's choice, not a failure.
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(Failure::Store(e.into())),
            _ => {}
        }
    }
    Ok(())
}

/// A JSON string value without its quotes (other values as JSON).
fn text(v: &Json) -> String {
    v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())
}

fn read_key_file(path: &Path) -> Outcome<RootKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Usage(format!("cannot read key file {}: {e}", path.display())))?;
    let text = zeroize::Zeroizing::new(text);
    RootKey::from_hex(&text).map_err(|e| Failure::Usage(format!("key file {}: {e}", path.display())))
}

fn root_key(k: &KeyArgs) -> Outcome<RootKey> {
    match (&k.root_key_file, &k.root_key_env) {
        (Some(f), _) => read_key_file(f),
        (None, Some(var)) => {
            let text =
                zeroize::Zeroizing::new(std::env::var(var).map_err(|_| {
                    Failure::Usage(format!("environment variable {var} is not set (or not valid UTF-8)"))
                })?);
            RootKey::from_hex(&text).map_err(|e| Failure::Usage(format!("environment variable {var}: {e}")))
        }
        (None, None) => {
            let mut cmd = Cli::command();
            let err = cmd.error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "the root key is needed: give --root-key-file F or --root-key-env VAR",
            );
            err.exit()
        }
    }
}

/// Writes a fresh key to `path`, readable by its owner only; refuses to overwrite.
fn write_new_key_file(path: &Path) -> Outcome<RootKey> {
    let key = RootKey::generate()?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f =
        opts.open(path).map_err(|e| Failure::Usage(format!("cannot create key file {}: {e}", path.display())))?;
    let hex = key.to_hex();
    f.write_all(hex.as_bytes()).and_then(|()| f.write_all(b"\n")).and_then(|()| f.sync_all()).map_err(Error::from)?;
    Ok(key)
}

fn init(cli: &Cli, generate: Option<&Path>) -> Outcome {
    if std::fs::metadata(&cli.db).map(|m| m.len() > 0).unwrap_or(false) {
        return Err(Failure::Usage(format!("{} already exists", cli.db.display())));
    }
    let (key, generated) = match generate {
        Some(f) if f.exists() => (read_key_file(f)?, false),
        Some(f) => (write_new_key_file(f)?, true),
        None => (root_key(&cli.key)?, false),
    };
    Db::open(&cli.db, key)?;
    let key_file = generate.map(|f| f.display().to_string());
    emit(
        cli.json,
        json!({ "db": cli.db.display().to_string(), "key_file": key_file, "generated_key": generated }),
        || match (generate, generated) {
            (Some(f), true) => {
                format!("created {} with a new root key in {} (mode 0600)", cli.db.display(), f.display())
            }
            (Some(f), false) => format!("created {} with the root key in {}", cli.db.display(), f.display()),
            (None, _) => format!("created {}", cli.db.display()),
        },
    )
}

fn resolve(r: &ReadTxn, name: &str) -> Outcome<NodeId> {
    let s = import::parse_node_ref(name)?;
    r.lookup(&s.system, &s.external_id)?.ok_or_else(|| {
        Failure::Store(Error::InvalidInput(format!("no node {name} in organization {}", r.org().name())))
    })
}

fn node_name(r: &ReadTxn, id: NodeId) -> Outcome<String> {
    Ok(match r.node(id)?.and_then(|n| n.sources.into_iter().next()) {
        Some(s) => format!("{}:{}", s.system, s.external_id),
        None => format!("#{}", id.0),
    })
}

fn valid_at(f: &FilterArgs) -> Outcome<Option<i64>> {
    Ok(f.valid_at.as_deref().map(import::parse_timestamp).transpose()?)
}

fn neighbors_cmd(r: &ReadTxn, id: NodeId, dir: Direction, f: &FilterArgs, json: bool) -> Outcome {
    let mut filter = NeighborFilter { valid_at: valid_at(f)?, ..NeighborFilter::default() };
    if !f.kind.is_empty() {
        let mut ids = Vec::new();
        for k in &f.kind {
            ids.extend(r.kind_id(k)?);
        }
        filter.kinds = Some(ids);
    }
    let mut rows = Vec::new();
    for n in r.neighbors_filtered(id, dir, filter)? {
        let n = n?;
        let kind = r.kind_name(n.kind)?.unwrap_or_default();
        rows.push(json!({
            "node": node_name(r, n.node)?,
            "id": n.node.0,
            "edge": n.edge.0,
            "kind": kind,
            "direction": match n.direction { Direction::In => "in", _ => "out" },
            "valid_from": n.valid_from,
            "valid_to": n.valid_to,
        }));
    }
    emit(json, Json::Array(rows.clone()), || {
        rows.iter()
            .map(|v| {
                let from = v["valid_from"].as_i64().map(|t| format!("\tvalid_from={t}")).unwrap_or_default();
                format!("{}\t{}\t{}{from}", text(&v["direction"]), text(&v["kind"]), text(&v["node"]))
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Runs `f` under a spinner on stderr (hidden when stderr is not a terminal).
fn with_spinner<T>(msg: String, f: impl FnOnce() -> silograph::Result<T>) -> Outcome<T> {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
        bar.set_style(style);
    }
    bar.set_message(msg);
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let res = f();
    bar.finish_and_clear();
    Ok(res?)
}

/// A progress bar on stderr for one pass over a file; hidden when stderr is not a terminal.
fn file_bar(len: u64, msg: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{msg:>9} [{bar:30}] {bytes}/{total_bytes} {per_sec} eta {eta}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(msg);
    bar
}

/// Runs one import with a progress bar per pass.
fn with_progress(
    path: &Path,
    f: impl FnOnce(&mut dyn FnMut(import::Progress)) -> silograph::Result<ImportReport>,
) -> Outcome<ImportReport> {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let check = file_bar(len, "checking");
    let mut write: Option<ProgressBar> = None;
    let mut cb = |p: import::Progress| match p.phase {
        Phase::Check => check.set_position(p.bytes),
        Phase::Write => {
            if write.is_none() {
                check.finish_and_clear();
                write = Some(file_bar(len, "writing"));
            }
            if let Some(w) = &write {
                w.set_position(p.bytes);
            }
        }
    };
    let res = f(&mut cb);
    check.finish_and_clear();
    if let Some(w) = write {
        w.finish_and_clear();
    }
    Ok(res?)
}

fn col(s: &str) -> Outcome<Column> {
    Ok(s.parse::<Column>()?)
}

fn import_cmd(db: &Db, a: &ImportArgs, json: bool) -> Outcome {
    if a.edges.is_none() && a.nodes.is_none() {
        return Err(Failure::Usage("import needs --edges F and/or --nodes F".into()));
    }
    let org: Org = db.org(&a.org)?;
    let format = |p: &Path| match a.format {
        Some(Fmt::Tsv) => Format::Tsv,
        Some(Fmt::Csv) => Format::Csv,
        Some(Fmt::Jsonl) => Format::Jsonl,
        None => Format::from_path(p),
    };
    let started = Instant::now();
    let mut total = ImportReport::default();
    let mut add = |r: ImportReport| {
        total.rows += r.rows;
        total.nodes_added += r.nodes_added;
        total.edges_added += r.edges_added;
        total.batches += r.batches;
    };
    if let Some(p) = &a.nodes {
        let mut o =
            NodeImport::new(format(p)).header(!a.no_header).id_col(col(&a.node_id_col)?).batch_size(a.batch_size);
        if let Some(s) = &a.system {
            o = o.system(s);
        }
        if let Some(k) = &a.node_kind {
            o = o.kind(k);
        }
        add(with_progress(p, |cb| import::import_nodes(&org, p, &o, cb))?);
    }
    if let Some(p) = &a.edges {
        let mut o = EdgeImport::new(format(p))
            .header(!a.no_header)
            .src_col(col(&a.src_col)?)
            .dst_col(col(&a.dst_col)?)
            .time_unit(match a.time_unit {
                Unit::S => TimeUnit::Seconds,
                Unit::Ms => TimeUnit::Millis,
            })
            .batch_size(a.batch_size);
        if let Some(c) = &a.time_col {
            o = o.time_col(col(c)?);
        }
        if let Some(c) = &a.id_col {
            o = o.id_col(col(c)?);
        }
        if let Some(c) = &a.kind_col {
            o = o.kind_col(col(c)?);
        }
        if let Some(k) = &a.kind {
            o = o.kind(k);
        }
        if let Some(s) = &a.system {
            o = o.system(s);
        }
        if let Some(s) = &a.src_system {
            o = o.src_system(s);
        }
        if let Some(s) = &a.dst_system {
            o = o.dst_system(s);
        }
        add(with_progress(p, |cb| import::import_edges(&org, p, &o, cb))?);
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = if secs > 0.0 { total.rows as f64 / secs } else { 0.0 };
    emit(
        json,
        json!({
            "org": a.org,
            "rows": total.rows,
            "nodes_added": total.nodes_added,
            "edges_added": total.edges_added,
            "batches": total.batches,
            "seconds": secs,
        }),
        || {
            format!(
                "imported {} rows into {}: {} nodes and {} edges added, {} batches, {secs:.1} s ({rate:.0} rows/s)",
                total.rows, a.org, total.nodes_added, total.edges_added, total.batches
            )
        },
    )
}
