create or replace function ledger_entries_apply_balances() returns trigger
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

alter table ledger_entries drop column balance_after_minor;

drop trigger ledger_clearing_covered on ledger_entries;
drop function ledger_check_clearing_covered();
drop index ledger_transactions_offering_idx;
alter table ledger_transactions drop constraint ledger_transactions_offering_present;
alter table ledger_transactions drop constraint ledger_transactions_kind_check;
alter table ledger_transactions add constraint ledger_transactions_kind_check check (kind in (
    'deposit',
    'investment_debit',
    'investment_refund',
    'installment_payment',
    'distribution_credit'
));
alter table ledger_transactions drop column reference_id;
alter table ledger_transactions drop column offering_id;
alter table ledger_transactions add column reference text;
