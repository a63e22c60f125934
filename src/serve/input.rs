//! A request body as a form (the console's pages) or JSON (the API), by its content type.
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use axum::response::Response;
use serde::de::DeserializeOwned;

pub struct Input<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Input<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let uri = req.uri().clone();
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let bad = |e: String| super::pages::fail(&uri, StatusCode::BAD_REQUEST, &e);
        let typed = req.headers().contains_key(header::CONTENT_TYPE);
        if !typed {
            // A bare `curl -X POST` (a cancel, a resume): no body, no fields.
            let body = axum::body::to_bytes(req.into_body(), 64 * 1024).await.map_err(|e| bad(e.to_string()))?;
            if !body.is_empty() {
                return Err(bad("give the body a Content-Type: application/json or a form".into()));
            }
            return serde_json::from_str::<T>("{}").map(Input).map_err(|e| bad(e.to_string()));
        }
        if json {
            axum::Json::<T>::from_request(req, state).await.map(|j| Input(j.0)).map_err(|e| bad(e.body_text()))
        } else {
            axum::Form::<T>::from_request(req, state).await.map(|f| Input(f.0)).map_err(|e| bad(e.body_text()))
        }
    }
}
