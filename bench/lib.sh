# Shared by the bench/*.sh scripts: builds the release driver, makes the
# throw-away folder its servers share, and waits for a server to listen.
# Sourced, not run; sets `bin` and `dir`, and kills the servers on exit
# (after running `bench_cleanup` if the script defines one).

# shellcheck source=scripts/lib.sh
. scripts/lib.sh
cargo build --release --locked -p safra-bench >&2
bin=$(built_binary release safra-bench)
dir=$(mktemp -d)
bench_exit() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  if declare -F bench_cleanup >/dev/null; then bench_cleanup; fi
  rm -rf "$dir"
}
trap bench_exit EXIT

# Waits up to 10 s for something to listen on $1 (host:port).
wait_for() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2
  return 1
}

# The resident memory of process $1, in MiB.
rss_mib() {
  echo "$(($(awk '/VmRSS/ {print $2}' "/proc/$1/status") / 1024)) MiB"
}
