-- Installment payments: a producer pays installment `installment_number` of
-- an offering from their wallet into clearing:installments, in the same
-- database transaction as the ledger transaction and the PaymentConfirmed
-- event in the outbox.

create table installment_payments (
    id uuid primary key default gen_random_uuid(),
    -- The offering (owned by marketplace; no foreign key across databases).
    offering_id uuid not null,
    installment_number integer not null
        constraint installment_payments_installment_number_check check (installment_number >= 1),
    payer_id uuid not null,
    amount_minor bigint not null
        constraint installment_payments_amount_positive check (amount_minor > 0),
    currency_code text not null
        constraint installment_payments_currency_code_check check (currency_code ~ '^[A-Z]{3}$'),
    transaction_id uuid not null
        constraint installment_payments_transaction_id_key unique
        references ledger_transactions (id),
    idempotency_key text not null
        constraint installment_payments_idempotency_key_length
            check (char_length(idempotency_key) between 1 and 255),
    create_time timestamptz not null default now(),
    update_time timestamptz not null default now(),
    -- An installment is paid once, whoever retries or races.
    constraint installment_payments_installment_key unique (offering_id, installment_number),
    constraint installment_payments_payer_idempotency_key unique (payer_id, idempotency_key)
);

create index installment_payments_create_time_idx on installment_payments (create_time desc, id desc);
create index installment_payments_payer_create_time_idx
    on installment_payments (payer_id, create_time desc, id desc);

create trigger installment_payments_set_update_time
    before update on installment_payments
    for each row execute function set_update_time();
