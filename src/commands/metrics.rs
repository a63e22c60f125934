//! `--metrics-file`: node_exporter textfile-collector metrics of a runbook, written atomically
//! (a temporary file renamed over the old one) after each run. One file per runbook.
use std::fmt::Write;
use std::path::Path;

use crate::journal::{Journal, RunFilter, RunStatus, StepStatus};

fn epoch(ts: &str) -> Option<f64> {
    chrono::DateTime::parse_from_rfc3339(ts).ok().map(|t| t.timestamp_millis() as f64 / 1000.0)
}

/// A label value as the text format wants it.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Writes the metrics of `runbook` after run `run_id`.
pub async fn write(journal: &dyn Journal, run_id: &str, path: &Path) -> Result<(), String> {
    let run = journal.run(run_id).await.map_err(|e| e.to_string())?.ok_or("the run is not in the journal")?;
    let name = label(&run.runbook);
    let history = journal
        // Every run of the runbook the journal holds: a counter must never go down.
        .runs(&RunFilter { runbook: Some(run.runbook.clone()), limit: i64::MAX, ..RunFilter::default() })
        .await
        .map_err(|e| e.to_string())?;
    let last_success = history
        .iter()
        .find(|r| r.status == RunStatus::Succeeded)
        .and_then(|r| r.finished_at.as_deref().and_then(epoch));
    let mut failures = 0u64;
    for r in &history {
        failures += journal
            .steps(&r.id)
            .await
            .map_err(|e| e.to_string())?
            .iter()
            .filter(|s| s.status == StepStatus::Failed)
            .count() as u64;
    }
    let ended = run.finished_at.as_deref().and_then(epoch).unwrap_or_else(|| chrono::Utc::now().timestamp() as f64);
    let duration = epoch(&run.started_at).map(|s| ((ended - s).max(0.0) * 1000.0).round() / 1000.0).unwrap_or(0.0);
    let status = run.effective_status();
    let mut out = String::new();
    let mut metric = |name_: &str, kind: &str, help: &str, lines: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name_} {help}");
        let _ = writeln!(out, "# TYPE {name_} {kind}");
        for (labels, v) in lines {
            let _ = writeln!(out, "{name_}{{{labels}}} {v}");
        }
    };
    metric(
        "runbook_last_run_timestamp_seconds",
        "gauge",
        "When the last run of the runbook ended (Unix time).",
        vec![(format!("runbook=\"{name}\""), ended)],
    );
    metric(
        "runbook_last_success_timestamp_seconds",
        "gauge",
        "When the last successful run of the runbook ended (Unix time; 0 when none).",
        vec![(format!("runbook=\"{name}\""), last_success.unwrap_or(0.0))],
    );
    metric(
        "runbook_run_duration_seconds",
        "gauge",
        "How long the last run took.",
        vec![(format!("runbook=\"{name}\""), duration)],
    );
    metric(
        "runbook_run_status",
        "gauge",
        "1 for the status of the last run, 0 for the others.",
        RunStatus::ALL
            .iter()
            .map(|s| (format!("runbook=\"{name}\",status=\"{}\"", s.as_str()), if status == *s { 1.0 } else { 0.0 }))
            .collect(),
    );
    metric(
        "runbook_step_failures_total",
        "counter",
        "Steps that failed, over every run of the runbook in the journal.",
        vec![(format!("runbook=\"{name}\""), failures as f64)],
    );
    // A unique temporary file beside the target, synced, then renamed over it.
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".runbook-metrics-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    use std::io::Write as _;
    tmp.write_all(out.as_bytes()).and_then(|_| tmp.as_file().sync_all()).map_err(|e| e.to_string())?;
    crate::files::check_replaceable(path)?;
    tmp.persist(path).map(|_| ()).map_err(|e| format!("{}: {e}", path.display()))
}
