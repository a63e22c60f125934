-- Approval policies: every decision taken at a gate (who, how, when, why), one per person and
-- gate. A gate's policy (approvers, quorum, self_approval, timeout) is kept in its step row's
-- result; the votes decide it.
CREATE TABLE votes (
    run_id   TEXT NOT NULL,
    gate     TEXT NOT NULL,
    actor    TEXT NOT NULL,
    decision TEXT NOT NULL,
    via      TEXT NOT NULL,
    comment  TEXT,
    at       TEXT NOT NULL,
    PRIMARY KEY (run_id, gate, actor)
);
-- A run whose gate was decided while no process held it: a worker (or `runbook serve
-- --workers N`) resumes it, whoever started it. Cleared when a process claims the run.
ALTER TABLE runs ADD COLUMN auto_resume BOOLEAN NOT NULL DEFAULT FALSE;
-- Who asked the console to resume the run (comma-separated): like its requester, none of them
-- may approve its gates unless self_approval = true.
ALTER TABLE runs ADD COLUMN resumed_by TEXT;
-- Runs waiting at a gate, looked at by the workers for gates whose time ran out.
CREATE INDEX runs_waiting ON runs (status) WHERE status = 'waiting_approval';
-- `runbook serve`: every action taken through the console or its API (who, what, on what,
-- from where), for the team's audit.
CREATE TABLE audit (
    at     TEXT NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL,
    remote TEXT NOT NULL
);
CREATE INDEX audit_by_time ON audit (at);
-- Approval links opened: a link works once.
CREATE TABLE used_links (
    nonce   TEXT PRIMARY KEY,
    used_at TEXT NOT NULL,
    used_by TEXT NOT NULL
);
