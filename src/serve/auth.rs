//! Who is asking, and what they may do: a login session (cookie), an API token (Bearer), the
//! user named by a trusted reverse proxy, or, on a loopback listener with `auth = "none"`, the
//! local admin. Nobody else gets anything.
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use sha2::Digest;

use super::config::{AuthMode, ServeConfig};
use super::App;

/// A role, from `[serve.users.NAME] roles` and the roles of the user's groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Reads everything but secrets.
    Viewer,
    /// Enqueues, cancels and resumes runs.
    Operator,
    /// Decides approval gates of the runbooks matching the glob (within their policies).
    Approver(String),
    /// Everything.
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Result<Role, String> {
        match text {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            "approver" => Ok(Role::Approver("*".into())),
            _ => match text.strip_prefix("approver:") {
                Some(glob) if !glob.is_empty() => Ok(Role::Approver(glob.to_string())),
                _ => Err(format!("unknown role '{text}' (viewer, operator, approver, approver:GLOB, admin)")),
            },
        }
    }
}

/// How the caller proved who they are.
#[derive(Debug, Clone)]
pub enum Via {
    /// A login session; state changes need its CSRF token.
    Session {
        id: String,
        csrf: String,
    },
    Token,
    Proxy,
    /// `auth = "none"` on loopback.
    Local,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub roles: Vec<Role>,
    pub groups: Vec<String>,
    pub via: Via,
    /// The client's address, for the audit log.
    pub remote: String,
}

impl Identity {
    pub fn is_admin(&self) -> bool {
        self.roles.contains(&Role::Admin)
    }
    pub fn can_view(&self) -> bool {
        !self.roles.is_empty()
    }
    pub fn can_operate(&self) -> bool {
        self.is_admin() || self.roles.contains(&Role::Operator)
    }
    /// The approver role for this runbook (the gate's own policy is checked after).
    pub fn can_approve(&self, runbook: &str) -> bool {
        self.is_admin() || self.roles.iter().any(|r| matches!(r, Role::Approver(g) if glob(g, runbook)))
    }
    /// The CSRF token forms must carry, when the caller came with a session cookie.
    pub fn csrf(&self) -> &str {
        match &self.via {
            Via::Session { csrf, .. } => csrf,
            _ => "",
        }
    }
    /// A state change through a session must carry the session's CSRF token (a token or proxy
    /// caller sends no cookie a third-party page could ride on).
    pub fn check_csrf(&self, given: Option<&str>) -> Result<(), Box<Response>> {
        match &self.via {
            Via::Session { csrf, .. } => {
                let ok = given.is_some_and(|g| constant_time_eq(g.as_bytes(), csrf.as_bytes()));
                if ok {
                    Ok(())
                } else {
                    Err(Box::new(super::pages::error_page(
                        StatusCode::FORBIDDEN,
                        "the form's CSRF token is missing or wrong; reload the page",
                    )))
                }
            }
            _ => Ok(()),
        }
    }
    pub fn voter(&self) -> crate::approval::Voter {
        crate::approval::Voter { name: self.name.clone(), groups: self.groups.clone() }
    }
    pub fn via_name(&self) -> &'static str {
        match self.via {
            Via::Token => "api",
            // `auth = "none"`: whoever reaches the loopback port, as unverified as the CLI.
            Via::Local => "local",
            _ => "web",
        }
    }
}

/// `*` any run of characters, `?` one.
pub fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(&pattern.chars().collect::<Vec<_>>(), &text.chars().collect::<Vec<_>>())
}

/// Whether a proxy-mode connection comes from a trusted proxy: one of `trusted_proxies`, or,
/// when none is named, loopback (the console listens on loopback behind a local proxy).
pub fn trusted_proxy(config: &ServeConfig, ip: std::net::IpAddr) -> bool {
    // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d.
    let ip = ip.to_canonical();
    if config.trusted_proxies.is_empty() {
        return ip.is_loopback();
    }
    config.trusted_proxies.iter().any(|c| cidr_contains(c, ip).unwrap_or(false))
}

/// `trusted_proxies` entries must parse.
pub fn check_proxies(config: &ServeConfig) -> Result<(), String> {
    for c in &config.trusted_proxies {
        cidr_contains(c, std::net::IpAddr::from([0, 0, 0, 0]))
            .ok_or_else(|| format!("[serve] trusted_proxies: '{c}' is not an address or CIDR"))?;
    }
    Ok(())
}

fn cidr_contains(cidr: &str, ip: std::net::IpAddr) -> Option<bool> {
    use std::net::IpAddr;
    let (addr, bits) = match cidr.split_once('/') {
        Some((a, b)) => (a.parse::<IpAddr>().ok()?, Some(b.parse::<u32>().ok()?)),
        None => (cidr.parse::<IpAddr>().ok()?, None),
    };
    Some(match (addr, ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => {
            let bits = bits.unwrap_or(32);
            if bits > 32 {
                return None;
            }
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(net) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) => {
            let bits = bits.unwrap_or(128);
            if bits > 128 {
                return None;
            }
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(net) & mask == u128::from(ip) & mask
        }
        _ => false,
    })
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The people of `[serve]`: their roles (own and their groups'), and token hashes.
pub struct People {
    users: BTreeMap<String, super::config::User>,
    groups: BTreeMap<String, super::config::Group>,
    tokens: HashMap<String, String>,
    /// argon2 takes 19 MiB and tens of milliseconds per check: two at a time, the rest wait.
    hashing: tokio::sync::Semaphore,
}

impl People {
    pub fn new(config: &ServeConfig) -> Result<People, String> {
        let mut tokens = HashMap::new();
        for (name, u) in &config.users {
            for r in &u.roles {
                Role::parse(r).map_err(|e| format!("[serve.users.{name}] roles: {e}"))?;
            }
            for g in &u.groups {
                if !config.groups.contains_key(g) && !g.chars().all(|c| c.is_alphanumeric() || "-_.".contains(c)) {
                    return Err(format!("[serve.users.{name}] groups: '{g}' is not a group name"));
                }
            }
            if let Some(h) = &u.password_hash {
                argon2::PasswordHash::new(h).map_err(|e| {
                    format!("[serve.users.{name}] password_hash: not a hash from `runbook serve --hash-password` ({e})")
                })?;
            }
            for t in &u.tokens {
                let Some(hex) = t.strip_prefix("sha256:").filter(|h| h.len() == 64) else {
                    return Err(format!(
                        "[serve.users.{name}] tokens: give the token's hash as `runbook serve --new-token` prints it (sha256:...), never the token"
                    ));
                };
                tokens.insert(hex.to_ascii_lowercase(), name.clone());
            }
        }
        for (name, g) in &config.groups {
            for r in &g.roles {
                Role::parse(r).map_err(|e| format!("[serve.groups.{name}] roles: {e}"))?;
            }
        }
        Ok(People {
            users: config.users.clone(),
            groups: config.groups.clone(),
            tokens,
            hashing: tokio::sync::Semaphore::new(2),
        })
    }

    pub fn exists(&self, name: &str) -> bool {
        self.users.contains_key(name)
    }

    /// A known user's identity.
    pub fn identity(&self, name: &str, via: Via, remote: String) -> Option<Identity> {
        let u = self.users.get(name)?;
        let mut roles: Vec<Role> = u.roles.iter().filter_map(|r| Role::parse(r).ok()).collect();
        for g in &u.groups {
            if let Some(group) = self.groups.get(g) {
                roles.extend(group.roles.iter().filter_map(|r| Role::parse(r).ok()));
            }
        }
        Some(Identity { name: name.to_string(), roles, groups: u.groups.clone(), via, remote })
    }

    /// Checks a password (argon2id, off the async threads). An unknown user costs the same.
    pub async fn verify(&self, name: &str, password: &str) -> bool {
        const DUMMY: &str =
            "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Vn5P+0n0S1o8J3PMvYwqL6c1cTB0xXHkJMc5b5oXq2Y";
        let hash = self.users.get(name).and_then(|u| u.password_hash.clone());
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| DUMMY.to_string());
        let password = password.to_string();
        let Ok(_permit) = self.hashing.acquire().await else { return false };
        let ok = tokio::task::spawn_blocking(move || {
            use argon2::PasswordVerifier;
            argon2::PasswordHash::new(&hash)
                .map(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        ok && known
    }

    /// The user an API token belongs to.
    pub fn token_user(&self, token: &str) -> Option<&str> {
        let hex = hex(&sha2::Sha256::digest(token.as_bytes()));
        self.tokens.get(&hex).map(String::as_str)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn random_token(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// `runbook serve --hash-password`: an argon2id hash of a password.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(random_token(16).as_bytes()).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// `runbook serve --new-token`: a token, and the hash to put in runbook.toml.
pub fn new_token() -> (String, String) {
    let token = format!("rbk_{}", random_token(32));
    let hash = format!("sha256:{}", hex(&sha2::Sha256::digest(token.as_bytes())));
    (token, hash)
}

struct Session {
    user: String,
    csrf: String,
    expires: Instant,
}

/// Login sessions, in memory: a restart of the console logs everyone out.
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    pub lifetime: Duration,
}

impl Sessions {
    const PER_USER: usize = 20;

    pub fn new(lifetime: Duration) -> Sessions {
        Sessions { map: Mutex::new(HashMap::new()), lifetime }
    }
    pub fn create(&self, user: &str) -> String {
        let id = random_token(32);
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        // At most 20 sessions per person: logging in again and again ends the oldest.
        let mut mine: Vec<(String, Instant)> =
            map.iter().filter(|(_, s)| s.user == user).map(|(k, s)| (k.clone(), s.expires)).collect();
        if mine.len() >= Self::PER_USER {
            mine.sort_by_key(|(_, e)| *e);
            for (k, _) in mine.iter().take(mine.len() + 1 - Self::PER_USER) {
                map.remove(k);
            }
        }
        map.insert(id.clone(), Session { user: user.into(), csrf: random_token(24), expires: now + self.lifetime });
        id
    }
    fn get(&self, id: &str) -> Option<(String, String)> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id).filter(|s| s.expires > Instant::now()).map(|s| (s.user.clone(), s.csrf.clone()))
    }
    pub fn end(&self, id: &str) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

/// Failed logins in 5 minutes, per key: 5 for a user from one address (`pair:`), 20 for a user
/// from anywhere (`user:`), 50 from one address (`ip:`). Behind a proxy every client may share
/// an address, so one person's typos never lock out the rest, and a guesser spread over many
/// addresses still gets 20 tries per user.
#[derive(Default)]
pub struct Limiter {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Limiter {
    const WINDOW: Duration = Duration::from_secs(300);

    fn max(key: &str) -> usize {
        match key.split(':').next() {
            Some("pair") => 5,
            Some("user") => 20,
            _ => 50,
        }
    }

    /// The keys of one login attempt.
    pub fn keys(user: &str, ip: &str) -> Vec<String> {
        vec![format!("pair:{user}@{ip}"), format!("user:{user}"), format!("ip:{ip}")]
    }

    /// One attempt: refused (with the seconds to wait) when a key is over the limit, else
    /// counted as a failure at once, and forgiven by `succeeded`.
    pub fn attempt(&self, keys: &[String]) -> Result<(), u64> {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(wait) = Self::over(&mut map, keys) {
            return Err(wait);
        }
        Self::charge(&mut map, keys);
        Ok(())
    }

    fn over(map: &mut HashMap<String, VecDeque<Instant>>, keys: &[String]) -> Option<u64> {
        let now = Instant::now();
        let mut wait = None;
        for k in keys {
            if let Some(q) = map.get_mut(k) {
                while q.front().is_some_and(|t| now.duration_since(*t) > Self::WINDOW) {
                    q.pop_front();
                }
                let max = Self::max(k);
                if q.len() >= max {
                    let left = Self::WINDOW.saturating_sub(now.duration_since(q[q.len() - max])).as_secs().max(1);
                    wait = Some(wait.map_or(left, |w: u64| w.max(left)));
                }
            }
        }
        wait
    }
    fn charge(map: &mut HashMap<String, VecDeque<Instant>>, keys: &[String]) {
        if map.len() > 100_000 {
            // Forget only what aged out, not everyone's count.
            let now = Instant::now();
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) <= Self::WINDOW));
        }
        for k in keys {
            map.entry(k.clone()).or_default().push_back(Instant::now());
        }
    }
    pub fn succeeded(&self, keys: &[String]) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            map.remove(k);
        }
    }
}

pub const COOKIE: &str = "runbook_session";

/// The Set-Cookie value of a session (or of its end, with `max_age` 0).
pub fn session_cookie(id: &str, max_age: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

pub fn session_id(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

pub fn remote(parts: &Parts) -> String {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_canonical().to_string())
        .unwrap_or_else(|| "?".into())
}

/// Refusal: a page asks to log in, the API answers 401.
fn unauthenticated(parts: &Parts) -> Response {
    if parts.uri.path().starts_with("/api/") {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"runbook\"")],
            axum::Json(serde_json::json!({"error": "authentication required: a session or an API token"})),
        )
            .into_response();
    }
    let next = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let next: String = url_encode(next);
    Redirect::to(&format!("/login?next={next}")).into_response()
}

pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl FromRequestParts<std::sync::Arc<App>> for Identity {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &std::sync::Arc<App>) -> Result<Identity, Response> {
        let remote = remote(parts);
        let found = match app.config.auth {
            AuthMode::None => Some(Identity {
                name: "local".into(),
                roles: vec![Role::Admin],
                groups: vec![],
                via: Via::Local,
                remote: remote.clone(),
            }),
            AuthMode::Proxy => {
                let header = app.config.proxy_header.as_deref().unwrap_or("X-Forwarded-User");
                let user =
                    parts.headers.get(header).and_then(|v| v.to_str().ok()).map(str::trim).filter(|u| !u.is_empty());
                match user {
                    Some(u) => match app.people.identity(u, Via::Proxy, remote.clone()) {
                        Some(i) => Some(i),
                        None => {
                            return Err(super::pages::error_page(
                                StatusCode::FORBIDDEN,
                                &format!("{u} is not a user of this console ([serve.users] in runbook.toml)"),
                            ))
                        }
                    },
                    None => None,
                }
            }
            AuthMode::Password => None,
        };
        if let Some(i) = found {
            return Ok(i);
        }
        // A Bearer token (scripts, chat bots), in every mode but none.
        if let Some(auth) = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            if let Some(token) = auth.strip_prefix("Bearer ") {
                return match app
                    .people
                    .token_user(token.trim())
                    .and_then(|u| app.people.identity(u, Via::Token, remote.clone()))
                {
                    Some(i) => Ok(i),
                    None => {
                        Err((StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({"error": "unknown API token"})))
                            .into_response())
                    }
                };
            }
        }
        if let Some(id) = session_id(parts) {
            if let Some((user, csrf)) = app.sessions.get(&id) {
                if let Some(i) = app.people.identity(&user, Via::Session { id, csrf }, remote) {
                    return Ok(i);
                }
            }
        }
        Err(unauthenticated(parts))
    }
}

/// An identity with a role that reads (every role does): what a page or a list asks for. A
/// handler that takes it cannot forget the check.
pub struct Viewer(pub Identity);

impl FromRequestParts<std::sync::Arc<App>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &std::sync::Arc<App>) -> Result<Viewer, Response> {
        let me = Identity::from_request_parts(parts, app).await?;
        if !me.can_view() {
            return Err(super::pages::fail(&parts.uri, StatusCode::FORBIDDEN, "your roles do not include viewer"));
        }
        Ok(Viewer(me))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_proxies_are_trusted() {
        let mut c = ServeConfig::default();
        assert!(trusted_proxy(&c, "127.0.0.1".parse().unwrap()));
        assert!(!trusted_proxy(&c, "10.0.0.5".parse().unwrap()));
        c.trusted_proxies = vec!["10.0.0.0/24".into(), "fd00::1".into()];
        assert!(trusted_proxy(&c, "10.0.0.5".parse().unwrap()));
        assert!(!trusted_proxy(&c, "10.0.1.5".parse().unwrap()));
        assert!(!trusted_proxy(&c, "127.0.0.1".parse().unwrap()));
        assert!(trusted_proxy(&c, "fd00::1".parse().unwrap()));
        c.trusted_proxies = vec!["10.0.0.0/33".into()];
        assert!(check_proxies(&c).is_err());
    }

    #[test]
    fn a_person_keeps_at_most_twenty_sessions_the_oldest_end_first() {
        let s = Sessions::new(Duration::from_secs(3600));
        let first = s.create("alice");
        let other = s.create("bob");
        for _ in 0..20 {
            s.create("alice");
        }
        assert!(s.get(&first).is_none());
        assert!(s.get(&other).is_some());
        let alive = s.map.lock().unwrap().values().filter(|v| v.user == "alice").count();
        assert_eq!(alive, 20);
    }

    #[test]
    fn globs_match_runbook_names() {
        assert!(glob("*", "anything"));
        assert!(glob("db-*", "db-vacuum"));
        assert!(!glob("db-*", "deploy"));
        assert!(glob("deploy-?", "deploy-a"));
        assert!(!glob("deploy", "deploy-a"));
    }

    #[test]
    fn a_password_hash_verifies_only_its_password() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        let parsed = argon2::PasswordHash::new(&h).unwrap();
        use argon2::PasswordVerifier;
        assert!(argon2::Argon2::default().verify_password(b"correct horse", &parsed).is_ok());
        assert!(argon2::Argon2::default().verify_password(b"wrong", &parsed).is_err());
    }

    #[test]
    fn the_login_limiter_blocks_a_user_at_one_address_after_five_and_anywhere_after_twenty() {
        let l = Limiter::default();
        for _ in 0..5 {
            assert!(l.attempt(&Limiter::keys("bob", "1")).is_ok());
        }
        assert!(l.attempt(&Limiter::keys("bob", "1")).is_err());
        // Others behind the same address, and bob elsewhere, still try.
        assert!(l.attempt(&Limiter::keys("carol", "1")).is_ok());
        for ip in 2..17 {
            assert!(l.attempt(&Limiter::keys("bob", &ip.to_string())).is_ok(), "{ip}");
        }
        // 20 for bob from anywhere.
        assert!(l.attempt(&Limiter::keys("bob", "99")).is_err());
    }
}
