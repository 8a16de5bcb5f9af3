drop table subscriber_cursors;
drop table event_log;
drop function event_log_reject_update();
drop function event_log_notify();
drop function event_log_serialize_appends();
drop function set_update_time();
