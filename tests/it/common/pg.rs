//! The PostgreSQL fixtures (feature `postgres`): the server from `SILOGRAPH_POSTGRES_URL`
//! (`.ci/pg.sh` starts one), a fresh schema per test, raw SQL for tampering and inspection, and
//! a lock that lets the restart test run alone.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use silograph::{Db, RootKey};

/// The server's connection string: `None` (with a printed line) when unset outside CI, a panic
/// when unset in CI (`CI=true`), where the postgres tests must run, not skip.
pub fn server_url() -> Option<String> {
    match std::env::var("SILOGRAPH_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("SILOGRAPH_POSTGRES_URL is not set in CI: run the postgres tests through .ci/pg.sh")
        }
        _ => {
            println!(
                "skipped: SILOGRAPH_POSTGRES_URL is not set (bash .ci/pg.sh cargo test --features postgres postgres)"
            );
            None
        }
    }
}

/// Tests hold it shared; the server-restart test holds it alone (a restart breaks every
/// connection of every test running at that moment).
static SERVER: RwLock<()> = RwLock::new(());

pub fn shared_server() -> RwLockReadGuard<'static, ()> {
    SERVER.read().unwrap_or_else(|p| p.into_inner())
}

pub fn exclusive_server() -> RwLockWriteGuard<'static, ()> {
    SERVER.write().unwrap_or_else(|p| p.into_inner())
}

/// One test's own empty PostgreSQL schema (the store's tables go there), dropped at the end.
pub struct Schema {
    pub name: String,
    /// The connection string with `search_path` set to the schema.
    pub url: String,
    server: String,
    _guard: Option<RwLockReadGuard<'static, ()>>,
}

impl Schema {
    /// A fresh schema; `None` when the tests are skipped (no server outside CI).
    pub fn new(what: &str) -> Option<Schema> {
        Schema::make(what, Some(shared_server()))
    }

    /// A fresh schema for a test that holds [`exclusive_server`] itself.
    pub fn unguarded(what: &str) -> Option<Schema> {
        Schema::make(what, None)
    }

    fn make(what: &str, guard: Option<RwLockReadGuard<'static, ()>>) -> Option<Schema> {
        static N: AtomicU32 = AtomicU32::new(0);
        let server = server_url()?;
        let name = format!("t_{what}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let mut c = postgres::Client::connect(&server, postgres::NoTls).expect("connect to the test server");
        c.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}")).unwrap();
        let url = format!("{server} options='-c search_path={name}'");
        Some(Schema { name, url, server, _guard: guard })
    }

    /// Opens the store in this schema.
    pub fn open(&self, root: RootKey) -> silograph::Result<Db> {
        Db::builder().cache_size(4 << 20).open_postgres(&self.url, root)
    }

    /// A client on this schema, for raw SQL.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("connect to the test schema")
    }

    /// Every row of every table of the store, in order: what the database holds.
    pub fn rows(&self) -> Vec<(String, Vec<u8>, Vec<u8>)> {
        let mut c = self.client();
        let tables: Vec<String> = c
            .query(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1",
                &[&self.name],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut out = Vec::new();
        for t in tables.into_iter().filter(|t| t != "silo_schema") {
            for r in c.query(&format!("SELECT key, value FROM {t} ORDER BY key"), &[]).unwrap() {
                out.push((t.clone(), r.get(0), r.get(1)));
            }
        }
        out
    }

    /// `pg_dump` of the schema, as a person would take it.
    pub fn pg_dump(&self) -> Vec<u8> {
        let bin =
            std::env::var("SILOGRAPH_PG_BIN").map(|b| format!("{b}/pg_dump")).unwrap_or_else(|_| "pg_dump".into());
        let out = std::process::Command::new(bin)
            .args(["--no-owner", "-n", &self.name, "-d", &self.server])
            .output()
            .expect("run pg_dump");
        assert!(out.status.success(), "pg_dump failed: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.server, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
        }
    }
}

/// Runs `pg_ctl stop`, `start` or `restart` on the test server (as the `postgres` user when
/// root), with the options `.ci/pg.sh` started it with.
pub fn pg_ctl(action: &str) {
    let env = |v: &str| std::env::var(v).unwrap_or_else(|_| panic!("{v} is not set (.ci/pg.sh sets it)"));
    let (data, bin, opts) = (env("SILOGRAPH_POSTGRES_DATADIR"), env("SILOGRAPH_PG_BIN"), env("SILOGRAPH_PG_OPTS"));
    let log = format!("{data}/../server.log");
    let mut args: Vec<String> = vec![format!("{bin}/pg_ctl"), "-D".into(), data, "-w".into(), "-t".into(), "60".into()];
    if action != "stop" {
        args.extend(["-l".into(), log, "-o".into(), opts]);
    }
    if action != "start" {
        args.extend(["-m".into(), "fast".into()]);
    }
    args.push(action.into());
    let is_root = std::process::Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    let status = if is_root {
        std::process::Command::new("runuser").args(["-u", "postgres", "--"]).args(&args).status()
    } else {
        std::process::Command::new(&args[0]).args(&args[1..]).status()
    }
    .expect("run pg_ctl");
    assert!(status.success(), "pg_ctl {action} failed");
}
