//! `silograph`: the command-line tool (crate `silograph-cli`).
//!
//! ```text
//! silograph --db FILE (--root-key-file F | --root-key-env VAR) <command>
//! ```
//!
//! The root key is read from a file or an environment variable (64 hex digits) through the
//! library's key providers ([`silograph::FileKey`], [`silograph::EnvKey`]), never from the command
//! line, where it would end up in shell history and `ps` output. A key file readable by group or
//! others is refused.
//!
//! Built with `--features postgres`, without `--db` and with `SILOGRAPH_POSTGRES_URL` set (a
//! libpq connection string), the tool works on that PostgreSQL database instead of a file.
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

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, CommandFactory, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use silograph::{
    Db, Direction, EnvKey, Error, FileKey, KeyProvider, NeighborFilter, NodeId, Org, OrgKey, PathOptions, ReadTxn,
    RootKey, Timestamp, TransportKey,
};
use silograph_import::{self as import, Column, EdgeImport, Format, ImportReport, NodeImport, Phase, TimeUnit};

/// Whether `--db` is required: not in a build that can use PostgreSQL instead.
const DB_REQUIRED: bool = !cfg!(feature = "postgres");

impl Cli {
    /// The PostgreSQL connection string to use instead of a file: a `postgres` build, no `--db`
    /// given, and `SILOGRAPH_POSTGRES_URL` set (an explicit `--db` always wins).
    fn postgres_url(&self) -> Option<String> {
        if cfg!(feature = "postgres") && self.db.is_none() {
            std::env::var("SILOGRAPH_POSTGRES_URL").ok().filter(|u| !u.is_empty())
        } else {
            None
        }
    }

    /// The database file, or a usage error (a `postgres` build without the URL needs `--db`).
    fn db_path(&self) -> Outcome<&Path> {
        self.db.as_deref().ok_or_else(|| {
            Failure::Usage("--db FILE is required (or set SILOGRAPH_POSTGRES_URL to use PostgreSQL)".into())
        })
    }

    /// Opens the database: the PostgreSQL one when its URL is set, else the file.
    fn open(&self, builder: silograph::DbBuilder, root: RootKey) -> Outcome<Db> {
        #[cfg(feature = "postgres")]
        if let Some(url) = self.postgres_url() {
            return Ok(builder.open_postgres(&url, root)?);
        }
        Ok(builder.open(self.db_path()?, root)?)
    }
}

/// An embedded, encrypted, multi-tenant context-graph store.
#[derive(Debug, Parser)]
#[command(name = "silograph", version, about, long_about = None)]
struct Cli {
    /// The database file (with the `postgres` feature: leave it out to use SILOGRAPH_POSTGRES_URL).
    #[arg(long, value_name = "FILE", required = DB_REQUIRED)]
    db: Option<PathBuf>,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    org_key: OrgKeyArgs,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true, help_heading = "Global options")]
    json: bool,
    /// MiB of decrypted adjacency pages to cache per organization (default: the library's).
    #[arg(long, global = true, value_name = "MIB", help_heading = "Global options")]
    page_cache_mb: Option<usize>,
    /// MiB of redb's own page cache (default: redb's). Lower both to bound the memory of a big import.
    #[arg(long, global = true, value_name = "MIB", help_heading = "Global options")]
    storage_cache_mb: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

/// Where the root key comes from (64 hex digits). Never from the command line itself.
#[derive(Debug, Args)]
#[group(multiple = false)]
struct KeyArgs {
    /// A file holding the root key as 64 hex digits (private to its owner: chmod 600).
    #[arg(long, value_name = "F")]
    root_key_file: Option<PathBuf>,
    /// An environment variable holding the root key as 64 hex digits.
    #[arg(long, value_name = "VAR")]
    root_key_env: Option<String>,
}

/// A bring-your-own organization key (64 hex digits): `org create` makes a BYOK organization
/// with it, and every command that opens an organization uses it. Never from the command line.
#[derive(Debug, Args)]
#[group(multiple = false)]
struct OrgKeyArgs {
    /// A file holding the organization's own key as 64 hex digits (BYOK; chmod 600).
    #[arg(long, global = true, value_name = "F", help_heading = "Global options")]
    org_key_file: Option<PathBuf>,
    /// An environment variable holding the organization's own key as 64 hex digits (BYOK).
    #[arg(long, global = true, value_name = "VAR", help_heading = "Global options")]
    org_key_env: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new database file.
    Init {
        /// Write a fresh random root key to this new file (mode 0600; it must not exist), and use it.
        #[arg(long, value_name = "F")]
        generate_key_file: Option<PathBuf>,
    },
    /// Manage organizations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Import nodes and edges from TSV, CSV or JSONL files (idempotent).
    Import(Box<ImportArgs>),
    /// List a node's neighbors.
    Neighbors {
        /// The organization.
        org: String,
        /// The node, as system:external_id.
        node: String,
        /// Which edges to follow.
        #[arg(long, default_value = "out", value_parser = direction_parser())]
        direction: Direction,
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
        #[arg(long, default_value = "out", value_parser = direction_parser())]
        direction: Direction,
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
        #[arg(long, default_value = "out", value_parser = direction_parser())]
        direction: Direction,
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
    /// Open, authenticate and validate every record of every organization (BYOK ones skipped).
    Verify,
    /// Export an organization as a sealed bundle for another host (see `import-org`).
    Export {
        /// The organization.
        org: String,
        /// The bundle file to write (must not exist).
        #[arg(long, value_name = "F")]
        out: PathBuf,
        #[command(flatten)]
        transport: TransportArgs,
    },
    /// Import an organization from a bundle made by `export`, under fresh keys.
    ImportOrg {
        /// The bundle file.
        bundle: PathBuf,
        #[command(flatten)]
        transport: TransportArgs,
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
    /// Input format: tsv, csv or jsonl (default: from the file extension; .csv, .jsonl, otherwise tsv).
    #[arg(long, value_name = "FORMAT")]
    format: Option<Format>,
    /// The files have no header line (TSV/CSV).
    #[arg(long)]
    no_header: bool,
    /// Accept TSV/CSV rows with more or fewer fields than the header (or the first row).
    #[arg(long)]
    flexible: bool,
    /// Source column (1-based position or header name).
    #[arg(long, default_value = "1")]
    src_col: Column,
    /// Target column (1-based position or header name).
    #[arg(long, default_value = "2")]
    dst_col: Column,
    /// Valid-from time column.
    #[arg(long)]
    time_col: Option<Column>,
    /// Column holding each edge's kind.
    #[arg(long, conflicts_with = "kind")]
    kind_col: Option<Column>,
    /// Kind of every edge (default "edge").
    #[arg(long)]
    kind: Option<String>,
    /// Column holding each edge's own id (its identity on re-import; default: file:line).
    #[arg(long)]
    id_col: Option<Column>,
    /// System of the nodes' external ids (default: the file's stem).
    #[arg(long)]
    system: Option<String>,
    /// System of the source endpoints (overrides --system).
    #[arg(long)]
    src_system: Option<String>,
    /// System of the target endpoints (overrides --system).
    #[arg(long)]
    dst_system: Option<String>,
    /// Unit of the time column: s or ms.
    #[arg(long, default_value = "s", value_name = "UNIT")]
    time_unit: TimeUnit,
    /// Column holding each node's id in the node file.
    #[arg(long, default_value = "1")]
    node_id_col: Column,
    /// Kind of every node in the node file (default: its system).
    #[arg(long)]
    node_kind: Option<String>,
    /// Rows per write transaction.
    #[arg(long, default_value_t = 50_000)]
    batch_size: usize,
    /// First load of an org without edges through the bulk loader: one transaction, several
    /// times faster, but edges get no source id, so it is not idempotent (a second run is refused).
    #[arg(long)]
    bulk: bool,
    /// Buffered edge bytes before the bulk loader flushes (with --bulk).
    #[arg(long, default_value_t = 64 << 20, requires = "bulk")]
    bulk_memory: usize,
}

/// The transport key a bundle is sealed for (64 hex digits), shared by the exporting and the
/// importing host. Never from the command line itself.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct TransportArgs {
    /// A file holding the transport key as 64 hex digits (chmod 600).
    #[arg(long, value_name = "F")]
    transport_key_file: Option<PathBuf>,
    /// An environment variable holding the transport key as 64 hex digits.
    #[arg(long, value_name = "VAR")]
    transport_key_env: Option<String>,
}

#[derive(Debug, Args)]
struct FilterArgs {
    /// Follow only edges of this kind (repeatable).
    #[arg(long)]
    kind: Vec<String>,
    /// Follow only edges valid at this time (milliseconds since the epoch, or YYYY-MM-DD).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    valid_at: Option<Timestamp>,
}

/// `out`, `in` or `both`, parsed into the library's [`Direction`] (listed in `--help`).
fn direction_parser() -> impl TypedValueParser<Value = Direction> {
    PossibleValuesParser::new(["out", "in", "both"]).map(|s| match s.as_str() {
        "in" => Direction::In,
        "both" => Direction::Both,
        _ => Direction::Out,
    })
}

fn parse_time(s: &str) -> Result<Timestamp, import::Error> {
    import::parse_timestamp(s)
}

fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::In => "in",
        Direction::Both => "both",
        _ => "out",
    }
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

impl From<import::Error> for Failure {
    fn from(e: import::Error) -> Self {
        match e {
            import::Error::Store(e) => Failure::Store(e),
            other => Failure::Usage(other.to_string()),
        }
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
    if cli.postgres_url().is_none() && !cli.db_path()?.exists() {
        let db = cli.db_path()?.display();
        return Err(Failure::Usage(format!("no database at {db} (create one with `init`)")));
    }
    let mut builder = Db::builder();
    if let Some(mb) = cli.page_cache_mb {
        builder = builder.cache_size(mb << 20);
    }
    if let Some(mb) = cli.storage_cache_mb {
        builder = builder.storage_cache_size(mb << 20);
    }
    let db = cli.open(builder, root_key(&cli.key)?)?;
    let org_key = read_key(cli.org_key.org_key_file.as_deref(), cli.org_key.org_key_env.as_deref(), "org key", |k| {
        OrgKey::from_hex(&k.to_hex())
    })?;
    let open = |name: &str| -> Outcome<Org> {
        match &org_key {
            Some(k) => db.org_with_key(name, k).map_err(|e| match e {
                Error::InvalidInput(_) => {
                    Failure::Usage(format!("organization {name} has a managed key: drop --org-key-file/--org-key-env"))
                }
                other => other.into(),
            }),
            None => db.org(name).map_err(|e| match e {
                Error::InvalidInput(_) => Failure::Usage(format!(
                    "organization {name} uses its own key (BYOK): give it with --org-key-file F or --org-key-env VAR"
                )),
                other => other.into(),
            }),
        }
    };
    match cli.command {
        // Handled above, before the database is opened.
        Command::Init { .. } => Ok(()),
        Command::Org(OrgCommand::Create { name }) => {
            match &org_key {
                Some(k) => db.create_org_with_key(&name, k)?,
                None => db.create_org(&name)?,
            };
            let byok = org_key.is_some();
            emit(json, &OrgCreated { byok, created: &name }, || {
                let how = if byok { "with the host's own key (BYOK)" } else { "with a managed key" };
                format!("created organization {name} {how}")
            })
        }
        Command::Org(OrgCommand::List) => {
            let names = db.list_orgs()?;
            emit(json, &names, || names.join("\n"))
        }
        Command::Org(OrgCommand::Delete { name }) => {
            let report = with_spinner(format!("deleting {name}"), || db.delete_org(&name))?;
            emit(json, &OrgDeleted { deleted: &name, purged: report.purged }, || {
                format!("deleted organization {name}: keys shredded, {} records purged", report.purged)
            })
        }
        Command::Org(OrgCommand::Rotate { name }) => {
            let r = with_spinner(format!("rotating {name}"), || match &org_key {
                Some(k) => db.rotate_org_key_with_key(&name, k),
                None => db.rotate_org_key(&name),
            })?;
            emit(
                json,
                &OrgRotated {
                    batches: r.batches,
                    epoch: r.epoch,
                    org: &name,
                    resealed: r.resealed,
                    resumed: r.resumed,
                },
                || {
                    let resumed = if r.resumed { " (finished an interrupted rotation)" } else { "" };
                    format!(
                        "rotated {name} to key epoch {}: {} records re-sealed in {} batches{resumed}",
                        r.epoch, r.resealed, r.batches
                    )
                },
            )
        }
        Command::Verify => verify_cmd(&db, json),
        Command::Export { org, out, transport } => {
            let key = transport_key(&transport)?;
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&out)
                .map_err(|e| Failure::Usage(format!("cannot create {}: {e}", out.display())))?;
            let bar = bytes_spinner("exporting");
            let writer = std::io::BufWriter::new(bar.wrap_write(file));
            let res = match &org_key {
                Some(k) => db.export_org_with_key(&org, k, &key, writer),
                None => db.export_org(&org, &key, writer),
            };
            bar.finish_and_clear();
            let r = match res {
                Ok(r) => r,
                Err(e) => {
                    // Leave no half-written bundle behind.
                    let _ = std::fs::remove_file(&out);
                    return Err(e.into());
                }
            };
            emit(
                json,
                &Exported {
                    audit_entries: r.audit_entries,
                    bytes: r.bytes,
                    chunks: r.chunks,
                    org: &r.org,
                    out: out.display().to_string(),
                    records: r.records,
                },
                || {
                    format!(
                        "exported {} to {}: {} records, {} audit entries, {} bytes sealed",
                        r.org,
                        out.display(),
                        r.records,
                        r.audit_entries,
                        r.bytes
                    )
                },
            )
        }
        Command::ImportOrg { bundle, transport } => {
            let key = transport_key(&transport)?;
            let file = std::fs::File::open(&bundle)
                .map_err(|e| Failure::Usage(format!("cannot open {}: {e}", bundle.display())))?;
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let bar = file_bar(len, "importing");
            let res = db.import_org(std::io::BufReader::new(bar.wrap_read(file)), &key);
            bar.finish_and_clear();
            let r = res?;
            emit(
                json,
                &ImportedOrg { audit_entries: r.audit_entries, bytes: r.bytes, org: &r.org, records: r.records },
                || format!("imported organization {} under fresh keys: {} records", r.org, r.records),
            )
        }
        Command::Audit { org, action: AuditCommand::Verify } => {
            let report = open(&org)?.audit().verify()?;
            emit(
                json,
                &AuditVerified {
                    first_bad: report.first_bad,
                    ok: report.is_ok(),
                    org: &org,
                    reason: report.reason.as_deref(),
                    valid_entries: report.valid_entries,
                },
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
        Command::Import(args) => import_cmd(&open(&args.org)?, &args, json),
        Command::Neighbors { org, node, direction, filter } => {
            let r = open(&org)?.read()?;
            let id = resolve(&r, &node)?;
            neighbors_cmd(&r, id, direction, &filter, json)
        }
        Command::Khop { org, node, depth, direction, filter } => {
            let r = open(&org)?.read()?;
            let id = resolve(&r, &node)?;
            let mut t = r.traverse(id).max_depth(depth).direction(direction);
            if !filter.kind.is_empty() {
                t = t.kinds(&filter.kind);
            }
            if let Some(at) = filter.valid_at {
                t = t.valid_at(at);
            }
            let hits = t.run()?;
            let rows = hits
                .iter()
                .map(|(n, d)| Ok(Hop { depth: *d, id: n.0, node: node_name(&r, *n)? }))
                .collect::<Outcome<Vec<Hop>>>()?;
            emit(json, &rows, || rows.iter().map(|h| format!("{}\t{}", h.depth, h.node)).collect::<Vec<_>>().join("\n"))
        }
        Command::Path { org, from, to, direction, max_depth, filter } => {
            let r = open(&org)?.read()?;
            let (a, b) = (resolve(&r, &from)?, resolve(&r, &to)?);
            let mut opts = PathOptions::new().direction(direction);
            if let Some(k) = max_depth {
                opts = opts.max_depth(k);
            }
            if !filter.kind.is_empty() {
                opts = opts.kinds(&filter.kind);
            }
            if let Some(at) = filter.valid_at {
                opts = opts.valid_at(at);
            }
            match r.shortest_path(a, b, &opts)? {
                None => emit(json, &None::<FoundPath>, || format!("no path from {from} to {to}")),
                Some(p) => {
                    let nodes = p.nodes.iter().map(|n| node_name(&r, *n)).collect::<Outcome<Vec<_>>>()?;
                    let found =
                        FoundPath { edges: p.edges.iter().map(|e| e.0).collect(), length: p.edges.len(), nodes };
                    emit(json, &found, || found.nodes.join(" -> "))
                }
            }
        }
        Command::Stats { org } => {
            let o = open(&org)?;
            let (nodes, edges) = o.counts()?;
            emit(json, &Stats { edges, nodes, org: &org }, || format!("org\t{org}\nnodes\t{nodes}\nedges\t{edges}"))
        }
    }
}

/// Prints `value` as JSON, or the text `human` makes.
fn emit(json: bool, value: &impl Serialize, human: impl FnOnce() -> String) -> Outcome {
    let out = if json {
        serde_json::to_string(value).map_err(|e| Failure::Store(Error::Io(std::io::Error::other(e))))?
    } else {
        human()
    };
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

/// `n thing` or `n things`.
fn counted(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// A 32-byte key from a file ([`FileKey`]: 64 hex digits or 32 raw bytes, private to its owner)
/// or an environment variable ([`EnvKey`]: 64 hex digits); `None` if neither is given. The
/// providers yield a [`RootKey`]; `convert` turns it into the key type needed (org, transport).
fn read_key<K>(
    file: Option<&Path>,
    env: Option<&str>,
    what: &str,
    convert: impl Fn(RootKey) -> silograph::Result<K>,
) -> Outcome<Option<K>> {
    let (key, from) = match (file, env) {
        (Some(path), _) => (FileKey::new(path).root_key(), format!("{what} file {}", path.display())),
        (None, Some(var)) => (EnvKey::new(var).root_key(), format!("{what} in environment variable {var}")),
        (None, None) => return Ok(None),
    };
    key.and_then(convert).map(Some).map_err(|e| Failure::Usage(format!("{from}: {e}")))
}

fn root_key(k: &KeyArgs) -> Outcome<RootKey> {
    match read_key(k.root_key_file.as_deref(), k.root_key_env.as_deref(), "root key", Ok)? {
        Some(key) => Ok(key),
        None => {
            let mut cmd = Cli::command();
            let err = cmd.error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "the root key is needed: give --root-key-file F or --root-key-env VAR",
            );
            err.exit()
        }
    }
}

fn transport_key(t: &TransportArgs) -> Outcome<TransportKey> {
    read_key(t.transport_key_file.as_deref(), t.transport_key_env.as_deref(), "transport key", |k| {
        TransportKey::from_hex(&k.to_hex())
    })?
    .ok_or_else(|| Failure::Usage("give --transport-key-file F or --transport-key-env VAR".into()))
}

/// Writes a fresh key to a new file at `path`, readable by its owner only. The file is created
/// exclusively: an existing file (perhaps a key planted by someone else) is refused, never adopted.
fn write_new_key_file(path: &Path) -> Outcome<RootKey> {
    let key = RootKey::generate()?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => Failure::Usage(format!(
            "key file {} already exists: --generate-key-file writes a new file only (to use that key, give \
             --root-key-file {0})",
            path.display()
        )),
        _ => Failure::Usage(format!("cannot create key file {}: {e}", path.display())),
    })?;
    let hex = key.to_hex();
    f.write_all(hex.as_bytes()).and_then(|()| f.write_all(b"\n")).and_then(|()| f.sync_all()).map_err(Error::from)?;
    Ok(key)
}

/// What `init` reports in JSON.
#[derive(Serialize)]
struct Initialized {
    db: String,
    generated_key: bool,
    key_file: Option<String>,
}

fn init(cli: &Cli, generate: Option<&Path>) -> Outcome {
    let target = match cli.postgres_url() {
        Some(_) => "the PostgreSQL database".to_owned(),
        None => cli.db_path()?.display().to_string(),
    };
    if cli.postgres_url().is_none() && std::fs::metadata(cli.db_path()?).map(|m| m.len() > 0).unwrap_or(false) {
        return Err(Failure::Usage(format!("{target} already exists")));
    }
    let key = match generate {
        Some(f) => write_new_key_file(f)?,
        None => root_key(&cli.key)?,
    };
    if let Err(e) = cli.open(Db::builder(), key) {
        if let Some(f) = generate {
            // The new key protects nothing yet: remove it, so that running `init` again works.
            let _ = std::fs::remove_file(f);
        }
        return Err(e);
    }
    let report = Initialized {
        db: target.clone(),
        generated_key: generate.is_some(),
        key_file: generate.map(|f| f.display().to_string()),
    };
    emit(cli.json, &report, || match generate {
        Some(f) => format!("created {target} with a new root key in {} (mode 0600)", f.display()),
        None => format!("created {target}"),
    })
}

fn resolve(r: &ReadTxn, name: &str) -> Outcome<NodeId> {
    let s = import::parse_node_ref(name)?;
    r.lookup(&s.system, &s.external_id)?
        .ok_or_else(|| Failure::Usage(format!("invalid input: no node {name} in organization {}", r.org().name())))
}

fn node_name(r: &ReadTxn, id: NodeId) -> Outcome<String> {
    Ok(match r.node(id)?.and_then(|n| n.sources.into_iter().next()) {
        Some(s) => format!("{}:{}", s.system, s.external_id),
        None => format!("#{}", id.0),
    })
}

fn neighbors_cmd(r: &ReadTxn, id: NodeId, dir: Direction, f: &FilterArgs, json: bool) -> Outcome {
    let mut filter = NeighborFilter { valid_at: f.valid_at, ..NeighborFilter::default() };
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
        rows.push(NeighborRow {
            direction: direction_name(n.direction),
            edge: n.edge.0,
            id: n.node.0,
            kind: r.kind_name(n.kind)?.unwrap_or_default(),
            node: node_name(r, n.node)?,
            valid_from: n.valid_from,
            valid_to: n.valid_to,
        });
    }
    emit(json, &rows, || {
        rows.iter()
            .map(|n| {
                let from = n.valid_from.map(|t| format!("\tvalid_from={t}")).unwrap_or_default();
                format!("{}\t{}\t{}{from}", n.direction, n.kind, n.node)
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// A spinner counting bytes on stderr (hidden when stderr is not a terminal).
fn bytes_spinner(msg: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {bytes} {binary_bytes_per_sec}") {
        bar.set_style(style);
    }
    bar.set_message(msg);
    bar
}

fn verify_cmd(db: &Db, json: bool) -> Outcome {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("verifying [{bar:30}] {pos}/{len} records {per_sec} eta {eta}") {
        bar.set_style(style.progress_chars("=> "));
    }
    let res = db.verify_with_progress(|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let r = res?;
    let report = Verified {
        bad_audit: r.bad_audit.iter().map(|(org, seq)| BadAudit { first_bad: *seq, org }).collect(),
        corrupt: r
            .corrupt
            .iter()
            .map(|c| Corrupt {
                edge: c.edge.map(|e| e.0),
                error: &c.error,
                key: &c.key,
                node: c.node.map(|n| n.0),
                org: &c.org,
                table: c.table,
            })
            .collect(),
        ok: r.is_ok(),
        orgs: &r.orgs,
        records: r.records(),
        skipped_byok: &r.skipped_byok,
    };
    emit(json, &report, || {
        let mut lines = vec![format!(
            "checked {} records of {} organizations{}",
            r.records(),
            r.orgs.len(),
            if r.skipped_byok.is_empty() {
                String::new()
            } else {
                format!(" (skipped BYOK: {})", r.skipped_byok.join(", "))
            }
        )];
        for c in &r.corrupt {
            let at = match (c.node, c.edge) {
                (Some(n), _) => format!(" (node {})", n.0),
                (_, Some(e)) => format!(" (edge {})", e.0),
                _ => String::new(),
            };
            lines.push(format!("CORRUPT org={} table={} key={}{at}: {}", c.org, c.table, c.key, c.error));
        }
        for (o, seq) in &r.bad_audit {
            lines.push(format!("BROKEN audit chain of {o} at entry {seq}"));
        }
        lines.push(if r.is_ok() { "ok".into() } else { "FAILED".into() });
        lines.join("\n")
    })?;
    if r.is_ok() {
        Ok(())
    } else {
        Err(Failure::Integrity(format!(
            "verification failed: {} corrupt records, {} broken audit chains",
            r.corrupt.len(),
            r.bad_audit.len()
        )))
    }
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
    f: impl FnOnce(&mut dyn FnMut(import::Progress)) -> import::Result<ImportReport>,
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

fn import_cmd(org: &Org, a: &ImportArgs, json: bool) -> Outcome {
    if a.edges.is_none() && a.nodes.is_none() {
        return Err(Failure::Usage("import needs --edges F and/or --nodes F".into()));
    }
    let format = |p: &Path| a.format.unwrap_or_else(|| Format::from_path(p));
    let started = Instant::now();
    let mut total = ImportReport::default();
    let mut add = |r: ImportReport| {
        total.rows += r.rows;
        total.nodes_added += r.nodes_added;
        total.edges_added += r.edges_added;
        total.batches += r.batches;
    };
    if let Some(p) = &a.nodes {
        let mut o = NodeImport::new(format(p))
            .header(!a.no_header)
            .flexible(a.flexible)
            .id_col(a.node_id_col.clone())
            .batch_size(a.batch_size);
        if let Some(s) = &a.system {
            o = o.system(s);
        }
        if let Some(k) = &a.node_kind {
            o = o.kind(k);
        }
        add(with_progress(p, |cb| import::import_nodes(org, p, &o, cb))?);
    }
    if let Some(p) = &a.edges {
        let mut o = EdgeImport::new(format(p))
            .header(!a.no_header)
            .flexible(a.flexible)
            .src_col(a.src_col.clone())
            .dst_col(a.dst_col.clone())
            .time_unit(a.time_unit)
            .batch_size(a.batch_size);
        if let Some(c) = &a.time_col {
            o = o.time_col(c.clone());
        }
        if let Some(c) = &a.id_col {
            o = o.id_col(c.clone());
        }
        if let Some(c) = &a.kind_col {
            o = o.kind_col(c.clone());
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
        add(with_progress(p, |cb| match a.bulk {
            true => import::import_edges_bulk(org, p, &o, a.bulk_memory, cb),
            false => import::import_edges(org, p, &o, cb),
        })?);
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = if secs > 0.0 { total.rows as f64 / secs } else { 0.0 };
    emit(
        json,
        &Imported {
            batches: total.batches,
            edges_added: total.edges_added,
            nodes_added: total.nodes_added,
            org: &a.org,
            rows: total.rows,
            seconds: secs,
        },
        || {
            format!(
                "imported {} into {}: {} and {} added ({}, {secs:.1} s, {rate:.0} rows/s)",
                counted(total.rows, "row"),
                a.org,
                counted(total.nodes_added, "node"),
                counted(total.edges_added, "edge"),
                counted(total.batches, "write transaction")
            )
        },
    )
}

// What the commands print with `--json`: one struct per output, fields in alphabetical order
// (the order the JSON objects have always had).

/// `org create`.
#[derive(Serialize)]
struct OrgCreated<'a> {
    byok: bool,
    created: &'a str,
}

/// `org delete`.
#[derive(Serialize)]
struct OrgDeleted<'a> {
    deleted: &'a str,
    purged: u64,
}

/// `org rotate`.
#[derive(Serialize)]
struct OrgRotated<'a> {
    batches: u64,
    epoch: u32,
    org: &'a str,
    resealed: u64,
    resumed: bool,
}

/// `export`.
#[derive(Serialize)]
struct Exported<'a> {
    audit_entries: u64,
    bytes: u64,
    chunks: u64,
    org: &'a str,
    out: String,
    records: u64,
}

/// `import-org`.
#[derive(Serialize)]
struct ImportedOrg<'a> {
    audit_entries: u64,
    bytes: u64,
    org: &'a str,
    records: u64,
}

/// `audit ORG verify`.
#[derive(Serialize)]
struct AuditVerified<'a> {
    first_bad: Option<u64>,
    ok: bool,
    org: &'a str,
    reason: Option<&'a str>,
    valid_entries: u64,
}

/// One node of `khop`.
#[derive(Serialize)]
struct Hop {
    depth: u32,
    id: u64,
    node: String,
}

/// `path` (a missing path prints `null`).
#[derive(Serialize)]
struct FoundPath {
    edges: Vec<u64>,
    length: usize,
    nodes: Vec<String>,
}

/// `stats`.
#[derive(Serialize)]
struct Stats<'a> {
    edges: u64,
    nodes: u64,
    org: &'a str,
}

/// One neighbor of `neighbors`.
#[derive(Serialize)]
struct NeighborRow {
    direction: &'static str,
    edge: u64,
    id: u64,
    kind: String,
    node: String,
    valid_from: Option<Timestamp>,
    valid_to: Option<Timestamp>,
}

/// `verify`.
#[derive(Serialize)]
struct Verified<'a> {
    bad_audit: Vec<BadAudit<'a>>,
    corrupt: Vec<Corrupt<'a>>,
    ok: bool,
    orgs: &'a [String],
    records: u64,
    skipped_byok: &'a [String],
}

/// A corrupt record in `verify`.
#[derive(Serialize)]
struct Corrupt<'a> {
    edge: Option<u64>,
    error: &'a str,
    key: &'a str,
    node: Option<u64>,
    org: &'a str,
    table: &'a str,
}

/// A broken audit chain in `verify`.
#[derive(Serialize)]
struct BadAudit<'a> {
    first_bad: u64,
    org: &'a str,
}

/// `import`.
#[derive(Serialize)]
struct Imported<'a> {
    batches: u64,
    edges_added: u64,
    nodes_added: u64,
    org: &'a str,
    rows: u64,
    seconds: f64,
}
