//! Logging in and out. Failed attempts are limited per client address and per user name; a
//! login gets a fresh session id (no fixation) in an HttpOnly, SameSite=Strict cookie.
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::auth::{self, Identity};
use super::config::AuthMode;
use super::pages::fail;
use super::Shared;
use crate::journal::{self, AuditRecord};

#[derive(Debug, Default, Deserialize)]
pub struct Next {
    next: Option<String>,
}

/// Only a path of this console: never another site (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    match next {
        // Browsers drop tabs and newlines in URLs: "/\t/evil" would become "//evil".
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains("://")
                && !n.chars().any(|c| c.is_control() || c.is_whitespace() || c == '\\') =>
        {
            n.to_string()
        }
        _ => "/runs".into(),
    }
}

fn page(app: &Shared, next: &str, error: Option<&str>) -> Response {
    let ctx = minijinja::context! { next => next, error => error, proxy => app.config.auth == AuthMode::Proxy };
    match app.templates.get_template("login.html").and_then(|t| t.render(ctx)) {
        Ok(html) => Html(html).into_response(),
        Err(e) => super::pages::error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

pub async fn form(State(app): State<Shared>, Query(q): Query<Next>) -> Response {
    if app.config.auth == AuthMode::None {
        return Redirect::to(&safe_next(q.next.as_deref())).into_response();
    }
    page(&app, &safe_next(q.next.as_deref()), None)
}

/// The client's address: the peer's, or, when the peer is a trusted proxy (one of
/// `trusted_proxies`, or loopback), the last address it appended to X-Forwarded-For.
fn client_ip(app: &Shared, peer: std::net::IpAddr, headers: &HeaderMap) -> String {
    let peer = peer.to_canonical();
    if auth::trusted_proxy(&app.config, peer) {
        let forwarded = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|ip| ip.trim().parse::<std::net::IpAddr>().ok());
        if let Some(ip) = forwarded {
            return ip.to_canonical().to_string();
        }
    }
    peer.to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginForm {
    user: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
}

async fn audit(app: &Shared, user: &str, action: &str, remote: &str, detail: &str) {
    let record = AuditRecord {
        at: journal::now_ts(),
        actor: user.chars().take(64).collect(),
        action: action.into(),
        target: String::new(),
        detail: detail.into(),
        remote: remote.into(),
    };
    let _ = app.journal.audit(&record).await;
}

pub async fn submit(
    State(app): State<Shared>,
    connect: axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    axum::Form(f): axum::Form<LoginForm>,
) -> Response {
    let next = safe_next(f.next.as_deref());
    if app.config.auth != AuthMode::Password {
        return fail(&Uri::from_static("/login"), StatusCode::NOT_FOUND, "this console does not use passwords");
    }
    let remote = client_ip(&app, connect.0.ip(), &headers);
    let user: String = f.user.chars().take(64).collect();
    let keys = auth::Limiter::keys(&user, &remote);
    // Charged before the check runs: a thousand attempts at once still get five tries.
    if let Err(wait) = app.limiter.attempt(&keys) {
        let mut res = page(&app, &next, Some(&format!("Too many failed logins: try again in {wait} s.")));
        *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        res.headers_mut().insert(header::RETRY_AFTER, wait.into());
        return res;
    }
    let plausible = f.user.len() <= 64 && f.password.len() <= 1024;
    if !plausible || !app.people.verify(&f.user, &f.password).await {
        audit(&app, &user, "login_failed", &remote, "").await;
        let mut res = page(&app, &next, Some("Wrong user name or password."));
        *res.status_mut() = StatusCode::UNAUTHORIZED;
        return res;
    }
    app.limiter.succeeded(&keys);
    audit(&app, &f.user, "login", &remote, "").await;
    let id = app.sessions.create(&f.user);
    let cookie = auth::session_cookie(&id, app.sessions.lifetime.as_secs(), app.secure_cookies);
    let mut res = Redirect::to(&next).into_response();
    if let Ok(v) = cookie.parse() {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

#[derive(Debug, Default, Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: Option<String>,
}

pub async fn logout(
    State(app): State<Shared>,
    me: Identity,
    headers: HeaderMap,
    axum::Form(f): axum::Form<LogoutForm>,
) -> Response {
    if let Err(r) = me.check_csrf(super::runs::csrf(&headers, f.csrf.as_deref())) {
        return *r;
    }
    if let auth::Via::Session { id, .. } = &me.via {
        app.sessions.end(id);
    }
    let mut res = Redirect::to("/login").into_response();
    if let Ok(v) = auth::session_cookie("", 0, app.secure_cookies).parse() {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// `GET /api/v1/me`: who the token or session is, and what it may do.
pub async fn me(me: Identity) -> Response {
    let roles: Vec<String> = me
        .roles
        .iter()
        .map(|r| match r {
            auth::Role::Viewer => "viewer".to_string(),
            auth::Role::Operator => "operator".to_string(),
            auth::Role::Admin => "admin".to_string(),
            auth::Role::Approver(g) => format!("approver:{g}"),
        })
        .collect();
    axum::Json(serde_json::json!({"name": me.name, "roles": roles, "groups": me.groups})).into_response()
}
