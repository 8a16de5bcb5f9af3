#!/usr/bin/env bash
# Retention and the jobs figures at scale: loads a scratch service database
# (notifications' migrations) with ROWS handled ids and a scratch bus
# database with ROWS event-log entries, both spread over 30 days, then prints
# the plan and time (EXPLAIN ANALYZE, BUFFERS) of what the jobs monitor and a
# retention round run against them: the handled total (a counter row) next
# to the count(*) it replaced, a subscriber's backlog, the event log's floor,
# and one batch of each retention delete (rolled back, so every run measures
# the same tables). On the PostgreSQL at DATABASE_URL (default the local
# server); drops its databases at the end. No Rust build.
#
#   bench/retention.sh            ROWS=10000000 by default
#   env: DATABASE_URL, ROWS
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-10000000}"
SERVER="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
SUFFIX="$$"
SERVICE_DB="bench_retention_service_$SUFFIX"
BUS_DB="bench_retention_bus_$SUFFIX"
base="${SERVER%/*}"

cleanup() {
  psql -q "$SERVER" -c "DROP DATABASE IF EXISTS $SERVICE_DB" -c "DROP DATABASE IF EXISTS $BUS_DB" >/dev/null 2>&1 || true
}
trap cleanup EXIT

psql -q "$SERVER" -c "CREATE DATABASE $SERVICE_DB" -c "CREATE DATABASE $BUS_DB"
for up in migrations/notifications/*/up.sql; do
  psql -q -v ON_ERROR_STOP=1 "$base/$SERVICE_DB" -f "$up" >/dev/null
done
for up in migrations/bus/*/up.sql; do
  psql -q -v ON_ERROR_STOP=1 "$base/$BUS_DB" -f "$up" >/dev/null
done

echo "## Loading $ROWS rows into processed_events and into event_log (30 days)"
start=$(date +%s)
# In chunks of a million: the counting trigger sums each statement's rows.
psql -q -v ON_ERROR_STOP=1 "$base/$SERVICE_DB" <<SQL
DO \$\$
DECLARE chunk bigint := 1000000; done_rows bigint := 0;
BEGIN
  WHILE done_rows < $ROWS LOOP
    INSERT INTO processed_events (subscriber, event_id, processed_time)
    SELECT (ARRAY['notifications', 'marketplace', 'distribution'])[1 + n % 3],
           gen_random_uuid(),
           now() - (interval '30 days') * (1 - n::float8 / $ROWS)
    FROM generate_series(done_rows + 1, least(done_rows + chunk, $ROWS)) AS n;
    done_rows := done_rows + chunk;
    COMMIT;
  END LOOP;
END \$\$;
INSERT INTO outbox (aggregate_key, event_type, payload, create_time, published_at)
SELECT 'k' || n % 1000, 't', '', now() - (interval '30 days') * (1 - n::float8 / 1000000),
       now() - (interval '30 days') * (1 - n::float8 / 1000000)
FROM generate_series(1, 1000000) AS n;
VACUUM ANALYZE;
SQL
psql -q -v ON_ERROR_STOP=1 "$base/$BUS_DB" <<SQL
-- A bulk load, not appends: no per-row NOTIFY.
ALTER TABLE event_log DISABLE TRIGGER event_log_notify;
INSERT INTO event_log (event_id, event_type, aggregate_key, envelope, create_time)
SELECT gen_random_uuid(),
       (ARRAY['safra.events.v1.PaymentConfirmed', 'safra.events.v1.InvestmentCreated',
              'safra.events.v1.UserRegistered'])[1 + n % 3],
       'k' || n % 1000, '\x00'::bytea,
       now() - (interval '30 days') * (1 - n::float8 / $ROWS)
FROM generate_series(1, $ROWS) AS n ORDER BY n;
INSERT INTO subscriber_cursors (subscriber, position) VALUES
  ('notifications', $ROWS - 1000), ('marketplace', $ROWS - 100),
  ('distribution', $ROWS * 3 / 4), ('retired-one', 1000);
UPDATE subscriber_cursors SET update_time = now() - interval '30 days' WHERE subscriber = 'retired-one';
VACUUM ANALYZE;
SQL
echo "loaded in $(( $(date +%s) - start )) s"
echo

explain() { # database, title, statement
  echo "### $2"
  echo '```'
  psql -q -v ON_ERROR_STOP=1 -X "$base/$1" <<SQL | sed -e '/^$/d'
BEGIN;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) $3;
ROLLBACK;
SQL
  echo '```'
}

explain "$SERVICE_DB" "jobs: handled total, last handled and parked (the counter row)" \
  "SELECT coalesce((SELECT handled FROM subscriber_totals WHERE subscriber = 'notifications'), 0) AS total,
          (SELECT last_handled FROM subscriber_totals WHERE subscriber = 'notifications') AS last,
          (SELECT count(*) FROM parked_events WHERE subscriber = 'notifications') AS parked"
explain "$SERVICE_DB" "before: the same figures by counting processed_events" \
  "SELECT (SELECT count(*) FROM processed_events WHERE subscriber = 'notifications') AS total,
          (SELECT count(*) FROM processed_events WHERE subscriber = 'notifications'
             AND processed_time > now() - interval '1 minute') AS last_minute,
          (SELECT max(processed_time) FROM processed_events WHERE subscriber = 'notifications') AS last"
backlog() { # title, subscriber
  explain "$BUS_DB" "$1" \
    "WITH cursor AS (SELECT coalesce((SELECT position FROM subscriber_cursors WHERE subscriber = '$2'), 0) AS position),
          counted AS (SELECT count(*) AS waiting, min(create_time) AS oldest
                      FROM (SELECT e.create_time FROM event_log e
                            WHERE e.position > (SELECT position FROM cursor)
                              AND e.event_type = ANY(ARRAY['safra.events.v1.PaymentConfirmed', 'safra.events.v1.InvestmentCreated'])
                            ORDER BY e.position LIMIT 100000) AS first)
     SELECT CASE WHEN counted.waiting < 100000 THEN counted.waiting
                 ELSE greatest(coalesce((SELECT max(position) FROM event_log), 0) - (SELECT position FROM cursor), counted.waiting)
            END AS waiting, counted.oldest
     FROM counted"
}
explain "$BUS_DB" "before: the backlog of a subscriber 1,000 entries behind, counted whole" \
  "SELECT count(*) AS waiting, min(e.create_time) AS oldest FROM event_log e
   WHERE e.position > coalesce((SELECT position FROM subscriber_cursors WHERE subscriber = 'notifications'), 0)
     AND e.event_type = ANY(ARRAY['safra.events.v1.PaymentConfirmed', 'safra.events.v1.InvestmentCreated'])"
backlog "jobs: the backlog of a subscriber 1,000 entries behind" notifications
backlog "jobs: the backlog of a subscriber 2,500,000 entries behind (counted to 100,000, then estimated)" distribution
explain "$BUS_DB" "jobs: a retired cursor's backlog" \
  "SELECT c.subscriber, greatest(coalesce((SELECT max(position) FROM event_log), 0) - c.position, 0) AS waiting, c.update_time
   FROM subscriber_cursors c WHERE c.subscriber <> ALL(ARRAY['marketplace', 'distribution', 'notifications'])"
explain "$BUS_DB" "retention: the event log's floor" \
  "SELECT min(position) AS floor FROM subscriber_cursors
   WHERE subscriber = ANY(ARRAY['marketplace', 'distribution', 'notifications']) OR update_time > now() - interval '7 days'"
explain "$BUS_DB" "retention: one batch of the event log (10,000 rows)" \
  "DELETE FROM event_log WHERE position IN (SELECT position FROM event_log
   WHERE position <= $ROWS * 3 / 4 AND create_time < now() - interval '7 days' ORDER BY position LIMIT 10000)"
explain "$SERVICE_DB" "retention: one batch of handled ids (10,000 rows)" \
  "DELETE FROM processed_events WHERE ctid = ANY(ARRAY(SELECT ctid FROM processed_events
   WHERE processed_time < now() - interval '7 days' ORDER BY processed_time LIMIT 10000))"
explain "$SERVICE_DB" "retention: one batch of published outbox rows (10,000 rows)" \
  "DELETE FROM outbox WHERE ctid = ANY(ARRAY(SELECT ctid FROM outbox
   WHERE published_at < now() - interval '7 days' ORDER BY published_at LIMIT 10000))"
