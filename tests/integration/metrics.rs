//! `metrics`: Prometheus' query API against Debian's real Prometheus, scraping a fixture
//! service: instant and range queries, one value or none, PromQL errors, and credentials that
//! reach the server but nothing else.
use crate::fixtures::HttpServer;
use crate::harness::Env;
use crate::servers::prometheus;

#[test]
fn prometheus_queries_read_a_scraped_service_and_say_clearly_what_went_wrong() {
    let env = Env::new();
    let service = HttpServer::start();
    let prom = prometheus(&[service.target()]);
    env.write(
        "rb.lua",
        r#"runbook { name = "metrics" }
local prom = metrics.prometheus(env("PROM_URL"))
step("ready", function()
  for i = 1, 240 do
    if prom:value('up{job="app"}') == 1 and prom:value('app_requests_total{status="500"}') then return true end
    sleep("250ms")
  end
  fail("Prometheus never scraped the service")
end)
step("numbers", function()
  local by_status = {}
  for _, s in ipairs(prom:query('sum by (status) (app_requests_total)')) do by_status[s.labels.status] = s.value end
  local range = prom:range('up{job="app"}', { last = "20s", step = "1s" })
  local points = range[1].values
  local ordered = #points >= 1
  for i = 2, #points do ordered = ordered and points[i - 1][1] < points[i][1] end
  return {
    error_rate = prom:value('sum(app_requests_total{status=~"5.."}) / sum(app_requests_total)'),
    by_status = by_status,
    p95 = prom:value('histogram_quantile(0.95, sum by (le) (app_latency_seconds_bucket))'),
    no_data = prom:value('app_requests_total{status="418"}') == nil,
    empty = #prom:query('app_requests_total{status="418"}'),
    scalar = prom:value('scalar(vector(2)) * 21'),
    series = #range, last_up = points[#points][2], ordered = ordered,
    at_time = math.floor(prom:query('vector(1)', { at = 1700000000 })[1].time),
    shown = tostring(prom):match("^prometheus http://127.0.0.1:%d+/$") ~= nil,
    nan_is_no_data = prom:value('vector(0) / vector(0)') == nil,
    by_stop = (function()
      local t = prom:value('time()')
      local r = prom:range('up{job="app"}', { start = t - 10, stop = t, step = "1s" })
      return #r == 1 and #r[1].values >= 1
    end)(),
  }
end)
step("errors", function()
  local function err(f) local ok, e = pcall(f); assert(not ok, "expected an error"); return tostring(e) end
  return {
    syntax = err(function() return prom:value('sum(rate(app_requests_total[5m])') end),
    many = err(function() return prom:value('app_requests_total') end),
    not_api = err(function() return metrics.prometheus(env("SERVICE_URL"), { token = secret("PROM_TOKEN") }):value("up") end),
    unknown = err(function() return metrics.prometheus(env("PROM_URL"), { tokn = "x" }) end),
    half_auth = err(function() return metrics.prometheus(env("PROM_URL"), { user = "u" }) end),
    range = err(function() return prom:range("up", { last = "30d", step = "1s" }) end),
    infinite = err(function() return prom:range("up", { start = -math.huge }) end),
    both_auth = err(function() return metrics.prometheus(env("PROM_URL"), { token = "t", headers = { Authorization = "x" } }) end),
    basic = err(function()
      return metrics.prometheus(env("SERVICE_URL"), { user = "ops", password = secret("PROM_PASSWORD") }):value("up")
    end),
  }
end)
"#,
    );
    let token = "prom-token-7c1f9e";
    let r = env.run_env(
        &["run", "rb.lua"],
        &[
            ("PROM_URL", prom.url.as_str()),
            ("SERVICE_URL", &service.url("/")),
            ("PROM_TOKEN", token),
            ("PROM_PASSWORD", "prom-pw-51d2"),
        ],
    );
    r.assert_code(0);
    let show = env.show("last");
    let numbers = &Env::step(&show, "numbers")["result"];
    assert_eq!(numbers["error_rate"], 0.05, "{numbers}");
    assert_eq!(numbers["by_status"], serde_json::json!({"200": 950, "500": 50}));
    let p95 = numbers["p95"].as_f64().unwrap();
    assert!((p95 - 4.0 / 3.0).abs() < 1e-9, "p95 {p95}");
    assert_eq!(numbers["no_data"], true);
    assert_eq!(numbers["empty"], 0);
    assert_eq!(numbers["scalar"], 42);
    assert_eq!(numbers["series"], 1);
    assert_eq!(numbers["last_up"], 1);
    assert_eq!(numbers["ordered"], true);
    assert_eq!(numbers["at_time"], 1_700_000_000);
    assert_eq!(numbers["shown"], true);
    assert_eq!(numbers["nan_is_no_data"], true);
    assert_eq!(numbers["by_stop"], true);
    let errors = &Env::step(&show, "errors")["result"];
    let e = |k: &str| errors[k].as_str().unwrap().to_string();
    assert!(
        e("syntax").contains("metrics: PromQL bad_data error in `sum(rate(app_requests_total[5m])`"),
        "{}",
        e("syntax")
    );
    assert!(e("many").contains("returned 2 series") && e("many").contains("status=\"200\""), "{}", e("many"));
    assert!(e("not_api").contains("did not answer as Prometheus' API does (404 Not Found)"), "{}", e("not_api"));
    assert!(e("unknown").contains("unknown key `tokn`") && e("unknown").contains("token"), "{}", e("unknown"));
    assert!(e("half_auth").contains("a user needs a password"), "{}", e("half_auth"));
    assert!(e("range").contains("at most 11,000"), "{}", e("range"));
    assert!(e("infinite").contains("must be Unix times"), "{}", e("infinite"));
    assert!(e("both_auth").contains("give one"), "{}", e("both_auth"));
    assert!(e("basic").contains("404 Not Found"), "{}", e("basic"));
    // The token reached the service, and nothing else.
    let sent = service.recorded();
    assert!(
        sent.iter().any(|q| q.path == "/api/v1/query"
            && q.headers.iter().any(|(k, v)| k == "authorization" && v == &format!("Bearer {token}"))),
        "the token was not sent"
    );
    // Basic auth: the header's base64 is a form of the password the redactor was never told
    // about, so finding it nowhere checks that the header itself is never shown or stored.
    let basic = "Basic b3BzOnByb20tcHctNTFkMg=="; // base64("ops:prom-pw-51d2")
    assert!(
        sent.iter().any(|q| q.headers.iter().any(|(k, v)| k == "authorization" && v == basic)),
        "no basic auth sent"
    );
    let journal = crate::harness::journal_bytes(&env.journal_path());
    for leaked in [token, "b3BzOnByb20tcHctNTFkMg==", "prom-pw-51d2"] {
        assert!(!r.all().contains(leaked) && !show.to_string().contains(leaked), "{leaked} shown");
        assert!(!crate::harness::contains_bytes(&journal, leaked.as_bytes()), "{leaked} in the journal");
    }
}

#[test]
fn a_stage_analysis_passes_fails_with_its_numbers_and_treats_no_data_as_its_own_outcome() {
    let env = Env::new();
    let service = HttpServer::start();
    let prom = prometheus(&[service.target()]);
    env.write(
        "rb.lua",
        r#"runbook { name = "analysis" }
local prom = metrics.prometheus(env("PROM_URL"))
local queries = {
  error_rate = 'sum(app_requests_total{status=~"5.."}) / sum(app_requests_total)',
  p95_latency = 'histogram_quantile(0.95, sum by (le) (app_latency_seconds_bucket))',
  teapots = 'sum(app_requests_total{status="418"})',
}
step("ready", function()
  for _ = 1, 240 do
    if prom:value('app_requests_total{status="500"}') then return true end
    sleep("250ms")
  end
  fail("Prometheus never scraped the service")
end)
step("passes", function()
  local r = metrics.analyze{ prometheus = prom, duration = "1500ms", interval = "250ms", queries = queries,
                             checks = { "error_rate < 10% for 1s", "p95_latency < 2s" } }
  return { outcome = r.outcome, rounds_ok = r.rounds >= 3, last = r.checks.error_rate.last, rule = r.checks.p95_latency.rule }
end)
step("fails", function()
  local ok, e = pcall(metrics.analyze, { prometheus = prom, duration = "10s", interval = "250ms", queries = queries,
                                        checks = { "p95_latency < 2s", "error_rate < 0.05 for 1s" } })
  return { ok = ok, error = tostring(e) }
end)
step("no data", function()
  local function with(policy)
    local ok, r = pcall(metrics.analyze, { prometheus = prom, duration = "600ms", interval = "200ms", queries = queries,
                                          checks = { "teapots < 1" }, on_no_data = policy })
    return ok and r.outcome or tostring(r)
  end
  -- Continue skips samples without data, but an analysis with none at all judged nothing.
  local n = 0
  local partly = metrics.analyze{ duration = "500ms", interval = "100ms", on_no_data = "continue",
    checks = { { name = "late", below = 1, fn = function() n = n + 1; if n < 3 then return nil end; return 0 end } } }
  return { pause = with("pause"), continue = with("continue"), fail = with(nil), partly = partly.outcome }
end)
step("function", function()
  local n = 0
  local r = metrics.analyze{ duration = "5s", interval = "100ms", raise = false,
    checks = { { name = "health", below = 1, fn = function() n = n + 1; return n < 3 and 0 or 1 end } } }
  return { outcome = r.outcome, verdict = r.checks.health.verdict, worst = r.checks.health.worst, calls = n }
end)
step("bad input", function()
  local function err(o) local ok, e = pcall(metrics.analyze, o); assert(not ok); return tostring(e) end
  return {
    hold = err{ prometheus = prom, duration = "1m", queries = queries, checks = { "error_rate < 1 for 5m" } },
    hold_equal = err{ prometheus = prom, duration = "5m", queries = queries, checks = { "error_rate < 1 for 5m" } },
    no_query = err{ prometheus = prom, duration = "1m", checks = { "error_rate < 1" } },
    empty = err{ prometheus = prom, duration = "1m", checks = {} },
    typo = err{ prometheus = prom, duration = "1m", queries = queries, checks = { "error_rate < 1" }, intervall = "1s" },
    rule = err{ prometheus = prom, duration = "1m", queries = queries, checks = { "error_rate 0.05" } },
    no_prom = err{ duration = "1m", queries = queries, checks = { "error_rate < 1" } },
  }
end)
"#,
    );
    let r = env.run_env(&["run", "rb.lua"], &[("PROM_URL", prom.url.as_str())]);
    r.assert_code(0);
    let show = env.show("last");
    let get = |s: &str| Env::step(&show, s)["result"].clone();
    assert_eq!(
        get("passes"),
        serde_json::json!({"outcome": "passed", "rounds_ok": true, "last": 0.05, "rule": "p95_latency < 2s"})
    );
    let fails = get("fails");
    assert_eq!(fails["ok"], false);
    let e = fails["error"].as_str().unwrap();
    assert!(
        e.contains("metrics: analysis failed after 1.")
            && e.contains("error_rate = 0.05 broke `error_rate < 0.05 for 1s` (worst 0.05)")
            && !e.contains("p95_latency ="),
        "{e}"
    );
    let no_data = get("no data");
    assert_eq!(no_data["pause"], "no_data");
    assert!(
        no_data["continue"].as_str().unwrap().contains("no data for teapots")
            && no_data["continue"].as_str().unwrap().contains("not one sample in the whole analysis"),
        "{no_data}"
    );
    assert_eq!(no_data["partly"], "passed");
    assert!(
        no_data["fail"].as_str().unwrap().contains("analysis inconclusive after")
            && no_data["fail"]
                .as_str()
                .unwrap()
                .contains("no data for teapots (`sum(app_requests_total{status=\"418\"})`)"),
        "{no_data}"
    );
    assert_eq!(get("function"), serde_json::json!({"outcome": "failed", "verdict": "failed", "worst": 1, "calls": 3}));
    let bad = get("bad input");
    let b = |k: &str| bad[k].as_str().unwrap().to_string();
    assert!(
        b("hold").contains("holds as long as the analysis (1m00s) or longer: it could hardly fail"),
        "{}",
        b("hold")
    );
    assert!(
        b("hold_equal").contains("`error_rate < 1 for 5m` holds as long as the analysis (5m00s)"),
        "{}",
        b("hold_equal")
    );
    assert!(b("no_query").contains("no query for 'error_rate'"), "{}", b("no_query"));
    assert!(b("empty").contains("would always pass"), "{}", b("empty"));
    assert!(b("typo").contains("unknown key `intervall`"), "{}", b("typo"));
    assert!(b("rule").contains("no comparison"), "{}", b("rule"));
    assert!(b("no_prom").contains("no prometheus"), "{}", b("no_prom"));
    // Each round was logged on one line with its numbers.
    assert!(r.stdout.contains("analysis ") && r.stdout.contains("error_rate=0.05 (< 0.05: breaking)"), "{}", r.stdout);
}
