//! The sandbox: each escape is refused with a clear error.
use crate::harness::Env;

fn refused(body: &str, expected: &str) {
    let env = Env::new();
    std::fs::create_dir_all(env.path("outside")).unwrap();
    env.write("outside/secret.lua", "return 'escaped'\n");
    env.write("rb/evil.lua", "return 'escaped'\n");
    std::os::unix::fs::symlink(env.path("outside/secret.lua"), env.path("rb/link.lua")).unwrap();
    env.write("rb/main.lua", &format!("runbook {{ name = \"sb\" }}\nstep(\"escape\", function()\n  {body}\nend)\n"));
    let r = env.run(&["run", "rb/main.lua"]);
    r.assert_code(1);
    assert!(r.stderr.contains("rb/main.lua:3: step 'escape'"), "{body}: {}", r.stderr);
    assert!(r.stderr.contains(expected), "{body}: expected `{expected}` in {}", r.stderr);
    assert!(!r.all().contains("escaped"), "{body}: {}", r.all());
}

#[test]
fn io_is_not_available() {
    refused("return io.open('/etc/passwd'):read('a')", "io is not available in a runbook (sandbox)");
}

#[test]
fn os_execute_and_friends_are_not_available() {
    refused("return os.execute('id')", "os.execute is not available in a runbook (sandbox)");
    refused("return os.remove('x')", "os.remove is not available");
    refused("os.exit(0)", "os.exit is not available");
}

#[test]
fn binary_chunks_are_refused() {
    refused("local f, err = load('\\27Lua\\x54\\0'); assert(f, err)", "attempt to load a binary chunk");
    refused("local f, err = load('return 1', 'x', 'b'); assert(f, err)", "only text chunks are allowed");
    refused("return string.dump(function() end)", "string.dump is not available");
}

#[test]
fn loading_files_other_than_modules_is_not_available() {
    refused("return dofile('/etc/passwd')", "dofile is not available");
    refused("return loadfile('/etc/passwd')", "loadfile is not available");
    refused("return package.loadlib('libc.so.6', 'system')", "package is not available");
    refused("return debug.getinfo(1)", "debug is not available");
}

#[test]
fn require_outside_the_runbook_folder_is_refused() {
    refused("return require('../outside/secret')", "require '../outside/secret' refused");
    refused("return require('/etc/passwd')", "require '/etc/passwd' refused");
    refused("return require('link')", "resolves outside the runbook's folder");
    refused("return require('runbook.nope')", "no such stdlib module");
}

#[test]
fn what_the_sandbox_keeps_still_works() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "ok" }
step("libs", function()
  local f = load("return 1 + 1")
  local co = coroutine.wrap(function() coroutine.yield(5) end)
  return { load = f(), str = string.upper("a"), tbl = table.concat({"a", "b"}, ","), math = math.max(1, 2),
           utf8 = utf8.len("héllo"), time = type(os.time()), date = os.date("!%Y", 0), co = co(), home = type(os.getenv("HOME")) }
end)
"#,
    );
    env.run(&["run", "rb.lua"]).assert_code(0);
    assert_eq!(
        Env::step(&env.show("last"), "libs")["result"],
        serde_json::json!({"load": 2, "str": "A", "tbl": "a,b", "math": 2, "utf8": 5, "time": "number", "date": "1970", "co": 5, "home": "string"})
    );
}
