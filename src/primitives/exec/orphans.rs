//! Local commands left running by an earlier attempt. Every command `exec` starts carries its
//! attempt's label in the environment variable [`LABEL_VAR`], which its children and their
//! children inherit, also those that left its process group or outlived a runner killed with
//! SIGKILL. An attempt that follows an earlier one finds them in `/proc` (this user's
//! processes only) and stops them: SIGTERM, then SIGKILL after a grace period.
use std::time::{Duration, Instant};

use crate::engine::WorkLabel;

/// The variable naming the run, step and attempt a command belongs to.
pub const LABEL_VAR: &str = "RUNBOOK_WORK";

/// How long stopped processes get between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(3);

/// A process of ours carrying a label.
struct Found {
    pid: i32,
    label: String,
    command: String,
}

/// This user's processes whose label `wanted` accepts (never this process).
fn find(wanted: impl Fn(&str) -> bool) -> Vec<Found> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let prefix = format!("{LABEL_VAR}=");
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            // Another user's environ cannot be read: their processes are not ours to stop.
            let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let label = environ
                .split(|&b| b == 0)
                .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
                .map(|v| String::from_utf8_lossy(v).into_owned())?;
            if !wanted(&label) {
                return None;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let command = String::from_utf8_lossy(&cmdline).replace('\0', " ").trim().to_string();
            Some(Found { pid, label, command })
        })
        .collect()
}

fn alive(pid: i32) -> bool {
    // A zombie has exited; only its parent's wait is missing.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Stops the processes found (TERM, then KILL past the grace period); one line per process.
async fn stop(found: Vec<Found>, why: &str) -> Vec<String> {
    if found.is_empty() {
        return Vec::new();
    }
    for f in &found {
        // SAFETY: signals to a process of this user found by its label.
        unsafe { libc::kill(f.pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + GRACE;
    while found.iter().any(|f| alive(f.pid)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    found
        .iter()
        .map(|f| {
            let how = if alive(f.pid) {
                // SAFETY: as above.
                unsafe { libc::kill(f.pid, libc::SIGKILL) };
                "SIGKILL (it ignored SIGTERM)"
            } else {
                "SIGTERM"
            };
            let command = crate::secret::redact(&f.command).into_owned();
            format!("stopped local process {} `{command}` left running by {} ({why}): {how}", f.pid, f.label)
        })
        .collect()
}

/// Before the first command of an attempt that follows an earlier one: stops what earlier
/// attempts of the same step left running on this machine.
pub async fn stop_earlier(label: &WorkLabel) -> Vec<String> {
    let Some(prefix) = &label.run_prefix else { return Vec::new() };
    if !label.rerun {
        return Vec::new();
    }
    if prefix.is_empty() {
        return Vec::new();
    }
    // Earlier attempts of this step only: a process an earlier, completed step started on
    // purpose (a server put in the background) is not this attempt's to stop.
    let Some((step, _)) = label.text.rsplit_once('#') else { return Vec::new() };
    let step = format!("{step}#");
    let found = find(|l| l.starts_with(&step) && l != label.text);
    stop(found, "an earlier attempt").await
}

/// Whether no command ran yet under this attempt's label in this process (earlier attempts are
/// looked for once per attempt).
fn first_command_of(label: &str) -> bool {
    static LAST: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    if *last == label {
        return false;
    }
    label.clone_into(&mut last);
    true
}

/// [`stop_earlier`], once per attempt: before the first local command (exec, a backup tool)
/// of an attempt that follows an earlier one.
pub async fn stop_earlier_once(label: &WorkLabel) -> Vec<String> {
    if label.rerun && first_command_of(&label.text) {
        stop_earlier(label).await
    } else {
        Vec::new()
    }
}

/// After an attempt was abandoned (timeout, cancel, stop): what it still has running here.
pub async fn stop_abandoned(label: &WorkLabel) -> Vec<String> {
    if label.run_prefix.is_none() {
        return Vec::new();
    }
    stop(find(|l| l == label.text), "an abandoned attempt").await
}
