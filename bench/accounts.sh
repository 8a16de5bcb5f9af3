#!/usr/bin/env bash
# The accounts service under load (issue: accounts), loopback only, bounded
# in time. The real service runs on core 1 with its own throw-away database
# (PostgreSQL itself is not pinned and not counted in the service's CPU);
# the load generator runs on core 0. Output: markdown for docs/BENCHMARKS.md.
#
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres bench/accounts.sh [seconds, default 10] [login rounds, default 100]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
rounds="${2:-100}"
admin_url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
database="safra_bench_accounts_$$"
bench_url="${admin_url%/*}/$database"
# shellcheck source=bench/lib.sh
. bench/lib.sh
psql "$admin_url" -qc "CREATE DATABASE $database" >&2
bench_cleanup() { psql "$admin_url" -qc "DROP DATABASE IF EXISTS $database WITH (FORCE)" >&2; }

addr=127.0.0.1:$((18000 + RANDOM % 1000))
taskset -c 1 "$bin" serve-accounts "$dir" "$addr" "$bench_url" &
server_pid=$!
wait_for "$addr"

rss() { rss_mib "$server_pid"; }
echo "accounts service RSS at start: $(rss) (VmRSS)"
echo
taskset -c 0 "$bin" accounts-login "$dir" "$addr" "$rounds" "$server_pid"
echo
echo "accounts service RSS after the logins: $(rss)"
echo
echo "| RPC | concurrency | RPS | p50 ms | p99 ms | server CPU s | requests per server CPU-second | errors |"
echo "|---|---|---|---|---|---|---|---|"
for concurrency in 1 64; do
  taskset -c 0 "$bin" accounts-getme "$dir" "$addr" "$concurrency" "$seconds" "$server_pid"
done
echo
echo "accounts service RSS after GetMe: $(rss)"
