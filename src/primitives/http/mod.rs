//! `http`: requests through reqwest over rustls, verified against the system's roots (plus a
//! private CA when given); retries on transport errors and 429/502/503/504; an unexpected
//! status is an error naming method, URL (credentials stripped), status and the body's start.
//! `wait_healthy` polls an endpoint until it answers as expected.
pub mod fake;
pub mod load;
pub mod lua;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Usage(String),
    #[error("{method} {url}: {cause}")]
    Transport { method: String, url: String, cause: String },
    #[error("{method} {url} returned {status} (expected {expected}){}", body_suffix(.body))]
    Status { method: String, url: String, status: String, expected: String, body: String },
    #[error("{url} not healthy after {after} ({attempts} attempts); last: {last}")]
    Unhealthy { url: String, after: String, attempts: u32, last: String },
    #[error(transparent)]
    Tls(#[from] crate::primitives::tls::TlsError),
}

fn body_suffix(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

/// The statuses a request accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// 2xx; and 3xx too when the flag says redirects are not followed (the caller wants them).
    Success {
        redirects: bool,
    },
    Any,
    Codes(Vec<u16>),
}

impl Expect {
    pub fn accepts(&self, status: u16) -> bool {
        match self {
            Expect::Success { redirects: false } => (200..300).contains(&status),
            Expect::Success { redirects: true } => (200..400).contains(&status),
            Expect::Any => true,
            Expect::Codes(c) => c.contains(&status),
        }
    }
    fn describe(&self) -> String {
        match self {
            Expect::Success { redirects: false } => "2xx".into(),
            Expect::Success { redirects: true } => "2xx or 3xx".into(),
            Expect::Any => "any".into(),
            Expect::Codes(c) => c.iter().map(u16::to_string).collect::<Vec<_>>().join(" or "),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Body {
    None,
    Bytes(Vec<u8>),
    Json(serde_json::Value),
    Form(Vec<(String, String)>),
}

/// How TLS is verified, and which client (connection pool) serves a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    pub insecure: bool,
    pub ca: Option<PathBuf>,
    pub follow_redirects: bool,
    /// The request carries secrets that reqwest does not strip on a redirect to another origin
    /// (headers other than Authorization/Cookie, a body resent on 307/308): such a redirect is
    /// refused instead.
    pub carries_secrets: bool,
}

/// One request, as the Lua binding assembled it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub url: Url,
    /// (name, value, is a secret)
    pub headers: Vec<(String, String, bool)>,
    pub query: Vec<(String, String)>,
    pub body: Body,
    pub timeout: Duration,
    pub retries: u32,
    pub retry_delay: Duration,
    pub expect: Expect,
    pub client: ClientKey,
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub ms: u64,
    /// The final URL, after redirects (credentials stripped).
    pub url: String,
}

impl Response {
    pub fn status_line(&self) -> String {
        status_line(self.status)
    }
}

pub fn status_line(status: u16) -> String {
    match reqwest::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()) {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}

/// What happened to one attempt, for the log.
pub enum Attempt<'a> {
    Retrying { attempt: u32, of: u32, cause: String, delay: Duration },
    Done(&'a Response),
}

/// The URL as it may be shown: no user name or password.
pub fn shown_url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// Parses a URL, refusing schemes other than http and https.
pub fn parse_url(text: &str) -> Result<Url, HttpError> {
    let url = Url::parse(text).map_err(|e| {
        HttpError::Usage(format!(
            "invalid URL '{}': {e} (expected http://host[:port]/path or https://...)",
            crate::secret::redact(text)
        ))
    })?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(HttpError::Usage(format!("unsupported URL scheme '{other}': use http:// or https://"))),
    }
}

/// The client for a key, built once (off the async runtime: it reads the CA files): connection
/// pools are reused across requests, and an `insecure` request never shares a verified one's.
async fn client(key: &ClientKey) -> Result<reqwest::Client, HttpError> {
    static CLIENTS: OnceLock<Mutex<HashMap<ClientKey, reqwest::Client>>> = OnceLock::new();
    let clients = CLIENTS.get_or_init(Default::default);
    if let Some(c) = clients.lock().unwrap_or_else(|p| p.into_inner()).get(key) {
        return Ok(c.clone());
    }
    let owned = key.clone();
    let c = tokio::task::spawn_blocking(move || build_client(&owned))
        .await
        .map_err(|e| HttpError::Usage(format!("cannot build the HTTP client: {e}")))??;
    clients.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), c.clone());
    Ok(c)
}

fn build_client(key: &ClientKey) -> Result<reqwest::Client, HttpError> {
    let tls = crate::primitives::tls::client_config(key.insecure, key.ca.as_deref())?;
    let carries_secrets = key.carries_secrets;
    let redirect = if !key.follow_redirects {
        reqwest::redirect::Policy::none()
    } else {
        reqwest::redirect::Policy::custom(move |attempt| {
            let other_origin = attempt.previous().last().is_some_and(|prev| {
                prev.scheme() != attempt.url().scheme()
                    || prev.host_str() != attempt.url().host_str()
                    || prev.port_or_known_default() != attempt.url().port_or_known_default()
            });
            if attempt.previous().len() > 10 {
                attempt.error("more than 10 redirects")
            } else if other_origin && carries_secrets {
                let to = shown_url(attempt.url());
                attempt.error(format!(
                    "refusing to follow a redirect to another origin ({to}) with secrets in the request"
                ))
            } else {
                attempt.follow()
            }
        })
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(redirect)
        .connect_timeout(Duration::from_secs(10))
        // A Referer would hand the previous URL, query tokens and all, to the next origin.
        .referer(false)
        .user_agent(concat!("runbook/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| HttpError::Usage(format!("cannot build the HTTP client: {}", chain(&e))))
}

/// An error and its causes, "a: b: c", without the repetitions reqwest and hyper produce.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// A failed attempt: what to tell people, and whether another attempt may help.
struct Failure {
    cause: String,
    /// The request never reached the server (safe to repeat whatever the method).
    unsent: bool,
    /// Trying again cannot help (a certificate, a redirect refused, a bad request).
    permanent: bool,
}

/// A transport error for people: what failed, with the certificate problem spelt out. The error
/// comes without its URL (`without_url`), whose query may hold a token.
fn transport_failure(e: reqwest::Error, timeout: Duration) -> Failure {
    let e = e.without_url();
    let permanent = e.is_redirect() || e.is_builder();
    if e.is_timeout() {
        let cause = format!("no response within {}", crate::duration::human(timeout));
        return Failure { cause, unsent: false, permanent };
    }
    let mut connect_io = None;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = cur {
        if let Some(rustls::Error::InvalidCertificate(c)) = err.downcast_ref::<rustls::Error>() {
            let cause = format!("TLS certificate verification failed: {}", crate::primitives::tls::problem(c));
            return Failure { cause, unsent: true, permanent: true };
        }
        // io::Error's source() skips the error it wraps (rustls' arrives wrapped twice).
        cur = match err.downcast_ref::<std::io::Error>() {
            Some(io) => {
                connect_io.get_or_insert(io.to_string());
                io.get_ref().map(|i| i as &(dyn std::error::Error + 'static)).or(err.source())
            }
            None => err.source(),
        };
    }
    if let (true, Some(io)) = (e.is_connect(), connect_io) {
        return Failure { cause: format!("cannot connect: {io}"), unsent: true, permanent };
    }
    let text = chain(&e);
    let cause = text.strip_prefix("error sending request: ").unwrap_or(&text).to_string();
    Failure { cause, unsent: e.is_connect(), permanent }
}

/// Statuses worth another attempt: the server is overloaded or a proxy could not reach it. A
/// request that is not idempotent (POST, PATCH) is repeated only on 429 and 503, which say the
/// request was not processed, or when it never left.
fn retryable(status: u16, idempotent: bool) -> bool {
    match status {
        429 | 503 => true,
        502 | 504 => idempotent,
        _ => false,
    }
}

/// The delay a 429/503 asks for (`Retry-After: SECONDS`), at most a minute.
fn retry_after(resp: &Response) -> Option<Duration> {
    let (_, v) = resp.headers.iter().find(|(k, _)| k == "retry-after")?;
    v.trim().parse::<u64>().ok().map(|s| Duration::from_secs(s.min(60)))
}

/// The request's headers as reqwest takes them, secret ones marked sensitive.
fn header_map(headers: &[(String, String, bool)]) -> Result<HeaderMap, HttpError> {
    let mut map = HeaderMap::new();
    for (name, value, secret) in headers {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| HttpError::Usage(format!("invalid header name '{name}'")))?;
        let mut v = HeaderValue::from_str(value)
            .map_err(|_| HttpError::Usage(format!("header '{name}': invalid value (control characters?)")))?;
        v.set_sensitive(*secret);
        map.append(n, v);
    }
    Ok(map)
}

/// One attempt of `req`: method, URL, headers, timeout, query and body.
fn builder(client: &reqwest::Client, req: &Request, headers: &HeaderMap) -> reqwest::RequestBuilder {
    let mut rb = client.request(req.method.clone(), req.url.clone()).headers(headers.clone()).timeout(req.timeout);
    if !req.query.is_empty() {
        rb = rb.query(&req.query);
    }
    match &req.body {
        Body::None => rb,
        Body::Bytes(b) => rb.body(b.clone()),
        Body::Json(j) => {
            rb.header(reqwest::header::CONTENT_TYPE, "application/json").body(serde_json::to_vec(j).unwrap_or_default())
        }
        Body::Form(f) => rb.form(f),
    }
}

/// Sends a request, with up to `retries` more attempts after a transport error or a retryable
/// status (see [`retryable`]), doubling `retry_delay` each time (at most 30s) unless the server
/// says how long to wait.
pub async fn send(req: &Request, mut on_attempt: impl FnMut(Attempt)) -> Result<Response, HttpError> {
    let client = client(&req.client).await?;
    let method = req.method.to_string();
    let url = shown_url(&req.url);
    let idempotent = !matches!(req.method, Method::POST | Method::PATCH);
    let headers = header_map(&req.headers)?;
    let attempts = req.retries + 1;
    let mut delay = req.retry_delay;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let rb = builder(&client, req, &headers);
        let started = Instant::now();
        let outcome = match rb.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let final_url = shown_url(resp.url());
                let headers = resp
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                    .collect();
                match resp.bytes().await {
                    Ok(body) => Ok(Response {
                        status,
                        headers,
                        body: body.to_vec(),
                        ms: started.elapsed().as_millis() as u64,
                        url: final_url,
                    }),
                    Err(e) => {
                        let f = transport_failure(e, req.timeout);
                        Err(Failure { cause: format!("reading the body: {}", f.cause), unsent: false, ..f })
                    }
                }
            }
            Err(e) => Err(transport_failure(e, req.timeout)),
        };
        let again = match &outcome {
            Ok(r) if !req.expect.accepts(r.status) && retryable(r.status, idempotent) => {
                Some((r.status_line(), retry_after(r)))
            }
            Ok(_) => None,
            Err(f) if !f.permanent && (f.unsent || idempotent) => Some((f.cause.clone(), None)),
            Err(_) => None,
        };
        match again {
            Some((cause, asked)) if attempt < attempts => {
                let wait = asked.map_or(delay, |a| a.max(delay));
                on_attempt(Attempt::Retrying { attempt, of: attempts, cause, delay: wait });
                tokio::time::sleep(wait).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            _ => {
                let resp = outcome.map_err(|f| HttpError::Transport {
                    method: method.clone(),
                    url: url.clone(),
                    cause: f.cause,
                })?;
                on_attempt(Attempt::Done(&resp));
                if !req.expect.accepts(resp.status) {
                    return Err(HttpError::Status {
                        method,
                        url,
                        status: resp.status_line(),
                        expected: req.expect.describe(),
                        body: body_start(&resp.body),
                    });
                }
                return Ok(resp);
            }
        }
    }
}

/// The first 200 characters of a body, on one line, for an error message.
pub fn body_start(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(800)]);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = one_line.chars().take(200).collect();
    if one_line.chars().count() > 200 || body.len() > 800 {
        out.push_str("...");
    }
    out
}

/// What makes an endpoint healthy, besides its status.
#[derive(Debug, Clone, Default)]
pub struct Health {
    pub body_contains: Option<String>,
    /// Dotted path into a JSON body ("status", "checks.db.status", "items.1.state": array
    /// indexes are 1-based, as in Lua).
    pub json_path: Option<String>,
    /// The value at `json_path` (compared as JSON, or as text when the value is a string);
    /// without it the value must exist and be neither false nor null.
    pub equals: Option<serde_json::Value>,
}

impl Health {
    /// None when healthy, or why not.
    pub fn check(&self, resp: &Response) -> Option<String> {
        if let Some(needle) = &self.body_contains {
            if !String::from_utf8_lossy(&resp.body).contains(needle.as_str()) {
                return Some(format!("body does not contain {needle:?}"));
            }
        }
        if let Some(path) = &self.json_path {
            let json: serde_json::Value = match serde_json::from_slice(&resp.body) {
                Ok(j) => j,
                Err(_) => return Some(format!("body is not JSON (starts: {})", body_start(&resp.body))),
            };
            let found = lookup(&json, path);
            match (&self.equals, found) {
                (_, None) => return Some(format!("no value at json_path {path:?}")),
                (None, Some(v)) if v.is_null() || v == &serde_json::Value::Bool(false) => {
                    return Some(format!("{path} is {v}"))
                }
                (None, Some(_)) => {}
                (Some(want), Some(got)) => {
                    let same = got == want
                        || matches!((got, want), (serde_json::Value::String(g), w) if w.to_string().trim_matches('"') == g);
                    if !same {
                        return Some(format!("{path} is {got}, not {want}"));
                    }
                }
            }
        }
        None
    }
}

fn lookup<'a>(json: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    let mut cur = json;
    for part in path.split('.') {
        cur = match cur {
            serde_json::Value::Object(m) => m.get(part)?,
            serde_json::Value::Array(a) => a.get(part.parse::<usize>().ok()?.checked_sub(1)?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Polls `req` every `interval` until it answers with an accepted status and `health` holds,
/// or `timeout` passes. Each attempt is reported; returns the healthy response.
pub async fn wait_healthy(
    req: &Request,
    health: &Health,
    timeout: Duration,
    interval: Duration,
    mut on_attempt: impl FnMut(u32, &str),
) -> Result<Response, HttpError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let mut one = req.clone();
        one.timeout = req.timeout.min(left.max(Duration::from_millis(100)));
        one.retries = 0;
        let why = match send(&one, |_| {}).await {
            Ok(resp) => match health.check(&resp) {
                None => {
                    on_attempt(attempt, "healthy");
                    return Ok(resp);
                }
                Some(why) => format!("{}: {why}", resp.status_line()),
            },
            Err(HttpError::Status { status, expected, body, .. }) => {
                format!("{status} (expected {expected}){}", body_suffix(&body))
            }
            Err(HttpError::Transport { cause, .. }) => cause,
            Err(e) => return Err(e),
        };
        on_attempt(attempt, &why);
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HttpError::Unhealthy {
                url: shown_url(&req.url),
                after: crate::duration::human(started.elapsed()),
                attempts: attempt,
                last: why,
            });
        }
        // The last wait is cut short so that one attempt lands on the deadline itself.
        tokio::time::sleep(interval.min(left)).await;
    }
}
