package split

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"

	"github.com/tfgate/tfgate/gateway/exposure"
	"github.com/tfgate/tfgate/gateway/route"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 12, 3, 7, 0, 0, 0, time.UTC)

func shares(control, treatment float64) Expected {
	return func(model string) (string, map[string]float64, bool) {
		if model != "reviews" {
			return "", nil, false
		}
		return "e", map[string]float64{"control": control, "treatment": treatment}, true
	}
}

func rec(at time.Duration, arm, key string) exposure.Record {
	return exposure.Record{Time: t0.Add(at), Model: "reviews", Experiment: "e", Arm: arm, Route: "experiment", Key: key, Code: codes.OK}
}

// sticky is the gateway's real sticky assignment at a treatment share (in
// buckets of 10,000).
func sticky(treatmentBuckets uint32) func(key string) string {
	return func(key string) string {
		if route.Bucket("reviews/e", key) < treatmentBuckets {
			return "treatment"
		}
		return "control"
	}
}

func newMonitor(t *testing.T, exp Expected, now *time.Time, o Options) *Monitor {
	t.Helper()
	o.Expected, o.Now = exp, func() time.Time { return *now }
	m, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func TestSRMFlagsSkewNotFairness(t *testing.T) {
	const keys = 30000
	for _, tc := range []struct {
		name     string
		assign   func(i int, key string) string
		keyless  bool
		mismatch bool
	}{
		{name: "sticky 90/10 as configured", assign: func(_ int, k string) string { return sticky(1000)(k) }},
		{name: "sticky 88/12 against 90/10", assign: func(_ int, k string) string { return sticky(1200)(k) }, mismatch: true},
		{name: "keyless 90/10", keyless: true, assign: func() func(int, string) string {
			r := rand.New(rand.NewPCG(1, 2))
			return func(int, string) string {
				if r.IntN(10) == 0 {
					return "treatment"
				}
				return "control"
			}
		}()},
		{name: "keyless 87/13", keyless: true, mismatch: true, assign: func() func(int, string) string {
			r := rand.New(rand.NewPCG(1, 2))
			return func(int, string) string {
				if r.IntN(100) < 13 {
					return "treatment"
				}
				return "control"
			}
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := t0.Add(time.Minute)
			m := newMonitor(t, shares(0.9, 0.1), &now, Options{SampleKeys: 4096})
			for i := 0; i < keys; i++ {
				key := fmt.Sprintf("customer-%d", i)
				arm := tc.assign(i, key)
				if tc.keyless {
					key = ""
				}
				// Heavy customers: every 50th key sends 200 requests. A test over
				// requests would flag even the fair split.
				n := 1
				if i%50 == 0 && !tc.keyless {
					n = 200
				}
				for j := 0; j < n; j++ {
					m.Expose(rec(time.Duration(i)*time.Millisecond, arm, key))
				}
			}
			res := m.Check()
			if len(res) != 1 || !res[0].Tested {
				t.Fatalf("Check = %+v, want one tested experiment", res)
			}
			r := res[0]
			if r.Mismatch != tc.mismatch {
				t.Errorf("mismatch %v (p=%.3g over %d units, arms %+v), want %v", r.Mismatch, r.P, r.N, r.Arms, tc.mismatch)
			}
			if !tc.keyless && (r.N > 4096 || r.N < 2048) {
				t.Errorf("%d sampled keys in one slot, want between 2048 and 4096 (bounded sample)", r.N)
			}
			var est int64
			for _, a := range r.Arms {
				est += a.Keys
			}
			if !tc.keyless && (est < keys*98/100 || est > keys*102/100) {
				t.Errorf("distinct keys estimated %d, want %d +- 2%%", est, keys)
			}
		})
	}
}

// The sampled key test must not fire on a fair split however many times it is
// checked: 200 independent fair experiments, each over 2,000 keys, flag about
// 200 * 0.001 times by chance; more than 3 means the test is not exact.
func TestSRMFalseAlarmRate(t *testing.T) {
	now := t0.Add(time.Minute)
	flagged := 0
	for e := 0; e < 200; e++ {
		m := newMonitor(t, shares(0.5, 0.5), &now, Options{SampleKeys: 512})
		for i := 0; i < 2000; i++ {
			key := fmt.Sprintf("e%d-customer-%d", e, i)
			m.Expose(rec(time.Duration(i)*time.Millisecond, sticky(5000)(key), key))
		}
		if m.Check()[0].Mismatch {
			flagged++
		}
	}
	if flagged > 3 {
		t.Errorf("%d of 200 fair experiments flagged at p < 0.001", flagged)
	}
}

func TestWindowSlidesAndRestartsOnShift(t *testing.T) {
	now := t0
	exp := shares(0.9, 0.1)
	m := newMonitor(t, func(model string) (string, map[string]float64, bool) { return exp(model) }, &now, Options{Window: 10 * time.Minute, Slots: 10})
	fill := func(at time.Duration, n int, treatmentPct int) {
		for i := 0; i < n; i++ {
			arm := "control"
			if i%100 < treatmentPct {
				arm = "treatment"
			}
			m.Expose(rec(at, arm, ""))
		}
	}
	fill(0, 10000, 10)
	now = t0.Add(30 * time.Second)
	if r := m.Check()[0]; !r.Tested || r.Mismatch || r.N != 10000 {
		t.Fatalf("90/10 traffic under 90/10: %+v", r)
	}
	// The config shifts to 50/50: the window restarts, old traffic is not
	// tested against the new shares.
	exp = shares(0.5, 0.5)
	if r := m.Check()[0]; r.Tested || r.N != 0 {
		t.Fatalf("right after the shift: %+v, want an empty window", r)
	}
	fill(40*time.Second, 10000, 50)
	now = t0.Add(50 * time.Second)
	if r := m.Check()[0]; !r.Tested || r.Mismatch || r.N != 10000 {
		t.Fatalf("50/50 traffic after the shift: %+v", r)
	}
	// Skewed traffic later, once the fair traffic has left the window.
	fill(15*time.Minute, 10000, 40)
	now = t0.Add(15*time.Minute + time.Second)
	if r := m.Check()[0]; !r.Mismatch || r.N != 10000 {
		t.Fatalf("60/40 traffic under 50/50, alone in the window: %+v", r)
	}
	if r := m.Check()[0]; r.Arms[0].Requests+r.Arms[1].Requests != 30000 {
		t.Errorf("cumulative requests %+v, want 30000", r.Arms)
	}
}

func TestTrafficOnAnArmWithoutShareIsAMismatch(t *testing.T) {
	now := t0.Add(time.Second)
	m := newMonitor(t, shares(1, 0), &now, Options{})
	m.Expose(rec(0, "control", "a"))
	m.Expose(rec(0, "treatment", "b"))
	if r := m.Check()[0]; !r.Mismatch || r.P != 0 {
		t.Errorf("treatment served with share 0: %+v, want a mismatch", r)
	}
}

func TestMetrics(t *testing.T) {
	rd := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(rd))
	defer mp.Shutdown(context.Background())
	now := t0.Add(time.Second)
	m := newMonitor(t, shares(0.9, 0.1), &now, Options{MeterProvider: mp})
	for i := 0; i < 1000; i++ {
		key := fmt.Sprint("k", i)
		m.Expose(rec(0, sticky(1000)(key), key))
	}
	var rm metricdata.ResourceMetrics
	if err := rd.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, sm := range rm.ScopeMetrics {
		for _, md := range sm.Metrics {
			got[md.Name] = true
			if g, ok := md.Data.(metricdata.Gauge[float64]); ok && md.Name == "tfgate.experiment.srm.p_value" {
				dp := g.DataPoints[0]
				if v, _ := dp.Attributes.Value(attribute.Key("experiment")); v.AsString() != "e" || dp.Value < Threshold {
					t.Errorf("p-value point %+v", dp)
				}
			}
		}
	}
	for _, name := range []string{"tfgate.experiment.assignments", "tfgate.experiment.keys", "tfgate.experiment.srm.p_value", "tfgate.experiment.srm.units"} {
		if !got[name] {
			t.Errorf("metric %s not exported (got %v)", name, got)
		}
	}
}

// BenchmarkMonitorExpose is the split monitor's cost per experiment-routed
// request (keyed: hash, HyperLogLog insert, window sample), on the request path.
func BenchmarkMonitorExpose(b *testing.B) {
	now := t0
	m, err := New(Options{Now: func() time.Time { return now }})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	recs := make([]exposure.Record, 4096)
	for i := range recs {
		key := fmt.Sprint("customer-", i)
		recs[i] = rec(time.Duration(i)*time.Millisecond, sticky(1000)(key), key)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			m.Expose(recs[i%len(recs)])
			i++
		}
	})
}
