//! The embedded journal: one SQLite file, WAL, created 0600.
//!
//! Durability: `synchronous = NORMAL` in WAL mode. A process crash (SIGKILL included) loses
//! nothing that was committed; a power loss may lose the last commits, which rolls the journal
//! back to an earlier consistent state: a step whose completion was lost runs again, which is
//! the at-least-once promise steps already make.
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteRow, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Row};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use super::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// One connection, behind an async mutex: a runner writes from one place at a time, and a pool
/// would add a task and a thread wake-up to every statement (measured: twice the per-step cost).
pub struct SqliteJournal {
    conn: Mutex<Option<SqliteConnection>>,
    path: PathBuf,
}

impl SqliteJournal {
    async fn db(&self) -> JResult<MappedMutexGuard<'_, SqliteConnection>> {
        MutexGuard::try_map(self.conn.lock().await, |c| c.as_mut()).map_err(|_| JournalError::Open {
            location: self.path.display().to_string(),
            reason: "the journal is closed".into(),
        })
    }

    /// Opens (creating if needed) the journal file. `default_dir` creates the parent directory
    /// with mode 0700, as for `.runbook/`.
    pub async fn open(path: &Path, default_dir: bool) -> JResult<SqliteJournal> {
        let fail = |reason: String| JournalError::Open { location: path.display().to_string(), reason };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                if !default_dir {
                    return Err(fail(format!("directory {} does not exist", dir.display())));
                }
                std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
            }
        }
        // Create the file ourselves so it is never readable by others, not even for an instant.
        // SQLite gives the -wal and -shm files the same permissions.
        let file = match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), "journal file was readable by others; restricting it to its owner (0600)");
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                        .map_err(|e| fail(e.to_string()))?;
                }
                std::fs::File::open(path).map_err(|e| fail(e.to_string()))?
            }
            Err(e) => return Err(fail(e.to_string())),
        };
        // Two processes opening a new journal at once must not both create the schema: hold an
        // exclusive flock (independent of SQLite's own fcntl locks) while migrating.
        let guard =
            FileLock::exclusive(file).await.map_err(|e| fail(format!("cannot lock the journal for migration: {e}")))?;
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|e| fail(e.to_string()))?
            .filename(path)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            // Overwritten and deleted content is zeroed, so a value scrubbed after the fact
            // (a secret that became known midway) does not linger in free pages.
            .pragma("secure_delete", "ON")
            .foreign_keys(true);
        let mut conn = options.connect().await.map_err(|e| fail(e.to_string()))?;
        MIGRATOR.run(&mut conn).await?;
        drop(guard);
        Ok(SqliteJournal { conn: Mutex::new(Some(conn)), path: path.to_path_buf() })
    }
}

/// An exclusive `flock`, released on drop.
struct FileLock(std::fs::File);

impl FileLock {
    async fn exclusive(file: std::fs::File) -> std::io::Result<FileLock> {
        use std::os::fd::AsRawFd;
        tokio::task::spawn_blocking(move || {
            // SAFETY: flock on a descriptor we own.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                Ok(FileLock(file))
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: unlocking a descriptor we own.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

fn owned(rows: u64, run_id: &str) -> JResult<()> {
    if rows == 1 {
        Ok(())
    } else {
        Err(JournalError::NotOwner(run_id.to_string()))
    }
}

const RUN_COLUMNS: &str = "id, runbook, path, content_hash, source, params, user, host, pid, pid_start, trigger, dry_run, rollback, lock_name, status, error, created_at, started_at, finished_at, heartbeat_at, lease_secs, cancel_requested";

fn run_from_row(row: &SqliteRow) -> JResult<RunRecord> {
    let params: String = row.try_get("params")?;
    Ok(RunRecord {
        id: row.try_get("id")?,
        runbook: row.try_get("runbook")?,
        path: row.try_get("path")?,
        content_hash: row.try_get("content_hash")?,
        source: row.try_get("source")?,
        params: serde_json::from_str(&params).map_err(|e| JournalError::Corrupt(format!("run params: {e}")))?,
        user: row.try_get("user")?,
        owner: Owner { host: row.try_get("host")?, pid: row.try_get("pid")?, pid_start: row.try_get("pid_start")? },
        trigger: row.try_get("trigger")?,
        dry_run: row.try_get::<i64, _>("dry_run")? != 0,
        rollback: row.try_get("rollback")?,
        lock_name: row.try_get("lock_name")?,
        status: RunStatus::parse(row.try_get::<&str, _>("status")?)?,
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        heartbeat_at: row.try_get("heartbeat_at")?,
        lease_secs: row.try_get("lease_secs")?,
        cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
    })
}

fn step_from_row(row: &SqliteRow) -> JResult<StepRecord> {
    let result: Option<String> = row.try_get("result")?;
    let kind: &str = row.try_get("kind")?;
    Ok(StepRecord {
        name: row.try_get("name")?,
        seq: row.try_get("seq")?,
        kind: if kind == "approval" { StepKind::Approval } else { StepKind::Step },
        status: StepStatus::parse(row.try_get::<&str, _>("status")?)?,
        attempts: row.try_get("attempts")?,
        budget_base: row.try_get("budget_base")?,
        line: row.try_get("line")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        duration_ms: row.try_get("duration_ms")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        result: match result {
            Some(text) => {
                Some(serde_json::from_str(&text).map_err(|e| JournalError::Corrupt(format!("step result: {e}")))?)
            }
            None => None,
        },
        error: row.try_get("error")?,
        undo_status: row.try_get("undo_status")?,
        undo_error: row.try_get("undo_error")?,
        actor: row.try_get("actor")?,
    })
}

#[async_trait]
impl Journal for SqliteJournal {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    async fn create_run(&self, r: &RunRecord) -> JResult<()> {
        sqlx::query(
            "INSERT INTO runs (id, runbook, path, content_hash, source, params, user, host, pid, pid_start, trigger, dry_run, rollback, lock_name, status, error, created_at, started_at, finished_at, heartbeat_at, lease_secs, cancel_requested)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
        )
        .bind(&r.id)
        .bind(&r.runbook)
        .bind(&r.path)
        .bind(&r.content_hash)
        .bind(&r.source)
        .bind(r.params.to_string())
        .bind(&r.user)
        .bind(&r.owner.host)
        .bind(r.owner.pid)
        .bind(r.owner.pid_start)
        .bind(&r.trigger)
        .bind(r.dry_run as i64)
        .bind(&r.rollback)
        .bind(&r.lock_name)
        .bind(r.status.as_str())
        .bind(&r.error)
        .bind(&r.created_at)
        .bind(&r.started_at)
        .bind(&r.finished_at)
        .bind(&r.heartbeat_at)
        .bind(r.lease_secs)
        .execute(&mut *self.db().await?)
        .await?;
        Ok(())
    }

    async fn run(&self, id: &str) -> JResult<Option<RunRecord>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&mut *self.db().await?).await?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn find_run(&self, reference: &str) -> JResult<RunRecord> {
        let reference = reference.trim();
        if reference == "last" || reference == "--last" {
            let sql = format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY created_at DESC, rowid DESC LIMIT 1");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_optional(&mut *self.db().await?).await?;
            return row.as_ref().map(run_from_row).transpose()?.ok_or_else(|| JournalError::NoSuchRun("last".into()));
        }
        if reference.is_empty() {
            return Err(JournalError::NoSuchRun(String::new()));
        }
        if let Some(run) = self.run(reference).await? {
            return Ok(run);
        }
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE substr(id, 1, ?) = ? ORDER BY created_at DESC LIMIT 6");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(reference.len() as i64)
            .bind(reference)
            .fetch_all(&mut *self.db().await?)
            .await?;
        match rows.len() {
            0 => Err(JournalError::NoSuchRun(reference.to_string())),
            1 => run_from_row(&rows[0]),
            _ => {
                let ids: Vec<String> = rows.iter().filter_map(|r| r.try_get::<String, _>("id").ok()).collect();
                Err(JournalError::Ambiguous(reference.to_string(), ids.join(", ")))
            }
        }
    }

    async fn runs(&self, filter: &RunFilter) -> JResult<Vec<RunRecord>> {
        let limit = if filter.limit <= 0 { 20 } else { filter.limit };
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE (? IS NULL OR runbook = ?) ORDER BY created_at DESC, rowid DESC LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&filter.runbook)
            .bind(&filter.runbook)
            .bind(limit)
            .fetch_all(&mut *self.db().await?)
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    async fn claim_run(&self, c: &Claim<'_>) -> JResult<bool> {
        let now = now_ts();
        let done = sqlx::query(
            "UPDATE runs SET status = ?, host = ?, pid = ?, pid_start = ?, heartbeat_at = ?, lease_secs = ?,
                    finished_at = NULL, cancel_requested = 0
             WHERE id = ? AND status = ? AND host = ? AND pid = ?",
        )
        .bind(c.new_status.as_str())
        .bind(&c.me.host)
        .bind(c.me.pid)
        .bind(c.me.pid_start)
        .bind(&now)
        .bind(c.lease_secs)
        .bind(c.id)
        .bind(c.expected.as_str())
        .bind(&c.previous.host)
        .bind(c.previous.pid)
        .execute(&mut *self.db().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_run_status(&self, id: &str, me: &Owner, status: RunStatus, error: Option<&str>) -> JResult<()> {
        let done = sqlx::query(
            "UPDATE runs SET status = ?, error = COALESCE(?, error), heartbeat_at = ? WHERE id = ? AND host = ? AND pid = ?",
        )
        .bind(status.as_str())
        .bind(error)
        .bind(now_ts())
        .bind(id)
        .bind(&me.host)
        .bind(me.pid)
        .execute(&mut *self.db().await?)
        .await?;
        owned(done.rows_affected(), id)
    }

    async fn finish_run(&self, id: &str, me: &Owner, status: RunStatus, error: Option<&str>) -> JResult<()> {
        let now = now_ts();
        let done = sqlx::query(
            "UPDATE runs SET status = ?, error = ?, finished_at = ?, heartbeat_at = ? WHERE id = ? AND host = ? AND pid = ?",
        )
        .bind(status.as_str())
        .bind(error)
        .bind(&now)
        .bind(&now)
        .bind(id)
        .bind(&me.host)
        .bind(me.pid)
        .execute(&mut *self.db().await?)
        .await?;
        owned(done.rows_affected(), id)
    }

    async fn close_stopped_run(
        &self,
        id: &str,
        expected: RunStatus,
        previous: &Owner,
        status: RunStatus,
        error: &str,
    ) -> JResult<bool> {
        let now = now_ts();
        let done = sqlx::query(
            "UPDATE runs SET status = ?, error = ?, finished_at = ? WHERE id = ? AND status = ? AND host = ? AND pid = ?",
        )
        .bind(status.as_str())
        .bind(error)
        .bind(&now)
        .bind(id)
        .bind(expected.as_str())
        .bind(&previous.host)
        .bind(previous.pid)
        .execute(&mut *self.db().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn heartbeat(&self, id: &str, me: &Owner) -> JResult<Beat> {
        let now = now_ts();
        let row = sqlx::query(
            "UPDATE runs SET heartbeat_at = ? WHERE id = ? AND host = ? AND pid = ? RETURNING cancel_requested",
        )
        .bind(&now)
        .bind(id)
        .bind(&me.host)
        .bind(me.pid)
        .fetch_optional(&mut *self.db().await?)
        .await?;
        let Some(row) = row else { return Ok(Beat { cancel_requested: false, owned: false }) };
        sqlx::query("UPDATE locks SET heartbeat_at = ? WHERE run_id = ? AND host = ? AND pid = ?")
            .bind(&now)
            .bind(id)
            .bind(&me.host)
            .bind(me.pid)
            .execute(&mut *self.db().await?)
            .await?;
        Ok(Beat { cancel_requested: row.try_get::<i64, _>(0)? != 0, owned: true })
    }

    async fn request_cancel(&self, id: &str) -> JResult<()> {
        sqlx::query("UPDATE runs SET cancel_requested = 1 WHERE id = ?")
            .bind(id)
            .execute(&mut *self.db().await?)
            .await?;
        Ok(())
    }

    async fn steps(&self, run_id: &str) -> JResult<Vec<StepRecord>> {
        let rows = sqlx::query("SELECT * FROM steps WHERE run_id = ? ORDER BY seq, rowid")
            .bind(run_id)
            .fetch_all(&mut *self.db().await?)
            .await?;
        rows.iter().map(step_from_row).collect()
    }

    async fn items(&self, run_id: &str, step: Option<&str>) -> JResult<Vec<ItemRecord>> {
        let rows = sqlx::query(
            "SELECT step, item, status, result, error, updated_at FROM step_items
             WHERE run_id = ? AND (? IS NULL OR step = ?) ORDER BY step, updated_at, item",
        )
        .bind(run_id)
        .bind(step)
        .bind(step)
        .fetch_all(&mut *self.db().await?)
        .await?;
        rows.iter()
            .map(|r| {
                let result: Option<String> = r.try_get("result")?;
                Ok(ItemRecord {
                    step: r.try_get("step")?,
                    item: r.try_get("item")?,
                    status: r.try_get("status")?,
                    result: result.as_deref().map(|t| serde_json::from_str(t).unwrap_or(serde_json::Value::Null)),
                    error: r.try_get("error")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect()
    }

    async fn put_item(&self, run_id: &str, me: &Owner, i: &ItemRecord) -> JResult<()> {
        let done = sqlx::query(
            "INSERT INTO step_items (run_id, step, item, status, result, error, updated_at)
             SELECT ?, ?, ?, ?, ?, ?, ?
             WHERE EXISTS (SELECT 1 FROM runs WHERE id = ? AND host = ? AND pid = ?)
             ON CONFLICT (run_id, step, item) DO UPDATE SET
               status = excluded.status, result = excluded.result, error = excluded.error,
               updated_at = excluded.updated_at",
        )
        .bind(run_id)
        .bind(&i.step)
        .bind(&i.item)
        .bind(&i.status)
        .bind(i.result.as_ref().map(|r| r.to_string()))
        .bind(&i.error)
        .bind(&i.updated_at)
        .bind(run_id)
        .bind(&me.host)
        .bind(me.pid)
        .execute(&mut *self.db().await?)
        .await?;
        owned(done.rows_affected(), run_id)
    }

    async fn put_step(&self, run_id: &str, me: &Owner, s: &StepRecord) -> JResult<()> {
        // Written only while this process owns the run: a runner that was taken over (it looked
        // dead) cannot record anything after the new owner started.
        let done = sqlx::query(
            "INSERT INTO steps (run_id, name, seq, kind, status, attempts, budget_base, line, started_at, finished_at, duration_ms, next_attempt_at, result, error, undo_status, undo_error, actor)
             SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
             WHERE EXISTS (SELECT 1 FROM runs WHERE id = ? AND host = ? AND pid = ?)
             ON CONFLICT (run_id, name) DO UPDATE SET
               seq = excluded.seq, kind = excluded.kind, status = excluded.status, attempts = excluded.attempts,
               budget_base = excluded.budget_base, line = excluded.line, started_at = excluded.started_at,
               finished_at = excluded.finished_at, duration_ms = excluded.duration_ms,
               next_attempt_at = excluded.next_attempt_at, result = excluded.result, error = excluded.error,
               undo_status = excluded.undo_status, undo_error = excluded.undo_error, actor = excluded.actor",
        )
        .bind(run_id)
        .bind(&s.name)
        .bind(s.seq)
        .bind(match s.kind {
            StepKind::Step => "step",
            StepKind::Approval => "approval",
        })
        .bind(s.status.as_str())
        .bind(s.attempts)
        .bind(s.budget_base)
        .bind(s.line)
        .bind(&s.started_at)
        .bind(&s.finished_at)
        .bind(s.duration_ms)
        .bind(&s.next_attempt_at)
        .bind(s.result.as_ref().map(|r| r.to_string()))
        .bind(&s.error)
        .bind(&s.undo_status)
        .bind(&s.undo_error)
        .bind(&s.actor)
        .bind(run_id)
        .bind(&me.host)
        .bind(me.pid)
        .execute(&mut *self.db().await?)
        .await?;
        owned(done.rows_affected(), run_id)
    }

    async fn approve_gate(&self, run_id: &str, gate: &str, actor: &str) -> JResult<bool> {
        let done = sqlx::query(
            "UPDATE steps SET status = 'approved', actor = ?, finished_at = ?
             WHERE run_id = ? AND name = ? AND kind = 'approval' AND status = 'waiting'
               AND EXISTS (SELECT 1 FROM runs WHERE id = ? AND status = 'waiting_approval')",
        )
        .bind(actor)
        .bind(now_ts())
        .bind(run_id)
        .bind(gate)
        .bind(run_id)
        .execute(&mut *self.db().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn append_events(&self, events: &[EventRecord]) -> JResult<()> {
        // One multi-row INSERT per chunk: a single statement is atomic and costs one round trip.
        for chunk in events.chunks(200) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("INSERT INTO events (run_id, ts, event, step, data) ");
            q.push_values(chunk, |mut row, e| {
                row.push_bind(e.run_id.clone())
                    .push_bind(e.ts.clone())
                    .push_bind(e.event.clone())
                    .push_bind(e.step.clone())
                    .push_bind(e.data.to_string());
            });
            q.build().execute(&mut *self.db().await?).await?;
        }
        Ok(())
    }

    async fn events(&self, run_id: &str) -> JResult<Vec<EventRecord>> {
        let rows = sqlx::query("SELECT run_id, ts, event, step, data FROM events WHERE run_id = ? ORDER BY id")
            .bind(run_id)
            .fetch_all(&mut *self.db().await?)
            .await?;
        rows.iter()
            .map(|row| {
                let data: String = row.try_get("data")?;
                Ok(EventRecord {
                    run_id: row.try_get("run_id")?,
                    ts: row.try_get("ts")?,
                    event: row.try_get("event")?,
                    step: row.try_get("step")?,
                    data: serde_json::from_str(&data).map_err(|e| JournalError::Corrupt(format!("event data: {e}")))?,
                })
            })
            .collect()
    }

    async fn acquire_lock(&self, name: &str, run_id: &str, me: &Owner, lease_secs: i64) -> JResult<LockOutcome> {
        // Insert-or-nothing, then compare-and-swap over a holder that is gone: each statement is
        // atomic, so two runners can never both believe they hold the lock.
        for _ in 0..5 {
            let now = now_ts();
            let inserted = sqlx::query(
                "INSERT INTO locks (name, run_id, host, pid, pid_start, acquired_at, heartbeat_at, lease_secs)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(run_id)
            .bind(&me.host)
            .bind(me.pid)
            .bind(me.pid_start)
            .bind(&now)
            .bind(&now)
            .bind(lease_secs)
            .execute(&mut *self.db().await?)
            .await?;
            if inserted.rows_affected() == 1 {
                return Ok(LockOutcome::Acquired);
            }
            let Some(row) =
                sqlx::query("SELECT run_id, host, pid, pid_start, heartbeat_at, lease_secs FROM locks WHERE name = ?")
                    .bind(name)
                    .fetch_optional(&mut *self.db().await?)
                    .await?
            else {
                continue; // released in between: try to insert again
            };
            let holder = LockHolder {
                run_id: row.try_get("run_id")?,
                owner: Owner {
                    host: row.try_get("host")?,
                    pid: row.try_get("pid")?,
                    pid_start: row.try_get("pid_start")?,
                },
                heartbeat_at: row.try_get("heartbeat_at")?,
            };
            let held_lease: i64 = row.try_get("lease_secs")?;
            if holder.run_id == run_id && holder.owner.host == me.host && holder.owner.pid == me.pid {
                return Ok(LockOutcome::Acquired);
            }
            // On this host the pid decides; across hosts, the heartbeat.
            let gone = if holder.owner.host == me.host {
                holder.owner.is_dead_here()
            } else {
                chrono::DateTime::parse_from_rfc3339(&holder.heartbeat_at)
                    .map(|beat| {
                        chrono::Utc::now().signed_duration_since(beat).num_milliseconds()
                            > held_lease.saturating_mul(1000)
                    })
                    .unwrap_or(true)
            };
            if !gone {
                return Ok(LockOutcome::Held(holder));
            }
            let swapped = sqlx::query(
                "UPDATE locks SET run_id = ?, host = ?, pid = ?, pid_start = ?, acquired_at = ?, heartbeat_at = ?, lease_secs = ?
                 WHERE name = ? AND run_id = ? AND host = ? AND pid = ? AND heartbeat_at = ?",
            )
            .bind(run_id)
            .bind(&me.host)
            .bind(me.pid)
            .bind(me.pid_start)
            .bind(&now)
            .bind(&now)
            .bind(lease_secs)
            .bind(name)
            .bind(&holder.run_id)
            .bind(&holder.owner.host)
            .bind(holder.owner.pid)
            .bind(&holder.heartbeat_at)
            .execute(&mut *self.db().await?)
            .await?;
            if swapped.rows_affected() == 1 {
                return Ok(LockOutcome::TakenOver(holder));
            }
        }
        Err(JournalError::Corrupt(format!("lock '{name}' changed hands too often to be acquired")))
    }

    async fn release_lock(&self, name: &str, run_id: &str) -> JResult<()> {
        sqlx::query("DELETE FROM locks WHERE name = ? AND run_id = ?")
            .bind(name)
            .bind(run_id)
            .execute(&mut *self.db().await?)
            .await?;
        Ok(())
    }

    async fn scrub_run(&self, run_id: &str, me: &Owner, scrub: for<'v> fn(&'v mut serde_json::Value)) -> JResult<()> {
        // One transaction, and only while this process owns the run.
        let mut db = self.db().await?;
        let mut tx = db.begin().await?;
        let row = sqlx::query("SELECT params, error FROM runs WHERE id = ? AND host = ? AND pid = ?")
            .bind(run_id)
            .bind(&me.host)
            .bind(me.pid)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Err(JournalError::NotOwner(run_id.to_string())) };
        let params: String = row.try_get("params")?;
        let error: Option<String> = row.try_get("error")?;
        let mut p: serde_json::Value = serde_json::from_str(&params).unwrap_or_default();
        scrub(&mut p);
        let mut e = serde_json::Value::from(error);
        scrub(&mut e);
        sqlx::query("UPDATE runs SET params = ?, error = ? WHERE id = ?")
            .bind(p.to_string())
            .bind(e.as_str().map(str::to_string))
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        let steps = sqlx::query("SELECT name, result, error, undo_error FROM steps WHERE run_id = ?")
            .bind(run_id)
            .fetch_all(&mut *tx)
            .await?;
        for row in steps {
            let name: String = row.try_get("name")?;
            let result: Option<String> = row.try_get("result")?;
            let error: Option<String> = row.try_get("error")?;
            let undo_error: Option<String> = row.try_get("undo_error")?;
            let parsed = result.as_deref().map(|r| serde_json::from_str::<serde_json::Value>(r).unwrap_or_default());
            let mut all = serde_json::json!([parsed, error, undo_error]);
            let before = all.clone();
            scrub(&mut all);
            if all != before {
                sqlx::query("UPDATE steps SET result = ?, error = ?, undo_error = ? WHERE run_id = ? AND name = ?")
                    .bind(result.as_ref().map(|_| all[0].to_string()))
                    .bind(all[1].as_str().map(str::to_string))
                    .bind(all[2].as_str().map(str::to_string))
                    .bind(run_id)
                    .bind(&name)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let items = sqlx::query("SELECT step, item, result, error FROM step_items WHERE run_id = ?")
            .bind(run_id)
            .fetch_all(&mut *tx)
            .await?;
        for row in items {
            let step: String = row.try_get("step")?;
            let item: String = row.try_get("item")?;
            let result: Option<String> = row.try_get("result")?;
            let error: Option<String> = row.try_get("error")?;
            let parsed = result.as_deref().map(|r| serde_json::from_str::<serde_json::Value>(r).unwrap_or_default());
            let mut all = serde_json::json!([parsed, error]);
            let before = all.clone();
            scrub(&mut all);
            if all != before {
                sqlx::query("UPDATE step_items SET result = ?, error = ? WHERE run_id = ? AND step = ? AND item = ?")
                    .bind(result.as_ref().map(|_| all[0].to_string()))
                    .bind(all[1].as_str().map(str::to_string))
                    .bind(run_id)
                    .bind(&step)
                    .bind(&item)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let rows =
            sqlx::query("SELECT id, step, data FROM events WHERE run_id = ?").bind(run_id).fetch_all(&mut *tx).await?;
        for row in rows {
            let id: i64 = row.try_get("id")?;
            let step: Option<String> = row.try_get("step")?;
            let data: String = row.try_get("data")?;
            let mut both =
                serde_json::json!([step, serde_json::from_str::<serde_json::Value>(&data).unwrap_or_default()]);
            let before = both.clone();
            scrub(&mut both);
            if both != before {
                sqlx::query("UPDATE events SET step = ?, data = ? WHERE id = ?")
                    .bind(both[0].as_str().map(str::to_string))
                    .bind(both[1].to_string())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn close(&self) {
        if let Some(conn) = self.conn.lock().await.take() {
            let _ = conn.close().await;
        }
    }
}
