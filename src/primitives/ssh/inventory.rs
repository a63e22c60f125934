//! The SSH inventory of `runbook.toml`: named groups of hosts with shared settings and
//! per-host overrides.
//!
//! ```toml
//! [hosts.web]
//! hosts = ["10.0.0.5", "web-2:2222"]
//! user = "deploy"
//! key = "~/.ssh/id_ed25519"
//! known_hosts = "~/.ssh/known_hosts"
//! host_key = "strict"
//!
//! [hosts.web.overrides."web-2:2222"]
//! user = "admin"
//! ```
use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::HostKeyPolicy;

/// Connection settings, from a group, an override or `ssh.connect`'s options.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSettings {
    pub user: Option<String>,
    pub port: Option<u16>,
    /// A private key file (`~` expands).
    pub key: Option<String>,
    pub known_hosts: Option<String>,
    pub host_key: Option<HostKeyPolicy>,
    #[serde(default, deserialize_with = "crate::duration::de_opt")]
    pub timeout: Option<Duration>,
    pub agent: Option<bool>,
}

impl HostSettings {
    /// `self` where set, else `base`.
    pub fn or(&self, base: &HostSettings) -> HostSettings {
        HostSettings {
            user: self.user.clone().or_else(|| base.user.clone()),
            port: self.port.or(base.port),
            key: self.key.clone().or_else(|| base.key.clone()),
            known_hosts: self.known_hosts.clone().or_else(|| base.known_hosts.clone()),
            host_key: self.host_key.or(base.host_key),
            timeout: self.timeout.or(base.timeout),
            agent: self.agent.or(base.agent),
        }
    }
}

/// `[hosts.NAME]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub hosts: Vec<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub key: Option<String>,
    pub known_hosts: Option<String>,
    pub host_key: Option<HostKeyPolicy>,
    #[serde(default, deserialize_with = "crate::duration::de_opt")]
    pub timeout: Option<Duration>,
    pub agent: Option<bool>,
    /// Settings of single hosts, by their spec as listed in `hosts`.
    #[serde(default)]
    pub overrides: BTreeMap<String, HostSettings>,
}

impl Group {
    pub fn settings(&self) -> HostSettings {
        HostSettings {
            user: self.user.clone(),
            port: self.port,
            key: self.key.clone(),
            known_hosts: self.known_hosts.clone(),
            host_key: self.host_key,
            timeout: self.timeout,
            agent: self.agent,
        }
    }

    pub fn check(&self) -> Result<(), String> {
        for h in &self.hosts {
            super::parse_spec(h).map_err(|e| e.to_string())?;
        }
        for name in self.overrides.keys() {
            if !self.hosts.contains(name) {
                return Err(format!("override for '{name}', which is not in hosts"));
            }
        }
        Ok(())
    }
}

/// The inventory's settings for a host spec: its group's, with its override on top (the first
/// group that lists it).
pub fn settings_for(config: &crate::config::Config, spec: &str) -> HostSettings {
    for group in config.hosts.values() {
        if group.hosts.iter().any(|h| h == spec) {
            let base = group.settings();
            return match group.overrides.get(spec) {
                Some(o) => o.or(&base),
                None => base,
            };
        }
    }
    HostSettings::default()
}

/// Expands a leading `~/`.
pub fn expand_home(path: &str) -> std::path::PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => std::path::Path::new(&home).join(rest),
        _ => path.into(),
    }
}
