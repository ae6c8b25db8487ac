#!/usr/bin/env bash
# Runs the README's "By hand" quick start exactly as written (the block between the
# quickstart markers) and checks what it prints, so the README cannot rot: both versions
# routable, an experiment arm named, an explicit version and a label each served by the
# version they name. CI runs it after `make test`. Uses ports 8500, 9500 and 9501.
set -euo pipefail
cd "$(dirname "$0")/.."

block=$(mktemp)
out=$(mktemp)
trap 'rm -f "$block" "$out"' EXIT
awk '/<!-- quickstart:begin -->/{on=1; next} /<!-- quickstart:end -->/{on=0} on && !/^```/' README.md >"$block"
[ -s "$block" ] || { echo "quickstart: no block between the quickstart markers in README.md" >&2; exit 1; }

for port in 8500 9500 9501; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "quickstart: port $port is in use; the README's commands need it (make down?)" >&2
    exit 1
  fi
done

# Its own process group, so whatever it started is stopped even when a step fails.
set +e
setsid bash -euo pipefail "$block" >"$out" 2>&1 &
pid=$!
( sleep 600; kill -TERM -- "-$pid" 2>/dev/null ) &
watchdog=$!
wait "$pid"
rc=$?
kill "$watchdog" 2>/dev/null
kill -TERM -- "-$pid" 2>/dev/null
set -e
cat "$out"
fail() { echo "quickstart: FAIL: $*" >&2; exit 1; }
[ "$rc" -eq 0 ] || fail "the README's commands exited $rc"

# The three Predict responses, in order.
mapfile -t versions < <(grep -o '"version": "[0-9]*"' "$out" | grep -o '[0-9]\+')
[ "${#versions[@]}" -ge 3 ] || fail "want three Predict responses naming their version, got ${#versions[@]}"
grep -q '"arm": "\(control\|treatment\)"' "$out" || fail "the default-route call names no experiment arm"
[ "${versions[1]}" = 2 ] || fail "version 2 was asked for, version ${versions[1]} answered"
[ "${versions[2]}" = 1 ] || fail "label stable (version 1) was asked for, version ${versions[2]} answered"
grep -qi 'not routable\|0 of 2\|unroutable' "$out" && fail "a version is not routable"
echo "quickstart: ok: the README's by-hand commands serve both versions, the label and the experiment"
