-- The `mam` database the backend's migrations create (make backend-migrate).
create table assets (
  id bigserial primary key,
  title text not null,
  staging_key text,
  master_key text,
  preview_key text,
  status text not null default 'uploaded',
  created_at timestamptz not null default now()
);
create index idx_assets_status on assets (status);
create table jobs (
  id bigserial primary key,
  asset_id bigint not null references assets (id) on delete cascade,
  kind text not null,
  state text not null default 'queued',
  updated_at timestamptz not null default now()
);
create index idx_jobs_state on jobs (state);
