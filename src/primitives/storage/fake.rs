//! What `storage`'s fake (fake.lua) needs of Rust: stores in memory (object_store's InMemory),
//! so put, get, list and the rest behave as they do on S3 or disk. Each URL's store lives as
//! long as the test's world (a run and its resumes, a crash pass and its resume), so what a run
//! put before a crash is there after it, as it would be in a real bucket.
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use mlua::{Lua, Table};
use object_store::memory::InMemory;
use object_store::path::Path as Key;

use super::Store;
use crate::primitives::error;

/// The stores in memory, by world and bucket.
static MEMORY: Mutex<Option<HashMap<String, Arc<InMemory>>>> = Mutex::new(None);

/// The bucket of a store URL (`s3://bucket`, or the whole `file://` URL) and its prefix.
fn root_of(url: &str) -> Result<(String, String), String> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{url}: no bucket (s3://bucket/prefix)"));
        }
        Ok((format!("s3://{bucket}"), prefix.trim_matches('/').to_string()))
    } else if url.starts_with("file://") {
        Ok((url.trim_end_matches('/').to_string(), String::new()))
    } else {
        Err(format!("unsupported storage URL '{url}': use file:///path, file://./relative or s3://bucket/prefix"))
    }
}

/// The in-memory store of `url` in `world`, and whether its bucket was just made (to be seeded).
pub fn memory_store(world: &Path, url: &str) -> Result<(Store, bool), String> {
    let (root, prefix) = root_of(url)?;
    let prefix = Key::parse(&prefix).map_err(|e| format!("{url}: invalid prefix: {e}"))?;
    let key = format!("{}\u{0}{root}", world.display());
    let mut all = MEMORY.lock().unwrap_or_else(|p| p.into_inner());
    let all = all.get_or_insert_with(HashMap::new);
    let fresh = !all.contains_key(&key);
    let inner = Arc::clone(all.entry(key).or_insert_with(|| Arc::new(InMemory::new())));
    Ok((Store { inner, prefix, url: url.to_string() }, fresh))
}

/// Copies the stores of world `from` into world `to` (object_store's InMemory fork): a crash
/// proof's pass starts from an earlier run's world without changing it.
pub fn fork(from: &Path, to: &Path) {
    let (from, to) = (format!("{}\u{0}", from.display()), format!("{}\u{0}", to.display()));
    let mut all = MEMORY.lock().unwrap_or_else(|p| p.into_inner());
    let all = all.get_or_insert_with(HashMap::new);
    let copies: Vec<(String, Arc<InMemory>)> = all
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(&from).map(|root| (format!("{to}{root}"), Arc::new(v.fork()))))
        .collect();
    all.extend(copies);
}

/// Forgets the stores of the worlds at or under `path`, which are gone.
pub fn forget(path: &Path) {
    let start = path.display().to_string();
    if let Some(all) = MEMORY.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
        all.retain(|k, _| !k.starts_with(&start));
    }
}

/// `open(url)`: the store in memory, and whether it is new.
pub fn support(lua: &Lua, world: &Path) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let files = world.join("files");
    t.set(
        "world_file",
        lua.create_function(move |_, name: String| {
            std::fs::create_dir_all(&files).map_err(|e| error("storage", e))?;
            let name: String =
                name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect();
            Ok(files.join(name).display().to_string())
        })?,
    )?;
    t.set("root", lua.create_function(|_, url: String| Ok(root_of(&url).map(|(root, _)| root).ok()))?)?;
    let here = world.to_path_buf();
    t.set(
        "open",
        lua.create_function(move |lua, url: String| {
            let (store, fresh) = memory_store(&here, &url).map_err(|e| error("storage", e))?;
            super::lua::remember(lua, &store);
            Ok((lua.create_userdata(store)?, fresh))
        })?,
    )?;
    // Objects put there before the run (`fakes.storage` objects), under `url`'s prefix, without
    // telling the fake: they are the world's, not calls of the runbook.
    let here = world.to_path_buf();
    t.set(
        "seed",
        lua.create_async_function(move |_, (url, key, data): (String, String, mlua::LuaString)| {
            let here = here.clone();
            async move {
                let (store, _) = memory_store(&here, &url).map_err(|e| error("storage", e))?;
                store.put_bytes(&key, data.as_bytes().to_vec()).await.map_err(|e| error("storage", e))?;
                Ok(())
            }
        })?,
    )?;
    Ok(t)
}
