-- Which installments were distributed to the holders (the marketplace learns
-- it from DistributionCompleted). When every installment of a FUNDED
-- offering is distributed, the offering is SETTLED.

alter table offering_installments add column distribution_id uuid;
alter table offering_installments add column distributed_time timestamptz;
alter table offering_installments add constraint offering_installments_distributed_together
    check ((distribution_id is null) = (distributed_time is null));
-- Nothing is distributed that was not paid.
alter table offering_installments add constraint offering_installments_distributed_after_paid
    check (distributed_time is null or paid_time is not null);
