package preprocess

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// storeMetrics are the Store's instruments:
//
//	tfgate.preprocess.loads        counter, by result (ok, error): spec loads
//	tfgate.preprocess.scan_errors  counter: scans that could not read the root
//	tfgate.preprocess.versions     gauge, by state (ready, error): versions in the snapshot
//	tfgate.preprocess.specs        gauge: distinct valid specs (content hashes) in the snapshot
//	tfgate.preprocess.cache.hits       counter: pipelines served from the cache
//	tfgate.preprocess.cache.misses     counter: pipelines compiled (on a miss or by a scan)
//	tfgate.preprocess.cache.evictions  counter: pipelines dropped to stay within the budget
//	tfgate.preprocess.cache.bytes      gauge: estimated bytes of the cached pipelines
//	tfgate.preprocess.cache.entries    gauge: pipelines cached
//	tfgate.preprocess.cache.budget_bytes gauge: the budget (StoreOptions.CacheBytes)
type storeMetrics struct {
	loads      metric.Int64Counter
	scanErrors metric.Int64Counter
	ok, failed metric.AddOption
}

func newStoreMetrics(mp metric.MeterProvider, log *slog.Logger, s *Store) *storeMetrics {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	m, err := buildStoreMetrics(mp.Meter("github.com/tfgate/tfgate/preprocess"), s)
	if err != nil {
		log.Warn("preprocess: metrics disabled", "err", err)
		m, _ = buildStoreMetrics(noop.NewMeterProvider().Meter(""), s)
	}
	return m
}

func buildStoreMetrics(meter metric.Meter, s *Store) (*storeMetrics, error) {
	m := &storeMetrics{
		ok:     metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "ok"))),
		failed: metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "error"))),
	}
	var err error
	if m.loads, err = meter.Int64Counter("tfgate.preprocess.loads",
		metric.WithDescription("Preprocessing spec loads, by result (ok, error).")); err != nil {
		return nil, err
	}
	if m.scanErrors, err = meter.Int64Counter("tfgate.preprocess.scan_errors",
		metric.WithDescription("Scans of the model root that failed; the last snapshot kept serving.")); err != nil {
		return nil, err
	}
	ready := metric.WithAttributeSet(attribute.NewSet(attribute.String("state", "ready")))
	broken := metric.WithAttributeSet(attribute.NewSet(attribute.String("state", "error")))
	_, err = meter.Int64ObservableGauge("tfgate.preprocess.versions",
		metric.WithDescription("Model versions in the store, by state (ready: valid spec; error: missing or invalid spec)."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			var r, b int64
			for _, vs := range s.Snapshot().models {
				for _, e := range vs {
					if e.Err == nil {
						r++
					} else {
						b++
					}
				}
			}
			o.Observe(r, ready)
			o.Observe(b, broken)
			return nil
		}))
	if err != nil {
		return nil, err
	}
	if _, err = meter.Int64ObservableGauge("tfgate.preprocess.specs",
		metric.WithDescription("Distinct valid preprocessing specs (content hashes) among the store's versions."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(int64(len(s.Snapshot().hashes)))
			return nil
		})); err != nil {
		return nil, err
	}
	for _, c := range []struct {
		name, desc string
		read       func(CacheStats) int64
	}{
		{"tfgate.preprocess.cache.hits", "Compiled pipelines served from the cache (no compile).", func(c CacheStats) int64 { return c.Hits }},
		{"tfgate.preprocess.cache.misses", "Pipelines compiled because the cache did not hold them (on a request, a signature check or a scan).", func(c CacheStats) int64 { return c.Misses }},
		{"tfgate.preprocess.cache.evictions", "Cached pipelines dropped to stay within the byte budget.", func(c CacheStats) int64 { return c.Evictions }},
	} {
		if _, err = meter.Int64ObservableCounter(c.name, metric.WithDescription(c.desc),
			metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
				o.Observe(c.read(s.CacheStats()))
				return nil
			})); err != nil {
			return nil, err
		}
	}
	for _, g := range []struct {
		name, desc, unit string
		read             func(CacheStats) int64
	}{
		{"tfgate.preprocess.cache.bytes", "Estimated bytes of the cached compiled pipelines, shared vocabularies counted once.", "By", func(c CacheStats) int64 { return c.Bytes }},
		{"tfgate.preprocess.cache.entries", "Compiled pipelines in the cache.", "", func(c CacheStats) int64 { return int64(c.Entries) }},
		{"tfgate.preprocess.cache.budget_bytes", "The cache's byte budget (StoreOptions.CacheBytes).", "By", func(c CacheStats) int64 { return c.Budget }},
	} {
		if _, err = meter.Int64ObservableGauge(g.name, metric.WithDescription(g.desc), metric.WithUnit(g.unit),
			metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
				o.Observe(g.read(s.CacheStats()))
				return nil
			})); err != nil {
			return nil, err
		}
	}
	return m, nil
}
