#!/usr/bin/env bash
# Runs go test as `make test` does and shows what plain go test shows (build
# errors, failed tests' output, one result line per package, FAIL at the end
# when something failed), then one line counting the skipped tests and naming
# the tool that would run them, e.g.
#   skipped 31 tests: 24 without consul, 7 without fauxqs (scripts/tools.sh installs them)
# It runs go test -json through internal/tools/testsummary and exits with go
# test's status.
# Usage: scripts/gotest.sh [go test flags] [packages]   (GO picks the go command)
set -uo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
tmp=$(mktemp -d)
if ! "$GO" build -o "$tmp/testsummary" ./internal/tools/testsummary; then
  rm -rf "$tmp"
  echo "gotest: the test summary does not build; running plain go test" >&2
  exec "$GO" test "$@"
fi
trap 'rm -rf "$tmp"' EXIT
"$GO" test -json "$@" | "$tmp/testsummary"
status=("${PIPESTATUS[@]}")
if [ "${status[0]}" -ne 0 ]; then exit "${status[0]}"; fi
exit "${status[1]}"
