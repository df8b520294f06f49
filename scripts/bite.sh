#!/usr/bin/env bash
# Shows that a test bites: applies a patch that breaks a behaviour on a throwaway branch, runs the
# tests that guard it, reports, and drops the branch. The working tree must be clean.
#
#   scripts/bite.sh NAME BREAK.patch 'NEXTEST FILTER ARGS'
#   scripts/bite.sh sync-normal /tmp/sync.patch '--test api durability::'
#
# Exit status 0 when the tests failed (the break was caught), 1 when they passed.
set -uo pipefail
cd "$(dirname "$0")/.."
name=$1 patch=$2 filter=$3
[ -z "$(git status --porcelain)" ] || { echo "the working tree is not clean"; exit 2; }
back=$(git rev-parse --abbrev-ref HEAD)
git checkout -q -b "bite/$name"
git apply "$patch" && git commit -qam "bite: $name (a deliberate break)"
# shellcheck disable=SC2086
cargo nextest run --no-fail-fast $filter 2>&1 | tee "target/bite-$name.log" | grep -E '^\s+(FAIL|PASS|TIMEOUT)|panicked at|^\s+Summary'
grep -q ' FAIL \| TIMEOUT ' "target/bite-$name.log"; caught=$?
git checkout -q "$back" && git branch -q -D "bite/$name"
if [ $caught = 0 ]; then echo "bite/$name: caught (log: target/bite-$name.log)"; else echo "bite/$name: NOT caught"; exit 1; fi
