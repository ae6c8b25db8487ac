# The demo's modelsync and gateway stages, sourced by scripts/demo.sh (which defines
# the variables they use).
# shellcheck shell=bash

# stage_modelsync starts a sidecar per serving host (serving mode: whole versions into
# the host's base path) and one for the gateway (gateway mode: preprocessing specs),
# then publishes versions 1 and 2 through S3 + SQS and waits until each sidecar has
# placed them.
stage_modelsync() {
  say "modelsync sidecars: one per serving host (serving mode), one for the gateway (gateway mode: preprocessing specs only)"
  local aws=(--s3-endpoint "http://127.0.0.1:$S3_PORT" --s3-path-style --sqs-endpoint "http://127.0.0.1:$SQS_PORT")
  local common=(--bucket "$BUCKET" "${aws[@]}" --receive-wait 1s)
  local h
  for h in host-gpu host-cpu; do
    start "sync-$h" "$BIN/modelsync" run --mode serving --base-path "${HOST_BASE[$h]}" --queue-url "${QUEUE_URL[$h]}" "${common[@]}"
  done
  start sync-gateway "$BIN/modelsync" run --mode gateway --base-path "$GW_SPECS" --queue-url "${QUEUE_URL[gateway]}" "${common[@]}"
  local v q
  for v in 1 2; do
    say "publish version $v through S3 + SQS (modelsync publish uploads the tarball and sends the S3 event to each sidecar's queue, as SNS fan-out would)"
    for q in host-gpu host-cpu gateway; do
      info "$("$BIN/modelsync" publish --bucket "$BUCKET" --model "$MODEL" --version "$v" --queue-url "${QUEUE_URL[$q]}" "${aws[@]}" "$RUN/export/$MODEL/$v") -> $q"
    done
    for h in host-gpu host-cpu; do
      wait_for "sync-$h to place version $v" 60 test -d "${HOST_BASE[$h]}/$MODEL/$v"
    done
    wait_for "sync-gateway to place version $v's spec" 60 test -f "$GW_SPECS/$MODEL/$v/assets.extra/tfgate-preprocess.json"
    info "version $v is in both hosts' base paths and in the gateway's spec directory"
  done
  "$BIN/modelsync" history --base-path "${HOST_BASE[host-gpu]}" 2>/dev/null | sed 's/^/   host-gpu journal: /' || true
}

# render_routing CONTROL TREATMENT: the routing config with those arm weights, written
# atomically (temp file + rename) so the gateway never reads half a file.
render_routing() {
  sed -e "s|@CONSUL@|$CONSUL_HTTP_ADDR|" -e "s|@CONTROL@|$1|" -e "s|@TREATMENT@|$2|" \
    "$ROOT/deploy/local/routing.yaml.tmpl" >"$RUN/gateway/routing.yaml.tmp"
  mv "$RUN/gateway/routing.yaml.tmp" "$RUN/gateway/routing.yaml"
}

# print_routes: one line per version and arm from ListRoutes.
print_routes() {
  "$BIN/loadtest" routes --addr "$GW_ADDR" --model "$MODEL" | jq -r '
    .models[] | (.versions[]? | "   version \(.version): routable=\(.routable // false) hosts=\(.hosts // [] | join(",")) \(.reason // "")"),
    (.experiment.arms[]? | "   arm \(.name) -> version \(.version): weight \(.weight) effective share \(.effectiveShare // 0)")'
}

# host_calls HOST: successful Predict calls the host has executed for $MODEL (from
# its TF-Serving-style Prometheus metrics); with gateway batching, one call is a batch.
host_calls() {
  curl -fsS "http://127.0.0.1:${HOST_REST[$1]}/monitoring/prometheus/metrics" |
    awk -v m="$MODEL" '$1 ~ /^:tensorflow:serving:request_count\{/ && $1 ~ "model_name=\"" m "\"" && $1 ~ /status="OK"/ { n += $2 } END { print n + 0 }'
}

stage_gateway() {
  say "gateway: routing config with a 90/10 experiment (control = version 1, treatment = version 2)"
  mkdir -p "$RUN/gateway"
  render_routing 90 10
  local port
  port=$(free_port)
  GW_ADDR="127.0.0.1:$port"
  GW_ADMIN="127.0.0.1:$(free_port)"
  # Traces go to the gateway's stdout (OTEL_TRACES_EXPORTER=console); set
  # OTEL_EXPORTER_OTLP_ENDPOINT instead to send them to a collector.
  start gateway env OTEL_TRACES_EXPORTER="${OTEL_TRACES_EXPORTER:-console}" OTEL_SERVICE_NAME=tfgate-gateway "$BIN/gateway" --config "$RUN/gateway/routing.yaml" --listen "$GW_ADDR" --model-root "$GW_SPECS" --insecure --backend-insecure \
    --admin-listen "$GW_ADMIN" --log-format text
  GW_PID=$LAST_PID
  wait_for "gateway to listen" 30 port_open "$port"
  info "gateway on $GW_ADDR (config $(rel "$RUN")/gateway/routing.yaml, metrics http://$GW_ADMIN/metrics)"
  info "gateway traces: JSON spans in $(rel "$RUN")/logs/gateway.log (one trace per request: route, preprocess, batch_wait, backend, TF Serving call); readiness http://$GW_ADMIN/readyz"
  say "wait until versions 1 and 2 are routable (ListRoutes)"
  "$BIN/loadtest" routes --addr "$GW_ADDR" --wait-model "$MODEL" --wait-versions 1,2 --timeout 60s >/dev/null
  print_routes
  say "Predict through the gateway (typed API): a pinned version, the stable label, and a routing key"
  local wl=$WL_DEMO
  info "$("$BIN/loadtest" predict --addr "$GW_ADDR" --workload "$wl" --version 2 --text "the delivery was late but the support team was great")"
  info "$("$BIN/loadtest" predict --addr "$GW_ADDR" --workload "$wl" --label stable --text "the delivery was late but the support team was great")"
  info "$("$BIN/loadtest" predict --addr "$GW_ADDR" --workload "$wl" --routing-key cust-42 --text "the delivery was late but the support team was great")"

  local lt=("$BIN/loadtest" run --target gateway --addr "$GW_ADDR" --workload "$wl" --rate "$RATE" --arrival poisson
    --duration "${PHASE_SECS}s" --progress line --conns 2)
  local h
  declare -A calls0=()
  for h in host-gpu host-cpu; do calls0[$h]=$(host_calls "$h"); done
  say "load test, phase 1 of 2: ${PHASE_SECS}s at $RATE req/s (Poisson), 90/10"
  "${lt[@]}" --warmup 1s --name "phase 1: experiment at 90/10" --json "$RUN/phase1.json" >"$RUN/phase1.txt"
  say "shift the experiment to 50/50 by rewriting the routing config (the gateway reloads it)"
  render_routing 50 50
  "$BIN/loadtest" routes --addr "$GW_ADDR" --wait-model "$MODEL" --wait-arm-weight treatment=50 --timeout 30s >/dev/null
  print_routes
  say "load test, phase 2 of 2: ${PHASE_SECS}s at $RATE req/s (Poisson), 50/50"
  "${lt[@]}" --name "phase 2: experiment at 50/50" --json "$RUN/phase2.json" >"$RUN/phase2.txt"

  say "report"
  info "which hosts served (backend Predict calls during the load test; with batching one call carries several requests):"
  local total=0 n
  for h in host-gpu host-cpu; do
    n=$(( $(host_calls "$h") - ${calls0[$h]} ))
    total=$((total + n))
    info "  $h: $n calls"
  done
  local reqs
  reqs=$(jq -s 'map(.total_including_warmup) | add' "$RUN/phase1.json" "$RUN/phase2.json")
  info "  gateway requests: $reqs; requests per backend call (mean batch, in requests): $(awk -v r="$reqs" -v c="$total" 'BEGIN{ if (c > 0) printf "%.2f", r/c; else print "-" }')"
  if curl -fsS "http://$GW_ADMIN/metrics" >"$RUN/gateway-metrics.txt" 2>/dev/null; then
    info "  gateway batches (tfgate.batching.batch_size, rows): $(awk '
      /^tfgate_batching_batch_size[a-z_]*_sum[{ ]/ { s += $NF } /^tfgate_batching_batch_size[a-z_]*_count[{ ]/ { c += $NF }
      END { if (c > 0) printf "%d batches, mean %.2f rows", c, s / c; else print "none recorded" }' "$RUN/gateway-metrics.txt")"
    info "  gateway metrics: $(rel "$RUN")/gateway-metrics.txt"
  fi
  echo
  cat "$RUN/phase1.txt"
  echo
  cat "$RUN/phase2.txt"
  "$BIN/loadtest" report --title "tfgate demo: textclf v2 rollout, 90/10 then 50/50" --html "$RUN/report.html" "$RUN/phase1.json" "$RUN/phase2.json"
  echo
  info "splits (units = distinct routing keys + keyless requests):"
  local f
  for f in phase1 phase2; do
    jq -r '.name as $n | .splits[] | .arms[] | "   \($n): \(.arm) expected \(.expected_share*100 | round)% observed \(.unit_share*1000 | round / 10)% (\(.units) units)"' "$RUN/$f.json"
    jq -r '.name as $n | .splits[] | .srm[] | "   \($n): SRM over \(.unit) n=\(.n) p=\(.p_value * 1000 | round / 1000) \(if .mismatch then "MISMATCH: the split does not match the weights" else "ok" end)"' "$RUN/$f.json"
  done
  # The demo's own check. It fails on errors, or when the sample-ratio-mismatch
  # test over units flags a split (p < 0.001: the split does not match the weights).
  # Within 2 points of the weights is reported, not enforced: with ~3,000 units a
  # 50/50 split lands outside it by chance about 3% of the time.
  local off srm errs
  off=$(jq -s '[.[] | .splits[] | .arms[] | (.unit_share - .expected_share) | select(. > 0.02 or . < -0.02)] | length' "$RUN/phase1.json" "$RUN/phase2.json")
  srm=$(jq -s '[.[] | .splits[] | .srm[] | select(.unit == "units" and .mismatch)] | length' "$RUN/phase1.json" "$RUN/phase2.json")
  errs=$(jq -s 'map(.failed) | add' "$RUN/phase1.json" "$RUN/phase2.json")
  if [ "$off" = 0 ]; then
    info "both splits within ±2 points of the configured weights"
  else
    info "$off arm share(s) more than 2 points from the weights (see the SRM p-values above)"
  fi
  if [ "$srm" = 0 ] && [ "$errs" = 0 ]; then
    info "check: splits match the weights (no sample ratio mismatch), 0 errors"
  else
    info "CHECK FAILED: $srm split(s) with a sample ratio mismatch, $errs error(s)"
    DEMO_FAILED=1
  fi
  info "HTML report: $(rel "$RUN")/report.html"
}
