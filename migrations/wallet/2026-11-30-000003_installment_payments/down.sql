-- Undo 000003_installment_payments.
drop table installment_payments;
