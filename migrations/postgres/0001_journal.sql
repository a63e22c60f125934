-- The shared journal in PostgreSQL: the same tables and columns as the SQLite journal (see
-- migrations/sqlite), so one set of statements serves both. Timestamps are RFC 3339 UTC text
-- with milliseconds (they sort as time); JSON is text. Text that is sorted is COLLATE "C", so it
-- sorts byte by byte as in SQLite.
CREATE TABLE runs (
    id               TEXT COLLATE "C" PRIMARY KEY,
    runbook          TEXT NOT NULL,
    path             TEXT NOT NULL,
    content_hash     TEXT NOT NULL,
    source           TEXT NOT NULL,
    params           TEXT NOT NULL,
    "user"           TEXT NOT NULL,
    host             TEXT NOT NULL,
    pid              BIGINT NOT NULL,
    pid_start        BIGINT,
    trigger          TEXT NOT NULL,
    dry_run          BOOLEAN NOT NULL DEFAULT FALSE,
    rollback         TEXT NOT NULL DEFAULT 'manual',
    lock_name        TEXT,
    status           TEXT NOT NULL,
    error            TEXT,
    created_at       TEXT COLLATE "C" NOT NULL,
    started_at       TEXT NOT NULL,
    finished_at      TEXT,
    heartbeat_at     TEXT NOT NULL,
    lease_secs       BIGINT NOT NULL,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    queue_key        TEXT,
    not_before       TEXT,
    queued_params    TEXT
);
CREATE INDEX runs_by_created ON runs (created_at);
CREATE INDEX runs_by_runbook ON runs (runbook, created_at);
CREATE INDEX runs_by_status ON runs (status, created_at);
CREATE INDEX runs_by_queue_key ON runs (queue_key, created_at);

CREATE TABLE steps (
    run_id          TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    name            TEXT COLLATE "C" NOT NULL,
    seq             BIGINT NOT NULL,
    kind            TEXT NOT NULL DEFAULT 'step',
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    budget_base     BIGINT NOT NULL DEFAULT 0,
    line            BIGINT,
    started_at      TEXT,
    finished_at     TEXT,
    duration_ms     BIGINT,
    next_attempt_at TEXT,
    result          TEXT,
    error           TEXT,
    undo_status     TEXT,
    undo_error      TEXT,
    actor           TEXT,
    PRIMARY KEY (run_id, name)
);

CREATE TABLE step_items (
    run_id     TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step       TEXT COLLATE "C" NOT NULL,
    item       TEXT COLLATE "C" NOT NULL,
    status     TEXT NOT NULL,
    result     TEXT,
    error      TEXT,
    updated_at TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (run_id, step, item)
);

CREATE TABLE events (
    id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
    pid          BIGINT NOT NULL,
    pid_start    BIGINT,
    acquired_at  TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    lease_secs   BIGINT NOT NULL
);

CREATE TABLE schedule_fires (
    schedule  TEXT NOT NULL,
    fire_at   TEXT COLLATE "C" NOT NULL,
    run_id    TEXT,
    outcome   TEXT NOT NULL,
    fired_by  TEXT NOT NULL,
    fired_at  TEXT NOT NULL,
    PRIMARY KEY (schedule, fire_at)
);

CREATE TABLE schedules (
    name        TEXT PRIMARY KEY,
    unpaused_at TEXT,
    unpaused_by TEXT
);
