//! Lua binding of `storage`: `storage.open(url, [opts])` returns a store with `put`, `get`,
//! `list`, `stat`, `exists`, `delete` and `copy`.
use mlua::{Lua, MetaMethod, Table, UserData, UserDataMethods, Value};
use serde::de::IgnoredAny;

use super::{S3Options, StorageError, Store};
use crate::engine::Ctx;
use crate::primitives::error;
use crate::secret::Secret;

pub fn register(lua: &Lua) -> mlua::Result<()> {
    lua.set_app_data(Opened::default());
    let t = lua.create_table()?;
    t.set("open", lua.create_async_function(open)?)?;
    lua.globals().set("storage", t)
}

/// The stores this run opened, by URL: a backup manifest names its store by URL, and finds it
/// here with its credentials.
#[derive(Default)]
struct Opened(std::cell::RefCell<std::collections::HashMap<String, Store>>);

/// A store this run opened with `url`.
pub fn opened(lua: &Lua, url: &str) -> Option<Store> {
    lua.app_data_ref::<Opened>().and_then(|o| o.0.borrow().get(url).cloned())
}

/// Keeps a store this run opened, for the manifests that name it.
pub fn remember(lua: &Lua, store: &Store) {
    if let Some(o) = lua.app_data_ref::<Opened>() {
        o.0.borrow_mut().insert(store.url.clone(), store.clone());
    }
}

fn err(e: StorageError) -> mlua::Error {
    error("storage", e)
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenOpts {
    endpoint: Option<String>,
    region: Option<String>,
    path_style: Option<bool>,
    allow_http: Option<bool>,
    #[allow(dead_code)]
    access_key_id: Option<IgnoredAny>,
    #[allow(dead_code)]
    secret_access_key: Option<IgnoredAny>,
}

fn secret_or_text(v: Value, what: &str) -> mlua::Result<String> {
    match v {
        Value::String(s) => {
            let s = s.to_string_lossy();
            crate::secret::register(&s, what);
            Ok(s)
        }
        Value::UserData(ud) => match ud.borrow::<Secret>() {
            Ok(s) => Ok(s.expose().to_string()),
            Err(_) => Err(error("storage", format!("{what}: expected a secret"))),
        },
        other => Err(error("storage", format!("{what}: expected a secret, got a {}", other.type_name()))),
    }
}

async fn open(lua: Lua, (url, opts): (String, Option<Table>)) -> mlua::Result<Value> {
    let mut s3 = S3Options::default();
    let plain = lua.create_table()?;
    if let Some(t) = opts {
        for pair in t.pairs::<Value, Value>() {
            let (k, v) = pair?;
            match &k {
                Value::String(s) if s.to_string_lossy() == "access_key_id" => {
                    s3.access_key_id = Some(secret_or_text(v, "access_key_id")?)
                }
                Value::String(s) if s.to_string_lossy() == "secret_access_key" => {
                    s3.secret_access_key = Some(secret_or_text(v, "secret_access_key")?)
                }
                _ => plain.set(k, v)?,
            }
        }
    }
    let o: OpenOpts = crate::primitives::options(&lua, "storage", "open options", Some(Value::Table(plain)))?;
    s3.endpoint = o.endpoint;
    s3.region = o.region;
    s3.path_style = o.path_style;
    s3.allow_http = o.allow_http;
    if url.starts_with("file://") && (s3.endpoint.is_some() || s3.access_key_id.is_some()) {
        return Err(error("storage", "open options: endpoint and keys apply to s3:// URLs"));
    }
    let ctx = Ctx::from_lua(&lua)?;
    ctx.refuse_in_coroutine(&lua, "storage.open")?;
    if let Some(p) = ctx.guard(&lua, "storage", false, String::new)? {
        return Ok(p);
    }
    let base = ctx.resolve_path(".");
    let store = tokio::task::spawn_blocking(move || Store::open(&url, &base, &s3))
        .await
        .map_err(|e| error("storage", e))?
        .map_err(err)?;
    remember(&lua, &store);
    Ok(Value::UserData(lua.create_userdata(store)?))
}

/// Under `runbook test`: tells the store's fake of the call (recorded as `put s3://b/p/key`;
/// a fake may fail it).
async fn fake(lua: &Lua, store: &Store, what: &str, key: &str, mutating: bool) -> mlua::Result<()> {
    if let Some(hook) = crate::primitives::fake_hook(lua, "storage") {
        let call = format!("{what} {}/{}", store.url.trim_end_matches('/'), key.trim_start_matches('/'));
        hook.call_async::<()>((call, mutating)).await?;
    }
    Ok(())
}

fn meta_table(lua: &Lua, m: &super::Meta) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("key", m.key.as_str())?;
    t.set("size", m.size)?;
    t.set("modified", m.modified.as_str())?;
    if let Some(e) = &m.etag {
        t.set("etag", e.as_str())?;
    }
    Ok(t)
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GetOpts {
    to: Option<String>,
}

impl UserData for Store {
    fn add_fields<F: mlua::UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("url", |_, this| Ok(this.url.clone()));
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(MetaMethod::ToString, |_, this, ()| Ok(format!("store {}", this.url)));
        methods.add_async_method("put", |lua, this, (key, data): (String, Value)| async move {
            let ctx = Ctx::from_lua(&lua)?;
            ctx.refuse_in_coroutine(&lua, "store:put")?;
            if let Some(p) = ctx.guard(&lua, "storage", true, || format!("put {key} in {}", this.url))? {
                return Ok(p);
            }
            fake(&lua, &this, "put", &key, true).await?;
            let meta = match data {
                Value::String(s) => this.put_bytes(&key, s.as_bytes().to_vec()).await,
                Value::Table(t) => {
                    let file: Option<String> = t.get("file")?;
                    let n = t.pairs::<Value, Value>().count();
                    match file {
                        Some(f) if n == 1 => this.put_file(&key, &ctx.resolve_path(&f)).await,
                        _ => return Err(error("storage", "put: the data is a string or {file = \"path\"}")),
                    }
                }
                other => {
                    return Err(error(
                        "storage",
                        format!("put: the data is a string or {{file = \"path\"}}, got a {}", other.type_name()),
                    ))
                }
            }
            .map_err(err)?;
            Ok(Value::Table(meta_table(&lua, &meta)?))
        });
        methods.add_async_method("get", |lua, this, (key, opts): (String, Option<Value>)| async move {
            let o: GetOpts = crate::primitives::options(&lua, "storage", "get options", opts)?;
            let ctx = Ctx::from_lua(&lua)?;
            ctx.refuse_in_coroutine(&lua, "store:get")?;
            match o.to {
                None => {
                    if let Some(p) = ctx.guard(&lua, "storage", false, String::new)? {
                        return Ok(p);
                    }
                    fake(&lua, &this, "get", &key, false).await?;
                    let bytes = this.get_bytes(&key).await.map_err(err)?;
                    Ok(Value::String(lua.create_string(&bytes)?))
                }
                Some(to) => {
                    let mut path = ctx.resolve_path(&to);
                    if let Some(p) = ctx.guard(&lua, "storage", true, || format!("get {key} into {to}"))? {
                        return Ok(p);
                    }
                    // Under `runbook test` the file goes into the test's world, never the disk's.
                    if let Some(hook) = crate::primitives::fake_hook(&lua, "storage") {
                        let call =
                            format!("get {}/{} into {to}", this.url.trim_end_matches('/'), key.trim_start_matches('/'));
                        let into: Option<String> = hook.call_async((call, true, to.clone())).await?;
                        path = into.map(std::path::PathBuf::from).unwrap_or(path);
                    }
                    let meta = this.get_to_file(&key, &path).await.map_err(err)?;
                    Ok(Value::Table(meta_table(&lua, &meta)?))
                }
            }
        });
        methods.add_async_method("list", |lua, this, prefix: Option<String>| async move {
            let ctx = Ctx::from_lua(&lua)?;
            ctx.refuse_in_coroutine(&lua, "store:list")?;
            if let Some(p) = ctx.guard(&lua, "storage", false, String::new)? {
                return Ok(p);
            }
            fake(&lua, &this, "list", prefix.as_deref().unwrap_or(""), false).await?;
            let items = this.list(prefix.as_deref().unwrap_or("")).await.map_err(err)?;
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, m) in items.iter().enumerate() {
                t.raw_set(i + 1, meta_table(&lua, m)?)?;
            }
            crate::lua::convert::mark_array(&lua, &t)?;
            Ok(Value::Table(t))
        });
        methods.add_async_method("stat", |lua, this, key: String| async move {
            let ctx = Ctx::from_lua(&lua)?;
            ctx.refuse_in_coroutine(&lua, "store:stat")?;
            if let Some(p) = ctx.guard(&lua, "storage", false, String::new)? {
                return Ok(p);
            }
            fake(&lua, &this, "stat", &key, false).await?;
            match this.stat(&key).await.map_err(err)? {
                Some(m) => Ok(Value::Table(meta_table(&lua, &m)?)),
                None => Ok(Value::Nil),
            }
        });
        methods.add_async_method("exists", |lua, this, key: String| async move {
            let ctx = Ctx::from_lua(&lua)?;
            ctx.refuse_in_coroutine(&lua, "store:exists")?;
            if let Some(p) = ctx.guard(&lua, "storage", false, String::new)? {
                return Ok(p);
            }
            fake(&lua, &this, "exists", &key, false).await?;
            Ok(Value::Boolean(this.stat(&key).await.map_err(err)?.is_some()))
        });
        methods.add_async_method("delete", |lua, this, key: String| async move {
            let ctx = Ctx::from_lua(&lua)?;
            ctx.refuse_in_coroutine(&lua, "store:delete")?;
            if let Some(p) = ctx.guard(&lua, "storage", true, || format!("delete {key} from {}", this.url))? {
                return Ok(p);
            }
            fake(&lua, &this, "delete", &key, true).await?;
            this.delete(&key).await.map_err(err)?;
            Ok(Value::Boolean(true))
        });
        methods.add_async_method("copy", |lua, this, (from, to): (String, String)| async move {
            let ctx = Ctx::from_lua(&lua)?;
            ctx.refuse_in_coroutine(&lua, "store:copy")?;
            if let Some(p) = ctx.guard(&lua, "storage", true, || format!("copy {from} to {to} in {}", this.url))? {
                return Ok(p);
            }
            fake(&lua, &this, "copy", &from, true).await?;
            this.copy(&from, &to).await.map_err(err)?;
            Ok(Value::Boolean(true))
        });
    }
}
