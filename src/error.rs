//! One error for the whole program, gathered from the typed errors of each area, with the
//! stable exit codes documented in `--help` and the README.
use crate::journal::JournalError;

/// Exit codes. Stable: scripts and cron wrappers depend on them.
pub mod exit {
    pub const OK: u8 = 0;
    /// The run failed, was rolled back, or was cancelled.
    pub const FAILED: u8 = 1;
    /// Usage or bad input: command line, runbook, params, config.
    pub const USAGE: u8 = 2;
    /// The run stopped at an approval gate and waits for `runbook approve`.
    pub const WAITING_APPROVAL: u8 = 3;
    /// The runbook's lock is held by another live run.
    pub const LOCK_HELD: u8 = 4;
    /// Not allowed: an approval policy or a console role refused this person.
    pub const DENIED: u8 = 5;
    /// The run was interrupted by SIGINT or SIGTERM; it can be resumed.
    pub const INTERRUPTED: u8 = 130;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A wrong command line or a wrong reference to a run.
    #[error("{0}")]
    Usage(String),
    /// Every problem with the parameters, reported together.
    #[error("invalid parameters:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Params(Vec<String>),
    /// The runbook itself is wrong: syntax, declaration, step definitions. The message starts
    /// with `FILE:LINE:`.
    #[error("{0}")]
    Runbook(String),
    #[error("lock '{name}' is held by run {run_id} ({status}, pid {pid} on {host}); a run keeps its lock until it ends (succeeded, cancelled or rolled back), also while it waits for approval or sits failed and resumable. Let it finish (`runbook resume {run_id}`), end it (`runbook cancel {run_id}`), or release the lock by hand (`runbook unlock {name}`)")]
    LockHeld { name: String, run_id: String, status: String, host: String, pid: i64 },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Approval(#[from] crate::approval::ApprovalError),
    #[error("{0}")]
    Io(String),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::Params(_) | Error::Runbook(_) => exit::USAGE,
            Error::LockHeld { .. } => exit::LOCK_HELD,
            Error::Journal(
                JournalError::NoSuchRun(_)
                | JournalError::NoSuchSession(_)
                | JournalError::Ambiguous(..)
                | JournalError::Open { .. },
            ) => exit::USAGE,
            // A corrupt journal file (SQLITE_CORRUPT, SQLITE_NOTADB) is an unusable --state.
            Error::Journal(JournalError::Db(sqlx::Error::Database(d)))
                if matches!(d.code().as_deref(), Some("11" | "26")) =>
            {
                exit::USAGE
            }
            Error::Approval(crate::approval::ApprovalError::NotAllowed(_)) => exit::DENIED,
            Error::Approval(crate::approval::ApprovalError::Journal(_)) => exit::FAILED,
            Error::Approval(_) => exit::USAGE,
            Error::Journal(_) | Error::Io(_) => exit::FAILED,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
