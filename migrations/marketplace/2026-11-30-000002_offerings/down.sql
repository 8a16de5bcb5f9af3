-- Undo 000002_offerings.
drop table offering_installments;
drop table offerings;
