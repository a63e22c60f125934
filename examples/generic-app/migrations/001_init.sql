-- A first schema: users, sessions, an audit log.
create table users (id bigserial primary key, email text not null unique, created_at timestamptz not null default now());
create table sessions (id uuid primary key, user_id bigint not null references users (id) on delete cascade,
                       expires_at timestamptz not null);
create index idx_sessions_user_id on sessions (user_id);
create table audit_log (id bigserial primary key, user_id bigint, action text not null, at timestamptz not null default now());
create index idx_audit_log_at on audit_log (at);
