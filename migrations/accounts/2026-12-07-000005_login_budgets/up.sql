-- Login guesses are drawn from budgets before the password is checked, so
-- concurrent guesses cannot all pass a check made before any failure was
-- counted (as the lock of login_throttles could). A budget is a token
-- bucket: `tokens` guesses were left at `refreshed_at`, and it earns them
-- back at a rate the service knows. No row means a full budget.
drop table login_throttles;

create table login_budgets (
    -- `pair:<email> <address>`, `address:<address>` or `account:<email>`.
    key text primary key
        constraint login_budgets_key_shape check (key ~ '^(pair|address|account):.+$'),
    tokens double precision not null
        constraint login_budgets_tokens_check check (tokens >= 0),
    refreshed_at timestamptz not null
);

-- Sweeping budgets that have filled up again.
create index login_budgets_refreshed_at_idx on login_budgets (refreshed_at);

-- Addresses an account signed in from: a guess from one of them skips the
-- account's own budget, so guesses from elsewhere never lock the owner out.
create table login_known_addresses (
    email text not null,
    address text not null,
    last_login timestamptz not null,
    primary key (email, address)
);

create index login_known_addresses_last_login_idx on login_known_addresses (last_login);
