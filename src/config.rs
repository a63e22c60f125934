//! `runbook.toml`: the project's configuration (today the SSH inventory). Found in the current
//! directory or the nearest one above it, or given with `--config` / `RUNBOOK_CONFIG`; read once
//! per process, and a bad file is reported with its line before anything runs.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::Deserialize;

use crate::primitives::ssh::inventory::Group;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// SSH host groups: `[hosts.web] hosts = ["10.0.0.5", "web-2:2222"], user = "deploy"`.
    #[serde(default)]
    pub hosts: BTreeMap<String, Group>,
    /// `[notify]`: a webhook posted when a run ends badly.
    pub notify: Option<Notify>,
    /// The journal every command uses when `--state` / RUNBOOK_STATE is not given (a path,
    /// sqlite://PATH or postgres://…; prefer RUNBOOK_STATE for a URL with a password).
    pub state: Option<String>,
    /// `[[schedule]]`: runbooks the built-in scheduler runs (`runbook schedule`).
    #[serde(default, rename = "schedule")]
    pub schedules: Vec<crate::scheduler::ScheduleEntry>,
    /// `[serve]`: the web console's listener, users, groups and catalogue.
    pub serve: Option<crate::serve::config::ServeConfig>,
    /// The schedules, checked (filled by `load`).
    #[serde(skip)]
    pub checked_schedules: Vec<crate::scheduler::Schedule>,
    /// The file it came from (None: no file).
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// `[notify] webhook = "https://hooks.example.com/..."` (or `webhook_env = "SLACK_WEBHOOK"`, as
/// the URL is often a secret), `on = ["failed", ...]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    pub webhook: Option<String>,
    pub webhook_env: Option<String>,
    /// Run statuses that notify (default: failed, rolled_back, rollback_failed).
    #[serde(default = "Notify::default_on")]
    pub on: Vec<String>,
}

impl Notify {
    fn default_on() -> Vec<String> {
        ["failed", "rolled_back", "rollback_failed"].map(String::from).to_vec()
    }

    /// The webhook URL (registered as a secret: it often carries a token), if configured.
    pub fn url(&self) -> Result<Option<String>, String> {
        let url = match (&self.webhook, &self.webhook_env) {
            (Some(u), None) => u.clone(),
            (None, Some(var)) => match std::env::var(var) {
                Ok(u) if !u.is_empty() => u,
                _ => return Err(format!("[notify] webhook_env: the variable {var} is not set")),
            },
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => return Err("[notify]: give webhook or webhook_env, not both".into()),
        };
        crate::secret::register(&url, "notify webhook");
        // Errors show the URL as parsed (normalised, credentials stripped): those forms too.
        if let Ok(parsed) = crate::primitives::http::parse_url(&url) {
            crate::secret::register(parsed.as_str(), "notify webhook");
            crate::secret::register(&crate::primitives::http::shown_url(&parsed), "notify webhook");
        }
        Ok(Some(url))
    }
}

static EXPLICIT: OnceLock<Option<PathBuf>> = OnceLock::new();
static LOADED: OnceLock<Result<Arc<Config>, String>> = OnceLock::new();

/// Sets the file given on the command line (before the first `get`).
pub fn init(explicit: Option<PathBuf>) {
    let _ = EXPLICIT.set(explicit);
}

/// The configuration: the explicit file, else `runbook.toml` here or above, else empty.
pub fn get() -> Result<Arc<Config>, String> {
    LOADED
        .get_or_init(|| {
            let path = match EXPLICIT.get().cloned().flatten() {
                Some(p) if !p.exists() => return Err(format!("config file {} does not exist", p.display())),
                Some(p) => Some(p),
                None => find(&std::env::current_dir().unwrap_or_default()),
            };
            match path {
                None => Ok(Arc::new(Config::default())),
                Some(p) => load(&p).map(Arc::new),
            }
        })
        .clone()
}

fn find(start: &Path) -> Option<PathBuf> {
    start.ancestors().map(|d| d.join("runbook.toml")).find(|p| p.is_file())
}

/// Reads and checks one file; errors name the file and line.
pub fn load(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut config: Config = toml::from_str(&text).map_err(|e| {
        let mut line = e.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        // An unknown key is reported at its table: point at the key's own line.
        if let (Some(l), Some(key)) =
            (line, e.message().strip_prefix("unknown field `").and_then(|m| m.split('`').next()))
        {
            let own =
                text.lines().enumerate().skip(l.saturating_sub(1)).find(|(_, t)| {
                    t.trim_start().strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('='))
                });
            line = own.map(|(i, _)| i + 1).or(line);
        }
        match line {
            Some(l) => format!("{}:{l}: {}", path.display(), e.message()),
            None => format!("{}: {}", path.display(), e.message()),
        }
    })?;
    if let Some(n) = &config.notify {
        let statuses: Vec<&str> = crate::journal::RunStatus::ALL.iter().map(|s| s.as_str()).collect();
        if let Some(bad) = n.on.iter().find(|s| !statuses.contains(&s.as_str())) {
            return Err(format!(
                "{}: [notify] on: unknown status '{bad}' (one of {})",
                path.display(),
                statuses.join(", ")
            ));
        }
        if n.webhook.is_some() == n.webhook_env.is_some() {
            return Err(format!("{}: [notify]: give webhook or webhook_env (one of them)", path.display()));
        }
    }
    for (name, group) in &config.hosts {
        group.check().map_err(|e| format!("{}: [hosts.{name}]: {e}", path.display()))?;
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    config.checked_schedules =
        crate::scheduler::check(&config.schedules, dir).map_err(|e| format!("{}: {e}", path.display()))?;
    config.path = Some(path.to_path_buf());
    Ok(config)
}
