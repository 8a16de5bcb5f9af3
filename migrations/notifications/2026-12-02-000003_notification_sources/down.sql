drop index notifications_user_seq_idx;
alter table notifications drop constraint notifications_event_user_key;
alter table notifications drop constraint notifications_seq_key;
alter table notifications drop column seq;
alter table notifications drop column offering_id;
alter table notifications drop column event_id;
