-- Database role credential rotation, as PostgreSQL teams publish it: a new random password,
-- set with its SCRAM verifier only (the password reaches neither the server log nor
-- pg_stat_activity nor the journal), written where the application reads it, proven by a
-- login, then the sessions still using the old one ended.
--   runbook run runbooks/rotate_credentials.lua -p role=app -p write_to=/etc/app/database.env
runbook {
  name = "rotate_credentials",
  description = "Rotate a PostgreSQL role's password: generate, set by verifier, hand over, prove, end old sessions",
  params = {
    database_url = { type = "secret", env = "DATABASE_URL", required = true, description = "an admin connection" },
    role = { type = "string", required = true, description = "the role whose password is rotated" },
    host = { type = "string", default = "127.0.0.1", description = "where the role logs in, for the proof" },
    port = { type = "integer", default = 5432 },
    database = { type = "string", default = "postgres", description = "the database the proof logs in to" },
    write_to = { type = "string", required = true, description = "file the new password goes to (mode 0600, replaced whole)" },
    end_old_sessions = { type = "boolean", default = true, description = "terminate the role's sessions afterwards" },
  },
  lock = "rotate_credentials",
}

local pg = require "runbook.pg"
local util = require "runbook.util"
local conn = db.connect(params.database_url)

step("check role", { description = "The role exists and can log in" }, function()
  if not pg.role_exists(conn, params.role) then fail("role " .. params.role .. " does not exist") end
  return conn:query_one("select rolcanlogin as can_login, rolvaliduntil as valid_until from pg_roles where rolname = $1",
    params.role)
end)

-- One step: a password is never journaled, so a rotation cut off midway is redone whole with
-- a new one when resumed.
step("rotate", { description = "New password, set by its SCRAM verifier, written for the application, proven by a login" }, function()
  local pw = secret{ value = util.random_password(40), name = "new_password" }
  pg.set_password(conn, params.role, pw)
  -- The password goes through stdin, never a command line; the file is replaced whole.
  exec{ "sh", "-c", 'umask 077 && cat > "$0.tmp" && mv "$0.tmp" "$0"', params.write_to, stdin = pw }
  local url = "postgres://" .. params.role .. ":" .. pw .. "@" .. params.host .. ":" .. params.port .. "/" .. params.database
  local proof = db.connect(url)
  local who = proof:scalar("select current_user")
  proof:close()
  if who ~= params.role then fail("logged in as " .. tostring(who) .. ", not " .. params.role) end
  return { logged_in_as = who, written = params.write_to }
end)

if params.end_old_sessions then
  step("end old sessions", { description = "Terminate the role's sessions opened with the old password" }, function()
    return { terminated = pg.terminate_sessions(conn, params.role) }
  end)
end
