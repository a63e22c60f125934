-- Incident sessions of `runbook repl`: who worked, where, on which run, and every chunk they
-- evaluated (redacted), for the postmortem (`runbook sessions show ID`, `:timeline`).
CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    who        TEXT NOT NULL,
    host       TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    ended_at   TEXT,
    run_id     TEXT
);

CREATE TABLE session_events (
    session_id  TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    at          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    input       TEXT NOT NULL,
    ok          BOOLEAN NOT NULL,
    duration_ms INTEGER NOT NULL,
    output      TEXT NOT NULL,
    run_id      TEXT,
    PRIMARY KEY (session_id, seq)
);
CREATE INDEX sessions_by_start ON sessions (started_at);
