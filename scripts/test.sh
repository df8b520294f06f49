#!/usr/bin/env bash
# Runs the whole test suite, nothing skipped. Provisions what the tests need first, so that it
# passes on a fresh Debian machine as on a developer's (and CI runs exactly this script).
#
#   scripts/test.sh            # format check, lints, every test
#
# Needs: a Rust toolchain (cargo). The protos compile with protox, so no protoc is needed.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)"; exit 1; }

say "format"
cargo fmt --all -- --check

say "lints"
cargo clippy --all-targets --locked -- -D warnings

say "tests (unit and integration: real servers on port 0, real gRPC clients)"
cargo test --all-targets --locked -- --test-threads "${TEST_THREADS:-4}"

say "all tests passed"
