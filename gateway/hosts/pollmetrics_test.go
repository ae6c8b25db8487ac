package hosts

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// pollsByKind reads tfgate.hosts.readiness.polls per kind.
func pollsByKind(t *testing.T, r *metric.ManualReader) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			if d, ok := mt.Data.(metricdata.Sum[int64]); ok && mt.Name == "tfgate.hosts.readiness.polls" {
				for _, p := range d.DataPoints {
					kind, _ := p.Attributes.Value("kind")
					out[kind.AsString()] += p.Value
				}
			}
		}
	}
	return out
}

func TestPollMetricsByKind(t *testing.T) {
	reader := metric.NewManualReader()
	mp := metric.NewMeterProvider(metric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	models := modelNames(30)
	f := fakeWith(t, models)
	// 100 polls/s at a 100 ms interval: a resync share of 10 per tick round.
	m := newPolled(t, readiness(100*time.Millisecond, 100), models, Options{MeterProvider: mp}, f.addr)
	ctx := context.Background()
	m.pollRound(ctx, true) // nothing answered yet: all 30 are priority
	if got := pollsByKind(t, reader); got["priority"] != 30 || got["resync"] != 0 {
		t.Fatalf("after the first round polls = %v, want priority 30, resync 0", got)
	}
	m.pollRound(ctx, true)
	m.pollRound(ctx, true)
	if got := pollsByKind(t, reader); got["priority"] != 30 || got["resync"] != 20 {
		t.Errorf("after two tick rounds polls = %v, want priority 30, resync 20", got)
	}
}
