# The demo's experiment stage, sourced by scripts/demo.sh after demo-stages.sh (it
# uses their variables and helpers: BIN, RUN, GW_ADDR, MODEL, WL_DEMO, RATE,
# PHASE_SECS, render_routing, say, info, DEMO_FAILED).
# shellcheck shell=bash

# iso_now: the current UTC time, RFC 3339 with nanoseconds (loadtest exposure --from/--to).
iso_now() { date -u +%Y-%m-%dT%H:%M:%S.%NZ; }

# exposure_split NAME CONFIG FROM TO OUT: the experiment split of the exposure log in
# [FROM, TO) (TO may be empty), SRM-tested against CONFIG's weights; prints the split
# and sets EXPOSURE_SRM to the number of mismatches over units.
exposure_split() {
  local args=(--config "$2" --from "$3" --name "$1" --json "$5")
  [ -z "$4" ] || args+=(--to "$4")
  "$BIN/loadtest" exposure "${args[@]}" "$RUN/gateway/exposure.jsonl" >"${5%.json}.txt"
  jq -r '.name as $n | .splits[] | .arms[] | "   \($n): \(.arm) expected \(.expected_share*100 | round)% observed \(.unit_share*1000 | round / 10)% (\(.units) units, \(.requests) requests)"' "$5"
  jq -r '.name as $n | .splits[] | .srm[] | select(.unit == "units" or .unit == "requests") | "   \($n): SRM over \(.unit) n=\(.n) p=\(.p_value * 1000 | round / 1000) \(if .mismatch then "MISMATCH" else "ok" end)"' "$5"
  EXPOSURE_SRM=$(jq '[.splits[] | .srm[] | select((.unit == "units" or .unit == "requests") and .mismatch)] | length' "$5")
}

# stage_experiment: one load test runs while the routing config shifts the experiment
# from 90/10 to 50/50 (the gateway reloads it mid-run); the gateway's exposure log
# then shows the split before and after the shift, each checked with the reports'
# SRM test. The shadow of version 2 behind version 1 (routing.yaml.tmpl) reports its
# agreement through ListRoutes.
stage_experiment() {
  say "experiment: one load test ($((2 * PHASE_SECS))s at $RATE req/s) while the routing config shifts 90/10 -> 50/50 mid-run"
  render_routing 90 10
  cp "$RUN/gateway/routing.yaml" "$RUN/gateway/routing-90-10.yaml"
  "$BIN/loadtest" routes --addr "$GW_ADDR" --wait-model "$MODEL" --wait-arm-weight treatment=10 --timeout 30s >/dev/null
  local t0 tshift t1
  t0=$(iso_now)
  "$BIN/loadtest" run --target gateway --addr "$GW_ADDR" --workload "$WL_DEMO" --rate "$RATE" --arrival poisson \
    --duration "$((2 * PHASE_SECS))s" --progress off --conns 2 --name "mid-run shift" --quiet --json "$RUN/shift.json" &
  local lt=$!
  sleep "$PHASE_SECS"
  tshift=$(iso_now)
  render_routing 50 50
  "$BIN/loadtest" routes --addr "$GW_ADDR" --wait-model "$MODEL" --wait-arm-weight treatment=50 --timeout 30s >/dev/null
  t1=$(iso_now)
  info "shifted at $tshift; the gateway serves 50/50 from $t1 (requests in between are left out of both windows)"
  local rc=0
  wait "$lt" || rc=$?
  sleep 2 # the exposure log writes at least every second
  say "the split before and after the shift, from the gateway's exposure log ($(rel "$RUN")/gateway/exposure.jsonl, loadtest exposure)"
  local srm=0
  exposure_split "before the shift (90/10)" "$RUN/gateway/routing-90-10.yaml" "$t0" "$tshift" "$RUN/exposure-before.json"
  srm=$((srm + EXPOSURE_SRM))
  exposure_split "after the shift (50/50)" "$RUN/gateway/routing.yaml" "$t1" "" "$RUN/exposure-after.json"
  srm=$((srm + EXPOSURE_SRM))
  local errs
  errs=$(jq '.failed' "$RUN/shift.json")
  if [ "$rc" = 0 ] && [ "$srm" = 0 ] && [ "$errs" = 0 ]; then
    info "check: before and after the mid-run shift the exposure log's splits match their weights, 0 errors"
  else
    info "CHECK FAILED: mid-run shift: $srm split(s) with a sample ratio mismatch, $errs error(s), load test exit $rc"
    DEMO_FAILED=1
  fi

  say "shadow: version 2 behind version 1 (a sample of the control arm's requests, after they were answered)"
  "$BIN/loadtest" routes --addr "$GW_ADDR" --model "$MODEL" | jq -r '.models[0].shadow as $s | if $s == null then "   no shadow configured" else
    ($s.comparisons // [])[] | "   v\(.primaryVersion) -> shadow v\($s.version) (\($s.percent)%): \(.requests // 0) compared, \(.shed // 0) shed, \(.failed // 0) failed; top-1 agreement \((.top1Agreement // 0) * 1000 | round / 10)% over \(.instances // 0) instances, |score diff| max \((.maxAbsDiff // 0) * 1000 | round / 1000) mean \((.meanAbsDiff // 0) * 10000 | round / 10000), shadow latency \((.meanLatencyMs // 0) * 100 | round / 100) ms" end'
  if curl -fsS "http://$GW_ADMIN/metrics" 2>/dev/null | grep -q '^tfgate_experiment_srm_p_value'; then
    info "live SRM gauge (the gateway's own window, restarted at the shift):"
    curl -fsS "http://$GW_ADMIN/metrics" | awk '/^tfgate_experiment_srm_(p_value|units)\{/ { print "   " $0 }'
  fi
}
