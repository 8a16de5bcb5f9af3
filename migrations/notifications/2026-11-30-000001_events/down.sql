-- Undo 000001_events: tables first (their triggers go with them), then the
-- trigger functions, in reverse order of creation.
drop table parked_events;
drop table processed_events;
drop table subscriber_cursors;
drop table event_log;
drop function event_log_reject_update();
drop function event_log_notify();
drop function event_log_serialize_appends();
drop table outbox;
drop function set_update_time();
