# The demo's fleet phase, sourced by scripts/demo.sh (which defines the variables and
# helpers it uses: RUN, BIN, S3_PORT, SQS_PORT, sns, sqs, start, free_port, ...).
# shellcheck shell=bash
#
# stage_fleet: per-customer models on a pool of hosts that holds only a fraction of
# them, placed by the gateway's placement controller (issue 14/18):
#
#   DEMO_FLEET_MODELS per-customer text classifiers (cust-0, cust-1, ...) whose declared
#   resident sizes follow a log-normal law between 5 MB and 1.2 GB, uploaded to the
#   bucket $FLEET_BUCKET; two servingsim hosts (pool fleet, service tfserving-fleet)
#   whose memory together holds about DEMO_FLEET_SHARE percent of the catalog's bytes,
#   loads taking size / DEMO_FLEET_LOAD_BPS; each host with its modelsync sidecar in
#   placement mode; a gateway-mode sidecar for the gateway's specs; and a second
#   gateway run with --placement (it is the placement leader). Zipf traffic over every
#   model, DEMO_FLEET_WARMUP_SECS of warm-up then DEMO_FLEET_SECS measured; the report shows the warm share, the cold starts, the
#   loads and evictions, and where the models live (ListPlacement).
#
# The tarballs are small: each holds the model and incompressible padding of
# resident/100 bytes, and the pool's memory_multiplier is 100 (its largest), so the controller's
# estimate before a first load (object size x multiplier) is close to what the host
# reports once it has loaded the version.
FLEET_BUCKET=fleet-models
stage_fleet() {
  local n=${DEMO_FLEET_MODELS:-200} secs=${DEMO_FLEET_SECS:-30} warm=${DEMO_FLEET_WARMUP_SECS:-15} share=${DEMO_FLEET_SHARE:-30}
  local bps=${DEMO_FLEET_LOAD_BPS:-1000000000} rate=${DEMO_FLEET_RATE:-100}
  local dir="$RUN/fleet" aws=(--s3-endpoint "http://127.0.0.1:$S3_PORT" --s3-path-style --sqs-endpoint "http://127.0.0.1:$SQS_PORT")
  mkdir -p "$dir/export" "$dir/specs"
  say "fleet: $n per-customer models on two hosts that hold about ${share}% of their bytes; the gateway places them (--placement)"

  # Models: one small text classifier, copied per customer with its declared size.
  "$BIN/servingsim" export --kind text-classifier --vocab-size 500 --embedding-dim 8 --classes 4 --seed 11 "$dir/base" >/dev/null
  local sizes total=0 i name bytes
  sizes=$(awk -v n="$n" 'BEGIN { srand(7); lo = log(5e6); hi = log(1.2e9)
    for (i = 0; i < n; i++) {
      # Box-Muller: log-normal with median 20 MB, clipped to [5 MB, 1.2 GB].
      z = sqrt(-2 * log(1 - rand())) * cos(6.283185307 * rand()); x = log(2e7) + 1.2 * z
      if (x < lo) x = lo; if (x > hi) x = hi; printf "%d\n", exp(x) } }')
  i=0
  while read -r bytes; do
    name=cust-$i
    mkdir -p "$dir/export/$name"
    cp -r "$dir/base" "$dir/export/$name/1"
    jq --argjson b "$bytes" '.resident_bytes = $b' "$dir/base/assets.extra/servingsim.json" >"$dir/export/$name/1/assets.extra/servingsim.json"
    head -c $((bytes / 100)) /dev/urandom >"$dir/export/$name/1/padding.bin"
    total=$((total + bytes))
    i=$((i + 1))
  done <<<"$sizes"
  local capacity=$((total * share / 100 / 2))
  info "catalog: $n models, $((total / 1000000)) MB declared resident in all; each host holds $((capacity / 1000000)) MB"

  # Publish through S3 + SNS: one topic for the fleet bucket, a queue per sidecar.
  local topic q arn
  topic=$(sns CreateTopic "Name=fleet-events" | sed -n 's:.*<TopicArn>\(.*\)</TopicArn>.*:\1:p')
  declare -A fq=()
  for q in fleet-1 fleet-2 fleet-gateway; do
    fq[$q]=$(sqs CreateQueue "{\"QueueName\":\"models-$q\"}" | jq -r .QueueUrl)
    arn=$(sqs GetQueueAttributes "{\"QueueUrl\":\"${fq[$q]}\",\"AttributeNames\":[\"QueueArn\"]}" | jq -r .Attributes.QueueArn)
    sns Subscribe "TopicArn=$topic&Protocol=sqs&Endpoint=$arn" >/dev/null
  done
  local t0=$SECONDS
  (cd "$dir/export" && printf '%s\n' cust-*) | xargs -P 4 -I{} "$BIN/modelsync" publish --bucket "$FLEET_BUCKET" --model {} --version 1 \
    --topic "$topic" --sns-endpoint "http://127.0.0.1:$SQS_PORT" "${aws[@]}" "$dir/export/{}/1" >/dev/null
  info "published $n tarballs to s3://$FLEET_BUCKET through SNS $topic in $((SECONDS - t0))s"

  # Hosts: finite memory, loads proportional to size, two load threads each.
  declare -gA FLEET_REST=()
  local h port rest base sync_common=(--bucket "$FLEET_BUCKET" "${aws[@]}" --receive-wait 1s)
  for h in fleet-1 fleet-2; do
    port=$(free_port) rest=$(free_port) base="$dir/$h/models"
    mkdir -p "$base"
    printf 'model_config_list {}\n' >"$dir/$h/models.config"
    start "$h" "$BIN/servingsim" --port "$port" --rest_api_port "$rest" --model_config_file "$dir/$h/models.config" \
      --file_system_poll_wait_seconds 1 --model_memory_limit_bytes "$capacity" --sim_load_bytes_per_second "$bps" --num_load_threads 2
    FLEET_REST[$h]=$rest
    wait_for "$h" 20 port_open "$port"
    curl -fsS -X PUT "http://$CONSUL_HTTP_ADDR/v1/agent/service/register" -d @- <<JSON
{"ID": "$h", "Name": "tfserving-fleet", "Address": "127.0.0.1", "Port": $port, "Meta": {"tfgate_capacity_bytes": "$capacity"},
 "Check": {"GRPC": "127.0.0.1:$port", "Interval": "1s", "Timeout": "1s", "DeregisterCriticalServiceAfter": "1m"}}
JSON
    SYNC_ADMIN[$h]="127.0.0.1:$(free_port)"
    start "sync-$h" env OTEL_SERVICE_NAME="modelsync-$h" "$BIN/modelsync" run --mode serving --placement --placement-host "$h" \
      --placement-pool fleet --placement-status-interval 2s --base-path "$base" --model-config-file "$dir/$h/models.config" \
      --tfserving-addr "127.0.0.1:$port" --queue-url "${fq[$h]}" --admin-listen "${SYNC_ADMIN[$h]}" "${sync_common[@]}"
    info "$h on 127.0.0.1:$port: memory $((capacity / 1000000)) MB, loads at $((bps / 1000000)) MB/s; its sidecar syncs its assignment from Consul KV"
  done
  SYNC_ADMIN[fleet-gateway]="127.0.0.1:$(free_port)"
  start sync-fleet-gateway "$BIN/modelsync" run --mode gateway --base-path "$dir/specs" --queue-url "${fq[fleet-gateway]}" \
    --admin-listen "${SYNC_ADMIN[fleet-gateway]}" "${sync_common[@]}"

  # The fleet gateway: every customer model on its default route, placement on.
  {
    echo "# Written by scripts/demo-fleet.sh: the fleet phase's gateway."
    echo "backends:"
    echo "  pools: {fleet: {consul: {service: tfserving-fleet}}}"
    echo "  consul: {address: \"$CONSUL_HTTP_ADDR\"}"
    echo "  consul_wait_time: 2s"
    echo "  readiness: {interval: 500ms}"
    echo "defaults: {pools: [fleet], timeout: 2s}"
    echo "placement:"
    echo "  demand_interval: 1s"
    echo "  default: {memory_multiplier: 100, min_residency: 3s}"
    echo "  cold_start: {max_wait: 10s, pushback: 500ms}"
    echo "# Per-customer models with no default route: callers name the version, and"
    echo "# a version no route names is placed on demand only (evictable when cold)."
    echo "models:"
    for ((i = 0; i < n; i++)); do echo "  cust-$i: {}"; done
  } >"$dir/routing.yaml"
  local gw gwadmin
  port=$(free_port)
  gw="127.0.0.1:$port" gwadmin="127.0.0.1:$(free_port)"
  start fleet-gateway "$BIN/gateway" --config "$dir/routing.yaml" --listen "$gw" --model-root "$dir/specs" --insecure --backend-insecure \
    --admin-listen "$gwadmin" --log-format text --placement --placement-id demo-fleet-gw --placement-require-status
  wait_for "fleet gateway to listen" 30 port_open "$port"
  wait_for "the fleet gateway to load the $n versions' specs" 120 bash -c \
    "curl -fsS http://$gwadmin/metrics | awk '/^tfgate_preprocess_versions\\{/ && /state=\"ready\"/ { n += \$NF } END { exit !(n >= $n) }'"
  info "fleet gateway on $gw (placement leader; config $(rel "$dir")/routing.yaml, metrics http://$gwadmin/metrics)"

  # Traffic: Zipf over the customers, each customer always its own model.
  cat >"$dir/workload.yaml" <<YAML
seed: 5
routing_keys: {customers: $n, zipf_s: 1.1}
deadline_ms: {value: 8000}
models:
  - name: "cust-{n}"
    count: $n
    routes: [{version: 1}]
    text: {words: {dist: lognormal, mean: 12, stddev: 8, min: 1, max: 64}, vocabulary: 400}
YAML
  say "fleet traffic: ${rate}/s, Zipf (s=1.1) over the $n customers, deadline 8s (a cold start waits for its load): ${warm}s of warm-up, then ${secs}s measured"
  "$BIN/loadtest" run --addr "$gw" --workload "$dir/workload.yaml" --rate "$rate" --duration "${warm}s" \
    --name "fleet warm-up" --progress off --json "$dir/warmup.json" >/dev/null
  info "warm-up: $(jq -r '"\(.requests) requests, \(.ok) OK"' "$dir/warmup.json")"
  local c0 c1
  c0=$(fleet_counters "$gwadmin")
  "$BIN/loadtest" run --addr "$gw" --workload "$dir/workload.yaml" --rate "$rate" --duration "${secs}s" \
    --name "fleet: $n per-customer models, ${share}% resident" --progress off --json "$dir/fleet.json" --html "$dir/fleet.html" >/dev/null
  c1=$(fleet_counters "$gwadmin")
  fleet_report "$dir/fleet.json" "$c0" "$c1" "$gw" "$gwadmin"
}

# fleet_counters ADMIN: "cold-served cold-timeout cold-queue-full evictions" from the
# gateway's /metrics (the gateway is the placement leader, so it counts evictions).
fleet_counters() {
  curl -fsS "http://$1/metrics" | awk '
    /^tfgate_gateway_cold_starts_total\{/ { split($0, a, "result=\""); split(a[2], r, "\""); cold[r[1]] += $NF }
    /^tfgate_placement_evictions_total/ { ev += $NF }
    END { printf "%d %d %d %d\n", cold["served"], cold["timeout"], cold["queue_full"], ev }'
}

# fleet_report JSON BEFORE AFTER GATEWAY ADMIN: the fleet phase's lines of the report.
fleet_report() {
  local json=$1 gw=$4 admin=$5 total ok served timeout qfull ev
  read -r -a b <<<"$2"
  read -r -a a <<<"$3"
  served=$((a[0] - b[0])) timeout=$((a[1] - b[1])) qfull=$((a[2] - b[2])) ev=$((a[3] - b[3]))
  total=$(jq '[.rows[].count] | add' "$json")
  ok=$(jq '[.rows[] | select(.code == "OK") | .count] | add // 0' "$json")
  info "requests: $total, OK $ok; served warm $((ok - served)) ($(awk -v w=$((ok - served)) -v t="$total" 'BEGIN { printf "%.1f", t ? 100 * w / t : 0 }')%), after a cold-start wait $served, cold-start UNAVAILABLE $timeout, cold queue full $qfull"
  jq -r '[.rows[] | select(.code != "OK")] | group_by(.code)[] | "   \(.[0].code): \(map(.count) | add)"' "$json"
  # Cold starts may end in the documented UNAVAILABLE (with pushback) or
  # RESOURCE_EXHAUSTED, and a loaded machine can miss the client's deadline;
  # any other code is a failure of the demo.
  local other
  other=$(jq '[.rows[] | select(.code | IN("OK", "Unavailable", "ResourceExhausted", "DeadlineExceeded") | not) | .count] | add // 0' "$json")
  if [ "$other" != 0 ]; then
    info "check: FAILED: $other requests ended with a code other than OK, cold-start UNAVAILABLE / RESOURCE_EXHAUSTED or the client's deadline"
    DEMO_FAILED=1
  else
    info "check: every request was served or got a documented cold-start answer"
  fi
  info "cold-start wait (held requests that were served), from the gateway's histogram: $(fleet_wait_quantiles "$admin")"
  info "evictions decided by the leader during the traffic: $ev"
  say "where the models live (ListPlacement): per host, versions assigned and AVAILABLE now"
  "$BIN/loadtest" placement --addr "$gw" --json | jq -r '
    ([.versions[]? | (.assigned // [])[] | .host] | group_by(.) | map({(.[0]): length}) | add // {}) as $a
    | ([.versions[]? | (.resident // [])[]] | group_by(.) | map({(.[0]): length}) | add // {}) as $r
    | ($a | keys[]) as $h | "   \($h): \($a[$h]) assigned",
      (.versions | length | "   \(.) versions known to placement"),
      ($r | to_entries[] | "   \(.key): \(.value) AVAILABLE")' | sort -u
  info "full table: $BIN/loadtest placement --addr $gw (while make up runs); HTML report: $(rel "$(dirname "$json")")/fleet.html"
}

# fleet_wait_quantiles ADMIN: p50 and p99 of the served cold-start waits, as the upper
# bounds of the histogram buckets they fall in.
fleet_wait_quantiles() {
  curl -fsS "http://$1/metrics" | awk '
    /^tfgate_gateway_cold_start_wait_seconds_bucket\{/ && /result="served"/ {
      match($0, /le="[^"]+"/); le = substr($0, RSTART + 4, RLENGTH - 5); n++; b[n] = le; c[n] = $NF }
    END { if (n == 0 || c[n] == 0) { print "none"; exit }
      split("0.5 0.99", q, " "); out = ""
      for (j = 1; j <= 2; j++) for (i = 1; i <= n; i++) if (c[i] >= q[j] * c[n]) { out = out sprintf("p%s <= %ss ", q[j] * 100, b[i]); break }
      print out "(" c[n] " waits)" }'
}
