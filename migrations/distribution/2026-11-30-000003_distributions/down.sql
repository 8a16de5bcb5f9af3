-- Undo 000003_distributions, in reverse order.
drop table distribution_lines;
drop function distribution_lines_check_sum();
drop table distributions;
