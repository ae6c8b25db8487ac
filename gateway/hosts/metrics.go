package hosts

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

type metrics struct {
	meter      metric.Meter
	hosts      metric.Int64ObservableGauge
	entries    metric.Int64ObservableGauge
	ejections  metric.Int64Counter
	retries    metric.Int64Counter
	pollErrors metric.Int64Counter
	polls      metric.Int64Counter
	wanted     metric.Int64ObservableGauge
	hedges     metric.Int64Counter
	methods    map[string]attribute.Set
	pollKind   map[bool]attribute.Set // priority -> kind attribute
}

func newMetrics(mp metric.MeterProvider) (*metrics, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	mt := &metrics{
		meter: mp.Meter("github.com/tfgate/tfgate/gateway/hosts"),
		methods: map[string]attribute.Set{
			"Predict":          attribute.NewSet(attribute.String("method", "Predict")),
			"GetModelMetadata": attribute.NewSet(attribute.String("method", "GetModelMetadata")),
		},
		pollKind: map[bool]attribute.Set{
			true:  attribute.NewSet(attribute.String("kind", "priority")),
			false: attribute.NewSet(attribute.String("kind", "resync")),
		},
	}
	var err error
	if mt.hosts, err = mt.meter.Int64ObservableGauge("tfgate.hosts.hosts",
		metric.WithDescription("Backend hosts by pool and state (up, ejected).")); err != nil {
		return nil, err
	}
	if mt.entries, err = mt.meter.Int64ObservableGauge("tfgate.hosts.readiness.entries",
		metric.WithDescription("(host, model, version) AVAILABLE entries in the readiness table.")); err != nil {
		return nil, err
	}
	if mt.ejections, err = mt.meter.Int64Counter("tfgate.hosts.ejections",
		metric.WithDescription("Hosts ejected after consecutive transport failures.")); err != nil {
		return nil, err
	}
	if mt.retries, err = mt.meter.Int64Counter("tfgate.hosts.retries",
		metric.WithDescription("Backend calls retried on a different host.")); err != nil {
		return nil, err
	}
	if mt.pollErrors, err = mt.meter.Int64Counter("tfgate.hosts.readiness.poll_errors",
		metric.WithDescription("Failed GetModelStatus polls.")); err != nil {
		return nil, err
	}
	if mt.polls, err = mt.meter.Int64Counter("tfgate.hosts.readiness.polls",
		metric.WithDescription("GetModelStatus polls sent, by kind (priority, resync).")); err != nil {
		return nil, err
	}
	if mt.wanted, err = mt.meter.Int64ObservableGauge("tfgate.hosts.readiness.wanted",
		metric.WithDescription("Versions the gateway waits for that no host reports AVAILABLE yet (polled every round).")); err != nil {
		return nil, err
	}
	if mt.hedges, err = mt.meter.Int64Counter("tfgate.hosts.hedges",
		metric.WithDescription("Hedged backend calls, by outcome (sent, won).")); err != nil {
		return nil, err
	}
	return mt, nil
}

func (mt *metrics) methodAttrs(method string) attribute.Set { return mt.methods[method] }

func (mt *metrics) register(m *Manager) (metric.Registration, error) {
	return mt.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		r := m.snap.Load()
		for pool, n := range r.poolSizes {
			ej := r.ejectedN[pool]
			o.ObserveInt64(mt.hosts, int64(n-ej), metric.WithAttributes(
				attribute.String("pool", pool), attribute.String("state", "up")))
			o.ObserveInt64(mt.hosts, int64(ej), metric.WithAttributes(
				attribute.String("pool", pool), attribute.String("state", "ejected")))
		}
		o.ObserveInt64(mt.entries, int64(r.entries))
		m.wantMu.Lock()
		n := len(m.wants)
		m.wantMu.Unlock()
		o.ObserveInt64(mt.wanted, int64(n))
		return nil
	}, mt.hosts, mt.entries, mt.wanted)
}
