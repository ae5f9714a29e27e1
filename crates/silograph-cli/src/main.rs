//! `silograph`: the command-line tool (crate `silograph-cli`).
//!
//! ```text
//! silograph --db FILE (--root-key-file F | --root-key-env VAR)
//!           [--keyring F (--keyring-key-file F | --keyring-key-env VAR)] <command>
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
//! With `--keyring F`, organizations are kept under key custody in the keyring file `F`
//! ([`silograph::LocalKeyring`], sealed under its own keyring key): an organization created so
//! opens only with that keyring, and deleting it destroys its key there, which shreds it in every
//! copy of the database file too.
//!
//! Exit codes: 0 ok; 1 integrity or verification failure (and storage/I/O failures), or a secret
//! that is not set; 2 usage (bad arguments, a malformed input file, an unknown organization);
//! 3 wrong key.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, CommandFactory, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use silograph::{
    Db, Direction, EnvKey, Error, FileKey, InputKind, KeyProvider, KeyringKey, LocalKeyring, NeighborFilter, NodeId,
    Org, OrgKey, PathOptions, ReadTxn, RootKey, SecretValue, Timestamp, TransportKey, MAX_VALUE_LEN,
};
use silograph_import::{self as import, Column, EdgeImport, Format, ImportReport, NodeImport, Phase, TimeUnit};
use zeroize::Zeroizing;

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
    #[command(flatten)]
    keyring: KeyringArgs,
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

/// Key custody: a keyring file holding a key per organization outside the database file, and
/// where its own key comes from (64 hex digits; never from the command line). Checked by
/// [`keyring`]: the key is needed exactly when the keyring is given.
#[derive(Debug, Args)]
struct KeyringArgs {
    /// A keyring file holding a key per organization outside the database (key custody; only
    /// `init` and `org create` create it). Keep it apart from the database and from its key.
    #[arg(long, global = true, value_name = "F", help_heading = "Global options")]
    keyring: Option<PathBuf>,
    /// A file holding the keyring's key as 64 hex digits (chmod 600), with --keyring.
    #[arg(long, global = true, value_name = "F", help_heading = "Global options")]
    keyring_key_file: Option<PathBuf>,
    /// An environment variable holding the keyring's key as 64 hex digits, with --keyring.
    #[arg(long, global = true, value_name = "VAR", help_heading = "Global options")]
    keyring_key_env: Option<String>,
}

/// Where the new root key of `rotate-root` comes from (64 hex digits). Never from the command line.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct NewRootKeyArgs {
    /// A file holding the new root key as 64 hex digits (chmod 600).
    #[arg(long, value_name = "F")]
    new_root_key_file: Option<PathBuf>,
    /// An environment variable holding the new root key as 64 hex digits.
    #[arg(long, value_name = "VAR")]
    new_root_key_env: Option<String>,
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
    /// Rotate the root key: afterwards only the new key opens the database (O(organizations)).
    RotateRoot {
        #[command(flatten)]
        new_key: NewRootKeyArgs,
    },
    /// Sealed secrets of an organization (tokens, API keys); values are read from stdin only.
    #[command(subcommand)]
    Secret(SecretCommand),
}

#[derive(Debug, Subcommand)]
enum SecretCommand {
    /// Store the secret NAME, its value read from stdin (byte for byte: see --strip-newline).
    Put {
        /// The organization.
        org: String,
        /// The secret's name.
        name: String,
        /// Drop one trailing newline (LF or CRLF) from the value, as `echo` or a text editor adds.
        #[arg(long)]
        strip_newline: bool,
    },
    /// Print the secret NAME's value on stdout, as stored (no newline added); exit 1 if not set.
    Get {
        /// The organization.
        org: String,
        /// The secret's name.
        name: String,
    },
    /// List the names of an organization's secrets (never their values).
    List {
        /// The organization.
        org: String,
    },
    /// Delete the secret NAME; exit 1 if it was not set.
    Delete {
        /// The organization.
        org: String,
        /// The secret's name.
        name: String,
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
    /// Re-key an organization completely: new structure and data keys, every record moved to a
    /// new record key, index and audit chain rebuilt (managed keys only; resumable).
    Rekey {
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
    /// What was asked for is not there (a secret that is not set).
    NotSet(String),
    /// The store said no about something the message names (e.g. the keyring file).
    Context(String, Error),
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
            Failure::Store(e) | Failure::Context(_, e) => match e {
                Error::WrongKey => 3,
                Error::InvalidInput(_) | Error::OrgNotFound(_) | Error::OrgExists(_) | Error::Denied(_) => 2,
                _ => 1,
            },
            Failure::Usage(_) => 2,
            Failure::Integrity(_) | Failure::NotSet(_) => 1,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Store(e) => write!(f, "{e}"),
            Failure::Context(what, e) => write!(f, "{what}: {e}"),
            Failure::Integrity(m) | Failure::Usage(m) | Failure::NotSet(m) => f.write_str(m),
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
    let root = root_key(&cli.key)?;
    let new_root = match &cli.command {
        Command::RotateRoot { new_key } => Some(new_root_key(new_key, &root)?),
        _ => None,
    };
    // Only `org create` may make a new keyring (as `init` does): any other command given a path
    // where no keyring is would otherwise run against an empty one.
    let creates_keyring = matches!(cli.command, Command::Org(OrgCommand::Create { .. }));
    let ring = keyring(&cli, creates_keyring)?;
    let new_ring = ring.as_ref().filter(|r| r.created).map(|r| r.path.clone());
    if let Some(r) = ring {
        builder = builder.custody(r.ring);
    }
    let db = match cli.open(builder, root) {
        Ok(db) => db,
        Err(e) => {
            remove_new_keyring(new_ring.as_deref());
            return Err(e);
        }
    };
    let org_key = read_key(cli.org_key.org_key_file.as_deref(), cli.org_key.org_key_env.as_deref(), "org key", |k| {
        OrgKey::from_hex(&k.to_hex())
    })?;
    let open = |name: &str| -> Outcome<Org> {
        match &org_key {
            Some(k) => db.org_with_key(name, k),
            None => db.org(name),
        }
        .map_err(|e| explain(&db, &cli, Some(name), e))
    };
    match &cli.command {
        // Handled above, before the database is opened.
        Command::Init { .. } => Ok(()),
        Command::Org(OrgCommand::Create { name }) => {
            let created = match &org_key {
                Some(k) => db.create_org_with_key(name, k),
                None => db.create_org(name),
            };
            if let Err(e) = created {
                // A keyring made for this organization protects nothing: leave none behind.
                remove_new_keyring(new_ring.as_deref());
                return Err(e.into());
            }
            let byok = org_key.is_some();
            // A BYOK organization's keys come from the host's key alone, never from the keyring.
            let custody = !byok && cli.keyring.keyring.is_some();
            emit(json, &OrgCreated { byok, created: name, custody }, || {
                let how = if byok { "with the host's own key (BYOK)" } else { "with a managed key" };
                match (custody, &cli.keyring.keyring) {
                    (true, Some(k)) => {
                        format!("created organization {name} {how}, under key custody in keyring {}", k.display())
                    }
                    _ => format!("created organization {name} {how}"),
                }
            })
        }
        Command::Org(OrgCommand::List) => {
            let names = db.list_orgs()?;
            emit(json, &names, || names.join("\n"))
        }
        Command::Org(OrgCommand::Delete { name }) => {
            let report = with_spinner(format!("deleting {name}"), || db.delete_org(name))
                .map_err(|f| explain_failure(&db, &cli, Some(name), f))?;
            emit(json, &OrgDeleted { deleted: name, purged: report.purged }, || {
                format!("deleted organization {name}: keys shredded, {} records purged", report.purged)
            })
        }
        Command::Org(OrgCommand::Rotate { name }) => {
            let r = with_spinner(format!("rotating {name}"), || match &org_key {
                Some(k) => db.rotate_org_key_with_key(name, k),
                None => db.rotate_org_key(name),
            })
            .map_err(|f| explain_failure(&db, &cli, Some(name), f))?;
            emit(json, &OrgRotated::of(name, &r), || {
                let resumed = if r.resumed { " (finished an interrupted rotation)" } else { "" };
                format!(
                    "rotated {name} to key epoch {}: {} records re-sealed in {} batches{resumed}",
                    r.epoch, r.resealed, r.batches
                )
            })
        }
        Command::Org(OrgCommand::Rekey { name }) => {
            let managed_only = || {
                Failure::Usage(format!(
                    "organization {name} uses its own key (BYOK): `org rekey` re-keys organizations with a managed \
                     key only"
                ))
            };
            if org_key.is_some() {
                return Err(managed_only());
            }
            let r = with_spinner(format!("re-keying {name}"), || db.rekey_org(name)).map_err(|f| match f {
                Failure::Store(Error::InvalidInput(ref e))
                    if matches!(e.kind(), InputKind::KeyKind) && db.org_info(name).is_ok_and(|i| i.byok) =>
                {
                    managed_only()
                }
                f => explain_failure(&db, &cli, Some(name), f),
            })?;
            emit(json, &OrgRotated::of(name, &r), || {
                let resumed = if r.resumed { " (finished an interrupted re-key)" } else { "" };
                format!(
                    "re-keyed {name}: new structure and data keys (key epoch {}), {} re-sealed in {}{resumed}",
                    r.epoch,
                    counted(r.resealed, "record"),
                    counted(r.batches, "write transaction")
                )
            })
        }
        Command::RotateRoot { .. } => {
            let new = new_root.ok_or_else(|| Failure::Usage("the new root key is needed".into()))?;
            with_spinner("rotating the root key".into(), || db.rotate_root_key(new))?;
            let target = match cli.postgres_url() {
                Some(_) => "the PostgreSQL database".to_owned(),
                None => cli.db_path()?.display().to_string(),
            };
            emit(json, &RootRotated { db: target.clone(), rotated_root: true }, || {
                format!("rotated the root key of {target}: from now on only the new key opens it")
            })
        }
        Command::Secret(cmd) => secret_cmd(&open, cmd, json),
        Command::Verify => verify_cmd(&db, json).map_err(|f| explain_failure(&db, &cli, None, f)),
        Command::Export { org, out, transport } => {
            let key = transport_key(transport)?;
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(out)
                .map_err(|e| Failure::Usage(format!("cannot create {}: {e}", out.display())))?;
            let bar = bytes_spinner("exporting");
            let writer = std::io::BufWriter::new(bar.wrap_write(file));
            let res = match &org_key {
                Some(k) => db.export_org_with_key(org, k, &key, writer),
                None => db.export_org(org, &key, writer),
            };
            bar.finish_and_clear();
            let r = match res {
                Ok(r) => r,
                Err(e) => {
                    // Leave no half-written bundle behind.
                    let _ = std::fs::remove_file(out);
                    return Err(explain(&db, &cli, Some(org), e));
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
            let key = transport_key(transport)?;
            let file = std::fs::File::open(bundle)
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
            let report = open(org)?.audit().verify()?;
            emit(
                json,
                &AuditVerified {
                    first_bad: report.first_bad,
                    ok: report.is_ok(),
                    org,
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
        Command::Import(args) => import_cmd(&open(&args.org)?, args, json),
        Command::Neighbors { org, node, direction, filter } => {
            let r = open(org)?.read()?;
            let id = resolve(&r, node)?;
            neighbors_cmd(&r, id, *direction, filter, json)
        }
        Command::Khop { org, node, depth, direction, filter } => {
            let r = open(org)?.read()?;
            let id = resolve(&r, node)?;
            let mut t = r.traverse(id).max_depth(*depth).direction(*direction);
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
            let r = open(org)?.read()?;
            let (a, b) = (resolve(&r, from)?, resolve(&r, to)?);
            let mut opts = PathOptions::new().direction(*direction);
            if let Some(k) = *max_depth {
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
            let o = open(org)?;
            let (nodes, edges) = o.counts()?;
            emit(json, &Stats { edges, nodes, org }, || format!("org\t{org}\nnodes\t{nodes}\nedges\t{edges}"))
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

/// The new root key of `rotate-root`, refused if it is the current one (`current`).
fn new_root_key(k: &NewRootKeyArgs, current: &RootKey) -> Outcome<RootKey> {
    let new = read_key(k.new_root_key_file.as_deref(), k.new_root_key_env.as_deref(), "new root key", Ok)?
        .ok_or_else(|| Failure::Usage("give --new-root-key-file F or --new-root-key-env VAR".into()))?;
    if new.to_hex() == current.to_hex() {
        return Err(Failure::Usage("the new root key is the current one: rotating to it would change nothing".into()));
    }
    Ok(new)
}

/// The keyring of `--keyring`, opened with its key, and whether this call created the file.
struct Keyring {
    ring: LocalKeyring,
    path: PathBuf,
    created: bool,
}

/// Whether `a` and `b` name the same file (as given, or once resolved if both exist).
fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// Opens the keyring of `--keyring` (`None` without it) with the key of `--keyring-key-file` or
/// `--keyring-key-env` (exactly one of them). A missing keyring file is created (mode 0600) only
/// if `create`; otherwise it is an error naming the path, never a silently new, empty keyring.
fn keyring(cli: &Cli, create: bool) -> Outcome<Option<Keyring>> {
    let k = &cli.keyring;
    let Some(path) = k.keyring.as_deref() else {
        if k.keyring_key_file.is_some() || k.keyring_key_env.is_some() {
            return Err(Failure::Usage(
                "--keyring-key-file/--keyring-key-env give the key of a keyring: add --keyring F".into(),
            ));
        }
        return Ok(None);
    };
    if k.keyring_key_file.is_some() && k.keyring_key_env.is_some() {
        return Err(Failure::Usage(
            "give the keyring's key once: --keyring-key-file F or --keyring-key-env VAR, not both".into(),
        ));
    }
    let apart = [
        (cli.db.as_deref(), "the database file"),
        (k.keyring_key_file.as_deref(), "the keyring's key file"),
        (cli.key.root_key_file.as_deref(), "the root key file"),
    ];
    for (other, what) in apart {
        if other.is_some_and(|o| same_file(path, o)) {
            return Err(Failure::Usage(format!(
                "--keyring {} is {what}: the keyring is a file of its own, kept apart from the database and \
                 from its key",
                path.display()
            )));
        }
    }
    let key = read_key(k.keyring_key_file.as_deref(), k.keyring_key_env.as_deref(), "keyring key", |k| {
        KeyringKey::from_hex(&k.to_hex())
    })?
    .ok_or_else(|| {
        Failure::Usage("--keyring F needs the keyring's key: give --keyring-key-file F or --keyring-key-env VAR".into())
    })?;
    let exists = match std::fs::metadata(path) {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(Failure::Context(format!("keyring {}", path.display()), e.into())),
    };
    if !exists && !create {
        return Err(Failure::Usage(format!(
            "no keyring at {}: only `init` and `org create` create a keyring (is the path right?)",
            path.display()
        )));
    }
    let ring = LocalKeyring::open(path, key).map_err(|e| {
        let what = match e {
            Error::WrongKey => format!("keyring {} (its key does not open it)", path.display()),
            _ => format!("keyring {}", path.display()),
        };
        Failure::Context(what, e)
    })?;
    Ok(Some(Keyring { ring, path: path.to_owned(), created: !exists }))
}

/// Removes the keyring file this run created, when what it was created for failed: it holds no
/// key yet, and leaving it would make the next `init` or `org create` adopt it silently.
fn remove_new_keyring(path: Option<&Path>) {
    if let Some(p) = path {
        let _ = std::fs::remove_file(p);
    }
}

/// Turns an error about the kind of key organization `name` needs (`InvalidInput(KeyKind)`) into
/// what to give on the command line: its BYOK key, no BYOK key, or its keyring.
fn explain(db: &Db, cli: &Cli, name: Option<&str>, e: Error) -> Failure {
    let Error::InvalidInput(input) = &e else { return e.into() };
    if !matches!(input.kind(), InputKind::KeyKind) {
        return e.into();
    }
    let byok_key = cli.org_key.org_key_file.is_some() || cli.org_key.org_key_env.is_some();
    let no_keyring = cli.keyring.keyring.is_none();
    let keyring_hint = "give the keyring with --keyring F and --keyring-key-file F or --keyring-key-env VAR";
    match name.map(|n| (n, db.org_info(n))) {
        Some((n, Ok(info))) if info.byok && !byok_key => Failure::Usage(format!(
            "organization {n} uses its own key (BYOK): give it with --org-key-file F or --org-key-env VAR"
        )),
        Some((n, Ok(info))) if !info.byok && byok_key => {
            Failure::Usage(format!("organization {n} has a managed key: drop --org-key-file/--org-key-env"))
        }
        Some((n, Ok(_))) if no_keyring => {
            Failure::Usage(format!("organization {n} was created under key custody: {keyring_hint}"))
        }
        _ if no_keyring => Failure::Usage(format!("{}; {keyring_hint}", input.message())),
        _ => e.into(),
    }
}

/// [`explain`] for a failure that may hold a store error.
fn explain_failure(db: &Db, cli: &Cli, name: Option<&str>, f: Failure) -> Failure {
    match f {
        Failure::Store(e) => explain(db, cli, name, e),
        other => other,
    }
}

/// Reads a secret's value from stdin: all of it, byte for byte, or without one trailing newline
/// (LF or CRLF) if `strip_newline`. Read into one buffer allocated once and never grown (a grown
/// buffer leaves copies of the value in freed memory), zeroized when dropped.
fn read_secret_value(name: &str, strip_newline: bool) -> Outcome<SecretValue> {
    let mut stdin = std::io::stdin().lock();
    if stdin.is_terminal() {
        eprintln!("silograph: reading the value of secret {name} from stdin (end it with Ctrl-D)");
    }
    // The longest value the store takes, a CRLF, and one byte more to see a longer input.
    let mut buf = Zeroizing::new(vec![0u8; MAX_VALUE_LEN + 3]);
    let mut len = 0;
    while len < buf.len() {
        match stdin.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Failure::Context("reading the secret's value from stdin".into(), e.into())),
        }
    }
    if len == buf.len() {
        return Err(Failure::Usage(format!(
            "the value on stdin is longer than a secret may be ({MAX_VALUE_LEN} bytes)"
        )));
    }
    if strip_newline {
        if buf[..len].ends_with(b"\r\n") {
            len -= 2;
        } else if buf[..len].ends_with(b"\n") {
            len -= 1;
        }
    }
    if len == 0 {
        return Err(Failure::Usage(format!("the value of secret {name} on stdin is empty")));
    }
    buf.truncate(len);
    // Moved, not copied: the value's only copy is now the `SecretValue`'s (zeroized on drop).
    Ok(SecretValue::new(std::mem::take(&mut *buf)))
}

/// `secret put|get|list|delete`, on the organizations `open` opens.
fn secret_cmd(open: &dyn Fn(&str) -> Outcome<Org>, cmd: &SecretCommand, json: bool) -> Outcome {
    let not_set = |org: &str, name: &str| Failure::NotSet(format!("no secret {name} in organization {org}"));
    match cmd {
        SecretCommand::Put { org, name, strip_newline } => {
            let secrets = open(org)?.secrets()?;
            secrets.put(name, read_secret_value(name, *strip_newline)?)?;
            emit(json, &SecretPut { org, put: name }, || format!("stored secret {name} of organization {org}"))
        }
        SecretCommand::Get { org, name } => match open(org)?.secrets()?.get(name)? {
            Some(value) => print_secret(json, org, name, &value),
            None => Err(not_set(org, name)),
        },
        SecretCommand::List { org } => {
            let names = open(org)?.secrets()?.list()?;
            emit(json, &names, || names.join("\n"))
        }
        SecretCommand::Delete { org, name } => match open(org)?.secrets()?.delete(name)? {
            true => emit(json, &SecretDeleted { deleted: name, org }, || {
                format!("deleted secret {name} of organization {org}")
            }),
            false => Err(not_set(org, name)),
        },
    }
}

/// Writes a secret's value to stdout: its bytes as they are (no newline added), or with `--json`
/// one object holding it as a string (UTF-8 values only), serialized straight to stdout.
fn print_secret(json: bool, org: &str, name: &str, value: &SecretValue) -> Outcome {
    let mut stdout = std::io::stdout().lock();
    let written = if json {
        let text = std::str::from_utf8(value.expose()).map_err(|_| {
            Failure::Usage(format!(
                "secret {name} is not UTF-8 text, which JSON cannot carry: drop --json to get its bytes"
            ))
        })?;
        serde_json::to_writer(&mut stdout, &SecretShown { name, org, value: text })
            .map_err(std::io::Error::from)
            .and_then(|()| stdout.write_all(b"\n"))
    } else {
        stdout.write_all(value.expose())
    };
    match written.and_then(|()| stdout.flush()) {
        // A closed pipe (`| head`) is the reader's choice, not a failure.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::Store(e.into())),
        _ => Ok(()),
    }
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
    keyring: Option<String>,
}

fn init(cli: &Cli, generate: Option<&Path>) -> Outcome {
    let target = match cli.postgres_url() {
        Some(_) => "the PostgreSQL database".to_owned(),
        None => cli.db_path()?.display().to_string(),
    };
    if cli.postgres_url().is_none() && std::fs::metadata(cli.db_path()?).map(|m| m.len() > 0).unwrap_or(false) {
        return Err(Failure::Usage(format!("{target} already exists")));
    }
    // The given root key first (a missing one exits), then the keyring (perhaps created), then
    // the generated key file: whatever this call created is removed again if a later step fails.
    let given = match generate {
        Some(_) => None,
        None => Some(root_key(&cli.key)?),
    };
    let ring = keyring(cli, true)?;
    let new_ring = ring.as_ref().filter(|r| r.created).map(|r| r.path.clone());
    let key = match (given, generate) {
        (Some(k), _) => k,
        (None, Some(f)) => match write_new_key_file(f) {
            Ok(k) => k,
            Err(e) => {
                remove_new_keyring(new_ring.as_deref());
                return Err(e);
            }
        },
        (None, None) => return Err(Failure::Usage("the root key is needed".into())),
    };
    let mut builder = Db::builder();
    if let Some(r) = ring {
        builder = builder.custody(r.ring);
    }
    if let Err(e) = cli.open(builder, key) {
        if let Some(f) = generate {
            // The new key protects nothing yet: remove it, so that running `init` again works.
            let _ = std::fs::remove_file(f);
        }
        remove_new_keyring(new_ring.as_deref());
        return Err(e);
    }
    let keyring = cli.keyring.keyring.as_deref().map(|k| k.display().to_string());
    let report = Initialized {
        db: target.clone(),
        generated_key: generate.is_some(),
        key_file: generate.map(|f| f.display().to_string()),
        keyring: keyring.clone(),
    };
    emit(cli.json, &report, || {
        let custody = match (&keyring, &new_ring) {
            (Some(k), Some(_)) => {
                format!("; organizations it creates go under key custody in the new keyring {k} (mode 0600)")
            }
            (Some(k), None) => format!("; organizations it creates go under key custody in keyring {k}"),
            _ => String::new(),
        };
        match generate {
            Some(f) => format!("created {target} with a new root key in {} (mode 0600){custody}", f.display()),
            None => format!("created {target}{custody}"),
        }
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
        shredded: &r.shredded,
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
        if !r.shredded.is_empty() {
            lines.push(format!("shredded (custody key destroyed, nothing read): {}", r.shredded.join(", ")));
        }
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
    custody: bool,
}

/// `rotate-root`.
#[derive(Serialize)]
struct RootRotated {
    db: String,
    rotated_root: bool,
}

/// `secret put` (never the value).
#[derive(Serialize)]
struct SecretPut<'a> {
    org: &'a str,
    put: &'a str,
}

/// `secret get --json`.
#[derive(Serialize)]
struct SecretShown<'a> {
    name: &'a str,
    org: &'a str,
    value: &'a str,
}

/// `secret delete`.
#[derive(Serialize)]
struct SecretDeleted<'a> {
    deleted: &'a str,
    org: &'a str,
}

/// `org delete`.
#[derive(Serialize)]
struct OrgDeleted<'a> {
    deleted: &'a str,
    purged: u64,
}

/// `org rotate` and `org rekey`.
#[derive(Serialize)]
struct OrgRotated<'a> {
    batches: u64,
    epoch: u32,
    org: &'a str,
    resealed: u64,
    resumed: bool,
}

impl<'a> OrgRotated<'a> {
    /// The figures of a rotation or re-key of `org`.
    fn of(org: &'a str, r: &silograph::RotationReport) -> Self {
        OrgRotated { batches: r.batches, epoch: r.epoch, org, resealed: r.resealed, resumed: r.resumed }
    }
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
    shredded: &'a [String],
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
