#!/usr/bin/env bash
# Instructions per request in the gateway, counted by callgrind (repeatable
# whatever else the machine runs, unlike CPU time): one mesh from MESH_BIN,
# seeded as bench/peer.sh seeds it; then, for each round and each gateway
# binary, a second gateway on 127.0.0.1:8081 (admin 127.0.0.1:9100) with
# the first one's environment, under `valgrind --tool=callgrind`; counters
# zeroed after a 10 s warm-up, then `wrk -t1 -c8` for DUR s with one
# scenario of bench/peer.sh. Prints instructions per successful request.
# Loopback only; bounded in time; stops what it started.
#
#   bench/gateway-instructions.sh MESH_BIN SCENARIO GATEWAY_BIN...
#   env: ROUNDS (2), DUR (40), SAFRA_PG_PORT (5433)
set -euo pipefail
cd "$(dirname "$0")/.."
HERE=$PWD/bench/peer
ROUNDS="${ROUNDS:-2}"
DUR="${DUR:-40}"
[ "$#" -ge 3 ] || { echo "usage: bench/gateway-instructions.sh MESH_BIN SCENARIO GATEWAY_BIN..." >&2; exit 2; }
MESH_BIN=$1
SCENARIO=$2
shift 2
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }
HOME_DIR=$(mktemp -d /var/tmp/safra-callgrind.XXXXXX)
chmod 755 "$HOME_DIR"
OUT="$HOME_DIR/out"
mkdir -p "$OUT"
(cd "$OUT" && exec env -u DATABASE_URL SAFRA_HOME="$HOME_DIR" SAFRA_RATE_LIMIT_RPS=0 \
  SAFRA_PG_PORT="${SAFRA_PG_PORT:-5433}" SAFRA_ADMIN_PASSWORD=callgrind-admin-password "$MESH_BIN" up) >"$OUT/safra.log" 2>&1 &
UP=$!
GATEWAY=""
cleanup() {
  [ -n "$GATEWAY" ] && kill -TERM "$GATEWAY" 2>/dev/null
  kill -TERM "$UP" 2>/dev/null
  wait 2>/dev/null || true
  local pg
  pg=$(readlink "$HOME_DIR/pg" 2>/dev/null || true)
  [ -n "$pg" ] && rm -rf "$pg"
  rm -rf "$HOME_DIR"
}
trap cleanup EXIT
for _ in $(seq 1 600); do grep -q "^safra is up" "$OUT/safra.log" && break; sleep 0.2; done
grep -q "^safra is up" "$OUT/safra.log" || { tail -5 "$OUT/safra.log" >&2; exit 1; }
python3 "$HERE/seed.py" --side safra --base http://127.0.0.1:8080 --state "$OUT/state.json" --lua "$OUT/data.lua" >/dev/null
export PEER_BENCH_LUA="$HERE" PEER_BENCH_DATA="$OUT/data.lua"
first=$(pgrep -f "serve gateway" | head -1)
# The first gateway's environment, without what places it or supervises it.
mapfile -d '' environment < <(grep -zv "^SAFRA_EXIT_ON_STDIN_EOF=\|^SAFRA_LISTEN_ADDR=\|^SAFRA_GATEWAY_ADMIN_ADDR=" "/proc/$first/environ")
for round in $(seq 1 "$ROUNDS"); do
  for binary in "$@"; do
    env -i "${environment[@]}" SAFRA_LISTEN_ADDR=127.0.0.1:8081 SAFRA_GATEWAY_ADMIN_ADDR=127.0.0.1:9100 \
      valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.%p" "$binary" serve gateway \
      >"$OUT/gateway.log" 2>&1 </dev/null &
    GATEWAY=$!
    for _ in $(seq 1 600); do curl -sf http://127.0.0.1:8081/healthz >/dev/null && break; sleep 0.5; done
    PEER_BENCH_RUN="warm-$RANDOM" wrk -t1 -c8 -d10s -s "$HERE/$SCENARIO.lua" http://127.0.0.1:8081 >/dev/null
    callgrind_control -z "$GATEWAY" >/dev/null 2>&1
    PEER_BENCH_RUN="run-$RANDOM" wrk -t1 -c8 -d"${DUR}s" --timeout 10s -s "$HERE/$SCENARIO.lua" \
      http://127.0.0.1:8081 >"$OUT/wrk.txt"
    callgrind_control -d "$GATEWAY" >/dev/null 2>&1
    kill -TERM "$GATEWAY"
    wait "$GATEWAY" 2>/dev/null || true
    GATEWAY=""
    requests=$(sed -n 's/^PEER_BENCH_RESULT //p' "$OUT/wrk.txt" |
      python3 -c 'import json, sys; r = json.load(sys.stdin); print(r["requests"] - r["errors"]["status"])')
    # The dump taken after zeroing (file name ends in .1) holds the window only.
    dump=$(ls "$OUT"/callgrind.*.1 | head -1)
    instructions=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
    echo "$binary round $round: $requests requests, $(( instructions / requests )) instructions per request"
    rm -f "$OUT"/callgrind.*
  done
done
