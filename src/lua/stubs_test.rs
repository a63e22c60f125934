//! Every Lua-facing function has a LuaLS stub in stdlib/types/: the surface is read from the
//! VM itself (what registration adds to a fresh sandbox, and what each embedded `runbook.*`
//! module returns), and compared with the `function NAME(` declarations of the stubs.
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use mlua::{Table, Value};

fn stub_files() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<(String, String)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "lua") {
                out.push((p.display().to_string(), std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("stdlib/types"), &mut out);
    out
}

/// `function a.b(` / `function a:b(` / `name =` declarations of a stub file.
fn declared(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("function ") {
            if let Some(name) = rest.split('(').next() {
                names.insert(name.trim().replace(':', "."));
            }
        } else if let Some((name, _)) = line.split_once(" = ") {
            if !name.starts_with("local") && !name.starts_with("--") && !name.contains(' ') {
                names.insert(name.to_string());
            }
        }
    }
    names
}

fn functions_of(prefix: &str, t: &Table, out: &mut BTreeSet<String>) {
    for (k, v) in t.pairs::<String, Value>().flatten() {
        match v {
            Value::Function(_) => {
                out.insert(format!("{prefix}{k}"));
            }
            Value::Table(_) => {
                out.insert(format!("{prefix}{k}"));
            }
            _ => {}
        }
    }
}

#[test]
fn every_lua_facing_function_has_a_stub() {
    let lua = crate::lua::new_sandbox(Path::new("."), None).unwrap();
    let before: HashMap<String, Value> = lua.globals().pairs::<String, Value>().flatten().collect();
    crate::engine::register_globals(&lua).unwrap();
    let mut surface = BTreeSet::new();
    for (name, value) in lua.globals().pairs::<String, Value>().flatten() {
        if before.get(&name).is_some_and(|old| old == &value) {
            continue;
        }
        match &value {
            Value::Table(t) => {
                surface.insert(name.clone());
                functions_of(&format!("{name}."), t, &mut surface);
            }
            _ => {
                surface.insert(name.clone());
            }
        }
    }
    assert!(surface.contains("exec") && surface.contains("log.info") && surface.contains("step"), "{surface:?}");
    let stubs = stub_files();
    let globals: BTreeSet<String> =
        stubs.iter().filter(|(_, t)| t.starts_with("---@meta\n")).flat_map(|(_, t)| declared(t)).collect();
    let missing: Vec<_> = surface.iter().filter(|n| !globals.contains(*n)).collect();
    assert!(missing.is_empty(), "globals without a LuaLS stub in stdlib/types/: {missing:?}");

    // Every embedded public module, and every function it exports.
    for module in crate::lua::embedded_names().filter(|n| n.starts_with("runbook.")) {
        let require: mlua::Function = lua.globals().get("require").unwrap();
        let Value::Table(exports) = require.call::<Value>(module).unwrap() else { panic!("{module} returns no table") };
        let (path, text) = stubs
            .iter()
            .find(|(_, t)| t.starts_with(&format!("---@meta {module}\n")))
            .unwrap_or_else(|| panic!("no stub with `---@meta {module}` in stdlib/types/"));
        let local =
            text.lines().find_map(|l| l.strip_prefix("local ").and_then(|r| r.strip_suffix(" = {}"))).unwrap_or("M");
        let declared = declared(text);
        let mut funcs = BTreeSet::new();
        functions_of("", &exports, &mut funcs);
        let missing: Vec<_> = funcs.iter().filter(|f| !declared.contains(&format!("{local}.{f}"))).collect();
        assert!(missing.is_empty(), "{module}: functions without a stub in {path}: {missing:?}");
    }
}

/// Methods of userdata classes declared in the stubs; each is exercised by a test of its own.
const USERDATA_METHODS: &[&str] = &[
    "Secret.name",
    "DbConnection.query",
    "DbConnection.query_one",
    "DbConnection.scalar",
    "DbConnection.execute",
    "DbConnection.transaction",
    "DbConnection.close",
    "DbConnection.each",
    "DbConnection.execute_file",
    "DbConnection.session",
    "DbConnection.execute_returning",
    "DbConnection.query_file",
    "DbConnection.set_password",
    "SshSession.exec",
    "SshSession.upload",
    "SshSession.download",
    "SshSession.close",
    "Store.put",
    "Store.get",
    "Store.list",
    "Store.stat",
    "Store.exists",
    "Store.delete",
    "Store.copy",
    "Prometheus.query",
    "Prometheus.value",
    "Prometheus.range",
];

/// Classes of plain tables whose methods come from a metatable kept in the registry.
const TABLE_CLASSES: &[(&str, &str)] = &[("HttpResponse", "runbook.http.response")];

#[test]
fn stubs_declare_nothing_that_does_not_exist() {
    let lua = crate::lua::new_sandbox(Path::new("."), None).unwrap();
    crate::engine::register_globals(&lua).unwrap();
    for (path, text) in stub_files().iter().filter(|(_, t)| t.starts_with("---@meta\n")) {
        for name in declared(text) {
            if let Some((_, key)) = TABLE_CLASSES.iter().find(|(class, _)| name.starts_with(&format!("{class}."))) {
                let mt: mlua::Table = lua.named_registry_value(key).unwrap();
                let methods: mlua::Table = mt.get("__index").unwrap();
                let method = name.split_once('.').unwrap().1;
                assert!(
                    methods.get::<Value>(method).unwrap().is_function(),
                    "{path} declares `{name}`, which the runtime does not have"
                );
                continue;
            }
            let mut parts = name.split('.');
            let mut v: Value = lua.globals().get(parts.next().unwrap()).unwrap();
            for p in parts {
                v = match v {
                    Value::Table(t) => t.get(p).unwrap(),
                    // Methods of userdata classes are checked below, by name.
                    _ => Value::Nil,
                };
            }
            // `params` is set by runbook{} when the runbook declares itself.
            let ok = !v.is_nil() || USERDATA_METHODS.contains(&name.as_str()) || name == "params";
            assert!(ok, "{path} declares `{name}`, which the runtime does not have");
        }
    }
}

#[test]
fn methods_of_table_classes_have_stubs() {
    let lua = crate::lua::new_sandbox(Path::new("."), None).unwrap();
    crate::engine::register_globals(&lua).unwrap();
    let declared: BTreeSet<String> = stub_files().iter().flat_map(|(_, t)| declared(t)).collect();
    for (class, key) in TABLE_CLASSES {
        let mt: mlua::Table = lua.named_registry_value(key).unwrap();
        let methods: mlua::Table = mt.get("__index").unwrap();
        let mut found = BTreeSet::new();
        functions_of(&format!("{class}."), &methods, &mut found);
        assert!(!found.is_empty(), "{class} has methods");
        let missing: Vec<_> = found.iter().filter(|m| !declared.contains(*m)).collect();
        assert!(missing.is_empty(), "methods without a stub: {missing:?}");
    }
}
