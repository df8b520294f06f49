#!/usr/bin/env bash
# Runs the whole test suite, nothing skipped. Provisions what the tests need first, so that it
# passes on a fresh Debian machine as on a developer's (and CI runs exactly this script).
#
#   scripts/test.sh            # format check, lints, every test
#
# Needs: a Rust toolchain (cargo) and python3 (the OpenAPI check). The protos compile with protox,
# so no protoc is needed. What else the tests use is provisioned below, once, under target/.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

# Installs Debian packages (as root; refreshing the package lists once if the first try fails).
apt_install() {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null ||
            { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
              DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
    else
        echo "needed: apt-get install $* (as root)"; exit 1
    fi
}

command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)"; exit 1; }
# Every test runs under cargo-nextest, which gives each its own deadline (.config/nextest.toml).
if ! cargo nextest --version >/dev/null 2>&1; then
    say "installing cargo-nextest (crates.io)"
    cargo install --locked cargo-nextest
fi

# The OpenAPI test validates /api-docs and real answers with openapi-spec-validator and jsonschema;
# the metrics test parses /metrics with the Prometheus project's own OpenMetrics parser.
provision_python() {
    local venv=target/test-venv
    if ! "$venv/bin/python" -c 'import openapi_spec_validator, jsonschema, referencing, prometheus_client' 2>/dev/null; then
        say "provisioning a Python environment for the OpenAPI and metrics checks ($venv)"
        command -v python3 >/dev/null || { echo "python3 is required"; exit 1; }
        mkdir -p target
        # Debian's python3 keeps venv in a separate package.
        [ -x "$venv/bin/pip" ] || python3 -m venv "$venv" || { apt_install python3-venv && python3 -m venv "$venv"; }
        "$venv/bin/pip" install -q --disable-pip-version-check 'openapi-spec-validator>=0.7,<0.8' 'prometheus-client>=0.20,<1'
    fi
    export JOBTRACK_TEST_PYTHON="$PWD/$venv/bin/python"
}
provision_python

# The suite runs a second time on Postgres, and the replica tests need it: a throwaway server
# (Debian's packages; initdb + pg_ctl on a free loopback port), removed when this script ends.
provision_postgres() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$bin" ]; then
        say "installing PostgreSQL (Debian packages)"
        apt_install postgresql
        bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    fi
    PG_DIR=$(mktemp -d /tmp/jobtrack-test-pg.XXXXXX)
    PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    # initdb refuses to run as root: the cluster belongs to the postgres user then.
    as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
    if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$PG_DIR"; fi
    as_pg "$bin/initdb" -D "$PG_DIR/data" -U postgres -A trust -E UTF8 --no-locale >/dev/null
    as_pg "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w -o \
        "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR -c max_connections=400 -c fsync=on" start >/dev/null
    trap 'as_pg "'"$bin"'/pg_ctl" -D "'"$PG_DIR"'/data" -m immediate -w stop >/dev/null 2>&1 || true; rm -rf "'"$PG_DIR"'"' EXIT
    export JOBTRACK_TEST_PG_BIN="$bin"
    PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
    say "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT"
}
provision_postgres

# The dashboard's tests: npm packages (web/package-lock.json) and Debian's Chromium.
provision_web() {
    command -v npm >/dev/null || { echo "Node.js 20+ and npm are required for the dashboard tests"; exit 1; }
    if [ ! -x /usr/bin/chromium ]; then
        say "installing Chromium (Debian's package) for the browser tests"
        apt_install chromium
    fi
    if [ ! -d web/node_modules ] || [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; then
        say "installing the dashboard's npm packages (npm ci)"
        (cd web && npm ci --no-audit --no-fund --loglevel=error)
    fi
}
provision_web

# The durability test counts the server's fsyncs with strace (Debian's package).
command -v strace >/dev/null || { say "installing strace (Debian's package)"; apt_install strace; }
# The Server-Sent Events tests follow a watch with curl, as a user does.
command -v curl >/dev/null || { say "installing curl (Debian's package)"; apt_install curl; }
# ...and through nginx as an HTTP/1.x reverse proxy with its default buffering.
[ -x /usr/sbin/nginx ] || { say "installing nginx-light (Debian's package)"; apt_install nginx-light; }
# The live terminal view of `jobtrack watch` is driven in a real pseudo-terminal by tmux.
command -v tmux >/dev/null || { say "installing tmux (Debian's package)"; apt_install tmux; }

say "format"
cargo fmt --all -- --check

say "lints"
cargo clippy --all-targets --locked -- -D warnings

say "layout: files of at most 600 lines under src/, no circle between modules"
python3 scripts/check_layout.py

# The replica tests need Postgres in every case; they run once, in the Postgres pass.
say "tests on SQLite (unit and integration: real servers on port 0, real gRPC and HTTP clients)"
cargo nextest run --all-targets --locked --no-tests=fail -E 'not test(/^replicas::/)'

say "the same integration tests on PostgreSQL, and the replica tests"
JOBTRACK_TEST_POSTGRES="$PG_URL" cargo nextest run --locked --test api

say "dashboard: every RPC over gRPC-web, the committed build is fresh, Chromium drives the page"
(cd web && JOBTRACK_BIN=../target/debug/jobtrack node tests/run.mjs)

say "all tests passed"
