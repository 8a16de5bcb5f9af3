drop table login_known_addresses;
drop table login_budgets;

create table login_throttles (
    key text primary key
        constraint login_throttles_key_shape check (key ~ '^(email|addr):.+$'),
    failures integer not null default 0
        constraint login_throttles_failures_check check (failures >= 0),
    last_failure timestamptz,
    locked_until timestamptz,
    create_time timestamptz not null default now(),
    update_time timestamptz not null default now()
);

create index login_throttles_last_failure_idx on login_throttles (last_failure);

create trigger login_throttles_set_update_time
    before update on login_throttles
    for each row execute function set_update_time();
