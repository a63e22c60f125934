//! The journal's SQL, shared by the SQLite and PostgreSQL backends.
//!
//! Both schemas have the same tables and columns (timestamps are RFC 3339 UTC text with
//! milliseconds, which sorts as time; JSON is text), and every statement here is written in
//! the dialect both accept: `$N` placeholders, `ON CONFLICT`, `RETURNING`, `"user"` quoted. The
//! macro expands the one implementation for each backend's connection type; only opening,
//! claiming a queued run (PostgreSQL skips locked rows) and firing a schedule differ.

/// Columns of `runs`, in the order `run_from_row` reads them.
pub(super) const RUN_COLUMNS: &str = "id, runbook, path, content_hash, source, params, \"user\", host, pid, pid_start, trigger, dry_run, rollback, lock_name, status, error, created_at, started_at, finished_at, heartbeat_at, lease_secs, cancel_requested, queue_key, not_before, queued_params, max_memory, auto_resume, resumed_by";

/// Insert of a whole run record; `$1..$24` bound by `bind_run`.
pub(super) const INSERT_RUN: &str = "INSERT INTO runs (id, runbook, path, content_hash, source, params, \"user\", host, pid, pid_start, trigger, dry_run, rollback, lock_name, status, error, created_at, started_at, finished_at, heartbeat_at, lease_secs, cancel_requested, queue_key, not_before, queued_params, max_memory)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26)";

/// Sessions with their event counts, newest first; `$1` the limit.
pub(super) const SESSIONS_NEWEST: &str = "SELECT s.id, s.who, s.host, s.pid, s.started_at, s.ended_at, s.run_id,
        (SELECT COUNT(*) FROM session_events e WHERE e.session_id = s.id) AS events
     FROM sessions s ORDER BY s.started_at DESC, s.id DESC LIMIT $1";

/// Sessions whose id is `$1` or starts with `$2` (a prefix and `%`).
pub(super) const SESSIONS_BY_PREFIX: &str = "SELECT s.id, s.who, s.host, s.pid, s.started_at, s.ended_at, s.run_id,
        (SELECT COUNT(*) FROM session_events e WHERE e.session_id = s.id) AS events
     FROM sessions s WHERE s.id = $1 OR s.id LIKE $2 ORDER BY s.started_at DESC LIMIT 20";

/// Runs a worker may take over when their process is gone: those started by a scheduler or
/// a queue, never a person's own `runbook run`.
pub(super) const WORKER_TRIGGERS: &str = "(trigger = 'enqueue' OR substr(trigger, 1, 9) = 'schedule:')";

/// Takes the oldest queued run that may start for `$1..$5` (host, pid, pid_start, now, lease):
/// its `not_before` passed, and no older queued or active run shares its queue key. `$lock` is
/// the row-locking clause of the backend (PostgreSQL skips rows another worker is claiming).
macro_rules! claim_queued_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE runs SET status = 'running', host = $1, pid = $2, pid_start = $3, heartbeat_at = $4, lease_secs = $5
             WHERE status = 'queued' AND id = (
                SELECT q.id FROM runs q
                WHERE q.status = 'queued' AND (q.not_before IS NULL OR q.not_before <= $4)
                  AND (q.queue_key IS NULL OR NOT EXISTS (
                        SELECT 1 FROM runs o WHERE o.queue_key = q.queue_key AND o.id <> q.id
                          AND (o.status IN ('running', 'rolling_back', 'interrupted')
                               OR (o.status = 'queued' AND (o.created_at < q.created_at OR (o.created_at = q.created_at AND o.id < q.id))))))
                ORDER BY q.created_at, q.id LIMIT 1 ",
            $lock,
            ")"
        )
    };
}

pub(super) use claim_queued_sql;

macro_rules! sql_journal {
    ($journal:ty, $db:ty) => {
        type DbRow = <$db as sqlx::Database>::Row;

        fn owned(rows: u64, run_id: &str) -> JResult<()> {
            if rows == 1 {
                Ok(())
            } else {
                Err(JournalError::NotOwner(run_id.to_string()))
            }
        }

        /// Ends a waiting gate (`status`: approved or declined) and moves its waiting run on:
        /// `resume` (approved) or a rollback = "auto" run leaves it interrupted for a worker to
        /// resume; else it is cancelled with `why` and its lock released. False when the run or
        /// gate no longer waits.
        #[allow(clippy::too_many_arguments)]
        async fn end_gate(
            tx: &mut sqlx::Transaction<'_, $db>,
            run_id: &str,
            gate: &str,
            status: &str,
            actor: &str,
            why: &str,
            rollback_auto: bool,
            resume: bool,
        ) -> JResult<bool> {
            let now = now_ts();
            let step = sqlx::query(
                "UPDATE steps SET status = $1, actor = $2, error = $3, finished_at = $4
                 WHERE run_id = $5 AND name = $6 AND kind = 'approval' AND status = 'waiting'",
            )
            .bind(status)
            .bind(actor)
            .bind(if why.is_empty() { None } else { Some(why) })
            .bind(&now)
            .bind(run_id)
            .bind(gate)
            .execute(&mut **tx)
            .await?;
            if step.rows_affected() != 1 {
                return Ok(false);
            }
            let run = if resume || rollback_auto {
                sqlx::query(
                    "UPDATE runs SET status = 'interrupted', error = NULL, finished_at = NULL,
                            auto_resume = (trigger = 'enqueue' OR substr(trigger, 1, 9) = 'schedule:')
                     WHERE id = $1 AND status = 'waiting_approval'",
                )
                    .bind(run_id)
                    .execute(&mut **tx)
                    .await?
            } else {
                sqlx::query(
                    "UPDATE runs SET status = 'cancelled', error = $1, finished_at = $2 WHERE id = $3 AND status = 'waiting_approval'",
                )
                .bind(why)
                .bind(&now)
                .bind(run_id)
                .execute(&mut **tx)
                .await?
            };
            if run.rows_affected() != 1 {
                return Ok(false);
            }
            if !(resume || rollback_auto) {
                sqlx::query("DELETE FROM locks WHERE run_id = $1").bind(run_id).execute(&mut **tx).await?;
            }
            Ok(true)
        }

        fn event_from_row(row: &DbRow) -> JResult<EventRecord> {
            let data: String = row.try_get("data")?;
            Ok(EventRecord {
                run_id: row.try_get("run_id")?,
                ts: row.try_get("ts")?,
                event: row.try_get("event")?,
                step: row.try_get("step")?,
                data: serde_json::from_str(&data).map_err(|e| JournalError::Corrupt(format!("event data: {e}")))?,
            })
        }

        fn run_from_row(row: &DbRow) -> JResult<RunRecord> {
            let params: String = row.try_get("params")?;
            Ok(RunRecord {
                id: row.try_get("id")?,
                runbook: row.try_get("runbook")?,
                path: row.try_get("path")?,
                content_hash: row.try_get("content_hash")?,
                source: row.try_get("source")?,
                params: serde_json::from_str(&params)
                    .map_err(|e| JournalError::Corrupt(format!("run params: {e}")))?,
                user: row.try_get("user")?,
                owner: Owner {
                    host: row.try_get("host")?,
                    pid: row.try_get("pid")?,
                    pid_start: row.try_get("pid_start")?,
                },
                trigger: row.try_get("trigger")?,
                dry_run: row.try_get("dry_run")?,
                rollback: row.try_get("rollback")?,
                lock_name: row.try_get("lock_name")?,
                status: RunStatus::parse(&row.try_get::<String, _>("status")?)?,
                error: row.try_get("error")?,
                created_at: row.try_get("created_at")?,
                started_at: row.try_get("started_at")?,
                finished_at: row.try_get("finished_at")?,
                heartbeat_at: row.try_get("heartbeat_at")?,
                lease_secs: row.try_get("lease_secs")?,
                cancel_requested: row.try_get("cancel_requested")?,
                queue_key: row.try_get("queue_key")?,
                not_before: row.try_get("not_before")?,
                queued_params: row
                    .try_get::<Option<String>, _>("queued_params")?
                    .map(|t| serde_json::from_str(&t).unwrap_or(serde_json::Value::Null)),
                max_memory: row.try_get("max_memory")?,
                auto_resume: row.try_get("auto_resume")?,
                resumed_by: row.try_get("resumed_by")?,
            })
        }

        fn step_from_row(row: &DbRow) -> JResult<StepRecord> {
            let result: Option<String> = row.try_get("result")?;
            let kind: String = row.try_get("kind")?;
            Ok(StepRecord {
                name: row.try_get("name")?,
                seq: row.try_get("seq")?,
                kind: if kind == "approval" { StepKind::Approval } else { StepKind::Step },
                status: StepStatus::parse(&row.try_get::<String, _>("status")?)?,
                attempts: row.try_get("attempts")?,
                budget_base: row.try_get("budget_base")?,
                line: row.try_get("line")?,
                started_at: row.try_get("started_at")?,
                finished_at: row.try_get("finished_at")?,
                duration_ms: row.try_get("duration_ms")?,
                next_attempt_at: row.try_get("next_attempt_at")?,
                result: match result {
                    Some(text) => Some(
                        serde_json::from_str(&text)
                            .map_err(|e| JournalError::Corrupt(format!("step result: {e}")))?,
                    ),
                    None => None,
                },
                error: row.try_get("error")?,
                undo_status: row.try_get("undo_status")?,
                undo_error: row.try_get("undo_error")?,
                actor: row.try_get("actor")?,
            })
        }

        fn bind_run<'q>(
            q: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments>,
            r: &'q RunRecord,
        ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments> {
            q.bind(&r.id)
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
                .bind(r.dry_run)
                .bind(&r.rollback)
                .bind(&r.lock_name)
                .bind(r.status.as_str())
                .bind(&r.error)
                .bind(&r.created_at)
                .bind(&r.started_at)
                .bind(&r.finished_at)
                .bind(&r.heartbeat_at)
                .bind(r.lease_secs)
                .bind(r.cancel_requested)
                .bind(&r.queue_key)
                .bind(&r.not_before)
                .bind(r.queued_params.as_ref().map(|p| p.to_string()))
                .bind(r.max_memory)
        }

        fn session_from_row(row: &DbRow) -> JResult<SessionRecord> {
            Ok(SessionRecord {
                id: row.try_get("id")?,
                who: row.try_get("who")?,
                host: row.try_get("host")?,
                pid: row.try_get("pid")?,
                started_at: row.try_get("started_at")?,
                ended_at: row.try_get("ended_at")?,
                run_id: row.try_get("run_id")?,
                events: row.try_get("events")?,
            })
        }

        fn fire_from_row(row: &DbRow) -> JResult<FireRecord> {
            Ok(FireRecord {
                schedule: row.try_get("schedule")?,
                fire_at: row.try_get("fire_at")?,
                run_id: row.try_get("run_id")?,
                outcome: row.try_get("outcome")?,
                fired_by: row.try_get("fired_by")?,
                fired_at: row.try_get("fired_at")?,
            })
        }

        #[async_trait]
        impl Journal for $journal {
            fn location(&self) -> String {
                self.describe()
            }

            async fn create_run(&self, r: &RunRecord) -> JResult<()> {
                bind_run(sqlx::query(sql::INSERT_RUN), r).execute(&mut *self.db().await?).await?;
                Ok(())
            }

            async fn run(&self, id: &str) -> JResult<Option<RunRecord>> {
                let sql = format!("SELECT {} FROM runs WHERE id = $1", sql::RUN_COLUMNS);
                let row =
                    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&mut *self.db().await?).await?;
                row.as_ref().map(run_from_row).transpose()
            }

            async fn find_run(&self, reference: &str) -> JResult<RunRecord> {
                let reference = reference.trim();
                if reference == "last" || reference == "--last" {
                    let sql = format!(
                        "SELECT {} FROM runs WHERE status <> 'queued' ORDER BY created_at DESC, id DESC LIMIT 1",
                        sql::RUN_COLUMNS
                    );
                    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_optional(&mut *self.db().await?).await?;
                    return row
                        .as_ref()
                        .map(run_from_row)
                        .transpose()?
                        .ok_or_else(|| JournalError::NoSuchRun("last".into()));
                }
                if reference.is_empty() {
                    return Err(JournalError::NoSuchRun(String::new()));
                }
                if let Some(run) = self.run(reference).await? {
                    return Ok(run);
                }
                let sql = format!(
                    "SELECT {} FROM runs WHERE substr(id, 1, length($1)) = $1 ORDER BY created_at DESC LIMIT 6",
                    sql::RUN_COLUMNS
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(reference)
                    .fetch_all(&mut *self.db().await?)
                    .await?;
                match rows.len() {
                    0 => Err(JournalError::NoSuchRun(reference.to_string())),
                    1 => run_from_row(&rows[0]),
                    _ => {
                        let ids: Vec<String> =
                            rows.iter().filter_map(|r| r.try_get::<String, _>("id").ok()).collect();
                        Err(JournalError::Ambiguous(reference.to_string(), ids.join(", ")))
                    }
                }
            }

            async fn runs(&self, filter: &RunFilter) -> JResult<Vec<RunRecord>> {
                let limit = if filter.limit <= 0 { 20 } else { filter.limit };
                let sql = format!(
                    "SELECT {} FROM runs WHERE ($1 IS NULL OR runbook = $1) AND ($2 IS NULL OR queue_key = $2)
                       AND ($4 IS NULL OR status = $4) AND ($5 IS NULL OR \"user\" = $5) AND ($6 IS NULL OR created_at >= $6)
                       AND ($7 IS NULL OR created_at < $7 OR (created_at = $7 AND id < $8))
                     ORDER BY created_at DESC, id DESC LIMIT $3",
                    sql::RUN_COLUMNS
                );
                let (before_at, before_id) = match &filter.before {
                    Some((at, id)) => (Some(at.clone()), Some(id.clone())),
                    None => (None, None),
                };
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&filter.runbook)
                    .bind(&filter.queue_key)
                    .bind(limit)
                    .bind(filter.status.map(|s| s.as_str()))
                    .bind(&filter.user)
                    .bind(&filter.since)
                    .bind(before_at)
                    .bind(before_id)
                    .fetch_all(&mut *self.db().await?)
                    .await?;
                rows.iter().map(run_from_row).collect()
            }

            async fn takeover_candidates(&self) -> JResult<Vec<RunRecord>> {
                let sql = format!(
                    "SELECT {} FROM runs WHERE status IN ('running', 'rolling_back', 'interrupted') AND ({} OR auto_resume)
                     ORDER BY (status = 'interrupted') DESC, created_at LIMIT 100",
                    sql::RUN_COLUMNS,
                    sql::WORKER_TRIGGERS
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&mut *self.db().await?).await?;
                rows.iter().map(run_from_row).collect()
            }

            async fn waiting_runs(&self, limit: i64) -> JResult<Vec<RunRecord>> {
                let sql = format!(
                    "SELECT {} FROM runs WHERE status = 'waiting_approval' ORDER BY created_at LIMIT $1",
                    sql::RUN_COLUMNS
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(limit).fetch_all(&mut *self.db().await?).await?;
                rows.iter().map(run_from_row).collect()
            }

            async fn claim_run(&self, c: &Claim<'_>) -> JResult<bool> {
                let now = now_ts();
                let done = sqlx::query(
                    "UPDATE runs SET status = $1, host = $2, pid = $3, pid_start = $4, heartbeat_at = $5, lease_secs = $6,
                            finished_at = NULL, cancel_requested = FALSE, cancel_no_rollback = FALSE, auto_resume = FALSE, params = COALESCE($7, params),
                            started_at = COALESCE($8, started_at),
                            content_hash = COALESCE($13, content_hash), source = COALESCE($14, source)
                     WHERE id = $9 AND status = $10 AND host = $11 AND pid = $12",
                )
                .bind(c.new_status.as_str())
                .bind(&c.me.host)
                .bind(c.me.pid)
                .bind(c.me.pid_start)
                .bind(&now)
                .bind(c.lease_secs)
                .bind(c.params.map(|p| p.to_string()))
                .bind(c.params.map(|_| now.clone()))
                .bind(c.id)
                .bind(c.expected.as_str())
                .bind(&c.previous.host)
                .bind(c.previous.pid)
                .bind(c.source.map(|(hash, _)| hash))
                .bind(c.source.map(|(_, text)| text))
                .execute(&mut *self.db().await?)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn set_run_status(
                &self,
                id: &str,
                me: &Owner,
                status: RunStatus,
                error: Option<&str>,
            ) -> JResult<()> {
                let done = sqlx::query(
                    "UPDATE runs SET status = $1, error = COALESCE($2, error), heartbeat_at = $3
                     WHERE id = $4 AND host = $5 AND pid = $6",
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
                    "UPDATE runs SET status = $1, error = $2, finished_at = $3, heartbeat_at = $3
                     WHERE id = $4 AND host = $5 AND pid = $6",
                )
                .bind(status.as_str())
                .bind(error)
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
                let done = sqlx::query(
                    "UPDATE runs SET status = $1, error = $2, finished_at = $3
                     WHERE id = $4 AND status = $5 AND host = $6 AND pid = $7",
                )
                .bind(status.as_str())
                .bind(error)
                .bind(now_ts())
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
                    "UPDATE runs SET heartbeat_at = $1 WHERE id = $2 AND host = $3 AND pid = $4
                     RETURNING cancel_requested, cancel_no_rollback",
                )
                .bind(&now)
                .bind(id)
                .bind(&me.host)
                .bind(me.pid)
                .fetch_optional(&mut *self.db().await?)
                .await?;
                let Some(row) = row else { return Ok(Beat { owned: false, ..Beat::default() }) };
                sqlx::query("UPDATE locks SET heartbeat_at = $1 WHERE run_id = $2 AND host = $3 AND pid = $4")
                    .bind(&now)
                    .bind(id)
                    .bind(&me.host)
                    .bind(me.pid)
                    .execute(&mut *self.db().await?)
                    .await?;
                Ok(Beat {
                    cancel_requested: row.try_get::<bool, _>(0)?,
                    cancel_rollback: !row.try_get::<bool, _>(1)?,
                    owned: true,
                })
            }

            async fn request_cancel(&self, id: &str, rollback: bool) -> JResult<()> {
                sqlx::query("UPDATE runs SET cancel_requested = TRUE, cancel_no_rollback = $2 WHERE id = $1")
                    .bind(id)
                    .bind(!rollback)
                    .execute(&mut *self.db().await?)
                    .await?;
                Ok(())
            }

            async fn steps(&self, run_id: &str) -> JResult<Vec<StepRecord>> {
                let rows = sqlx::query("SELECT * FROM steps WHERE run_id = $1 ORDER BY seq, name")
                    .bind(run_id)
                    .fetch_all(&mut *self.db().await?)
                    .await?;
                rows.iter().map(step_from_row).collect()
            }

            async fn items(&self, run_id: &str, step: Option<&str>) -> JResult<Vec<ItemRecord>> {
                let rows = sqlx::query(
                    "SELECT step, item, status, result, error, updated_at FROM step_items
                     WHERE run_id = $1 AND ($2 IS NULL OR step = $2) ORDER BY step, updated_at, item",
                )
                .bind(run_id)
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
                            result: result
                                .as_deref()
                                .map(|t| serde_json::from_str(t).unwrap_or(serde_json::Value::Null)),
                            error: r.try_get("error")?,
                            updated_at: r.try_get("updated_at")?,
                        })
                    })
                    .collect()
            }

            async fn put_item(&self, run_id: &str, me: &Owner, i: &ItemRecord) -> JResult<()> {
                let done = sqlx::query(
                    "INSERT INTO step_items (run_id, step, item, status, result, error, updated_at)
                     SELECT $1, $2, $3, $4, $5, $6, $7
                     WHERE EXISTS (SELECT 1 FROM runs WHERE id = $1 AND host = $8 AND pid = $9)
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
                .bind(&me.host)
                .bind(me.pid)
                .execute(&mut *self.db().await?)
                .await?;
                owned(done.rows_affected(), run_id)
            }

            async fn put_step(&self, run_id: &str, me: &Owner, s: &StepRecord) -> JResult<()> {
                // Written only while this process owns the run: a runner that was taken over (it
                // looked dead) cannot record anything after the new owner started.
                let done = sqlx::query(
                    "INSERT INTO steps (run_id, name, seq, kind, status, attempts, budget_base, line, started_at, finished_at, duration_ms, next_attempt_at, result, error, undo_status, undo_error, actor)
                     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17
                     WHERE EXISTS (SELECT 1 FROM runs WHERE id = $1 AND host = $18 AND pid = $19)
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
                .bind(&me.host)
                .bind(me.pid)
                .execute(&mut *self.db().await?)
                .await?;
                owned(done.rows_affected(), run_id)
            }

            async fn vote(&self, v: &VoteRecord, quorum: i64, rollback_auto: bool) -> JResult<VoteOutcome> {
                let mut db = self.db().await?;
                let mut tx = db.begin().await?;
                // Locks the run's row (a no-op write): a second voter waits here until this
                // vote committed, then counts it.
                let waiting = sqlx::query("UPDATE runs SET status = status WHERE id = $1 AND status = 'waiting_approval'")
                    .bind(&v.run_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                let gate_waiting = waiting
                    && sqlx::query("SELECT 1 FROM steps WHERE run_id = $1 AND name = $2 AND kind = 'approval' AND status = 'waiting'")
                        .bind(&v.run_id)
                        .bind(&v.gate)
                        .fetch_optional(&mut *tx)
                        .await?
                        .is_some();
                if !gate_waiting {
                    return Ok(VoteOutcome::Stale);
                }
                let inserted = sqlx::query(
                    "INSERT INTO votes (run_id, gate, actor, decision, via, comment, at) VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (run_id, gate, actor) DO UPDATE SET decision = excluded.decision, via = excluded.via,
                       comment = excluded.comment, at = excluded.at
                     WHERE votes.decision LIKE 'expired:%'",
                )
                .bind(&v.run_id)
                .bind(&v.gate)
                .bind(&v.actor)
                .bind(&v.decision)
                .bind(&v.via)
                .bind(&v.comment)
                .bind(&v.at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted == 0 {
                    return Ok(VoteOutcome::AlreadyVoted);
                }
                let outcome = if v.decision == "reject" {
                    let why = match &v.comment {
                        Some(c) => format!("approval rejected by {}: {c}", v.actor),
                        None => format!("approval rejected by {}", v.actor),
                    };
                    if !end_gate(&mut tx, &v.run_id, &v.gate, "declined", &v.actor, &why, rollback_auto, false).await? {
                        // Dropped without a commit: nothing of this vote stays.
                        return Ok(VoteOutcome::Stale);
                    }
                    VoteOutcome::Rejected
                } else {
                    let rows = sqlx::query(
                        "SELECT actor FROM votes WHERE run_id = $1 AND gate = $2 AND decision = 'approve' ORDER BY at, actor",
                    )
                    .bind(&v.run_id)
                    .bind(&v.gate)
                    .fetch_all(&mut *tx)
                    .await?;
                    let approvers: Vec<String> = rows.iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<_, _>>()?;
                    if (approvers.len() as i64) < quorum.max(1) {
                        VoteOutcome::Pending { approvals: approvers.len() as i64 }
                    } else {
                        let actor = approvers.join(", ");
                        if !end_gate(&mut tx, &v.run_id, &v.gate, "approved", &actor, "", false, true).await? {
                            return Ok(VoteOutcome::Stale);
                        }
                        VoteOutcome::Approved { approvers }
                    }
                };
                tx.commit().await?;
                Ok(outcome)
            }

            async fn request_resume(&self, id: &str, expected: RunStatus, previous: &Owner, by: &str) -> JResult<bool> {
                let done = sqlx::query(
                    "UPDATE runs SET status = 'interrupted', auto_resume = TRUE, finished_at = NULL,
                            resumed_by = CASE WHEN resumed_by IS NULL THEN $5 ELSE resumed_by || ',' || $5 END
                     WHERE id = $1 AND status = $2 AND host = $3 AND pid = $4 AND NOT cancel_requested
                       AND (trigger = 'enqueue' OR substr(trigger, 1, 9) = 'schedule:')",
                )
                .bind(id)
                .bind(expected.as_str())
                .bind(&previous.host)
                .bind(previous.pid)
                .bind(by)
                .execute(&mut *self.db().await?)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn skip_step(
                &self,
                run_id: &str,
                expected: RunStatus,
                previous: &Owner,
                step: &str,
                actor: &str,
                reason: &str,
            ) -> JResult<bool> {
                let mut db = self.db().await?;
                let mut tx = db.begin().await?;
                let held = sqlx::query("UPDATE runs SET status = status WHERE id = $1 AND status = $2 AND host = $3 AND pid = $4")
                    .bind(run_id)
                    .bind(expected.as_str())
                    .bind(&previous.host)
                    .bind(previous.pid)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                if !held {
                    return Ok(false);
                }
                let skipped = sqlx::query(
                    "UPDATE steps SET status = 'skipped', actor = $1, error = $2, finished_at = $3
                     WHERE run_id = $4 AND name = $5 AND kind = 'step' AND status IN ('failed', 'running', 'retrying')",
                )
                .bind(actor)
                .bind(format!("skipped by {actor}: {reason}"))
                .bind(now_ts())
                .bind(run_id)
                .bind(step)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if skipped {
                    tx.commit().await?;
                }
                Ok(skipped)
            }

            async fn votes(&self, run_id: &str) -> JResult<Vec<VoteRecord>> {
                let rows = sqlx::query(
                    "SELECT run_id, gate, actor, decision, via, comment, at FROM votes WHERE run_id = $1 ORDER BY at, actor",
                )
                .bind(run_id)
                .fetch_all(&mut *self.db().await?)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(VoteRecord {
                            run_id: r.try_get("run_id")?,
                            gate: r.try_get("gate")?,
                            actor: r.try_get("actor")?,
                            decision: r.try_get("decision")?,
                            via: r.try_get("via")?,
                            comment: r.try_get("comment")?,
                            at: r.try_get("at")?,
                        })
                    })
                    .collect()
            }

            async fn expire_gate(&self, run_id: &str, gate: &str, end: OnTimeout, rollback_auto: bool, why: &str) -> JResult<bool> {
                let mut db = self.db().await?;
                let mut tx = db.begin().await?;
                // The run's row first, as a vote locks it: the two never wait on each other in
                // opposite orders.
                let waiting = sqlx::query("UPDATE runs SET status = status WHERE id = $1 AND status = 'waiting_approval'")
                    .bind(run_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                if !waiting {
                    return Ok(false);
                }
                let done = match end {
                    OnTimeout::Cancel => end_gate(&mut tx, run_id, gate, "declined", "timeout", why, rollback_auto, false).await?,
                    OnTimeout::Fail => {
                        // The votes of this round no longer count (kept, marked): a resume
                        // meets the gate again, with a fresh timeout, and a fresh quorum.
                        sqlx::query("UPDATE votes SET decision = 'expired:' || decision WHERE run_id = $1 AND gate = $2 AND decision NOT LIKE 'expired:%'")
                            .bind(run_id)
                            .bind(gate)
                            .execute(&mut *tx)
                            .await?;
                        // The gate stays waiting: a resume meets it again, with a fresh timeout.
                        let run = sqlx::query(
                            "UPDATE runs SET status = 'failed', error = $1, finished_at = $2 WHERE id = $3 AND status = 'waiting_approval'
                               AND EXISTS (SELECT 1 FROM steps WHERE run_id = $3 AND name = $4 AND kind = 'approval' AND status = 'waiting')",
                        )
                        .bind(why)
                        .bind(now_ts())
                        .bind(run_id)
                        .bind(gate)
                        .execute(&mut *tx)
                        .await?;
                        run.rows_affected() == 1
                    }
                };
                if done {
                    tx.commit().await?;
                }
                Ok(done)
            }

            async fn append_events(&self, events: &[EventRecord]) -> JResult<()> {
                // One multi-row INSERT per chunk: a single statement is atomic and costs one
                // round trip.
                for chunk in events.chunks(200) {
                    let mut q = sqlx::QueryBuilder::<$db>::new("INSERT INTO events (run_id, ts, event, step, data) ");
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
                let rows = sqlx::query("SELECT run_id, ts, event, step, data FROM events WHERE run_id = $1 ORDER BY id")
                    .bind(run_id)
                    .fetch_all(&mut *self.db().await?)
                    .await?;
                rows.iter().map(event_from_row).collect()
            }

            async fn events_since(&self, run_id: &str, after: i64, limit: i64) -> JResult<Vec<(i64, EventRecord)>> {
                let rows = sqlx::query(
                    "SELECT id, run_id, ts, event, step, data FROM events WHERE run_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                )
                .bind(run_id)
                .bind(after)
                .bind(limit)
                .fetch_all(&mut *self.db().await?)
                .await?;
                rows.iter().map(|row| Ok((row.try_get::<i64, _>("id")?, event_from_row(row)?))).collect()
            }

            async fn last_event_id(&self, run_id: &str) -> JResult<i64> {
                let id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM events WHERE run_id = $1")
                    .bind(run_id)
                    .fetch_one(&mut *self.db().await?)
                    .await?;
                Ok(id.unwrap_or(0))
            }

            async fn audit(&self, a: &AuditRecord) -> JResult<()> {
                sqlx::query("INSERT INTO audit (at, actor, action, target, detail, remote) VALUES ($1, $2, $3, $4, $5, $6)")
                    .bind(&a.at)
                    .bind(&a.actor)
                    .bind(&a.action)
                    .bind(&a.target)
                    .bind(&a.detail)
                    .bind(&a.remote)
                    .execute(&mut *self.db().await?)
                    .await?;
                Ok(())
            }

            async fn audit_log(&self, limit: i64) -> JResult<Vec<AuditRecord>> {
                let rows = sqlx::query("SELECT at, actor, action, target, detail, remote FROM audit ORDER BY at DESC LIMIT $1")
                    .bind(limit)
                    .fetch_all(&mut *self.db().await?)
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok(AuditRecord {
                            at: r.try_get("at")?,
                            actor: r.try_get("actor")?,
                            action: r.try_get("action")?,
                            target: r.try_get("target")?,
                            detail: r.try_get("detail")?,
                            remote: r.try_get("remote")?,
                        })
                    })
                    .collect()
            }

            async fn use_link(&self, nonce: &str, by: &str) -> JResult<bool> {
                let done = sqlx::query(
                    "INSERT INTO used_links (nonce, used_at, used_by) VALUES ($1, $2, $3) ON CONFLICT (nonce) DO NOTHING",
                )
                .bind(nonce)
                .bind(now_ts())
                .bind(by)
                .execute(&mut *self.db().await?)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn put_session(&self, s: &SessionRecord) -> JResult<()> {
                sqlx::query(
                    "INSERT INTO sessions (id, who, host, pid, started_at, ended_at, run_id)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (id) DO UPDATE SET ended_at = excluded.ended_at, run_id = excluded.run_id",
                )
                .bind(&s.id)
                .bind(&s.who)
                .bind(&s.host)
                .bind(s.pid)
                .bind(&s.started_at)
                .bind(&s.ended_at)
                .bind(&s.run_id)
                .execute(&mut *self.db().await?)
                .await?;
                Ok(())
            }

            async fn session_event(&self, e: &SessionEvent) -> JResult<()> {
                sqlx::query(
                    "INSERT INTO session_events (session_id, seq, at, kind, input, ok, duration_ms, output, run_id)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (session_id, seq) DO UPDATE SET input = excluded.input, ok = excluded.ok,
                        duration_ms = excluded.duration_ms, output = excluded.output, run_id = excluded.run_id",
                )
                .bind(&e.session_id)
                .bind(e.seq)
                .bind(&e.at)
                .bind(&e.kind)
                .bind(&e.input)
                .bind(e.ok)
                .bind(e.duration_ms)
                .bind(&e.output)
                .bind(&e.run_id)
                .execute(&mut *self.db().await?)
                .await?;
                Ok(())
            }

            async fn sessions(&self, limit: i64) -> JResult<Vec<SessionRecord>> {
                let rows = sqlx::query(sql::SESSIONS_NEWEST).bind(limit).fetch_all(&mut *self.db().await?).await?;
                rows.iter().map(session_from_row).collect()
            }

            async fn find_session(&self, reference: &str) -> JResult<SessionRecord> {
                let reference = reference.trim();
                if reference == "last" {
                    return self
                        .sessions(1)
                        .await?
                        .pop()
                        .ok_or_else(|| JournalError::NoSuchSession("last".into()));
                }
                let rows = sqlx::query(sql::SESSIONS_BY_PREFIX)
                    .bind(reference)
                    .bind(format!("{reference}%"))
                    .fetch_all(&mut *self.db().await?)
                    .await?;
                let mut found: Vec<SessionRecord> = rows.iter().map(session_from_row).collect::<JResult<_>>()?;
                if let Some(exact) = found.iter().position(|s| s.id == reference) {
                    return Ok(found.swap_remove(exact));
                }
                match found.len() {
                    1 => Ok(found.remove(0)),
                    0 => Err(JournalError::NoSuchSession(reference.to_string())),
                    _ => Err(JournalError::Ambiguous(
                        reference.to_string(),
                        found.iter().map(|s| s.id.as_str()).collect::<Vec<_>>().join(", "),
                    )),
                }
            }

            async fn session_events(&self, session_id: &str) -> JResult<Vec<SessionEvent>> {
                let rows = sqlx::query(
                    "SELECT session_id, seq, at, kind, input, ok, duration_ms, output, run_id
                     FROM session_events WHERE session_id = $1 ORDER BY seq",
                )
                .bind(session_id)
                .fetch_all(&mut *self.db().await?)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(SessionEvent {
                            session_id: row.try_get("session_id")?,
                            seq: row.try_get("seq")?,
                            at: row.try_get("at")?,
                            kind: row.try_get("kind")?,
                            input: row.try_get("input")?,
                            ok: row.try_get("ok")?,
                            duration_ms: row.try_get("duration_ms")?,
                            output: row.try_get("output")?,
                            run_id: row.try_get("run_id")?,
                        })
                    })
                    .collect()
            }

            async fn acquire_lock(
                &self,
                name: &str,
                run_id: &str,
                me: &Owner,
                lease_secs: i64,
            ) -> JResult<LockOutcome> {
                // Insert-or-nothing, then compare-and-swap over a holder that ended: each
                // statement is atomic, so two runners can never both believe they hold the lock.
                for _ in 0..5 {
                    let now = now_ts();
                    let inserted = sqlx::query(
                        "INSERT INTO locks (name, run_id, host, pid, pid_start, acquired_at, heartbeat_at, lease_secs)
                         VALUES ($1, $2, $3, $4, $5, $6, $6, $7) ON CONFLICT (name) DO NOTHING",
                    )
                    .bind(name)
                    .bind(run_id)
                    .bind(&me.host)
                    .bind(me.pid)
                    .bind(me.pid_start)
                    .bind(&now)
                    .bind(lease_secs)
                    .execute(&mut *self.db().await?)
                    .await?;
                    if inserted.rows_affected() == 1 {
                        return Ok(LockOutcome::Acquired);
                    }
                    let Some(row) = sqlx::query(
                        "SELECT run_id, host, pid, pid_start, heartbeat_at, lease_secs FROM locks WHERE name = $1",
                    )
                    .bind(name)
                    .fetch_optional(&mut *self.db().await?)
                    .await?
                    else {
                        continue; // released in between: try to insert again
                    };
                    let mut holder = LockHolder {
                        status: None,
                        run_id: row.try_get("run_id")?,
                        owner: Owner {
                            host: row.try_get("host")?,
                            pid: row.try_get("pid")?,
                            pid_start: row.try_get("pid_start")?,
                        },
                        heartbeat_at: row.try_get("heartbeat_at")?,
                    };
                    let held_lease: i64 = row.try_get("lease_secs")?;
                    // The lock is the run's until the run ends for good (succeeded, cancelled,
                    // rolled back): also while it waits at a gate, failed or was interrupted
                    // (it can be resumed), whatever became of its process. Only the run itself
                    // (resumed, by any process) takes it back; a lock whose run ended or was
                    // never recorded is free.
                    let status: Option<String> = sqlx::query_scalar("SELECT status FROM runs WHERE id = $1")
                        .bind(&holder.run_id)
                        .fetch_optional(&mut *self.db().await?)
                        .await?;
                    let holder_ended = match status.as_deref().map(RunStatus::parse) {
                        // Not recorded: a run still starting (it takes its lock before it records
                        // itself), or one whose process died before it could.
                        None => holder.owner.is_gone(&holder.heartbeat_at, held_lease),
                        Some(Ok(s)) => {
                            let gone = s.is_active() && holder.owner.is_gone(&holder.heartbeat_at, held_lease);
                            holder.status = Some(if gone { RunStatus::Interrupted } else { s });
                            s.is_final()
                        }
                        Some(Err(_)) => false,
                    };
                    if holder.run_id != run_id && !holder_ended {
                        return Ok(LockOutcome::Held(holder));
                    }
                    // The same run, held by another process that is alive: it is working on the
                    // run (two resumes at once); this one does not take it.
                    if holder.run_id == run_id && !holder.owner.is_gone(&holder.heartbeat_at, held_lease) {
                        return Ok(LockOutcome::Held(holder));
                    }
                    let swapped = sqlx::query(
                        "UPDATE locks SET run_id = $1, host = $2, pid = $3, pid_start = $4, acquired_at = $5, heartbeat_at = $5, lease_secs = $6
                         WHERE name = $7 AND run_id = $8 AND host = $9 AND pid = $10 AND heartbeat_at = $11",
                    )
                    .bind(run_id)
                    .bind(&me.host)
                    .bind(me.pid)
                    .bind(me.pid_start)
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
                        return Ok(if holder.run_id == run_id {
                            LockOutcome::Acquired
                        } else {
                            LockOutcome::TakenOver(holder)
                        });
                    }
                }
                Err(JournalError::Corrupt(format!("lock '{name}' changed hands too often to be acquired")))
            }

            async fn lock_holder(&self, name: &str) -> JResult<Option<LockHolder>> {
                let Some(row) = sqlx::query(
                    "SELECT l.run_id, l.host, l.pid, l.pid_start, l.heartbeat_at, r.status
                     FROM locks l LEFT JOIN runs r ON r.id = l.run_id WHERE l.name = $1",
                )
                .bind(name)
                .fetch_optional(&mut *self.db().await?)
                .await?
                else {
                    return Ok(None);
                };
                let status: Option<String> = row.try_get("status")?;
                Ok(Some(LockHolder {
                    run_id: row.try_get("run_id")?,
                    status: status.as_deref().map(RunStatus::parse).transpose()?,
                    owner: Owner {
                        host: row.try_get("host")?,
                        pid: row.try_get("pid")?,
                        pid_start: row.try_get("pid_start")?,
                    },
                    heartbeat_at: row.try_get("heartbeat_at")?,
                }))
            }

            async fn release_lock(&self, name: &str, run_id: &str) -> JResult<()> {
                sqlx::query("DELETE FROM locks WHERE name = $1 AND run_id = $2")
                    .bind(name)
                    .bind(run_id)
                    .execute(&mut *self.db().await?)
                    .await?;
                Ok(())
            }

            async fn claim_queued(&self, me: &Owner, lease_secs: i64) -> JResult<Option<RunRecord>> {
                let now = now_ts();
                let sql = format!("{} RETURNING {}", Self::CLAIM_QUEUED, sql::RUN_COLUMNS);
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&me.host)
                    .bind(me.pid)
                    .bind(me.pid_start)
                    .bind(&now)
                    .bind(lease_secs)
                    .fetch_optional(&mut *self.db().await?)
                    .await?;
                row.as_ref().map(run_from_row).transpose()
            }

            async fn fire(&self, fire: &FireRecord, run: Option<&RunRecord>) -> JResult<bool> {
                // The fire's row and its queued run commit together: a scheduler killed in
                // between leaves neither, and the fire time is still free to be claimed.
                let mut db = self.db().await?;
                let mut tx = db.begin().await?;
                let inserted = sqlx::query(
                    "INSERT INTO schedule_fires (schedule, fire_at, run_id, outcome, fired_by, fired_at)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (schedule, fire_at) DO NOTHING",
                )
                .bind(&fire.schedule)
                .bind(&fire.fire_at)
                .bind(&fire.run_id)
                .bind(&fire.outcome)
                .bind(&fire.fired_by)
                .bind(&fire.fired_at)
                .execute(&mut *tx)
                .await?;
                if inserted.rows_affected() != 1 {
                    return Ok(false);
                }
                if let Some(run) = run {
                    bind_run(sqlx::query(sql::INSERT_RUN), run).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn fires(&self, schedule: &str, limit: i64) -> JResult<Vec<FireRecord>> {
                let rows = sqlx::query(
                    "SELECT schedule, fire_at, run_id, outcome, fired_by, fired_at FROM schedule_fires
                     WHERE schedule = $1 ORDER BY fire_at DESC LIMIT $2",
                )
                .bind(schedule)
                .bind(limit)
                .fetch_all(&mut *self.db().await?)
                .await?;
                rows.iter().map(fire_from_row).collect()
            }

            async fn unpaused_at(&self, schedule: &str) -> JResult<Option<String>> {
                let row = sqlx::query("SELECT unpaused_at FROM schedules WHERE name = $1")
                    .bind(schedule)
                    .fetch_optional(&mut *self.db().await?)
                    .await?;
                Ok(match row {
                    Some(r) => r.try_get("unpaused_at")?,
                    None => None,
                })
            }

            async fn unpause(&self, schedule: &str, actor: &str) -> JResult<()> {
                sqlx::query(
                    "INSERT INTO schedules (name, unpaused_at, unpaused_by) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE SET unpaused_at = excluded.unpaused_at, unpaused_by = excluded.unpaused_by",
                )
                .bind(schedule)
                .bind(now_ts())
                .bind(actor)
                .execute(&mut *self.db().await?)
                .await?;
                Ok(())
            }

            async fn scrub_run(
                &self,
                run_id: &str,
                me: &Owner,
                scrub: for<'v> fn(&'v mut serde_json::Value),
            ) -> JResult<()> {
                // One transaction, and only while this process owns the run.
                let mut db = self.db().await?;
                let mut tx = db.begin().await?;
                let row = sqlx::query("SELECT params, error FROM runs WHERE id = $1 AND host = $2 AND pid = $3")
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
                sqlx::query("UPDATE runs SET params = $1, error = $2 WHERE id = $3")
                    .bind(p.to_string())
                    .bind(e.as_str().map(str::to_string))
                    .bind(run_id)
                    .execute(&mut *tx)
                    .await?;
                // Steps, items, events: each text column read, scrubbed, and written back when
                // it changed. (table, key columns, text columns, which of them hold JSON)
                let tables: [(&str, &[&str], &[&str], &[bool]); 3] = [
                    ("steps", &["name"], &["result", "error", "undo_error"], &[true, false, false]),
                    ("step_items", &["step", "item"], &["result", "error"], &[true, false]),
                    ("events", &["id"], &["step", "data"], &[false, true]),
                ];
                for (table, keys, cols, json) in tables {
                    let key_cols: Vec<String> = keys.iter().map(|k| format!("CAST({k} AS TEXT) AS {k}")).collect();
                    let sql =
                        format!("SELECT {}, {} FROM {table} WHERE run_id = $1", key_cols.join(", "), cols.join(", "));
                    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(run_id).fetch_all(&mut *tx).await?;
                    for row in rows {
                        let mut before = Vec::new();
                        for (col, is_json) in cols.iter().zip(json) {
                            let text: Option<String> = row.try_get(*col)?;
                            before.push(match text {
                                Some(t) if *is_json => serde_json::from_str(&t).unwrap_or(serde_json::Value::Null),
                                Some(t) => serde_json::Value::String(t),
                                None => serde_json::Value::Null,
                            });
                        }
                        let mut after = serde_json::Value::Array(before.clone());
                        scrub(&mut after);
                        if after == serde_json::Value::Array(before.clone()) {
                            continue;
                        }
                        let sets: Vec<String> =
                            cols.iter().enumerate().map(|(i, c)| format!("{c} = ${}", i + 1)).collect();
                        let wheres: Vec<String> = keys
                            .iter()
                            .enumerate()
                            .map(|(i, k)| format!("CAST({k} AS TEXT) = ${}", cols.len() + i + 2))
                            .collect();
                        let sql = format!(
                            "UPDATE {table} SET {} WHERE run_id = ${} AND {}",
                            sets.join(", "),
                            cols.len() + 1,
                            wheres.join(" AND ")
                        );
                        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                        for ((value, was), is_json) in after.as_array().into_iter().flatten().zip(&before).zip(json) {
                            q = q.bind(match (value, was) {
                                (_, serde_json::Value::Null) => None,
                                (v, _) if *is_json => Some(v.to_string()),
                                (v, _) => v.as_str().map(str::to_string),
                            });
                        }
                        q = q.bind(run_id);
                        for k in keys.iter() {
                            q = q.bind(row.try_get::<String, _>(*k)?);
                        }
                        q.execute(&mut *tx).await?;
                    }
                }
                tx.commit().await?;
                drop(db);
                self.after_scrub().await;
                Ok(())
            }

            async fn close(&self) {
                self.shutdown().await;
            }
        }
    };
}

pub(super) use sql_journal;
