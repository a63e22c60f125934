//! The Lua runtime: a sandboxed Lua 5.4 state, `require` limited to the embedded stdlib and
//! files beside the runbook, and the conversions between Lua values and JSON.
//!
//! The sandbox: string, table, math, utf8, coroutine and os.time/date/clock/getenv; no io, no
//! os.execute/remove/exit, no loadfile/dofile, no package, no debug, no string.dump, and `load`
//! of text chunks only.
pub mod convert;
pub mod errors;
pub mod literal;
pub mod source;
#[cfg(test)]
mod stubs_test;

use std::path::{Component, Path, PathBuf};

use mlua::chunk::ChunkMode;
use mlua::{Function, Lua, LuaOptions, StdLib, Table, Value};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/stdlib.rs"));
}

/// The embedded Lua modules: `runbook.*` (public) and `internal.*` (the engine's own).
pub fn embedded_module(name: &str) -> Option<&'static str> {
    embedded::MODULES.iter().find(|(n, _)| *n == name).map(|(_, src)| *src)
}

/// The editor stubs of stdlib/types/ (path under it, text), for `runbook stubs` and `init`.
pub fn embedded_types() -> &'static [(&'static str, &'static str)] {
    embedded::TYPES
}

/// The project scaffold of stdlib/scaffold/ (path under it, text), for `runbook init`.
pub fn scaffold() -> &'static [(&'static str, &'static str)] {
    embedded::SCAFFOLD
}

pub fn embedded_names() -> impl Iterator<Item = &'static str> {
    embedded::MODULES.iter().map(|(n, _)| *n)
}

/// Where `require` looks for modules that are not embedded: the runbook's own folder.
struct RequireRoot(PathBuf);

/// Creates the sandboxed state. `root` is the folder of the runbook; `memory_limit` in bytes.
pub fn new_sandbox(root: &Path, memory_limit: Option<usize>) -> mlua::Result<Lua> {
    let libs = StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8 | StdLib::COROUTINE | StdLib::OS;
    let lua = Lua::new_with(libs, LuaOptions::default())?;
    let g = lua.globals();

    let os: Table = g.get("os")?;
    let safe_os = lua.create_table()?;
    for name in ["time", "date", "clock", "getenv", "difftime"] {
        safe_os.set(name, os.get::<Value>(name)?)?;
    }
    g.set("os", safe_os)?;
    for name in ["dofile", "loadfile", "require", "package", "io", "debug"] {
        g.raw_set(name, Value::Nil)?;
    }
    let string: Table = g.get("string")?;
    string.set("dump", Value::Nil)?;

    let canonical_root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    lua.set_app_data(RequireRoot(canonical_root));
    let loaded = lua.create_table()?;
    lua.set_named_registry_value("runbook.loaded", loaded)?;
    g.set("require", lua.create_function(require)?)?;

    if let Some(limit) = memory_limit {
        lua.set_memory_limit(limit)?;
    }

    // The engine's own Lua: safe `load`, placeholders for plan and dry-run.
    let internal = run_internal(&lua, "internal.prelude")?;
    lua.set_named_registry_value("runbook.internal", internal)?;
    Ok(lua)
}

/// Compiles a runbook or one of its modules (`file` as errors name it): tail calls of primitives
/// kept in the runbook's frame so errors name their line (see [`source`]); a syntax error as its
/// message and place, a parser overflow placed on its line.
pub fn compile(lua: &Lua, src: &str, file: &str) -> Result<Function, (String, Option<errors::Location>)> {
    let kept = source::keep_frames(src);
    lua.load(kept.as_ref()).set_name(format!("@{file}")).set_mode(ChunkMode::Text).into_function().map_err(|e| {
        let (msg, loc) = errors::describe(&e);
        let loc = loc.or_else(|| {
            msg.contains("C stack overflow")
                .then(|| source::overflow_line(lua, src))
                .flatten()
                .map(|line| errors::Location { file: file.to_string(), line })
        });
        (source::shorten_near(&msg).into_owned(), loc)
    })
}

/// Points `require` of non-stdlib modules at another folder (the REPL loading a runbook).
pub fn set_require_root(lua: &Lua, dir: &Path) {
    let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    lua.set_app_data(RequireRoot(canonical));
}

/// Runs an embedded internal module and returns what it returns.
pub fn run_internal(lua: &Lua, name: &str) -> mlua::Result<Value> {
    let src = embedded_module(name).ok_or_else(|| mlua::Error::runtime(format!("internal module {name} missing")))?;
    embedded(lua, src, &format!("@{}.lua", name.replace('.', "/")))?.call(())
}

/// An embedded chunk (ours, in the binary) as a function: compiled once per process, then
/// loaded from its bytecode (debug information kept), so that the many Lua states of a test
/// suite or a worker do not parse the stdlib again each time.
pub fn embedded(lua: &Lua, src: &'static str, chunk_name: &str) -> mlua::Result<Function> {
    type Compiled = Vec<((usize, usize), Vec<u8>)>;
    static COMPILED: std::sync::Mutex<Compiled> = std::sync::Mutex::new(Vec::new());
    // Keyed by where the source lives and its length: embedded sources are 'static, never move.
    let key = (src.as_ptr() as usize, src.len());
    let cached =
        COMPILED.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|(k, _)| *k == key).map(|(_, b)| b.clone());
    if let Some(bytes) = cached {
        return lua.load(bytes).set_name(chunk_name).set_mode(ChunkMode::Binary).into_function();
    }
    let f = lua.load(src).set_name(chunk_name).set_mode(ChunkMode::Text).into_function()?;
    COMPILED.lock().unwrap_or_else(|p| p.into_inner()).push((key, f.dump(false)));
    Ok(f)
}

fn require(lua: &Lua, name: String) -> mlua::Result<Value> {
    let loaded: Table = lua.named_registry_value("runbook.loaded")?;
    if let Some(v) = loaded.get::<Option<Value>>(name.as_str())? {
        return Ok(v);
    }
    let (source, chunk_name) = if name.starts_with("runbook.") {
        match embedded_module(&name) {
            Some(src) => (src.to_string(), format!("@{}.lua", name.replace('.', "/"))),
            None => {
                let known: Vec<&str> = embedded_names().filter(|n| n.starts_with("runbook.")).collect();
                return Err(mlua::Error::runtime(format!(
                    "require '{name}': no such stdlib module (embedded: {})",
                    known.join(", ")
                )));
            }
        }
    } else {
        let path = module_path(lua, &name)?;
        let src = std::fs::read_to_string(&path)
            .map_err(|e| mlua::Error::runtime(format!("require '{name}': {}: {e}", path.display())))?;
        (src, format!("@{}", path.display()))
    };
    let func: Function = if name.starts_with("runbook.") {
        match embedded_module(&name) {
            Some(src) => embedded(lua, src, &chunk_name)?,
            None => lua.load(source).set_name(chunk_name).set_mode(ChunkMode::Text).into_function()?,
        }
    } else {
        compile(lua, &source, &chunk_name[1..]).map_err(|(msg, loc)| {
            mlua::Error::runtime(match loc {
                Some(l) => format!("require '{name}': {l}: syntax error: {msg}"),
                None => format!("require '{name}': {}: syntax error: {msg}", &chunk_name[1..]),
            })
        })?
    };
    let value: Value = func.call(name.as_str())?;
    let value = if value.is_nil() { Value::Boolean(true) } else { value };
    // What a Lua module cannot do in the sandbox, Rust gives it.
    if let (true, Value::Table(t)) = (name == "runbook.util", &value) {
        t.set("random_password", lua.create_function(random_password)?)?;
    }
    loaded.set(name.as_str(), value.clone())?;
    Ok(value)
}

/// `runbook.util.random_password([length])`: letters and digits from a CSPRNG
/// (default 32, the most 1024), for a secret made with `secret{ value = ..., name = ... }`.
fn random_password(_: &Lua, length: Option<i64>) -> mlua::Result<String> {
    use rand::Rng;
    let n = length.unwrap_or(32);
    if !(8..=1024).contains(&n) {
        return Err(mlua::Error::runtime(format!("random_password: length must be 8 to 1024, got {n}")));
    }
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    // ThreadRng: ChaCha12, seeded and reseeded from the OS (a CSPRNG).
    let mut rng = rand::rng();
    Ok((0..n).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect())
}

/// Resolves `a.b.c` to `<runbook folder>/a/b/c.lua`, refusing anything that would leave the
/// runbook's folder (absolute paths, `..`, symlinks pointing out).
fn module_path(lua: &Lua, name: &str) -> mlua::Result<PathBuf> {
    let root = lua
        .app_data_ref::<RequireRoot>()
        .map(|r| r.0.clone())
        .ok_or_else(|| mlua::Error::runtime("require is not available here"))?;
    let refuse = |why: &str| {
        mlua::Error::runtime(format!("require '{name}' refused: {why}; modules are `runbook.*` (embedded) or Lua files inside the runbook's folder, named with dots (require \"lib.helpers\")"))
    };
    if name.is_empty() || name.len() > 200 {
        return Err(refuse("not a module name"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.') {
        return Err(refuse("a module name has only letters, digits, '_', '-' and '.'"));
    }
    if name.split('.').any(|part| part.is_empty()) {
        return Err(refuse("empty path segment (a path outside the runbook's folder?)"));
    }
    let rel: PathBuf = name.split('.').collect::<PathBuf>().with_extension("lua");
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(refuse("not a relative module path"));
    }
    let path = root.join(&rel);
    if !path.exists() {
        return Err(mlua::Error::runtime(format!(
            "require '{name}': module not found (looked for the embedded stdlib and {})",
            path.display()
        )));
    }
    let canonical = std::fs::canonicalize(&path).map_err(|e| mlua::Error::runtime(format!("require '{name}': {e}")))?;
    if !canonical.starts_with(&root) {
        return Err(refuse("it resolves outside the runbook's folder"));
    }
    Ok(canonical)
}

/// A table marked as a placeholder (a value that stands for what a primitive or step would
/// return, in plan and dry-run modes).
pub fn placeholder(lua: &Lua, what: &str) -> mlua::Result<Value> {
    let internal: Table = lua.named_registry_value("runbook.internal")?;
    let make: Function = internal.get("placeholder")?;
    make.call(what)
}

pub fn is_placeholder(t: &Table) -> bool {
    t.metatable()
        .and_then(|mt| mt.raw_get::<Option<String>>("__name").ok().flatten())
        .is_some_and(|n| n == "runbook.placeholder")
}
