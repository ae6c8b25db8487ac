#!/usr/bin/env bash
# make down: stops the stack `make up` left running (the processes named in
# .demo/up/pids, newest first: SIGTERM, up to 5 s, then SIGKILL). Only those pids, and
# only while each is still the process up started (same start time), are signalled.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE="$ROOT/.demo/up"
if [ ! -f "$STATE/pids" ]; then
  echo "make down: no stack is up (no .demo/up/pids)"
  exit 0
fi
starttime() { awk '{ sub(/^.*\) /, ""); print $20 }' "/proc/$1/stat" 2>/dev/null; }
mapfile -t lines < <(tac "$STATE/pids")
stopped=()
for l in "${lines[@]}"; do
  read -r pid st name <<<"$l"
  if [ "$(starttime "$pid")" = "$st" ]; then
    kill "$pid" 2>/dev/null || true
    stopped+=("$pid:$st:$name")
  fi
done
for e in "${stopped[@]}"; do
  IFS=: read -r pid st name <<<"$e"
  for _ in $(seq 50); do [ "$(starttime "$pid")" = "$st" ] || break; sleep 0.1; done
  if [ "$(starttime "$pid")" = "$st" ]; then kill -9 "$pid" 2>/dev/null || true; echo "   $name (pid $pid) killed after 5 s"; fi
done
echo "make down: stopped ${#stopped[@]} processes; logs stay in $(cat "$STATE/run" 2>/dev/null || echo .demo)/logs"
rm -rf "$STATE"
