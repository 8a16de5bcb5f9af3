-- Undo 000004_one_signing_key.
drop index signing_keys_one_signing;
