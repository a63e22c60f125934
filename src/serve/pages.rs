//! Rendering: the templates (auto-escaped HTML), the static CSS and JS, error pages, and the
//! one reply helper that answers a page or, under `/api/v1`, its JSON.
use axum::http::{header, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use minijinja::{AutoEscape, Environment};

use super::auth::Identity;
use super::App;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("runs.html", include_str!("templates/runs.html")),
    ("run.html", include_str!("templates/run.html")),
    ("timeline.html", include_str!("templates/timeline.html")),
    ("runbooks.html", include_str!("templates/runbooks.html")),
    ("runbook.html", include_str!("templates/runbook.html")),
    ("table.html", include_str!("templates/table.html")),
];

pub fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    for (name, source) in TEMPLATES {
        // The templates are part of the binary: one that does not parse fails every test.
        env.add_template(name, source).unwrap_or_else(|e| panic!("template {name}: {e}"));
    }
    env
}

pub fn is_api(uri: &Uri) -> bool {
    uri.path().starts_with("/api/")
}

/// A page rendered from `template` with `data`, or the same data as JSON under `/api/v1`.
pub fn reply(app: &App, me: &Identity, uri: &Uri, template: &str, data: serde_json::Value) -> Response {
    if is_api(uri) {
        return axum::Json(data).into_response();
    }
    let ctx = minijinja::context! {
        me => minijinja::context! {
            name => me.name.clone(),
            csrf => me.csrf(),
            admin => me.is_admin(),
            operator => me.can_operate(),
            session => matches!(me.via, super::auth::Via::Session { .. }),
        },
        d => minijinja::Value::from_serialize(&data),
    };
    match app.templates.get_template(template).and_then(|t| t.render(ctx)) {
        Ok(html) => Html(html).into_response(),
        Err(e) => error_page(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot render {template}: {e}")),
    }
}

/// A refusal or failure, as a page or JSON.
pub fn fail(uri: &Uri, status: StatusCode, message: &str) -> Response {
    // What went wrong inside (a database error, its tables and constraints) is for the log.
    let message = if status.is_server_error() {
        tracing::warn!("console: {} {}: {}", status.as_u16(), uri.path(), crate::secret::redact(message));
        "something went wrong in the console; its log says what".to_string()
    } else {
        crate::secret::redact(message).into_owned()
    };
    if is_api(uri) {
        return (status, axum::Json(serde_json::json!({"error": message}))).into_response();
    }
    error_page(status, &message)
}

pub fn error_page(status: StatusCode, message: &str) -> Response {
    let message = escape(&crate::secret::redact(message));
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{status}</title>\
         <link rel=\"stylesheet\" href=\"/static/app.css\"></head><body><main><h1>{status}</h1>\
         <p class=\"error\">{message}</p><p><a href=\"/runs\">runs</a></p></main></body></html>"
    );
    (status, Html(body)).into_response()
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

pub async fn css() -> Response {
    static_file("text/css; charset=utf-8", include_str!("static/app.css"))
}

pub async fn js() -> Response {
    static_file("text/javascript; charset=utf-8", include_str!("static/app.js"))
}

fn static_file(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "max-age=300")], body).into_response()
}
