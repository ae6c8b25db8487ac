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
  declare -gA SYNC_ADMIN=()
  for h in host-gpu host-cpu; do
    SYNC_ADMIN[$h]="127.0.0.1:$(free_port)"
    start "sync-$h" env OTEL_SERVICE_NAME="modelsync-$h" "$BIN/modelsync" run --mode serving --base-path "${HOST_BASE[$h]}" --queue-url "${QUEUE_URL[$h]}" \
      --admin-listen "${SYNC_ADMIN[$h]}" "${common[@]}"
  done
  SYNC_ADMIN[gateway]="127.0.0.1:$(free_port)"
  start sync-gateway env OTEL_SERVICE_NAME=modelsync-gateway "$BIN/modelsync" run --mode gateway --base-path "$GW_SPECS" --queue-url "${QUEUE_URL[gateway]}" \
    --admin-listen "${SYNC_ADMIN[gateway]}" "${common[@]}"
  local v t0
  declare -gA SEEN_FRESHNESS=()
  for v in 1 2; do
    say "publish version $v: modelsync publish uploads the tarball and publishes the S3 event to the SNS topic, which fans it out to every sidecar's queue"
    t0=$(date +%s%N)
    info "$("$BIN/modelsync" publish --bucket "$BUCKET" --model "$MODEL" --version "$v" --topic "$TOPIC_ARN" --sns-endpoint "http://127.0.0.1:$SQS_PORT" "${aws[@]}" "$RUN/export/$MODEL/$v") -> $TOPIC_ARN"
    for h in host-gpu host-cpu; do
      wait_for "sync-$h to place version $v" 60 test -d "${HOST_BASE[$h]}/$MODEL/$v"
    done
    wait_for "sync-gateway to place version $v's spec" 60 test -f "$GW_SPECS/$MODEL/$v/assets.extra/tfgate-preprocess.json"
    # Upper bound on this version's freshness as the demo sees it (publish to the last
    # sidecar done, polled every 0.2 s), to set beside modelsync.freshness in Prometheus.
    SEEN_FRESHNESS[$v]=$(( ($(date +%s%N) - t0) / 1000000 ))
    info "version $v is in both hosts' base paths and in the gateway's spec directory (${SEEN_FRESHNESS[$v]} ms after publish)"
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

# start_prometheus: Debian's Prometheus scraping every process of the stack each second
# (gateway and modelsync /metrics, servingsim's TF-Serving-style REST metrics), with
# deploy/prometheus/'s rules loaded. Sets PROM_URL; without prometheus it says so.
start_prometheus() {
  PROM_URL=""
  command -v prometheus >/dev/null 2>&1 || { info "prometheus not installed (scripts/tools.sh prometheus): no PromQL figures"; return 0; }
  local dir="$RUN/prometheus" port h
  mkdir -p "$dir/data"
  port=$(free_port)
  {
    echo "# Written by scripts/demo-stages.sh for this run."
    echo "global: {scrape_interval: 1s, evaluation_interval: 5s}"
    echo "rule_files:"
    for f in "$ROOT"/deploy/prometheus/*.rules.yml "$ROOT"/deploy/prometheus/*.alerts.yml; do echo "  - $f"; done
    echo "scrape_configs:"
    echo "  - job_name: tfgate-gateway"
    echo "    static_configs: [{targets: ['$GW_ADMIN']}]"
    echo "  - job_name: modelsync"
    echo "    static_configs:"
    for h in "${!SYNC_ADMIN[@]}"; do echo "      - {targets: ['${SYNC_ADMIN[$h]}'], labels: {sidecar: $h}}"; done
    echo "  - job_name: servingsim"
    echo "    metrics_path: /monitoring/prometheus/metrics"
    echo "    static_configs:"
    for h in host-gpu host-cpu; do echo "      - {targets: ['127.0.0.1:${HOST_REST[$h]}'], labels: {host: $h}}"; done
  } >"$dir/prometheus.yml"
  promtool check config "$dir/prometheus.yml" >/dev/null || die "prometheus.yml does not check: promtool check config $(rel "$dir")/prometheus.yml"
  start prometheus prometheus --config.file "$dir/prometheus.yml" --storage.tsdb.path "$dir/data" \
    --web.listen-address "127.0.0.1:$port" --web.enable-lifecycle --log.level warn
  wait_for "Prometheus" 30 curl -fsS "http://127.0.0.1:$port/-/ready"
  PROM_URL="http://127.0.0.1:$port"
  local deadline=$((SECONDS + 20))
  until curl -fsS "$PROM_URL/api/v1/targets?state=active" | jq -e '(.data.activeTargets | length) > 0 and ([.data.activeTargets[] | select(.health != "up")] | length) == 0' >/dev/null; do
    if [ $SECONDS -ge $deadline ]; then
      info "Prometheus targets not up after 20s:"
      curl -fsS "$PROM_URL/api/v1/targets?state=active" | jq -r '.data.activeTargets[] | select(.health != "up") | "     \(.scrapeUrl): \(.health) \(.lastError)"'
      break
    fi
    sleep 0.5
  done
  info "Prometheus UI at $PROM_URL (targets: $PROM_URL/targets, alerts: $PROM_URL/alerts); config $(rel "$dir")/prometheus.yml"
}

# promq QUERY: an instant PromQL query's result vector as JSON lines {labels..., value}.
promq() {
  curl -fsS -G "$PROM_URL/api/v1/query" --data-urlencode "query=$1" |
    jq -c '.data.result[] | .metric + {value: (.value[1] | tonumber)}'
}

# prom_settle: the time after one more scrape of everything (scrapes are every second).
prom_settle() { sleep 2.5; date +%s.%N; }

# prom_report PHASE-JSON FROM TO: per arm, the requests and latency quantiles Prometheus
# saw between the two instants (counter differences with the @ modifier, exact), beside
# the harness's own; counts must be equal, quantiles within histogram-bucket error.
PRED='rpc_method="/tfgate.v1.GatewayService/Predict",model="'"$MODEL"'"'
prom_report() {
  local json=$1 a=$2 b=$3 arm q
  local c="tfgate_gateway_request_duration_seconds_count{$PRED}"
  local bk="tfgate_gateway_request_duration_seconds_bucket{$PRED,rpc_response_status_code=\"OK\"}"
  info "$(jq -r .name "$json"): harness (client) / Prometheus (gateway, server side; PromQL histogram_quantile) in ms, [the estimate's bucket]"
  declare -A pc=()
  while read -r line; do
    pc[$(jq -r '.arm' <<<"$line")]=$(jq -r '.value | round' <<<"$line")
  done < <(promq "sum by (arm) ($c @ $b) - (sum by (arm) ($c @ $a) or sum by (arm) ($c @ $b) * 0)")
  for arm in $(jq -r '[.rows[].arm // ""] | unique | .[]' "$json"); do
    local hc hp pq line lo hi ok
    hc=$(jq --arg a "$arm" '[.rows[] | select((.arm // "") == $a) | .count] | add' "$json")
    line="   arm ${arm:-(none)}: requests harness $hc, Prometheus ${pc[$arm]:-0}"
    if [ "$hc" != "${pc[$arm]:-0}" ]; then line+="  MISMATCH"; PROM_FAILED=1; fi
    for q in 50 90 99; do
      hp=$(jq --arg a "$arm" --arg k "p${q}_ms" '[.rows[] | select((.arm // "") == $a and .code == "OK")][0][$k] // empty' "$json")
      pq=$(promq "histogram_quantile(0.$q, sum by (arm, le) ($bk @ $b) - (sum by (arm, le) ($bk @ $a) or sum by (arm, le) ($bk @ $b) * 0))" |
        jq -r --arg a "$arm" 'select((.arm // "") == $a) | .value * 1000')
      [ -n "$hp" ] && [ -n "$pq" ] || continue
      # The bucket (lo, hi] the estimate falls in. The harness measures at the client
      # from the intended send time, so it can only be higher than the server: within
      # the bucket (or the next one up) agrees; above that is client-side time (the
      # generator's late sends, the client, transport); below the bucket is an error.
      read -r lo hi ok < <(awk -v p="$pq" -v h="$hp" 'BEGIN {
        n = split("0 0.5 1 2.5 5 7.5 10 15 20 30 50 75 100 250 500 1000 2500 5000 10000", b, " ")
        for (i = 2; i <= n; i++) if (p <= b[i] + 1e-9) break
        up = (i < n) ? b[i + 1] : b[n]
        print b[i - 1], b[i], (h < b[i - 1] ? "below" : (h <= up ? "agree" : "client-higher")) }')
      line+="; p$q $(printf '%.2f' "$hp") / $(printf '%.2f' "$pq") [${lo}-${hi}] $ok"
      case $ok in
        agree) PROM_Q_AGREE=$((PROM_Q_AGREE + 1)) ;;
        client-higher) PROM_Q_HIGHER=$((PROM_Q_HIGHER + 1)) ;;
        *) PROM_QUANTILE_OFF=$((PROM_QUANTILE_OFF + 1)) ;;
      esac
    done
    info "$line"
  done
}

# prom_freshness: modelsync.freshness per sidecar from Prometheus, beside what the demo saw.
prom_freshness() {
  info "freshness (S3 event to version published), per sidecar, from modelsync_freshness_seconds (catch-up syncs carry no event and are not counted):"
  promq 'sum by (sidecar) (modelsync_freshness_seconds_count)' >"$RUN/prom-fresh-count.json"
  local line sc n mean p99
  while read -r line; do
    sc=$(jq -r .sidecar <<<"$line")
    n=$(jq -r .value <<<"$line")
    mean=$(promq "sum by (sidecar) (modelsync_freshness_seconds_sum{sidecar=\"$sc\"}) / sum by (sidecar) (modelsync_freshness_seconds_count{sidecar=\"$sc\"})" | jq -r '.value * 1000 | round')
    p99=$(promq "histogram_quantile(0.99, sum by (le) (modelsync_freshness_seconds_bucket{sidecar=\"$sc\"}))" | jq -r '.value * 1000 | round')
    info "  $sc: $n versions, mean ${mean} ms, p99 ${p99} ms (histogram estimate)"
  done <"$RUN/prom-fresh-count.json"
  info "  the demo saw (publish to the last sidecar done, an upper bound): version 1 ${SEEN_FRESHNESS[1]:-?} ms, version 2 ${SEEN_FRESHNESS[2]:-?} ms"
}

# up_summary: what make up leaves running, and commands to paste.
up_summary() {
  local text='the delivery was late but the support team was great'
  say "the stack is up (run: $(rel "$RUN"), logs in $(rel "$RUN")/logs)"
  info "gateway (gRPC)   $GW_ADDR   routing config $(rel "$RUN")/gateway/routing.yaml (edit it: the gateway reloads)"
  info "gateway admin    http://$GW_ADMIN/   (/metrics, /readyz)"
  [ -z "$PROM_URL" ] || info "Prometheus       $PROM_URL/   (alerts: $PROM_URL/alerts)"
  info "Consul           http://$CONSUL_HTTP_ADDR/ui/"
  info "servingsim       gpu 127.0.0.1:${HOST_PORT[host-gpu]} (REST ${HOST_REST[host-gpu]}), cpu 127.0.0.1:${HOST_PORT[host-cpu]} (REST ${HOST_REST[host-cpu]})"
  info "S3, SQS + SNS    http://127.0.0.1:$S3_PORT (bucket $BUCKET), http://127.0.0.1:$SQS_PORT (topic $TOPIC_ARN)"
  cat <<CMDS

   Try it (grpcurl: scripts/tools.sh grpcurl installs it into ~/.cache/tfgate/bin):

   export PATH="\$HOME/.cache/tfgate/bin:\$PATH"
   grpcurl -plaintext -d '{"model":"$MODEL","routing_key":"customer-42","instances":[{"text":"$text"}]}' $GW_ADDR tfgate.v1.GatewayService/Predict
   grpcurl -plaintext -d '{"model":"$MODEL","version":"2","instances":[{"text":"$text"}]}' $GW_ADDR tfgate.v1.GatewayService/Predict
   bin/loadtest routes --addr $GW_ADDR --model $MODEL
   bin/loadtest run --target gateway --addr $GW_ADDR --workload deploy/local/workload-demo.yaml --rate 200 --duration 20s --progress line

   # a new version, through S3 -> SNS -> every sidecar's SQS queue:
   bin/servingsim export --kind text-classifier --vocab-size 5000 --classes 8 --seed 3 /tmp/textclf-3
   AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_REGION=us-east-1 bin/modelsync publish --bucket $BUCKET --model $MODEL --version 3 \\
     --s3-endpoint http://127.0.0.1:$S3_PORT --s3-path-style --topic $TOPIC_ARN --sns-endpoint http://127.0.0.1:$SQS_PORT /tmp/textclf-3

   make down     # stops all of it
CMDS
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
    --admin-listen "$GW_ADMIN" --log-format text --exposure-log "$RUN/gateway/exposure.jsonl"
  GW_PID=$LAST_PID
  wait_for "gateway to listen" 30 port_open "$port"
  info "gateway on $GW_ADDR (config $(rel "$RUN")/gateway/routing.yaml, metrics http://$GW_ADMIN/metrics)"
  info "gateway traces: JSON spans in $(rel "$RUN")/logs/gateway.log (one trace per request: route, preprocess, batch_wait, backend, TF Serving call); readiness http://$GW_ADMIN/readyz"
  start_prometheus
  say "wait until versions 1 and 2 are routable (ListRoutes)"
  "$BIN/loadtest" routes --addr "$GW_ADDR" --wait-model "$MODEL" --wait-versions 1,2 --timeout 60s >/dev/null
  print_routes
  say "Predict through the gateway (typed API): a pinned version, the stable label, and a routing key"
  local wl=$WL_DEMO
  info "$("$BIN/loadtest" predict --addr "$GW_ADDR" --workload "$wl" --version 2 --text "the delivery was late but the support team was great")"
  info "$("$BIN/loadtest" predict --addr "$GW_ADDR" --workload "$wl" --label stable --text "the delivery was late but the support team was great")"
  info "$("$BIN/loadtest" predict --addr "$GW_ADDR" --workload "$wl" --routing-key cust-42 --text "the delivery was late but the support team was great")"
  if [ "$DEMO_MODE" = up ]; then
    up_summary
    return 0
  fi

  local lt=("$BIN/loadtest" run --target gateway --addr "$GW_ADDR" --workload "$wl" --rate "$RATE" --arrival poisson
    --duration "${PHASE_SECS}s" --progress line --conns 2)
  local h
  declare -A calls0=()
  for h in host-gpu host-cpu; do calls0[$h]=$(host_calls "$h"); done
  # Warm up in a run of its own, so the phases' counts are exactly what the gateway's
  # counters gained between the instants around them.
  "${lt[@]}" --duration 1s --name warmup >/dev/null 2>&1
  local pt0 pt1 pt2
  [ -z "$PROM_URL" ] || pt0=$(prom_settle)
  say "load test, phase 1 of 2: ${PHASE_SECS}s at $RATE req/s (Poisson), 90/10"
  "${lt[@]}" --name "phase 1: experiment at 90/10" --json "$RUN/phase1.json" >"$RUN/phase1.txt"
  [ -z "$PROM_URL" ] || pt1=$(prom_settle)
  say "shift the experiment to 50/50 by rewriting the routing config (the gateway reloads it)"
  render_routing 50 50
  "$BIN/loadtest" routes --addr "$GW_ADDR" --wait-model "$MODEL" --wait-arm-weight treatment=50 --timeout 30s >/dev/null
  print_routes
  say "load test, phase 2 of 2: ${PHASE_SECS}s at $RATE req/s (Poisson), 50/50"
  "${lt[@]}" --name "phase 2: experiment at 50/50" --json "$RUN/phase2.json" >"$RUN/phase2.txt"
  [ -z "$PROM_URL" ] || pt2=$(prom_settle)

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
  if [ -n "$PROM_URL" ]; then
    echo
    say "Prometheus: the same runs from the gateway's and modelsync's metrics"
    PROM_FAILED=0 PROM_QUANTILE_OFF=0 PROM_Q_AGREE=0 PROM_Q_HIGHER=0
    prom_report "$RUN/phase1.json" "$pt0" "$pt1"
    prom_report "$RUN/phase2.json" "$pt1" "$pt2"
    prom_freshness
    if [ "$PROM_FAILED" = 0 ]; then
      info "check: Prometheus counted exactly the harness's requests per arm in both phases"
    else
      info "CHECK FAILED: Prometheus and the harness count different requests for an arm"
      DEMO_FAILED=1
    fi
    info "quantiles: $PROM_Q_AGREE agree within histogram-bucket error (same bucket or the next up); $PROM_Q_HIGHER higher at the client"
    info "  (client-side time the server's histogram cannot see: the generator's late sends, the gRPC client, loopback transport)"
    if [ "$PROM_QUANTILE_OFF" != 0 ]; then
      info "CHECK FAILED: $PROM_QUANTILE_OFF harness quantile(s) below the server's bucket: a client cannot be faster than the server"
      DEMO_FAILED=1
    fi
    info "firing alerts: $(curl -fsS "$PROM_URL/api/v1/alerts" | jq -r '[.data.alerts[] | select(.state == "firing") | .labels.alertname] | unique | if length == 0 then "none" else join(", ") end')"
    info "Prometheus UI: $PROM_URL (up while the stack runs; make up keeps it running)"
  fi
  info "HTML report: $(rel "$RUN")/report.html"
}
