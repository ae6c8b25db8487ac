#!/usr/bin/env bash
# Installs the pinned tools tfgate's build, tests and demo need, cached outside the
# checkout so only the first run pays. Usage: scripts/tools.sh [tool...]
# Tools: shell, protoc, protoc-gen, buf, consul, fauxqs, chromium, prometheus, ghz, grpcurl,
# nginx. Default: all of the first eight (what `make test` and `make demo` need). Prints nothing
# for tools already cached.
set -euo pipefail

CACHE="${TFGATE_CACHE:-$HOME/.cache/tfgate}"
BIN="$CACHE/bin"
mkdir -p "$BIN" "$CACHE/logs"

PROTOC_GEN_GO_V=v1.36.12
PROTOC_GEN_GO_GRPC_V=v1.6.2
BUF_V=v1.75.0
CONSUL_V=v1.22.7
CONSUL_API_V=v1.34.1
FAUXQS_V=1.9.2
GHZ_V=v0.93.0
GRPCURL_V=v1.9.4

log() { printf 'tools: %s\n' "$*" >&2; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

goinstall() { # name module@version
  local name=$1 mod=$2 stamp="$BIN/.$1.version"
  if [ -x "$BIN/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$mod" ]; then return 0; fi
  log "go install $mod"
  GOBIN="$BIN" GOFLAGS=-mod=mod go install "$mod"
  echo "$mod" >"$stamp"
}

# jq and curl: the demo and bench scripts read reports and scrape /metrics with them;
# column (bsdextrautils) prints the bench table; GNU time measures peak RSS.
tool_shell() { apt_install jq curl bsdextrautils time; }

tool_protoc() { apt_install protobuf-compiler libprotobuf-dev; }

tool_protoc-gen() {
  goinstall protoc-gen-go "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_V"
  goinstall protoc-gen-go-grpc "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_V"
}

tool_buf() { goinstall buf "github.com/bufbuild/buf/cmd/buf@$BUF_V"; }

tool_ghz() { goinstall ghz "github.com/bojand/ghz/cmd/ghz@$GHZ_V"; }

tool_grpcurl() { goinstall grpcurl "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_V"; }

tool_nginx() { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || apt_install nginx-light; }

# Debian's chromium package, pinned by package (bookworm's chromium, not a version: the
# security archive replaces each version within weeks, so an exact pin would stop
# installing). The gateway's status page test loads the page in it headless and takes
# screenshots (gateway/statuspage_chromium_test.go; without it the test skips naming
# chromium, and fails in CI).
tool_chromium() { command -v chromium >/dev/null 2>&1 || apt_install chromium; }

# Debian's prometheus (with promtool), pinned to upstream 2.42.0: the demo scrapes the
# stack with it and `make rules` checks and unit-tests deploy/prometheus/ with promtool.
# The Debian revision is left to the archive (bookworm's security updates replace it).
# Without recommends: node-exporter and its timers are not wanted here.
PROMETHEUS_V=2.42.0
tool_prometheus() {
  if command -v promtool >/dev/null 2>&1 && promtool --version 2>/dev/null | grep -q "version $PROMETHEUS_V"; then return 0; fi
  log "apt-get install prometheus=$PROMETHEUS_V*"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "prometheus=$PROMETHEUS_V*" >/dev/null
  promtool --version 2>/dev/null | grep -q "version $PROMETHEUS_V" || { log "prometheus $PROMETHEUS_V not installed"; return 1; }
}

# Consul cannot be `go install`ed (replace directives); build it from the module source.
tool_consul() {
  local stamp="$BIN/.consul.version"
  if [ -x "$BIN/consul" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$CONSUL_V" ]; then return 0; fi
  log "building consul $CONSUL_V from source (about 8 minutes, once)"
  local work src
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  GOFLAGS=-mod=mod go mod download -json "github.com/hashicorp/consul@$CONSUL_V" >/dev/null
  src="$(go env GOMODCACHE)/github.com/hashicorp/consul@$CONSUL_V"
  cp -r "$src" "$work/consul-src" && chmod -R u+w "$work/consul-src"
  (
    cd "$work/consul-src"
    go mod edit \
      -dropreplace=github.com/hashicorp/consul/api \
      -dropreplace=github.com/hashicorp/consul/envoyextensions \
      -dropreplace=github.com/hashicorp/consul/proto-public \
      -dropreplace=github.com/hashicorp/consul/sdk \
      -dropreplace=github.com/hashicorp/consul/troubleshoot \
      -require="github.com/hashicorp/consul/api@$CONSUL_API_V"
    GOFLAGS=-mod=mod GOWORK=off go build -trimpath -ldflags "-s -w" -o "$BIN/consul.new" .
  )
  mv "$BIN/consul.new" "$BIN/consul"
  echo "$CONSUL_V" >"$stamp"
}

tool_fauxqs() {
  local dir="$CACHE/fauxqs" stamp="$CACHE/fauxqs/.version"
  if [ -f "$dir/node_modules/fauxqs/dist/cli.js" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$FAUXQS_V" ]; then return 0; fi
  command -v node >/dev/null || apt_install nodejs npm
  log "npm install fauxqs@$FAUXQS_V"
  mkdir -p "$dir"
  npm install --silent --no-audit --no-fund --prefix "$dir" "fauxqs@$FAUXQS_V" >/dev/null
  echo "$FAUXQS_V" >"$stamp"
}

tools=("$@")
[ ${#tools[@]} -eq 0 ] && tools=(shell protoc protoc-gen buf consul fauxqs chromium prometheus)
for t in "${tools[@]}"; do
  if ! declare -F "tool_$t" >/dev/null; then log "unknown tool $t"; exit 2; fi
  "tool_$t"
done
