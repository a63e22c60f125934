-- The queue and the scheduler: queued runs (status 'queued'), runs of one key one at a time
-- (a schedule's runs), a start delay (jitter), and one row per claimed fire time.
ALTER TABLE runs ADD COLUMN queue_key TEXT;
ALTER TABLE runs ADD COLUMN not_before TEXT;
ALTER TABLE runs ADD COLUMN queued_params TEXT;
CREATE INDEX runs_by_status ON runs (status, created_at);
CREATE INDEX runs_by_queue_key ON runs (queue_key, created_at);

-- Exactly one row per (schedule, fire time): whichever scheduler inserts it fires that time.
CREATE TABLE schedule_fires (
    schedule  TEXT NOT NULL,
    fire_at   TEXT NOT NULL,
    run_id    TEXT,
    outcome   TEXT NOT NULL,
    fired_by  TEXT NOT NULL,
    fired_at  TEXT NOT NULL,
    PRIMARY KEY (schedule, fire_at)
);

-- A schedule paused after failures runs again once unpaused (`runbook schedule --unpause`).
CREATE TABLE schedules (
    name        TEXT PRIMARY KEY,
    unpaused_at TEXT,
    unpaused_by TEXT
);
