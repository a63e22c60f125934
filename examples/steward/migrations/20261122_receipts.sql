-- The Prisma migration's SQL (npx prisma migrate deploy), with the guide's indexes. The guide
-- creates them CONCURRENTLY; inside the one-transaction migration they are plain.
create table users (id uuid primary key, email text not null unique, created_at timestamptz not null default now());
create table receipts (
  id bigserial primary key,
  user_id uuid not null references users (id),
  date date not null,
  category text not null,
  amount_cents bigint not null
);
create index idx_receipts_user_date on receipts (user_id, date);
create index idx_receipts_category on receipts (category);
create table agent_logs (id bigserial primary key, user_id uuid, "timestamp" timestamptz not null default now(), message text);
create index idx_agent_logs_timestamp on agent_logs ("timestamp");
alter table receipts enable row level security;
create policy receipts_owner on receipts using (user_id = nullif(current_setting('app.user_id', true), '')::uuid);
