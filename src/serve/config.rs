//! `[serve]` in runbook.toml: the console's listener, its people (users, groups, roles, API
//! tokens) and the catalogue of runbooks it offers.
use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// The address to listen on (default 127.0.0.1:8080; `--listen` wins).
    pub listen: Option<String>,
    #[serde(default)]
    pub auth: AuthMode,
    /// `auth = "proxy"`: the request header carrying the user name set by the proxy in front
    /// (oauth2-proxy's X-Forwarded-User, for example).
    pub proxy_header: Option<String>,
    /// `auth = "proxy"` off loopback: the proxies' addresses or CIDRs (`10.0.0.5`,
    /// `10.0.0.0/24`); a connection from anywhere else is refused, as it could name any user.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// More names the console answers to (`Host`), besides its listener, loopback and
    /// `public_url`.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Serve plain HTTP on an address that is not loopback (behind a TLS-terminating proxy).
    #[serde(default)]
    pub allow_plain_http: bool,
    /// The console's address as people reach it, for links in webhooks
    /// (`https://runbook.example.com`).
    pub public_url: Option<String>,
    /// The variable holding the key that signs approval links (else a key kept in the journal's
    /// folder, created on first use, readable by its owner only).
    pub link_secret_env: Option<String>,
    /// Runbook files and folders offered by the console (default `runbooks/`).
    #[serde(default)]
    pub runbooks: Vec<String>,
    /// How long a login lasts, in hours (default 12).
    pub session_hours: Option<u64>,
    #[serde(default)]
    pub users: BTreeMap<String, User>,
    #[serde(default)]
    pub groups: BTreeMap<String, Group>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Users log in with their password (argon2id hashes in `[serve.users]`).
    #[default]
    Password,
    /// A reverse proxy in front authenticates; its header names the user.
    Proxy,
    /// No login: only on a loopback listener, everyone is an admin named "local".
    None,
}

/// `[serve.users.alice] password_hash = "$argon2id$...", roles = ["operator"], groups = ["dba"]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// From `runbook serve --hash-password`.
    pub password_hash: Option<String>,
    /// `viewer`, `operator`, `admin`, `approver` (every runbook) or `approver:GLOB`.
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// API tokens, as `runbook serve --new-token` prints their hash (`sha256:...`).
    #[serde(default)]
    pub tokens: Vec<String>,
}

/// `[serve.groups.dba] roles = ["approver:db-*"]`: roles every member has.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    #[serde(default)]
    pub roles: Vec<String>,
}
