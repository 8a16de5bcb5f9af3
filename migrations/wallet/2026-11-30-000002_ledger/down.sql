-- Undo 000002_ledger, in reverse order. Dropping the tables removes their
-- triggers and the seeded system accounts; the functions go after them.
drop table ledger_entries;
drop table ledger_transactions;
drop function ledger_reject_change();
drop function ledger_entries_apply_balances();
drop function ledger_check_balanced();
drop table wallets;
drop function wallets_guard_balance();
