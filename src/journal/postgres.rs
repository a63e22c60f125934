//! The shared journal in PostgreSQL: many runners, schedulers and workers on many machines.
//!
//! Ownership works as in SQLite (every write is a compare-and-swap on the owner), with the
//! heartbeat deciding across machines: a run or lock whose holder's heartbeat is older than its
//! lease is taken over. Queued runs are claimed with `FOR UPDATE SKIP LOCKED`, so workers never
//! wait on each other; a schedule's fire time is a primary key, so it fires once.
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, Row};

use super::sql;
use super::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

pub struct PgJournal {
    pool: PgPool,
    /// The URL without its password, for messages.
    shown: String,
}

impl PgJournal {
    /// Connects and applies the migrations (sqlx holds an advisory lock while migrating, so
    /// runners starting together do not race).
    pub async fn open(url: &str) -> JResult<PgJournal> {
        let shown = without_password(url);
        let fail = |reason: String| JournalError::Open {
            location: shown.clone(),
            reason: crate::secret::redact(&reason.replace(url, &shown)).into_owned(),
        };
        // Runbooks can read the environment the URL came from: its password is a secret.
        if let Some(pw) = password(url) {
            crate::secret::register(&pw, "journal password");
            if let Ok(decoded) = percent_decode(&pw) {
                crate::secret::register(&decoded, "journal password");
            }
        }
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| fail(e.to_string()))?
            .application_name("runbook")
            // Statements are short; one stuck behind a lock says so instead of hanging a runner.
            .options([("statement_timeout", "30s"), ("lock_timeout", "10s")]);
        crate::primitives::db::refused_at_once(options.get_host(), options.get_port()).await.map_err(fail)?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(30))
            .idle_timeout(Duration::from_secs(300))
            .connect_with(options)
            .await
            .map_err(|e| fail(e.to_string()))?;
        MIGRATOR.run(&pool).await?;
        Ok(PgJournal { pool, shown })
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }

    async fn db(&self) -> JResult<PoolConnection<Postgres>> {
        Ok(self.pool.acquire().await?)
    }

    /// PostgreSQL keeps no copy a reader of the journal could see.
    async fn after_scrub(&self) {}

    async fn shutdown(&self) {
        self.pool.close().await;
    }

    /// Workers skip the rows another worker is claiming instead of waiting for them.
    const CLAIM_QUEUED: &'static str = sql::claim_queued_sql!("FOR UPDATE SKIP LOCKED");
}

/// The password of `postgres://user:secret@host/db`, as written.
fn password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let auth = rest.rsplit_once('@')?.0;
    auth.split_once(':').map(|(_, pw)| pw.to_string()).filter(|p| !p.is_empty())
}

fn percent_decode(s: &str) -> Result<String, ()> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or(())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

/// `postgres://user:secret@host/db` → `postgres://user@host/db`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "postgres://…".into() };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((auth, host)) => (Some(auth), host),
        None => (None, rest),
    };
    let host = host.split('?').next().unwrap_or(host);
    match auth {
        Some(a) => format!("{scheme}://{}@{host}", a.split(':').next().unwrap_or("")),
        None => format!("{scheme}://{host}"),
    }
}

sql::sql_journal!(PgJournal, Postgres);

#[cfg(test)]
mod tests {
    #[test]
    fn password_never_shown() {
        assert_eq!(
            super::without_password("postgres://app:s3cr3t@db:5432/x?sslmode=require"),
            "postgres://app@db:5432/x"
        );
        assert_eq!(super::without_password("postgresql://db/x"), "postgresql://db/x");
        assert_eq!(super::password("postgres://app:s%40cr3t@db/x").as_deref(), Some("s%40cr3t"));
        assert_eq!(super::percent_decode("s%40cr3t").unwrap(), "s@cr3t");
        assert_eq!(super::password("postgres://app@db/x"), None);
    }
}
