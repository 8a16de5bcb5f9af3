drop index distributions_producer_create_time_idx;
drop index distributions_pending_idx;
alter table distributions drop constraint distributions_completed_when_complete;
alter table distributions drop column complete_time;
alter table distributions drop column traceparent;
alter table distributions drop column producer_id;
