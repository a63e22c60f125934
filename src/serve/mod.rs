//! `runbook serve`: the web console and HTTP API over the journal, for a team.
//!
//! Server-rendered pages (minijinja templates in `templates/`, a little plain JS for the live
//! view) and a JSON API under `/api/v1`: every page's handler serves both, by path. Everything
//! needs an identity (see `auth`); every state change is audited and, through a session, needs
//! the session's CSRF token; every response carries a strict Content-Security-Policy.
pub mod auth;
pub mod config;
mod input;
pub mod links;
mod live;
mod login;
pub(crate) mod pages;
mod runbooks;
mod runs;
mod team;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::routing::{get, post};
use axum::Router;

use crate::error::{exit, Error, Result};
use crate::journal::{self, Journal};

/// `runbook serve`'s options (see `cli::ServeArgs`).
pub struct Options {
    pub listen: Option<String>,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub workers: u16,
    pub allow_plain_http: bool,
}

/// What every handler shares.
pub struct App {
    pub journal: Arc<dyn Journal>,
    pub config: config::ServeConfig,
    pub people: auth::People,
    pub sessions: auth::Sessions,
    pub limiter: auth::Limiter,
    pub templates: minijinja::Environment<'static>,
    /// Cookies are Secure unless served as plain HTTP on loopback.
    pub secure_cookies: bool,
    pub links: Option<links::Signer>,
    pub live: live::Tails,
    pub catalogue: runbooks::Catalogue,
    /// The journal as given (`--state`), for runs started from the console.
    pub state: Option<String>,
    /// The folder runbook.toml is in: catalogue paths are relative to it.
    pub base: PathBuf,
    /// The names this console answers to (`Host`): its listener, loopback names on its port,
    /// and `public_url`'s. Anything else is refused (DNS rebinding).
    /// (Completed with the bound port once listening: `--listen 127.0.0.1:0`.)
    pub hosts: std::sync::RwLock<Vec<String>>,
}

pub type Shared = Arc<App>;

/// The routes. A page and its API twin share a handler, which answers JSON under `/api/v1`.
pub fn router(app: Shared) -> Router {
    let both = |r: Router<Shared>, path: &str, m: axum::routing::MethodRouter<Shared>| {
        r.route(path, m.clone()).route(&format!("/api/v1{path}"), m)
    };
    let mut r = Router::new()
        .route("/", get(|| async { axum::response::Redirect::to("/runs") }))
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/a/{token}", get(links::open))
        .route("/static/app.css", get(pages::css))
        .route("/static/app.js", get(pages::js))
        .route("/runs/{id}/live", get(live::stream))
        .route("/api/v1/me", get(login::me));
    r = both(r, "/runs", get(runs::list));
    r = both(r, "/runs/{id}", get(runs::show));
    r = both(r, "/runs/{id}/timeline", get(runs::timeline));
    r = both(r, "/runs/{id}/approve", post(runs::approve));
    r = both(r, "/runs/{id}/cancel", post(runs::cancel));
    r = both(r, "/runs/{id}/resume", post(runs::resume));
    r = both(r, "/runs/{id}/skip", post(runs::skip));
    r = both(r, "/runbooks", get(runbooks::list));
    r = both(r, "/runbooks/{name}", get(runbooks::show));
    r = both(r, "/runbooks/{name}/runs", post(runbooks::enqueue));
    r = both(r, "/queue", get(team::queue));
    r = both(r, "/workers", get(team::workers));
    r = both(r, "/schedules", get(team::schedules));
    r = both(r, "/schedules/{name}/unpause", post(team::unpause));
    r = both(r, "/sessions", get(team::sessions));
    r = both(r, "/sessions/{id}", get(team::session));
    r = both(r, "/audit", get(team::audit));
    r.fallback(|| async { pages::error_page(axum::http::StatusCode::NOT_FOUND, "no such page") })
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}

/// Every response: a strict CSP (no inline script or style, nothing from elsewhere), no
/// framing, no sniffing, no referrer, and no caching of what a login shows.
async fn security_headers(mut res: axum::response::Response) -> axum::response::Response {
    let h = res.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, "x-frame-options", "DENY");
    set(h, "x-content-type-options", "nosniff");
    // Not no-referrer: with it, browsers send `Origin: null` on form posts, which the
    // same-origin check must refuse.
    set(h, "referrer-policy", "same-origin");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
    res
}

/// The host a request names: its `Host` header, or its URI's authority (HTTP/2).
fn host_of(req: &axum::extract::Request) -> String {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// Before any handler: the request must name this console (a page on another site that a DNS
/// name rebinds to 127.0.0.1 names its own), a proxy-mode request must come from a trusted
/// proxy, and a state change must come from this console's own pages (an `Origin` of another
/// site, or a cross-site fetch, is refused; clients that send no Origin, such as curl with a
/// token, pass). With SameSite=Strict cookies and CSRF tokens this also stops login CSRF.
async fn guard(
    axum::extract::State(app): axum::extract::State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{Method, StatusCode};
    let host = host_of(&req);
    let known =
        app.hosts.read().map(|hs| hs.iter().any(|h| *h == host || same_default_port(h, &host))).unwrap_or(false);
    if !known {
        return pages::fail(
            req.uri(),
            StatusCode::MISDIRECTED_REQUEST,
            &format!("this console does not answer to '{host}'"),
        );
    }
    if app.config.auth == config::AuthMode::Proxy {
        let peer = req.extensions().get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        if !peer.is_some_and(|ip| auth::trusted_proxy(&app.config, ip)) {
            return pages::fail(req.uri(), StatusCode::FORBIDDEN, "in proxy mode only the trusted proxy may connect");
        }
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        let h = req.headers();
        let cross_site = h.get("sec-fetch-site").and_then(|v| v.to_str().ok()).is_some_and(|v| v == "cross-site");
        // The Origin must be this very request's host (which is one of the console's names).
        let foreign = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()).is_some_and(|o| {
            let authority = o.split_once("://").map(|(_, rest)| rest.to_ascii_lowercase());
            authority.is_none_or(|a| a != host && !same_default_port(&a, &host))
        });
        if cross_site || foreign {
            return pages::fail(req.uri(), StatusCode::FORBIDDEN, "cross-site request refused");
        }
    }
    next.run(req).await
}

/// `host` and `host:443` (or `:80`) name the same place.
fn same_default_port(a: &str, b: &str) -> bool {
    let strip = |s: &str| s.strip_suffix(":443").or_else(|| s.strip_suffix(":80")).unwrap_or(s).to_string();
    strip(a) == strip(b)
}

/// The `Host` values the console answers to.
fn hosts(addr: &SocketAddr, config: &config::ServeConfig) -> Vec<String> {
    let port = addr.port();
    let mut out =
        vec![addr.to_string(), format!("localhost:{port}"), format!("127.0.0.1:{port}"), format!("[::1]:{port}")];
    if let Some(url) = &config.public_url {
        if let Some(rest) = url.split_once("://").map(|(_, r)| r) {
            let authority = rest.split('/').next().unwrap_or("").to_ascii_lowercase();
            out.push(authority.clone());
            // The default port may be left out of Host.
            if !authority.contains(':') || authority.ends_with(']') {
                let default = if url.starts_with("https") { 443 } else { 80 };
                out.push(format!("{authority}:{default}"));
            }
        }
    }
    out.extend(config.hosts.iter().map(|h| h.to_ascii_lowercase()));
    out
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// `runbook serve --hash-password`: reads a password (without echo at a terminal) and prints
/// its argon2id hash for `[serve.users.NAME] password_hash`.
pub fn hash_password_command() -> Result<u8> {
    let password = crate::process::read_hidden("password: ").map_err(|e| Error::Io(e.to_string()))?.unwrap_or_default();
    if password.len() < 8 {
        return Err(Error::Usage("a console password has at least 8 characters".into()));
    }
    let hash = auth::hash_password(&password).map_err(Error::Io)?;
    println!("{hash}");
    Ok(exit::OK)
}

/// `runbook serve --new-token`: a new API token (shown once) and the hash to keep.
pub fn new_token_command() -> Result<u8> {
    let (token, hash) = auth::new_token();
    println!("token (shown once; give it to the script or bot): {token}");
    println!("add its hash to the user's tokens in runbook.toml:\n  tokens = [\"{hash}\"]");
    Ok(exit::OK)
}

pub async fn serve(state: Option<&str>, opts: Options) -> Result<u8> {
    let cfg = crate::config::get().map_err(Error::Usage)?;
    let config = cfg.serve.clone().unwrap_or_default();
    let base =
        cfg.path.as_ref().and_then(|p| p.parent().map(|d| d.to_path_buf())).unwrap_or_else(|| PathBuf::from("."));
    let listen = opts.listen.clone().or_else(|| config.listen.clone()).unwrap_or_else(|| "127.0.0.1:8080".into());
    let addr: SocketAddr = listen
        .parse()
        .map_err(|_| Error::Usage(format!("--listen {listen}: not an address such as 127.0.0.1:8080")))?;
    let loopback = is_loopback(&addr);
    if config.auth == config::AuthMode::None && !loopback {
        return Err(Error::Usage(format!(
            "[serve] auth = \"none\" is only allowed on a loopback address, not {addr}: anyone who reaches it would be an admin"
        )));
    }
    if opts.tls.is_none() && !loopback && !(config.allow_plain_http || opts.allow_plain_http) {
        return Err(Error::Usage(format!(
            "{addr} is not a loopback address: give --tls-cert and --tls-key, or, behind a proxy that terminates TLS, \
             allow_plain_http = true in [serve]"
        )));
    }
    if config.auth == config::AuthMode::Proxy && !loopback && config.trusted_proxies.is_empty() {
        return Err(Error::Usage(format!(
            "[serve] auth = \"proxy\" on {addr}: name the proxy in trusted_proxies = [\"10.0.0.5\"] (addresses or CIDRs), \
             or listen on loopback; else anyone who reaches the port could name any user"
        )));
    }
    auth::check_proxies(&config).map_err(Error::Usage)?;
    let people = auth::People::new(&config).map_err(Error::Usage)?;
    if config.auth == config::AuthMode::Password
        && config.users.values().all(|u| u.password_hash.is_none() && u.tokens.is_empty())
    {
        return Err(Error::Usage(
            "[serve] has no user who can log in: add [serve.users.NAME] with password_hash (runbook serve --hash-password) \
             and roles, or tokens (runbook serve --new-token)"
                .into(),
        ));
    }
    let journal = journal::open(state).await?;
    let links = links::Signer::load(&config, &base, true).map_err(Error::Usage)?;
    let hours = config.session_hours.unwrap_or(12).clamp(1, 24 * 30);
    let app = Arc::new(App {
        journal: journal.clone(),
        people,
        sessions: auth::Sessions::new(Duration::from_secs(hours * 3600)),
        limiter: auth::Limiter::default(),
        templates: pages::templates(),
        // Behind a TLS proxy (public_url https://...) too: the browser must never send the
        // cookie over plain HTTP, even to a port-80 redirect.
        secure_cookies: opts.tls.is_some()
            || !loopback
            || config.public_url.as_deref().is_some_and(|u| u.starts_with("https://")),
        links,
        live: live::Tails::default(),
        catalogue: runbooks::Catalogue::default(),
        state: state.map(str::to_string),
        base,
        hosts: std::sync::RwLock::new(hosts(&addr, &config)),
        config,
    });
    let router = router(app.clone()).into_make_service_with_connect_info::<SocketAddr>();

    // `--workers N`: the runs run here too, on the same journal, like `runbook worker`.
    let workers = (opts.workers > 0).then(|| {
        let journal = journal.clone();
        let n = opts.workers as usize;
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
            let Ok(rt) = rt else { return };
            let wopts = crate::scheduler::worker::Options {
                concurrency: n,
                poll: Duration::from_millis(500),
                until_empty: false,
            };
            let done =
                rt.block_on(crate::scheduler::worker::run(journal, &wopts, || async { Ok(Duration::from_secs(3600)) }));
            if let Err(e) = done {
                tracing::warn!("serve: the workers stopped: {e}");
            }
        })
    });
    // Without workers of its own, the console still ends gates whose time ran out.
    let expiry = {
        let journal = journal.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Err(e) = crate::approval::expire_due(journal.as_ref()).await {
                    tracing::warn!("serve: cannot end timed-out gates: {e}");
                }
            }
        })
    };

    let scheme = if opts.tls.is_some() { "https" } else { "http" };
    let handle = axum_server::Handle::new();
    {
        let handle = handle.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            crate::engine::start_draining();
            handle.graceful_shutdown(Some(Duration::from_secs(5)));
        });
    }
    let result = match &opts.tls {
        Some((cert, key)) => {
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(|e| Error::Usage(format!("--tls-cert/--tls-key: {e}")))?;
            let server = axum_server::bind_rustls(addr, tls).handle(handle.clone());
            announce(&handle, scheme, workers.is_some(), app.clone()).await;
            server.serve(router).await
        }
        None => {
            let server = axum_server::bind(addr).handle(handle.clone());
            announce(&handle, scheme, workers.is_some(), app.clone()).await;
            server.serve(router).await
        }
    };
    expiry.abort();
    if let Some(w) = workers {
        let _ = tokio::task::spawn_blocking(move || w.join()).await;
    }
    journal.close().await;
    result.map_err(|e| Error::Io(format!("serve on {addr}: {e}")))?;
    Ok(exit::OK)
}

async fn announce(handle: &axum_server::Handle<SocketAddr>, scheme: &str, workers: bool, app: Shared) {
    let h = handle.clone();
    let scheme = scheme.to_string();
    tokio::spawn(async move {
        if let Some(addr) = h.listening().await {
            if let Ok(mut hs) = app.hosts.write() {
                for h in hosts(&addr, &app.config) {
                    if !hs.contains(&h) {
                        hs.push(h);
                    }
                }
            }
            let with = if workers { " (with workers)" } else { "" };
            println!("runbook console on {scheme}://{addr}/{with}");
            use std::io::Write;
            let _ = std::io::stdout().flush();
        }
    });
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}
