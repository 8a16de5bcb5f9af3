#!/usr/bin/env bash
# Events end to end on each transport (issue: events), loopback only,
# bounded in time: the outbox relay and a subscriber as the services run
# them, PostgreSQL and RabbitMQ as they run on this machine (not pinned:
# they are part of what is measured). Output: markdown for
# docs/BENCHMARKS.md.
#
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres bench/events.sh [seconds, default 20] [rate, default 500]
#   env: DRAIN_EVENTS (200000, the PostgreSQL drain), DRAIN_EVENTS_RABBITMQ (50000),
#        HOLDERS (1000)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
rate="${2:-${EVENTS_RATE:-500}}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
# shellcheck source=bench/lib.sh
. bench/lib.sh

echo "Latency from the producer's commit to the subscriber's handler, one event per transaction at a steady rate:"
echo
echo "| transport | target events/s | committed events/s | handled | p50 ms | p99 ms | max ms | failed |"
echo "|---|---|---|---|---|---|---|---|"
for transport in postgres rabbitmq; do
  "$bin" events-latency "$transport" "$rate" "$seconds"
done
echo
echo "Highest rate: writers commit as fast as they can for the window; handled/s is from the first commit to the last event handled:"
echo
echo "| transport | writers | events per transaction | events | committed/s | handled/s | p50 ms | p99 ms |"
echo "|---|---|---|---|---|---|---|---|"
for transport in postgres rabbitmq; do
  for per_transaction in 1 10; do
    "$bin" events-throughput "$transport" "$((seconds / 2))" 8 "$per_transaction"
  done
done
echo
echo "Draining a pre-filled outbox: the events are written first (1,000 per transaction, outside the measurement), then the relay and one subscriber start; handled/s is from their start to the last event handled:"
echo
echo "| transport | events | fill s | handled | seconds | handled/s |"
echo "|---|---|---|---|---|---|"
"$bin" events-drain postgres "${DRAIN_EVENTS:-200000}"
"$bin" events-drain rabbitmq "${DRAIN_EVENTS_RABBITMQ:-50000}"
echo
echo "One installment payment to many holders, end to end (wallet, marketplace and distribution over mTLS, events on the PostgreSQL bus); times from the PayInstallment answer:"
echo
echo "| holders | funding s (deposits + investments, 32 at once) | last holder credited s | offering SETTLED s | credits | sum |"
echo "|---|---|---|---|---|---|"
"$bin" distribute "${HOLDERS:-1000}"
