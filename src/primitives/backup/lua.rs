//! Lua binding of `backup`: `backup.create{...}`, `backup.list(store, opts)`,
//! `backup.latest(store, opts)`, `backup.verify(manifest_or_key, opts)`,
//! `backup.restore(manifest_or_key, opts)` and `backup.prune(store, policy)`.
use mlua::{Lua, LuaSerdeExt, Table, Value};
use serde::de::IgnoredAny;

use super::prune::Policy;
use super::{BackupError, Check, Compress, CreateSpec, Manifest, Source};
use crate::engine::Ctx;
use crate::primitives::error;
use crate::primitives::storage::Store;
use crate::secret::Secret;

pub fn register(lua: &Lua) -> mlua::Result<()> {
    let t = lua.create_table()?;
    t.set("create", lua.create_async_function(create)?)?;
    t.set("list", lua.create_async_function(list)?)?;
    t.set("latest", lua.create_async_function(latest)?)?;
    t.set("verify", lua.create_async_function(verify)?)?;
    t.set("restore", lua.create_async_function(restore)?)?;
    t.set("prune", lua.create_async_function(prune)?)?;
    lua.globals().set("backup", t)
}

fn err(e: BackupError) -> mlua::Error {
    error("backup", e)
}

fn to_lua(lua: &Lua, v: &impl serde::Serialize) -> mlua::Result<Value> {
    let json = serde_json::to_value(v).map_err(|e| error("backup", e))?;
    crate::lua::convert::from_json(lua, &json)
}

/// A database URL, plain or secret; a plain one's password is registered as a secret.
fn database(lua: &Lua, v: Value, what: &str) -> mlua::Result<Source> {
    let url = match v {
        Value::String(s) => s.to_string_lossy(),
        Value::UserData(ud) => match ud.borrow::<Secret>() {
            Ok(s) => s.expose().to_string(),
            Err(_) => return Err(error("backup", format!("{what}: expected a database URL or a secret"))),
        },
        other => return Err(error("backup", format!("{what}: expected a database URL, got a {}", other.type_name()))),
    };
    let ctx = Ctx::from_lua(lua)?;
    let base = ctx.abs_path.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    let source = Source::parse(&url, &base).map_err(err)?;
    if let Source::Postgres { password: Some(p), .. } | Source::MySql { password: Some(p), .. } = &source {
        crate::secret::register(p, what);
    }
    Ok(source)
}

/// Under `runbook test`: the fake's answer to the call (recorded; a fake may fail it), or None
/// outside tests.
async fn fake(lua: &Lua, call: String, mutating: bool) -> mlua::Result<Option<super::fake::Answer>> {
    let Some(hook) = crate::primitives::fake_hook(lua, "backup") else { return Ok(None) };
    let answer: Value = hook.call_async((call, mutating)).await?;
    let answer = match answer {
        Value::Nil => super::fake::Answer::default(),
        v => lua.from_value(v)?,
    };
    Ok(Some(answer))
}

fn store_of(v: &Value, what: &str) -> mlua::Result<Store> {
    match v {
        Value::UserData(ud) => ud
            .borrow::<Store>()
            .map(|s| s.clone())
            .map_err(|_| error("backup", format!("{what}: expected a store (storage.open)"))),
        other => Err(error("backup", format!("{what}: expected a store (storage.open), got a {}", other.type_name()))),
    }
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateOpts {
    prefix: Option<String>,
    compress: Option<Compress>,
    level: Option<i32>,
    format: Option<String>,
    tables: Option<Vec<String>>,
    label: Option<String>,
    #[allow(dead_code)]
    source: Option<IgnoredAny>,
    #[allow(dead_code)]
    to: Option<IgnoredAny>,
}

/// Splits an options table into the keys read by hand and the rest (for serde).
fn split(lua: &Lua, t: &Table, by_hand: &[&str]) -> mlua::Result<(Table, Table)> {
    let (hand, plain) = (lua.create_table()?, lua.create_table()?);
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair?;
        match &k {
            Value::String(s) if by_hand.contains(&s.to_string_lossy().as_str()) => hand.set(k, v)?,
            _ => plain.set(k, v)?,
        }
    }
    Ok((hand, plain))
}

async fn create(lua: Lua, t: Table) -> mlua::Result<Value> {
    let (hand, plain) = split(&lua, &t, &["source", "to"])?;
    let o: CreateOpts = crate::primitives::options(&lua, "backup", "create options", Some(Value::Table(plain)))?;
    let source = match hand.get::<Value>("source")? {
        Value::Nil => return Err(error("backup", "create: no source (source = database URL or secret)")),
        v => database(&lua, v, "source")?,
    };
    let store = match hand.get::<Value>("to")? {
        Value::Nil => return Err(error("backup", "create: no destination (to = storage.open(...))")),
        v => store_of(&v, "to")?,
    };
    let plain_format = match o.format.as_deref() {
        None | Some("custom") => false,
        Some("plain") => true,
        Some(other) => {
            return Err(error("backup", format!("create: format '{other}': \"custom\" or \"plain\" (PostgreSQL)")))
        }
    };
    if o.format.is_some() && source.engine() != "postgres" {
        return Err(error("backup", "create: format applies to PostgreSQL"));
    }
    let ctx = Ctx::from_lua(&lua)?;
    ctx.refuse_in_coroutine(&lua, "backup.create")?;
    let shown = source.shown();
    if let Some(p) = ctx.guard(&lua, "backup", true, || format!("back up {shown} to {}", store.url))? {
        return Ok(p);
    }
    let spec = CreateSpec {
        source,
        store,
        prefix: o.prefix.unwrap_or_default(),
        compress: o.compress.unwrap_or(Compress::Zstd),
        level: o.level,
        plain: plain_format,
        tables: o.tables.unwrap_or_default(),
        label: o.label,
    };
    if let Some(answer) = fake(&lua, format!("create {shown} to {}", spec.store.url), true).await? {
        return to_lua(&lua, &super::fake::create(&spec, &answer).await.map_err(err)?);
    }
    let m = labelled(&ctx, super::create(&spec)).await.map_err(err)?;
    to_lua(&lua, &m)
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ListOpts {
    prefix: Option<String>,
    label: Option<String>,
}

async fn list(lua: Lua, (store, opts): (Value, Option<Value>)) -> mlua::Result<Value> {
    let store = store_of(&store, "list")?;
    let o: ListOpts = crate::primitives::options(&lua, "backup", "list options", opts)?;
    let ctx = Ctx::from_lua(&lua)?;
    ctx.refuse_in_coroutine(&lua, "backup.list")?;
    if let Some(p) = ctx.guard(&lua, "backup", false, String::new)? {
        return Ok(p);
    }
    fake(&lua, format!("list {}", store.url), false).await?;
    let all = super::list(&store, o.prefix.as_deref().unwrap_or(""), o.label.as_deref()).await.map_err(err)?;
    to_lua(&lua, &all)
}

async fn latest(lua: Lua, (store, opts): (Value, Option<Value>)) -> mlua::Result<Value> {
    let store = store_of(&store, "latest")?;
    let o: ListOpts = crate::primitives::options(&lua, "backup", "latest options", opts)?;
    let ctx = Ctx::from_lua(&lua)?;
    ctx.refuse_in_coroutine(&lua, "backup.latest")?;
    if let Some(p) = ctx.guard(&lua, "backup", false, String::new)? {
        return Ok(p);
    }
    fake(&lua, format!("latest {}", store.url), false).await?;
    let all = super::list(&store, o.prefix.as_deref().unwrap_or(""), o.label.as_deref()).await.map_err(err)?;
    match all.first() {
        Some(m) => to_lua(&lua, m),
        None => Ok(Value::Nil),
    }
}

/// A manifest given as a table, or the key of a backup in `store`.
async fn manifest(lua: &Lua, v: Value, store: Option<&Store>) -> mlua::Result<(Manifest, Store)> {
    match v {
        Value::String(key) => {
            let store =
                store.ok_or_else(|| error("backup", "a backup given by key needs store = storage.open(...)"))?;
            let m = super::load_manifest(store, &key.to_string_lossy()).await.map_err(err)?;
            Ok((m, store.clone()))
        }
        Value::Table(_) => {
            let json = crate::lua::convert::to_json(&v).map_err(|e| error("backup", format!("manifest: {e}")))?;
            let m: Manifest =
                serde_json::from_value(json).map_err(|e| error("backup", format!("not a backup manifest: {e}")))?;
            let store = match (store, crate::primitives::storage::lua::opened(lua, &m.store)) {
                (Some(s), _) => s.clone(),
                (None, Some(s)) => s,
                (None, None)
                    if m.store.starts_with("file://") && crate::primitives::fake_hook(lua, "backup").is_none() =>
                {
                    let ctx = Ctx::from_lua(lua)?;
                    let base = ctx.abs_path.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
                    Store::open(&m.store, &base, &Default::default()).map_err(|e| error("backup", e))?
                }
                (None, None) => {
                    return Err(error(
                        "backup",
                        format!(
                            "the backup is in {}, which this run has not opened: pass store = storage.open(...)",
                            m.store
                        ),
                    ))
                }
            };
            // The stored manifest is the authority (verification results included).
            let stored = super::load_manifest(&store, &m.key).await.map_err(err)?;
            Ok((stored, store))
        }
        other => Err(error("backup", format!("expected a manifest or a backup's key, got a {}", other.type_name()))),
    }
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyOpts {
    checks: Option<Vec<Check>>,
    #[allow(dead_code)]
    store: Option<IgnoredAny>,
    #[allow(dead_code)]
    server: Option<IgnoredAny>,
    #[allow(dead_code)]
    into: Option<IgnoredAny>,
}

async fn verify(lua: Lua, (target, opts): (Value, Option<Table>)) -> mlua::Result<Value> {
    let opts = match opts {
        Some(t) => t,
        None => lua.create_table()?,
    };
    let (hand, plain) = split(&lua, &opts, &["store", "server", "into"])?;
    let o: VerifyOpts = crate::primitives::options(&lua, "backup", "verify options", Some(Value::Table(plain)))?;
    let store = match hand.get::<Value>("store")? {
        Value::Nil => None,
        v => Some(store_of(&v, "store")?),
    };
    let server = match hand.get::<Value>("server")? {
        Value::Nil => None,
        v => Some(database(&lua, v, "server")?),
    };
    let into = match hand.get::<Value>("into")? {
        Value::Nil => None,
        v => Some(database(&lua, v, "into")?),
    };
    let ctx = Ctx::from_lua(&lua)?;
    ctx.refuse_in_coroutine(&lua, "backup.verify")?;
    if let Some(p) = ctx.guard(&lua, "backup", true, || "verify a backup by restoring it".into())? {
        return Ok(p);
    }
    let (m, store) = manifest(&lua, target, store.as_ref()).await?;
    if let Some(answer) = fake(&lua, format!("verify {}", m.key), true).await? {
        let v = super::fake::verify(&store, m, &answer).await.map_err(err)?;
        return crate::lua::convert::from_json(&lua, &v);
    }
    let v = labelled(&ctx, super::verify(&store, m, server.as_ref(), into.as_ref(), &o.checks.unwrap_or_default()))
        .await
        .map_err(err)?;
    crate::lua::convert::from_json(&lua, &v)
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreOpts {
    clean: Option<bool>,
    #[allow(dead_code)]
    store: Option<IgnoredAny>,
    #[allow(dead_code)]
    into: Option<IgnoredAny>,
}

async fn restore(lua: Lua, (target, opts): (Value, Table)) -> mlua::Result<Value> {
    let (hand, plain) = split(&lua, &opts, &["store", "into"])?;
    let o: RestoreOpts = crate::primitives::options(&lua, "backup", "restore options", Some(Value::Table(plain)))?;
    let store = match hand.get::<Value>("store")? {
        Value::Nil => None,
        v => Some(store_of(&v, "store")?),
    };
    let into = match hand.get::<Value>("into")? {
        Value::Nil => return Err(error("backup", "restore: no target (into = database URL or secret)")),
        v => database(&lua, v, "into")?,
    };
    let ctx = Ctx::from_lua(&lua)?;
    ctx.refuse_in_coroutine(&lua, "backup.restore")?;
    let shown = into.shown();
    if let Some(p) = ctx.guard(&lua, "backup", true, || format!("restore a backup into {shown}"))? {
        return Ok(p);
    }
    let (m, store) = manifest(&lua, target, store.as_ref()).await?;
    if let Some(answer) = fake(&lua, format!("restore {} into {shown}", m.key), true).await? {
        let report = super::fake::restore(&store, &m, &into, &answer).await.map_err(err)?;
        return crate::lua::convert::from_json(&lua, &report);
    }
    // A retry of this very step (resume, retry) may clean what its cut-off attempt restored.
    let run = match (ctx.run_id(), ctx.current_step()) {
        (Some(run), Some(step)) if ctx.mode == crate::engine::Mode::Run => Some(format!("{run}/{step}")),
        _ => None,
    };
    let report = labelled(&ctx, super::restore(&store, &m, &into, o.clean.unwrap_or(false), run.as_deref()))
        .await
        .map_err(err)?;
    crate::lua::convert::from_json(&lua, &report)
}

async fn prune(lua: Lua, (store, opts): (Value, Option<Value>)) -> mlua::Result<Value> {
    let store = store_of(&store, "prune")?;
    let policy: Policy = crate::primitives::options(&lua, "backup", "prune options", opts)?;
    policy.check().map_err(|e| error("backup", format!("prune: {e}")))?;
    let ctx = Ctx::from_lua(&lua)?;
    ctx.refuse_in_coroutine(&lua, "backup.prune")?;
    let mutating = !policy.dry_run;
    if let Some(p) = ctx.guard(&lua, "backup", mutating, || format!("prune backups in {}", store.url))? {
        return Ok(p);
    }
    fake(&lua, format!("prune {}", store.url), mutating).await?;
    let report = super::prune_store(&store, &policy).await.map_err(err)?;
    crate::lua::convert::from_json(&lua, &report)
}

/// Runs a backup call under the attempt's label (its tools carry it), after stopping what an
/// earlier attempt of the step left running here.
async fn labelled<T>(ctx: &Ctx, fut: impl std::future::Future<Output = T>) -> T {
    let label = ctx.work_label();
    for said in crate::primitives::exec::orphans::stop_earlier_once(&label).await {
        ctx.emit("warning", serde_json::json!({ "message": said }));
    }
    super::WORK_LABEL.scope(label.text, fut).await
}
