#!/usr/bin/env bash
# Safra binaries side by side in one session: for each round and each
# binary, a fresh `safra up` (private PostgreSQL, no rate limit) seeded as
# bench/peer.sh seeds it, then the four scenarios of bench/peer.sh with
# `wrk -t2 -c64` (3 s warm-up, DUR s measured); prints one line per binary
# and round with the requests/s of each scenario and the RSS of every mesh
# process summed 5 s after the runs. Rounds alternate the binaries (A B A B).
# Loopback only; bounded in time; stops what it started.
#
#   bench/ab.sh /path/to/old/safra /path/to/new/safra [...]
#   env: ROUNDS (2), DUR (10), SAFRA_PG_PORT (5433)
set -euo pipefail
cd "$(dirname "$0")/.."
HERE=$PWD/bench/peer
ROUNDS="${ROUNDS:-2}"
DUR="${DUR:-10}"
PG_PORT="${SAFRA_PG_PORT:-5433}"
[ "$#" -ge 1 ] || { echo "usage: bench/ab.sh BINARY..." >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }
UP=""
HOME_DIR=""
stop() {
  if [ -n "$UP" ]; then kill -TERM "$UP" 2>/dev/null || true; wait "$UP" 2>/dev/null || true; fi
  if [ -n "$HOME_DIR" ]; then
    local pg
    pg=$(readlink "$HOME_DIR/pg" 2>/dev/null || true)
    [ -n "$pg" ] && rm -rf "$pg"
    rm -rf "$HOME_DIR"
  fi
  UP=""
  HOME_DIR=""
}
trap stop EXIT
for round in $(seq 1 "$ROUNDS"); do
  for binary in "$@"; do
    HOME_DIR=$(mktemp -d /var/tmp/safra-ab.XXXXXX)
    chmod 755 "$HOME_DIR"
    mkdir -p "$HOME_DIR/out"
    (cd "$HOME_DIR/out" && exec env -u DATABASE_URL SAFRA_HOME="$HOME_DIR" SAFRA_RATE_LIMIT_RPS=0 \
      SAFRA_PG_PORT="$PG_PORT" SAFRA_ADMIN_PASSWORD=ab-admin-password "$binary" up) >"$HOME_DIR/out/safra.log" 2>&1 &
    UP=$!
    for _ in $(seq 1 600); do grep -q "^safra is up" "$HOME_DIR/out/safra.log" && break; sleep 0.2; done
    grep -q "^safra is up" "$HOME_DIR/out/safra.log" || { tail -5 "$HOME_DIR/out/safra.log" >&2; exit 1; }
    python3 "$HERE/seed.py" --side safra --base http://127.0.0.1:8080 \
      --state "$HOME_DIR/out/state.json" --lua "$HOME_DIR/out/data.lua" >/dev/null
    export PEER_BENCH_LUA="$HERE" PEER_BENCH_DATA="$HOME_DIR/out/data.lua"
    line="$binary round $round:"
    for scenario in invest get_offering list_offerings users_me; do
      PEER_BENCH_RUN="warm-$RANDOM" wrk -t2 -c64 -d3s -s "$HERE/$scenario.lua" http://127.0.0.1:8080 >/dev/null
      rps=$(PEER_BENCH_RUN="run-$RANDOM" wrk -t2 -c64 -d"${DUR}s" --timeout 10s \
        -s "$HERE/$scenario.lua" http://127.0.0.1:8080 | awk '/Requests\/sec/ {print $2}')
      line="$line $scenario=$rps"
    done
    sleep 5
    rss=$(ps -o rss= -p "$(pgrep -f "$binary" | paste -sd, -)" | awk '{s += $1} END {printf "%.1f", s / 1024}')
    echo "$line rss_mib=$rss"
    stop
  done
done
