#!/usr/bin/env bash
# Safra against the FastAPI peer (../shared/peers/fastapi), side by side in one run.
#
# Builds the release `safra` binary, starts `safra up` (its private PostgreSQL in
# a fresh SAFRA_HOME, no rate limit) and the peer's run.sh (throwaway PostgreSQL),
# seeds both through their REST APIs the same way (bench/peer/seed.py: a producer,
# 200 offerings that never fill, 64 investors with a large deposit and a fresh
# token each), then drives wrk on four scenarios, Safra then the peer, round after
# round (A B A B):
#   invest          POST /v1/offerings/{id}:invest  (R$1.00, new idempotency key per request)
#   get_offering    GET  /v1/offerings/{id}
#   list_offerings  GET  /v1/offerings?pageSize=50
#   users_me        GET  /v1/users/me
# all with `Authorization: Bearer <token>` (a random investor, a random offering),
# wrk -t THREADS -c CONC, WARM seconds of warm-up (discarded) then DUR seconds
# measured, --timeout 10s. For each measured window it reads from /proc the CPU
# time of each side's server processes (safra up and its `safra serve` children;
# the uvicorn master, its workers and the resource tracker) and of each side's
# PostgreSQL (postmaster and backends, including backends that exited during the
# window), never the load generator's, and prints per scenario and round: RPS
# (successful requests per second), p50 and p99, errors (non-2xx and socket
# errors) and CPU milliseconds per successful request (server, PostgreSQL,
# total); then a summary per scenario with the Safra/peer ratios of RPS and p99;
# then, 30 s after the last run, RSS and PSS of every server process on both
# sides (PostgreSQL excluded). Everything it started is stopped on exit, and its
# temporary folders removed. Loopback only; bounded in time (about
# ROUNDS x 4 x 2 x (WARM + DUR + 2) s after start-up and seeding).
#
#   bench/peer.sh
#   env: ROUNDS (2)  DUR (15)  WARM (3)  CONC (64)  THREADS (2)
#        SAFRA_BIN=/path/to/safra   use that binary, skip the build
#        PEER_DIR=/path/to/peer     default ../shared/peers/fastapi from the repository root
#        SAFRA_PG_PORT              Safra's private PostgreSQL (default: the first free from 5433)
#
# The measurement: servers, both PostgreSQL clusters and wrk share the machine's
# cores (two on the reference box) with no CPU pinning on either side; both
# servers stay up for the whole run, so the side not being measured idles (and
# runs its background work) during the other side's window.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

ROUNDS="${ROUNDS:-2}"
DUR="${DUR:-15}"
WARM="${WARM:-3}"
CONC="${CONC:-64}"
THREADS="${THREADS:-2}"
PEER_DIR="${PEER_DIR:-$ROOT/../shared/peers/fastapi}"
SCENARIOS=(invest get_offering list_offerings users_me)
SAFRA_URL=http://127.0.0.1:8080
PEER_URL=http://127.0.0.1:8180
PEER_PG_PORT_USED="${PEER_PG_PORT:-55432}"
HERE="$ROOT/bench/peer"
ADMIN_PASSWORD="peer-bench-admin-$RANDOM$RANDOM"

log() { echo "peer.sh: $*" >&2; }
die() { log "$*"; exit 1; }
listening() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
# Waits up to $2 seconds for process $1 to end.
wait_gone() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do alive "$1" || return 0; sleep 0.1; done
  return 1
}

case "$ROUNDS$DUR$WARM$CONC$THREADS" in *[!0-9]*) die "ROUNDS, DUR, WARM, CONC and THREADS are whole numbers" ;; esac
if [ "$ROUNDS" -lt 1 ] || [ "$DUR" -lt 1 ] || [ "$THREADS" -lt 1 ] || [ "$CONC" -lt "$THREADS" ]; then
  die "need ROUNDS >= 1, DUR >= 1, CONC >= THREADS >= 1"
fi
[ -x "$PEER_DIR/run.sh" ] || die "no peer at $PEER_DIR (set PEER_DIR)"
PEER_DIR="$(cd "$PEER_DIR" && pwd)"
for port in 8080 8180 "$PEER_PG_PORT_USED"; do
  if listening "$port"; then die "something already listens on port $port: stop it first"; fi
done
if [ -z "${SAFRA_PG_PORT:-}" ]; then
  SAFRA_PG_PORT=5433
  while listening "$SAFRA_PG_PORT"; do SAFRA_PG_PORT=$((SAFRA_PG_PORT + 1)); done
elif listening "$SAFRA_PG_PORT"; then
  die "SAFRA_PG_PORT $SAFRA_PG_PORT is in use"
fi

command -v wrk >/dev/null || apt_install wrk
command -v wrk >/dev/null || die "wrk is not installed"

if [ -z "${SAFRA_BIN:-}" ]; then
  log "building the release binary"
  cargo build --release --locked -p safra-cli >&2
  SAFRA_BIN=$(built_binary release)
fi
case "$SAFRA_BIN" in /*) ;; *) SAFRA_BIN="$ROOT/$SAFRA_BIN" ;; esac
[ -x "$SAFRA_BIN" ] || die "SAFRA_BIN $SAFRA_BIN is not an executable"

# --- start both sides; stop them on exit ---------------------------------------
OUT=$(mktemp -d "${TMPDIR:-/tmp}/safra-peer-bench.XXXXXX")
SAFRA_HOME_DIR=$(mktemp -d /var/tmp/safra-peer-home.XXXXXX)
chmod 755 "$SAFRA_HOME_DIR"  # as root, the postgres user must enter it
RUNS="$OUT/runs"
mkdir -p "$RUNS"
SAFRA_UP_PID="" SAFRA_PG_PID="" PEER_RUN_PID="" UVICORN_PID="" PEER_PG_PID="" PEER_PG_DIR=""

stop_everything() {
  local rc=$? pg_link
  trap - EXIT INT TERM
  set +e
  if [ "$rc" != 0 ]; then
    for f in safra.log peer.log; do
      [ -s "$OUT/$f" ] && { log "last lines of $f:"; tail -n 20 "$OUT/$f" >&2; }
    done
  fi
  # The clusters' postmasters, also when the run stopped before reading them.
  [ -z "$SAFRA_PG_PID" ] && SAFRA_PG_PID=$(head -n 1 "$SAFRA_HOME_DIR/pg/data/postmaster.pid" 2>/dev/null)
  [ -z "$PEER_PG_DIR" ] && PEER_PG_DIR=$(cat "$OUT/peer-pgdir" 2>/dev/null)
  [ -z "$PEER_PG_PID" ] && [ -n "$PEER_PG_DIR" ] && PEER_PG_PID=$(head -n 1 "$PEER_PG_DIR/data/postmaster.pid" 2>/dev/null)
  # SIGTERM: safra up drains and stops its children and its private cluster;
  # run.sh stops uvicorn and removes its throwaway cluster.
  alive "$SAFRA_UP_PID" && kill -TERM "$SAFRA_UP_PID" 2>/dev/null
  alive "$PEER_RUN_PID" && kill -TERM "$PEER_RUN_PID" 2>/dev/null
  wait_gone "$SAFRA_UP_PID" 60 || { log "safra up did not stop: SIGKILL"; kill -KILL "$SAFRA_UP_PID" 2>/dev/null; }
  wait_gone "$PEER_RUN_PID" 60 || { log "run.sh did not stop: SIGKILL"; kill -KILL "$PEER_RUN_PID" 2>/dev/null; }
  wait_gone "$UVICORN_PID" 10 || kill -KILL "$UVICORN_PID" 2>/dev/null
  # A cluster left running by a killed parent: fast shutdown (SIGINT to the postmaster).
  for pid in "$SAFRA_PG_PID" "$PEER_PG_PID"; do
    if alive "$pid" && grep -q postgres "/proc/$pid/cmdline" 2>/dev/null; then
      kill -INT "$pid" 2>/dev/null
      wait_gone "$pid" 30 || log "PostgreSQL $pid is still running"
    fi
  done
  [ -n "$PEER_PG_DIR" ] && [ -d "$PEER_PG_DIR" ] && ! alive "$PEER_PG_PID" && rm -rf "$PEER_PG_DIR"
  pg_link=$(readlink "$SAFRA_HOME_DIR/pg" 2>/dev/null || true)
  if [ -n "$pg_link" ] && ! alive "$SAFRA_PG_PID"; then rm -rf "$pg_link"; fi  # relocated cluster
  rm -rf "$SAFRA_HOME_DIR" "$OUT"
  exit "$rc"
}
trap stop_everything EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "starting safra ($SAFRA_BIN, SAFRA_HOME $SAFRA_HOME_DIR, PostgreSQL port $SAFRA_PG_PORT)"
(
  cd "$OUT"  # no stray .env from the caller's folder
  exec env -u DATABASE_URL SAFRA_HOME="$SAFRA_HOME_DIR" SAFRA_RATE_LIMIT_RPS=0 \
    SAFRA_PG_PORT="$SAFRA_PG_PORT" SAFRA_ADMIN_PASSWORD="$ADMIN_PASSWORD" SAFRA_LOG_FORMAT=json \
    "$SAFRA_BIN" up
) >"$OUT/safra.log" 2>&1 &
SAFRA_UP_PID=$!

log "starting the peer ($PEER_DIR/run.sh)"
env -u PEER_DATABASE_URL PEER_PG_DIR_FILE="$OUT/peer-pgdir" "$PEER_DIR/run.sh" >"$OUT/peer.log" 2>&1 &
PEER_RUN_PID=$!

for ((i = 0; i < 6000; i++)); do  # 600 s: a first run of run.sh makes its venv
  if [ -z "$UVICORN_PID" ]; then
    UVICORN_PID=$(sed -n 's/.*uvicorn pid \([0-9][0-9]*\) .*/\1/p' "$OUT/peer.log")
  fi
  [ -n "$UVICORN_PID" ] && curl -fs --max-time 2 -o /dev/null "$PEER_URL/healthz" && break
  alive "$PEER_RUN_PID" || die "the peer's run.sh exited"
  sleep 0.1
done
if [ -z "$UVICORN_PID" ] || ! curl -fs --max-time 2 -o /dev/null "$PEER_URL/healthz"; then
  die "the peer did not come up in 600 s"
fi
PEER_PG_DIR=$(cat "$OUT/peer-pgdir")
PEER_PG_PID=$(head -n 1 "$PEER_PG_DIR/data/postmaster.pid")
log "peer up: uvicorn $UVICORN_PID, PostgreSQL $PEER_PG_PID"

for ((i = 0; i < 6000; i++)); do
  grep -q "^safra is up: $SAFRA_URL\$" "$OUT/safra.log" && break
  alive "$SAFRA_UP_PID" || die "safra up exited"
  sleep 0.1
done
grep -q "^safra is up: $SAFRA_URL\$" "$OUT/safra.log" || die "safra was not up in 600 s"
SAFRA_PG_PID=$(head -n 1 "$SAFRA_HOME_DIR/pg/data/postmaster.pid")
log "safra up: safra up $SAFRA_UP_PID, PostgreSQL $SAFRA_PG_PID"

# --- seed, then run ---------------------------------------------------------------
seed() {  # side url
  python3 "$HERE/seed.py" --side "$1" --base "$2" --state "$OUT/state-$1.json" --lua "$OUT/data-$1.lua"
}

# The CPU groups of a side for procstat.py: its servers (less its PostgreSQL,
# should that run below them) and its PostgreSQL.
groups() {
  case "$1" in
    safra) echo "server=$SAFRA_UP_PID:$SAFRA_PG_PID postgres=$SAFRA_PG_PID" ;;
    peer) echo "server=$UVICORN_PID:$PEER_PG_PID postgres=$PEER_PG_PID" ;;
  esac
}

measure() {  # side url scenario round
  local side=$1 url=$2 scenario=$3 round=$4 stem
  local -a group_args wrk_args
  read -r -a group_args <<<"$(groups "$side")"
  stem="$RUNS/$scenario.r$round.$side"
  wrk_args=(-t"$THREADS" -c"$CONC" --timeout 10s -s "$HERE/$scenario.lua" "$url")
  export PEER_BENCH_LUA="$HERE" PEER_BENCH_DATA="$OUT/data-$side.lua"
  if [ "$WARM" -gt 0 ]; then
    PEER_BENCH_RUN="w$round-$side-$(date +%s%N)" timeout -k 5 $((WARM + 30)) \
      wrk -d"${WARM}s" "${wrk_args[@]}" >"$stem.warm"
  fi
  python3 "$HERE/procstat.py" cpu "${group_args[@]}" >"$stem.before.json"
  PEER_BENCH_RUN="m$round-$side-$(date +%s%N)" timeout -k 5 $((DUR + 30)) \
    wrk -d"${DUR}s" "${wrk_args[@]}" >"$stem.wrk"
  python3 "$HERE/procstat.py" cpu "${group_args[@]}" >"$stem.after.json"
  log "$scenario round $round $side: $(grep -E 'Requests/sec' "$stem.wrk" | tr -s ' ')"
}

seed safra "$SAFRA_URL"
seed peer "$PEER_URL"

echo "## Safra vs FastAPI peer ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
echo
echo "- safra: \`$SAFRA_BIN\` ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')), gateway $SAFRA_URL, private PostgreSQL; peer: \`$PEER_DIR/run.sh\`, $PEER_URL"
echo "- $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2), -t$THREADS -c$CONC, ${WARM} s warm-up + ${DUR} s measured, --timeout 10s; rounds: $ROUNDS, in each Safra then the peer"
echo "- $(nproc) cores shared, unpinned, by both servers, both PostgreSQL clusters and wrk"
echo "- CPU ms/req: CPU time of the side's server processes / PostgreSQL during the measured window, per successful request"

for ((round = 1; round <= ROUNDS; round++)); do
  if [ "$round" -gt 1 ]; then  # fresh access tokens (they live 15 minutes on both sides)
    seed safra "$SAFRA_URL"
    seed peer "$PEER_URL"
  fi
  for scenario in "${SCENARIOS[@]}"; do
    measure safra "$SAFRA_URL" "$scenario" "$round"
    measure peer "$PEER_URL" "$scenario" "$round"
    python3 "$HERE/summarize.py" round "$RUNS" "$scenario" "$round"
  done
done
python3 "$HERE/summarize.py" summary "$RUNS"

log "waiting 30 s before reading memory"
sleep 30
python3 "$HERE/procstat.py" mem "safra=$SAFRA_UP_PID:$SAFRA_PG_PID" "peer=$UVICORN_PID:$PEER_PG_PID" >"$OUT/memory.json"
python3 "$HERE/summarize.py" memory "$OUT/memory.json"
