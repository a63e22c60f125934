//! `backup`: database dumps streamed through compression and SHA-256 into a store, with a
//! manifest written last beside each object (`<key>.manifest.json`): an object without one is an
//! incomplete backup and is never listed. Verification restores into a scratch database and
//! compares row counts; restore refuses a database that has tables unless told to clean it.
//!
//! PostgreSQL goes through pg_dump/pg_restore (in an exported snapshot, so the row counts of
//! the manifest are those of the dump), SQLite through `VACUUM INTO`, MySQL/MariaDB through
//! mysqldump --single-transaction. Passwords reach the tools through their environment
//! (PGPASSWORD, MYSQL_PWD), never their command line.
pub mod fake;
pub mod lua;
mod marker;
pub mod prune;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll};
use std::time::Instant;

use sha2::{Digest, Sha256};
use sqlx::Connection;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, ReadBuf};

use super::storage::{StorageError, Store};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{tool} failed (exit {code}): {stderr}")]
    Tool { tool: String, code: i32, stderr: String },
    #[error("{0}")]
    Database(String),
    #[error("{key}: checksum mismatch, the object is corrupted or truncated (manifest {expected}, {bytes} bytes read with SHA-256 {actual}); nothing was restored")]
    Corrupt { key: String, expected: String, actual: String, bytes: u64 },
}

impl From<sqlx::Error> for BackupError {
    fn from(e: sqlx::Error) -> Self {
        BackupError::Database(crate::secret::redact(&e.to_string()).into_owned())
    }
}

/// A database a backup comes from or goes to.
#[derive(Debug, Clone)]
pub enum Source {
    /// `tls`: sslmode, sslrootcert, sslcert and sslkey from the URL's query, kept for the tools
    /// (PGSSLMODE ...) and the connections.
    Postgres {
        host: String,
        port: u16,
        user: String,
        password: Option<String>,
        db: String,
        tls: Vec<(String, String)>,
    },
    MySql {
        host: String,
        port: u16,
        user: String,
        password: Option<String>,
        db: String,
    },
    Sqlite {
        path: PathBuf,
    },
}

impl Source {
    pub fn parse(url: &str, base: &Path) -> Result<Source, BackupError> {
        if let Some(rest) = url.strip_prefix("sqlite://") {
            let p = PathBuf::from(rest.split('?').next().unwrap_or(rest));
            return Ok(Source::Sqlite { path: if p.is_absolute() { p } else { base.join(p) } });
        }
        // The URL is never echoed: a malformed one may still hold a password.
        let u = reqwest::Url::parse(url).map_err(|e| {
            BackupError::Usage(format!(
                "invalid database URL ({e}): expected postgres://user:password@host:port/db, mysql://... or sqlite://PATH"
            ))
        })?;
        // IPv6 hosts come bracketed in URLs, not in PGHOST.
        let host = u.host_str().unwrap_or("localhost").trim_start_matches('[').trim_end_matches(']').to_string();
        let user = percent_decode(u.username());
        let password = u.password().map(percent_decode);
        let db = percent_decode(u.path().trim_start_matches('/'));
        match u.scheme() {
            "postgres" | "postgresql" => Ok(Source::Postgres {
                host,
                port: u.port().unwrap_or(5432),
                user: if user.is_empty() { "postgres".into() } else { user },
                password,
                db: if db.is_empty() { "postgres".into() } else { db },
                tls: u
                    .query_pairs()
                    .filter(|(k, _)| ["sslmode", "sslrootcert", "sslcert", "sslkey"].contains(&k.as_ref()))
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect(),
            }),
            "mysql" | "mariadb" => Ok(Source::MySql {
                host,
                port: u.port().unwrap_or(3306),
                user: if user.is_empty() { "root".into() } else { user },
                password,
                db,
            }),
            other => Err(BackupError::Usage(format!(
                "unsupported database '{other}://': use postgres://, mysql:// or sqlite://PATH"
            ))),
        }
    }

    pub fn engine(&self) -> &'static str {
        match self {
            Source::Postgres { .. } => "postgres",
            Source::MySql { .. } => "mysql",
            Source::Sqlite { .. } => "sqlite",
        }
    }

    /// For people and manifests: never the password.
    pub fn shown(&self) -> String {
        match self {
            Source::Postgres { host, port, user, db, .. } => format!("postgres://{user}@{host}:{port}/{db}"),
            Source::MySql { host, port, user, db, .. } => format!("mysql://{user}@{host}:{port}/{db}"),
            Source::Sqlite { path } => format!("sqlite://{}", path.display()),
        }
    }

    fn db_name(&self) -> String {
        match self {
            Source::Postgres { db, .. } | Source::MySql { db, .. } => db.clone(),
            Source::Sqlite { path } => path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        }
    }

    /// The same server, another database.
    fn with_db(&self, name: &str) -> Source {
        match self.clone() {
            Source::Postgres { host, port, user, password, tls, .. } => {
                Source::Postgres { host, port, user, password, db: name.into(), tls }
            }
            Source::MySql { host, port, user, password, .. } => {
                Source::MySql { host, port, user, password, db: name.into() }
            }
            s => s,
        }
    }

    /// A PostgreSQL connection, from options (an IPv6 host or any character in a password
    /// goes through untouched).
    async fn pg(&self) -> Result<sqlx::PgConnection, BackupError> {
        let Source::Postgres { host, port, user, password, db, tls } = self else {
            return Err(BackupError::Usage(format!("{} is not a PostgreSQL database", self.shown())));
        };
        let mut o = sqlx::postgres::PgConnectOptions::new().host(host).port(*port).username(user).database(db);
        if let Some(p) = password {
            o = o.password(p);
        }
        for (k, v) in tls {
            o = match k.as_str() {
                "sslmode" => o.ssl_mode(v.parse().map_err(|_| BackupError::Usage(format!("invalid sslmode '{v}'")))?),
                "sslrootcert" => o.ssl_root_cert(v.as_str()),
                "sslcert" => o.ssl_client_cert(v.as_str()),
                _ => o.ssl_client_key(v.as_str()),
            };
        }
        Ok(sqlx::PgConnection::connect_with(&o).await?)
    }

    async fn mysql(&self) -> Result<sqlx::MySqlConnection, BackupError> {
        let Source::MySql { host, port, user, password, db } = self else {
            return Err(BackupError::Usage(format!("{} is not a MySQL database", self.shown())));
        };
        let mut o = sqlx::mysql::MySqlConnectOptions::new().host(host).port(*port).username(user);
        if !db.is_empty() {
            o = o.database(db);
        }
        if let Some(p) = password {
            o = o.password(p);
        }
        Ok(sqlx::MySqlConnection::connect_with(&o).await?)
    }

    fn url(&self) -> String {
        let pw = |p: &Option<String>| p.as_ref().map(|p| format!(":{}", percent_encode(p))).unwrap_or_default();
        match self {
            Source::Postgres { host, port, user, password, db, tls } => {
                let host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
                let query: Vec<String> = tls.iter().map(|(k, v)| format!("{k}={}", percent_encode(v))).collect();
                let query = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
                format!(
                    "postgres://{}{}@{host}:{port}/{}{query}",
                    percent_encode(user),
                    pw(password),
                    percent_encode(db)
                )
            }
            Source::MySql { host, port, user, password, db } => {
                format!("mysql://{}{}@{host}:{port}/{}", percent_encode(user), pw(password), percent_encode(db))
            }
            Source::Sqlite { path } => format!("sqlite://{}", path.display()),
        }
    }

    /// Environment for the PostgreSQL tools: the password never on a command line.
    fn pg_env(&self, cmd: &mut tokio::process::Command) {
        // The tool's server session shows whom it works for, as the db primitive's do.
        if let Ok(label) = WORK_LABEL.try_with(String::clone) {
            cmd.env("PGAPPNAME", label);
        }
        if let Source::Postgres { host, port, user, password, db, tls } = self {
            cmd.env("PGHOST", host).env("PGPORT", port.to_string()).env("PGUSER", user).env("PGDATABASE", db);
            for (k, v) in tls {
                cmd.env(format!("PG{}", k.to_uppercase()), v);
            }
            cmd.env_remove("PGPASSWORD");
            if let Some(p) = password {
                cmd.env("PGPASSWORD", p);
            }
        }
    }

    fn mysql_args(&self, cmd: &mut tokio::process::Command) {
        if let Source::MySql { host, port, user, password, .. } = self {
            cmd.arg(format!("--host={host}")).arg(format!("--port={port}")).arg(format!("--user={user}"));
            cmd.env_remove("MYSQL_PWD");
            if let Some(p) = password {
                cmd.env("MYSQL_PWD", p);
            }
        }
    }
}

tokio::task_local! {
    /// The attempt a backup works for (`runbook/<run>/<step>#<attempt>`), set by the Lua
    /// binding around each call.
    pub static WORK_LABEL: String;
}

/// A dump or restore tool carries its attempt's label like `exec`'s commands, so that one left
/// running by a killed runner is found and stopped before the step runs again.
fn label_tool(cmd: &mut tokio::process::Command) {
    if let Ok(label) = WORK_LABEL.try_with(String::clone) {
        cmd.env(crate::primitives::exec::orphans::LABEL_VAR, label);
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Compression of the stored object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compress {
    Zstd,
    Gzip,
    None,
}

impl Compress {
    fn ext(self) -> &'static str {
        match self {
            Compress::Zstd => ".zst",
            Compress::Gzip => ".gz",
            Compress::None => "",
        }
    }
}

/// A reader that counts, and hashes, what passes through it.
struct Tap<R> {
    inner: R,
    hasher: Option<Sha256>,
    count: u64,
}

impl<R> Tap<R> {
    fn new(inner: R, hash: bool) -> Tap<R> {
        Tap { inner, hasher: hash.then(Sha256::new), count: 0 }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Tap<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let new = &buf.filled()[before..];
            self.count += new.len() as u64;
            if let Some(h) = &mut self.hasher {
                h.update(new);
            }
        }
        r
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What `backup.create` asks for.
pub struct CreateSpec {
    pub source: Source,
    pub store: Store,
    pub prefix: String,
    pub compress: Compress,
    pub level: Option<i32>,
    /// PostgreSQL: "custom" (default) or "plain".
    pub plain: bool,
    pub tables: Vec<String>,
    pub label: Option<String>,
}

/// The record of one backup, stored beside it as JSON.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub id: String,
    pub store: String,
    pub key: String,
    pub created_at: String,
    pub engine: String,
    pub server_version: String,
    pub tool: String,
    pub tool_version: String,
    pub source: String,
    pub format: String,
    pub compress: Compress,
    pub bytes_raw: u64,
    pub bytes_stored: u64,
    pub sha256: String,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub tables: BTreeMap<String, i64>,
    /// MySQL: the rows counted again after the dump (its snapshot lies between the two counts).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tables_after: BTreeMap<String, i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<serde_json::Value>,
}

pub fn manifest_key(key: &str) -> String {
    format!("{key}.manifest.json")
}

/// The newest PostgreSQL client tool installed (a pg_dump must be at least the server's major).
fn pg_tool(name: &str) -> PathBuf {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let p = e.path().join("bin").join(name);
            p.exists().then_some((v, p))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, p)| p).unwrap_or_else(|| PathBuf::from(name))
}

fn mysql_tool(names: &[&str]) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for n in names {
        for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
            let p = dir.join(n);
            if p.exists() {
                return p;
            }
        }
    }
    PathBuf::from(names[0])
}

async fn tool_version(tool: &Path) -> String {
    match tokio::process::Command::new(tool).arg("--version").output().await {
        Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Err(_) => String::new(),
    }
}

fn quote_ident(name: &str, mysql: bool) -> String {
    if mysql {
        format!("`{}`", name.replace('`', "``"))
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// The tables a `tables` option names, checked against the database's: (name as the manifest
/// keys it, pg_dump pattern). `public.x` and `x` are the same table; an unknown name is an error.
async fn pg_select(conn: &mut sqlx::PgConnection, wanted: &[String]) -> Result<Vec<(String, String)>, BackupError> {
    let all: Vec<(String, String)> = sqlx::query_as(
        "select table_schema::text, table_name::text from information_schema.tables
         where table_type = 'BASE TABLE' and table_schema not in ('pg_catalog', 'information_schema')",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::new();
    for w in wanted {
        let w2 = w.strip_prefix("public.").unwrap_or(w);
        let found = all.iter().find(|(schema, table)| {
            let name = if schema == "public" { table.clone() } else { format!("{schema}.{table}") };
            name == w2
        });
        match found {
            Some((schema, table)) => {
                let name = if schema == "public" { table.clone() } else { format!("{schema}.{table}") };
                out.push((name, format!("{}.{}", quote_ident(schema, false), quote_ident(table, false))));
            }
            None => return Err(BackupError::Usage(format!("tables: no table '{w}' in the database"))),
        }
    }
    Ok(out)
}

/// Row counts of the user tables (optionally only `only`), and the server's version.
async fn inventory_pg(
    conn: &mut sqlx::PgConnection,
    only: &[String],
) -> Result<(BTreeMap<String, i64>, String), BackupError> {
    let version: String = sqlx::query_scalar("show server_version").fetch_one(&mut *conn).await?;
    let tables: Vec<(String, String)> = sqlx::query_as(
        "select table_schema::text, table_name::text from information_schema.tables
         where table_type = 'BASE TABLE' and table_schema not in ('pg_catalog', 'information_schema')
         order by 1, 2",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut counts = BTreeMap::new();
    for (schema, table) in tables {
        let name = if schema == "public" { table.clone() } else { format!("{schema}.{table}") };
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        let sql = format!("select count(*) from {}.{}", quote_ident(&schema, false), quote_ident(&table, false));
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut *conn).await?;
        counts.insert(name, n);
    }
    Ok((counts, version))
}

async fn inventory_mysql(
    conn: &mut sqlx::MySqlConnection,
    only: &[String],
) -> Result<(BTreeMap<String, i64>, String), BackupError> {
    let version: String = sqlx::query_scalar("select version()").fetch_one(&mut *conn).await?;
    let tables: Vec<(String,)> = sqlx::query_as(
        "select cast(table_name as char) from information_schema.tables where table_schema = database() and table_type = 'BASE TABLE' order by 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut counts = BTreeMap::new();
    for (table,) in tables {
        if !only.is_empty() && !only.contains(&table) {
            continue;
        }
        let sql = format!("select count(*) from {}", quote_ident(&table, true));
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut *conn).await?;
        counts.insert(table, n);
    }
    Ok((counts, version))
}

async fn inventory_sqlite(path: &Path, only: &[String]) -> Result<(BTreeMap<String, i64>, String), BackupError> {
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(path).read_only(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&opts).await?;
    let version: String = sqlx::query_scalar("select sqlite_version()").fetch_one(&mut conn).await?;
    let tables: Vec<(String,)> =
        sqlx::query_as("select name from sqlite_master where type = 'table' and name not like 'sqlite_%' order by 1")
            .fetch_all(&mut conn)
            .await?;
    let mut counts = BTreeMap::new();
    for (table,) in tables {
        if !only.is_empty() && !only.contains(&table) {
            continue;
        }
        let sql = format!("select count(*) from {}", quote_ident(&table, false));
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut conn).await?;
        counts.insert(table, n);
    }
    conn.close().await?;
    Ok((counts, version))
}

/// A private temporary folder (0700, tempfile's default) removed when dropped. Verification and
/// restore keep the downloaded object here until its checksum is known: RUNBOOK_SCRATCH_DIR
/// moves it off a small or memory-backed /tmp.
fn scratch() -> Result<tempfile::TempDir, BackupError> {
    let base = std::env::var_os("RUNBOOK_SCRATCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new().prefix("runbook-backup-").tempdir_in(&base).map_err(|e| {
        BackupError::Usage(format!("cannot create a folder in {} (RUNBOOK_SCRATCH_DIR): {e}", base.display()))
    })
}

/// Streams `raw` through compression and hashing into `store` at `key`; returns (raw bytes,
/// stored bytes, SHA-256 of the stored bytes).
async fn upload(
    store: &Store,
    key: &str,
    raw: impl AsyncRead + Unpin + Send,
    compress: Compress,
    level: Option<i32>,
) -> Result<(u64, u64, String), BackupError> {
    let mut raw = Tap::new(raw, false);
    let lvl = |l: Option<i32>| l.map(async_compression::Level::Precise).unwrap_or(async_compression::Level::Default);
    let (stored, raw_count) = match compress {
        Compress::Zstd => {
            let enc = async_compression::tokio::bufread::ZstdEncoder::with_quality(
                BufReader::with_capacity(256 * 1024, &mut raw),
                lvl(level),
            );
            let mut tap = Tap::new(enc, true);
            store.put_reader(key, &mut tap).await?;
            (tap_result(tap), 0)
        }
        Compress::Gzip => {
            let enc = async_compression::tokio::bufread::GzipEncoder::with_quality(
                BufReader::with_capacity(256 * 1024, &mut raw),
                lvl(level),
            );
            let mut tap = Tap::new(enc, true);
            store.put_reader(key, &mut tap).await?;
            (tap_result(tap), 0)
        }
        Compress::None => {
            let mut tap = Tap::new(&mut raw, true);
            store.put_reader(key, &mut tap).await?;
            let r = tap_result(tap);
            (r, 0)
        }
    };
    let _ = raw_count;
    Ok((raw.count, stored.0, stored.1))
}

fn tap_result<R>(tap: Tap<R>) -> (u64, String) {
    (tap.count, tap.hasher.map(|h| hex(&h.finalize())).unwrap_or_default())
}

/// Runs a dump tool and uploads its output; the object is deleted again when the tool fails.
async fn dump_with(
    mut cmd: tokio::process::Command,
    tool: &str,
    store: &Store,
    key: &str,
    compress: Compress,
    level: Option<i32>,
) -> Result<(u64, u64, String), BackupError> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    label_tool(&mut cmd);
    let mut child =
        cmd.spawn().map_err(|e| BackupError::Usage(format!("cannot start {tool}: {e} (is it installed?)")))?;
    let stdout = child.stdout.take().ok_or_else(|| BackupError::Usage(format!("{tool}: no stdout")))?;
    let stderr = child.stderr.take().ok_or_else(|| BackupError::Usage(format!("{tool}: no stderr")))?;
    let err_task = tokio::spawn(drain_tail(stderr));
    let uploaded = upload(store, key, stdout, compress, level).await;
    let status = child.wait().await.map_err(|e| BackupError::Usage(format!("{tool}: {e}")))?;
    let stderr = String::from_utf8_lossy(&err_task.await.unwrap_or_default()).trim().to_string();
    // The first cause first: an upload that failed stops the tool (a broken pipe), whose own
    // exit then says nothing useful.
    if let Err(e) = &uploaded {
        let _ = store.delete(key).await;
        let said = if stderr.is_empty() { String::new() } else { format!("; {tool} said: {stderr}") };
        return Err(BackupError::Usage(
            crate::secret::redact(&format!("uploading {tool}'s output to {key} failed: {e}{said}")).into_owned(),
        ));
    }
    if !status.success() {
        let _ = store.delete(key).await;
        use std::os::unix::process::ExitStatusExt;
        return Err(BackupError::Tool {
            tool: tool.into(),
            code: status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
            stderr: crate::secret::redact(&stderr).into_owned(),
        });
    }
    uploaded
}

/// Reads a tool's stderr to its end (a tool blocked on a full pipe would hang), keeping the
/// last 64 KiB for the error message.
async fn drain_tail(mut r: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut tail = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 128 * 1024 {
            tail.drain(..tail.len() - 64 * 1024);
        }
    }
    if tail.len() > 64 * 1024 {
        tail.drain(..tail.len() - 64 * 1024);
    }
    tail
}

fn timestamp_id() -> (String, String) {
    let now = crate::clock::now();
    (
        now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        format!("{}-{:04x}", now.format("%Y%m%dT%H%M%SZ"), rand::random::<u16>()),
    )
}

/// The object's key without its extension: `prefix/engine-db-time-id`.
fn object_base(spec: &CreateSpec, id: &str) -> String {
    let prefix = spec.prefix.trim_matches('/');
    let stem = format!("{}-{}-{id}", spec.source.engine(), spec.source.db_name().replace(['/', ' '], "_"));
    if prefix.is_empty() {
        stem
    } else {
        format!("{prefix}/{stem}")
    }
}

/// Makes a backup; returns its manifest (stored last).
pub async fn create(spec: &CreateSpec) -> Result<Manifest, BackupError> {
    if let Some(l) = spec.level {
        let range = match spec.compress {
            Compress::Zstd => 1..=22,
            Compress::Gzip => 1..=9,
            Compress::None => {
                return Err(BackupError::Usage("level: no compression to set a level for (compress = \"none\")".into()))
            }
        };
        if !range.contains(&l) {
            return Err(BackupError::Usage(format!(
                "level {l}: {:?} takes {} to {}",
                spec.compress,
                range.start(),
                range.end()
            )));
        }
    }
    let started = Instant::now();
    let (created_at, id) = timestamp_id();
    let engine = spec.source.engine();
    let base = object_base(spec, &id);
    let mut tables_after = BTreeMap::new();
    let (key, tool, tool_version, server_version, tables, format, sizes) = match &spec.source {
        Source::Postgres { .. } => {
            // One snapshot for the counts and the dump: the manifest's rows are the dump's. The
            // exporting connection stays idle (it only keeps the snapshot alive); the counts run
            // on a second one that imports it and lets its table locks go as soon as it is done,
            // so a DDL queued between them and pg_dump cannot wedge the backup.
            let mut exporter = spec.source.pg().await?;
            sqlx::query("begin isolation level repeatable read, read only").execute(&mut exporter).await?;
            let snapshot: String = sqlx::query_scalar("select pg_export_snapshot()").fetch_one(&mut exporter).await?;
            if !snapshot.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(BackupError::Database(format!("unexpected snapshot id {snapshot:?}")));
            }
            let mut conn = spec.source.pg().await?;
            sqlx::query("begin isolation level repeatable read, read only").execute(&mut conn).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("set transaction snapshot '{snapshot}'")))
                .execute(&mut conn)
                .await?;
            let selected = pg_select(&mut conn, &spec.tables).await?;
            let names: Vec<String> = selected.iter().map(|(n, _)| n.clone()).collect();
            let tool = pg_tool("pg_dump");
            let format = if spec.plain { "plain" } else { "custom" };
            let key = format!("{base}.{}{}", if spec.plain { "sql" } else { "dump" }, spec.compress.ext());
            let mut cmd = tokio::process::Command::new(&tool);
            cmd.arg(format!("--format={format}")).arg(format!("--snapshot={snapshot}")).arg("--no-password");
            if !spec.plain {
                cmd.arg("--compress=0");
            }
            for (_, pattern) in &selected {
                cmd.arg(format!("--table={pattern}"));
            }
            spec.source.pg_env(&mut cmd);
            // The rows are counted in the same snapshot while pg_dump runs, not before it.
            let (counted, sizes) = tokio::join!(
                async {
                    let counted = inventory_pg(&mut conn, &names).await;
                    let _ = sqlx::query("commit").execute(&mut conn).await;
                    let _ = conn.close().await;
                    counted
                },
                dump_with(cmd, "pg_dump", &spec.store, &key, spec.compress, spec.level)
            );
            let _ = sqlx::query("commit").execute(&mut exporter).await;
            let _ = exporter.close().await;
            // A failed count is the cause when both failed (pg_dump then sees a broken snapshot).
            let (tables, version) = match counted {
                Ok(c) => c,
                Err(e) => {
                    let _ = spec.store.delete(&key).await;
                    return Err(e);
                }
            };
            let sizes = sizes?;
            (key, "pg_dump", tool_version(&tool).await, version, tables, format, sizes)
        }
        Source::MySql { db, .. } => {
            let mut conn = spec.source.mysql().await?;
            let (tables, version) = inventory_mysql(&mut conn, &spec.tables).await?;
            let _ = conn.close().await;
            if let Some(missing) = spec.tables.iter().find(|t| !tables.contains_key(*t)) {
                return Err(BackupError::Usage(format!("tables: no table '{missing}' in the database")));
            }
            let tool = mysql_tool(&["mariadb-dump", "mysqldump"]);
            let key = format!("{base}.sql{}", spec.compress.ext());
            let mut cmd = tokio::process::Command::new(&tool);
            cmd.arg("--no-defaults");
            spec.source.mysql_args(&mut cmd);
            cmd.args(["--single-transaction", "--routines", "--triggers", "--events", "--hex-blob"]).arg(db);
            cmd.args(&spec.tables);
            let sizes = dump_with(cmd, "mysqldump", &spec.store, &key, spec.compress, spec.level).await?;
            // mysqldump's snapshot cannot be shared: count again after it, so the dumped rows
            // lie between the two counts.
            let mut conn = spec.source.mysql().await?;
            let (after, _) = inventory_mysql(&mut conn, &spec.tables).await?;
            let _ = conn.close().await;
            tables_after = after;
            (key, "mysqldump", tool_version(&tool).await, version, tables, "plain", sizes)
        }
        Source::Sqlite { path } => {
            if !path.exists() {
                return Err(BackupError::Usage(format!("no SQLite database at {}", path.display())));
            }
            if !spec.tables.is_empty() {
                return Err(BackupError::Usage("tables: a SQLite backup is the whole database file".into()));
            }
            let scratch = scratch()?;
            let copy = scratch.path().join("copy.sqlite");
            let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
            let mut conn = sqlx::SqliteConnection::connect_with(&opts).await?;
            sqlx::query("vacuum into ?").bind(copy.display().to_string()).execute(&mut conn).await?;
            conn.close().await?;
            let (tables, version) = inventory_sqlite(&copy, &spec.tables).await?;
            let key = format!("{base}.sqlite{}", spec.compress.ext());
            let f = tokio::fs::File::open(&copy).await.map_err(|e| BackupError::Usage(e.to_string()))?;
            let sizes = upload(&spec.store, &key, f, spec.compress, spec.level).await?;
            (key, "sqlite vacuum into", String::new(), version, tables, "sqlite", sizes)
        }
    };
    let (bytes_raw, bytes_stored, sha256) = sizes;
    let manifest = Manifest {
        id,
        store: spec.store.url.clone(),
        key: key.clone(),
        created_at,
        engine: engine.into(),
        server_version,
        tool: tool.into(),
        tool_version,
        source: spec.source.shown(),
        format: format.into(),
        compress: spec.compress,
        bytes_raw,
        bytes_stored,
        sha256,
        duration_ms: started.elapsed().as_millis() as u64,
        label: spec.label.clone(),
        tables,
        tables_after,
        verified_at: None,
        verification: None,
    };
    write_manifest(&spec.store, &manifest).await?;
    Ok(manifest)
}

async fn write_manifest(store: &Store, m: &Manifest) -> Result<(), BackupError> {
    let json = serde_json::to_vec_pretty(m).map_err(|e| BackupError::Usage(e.to_string()))?;
    store.put_bytes(&manifest_key(&m.key), json).await?;
    Ok(())
}

/// Every complete backup under `prefix` (newest first), optionally with a label.
pub async fn list(store: &Store, prefix: &str, label: Option<&str>) -> Result<Vec<Manifest>, BackupError> {
    let mut out = Vec::new();
    for m in store.list(prefix).await? {
        if !m.key.ends_with(".manifest.json") {
            continue;
        }
        let bytes = store.get_bytes(&m.key).await?;
        let Ok(manifest) = serde_json::from_slice::<Manifest>(&bytes) else { continue };
        // A manifest describes the object beside it (its key may be relative to another root of
        // the same storage); a copy elsewhere is not a backup.
        let Some(mut manifest) = beside(manifest, &m.key) else { continue };
        manifest.key = m.key.trim_end_matches(".manifest.json").to_string();
        if label.is_some_and(|l| manifest.label.as_deref() != Some(l)) {
            continue;
        }
        out.push(manifest);
    }
    out.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    Ok(out)
}

/// The manifest when it sits beside the object it describes (listed at `manifest_path`).
fn beside(m: Manifest, manifest_path: &str) -> Option<Manifest> {
    let object = manifest_path.strip_suffix(".manifest.json")?;
    (object == m.key || object.ends_with(&format!("/{}", m.key))).then_some(m)
}

pub async fn load_manifest(store: &Store, key: &str) -> Result<Manifest, BackupError> {
    let mkey = if key.ends_with(".manifest.json") { key.to_string() } else { manifest_key(key) };
    let bytes = store.get_bytes(&mkey).await.map_err(|e| match e {
        StorageError::NotFound { .. } => {
            BackupError::Usage(format!("{key}: no manifest in {}: not a complete backup", store.url))
        }
        other => other.into(),
    })?;
    let m: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| BackupError::Usage(format!("{mkey}: unreadable manifest: {e}")))?;
    let mut m = beside(m, &mkey)
        .ok_or_else(|| BackupError::Usage(format!("{mkey} describes another object: not a backup of this key")))?;
    m.key = mkey.trim_end_matches(".manifest.json").to_string();
    Ok(m)
}

/// Downloads the object to a private file while hashing it; refuses it unless the checksum
/// matches. Returns the file (compressed as stored).
async fn fetch_checked(store: &Store, m: &Manifest, scratch: &tempfile::TempDir) -> Result<PathBuf, BackupError> {
    let (_, mut stream) = store.get_stream(&m.key).await?;
    let path = scratch.path().join("object");
    let mut f = tokio::fs::File::create(&path).await.map_err(|e| BackupError::Usage(e.to_string()))?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    use futures_util::StreamExt;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        h.update(&chunk);
        n += chunk.len() as u64;
        f.write_all(&chunk).await.map_err(|e| BackupError::Usage(e.to_string()))?;
    }
    f.flush().await.map_err(|e| BackupError::Usage(e.to_string()))?;
    let actual = hex(&h.finalize());
    if actual != m.sha256 || n != m.bytes_stored {
        return Err(BackupError::Corrupt { key: m.key.clone(), expected: m.sha256.clone(), actual, bytes: n });
    }
    Ok(path)
}

/// The decompressed content of a fetched object.
async fn decompressed(path: &Path, compress: Compress) -> Result<Pin<Box<dyn AsyncRead + Send>>, BackupError> {
    let f = tokio::fs::File::open(path).await.map_err(|e| BackupError::Usage(e.to_string()))?;
    let r = BufReader::with_capacity(256 * 1024, f);
    Ok(match compress {
        Compress::Zstd => Box::pin(async_compression::tokio::bufread::ZstdDecoder::new(r)),
        Compress::Gzip => Box::pin(async_compression::tokio::bufread::GzipDecoder::new(r)),
        Compress::None => Box::pin(r),
    })
}

/// Feeds `input` to a restore tool's stdin.
async fn restore_with(
    mut cmd: tokio::process::Command,
    tool: &str,
    mut input: Pin<Box<dyn AsyncRead + Send>>,
) -> Result<(), BackupError> {
    cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
    label_tool(&mut cmd);
    let mut child =
        cmd.spawn().map_err(|e| BackupError::Usage(format!("cannot start {tool}: {e} (is it installed?)")))?;
    let mut stdin = child.stdin.take().ok_or_else(|| BackupError::Usage(format!("{tool}: no stdin")))?;
    let stderr = child.stderr.take().ok_or_else(|| BackupError::Usage(format!("{tool}: no stderr")))?;
    let err_task = tokio::spawn(drain_tail(stderr));
    let copied = tokio::io::copy(&mut input, &mut stdin).await;
    drop(stdin);
    let status = child.wait().await.map_err(|e| BackupError::Usage(format!("{tool}: {e}")))?;
    let stderr = String::from_utf8_lossy(&err_task.await.unwrap_or_default()).trim().to_string();
    if !status.success() {
        return Err(BackupError::Tool {
            tool: tool.into(),
            code: status.code().unwrap_or(-1),
            stderr: crate::secret::redact(&stderr).into_owned(),
        });
    }
    copied.map_err(|e| BackupError::Usage(format!("feeding {tool}: {e}")))?;
    Ok(())
}

/// Restores a fetched object into `target` (which exists); returns the row counts after.
async fn restore_into(
    m: &Manifest,
    object: &Path,
    target: &Source,
    clean: bool,
) -> Result<BTreeMap<String, i64>, BackupError> {
    let only: Vec<String> = m.tables.keys().cloned().collect();
    match target {
        Source::Postgres { .. } => {
            let input = decompressed(object, m.compress).await?;
            if m.format == "plain" {
                let mut cmd = tokio::process::Command::new(pg_tool("psql"));
                cmd.args(["--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1", "--no-password"]);
                target.pg_env(&mut cmd);
                restore_with(cmd, "psql", input).await?;
            } else {
                let mut cmd = tokio::process::Command::new(pg_tool("pg_restore"));
                cmd.args(["--no-owner", "--no-privileges", "--exit-on-error", "--no-password"]);
                if clean {
                    cmd.args(["--clean", "--if-exists"]);
                }
                if let Source::Postgres { db, .. } = target {
                    cmd.arg(format!("--dbname={db}"));
                }
                target.pg_env(&mut cmd);
                restore_with(cmd, "pg_restore", input).await?;
            }
            let mut conn = target.pg().await?;
            let (counts, _) = inventory_pg(&mut conn, &only).await?;
            let _ = conn.close().await;
            Ok(counts)
        }
        Source::MySql { db, .. } => {
            let input = decompressed(object, m.compress).await?;
            let mut cmd = tokio::process::Command::new(mysql_tool(&["mariadb", "mysql"]));
            cmd.arg("--no-defaults");
            target.mysql_args(&mut cmd);
            cmd.arg(db);
            restore_with(cmd, "mysql", input).await?;
            let mut conn = target.mysql().await?;
            let (counts, _) = inventory_mysql(&mut conn, &only).await?;
            let _ = conn.close().await;
            Ok(counts)
        }
        Source::Sqlite { path } => {
            let mut input = decompressed(object, m.compress).await?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| BackupError::Usage(format!("{}: {e}", dir.display())))?;
            }
            // Only a SQLite database (or a new path) is replaced, with its -wal/-shm.
            crate::files::check_replaceable(path).map_err(BackupError::Usage)?;
            if path.exists() && !crate::files::is_sqlite_or_empty(path).unwrap_or(false) {
                return Err(BackupError::Usage(format!(
                    "{} is not a SQLite database; refusing to replace it with the restore",
                    path.display()
                )));
            }
            let tmp = path.with_extension("runbook-restore");
            let written = async {
                let mut f = tokio::fs::File::create(&tmp).await?;
                tokio::io::copy(&mut input, &mut f).await?;
                f.sync_all().await?;
                // The old database's journal files would be replayed over the new one.
                for ext in ["-wal", "-shm", "-journal"] {
                    let side = PathBuf::from(format!("{}{ext}", path.display()));
                    if side.exists() {
                        tokio::fs::remove_file(&side).await?;
                    }
                }
                tokio::fs::rename(&tmp, path).await
            }
            .await;
            if let Err(e) = written {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(BackupError::Usage(format!("restoring into {}: {e}", path.display())));
            }
            Ok(inventory_sqlite(path, &only).await?.0)
        }
    }
}

/// A check run after a verification restore: `sql` returns one value, compared with `expect`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub sql: String,
    /// Bound parameters ($1 or ?), never interpolated.
    #[serde(default)]
    pub params: Vec<serde_json::Value>,
    pub expect: serde_json::Value,
}

async fn scalar(target: &Source, sql: &str, params: &[serde_json::Value]) -> Result<serde_json::Value, BackupError> {
    use crate::primitives::db::DbValue;
    let params: Vec<DbValue> = params
        .iter()
        .map(|p| match p {
            serde_json::Value::Null => DbValue::Null,
            serde_json::Value::Bool(b) => DbValue::Bool(*b),
            serde_json::Value::Number(n) => {
                n.as_i64().map(DbValue::Int).unwrap_or(DbValue::Float(n.as_f64().unwrap_or_default()))
            }
            serde_json::Value::String(s) => DbValue::Text(s.clone()),
            other => DbValue::Json(other.clone()),
        })
        .collect();
    let db = crate::primitives::db::Db::connect(&target.url(), &Default::default())
        .await
        .map_err(|e| BackupError::Database(e.to_string()))?;
    let rows = db.fetch(None, sql, &params).await.map_err(|e| BackupError::Database(format!("check `{sql}`: {e}")))?;
    db.close().await;
    let v = rows.rows.into_iter().next().and_then(|r| r.into_iter().next());
    Ok(v.map(|v| v.to_json()).unwrap_or(serde_json::Value::Null))
}

fn same(got: &serde_json::Value, want: &serde_json::Value) -> bool {
    got == want
        || match (got, want) {
            (serde_json::Value::String(g), w) => w.to_string().trim_matches('"') == g,
            (g, serde_json::Value::String(w)) => serde_json::from_str::<serde_json::Value>(w).is_ok_and(|w| &w == g),
            (serde_json::Value::Number(g), serde_json::Value::Number(w)) => g.as_f64() == w.as_f64(),
            _ => false,
        }
}

/// Verifies a backup: checksum, restore into a scratch database (created on `server` and
/// dropped after, or `into`, which must be empty), row counts against the manifest, then the
/// checks. Records the outcome in the manifest, failures included. Returns the verification.
pub async fn verify(
    store: &Store,
    m: Manifest,
    server: Option<&Source>,
    into: Option<&Source>,
    checks: &[Check],
) -> Result<serde_json::Value, BackupError> {
    for target in [server, into].into_iter().flatten() {
        if target.engine() != m.engine {
            return Err(BackupError::Usage(format!("a {} backup cannot be verified on {}", m.engine, target.shown())));
        }
    }
    if into.is_none() && server.is_none() && m.engine != "sqlite" {
        return Err(BackupError::Usage(
            "verify needs a server for its scratch database: server = URL (credentials are never stored in the manifest) or into = URL".into(),
        ));
    }
    if let Some(t) = into {
        let tables = table_count(t).await?;
        if tables > 0 {
            return Err(BackupError::Usage(format!(
                "{} already has {tables} table(s): verify restores into an empty database (or give server = URL for a scratch one)",
                t.shown()
            )));
        }
    }
    let started = Instant::now();
    let scratch_name = format!("runbook_verify_{}", m.id.replace(['-', 'T', 'Z'], "_").to_lowercase());
    let outcome = verify_steps(store, &m, server, into, checks, &scratch_name).await;
    record_verification(store, m, started, outcome, &scratch_name).await
}

/// Records a verification's outcome in the manifest (only what says something about the backup
/// itself), and returns it, or the error that failed it.
async fn record_verification(
    store: &Store,
    mut m: Manifest,
    started: Instant,
    outcome: Result<Verified, BackupError>,
    scratch_name: &str,
) -> Result<serde_json::Value, BackupError> {
    let (verification, result) = match outcome {
        Ok((counts, check_results, problems, warnings, created)) => {
            let v = serde_json::json!({
                "ok": problems.is_empty(),
                "tables": counts,
                "checks": check_results,
                "problems": problems,
                "warnings": warnings,
                "duration_ms": started.elapsed().as_millis() as u64,
                "scratch": if created { serde_json::Value::String(scratch_name.to_string()) } else { serde_json::Value::Null },
            });
            let result = if problems.is_empty() {
                Ok(v.clone())
            } else {
                Err(BackupError::Database(format!("verification of {} failed: {}", m.key, problems.join("; "))))
            };
            (v, result)
        }
        // Only what says something about the backup itself is recorded (a corrupt object, a
        // restore that fails); a typo in a check or a scratch server that is down is not, so it
        // cannot erase an earlier good verification.
        Err(e @ (BackupError::Corrupt { .. } | BackupError::Tool { .. })) => (
            serde_json::json!({
                "ok": false,
                "tables": {},
                "checks": [],
                "problems": [e.to_string()],
                "warnings": [],
                "duration_ms": started.elapsed().as_millis() as u64,
                "scratch": null,
            }),
            Err(e),
        ),
        Err(e) => return Err(e),
    };
    m.verified_at = Some(crate::clock::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    m.verification = Some(verification);
    write_manifest(store, &m).await?;
    result
}

/// (row counts, check results, problems, warnings, scratch database created)
type Verified = (BTreeMap<String, i64>, Vec<serde_json::Value>, Vec<String>, Vec<String>, bool);

async fn verify_steps(
    store: &Store,
    m: &Manifest,
    server: Option<&Source>,
    into: Option<&Source>,
    checks: &[Check],
    scratch_name: &str,
) -> Result<Verified, BackupError> {
    let scratch = scratch()?;
    let object = fetch_checked(store, m, &scratch).await?;
    let (target, created) = match (into, m.engine.as_str()) {
        (Some(t), _) => (t.clone(), false),
        (None, "sqlite") => (Source::Sqlite { path: scratch.path().join("verify.sqlite") }, false),
        (None, _) => {
            let server = server.ok_or_else(|| {
                BackupError::Usage(
                    "verify needs a server for its scratch database: server = URL (credentials are never stored in the manifest) or into = URL".into(),
                )
            })?;
            create_database(server, scratch_name).await?;
            (server.with_db(scratch_name), true)
        }
    };
    let outcome = async {
        let counts = restore_into(m, &object, &target, false).await?;
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        for (t, want) in &m.tables {
            let got = counts.get(t).copied();
            let after = m.tables_after.get(t).copied().unwrap_or(*want);
            let (low, high) = (after.min(*want), after.max(*want));
            match got {
                Some(g) if g == *want => {}
                // MySQL: the dump's snapshot lies between the counts taken before and after it.
                Some(g) if m.engine == "mysql" && (low..=high).contains(&g) => warnings.push(format!(
                    "{t}: {g} rows restored, between the {want} counted before the dump and the {after} after it"
                )),
                _ => problems.push(format!(
                    "{t}: {want} rows in the manifest, {} restored",
                    got.map_or("none".into(), |g| g.to_string())
                )),
            }
        }
        let mut check_results = Vec::new();
        for c in checks {
            let got = scalar(&target, &c.sql, &c.params).await?;
            let ok = same(&got, &c.expect);
            if !ok {
                problems.push(format!("check `{}`: got {got}, expected {}", c.sql, c.expect));
            }
            check_results.push(serde_json::json!({"sql": c.sql, "expect": c.expect, "got": got, "ok": ok}));
        }
        Ok::<_, BackupError>((counts, check_results, problems, warnings))
    }
    .await;
    if created {
        if let Some(server) = server {
            let _ = drop_database(server, scratch_name).await;
        }
    }
    let (counts, check_results, problems, warnings) = outcome?;
    Ok((counts, check_results, problems, warnings, created))
}

async fn create_database(server: &Source, name: &str) -> Result<(), BackupError> {
    match server {
        Source::Postgres { .. } => {
            let mut conn = server.with_db("postgres").pg().await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("create database {}", quote_ident(name, false))))
                .execute(&mut conn)
                .await?;
            let _ = conn.close().await;
        }
        Source::MySql { .. } => {
            let mut conn = server.with_db("").mysql().await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("create database {}", quote_ident(name, true))))
                .execute(&mut conn)
                .await?;
            let _ = conn.close().await;
        }
        Source::Sqlite { .. } => {}
    }
    Ok(())
}

async fn drop_database(server: &Source, name: &str) -> Result<(), BackupError> {
    match server {
        Source::Postgres { .. } => {
            let mut conn = server.with_db("postgres").pg().await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "drop database if exists {} with (force)",
                quote_ident(name, false)
            )))
            .execute(&mut conn)
            .await?;
            let _ = conn.close().await;
        }
        Source::MySql { .. } => {
            let mut conn = server.with_db("").mysql().await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("drop database if exists {}", quote_ident(name, true))))
                .execute(&mut conn)
                .await?;
            let _ = conn.close().await;
        }
        Source::Sqlite { .. } => {}
    }
    Ok(())
}

/// The number of tables a database has (restore refuses a non-empty one unless told to clean).
async fn table_count(target: &Source) -> Result<i64, BackupError> {
    Ok(match target {
        Source::Postgres { .. } => {
            let mut conn = target.pg().await?;
            let n: i64 = sqlx::query_scalar(
                "select count(*) from information_schema.tables where table_schema not in ('pg_catalog', 'information_schema') and table_name <> '_runbook_restore'",
            )
            .fetch_one(&mut conn)
            .await?;
            let _ = conn.close().await;
            n
        }
        Source::MySql { .. } => {
            let mut conn = target.mysql().await?;
            let n: i64 =
                sqlx::query_scalar("select count(*) from information_schema.tables where table_schema = database() and table_name <> '_runbook_restore'")
                    .fetch_one(&mut conn)
                    .await?;
            let _ = conn.close().await;
            n
        }
        Source::Sqlite { path } if !path.exists() => 0,
        Source::Sqlite { path } => inventory_sqlite(path, &[]).await?.0.len() as i64,
    })
}

/// Restores a backup into `into`: checksum first, then the restore; returns timing and counts.
///
/// `run`: the run and step restoring (`RUN/STEP`), when in one. A target that step already
/// started to restore into (its earlier attempt was cut off) is cleaned and restored again; any
/// other non-empty target is refused unless `clean`.
pub async fn restore(
    store: &Store,
    m: &Manifest,
    into: &Source,
    clean: bool,
    run: Option<&str>,
) -> Result<serde_json::Value, BackupError> {
    if into.engine() != m.engine {
        return Err(BackupError::Usage(format!("a {} backup cannot be restored into {}", m.engine, into.shown())));
    }
    let started = Instant::now();
    let tables = table_count(into).await?;
    let marked = if tables > 0 { marker::read(into).await? } else { None };
    let ours = run.is_some() && marked.as_deref() == run;
    if tables > 0 && !clean && !ours {
        let by = match &marked {
            Some(other) => format!(" (a restore by {other} started there)"),
            None => String::new(),
        };
        return Err(BackupError::Usage(format!(
            "{} already has {tables} table(s){by}: restore into an empty database, or pass clean = true to replace them",
            into.shown()
        )));
    }
    // Only a restore that would refuse a filled target on its retry needs the mark.
    let mark = run.filter(|_| !clean);
    let clean = clean || ours;
    if tables > 0 && m.format == "plain" && m.engine == "postgres" {
        return Err(BackupError::Usage(format!(
            "{} has {tables} table(s) and a plain-format backup cannot replace them: drop and recreate the database, or restore into an empty one",
            into.shown()
        )));
    }
    let scratch = scratch()?;
    let object = fetch_checked(store, m, &scratch).await?;
    if let Some(run) = mark {
        marker::write(into, run, &m.key).await?;
    }
    let counts = restore_into(m, &object, into, clean && tables > 0).await?;
    if mark.is_some() {
        marker::remove(into).await?;
    }
    Ok(serde_json::json!({
        "key": m.key,
        "into": into.shown(),
        "cleaned_earlier_attempt": ours,
        "tables": counts,
        "duration_ms": started.elapsed().as_millis() as u64,
    }))
}

/// When an object named like a backup (`<engine>-<db>-<YYYYmmddTHHMMSSZ>-<hex>.<ext>`) was made.
fn backup_time(key: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let name = key.rsplit('/').next()?;
    let engine = ["postgres-", "mysql-", "sqlite-"].iter().find(|e| name.starts_with(*e))?;
    let rest = &name[engine.len()..];
    let stem = [".dump", ".sql", ".sqlite"]
        .iter()
        .flat_map(|e| [e.to_string(), format!("{e}.zst"), format!("{e}.gz")])
        .find_map(|full| rest.strip_suffix(full.as_str()))?;
    let mut parts = stem.rsplitn(3, '-');
    let (hexpart, stamp) = (parts.next()?, parts.next()?);
    if hexpart.len() != 4 || !hexpart.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ").ok().map(|t| t.and_utc())
}

/// Applies a retention policy to the backups under the policy's prefix (and label): removes
/// what no rule keeps (manifest first, so an interrupted prune leaves an incomplete backup, not
/// a listed one without its object), and incomplete backups (no manifest) older than a day.
pub async fn prune_store(store: &Store, policy: &prune::Policy) -> Result<serde_json::Value, BackupError> {
    let prefix = policy.prefix.as_deref().unwrap_or("");
    let manifests = list(store, prefix, policy.label.as_deref()).await?;
    let reasons = prune::plan(&manifests, policy);
    let mut kept = Vec::new();
    let mut removed = Vec::new();
    for (m, why) in manifests.iter().zip(&reasons) {
        if why.is_empty() {
            if !policy.dry_run {
                store.delete(&manifest_key(&m.key)).await?;
                store.delete(&m.key).await?;
            }
            removed.push(serde_json::json!({"key": m.key, "created_at": m.created_at}));
        } else {
            kept.push(serde_json::json!({"key": m.key, "created_at": m.created_at, "reasons": why}));
        }
    }
    let objects = store.list(prefix).await?;
    let manifest_keys: std::collections::HashSet<&str> =
        objects.iter().filter(|o| o.key.ends_with(".manifest.json")).map(|o| o.key.as_str()).collect();
    let day_ago = crate::clock::now() - chrono::Duration::days(1);
    let mut incomplete = Vec::new();
    for o in &objects {
        if o.key.ends_with(".manifest.json") || manifest_keys.contains(manifest_key(&o.key).as_str()) {
            continue;
        }
        // Only objects named as this module names backups, aged by the time in their name:
        // anything else in the prefix is not ours to remove.
        let Some(made) = backup_time(&o.key) else { continue };
        // Both its start (in the name) and its last write: a long backup still finishing is not
        // incomplete.
        let written = chrono::DateTime::parse_from_rfc3339(&o.modified).map(|t| t.with_timezone(&chrono::Utc)).ok();
        if made < day_ago && written.is_some_and(|w| w < day_ago) && removed.iter().all(|r| r["key"] != o.key.as_str())
        {
            if !policy.dry_run {
                store.delete(&o.key).await?;
            }
            incomplete.push(serde_json::json!({"key": o.key, "modified": o.modified, "size": o.size}));
        }
    }
    Ok(
        serde_json::json!({"kept": kept, "removed": removed, "incomplete_removed": incomplete, "dry_run": policy.dry_run}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_keep_tls_options_decode_passwords_and_unbracket_ipv6() {
        let s = Source::parse(
            "postgres://ops:p%40ss%3Aw%2Fd@[::1]:5433/app?sslmode=verify-full&sslcert=/c.pem&x=1",
            Path::new("/"),
        )
        .unwrap();
        let Source::Postgres { host, port, user, password, db, tls } = &s else { panic!("{s:?}") };
        assert_eq!((host.as_str(), *port, user.as_str(), db.as_str()), ("::1", 5433, "ops", "app"));
        assert_eq!(password.as_deref(), Some("p@ss:w/d"));
        assert_eq!(tls, &vec![("sslmode".into(), "verify-full".into()), ("sslcert".into(), "/c.pem".into())]);
        assert_eq!(s.shown(), "postgres://ops@::1:5433/app");
        assert!(!format!("{:?}", Source::parse("postgres://u:hunter2@h:99999/d", Path::new("/")).unwrap_err())
            .contains("hunter2"));
        let q = Source::parse("sqlite://data/app.db?mode=rwc", Path::new("/srv")).unwrap();
        assert!(matches!(q, Source::Sqlite { ref path } if path == Path::new("/srv/data/app.db")));
    }

    #[test]
    fn backup_names_are_recognised_with_their_time() {
        let t = backup_time("nightly/postgres-my-app.v2_x-20261122T061427Z-3ddb.dump.zst").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-22T06:14:27+00:00");
        assert!(backup_time("daily/README.txt").is_none());
        assert!(backup_time("postgres-app-20261122T061427Z-3ddb.tar").is_none());
        assert!(backup_time("postgres-app-20261122T061427Z-xyz.dump").is_none());
    }
}
