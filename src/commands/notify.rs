//! `[notify]` of runbook.toml: a JSON webhook (Slack-compatible `text`) posted when a run ends
//! with one of the configured statuses. A failure to notify is reported; it does not change the
//! run's exit code.
use std::time::Duration;

use crate::journal::{Journal, StepStatus};
use crate::primitives::http::{Body, ClientKey, Expect, Request};

/// Posts the run's outcome when runbook.toml asks for it.
pub async fn after_run(journal: &dyn Journal, run_id: &str) -> Result<(), String> {
    let config = crate::config::get()?;
    let Some(notify) = &config.notify else { return Ok(()) };
    let run = journal.run(run_id).await.map_err(|e| e.to_string())?.ok_or("the run is not in the journal")?;
    let status = run.effective_status();
    if !notify.on.iter().any(|s| s == status.as_str()) {
        return Ok(());
    }
    let Some(url) = notify.url()? else { return Ok(()) };
    let steps = journal.steps(run_id).await.map_err(|e| e.to_string())?;
    let failed = steps.iter().find(|s| s.status == StepStatus::Failed);
    let host = run.owner.host.clone();
    let text = format!(
        "runbook {}: run {} {}{} on {host}",
        run.runbook,
        run.id,
        status.as_str().replace('_', " "),
        failed.map(|s| format!(" at step '{}'", s.name)).unwrap_or_default()
    );
    let payload = serde_json::json!({
        "text": text,
        "runbook": run.runbook,
        "run_id": run.id,
        "status": status.as_str(),
        "failed_step": failed.map(|s| s.name.clone()),
        "error": run.error,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "host": host,
        "resume": format!("runbook resume {}", run.id),
    });
    let mut payload = payload;
    // A run waiting at a gate: a link to the gate in the console (signed, expiring, single-use;
    // opening it still needs a login as an approver).
    if status == crate::journal::RunStatus::WaitingApproval {
        if let Some(gate) = steps.iter().find(|s| s.status == StepStatus::Waiting) {
            payload["gate"] = gate.name.trim_start_matches(crate::engine::GATE_PREFIX).into();
            if let Some(link) = crate::serve::links::for_webhook(&run.id, &gate.name) {
                payload["text"] = format!("{text}: {link}").into();
                payload["approve_url"] = link.into();
            }
        }
    }
    crate::secret::redact_json(&mut payload);
    let req = Request {
        method: reqwest::Method::POST,
        url: crate::primitives::http::parse_url(&url).map_err(|e| e.to_string())?,
        headers: vec![],
        query: vec![],
        body: Body::Json(payload),
        timeout: Duration::from_secs(10),
        retries: 2,
        retry_delay: Duration::from_secs(1),
        expect: Expect::Success { redirects: false },
        client: ClientKey { insecure: false, ca: None, follow_redirects: true, carries_secrets: true },
    };
    crate::primitives::http::send(&req, |_| {})
        .await
        .map_err(|e| crate::secret::redact(&e.to_string()).into_owned())?;
    Ok(())
}
