//! Who is restoring into a database. A restore first writes the run and step it belongs to into a
//! small table of the target (`_runbook_restore`), so a restore cut off midway (a killed runner)
//! and run again by the same step cleans what that step itself started, and never a database some
//! other run, step or person filled: that one is still refused unless `clean = true`.
use sqlx::Connection;

use super::{BackupError, Source};

pub const TABLE: &str = "_runbook_restore";

/// The run recorded as restoring into `target`, if any.
pub async fn read(target: &Source) -> Result<Option<String>, BackupError> {
    let sql = format!("select run_id from {TABLE}");
    let found: Result<Option<String>, sqlx::Error> = match target {
        Source::Postgres { .. } => {
            let mut c = target.pg().await?;
            let r = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_optional(&mut c).await;
            let _ = c.close().await;
            r
        }
        Source::MySql { .. } => {
            let mut c = target.mysql().await?;
            let r = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_optional(&mut c).await;
            let _ = c.close().await;
            r
        }
        Source::Sqlite { .. } => return Ok(None),
    };
    // No such table: nobody marked it.
    Ok(found.unwrap_or(None))
}

/// Records that run `run_id` restores backup `key` into `target` (replacing an earlier mark).
pub async fn write(target: &Source, run_id: &str, key: &str) -> Result<(), BackupError> {
    let create = format!("create table if not exists {TABLE} (run_id varchar(100) not null, backup varchar(1000) not null, started_at varchar(40) not null)");
    let now = crate::journal::now_ts();
    match target {
        Source::Postgres { .. } => {
            let mut c = target.pg().await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(create)).execute(&mut c).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("delete from {TABLE}"))).execute(&mut c).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("insert into {TABLE} values ($1, $2, $3)")))
                .bind(run_id)
                .bind(key)
                .bind(&now)
                .execute(&mut c)
                .await?;
            let _ = c.close().await;
        }
        Source::MySql { .. } => {
            let mut c = target.mysql().await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(create)).execute(&mut c).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("delete from {TABLE}"))).execute(&mut c).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("insert into {TABLE} values (?, ?, ?)")))
                .bind(run_id)
                .bind(key)
                .bind(&now)
                .execute(&mut c)
                .await?;
            let _ = c.close().await;
        }
        // A SQLite restore replaces the whole file at once: nothing to mark.
        Source::Sqlite { .. } => {}
    }
    Ok(())
}

/// Removes the mark once the restore is complete (the restored database carries no table of
/// ours). A kill in the instant between the two leaves a filled database that a retry refuses.
pub async fn remove(target: &Source) -> Result<(), BackupError> {
    let sql = format!("drop table if exists {TABLE}");
    match target {
        Source::Postgres { .. } => {
            let mut c = target.pg().await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut c).await?;
            let _ = c.close().await;
        }
        Source::MySql { .. } => {
            let mut c = target.mysql().await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut c).await?;
            let _ = c.close().await;
        }
        Source::Sqlite { .. } => {}
    }
    Ok(())
}
