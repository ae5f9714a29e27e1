//! The PostgreSQL backend (feature `postgres`): the storage interface of `kv.rs` over tables of
//! `(key bytea PRIMARY KEY, value bytea NOT NULL)`, one per silograph table, on a small pool of
//! synchronous `postgres` clients.
//!
//! - Snapshots are `REPEATABLE READ, READ ONLY` transactions, pinned when taken (the `BEGIN`
//!   travels with a first statement), each holding one pooled connection until dropped.
//! - Writes are `REPEATABLE READ` transactions whose puts and removes are buffered and flushed at
//!   commit as one statement (a data-modifying CTE per table touched), then `COMMIT`. Two writers
//!   that update the same row (an org's registry entry, bumped by every commit of that org) make
//!   the later one fail with a serialization failure (SQLSTATE 40001), returned as a storage
//!   error of reason `Conflict`, which the store turns into `Error::Conflict(org)`; writers of
//!   different orgs touch disjoint rows and never wait for each other.
//! - A broken connection is `Error::Storage` naming the operation; the client is dropped from the
//!   pool, and the next operation connects again (idle clients found dead at `BEGIN` are replaced
//!   transparently, since nothing was done on them yet).
//!
//! Nothing here sees a key or a plaintext: keys are blinded and values sealed by the engine.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use postgres::error::SqlState;
use postgres::{Client, NoTls, Statement};

use super::kv::{BackendKind, Kv, KvRead, KvSnapshot, KvWrite};
use super::tables::{Table, ALL, META, ORGS};
use crate::error::{Error, Result, StorageError, StorageReason};

/// A client call's result.
type PgResult<T> = std::result::Result<T, postgres::Error>;
/// Key-value pairs in key order.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Version of the SQL schema (the table layout, not the record format): a database created by
/// another layout is `UnsupportedFormat` at open.
pub(crate) const SCHEMA_VERSION: i32 = 1;

/// Idle connections kept for reuse (at most the cap).
const MAX_IDLE: usize = 16;

/// Default cap on the connections one `Db` keeps open at once (`DbBuilder::postgres_max_connections`).
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 32;

/// How long a snapshot or write waits for a connection when all of the cap are busy, before
/// failing with `StorageReason::PoolExhausted`.
const CONNECTION_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The SQL that creates the schema; run at open inside one transaction under an advisory lock,
/// so N instances starting at once do not race on `CREATE TABLE`.
pub(crate) fn schema_sql() -> String {
    let mut sql = String::from(
        "CREATE TABLE IF NOT EXISTS silo_schema (id smallint PRIMARY KEY CHECK (id = 1), version integer NOT NULL);\n",
    );
    for t in ALL {
        sql.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {} (key bytea PRIMARY KEY, value bytea NOT NULL);\n",
            table_name(*t)
        ));
    }
    sql
}

fn table_name(t: Table) -> String {
    format!("silo_{}", t.name)
}

/// Whether a client error means the connection is gone (closed, reset, refused, or the server
/// shutting down): the client must not go back to the pool.
pub(crate) fn is_connection_error(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        return code == &SqlState::ADMIN_SHUTDOWN
            || code == &SqlState::CRASH_SHUTDOWN
            || code == &SqlState::CANNOT_CONNECT_NOW
            || code.code().starts_with("08");
    }
    // No SQLSTATE: an I/O error, a protocol error or a failed connect.
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    e.as_db_error().is_none()
}

/// Whether a client error is a conflict with a concurrent transaction: a serialization failure,
/// a deadlock, or a concurrent insert of the same key.
fn is_conflict(e: &postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        c == &SqlState::T_R_SERIALIZATION_FAILURE
            || c == &SqlState::T_R_DEADLOCK_DETECTED
            || c == &SqlState::UNIQUE_VIOLATION
    })
}

/// A client error as ours: `Error::Storage` naming `op`, with a typed reason (a broken
/// connection, a conflict with a concurrent transaction, or anything else) and the client's error
/// (the server's message and SQLSTATE) as the source.
fn storage(op: &'static str, e: postgres::Error) -> Error {
    let reason = if is_connection_error(&e) {
        StorageReason::Connection
    } else if is_conflict(&e) {
        StorageReason::Conflict
    } else {
        StorageReason::Other
    };
    Error::Storage(StorageError::new(op, reason, Some(Box::new(e))))
}

/// The smallest byte string greater than every string that starts with `prefix` (`None`: there
/// is none, the prefix is empty or all `0xFF`).
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut s = prefix.to_vec();
    while let Some(last) = s.pop() {
        if last < 0xFF {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

/// A `(key, value)` row; a column of another type (a schema edited by hand) is an error, not a
/// panic.
fn pair(r: &postgres::Row) -> PgResult<(Vec<u8>, Vec<u8>)> {
    Ok((r.try_get(0)?, r.try_get(1)?))
}

/// One connection and its prepared statements (by SQL text).
struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
    /// This connection's place under the pool's cap, given up when the connection is dropped.
    _slot: Slot,
    /// The pool's count of round trips (tests read it).
    trips: Arc<AtomicU64>,
}

/// The count of open connections under the cap.
#[derive(Debug)]
struct Slots {
    /// (open now, most ever open at once).
    open: Mutex<(usize, usize)>,
    /// Signalled when a connection closes or goes back idle.
    changed: std::sync::Condvar,
    max: usize,
}

/// One counted connection; dropping it frees its place.
struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.0.open.lock().unwrap_or_else(|p| p.into_inner());
        open.0 = open.0.saturating_sub(1);
        self.0.changed.notify_all();
    }
}

impl Conn {
    /// Counts one round trip.
    fn trip(&self) {
        self.trips.fetch_add(1, Ordering::Relaxed);
    }

    fn statement(&mut self, sql: &str) -> PgResult<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        self.trip();
        let s = self.client.prepare(sql)?;
        self.statements.insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    fn get(&mut self, table: Table, key: &[u8]) -> PgResult<Option<Vec<u8>>> {
        let st = self.statement(&format!("SELECT value FROM {} WHERE key = $1", table_name(table)))?;
        self.client.query_opt(&st, &[&key])?.map(|r| r.try_get::<_, Vec<u8>>(0)).transpose()
    }

    fn get_many(&mut self, table: Table, keys: &[&[u8]]) -> PgResult<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let st = self.statement(&format!("SELECT key, value FROM {} WHERE key = ANY($1)", table_name(table)))?;
        let rows = self.client.query(&st, &[&keys])?;
        let found: HashMap<Vec<u8>, Vec<u8>> = rows.iter().map(pair).collect::<PgResult<_>>()?;
        Ok(keys.iter().map(|k| found.get(*k).cloned()).collect())
    }

    fn scan_prefix(&mut self, table: Table, prefix: &[u8]) -> PgResult<Pairs> {
        let name = table_name(table);
        let rows = match successor(prefix) {
            Some(end) => {
                let st = self
                    .statement(&format!("SELECT key, value FROM {name} WHERE key >= $1 AND key < $2 ORDER BY key"))?;
                self.client.query(&st, &[&prefix, &end])?
            }
            None => {
                let st = self.statement(&format!("SELECT key, value FROM {name} WHERE key >= $1 ORDER BY key"))?;
                self.client.query(&st, &[&prefix])?
            }
        };
        rows.iter().map(pair).collect()
    }

    fn scan_after(&mut self, table: Table, prefix: &[u8], after: &[u8], limit: usize) -> PgResult<Pairs> {
        let name = table_name(table);
        // Past the cursor and inside the prefix: the larger of the two lower bounds.
        let from = if after > prefix { after } else { prefix };
        let op = if after > prefix { ">" } else { ">=" };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match successor(prefix) {
            Some(end) => {
                let st = self.statement(&format!(
                    "SELECT key, value FROM {name} WHERE key {op} $1 AND key < $2 ORDER BY key LIMIT $3"
                ))?;
                self.client.query(&st, &[&from, &end, &limit])?
            }
            None => {
                let st =
                    self.statement(&format!("SELECT key, value FROM {name} WHERE key {op} $1 ORDER BY key LIMIT $2"))?;
                self.client.query(&st, &[&from, &limit])?
            }
        };
        rows.iter().map(pair).collect()
    }

    fn count(&mut self, table: Table) -> PgResult<u64> {
        let st = self.statement(&format!("SELECT count(*) FROM {}", table_name(table)))?;
        let n: i64 = self.client.query_one(&st, &[])?.try_get(0)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// A pool of connections, at most `max` open at once: taken by a snapshot or write, given back
/// when it ends cleanly; a caller finding all of them busy waits for one.
struct Pool {
    config: postgres::Config,
    idle: Mutex<Vec<Conn>>,
    slots: Arc<Slots>,
    trips: Arc<AtomicU64>,
}

/// What [`Pool::acquire`] found.
enum Acquired {
    Idle(Box<Conn>),
    /// A place under the cap, to connect in.
    Free(Slot),
}

impl Pool {
    fn new(config: postgres::Config, max: usize) -> Pool {
        let slots = Slots { open: Mutex::new((0, 0)), changed: std::sync::Condvar::new(), max: max.max(1) };
        Pool { config, idle: Mutex::new(Vec::new()), slots: Arc::new(slots), trips: Arc::new(AtomicU64::new(0)) }
    }

    fn connect(&self, slot: Slot) -> Result<Conn> {
        let client = self.config.connect(NoTls).map_err(|e| storage("connect", e))?;
        Ok(Conn { client, statements: HashMap::new(), _slot: slot, trips: Arc::clone(&self.trips) })
    }

    fn take_idle(&self) -> Option<Conn> {
        self.idle.lock().ok().and_then(|mut v| v.pop())
    }

    /// An idle connection, or a free place under the cap; waits (at most [`CONNECTION_WAIT`])
    /// while every connection is busy.
    fn acquire(&self) -> Result<Acquired> {
        let deadline = std::time::Instant::now() + CONNECTION_WAIT;
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            // Checked under the count's lock: `give_back` signals under it after pushing.
            if let Some(conn) = self.take_idle() {
                return Ok(Acquired::Idle(Box::new(conn)));
            }
            if open.0 < self.slots.max {
                open.0 += 1;
                open.1 = open.1.max(open.0);
                return Ok(Acquired::Free(Slot(Arc::clone(&self.slots))));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(Error::Storage(StorageError::new(
                    "wait for a connection",
                    StorageReason::PoolExhausted,
                    None,
                )));
            }
            open = self.slots.changed.wait_timeout(open, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    fn give_back(&self, conn: Conn) {
        if conn.client.is_closed() {
            return;
        }
        let extra = match self.idle.lock() {
            Ok(mut idle) if idle.len() < MAX_IDLE => {
                idle.push(conn);
                None
            }
            _ => Some(conn),
        };
        // Dropped (its place freed) outside the idle lock; waiters woken under the count's.
        drop(extra);
        let _open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        self.slots.changed.notify_all();
    }

    /// The most connections ever open at once (tests).
    #[cfg(test)]
    fn peak(&self) -> usize {
        self.slots.open.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    /// A connection on which `begin` (the transaction's first round trip) succeeded. Idle
    /// connections found dead are dropped and the next one tried, then a fresh one: a server
    /// restart between two operations costs nothing but reconnecting.
    fn begin(&self, op: &'static str, begin: &str) -> Result<Conn> {
        loop {
            match self.acquire()? {
                Acquired::Idle(mut conn) => {
                    conn.trip();
                    match conn.client.batch_execute(begin) {
                        Ok(()) => return Ok(*conn),
                        Err(e) if is_connection_error(&e) => continue,
                        Err(e) => return Err(storage(op, e)),
                    }
                }
                Acquired::Free(slot) => {
                    let mut conn = self.connect(slot)?;
                    conn.trip();
                    conn.client.batch_execute(begin).map_err(|e| storage(op, e))?;
                    return Ok(conn);
                }
            }
        }
    }
}

/// A PostgreSQL database holding one silograph store.
pub(crate) struct PgKv {
    pool: Arc<Pool>,
}

impl std::fmt::Debug for PgKv {
    // The connection string may hold a password: show where, not how.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgKv").field("hosts", &self.pool.config.get_hosts().len()).finish_non_exhaustive()
    }
}

impl PgKv {
    /// Connects to `url` (a libpq connection string or URI), creates the schema if missing and
    /// checks its version.
    ///
    /// At most `max_connections` connections are open at once (at least 1): one per live
    /// snapshot or write transaction; more callers wait for one.
    pub(crate) fn open(url: &str, max_connections: usize) -> Result<PgKv> {
        let mut config = postgres::Config::from_str(url).map_err(|e| storage("parse connection string", e))?;
        if config.get_application_name().is_none() {
            config.application_name("silograph");
        }
        let kv = PgKv { pool: Arc::new(Pool::new(config, max_connections)) };
        kv.create_schema()?;
        Ok(kv)
    }

    fn create_schema(&self) -> Result<()> {
        const OP: &str = "create schema";
        let mut conn = match self.pool.acquire()? {
            Acquired::Idle(conn) => *conn,
            Acquired::Free(slot) => self.pool.connect(slot)?,
        };
        let sql = format!(
            "BEGIN; SELECT pg_advisory_xact_lock(7306086971736977920); {}\
             INSERT INTO silo_schema (id, version) VALUES (1, {SCHEMA_VERSION}) ON CONFLICT (id) DO NOTHING; COMMIT;",
            schema_sql()
        );
        conn.client.batch_execute(&sql).map_err(|e| storage(OP, e))?;
        let version: i32 = conn
            .client
            .query_one("SELECT version FROM silo_schema WHERE id = 1", &[])
            .and_then(|r| r.try_get(0))
            .map_err(|e| storage(OP, e))?;
        if version != SCHEMA_VERSION {
            return Err(Error::UnsupportedFormat(format!(
                "PostgreSQL schema version {version}; this build reads version {SCHEMA_VERSION}"
            )));
        }
        self.pool.give_back(conn);
        Ok(())
    }

    /// Runs raw SQL on a pooled connection (tests: tampering, inspection).
    #[cfg(test)]
    pub(crate) fn execute_raw(&self, sql: &str) -> Result<()> {
        let mut conn = self.pool.begin("raw", "SELECT 1")?;
        conn.client.batch_execute(sql).map_err(|e| storage("raw", e))?;
        self.pool.give_back(conn);
        Ok(())
    }
}

impl Kv for PgKv {
    fn snapshot(&self) -> Result<Box<dyn KvSnapshot>> {
        // The `SELECT 1` pins the snapshot now, not at the first read.
        let conn = self.pool.begin("begin snapshot", "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SELECT 1")?;
        Ok(Box::new(PgSnapshot { pool: Arc::clone(&self.pool), session: Session::new(conn) }))
    }

    fn begin_write(&self) -> Result<Box<dyn KvWrite>> {
        let conn = self.pool.begin("begin write", "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1")?;
        Ok(Box::new(PgWrite {
            pool: Arc::clone(&self.pool),
            session: Session::new(conn),
            buffer: BTreeMap::new(),
            reads: Mutex::new(HashMap::new()),
        }))
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Postgres
    }

    /// Writers of different orgs in different processes commit concurrently: the database root
    /// tracks membership only (a row every commit rewrote would serialize them all).
    fn serializes_commits(&self) -> bool {
        false
    }

    #[cfg(test)]
    fn round_trips(&self) -> u64 {
        self.pool.trips.load(Ordering::Relaxed)
    }
}

/// One transaction's connection, shared by `&self` reads: `None` once it broke or finished.
struct Session {
    conn: Mutex<Option<Conn>>,
}

impl Session {
    fn new(conn: Conn) -> Self {
        Session { conn: Mutex::new(Some(conn)) }
    }

    /// Runs `f` on the connection; a broken connection is dropped (the transaction is dead, the
    /// pool connects anew for the next one).
    fn with<T>(&self, op: &'static str, f: impl FnOnce(&mut Conn) -> PgResult<T>) -> Result<T> {
        let mut guard = self.conn.lock().map_err(|_| Error::Internal("connection lock poisoned".into()))?;
        let conn = guard.as_mut().ok_or_else(|| Error::Internal(format!("`{op}` on a finished transaction")))?;
        conn.trip();
        f(conn).map_err(|e| {
            if is_connection_error(&e) {
                *guard = None;
            }
            storage(op, e)
        })
    }

    fn take(&mut self) -> Option<Conn> {
        self.conn.get_mut().ok().and_then(Option::take)
    }

    /// Ends the transaction with `ROLLBACK` and returns the connection to the pool (a failure
    /// drops it instead).
    fn rollback(&mut self, pool: &Pool) {
        if let Some(mut conn) = self.take() {
            conn.trip();
            if conn.client.batch_execute("ROLLBACK").is_ok() {
                pool.give_back(conn);
            }
        }
    }
}

/// A `REPEATABLE READ, READ ONLY` transaction on one connection, rolled back when dropped.
struct PgSnapshot {
    pool: Arc<Pool>,
    session: Session,
}

impl PgSnapshot {
    fn with<T>(&self, op: &'static str, f: impl FnOnce(&mut Conn) -> PgResult<T>) -> Result<T> {
        self.session.with(op, f)
    }
}

impl KvRead for PgSnapshot {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.with("get", |c| c.get(table, key))
    }

    fn get_many(&self, table: Table, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        self.with("get_many", |c| c.get_many(table, keys))
    }

    fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.with("scan", |c| c.scan_prefix(table, prefix))
    }

    fn count(&self, table: Table) -> Result<u64> {
        self.with("count", |c| c.count(table))
    }

    fn scan_after(&self, table: Table, prefix: &[u8], after: &[u8], limit: usize) -> Result<Pairs> {
        self.with("scan", |c| c.scan_after(table, prefix, after, limit))
    }
}

impl KvSnapshot for PgSnapshot {}

impl Drop for PgSnapshot {
    fn drop(&mut self) {
        // A read-only transaction: ending it commits nothing.
        self.session.rollback(&self.pool);
    }
}

/// Point reads remembered by a write transaction: (table id, key) → value.
type Memo = HashMap<(u8, Vec<u8>), Option<Vec<u8>>>;

/// Tables whose point reads a write transaction remembers (few, small rows read more than once).
const REMEMBERED: [u8; 2] = [ORGS.id, META.id];

/// Buffered changes of one table: key → new value (`None`: removed).
type Changes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A `REPEATABLE READ` read-write transaction whose changes stay in memory until `commit`.
struct PgWrite {
    pool: Arc<Pool>,
    session: Session,
    /// By table id: the table and its pending changes.
    buffer: BTreeMap<u8, (Table, Changes)>,
    /// Point reads of the small tables (registry, meta) already made in this transaction: its
    /// snapshot does not move (REPEATABLE READ), so a second read of the same row (the conflict
    /// check and the database root both read the org's registry row) needs no round trip.
    reads: Mutex<Memo>,
}

impl PgWrite {
    /// A statement of the transaction; any error aborts it (PostgreSQL refuses every statement
    /// after a failed one), a conflict is `Error::Conflict`.
    fn read<T>(&self, op: &'static str, f: impl FnOnce(&mut Conn) -> PgResult<T>) -> Result<T> {
        self.session.with(op, f)
    }

    fn changes(&self, table: Table) -> Option<&Changes> {
        self.buffer.get(&table.id).map(|(_, c)| c)
    }

    fn stage(&mut self, table: Table, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        let (_, changes) = self.buffer.entry(table.id).or_insert_with(|| (table, Changes::new()));
        changes.insert(key.to_vec(), value.map(<[u8]>::to_vec));
        Ok(())
    }

    /// Sends every buffered change in one statement: per table, an upsert of the new values
    /// from two arrays and a delete of the removed keys, as data-modifying CTEs.
    fn flush(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let buffer = std::mem::take(&mut self.buffer);
        let mut ctes = Vec::new();
        let mut params: Vec<Vec<&[u8]>> = Vec::new();
        for (table, changes) in buffer.values() {
            let name = table_name(*table);
            let (mut keys, mut values, mut removed) = (Vec::new(), Vec::new(), Vec::new());
            for (k, v) in changes {
                match v {
                    Some(v) => {
                        keys.push(k.as_slice());
                        values.push(v.as_slice());
                    }
                    None => removed.push(k.as_slice()),
                }
            }
            if !keys.is_empty() {
                let (a, b) = (params.len() + 1, params.len() + 2);
                ctes.push(format!(
                    "p{a} AS (INSERT INTO {name} (key, value) SELECT * FROM unnest(${a}::bytea[], ${b}::bytea[]) \
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value)"
                ));
                params.push(keys);
                params.push(values);
            }
            if !removed.is_empty() {
                let a = params.len() + 1;
                ctes.push(format!("d{a} AS (DELETE FROM {name} WHERE key = ANY(${a}::bytea[]))"));
                params.push(removed);
            }
        }
        let sql = format!("WITH {} SELECT 1", ctes.join(", "));
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn postgres::types::ToSql + Sync)).collect();
        self.read("commit", |c| {
            let st = c.statement(&sql)?;
            c.client.execute(&st, &refs).map(|_| ())
        })
    }
}

impl KvRead for PgWrite {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.changes(table).and_then(|c| c.get(key)) {
            return Ok(v.clone());
        }
        if !REMEMBERED.contains(&table.id) {
            return self.read("get", |c| c.get(table, key));
        }
        let memo = (table.id, key.to_vec());
        if let Some(v) = self.reads.lock().ok().and_then(|m| m.get(&memo).cloned()) {
            return Ok(v);
        }
        let v = self.read("get", |c| c.get(table, key))?;
        if let Ok(mut m) = self.reads.lock() {
            m.insert(memo, v.clone());
        }
        Ok(v)
    }

    fn get_many(&self, table: Table, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        let changes = self.changes(table);
        let missing: Vec<&[u8]> =
            keys.iter().copied().filter(|k| changes.is_none_or(|c| !c.contains_key(*k))).collect();
        let mut stored = self.read("get_many", |c| c.get_many(table, &missing))?.into_iter();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            match changes.and_then(|c| c.get(*k)) {
                Some(v) => out.push(v.clone()),
                None => out.push(stored.next().flatten()),
            }
        }
        Ok(out)
    }

    fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let stored = self.read("scan", |c| c.scan_prefix(table, prefix))?;
        let Some(changes) = self.changes(table) else { return Ok(stored) };
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = stored.into_iter().collect();
        for (k, v) in changes.range(prefix.to_vec()..).take_while(|(k, _)| k.starts_with(prefix)) {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().collect())
    }

    fn count(&self, table: Table) -> Result<u64> {
        let stored = self.read("count", |c| c.count(table))?;
        let Some(changes) = self.changes(table) else { return Ok(stored) };
        // Each buffered key: is it stored now, will it be after the flush?
        let keys: Vec<&[u8]> = changes.keys().map(Vec::as_slice).collect();
        let present = self.read("count", |c| c.get_many(table, &keys))?;
        let mut n = stored;
        for (was, will) in present.iter().zip(changes.values()) {
            match (was.is_some(), will.is_some()) {
                (false, true) => n += 1,
                (true, false) => n = n.saturating_sub(1),
                _ => {}
            }
        }
        Ok(n)
    }
}

impl KvWrite for PgWrite {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.stage(table, key, Some(value))
    }

    fn remove(&mut self, table: Table, key: &[u8]) -> Result<()> {
        self.stage(table, key, None)
    }

    fn commit(mut self: Box<Self>) -> Result<()> {
        self.flush()?;
        self.read("commit", |c| c.client.batch_execute("COMMIT"))?;
        if let Some(conn) = self.session.take() {
            self.pool.give_back(conn);
        }
        Ok(())
    }
}

impl Drop for PgWrite {
    fn drop(&mut self) {
        // Not committed (or committed: then the session is empty and this does nothing).
        self.session.rollback(&self.pool);
    }
}

/// Test support: a fresh, empty PostgreSQL schema per test, from `SILOGRAPH_POSTGRES_URL`.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::atomic::{AtomicU32, Ordering};

    /// The server's connection string: `None` (with a printed line) when unset outside CI; a
    /// panic when unset in CI (`CI=true`), where the postgres tests must run.
    pub(crate) fn server_url() -> Option<String> {
        match std::env::var("SILOGRAPH_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => Some(url),
            _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("SILOGRAPH_POSTGRES_URL is not set in CI: run the postgres tests through .ci/pg.sh")
            }
            _ => {
                println!("skipped: SILOGRAPH_POSTGRES_URL is not set (bash .ci/pg.sh cargo test --features postgres postgres)");
                None
            }
        }
    }

    /// A connection string whose `search_path` is a new empty schema (tests run in parallel).
    pub(crate) fn fresh_url() -> Option<String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let url = server_url()?;
        let schema = format!("t_unit_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let mut c = postgres::Client::connect(&url, postgres::NoTls).ok()?;
        c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")).ok()?;
        Some(format!("{url} options='-c search_path={schema}'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tables::NODES;

    fn open() -> Option<PgKv> {
        let url = testing::fresh_url()?;
        Some(PgKv::open(&url, DEFAULT_MAX_CONNECTIONS).expect("open"))
    }

    #[test]
    fn postgres_backend_passes_the_storage_conformance_checks() {
        let Some(kv) = open() else { return };
        crate::store::kv::conformance(&kv);
    }

    #[test]
    fn postgres_pool_never_opens_more_than_its_cap_and_waiters_all_complete() {
        let Some(url) = testing::fresh_url() else { return };
        let kv = PgKv::open(&url, 2).expect("open");
        let done = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let (kv, done) = (&kv, &done);
                s.spawn(move || {
                    for i in 0..20u8 {
                        let snap = kv.snapshot().expect("snapshot");
                        assert_eq!(snap.get(NODES, &[t, i]).expect("get"), None);
                        std::thread::sleep(std::time::Duration::from_millis(1));
                        drop(snap);
                        let mut w = kv.begin_write().expect("begin_write");
                        w.put(NODES, &[t, i], &[i]).expect("put");
                        w.commit().expect("commit");
                    }
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                });
            }
        });
        assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 8, "every thread finished");
        assert_eq!(kv.snapshot().expect("snapshot").count(NODES).expect("count"), 160);
        assert_eq!(kv.pool.peak(), 2, "the pool opened more than its cap, or never used it all");
    }

    #[test]
    fn postgres_pool_of_one_wakes_a_waiter_when_the_connection_comes_back() {
        let Some(url) = testing::fresh_url() else { return };
        let kv = PgKv::open(&url, 1).expect("open");
        let held = kv.snapshot().expect("snapshot");
        std::thread::scope(|s| {
            let h = s.spawn(|| kv.snapshot().map(|_| ()));
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(held);
            h.join().expect("waiter").expect("the waiter got the connection given back");
        });
        assert_eq!(kv.pool.peak(), 1);
    }

    /// Round trips of `f` on `db`'s server.
    fn trips_of<T>(db: &crate::Db, f: impl FnOnce() -> T) -> (T, u64) {
        let before = db.inner.kv.round_trips();
        let out = f();
        (out, db.inner.kv.round_trips() - before)
    }

    #[test]
    fn postgres_subgraph_and_shortest_path_fetch_each_level_in_a_few_round_trips() {
        use crate::{Direction, EdgeInput, NodeInput, PathOptions, RootKey};
        let Some(url) = testing::fresh_url() else { return };
        // No page cache: every page a query needs comes from the server.
        let db = crate::Db::builder().cache_size(0).open_postgres(&url, RootKey::from_bytes([9; 32])).expect("open");
        let org = db.create_org("acme").expect("org");
        // a → 40 middles → 40 lasts (one each) → b: subgraph(a, 2) has 81 nodes, the path a→b
        // has 3 hops and both of its middle levels have 40 nodes.
        const WIDTH: usize = 40;
        let mut w = org.write().expect("write");
        let a = w.upsert_node(NodeInput::new("n").source("s", "a")).expect("node");
        let b = w.upsert_node(NodeInput::new("n").source("s", "b")).expect("node");
        for i in 0..WIDTH {
            let m = w.upsert_node(NodeInput::new("n").source("s", format!("m{i}"))).expect("node");
            let l = w.upsert_node(NodeInput::new("n").source("s", format!("l{i}"))).expect("node");
            w.add_edge(EdgeInput::new(a, m, "to")).expect("edge");
            w.add_edge(EdgeInput::new(m, l, "to")).expect("edge");
            w.add_edge(EdgeInput::new(l, b, "to")).expect("edge");
        }
        w.commit().expect("commit");

        let r = org.read().expect("read");
        let (sg, used) = trips_of(&db, || r.traverse(a).direction(Direction::Out).max_depth(2).subgraph());
        let sg = sg.expect("subgraph");
        assert_eq!(sg.nodes.len(), 1 + 2 * WIDTH);
        assert_eq!(sg.edges.len(), 2 * WIDTH);
        // Per level a page-0 and a further-page round trip, the last level's out-pages for the
        // edges, and the state-tree nodes those pages are checked against (a few, cached after):
        // one page at a time it would be over 2 × WIDTH.
        assert!(used <= 16, "subgraph: {used} round trips");

        let (path, used) = trips_of(&db, || r.shortest_path(a, b, &PathOptions::new().direction(Direction::Out)));
        let path = path.expect("path").expect("a path");
        assert_eq!(path.len(), 3);
        assert!(used <= 16, "shortest path: {used} round trips");
    }

    #[test]
    fn successor_is_the_next_prefix() {
        assert_eq!(successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(successor(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(successor(&[0xFF, 0xFF]), None);
        assert_eq!(successor(b""), None);
    }

    #[test]
    fn postgres_writes_are_visible_to_their_txn_and_after_commit_only() {
        let Some(kv) = open() else { return };
        let before = kv.snapshot().unwrap();
        let mut w = kv.begin_write().unwrap();
        w.put(NODES, b"k1", b"v1").unwrap();
        w.put(NODES, b"k2", b"v2").unwrap();
        w.put(NODES, &[b'k', 0xFF], b"v3").unwrap();
        w.put(ORGS, b"k1", b"other table").unwrap();
        assert_eq!(w.get(NODES, b"k1").unwrap(), Some(b"v1".to_vec()));
        assert_eq!(w.count(NODES).unwrap(), 3);
        w.commit().unwrap();
        assert_eq!(before.get(NODES, b"k1").unwrap(), None, "a snapshot does not see later commits");
        let s = kv.snapshot().unwrap();
        assert_eq!(
            s.get_many(NODES, &[b"k2", b"x", b"k1", b"k2"]).unwrap(),
            vec![Some(b"v2".to_vec()), None, Some(b"v1".to_vec()), Some(b"v2".to_vec())]
        );
        let scan: Vec<_> = s.scan_prefix(NODES, b"k").unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(scan, vec![b"k1".to_vec(), b"k2".to_vec(), vec![b'k', 0xFF]]);
        assert_eq!(s.scan_prefix(NODES, &[b'k', 0xFF]).unwrap().len(), 1);
        assert_eq!(s.count(NODES).unwrap(), 3);
        assert_eq!(s.get(ORGS, b"k1").unwrap(), Some(b"other table".to_vec()));

        let mut w = kv.begin_write().unwrap();
        w.remove(NODES, b"k1").unwrap();
        w.put(NODES, b"k0", b"v0").unwrap();
        w.put(NODES, b"k2", b"v2'").unwrap();
        assert_eq!(w.get(NODES, b"k1").unwrap(), None);
        assert_eq!(w.count(NODES).unwrap(), 3);
        let keys: Vec<_> = w.scan_prefix(NODES, b"k").unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![b"k0".to_vec(), b"k2".to_vec(), vec![b'k', 0xFF]]);
        assert_eq!(
            w.get_many(NODES, &[b"k1", b"k2", b"k0"]).unwrap(),
            vec![None, Some(b"v2'".to_vec()), Some(b"v0".to_vec())]
        );
        drop(w);
        assert_eq!(
            kv.snapshot().unwrap().get(NODES, b"k1").unwrap(),
            Some(b"v1".to_vec()),
            "a dropped write leaves nothing"
        );
        assert_eq!(s.count(META).unwrap(), 0);
    }

    #[test]
    fn postgres_writers_of_one_row_conflict_and_of_disjoint_rows_do_not() {
        let Some(kv) = open() else { return };
        let mut w = kv.begin_write().unwrap();
        w.put(ORGS, b"a", b"0").unwrap();
        w.put(ORGS, b"b", b"0").unwrap();
        w.commit().unwrap();

        let mut a = kv.begin_write().unwrap();
        let mut b = kv.begin_write().unwrap();
        let mut c = kv.begin_write().unwrap();
        assert_eq!(a.get(ORGS, b"a").unwrap(), Some(b"0".to_vec()));
        assert_eq!(b.get(ORGS, b"a").unwrap(), Some(b"0".to_vec()));
        assert_eq!(c.get(ORGS, b"b").unwrap(), Some(b"0".to_vec()));
        a.put(ORGS, b"a", b"1").unwrap();
        b.put(ORGS, b"a", b"2").unwrap();
        c.put(ORGS, b"b", b"1").unwrap();
        a.commit().unwrap();
        c.commit().expect("a writer of another row does not conflict");
        match b.commit() {
            Err(Error::Storage(e)) if e.reason() == StorageReason::Conflict => {}
            other => panic!("expected a conflict, got {other:?}"),
        }
        let s = kv.snapshot().unwrap();
        assert_eq!(s.get(ORGS, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.get(ORGS, b"b").unwrap(), Some(b"1".to_vec()));
    }

    #[test]
    fn postgres_schema_of_another_version_is_unsupported_format() {
        let Some(url) = testing::fresh_url() else { return };
        let kv = PgKv::open(&url, DEFAULT_MAX_CONNECTIONS).unwrap();
        kv.execute_raw("UPDATE silo_schema SET version = 99").unwrap();
        match PgKv::open(&url, DEFAULT_MAX_CONNECTIONS) {
            Err(Error::UnsupportedFormat(m)) => assert!(m.contains("99"), "{m}"),
            other => panic!("expected UnsupportedFormat, got {other:?}"),
        }
    }

    #[test]
    fn postgres_unreachable_server_is_a_storage_error_naming_the_operation() {
        if testing::server_url().is_none() {
            return;
        }
        // A closed loopback port.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        match PgKv::open(&format!("host=127.0.0.1 port={port} user=silo connect_timeout=5"), 4) {
            Err(Error::Storage(e)) => {
                assert_eq!(e.operation(), "connect");
                assert_eq!(e.reason(), StorageReason::Connection);
            }
            other => panic!("expected a storage error, got {other:?}"),
        }
    }
}
