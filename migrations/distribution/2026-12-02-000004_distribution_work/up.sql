-- What the distribution service needs to finish a distribution after it was
-- split, and to show it: the producer (who may read every line), the trace
-- of the payment that caused it (the credits continue it), and when it was
-- completed.

alter table distributions add column producer_id uuid not null;
alter table distributions add column traceparent text;
alter table distributions add column complete_time timestamptz;
alter table distributions add constraint distributions_completed_when_complete
    check ((status = 'completed') = (complete_time is not null));

-- The credit worker's queue: distributions still pending, oldest first.
create index distributions_pending_idx on distributions (create_time)
    where status = 'pending';
-- ListDistributions for a producer.
create index distributions_producer_create_time_idx
    on distributions (producer_id, create_time desc, id desc);
