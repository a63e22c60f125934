//! `runbook serve` over HTTP, as an attacker and as a team would use it: every route refused
//! without an identity or with the wrong role, CSRF, approval links forged, replayed and
//! expired, secrets searched in every answer, injection through names and logs, login brute
//! force; and the whole flow on both journals with workers in other processes.
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::Child;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::harness::{Env, BIN};

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request on its own connection, headers exactly as given.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Resp {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the console");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let chunked = text.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(body) } else { body.to_string() };
    Resp { status, headers, body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Password hashes, made once by the binary itself (`runbook serve --hash-password`).
pub fn hash(password: &str) -> String {
    static CACHE: OnceLock<std::sync::Mutex<BTreeMap<String, String>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(h) = cache.lock().unwrap().get(password) {
        return h.clone();
    }
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--hash-password"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let h = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(h.starts_with("$argon2id$"), "{h}");
    cache.lock().unwrap().insert(password.into(), h.clone());
    h
}

/// The team of these tests: alice operates, bob and carol approve (group dba), vic only views,
/// and a bot holds an API token with the operator role.
pub const BOT_TOKEN: &str = "rbk_test-token-of-the-deploy-bot-0123456789";

pub fn team_config(extra: &str) -> String {
    let token_hash = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(BOT_TOKEN.as_bytes());
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    format!(
        r#"
[serve]
runbooks = ["runbooks"]
public_url = "http://127.0.0.1"
{extra}
[serve.users.alice]
password_hash = "{a}"
roles = ["operator"]
[serve.users.bob]
password_hash = "{b}"
roles = ["viewer"]
groups = ["dba"]
[serve.users.carol]
password_hash = "{b}"
groups = ["dba"]
[serve.users.dora]
password_hash = "{b}"
roles = ["operator"]
groups = ["dba"]
[serve.users.vic]
password_hash = "{b}"
roles = ["viewer"]
[serve.users.bot]
roles = ["operator"]
tokens = ["sha256:{token_hash}"]
[serve.groups.dba]
roles = ["viewer", "approver:gated*"]
"#,
        a = hash("alice-password"),
        b = hash("approver-password"),
    )
}

pub const GATED: &str = r#"runbook {
  name = "gated",
  description = "Two steps around a gate",
  params = {
    target = { type = "string", default = "db1", description = "the database" },
    token = { type = "secret", env = "GATED_TOKEN", required = false },
  },
}
step("before", function() exec{shell = "echo before >> ledger"} end)
approve("Drop the old tables?", { approvers = { "group:dba" } })
step("after", function() exec{shell = "echo after >> ledger"} end)
"#;

pub struct Console {
    pub port: u16,
    child: Child,
    pub log: std::path::PathBuf,
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Console {
    /// `runbook serve` in `env` on a free port, ready when it says so.
    pub fn start(env: &Env, extra_args: &[&str], vars: &[(&str, &str)]) -> Console {
        let port = crate::servers::free_port();
        let listen = format!("127.0.0.1:{port}");
        let log = env.path("serve.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = env.cmd(&["serve", "--listen", &listen]);
        cmd.args(extra_args).stdout(file.try_clone().unwrap()).stderr(file);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start runbook serve");
        let c = Console { port, child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&c.log).unwrap_or_default().contains("runbook console on") {
            assert!(
                Instant::now() < deadline,
                "the console did not start:\n{}",
                std::fs::read_to_string(&c.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    pub fn get(&self, path: &str, session: Option<&Session>) -> Resp {
        let cookie = session.map(|s| format!("runbook_session={}", s.cookie));
        let mut h: Vec<(&str, &str)> = vec![];
        if let Some(c) = &cookie {
            h.push(("Cookie", c));
        }
        http(self.port, "GET", path, &h, None)
    }

    pub fn post_form(&self, path: &str, session: Option<&Session>, pairs: &[(&str, &str)]) -> Resp {
        let cookie = session.map(|s| format!("runbook_session={}", s.cookie));
        let mut h: Vec<(&str, &str)> = vec![("Content-Type", "application/x-www-form-urlencoded")];
        if let Some(c) = &cookie {
            h.push(("Cookie", c));
        }
        http(self.port, "POST", path, &h, Some(&form(pairs)))
    }

    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> Resp {
        let auth = format!("Bearer {BOT_TOKEN}");
        http(self.port, method, path, &[("Authorization", &auth), ("Content-Type", "application/json")], body)
    }

    pub fn login(&self, user: &str, password: &str) -> Session {
        let r = self.post_form("/login", None, &[("user", user), ("password", password)]);
        assert_eq!(r.status, 303, "login of {user}: {} {}", r.status, r.body);
        let cookie = r.header("set-cookie").expect("a session cookie");
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
        let value = cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_string();
        let page = self.get("/runs", Some(&Session { cookie: value.clone(), csrf: String::new() }));
        let csrf = page
            .body
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("a CSRF token on the page")
            .to_string();
        Session { cookie: value, csrf }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

/// Polls until `f` holds (a run moving on in a worker).
pub fn eventually(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn team_env(extra: &str) -> Env {
    let env = Env::new();
    env.write("runbook.toml", &team_config(extra));
    env.write("runbooks/gated.lua", GATED);
    env
}

fn enqueue_as(c: &Console, s: &Session) -> String {
    let r = c.post_form("/runbooks/gated/runs", Some(s), &[("csrf", &s.csrf), ("p.target", "db9")]);
    assert_eq!(r.status, 303, "{}", r.body);
    r.header("location").unwrap().trim_start_matches("/runs/").to_string()
}

fn status_of(c: &Console, id: &str) -> String {
    c.api("GET", &format!("/api/v1/runs/{id}"), None).json()["run"]["status"].as_str().unwrap_or("").to_string()
}

mod access {
    use super::*;

    #[test]
    fn every_route_refuses_a_caller_without_an_identity() {
        let env = team_env("");
        let c = Console::start(&env, &[], &[]);
        for path in [
            "/runs",
            "/runs/x",
            "/runs/x/timeline",
            "/runs/x/live",
            "/runbooks",
            "/runbooks/gated",
            "/queue",
            "/workers",
            "/schedules",
            "/sessions",
            "/sessions/x",
            "/audit",
            "/a/xyz",
        ] {
            let page = c.get(path, None);
            assert_eq!(page.status, 303, "{path}: {}", page.body);
            assert!(page.header("location").unwrap().starts_with("/login?next="), "{path}");
        }
        for path in [
            "/api/v1/runs",
            "/api/v1/runs/x",
            "/api/v1/runbooks",
            "/api/v1/queue",
            "/api/v1/workers",
            "/api/v1/schedules",
            "/api/v1/sessions",
            "/api/v1/audit",
            "/api/v1/me",
        ] {
            let api = c.get(path, None);
            assert_eq!(api.status, 401, "{path}: {}", api.body);
            assert!(!api.body.contains("gated"), "{path}");
        }
        for path in [
            "/runs/x/approve",
            "/runs/x/cancel",
            "/runs/x/resume",
            "/runbooks/gated/runs",
            "/schedules/s/unpause",
            "/api/v1/runs/x/approve",
            "/api/v1/runbooks/gated/runs",
        ] {
            let r = c.post_form(path, None, &[("decision", "approve")]);
            assert!(r.status == 303 || r.status == 401, "{path}: {}", r.status);
        }
        // A wrong token is refused, not taken as nobody.
        let r = http(c.port, "GET", "/api/v1/runs", &[("Authorization", "Bearer rbk_guess")], None);
        assert_eq!(r.status, 401);
        // Every answer, refusals included, carries the policy.
        let csp = c.get("/login", None);
        let policy = csp.header("content-security-policy").unwrap();
        assert!(policy.contains("default-src 'none'") && policy.contains("script-src 'self'"), "{policy}");
        assert_eq!(csp.header("x-frame-options"), Some("DENY"));
    }

    #[test]
    fn each_role_gets_what_it_may_do_and_a_403_for_the_rest() {
        let env = team_env("");
        let c = Console::start(&env, &[], &[]);
        let vic = c.login("vic", "approver-password");
        assert_eq!(c.get("/runs", Some(&vic)).status, 200);
        // A viewer cannot start, cancel or see the audit log.
        let r = c.post_form("/runbooks/gated/runs", Some(&vic), &[("csrf", &vic.csrf)]);
        assert_eq!(r.status, 403, "{}", r.body);
        assert_eq!(c.get("/audit", Some(&vic)).status, 403);
        // The operator starts it; a viewer cannot approve; the operator who asked cannot either.
        let alice = c.login("alice", "alice-password");
        let id = enqueue_as(&c, &alice);
        let r = c.post_form(&format!("/runs/{id}/cancel"), Some(&vic), &[("csrf", &vic.csrf)]);
        assert_eq!(r.status, 403);
        let worker = env.run(&["worker", "--until-empty"]);
        worker.assert_code(0);
        assert_eq!(status_of(&c, &id), "waiting_approval");
        let r =
            c.post_form(&format!("/runs/{id}/approve"), Some(&vic), &[("csrf", &vic.csrf), ("decision", "approve")]);
        assert_eq!(r.status, 403, "{}", r.body);
        let r = c.post_form(
            &format!("/runs/{id}/approve"),
            Some(&alice),
            &[("csrf", &alice.csrf), ("decision", "approve")],
        );
        assert_eq!(r.status, 403, "{}", r.body);
        assert!(r.body.contains("do not let you approve"), "{}", r.body);
        // The approver of group dba can.
        let bob = c.login("bob", "approver-password");
        let page = c.get(&format!("/runs/{id}"), Some(&bob));
        assert!(page.body.contains("id=\"approve\""), "{}", page.body);
        let r = c.post_form(
            &format!("/runs/{id}/approve"),
            Some(&bob),
            &[("csrf", &bob.csrf), ("decision", "approve"), ("comment", "ok")],
        );
        assert_eq!(r.status, 303, "{}", r.body);
        env.run(&["worker", "--until-empty"]).assert_code(0);
        assert_eq!(status_of(&c, &id), "succeeded");
        assert_eq!(env.read("ledger"), "before\nafter\n");
        let show = env.show(&id);
        let gate = Env::step(&show, "approve: Drop the old tables?");
        assert_eq!(gate["votes"][0]["via"], "web");
        assert_eq!(gate["votes"][0]["actor"], "bob");
        assert_eq!(show["user"], "alice", "the requester is the console user who started it");
    }

    #[test]
    fn the_requester_cannot_approve_their_own_run_even_as_an_approver() {
        let env = team_env("");
        let c = Console::start(&env, &[], &[]);
        // dora operates and approves: she starts the run, so the gate refuses her.
        let dora = c.login("dora", "approver-password");
        let id = enqueue_as(&c, &dora);
        env.run(&["worker", "--until-empty"]).assert_code(0);
        let page = c.get(&format!("/runs/{id}"), Some(&dora));
        assert!(page.body.contains("dora started this run and cannot approve it"), "{}", page.body);
        let r =
            c.post_form(&format!("/runs/{id}/approve"), Some(&dora), &[("csrf", &dora.csrf), ("decision", "approve")]);
        assert_eq!(r.status, 403, "{}", r.body);
        // The bot (operator, not approver) is refused; carol, an approver who did not ask, decides.
        let r = c.api("POST", &format!("/api/v1/runs/{id}/approve"), Some(r#"{"decision": "approve"}"#));
        assert_eq!(r.status, 403, "{}", r.body);
        let carol = c.login("carol", "approver-password");
        let r = c.post_form(
            &format!("/api/v1/runs/{id}/approve"),
            Some(&carol),
            &[("csrf", &carol.csrf), ("decision", "approve")],
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["outcome"], "approved");
        // Approving again after the gate passed is a conflict, not a second vote.
        let again = c.post_form(
            &format!("/api/v1/runs/{id}/approve"),
            Some(&carol),
            &[("csrf", &carol.csrf), ("decision", "approve")],
        );
        assert_eq!(again.status, 409, "{}", again.body);
        let gate = Env::step(&env.show(&id), "approve: Drop the old tables?").clone();
        assert_eq!(gate["votes"].as_array().unwrap().len(), 1, "{gate}");
    }
}

mod forgery {
    use super::*;

    #[test]
    fn a_state_change_without_the_sessions_csrf_token_or_from_another_site_is_refused() {
        let env = team_env("");
        let c = Console::start(&env, &[], &[]);
        let alice = c.login("alice", "alice-password");
        for token in ["", "wrong-token"] {
            let r = c.post_form("/runbooks/gated/runs", Some(&alice), &[("csrf", token)]);
            assert_eq!(r.status, 403, "{token}: {}", r.body);
        }
        // The API through a session needs the header; a JSON body without it is refused too.
        let cookie = format!("runbook_session={}", alice.cookie);
        let r = http(
            c.port,
            "POST",
            "/api/v1/runbooks/gated/runs",
            &[("Cookie", &cookie), ("Content-Type", "application/json")],
            Some("{}"),
        );
        assert_eq!(r.status, 403);
        let r = http(
            c.port,
            "POST",
            "/api/v1/runbooks/gated/runs",
            &[("Cookie", &cookie), ("Content-Type", "application/json"), ("X-CSRF-Token", &alice.csrf)],
            Some("{}"),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        // A form posted from another site, even with a valid token, is refused.
        let body = form(&[("csrf", &alice.csrf)]);
        let r = http(
            c.port,
            "POST",
            "/runbooks/gated/runs",
            &[
                ("Cookie", &cookie),
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Origin", "https://evil.example"),
            ],
            Some(&body),
        );
        assert_eq!(r.status, 403, "{}", r.body);
        // Nothing was queued by the refused requests: one run, from the accepted one.
        assert_eq!(c.api("GET", "/api/v1/queue", None).json()["items"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn an_approval_link_is_refused_when_forged_replayed_or_expired_and_never_approves_by_itself() {
        let env = team_env("");
        let c = Console::start(&env, &[], &[]);
        let alice = c.login("alice", "alice-password");
        let id = enqueue_as(&c, &alice);
        env.run(&["worker", "--until-empty"]).assert_code(0);
        // The key the console made, to sign links as a webhook would.
        let key = std::fs::read(env.path(".runbook/link.key")).expect("the link key");
        let meta = std::fs::metadata(env.path(".runbook/link.key")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let sign = |claims: serde_json::Value, key: &[u8]| -> String {
            use base64::Engine;
            use hmac::Mac;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let payload = b64.encode(claims.to_string());
            let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(key).unwrap();
            m.update(payload.as_bytes());
            format!("{payload}.{}", b64.encode(m.finalize().into_bytes()))
        };
        let future = chrono::Utc::now().timestamp() + 3600;
        let good =
            sign(serde_json::json!({"r": id, "g": "approve: Drop the old tables?", "e": future, "n": "nonce-1"}), &key);
        // Without a login the link leads to the login page, and approves nothing.
        let anon = c.get(&format!("/a/{good}"), None);
        assert_eq!(anon.status, 303);
        assert!(
            anon.header("location").unwrap().starts_with("/login?next=%2Fa%2F")
                || anon.header("location").unwrap().starts_with("/login?next=/a/")
        );
        assert_eq!(status_of(&c, &id), "waiting_approval");
        // An operator who is not an approver is refused even with a good link.
        assert_eq!(c.get(&format!("/a/{good}"), Some(&alice)).status, 403);
        let bob = c.login("bob", "approver-password");
        let opened = c.get(&format!("/a/{good}"), Some(&bob));
        assert_eq!(opened.status, 303, "{}", opened.body);
        assert_eq!(opened.header("location"), Some(format!("/runs/{id}#gate").as_str()));
        // It only pointed: the gate still waits for bob's decision.
        assert_eq!(status_of(&c, &id), "waiting_approval");
        // Replayed, forged (other key, altered run), expired: refused.
        assert_eq!(c.get(&format!("/a/{good}"), Some(&bob)).status, 410);
        let forged = sign(
            serde_json::json!({"r": id, "g": "x", "e": future, "n": "nonce-2"}),
            b"not the key not the key not the k",
        );
        assert_eq!(c.get(&format!("/a/{forged}"), Some(&bob)).status, 403);
        let (payload, sig) = good.split_once('.').unwrap();
        let altered = format!("{}x.{sig}", payload);
        assert_eq!(c.get(&format!("/a/{altered}"), Some(&bob)).status, 403);
        let expired = sign(serde_json::json!({"r": id, "g": "x", "e": 1000, "n": "nonce-3"}), &key);
        let r = c.get(&format!("/a/{expired}"), Some(&bob));
        assert_eq!(r.status, 403);
        assert!(r.body.contains("expired"), "{}", r.body);
    }

    #[test]
    fn login_attempts_are_limited_per_user_and_address() {
        let env = team_env("");
        let c = Console::start(&env, &[], &[]);
        for _ in 0..5 {
            let r = c.post_form("/login", None, &[("user", "alice"), ("password", "guess")]);
            assert_eq!(r.status, 401);
            assert!(r.header("set-cookie").is_none());
        }
        // The sixth, even with the right password, waits.
        let r = c.post_form("/login", None, &[("user", "alice"), ("password", "alice-password")]);
        assert_eq!(r.status, 429, "{}", r.body);
        assert!(r.header("retry-after").is_some());
        // Someone else behind the same address (a proxy) is not locked out by alice's typos.
        let r = c.post_form("/login", None, &[("user", "bob"), ("password", "approver-password")]);
        assert_eq!(r.status, 303, "{}", r.body);
        // Spreading guesses over addresses: 20 per user, then wait (each address is trusted
        // here: the test speaks from loopback, as a proxy in front would).
        let mut last = 0;
        for i in 0..20 {
            let xff = format!("10.0.0.{i}");
            let body = form(&[("user", "carol"), ("password", "guess")]);
            last = http(
                c.port,
                "POST",
                "/login",
                &[("Content-Type", "application/x-www-form-urlencoded"), ("X-Forwarded-For", &xff)],
                Some(&body),
            )
            .status;
        }
        assert_eq!(last, 401);
        let body = form(&[("user", "carol"), ("password", "approver-password")]);
        let r = http(
            c.port,
            "POST",
            "/login",
            &[("Content-Type", "application/x-www-form-urlencoded"), ("X-Forwarded-For", "10.0.1.1")],
            Some(&body),
        );
        assert_eq!(r.status, 429, "{}", r.body);
    }
}

mod exposure {
    use super::*;

    #[test]
    fn a_secret_params_value_appears_in_no_page_and_no_api_answer() {
        let secret = "s3cr3t-VALUE-of-the-token-91b7";
        let env = team_env("");
        // The worker gets the secret from its environment; the run uses it in a command and logs it.
        env.write(
            "runbooks/leaky.lua",
            r#"runbook { name = "leaky", params = { token = { type = "secret", env = "LEAKY_TOKEN" } } }
step("use", function()
  log.info("token is " .. params.token)
  exec{shell = "echo the token is $T", env = { T = params.token }}
  return { t = params.token }
end)
"#,
        );
        let c = Console::start(&env, &[], &[]);
        let r = c.api("POST", "/api/v1/runbooks/leaky/runs", Some("{}"));
        assert_eq!(r.status, 201, "{}", r.body);
        let id = r.json()["run_id"].as_str().unwrap().to_string();
        // A secret given in the form is refused: it would be stored in the journal.
        let r =
            c.api("POST", "/api/v1/runbooks/leaky/runs", Some(&format!(r#"{{"params": {{"token": "{secret}"}}}}"#)));
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(!r.body.contains(secret));
        env.run_env(&["worker", "--until-empty"], &[("LEAKY_TOKEN", secret)]).assert_code(0);
        assert_eq!(status_of(&c, &id), "succeeded");
        let alice = c.login("alice", "alice-password");
        for path in [
            format!("/runs/{id}"),
            format!("/runs/{id}/timeline"),
            format!("/api/v1/runs/{id}"),
            "/runs".into(),
            "/api/v1/runs".into(),
            "/runbooks/leaky".into(),
            "/api/v1/runbooks".into(),
            "/queue".into(),
            "/workers".into(),
            "/sessions".into(),
        ] {
            let r = c.get(&path, Some(&alice));
            assert_eq!(r.status, 200, "{path}");
            assert!(!r.body.contains(secret), "{path} shows the secret");
        }
        let page = c.get(&format!("/runs/{id}"), Some(&alice));
        assert!(page.body.contains("&lt;secret:token&gt;") || page.body.contains("&lt;secret"), "{}", page.body);
    }

    #[test]
    fn html_in_runbook_names_step_names_params_and_logs_is_escaped() {
        let env = team_env("");
        env.write(
            "runbooks/evil.lua",
            r#"runbook { name = "evil<script>alert(1)</script>", description = "<img src=x onerror=alert(2)>",
  params = { who = { type = "string", default = "x" } } }
step("<b onmouseover=alert(3)>step</b>", function() log.info("<script>alert(4)</script>") end)
"#,
        );
        let c = Console::start(&env, &[], &[]);
        let alice = c.login("alice", "alice-password");
        let list = c.get("/runbooks", Some(&alice));
        assert!(!list.body.contains("<script>alert(1)"), "{}", list.body);
        assert!(list.body.contains("&lt;script&gt;alert(1)"), "{}", list.body);
        let r = c.api(
            "POST",
            "/api/v1/runbooks/evil%3Cscript%3Ealert(1)%3C%2Fscript%3E/runs",
            Some(r#"{"params": {"who": "\"><script>alert(5)</script>"}}"#),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let id = r.json()["run_id"].as_str().unwrap().to_string();
        env.run(&["worker", "--until-empty"]).assert_code(0);
        let page = c.get(&format!("/runs/{id}"), Some(&alice));
        for raw in ["<script>alert(", "<b onmouseover", "<img src=x"] {
            assert!(!page.body.contains(raw), "{raw} unescaped in:\n{}", page.body);
        }
        assert!(page.body.contains("&lt;b onmouseover=alert(3)&gt;step"), "{}", page.body);
        // And no inline script could run anyway: the policy allows only /static/app.js.
        assert!(page.header("content-security-policy").unwrap().contains("script-src 'self'"));
        assert_eq!(page.body.matches("<script").count(), 1, "only the app's own script tag");
    }
}

mod setup {
    use super::*;

    #[test]
    fn the_console_refuses_to_start_unsafely() {
        let env = team_env("");
        // auth = "none" off loopback, plain HTTP off loopback, nobody able to log in.
        let r = env.run(&["serve", "--listen", "0.0.0.0:0"]);
        r.assert_code(2);
        assert!(r.stderr.contains("not a loopback address: give --tls-cert and --tls-key"), "{}", r.stderr);
        env.write("runbook.toml", "[serve]\nauth = \"none\"\n");
        let r = env.run(&["serve", "--listen", "0.0.0.0:0", "--allow-plain-http"]);
        r.assert_code(2);
        assert!(r.stderr.contains("only allowed on a loopback address"), "{}", r.stderr);
        env.write("runbook.toml", "[serve]\n[serve.users.a]\nroles = [\"admin\"]\n");
        let r = env.run(&["serve", "--listen", "127.0.0.1:0"]);
        r.assert_code(2);
        assert!(r.stderr.contains("no user who can log in"), "{}", r.stderr);
        env.write("runbook.toml", "[serve]\n[serve.users.a]\ntokens = [\"rbk_plaintext\"]\n");
        let r = env.run(&["serve", "--listen", "127.0.0.1:0"]);
        r.assert_code(2);
        assert!(r.stderr.contains("never the token"), "{}", r.stderr);
        env.write("runbook.toml", "[serve]\n[serve.users.a]\nroles = [\"superuser\"]\npassword_hash = \"x\"\n");
        let r = env.run(&["serve", "--listen", "127.0.0.1:0"]);
        r.assert_code(2);
        assert!(r.stderr.contains("unknown role 'superuser'"), "{}", r.stderr);
    }

    #[test]
    fn over_tls_the_console_serves_https_with_secure_cookies() {
        let env = team_env("");
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        env.write("cert.pem", &cert.cert.pem());
        env.write("key.pem", &cert.signing_key.serialize_pem());
        let c = Console::start(&env, &["--tls-cert", "cert.pem", "--tls-key", "key.pem"], &[]);
        assert!(c.log().contains("runbook console on https://"), "{}", c.log());
        // Plain HTTP to the TLS port gets no page.
        let r = http(c.port, "GET", "/login", &[], None);
        assert_ne!(r.status, 200);
        // Over TLS (curl, trusting the test's certificate): a login sets a Secure cookie.
        let out = std::process::Command::new("curl")
            .args(["-s", "-i", "--cacert"])
            .arg(env.path("cert.pem"))
            .args(["-d", "user=alice&password=alice-password", &format!("https://127.0.0.1:{}/login", c.port)])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("HTTP/1.1 303") || text.contains("HTTP/2 303"), "{text}");
        let cookie = text.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie")).unwrap_or_default();
        assert!(cookie.contains("; Secure") && cookie.contains("HttpOnly"), "{cookie}");
    }
}

mod journals {
    use super::*;

    #[test]
    fn on_postgresql_with_workers_in_other_processes_a_run_started_in_the_console_is_approved_and_finished() {
        let pg = crate::servers::postgres();
        let url = pg.fresh_database("console");
        let env = team_env("");
        let vars = [("RUNBOOK_STATE", url.as_str())];
        let c = Console::start(&env, &[], &vars);
        let alice = c.login("alice", "alice-password");
        let id = enqueue_as(&c, &alice);
        // Two workers in other processes share the journal; one takes the run to its gate.
        let mut w1 = env.cmd(&["worker", "--poll", "100ms"]);
        w1.env("RUNBOOK_STATE", &url);
        let mut w2 = env.cmd(&["worker", "--poll", "100ms"]);
        w2.env("RUNBOOK_STATE", &url);
        let mut w1 = w1.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
        let mut w2 = w2.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
        eventually("the gate", 60, || status_of(&c, &id) == "waiting_approval");
        let bob = c.login("bob", "approver-password");
        let r =
            c.post_form(&format!("/runs/{id}/approve"), Some(&bob), &[("csrf", &bob.csrf), ("decision", "approve")]);
        assert_eq!(r.status, 303, "{}", r.body);
        eventually("the run to finish", 60, || status_of(&c, &id) == "succeeded");
        let _ = w1.kill();
        let _ = w2.kill();
        let _ = w1.wait();
        let _ = w2.wait();
        assert_eq!(env.read("ledger"), "before\nafter\n");
        let audit = pg.query(&url, "SELECT action || ':' || actor FROM audit ORDER BY at");
        assert!(audit.contains("enqueue:alice") && audit.contains("approve:bob"), "{audit}");
    }

    #[test]
    fn with_its_own_workers_the_console_runs_what_it_starts_on_sqlite() {
        let env = team_env("");
        let c = Console::start(&env, &["--workers", "1"], &[]);
        let alice = c.login("alice", "alice-password");
        let id = enqueue_as(&c, &alice);
        eventually("the gate", 60, || status_of(&c, &id) == "waiting_approval");
        let carol = c.login("carol", "approver-password");
        let r = c.post_form(
            &format!("/runs/{id}/approve"),
            Some(&carol),
            &[("csrf", &carol.csrf), ("decision", "reject"), ("comment", "not today")],
        );
        assert_eq!(r.status, 303, "{}", r.body);
        eventually("the cancel", 30, || status_of(&c, &id) == "cancelled");
        assert_eq!(env.read("ledger"), "before\n");
        // The live stream of an ended run says so and closes.
        let live = c.get(&format!("/runs/{id}/live"), Some(&alice));
        assert_eq!(live.status, 200);
        assert!(live.body.contains("event: end"), "{}", live.body);
    }
}

mod operations {
    use super::*;

    #[test]
    fn an_operator_cancels_a_queued_run_and_has_a_failed_one_resumed_by_a_worker_through_the_api() {
        let env = team_env("");
        env.write(
            "runbooks/flaky.lua",
            r#"runbook { name = "flaky" }
step("once broken", function()
  local r = exec{shell = "test -f fixed || { touch fixed; exit 1; }", check = false}
  if r.code ~= 0 then error("broken the first time") end
end)
"#,
        );
        let c = Console::start(&env, &[], &[]);
        // A bare POST (no body, no Content-Type), as `curl -X POST` sends it.
        let queued =
            c.api("POST", "/api/v1/runbooks/flaky/runs", Some("{}")).json()["run_id"].as_str().unwrap().to_string();
        let auth = format!("Bearer {BOT_TOKEN}");
        let r = http(c.port, "POST", &format!("/api/v1/runs/{queued}/cancel"), &[("Authorization", &auth)], None);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(status_of(&c, &queued), "cancelled");
        let r = http(c.port, "POST", &format!("/api/v1/runs/{queued}/cancel"), &[("Authorization", &auth)], None);
        assert_eq!(r.status, 409, "an ended run: {}", r.body);

        let id =
            c.api("POST", "/api/v1/runbooks/flaky/runs", Some("{}")).json()["run_id"].as_str().unwrap().to_string();
        env.run(&["worker", "--until-empty"]).assert_code(0);
        assert_eq!(status_of(&c, &id), "failed");
        let r = http(c.port, "POST", &format!("/api/v1/runs/{id}/resume"), &[("Authorization", &auth)], None);
        assert_eq!(r.status, 200, "{}", r.body);
        env.run(&["worker", "--until-empty"]).assert_code(0);
        assert_eq!(status_of(&c, &id), "succeeded");
        // Both actions are in the audit log, with who and how.
        let db = env.journal_path();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let log: Vec<String> = rt.block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.unwrap();
            sqlx::query_scalar("SELECT action || ' ' || actor || ' ' || remote FROM audit ORDER BY at")
                .fetch_all(&mut conn)
                .await
                .unwrap()
        });
        let log = log.join("\n");
        assert!(log.contains("cancel bot 127.0.0.1 (token)") && log.contains("resume bot 127.0.0.1 (token)"), "{log}");
    }
}

mod skipping {
    use super::*;

    #[test]
    fn an_operator_skips_a_failed_step_with_a_reason_and_a_worker_goes_on_past_it() {
        let env = team_env("");
        env.write(
            "runbooks/broken.lua",
            r#"runbook { name = "broken" }
step("warm cache", function() error("the cache host is gone") end)
step("serve", function() exec{shell = "echo served >> ledger"} end)
"#,
        );
        let c = Console::start(&env, &[], &[]);
        let id =
            c.api("POST", "/api/v1/runbooks/broken/runs", Some("{}")).json()["run_id"].as_str().unwrap().to_string();
        env.run(&["worker", "--until-empty"]).assert_code(0);
        assert_eq!(status_of(&c, &id), "failed");
        let alice = c.login("alice", "alice-password");
        let page = c.get(&format!("/runs/{id}"), Some(&alice));
        assert!(
            page.body.contains("action=\"/runs/") && page.body.contains("/skip\""),
            "a skip form on the failed step"
        );
        // Without a reason, or a step that did not fail: refused.
        let none = c.api("POST", &format!("/api/v1/runs/{id}/skip"), Some(r#"{"step": "warm cache"}"#));
        assert_eq!(none.status, 400, "{}", none.body);
        let wrong = c.api("POST", &format!("/api/v1/runs/{id}/skip"), Some(r#"{"step": "serve", "reason": "x"}"#));
        assert_eq!(wrong.status, 409, "{}", wrong.body);
        let r = c.api(
            "POST",
            &format!("/api/v1/runs/{id}/skip"),
            Some(r#"{"step": "warm cache", "reason": "cache is optional tonight"}"#),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let r = c.api("POST", &format!("/api/v1/runs/{id}/resume"), Some("{}"));
        assert_eq!(r.status, 200, "{}", r.body);
        env.run(&["worker", "--until-empty"]).assert_code(0);
        assert_eq!(status_of(&c, &id), "succeeded");
        assert_eq!(env.read("ledger"), "served\n");
        let step = Env::step(&env.show(&id), "warm cache").clone();
        assert_eq!(step["status"], "skipped");
        assert_eq!(step["actor"], "bot");
        assert!(step["error"].as_str().unwrap().contains("cache is optional tonight"), "{step}");
    }
}

mod hardening {
    use super::*;

    #[test]
    fn a_request_naming_another_host_or_a_login_sending_people_elsewhere_goes_nowhere() {
        let env = team_env("");
        let c = Console::start(&env, &[], &[]);
        // A page on evil.example rebound to 127.0.0.1 names its own host: refused.
        let auth = format!("Bearer {BOT_TOKEN}");
        let r = http(c.port, "GET", "/api/v1/runs", &[("Host", "evil.example:8080"), ("Authorization", &auth)], None);
        assert_eq!(r.status, 421, "{}", r.body);
        // `next` that a browser would turn into another site is dropped.
        for next in ["//evil.example", "/\t/evil.example", "https://evil.example", "/\\evil.example"] {
            let r = c.post_form("/login", None, &[("user", "alice"), ("password", "alice-password"), ("next", next)]);
            assert_eq!(r.status, 303);
            assert_eq!(r.header("location"), Some("/runs"), "{next:?}");
        }
    }

    #[test]
    fn in_proxy_mode_only_the_trusted_proxy_may_name_the_user() {
        let env = team_env("auth = \"proxy\"\nproxy_header = \"X-Forwarded-User\"");
        let c = Console::start(&env, &[], &[]);
        // From loopback (the proxy beside it): the header is the user.
        let r = http(c.port, "GET", "/api/v1/me", &[("X-Forwarded-User", "bob")], None);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["name"], "bob");
        // A user the console does not know is refused, not made up.
        let r = http(c.port, "GET", "/api/v1/me", &[("X-Forwarded-User", "mallory")], None);
        assert_eq!(r.status, 403);
        drop(c);
        // With a named proxy elsewhere, a loopback client is not it.
        env.write("runbook.toml", &team_config("auth = \"proxy\"\ntrusted_proxies = [\"10.9.9.9\"]"));
        let c = Console::start(&env, &[], &[]);
        let r = http(c.port, "GET", "/api/v1/me", &[("X-Forwarded-User", "bob")], None);
        assert_eq!(r.status, 403, "{}", r.body);
        drop(c);
        // Off loopback without trusted_proxies the console does not start.
        env.write("runbook.toml", &team_config("auth = \"proxy\"\nallow_plain_http = true"));
        let r = env.run(&["serve", "--listen", "0.0.0.0:0"]);
        r.assert_code(2);
        assert!(r.stderr.contains("trusted_proxies"), "{}", r.stderr);
    }

    #[test]
    fn whoever_resumes_or_starts_a_run_in_the_console_cannot_approve_its_gate_policy_or_not() {
        let env = team_env("");
        env.write(
            "runbooks/gated-flaky.lua",
            r#"runbook { name = "gated-flaky" }
step("once broken", function()
  local r = exec{shell = "test -f fixed || { touch fixed; exit 1; }", check = false}
  if r.code ~= 0 then error("broken the first time") end
end)
approve("Go on?")
step("after", function() exec{shell = "echo after >> ledger"} end)
"#,
        );
        let c = Console::start(&env, &[], &[]);
        // The bot starts it; it fails; dora (operator and approver) has a worker resume it.
        let id = c.api("POST", "/api/v1/runbooks/gated-flaky/runs", Some("{}")).json()["run_id"]
            .as_str()
            .unwrap()
            .to_string();
        env.run(&["worker", "--until-empty"]).assert_code(0);
        assert_eq!(status_of(&c, &id), "failed");
        let dora = c.login("dora", "approver-password");
        let r = c.post_form(&format!("/runs/{id}/resume"), Some(&dora), &[("csrf", &dora.csrf)]);
        assert_eq!(r.status, 303, "{}", r.body);
        env.run(&["worker", "--until-empty"]).assert_code(0);
        assert_eq!(status_of(&c, &id), "waiting_approval");
        // A gate without a policy, in the console: still not by who asked for the run to go on.
        let r =
            c.post_form(&format!("/runs/{id}/approve"), Some(&dora), &[("csrf", &dora.csrf), ("decision", "approve")]);
        assert_eq!(r.status, 403, "{}", r.body);
        assert!(r.body.contains("dora resumed this run and cannot approve it"), "{}", r.body);
        let carol = c.login("carol", "approver-password");
        let r = c.post_form(
            &format!("/runs/{id}/approve"),
            Some(&carol),
            &[("csrf", &carol.csrf), ("decision", "approve")],
        );
        assert_eq!(r.status, 303, "{}", r.body);
        env.run(&["worker", "--until-empty"]).assert_code(0);
        assert_eq!(status_of(&c, &id), "succeeded");
        // A person's own `runbook run` is not the console's to hand to a worker.
        env.write("mine.lua", "runbook { name = \"mine\" }\nstep(\"x\", function() error(\"no\") end)\n");
        env.run(&["run", "mine.lua"]).assert_code(1);
        let mine = env.show("last")["run_id"].as_str().unwrap().to_string();
        let r = c.post_form(&format!("/runs/{mine}/resume"), Some(&dora), &[("csrf", &dora.csrf)]);
        assert_eq!(r.status, 409, "{}", r.body);
        assert!(r.body.contains("it is theirs to resume"), "{}", r.body);
    }
}
