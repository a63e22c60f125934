-- The media tables of the guide's "Database Migration" (server/migrations/006_media_tables.sql).
create table media_assets (
  id bigserial primary key,
  brand_id uuid not null,
  file_name text not null,
  storage_path text not null,
  mime_type text not null,
  size_bytes bigint not null default 0,
  ai_tags text[] not null default '{}',
  created_at timestamptz not null default now()
);
create index idx_media_assets_brand_id on media_assets (brand_id);
create index idx_media_assets_created_at on media_assets (created_at desc);
create index idx_media_assets_ai_tags on media_assets using gin (ai_tags);

create table media_usage_logs (
  id bigserial primary key,
  asset_id bigint not null references media_assets (id) on delete cascade,
  brand_id uuid not null,
  action text not null,
  created_at timestamptz not null default now()
);
create index idx_media_usage_logs_asset_id on media_usage_logs (asset_id);

create table storage_quotas (
  brand_id uuid primary key,
  used_bytes bigint not null default 0,
  quota_bytes bigint not null default 5368709120,
  warning_threshold_percent int not null default 80
);

-- Row-level security: a brand sees its own rows (app.brand_id is set per request).
alter table media_assets enable row level security;
create policy media_assets_brand_isolation on media_assets
  using (brand_id = nullif(current_setting('app.brand_id', true), '')::uuid);
alter table media_usage_logs enable row level security;
create policy media_usage_logs_brand_isolation on media_usage_logs
  using (brand_id = nullif(current_setting('app.brand_id', true), '')::uuid);
alter table storage_quotas enable row level security;
create policy storage_quotas_brand_isolation on storage_quotas
  using (brand_id = nullif(current_setting('app.brand_id', true), '')::uuid);
