-- Where a notification came from and the order a stream resumes in.
-- `event_id` and the unique key make one event notify a user once, even if
-- it were handled twice; `offering_id` links it. `seq` orders a user's
-- notifications for StreamNotifications' resume: inserts for one user are
-- serialised (an advisory lock per user, taken by the store), so a user's
-- seq order is commit order and a stream resuming after N misses nothing.

alter table notifications add column event_id uuid;
alter table notifications add column offering_id uuid;
alter table notifications add column seq bigint generated always as identity;
alter table notifications add constraint notifications_seq_key unique (seq);
alter table notifications add constraint notifications_event_user_key unique (event_id, user_id);

create index notifications_user_seq_idx on notifications (user_id, seq);
