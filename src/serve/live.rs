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

use super::auth::Viewer;
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
    /// Open streams, bounded: each holds a connection, and each watched run a tailer.
    open: Arc<std::sync::atomic::AtomicUsize>,
}

/// At most this many live streams at once (a console serves a team, not the internet).
const MAX_STREAMS: usize = 1000;

/// One open stream, counted until it is dropped.
struct Slot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
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
    let mut last = journal.last_event_id(run_id).await.unwrap_or(0);
    let mut ended_for = 0;
    loop {
        tokio::time::sleep(POLL).await;
        if tx.receiver_count() == 0 {
            return;
        }
        let fresh = journal.events_since(run_id, last, 500).await.unwrap_or_default();
        for (id, e) in &fresh {
            last = *id;
            // Redacted again, as the page's log is: the console may know a secret the runner
            // learnt late (its own `--workers`).
            let mut data = e.data.clone();
            crate::secret::redact_json(&mut data);
            let _ = tx.send(Arc::new(Live {
                id: *id,
                event: e.event.clone(),
                step: e.step.as_deref().map(|s| crate::secret::redact(s).into_owned()),
                ts: e.ts.clone(),
                data,
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

pub async fn stream(State(app): State<Shared>, _: Viewer, uri: Uri, Path(id): Path<String>) -> Response {
    let run = match super::runs::find(&app, &uri, &id).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let open = Arc::clone(&app.live.open);
    if open.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= MAX_STREAMS {
        open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        return fail(&uri, StatusCode::SERVICE_UNAVAILABLE, "too many live views open; reload later");
    }
    let slot = Slot(open);
    let rx = app.live.subscribe(app.journal.clone(), &run.id).await;
    Sse::new(events(rx, slot)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

fn events(rx: broadcast::Receiver<Arc<Live>>, slot: Slot) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(Some((rx, slot)), |state| async move {
        let (mut rx, slot) = state?;
        loop {
            match rx.recv().await {
                Ok(live) => {
                    let end = live.event == "end";
                    let data = serde_json::to_string(&*live).unwrap_or_default();
                    let event =
                        Event::default().event(if end { "end" } else { "journal" }).id(live.id.to_string()).data(data);
                    return Some((Ok(event), if end { None } else { Some((rx, slot)) }));
                }
                // A slow viewer missed some: it refetches the timeline anyway.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}
