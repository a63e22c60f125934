//! Approval links, as a `[notify]` webhook carries them to chat or mail: HMAC-signed, bound to
//! one run and gate, expiring, usable once. A link only points: opening it needs a login and
//! the approver role, and deciding is still the gate's policy's call. It never authorises.
use std::path::Path;

use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::auth::Identity;
use super::config::ServeConfig;
use super::pages::fail;
use super::Shared;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// How long a link works.
pub const LINK_TTL_SECS: i64 = 24 * 3600;

pub struct Signer {
    key: Vec<u8>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Claims {
    /// Run id.
    pub r: String,
    /// Gate (step) name.
    pub g: String,
    /// Expiry, Unix seconds.
    pub e: i64,
    /// Nonce: the link works once.
    pub n: String,
}

impl Signer {
    /// The key from `link_secret_env`, else `.runbook/link.key` beside runbook.toml, which
    /// `runbook serve` creates (mode 0600) on first start; others (`create` false) only read
    /// it, and make no links when they cannot.
    pub fn load(config: &ServeConfig, base: &Path, create: bool) -> Result<Option<Signer>, String> {
        if let Some(var) = &config.link_secret_env {
            let v =
                std::env::var(var).map_err(|_| format!("[serve] link_secret_env: the variable {var} is not set"))?;
            if v.len() < 32 {
                return Err(format!("[serve] link_secret_env: {var} must hold at least 32 characters"));
            }
            crate::secret::register(&v, "approval link key");
            return Ok(Some(Signer { key: v.into_bytes() }));
        }
        let path = base.join(".runbook/link.key");
        let read = |p: &Path| -> Result<Option<Signer>, String> {
            let key = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
            if key.len() < 32 {
                return Err(format!(
                    "{}: the approval link key is too short (remove it to make a new one)",
                    p.display()
                ));
            }
            Ok(Some(Signer { key }))
        };
        if path.exists() || !create {
            return if path.exists() { read(&path) } else { Ok(None) };
        }
        // Written whole under another name, then linked into place (never replacing one another
        // process made meanwhile): nobody reads a half-written key.
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = base.join(".runbook");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let tmp = dir.join(format!(".link.key.{}", std::process::id()));
        let key = super::auth::random_token(32).into_bytes();
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&key).and_then(|_| f.sync_all()))
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(Some(Signer { key })),
            Err(_) => read(&path),
        }
    }

    fn mac(&self, payload: &str) -> Vec<u8> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(payload.as_bytes());
        m.finalize().into_bytes().to_vec()
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let payload = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
        let sig = B64.encode(self.mac(&payload));
        format!("{payload}.{sig}")
    }

    /// The claims of a token whose signature holds and which has not expired.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, &'static str> {
        let (payload, sig) = token.split_once('.').ok_or("not an approval link")?;
        let sig = B64.decode(sig).map_err(|_| "not an approval link")?;
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(payload.as_bytes());
        m.verify_slice(&sig).map_err(|_| "this approval link's signature is not valid")?;
        let claims: Claims =
            B64.decode(payload).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or("not an approval link")?;
        if claims.e < now {
            return Err("this approval link has expired");
        }
        Ok(claims)
    }

    /// A new link to a run's gate under `public_url`.
    pub fn link(&self, public_url: &str, run_id: &str, gate: &str) -> String {
        let claims = Claims {
            r: run_id.into(),
            g: gate.into(),
            e: chrono::Utc::now().timestamp() + LINK_TTL_SECS,
            n: super::auth::random_token(12),
        };
        format!("{}/a/{}", public_url.trim_end_matches('/'), self.sign(&claims))
    }
}

/// The link of a waiting run's gate for a webhook, when the console's address is configured.
pub fn for_webhook(run_id: &str, gate: &str) -> Option<String> {
    let cfg = crate::config::get().ok()?;
    let serve = cfg.serve.as_ref()?;
    let public = serve.public_url.as_deref()?;
    let base = cfg.path.as_ref().and_then(|p| p.parent().map(|d| d.to_path_buf())).unwrap_or_else(|| ".".into());
    let signer = Signer::load(serve, &base, false).ok()??;
    Some(signer.link(public, run_id, gate))
}

/// `GET /a/TOKEN`: checks the link, spends it, and shows the gate, to a logged-in approver.
pub async fn open(State(app): State<Shared>, me: Identity, uri: Uri, UrlPath(token): UrlPath<String>) -> Response {
    let Some(signer) = &app.links else {
        return fail(&uri, StatusCode::NOT_FOUND, "approval links are not enabled");
    };
    let claims = match signer.verify(&token, chrono::Utc::now().timestamp()) {
        Ok(c) => c,
        Err(why) => {
            super::runs::audit(&app, &me, "link_refused", "", why).await;
            return fail(&uri, StatusCode::FORBIDDEN, why);
        }
    };
    let run = match app.journal.run(&claims.r).await {
        Ok(Some(r)) => r,
        _ => return fail(&uri, StatusCode::NOT_FOUND, "the link's run is not in the journal"),
    };
    if !me.can_approve(&run.runbook) {
        return fail(
            &uri,
            StatusCode::FORBIDDEN,
            &format!("your roles do not let you approve runbook {}", run.runbook),
        );
    }
    // A gate already decided spends nothing: the link just shows the run.
    // A gate already decided, or one this person may not decide (they asked for the run),
    // spends nothing: the link just shows the run, and the page says why.
    let decidable = match crate::approval::waiting_gate(app.journal.as_ref(), &run).await {
        Ok((g, state)) if g.name == claims.g => {
            let policy = state.effective_policy(me.via_name());
            crate::approval::may_decide(policy.as_ref(), &me.voter(), &state.requesters()).is_ok()
        }
        _ => false,
    };
    if !decidable {
        return Redirect::to(&format!("/runs/{}", run.id)).into_response();
    }
    match app.journal.use_link(&claims.n, &me.name).await {
        Ok(true) => {}
        Ok(false) => {
            super::runs::audit(&app, &me, "link_refused", &run.id, "used before").await;
            return fail(&uri, StatusCode::GONE, "this approval link was used before; open the run from the console");
        }
        Err(e) => return fail(&uri, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
    super::runs::audit(&app, &me, "link_opened", &run.id, &claims.g).await;
    Redirect::to(&format!("/runs/{}#gate", run.id)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_verifies_only_unaltered_and_before_it_expires() {
        let s = Signer { key: b"0123456789abcdef0123456789abcdef".to_vec() };
        let c = Claims { r: "run1".into(), g: "approve: go".into(), e: 1000, n: "x".into() };
        let t = s.sign(&c);
        assert_eq!(s.verify(&t, 999).unwrap(), c);
        assert_eq!(s.verify(&t, 1001).unwrap_err(), "this approval link has expired");
        // Another run in the payload, the old signature: refused.
        let forged = Signer { key: b"0123456789abcdef0123456789abcdef".to_vec() }
            .sign(&Claims { r: "run2".into(), ..c })
            .split_once('.')
            .map(|(p, _)| p.to_string())
            .unwrap()
            + "."
            + t.split_once('.').unwrap().1;
        assert!(s.verify(&forged, 999).unwrap_err().contains("signature"));
        let other = Signer { key: b"another key another key another k".to_vec() };
        assert!(other.verify(&t, 999).is_err());
    }
}
