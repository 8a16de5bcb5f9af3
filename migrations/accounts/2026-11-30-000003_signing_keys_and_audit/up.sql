-- Signing keys for access tokens, and the audit log of security-relevant
-- actions.

-- Ed25519 keys that sign access tokens. Kept in the database so every replica
-- signs with the same key and publishes the same JWKS; the private half is
-- stored only encrypted (AEAD under a key from the service's configuration).
-- Rotation: a new key is published (in the JWKS) as soon as it exists; the
-- previous one stops signing at retire_after and leaves the JWKS at not_after,
-- which must leave time for every token it signed to expire.
create table signing_keys (
    id uuid primary key default gen_random_uuid(),
    -- The JWT header's `kid` and the JWK's `kid`.
    kid text not null
        constraint signing_keys_kid_key unique
        constraint signing_keys_kid_shape check (kid <> '' and char_length(kid) <= 128),
    algorithm text not null default 'EdDSA'
        constraint signing_keys_algorithm_check check (algorithm in ('EdDSA')),
    -- The raw 32-byte Ed25519 public key (the JWK's `x`).
    public_key bytea not null,
    private_key_ciphertext bytea not null,
    -- The AEAD nonce used to encrypt private_key_ciphertext.
    nonce bytea not null,
    create_time timestamptz not null default now(),
    update_time timestamptz not null default now(),
    -- After this instant the key signs nothing new; null: still signing.
    retire_after timestamptz,
    -- After this instant the key is neither published nor accepted; null: no end.
    not_after timestamptz,
    constraint signing_keys_not_after_after_retire
        check (not_after is null or retire_after is null or not_after >= retire_after)
);

-- The current signing key is the newest one not yet retired.
create index signing_keys_create_time_idx on signing_keys (create_time desc, id desc);

create trigger signing_keys_set_update_time
    before update on signing_keys
    for each row execute function set_update_time();

-- Who did what, for security reviews: registrations, logins, refresh-token
-- reuse, key rotations, role changes. Append-only: rows are never updated or
-- deleted, so there is no update_time.
create table audit_log (
    id uuid primary key default gen_random_uuid(),
    -- The user who acted; null for anonymous callers and the system itself.
    -- No foreign key: the trail must outlive the user row.
    actor_id uuid,
    -- What happened, e.g. 'user.registered', 'login.failed', 'refresh_token.reused'.
    action text not null check (action <> ''),
    -- What it happened to, e.g. 'user:<id>', 'key:<kid>'.
    subject text,
    detail jsonb not null default '{}'::jsonb,
    -- The trace of the request, to find it in Jaeger and in the logs.
    trace_id text,
    create_time timestamptz not null default now()
);

create index audit_log_create_time_idx on audit_log (create_time desc, id desc);
create index audit_log_actor_create_time_idx on audit_log (actor_id, create_time desc, id desc);
create index audit_log_subject_create_time_idx on audit_log (subject, create_time desc, id desc);

-- An audit trail that can be edited proves nothing.
create function audit_log_reject_change() returns trigger
language plpgsql as $$
begin
    raise exception 'audit_log is append-only: % is not allowed', tg_op
        using errcode = 'restrict_violation';
end;
$$;

create trigger audit_log_reject_change
    before update or delete on audit_log
    for each row execute function audit_log_reject_change();
