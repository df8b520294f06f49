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

command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)"; exit 1; }

# The OpenAPI test validates /api-docs and real answers with openapi-spec-validator and jsonschema.
provision_python() {
    local venv=target/test-venv
    if ! "$venv/bin/python" -c 'import openapi_spec_validator, jsonschema, referencing' 2>/dev/null; then
        say "provisioning a Python environment for the OpenAPI check ($venv)"
        command -v python3 >/dev/null || { echo "python3 is required"; exit 1; }
        mkdir -p target
        python3 -m venv "$venv" || {
            # Debian's python3 keeps venv in a separate package.
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
                DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
                python3 -m venv "$venv"
            else
                echo "python3 -m venv failed: install python3-venv"; exit 1
            fi
        }
        "$venv/bin/pip" install -q --disable-pip-version-check 'openapi-spec-validator>=0.7,<0.8'
    fi
    export JOBTRACK_TEST_PYTHON="$PWD/$venv/bin/python"
}
provision_python

say "format"
cargo fmt --all -- --check

say "lints"
cargo clippy --all-targets --locked -- -D warnings

say "tests (unit and integration: real servers on port 0, real gRPC and HTTP clients)"
cargo test --all-targets --locked -- --test-threads "${TEST_THREADS:-4}"

say "all tests passed"
