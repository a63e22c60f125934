-- Long-running and idle-in-transaction sessions, as the triage guides list them: who, from
-- where, how long the transaction has been open, and what it runs or ran last.
select pid,
       usename as user,
       datname as database,
       application_name as application,
       client_addr,
       backend_start,
       xact_start,
       state,
       wait_event_type,
       wait_event,
       backend_xmin,
       now() - xact_start as xact_age,
       extract(epoch from now() - xact_start) as xact_seconds,
       left(query, 500) as query
from pg_stat_activity
where backend_type = 'client backend'
  and pid <> pg_backend_pid()
  and xact_start is not null
  and ($3::text is null or datname = $3::text)
  and (
        (state = 'active' and now() - xact_start > $1::interval)
     or (state like 'idle in transaction%' and now() - state_change > $2::interval)
  )
order by xact_start
