//! The storage primitive on local disk and on a real S3 server (s3s-fs).
use serde_json::json;

use crate::harness::Env;
use crate::servers::s3;

/// The same operations on any store: `OPEN` is the Lua expression that opens it.
fn exercise(open: &str) -> String {
    format!(
        r#"runbook {{ name = "storage" }}
local s = {open}
local function err(f, ...)
  local ok, e = pcall(f, ...)
  assert(not ok, "expected an error")
  return tostring(e):match("[^\n]*")
end
step("objects", function()
  local put = s:put("daily/hello.txt", "hello\0world")
  local big = s:put("daily/big.bin", {{ file = "big.bin" }})
  s:copy("daily/hello.txt", "weekly/hello.txt")
  local got = s:get("daily/big.bin", {{ to = "back/big.bin" }})
  local daily = s:list("daily")
  local keys = {{}}
  for _, m in ipairs(s:list()) do keys[#keys + 1] = m.key end
  local stat = s:stat("daily/hello.txt")
  local deleted = s:delete("weekly/hello.txt")
  return {{ put = put.size, big = big.size, got = got.size, text = s:get("daily/hello.txt"),
           daily = #daily, first = daily[1].key, first_size = daily[1].size, keys = keys,
           stat = {{ size = stat.size, has_modified = stat.modified:match("^%d%d%d%d%-") ~= nil }},
           missing_stat = s:stat("nope") == nil, exists = s:exists("daily/big.bin"),
           gone = not s:exists("weekly/hello.txt"), deleted = deleted, empty = #s:list("none") }}
end)
step("errors", function()
  return {{
    missing = err(s.get, s, "no/such.txt"),
    dots = err(s.get, s, "../etc/passwd"),
    bad_data = err(s.put, s, "x", 42),
    unknown = err(s.get, s, "x", {{ into = "y" }}),
    no_file = err(s.put, s, "x", {{ file = "missing.bin" }}),
  }}
end)
"#
    )
}

fn check(env: &Env, out: &crate::harness::Run) {
    out.assert_code(0);
    let show = env.show("last");
    let step = Env::step(&show, "objects");
    assert_eq!(step["status"], "succeeded", "{step}");
    let size = 20 * 1024 * 1024 + 3;
    assert_eq!(
        step["result"],
        json!({"put": 11, "big": size, "got": size, "text": "hello\u{0}world", "daily": 2, "first": "daily/big.bin",
               "first_size": size, "keys": ["daily/big.bin", "daily/hello.txt", "weekly/hello.txt"],
               "stat": {"size": 11, "has_modified": true}, "missing_stat": true, "exists": true, "gone": true,
               "deleted": true, "empty": 0})
    );
    assert_eq!(std::fs::read(env.path("back/big.bin")).unwrap(), std::fs::read(env.path("big.bin")).unwrap());
    let e = &Env::step(&show, "errors")["result"];
    let get = |k: &str| e[k].as_str().unwrap().to_string();
    assert!(get("missing").contains("no/such.txt: not found"), "{e}");
    assert!(get("dots").contains("invalid key '../etc/passwd'"), "{e}");
    assert!(get("bad_data").contains("the data is a string or {file = \"path\"}"), "{e}");
    assert!(get("unknown").contains("unknown key `into`"), "{e}");
    assert!(get("no_file").contains("cannot read") && get("no_file").contains("missing.bin"), "{e}");
}

fn big_file(env: &Env) {
    let data: Vec<u8> = (0..20 * 1024 * 1024 + 3u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    std::fs::write(env.path("big.bin"), data).unwrap();
}

#[test]
fn local_disk_store_streams_lists_and_refuses_bad_keys() {
    let env = Env::new();
    big_file(&env);
    env.write("rb.lua", &exercise(r#"storage.open("file://./data/backups")"#));
    let out = env.run(&["run", "rb.lua"]);
    check(&env, &out);
    assert!(env.path("data/backups/daily/big.bin").exists(), "relative to the runbook, created when missing");
}

#[test]
fn s3_store_does_the_same_against_a_real_s3_server_and_keeps_its_secret() {
    let s = s3();
    let env = Env::new();
    big_file(&env);
    env.write(
        "rb.lua",
        &exercise(&format!(
            r#"storage.open("s3://{}/env-{}", {{ endpoint = "{}", allow_http = true, region = "us-east-1",
                access_key_id = "{}", secret_access_key = secret("S3_SECRET") }})"#,
            s.bucket,
            std::process::id(),
            s.endpoint,
            s.access_key
        )),
    );
    let out = env.run_env(&["run", "rb.lua"], &[("S3_SECRET", s.secret_key)]);
    check(&env, &out);
    assert!(s.root.join(s.bucket).join(format!("env-{}", std::process::id())).join("daily/big.bin").exists());

    env.write(
        "bad.lua",
        &format!(
            r#"runbook {{ name = "bad-s3" }}
step("denied", {{ continue_on_error = true }}, function()
  local s = storage.open("s3://{}/x", {{ endpoint = "{}", allow_http = true, region = "us-east-1",
    access_key_id = "{}", secret_access_key = secret("S3_SECRET") }})
  return s:put("a", "b")
end)
step("options", {{ continue_on_error = true }}, function() return storage.open("s3://b", {{ endpiont = "x" }}) end)
step("scheme", {{ continue_on_error = true }}, function() return storage.open("ftp://x") end)
"#,
            s.bucket, s.endpoint, s.access_key
        ),
    );
    let bad = env.run_env(&["run", "bad.lua"], &[("S3_SECRET", "wrong-secret-77aa")]);
    bad.assert_code(0);
    let show = env.show("last");
    let denied = Env::step(&show, "denied")["error"].as_str().unwrap().to_string();
    assert!(denied.contains(&format!("storage: s3://{}/x: a:", s.bucket)) && denied.contains("403"), "{denied}");
    assert!(Env::step(&show, "options")["error"].as_str().unwrap().contains("unknown key `endpiont`"));
    assert!(Env::step(&show, "scheme")["error"].as_str().unwrap().contains("unsupported storage URL 'ftp://x'"));
    for text in [out.all(), bad.all()] {
        assert!(!text.contains(s.secret_key) && !text.contains("wrong-secret-77aa"));
    }
    let journal = crate::harness::journal_bytes(&env.journal_path());
    assert!(!crate::harness::contains_bytes(&journal, s.secret_key.as_bytes()));
}
