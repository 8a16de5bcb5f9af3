# Shared by scripts/up and scripts/test: install what a fresh Debian machine
# lacks, start what is not running, and time each phase. Sourced, not run.

# The target directory cargo builds into: CARGO_TARGET_DIR when set
# (relative to the repository root, as cargo reads it there), else target/.
target_dir() {
  local dir="${CARGO_TARGET_DIR:-target}"
  case "$dir" in
    /*) echo "$dir" ;;
    *) echo "$PWD/$dir" ;;
  esac
}

# The path of binary $2 (default safra) built with profile $1 (debug or
# release) in the target directory in use. Run from the repository root.
built_binary() {
  echo "$(target_dir)/${1:?profile}/${2:-safra}"
}

# Runs a command as root (directly when we are root, else through sudo).
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs Debian packages that are missing; refreshes the package lists once
# if the first attempt cannot find them.
apt_install() {
  local missing=()
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
    || { as_root apt-get update -q >/dev/null && as_root apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
}

# The folder holding initdb and pg_ctl, or nothing.
pg_bindir() {
  local dir
  dir=$(pg_config --bindir 2>/dev/null || true)
  if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then echo "$dir"; return; fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

# PostgreSQL server binaries and the psql client.
ensure_postgres_packages() {
  if [ -z "$(pg_bindir)" ] || ! command -v psql >/dev/null; then
    apt_install postgresql postgresql-client
  fi
}

# Whether `$1` (a URL) accepts us.
postgres_answers() {
  psql "$1" -qAtc 'select 1' >/dev/null 2>&1
}

# Exports DATABASE_URL for the tests: the one given, else the machine's
# server on 127.0.0.1:5432 (started if it is installed but stopped), else a
# private trust-auth cluster in target/test-pg started for the tests.
ensure_test_database_server() {
  if [ -n "${DATABASE_URL:-}" ]; then
    postgres_answers "$DATABASE_URL" || { echo "DATABASE_URL does not answer: $DATABASE_URL" >&2; return 1; }
    return 0
  fi
  local system_url="postgres://postgres@127.0.0.1:5432/postgres"
  if ! postgres_answers "$system_url" && command -v pg_ctlcluster >/dev/null; then
    for version in $(ls /etc/postgresql 2>/dev/null); do
      as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
    done
  fi
  if postgres_answers "$system_url"; then
    export DATABASE_URL="$system_url"
    return 0
  fi
  # No usable server (absent, or not trust-authenticated): a private cluster.
  local root="$PWD/target/test-pg" port="${SAFRA_TEST_PG_PORT:-5439}" bindir
  bindir=$(pg_bindir)
  local run=()
  if [ "$(id -u)" = 0 ]; then run=(runuser -u postgres --); fi
  mkdir -p "$root"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$root"
  if [ ! -f "$root/data/PG_VERSION" ]; then
    "${run[@]}" "$bindir/initdb" -D "$root/data" -U postgres --auth=trust --encoding=UTF8 --locale=C >/dev/null
  fi
  if ! "${run[@]}" "$bindir/pg_ctl" -D "$root/data" status >/dev/null 2>&1; then
    "${run[@]}" "$bindir/pg_ctl" -D "$root/data" -w -l "$root/postgres.log" \
      -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='' -c max_connections=200" start >/dev/null
  fi
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  postgres_answers "$DATABASE_URL"
}

# RabbitMQ installed and answering on 127.0.0.1:5672.
ensure_rabbitmq() {
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  if ! as_root rabbitmqctl -q status >/dev/null 2>&1; then
    as_root rabbitmq-server -detached >/dev/null 2>&1 || true
    as_root timeout 120 rabbitmqctl -q await_startup >/dev/null
  fi
}

# npm packages of the tools (buf), installed from the lock file when missing.
ensure_tools() {
  if [ ! -x tools/node_modules/.bin/buf ]; then
    (cd tools && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

# The console (gateway/console): npm packages from its lock file when
# missing, then its build (generated clients, type check, bundle) into
# gateway/console/dist, which the gateway embeds when it is compiled.
ensure_console() {
  if [ ! -x gateway/console/node_modules/.bin/esbuild ]; then
    (cd gateway/console && npm ci --no-audit --no-fund --loglevel=error)
  fi
  (cd gateway/console && npm run --silent build >/dev/null)
}

# Debian's Chromium, for the browser test of the console.
ensure_chromium() {
  command -v chromium >/dev/null || apt_install chromium
}

# Python packages of the tests (tools/requirements.txt), installed when one
# is missing. Debian's own Python refuses pip without the override.
ensure_python_tools() {
  if ! python3 -c "import openapi_spec_validator, grpc, grpc_tools" 2>/dev/null \
    || ! command -v grpcurl >/dev/null || ! command -v schemathesis >/dev/null; then
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --disable-pip-version-check \
      -r tools/requirements.txt
  fi
}

# Runs a cargo build command that must find nothing left to do: a second
# build of an unchanged tree recompiling anything means a build script
# names a path that does not exist (cargo then reruns it every time).
assert_fresh_build() {
  local output
  output=$("$@" 2>&1) || { echo "$output" >&2; return 1; }
  if grep -E '^\s+Compiling ' <<<"$output" >&2; then
    echo "an unchanged tree was rebuilt (the crates above): see their build.rs rerun-if-changed paths" >&2
    return 1
  fi
}

# mdBook, for the book in docs/book (built from crates.io once; only the
# search feature, which the book uses).
ensure_mdbook() {
  command -v mdbook >/dev/null || [ -x "$HOME/.cargo/bin/mdbook" ] \
    || cargo install mdbook --locked --version "^0.4" --no-default-features --features search
  export PATH="$HOME/.cargo/bin:$PATH"
}

# The book: the API reference generated from the contracts by the built
# binary, the site built by mdBook into target/book, and every link in it
# checked (the checker first shown to catch a broken one).
build_book() {
  local safra="$1" broken
  "$safra" docs reference > docs/book/src/reference/api.md
  "$safra" docs openapi > docs/book/src/reference/openapi.json
  mdbook build docs/book >/dev/null
  broken=$(mktemp -d)
  printf '<a href="missing.html">x</a><a href="#nowhere">y</a>' > "$broken/index.html"
  if python3 tools/check_links.py "$broken" 2>/dev/null; then
    echo "the link checker passed a broken site" >&2
    rm -rf "$broken"
    return 1
  fi
  rm -rf "$broken"
  python3 tools/check_links.py target/book
}

# Prints how long the previous phase took, then names the next.
PHASE_NAME=""
PHASE_START=$(date +%s)
phase() {
  local now; now=$(date +%s)
  if [ -n "$PHASE_NAME" ]; then
    echo "== $PHASE_NAME: $((now - PHASE_START))s"
  fi
  PHASE_NAME="${1:-}"
  PHASE_START=$now
  if [ -n "$PHASE_NAME" ]; then echo "== $PHASE_NAME"; fi
}
