#!/usr/bin/env bash
# Where one scenario's time goes inside Safra: starts `safra up` on a private
# cluster with pg_stat_statements loaded, seeds it as bench/peer.sh does,
# drives one scenario with wrk, and prints, for the measured window only:
# CPU seconds per request of every Safra process and of each database's
# PostgreSQL backends, each database's sessions opened and abandoned
# (a pool replacing connections shows here), and the statements that cost
# most (calls, total and mean time, per request). Loopback only, bounded in
# time; stops what it started.
#
#   bench/pgprofile.sh [scenario: invest|get_offering|list_offerings|users_me] [seconds, default 15]
#   env: SAFRA_BIN (skip the build), CONC (64), THREADS (2), TOP (12)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
SCENARIO="${1:-invest}"
DUR="${2:-15}"
CONC="${CONC:-64}"
THREADS="${THREADS:-2}"
TOP="${TOP:-12}"
HERE="$ROOT/bench/peer"
URL=http://127.0.0.1:8080
[ -f "$HERE/$SCENARIO.lua" ] || { echo "no scenario $SCENARIO" >&2; exit 2; }
command -v wrk >/dev/null || apt_install wrk

if [ -z "${SAFRA_BIN:-}" ]; then
  cargo build --release --locked -p safra-cli >&2
  SAFRA_BIN=$(built_binary release)
fi
HOME_DIR=$(mktemp -d /var/tmp/safra-pgprofile.XXXXXX)
chmod 755 "$HOME_DIR"
OUT="$HOME_DIR/out"
mkdir -p "$OUT"
PG_PORT="${SAFRA_PG_PORT:-5433}"
UP_PID=""
start_up() {
  (cd "$OUT" && exec env -u DATABASE_URL SAFRA_HOME="$HOME_DIR" SAFRA_RATE_LIMIT_RPS=0 \
    SAFRA_PG_PORT="$PG_PORT" SAFRA_ADMIN_PASSWORD=profile-admin-password SAFRA_LOG_FORMAT=json \
    "$SAFRA_BIN" up) >"$OUT/safra.log" 2>&1 &
  UP_PID=$!
  for _ in $(seq 1 600); do
    grep -q "^safra is up" "$OUT/safra.log" && return 0
    kill -0 "$UP_PID" 2>/dev/null || { tail -5 "$OUT/safra.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "safra did not come up" >&2
  exit 1
}
stop_up() {
  if [ -n "$UP_PID" ] && kill -0 "$UP_PID" 2>/dev/null; then
    kill -TERM "$UP_PID"
    wait "$UP_PID" 2>/dev/null || true
  fi
  UP_PID=""
}
cleanup() {
  stop_up
  local link
  link=$(readlink "$HOME_DIR/pg" 2>/dev/null || true)
  [ -n "$link" ] && rm -rf "$link"
  rm -rf "$HOME_DIR"
}
trap cleanup EXIT

# The first start makes the cluster; the second loads pg_stat_statements.
start_up
stop_up
cat >>"$HOME_DIR/pg/data/postgresql.conf" <<'CONF'
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
track_functions = all
CONF
start_up
PSQL=(psql -X -qAt -h 127.0.0.1 -p "$PG_PORT" -U postgres)
DATABASES=$("${PSQL[@]}" -d postgres -c "SELECT datname FROM pg_database WHERE datname LIKE 'safra%' ORDER BY 1")
for db in $DATABASES; do "${PSQL[@]}" -d "$db" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"; done

python3 "$HERE/seed.py" --side safra --base "$URL" --state "$OUT/state.json" --lua "$OUT/data.lua" >&2
export PEER_BENCH_LUA="$HERE" PEER_BENCH_DATA="$OUT/data.lua"
PEER_BENCH_RUN="warm-$(date +%s%N)" wrk -t"$THREADS" -c"$CONC" -d3s -s "$HERE/$SCENARIO.lua" "$URL" >/dev/null

PG_PID=$(head -n 1 "$HOME_DIR/pg/data/postmaster.pid")
# CPU ticks of every Safra process (its PostgreSQL excluded), one JSON object.
safra_cpu() {
  python3 - "$HERE" "$UP_PID" "$PG_PID" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[1])
import procstat
up, pg = int(sys.argv[2]), int(sys.argv[3])
ppid = procstat.parents()
out = {}
for pid in procstat.tree(up, {pg}, ppid):
    fields = procstat.stat_fields(pid)
    if fields:
        out[str(pid)] = [procstat.process_name(pid), int(fields[11]) + int(fields[12])]
pgticks = procstat.cpu_seconds(pg, procstat.tree(pg, set(), ppid)) * procstat.TICKS
print(json.dumps({"processes": out, "postgres": pgticks, "tick": procstat.TICKS}))
PY
}
# Each backend's CPU by database, live ones from /proc (backends that end
# during the window are counted by the sessions figures instead).
backend_cpu() {
  "${PSQL[@]}" -d postgres -c "SELECT pid, coalesce(datname, '(background)') FROM pg_stat_activity WHERE pid <> pg_backend_pid()" |
    while IFS='|' read -r pid db; do
      if [ -r "/proc/$pid/stat" ]; then
        awk -v db="$db" '{ print db, $14 + $15 }' "/proc/$pid/stat"
      fi
    done
}
sessions() {
  "${PSQL[@]}" -d postgres -c "SELECT datname, sessions, sessions_abandoned FROM pg_stat_database WHERE datname LIKE 'safra%' ORDER BY 1"
}
for db in $DATABASES; do "${PSQL[@]}" -d "$db" -c "SELECT pg_stat_statements_reset()" >/dev/null; done
sessions >"$OUT/sessions.before"
safra_cpu >"$OUT/cpu.before"
backend_cpu >"$OUT/backends.before"
PEER_BENCH_RUN="run-$(date +%s%N)" wrk -t"$THREADS" -c"$CONC" -d"${DUR}s" -s "$HERE/$SCENARIO.lua" "$URL" >"$OUT/wrk.txt"
backend_cpu >"$OUT/backends.after"
safra_cpu >"$OUT/cpu.after"
sessions >"$OUT/sessions.after"
REQUESTS=$(sed -n 's/^PEER_BENCH_RESULT //p' "$OUT/wrk.txt" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["requests"] - r["errors"]["status"])')

echo "## $SCENARIO: where the time goes ($(date -u +%Y-%m-%dT%H:%M:%SZ), ${DUR} s, wrk -t$THREADS -c$CONC)"
echo
echo "Successful requests: $REQUESTS ($(grep 'Requests/sec' "$OUT/wrk.txt" | tr -s ' ')); binary $("$SAFRA_BIN" --version)"
echo
python3 - "$OUT" "$REQUESTS" <<'PY'
import collections, json, sys
out, requests = sys.argv[1], max(int(sys.argv[2]), 1)
before, after = json.load(open(f"{out}/cpu.before")), json.load(open(f"{out}/cpu.after"))
tick = after["tick"]
def ms(ticks):
    return f"{ticks / tick * 1000 / requests:.3f}"
print("| process | CPU ms per request |")
print("|---|---:|")
total = 0
for pid, (name, ticks) in sorted(after["processes"].items(), key=lambda item: item[1][0]):
    spent = ticks - before["processes"].get(pid, [name, 0])[1]
    total += spent
    print(f"| {name} | {ms(spent)} |")
def backends(path):
    sums = collections.Counter()
    for line in open(path):
        db, ticks = line.rsplit(" ", 1)
        sums[db] += int(ticks)
    return sums
bb, ba = backends(f"{out}/backends.before"), backends(f"{out}/backends.after")
for db in sorted(ba):
    print(f"| postgres backends of {db} (those alive at both ends) | {ms(ba[db] - bb.get(db, 0))} |")
pg = after["postgres"] - before["postgres"]
print(f"| **postgres, all** (postmaster, backends, background; exited ones included) | **{ms(pg)}** |")
print(f"| **Safra processes, all** | **{ms(total)}** |")
print(f"| **total** | **{ms(total + pg)}** |")
PY
echo
echo "Sessions per database (opened, abandoned), before -> after the window:"
echo
paste -d'|' "$OUT/sessions.before" "$OUT/sessions.after" | awk -F'|' '{ printf "- %s: sessions %s -> %s, abandoned %s -> %s\n", $1, $2, $5, $3, $6 }'
echo
echo "Top statements by total time, per database:"
for db in $DATABASES; do
  echo
  echo "### $db"
  echo
  echo "| calls per request | mean ms | total ms | statement |"
  echo "|---:|---:|---:|---|"
  "${PSQL[@]}" -d "$db" -F $'\t' -c "SELECT calls, round(mean_exec_time::numeric, 3), round(total_exec_time::numeric, 1), regexp_replace(left(query, 110), '\s+', ' ', 'g') FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY total_exec_time DESC LIMIT $TOP" |
    while IFS=$'\t' read -r calls mean total query; do
      printf '| %s | %s | %s | `%s` |\n' "$(python3 -c "print(f'{$calls / max($REQUESTS, 1):.2f}')")" "$mean" "$total" "${query//|/\\|}"
    done
done
