-- Distributions: one per confirmed installment payment (PaymentConfirmed),
-- split over the offering's holders by allocate_pro_rata; each line is
-- credited to its holder's wallet through Wallet.Credit.

create table distributions (
    id uuid primary key default gen_random_uuid(),
    offering_id uuid not null,
    installment_number integer not null
        constraint distributions_installment_number_check check (installment_number >= 1),
    -- The wallet's installment payment that funds it: one distribution per
    -- payment, however often PaymentConfirmed is delivered.
    payment_id uuid not null
        constraint distributions_payment_id_key unique,
    amount_minor bigint not null
        constraint distributions_amount_positive check (amount_minor > 0),
    currency_code text not null
        constraint distributions_currency_code_check check (currency_code ~ '^[A-Z]{3}$'),
    -- pending: lines allocated, credits under way; completed: every line
    -- credited (DistributionCompleted emitted); failed: it cannot complete
    -- (e.g. no holders), see the logs and the jobs monitor.
    status text not null default 'pending'
        constraint distributions_status_check check (status in ('pending', 'completed', 'failed')),
    create_time timestamptz not null default now(),
    update_time timestamptz not null default now(),
    constraint distributions_installment_key unique (offering_id, installment_number)
);

-- ListDistributions: keyset pagination, newest first, overall and per offering.
create index distributions_create_time_idx on distributions (create_time desc, id desc);
create index distributions_offering_create_time_idx
    on distributions (offering_id, create_time desc, id desc);

create trigger distributions_set_update_time
    before update on distributions
    for each row execute function set_update_time();

create table distribution_lines (
    distribution_id uuid not null references distributions (id) on delete cascade,
    holder_id uuid not null,
    -- The holder's invested amount in the offering when the payment was split
    -- (the weight given to allocate_pro_rata).
    stake_minor bigint not null
        constraint distribution_lines_stake_non_negative check (stake_minor >= 0),
    -- The holder's share of the payment.
    amount_minor bigint not null
        constraint distribution_lines_amount_non_negative check (amount_minor >= 0),
    -- Set once Wallet.Credit succeeded; null while the credit is owed.
    credited_at timestamptz,
    -- The wallet's ledger transaction of that credit.
    credit_transaction_id uuid,
    create_time timestamptz not null default now(),
    update_time timestamptz not null default now(),
    primary key (distribution_id, holder_id)
);

-- A holder's distributions, newest first.
create index distribution_lines_holder_create_time_idx
    on distribution_lines (holder_id, create_time desc, distribution_id desc);
-- The credits still owed, for the worker that retries them.
create index distribution_lines_uncredited_idx
    on distribution_lines (distribution_id)
    where credited_at is null;

create trigger distribution_lines_set_update_time
    before update on distribution_lines
    for each row execute function set_update_time();

-- The lines of a distribution sum exactly to its amount, checked at commit
-- (deferred) so the lines can be written one by one in the distribution's
-- transaction. A distribution without lines (a failed one) is not checked.
create function distribution_lines_check_sum() returns trigger
language plpgsql as $$
declare
    checked_ids uuid[];
    checked_id uuid;
    expected bigint;
    actual numeric;
begin
    checked_ids := case tg_op
        when 'INSERT' then array[new.distribution_id]
        when 'DELETE' then array[old.distribution_id]
        else array[old.distribution_id, new.distribution_id]
    end;

    foreach checked_id in array checked_ids loop
        select d.amount_minor into expected from distributions d where d.id = checked_id;
        -- Not found: the distribution itself was deleted (cascade).
        continue when not found;
        select sum(l.amount_minor) into actual
            from distribution_lines l
            where l.distribution_id = checked_id;
        if actual is not null and actual <> expected then
            raise exception 'distribution %: lines sum to %, not the distributed amount %',
                checked_id, actual, expected
                using errcode = 'check_violation',
                      constraint = 'distribution_lines_sum_to_amount',
                      table = 'distribution_lines';
        end if;
    end loop;
    return null;
end;
$$;

-- Crediting a line (credited_at, credit_transaction_id) does not re-check.
create constraint trigger distribution_lines_sum_to_amount
    after insert or update of distribution_id, amount_minor or delete on distribution_lines
    deferrable initially deferred
    for each row execute function distribution_lines_check_sum();
