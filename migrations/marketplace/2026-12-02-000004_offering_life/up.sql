-- What an offering's life needs beyond its creation: amounts reserved by
-- investments whose wallet debit is under way (so an offering is never
-- oversubscribed, even while debits are in flight), the producer's payout
-- once funded, why and when it was cancelled, each investment's refund,
-- and which installments were paid.

alter table offerings add column reserved_minor bigint not null default 0
    constraint offerings_reserved_non_negative check (reserved_minor >= 0);
-- Confirmed plus reserved never exceeds the face value: the database
-- refuses oversubscription whatever the service does.
alter table offerings add constraint offerings_subscribed_within_face_value
    check (raised_minor + reserved_minor <= face_value_minor);
alter table offerings add column cancel_reason text
    constraint offerings_cancel_reason_check check (cancel_reason in ('producer', 'deadline'));
alter table offerings add constraint offerings_cancel_reason_when_cancelled
    check ((status = 'cancelled') = (cancel_reason is not null));
-- The background task finds due work without scanning every offering.
create index offerings_open_deadline_idx on offerings (funding_deadline) where status = 'open';
create index offerings_funded_idx on offerings (update_time) where status = 'funded';

-- The wallet transaction that paid a funded offering's raised amount to its
-- producer, once; a funded offering without a row here is still owed.
create table payouts (
    offering_id uuid primary key references offerings (id),
    transaction_id uuid not null
        constraint payouts_transaction_id_key unique,
    create_time timestamptz not null default now()
);

alter table investments drop constraint investments_status_check;
alter table investments add constraint investments_status_check
    check (status in ('pending', 'confirmed', 'failed', 'refunded'));
-- The wallet transaction that returned the money of a cancelled offering.
alter table investments add column refund_transaction_id uuid;
alter table investments add constraint investments_refund_when_refunded
    check ((status = 'refunded') = (refund_transaction_id is not null));
-- A confirmed or refunded investment was paid for.
alter table investments add constraint investments_debited_when_confirmed
    check (status not in ('confirmed', 'refunded') or debit_transaction_id is not null);

create index investments_pending_idx on investments (update_time) where status = 'pending';
create index investments_confirmed_offering_idx on investments (offering_id) where status = 'confirmed';

-- Filled in when the wallet reports the payment (PaymentConfirmed).
alter table offering_installments add column payment_id uuid;
alter table offering_installments add column paid_time timestamptz;
alter table offering_installments add constraint offering_installments_paid_together
    check ((payment_id is null) = (paid_time is null));
