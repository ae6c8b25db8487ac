#!/usr/bin/env bash
# make demo: the whole tfgate stack on loopback, with a report. Every run starts clean
# in a fresh directory under .demo/; Ctrl-C (or any failure) stops everything it started.
#
#   Consul dev agent, fauxqs (SQS), gofakes3 (S3), two servingsim hosts registered in
#   Consul (tags gpu and cpu, GPU-like and CPU-like compute costs) each with a modelsync
#   sidecar on its own model base path, a modelsync in gateway mode for the gateway's
#   preprocessing specs, and the gateway with a 90/10 experiment between versions 1
#   and 2. Versions 1 and 2 of a text classifier are published through S3 + SQS; when
#   both are routable a 20-second load test with sticky routing keys runs, the
#   experiment is shifted to 50/50 halfway by rewriting the routing config, and the
#   report shows both splits, latency, errors, and where the HTML report is.
#
# Then the fleet phase (scripts/demo-fleet.sh): per-customer models on a pool of hosts
# that holds a fraction of them, placed by the gateway (--placement); DEMO_FLEET=0 skips
# it, DEMO_FLEET_ONLY=1 runs it without the textclf gateway phases.
#
# Parts of the stack that are not built yet are reported and skipped: without the
# gateway the demo stops after predicting from both hosts directly; without modelsync
# the versions are placed into the hosts' base paths by atomic rename.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# DEMO_MODE=up (make up): start the stack, publish both versions, check the gateway
# serves them, print how to use it, and leave it running for make down.
DEMO_MODE=${DEMO_MODE:-demo}
KEEP_STATE="$ROOT/.demo/up"
if [ -f "$KEEP_STATE/pids" ]; then
  echo "demo.sh: a stack from make up is running ($(cat "$KEEP_STATE/run" 2>/dev/null)); run make down first" >&2
  exit 1
fi
[ "$DEMO_MODE" = up ] && KEEP_STACK=1
# Keep the two newest earlier runs (their logs and reports); a run never reuses them.
mkdir -p .demo
{ ls -1dt .demo/run-* 2>/dev/null || true; } | tail -n +3 | xargs -r rm -rf
RUN="$ROOT/.demo/run-$(date +%Y%m%d-%H%M%S)-$$"
# shellcheck source=scripts/lib-local-stack.sh
. "$ROOT/scripts/lib-local-stack.sh"

MODEL=textclf
PHASE_SECS=${DEMO_PHASE_SECS:-10}
RATE=${DEMO_RATE:-400}
WL_RAW="$ROOT/deploy/local/workload-direct.yaml"
WL_DEMO="$ROOT/deploy/local/workload-demo.yaml"
FAUXQS_CLI="$TFGATE_CACHE/fauxqs/node_modules/fauxqs/dist/cli.js"
UNAVAILABLE=()
DEMO_FAILED=0
T0=$SECONDS

# stage_modelsync and stage_gateway are defined in scripts/demo-stages.sh.
# shellcheck source=scripts/demo-stages.sh
. "$ROOT/scripts/demo-stages.sh"
# stage_experiment (mid-run weight shift, exposure-log splits, shadow agreement).
# shellcheck source=scripts/demo-experiments.sh
. "$ROOT/scripts/demo-experiments.sh"
# stage_fleet (per-customer models placed on a pool that holds a fraction of them).
# shellcheck source=scripts/demo-fleet.sh
. "$ROOT/scripts/demo-fleet.sh"

say "tfgate demo in $(rel "$RUN")"

# ------------------------------------------------------------------ tools and build
say "tools and build"
if ! command -v consul >/dev/null 2>&1 || [ ! -f "$FAUXQS_CLI" ]; then
  info "installing pinned tools (the Consul build takes several minutes, once)"
  scripts/tools.sh consul fauxqs || info "tool install failed; see above"
fi
HAVE_CONSUL=0 HAVE_FAUXQS=0
command -v consul >/dev/null 2>&1 && HAVE_CONSUL=1
[ -f "$FAUXQS_CLI" ] && command -v node >/dev/null 2>&1 && HAVE_FAUXQS=1
build_cmds servingsim loadtest gateway modelsync
go build -o "$BIN/s3server" ./internal/tools/s3server
HAVE_GATEWAY=0 HAVE_MODELSYNC=0
have_cmd gateway && HAVE_GATEWAY=1
have_cmd modelsync && HAVE_MODELSYNC=1
info "consul: $([ $HAVE_CONSUL = 1 ] && command -v consul || echo missing)"
info "fauxqs: $([ $HAVE_FAUXQS = 1 ] && echo "$FAUXQS_CLI" || echo missing)"
info "built: $(cd "$BIN" && ls | tr '\n' ' ')"
[ $HAVE_CONSUL = 1 ] || UNAVAILABLE+=("consul (scripts/tools.sh consul failed)")
[ $HAVE_FAUXQS = 1 ] || UNAVAILABLE+=("fauxqs (scripts/tools.sh fauxqs failed or node missing)")
[ $HAVE_GATEWAY = 1 ] || UNAVAILABLE+=("gateway (cmd/gateway not in this checkout)")
[ $HAVE_MODELSYNC = 1 ] || UNAVAILABLE+=("modelsync (cmd/modelsync not in this checkout)")

# ------------------------------------------------------------------ infrastructure
if [ $HAVE_CONSUL = 1 ]; then
  say "Consul dev agent"
  CONSUL_PORT=$(free_port)
  start consul consul agent -dev -bind 127.0.0.1 -client 127.0.0.1 -advertise 127.0.0.1 -node tfgate-demo \
    -http-port "$CONSUL_PORT" -dns-port -1 -grpc-port -1 -grpc-tls-port -1 \
    -serf-lan-port "$(free_port)" -serf-wan-port "$(free_port)" -server-port "$(free_port)" \
    -hcl 'disable_update_check = true' -data-dir "$RUN/consul"
  export CONSUL_HTTP_ADDR="127.0.0.1:$CONSUL_PORT"
  wait_for "Consul leader" 30 bash -c "curl -fsS http://$CONSUL_HTTP_ADDR/v1/status/leader | grep -q :"
  info "Consul at http://$CONSUL_HTTP_ADDR"
fi

S3_PORT=$(free_port)
BUCKET=models
say "S3 (gofakes3) and SQS (fauxqs)"
start s3 "$BIN/s3server" -addr "127.0.0.1:$S3_PORT" -bucket "$BUCKET,$FLEET_BUCKET"
wait_for "S3 server" 20 port_open "$S3_PORT"
info "S3 at http://127.0.0.1:$S3_PORT, bucket $BUCKET"
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_REGION=us-east-1
declare -A QUEUE_URL=() SYNC_ADMIN=()
if [ $HAVE_FAUXQS = 1 ]; then
  SQS_PORT=$(free_port)
  FAUXQS_PORT=$SQS_PORT start sqs node "$FAUXQS_CLI"
  wait_for "fauxqs" 30 port_open "$SQS_PORT"
  sqs() { # ACTION JSON
    curl -fsS -X POST "http://127.0.0.1:$SQS_PORT/" -H 'Content-Type: application/x-amz-json-1.0' \
      -H "X-Amz-Target: AmazonSQS.$1" -d "$2"
  }
  sns() { # ACTION FORM-FIELDS (SNS's query protocol, on fauxqs's SQS port)
    curl -fsS -X POST "http://127.0.0.1:$SQS_PORT/" --data "Action=$1&Version=2010-03-31&$2"
  }
  # The production topology: the bucket's notifications go to one SNS topic, and one
  # SQS queue per sidecar is subscribed to it (SNS -> SQS fan-out).
  TOPIC_ARN=$(sns CreateTopic "Name=models-events" | sed -n 's:.*<TopicArn>\(.*\)</TopicArn>.*:\1:p')
  [ -n "$TOPIC_ARN" ] || die "fauxqs CreateTopic returned no TopicArn"
  for q in host-gpu host-cpu gateway; do
    QUEUE_URL[$q]=$(sqs CreateQueue "{\"QueueName\":\"models-$q\"}" | jq -r .QueueUrl)
    arn=$(sqs GetQueueAttributes "{\"QueueUrl\":\"${QUEUE_URL[$q]}\",\"AttributeNames\":[\"QueueArn\"]}" | jq -r .Attributes.QueueArn)
    sns Subscribe "TopicArn=$TOPIC_ARN&Protocol=sqs&Endpoint=$arn" >/dev/null
  done
  info "SQS at http://127.0.0.1:$SQS_PORT, queues: ${QUEUE_URL[*]}"
  info "SNS topic $TOPIC_ARN, every queue subscribed"
fi

# ------------------------------------------------------------------ serving hosts
say "two servingsim hosts (TF Serving stand-ins): gpu (2 ms per call, 20 us per row, 2 at once) and cpu (0.5 ms per call, 300 us per row)"
declare -A HOST_PORT=() HOST_BASE=() HOST_REST=()
start_host() { # NAME TAG COST-FLAGS...
  local name=$1 tag=$2
  shift 2
  local port base rest
  port=$(free_port)
  rest=$(free_port)
  base="$RUN/$name/models"
  mkdir -p "$base/$MODEL"
  cat >"$RUN/$name/models.config" <<CFG
model_config_list {
  config {
    name: "$MODEL"
    base_path: "$base/$MODEL"
    model_platform: "tensorflow"
    model_version_policy { latest { num_versions: 2 } }
  }
}
CFG
  start "$name" "$BIN/servingsim" --port "$port" --model_config_file "$RUN/$name/models.config" \
    --file_system_poll_wait_seconds 1 --rest_api_port "$rest" "$@"
  HOST_PORT[$name]=$port
  HOST_REST[$name]=$rest
  HOST_BASE[$name]=$base
  wait_for "$name" 20 port_open "$port"
  if [ $HAVE_CONSUL = 1 ]; then
    curl -fsS -X PUT "http://$CONSUL_HTTP_ADDR/v1/agent/service/register" -d @- <<JSON
{"ID": "tfserving-$tag", "Name": "tfserving", "Tags": ["$tag"], "Address": "127.0.0.1", "Port": $port,
 "Check": {"GRPC": "127.0.0.1:$port", "Interval": "1s", "Timeout": "1s", "DeregisterCriticalServiceAfter": "1m"}}
JSON
    info "$name on 127.0.0.1:$port, registered in Consul as tfserving [$tag]"
  else
    info "$name on 127.0.0.1:$port"
  fi
}
start_host host-gpu gpu --sim_cost_per_call 2ms --sim_cost_per_row 20us --sim_model_max_concurrent 2
start_host host-cpu cpu --sim_cost_per_call 500us --sim_cost_per_row 300us

# ------------------------------------------------------------------ model versions
say "export versions 1 and 2 of $MODEL (a text classifier; different seeds, so different predictions)"
for v in 1 2; do
  "$BIN/servingsim" export --kind text-classifier --vocab-size 5000 --classes 8 --seed "$v" "$RUN/export/$MODEL/$v"
done
info "$(rel "$RUN")/export/$MODEL/{1,2}"
GW_SPECS="$RUN/gateway/specs"
mkdir -p "$GW_SPECS"

if [ $HAVE_MODELSYNC = 1 ] && [ $HAVE_FAUXQS = 1 ]; then
  stage_modelsync
else
  say "place versions into each host's base path (modelsync or SQS unavailable: temp name + rename, as modelsync would)"
  for v in 1 2; do
    for h in host-gpu host-cpu; do
      cp -r "$RUN/export/$MODEL/$v" "${HOST_BASE[$h]}/$MODEL/.tmp-$v"
      mv "${HOST_BASE[$h]}/$MODEL/.tmp-$v" "${HOST_BASE[$h]}/$MODEL/$v"
    done
    mkdir -p "$GW_SPECS/$MODEL"
    cp -r "$RUN/export/$MODEL/$v" "$GW_SPECS/$MODEL/.tmp-$v" && mv "$GW_SPECS/$MODEL/.tmp-$v" "$GW_SPECS/$MODEL/$v"
    info "version $v placed"
  done
fi

say "wait until both hosts serve both versions"
for h in host-gpu host-cpu; do
  for v in 1 2; do
    wait_for "$h to serve version $v" 60 "$BIN/loadtest" predict --target tfserving --addr "127.0.0.1:${HOST_PORT[$h]}" --workload "$WL_RAW" --version "$v"
  done
  info "$h: versions 1 and 2 AVAILABLE"
done
say "Predict straight at the gpu host (raw TF Serving API): same input, each version, and the latest"
for v in 1 2; do
  info "version $v: $("$BIN/loadtest" predict --target tfserving --addr "127.0.0.1:${HOST_PORT[host-gpu]}" --workload "$WL_RAW" --version "$v")"
done
info "latest:    $("$BIN/loadtest" predict --target tfserving --addr "127.0.0.1:${HOST_PORT[host-gpu]}" --workload "$WL_RAW")"

if [ $HAVE_GATEWAY = 1 ] && [ $HAVE_CONSUL = 1 ]; then
  if [ "${DEMO_FLEET_ONLY:-0}" != 1 ]; then
    stage_gateway
    # Ensemble (issue 19): textclf-ensemble (deploy/local/routing.yaml.tmpl) is versions 1
    # and 2 in one Predict; print the mean of their scores, then each version's own.
    say "Predict on the ensemble textclf-ensemble: both versions in one call, combined (mean) and per member"
    "$BIN/loadtest" predict --addr "$GW_ADDR" --workload "$WL_DEMO" --model textclf-ensemble \
      --text "the delivery was late but the support team was great" | while IFS= read -r line; do info "$line"; done ||
      { info "ensemble Predict failed (see above)"; DEMO_FAILED=1; }
    [ "$DEMO_MODE" = up ] || stage_experiment
  fi
  if [ "$DEMO_MODE" != up ] && [ $HAVE_MODELSYNC = 1 ] && [ $HAVE_FAUXQS = 1 ] && [ "${DEMO_FLEET:-1}" = 1 ]; then
    stage_fleet
  fi
else
  say "gateway unavailable: a short load test straight at the gpu host instead"
  "$BIN/loadtest" run --target tfserving --addr "127.0.0.1:${HOST_PORT[host-gpu]}" --workload "$WL_RAW" \
    --rate 200 --duration 5s --name "servingsim gpu host, direct" --progress line \
    --json "$RUN/direct.json" --html "$RUN/report.html"
  info "HTML report: $(rel "$RUN")/report.html"
fi

if [ "$DEMO_MODE" = up ]; then
  say "up in $((SECONDS - T0))s; everything stays running until make down"
else
  say "done in $((SECONDS - T0))s; stopping everything"
fi
if [ ${#UNAVAILABLE[@]} -gt 0 ]; then
  info "not part of this run (unavailable):"
  for u in "${UNAVAILABLE[@]}"; do info "  - $u"; done
fi
# A failed check is the exit status (the EXIT trap stops everything either way).
[ "${DEMO_FAILED:-0}" = 0 ] || exit 1
