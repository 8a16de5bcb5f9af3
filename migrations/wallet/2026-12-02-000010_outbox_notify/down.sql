drop trigger outbox_notify on outbox;
drop function outbox_notify();
