-- Undo 000002_allocate_pro_rata.
drop function allocate_pro_rata(bigint, uuid[], bigint[]);
