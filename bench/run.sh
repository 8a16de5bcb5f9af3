#!/usr/bin/env bash
# Side-by-side benchmark of the mesh runtime (issue: the runtime), on this
# machine, loopback only, bounded in time. The server runs on core 1, the
# load generator on core 0; each row is one run. Output: markdown rows for
# docs/BENCHMARKS.md.
#
#   bench/run.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
# shellcheck source=bench/lib.sh
. bench/lib.sh

start_server() { # mode addr
  taskset -c 1 "$bin" "serve-$1" "$dir" "$2" &
  server_pid=$!
  wait_for "$2"
}

echo "| stack | concurrency | RPS | p50 ms | p99 ms | server CPU s | requests per server CPU-second | errors |"
echo "|---|---|---|---|---|---|---|---|"
for mode in bare stock-tls bare-tls full; do
  addr=127.0.0.1:$((17000 + RANDOM % 1000))
  start_server "$mode" "$addr"
  loads=("$mode")
  if [ "$mode" = bare ]; then loads+=(bare-token); fi
  for load in "${loads[@]}"; do
    # Typed stubs at 1 and 64 streams, then the lean caller at 64.
    for concurrency in 1 64; do
      taskset -c 0 "$bin" load "$dir" "$load" "$addr" "$concurrency" "$seconds" "$server_pid"
    done
    taskset -c 0 "$bin" load-raw "$dir" "$load" "$addr" 64 "$seconds" "$server_pid"
  done
  if [ "$mode" = full ]; then
    echo
    echo "| measure | value | detail |"
    echo "|---|---|---|"
    taskset -c 0 "$bin" handshakes "$dir" "$addr" "$seconds" "$server_pid"
    echo "| full-stack server RSS after the runs | $(rss_mib "$server_pid") | VmRSS |"
  fi
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
done
taskset -c 0 "$bin" jwt "$seconds"
