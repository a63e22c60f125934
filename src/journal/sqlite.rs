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
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Row};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use super::sql;
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
        let file = journal_file(path).map_err(fail)?;
        // Two processes opening a new journal at once must not both create the schema: hold an
        // exclusive flock (independent of SQLite's own fcntl locks) while migrating. Within this
        // process a mutex does it (a flock is per open file, and the descriptor is shared).
        let in_process = MIGRATING.lock().await;
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
        let migrated = MIGRATOR.run(&mut conn).await;
        drop(guard);
        drop(in_process);
        // A journal whose schema cannot be read (a corrupt page) is an unusable `--state`.
        migrated.map_err(|e| fail(format!("its schema cannot be read or updated: {e}")))?;
        Ok(SqliteJournal { conn: Mutex::new(Some(conn)), path: path.to_path_buf() })
    }
}

impl SqliteJournal {
    /// A journal for `runbook test`: private to one run of a test (and its resumes), removed with
    /// it, in-process only. Nothing in it must outlive a power cut (no fsync), no other process
    /// opens it (no lock, not kept open: a test suite opens thousands), and its schema is a copy
    /// of one migrated once per folder. An existing one (a resume) is opened as it is.
    pub async fn scratch(path: &Path) -> JResult<SqliteJournal> {
        let fail = |reason: String| JournalError::Open { location: path.display().to_string(), reason };
        if !path.exists() {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let template = scratch_template(dir).await.map_err(&fail)?;
            std::fs::copy(&template, path).map_err(|e| fail(e.to_string()))?;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|e| fail(e.to_string()))?
            .filename(path)
            .journal_mode(SqliteJournalMode::Memory)
            .synchronous(SqliteSynchronous::Off)
            .foreign_keys(true);
        let conn = options.connect().await.map_err(|e| fail(e.to_string()))?;
        Ok(SqliteJournal { conn: Mutex::new(Some(conn)), path: path.to_path_buf() })
    }
}

/// An empty journal with the current schema, made once per folder (a test file's) for
/// `scratch` to copy: removed with the folder.
async fn scratch_template(dir: &Path) -> Result<PathBuf, String> {
    let path = dir.join("template.db");
    if path.exists() {
        return Ok(path);
    }
    let making = dir.join("template.db.new");
    let options = SqliteConnectOptions::from_str("sqlite://")
        .map_err(|e| e.to_string())?
        .filename(&making)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Delete)
        .foreign_keys(true);
    let mut conn = options.connect().await.map_err(|e| e.to_string())?;
    MIGRATOR.run(&mut conn).await.map_err(|e| e.to_string())?;
    conn.close().await.map_err(|e| e.to_string())?;
    std::fs::rename(&making, &path).map_err(|e| e.to_string())?;
    Ok(path)
}

static MIGRATING: Mutex<()> = Mutex::const_new(());

/// Descriptors of journal files this process opened itself, by (device, inode), kept open until
/// the process exits. Closing *any* descriptor of a file drops every POSIX lock the process
/// holds on it, SQLite's included: an outside reader (sqlite3 during an incident, monitoring)
/// would then find the journal unlocked, checkpoint it and delete the `-wal` the runner still
/// writes to, and every later commit would be lost. So a journal file is opened at most once
/// here and never closed.
static KEPT: std::sync::Mutex<Vec<Kept>> = std::sync::Mutex::new(Vec::new());

/// A kept descriptor and the (device, inode) of its file.
type Kept = ((u64, u64), Arc<std::fs::File>);

fn kept(meta: &std::fs::Metadata) -> Option<Arc<std::fs::File>> {
    use std::os::unix::fs::MetadataExt;
    let kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
    kept.iter().find(|(k, _)| *k == (meta.dev(), meta.ino())).map(|(_, f)| Arc::clone(f))
}

fn keep(file: std::fs::File) -> std::io::Result<Arc<std::fs::File>> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata()?;
    let file = Arc::new(file);
    KEPT.lock().unwrap_or_else(|p| p.into_inner()).push(((meta.dev(), meta.ino()), Arc::clone(&file)));
    Ok(file)
}

/// The journal file, created 0600 if missing, else checked to be one: a regular file holding a
/// SQLite database (or nothing yet). A device, a folder, a symlink to something else or a file of
/// another format is refused and left exactly as it was.
fn journal_file(path: &Path) -> Result<Arc<std::fs::File>, String> {
    use std::os::unix::fs::FileExt;
    // Created by us so it is never readable by others, not even for an instant. SQLite gives
    // the -wal and -shm files the same permissions.
    match std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(path) {
        Ok(f) => return keep(f).map_err(|e| e.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e.to_string()),
    }
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.file_type().is_file() {
        let what =
            std::fs::symlink_metadata(path).map(|m| crate::files::describe_kind(&m)).unwrap_or("not a regular file");
        let what = if what == "a symbolic link" { "a symbolic link to something other than a file" } else { what };
        return Err(format!(
            "it is {what}, not a journal; give the path of a journal file (it is created when missing)"
        ));
    }
    let file = match kept(&meta) {
        Some(f) => f,
        None => keep(std::fs::File::open(path).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?,
    };
    let mut head = [0u8; 16];
    let read = file.read_at(&mut head, 0).map_err(|e| e.to_string())?;
    if read != 0 && (read < head.len() || &head != crate::files::SQLITE_MAGIC) {
        return Err("it is not a SQLite database (nor empty); refusing to use or change it".into());
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "journal file was readable by others; restricting it to its owner (0600)");
        crate::files::restrict_regular_file(path).map_err(|e| e.to_string())?;
    }
    Ok(file)
}

/// An exclusive `flock` on a kept descriptor, released (never closed) on drop.
struct FileLock(Arc<std::fs::File>);

impl FileLock {
    async fn exclusive(file: Arc<std::fs::File>) -> std::io::Result<FileLock> {
        use std::os::fd::AsRawFd;
        tokio::task::spawn_blocking(move || {
            // SAFETY: flock on a descriptor we keep open.
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
        // SAFETY: unlocking a descriptor we keep open (closing it would drop SQLite's locks).
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

impl SqliteJournal {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    /// The scrubbed rows' earlier versions are still in the WAL (and would stay there until a
    /// checkpoint): copy the current pages into the database and empty the WAL now. Best effort:
    /// an outside reader in a long transaction can hold it back, and the next scrub tries again.
    async fn after_scrub(&self) {
        if let Ok(mut db) = self.db().await {
            // Without waiting on a reader: the runner (and its heartbeat) must not stall here.
            let _ = sqlx::query("PRAGMA busy_timeout = 0").execute(&mut *db).await;
            let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut *db).await;
            let _ = sqlx::query("PRAGMA busy_timeout = 30000").execute(&mut *db).await;
        }
    }

    async fn shutdown(&self) {
        if let Some(conn) = self.conn.lock().await.take() {
            let _ = conn.close().await;
        }
    }

    /// SQLite serialises writers: the sub-select and the update see the same queue, so two
    /// workers never take the same run without any row lock.
    const CLAIM_QUEUED: &'static str = sql::claim_queued_sql!("");
}

sql::sql_journal!(SqliteJournal, sqlx::Sqlite);
