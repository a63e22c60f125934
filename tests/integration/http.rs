//! The http primitive against fixtures served by the tests on 127.0.0.1 (plain and TLS).
use serde_json::json;

use crate::fixtures::{self_signed, HttpServer, TestCa};
use crate::harness::Env;

fn result(show: &serde_json::Value, step: &str) -> serde_json::Value {
    let s = Env::step(show, step);
    assert_eq!(s["status"], "succeeded", "step {step}: {s}");
    s["result"].clone()
}

const TOKEN: &str = "tok-3b9e1f77c2d84a";

#[test]
fn requests_bodies_headers_redirects_and_secret_headers() {
    let env = Env::new();
    let srv = HttpServer::start();
    let other = HttpServer::start();
    let base = srv.url("");
    env.write(
        "rb.lua",
        &format!(
            r#"runbook {{ name = "http" }}
local BASE = "{base}"
local token = secret("API_TOKEN")
step("get", function()
  local r = http.get(BASE .. "/json")
  local j = r:json()
  return {{ status = r.status, ctype = r.headers["content-type"], fixture = r.headers["x-fixture"],
           version = j.version, none_is_null = j.none == null, items = #j.items, body_len = #r.body,
           ms_ok = type(r.ms) == "number" and r.ms >= 0, url = r.url }}
end)
step("post json", function()
  local r = http.post(BASE .. "/echo", {{ json = {{ name = "o'brien\"; drop", list = {{ 1, 2 }}, empty = {{}}, token = token }},
    headers = {{ ["X-Api-Key"] = token, ["X-Plain"] = "p" }}, query = {{ q = "a b&c=d", n = 2 }} }})
  local e = r:json()
  return {{ method = e.method, query = e.query, ctype = e.headers["content-type"], plain = e.headers["x-plain"] }}
end)
step("form and method", function()
  local e = http.request{{ method = "put", url = BASE .. "/echo", form = {{ a = "1", b = "x y&z" }} }}:json()
  return {{ method = e.method, body = e.body, ctype = e.headers["content-type"] }}
end)
step("bearer", function()
  http.get(BASE .. "/echo", {{ bearer = token }})
  http.delete(BASE .. "/echo", {{ body = "raw body", expect = {{ 200, 204 }} }})
  return true
end)
step("expect", function()
  return {{ not_found = http.get(BASE .. "/status/404", {{ expect = 404 }}).status,
           any = http.get(BASE .. "/status/500", {{ expect = "any" }}).status }}
end)
step("redirects", function()
  local followed = http.get(BASE .. "/redirect/3")
  local stopped = http.get(BASE .. "/redirect/3", {{ follow_redirects = false }})
  return {{ followed = followed.status, final = followed.url, stopped = stopped.status,
           location = stopped.headers.location }}
end)
step("secret header not carried to another host", {{ continue_on_error = true }}, function()
  return http.get(BASE .. "/redirect-to/{port}/echo", {{ headers = {{ ["X-Api-Key"] = token }} }})
end)
"#,
            port = other.addr.port(),
        ),
    );
    let out = env.run_env(&["run", "rb.lua"], &[("API_TOKEN", TOKEN)]);
    out.assert_code(0);
    let show = env.show("last");
    assert_eq!(
        result(&show, "get"),
        json!({"status": 200, "ctype": "application/json", "fixture": "a, b", "version": "1.2.3",
               "none_is_null": true, "items": 2, "body_len": 120, "ms_ok": true, "url": base.clone() + "/json"})
    );
    assert_eq!(
        result(&show, "post json"),
        json!({"method": "POST", "query": "n=2&q=a+b%26c%3Dd", "ctype": "application/json", "plain": "p"})
    );
    assert_eq!(
        result(&show, "form and method"),
        json!({"method": "PUT", "body": "a=1&b=x+y%26z", "ctype": "application/x-www-form-urlencoded"})
    );
    assert_eq!(result(&show, "expect"), json!({"not_found": 404, "any": 500}));
    assert_eq!(
        result(&show, "redirects"),
        json!({"followed": 200, "final": base.clone() + "/echo", "stopped": 302, "location": "/redirect/2"})
    );
    let refused = Env::step(&show, "secret header not carried to another host");
    assert!(
        refused["error"].as_str().unwrap().contains("refusing to follow a redirect to another origin"),
        "{refused}"
    );

    // What the server received: the secret values themselves, bound where they belong.
    let recorded = srv.recorded();
    let post = recorded.iter().find(|r| r.method == "POST").unwrap();
    let header = |r: &crate::fixtures::Recorded, name: &str| {
        r.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default()
    };
    assert_eq!(header(post, "x-api-key"), TOKEN);
    let sent: serde_json::Value = serde_json::from_slice(&post.body).unwrap();
    assert_eq!(sent, json!({"name": "o'brien\"; drop", "list": [1, 2], "empty": {}, "token": TOKEN}));
    let bearer =
        recorded.iter().find(|r| r.method == "GET" && header(r, "authorization").starts_with("Bearer")).unwrap();
    assert_eq!(header(bearer, "authorization"), format!("Bearer {TOKEN}"));
    let delete = recorded.iter().find(|r| r.method == "DELETE").unwrap();
    assert_eq!(delete.body, b"raw body");
    assert!(recorded.iter().all(|r| header(r, "user-agent").starts_with("runbook/")));
    assert!(other.recorded().is_empty(), "the redirect to another origin was refused before it was sent");

    // ... and the secret shows nowhere on our side.
    assert!(!out.all().contains(TOKEN), "{}", out.all());
    let verbose = env.run_env(&["show", "last", "--events", "--output", "json"], &[]);
    verbose.assert_code(0);
    assert!(!verbose.all().contains(TOKEN));
    assert!(!crate::harness::contains_bytes(&crate::harness::journal_bytes(&env.journal_path()), TOKEN.as_bytes()));
}

#[test]
fn errors_name_method_url_and_status_and_never_credentials() {
    let env = Env::new();
    let srv = HttpServer::start();
    let base = srv.url("");
    let closed = crate::servers::free_port();
    let with_credentials = base.replace("http://", "http://admin:hunter2pw@");
    env.write(
        "rb.lua",
        &format!(
            r#"runbook {{ name = "http-errors" }}
local BASE = "{base}"
local function err(f, ...)
  local ok, e = pcall(f, ...)
  assert(not ok, "expected an error")
  return tostring(e)
end
step("errors", function()
  return {{
    status = err(http.get, BASE .. "/status/500"),
    credentials = err(http.get, "{with_credentials}/status/503"),
    timeout = err(http.get, BASE .. "/slow/3000", {{ timeout = "300ms" }}),
    refused = err(http.get, "http://127.0.0.1:{closed}/"),
    scheme = err(http.get, "ftp://127.0.0.1/file"),
    url = err(http.get, "not a url"),
    unknown_key = err(http.get, BASE .. "/ok", {{ tiemout = "1s" }}),
    wrong_type = err(http.get, BASE .. "/ok", {{ retries = "many" }}),
    wait_key = err(http.get, BASE .. "/ok", {{ interval = "1s" }}),
    two_bodies = err(http.post, BASE .. "/echo", {{ json = {{}}, body = "x" }}),
    expect = err(http.get, BASE .. "/ok", {{ expect = "sometimes" }}),
    not_json = err(function() return http.get(BASE .. "/notjson"):json() end),
    no_url = err(http.request, {{ method = "GET" }}),
    exhausted = err(http.get, BASE .. "/flaky/k2/5", {{ retries = 1, retry_delay = "10ms" }}),
    post_502 = err(http.post, BASE .. "/status/502", {{ retries = 2, retry_delay = "10ms" }}),
    get_502 = err(http.get, BASE .. "/status/502", {{ retries = 2, retry_delay = "10ms" }}),
    insecure_and_ca = err(http.get, BASE .. "/ok", {{ insecure = true, ca = "ca.pem" }}),
    zero_timeout = err(http.get, BASE .. "/ok", {{ timeout = 0 }}),
    health_method = err(http.wait_healthy, BASE .. "/ok", {{ method = "DELETE" }}),
    refused_redirect = err(http.get, BASE .. "/redirect/50"),
  }}
end)
step("retried", function()
  return http.get(BASE .. "/flaky/k1/2", {{ retries = 3, retry_delay = "20ms" }}).body
end)
"#
        ),
    );
    let out = env.run(&["run", "rb.lua"]);
    out.assert_code(0);
    let show = env.show("last");
    let e = result(&show, "errors");
    // The message, without the traceback pcall adds.
    let get = |k: &str| e[k].as_str().unwrap_or_else(|| panic!("{k}: {e}")).lines().next().unwrap().to_string();
    let status = get("status");
    assert!(
        status.contains(&format!(
            "http: GET {base}/status/500 returned 500 Internal Server Error (expected 2xx): failure body for 500: xxx"
        )),
        "{status}"
    );
    assert!(status.ends_with("...") && status.len() < 400, "the body is cut: {status}");
    assert!(e["status"].as_str().unwrap().contains("rb.lua:10"), "the traceback names the runbook line: {e}");
    let credentials = get("credentials");
    assert!(
        credentials.contains("returned 503") && !credentials.contains("hunter2pw") && !credentials.contains("admin"),
        "{credentials}"
    );
    assert!(get("timeout").contains("/slow/3000: no response within 300ms"), "{}", get("timeout"));
    assert!(get("refused").contains(&format!("GET http://127.0.0.1:{closed}/: cannot connect")), "{}", get("refused"));
    assert!(get("scheme").contains("unsupported URL scheme 'ftp'"), "{}", get("scheme"));
    assert!(get("url").contains("invalid URL 'not a url'"), "{}", get("url"));
    assert!(
        get("unknown_key").contains("unknown key `tiemout`") && get("unknown_key").contains("timeout"),
        "{}",
        get("unknown_key")
    );
    assert!(get("wrong_type").contains("retries"), "{}", get("wrong_type"));
    assert!(get("wait_key").contains("`interval` belongs to http.wait_healthy"), "{}", get("wait_key"));
    assert!(get("two_bodies").contains("give one of json, body and form"), "{}", get("two_bodies"));
    assert!(get("expect").contains("expect: a status"), "{}", get("expect"));
    assert!(get("not_json").contains("is not JSON") && get("not_json").contains("<html>"), "{}", get("not_json"));
    assert!(get("no_url").contains("no URL"), "{}", get("no_url"));
    assert!(get("exhausted").contains("returned 503 Service Unavailable"), "{}", get("exhausted"));
    assert!(get("post_502").contains("returned 502"), "{}", get("post_502"));
    assert!(get("get_502").contains("returned 502"), "{}", get("get_502"));
    let hits =
        |path: &str, method: &str| srv.recorded().iter().filter(|r| r.path == path && r.method == method).count();
    assert_eq!(hits("/status/502", "POST"), 1, "a POST is not repeated after a 502: it may have been processed");
    assert_eq!(hits("/status/502", "GET"), 3, "a GET is");
    assert!(get("insecure_and_ca").contains("give either `insecure = true`"), "{}", get("insecure_and_ca"));
    assert!(get("zero_timeout").contains("timeout: must be more than 0"), "{}", get("zero_timeout"));
    assert!(get("health_method").contains("`method` belongs to http.request"), "{}", get("health_method"));
    assert!(get("refused_redirect").contains("more than 10 redirects"), "{}", get("refused_redirect"));
    assert_eq!(
        (hits("/redirect/50", "GET"), hits("/redirect/40", "GET"), hits("/redirect/39", "GET")),
        (1, 1, 0),
        "ten redirects followed, the eleventh refused, and not retried"
    );
    assert_eq!(result(&show, "retried"), "recovered");
    assert_eq!(srv.recorded().iter().filter(|r| r.path == "/flaky/k1/2").count(), 3, "two failures, then success");
    assert_eq!(srv.recorded().iter().filter(|r| r.path == "/flaky/k2/5").count(), 2, "one retry");
    assert!(out.all().contains("attempt 1 of 4 failed (503 Service Unavailable); retrying in 20ms"), "{}", out.all());
}

#[test]
fn wait_healthy_polls_until_healthy_and_reports_the_last_answer() {
    let env = Env::new();
    let srv = HttpServer::start();
    let base = srv.url("");
    env.write(
        "rb.lua",
        &format!(
            r#"runbook {{ name = "health" }}
local BASE = "{base}"
step("wait", function()
  local r = http.wait_healthy(BASE .. "/health/a/3", {{ interval = "30ms", timeout = "20s", expect = 200,
    json_path = "status", equals = "healthy", body_contains = "db" }})
  return {{ status = r.status, db = r:json().checks.db }}
end)
step("nested path and index", function()
  http.wait_healthy(BASE .. "/json", {{ json_path = "items.2.state", equals = "b", timeout = "5s" }})
  http.wait_healthy(BASE .. "/json", {{ json_path = "checks.db.status" }})
  return true
end)
step("never healthy", {{ continue_on_error = true }}, function()
  return http.wait_healthy(BASE .. "/health/b/100000", {{ interval = "30ms", timeout = "300ms" }})
end)
step("wrong value", {{ continue_on_error = true }}, function()
  return http.wait_healthy(BASE .. "/json", {{ json_path = "checks.db.status", equals = "down", interval = "30ms", timeout = "200ms" }})
end)
step("bad options", {{ continue_on_error = true }}, function()
  return http.wait_healthy(BASE .. "/json", {{ equals = "x" }})
end)
"#
        ),
    );
    let out = env.run(&["run", "rb.lua"]);
    out.assert_code(0);
    let show = env.show("last");
    assert_eq!(result(&show, "wait"), json!({"status": 200, "db": "up"}));
    assert_eq!(srv.recorded().iter().filter(|r| r.path == "/health/a/3").count(), 4);
    let all = out.all();
    assert!(all.contains("/health/a/3: attempt 1: 503 Service Unavailable (expected 200)"), "{all}");
    assert!(all.contains("/health/a/3: attempt 4: healthy"), "{all}");
    let never = Env::step(&show, "never healthy")["error"].as_str().unwrap().to_string();
    assert!(
        never.contains("/health/b/100000 not healthy after") && never.contains("last: 503 Service Unavailable"),
        "{never}"
    );
    let calls = srv.recorded().iter().filter(|r| r.path == "/health/b/100000").count();
    assert!((2..=12).contains(&calls), "polled every 30ms for 300ms: {calls} calls");
    let wrong = Env::step(&show, "wrong value")["error"].as_str().unwrap().to_string();
    assert!(wrong.contains(r#"last: 200 OK: checks.db.status is "up", not "down""#), "{wrong}");
    let bad = Env::step(&show, "bad options")["error"].as_str().unwrap().to_string();
    assert!(bad.contains("`equals` needs `json_path`"), "{bad}");
}

#[test]
fn tls_is_verified_by_default_with_a_private_ca_or_explicitly_not() {
    let env = Env::new();
    let ca = TestCa::new();
    let good = HttpServer::start_tls(&ca.leaf("good.test", -1.0, 90.0, 0x1001));
    let expired = HttpServer::start_tls(&ca.leaf("expired.test", -30.0, -1.0, 0x1002));
    let selfsigned = HttpServer::start_tls(&self_signed("self.test", 0x1003));
    let (ca_cert, ca_cert_pem) = crate::fixtures::self_signed_ca("openssl-style.test", 0x1004);
    let ca_server = HttpServer::start_tls(&ca_cert);
    env.write("certs/own-ca.pem", &ca_cert_pem);
    env.write("certs/ca.pem", &ca.pem);
    env.write("certs/not-a-cert.pem", "hello");
    env.write(
        "rb.lua",
        &format!(
            r#"runbook {{ name = "https" }}
local function err(f, ...)
  local ok, e = pcall(f, ...)
  assert(not ok, "expected an error")
  return tostring(e)
end
step("https", function()
  return {{
    untrusted = err(http.get, "{good}"),
    trusted = http.get("{good}", {{ ca = "certs/ca.pem" }}).body,
    expired = err(http.get, "{expired}", {{ ca = "certs/ca.pem" }}),
    self_signed = err(http.get, "{selfsigned}"),
    insecure = http.get("{selfsigned}", {{ insecure = true }}).body,
    verified_after_insecure = err(http.get, "{selfsigned}"),
    ca_as_server = err(http.get, "{ca_server}", {{ ca = "certs/own-ca.pem" }}),
    bad_ca = err(http.get, "{good}", {{ ca = "certs/not-a-cert.pem" }}),
    missing_ca = err(http.get, "{good}", {{ ca = "certs/missing.pem" }}),
  }}
end)
"#,
            good = good.url("/ok"),
            expired = expired.url("/ok"),
            selfsigned = selfsigned.url("/ok"),
            ca_server = ca_server.url("/ok"),
        ),
    );
    let out = env.run(&["run", "rb.lua"]);
    out.assert_code(0);
    let r = result(&env.show("last"), "https");
    let get = |k: &str| r[k].as_str().unwrap().to_string();
    assert!(
        get("untrusted").contains("TLS certificate verification failed: issuer not trusted"),
        "{}",
        get("untrusted")
    );
    assert_eq!(get("trusted"), "ok");
    assert!(get("expired").contains("certificate expired"), "{}", get("expired"));
    assert!(get("self_signed").contains("issuer not trusted"), "{}", get("self_signed"));
    assert_eq!(get("insecure"), "ok");
    assert!(get("verified_after_insecure").contains("issuer not trusted"), "an insecure client is never reused");
    assert!(get("ca_as_server").contains("presents a CA certificate as its own"), "{}", get("ca_as_server"));
    assert!(get("bad_ca").contains("not-a-cert.pem': no certificate in the file"), "{}", get("bad_ca"));
    assert!(get("missing_ca").contains("missing.pem'"), "{}", get("missing_ca"));
    assert!(out.all().contains("TLS certificate of 127.0.0.1 not verified (insecure = true)"), "{}", out.all());
    assert_eq!(good.recorded().len(), 1, "only the trusted request got through");
}

#[test]
fn dry_run_sends_reads_and_not_writes() {
    let env = Env::new();
    let srv = HttpServer::start();
    env.write(
        "rb.lua",
        &format!(
            r#"runbook {{ name = "http-dry" }}
step("calls", function()
  http.get("{base}/ok")
  http.post("{base}/echo", {{ json = {{ deploy = true }} }})
  http.post("{base}/echo?search", {{ json = {{ q = 1 }}, readonly = true }})
  http.delete("{base}/echo")
  return true
end)
"#,
            base = srv.url("")
        ),
    );
    let out = env.run(&["run", "rb.lua", "--dry-run"]);
    out.assert_code(0);
    let methods: Vec<String> = srv.recorded().iter().map(|r| r.method.clone()).collect();
    assert_eq!(methods, ["GET", "POST"], "the GET and the readonly POST only");
    assert!(out.all().contains(&format!("DELETE {}/echo", srv.url(""))), "{}", out.all());
}

#[test]
fn secrets_in_urls_and_bodies_stay_out_of_sight_and_off_other_origins() {
    let env = Env::new();
    let srv = HttpServer::start();
    let other = HttpServer::start();
    let leak = "tok-LEAKME-5c1d";
    let hook = srv.url(&format!("/status/500?token={leak}")).replace("http://", "http://svc:pw-9f3@");
    env.write(
        "rb.lua",
        &format!(
            r#"runbook {{ name = "http-secret-url" }}
local hook = secret("HOOK_URL")
local password = secret("DB_PASSWORD")
step("hook", {{ continue_on_error = true }}, function() return http.get(hook) end)
step("health", {{ continue_on_error = true }}, function()
  return http.wait_healthy(hook, {{ timeout = "200ms", interval = "50ms" }})
end)
step("307", {{ continue_on_error = true }}, function()
  return http.post("{base}/redirect307-to/{port}/echo", {{ json = {{ password = password }} }})
end)
step("307 form", {{ continue_on_error = true }}, function()
  return http.post("{base}/redirect307-to/{port}/echo", {{ form = {{ password = password }} }})
end)
"#,
            base = srv.url(""),
            port = other.addr.port()
        ),
    );
    let out = env.run_env(&["run", "rb.lua"], &[("HOOK_URL", &hook), ("DB_PASSWORD", "pw-LEAKME-77")]);
    out.assert_code(0);
    let show = env.show("last");
    let hook_err = Env::step(&show, "hook")["error"].as_str().unwrap().to_string();
    assert!(hook_err.contains("<secret:HOOK_URL> returned 500"), "{hook_err}");
    let health_err = Env::step(&show, "health")["error"].as_str().unwrap().to_string();
    assert!(health_err.contains("<secret:HOOK_URL> not healthy after"), "{health_err}");
    for step in ["307", "307 form"] {
        let e = Env::step(&show, step)["error"].as_str().unwrap().to_string();
        assert!(e.contains("refusing to follow a redirect to another origin"), "{e}");
    }
    assert!(other.recorded().is_empty(), "the password never reached the other origin");
    let verbose = env.run_env(&["show", "last", "--events", "--output", "json"], &[]);
    verbose.assert_code(0);
    for text in [out.all(), verbose.all()] {
        assert!(!text.contains(leak) && !text.contains("pw-9f3") && !text.contains("pw-LEAKME"), "{text}");
    }
    let journal = crate::harness::journal_bytes(&env.journal_path());
    assert!(!crate::harness::contains_bytes(&journal, leak.as_bytes()));
    assert!(!crate::harness::contains_bytes(&journal, b"pw-LEAKME"));
}

#[test]
fn wait_healthy_makes_its_last_attempt_at_the_deadline() {
    let env = Env::new();
    let srv = HttpServer::start();
    env.write(
        "rb.lua",
        &format!(
            r#"runbook {{ name = "deadline" }}
step("wait", {{ continue_on_error = true }}, function()
  return http.wait_healthy("{url}", {{ timeout = "1s", interval = "600ms" }})
end)
"#,
            url = srv.url("/health/never/1000000")
        ),
    );
    env.run(&["run", "rb.lua"]).assert_code(0);
    // t=0, t=0.6s, and the deadline (1s): an interval longer than what is left is cut short.
    let calls = srv.recorded().len();
    assert!(calls >= 3, "{calls} attempts");
    let e = Env::step(&env.show("last"), "wait")["error"].as_str().unwrap().to_string();
    assert!(e.contains(&format!("({calls} attempts)")), "{e}");
}

#[test]
fn a_load_test_measures_users_ramps_and_rates_and_fails_on_its_thresholds_and_not_in_a_dry_run() {
    let env = Env::new();
    let srv = HttpServer::start();
    env.write(
        "rb.lua",
        &format!(
            r#"runbook {{ name = "load" }}
local base = "{base}"
step("users", function()
  return http.load{{ url = base .. "/slow/50", vus = 4, duration = "2s", report_every = "500ms",
                     thresholds = {{ p95 = "1s", error_rate = 0.01 }} }}
end)
step("ramp", function()
  return http.load{{ url = base .. "/ok", stages = {{ {{ duration = "1s", target = 5 }}, {{ duration = "500ms", target = 0 }} }} }}
end)
step("rate", function()
  return http.load{{ url = base .. "/slow/20", rate = 40, duration = "2s", max_vus = 40 }}
end)
step("crossed", function()
  local _, slow = pcall(http.load, {{ url = base .. "/slow/100", vus = 2, duration = "1s", thresholds = {{ p95 = "20ms" }} }})
  local _, failing = pcall(http.load, {{ url = base .. "/status/500", vus = 2, duration = "500ms", thresholds = {{ error_rate = 0.01 }} }})
  return {{ slow = tostring(slow), failing = tostring(failing) }}
end)
step("bad", function()
  local function err(o) local ok, e = pcall(http.load, o); assert(not ok); return tostring(e) end
  return {{
    retries = err{{ url = base .. "/ok", vus = 1, duration = "1s", retries = 3 }},
    two = err{{ url = base .. "/ok", vus = 1, rate = 5, duration = "1s" }},
    no_duration = err{{ url = base .. "/ok", vus = 3 }},
    too_many = err{{ url = base .. "/ok", vus = 100000, duration = "1s" }},
    in_request = tostring(select(2, pcall(http.get, base .. "/ok", {{ vus = 3 }}))),
  }}
end)
"#,
            base = srv.url("")
        ),
    );
    let r = env.run(&["run", "rb.lua"]);
    r.assert_code(0);
    let show = env.show("last");
    let users = result(&show, "users");
    let n = users["requests"].as_u64().unwrap();
    // 4 users, 2 s, 50 ms a request: about 160 (less on a busy machine, never more than 170).
    assert!((40..=170).contains(&n), "{users}");
    assert_eq!(users["errors"], 0);
    assert_eq!(users["statuses"]["200"], n);
    let p50 = users["latency"]["p50"].as_f64().unwrap();
    assert!((0.045..1.0).contains(&p50), "{users}");
    assert_eq!(users["peak_vus"], 4);
    let ramp = result(&show, "ramp");
    // 5 is the peak for a moment only: a stalled controller may sample 4 at best.
    assert!((4..=5).contains(&ramp["peak_vus"].as_u64().unwrap()), "{ramp}");
    assert!(ramp["requests"].as_u64().unwrap() > 0);
    let rate = result(&show, "rate");
    // 40 a second for 2 s, each answered in 20 ms: 80 due, none dropped (a stalled machine may
    // reach the end before the last few are due).
    assert!((60..=80).contains(&rate["requests"].as_u64().unwrap()), "{rate}");
    assert_eq!(rate["dropped"], 0);
    let crossed = result(&show, "crossed");
    let slow = crossed["slow"].as_str().unwrap();
    assert!(slow.contains("crossed its thresholds: p95 ") && slow.contains("> 20ms"), "{slow}");
    let failing = crossed["failing"].as_str().unwrap();
    assert!(failing.contains("error_rate 100.00% > 1.00% (status 500 Internal Server Error)"), "{failing}");
    let bad = result(&show, "bad");
    let b = |k: &str| bad[k].as_str().unwrap().to_string();
    assert!(b("retries").contains("`retries` has no place in a load test"), "{}", b("retries"));
    assert!(b("two").contains("give one of stages"), "{}", b("two"));
    assert!(b("no_duration").contains("vus needs a duration"), "{}", b("no_duration"));
    assert!(b("too_many").contains("between 1 and 10000 virtual users"), "{}", b("too_many"));
    assert!(b("in_request").contains("`vus` belongs to http.load"), "{}", b("in_request"));
    assert!(r.stdout.contains(" VUs, ") && r.stdout.contains(" req/s, "), "no progress lines: {}", r.stdout);

    // A dry run sends no load at all and says what it would have sent.
    let before = srv.recorded().len();
    env.write(
        "dry.lua",
        &format!(
            "runbook {{ name = \"load-dry\" }}\nstep(\"load\", function() return http.load{{ url = \"{}\", vus = 2, duration = \"1s\" }} end)\n",
            srv.url("/ok")
        ),
    );
    let dry = env.run(&["run", "dry.lua", "--dry-run"]);
    dry.assert_code(0);
    assert_eq!(srv.recorded().len(), before, "a dry run sent load");
    assert!(dry.all().contains(&format!("load test: GET {} for 1.0s", srv.url("/ok"))), "{}", dry.all());
}

/// Virtual users send over connections of their own (reopened when the server closes them,
/// as this fixture does after every answer), and the request is the one written: method, query,
/// headers, a JSON body, a secret bearer; a redirect is followed as any request's is.
#[test]
fn a_load_tests_virtual_users_send_the_request_as_written_and_follow_redirects() {
    let env = Env::new();
    let srv = HttpServer::start();
    env.write(
        "rb.lua",
        &format!(
            r#"runbook {{ name = "load-request" }}
step("post", function()
  return http.load{{ method = "POST", url = "{base}/echo", query = {{ page = "2" }}, headers = {{ ["X-Run"] = "load" }},
                     bearer = secret("LOAD_TOKEN"), json = {{ n = 1 }}, vus = 2, duration = "1s" }}
end)
step("redirected", function()
  return http.load{{ url = "{base}/redirect/1", vus = 1, duration = "500ms" }}
end)
"#,
            base = srv.url("")
        ),
    );
    let token = "load-token-93e1";
    let r = env.run_env(&["run", "rb.lua"], &[("LOAD_TOKEN", token)]);
    r.assert_code(0);
    let show = env.show("last");
    let post = result(&show, "post");
    let n = post["requests"].as_u64().unwrap();
    assert!(n >= 10, "{post}");
    assert_eq!(post["errors"], 0, "{post}");
    let sent: Vec<_> = srv.recorded().into_iter().filter(|q| q.method == "POST").collect();
    assert_eq!(sent.len() as u64, n, "every request reached the server once");
    for q in &sent {
        assert_eq!((q.path.as_str(), q.query.as_str()), ("/echo", "page=2"));
        let header = |k: &str| q.headers.iter().find(|(h, _)| h == k).map(|(_, v)| v.clone()).unwrap_or_default();
        assert_eq!(header("x-run"), "load");
        assert_eq!(header("authorization"), format!("Bearer {token}"));
        assert_eq!(header("content-type"), "application/json");
        assert!(header("user-agent").starts_with("runbook/"), "{:?}", q.headers);
        assert_eq!(q.body, br#"{"n":1}"#);
    }
    let redirected = result(&show, "redirected");
    assert_eq!(redirected["errors"], 0, "{redirected}");
    let answered = redirected["statuses"]["200"].as_u64().unwrap();
    assert!(answered >= 1, "{redirected}");
    assert!(srv.recorded().iter().any(|q| q.path == "/echo" && q.method == "GET"), "the redirect was not followed");
    assert!(!r.all().contains(token) && !show.to_string().contains(token), "the token was shown");
}
