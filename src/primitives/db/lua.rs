//! Lua binding of `db`: `db.connect(url_or_secret, [opts])` returns a connection with
//! `query`, `query_one`, `scalar`, `execute`, `transaction` and `close`; `db.null` is the
//! engine's `null`.
use std::sync::Arc;

use mlua::{Function, Lua, LuaSerdeExt, MetaMethod, MultiValue, Table, UserData, UserDataMethods, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::Mutex;

use super::pg::Reader;
use super::tape::{Item, Tape};
use super::{Db, DbError, DbValue, Options, RowStream, Rows, Tx};
use crate::engine::Ctx;
use crate::primitives::error;
use crate::secret::Secret;

pub fn register(lua: &Lua) -> mlua::Result<()> {
    let t = lua.create_table()?;
    t.set("connect", lua.create_async_function(connect)?)?;
    t.set("null", lua.null())?;
    lua.globals().set("db", t)
}

/// A connection (a pool), or a transaction on one.
pub struct Conn {
    db: Arc<Db>,
    tx: Option<Arc<Mutex<Option<Tx>>>>,
    /// Shared by a connection and its transaction handles.
    state: Arc<ConnState>,
}

/// Clears `in_transaction` however the function inside a transaction or session ends, also
/// when its future is dropped (a step timeout): the connection stays usable afterwards.
struct Open(Arc<ConnState>);

impl Open {
    fn new(state: &Arc<ConnState>) -> Open {
        state.in_transaction.store(true, Ordering::SeqCst);
        Open(Arc::clone(state))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.in_transaction.store(false, Ordering::SeqCst);
    }
}

#[derive(Default)]
pub struct ConnState {
    /// A transaction is open on this connection: calls go through its handle.
    in_transaction: AtomicBool,
    /// A statement inside the open transaction failed (even if the runbook caught the error).
    tx_failed: AtomicBool,
    /// each() loops running on this connection.
    streams: AtomicUsize,
}

async fn connect(lua: Lua, (target, opts): (Value, Option<Value>)) -> mlua::Result<Value> {
    let ctx = Ctx::from_lua(&lua)?;
    ctx.refuse_in_coroutine(&lua, "db.connect")?;
    // In plan and check, a param not given is a placeholder: the connection is one too.
    if let Value::Table(t) = &target {
        if crate::lua::is_placeholder(t) && ctx.mode.is_static() {
            return crate::lua::placeholder(&lua, "db.connect");
        }
    }
    let url = match &target {
        Value::String(s) => s.to_string_lossy(),
        Value::UserData(ud) => match ud.borrow::<Secret>() {
            Ok(s) => s.expose().to_string(),
            Err(_) => return Err(error("db", "connect expects a URL string or a secret")),
        },
        other => {
            return Err(error("db", format!("connect expects a URL string or a secret, got a {}", other.type_name())))
        }
    };
    let mut opts: Options = crate::primitives::options(&lua, "db", "connect options", opts)?;
    opts.one_session = ctx.trigger == "repl";
    opts.label = Some(ctx.work_label().text);
    if let Some(p) = ctx.guard(&lua, "db", false, String::new)? {
        return Ok(p);
    }
    let db = Arc::new(Db::connect(&url, &opts).await.map_err(|e| error("db", e))?);
    super::orphans::register(&db);
    Ok(Value::UserData(lua.create_userdata(Conn { db, tx: None, state: Arc::default() })?))
}

/// Lua arguments to database values: nil/null, booleans, numbers, strings (binary strings as
/// bytes), secrets (their value), arrays, and tables (JSON).
fn to_db(v: Value) -> mlua::Result<DbValue> {
    Ok(match v {
        Value::Nil => DbValue::Null,
        Value::LightUserData(p) if p.0.is_null() => DbValue::Null,
        Value::Boolean(b) => DbValue::Bool(b),
        Value::Integer(i) => DbValue::Int(i),
        Value::Number(n) => DbValue::Float(n),
        Value::String(s) => match s.to_str() {
            Ok(t) => DbValue::Text(t.to_string()),
            Err(_) => DbValue::Bytes(s.as_bytes().to_vec()),
        },
        Value::UserData(ud) => match ud.borrow::<Secret>() {
            Ok(s) => DbValue::Text(s.expose().to_string()),
            Err(_) => return Err(error("db", "a parameter is a userdata value; pass plain data")),
        },
        Value::Table(t) => {
            if let Some(what) = hidden_value(&t, 0) {
                return Err(error("db", format!("a table parameter holds {what}; pass it as a parameter of its own")));
            }
            let json =
                crate::lua::convert::to_json(&Value::Table(t)).map_err(|e| error("db", format!("parameter: {e}")))?;
            match json {
                serde_json::Value::Array(items) if scalar_array(&items, 0) => array_value(items),
                other => DbValue::Json(other),
            }
        }
        other => return Err(error("db", format!("a parameter is a {}; pass plain data", other.type_name()))),
    })
}

/// An array of scalars, or of such arrays (a multi-dimensional SQL array), not of objects.
fn scalar_array(items: &[serde_json::Value], depth: usize) -> bool {
    depth < 6
        && items.iter().all(|i| match i {
            serde_json::Value::Object(_) => false,
            serde_json::Value::Array(inner) => scalar_array(inner, depth + 1),
            _ => true,
        })
}

fn array_value(items: Vec<serde_json::Value>) -> DbValue {
    DbValue::Array(
        items
            .into_iter()
            .map(|i| match i {
                serde_json::Value::Null => DbValue::Null,
                serde_json::Value::Bool(b) => DbValue::Bool(b),
                serde_json::Value::Number(n) => {
                    n.as_i64().map(DbValue::Int).unwrap_or(DbValue::Float(n.as_f64().unwrap_or_default()))
                }
                serde_json::Value::String(s) => DbValue::Text(s),
                serde_json::Value::Array(inner) => array_value(inner),
                other => DbValue::Json(other),
            })
            .collect(),
    )
}

/// A secret or a placeholder inside a table would be bound as its label: find one.
fn hidden_value(t: &Table, depth: usize) -> Option<&'static str> {
    if depth > 32 {
        return None;
    }
    if crate::lua::is_placeholder(t) {
        return Some("a dry-run placeholder");
    }
    for (_, v) in t.pairs::<Value, Value>().flatten() {
        match v {
            Value::UserData(ud) if ud.borrow::<Secret>().is_ok() => return Some("a secret"),
            Value::Table(inner) => {
                if let Some(w) = hidden_value(&inner, depth + 1) {
                    return Some(w);
                }
            }
            _ => {}
        }
    }
    None
}

/// One value as Lua (through the same C-API path as whole results; see [`Results`]).
fn to_lua(lua: &Lua, v: DbValue) -> mlua::Result<Value> {
    let mut tape = Tape::default();
    tape.add(&v).map_err(|e| error("db", e))?;
    let marker = crate::lua::convert::array_marker(lua)?;
    // SAFETY: as in `Results::add`: the closure only reads the tape and pushes.
    unsafe {
        lua.exec_raw(marker, |state| {
            let mut i = 0;
            push_item(state, &tape, &mut i);
            mlua::ffi::lua_replace(state, 1);
            mlua::ffi::lua_settop(state, 1);
        })
    }
}

fn unique_columns(columns: &[String]) -> mlua::Result<()> {
    for (i, c) in columns.iter().enumerate() {
        if columns[..i].contains(c) {
            return Err(error(
                "db",
                format!("the column name '{c}' appears twice in the result; give the columns distinct aliases"),
            ));
        }
    }
    Ok(())
}

fn rows_to_lua(lua: &Lua, rows: Rows) -> mlua::Result<Table> {
    let mut results = Results::new(lua, rows.columns)?;
    let mut tape = Tape::default();
    for batch in rows.rows.chunks(BATCH_ROWS) {
        tape.clear();
        for v in batch.iter().flatten() {
            tape.add(v).map_err(|e| error("db", e))?;
        }
        results.add(&tape, batch.len())?;
    }
    results.finish()
}

/// Rows read a batch at a time onto a reused tape (see `Conn::query_table`).
const BATCH_ROWS: usize = 1024;
const BATCH_BYTES: usize = 1 << 20;
/// A batch from which on building a result pauses the collector.
const LARGE_BATCH: usize = 256;

/// A result table (an array of rows keyed by column) built from tapes, a batch of rows at a
/// time, through Lua's C API in one protected call per batch: with a memory limit set, mlua
/// protects every table and string it makes one by one, which costs more than the values
/// themselves. From the first large batch on, the collector is paused until the result is
/// done: building it makes no garbage (every table and string stays reachable), so its steps
/// while the result grows were pure cost. (Not for small results: `each` builds one row at a
/// time, and a collector paused and restarted around every row let a million rows pile up.)
struct Results<'a> {
    lua: &'a Lua,
    table: Table,
    marker: Table,
    columns: Vec<String>,
    rows: usize,
    /// Whether this result paused the collector (and restarts it when dropped).
    paused: bool,
}

impl<'a> Results<'a> {
    fn new(lua: &'a Lua, columns: Vec<String>) -> mlua::Result<Results<'a>> {
        unique_columns(&columns)?;
        let marker = crate::lua::convert::array_marker(lua)?;
        Ok(Results { lua, table: lua.create_table()?, marker, columns, rows: 0, paused: false })
    }

    /// Appends `rows` rows of `tape` (one value per column each).
    fn add(&mut self, tape: &Tape, rows: usize) -> mlua::Result<()> {
        if rows >= LARGE_BATCH && !self.paused && self.lua.gc_is_running() {
            self.lua.gc_stop();
            self.paused = true;
        }
        let (columns, first) = (&self.columns, self.rows);
        // SAFETY: the closure runs in a protected call; on a Lua error (out of memory) it is
        // left by longjmp, so it owns nothing to drop: it only reads the tape and pushes.
        unsafe {
            self.lua.exec_raw::<()>((&self.marker, &self.table), |state| {
                use mlua::ffi;
                // 1: marker, 2: the result, 3..: the column names.
                ffi::luaL_checkstack(state, columns.len() as std::ffi::c_int + 8, std::ptr::null());
                for c in columns {
                    ffi::lua_pushlstring(state, c.as_ptr().cast(), c.len());
                }
                let mut i = 0;
                for n in 0..rows {
                    ffi::lua_createtable(state, 0, columns.len() as std::ffi::c_int);
                    for c in 0..columns.len() {
                        ffi::lua_pushvalue(state, 3 + c as std::ffi::c_int);
                        push_item(state, tape, &mut i);
                        ffi::lua_rawset(state, -3);
                    }
                    ffi::lua_rawseti(state, 2, (first + n) as ffi::lua_Integer + 1);
                }
                ffi::lua_settop(state, 0);
            })?;
        }
        self.rows += rows;
        Ok(())
    }

    fn finish(self) -> mlua::Result<Table> {
        crate::lua::convert::mark_rows(self.lua, &self.table, &self.columns)?;
        Ok(self.table.clone())
    }
}

impl Drop for Results<'_> {
    fn drop(&mut self) {
        if self.paused {
            self.lua.gc_restart();
        }
    }
}

/// Pushes the value at item `*i` of the tape and moves past it: arrays and JSON as tables,
/// arrays marked with the marker at stack index 1, NULL as `null`.
unsafe fn push_item(state: *mut mlua::ffi::lua_State, t: &Tape, i: &mut usize) {
    use mlua::ffi;
    let Some(&item) = t.items.get(*i) else {
        ffi::lua_pushlightuserdata(state, std::ptr::null_mut());
        return;
    };
    *i += 1;
    match item {
        Item::Null => ffi::lua_pushlightuserdata(state, std::ptr::null_mut()),
        Item::Bool(b) => ffi::lua_pushboolean(state, std::ffi::c_int::from(b)),
        Item::Int(n) => ffi::lua_pushinteger(state, n),
        Item::Float(f) => ffi::lua_pushnumber(state, f),
        Item::U64(n) => ffi::lua_pushnumber(state, n as f64),
        Item::Text(at, len) | Item::Bytes(at, len) => {
            let b = t.slice(at, len);
            ffi::lua_pushlstring(state, b.as_ptr().cast(), b.len());
        }
        Item::Json => push_item(state, t, i),
        Item::Array(n) => {
            ffi::luaL_checkstack(state, 4, std::ptr::null());
            ffi::lua_createtable(state, i32::try_from(n).unwrap_or(0), 0);
            for k in 1..=n {
                push_item(state, t, i);
                ffi::lua_rawseti(state, -2, ffi::lua_Integer::from(k));
            }
            ffi::lua_pushvalue(state, 1);
            ffi::lua_setmetatable(state, -2);
        }
        Item::Object(n) => {
            ffi::luaL_checkstack(state, 4, std::ptr::null());
            ffi::lua_createtable(state, 0, i32::try_from(n).unwrap_or(0));
            for _ in 0..n {
                push_item(state, t, i);
                push_item(state, t, i);
                ffi::lua_rawset(state, -3);
            }
        }
    }
}

/// `(sql, params...)` from a method's arguments.
fn sql_and_params(args: MultiValue) -> mlua::Result<(String, Vec<DbValue>)> {
    let mut it = args.into_iter();
    let sql = match it.next() {
        Some(Value::String(s)) => s.to_string_lossy(),
        Some(Value::UserData(ud)) if ud.borrow::<Secret>().is_ok() => {
            let name = ud.borrow::<Secret>().map(|s| s.name().to_string()).unwrap_or_default();
            return Err(error(
                "db",
                format!(
                    "the SQL text holds the secret '{name}' (joined into it with ..): SQL text reaches the server log and pg_stat_activity. \
                     Bind it as a parameter instead ($1 on PostgreSQL, ? on MySQL); to set a role's password, \
                     runbook.pg.set_password(conn, role, secret) sends only its SCRAM verifier"
                ),
            ));
        }
        Some(other) => {
            return Err(error(
                "db",
                format!("expected the SQL text as the first argument, got a {}", other.type_name()),
            ))
        }
        None => return Err(error("db", "expected the SQL text as the first argument")),
    };
    let params = it.map(to_db).collect::<mlua::Result<Vec<_>>>()?;
    Ok((sql, params))
}

impl Conn {
    /// While a transaction is open, its handle is the way in: the connection itself would run
    /// outside it (and may wait forever on the transaction's own locks).
    fn usable(&self) -> mlua::Result<()> {
        if self.tx.is_none() && self.state.in_transaction.load(Ordering::SeqCst) {
            return Err(error(
                "db",
                "a transaction or session is open on this connection: use the handle transaction() or session() passes to its function",
            ));
        }
        Ok(())
    }

    /// Notes a failed statement inside a transaction: it will not be committed.
    fn track<T>(&self, r: mlua::Result<T>) -> mlua::Result<T> {
        if r.is_err() && self.tx.is_some() {
            self.state.tx_failed.store(true, Ordering::SeqCst);
        }
        r
    }

    /// Labels the statements that follow with the run, step and attempt; in an attempt that
    /// follows an earlier one, first stops what earlier attempts left running on this server.
    async fn label(&self, lua: &Lua) -> mlua::Result<()> {
        let Ok(ctx) = Ctx::from_lua(lua) else { return Ok(()) };
        let label = ctx.work_label();
        if self.db.set_label(&label.text) && label.rerun {
            match self.db.stop_earlier(&label).await {
                Ok(said) => {
                    for said in said {
                        ctx.emit("warning", serde_json::json!({ "message": said }));
                    }
                }
                Err(e) => {
                    // Looked for again at the next statement.
                    self.db.set_label("runbook");
                    return Err(error("db", e));
                }
            }
        }
        Ok(())
    }

    async fn fetch(&self, sql: &str, params: &[DbValue]) -> mlua::Result<Rows> {
        self.usable()?;
        let r = self.fetch_inner(sql, params).await;
        self.track(r)
    }

    async fn fetch_inner(&self, sql: &str, params: &[DbValue]) -> mlua::Result<Rows> {
        match &self.tx {
            Some(tx) => {
                let mut guard = busy(tx)?;
                let t = guard.as_mut().ok_or_else(|| error("db", "the transaction is over"))?;
                self.db.fetch(Some(t), sql, params).await
            }
            None => self.db.fetch(None, sql, params).await,
        }
        .map_err(|e| error("db", e))
    }

    /// The rows of a statement as a Lua table. PostgreSQL's arrive as a stream and are read a
    /// batch at a time onto one reused tape, so a large result never exists twice in memory.
    async fn query_table(&self, lua: &Lua, sql: &str, params: &[DbValue]) -> mlua::Result<Table> {
        self.usable()?;
        let r = self.query_table_inner(lua, sql, params).await;
        self.track(r)
    }

    async fn query_table_inner(&self, lua: &Lua, sql: &str, params: &[DbValue]) -> mlua::Result<Table> {
        use futures_util::TryStreamExt;
        if !matches!(self.db.pool, super::Pool::Postgres(_)) {
            return rows_to_lua(lua, self.fetch_inner(sql, params).await?);
        }
        let mut guard = match &self.tx {
            Some(tx) => Some(busy(tx)?),
            None => None,
        };
        let tx = match guard.as_mut() {
            Some(g) => Some(g.as_mut().ok_or_else(|| error("db", "the transaction is over"))?),
            None => None,
        };
        let mut stream = self.db.stream(tx, sql, params).await.map_err(|e| error("db", e))?;
        let RowStream::Postgres(rows, names) = &mut stream else {
            return Err(error("db", "a PostgreSQL connection streamed rows of another kind"));
        };
        let mut out: Option<(Reader, Results)> = None;
        let mut tape = Tape::default();
        let mut batch = 0;
        while let Some(row) = rows.try_next().await.map_err(|e| error("db", DbError::from(e)))? {
            let (reader, results) = match &mut out {
                Some(o) => o,
                None => {
                    let reader = Reader::new(&row, names.as_deref());
                    let results = Results::new(lua, reader.columns.clone())?;
                    out.insert((reader, results))
                }
            };
            reader.row(&row, &mut tape).map_err(|e| error("db", e))?;
            batch += 1;
            if batch == BATCH_ROWS || tape.bytes.len() >= BATCH_BYTES {
                results.add(&tape, batch)?;
                tape.clear();
                batch = 0;
            }
        }
        match out {
            Some((_, mut results)) => {
                results.add(&tape, batch)?;
                results.finish()
            }
            None => Results::new(lua, names.clone().unwrap_or_default())?.finish(),
        }
    }

    async fn execute(&self, sql: &str, params: &[DbValue]) -> mlua::Result<u64> {
        self.usable()?;
        let r = self.execute_inner(sql, params).await;
        self.track(r)
    }

    async fn execute_inner(&self, sql: &str, params: &[DbValue]) -> mlua::Result<u64> {
        match &self.tx {
            Some(tx) => {
                let mut guard = busy(tx)?;
                let t = guard.as_mut().ok_or_else(|| error("db", "the transaction is over"))?;
                self.db.execute(Some(t), sql, params).await
            }
            None => self.db.execute(None, sql, params).await,
        }
        .map_err(|e| error("db", e))
    }
}

/// A transaction is used by one call at a time; a call from inside `each` over it would wait
/// for itself forever, so it is refused.
fn busy(tx: &Mutex<Option<Tx>>) -> mlua::Result<tokio::sync::MutexGuard<'_, Option<Tx>>> {
    tx.try_lock().map_err(|_| error("db", "the transaction is busy: it cannot be used inside each() over itself"))
}

fn row_table(lua: &Lua, row: Vec<(String, DbValue)>) -> mlua::Result<Table> {
    let (names, values): (Vec<String>, Vec<DbValue>) = row.into_iter().unzip();
    let mut tape = Tape::default();
    for v in &values {
        tape.add(v).map_err(|e| error("db", e))?;
    }
    let mut results = Results::new(lua, names)?;
    results.add(&tape, 1)?;
    results.table.raw_get(1)
}

fn one_row(rows: Rows, sql: &str) -> mlua::Result<Rows> {
    match rows.rows.len() {
        1 => Ok(rows),
        n => {
            let short: String = sql.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(80).collect();
            Err(error("db", format!("expected exactly one row, got {n} from `{short}`")))
        }
    }
}

impl UserData for Conn {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(MetaMethod::ToString, |_, this, ()| {
            Ok(format!("db {} ({})", if this.tx.is_some() { "transaction" } else { "connection" }, this.db.target))
        });
        methods.add_async_method("query", |lua, this, args: MultiValue| async move {
            Ctx::from_lua(&lua)?.refuse_in_coroutine(&lua, "db query")?;
            let (sql, params) = sql_and_params(args)?;
            this.label(&lua).await?;
            this.query_table(&lua, &sql, &params).await
        });
        methods.add_async_method("query_one", |lua, this, args: MultiValue| async move {
            Ctx::from_lua(&lua)?.refuse_in_coroutine(&lua, "db query_one")?;
            let (sql, params) = sql_and_params(args)?;
            this.label(&lua).await?;
            let rows = one_row(this.fetch(&sql, &params).await?, &sql)?;
            let t: Table = rows_to_lua(&lua, rows)?.get(1)?;
            Ok(t)
        });
        methods.add_async_method("scalar", |lua, this, args: MultiValue| async move {
            Ctx::from_lua(&lua)?.refuse_in_coroutine(&lua, "db scalar")?;
            let (sql, params) = sql_and_params(args)?;
            this.label(&lua).await?;
            let mut rows = one_row(this.fetch(&sql, &params).await?, &sql)?;
            let value = rows.rows.pop().and_then(|r| r.into_iter().next()).unwrap_or(DbValue::Null);
            to_lua(&lua, value)
        });
        methods.add_async_method("execute", |lua, this, args: MultiValue| async move {
            let ctx = Ctx::from_lua(&lua)?;
            ctx.refuse_in_coroutine(&lua, "db execute")?;
            let (sql, params) = sql_and_params(args)?;
            // The whole statement (redacted when shown), on one line.
            let short: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
            if ctx.guard(&lua, "db", true, || format!("execute `{short}` on {}", this.db.target))?.is_some() {
                return Ok(Value::Integer(0));
            }
            this.label(&lua).await?;
            Ok(Value::Integer(this.execute(&sql, &params).await? as i64))
        });
        methods.add_async_method("transaction", |lua, this, f: Function| async move {
            let ctx = Ctx::from_lua(&lua)?;
            ctx.refuse_in_coroutine(&lua, "db transaction")?;
            if this.tx.is_some() {
                return Err(error(
                    "db",
                    "a transaction cannot be nested (inside a session, run BEGIN and COMMIT with execute)",
                ));
            }
            this.usable()?;
            this.label(&lua).await?;
            let tx = this.db.begin().await.map_err(|e| error("db", e))?;
            let shared = Arc::new(Mutex::new(Some(tx)));
            let handle =
                lua.create_userdata(Conn { db: Arc::clone(&this.db), tx: Some(Arc::clone(&shared)), state: Arc::clone(&this.state) })?;
            let open = Open::new(&this.state);
            this.state.tx_failed.store(false, Ordering::SeqCst);
            let result = f.call_async::<MultiValue>(handle).await;
            drop(open);
            let tx = shared.lock().await.take();
            // PostgreSQL answers COMMIT on a transaction that had an error with a silent
            // ROLLBACK: a statement that failed inside (even one the runbook caught) rolls back.
            let result = match result {
                Ok(_) if this.state.tx_failed.swap(false, Ordering::SeqCst) => {
                    Err(error("db", "a statement inside the transaction failed (its error was caught), so the transaction was rolled back"))
                }
                other => other,
            };
            match (result, tx) {
                (Ok(values), Some(tx)) => {
                    tx.commit().await.map_err(|e| error("db", format!("commit failed: {e}")))?;
                    Ok(values)
                }
                (Err(e), Some(tx)) => {
                    let _ = tx.rollback().await;
                    Err(e)
                }
                (r, None) => r,
            }
        });
        methods.add_async_method("session", |lua, this, f: Function| async move {
            let ctx = Ctx::from_lua(&lua)?;
            ctx.refuse_in_coroutine(&lua, "db session")?;
            if this.tx.is_some() {
                return Err(error("db", "a session is opened on the connection, not inside a transaction or session"));
            }
            this.usable()?;
            this.label(&lua).await?;
            let session = this.db.session().await.map_err(|e| error("db", e))?;
            let shared = Arc::new(Mutex::new(Some(session)));
            let handle = lua.create_userdata(Conn {
                db: Arc::clone(&this.db),
                tx: Some(Arc::clone(&shared)),
                state: Arc::clone(&this.state),
            })?;
            let open = Open::new(&this.state);
            let result = f.call_async::<MultiValue>(handle).await;
            drop(open);
            this.state.tx_failed.store(false, Ordering::SeqCst);
            // The connection is closed, not returned: what the session set stays with it.
            if let Some(session) = shared.lock().await.take() {
                let _ = session.rollback().await;
            }
            result
        });
        methods.add_async_method("execute_returning", |lua, this, args: MultiValue| async move {
            let ctx = Ctx::from_lua(&lua)?;
            ctx.refuse_in_coroutine(&lua, "db execute_returning")?;
            let (sql, params) = sql_and_params(args)?;
            let short: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
            if ctx.guard(&lua, "db", true, || format!("execute `{short}` on {}", this.db.target))?.is_some() {
                // A dry run changes nothing: no rows come back.
                return rows_to_lua(&lua, Rows::default());
            }
            this.label(&lua).await?;
            this.db.forget_types_after(&sql);
            this.query_table(&lua, &sql, &params).await
        });
        methods.add_async_method("query_file", |lua, this, args: MultiValue| async move {
            let ctx = Ctx::from_lua(&lua)?;
            ctx.refuse_in_coroutine(&lua, "db query_file")?;
            let mut args = args.into_iter();
            let path = match args.next() {
                Some(Value::String(s)) => s.to_string_lossy(),
                _ => return Err(error("db", "query_file expects the path of a .sql file first")),
            };
            let full = ctx.resolve_path(&path);
            let sql = std::fs::read_to_string(&full)
                .map_err(|e| error("db", format!("query_file {}: {e}", full.display())))?;
            let params = args.map(to_db).collect::<mlua::Result<Vec<_>>>()?;
            this.label(&lua).await?;
            this.query_table(&lua, &sql, &params).await.map_err(|e| error("db", format!("{path}: {e}")))
        });
        methods.add_async_method("set_password", |lua, this, (role, password): (String, Value)| async move {
            let ctx = Ctx::from_lua(&lua)?;
            ctx.refuse_in_coroutine(&lua, "db set_password")?;
            let Value::UserData(ud) = &password else {
                return Err(error(
                    "db",
                    "set_password takes the password as a secret: secret{ value = ..., name = ... } or secret(\"ENV\")",
                ));
            };
            let secret =
                ud.borrow::<Secret>().map_err(|_| error("db", "set_password takes the password as a secret"))?;
            if ctx
                .guard(&lua, "db", true, || format!("set the password of role {role} on {}", this.db.target))?
                .is_some()
            {
                return Ok(());
            }
            this.label(&lua).await?;
            let sql = super::scram::alter_role_sql(&role, secret.expose()).map_err(|e| error("db", e))?;
            this.execute(&sql, &[]).await.map(|_| ())
        });
        methods.add_async_method("each", |lua, this, args: MultiValue| async move {
            Ctx::from_lua(&lua)?.refuse_in_coroutine(&lua, "db each")?;
            let mut args: Vec<Value> = args.into_iter().collect();
            let Some(Value::Function(f)) = args.pop() else {
                return Err(error(
                    "db",
                    "each expects the callback last: conn:each(sql, params..., function(row) ... end)",
                ));
            };
            let (sql, params) = sql_and_params(args.into_iter().collect())?;
            this.usable()?;
            this.label(&lua).await?;
            this.state.streams.fetch_add(1, Ordering::SeqCst);
            let r = each_rows(&lua, &this, &sql, &params, f).await;
            this.state.streams.fetch_sub(1, Ordering::SeqCst);
            this.track(r)
        });
        methods.add_async_method("execute_file", |lua, this, path: String| async move {
            let ctx = Ctx::from_lua(&lua)?;
            ctx.refuse_in_coroutine(&lua, "db execute_file")?;
            if this.tx.is_some() {
                return Err(error("db", "execute_file runs in a transaction of its own; call it on the connection"));
            }
            let full = ctx.resolve_path(&path);
            let script = std::fs::read_to_string(&full)
                .map_err(|e| error("db", format!("execute_file {}: {e}", full.display())))?;
            if ctx.guard(&lua, "db", true, || format!("run the SQL file {path} on {}", this.db.target))?.is_some() {
                return Ok(0);
            }
            this.label(&lua).await?;
            match this.db.execute_script(&script).await {
                Ok(n) => Ok(n as i64),
                Err((0, e)) => Err(error("db", format!("{path}: {e}"))),
                Err((line, e)) => Err(error("db", format!("{path}:{line}: {e} (the whole file was rolled back)"))),
            }
        });
        methods.add_async_method("close", |_, this, ()| async move {
            if this.tx.is_some() {
                return Err(error("db", "close the connection, not the transaction handle"));
            }
            if this.state.in_transaction.load(Ordering::SeqCst) || this.state.streams.load(Ordering::SeqCst) > 0 {
                return Err(error("db", "cannot close the connection while a transaction or each() is running on it"));
            }
            this.db.close().await;
            Ok(())
        });
    }
}

/// The rows of `each`, one at a time; the callback returning false stops early.
async fn each_rows(lua: &Lua, this: &Conn, sql: &str, params: &[DbValue], f: Function) -> mlua::Result<i64> {
    let mut count = 0i64;
    let mut guard = match &this.tx {
        Some(tx) => Some(busy(tx)?),
        None => None,
    };
    let tx = match guard.as_mut() {
        Some(g) => Some(g.as_mut().ok_or_else(|| error("db", "the transaction is over"))?),
        None => None,
    };
    let mut rows = this.db.stream(tx, sql, params).await.map_err(|e| error("db", e))?;
    while let Some(row) = rows.next().await.map_err(|e| error("db", e))? {
        count += 1;
        let table = row_table(lua, row)?;
        if let Value::Boolean(false) = f.call_async::<Value>(table).await? {
            break;
        }
    }
    Ok(count)
}
