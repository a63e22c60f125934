//! `db`: SQL databases through sqlx: PostgreSQL, MySQL/MariaDB and SQLite. A connection is a pool;
//! parameters are always bound, never interpolated.
//!
//! PostgreSQL receives parameters typed and in binary form, so a Lua value is converted to the
//! Rust type of the parameter as the server inferred it (the statement is prepared once and its
//! parameter types cached): an RFC 3339 string binds to a `timestamptz`, a string to a `uuid` or
//! a `numeric`, a table to `jsonb`. Values come back the same way: numeric as a string (no
//! precision lost), timestamps as RFC 3339 with their offset, dates as `YYYY-MM-DD`, json as
//! tables, bytea as strings, arrays as arrays, NULL as `null`.
pub mod fake;
pub mod lua;
mod mysql;
pub mod orphans;
mod pg;
mod scram;
mod tape;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::pool::PoolConnection;

use mysql::{mysql_query, mysql_rows};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow, PgTypeInfo};
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteConnection, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{
    AssertSqlSafe, Column, Either, Executor, MySql, Postgres, Row, SqlSafeStr, Sqlite, Statement, TypeInfo, ValueRef,
};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database URL '{0}': use postgres://, mysql://, sqlite://PATH or sqlite::memory:")]
    Scheme(String),
    #[error("cannot connect to {target}: {cause}")]
    Connect { target: String, cause: String },
    #[error("{message}{}", .code.as_ref().map(|c| format!(" (SQLSTATE {c})")).unwrap_or_default())]
    Server { message: String, code: Option<String> },
    #[error("{0}")]
    Bind(String),
    #[error("{0}")]
    Decode(String),
    #[error("{0}")]
    Usage(String),
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(d) => {
                DbError::Server { message: d.message().to_string(), code: d.code().map(|c| c.to_string()) }
            }
            _ => DbError::Server { message: e.to_string(), code: None },
        }
    }
}

/// A value going to or coming from a database.
#[derive(Debug, Clone, PartialEq)]
pub enum DbValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    Json(serde_json::Value),
    Array(Vec<DbValue>),
}

impl DbValue {
    pub(crate) fn text(&self) -> Option<String> {
        match self {
            DbValue::Text(s) => Some(s.clone()),
            DbValue::Int(i) => Some(i.to_string()),
            DbValue::Float(f) => Some(f.to_string()),
            DbValue::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            DbValue::Null => "null",
            DbValue::Bool(_) => "boolean",
            DbValue::Int(_) => "integer",
            DbValue::Float(_) => "number",
            DbValue::Text(_) => "string",
            DbValue::Bytes(_) => "binary string",
            DbValue::Json(_) => "table",
            DbValue::Array(_) => "array",
        }
    }
}

/// Result rows: column names, then one value per column.
#[derive(Debug, Default)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<DbValue>>,
}

/// The options table of `db.connect`; unknown keys are an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub pool_size: Option<u32>,
    pub connect_timeout: Option<String>,
    pub statement_timeout: Option<String>,
    pub ssl_mode: Option<String>,
    pub ssl_root_cert: Option<String>,
    /// PostgreSQL settings applied to every connection of the pool.
    pub lock_timeout: Option<String>,
    pub idle_in_transaction_session_timeout: Option<String>,
    pub search_path: Option<String>,
    pub role: Option<String>,
    /// Replaces the run/step label in `pg_stat_activity` (see `orphans`).
    pub application_name: Option<String>,
    /// The REPL's connections behave as psql's: one session, so `BEGIN` on one line and `COMMIT`
    /// on the next reach the same server session.
    #[serde(skip)]
    pub one_session: bool,
    /// The first sessions' label (the run, step and attempt connecting).
    #[serde(skip)]
    pub label: Option<String>,
}

impl Options {
    fn pg_only(&self) -> Option<&'static str> {
        [
            (self.ssl_mode.is_some(), "ssl_mode"),
            (self.ssl_root_cert.is_some(), "ssl_root_cert"),
            (self.statement_timeout.is_some(), "statement_timeout"),
            (self.lock_timeout.is_some(), "lock_timeout"),
            (self.idle_in_transaction_session_timeout.is_some(), "idle_in_transaction_session_timeout"),
            (self.search_path.is_some(), "search_path"),
            (self.role.is_some(), "role"),
            (self.application_name.is_some(), "application_name"),
        ]
        .into_iter()
        .find_map(|(given, name)| given.then_some(name))
    }
}

enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    MySql(MySqlPool),
}

/// An open transaction, or a session: one connection pinned for a sequence of statements
/// (`conn:session`), with no transaction of its own.
pub enum Tx {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
    MySql(sqlx::Transaction<'static, MySql>),
    SqliteSession(PoolConnection<Sqlite>),
    PgSession(PoolConnection<Postgres>),
    MySqlSession(PoolConnection<MySql>),
}

/// The connection a transaction or session holds.
enum Pinned<'a> {
    Lite(&'a mut SqliteConnection),
    Pg(&'a mut PgConnection),
    My(&'a mut MySqlConnection),
}

impl Tx {
    fn pinned(&mut self) -> Pinned<'_> {
        match self {
            Tx::Sqlite(t) => Pinned::Lite(t),
            Tx::Postgres(t) => Pinned::Pg(t),
            Tx::MySql(t) => Pinned::My(t),
            Tx::SqliteSession(c) => Pinned::Lite(c),
            Tx::PgSession(c) => Pinned::Pg(c),
            Tx::MySqlSession(c) => Pinned::My(c),
        }
    }
    pub fn is_session(&self) -> bool {
        matches!(self, Tx::SqliteSession(_) | Tx::PgSession(_) | Tx::MySqlSession(_))
    }
    pub async fn commit(self) -> Result<(), DbError> {
        match self {
            Tx::Sqlite(t) => t.commit().await?,
            Tx::Postgres(t) => t.commit().await?,
            Tx::MySql(t) => t.commit().await?,
            session => session.rollback().await?,
        }
        Ok(())
    }
    /// Rolls a transaction back; closes a session's connection, so that nothing it set (SET,
    /// temporary tables, advisory locks, a transaction left open) reaches another statement.
    pub async fn rollback(self) -> Result<(), DbError> {
        match self {
            Tx::Sqlite(t) => t.rollback().await?,
            Tx::Postgres(t) => t.rollback().await?,
            Tx::MySql(t) => t.rollback().await?,
            Tx::SqliteSession(c) => c.close().await?,
            Tx::PgSession(c) => c.close().await?,
            Tx::MySqlSession(c) => c.close().await?,
        }
        Ok(())
    }
}

pub struct Db {
    pool: Pool,
    /// Where it points, without credentials: `postgres 127.0.0.1:5432/app`.
    pub target: String,
    /// What PostgreSQL said of a statement (parameter and column types), per statement text.
    pg_params: Mutex<HashMap<String, std::sync::Arc<Described>>>,
    /// Whom the sessions work for (see `orphans`), shared with the pool's connect hooks.
    label: std::sync::Arc<Mutex<orphans::Label>>,
}

fn duration(opt: &Option<String>, what: &str) -> Result<Option<Duration>, DbError> {
    opt.as_deref().map(|d| crate::duration::parse(d).map_err(|e| DbError::Usage(format!("{what}: {e}")))).transpose()
}

/// Fails at once when nothing listens at `host:port` (a refused TCP connection), where a pool
/// would retry until its acquire timeout (10 to 30 seconds) before saying so. Anything else
/// (a slow network, a Unix socket folder) is left to the pool.
pub async fn refused_at_once(host: &str, port: u16) -> Result<(), String> {
    if host.starts_with('/') || host.is_empty() {
        return Ok(());
    }
    let attempt = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect((host, port))).await;
    match attempt {
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(format!("connection refused at {host}:{port} (is the server running, on that port?)"))
        }
        _ => Ok(()),
    }
}

impl Db {
    pub async fn connect(url: &str, opts: &Options) -> Result<Db, DbError> {
        let connect_timeout = duration(&opts.connect_timeout, "connect_timeout")?.unwrap_or(Duration::from_secs(10));
        let statement_timeout = duration(&opts.statement_timeout, "statement_timeout")?;
        let size = opts.pool_size.unwrap_or(4).clamp(1, 100);
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let mut o = PgConnectOptions::from_str(url)
                .map_err(|e| DbError::Usage(format!("invalid PostgreSQL URL: {}", strip(e.to_string()))))?;
            let target =
                format!("postgres {}:{}/{}", o.get_host(), o.get_port(), o.get_database().unwrap_or(o.get_username()));
            if let Some(mode) = &opts.ssl_mode {
                o = o.ssl_mode(mode.parse().map_err(|_| {
                    DbError::Usage(format!(
                        "ssl_mode: unknown mode '{mode}' (disable, allow, prefer, require, verify-ca, verify-full)"
                    ))
                })?);
            }
            if let Some(cert) = &opts.ssl_root_cert {
                o = o.ssl_root_cert(cert.as_str());
            }
            if let Some(t) = statement_timeout {
                o = o.options([("statement_timeout", format!("{}", t.as_millis()))]);
            }
            for (name, value) in [
                ("lock_timeout", &opts.lock_timeout),
                ("idle_in_transaction_session_timeout", &opts.idle_in_transaction_session_timeout),
            ] {
                if let Some(t) = duration(value, name)? {
                    o = o.options([(name, format!("{}", t.as_millis()))]);
                }
            }
            for (name, value) in [("search_path", &opts.search_path), ("role", &opts.role)] {
                if let Some(v) = value {
                    if v.contains(['\0', '\\']) {
                        return Err(DbError::Usage(format!("{name}: a NUL or a backslash is not allowed")));
                    }
                    o = o.options([(name, v.as_str())]);
                }
            }
            if let Some(name) = &opts.application_name {
                o = o.application_name(name);
            }
            refused_at_once(o.get_host(), o.get_port())
                .await
                .map_err(|cause| DbError::Connect { target: target.clone(), cause })?;
            let mut first = orphans::Label::default();
            if let Some(text) = &opts.label {
                first.text.clone_from(text);
            }
            let label = std::sync::Arc::new(Mutex::new(first));
            // An application_name the URL gives is the runbook's choice: kept, unlabelled.
            let labelled = o.get_application_name().is_none();
            let (on_connect, on_acquire) = (label.clone(), label.clone());
            let one = opts.one_session;
            let pool = PgPoolOptions::new()
                .max_connections(if one { 1 } else { size })
                .idle_timeout(if one { None } else { Some(Duration::from_secs(600)) })
                .max_lifetime(if one { None } else { Some(Duration::from_secs(1800)) })
                .acquire_timeout(connect_timeout)
                // Every session shows whom it works for in pg_stat_activity.application_name,
                // and a session made for an earlier step is not handed out again.
                .after_connect(move |conn, _| {
                    let text = on_connect.lock().map(|l| l.text.clone()).unwrap_or_default();
                    Box::pin(async move {
                        if labelled {
                            sqlx::query("SELECT set_config('application_name', $1, false)")
                                .bind(text)
                                .execute(&mut *conn)
                                .await?;
                        }
                        Ok(())
                    })
                })
                .before_acquire(move |conn, meta| {
                    let (fresh, text) = on_acquire
                        .lock()
                        .map(|l| (!labelled || meta.age <= l.since.elapsed(), l.text.clone()))
                        .unwrap_or((true, String::new()));
                    Box::pin(async move {
                        // The REPL's one session is kept: it is relabelled instead of replaced.
                        if !fresh && one {
                            sqlx::query("SELECT set_config('application_name', $1, false)")
                                .bind(text)
                                .execute(&mut *conn)
                                .await?;
                            return Ok(true);
                        }
                        Ok(fresh)
                    })
                })
                .connect_with(o)
                .await
                .map_err(|e| DbError::Connect { target: target.clone(), cause: strip(cause(&e)) })?;
            return Ok(Db { pool: Pool::Postgres(pool), target, pg_params: Mutex::new(HashMap::new()), label });
        }
        if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            if let Some(name) = opts.pg_only() {
                return Err(DbError::Usage(format!("{name} applies to PostgreSQL only")));
            }
            let url = url.replacen("mariadb://", "mysql://", 1);
            let o = MySqlConnectOptions::from_str(&url)
                .map_err(|e| DbError::Usage(format!("invalid MySQL URL: {}", strip(e.to_string()))))?;
            let target = format!("mysql {}:{}/{}", o.get_host(), o.get_port(), o.get_database().unwrap_or(""));
            refused_at_once(o.get_host(), o.get_port())
                .await
                .map_err(|cause| DbError::Connect { target: target.clone(), cause })?;
            let pool = MySqlPoolOptions::new()
                .max_connections(if opts.one_session { 1 } else { size })
                .idle_timeout(if opts.one_session { None } else { Some(Duration::from_secs(600)) })
                .max_lifetime(if opts.one_session { None } else { Some(Duration::from_secs(1800)) })
                .acquire_timeout(connect_timeout)
                .connect_with(o)
                .await
                .map_err(|e| DbError::Connect { target: target.clone(), cause: strip(cause(&e)) })?;
            return Ok(Db {
                pool: Pool::MySql(pool),
                target,
                pg_params: Mutex::new(HashMap::new()),
                label: Default::default(),
            });
        }
        if url.starts_with("sqlite:") {
            if let Some(name) = opts.pg_only() {
                return Err(DbError::Usage(format!("{name} applies to PostgreSQL only")));
            }
            let o = SqliteConnectOptions::from_str(url)
                .map_err(|e| DbError::Usage(format!("invalid SQLite URL: {e}")))?
                .create_if_missing(true);
            let memory = url.contains(":memory:");
            let target = format!(
                "sqlite {}",
                if memory { ":memory:".to_string() } else { o.get_filename().display().to_string() }
            );
            // An in-memory database lives in one connection: a pool of one keeps it whole.
            let pool = SqlitePoolOptions::new()
                .max_connections(if memory { 1 } else { size })
                .acquire_timeout(connect_timeout)
                .connect_with(o)
                .await
                .map_err(|e| DbError::Connect { target: target.clone(), cause: cause(&e) })?;
            return Ok(Db {
                pool: Pool::Sqlite(pool),
                target,
                pg_params: Mutex::new(HashMap::new()),
                label: Default::default(),
            });
        }
        let scheme = url.split("://").next().unwrap_or(url);
        Err(DbError::Scheme(if url.contains("://") { format!("{scheme}://…") } else { "…".into() }))
    }

    /// One connection of the pool, kept for a session (see [`Tx`]).
    pub async fn session(&self) -> Result<Tx, DbError> {
        // Closed, never returned to the pool, also when the session is cut off (a step timeout
        // drops it): what it set must not reach another statement.
        Ok(match &self.pool {
            Pool::Sqlite(p) => Tx::SqliteSession({
                let mut c = p.acquire().await?;
                c.close_on_drop();
                c
            }),
            Pool::Postgres(p) => Tx::PgSession({
                let mut c = p.acquire().await?;
                c.close_on_drop();
                c
            }),
            Pool::MySql(p) => Tx::MySqlSession({
                let mut c = p.acquire().await?;
                c.close_on_drop();
                c
            }),
        })
    }

    pub async fn begin(&self) -> Result<Tx, DbError> {
        Ok(match &self.pool {
            Pool::Sqlite(p) => Tx::Sqlite(p.begin().await?),
            Pool::Postgres(p) => Tx::Postgres(p.begin().await?),
            Pool::MySql(p) => Tx::MySql(p.begin().await?),
        })
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
            Pool::MySql(p) => p.close().await,
        }
    }

    /// Runs a statement and returns its rows.
    pub async fn fetch(&self, tx: Option<&mut Tx>, sql: &str, params: &[DbValue]) -> Result<Rows, DbError> {
        match (&self.pool, tx.map(Tx::pinned)) {
            (Pool::Sqlite(p), None) => sqlite_rows(sqlite_query(sql, params)?.fetch_all(p).await?),
            (Pool::MySql(p), None) => mysql_rows(mysql_query(&self.mysql_labelled(sql), params)?.fetch_all(p).await?),
            (_, Some(Pinned::My(c))) => mysql_rows(mysql_query(&self.mysql_labelled(sql), params)?.fetch_all(c).await?),
            (_, Some(Pinned::Lite(c))) => sqlite_rows(sqlite_query(sql, params)?.fetch_all(c).await?),
            (Pool::Postgres(p), None) => {
                let d = self.pg_describe(sql, None).await?;
                let params = self.pg_reg_params(&d, params, None).await?;
                let run = d.wrapped.as_deref().unwrap_or(sql);
                pg::rows(pg::query(run, &d.params, &params)?.fetch_all(p).await?, d.names())
            }
            (_, Some(Pinned::Pg(c))) => {
                let d = self.pg_describe(sql, Some(&mut *c)).await?;
                let params = self.pg_reg_params(&d, params, Some(&mut *c)).await?;
                let run = d.wrapped.as_deref().unwrap_or(sql);
                pg::rows(pg::query(run, &d.params, &params)?.fetch_all(c).await?, d.names())
            }
        }
    }

    /// MySQL has no session name a processlist shows: each statement carries the label as a
    /// leading comment instead.
    fn mysql_labelled(&self, sql: &str) -> String {
        format!("/* {} */ {sql}", self.label())
    }

    /// Forgets the cached parameter types (after DDL, a statement may mean something else).
    pub fn forget_types(&self) {
        if let Ok(mut m) = self.pg_params.lock() {
            m.clear();
        }
    }

    /// After DDL, a cached statement description may be wrong: forgets them all.
    pub fn forget_types_after(&self, sql: &str) {
        let first = sql.split_whitespace().next().unwrap_or("").to_ascii_lowercase();
        if matches!(first.as_str(), "create" | "alter" | "drop" | "truncate" | "comment") {
            self.forget_types();
        }
    }

    /// Runs a statement and returns the number of rows it affected.
    pub async fn execute(&self, tx: Option<&mut Tx>, sql: &str, params: &[DbValue]) -> Result<u64, DbError> {
        self.forget_types_after(sql);
        Ok(match (&self.pool, tx.map(Tx::pinned)) {
            (Pool::Sqlite(p), None) => sqlite_query(sql, params)?.execute(p).await?.rows_affected(),
            (Pool::MySql(p), None) => mysql_query(&self.mysql_labelled(sql), params)?.execute(p).await?.rows_affected(),
            (_, Some(Pinned::My(c))) => {
                mysql_query(&self.mysql_labelled(sql), params)?.execute(c).await?.rows_affected()
            }
            (_, Some(Pinned::Lite(c))) => sqlite_query(sql, params)?.execute(c).await?.rows_affected(),
            (Pool::Postgres(p), None) => {
                let d = self.pg_describe(sql, None).await?;
                let params = self.pg_reg_params(&d, params, None).await?;
                pg::query(sql, &d.params, &params)?.execute(p).await?.rows_affected()
            }
            (_, Some(Pinned::Pg(c))) => {
                let d = self.pg_describe(sql, Some(&mut *c)).await?;
                let params = self.pg_reg_params(&d, params, Some(&mut *c)).await?;
                pg::query(sql, &d.params, &params)?.execute(c).await?.rows_affected()
            }
        })
    }

    /// What PostgreSQL says of a statement: its parameter types and result columns, and the
    /// statement that asks for unreadable columns as text (see `pg`). Prepared once, cached.
    async fn pg_describe(
        &self,
        sql: &str,
        conn: Option<&mut PgConnection>,
    ) -> Result<std::sync::Arc<Described>, DbError> {
        if let Some(d) = self.pg_params.lock().ok().and_then(|m| m.get(sql).cloned()) {
            return Ok(d);
        }
        let statement = match (conn, &self.pool) {
            (Some(c), _) => c.prepare(AssertSqlSafe(sql.to_string()).into_sql_str()).await?,
            (None, Pool::Postgres(p)) => p.prepare(AssertSqlSafe(sql.to_string()).into_sql_str()).await?,
            (None, Pool::Sqlite(_) | Pool::MySql(_)) => return Ok(Default::default()),
        };
        let params = match statement.parameters() {
            Some(Either::Left(types)) => types.to_vec(),
            _ => vec![],
        };
        let columns: Vec<(String, PgTypeInfo)> =
            statement.columns().iter().map(|c| (c.name().to_string(), c.type_info().clone())).collect();
        let wrapped = pg::text_wrapped(sql, &columns);
        let column_names = pg::names(&columns);
        let d = std::sync::Arc::new(Described { params, column_names, wrapped });
        if let Ok(mut m) = self.pg_params.lock() {
            if m.len() > 1000 {
                m.clear();
            }
            m.insert(sql.to_string(), d.clone());
        }
        Ok(d)
    }
}

impl Db {
    /// Parameters of a reg* type given as a name ('public.orders' for a regclass) as their OID,
    /// which the server looks up (on the same connection, so a temporary table is found).
    async fn pg_reg_params<'p>(
        &self,
        d: &Described,
        params: &'p [DbValue],
        mut conn: Option<&mut PgConnection>,
    ) -> Result<std::borrow::Cow<'p, [DbValue]>, DbError> {
        let mut out = std::borrow::Cow::Borrowed(params);
        for (n, ty) in d.params.iter().enumerate() {
            let (Some(reg), Some(DbValue::Text(name))) = (pg::reg_type(ty), params.get(n)) else { continue };
            let sql = format!("SELECT $1::text::{reg}::oid::int8");
            let q = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql)).bind(name.clone());
            let oid = match (&mut conn, &self.pool) {
                (Some(c), _) => q.fetch_one(&mut **c).await,
                (None, Pool::Postgres(p)) => q.fetch_one(p).await,
                _ => continue,
            }
            .map_err(|e| DbError::Bind(format!("parameter ${} ({reg}): {}", n + 1, cause(&e))))?;
            out.to_mut()[n] = DbValue::Int(oid);
        }
        Ok(out)
    }
}

/// A PostgreSQL statement as the server described it.
#[derive(Default)]
struct Described {
    params: Vec<PgTypeInfo>,
    /// The result's column names, as the statement gives them.
    column_names: Vec<String>,
    /// The statement that asks for the columns db cannot read as text, when there are some.
    wrapped: Option<String>,
}

impl Described {
    /// The column names to give the rows of the wrapped statement.
    fn names(&self) -> Option<&[String]> {
        self.wrapped.as_ref().map(|_| self.column_names.as_slice())
    }
}

/// Rows arriving one at a time, for `each`: nothing is held but the row in hand.
pub enum RowStream<'a> {
    Sqlite(futures_util::stream::BoxStream<'a, Result<SqliteRow, sqlx::Error>>),
    MySql(futures_util::stream::BoxStream<'a, Result<MySqlRow, sqlx::Error>>),
    /// With the column names of a statement wrapped to read some columns as text.
    Postgres(futures_util::stream::BoxStream<'a, Result<PgRow, sqlx::Error>>, Option<Vec<String>>),
}

impl RowStream<'_> {
    /// The next row as (column, value) pairs, or None at the end.
    pub async fn next(&mut self) -> Result<Option<Vec<(String, DbValue)>>, DbError> {
        use futures_util::TryStreamExt;
        Ok(match self {
            RowStream::Sqlite(s) => match s.try_next().await? {
                Some(row) => Some(named(sqlite_rows(vec![row])?)),
                None => None,
            },
            RowStream::MySql(s) => match s.try_next().await? {
                Some(row) => Some(named(mysql_rows(vec![row])?)),
                None => None,
            },
            RowStream::Postgres(s, names) => match s.try_next().await? {
                Some(row) => Some(named(pg::rows(vec![row], names.as_deref())?)),
                None => None,
            },
        })
    }
}

fn named(rows: Rows) -> Vec<(String, DbValue)> {
    rows.columns.into_iter().zip(rows.rows.into_iter().next().unwrap_or_default()).collect()
}

impl Db {
    /// Streams the rows of a statement.
    pub async fn stream<'a>(
        &'a self,
        tx: Option<&'a mut Tx>,
        sql: &'a str,
        params: &[DbValue],
    ) -> Result<RowStream<'a>, DbError> {
        Ok(match (&self.pool, tx.map(Tx::pinned)) {
            (Pool::Sqlite(p), None) => RowStream::Sqlite(sqlite_query(sql, params)?.fetch(p)),
            (Pool::MySql(p), None) => RowStream::MySql(mysql_query(sql, params)?.fetch(p)),
            (_, Some(Pinned::My(c))) => RowStream::MySql(mysql_query(sql, params)?.fetch(c)),
            (_, Some(Pinned::Lite(c))) => RowStream::Sqlite(sqlite_query(sql, params)?.fetch(c)),
            (Pool::Postgres(p), None) => {
                let d = self.pg_describe(sql, None).await?;
                let params = self.pg_reg_params(&d, params, None).await?;
                let run = d.wrapped.clone().unwrap_or_else(|| sql.to_string());
                let names = d.names().map(<[String]>::to_vec);
                RowStream::Postgres(pg::query(&run, &d.params, &params)?.fetch(p), names)
            }
            (_, Some(Pinned::Pg(c))) => {
                let d = self.pg_describe(sql, Some(&mut *c)).await?;
                let params = self.pg_reg_params(&d, params, Some(&mut *c)).await?;
                let run = d.wrapped.clone().unwrap_or_else(|| sql.to_string());
                let names = d.names().map(<[String]>::to_vec);
                RowStream::Postgres(pg::query(&run, &d.params, &params)?.fetch(c), names)
            }
        })
    }

    /// Runs a file of statements (a migration) in one transaction. An error names the line the
    /// failing statement starts on.
    pub async fn execute_script(&self, script: &str) -> Result<usize, (usize, DbError)> {
        let statements = split_statements(script, matches!(self.pool, Pool::MySql(_)));
        for (line, sql) in &statements {
            let first = sql.split_whitespace().next().unwrap_or("").to_ascii_lowercase();
            if matches!(first.as_str(), "begin" | "commit" | "rollback" | "start" | "end" | "savepoint" | "release") {
                return Err((*line, DbError::Usage(format!("`{first}` in a SQL file: execute_file runs the whole file in one transaction itself; remove the transaction statements"))));
            }
        }
        self.forget_types();
        let mut tx = self.begin().await.map_err(|e| (0, e))?;
        for (line, sql) in &statements {
            let done = match tx.pinned() {
                Pinned::Lite(c) => sqlx::raw_sql(AssertSqlSafe(sql.as_str())).execute(c).await.map(|_| ()),
                Pinned::Pg(c) => sqlx::raw_sql(AssertSqlSafe(sql.as_str())).execute(c).await.map(|_| ()),
                Pinned::My(c) => sqlx::raw_sql(AssertSqlSafe(self.mysql_labelled(sql))).execute(c).await.map(|_| ()),
            };
            if let Err(e) = done {
                let _ = tx.rollback().await;
                return Err((*line, e.into()));
            }
        }
        tx.commit().await.map_err(|e| (0, e))?;
        Ok(statements.len())
    }
}

/// Splits SQL text into statements at `;`, outside quotes ('...', "..."), comments (--, /* */)
/// and PostgreSQL dollar quotes ($tag$...$tag$). Returns each statement with the line it
/// starts on (1-based), empty ones dropped.
pub fn split_statements(script: &str, mysql: bool) -> Vec<(usize, String)> {
    let chars: Vec<char> = script.chars().collect();
    let mut out = Vec::new();
    let mut current = String::new();
    let mut line = 1;
    let mut start_line = None::<usize>;
    let mut i = 0;
    let mut push = |current: &mut String, start: &mut Option<usize>| {
        let text = current.trim();
        if !text.is_empty() && !text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with("--")) {
            out.push((start.unwrap_or(1), text.to_string()));
        }
        current.clear();
        *start = None;
    };
    while i < chars.len() {
        let c = chars[i];
        let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
        let begin = |start: &mut Option<usize>, line: usize| {
            if start.is_none() {
                *start = Some(line);
            }
        };
        if rest == "--" || (mysql && c == '#') {
            while i < chars.len() && chars[i] != '\n' {
                current.push(chars[i]);
                i += 1;
            }
            continue;
        }
        if rest == "/*" {
            // Comments nest in PostgreSQL.
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    current.push_str("/*");
                    i += 2;
                    continue;
                }
                if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    current.push_str("*/");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                    continue;
                }
                if chars[i] == '\n' {
                    line += 1;
                }
                current.push(chars[i]);
                i += 1;
            }
            continue;
        }
        if c == '\'' || c == '"' {
            // Backslash escapes: PostgreSQL E'...' strings, and every string in MySQL.
            let escapes = mysql
                || (c == '\''
                    && i > 0
                    && matches!(chars[i - 1], 'E' | 'e')
                    && (i < 2 || !chars[i - 2].is_alphanumeric()));
            begin(&mut start_line, line);
            current.push(c);
            i += 1;
            while i < chars.len() {
                if escapes && chars[i] == '\\' && i + 1 < chars.len() {
                    current.push(chars[i]);
                    current.push(chars[i + 1]);
                    i += 2;
                    continue;
                }
                current.push(chars[i]);
                if chars[i] == '\n' {
                    line += 1;
                }
                if chars[i] == c {
                    if chars.get(i + 1) == Some(&c) {
                        current.push(c);
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                i += 1;
            }
            continue;
        }
        if c == '$' && (i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')) {
            // $tag$ ... $tag$ (tag may be empty)
            let tag_end = chars[i + 1..].iter().position(|ch| !(ch.is_alphanumeric() || *ch == '_')).map(|p| i + 1 + p);
            if let Some(end) = tag_end.filter(|e| chars.get(*e) == Some(&'$')) {
                let tag: String = chars[i..=end].iter().collect();
                begin(&mut start_line, line);
                current.push_str(&tag);
                i = end + 1;
                let tag_chars: Vec<char> = tag.chars().collect();
                while i < chars.len() && chars[i..].iter().take(tag_chars.len()).ne(tag_chars.iter()) {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    current.push(chars[i]);
                    i += 1;
                }
                if i < chars.len() {
                    current.push_str(&tag);
                    i += tag_chars.len();
                }
                continue;
            }
        }
        if c == ';' {
            push(&mut current, &mut start_line);
            i += 1;
            continue;
        }
        if c == '\n' {
            line += 1;
        } else if !c.is_whitespace() {
            begin(&mut start_line, line);
        }
        current.push(c);
        i += 1;
    }
    push(&mut current, &mut start_line);
    out
}

/// The cause of a connection error, without anything that could hold a password.
fn cause(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => {
            format!("{}{}", d.message(), d.code().map(|c| format!(" (SQLSTATE {c})")).unwrap_or_default())
        }
        sqlx::Error::PoolTimedOut => "timed out".into(),
        other => other.to_string(),
    }
}

/// Drops anything after '@' that looks like credentials in a URL quoted by an error.
fn strip(text: String) -> String {
    match (text.find("://"), text.find('@')) {
        (Some(a), Some(b)) if a < b => format!("{}://…{}", &text[..a], &text[b..]),
        _ => text,
    }
}

/// SQLite and MySQL convert values on the server: parameters bind by their own Lua type.
fn plain_query<'q, DB>(sql: &'q str, params: &[DbValue], engine: &str) -> Result<Query<'q, DB, DB::Arguments>, DbError>
where
    DB: sqlx::Database,
    Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    bool: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    f64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Vec<u8>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for v in params {
        q = match v {
            DbValue::Null => q.bind(None::<String>),
            DbValue::Bool(b) => q.bind(*b),
            DbValue::Int(i) => q.bind(*i),
            DbValue::Float(f) => q.bind(*f),
            DbValue::Text(s) => q.bind(s.clone()),
            DbValue::Bytes(b) => q.bind(b.clone()),
            DbValue::Json(j) => q.bind(j.to_string()),
            DbValue::Array(_) => {
                return Err(DbError::Bind(format!("arrays are not supported by {engine}; pass JSON text")))
            }
        };
    }
    Ok(q)
}

fn sqlite_query<'q>(sql: &'q str, params: &[DbValue]) -> Result<Query<'q, Sqlite, SqliteArguments>, DbError> {
    plain_query(sql, params, "SQLite")
}

/// Rows as column names and decoded values; `value` decodes one column of one row.
fn collect_rows<R: Row>(
    rows: Vec<R>,
    value: impl Fn(&R, usize, &<R::Database as sqlx::Database>::Column) -> Result<DbValue, DbError>,
) -> Result<Rows, DbError> {
    let mut out = Rows::default();
    if let Some(first) = rows.first() {
        out.columns = first.columns().iter().map(|c| c.name().to_string()).collect();
    }
    for row in &rows {
        let values =
            row.columns().iter().enumerate().map(|(i, col)| value(row, i, col)).collect::<Result<Vec<_>, _>>()?;
        out.rows.push(values);
    }
    Ok(out)
}

fn sqlite_rows(rows: Vec<SqliteRow>) -> Result<Rows, DbError> {
    collect_rows(rows, sqlite_value)
}

fn sqlite_value(row: &SqliteRow, i: usize, col: &sqlx::sqlite::SqliteColumn) -> Result<DbValue, DbError> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(DbValue::Null);
    }
    let declared = col.type_info().name().to_ascii_uppercase();
    Ok(match raw.type_info().name() {
        "INTEGER" if declared == "BOOLEAN" || declared == "BOOL" => DbValue::Bool(row.try_get::<bool, _>(i)?),
        "INTEGER" => DbValue::Int(row.try_get::<i64, _>(i)?),
        "REAL" => DbValue::Float(row.try_get::<f64, _>(i)?),
        "BLOB" => DbValue::Bytes(row.try_get::<Vec<u8>, _>(i)?),
        _ => DbValue::Text(row.try_get::<String, _>(i)?),
    })
}

impl DbValue {
    /// The value as JSON (numeric as its text, bytes as lossy UTF-8).
    pub fn to_json(&self) -> serde_json::Value {
        to_json_value(self)
    }
}

fn to_json_value(v: &DbValue) -> serde_json::Value {
    match v {
        DbValue::Null => serde_json::Value::Null,
        DbValue::Bool(b) => (*b).into(),
        DbValue::Int(i) => (*i).into(),
        DbValue::Float(f) => {
            serde_json::Number::from_f64(*f).map(serde_json::Value::Number).unwrap_or(serde_json::Value::Null)
        }
        DbValue::Text(t) => t.clone().into(),
        DbValue::Bytes(b) => String::from_utf8_lossy(b).into_owned().into(),
        DbValue::Json(j) => j.clone(),
        DbValue::Array(items) => serde_json::Value::Array(items.iter().map(to_json_value).collect()),
    }
}

pub(crate) fn int(v: &DbValue) -> Result<i64, String> {
    match v {
        DbValue::Int(i) => Ok(*i),
        DbValue::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(*f as i64),
        DbValue::Text(t) => t.trim().parse().map_err(|_| format!("'{t}' is not an integer")),
        other => Err(format!("expected an integer, got a {}", other.kind())),
    }
}

pub(crate) fn float(v: &DbValue) -> Result<f64, String> {
    match v {
        DbValue::Int(i) => Ok(*i as f64),
        DbValue::Float(f) => Ok(*f),
        DbValue::Text(t) => t.trim().parse().map_err(|_| format!("'{t}' is not a number")),
        other => Err(format!("expected a number, got a {}", other.kind())),
    }
}

fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> DbValue) -> DbValue {
    v.map(f).unwrap_or(DbValue::Null)
}

#[cfg(test)]
mod tests {
    use super::split_statements;

    #[test]
    fn statements_split_outside_quotes_comments_and_dollar_quotes() {
        let sql = "-- header; not a statement\ncreate table a (x text default 'a;b');\n\n/* block; */ insert into a values ('it''s; fine');\ncreate function f() returns int as $body$ select 1; $body$ language sql;\nselect \"odd;name\" from a";
        let got = split_statements(sql, false);
        let lines: Vec<usize> = got.iter().map(|(l, _)| *l).collect();
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(lines, vec![2, 4, 5, 6]);
        assert!(got[1].1.contains("'it''s; fine'"));
        assert!(got[2].1.ends_with("$body$ language sql"));
        let tricky = "insert into e values (E'it\\'s; fine'); /* a /* b; */ c; */ select a$b from t; select 1";
        assert_eq!(split_statements(tricky, false).len(), 3, "{:?}", split_statements(tricky, false));
        let mysql = "insert into m values ('it\\'s; ok'); # don't split here; please\nselect 2";
        assert_eq!(split_statements(mysql, true).len(), 2, "{:?}", split_statements(mysql, true));
    }
}
