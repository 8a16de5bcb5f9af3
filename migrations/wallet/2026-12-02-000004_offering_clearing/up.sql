-- Ledger transactions name the offering and the business object they pay
-- for, and each offering's share of a clearing account is kept covered:
-- what the platform pays out of clearing for an offering (the producer's
-- payout, refunds, distribution lines) never exceeds what came in for it
-- (investments, installment payments). A bug in a caller can then not
-- make money out of nothing, whatever it asks for.

alter table ledger_transactions drop column reference;
alter table ledger_transactions add column offering_id uuid;
-- The investment, installment payment, distribution line or offering it
-- pays for; null for deposits.
alter table ledger_transactions add column reference_id uuid;

alter table ledger_transactions drop constraint ledger_transactions_kind_check;
alter table ledger_transactions add constraint ledger_transactions_kind_check check (kind in (
    'deposit',              -- external:deposits -> user
    'investment_debit',     -- investor -> clearing:investments
    'investment_refund',    -- clearing:investments -> investor
    'funding_payout',       -- clearing:investments -> producer
    'installment_payment',  -- producer -> clearing:installments
    'distribution_credit'   -- clearing:installments -> holder
));
-- Every movement but a deposit belongs to an offering.
alter table ledger_transactions add constraint ledger_transactions_offering_present
    check ((kind = 'deposit') = (offering_id is null));

-- The coverage check sums one offering's movements.
create index ledger_transactions_offering_idx on ledger_transactions (offering_id)
    where offering_id is not null;

-- At commit, for each clearing account an entry took money from: the
-- offering's entries in that account sum to zero or more. Offerings are
-- checked one at a time under a transaction-scoped advisory lock, so two
-- payouts racing for the same money queue and the second sees the first.
create function ledger_check_clearing_covered() returns trigger
language plpgsql as $$
declare
    account text;
    offering uuid;
    total bigint;
begin
    select w.system_account into account from wallets w where w.id = new.wallet_id;
    if account is null or account not like 'clearing:%' then
        return null;
    end if;
    select t.offering_id into offering from ledger_transactions t where t.id = new.transaction_id;
    if offering is null then
        raise exception 'a movement out of % must name its offering', account
            using errcode = 'check_violation',
                  constraint = 'ledger_clearing_covered',
                  table = 'ledger_entries';
    end if;
    perform pg_advisory_xact_lock(hashtextextended('safra.clearing/' || account || '/' || offering::text, 0));
    select coalesce(sum(e.amount_minor), 0) into total
        from ledger_entries e
        join ledger_transactions t on t.id = e.transaction_id
        where e.wallet_id = new.wallet_id and t.offering_id = offering;
    if total < 0 then
        raise exception 'offering % would owe % to %: more paid out than came in',
            offering, -total, account
            using errcode = 'check_violation',
                  constraint = 'ledger_clearing_covered',
                  table = 'ledger_entries';
    end if;
    return null;
end;
$$;

create constraint trigger ledger_clearing_covered
    after insert on ledger_entries
    deferrable initially deferred
    for each row
    when (new.amount_minor < 0)
    execute function ledger_check_clearing_covered();

-- A user's entry records the wallet's balance right after it, for
-- statements. The service writes it (it holds the wallet's row lock and
-- knows the balance); the ledger checks it against the balance it keeps,
-- which is exact because a statement moves each user wallet at most once.
alter table ledger_entries add column balance_after_minor bigint;

create or replace function ledger_entries_apply_balances() returns trigger
language plpgsql as $$
declare
    wrong record;
begin
    perform 1
        from wallets w
        where w.system_account is null
          and w.id in (select n.wallet_id from new_entries n)
        order by w.id
        for no key update;

    select n.wallet_id into wrong
        from new_entries n
        join wallets w on w.id = n.wallet_id and w.system_account is null
        group by n.wallet_id
        having count(*) > 1
        limit 1;
    if found then
        raise exception 'one statement may move wallet % only once', wrong.wallet_id
            using errcode = 'check_violation',
                  constraint = 'ledger_entries_balance_after',
                  table = 'ledger_entries';
    end if;

    update wallets w
        set balance_minor = w.balance_minor + d.delta
        from (
            select n.wallet_id, sum(n.amount_minor) as delta
            from new_entries n
            group by n.wallet_id
        ) d
        where w.id = d.wallet_id
          and w.system_account is null;

    select n.wallet_id into wrong
        from new_entries n
        join wallets w on w.id = n.wallet_id
        where (w.system_account is null and n.balance_after_minor is distinct from w.balance_minor)
           or (w.system_account is not null and n.balance_after_minor is not null)
        limit 1;
    if found then
        raise exception 'balance_after_minor of an entry for wallet % is not the balance it leaves',
            wrong.wallet_id
            using errcode = 'check_violation',
                  constraint = 'ledger_entries_balance_after',
                  table = 'ledger_entries';
    end if;
    return null;
end;
$$;
