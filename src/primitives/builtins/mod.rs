//! Small helpers every runbook has: `secret`, `env`, `sleep`, `now`, `fail`.
pub mod lua;

use std::path::Path;

use crate::secret::Secret;

/// Reads a secret from an environment variable.
pub fn secret_from_env(var: &str, name: &str) -> Result<Secret, String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(Secret::new(name, v)),
        Ok(_) => Err(format!("secret '{name}': environment variable {var} is empty")),
        Err(_) => Err(format!("secret '{name}': environment variable {var} is not set")),
    }
}

/// Reads a secret from a file (trailing newline dropped). Relative paths are relative to the
/// runbook's folder.
pub fn secret_from_file(path: &Path, base: &Path, name: &str) -> Result<Secret, String> {
    let full = if path.is_absolute() { path.to_path_buf() } else { base.join(path) };
    let text =
        std::fs::read_to_string(&full).map_err(|e| format!("secret '{name}': cannot read {}: {e}", full.display()))?;
    let value = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    if value.is_empty() {
        return Err(format!("secret '{name}': {} is empty", full.display()));
    }
    Ok(Secret::new(name, value))
}

/// The current time, UTC, RFC 3339.
pub fn now() -> String {
    crate::clock::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
