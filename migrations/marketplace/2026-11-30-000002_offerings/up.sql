-- Offerings (CPRs: notes backed by a future harvest) and their installment
-- schedules.

create table offerings (
    id uuid primary key default gen_random_uuid(),
    -- The producer (a user of the accounts service; no foreign key across
    -- service databases).
    producer_id uuid not null,
    commodity text not null
        constraint offerings_commodity_length check (char_length(commodity) between 1 and 256),
    -- A whole number of `unit`s. Pick the unit small enough for the quantity
    -- to be whole (e.g. 'kg', or 'sc60' for 60 kg bags), as money is kept in
    -- minor units: an integer never rounds.
    quantity bigint not null
        constraint offerings_quantity_positive check (quantity > 0),
    unit text not null
        constraint offerings_unit_length check (char_length(unit) between 1 and 32),
    face_value_minor bigint not null
        constraint offerings_face_value_positive check (face_value_minor > 0),
    currency_code text not null
        constraint offerings_currency_code_check check (currency_code ~ '^[A-Z]{3}$'),
    annual_rate_bps integer not null
        constraint offerings_annual_rate_bps_check check (annual_rate_bps >= 0),
    maturity_date date not null,
    -- The instant after which no new investment is accepted.
    funding_deadline timestamptz not null,
    -- The sum of confirmed investments. The service adds to it in the
    -- transaction that confirms an investment (raised_minor = raised_minor + $n);
    -- the CHECK makes oversubscription impossible even under concurrency.
    raised_minor bigint not null default 0,
    status text not null default 'open'
        constraint offerings_status_check check (status in ('open', 'funded', 'settled', 'cancelled')),
    create_time timestamptz not null default now(),
    update_time timestamptz not null default now(),
    constraint offerings_raised_within_face_value
        check (raised_minor between 0 and face_value_minor),
    -- Target of investments' (offering_id, currency_code) foreign key, which
    -- keeps an investment in its offering's currency.
    constraint offerings_id_currency_code_key unique (id, currency_code)
);

-- ListOfferings: keyset pagination, newest first, unfiltered and by the
-- filters it offers (status, producer, commodity).
create index offerings_create_time_idx on offerings (create_time desc, id desc);
create index offerings_status_create_time_idx on offerings (status, create_time desc, id desc);
create index offerings_producer_create_time_idx on offerings (producer_id, create_time desc, id desc);
create index offerings_commodity_create_time_idx on offerings (commodity, create_time desc, id desc);

create trigger offerings_set_update_time
    before update on offerings
    for each row execute function set_update_time();

-- The repayment schedule: installment `number` (1, 2, ...) of an offering,
-- in the offering's currency.
create table offering_installments (
    offering_id uuid not null references offerings (id) on delete cascade,
    number integer not null
        constraint offering_installments_number_check check (number >= 1),
    due_date date not null,
    amount_minor bigint not null
        constraint offering_installments_amount_positive check (amount_minor > 0),
    create_time timestamptz not null default now(),
    update_time timestamptz not null default now(),
    primary key (offering_id, number)
);

create trigger offering_installments_set_update_time
    before update on offering_installments
    for each row execute function set_update_time();
