//! Live runs: one tailer per watched run reads the journal's new events every 100 ms and
//! broadcasts them to every open stream (server-sent events), so fifty viewers of a run cost
//! one query, not fifty. The tailer stops when its last viewer leaves or the run ends.
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use tokio::sync::broadcast;

use super::auth::Identity;
use super::pages::fail;
use super::Shared;
use crate::journal::Journal;

/// What a stream sends: a journal event, or the end of the run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Live {
    pub id: i64,
    pub event: String,
    pub step: Option<String>,
    pub ts: String,
    pub data: serde_json::Value,
}

#[derive(Default)]
pub struct Tails {
    map: Arc<Mutex<HashMap<String, broadcast::Sender<Arc<Live>>>>>,
}

const POLL: Duration = Duration::from_millis(100);

impl Tails {
    /// A receiver of the run's events from now on, starting its tailer if none runs.
    pub async fn subscribe(&self, journal: Arc<dyn Journal>, run_id: &str) -> broadcast::Receiver<Arc<Live>> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = map.get(run_id) {
            return tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(1024);
        map.insert(run_id.to_string(), tx.clone());
        drop(map);
        let run_id = run_id.to_string();
        let map = Arc::clone(&self.map);
        tokio::spawn(async move {
            tail(journal, &run_id, tx).await;
            map.lock().unwrap_or_else(|p| p.into_inner()).remove(&run_id);
        });
        rx
    }
}

async fn tail(journal: Arc<dyn Journal>, run_id: &str, tx: broadcast::Sender<Arc<Live>>) {
    // From the newest event on: what came before is on the page already.
    let mut last = match journal.events_since(run_id, 0, i64::MAX).await {
        Ok(all) => all.last().map_or(0, |(id, _)| *id),
        Err(_) => 0,
    };
    let mut ended_for = 0;
    loop {
        tokio::time::sleep(POLL).await;
        if tx.receiver_count() == 0 {
            return;
        }
        let fresh = journal.events_since(run_id, last, 500).await.unwrap_or_default();
        for (id, e) in &fresh {
            last = *id;
            let _ = tx.send(Arc::new(Live {
                id: *id,
                event: e.event.clone(),
                step: e.step.clone(),
                ts: e.ts.clone(),
                data: e.data.clone(),
            }));
        }
        if fresh.is_empty() {
            // A run that ended (or failed) sends "end" once its last events are out. One at a
            // gate, queued or interrupted goes on being watched: a decision moves it.
            let stopped = journal.run(run_id).await.ok().flatten().is_none_or(|r| {
                let s = r.effective_status();
                s.is_final() || s == crate::journal::RunStatus::Failed
            });
            ended_for = if stopped { ended_for + 1 } else { 0 };
            if ended_for >= 3 {
                let _ = tx.send(Arc::new(Live {
                    id: last,
                    event: "end".into(),
                    step: None,
                    ts: crate::journal::now_ts(),
                    data: serde_json::Value::Null,
                }));
                return;
            }
        }
    }
}

pub async fn stream(State(app): State<Shared>, me: Identity, uri: Uri, Path(id): Path<String>) -> Response {
    if !me.can_view() {
        return fail(&uri, StatusCode::FORBIDDEN, "your roles do not include viewer");
    }
    let run = match app.journal.find_run(&id).await {
        Ok(r) => r,
        Err(e) => return fail(&uri, StatusCode::NOT_FOUND, &e.to_string()),
    };
    let rx = app.live.subscribe(app.journal.clone(), &run.id).await;
    Sse::new(events(rx)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

fn events(rx: broadcast::Receiver<Arc<Live>>) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        loop {
            match rx.recv().await {
                Ok(live) => {
                    let end = live.event == "end";
                    let data = serde_json::to_string(&*live).unwrap_or_default();
                    let event =
                        Event::default().event(if end { "end" } else { "journal" }).id(live.id.to_string()).data(data);
                    return Some((Ok(event), if end { None } else { Some(rx) }));
                }
                // A slow viewer missed some: it refetches the timeline anyway.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}
