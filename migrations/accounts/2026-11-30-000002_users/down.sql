-- Undo 000002_users (triggers and indexes go with their tables).
drop table login_throttles;
drop table refresh_tokens;
drop table users;
