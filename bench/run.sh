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
cargo build --release --locked -p safra-bench >&2
bin=target/release/safra-bench
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT

start_server() { # mode addr
  taskset -c 1 "$bin" "serve-$1" "$dir" "$2" &
  server_pid=$!
  for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/${2%:*}/${2#*:}") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "server $1 did not start" >&2
  return 1
}

echo "| stack | concurrency | RPS | p50 ms | p99 ms | server CPU s | requests per server CPU-second | errors |"
echo "|---|---|---|---|---|---|---|---|"
for mode in bare bare-tls full; do
  addr=127.0.0.1:$((17000 + RANDOM % 1000))
  start_server "$mode" "$addr"
  for concurrency in 1 64; do
    taskset -c 0 "$bin" load "$dir" "$mode" "$addr" "$concurrency" "$seconds" "$server_pid"
    if [ "$mode" = bare ]; then
      taskset -c 0 "$bin" load "$dir" bare-token "$addr" "$concurrency" "$seconds" "$server_pid"
    fi
  done
  if [ "$mode" = full ]; then
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$server_pid/status")
    echo
    echo "| measure | value | detail |"
    echo "|---|---|---|"
    taskset -c 0 "$bin" handshakes "$dir" "$addr" "$seconds" "$server_pid"
    echo "| full-stack server RSS after the runs | $((rss / 1024)) MiB | VmRSS |"
  fi
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
done
taskset -c 0 "$bin" jwt "$seconds"
