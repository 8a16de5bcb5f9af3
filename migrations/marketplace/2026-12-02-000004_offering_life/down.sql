alter table offering_installments drop constraint offering_installments_paid_together;
alter table offering_installments drop column paid_time;
alter table offering_installments drop column payment_id;

drop index investments_confirmed_offering_idx;
drop index investments_pending_idx;
alter table investments drop constraint investments_debited_when_confirmed;
alter table investments drop constraint investments_refund_when_refunded;
alter table investments drop column refund_transaction_id;
alter table investments drop constraint investments_status_check;
alter table investments add constraint investments_status_check
    check (status in ('pending', 'confirmed', 'failed'));

drop table payouts;
drop index offerings_funded_idx;
drop index offerings_open_deadline_idx;
alter table offerings drop constraint offerings_cancel_reason_when_cancelled;
alter table offerings drop column cancel_reason;
alter table offerings drop constraint offerings_subscribed_within_face_value;
alter table offerings drop column reserved_minor;
