-- Undo 000003_investments.
drop table investments;
