-- Investments: an investor's stake in an offering, paid by a debit of their
-- wallet (Wallet.Debit).

create table investments (
    id uuid primary key default gen_random_uuid(),
    offering_id uuid not null,
    -- The investor (a user of the accounts service).
    investor_id uuid not null,
    amount_minor bigint not null
        constraint investments_amount_positive check (amount_minor > 0),
    -- Always the offering's currency: see the foreign key below.
    currency_code text not null
        constraint investments_currency_code_check check (currency_code ~ '^[A-Z]{3}$'),
    -- pending: recorded, wallet not yet debited; confirmed: debited and counted
    -- in offerings.raised_minor; failed: the debit was refused.
    status text not null default 'pending'
        constraint investments_status_check check (status in ('pending', 'confirmed', 'failed')),
    -- The client's key: a retried Invest finds the first attempt's row.
    idempotency_key text not null
        constraint investments_idempotency_key_length check (char_length(idempotency_key) between 1 and 255),
    -- The wallet's ledger transaction that paid for it, once debited.
    debit_transaction_id uuid,
    create_time timestamptz not null default now(),
    update_time timestamptz not null default now(),
    constraint investments_offering_fkey foreign key (offering_id, currency_code)
        references offerings (id, currency_code),
    constraint investments_investor_idempotency_key unique (investor_id, idempotency_key)
);

-- ListHolders: the confirmed stakes of an offering, grouped by investor. Also
-- serves the foreign key (offering_id leads).
create index investments_offering_investor_idx on investments (offering_id, investor_id);
-- ListInvestments: keyset pagination, newest first, overall, per investor
-- and per offering.
create index investments_create_time_idx on investments (create_time desc, id desc);
create index investments_investor_create_time_idx on investments (investor_id, create_time desc, id desc);
create index investments_offering_create_time_idx on investments (offering_id, create_time desc, id desc);

create trigger investments_set_update_time
    before update on investments
    for each row execute function set_update_time();
