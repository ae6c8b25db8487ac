# Helpers shared by scripts/demo.sh and scripts/bench*.sh: start processes on free
# loopback ports, wait for them, and stop everything on exit (Ctrl-C included).
# Source it after setting RUN (the run's work directory) and ROOT.
# shellcheck shell=bash

export TFGATE_CACHE="${TFGATE_CACHE:-$HOME/.cache/tfgate}"
export PATH="$TFGATE_CACHE/bin:$PATH"
BIN="$ROOT/bin"
PIDS=()
PID_NAMES=()
mkdir -p "$RUN/logs"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
info() { printf '   %s\n' "$*"; }
die() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }
rel() { printf '%s' "${1#"$ROOT"/}"; }

# stop_all stops every process start() started, newest first: SIGTERM, up to 5 s,
# then SIGKILL.
stop_all() {
  local i pid
  [ ${#PIDS[@]} -gt 0 ] || return 0
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill "${PIDS[$i]}" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  PIDS=()
  PID_NAMES=()
}

# KEEP_STACK=1 (make up): a run that succeeds leaves everything running and writes
# "pid starttime name" lines to $KEEP_STATE/pids for scripts/down.sh; a failed one
# still stops everything.
KEEP_STACK=${KEEP_STACK:-0}
_on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$KEEP_STACK" = 1 ] && [ $rc -eq 0 ]; then
    local i
    mkdir -p "$KEEP_STATE"
    for i in "${!PIDS[@]}"; do
      printf '%s %s %s\n' "${PIDS[$i]}" "$(awk '{ sub(/^.*\) /, ""); print $20 }' "/proc/${PIDS[$i]}/stat")" "${PID_NAMES[$i]}"
    done >"$KEEP_STATE/pids"
    printf '%s\n' "$RUN" >"$KEEP_STATE/run"
    exit 0
  fi
  stop_all
  if [ $rc -ne 0 ]; then
    printf '\n%s: failed (exit %d); logs are in %s/logs\n' "$(basename "$0")" "$rc" "$(rel "$RUN")" >&2
  fi
  exit $rc
}
trap _on_exit EXIT
trap 'exit 130' INT TERM

# stop NAME: stops one process started with start().
stop() {
  local i
  for i in "${!PID_NAMES[@]}"; do
    if [ "${PID_NAMES[$i]}" = "$1" ]; then
      local pid=${PIDS[$i]}
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      unset 'PIDS[i]' 'PID_NAMES[i]'
      PIDS=("${PIDS[@]}")
      PID_NAMES=("${PID_NAMES[@]}")
      return 0
    fi
  done
}

# free_port prints a loopback TCP port nothing listens on and not handed out before.
# It draws below the kernel's ephemeral range: a port from inside it can be taken by a
# client connection's local port between the probe and the server's bind.
USED_PORTS=" "
EPHEMERAL_LOW=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[ "$EPHEMERAL_LOW" -gt 12000 ] 2>/dev/null || EPHEMERAL_LOW=32768
free_port() {
  local p
  for _ in $(seq 500); do
    p=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
    case "$USED_PORTS" in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      USED_PORTS+="$p "
      echo "$p"
      return 0
    fi
  done
  die "no free port found"
}

# start NAME CMD...: runs CMD in the background, output in $RUN/logs/NAME.log.
# The pid is in $LAST_PID.
start() {
  local name=$1
  shift
  if [ "$KEEP_STACK" = 1 ]; then
    # Its own session, so nothing sent to the terminal's process group (a later
    # Ctrl-C) reaches the stack make up leaves behind.
    setsid "$@" >"$RUN/logs/$name.log" 2>&1 </dev/null &
  else
    "$@" >"$RUN/logs/$name.log" 2>&1 &
  fi
  LAST_PID=$!
  PIDS+=("$LAST_PID")
  PID_NAMES+=("$name")
  info "started $name (pid $LAST_PID)"
}

# wait_for DESC SECONDS CMD...: retries CMD until it succeeds.
wait_for() {
  local desc=$1 secs=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "timed out after ${secs}s waiting for $desc"
    sleep 0.2
  done
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# cpu_ticks PID: user+system CPU ticks of PID so far (from /proc/PID/stat).
cpu_ticks() {
  local stat
  stat=$(cat "/proc/$1/stat")
  stat=${stat##*) }
  # After the comm field: state(3) ... utime is field 14, stime 15 overall, i.e.
  # the 12th and 13th after "pid (comm) ".
  awk '{print $12 + $13}' <<<"$stat"
}
CLK_TCK=$(getconf CLK_TCK)

# build_cmds NAME...: builds ./cmd/NAME for each that exists into bin/.
build_cmds() {
  mkdir -p "$BIN"
  local c cmds=()
  for c in "$@"; do [ -d "$ROOT/cmd/$c" ] && cmds+=("./cmd/$c"); done
  [ ${#cmds[@]} -gt 0 ] || return 0
  (cd "$ROOT" && go build -o "$BIN/" "${cmds[@]}")
}

# have_cmd NAME: cmd/NAME exists and was built.
have_cmd() { [ -d "$ROOT/cmd/$1" ] && [ -x "$BIN/$1" ]; }
