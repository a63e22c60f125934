//! `runbook test`: a runbook's procedures proven by tests that run in milliseconds with nothing
//! installed. A test file (`*_test.lua`) is Lua in the same sandbox as runbooks, with `test`,
//! `describe`, `expect`, `expect_calls` (stdlib/internal/testing.lua) and `run(path, spec)`,
//! which runs a runbook through the real engine on a journal private to the test, with the
//! primitives replaced by the test's fakes (stdlib/internal/fakes.lua): a call no fake matches
//! fails the test, so a test never reaches a real system by accident.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mlua::{Lua, LuaSerdeExt, Table, Value};

use crate::error::{exit, Error, Result};

/// What `run` hands the engine: the test's fakes, and where the calls go.
pub mod coverage;
pub mod crash;
pub mod from_run;

#[derive(Clone)]
pub struct Fakes {
    pub spec: serde_json::Value,
    pub calls: Arc<Mutex<Vec<serde_json::Value>>>,
    /// Set when the crash proof stopped the process: a primitive call after it never happens.
    pub dead: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// The folder of the fakes' world (SQLite databases; in-memory stores are keyed by it): the
    /// same for a run and its resumes, so what a run did before a crash is there after it.
    pub world: Option<PathBuf>,
    /// The test file's functions that answer calls (`respond = function(call, args, n)`), by the
    /// number the spec's `{ ["$respond"] = n }` gives; they run in the test file's Lua state.
    pub responders: Option<Responders>,
}

/// A test file's answering functions (see `Fakes::responders`).
#[derive(Clone)]
pub struct Responders {
    lua: mlua::WeakLua,
    fns: std::rc::Rc<std::cell::RefCell<Vec<mlua::Function>>>,
    /// Each world's `state` table (what a stateful fake keeps: a load balancer's servers),
    /// by world: kept across a crash and its resume, fresh for each crash pass.
    states: std::rc::Rc<std::cell::RefCell<std::collections::HashMap<PathBuf, Table>>>,
}

impl Responders {
    /// Calls answering function `id` with the call, its arguments and how many times this fake
    /// answered; returns its answer as JSON.
    fn call(
        &self,
        id: usize,
        (call, args, n): (String, serde_json::Value, i64),
        world: &Path,
    ) -> mlua::Result<serde_json::Value> {
        let f = self
            .fns
            .borrow()
            .get(id.wrapping_sub(1))
            .cloned()
            .ok_or_else(|| mlua::Error::runtime(format!("fakes: no answering function {id}")))?;
        let lua = self.lua.try_upgrade().ok_or_else(|| mlua::Error::runtime("fakes: the test file is gone"))?;
        let state = self.state(&lua, world)?;
        let out: Value = f.call((call, lua.to_value(&args)?, n, state))?;
        match out {
            Value::Nil => Ok(serde_json::json!({})),
            Value::Table(_) => lua.from_value(out),
            other => Err(mlua::Error::runtime(format!(
                "fakes: a respond function returns an answer table (or nil), got a {}",
                other.type_name()
            ))),
        }
    }

    fn state(&self, lua: &Lua, world: &Path) -> mlua::Result<Table> {
        let mut states = self.states.borrow_mut();
        if let Some(t) = states.get(world) {
            return Ok(t.clone());
        }
        let t = lua.create_table()?;
        states.insert(world.to_path_buf(), t.clone());
        Ok(t)
    }

    /// World `to` starts with a copy of world `from`'s state (tables copied deep; functions and
    /// other values shared).
    fn fork(&self, from: &Path, to: &Path) -> mlua::Result<()> {
        fn deep(lua: &Lua, t: &Table, depth: usize) -> mlua::Result<Table> {
            let copy = lua.create_table()?;
            for pair in t.pairs::<Value, Value>() {
                let (k, v) = pair?;
                let v = match v {
                    Value::Table(inner) if depth < 64 => Value::Table(deep(lua, &inner, depth + 1)?),
                    other => other,
                };
                copy.raw_set(k, v)?;
            }
            Ok(copy)
        }
        let Some(lua) = self.lua.try_upgrade() else { return Ok(()) };
        let Some(t) = self.states.borrow().get(from).cloned() else { return Ok(()) };
        let copy = deep(&lua, &t, 0)?;
        self.states.borrow_mut().insert(to.to_path_buf(), copy);
        Ok(())
    }

    /// A copy of a test's `fakes` table with each function replaced by `{ ["$respond"] = n }`.
    fn strip(&self, lua: &Lua, v: Value, depth: usize) -> mlua::Result<Value> {
        match v {
            Value::Function(f) => {
                let mut fns = self.fns.borrow_mut();
                fns.push(f);
                let marker = lua.create_table()?;
                marker.set("$respond", fns.len())?;
                Ok(Value::Table(marker))
            }
            Value::Table(t) if depth < 32 => {
                let copy = lua.create_table()?;
                for pair in t.pairs::<Value, Value>() {
                    let (k, x) = pair?;
                    copy.raw_set(k, self.strip(lua, x, depth + 1)?)?;
                }
                if let Some(mt) = t.metatable() {
                    copy.set_metatable(Some(mt))?;
                }
                Ok(Value::Table(copy))
            }
            other => Ok(other),
        }
    }
}

/// A copy of a world: its files (SQLite databases) and its stores in memory.
fn copy_world(from: &Path, to: &Path) -> std::io::Result<()> {
    crate::primitives::storage::fake::fork(from, to);
    if !from.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// The shape of a test's `fakes`, checked before any run: `Err(".exec[2].match: ...")`.
fn check_fakes(fakes: &serde_json::Value) -> std::result::Result<(), String> {
    use serde_json::Value as J;
    let kind = |v: &J| match v {
        J::Null => "nil",
        J::Bool(_) => "boolean",
        J::Number(_) => "number",
        J::String(_) => "string",
        J::Array(_) => "list",
        J::Object(_) => "table",
    };
    let list = |v: &J| -> Option<Vec<J>> {
        match v {
            J::Array(a) => Some(a.clone()),
            J::Object(m) if m.is_empty() => Some(vec![]),
            _ => None,
        }
    };
    let J::Object(map) = fakes else { return Err(format!(": a table, got a {}", kind(fakes))) };
    // (The builtins' and log's fakes take no call fakes: secrets, env, steps and faults are theirs.)
    let primitives: Vec<&str> =
        crate::primitives::PRIMITIVES.iter().map(|p| p.name).filter(|n| !["builtins", "log"].contains(n)).collect();
    for (key, v) in map {
        match key.as_str() {
            "secrets" | "env" | "steps" => {
                if !matches!(v, J::Object(_)) && list(v).is_none_or(|l| !l.is_empty()) {
                    return Err(format!(".{key}: a table of NAME = ..., got a {}", kind(v)));
                }
            }
            "faults" => {
                if list(v).is_none() {
                    return Err(format!(".{key}: a list, got a {}", kind(v)));
                }
            }
            "real" => {
                let names = list(v).ok_or_else(|| format!(".real: a list of primitives, got a {}", kind(v)))?;
                if let Some(bad) = names.iter().find(|n| !n.as_str().is_some_and(|n| primitives.contains(&n))) {
                    return Err(format!(
                        ".real: `{}` is not a primitive (known: {})",
                        bad.as_str().unwrap_or("?"),
                        primitives.join(", ")
                    ));
                }
            }
            name if primitives.contains(&name) => {
                let items = list(v).ok_or_else(|| {
                    format!(".{name}: a list of fakes ({{ {{ match = ..., ... }}, ... }}), got a {}", kind(v))
                })?;
                for (i, f) in items.iter().enumerate() {
                    let at = format!(".{name}[{}]", i + 1);
                    let J::Object(f) = f else { return Err(format!("{at}: a table, got a {}", kind(f))) };
                    for field in ["match", "pattern", "host", "url", "group"] {
                        if let Some(x) = f.get(field).filter(|x| !x.is_string()) {
                            return Err(format!("{at}.{field}: a string, got a {}", kind(x)));
                        }
                    }
                    if let Some(t) = f.get("times").filter(|t| t.as_u64().is_none_or(|n| n == 0)) {
                        return Err(format!("{at}.times: a whole number above 0, got {t}"));
                    }
                    if let Some(a) = f.get("answers") {
                        let answers =
                            list(a).ok_or_else(|| format!("{at}.answers: a list of answers, got a {}", kind(a)))?;
                        if let Some((j, x)) = answers.iter().enumerate().find(|(_, x)| !x.is_object()) {
                            return Err(format!("{at}.answers[{}]: an answer table, got a {}", j + 1, kind(x)));
                        }
                    }
                }
            }
            other => {
                let mut known: Vec<&str> = primitives.clone();
                known.extend(["real", "secrets", "env", "steps", "faults"]);
                known.sort_unstable();
                return Err(format!(": unknown key `{other}` (known: {})", known.join(", ")));
            }
        }
    }
    Ok(())
}

/// The fakes after `calls`: each fake's count of the calls it answered goes on (`answers`,
/// `times`, `respond`'s n), as the world does across a crash or between a run and its resume.
fn advanced(fakes: &serde_json::Value, calls: &[serde_json::Value]) -> serde_json::Value {
    let mut world = fakes.clone();
    for c in calls {
        if let (Some(p), Some(i)) = (c["primitive"].as_str(), c["fake"].as_u64()) {
            if let Some(f) = world.get_mut(p).and_then(|l| l.get_mut((i as usize).wrapping_sub(1))) {
                if f.is_object() {
                    let n = f["calls"].as_u64().unwrap_or(0) + 1;
                    f["calls"] = n.into();
                }
            }
        }
    }
    world
}

/// The journal of a test's run (`sqlite://PATH` in its folder): a scratch one, made or reopened.
async fn journal_at(state_url: &str) -> crate::journal::JResult<Arc<dyn crate::journal::Journal>> {
    crate::journal::open_scratch(Path::new(state_url.trim_start_matches("sqlite://"))).await
}

/// The world of the run whose journal is `state_url`.
fn world_of(state_url: &str) -> PathBuf {
    PathBuf::from(format!("{}.world", state_url.trim_start_matches("sqlite://")))
}

/// Installs the fakes over the primitives of a runbook's environment (after registration):
/// the kit (stdlib/internal/fakes.lua) with each primitive's fake from its room, in the order
/// of the one list.
pub fn install(lua: &Lua, fakes: &Fakes) -> mlua::Result<()> {
    let install: mlua::Function = lua.unpack(crate::lua::run_internal(lua, "internal.fakes")?)?;
    let calls = Arc::clone(&fakes.calls);
    let dead = fakes.dead.clone();
    let record = lua.create_function(move |lua, call: Value| {
        if dead.as_ref().is_some_and(|d| d.load(std::sync::atomic::Ordering::SeqCst)) {
            return Err(mlua::Error::runtime("the process stopped at a crash point"));
        }
        let mut json: serde_json::Value = lua.from_value(call)?;
        // What a test reads of a call never holds a secret's value (a URL joined with one).
        crate::secret::redact_json(&mut json);
        // The step the call was made in (none: the runbook's top level, run again on resume).
        if let Some(step) = crate::engine::Ctx::from_lua(lua).ok().and_then(|c| c.current_step()) {
            json["step"] = step.into();
        }
        calls.lock().unwrap_or_else(|p| p.into_inner()).push(json);
        Ok(())
    })?;
    // What the kit needs of Rust: the (virtual) time, and the hooks through which Rust asks a
    // fake about the calls it makes itself (an ssh fan-out's hosts, a store's operations).
    let helpers = lua.create_table()?;
    helpers.set("now", lua.create_function(|_, ()| Ok(crate::clock::now().timestamp()))?)?;
    // Whether a command line holds a secret (a secret itself, or text with one in it).
    helpers.set(
        "holds_secret",
        lua.create_function(|_, v: Value| match v {
            Value::UserData(_) => Ok(true),
            Value::String(s) => {
                let s = s.to_string_lossy();
                Ok(crate::secret::redact(&s) != s)
            }
            _ => Ok(false),
        })?,
    )?;
    helpers.set(
        "hook",
        lua.create_function(|lua, (name, f): (String, mlua::Function)| {
            lua.set_named_registry_value(&format!("runbook.fake.{name}"), f)
        })?,
    )?;
    let world = fakes.world.clone().unwrap_or_else(|| std::env::temp_dir().join("runbook-test-world"));
    let responders = fakes.responders.clone();
    let here = world.clone();
    helpers.set(
        "respond",
        lua.create_function(move |lua, (id, call, args, n): (usize, String, Value, i64)| {
            let r = responders.as_ref().ok_or_else(|| mlua::Error::runtime("fakes: no answering functions here"))?;
            let args: serde_json::Value = lua.from_value(args)?;
            // (JSON null stays `null`: a row's NULL column.)
            lua.to_value(&r.call(id, (call, args, n), &here)?)
        })?,
    )?;
    let rooms = lua.create_table()?;
    for p in crate::primitives::PRIMITIVES {
        let room = lua.create_table()?;
        room.set("name", p.name)?;
        let fake: mlua::Function =
            crate::lua::embedded(lua, p.fake, &format!("@src/primitives/{}/fake.lua", p.name))?.call(())?;
        room.set("fake", fake)?;
        if let Some(support) = p.support {
            room.set("support", support(lua, &world)?)?;
        }
        rooms.push(room)?;
    }
    install.call::<()>((lua.to_value(&fakes.spec)?, record, helpers, rooms))
}

/// Whether a file is a runbook (a line that starts `runbook {`) rather than a test file: a
/// runbook may be named `load_test.lua`. Found in a folder, it is not run as tests; named on the
/// command line, it is.
fn declares_a_runbook(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| {
        text.lines().any(|l| {
            let l = l.trim_end();
            l.starts_with("runbook {") || l.starts_with("runbook{") || l == "runbook"
        })
    })
}

/// The test files under `paths` (files as given; folders searched for `*_test.lua`), sorted.
fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type()?.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "node_modules" {
                    walk(&p, out)?;
                }
            } else if name.ends_with("_test.lua") && !declares_a_runbook(&p) {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    let here = [PathBuf::from(".")];
    for p in if paths.is_empty() { &here[..] } else { paths } {
        if p.is_dir() {
            walk(p, &mut files).map_err(|e| Error::Usage(format!("cannot read {}: {e}", p.display())))?;
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            return Err(Error::Usage(format!("{}: no such file or folder", p.display())));
        }
    }
    files.sort();
    Ok(files)
}

/// One test's outcome.
#[derive(Debug, serde::Serialize)]
pub struct Outcome {
    pub file: String,
    pub name: String,
    /// "passed", "failed", "skipped"
    pub status: &'static str,
    pub error: Option<String>,
}

/// `runbook test [PATH...] [-k TEXT]`: exit 0 when every test passed, 1 when one failed, 2 when
/// a test file could not be loaded.
/// How `runbook test` was asked to run.
pub struct Options<'a> {
    pub paths: &'a [PathBuf],
    pub filter: Option<&'a str>,
    pub json: bool,
    pub crash: bool,
    pub junit: Option<&'a Path>,
    pub coverage: bool,
}

pub async fn command(o: Options<'_>) -> Result<u8> {
    let Options { paths, filter, json, crash, junit, coverage: cover } = o;
    let started = Instant::now();
    CRASH.store(crash, std::sync::atomic::Ordering::SeqCst);
    coverage::ON.store(cover, std::sync::atomic::Ordering::SeqCst);
    crate::clock::set_virtual();
    // A gate in a test never asks at the keyboard: it waits, as under cron (or `approve = true`).
    crate::engine::disable_prompts();
    let files = discover(paths)?;
    if files.is_empty() {
        return Err(Error::Usage("no test files (*_test.lua) found".into()));
    }
    if cover {
        // The runbooks beside the tests, so that one no test runs is listed too.
        let dirs: std::collections::BTreeSet<PathBuf> =
            files.iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
        for d in dirs {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".lua") && !name.ends_with("_test.lua") && declares_a_runbook(&p) {
                    coverage::present(&shown_path(&std::fs::canonicalize(&p).unwrap_or(p)).display().to_string());
                }
            }
        }
    }
    let mut outcomes = Vec::new();
    let mut broken = Vec::new();
    for result in run_files(&files, filter) {
        match result {
            Ok(mut o) => outcomes.append(&mut o),
            Err(e) => broken.push(e),
        }
    }
    let count = |s: &str| outcomes.iter().filter(|o| o.status == s).count();
    let (passed, failed, skipped) = (count("passed"), count("failed"), count("skipped"));
    if passed + failed == 0 && broken.is_empty() {
        return Err(Error::Usage(match filter {
            Some(f) => format!("no test's name contains \"{f}\" ({skipped} test(s) skipped)"),
            None => "the test files declare no test".into(),
        }));
    }
    if let Some(path) = junit {
        std::fs::write(path, junit_xml(&outcomes, &broken, started.elapsed()))
            .map_err(|e| Error::Io(format!("cannot write {}: {e}", path.display())))?;
    }
    let covered = if cover { Some(coverage::reports()) } else { None };
    if json {
        println!(
            "{}",
            serde_json::json!({ "tests": outcomes, "broken": broken, "passed": passed, "failed": failed,
                                "skipped": skipped, "ms": started.elapsed().as_millis() as u64,
                                "crash_passes": PASSES.load(std::sync::atomic::Ordering::SeqCst),
                                "coverage": covered })
        );
    } else {
        for o in &outcomes {
            match o.status {
                "passed" => println!("ok    {}: {}", o.file, o.name),
                "failed" => println!(
                    "FAIL  {}: {}\n      {}",
                    o.file,
                    o.name,
                    o.error.as_deref().unwrap_or("").replace('\n', "\n      ")
                ),
                _ => {}
            }
        }
        for b in &broken {
            println!("ERROR {b}");
        }
        if let Some(c) = &covered {
            print!("{}", coverage::text(c));
        }
        println!(
            "{passed} passed, {failed} failed, {skipped} skipped{} in {} ms",
            if broken.is_empty() { String::new() } else { format!(", {} file(s) not loaded", broken.len()) },
            started.elapsed().as_millis()
        );
    }
    Ok(if !broken.is_empty() {
        exit::USAGE
    } else if failed > 0 {
        exit::FAILED
    } else {
        exit::OK
    })
}

/// Runs the test files on as many threads as there are cores, each file on one thread (its
/// runtime, its Lua states, its virtual clock: see crate::clock), a file at a time per thread;
/// the results in the files' order.
/// A test file's outcomes, or why it did not load.
type FileResult = std::result::Result<Vec<Outcome>, String>;

fn run_files(files: &[PathBuf], filter: Option<&str>) -> Vec<FileResult> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8).min(files.len());
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<FileResult>>> = Mutex::new((0..files.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(r) => r,
                    Err(e) => {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if let Some(slot) = results.lock().unwrap_or_else(|p| p.into_inner()).get_mut(i) {
                            *slot = Some(Err(format!("cannot start a runtime for the tests: {e}")));
                        }
                        return;
                    }
                };
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(file) = files.get(i) else { break };
                    let r = runtime.block_on(run_file(file, filter));
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .zip(files)
        .map(|(r, f)| r.unwrap_or_else(|| Err(format!("{}: not run", f.display()))))
        .collect()
}

/// The report as JUnit XML, for CI: one testsuite per test file, a file that did not load as a
/// test case in error.
fn junit_xml(outcomes: &[Outcome], broken: &[String], took: std::time::Duration) -> String {
    fn esc(s: &str) -> String {
        s.chars()
            .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
            .collect::<String>()
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    }
    let mut files: Vec<&str> = outcomes.iter().map(|o| o.file.as_str()).collect();
    files.dedup();
    let failed = outcomes.iter().filter(|o| o.status == "failed").count();
    let skipped = outcomes.iter().filter(|o| o.status == "skipped").count();
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"runbook test\" tests=\"{}\" failures=\"{failed}\" errors=\"{}\" skipped=\"{skipped}\" time=\"{:.3}\">\n",
        outcomes.len() + broken.len(),
        broken.len(),
        took.as_secs_f64()
    );
    for file in files {
        let of: Vec<&Outcome> = outcomes.iter().filter(|o| o.file == file).collect();
        x.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">\n",
            esc(file),
            of.len(),
            of.iter().filter(|o| o.status == "failed").count(),
            of.iter().filter(|o| o.status == "skipped").count()
        ));
        for o in of {
            x.push_str(&format!("    <testcase classname=\"{}\" name=\"{}\"", esc(file), esc(&o.name)));
            match o.status {
                "failed" => {
                    let e = o.error.as_deref().unwrap_or("");
                    let first = e.lines().next().unwrap_or("");
                    x.push_str(&format!(
                        ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                        esc(first),
                        esc(e)
                    ));
                }
                "skipped" => x.push_str(">\n      <skipped/>\n    </testcase>\n"),
                _ => x.push_str("/>\n"),
            }
        }
        x.push_str("  </testsuite>\n");
    }
    if !broken.is_empty() {
        x.push_str(&format!(
            "  <testsuite name=\"not loaded\" tests=\"{}\" errors=\"{}\">\n",
            broken.len(),
            broken.len()
        ));
        for b in broken {
            let first = b.lines().next().unwrap_or("");
            x.push_str(&format!(
                "    <testcase classname=\"runbook test\" name=\"{}\">\n      <error message=\"{}\">{}</error>\n    </testcase>\n",
                esc(first),
                esc(first),
                esc(b)
            ));
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

/// A run of a test file: its journal, its first fakes and its world.
#[derive(Clone)]
struct Journaled {
    state_url: String,
    fakes: serde_json::Value,
    world: PathBuf,
}

/// Where a test file's runs keep their journals: one folder per test file, removed after it.
struct TestDir {
    dir: PathBuf,
    tmp: tempfile::TempDir,
    /// Each run's journal and first fakes, by run id, for `resume`.
    journals: Mutex<std::collections::HashMap<String, Journaled>>,
    responders: Responders,
    runs: std::sync::atomic::AtomicU32,
}

impl TestDir {
    /// The fakes of one process of a run: its spec, its world, and whether it can be stopped dead.
    fn fakes(
        &self,
        spec: serde_json::Value,
        world: PathBuf,
        dead: Option<Arc<std::sync::atomic::AtomicBool>>,
    ) -> Fakes {
        Fakes {
            spec,
            calls: Arc::new(Mutex::new(Vec::new())),
            dead,
            world: Some(world),
            responders: Some(self.responders.clone()),
        }
    }

    fn journaled(&self, run_id: &str, what: &str) -> mlua::Result<Journaled> {
        self.journals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(run_id)
            .cloned()
            .ok_or_else(|| mlua::Error::runtime(format!("{what}: no run {run_id} in this test file")))
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        crate::primitives::storage::fake::forget(self.tmp.path());
    }
}

/// The globals of a test file written in stdlib/internal/testing.lua (`run` is Rust's).
const FROM_LUA: [&str; 6] = ["test", "describe", "expect", "expect_calls", "time_of", "with_fakes"];

/// Loads one test file, collects its tests and runs them.
async fn run_file(file: &Path, filter: Option<&str>) -> std::result::Result<Vec<Outcome>, String> {
    // A file is a world of its own: its secrets and its clock are not the last file's.
    crate::secret::isolate_thread();
    crate::clock::reset();
    let shown = file.display().to_string();
    let source = std::fs::read_to_string(file).map_err(|e| format!("{shown}: {e}"))?;
    let dir = std::fs::canonicalize(file)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let lua = crate::lua::new_sandbox(&dir, None).map_err(|e| format!("{shown}: {e}"))?;
    let api: Table = lua
        .unpack(crate::lua::run_internal(&lua, "internal.testing").map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let setup = || -> mlua::Result<()> {
        let g = lua.globals();
        for name in FROM_LUA {
            g.set(name, api.get::<Value>(name)?)?;
        }
        // SQL NULL in a fake's rows, as runbooks compare it.
        g.set("null", lua.null())?;
        g.set("run", lua.create_async_function(run_runbook)?)?;
        g.set("resume", lua.create_async_function(resume_run)?)?;
        g.set("advance", lua.create_async_function(advance)?)?;
        g.set("crash_everywhere", lua.create_async_function(crash_everywhere)?)?;
        Ok(())
    };
    setup().map_err(|e| format!("{shown}: {e}"))?;
    let tmp = tempfile::tempdir().map_err(|e| format!("{shown}: {e}"))?;
    let responders = Responders { lua: lua.weak(), fns: Default::default(), states: Default::default() };
    lua.set_app_data(std::rc::Rc::new(TestDir { dir, tmp, runs: 0.into(), journals: Mutex::default(), responders }));
    let chunk = crate::lua::compile(&lua, &source, &shown).map_err(|(msg, loc)| match loc {
        Some(l) => format!("{l}: syntax error: {msg}"),
        None => format!("{shown}: syntax error: {msg}"),
    })?;
    chunk
        .call_async::<()>(())
        .await
        .map_err(|e| crate::lua::errors::describe(&e).0)
        .map_err(|e| format!("{shown}: {e}"))?;
    let run_all: mlua::Function = api.get("run_all").map_err(|e| e.to_string())?;
    let results: Vec<Table> = run_all.call_async(filter).await.map_err(|e| format!("{shown}: {e}"))?;
    let mut out = Vec::new();
    for r in results {
        let name: String = r.get("name").unwrap_or_default();
        let skipped: bool = r.get("skipped").unwrap_or(false);
        let ok: bool = r.get("ok").unwrap_or(false);
        let error: Option<String> = r.get::<Option<String>>("error").unwrap_or(None).map(|e| clean_error(&e, &shown));
        let status = if skipped {
            "skipped"
        } else if ok {
            "passed"
        } else {
            "failed"
        };
        out.push(Outcome { file: shown.clone(), name, status, error });
    }
    Ok(out)
}

/// JSON as a test reads it: null is nil.
fn to_lua(lua: &Lua, v: &impl serde::Serialize) -> mlua::Result<Value> {
    lua.to_value_with(
        v,
        mlua::serde::SerializeOptions::new().serialize_none_to_null(false).serialize_unit_to_null(false),
    )
}

/// A failed test's error as people read it: no "runtime error:" prefix, no traceback, and the
/// test file's line in front when the error came from deeper down (a `run` that failed).
fn clean_error(text: &str, file: &str) -> String {
    let (message, trace) = text.split_once("\nstack traceback:").unwrap_or((text, ""));
    let message = message.trim_start_matches("runtime error: ").trim_end().to_string();
    if message.starts_with(&format!("{file}:")) {
        return message;
    }
    let at = trace.lines().map(str::trim).find_map(|l| {
        let rest = l.strip_prefix(file)?.strip_prefix(':')?;
        let line: String = rest.chars().take_while(char::is_ascii_digit).collect();
        (!line.is_empty()).then(|| format!("{file}:{line}"))
    });
    match at {
        Some(at) => format!("{at}: {message}"),
        None => message,
    }
}

/// What a test's spec gives a run: params, fakes (JSON), approve.
#[derive(Clone)]
struct Spec {
    /// The run whose world (stores, SQLite files) this run shares: `world = r`.
    world: Option<String>,
    supplied: Option<toml::Table>,
    fakes: Option<serde_json::Value>,
    approve: bool,
    /// `kill = { inside = STEP } | { after = STEP }`: the process stops dead there.
    kill: Option<crash::Kill>,
}

fn read_spec(lua: &Lua, spec: Option<Table>, what: &str) -> mlua::Result<Spec> {
    let Some(spec) = spec else {
        return Ok(Spec { world: None, supplied: None, fakes: None, approve: false, kill: None });
    };
    for pair in spec.pairs::<Value, Value>() {
        let (k, _) = pair?;
        let key = k.to_string().unwrap_or_default();
        if !["params", "fakes", "approve", "world", "kill"].contains(&key.as_str()) {
            return Err(mlua::Error::runtime(format!(
                "{what}: unknown key `{key}` (known: params, fakes, approve, world, kill)"
            )));
        }
    }
    let world = match spec.get::<Value>("world")? {
        Value::Nil => None,
        Value::Table(r) => Some(
            r.get::<Option<String>>("run_id")?
                .ok_or_else(|| mlua::Error::runtime(format!("{what}: world: the outcome of a run() that started")))?,
        ),
        other => {
            return Err(mlua::Error::runtime(format!(
                "{what}: world: the outcome of an earlier run(), got a {}",
                other.type_name()
            )))
        }
    };
    let supplied = match spec.get::<Option<Table>>("params")? {
        Some(params) => {
            let json: serde_json::Value = lua.from_value(Value::Table(params))?;
            Some(serde_json::from_value(json).map_err(|e| mlua::Error::runtime(format!("{what}: params: {e}")))?)
        }
        None => None,
    };
    let fakes = match spec.get::<Value>("fakes")? {
        Value::Nil => None,
        v => {
            let responders = test_dir(lua, what)?.responders.clone();
            let v = responders.strip(lua, v, 0)?;
            let json: serde_json::Value = lua.from_value(v)?;
            check_fakes(&json).map_err(|e| mlua::Error::runtime(format!("{what}: fakes{e}")))?;
            Some(json)
        }
    };
    let kill = match spec.get::<Value>("kill")? {
        Value::Nil => None,
        Value::Table(k) => {
            let (inside, after) = (k.get::<Option<String>>("inside")?, k.get::<Option<String>>("after")?);
            match (inside, after, k.pairs::<Value, Value>().count()) {
                (Some(s), None, 1) => Some(crash::Kill::Inside(s)),
                (None, Some(s), 1) => Some(crash::Kill::After(s)),
                _ => {
                    return Err(mlua::Error::runtime(format!(
                        "{what}: kill: {{ inside = \"STEP\" }} (its body ran, its end not recorded) or {{ after = \"STEP\" }}"
                    )))
                }
            }
        }
        other => return Err(mlua::Error::runtime(format!("{what}: kill: a table, got a {}", other.type_name()))),
    };
    Ok(Spec { world, supplied, fakes, approve: spec.get::<Option<bool>>("approve")?.unwrap_or(false), kill })
}

fn test_dir(lua: &Lua, what: &str) -> mlua::Result<std::rc::Rc<TestDir>> {
    lua.app_data_ref::<std::rc::Rc<TestDir>>()
        .map(|d| std::rc::Rc::clone(&d))
        .ok_or_else(|| mlua::Error::runtime(format!("{what}() outside a test file")))
}

/// A runbook's path as people typed it: from the current folder when it is below it.
fn shown_path(runbook: &Path) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| runbook.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| runbook.to_path_buf())
}

/// `run(path, { params = {...}, fakes = {...}, approve = true })`: the runbook through the real
/// engine, on a journal of its own; returns its outcome: status, exit_code, error, steps[NAME]
/// (status, attempts, result, error, undo_status), calls, run_id.
async fn run_runbook(lua: Lua, (path, spec): (String, Option<Table>)) -> mlua::Result<Table> {
    let dir = test_dir(&lua, "run")?;
    let runbook = dir.dir.join(&path);
    if !runbook.is_file() {
        return Err(mlua::Error::runtime(format!(
            "run: no runbook {} (paths are from the test file's folder)",
            runbook.display()
        )));
    }
    let spec = read_spec(&lua, spec, "run")?;
    let n = dir.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    // Each run starts on the real time: runs do not see each other's virtual hours, unless it
    // shares an earlier run's world, whose time goes on.
    if spec.world.is_none() {
        crate::clock::reset();
    }
    let state_url = format!("sqlite://{}", dir.tmp.path().join(format!("journal-{n}.db")).display());
    let shown = shown_path(&runbook);
    let fakes = spec.fakes.clone().unwrap_or_else(|| serde_json::json!({}));
    let mut inv = crate::engine::Invocation::new(shown.clone(), crate::engine::Mode::Run);
    inv.supplied = spec.supplied.clone().unwrap_or_default();
    let world = match &spec.world {
        Some(run_id) => dir.journaled(run_id, "run")?.world,
        None => world_of(&state_url),
    };
    let out =
        execute(&lua, &dir, inv, (&state_url, &world), fakes.clone(), (spec.approve, spec.kill.clone()), None, &path)
            .await?;
    if coverage::on() {
        plan_for_coverage(&dir, &shown, &spec, fakes).await;
    }
    // `runbook test --crash`: every run of the suite also gets its crash proof.
    // (Not a run that shares an earlier one's world: that one had its proof.)
    // (Nor one killed on purpose: its test resumes it.)
    if CRASH.load(std::sync::atomic::Ordering::SeqCst) && spec.world.is_none() && spec.kill.is_none() {
        let report = crash_proof(&lua, &dir, &shown, &spec).await?;
        out.set("crash", report)?;
    }
    Ok(out)
}

/// `--coverage`: what the runbook has, as its plan with this run's params and fakes lists it.
async fn plan_for_coverage(dir: &TestDir, shown: &Path, spec: &Spec, fakes: serde_json::Value) {
    let clock = crate::clock::offset();
    let mut inv = crate::engine::Invocation::new(shown.to_path_buf(), crate::engine::Mode::Plan);
    inv.supplied = spec.supplied.clone().unwrap_or_default();
    inv.fakes = Some(dir.fakes(fakes, dir.tmp.path().join("plan.world"), None));
    if let Ok(o) = crate::engine::execute(inv, None, crate::output::Reporter::silent()).await {
        coverage::planned(&shown.display().to_string(), &o.plan);
    }
    crate::clock::set_offset(clock);
}

/// Crash passes made in this process (each one run of the scenario, stopped and resumed).
pub static PASSES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `runbook test --crash`.
static CRASH: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `resume(r, { params, fakes, approve })`: resumes the run of `r` on its journal, as `runbook
/// resume` would, with a fresh Lua state; its fakes are the first run's unless given. The
/// virtual clock goes on from where it is (`advance` moves it between the two).
async fn resume_run(lua: Lua, (r, spec): (Table, Option<Table>)) -> mlua::Result<Table> {
    let dir = test_dir(&lua, "resume")?;
    let run_id: String = r
        .get::<Option<String>>("run_id")?
        .ok_or_else(|| mlua::Error::runtime("resume: the first argument is the outcome of a run() that started"))?;
    let Journaled { state_url, fakes: first_fakes, world } = dir.journaled(&run_id, "resume")?;
    let spec = read_spec(&lua, spec, "resume")?;
    if spec.world.is_some() {
        return Err(mlua::Error::runtime("resume: a resumed run keeps its world (`world` is for run)"));
    }
    let journal =
        journal_at(&state_url).await.map_err(|e| mlua::Error::runtime(format!("resume: the test's journal: {e}")))?;
    let run = journal.find_run(&run_id).await.map_err(|e| mlua::Error::runtime(format!("resume: {e}")))?;
    let path = crate::commands::resumable(&run, false, "").map_err(|e| mlua::Error::runtime(format!("resume: {e}")))?;
    let steps = journal.steps(&run_id).await.map_err(|e| mlua::Error::runtime(format!("resume: {e}")))?;
    journal.close().await;
    let mut inv = crate::engine::Invocation::new(path, crate::engine::Mode::Run);
    inv.supplied = spec.supplied.unwrap_or_default();
    inv.resume = Some((run, steps));
    let fakes = spec.fakes.unwrap_or(first_fakes);
    execute(&lua, &dir, inv, (&state_url, &world), fakes, (spec.approve, spec.kill), Some(&run_id), &run_id).await
}

/// One pass of the crash proof: the run, stopped dead before journal write `crash_at` (none:
/// not stopped), then resumed on its journal as after a real crash.
struct Pass {
    status: String,
    /// What each journal write of the first process was.
    writes: Vec<String>,
    before: Vec<serde_json::Value>,
    after: Vec<serde_json::Value>,
    /// Steps (and undos, as "undo NAME") recorded done when the process stopped, and those in
    /// flight or failed then (a resume may run those again: at-least-once).
    done: Vec<String>,
    running: Vec<String>,
}

async fn crash_pass(
    dir: &TestDir,
    shown: &Path,
    spec: &Spec,
    fakes_json: &serde_json::Value,
    crash_at: Option<u64>,
    start_clock: u64,
) -> mlua::Result<Pass> {
    use std::sync::atomic::AtomicBool;
    PASSES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let io = |e: crate::journal::JournalError| mlua::Error::runtime(format!("crash proof: the test's journal: {e}"));
    let n = dir.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    crate::clock::set_offset(start_clock);
    let state_url = format!("sqlite://{}", dir.tmp.path().join(format!("journal-{n}.db")).display());
    // A scenario on an earlier run's world starts each pass from a copy of it.
    if let Some(run_id) = &spec.world {
        let from = dir.journaled(run_id, "crash proof")?.world;
        copy_world(&from, &world_of(&state_url))
            .map_err(|e| mlua::Error::runtime(format!("crash proof: copying the world of {run_id}: {e}")))?;
        dir.responders.fork(&from, &world_of(&state_url))?;
    }
    let inner = journal_at(&state_url).await.map_err(io)?;
    let dead = Arc::new(AtomicBool::new(false));
    let cj = Arc::new(crash::CrashJournal::new(Arc::clone(&inner), crash_at, Arc::clone(&dead)));
    let fakes = dir.fakes(fakes_json.clone(), world_of(&state_url), Some(Arc::clone(&dead)));
    let invocation = |fakes: &Fakes| {
        let mut inv = crate::engine::Invocation::new(shown.to_path_buf(), crate::engine::Mode::Run);
        inv.supplied = spec.supplied.clone().unwrap_or_default();
        inv.yes = spec.approve;
        inv.trigger = "test".into();
        inv.fakes = Some(fakes.clone());
        inv
    };
    let mut inv = invocation(&fakes);
    if crash_at.is_some() {
        // Owned by a process that reads as gone once stopped (same pid, another start time).
        inv.owner = Some(crate::journal::Owner { pid_start: Some(-1), ..crate::journal::Owner::current() });
    }
    let journal: Arc<dyn crate::journal::Journal> = cj.clone();
    let _ = crate::engine::execute(inv, Some(journal), crate::output::Reporter::silent()).await;
    let before = fakes.calls.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let writes = cj.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut pass = Pass { status: String::new(), writes, before, after: vec![], done: vec![], running: vec![] };
    // The fakes are the world: after the crash they go on where they were (a service that
    // answered 503 twice has still answered twice), they do not start again with the process.
    let world = advanced(fakes_json, &pass.before);
    let again = dir.fakes(world, world_of(&state_url), None);
    match inner.find_run("last").await {
        Ok(run) => {
            for s in inner.steps(&run.id).await.map_err(io)? {
                // An undo's calls are made as the step "undo NAME".
                match s.undo_status.as_deref() {
                    Some("done") => pass.done.push(format!("undo {}", s.name)),
                    Some("running" | "failed") => pass.running.push(format!("undo {}", s.name)),
                    _ => {}
                }
                if s.status.is_done() {
                    pass.done.push(s.name);
                } else {
                    pass.running.push(s.name);
                }
            }
            // Resumed only when the process died mid-run: a run that had recorded its own end
            // (failed, waiting at a gate) before the crash point is compared as it stands, as
            // the uncrashed one is.
            if crash_at.is_some() && run.status.is_active() {
                let path = crate::commands::resumable(&run, false, "")
                    .map_err(|e| mlua::Error::runtime(format!("crash proof: {e}")))?;
                let steps = inner.steps(&run.id).await.map_err(io)?;
                let mut inv = invocation(&again);
                inv.path = path;
                inv.resume = Some((run.clone(), steps));
                let _ = crate::engine::execute(inv, Some(Arc::clone(&inner)), crate::output::Reporter::silent()).await;
            }
            pass.status = inner.find_run(&run.id).await.map_err(io)?.effective_status().to_string();
        }
        Err(_) if crash_at.is_some() => {
            // Stopped before the run was recorded: nothing happened yet; it is started again.
            let inv = invocation(&again);
            let _ = crate::engine::execute(inv, Some(Arc::clone(&inner)), crate::output::Reporter::silent()).await;
            pass.status = match inner.find_run("last").await {
                Ok(r) => r.effective_status().to_string(),
                Err(_) => "not_started".into(),
            };
        }
        Err(_) => pass.status = "not_started".into(),
    }
    pass.after = again.calls.lock().unwrap_or_else(|p| p.into_inner()).clone();
    inner.close().await;
    // One journal per pass: gone with it (a long runbook has hundreds of passes).
    let db = dir.tmp.path().join(format!("journal-{n}.db"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let world = world_of(&state_url);
    dir.responders.states.borrow_mut().remove(&world);
    crate::primitives::storage::fake::forget(&world);
    let _ = std::fs::remove_dir_all(&world);
    Ok(pass)
}

/// `crash_everywhere(path, spec)`: the scenario once, then once per crash point (before each
/// journal write of the run: steps, undos, gates, the run's own records), each time stopping the
/// process dead there and resuming on the same journal. Fails when a crash changes the outcome,
/// when a call of a step that had completed ran again, or when a mutating call outside any step
/// ran again; returns { points, outcome, repeated } (`repeated`: steps run again because they
/// were in flight at the crash: at-least-once, allowed, shown).
async fn crash_everywhere(lua: Lua, (path, spec): (String, Option<Table>)) -> mlua::Result<Table> {
    let dir = test_dir(&lua, "crash_everywhere")?;
    let runbook = dir.dir.join(&path);
    if !runbook.is_file() {
        return Err(mlua::Error::runtime(format!("crash_everywhere: no runbook {}", runbook.display())));
    }
    let shown = shown_path(&runbook);
    let spec = read_spec(&lua, spec, "crash_everywhere")?;
    crash_proof(&lua, &dir, &shown, &spec).await
}

/// The crash proof of one scenario (see `crash_everywhere`).
async fn crash_proof(lua: &Lua, dir: &TestDir, shown: &Path, spec: &Spec) -> mlua::Result<Table> {
    if spec.kill.is_some() {
        return Err(mlua::Error::runtime("crash proof: it kills the run at every point itself; `kill` is for run()"));
    }
    let fakes_json = spec.fakes.clone().unwrap_or_else(|| serde_json::json!({}));
    if fakes_json["real"].as_array().is_some_and(|r| !r.is_empty()) {
        return Err(mlua::Error::runtime(
            "crash proof: `real` lets calls through to real systems, which every crash point would make again; fake them all",
        ));
    }
    // The test's clock is where it was after the proof's passes.
    let clock = crate::clock::offset();
    let report = crash_passes(lua, dir, shown, spec, &fakes_json).await;
    crate::clock::set_offset(clock);
    report
}

async fn crash_passes(
    lua: &Lua,
    dir: &TestDir,
    shown: &Path,
    spec: &Spec,
    fakes_json: &serde_json::Value,
) -> mlua::Result<Table> {
    // Each pass starts at the time the proof started on a shared world's clock, else at the real time.
    let start_clock = if spec.world.is_some() { crate::clock::offset() } else { 0 };
    let base = crash_pass(dir, shown, spec, fakes_json, None, start_clock).await?;
    if let Some(c) = base.before.iter().find(|c| c["faked"] == false) {
        return Err(mlua::Error::runtime(format!(
            "crash_everywhere: unfaked call: {} {} (the uncrashed run must be fully faked)",
            c["primitive"].as_str().unwrap_or(""),
            c["call"].as_str().unwrap_or("")
        )));
    }
    // Each problem once, with the crash points where it showed.
    let mut problems: Vec<(String, Vec<u64>)> = Vec::new();
    let mut found = |what: String, k: u64| match problems.iter_mut().find(|(w, _)| *w == what) {
        Some((_, at)) => at.push(k),
        None => problems.push((what, vec![k])),
    };
    let mut repeated = std::collections::BTreeSet::new();
    let call_of = |c: &serde_json::Value| {
        format!("{} {}", c["primitive"].as_str().unwrap_or(""), c["call"].as_str().unwrap_or(""))
    };
    for k in 1..=base.writes.len() as u64 {
        let p = crash_pass(dir, shown, spec, fakes_json, Some(k), start_clock).await?;
        if p.status != base.status {
            found(format!("the run ended {}, {} without the crash", p.status, base.status), k);
        }
        for c in p.after.iter().filter(|c| c["mutating"] == true) {
            match c["step"].as_str() {
                Some(step) if p.done.iter().any(|d| d == step) => {
                    found(format!("step '{step}' had completed, and its call `{}` ran again on resume", call_of(c)), k)
                }
                Some(step) => {
                    if p.running.iter().any(|r| r == step) && p.before.iter().any(|b| b["step"].as_str() == Some(step))
                    {
                        repeated.insert(step.to_string());
                    }
                }
                None => {
                    if p.before.iter().any(|b| b["step"].is_null() && call_of(b) == call_of(c)) {
                        found(
                            format!("`{}` is outside any step: it ran again on resume (put it in a step)", call_of(c)),
                            k,
                        );
                    }
                }
            }
        }
    }
    if !problems.is_empty() {
        let point = |k: u64| {
            format!("journal write {k} ({})", base.writes.get(k as usize - 1).map(String::as_str).unwrap_or("?"))
        };
        let lines: Vec<String> = problems
            .iter()
            .map(|(what, at)| {
                let list: Vec<String> = at.iter().map(u64::to_string).collect();
                format!(
                    "  - {what}: crashing before {} (and {} point(s) in all: {})",
                    point(at[0]),
                    at.len(),
                    list.join(", ")
                )
            })
            .collect();
        return Err(mlua::Error::runtime(format!(
            "crash proof of {}: {} problem(s) over {} crash points:\n{}",
            shown.display(),
            problems.len(),
            base.writes.len(),
            lines.join("\n")
        )));
    }
    let out = lua.create_table()?;
    out.set("points", base.writes.len())?;
    out.set("outcome", base.status.clone())?;
    out.set("repeated", lua.create_sequence_from(repeated)?)?;
    Ok(out)
}

/// `advance(duration)`: moves the virtual clock, as time passing between two runs.
async fn advance(_lua: Lua, d: Value) -> mlua::Result<()> {
    let d = crate::duration::from_lua(&d).map_err(|e| mlua::Error::runtime(format!("advance: {e}")))?;
    crate::clock::sleep(d).await;
    Ok(())
}

/// Runs `inv` with the fakes on the journal at `state_url`, and reads its outcome back.
#[allow(clippy::too_many_arguments)]
async fn execute(
    lua: &Lua,
    dir: &TestDir,
    mut inv: crate::engine::Invocation,
    (state_url, world): (&str, &Path),
    fakes_json: serde_json::Value,
    (approve, kill): (bool, Option<crash::Kill>),
    run_id: Option<&str>,
    shown: &str,
) -> mlua::Result<Table> {
    let journal = journal_at(state_url).await.map_err(|e| mlua::Error::runtime(format!("the test's journal: {e}")))?;
    let cover_key = shown_path(&inv.path).display().to_string();
    // `kill`: the engine writes through a journal that stops the process dead at that point.
    let dead = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killing = kill.map(|k| Arc::new(crash::CrashJournal::killing(Arc::clone(&journal), k, Arc::clone(&dead))));
    let fakes = dir.fakes(fakes_json.clone(), world.to_path_buf(), killing.as_ref().map(|_| Arc::clone(&dead)));
    inv.yes = approve;
    inv.trigger = "test".into();
    inv.fakes = Some(fakes.clone());
    // Each run of a test is a process of its own, gone once it returns: a `resume` takes over
    // its run and its lock as after `runbook resume` in another process.
    inv.owner = Some(crate::journal::Owner { pid_start: Some(-1), ..crate::journal::Owner::current() });
    let through: Arc<dyn crate::journal::Journal> = match &killing {
        Some(k) => k.clone(),
        None => Arc::clone(&journal),
    };
    let outcome = crate::engine::execute(inv, Some(through), crate::output::Reporter::silent()).await;
    let (exit_code, error) = match &outcome {
        Ok(o) => (o.exit_code(), None),
        Err(e) => (e.exit_code(), Some(e.to_string())),
    };
    let out = lua.create_table()?;
    out.set("exit_code", exit_code)?;
    if dead.load(std::sync::atomic::Ordering::SeqCst) {
        // Where the process stopped: before this journal write.
        let seen = killing.as_ref().map(|k| k.seen.lock().unwrap_or_else(|p| p.into_inner()).last().cloned());
        out.set("killed", seen.flatten())?;
    }
    // Where the runbook met its first unfaked call (a step's error carries file:line).
    let mut unfaked_at: Option<String> = None;
    if let Ok(run) = journal.find_run(run_id.unwrap_or("last")).await {
        // A resume goes on with these fakes where this run left them.
        let calls = fakes.calls.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let fakes_json = advanced(&fakes_json, &calls);
        dir.journals.lock().unwrap_or_else(|p| p.into_inner()).insert(
            run.id.clone(),
            Journaled { state_url: state_url.to_string(), fakes: fakes_json, world: world.to_path_buf() },
        );
        out.set("run_id", run.id.clone())?;
        out.set("status", run.effective_status().to_string())?;
        // What stopped this process when it did not get to record it (a lock held), else the run's own.
        out.set("error", error.clone().filter(|_| outcome.is_err()).or(run.error.clone()).or(error))?;
        let steps = lua.create_table()?;
        let records = journal.steps(&run.id).await.unwrap_or_default();
        if coverage::on() {
            coverage::seen(&cover_key, &records);
        }
        for s in records {
            if let Some(e) = s.error.as_deref().filter(|e| e.contains("unfaked call: ")) {
                unfaked_at.get_or_insert_with(|| e.to_string());
            }
            steps.set(s.name.clone(), to_lua(lua, &crate::commands::inspect::step_json(&s))?)?;
        }
        out.set("steps", steps)?;
    } else {
        // No run was recorded: bad params, a syntax error, a declaration the engine refused.
        out.set("status", "not_started")?;
        out.set("error", error)?;
        out.set("steps", lua.create_table()?)?;
    }
    journal.close().await;
    let calls: Vec<serde_json::Value> = fakes.calls.lock().unwrap_or_else(|p| p.into_inner()).clone();
    // A call no fake answered fails the test, whatever the runbook did with the error.
    if let Some(c) = calls.iter().find(|c| c["faked"] == false) {
        let primitive = c["primitive"].as_str().unwrap_or("");
        let said = unfaked_at.unwrap_or_else(|| {
            format!(
                "{shown}: unfaked call: {primitive} {} (fakes tried: {})",
                c["call"].as_str().unwrap_or(""),
                c["tried"].as_str().unwrap_or("none")
            )
        });
        return Err(mlua::Error::runtime(format!(
            "{said}; fake it in `fakes.{primitive}`, or let it through with `real = {{ \"{primitive}\" }}`"
        )));
    }
    out.set("calls", to_lua(lua, &calls)?)?;
    // The webhooks posted (notify, a chat, an incident tool): each POST with a JSON body, as
    // { url, json }.
    let notifications: Vec<serde_json::Value> = calls
        .iter()
        .filter(|c| {
            c["primitive"] == "http"
                && c["call"].as_str().is_some_and(|s| s.starts_with("POST "))
                && c["json"].is_object()
        })
        .map(|c| serde_json::json!({ "url": c["call"].as_str().unwrap_or("")[5..], "json": c["json"] }))
        .collect();
    out.set("notifications", to_lua(lua, &notifications)?)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    /// A test never reaches a real system by accident: after the fakes are installed, no
    /// function of any primitive (every one the registration list adds) is the real one.
    #[test]
    fn every_primitive_function_is_replaced_by_a_fake() {
        use mlua::{Table, Value};
        let lua = crate::lua::new_sandbox(std::path::Path::new("."), None).unwrap();
        crate::engine::register_globals(&lua).unwrap();
        let mut real = Vec::new();
        for p in crate::primitives::PRIMITIVES {
            let name = p.name;
            match lua.globals().get::<Value>(name).unwrap() {
                Value::Function(f) => real.push((name.to_string(), Value::Function(f))),
                Value::Table(t) => {
                    for (k, v) in t.pairs::<String, Value>().flatten() {
                        if matches!(v, Value::Function(_)) {
                            real.push((format!("{name}.{k}"), v));
                        }
                    }
                }
                _ => {}
            }
        }
        // And the builtins that read the world: the environment and secrets.
        for name in ["secret", "env"] {
            real.push((name.to_string(), lua.globals().get::<Value>(name).unwrap()));
        }
        let fakes = super::Fakes {
            spec: serde_json::json!({}),
            calls: Default::default(),
            dead: None,
            world: None,
            responders: None,
        };
        super::install(&lua, &fakes).unwrap();
        // Logging acts on nothing outside the run. The fan-outs and backup stay real (their
        // checks, batches, journal, manifests) and ask the fake, through its hook, for the
        // inventory, each host's session and each dump, verification and restore.
        let harmless =
            |n: &str| n.starts_with("log.") || n.starts_with("backup.") || ["ssh.each", "ssh.rolling"].contains(&n);
        let mut kept = Vec::new();
        for (name, before) in &real {
            if harmless(name) {
                continue;
            }
            let now: Value = match name.split_once('.') {
                Some((m, f)) => lua.globals().get::<Table>(m).unwrap().get(f).unwrap(),
                None => lua.globals().get(name.as_str()).unwrap(),
            };
            if &now == before {
                kept.push(name.clone());
            }
        }
        for hooked in ["ssh", "ssh.group", "storage", "backup"] {
            assert!(crate::primitives::fake_hook(&lua, hooked).is_some(), "{hooked}'s fake set no hook");
        }
        assert!(real.len() >= 30, "{} primitive functions found", real.len());
        assert!(kept.is_empty(), "primitive functions a test would call for real: {kept:?}");
    }

    #[test]
    fn every_global_of_a_test_file_has_a_stub() {
        let stub = include_str!("../../stdlib/types/test.lua");
        for name in super::FROM_LUA.iter().chain(&["run", "resume", "advance", "crash_everywhere"]) {
            assert!(stub.contains(&format!("\nfunction {name}(")), "stdlib/types/test.lua does not declare {name}");
        }
    }

    #[test]
    fn a_failed_tests_error_reads_without_traceback_and_with_the_test_line() {
        let text = "runtime error: deploy.lua:12: step 'x': unfaked call\nstack traceback:\n\t[C]: in ?\n\tt_test.lua:7: in function <t_test.lua:5>";
        assert_eq!(super::clean_error(text, "t_test.lua"), "t_test.lua:7: deploy.lua:12: step 'x': unfaked call");
        assert_eq!(
            super::clean_error("t_test.lua:3: expected 2, got 1", "t_test.lua"),
            "t_test.lua:3: expected 2, got 1"
        );
    }
}
