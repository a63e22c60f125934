-- `runbook cancel --no-rollback`: a cancel that must not run the undos of a rollback = "auto"
-- runbook. Read by the live runner with `cancel_requested`.
ALTER TABLE runs ADD COLUMN cancel_no_rollback BOOLEAN NOT NULL DEFAULT FALSE;
-- The Lua memory limit the run was started with (`--max-memory`), which a resume keeps.
ALTER TABLE runs ADD COLUMN max_memory BIGINT;
