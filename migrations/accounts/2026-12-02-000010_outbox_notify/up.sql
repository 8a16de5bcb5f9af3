-- Wakes the outbox relay of every replica when events are committed
-- (LISTEN safra_outbox), so an event leaves for the bus within
-- milliseconds instead of at the relay's next look. One notification per
-- inserting statement; NOTIFY is delivered at commit, so a woken relay
-- finds the rows.
create function outbox_notify() returns trigger
language plpgsql as $$
begin
    perform pg_notify('safra_outbox', '');
    return null;
end;
$$;

create trigger outbox_notify
    after insert on outbox
    for each statement execute function outbox_notify();
