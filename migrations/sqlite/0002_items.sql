-- Outcomes of the items of a step (the hosts of an ssh fan-out): a resumed or retried step runs
-- only the items without a recorded success.
CREATE TABLE step_items (
    run_id     TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step       TEXT NOT NULL,
    item       TEXT NOT NULL,
    status     TEXT NOT NULL,
    result     TEXT,
    error      TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (run_id, step, item)
);
