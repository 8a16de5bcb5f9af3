#!/usr/bin/env bash
# The gateway's memory under edge attacks (the issue's items 4 and 5).
#
# Builds the release `safra` binary (or takes SAFRA_BIN), starts `safra up` in a fresh
# SAFRA_HOME on alternate ports (gateway 127.0.0.1:18080, services 18101-18105, their admin
# ports 18111-18115, private PostgreSQL 55433; the gateway has no admin port) with the
# gateway's default settings, rate limit included, then runs bench/edge/attack.py against
# the gateway's public port, loopback only, one attack after the other, never with a token:
#   A  pre-auth bodies   A_CONNS h2c (prior knowledge) connections carrying A_BODIES streams,
#                        half POST /v1/wallet:deposit (JSON), half gRPC
#                        /safra.wallet.v1.WalletService/Deposit; each sends A_BODY_BYTES of
#                        body as fast as the gateway's flow-control windows allow, never
#                        END_STREAM; held A_HOLD s once pushed, then closed
#   B  slow and idle     B_IDLE TCP connections that send nothing, and B_SLOW that send an
#                        HTTP/1.1 request's headers one line every B_SLOW_EVERY s; held B_HOLD s
#   Z  zero window       h2c connections announcing SETTINGS_INITIAL_WINDOW_SIZE 0 that
#                        request /openapi.json on Z_STREAMS streams in all (as many per
#                        connection as the gateway's max concurrent streams allows); held Z_HOLD s
# For each it prints the gateway process's VmRSS idle before, its peak during the attack
# (sampled every SAMPLE_MS ms) and AFTER s after it closed; what became of the attack's
# streams (accepted, answered, reset) and connections (closed by the gateway or not); whether
# /healthz still answers; then a table. Each attack gets a fresh `safra up` (same SAFRA_HOME,
# so PostgreSQL is made once), so no attack starts from memory another left behind.
# Everything it started is stopped on exit and its folders removed. About 3 minutes with the
# defaults, plus the build.
#
#   bench/edge-attack.sh
#   env: A_BODIES (100)  A_CONNS (4)  A_BODY_BYTES (4000000)  A_HOLD (10)
#        B_IDLE (1000)  B_SLOW (100)  B_SLOW_EVERY (3)  B_HOLD (15)
#        Z_STREAMS (3800)  Z_HOLD (10)  AFTER (30)  SAMPLE_MS (150)
#        SAFRA_BIN=/path/to/safra   use that binary, skip the build
#
# Needs Python 3.11 with the h2 package (installed with pip when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

A_BODIES="${A_BODIES:-100}"
A_CONNS="${A_CONNS:-4}"
A_BODY_BYTES="${A_BODY_BYTES:-4000000}"
A_HOLD="${A_HOLD:-10}"
B_IDLE="${B_IDLE:-1000}"
B_SLOW="${B_SLOW:-100}"
B_SLOW_EVERY="${B_SLOW_EVERY:-3}"
B_HOLD="${B_HOLD:-15}"
Z_STREAMS="${Z_STREAMS:-3800}"
Z_HOLD="${Z_HOLD:-10}"
AFTER="${AFTER:-30}"
SAMPLE_MS="${SAMPLE_MS:-150}"
GATEWAY=127.0.0.1:18080
PG_PORT=55433
SERVICES=(ACCOUNTS MARKETPLACE WALLET DISTRIBUTION NOTIFICATIONS)

log() { echo "edge-attack.sh: $*" >&2; }
die() { log "$*"; exit 1; }
listening() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
# Waits up to $2 seconds for process $1 to end.
wait_gone() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do alive "$1" || return 0; sleep 0.1; done
  return 1
}

for value in "$A_BODIES" "$A_CONNS" "$A_BODY_BYTES" "$A_HOLD" "$B_IDLE" "$B_SLOW" "$B_SLOW_EVERY" \
  "$B_HOLD" "$Z_STREAMS" "$Z_HOLD" "$AFTER" "$SAMPLE_MS"; do
  case "$value" in '' | *[!0-9]*) die "the sizes and durations are whole numbers (got '$value')" ;; esac
done
ports=("${GATEWAY#*:}" "$PG_PORT")
for ((i = 0; i < ${#SERVICES[@]}; i++)); do ports+=($((18101 + i)) $((18111 + i))); done
for port in "${ports[@]}"; do
  if listening "$port"; then die "something already listens on port $port: stop it first"; fi
done

python3 -c 'import h2' 2>/dev/null \
  || PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check h2 >&2
python3 -c 'import h2' 2>/dev/null || die "cannot import the Python package h2"

if [ -z "${SAFRA_BIN:-}" ]; then
  log "building the release binary"
  cargo build --release --locked -p safra-cli >&2
  SAFRA_BIN=$(built_binary release safra)
fi
case "$SAFRA_BIN" in /*) ;; *) SAFRA_BIN="$ROOT/$SAFRA_BIN" ;; esac
[ -x "$SAFRA_BIN" ] || die "SAFRA_BIN $SAFRA_BIN is not an executable"

# --- the mesh: one fresh `safra up` per attack, all in one SAFRA_HOME ------------------
OUT=$(mktemp -d "${TMPDIR:-/tmp}/safra-edge-attack.XXXXXX")
SAFRA_HOME_DIR=$(mktemp -d /var/tmp/safra-edge-home.XXXXXX)
chmod 755 "$SAFRA_HOME_DIR"  # as root, the postgres user must enter it
SAFRA_UP_PID="" SAFRA_PG_PID="" GATEWAY_PID="" ATTACK_PID=""
addrs=()
for ((i = 0; i < ${#SERVICES[@]}; i++)); do
  addrs+=("SAFRA_${SERVICES[i]}_LISTEN_ADDR=127.0.0.1:$((18101 + i))"
    "SAFRA_${SERVICES[i]}_ADMIN_ADDR=127.0.0.1:$((18111 + i))")
done

# Starts safra up and waits for it; sets SAFRA_UP_PID and GATEWAY_PID.
start_mesh() {
  (
    cd "$OUT"  # no stray .env from the caller's folder
    # The children inherit this environment: nothing of the caller's may tune the gateway.
    exec env -u DATABASE_URL -u SAFRA_RATE_LIMIT_RPS -u SAFRA_BROKER -u SAFRA_LISTEN_ADDR \
      -u SAFRA_ADMIN_ADDR SAFRA_HOME="$SAFRA_HOME_DIR" SAFRA_PG_PORT="$PG_PORT" \
      SAFRA_GATEWAY_ADDR="$GATEWAY" "${addrs[@]}" SAFRA_ADMIN_PASSWORD="edge-attack-$RANDOM$RANDOM" \
      SAFRA_LOG_FORMAT=json "$SAFRA_BIN" up
  ) >"$OUT/safra.log" 2>&1 &
  SAFRA_UP_PID=$!
  local i
  for ((i = 0; i < 1200; i++)); do
    grep -q "^safra is up: http://$GATEWAY\$" "$OUT/safra.log" && break
    alive "$SAFRA_UP_PID" || die "safra up exited"
    sleep 0.1
  done
  grep -q "^safra is up: http://$GATEWAY\$" "$OUT/safra.log" || die "safra was not up in 120 s"
  SAFRA_PG_PID=$(head -n 1 "$SAFRA_HOME_DIR/pg/data/postmaster.pid")
  GATEWAY_PID=$(ps -o pid=,args= --ppid "$SAFRA_UP_PID" \
    | awk '$2 ~ /safra/ && $3 == "serve" && $4 == "gateway" {print $1}')
  [ -n "$GATEWAY_PID" ] || die "no 'safra serve gateway' child of safra up ($SAFRA_UP_PID)"
}

# SIGTERM to safra up, which drains and stops its children and its private cluster.
stop_mesh() {
  alive "$SAFRA_UP_PID" || return 0
  kill -TERM "$SAFRA_UP_PID" 2>/dev/null
  wait_gone "$SAFRA_UP_PID" 60 || { log "safra up did not stop: SIGKILL"; kill -KILL "$SAFRA_UP_PID" 2>/dev/null; }
  wait "$SAFRA_UP_PID" 2>/dev/null || true
}

stop_everything() {
  local rc=$? pg_link
  trap - EXIT INT TERM
  set +e
  if [ "$rc" != 0 ]; then
    for f in "$OUT/safra.log" "$SAFRA_HOME_DIR/logs/gateway.log"; do
      [ -s "$f" ] && { log "last lines of $f:"; tail -n 20 "$f" >&2; }
    done
  fi
  [ -z "$SAFRA_PG_PID" ] && SAFRA_PG_PID=$(head -n 1 "$SAFRA_HOME_DIR/pg/data/postmaster.pid" 2>/dev/null)
  alive "$ATTACK_PID" && { kill -TERM "$ATTACK_PID" 2>/dev/null; wait "$ATTACK_PID" 2>/dev/null; }
  stop_mesh
  # A cluster left running by a killed safra up: fast shutdown (SIGINT to the postmaster).
  if alive "$SAFRA_PG_PID" && grep -q postgres "/proc/$SAFRA_PG_PID/cmdline" 2>/dev/null; then
    kill -INT "$SAFRA_PG_PID" 2>/dev/null
    wait_gone "$SAFRA_PG_PID" 30 || log "PostgreSQL $SAFRA_PG_PID is still running"
  fi
  pg_link=$(readlink "$SAFRA_HOME_DIR/pg" 2>/dev/null || true)
  if [ -n "$pg_link" ] && ! alive "$SAFRA_PG_PID"; then rm -rf "$pg_link"; fi  # relocated cluster
  rm -rf "$SAFRA_HOME_DIR" "$OUT"
  exit "$rc"
}
trap stop_everything EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- attack ----------------------------------------------------------------------
echo "## The gateway under edge attacks ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
echo
echo "- safra: \`$SAFRA_BIN\` ($("$SAFRA_BIN" --version)), gateway http://$GATEWAY, default settings; a fresh \`safra up\` for each attack"
echo "- attacker: bench/edge/attack.py on the same machine ($(nproc) cores), loopback, no token"
echo "- RSS: VmRSS of the gateway process only, sampled every $SAMPLE_MS ms"
echo
for attack in A B Z; do
  log "attack $attack: starting safra ($SAFRA_BIN, SAFRA_HOME $SAFRA_HOME_DIR, gateway $GATEWAY, PostgreSQL port $PG_PORT)"
  start_mesh
  log "attack $attack: safra up $SAFRA_UP_PID, gateway $GATEWAY_PID"
  # In the background, so that a signal to this script stops it at once.
  timeout -k 5 $((A_HOLD + B_HOLD + Z_HOLD + AFTER + 120)) python3 "$ROOT/bench/edge/attack.py" run "$attack" --pid "$GATEWAY_PID" \
    --host "${GATEWAY%:*}" --port "${GATEWAY#*:}" --row "$OUT/row-$attack.json" \
    --a-bodies "$A_BODIES" --a-conns "$A_CONNS" --a-body-bytes "$A_BODY_BYTES" --a-hold "$A_HOLD" \
    --b-idle "$B_IDLE" --b-slow "$B_SLOW" --b-slow-every "$B_SLOW_EVERY" --b-hold "$B_HOLD" \
    --z-streams "$Z_STREAMS" --z-hold "$Z_HOLD" --after "$AFTER" --sample-ms "$SAMPLE_MS" &
  ATTACK_PID=$!
  wait "$ATTACK_PID"
  ATTACK_PID=""
  alive "$SAFRA_UP_PID" || die "safra up exited during attack $attack"
  stop_mesh
done
python3 "$ROOT/bench/edge/attack.py" table --after "$AFTER" "$OUT"/row-{A,B,Z}.json
