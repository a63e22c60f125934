-- The journal: every run, every step, every event. The only writer is src/journal/.
CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    runbook          TEXT NOT NULL,
    path             TEXT NOT NULL,
    content_hash     TEXT NOT NULL,
    source           TEXT NOT NULL,
    params           TEXT NOT NULL,
    user             TEXT NOT NULL,
    host             TEXT NOT NULL,
    pid              INTEGER NOT NULL,
    pid_start        INTEGER,
    trigger          TEXT NOT NULL,
    dry_run          INTEGER NOT NULL DEFAULT 0,
    rollback         TEXT NOT NULL DEFAULT 'manual',
    lock_name        TEXT,
    status           TEXT NOT NULL,
    error            TEXT,
    created_at       TEXT NOT NULL,
    started_at       TEXT NOT NULL,
    finished_at      TEXT,
    heartbeat_at     TEXT NOT NULL,
    lease_secs       INTEGER NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_by_created ON runs (created_at);
CREATE INDEX runs_by_runbook ON runs (runbook, created_at);

CREATE TABLE steps (
    run_id          TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    kind            TEXT NOT NULL DEFAULT 'step',
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    budget_base     INTEGER NOT NULL DEFAULT 0,
    line            INTEGER,
    started_at      TEXT,
    finished_at     TEXT,
    duration_ms     INTEGER,
    next_attempt_at TEXT,
    result          TEXT,
    error           TEXT,
    undo_status     TEXT,
    undo_error      TEXT,
    actor           TEXT,
    PRIMARY KEY (run_id, name)
);

CREATE TABLE events (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    ts     TEXT NOT NULL,
    event  TEXT NOT NULL,
    step   TEXT,
    data   TEXT NOT NULL
);
CREATE INDEX events_by_run ON events (run_id, id);

CREATE TABLE locks (
    name         TEXT PRIMARY KEY,
    run_id       TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    pid_start    INTEGER,
    acquired_at  TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    lease_secs   INTEGER NOT NULL
);
