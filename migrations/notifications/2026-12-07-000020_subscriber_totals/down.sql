drop trigger processed_events_count on processed_events;
drop function processed_events_count();
drop table subscriber_totals;
