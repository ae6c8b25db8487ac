package gateway

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// coldMetrics are the cold-start and demand instruments (docs/metrics.md):
//
//	tfgate.gateway.cold_starts{result=served|timeout|queue_full|unplaceable|canceled}
//	    requests that found no host with their version and were held (or refused)
//	tfgate.gateway.cold_start.wait (s)  how long held requests waited, by result
//	tfgate.gateway.placement.demand_writes{result=ok|failed}  demand reports written to KV
type coldMetrics struct {
	starts metric.Int64Counter
	wait   metric.Float64Histogram
	writes metric.Int64Counter
}

var (
	coldServed      = metric.WithAttributes(attribute.String("result", "served"))
	coldTimeout     = metric.WithAttributes(attribute.String("result", "timeout"))
	coldQueueFull   = metric.WithAttributes(attribute.String("result", "queue_full"))
	coldUnplaceable = metric.WithAttributes(attribute.String("result", "unplaceable"))
	coldCanceled    = metric.WithAttributes(attribute.String("result", "canceled"))
	writeOK         = metric.WithAttributes(attribute.String("result", "ok"))
	writeFailed     = metric.WithAttributes(attribute.String("result", "failed"))
)

func newColdMetrics(mp metric.MeterProvider) (*coldMetrics, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	m := mp.Meter("github.com/tfgate/tfgate/gateway")
	cm := &coldMetrics{}
	var err error
	if cm.starts, err = m.Int64Counter("tfgate.gateway.cold_starts",
		metric.WithDescription("Predicts for a version no host reported AVAILABLE, by result: served after the load, timeout (UNAVAILABLE with pushback), queue_full (RESOURCE_EXHAUSTED), unplaceable (FAILED_PRECONDITION), canceled.")); err != nil {
		return nil, err
	}
	if cm.wait, err = m.Float64Histogram("tfgate.gateway.cold_start.wait", metric.WithUnit("s"),
		metric.WithDescription("How long a held Predict waited for its version to load, by result."),
		metric.WithExplicitBucketBoundaries(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60)); err != nil {
		return nil, err
	}
	if cm.writes, err = m.Int64Counter("tfgate.gateway.placement.demand_writes",
		metric.WithDescription("Demand reports this gateway wrote to Consul KV, by result (at most 4/s, 1/demand_interval in steady state).")); err != nil {
		return nil, err
	}
	return cm, nil
}

func (m *coldMetrics) done(ctx context.Context, result metric.MeasurementOption, waited float64) {
	if m == nil {
		return
	}
	m.starts.Add(ctx, 1, result)
	if result != coldQueueFull {
		m.wait.Record(ctx, waited, result)
	}
}
