package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	pmodel "github.com/prometheus/common/model"

	"github.com/tfgate/tfgate/loadtest/fleet"
)

type baseline struct {
	WarmShare float64 `json:"warm_share"`
	Warm      int64   `json:"warm"`
	Models    int     `json:"models"`
	Bytes     int64   `json:"bytes"`
}

type result struct {
	Models        int     `json:"models"`
	CatalogBytes  int64   `json:"catalog_bytes"`
	CapacityBytes []int64 `json:"capacity_bytes"`
	CapacityShare float64 `json:"capacity_share_of_catalog"`
	Trace         struct {
		Requests         int     `json:"requests"`
		Measured         int64   `json:"measured"`
		DistinctMeasured int     `json:"distinct_models_measured"`
		FirstTouches     int64   `json:"first_touches"`
		FirstTouchShare  float64 `json:"first_touch_share"`
		MeasuredSeconds  float64 `json:"measured_seconds"`
	} `json:"trace"`
	Oracle baseline `json:"oracle"`
	Random baseline `json:"random"`
	// OracleLessFirstTouch is the oracle's warm share if it, too, paid one cold
	// start for every model first requested after warm-up.
	OracleLessFirstTouch float64      `json:"oracle_less_first_touch"`
	Tfgate               tfgateResult `json:"tfgate"`
}

type tfgateResult struct {
	Requests        int64            `json:"requests"`
	Warm            int64            `json:"warm"`
	WarmShare       float64          `json:"warm_share"`
	ByCode          map[string]int64 `json:"by_code"`
	ColdStarts      map[string]int64 `json:"cold_starts"`
	ColdWaitP50     float64          `json:"cold_wait_p50_s"`
	ColdWaitP99     float64          `json:"cold_wait_p99_s"`
	ClientHeld      int64            `json:"client_held"`
	ClientExcessP50 float64          `json:"client_wait_minus_load_p50_s"`
	ClientExcessP99 float64          `json:"client_wait_minus_load_p99_s"`
	ClientWaitP99   float64          `json:"client_held_latency_p99_s"`
	// ColdLoads matches held requests to the servingsim loads that served them
	// (needs -sim-logs and -trace-start-ms).
	ColdLoads *coldLoads `json:"cold_loads,omitempty"`
	// Placement, from the watch events in the measured window.
	Loads              int64   `json:"loads"`
	Evictions          int64   `json:"evictions"`
	CopiesRemoved      int64   `json:"copies_removed"`
	YoungEvictions     int64   `json:"evictions_younger_than_min_residency"`
	YoungCopiesRemoved int64   `json:"copies_removed_younger_than_min_residency"`
	LoadsPerMin        float64 `json:"loads_per_min"`
	EvictionsPerMin    float64 `json:"evictions_per_min"`
	BytesLoadedPerMin  float64 `json:"bytes_loaded_per_min"`
	KVWritesPerSec     float64 `json:"kv_writes_per_s"`
	DemandWrites       int64   `json:"demand_writes"`
	GatewayRSSPeakMB   float64 `json:"gateway_rss_peak_mb"`
	ToHostWithout      int64   `json:"requests_to_host_without_version"`
	// SimNotOK counts every non-OK answer of the servingsim hosts by status;
	// only NOT_FOUND (the version is not loaded there) is a request sent to a
	// host without the version.
	SimNotOK            map[string]int64 `json:"servingsim_not_ok_by_status"`
	SimLoads            int64            `json:"servingsim_loads"`
	MeasuredWallSeconds float64          `json:"measured_wall_seconds"`
}

func analyze(args []string) error {
	fs := flag.NewFlagSet("analyze", flag.ContinueOnError)
	dir := fs.String("dir", "", "gen's output directory (catalog.tsv)")
	tracePath := fs.String("trace", "", "loadtest --trace file")
	capFlag := fs.String("capacity", "", "comma-separated host capacities in bytes")
	events := fs.String("events", "", "watch events file")
	minRes := fs.Duration("min-residency", 0, "the pool's min_residency")
	loadBPS := fs.Float64("load-bps", 0, "servingsim --sim_load_bytes_per_second")
	startMs := fs.Int64("measure-start-ms", 0, "unix ms of the end of warm-up (the first metrics snapshot)")
	endMs := fs.Int64("measure-end-ms", 0, "unix ms of the last metrics snapshot")
	gwStart := fs.String("gw-start", "", "gateway /metrics at the end of warm-up")
	gwEnd := fs.String("gw-end", "", "gateway /metrics at the end")
	consulStart := fs.String("consul-start", "", "Consul prometheus metrics at the end of warm-up")
	consulEnd := fs.String("consul-end", "", "Consul prometheus metrics at the end")
	sims := fs.String("sims", "", "comma-separated servingsim metrics files at the end")
	simLogs := fs.String("sim-logs", "", "comma-separated servingsim log files")
	traceStartMs := fs.Float64("trace-start-ms", 0, "unix ms the trace's at_ms counts from (the loadtest's start)")
	rssKB := fs.Int64("gw-rss-peak-kb", 0, "gateway VmHWM in kB")
	seed := fs.Uint64("seed", 1, "random placement seed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cat, err := readCatalog(filepath.Join(*dir, "catalog.tsv"))
	if err != nil {
		return err
	}
	var capacity []int64
	for _, s := range strings.Split(*capFlag, ",") {
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil || n <= 0 {
			return fmt.Errorf("-capacity %q: want positive byte counts", *capFlag)
		}
		capacity = append(capacity, n)
	}
	tf, err := os.Open(*tracePath)
	if err != nil {
		return err
	}
	trace, err := fleet.ReadTrace(tf)
	tf.Close()
	if err != nil {
		return err
	}
	var r result
	r.Models, r.CatalogBytes, r.CapacityBytes = len(cat), fleet.TotalBytes(cat), capacity
	var capTotal int64
	for _, c := range capacity {
		capTotal += c
	}
	r.CapacityShare = float64(capTotal) / float64(r.CatalogBytes)
	counts := fleet.Counts(trace)
	r.Trace.Requests, r.Trace.DistinctMeasured = len(trace), len(counts)
	r.Trace.FirstTouches = fleet.FirstTouches(trace)
	var firstAt, lastAt = math.Inf(1), math.Inf(-1)
	for _, q := range trace {
		if !q.Warmup {
			r.Trace.Measured++
			firstAt, lastAt = math.Min(firstAt, q.AtMs), math.Max(lastAt, q.AtMs)
		}
	}
	if r.Trace.Measured > 0 {
		r.Trace.FirstTouchShare = float64(r.Trace.FirstTouches) / float64(r.Trace.Measured)
		r.Trace.MeasuredSeconds = (lastAt - firstAt) / 1000
	}
	size := map[string]int64{}
	for _, m := range cat {
		size[m.Name] = m.Bytes
	}
	base := func(a fleet.Assignment) baseline {
		h := a.Holds()
		s := fleet.WarmShare(h, trace)
		b := baseline{WarmShare: s.Fraction(), Warm: s.Warm, Models: len(h)}
		for _, u := range a.Used {
			b.Bytes += u
		}
		return b
	}
	r.Oracle = base(fleet.Oracle(cat, counts, capacity))
	r.Random = base(fleet.Random(cat, capacity, *seed))
	if r.Trace.Measured > 0 {
		r.OracleLessFirstTouch = r.Oracle.WarmShare - float64(r.Trace.FirstTouches)/float64(r.Trace.Measured)
	}

	t := &r.Tfgate
	t.MeasuredWallSeconds = float64(*endMs-*startMs) / 1000
	if *gwStart != "" && *gwEnd != "" {
		a, err := readMetrics(*gwStart)
		if err != nil {
			return err
		}
		b, err := readMetrics(*gwEnd)
		if err != nil {
			return err
		}
		t.ByCode = diffByLabel(a, b, "tfgate_gateway_requests_total", "code")
		t.ColdStarts = diffByLabel(a, b, "tfgate_gateway_cold_starts_total", "result")
		for _, n := range t.ByCode {
			t.Requests += n
		}
		t.Warm = t.ByCode["OK"] - t.ColdStarts["served"]
		if t.Requests > 0 {
			t.WarmShare = float64(t.Warm) / float64(t.Requests)
		}
		t.ColdWaitP50, t.ColdWaitP99 = histQuantiles(a, b, "tfgate_gateway_cold_start_wait_seconds", "served", 0.5, 0.99)
		dw := diffByLabel(a, b, "tfgate_gateway_placement_demand_writes_total", "result")
		t.DemandWrites = dw["ok"] + dw["failed"]
	}
	if *consulStart != "" && *consulEnd != "" && t.MeasuredWallSeconds > 0 {
		a, err := readMetrics(*consulStart)
		if err != nil {
			return err
		}
		b, err := readMetrics(*consulEnd)
		if err != nil {
			return err
		}
		var n float64
		for _, name := range []string{"consul_kvs_apply", "consul_txn_apply"} {
			n += familyCount(b[name]) - familyCount(a[name])
		}
		t.KVWritesPerSec = n / t.MeasuredWallSeconds
	}
	t.GatewayRSSPeakMB = float64(*rssKB) / 1024
	if *sims != "" {
		for _, p := range strings.Split(*sims, ",") {
			m, err := readMetrics(p)
			if err != nil {
				return err
			}
			for _, mm := range m[":tensorflow:serving:request_count"].GetMetric() {
				st, n := label(mm, "status"), int64(mm.GetCounter().GetValue())
				if st == "OK" || n == 0 {
					continue
				}
				if t.SimNotOK == nil {
					t.SimNotOK = map[string]int64{}
				}
				t.SimNotOK[st] += n
				if st == "NOT_FOUND" {
					t.ToHostWithout += n
				}
			}
		}
	}
	loads := map[string][]simLoad{}
	if *simLogs != "" {
		for _, p := range strings.Split(*simLogs, ",") {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			t.SimLoads += int64(strings.Count(string(b), "successfully loaded servable version"))
			if err := parseSimLoads(bytes.NewReader(b), loads); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		}
	}
	if *events != "" {
		if err := countEvents(*events, *startMs, *endMs, *minRes, t); err != nil {
			return err
		}
	}
	// Client side: requests that took longer than a warm request can (50 ms),
	// against their version's simulated load time.
	if *loadBPS > 0 {
		var excess, held []float64
		for _, q := range trace {
			if q.Warmup || q.LatencyMs < 50 {
				continue
			}
			held = append(held, q.LatencyMs/1000)
			excess = append(excess, q.LatencyMs/1000-float64(size[q.Model])/(*loadBPS))
		}
		t.ClientHeld = int64(len(held))
		t.ClientExcessP50, t.ClientExcessP99 = quantile(excess, 0.5), quantile(excess, 0.99)
		t.ClientWaitP99 = quantile(held, 0.99)
		if *traceStartMs > 0 && len(loads) > 0 {
			c := matchColdLoads(trace, *traceStartMs, loads, size, *loadBPS)
			t.ColdLoads = &c
		}
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func readCatalog(path string) ([]fleet.Model, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []fleet.Model
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, n, ok := strings.Cut(sc.Text(), "\t")
		b, err := strconv.ParseInt(n, 10, 64)
		if !ok || err != nil || b <= 0 {
			return nil, fmt.Errorf("%s: bad line %q", path, sc.Text())
		}
		out = append(out, fleet.Model{Name: name, Bytes: b})
	}
	return out, sc.Err()
}

func readMetrics(path string) (map[string]*dto.MetricFamily, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p := expfmt.NewTextParser(pmodel.UTF8Validation)
	m, err := p.TextToMetricFamilies(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func byLabel(m map[string]*dto.MetricFamily, fam, lbl string) map[string]float64 {
	out := map[string]float64{}
	for _, mm := range m[fam].GetMetric() {
		out[label(mm, lbl)] += mm.GetCounter().GetValue()
	}
	return out
}

func diffByLabel(a, b map[string]*dto.MetricFamily, fam, lbl string) map[string]int64 {
	x, y := byLabel(a, fam, lbl), byLabel(b, fam, lbl)
	out := map[string]int64{}
	for k, v := range y {
		if d := int64(v - x[k]); d != 0 {
			out[k] = d
		}
	}
	return out
}

// familyCount is a summary's or histogram's count, or a counter's value, summed.
func familyCount(f *dto.MetricFamily) float64 {
	var n float64
	for _, m := range f.GetMetric() {
		switch {
		case m.Summary != nil:
			n += float64(m.GetSummary().GetSampleCount())
		case m.Histogram != nil:
			n += float64(m.GetHistogram().GetSampleCount())
		case m.Counter != nil:
			n += m.GetCounter().GetValue()
		}
	}
	return n
}

// histQuantiles interpolates quantiles of the difference of a histogram's
// result=res series between two snapshots, linearly inside a bucket.
func histQuantiles(a, b map[string]*dto.MetricFamily, fam, res string, qs ...float64) (float64, float64) {
	get := func(m map[string]*dto.MetricFamily) ([]float64, []float64) {
		var ub, cum []float64
		for _, mm := range m[fam].GetMetric() {
			if label(mm, "result") != res {
				continue
			}
			for _, bk := range mm.GetHistogram().GetBucket() {
				ub = append(ub, bk.GetUpperBound())
				cum = append(cum, float64(bk.GetCumulativeCount()))
			}
			ub = append(ub, math.Inf(1))
			cum = append(cum, float64(mm.GetHistogram().GetSampleCount()))
		}
		return ub, cum
	}
	ub, cb := get(b)
	_, ca := get(a)
	if len(ub) == 0 {
		return 0, 0
	}
	d := make([]float64, len(cb))
	for i := range cb {
		d[i] = cb[i]
		if i < len(ca) {
			d[i] -= ca[i]
		}
	}
	total := d[len(d)-1]
	out := make([]float64, len(qs))
	for j, q := range qs {
		if total == 0 {
			continue
		}
		rank := q * total
		lo, prev := 0.0, 0.0
		for i := range d {
			if d[i] >= rank {
				hi := ub[i]
				if math.IsInf(hi, 1) {
					out[j] = lo // beyond the last bound: report the bound
				} else {
					out[j] = lo + (hi-lo)*(rank-prev)/math.Max(d[i]-prev, 1)
				}
				break
			}
			lo, prev = ub[i], d[i]
		}
	}
	return out[0], out[1]
}

func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[min(int(q*float64(len(s))), len(s)-1)]
}

// countEvents counts the watch events of the measured window: loads (copies
// added), evictions (a version's last copy removed, not draining) and removals
// of copies younger than min residency by their Since.
func countEvents(path string, startMs, endMs int64, minRes time.Duration, t *tfgateResult) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	var bytesAdded int64
	for sc.Scan() {
		fl := strings.Split(sc.Text(), "\t")
		if len(fl) != 9 {
			continue
		}
		at, _ := strconv.ParseInt(fl[0], 10, 64)
		if at < startMs || (endMs > 0 && at > endMs) {
			continue
		}
		b, _ := strconv.ParseInt(fl[5], 10, 64)
		since, _ := strconv.ParseInt(fl[6], 10, 64)
		draining, copiesAfter := fl[7] == "1", fl[8]
		switch fl[1] {
		case "add":
			t.Loads++
			bytesAdded += b
		case "remove":
			if draining {
				continue
			}
			t.CopiesRemoved++
			young := at-since*1000 < minRes.Milliseconds()
			if young {
				t.YoungCopiesRemoved++
			}
			if copiesAfter == "0" {
				t.Evictions++
				if young {
					t.YoungEvictions++
				}
			}
		}
	}
	if mins := float64(endMs-startMs) / 60000; mins > 0 {
		t.LoadsPerMin = float64(t.Loads) / mins
		t.EvictionsPerMin = float64(t.Evictions) / mins
		t.BytesLoadedPerMin = float64(bytesAdded) / mins
	}
	return sc.Err()
}
