-- Users and the state that authenticating them needs: rotating refresh
-- tokens and login throttles. Both live here, not in process memory, so any
-- replica can answer any Login or Refresh.

create table users (
    id uuid primary key default gen_random_uuid(),
    -- Stored normalised (trimmed, lower-case) by the service. The CHECK makes
    -- that a fact, so the plain unique index below is a case-insensitive one
    -- and a lookup `email = $1` (with the normalised value) can use it; an
    -- index on lower(email) would force every query to spell lower(...).
    email text not null
        constraint users_email_normalised check (email = lower(btrim(email)))
        constraint users_email_shape check (email like '_%@_%' and char_length(email) <= 320),
    -- PHC string of an argon2id hash ($argon2id$v=19$m=...,t=...,p=...$salt$hash).
    password_hash text not null
        constraint users_password_hash_argon2id check (password_hash like '$argon2id$%'),
    display_name text not null
        constraint users_display_name_length check (char_length(display_name) between 1 and 256),
    role text not null
        constraint users_role_check check (role in ('investor', 'producer', 'admin')),
    create_time timestamptz not null default now(),
    update_time timestamptz not null default now()
);

-- A duplicate Register fails here (unique_violation on users_email_key) even
-- when two replicas race.
create unique index users_email_key on users (email);
-- ListUsers: keyset pagination, newest first, overall and by role.
create index users_create_time_idx on users (create_time desc, id desc);
create index users_role_create_time_idx on users (role, create_time desc, id desc);

create trigger users_set_update_time
    before update on users
    for each row execute function set_update_time();

-- Refresh tokens rotate on every use; all tokens descending from one login
-- share a family. Presenting a token that was already used (used_at set)
-- means it was stolen or replayed: the service then revokes the whole family.
create table refresh_tokens (
    id uuid primary key default gen_random_uuid(),
    family_id uuid not null,
    user_id uuid not null references users (id) on delete cascade,
    -- A hash (e.g. SHA-256) of the opaque token; the token itself is never
    -- stored, so a database leak does not hand out sessions.
    token_hash bytea not null
        constraint refresh_tokens_token_hash_key unique
        constraint refresh_tokens_token_hash_length check (octet_length(token_hash) >= 16),
    -- Set when the token is exchanged for a new one (rotation).
    used_at timestamptz,
    -- Set by Logout or by reuse detection (for the whole family).
    revoked_at timestamptz,
    expires_at timestamptz not null,
    create_time timestamptz not null default now(),
    update_time timestamptz not null default now()
);

-- Reuse detection revokes a family in one statement.
create index refresh_tokens_family_id_idx on refresh_tokens (family_id);
-- The foreign key's index (deleting a user, revoking all of a user's sessions).
create index refresh_tokens_user_id_idx on refresh_tokens (user_id);
-- Sweeping expired tokens.
create index refresh_tokens_expires_at_idx on refresh_tokens (expires_at);

create trigger refresh_tokens_set_update_time
    before update on refresh_tokens
    for each row execute function set_update_time();

-- Failed-login counters, keyed by what is being throttled: 'email:<address>'
-- or 'addr:<client ip>'. Shared by all replicas so a guesser cannot spread
-- attempts over them.
create table login_throttles (
    key text primary key
        constraint login_throttles_key_shape check (key ~ '^(email|addr):.+$'),
    failures integer not null default 0
        constraint login_throttles_failures_check check (failures >= 0),
    last_failure timestamptz,
    -- Login is refused for this key until then; null when not locked.
    locked_until timestamptz,
    create_time timestamptz not null default now(),
    update_time timestamptz not null default now()
);

-- Sweeping stale counters.
create index login_throttles_last_failure_idx on login_throttles (last_failure);

create trigger login_throttles_set_update_time
    before update on login_throttles
    for each row execute function set_update_time();
