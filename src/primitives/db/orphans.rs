//! Server-side work that outlives its attempt. Every database session names the run, step and
//! attempt it works for (PostgreSQL: `application_name`; MySQL/MariaDB: a leading comment on each
//! statement, which `SHOW PROCESSLIST` shows), so that work an abandoned attempt left running (a
//! killed runner's `REINDEX CONCURRENTLY`, a statement whose step timed out or was cancelled) can
//! be found and stopped before the step runs again: PostgreSQL cancels it, then terminates the
//! backend after a grace period (at once for a session idle in a transaction, which a cancel does
//! not end); MySQL kills the query.
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sqlx::Row;

use super::{Db, Pool};
use crate::engine::WorkLabel;

/// How long a cancelled statement may take to stop before its backend is terminated.
const GRACE: Duration = Duration::from_secs(3);

/// Every database connection (pool) this process opened and still holds.
static LIVE: Mutex<Vec<Weak<Db>>> = Mutex::new(Vec::new());

pub fn register(db: &Arc<Db>) {
    let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    live.retain(|w| w.strong_count() > 0);
    live.push(Arc::downgrade(db));
}

fn live() -> Vec<Arc<Db>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner()).iter().filter_map(Weak::upgrade).collect()
}

/// The label sessions of this pool carry, and when it last changed: a pooled connection older
/// than the change is not handed out again (it would show the old step).
pub struct Label {
    pub text: String,
    pub since: Instant,
}

impl Default for Label {
    fn default() -> Self {
        Label { text: "runbook".into(), since: Instant::now() }
    }
}

/// Which sessions to stop.
enum Target<'a> {
    /// The run's sessions of any other label: left by an earlier attempt or a dead runner.
    EarlierThan { run_prefix: &'a str, current: &'a str },
    /// Exactly this attempt's sessions: its step timed out or was cancelled.
    Exactly(&'a str),
}

impl Db {
    /// Labels the following statements; true when the label changed.
    pub fn set_label(&self, text: &str) -> bool {
        let mut l = self.label.lock().unwrap_or_else(|p| p.into_inner());
        if l.text == text {
            return false;
        }
        *l = Label { text: text.to_string(), since: Instant::now() };
        true
    }

    pub fn label(&self) -> String {
        self.label.lock().unwrap_or_else(|p| p.into_inner()).text.clone()
    }

    /// Before the statements of an attempt that follows an earlier one: stops what earlier
    /// attempts of the run left on this server. Returns what was stopped, in words.
    ///
    /// Never runs beside it: when some of it is still there after the stop (it would not die),
    /// the error says so and the attempt fails instead.
    pub async fn stop_earlier(&self, label: &WorkLabel) -> Result<Vec<String>, String> {
        let Some(prefix) = &label.run_prefix else { return Ok(Vec::new()) };
        let target = Target::EarlierThan { run_prefix: prefix, current: &label.text };
        let said = self.stop(target).await;
        let Pool::Postgres(p) = &self.pool else { return Ok(said) };
        let target = Target::EarlierThan { run_prefix: prefix, current: &label.text };
        let Ok(mut side) = side(p).await else { return Ok(said) };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = match pg_sessions(&mut side, &target).await {
                Ok(rows) => rows,
                Err(_) => return Ok(said),
            };
            if left.is_empty() {
                return Ok(said);
            }
            if Instant::now() >= deadline {
                let pids: Vec<String> = left.iter().map(|(pid, ..)| pid.to_string()).collect();
                return Err(format!(
                    "{}; work of an earlier attempt is still running on {} (backend {}), so this attempt does not run beside it: stop it (pg_terminate_backend) and retry",
                    said.join("; "),
                    self.target,
                    pids.join(", ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(&self, target: Target<'_>) -> Vec<String> {
        let result = match &self.pool {
            Pool::Postgres(p) => match side(p).await {
                Ok(mut c) => stop_pg(&mut c, &target).await,
                Err(e) => Err(e),
            },
            Pool::MySql(p) => stop_mysql(p, &target).await,
            Pool::Sqlite(_) => Ok(Vec::new()),
        };
        result.unwrap_or_else(|e| {
            vec![format!(
                "could not look for work left running on {}: {e} (stop it by hand if it is there)",
                self.target
            )]
        })
    }
}

/// After an attempt was abandoned (its step timed out, the run was cancelled or stopped by a
/// signal): stops its statements still running on every server this process is connected to.
pub async fn stop_abandoned(label: &WorkLabel) -> Vec<String> {
    let mut said = Vec::new();
    if label.run_prefix.is_none() {
        return said;
    }
    for db in live() {
        said.extend(db.stop(Target::Exactly(&label.text)).await);
    }
    said
}

/// A connection of its own to the pool's server, for stopping work: the pool's connections may
/// all be busy with the very work to stop (a pool of one, the REPL's one session).
async fn side(pool: &sqlx::PgPool) -> Result<sqlx::PgConnection, sqlx::Error> {
    use sqlx::ConnectOptions;
    pool.connect_options().connect().await
}

fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// The sessions a target names that are not idle: (pid, state, application_name, query).
async fn pg_sessions(
    conn: &mut sqlx::PgConnection,
    target: &Target<'_>,
) -> Result<Vec<(i32, String, String, String)>, sqlx::Error> {
    let (pattern, current) = match target {
        Target::EarlierThan { run_prefix, current } => (format!("{}%", like_escape(run_prefix)), current.to_string()),
        Target::Exactly(label) => (like_escape(label), String::new()),
    };
    let rows = sqlx::query(
        "SELECT pid, coalesce(state, '') AS state, application_name,
                left(regexp_replace(coalesce(query, ''), '\\s+', ' ', 'g'), 100) AS query
         FROM pg_stat_activity
         WHERE application_name LIKE $1 ESCAPE '\\' AND application_name <> $2
           AND state IS NOT NULL AND state <> 'idle' AND pid <> pg_backend_pid()",
    )
    .bind(&pattern)
    .bind(&current)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((row.try_get("pid")?, row.try_get("state")?, row.try_get("application_name")?, row.try_get("query")?))
        })
        .collect()
}

async fn stop_pg(conn: &mut sqlx::PgConnection, target: &Target<'_>) -> Result<Vec<String>, sqlx::Error> {
    let mut said = Vec::new();
    let mut waiting = Vec::new();
    for (pid, state, app, query) in pg_sessions(&mut *conn, target).await? {
        let what = format!("PostgreSQL backend {pid} of {app} ({state}: `{query}`)");
        if state == "active" {
            let ok: Option<bool> =
                sqlx::query_scalar("SELECT pg_cancel_backend($1)").bind(pid).fetch_one(&mut *conn).await?;
            if ok == Some(true) {
                waiting.push((pid, what));
            } else {
                said.push(format!("could not cancel {what}: not allowed (pg_signal_backend?)"));
            }
        } else {
            // Idle in a transaction (its locks held): a cancel would not end it.
            let ok: Option<bool> =
                sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(pid).fetch_one(&mut *conn).await?;
            said.push(if ok == Some(true) {
                format!("stopped work left running by an earlier attempt: terminated {what}")
            } else {
                format!("could not terminate {what}: not allowed (pg_signal_backend?)")
            });
        }
    }
    if waiting.is_empty() {
        return Ok(said);
    }
    let pids: Vec<i32> = waiting.iter().map(|(p, _)| *p).collect();
    let deadline = Instant::now() + GRACE;
    let mut still: Vec<i32> = pids.clone();
    while !still.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        still = busy_pids(&mut *conn, &pids).await?;
    }
    for (pid, what) in waiting {
        if still.contains(&pid) {
            let ok: Option<bool> =
                sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(pid).fetch_one(&mut *conn).await?;
            said.push(if ok == Some(true) {
                format!(
                    "stopped work left running by an earlier attempt: cancelled {what}, then terminated it after {}s",
                    GRACE.as_secs()
                )
            } else {
                format!("cancelled {what}, but it did not stop and could not be terminated")
            });
        } else {
            said.push(format!("stopped work left running by an earlier attempt: cancelled {what}"));
        }
    }
    // A terminated backend ends asynchronously: wait (briefly) until it is gone.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && !busy_pids(&mut *conn, &pids).await?.is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(said)
}

/// Those of `pids` still running a statement or holding a transaction open.
async fn busy_pids(conn: &mut sqlx::PgConnection, pids: &[i32]) -> Result<Vec<i32>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE pid = ANY($1) AND coalesce(state, '') NOT IN ('idle', '')",
    )
    .bind(pids)
    .fetch_all(&mut *conn)
    .await
}

async fn stop_mysql(pool: &sqlx::MySqlPool, target: &Target<'_>) -> Result<Vec<String>, sqlx::Error> {
    use sqlx::ConnectOptions;
    let mut side = pool.connect_options().connect().await?;
    stop_mysql_on(&mut side, target).await
}

async fn stop_mysql_on(conn: &mut sqlx::MySqlConnection, target: &Target<'_>) -> Result<Vec<String>, sqlx::Error> {
    let (pattern, current) = match target {
        Target::EarlierThan { run_prefix, current } => {
            (format!("/* {}%", like_escape(run_prefix)), format!("/* {} */%", like_escape(current)))
        }
        Target::Exactly(label) => (format!("/* {} */%", like_escape(label)), String::new()),
    };
    let rows = sqlx::query(
        "SELECT ID, COMMAND, LEFT(INFO, 100) AS INFO FROM information_schema.PROCESSLIST
         WHERE INFO LIKE ? AND INFO NOT LIKE ? AND ID <> CONNECTION_ID()",
    )
    .bind(&pattern)
    .bind(if current.is_empty() { "\u{1}".to_string() } else { current })
    .fetch_all(&mut *conn)
    .await?;
    let mut said = Vec::new();
    for row in rows {
        // BIGINT on MariaDB, BIGINT UNSIGNED on MySQL.
        let id: i64 = row.try_get::<i64, _>("ID").or_else(|_| row.try_get::<u64, _>("ID").map(|v| v as i64))?;
        let info: Option<String> = row.try_get("INFO")?;
        let info = info.unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" ");
        // An earlier attempt's connection is abandoned whole (its transaction and locks too);
        // the current attempt's statement only. The id is a number the server gave: KILL takes
        // no bound parameter.
        let kill = match target {
            Target::EarlierThan { .. } => "KILL CONNECTION",
            Target::Exactly(_) => "KILL QUERY",
        };
        match sqlx::raw_sql(sqlx::AssertSqlSafe(format!("{kill} {id}"))).execute(&mut *conn).await {
            Ok(_) => said.push(format!("stopped work left running by an earlier attempt: {kill} {id} (`{info}`)")),
            Err(e) => said.push(format!("could not {kill} {id} (`{info}`): {e}")),
        }
    }
    Ok(said)
}

/// Ctrl-C in the REPL: sends a cancel request for the statements running under `label` on every
/// server this process is connected to. Returns the backends it reached (PostgreSQL; MySQL gets
/// `KILL QUERY`), in words.
pub async fn cancel_label(label: &str) -> Vec<String> {
    let mut reached = Vec::new();
    for db in live() {
        let r = match &db.pool {
            Pool::Postgres(p) => match side(p).await {
                Ok(mut c) => cancel_pg(&mut c, label).await,
                Err(e) => Err(e),
            },
            Pool::MySql(p) => stop_mysql(p, &Target::Exactly(label)).await,
            Pool::Sqlite(_) => Ok(Vec::new()),
        };
        reached.extend(r.unwrap_or_default());
    }
    reached
}

async fn cancel_pg(conn: &mut sqlx::PgConnection, label: &str) -> Result<Vec<String>, sqlx::Error> {
    let mut reached = Vec::new();
    for (pid, state, _, query) in pg_sessions(&mut *conn, &Target::Exactly(label)).await? {
        if state == "active" {
            let ok: Option<bool> =
                sqlx::query_scalar("SELECT pg_cancel_backend($1)").bind(pid).fetch_one(&mut *conn).await?;
            if ok == Some(true) {
                reached.push(format!("backend {pid} (`{query}`)"));
            }
        }
    }
    Ok(reached)
}

/// Terminates the sessions under `label` still busy (a cancel the server did not act on).
pub async fn terminate_label(label: &str) -> Vec<String> {
    let mut said = Vec::new();
    for db in live() {
        if let Pool::Postgres(p) = &db.pool {
            if let Ok(mut c) = side(p).await {
                said.extend(stop_pg(&mut c, &Target::Exactly(label)).await.unwrap_or_default());
            }
        }
    }
    said
}
