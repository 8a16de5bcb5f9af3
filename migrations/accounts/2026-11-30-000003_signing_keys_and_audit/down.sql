-- Undo 000003_signing_keys_and_audit, in reverse order.
drop table audit_log;
drop function audit_log_reject_change();
drop table signing_keys;
