-- Wallets and the append-only double-entry ledger that moves money between
-- them. The rules that keep the money right live here, next to the data, as
-- well as in the service: every ledger transaction sums to zero, nothing in
-- the ledger is ever updated or deleted, a user's balance is exactly the sum
-- of their entries and never goes negative.

-- One wallet per user, plus system accounts standing for the world outside
-- (money deposited in) and for money in transit (clearing). A system account
-- has no owner and a unique name; its balance may be negative (the deposits
-- account is, by the amount users hold).
create table wallets (
    id uuid primary key default gen_random_uuid(),
    owner_id uuid
        constraint wallets_owner_id_key unique,
    -- e.g. 'external:deposits', 'clearing:installments'.
    system_account text
        constraint wallets_system_account_key unique
        constraint wallets_system_account_shape check (system_account ~ '^[a-z]+:[a-z0-9_.-]+$'),
    currency_code text not null
        constraint wallets_currency_code_check check (currency_code ~ '^[A-Z]{3}$'),
    -- Maintained only by the ledger (see ledger_entries_apply_balances); the
    -- service never writes it.
    balance_minor bigint not null default 0,
    create_time timestamptz not null default now(),
    update_time timestamptz not null default now(),
    constraint wallets_owner_or_system check ((owner_id is null) <> (system_account is null)),
    -- An overdraft of a user's wallet fails on this constraint (check_violation,
    -- constraint name wallets_balance_non_negative): the service maps it to
    -- "insufficient funds".
    constraint wallets_balance_non_negative check (system_account is not null or balance_minor >= 0),
    -- System accounts carry no cached balance: every deposit, payment and
    -- credit touches one of them, and updating one row per transaction would
    -- serialise all of them on that row's lock (held until commit). Their
    -- balance is sum(ledger_entries.amount_minor) for the wallet.
    constraint wallets_system_balance_not_cached check (system_account is null or balance_minor = 0),
    -- Target of ledger_entries' (wallet_id, currency_code) foreign key, which
    -- keeps every entry in its wallet's currency.
    constraint wallets_id_currency_code_key unique (id, currency_code)
);

-- balance_minor must equal the sum of the wallet's entries: a wallet starts
-- at zero, and only the ledger's trigger (running one trigger level down)
-- may change the balance afterwards.
create function wallets_guard_balance() returns trigger
language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        if new.balance_minor <> 0 then
            raise exception 'a wallet starts with balance_minor 0 (got %); money arrives through ledger_entries',
                new.balance_minor
                using errcode = 'restrict_violation';
        end if;
    elsif new.balance_minor is distinct from old.balance_minor and pg_trigger_depth() < 2 then
        raise exception 'wallets.balance_minor is maintained by the ledger; insert ledger_entries instead'
            using errcode = 'restrict_violation';
    end if;
    return new;
end;
$$;

create trigger wallets_guard_balance
    before insert or update on wallets
    for each row execute function wallets_guard_balance();

create trigger wallets_set_update_time
    before update on wallets
    for each row execute function set_update_time();

-- One ledger transaction per business operation (a deposit, an investment's
-- debit, an installment payment, one holder's distribution credit); its
-- entries say which wallets it moved money between.
create table ledger_transactions (
    id uuid primary key default gen_random_uuid(),
    kind text not null
        constraint ledger_transactions_kind_check check (kind in (
            'deposit',              -- external:deposits -> user
            'investment_debit',     -- investor -> clearing:investments
            'investment_refund',    -- clearing:investments -> investor
            'installment_payment',  -- producer -> clearing:installments
            'distribution_credit'   -- clearing:installments -> holder
        )),
    -- The user the transaction was made for (the depositor, investor, payer
    -- or holder). It scopes the idempotency key, so two users choosing the
    -- same key never meet, and lists a user's transactions.
    owner_id uuid not null,
    -- What it pays for, e.g. 'investment:<id>', 'offering:<id>/installment:<n>',
    -- 'distribution:<id>'.
    reference text,
    idempotency_key text not null
        constraint ledger_transactions_idempotency_key_length
            check (char_length(idempotency_key) between 1 and 255),
    create_time timestamptz not null default now(),
    -- A retried Deposit, Debit or Credit finds the first attempt's transaction
    -- (INSERT ... ON CONFLICT (owner_id, kind, idempotency_key) DO NOTHING).
    constraint ledger_transactions_idempotency_key unique (owner_id, kind, idempotency_key)
);

-- ListTransactions: keyset pagination, newest first, overall and per user.
create index ledger_transactions_create_time_idx on ledger_transactions (create_time desc, id desc);
create index ledger_transactions_owner_create_time_idx
    on ledger_transactions (owner_id, create_time desc, id desc);

create table ledger_entries (
    id uuid primary key default gen_random_uuid(),
    transaction_id uuid not null references ledger_transactions (id),
    wallet_id uuid not null,
    -- Positive credits the wallet, negative debits it; never zero.
    amount_minor bigint not null
        constraint ledger_entries_amount_non_zero check (amount_minor <> 0),
    currency_code text not null
        constraint ledger_entries_currency_code_check check (currency_code ~ '^[A-Z]{3}$'),
    create_time timestamptz not null default now(),
    constraint ledger_entries_wallet_fkey foreign key (wallet_id, currency_code)
        references wallets (id, currency_code)
);

-- The balance check at commit reads a transaction's entries.
create index ledger_entries_transaction_id_idx on ledger_entries (transaction_id);
-- A wallet's statement, newest first (and the foreign key's index).
create index ledger_entries_wallet_create_time_idx
    on ledger_entries (wallet_id, create_time desc, id desc);

-- Double entry: at commit, each ledger transaction has at least two entries
-- and, per currency, they sum to zero. Deferred, so a transaction and its
-- entries can be inserted in any order within one database transaction.
-- Checked from both tables: a transaction row without entries and entries
-- added later to an old transaction are both caught.
create function ledger_check_balanced() returns trigger
language plpgsql as $$
declare
    checked_id uuid;
    entry_count bigint;
    unbalanced record;
begin
    if tg_table_name = 'ledger_transactions' then
        checked_id := new.id;
    else
        checked_id := new.transaction_id;
    end if;

    select count(*) into entry_count from ledger_entries where transaction_id = checked_id;
    if entry_count < 2 then
        raise exception 'ledger transaction % has % entries; double entry needs at least two',
            checked_id, entry_count
            using errcode = 'check_violation',
                  constraint = 'ledger_transactions_balanced',
                  table = 'ledger_transactions';
    end if;

    select e.currency_code, sum(e.amount_minor) as total into unbalanced
        from ledger_entries e
        where e.transaction_id = checked_id
        group by e.currency_code
        having sum(e.amount_minor) <> 0
        limit 1;
    if found then
        raise exception 'ledger transaction % is unbalanced: its % entries sum to %, not 0',
            checked_id, unbalanced.currency_code, unbalanced.total
            using errcode = 'check_violation',
                  constraint = 'ledger_transactions_balanced',
                  table = 'ledger_transactions';
    end if;
    return null;
end;
$$;

create constraint trigger ledger_transactions_balanced
    after insert on ledger_transactions
    deferrable initially deferred
    for each row execute function ledger_check_balanced();

create constraint trigger ledger_entries_balanced
    after insert on ledger_entries
    deferrable initially deferred
    for each row execute function ledger_check_balanced();

-- Keep user balances equal to the sum of their entries. Statement-level, so
-- one INSERT of several entries updates each wallet once, after locking the
-- wallets in id order: two transactions moving money between the same
-- wallets then queue instead of deadlocking. An overdraft fails right here,
-- on wallets_balance_non_negative. System accounts are skipped (see
-- wallets_system_balance_not_cached).
create function ledger_entries_apply_balances() returns trigger
language plpgsql as $$
begin
    perform 1
        from wallets w
        where w.system_account is null
          and w.id in (select n.wallet_id from new_entries n)
        order by w.id
        for no key update;

    update wallets w
        set balance_minor = w.balance_minor + d.delta
        from (
            select n.wallet_id, sum(n.amount_minor) as delta
            from new_entries n
            group by n.wallet_id
        ) d
        where w.id = d.wallet_id
          and w.system_account is null;
    return null;
end;
$$;

create trigger ledger_entries_apply_balances
    after insert on ledger_entries
    referencing new table as new_entries
    for each statement execute function ledger_entries_apply_balances();

-- The ledger is append-only: a mistake is corrected by a reversing
-- transaction, never by editing history.
create function ledger_reject_change() returns trigger
language plpgsql as $$
begin
    raise exception '% is append-only: % is not allowed; record a reversing transaction instead',
        tg_table_name, tg_op
        using errcode = 'restrict_violation';
end;
$$;

create trigger ledger_transactions_reject_change
    before update or delete on ledger_transactions
    for each row execute function ledger_reject_change();

create trigger ledger_entries_reject_change
    before update or delete on ledger_entries
    for each row execute function ledger_reject_change();

-- The system accounts the service moves money through, in the platform's
-- currency. Another currency gets its own accounts, named with a suffix
-- (e.g. 'external:deposits.usd').
insert into wallets (system_account, currency_code) values
    ('external:deposits', 'BRL'),      -- where deposited money comes from
    ('clearing:investments', 'BRL'),   -- investments' money, held for producers
    ('clearing:installments', 'BRL');  -- installment payments awaiting distribution
