-- Handled totals per subscriber, kept as the ids are recorded, so the jobs
-- monitor reads one row instead of counting processed_events (a table that
-- retention trims, and that grows with every event until it does). A
-- statement-level trigger adds each insert's rows at once: one update per
-- batch of handled events, rolled back with them when the handling fails.
create table subscriber_totals (
    subscriber text primary key check (subscriber <> ''),
    handled bigint not null default 0 check (handled >= 0),
    last_handled timestamptz
);

insert into subscriber_totals (subscriber, handled, last_handled)
select subscriber, count(*), max(processed_time)
from processed_events
group by subscriber;

create function processed_events_count() returns trigger
language plpgsql as $$
begin
    insert into subscriber_totals as t (subscriber, handled, last_handled)
    select subscriber, count(*), max(processed_time)
    from inserted
    group by subscriber
    on conflict (subscriber) do update
        set handled = t.handled + excluded.handled,
            last_handled = greatest(t.last_handled, excluded.last_handled);
    return null;
end;
$$;

create trigger processed_events_count
    after insert on processed_events
    referencing new table as inserted
    for each statement execute function processed_events_count();
