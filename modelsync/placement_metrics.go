package modelsync

import (
	"context"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// placementMetrics are placement mode's instruments. The gauges are set by the
// reconcile loop after each status pass and read by the meter's callback.
type placementMetrics struct {
	assigned, resident, failures atomic.Int64
	diskAssigned, diskCached     atomic.Int64
	reloads                      metric.Int64Counter
	removed                      metric.Int64Counter
	reg                          metric.Registration
}

func newPlacementMetrics(m metric.Meter) *placementMetrics {
	pm := &placementMetrics{}
	pm.reloads, _ = m.Int64Counter("modelsync.placement.reloads",
		metric.WithDescription("TF Serving model config reloads by outcome (ok, failed: refused or past reload_timeout)."))
	pm.removed, _ = m.Int64Counter("modelsync.placement.removed",
		metric.WithDescription("Unassigned versions deleted from disk (after TF Serving reported them unloaded, past cache_bytes)."))
	versions, _ := m.Int64ObservableGauge("modelsync.placement.versions",
		metric.WithDescription("Versions by state: assigned to this host, AVAILABLE in TF Serving, reported as failed."))
	disk, _ := m.Int64ObservableGauge("modelsync.placement.disk", metric.WithUnit("By"),
		metric.WithDescription("Bytes on disk: of assigned versions, and of the cache of unassigned ones."))
	if versions != nil && disk != nil {
		pm.reg, _ = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
			o.ObserveInt64(versions, pm.assigned.Load(), metric.WithAttributes(attribute.String("state", "assigned")))
			o.ObserveInt64(versions, pm.resident.Load(), metric.WithAttributes(attribute.String("state", "available")))
			o.ObserveInt64(versions, pm.failures.Load(), metric.WithAttributes(attribute.String("state", "failed")))
			o.ObserveInt64(disk, pm.diskAssigned.Load(), metric.WithAttributes(attribute.String("kind", "assigned")))
			o.ObserveInt64(disk, pm.diskCached.Load(), metric.WithAttributes(attribute.String("kind", "cached")))
			return nil
		}, versions, disk)
	}
	return pm
}

func (pm *placementMetrics) reload(ok bool) {
	outcome := "ok"
	if !ok {
		outcome = "failed"
	}
	pm.reloads.Add(context.Background(), 1, metric.WithAttributes(attribute.String("outcome", outcome)))
}

func (pm *placementMetrics) close() {
	if pm.reg != nil {
		_ = pm.reg.Unregister()
	}
}
