package placement

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// controllerMetrics are the controller's instruments (names in doc.go).
type controllerMetrics struct {
	decisions metric.Int64Counter
	kvBytes   metric.Int64Counter
	copies    metric.Int64Counter
	evictions metric.Int64Counter
	duration  metric.Float64Histogram
	reg       metric.Registration
}

var (
	resultWritten   = metric.WithAttributes(attribute.String("result", "written"))
	resultUnchanged = metric.WithAttributes(attribute.String("result", "unchanged"))
	resultFailed    = metric.WithAttributes(attribute.String("result", "failed"))
)

func newControllerMetrics(mp metric.MeterProvider, c *Controller) (*controllerMetrics, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	m := mp.Meter("github.com/tfgate/tfgate/placement")
	cm := &controllerMetrics{}
	var err error
	if cm.decisions, err = m.Int64Counter("tfgate.placement.decisions",
		metric.WithDescription("Placement decisions by this controller while leading, by result: written (KV changed), unchanged, failed (inputs unreadable, refused, or a write conflict).")); err != nil {
		return nil, err
	}
	if cm.kvBytes, err = m.Int64Counter("tfgate.placement.kv.written", metric.WithUnit("By"),
		metric.WithDescription("Value bytes written to Consul KV for assignments.")); err != nil {
		return nil, err
	}
	if cm.copies, err = m.Int64Counter("tfgate.placement.copies.changed",
		metric.WithDescription("Copies changed by written decisions, by change: added (a load), removed (an unload), moved (a rebalancing move started).")); err != nil {
		return nil, err
	}
	if cm.evictions, err = m.Int64Counter("tfgate.placement.evictions",
		metric.WithDescription("Versions that lost their last copy to least-recently-used eviction.")); err != nil {
		return nil, err
	}
	if cm.duration, err = m.Float64Histogram("tfgate.placement.decision.duration", metric.WithUnit("s"),
		metric.WithDescription("Time to read the inputs, decide and write one placement decision."),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2.5, 5, 10)); err != nil {
		return nil, err
	}
	leader, err := m.Int64ObservableGauge("tfgate.placement.leader",
		metric.WithDescription("1 while this process's controller holds the placement lock, else 0."))
	if err != nil {
		return nil, err
	}
	pending, err := m.Int64ObservableGauge("tfgate.placement.pending",
		metric.WithDescription("Versions short of copies in the last decision, by kind: all, required (pinned or routed: also logged and in the report)."))
	if err != nil {
		return nil, err
	}
	cm.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		var l int64
		if c.IsLeader() {
			l = 1
		}
		o.ObserveInt64(leader, l)
		if d := c.Last(); d != nil && c.IsLeader() {
			o.ObserveInt64(pending, int64(d.Stats.Pending), metric.WithAttributes(attribute.String("kind", "all")))
			o.ObserveInt64(pending, int64(d.Stats.PendingRequired), metric.WithAttributes(attribute.String("kind", "required")))
		}
		return nil
	}, leader, pending)
	if err != nil {
		return nil, err
	}
	return cm, nil
}

func (cm *controllerMetrics) record(ctx context.Context, start time.Time, d *Decision, res WriteResult, err error) {
	cm.duration.Record(ctx, time.Since(start).Seconds())
	cm.kvBytes.Add(ctx, int64(res.Bytes))
	switch {
	case err != nil:
		cm.decisions.Add(ctx, 1, resultFailed)
		return
	case res.HostsWritten > 0:
		cm.decisions.Add(ctx, 1, resultWritten)
	default:
		cm.decisions.Add(ctx, 1, resultUnchanged)
	}
	if res.HostsWritten > 0 {
		cm.copies.Add(ctx, int64(d.Stats.Added), metric.WithAttributes(attribute.String("change", "added")))
		cm.copies.Add(ctx, int64(d.Stats.Removed), metric.WithAttributes(attribute.String("change", "removed")))
		cm.copies.Add(ctx, int64(d.Stats.Moved), metric.WithAttributes(attribute.String("change", "moved")))
		cm.evictions.Add(ctx, int64(d.Stats.Evicted))
	}
}
