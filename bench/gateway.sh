#!/usr/bin/env bash
# The edge gateway against direct gRPC (issue: the gateway), loopback only,
# bounded in time. The echo server (the full mesh stack) and the gateway run
# on core 1, the load generator on core 0. Each row is one run of the same
# RPC (AdminEcho with a bearer token); CPU counts the echo server, plus the
# gateway when the call goes through it. Output: markdown rows for
# docs/BENCHMARKS.md.
#
#   bench/gateway.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
# shellcheck source=bench/lib.sh
. bench/lib.sh

echo_addr=127.0.0.1:$((19000 + RANDOM % 500))
edge_addr=127.0.0.1:$((19500 + RANDOM % 500))
taskset -c 1 "$bin" serve-full "$dir" "$echo_addr" &
echo_pid=$!
wait_for "$echo_addr"
taskset -c 1 "$bin" serve-edge "$dir" "$edge_addr" "$echo_addr" &
edge_pid=$!
wait_for "$edge_addr"

echo "| path | concurrency | RPS | p50 ms | p99 ms | server CPU s | requests per server CPU-second | errors |"
echo "|---|---|---|---|---|---|---|---|"
for concurrency in 1 64; do
  taskset -c 0 "$bin" edge-load "$dir" direct "$echo_addr" "$concurrency" "$seconds" "$echo_pid"
  for mode in edge-grpc grpc-web rest; do
    taskset -c 0 "$bin" edge-load "$dir" "$mode" "$edge_addr" "$concurrency" "$seconds" "$echo_pid,$edge_pid"
  done
done
echo
echo "gateway RSS after the runs: $(rss_mib "$edge_pid") (VmRSS)"
