-- Undo 000002_notifications, in reverse order.
drop table notifications;
drop function notifications_notify();
