package gateway

import (
	"context"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/grpc/codes"
)

// Stats are the server's counters since it started.
type Stats struct {
	// Reloads counts successful config loads (the first one included).
	Reloads uint64
	// ReloadFailures counts config loads that failed; the last good config kept serving.
	ReloadFailures uint64
	// VersionMismatches counts backend responses naming another version than pinned.
	VersionMismatches uint64
	// SignatureFailures counts specs that did not match their version's signature.
	SignatureFailures uint64
	// SignatureCompared counts signature checks that compared a spec with a
	// signature; SignatureReused, those answered by the comparison of an
	// identical (spec, signature) pair checked before.
	SignatureCompared, SignatureReused uint64
	// Requests counts Predict calls by the gRPC code they returned.
	Requests map[codes.Code]uint64
	// SplitWarnings counts experiments turning lopsided, once per change.
	SplitWarnings uint64
}

const numCodes = 17

type counters struct {
	reloads, reloadFailures, mismatches, sigFailures atomic.Uint64
	requests                                         [numCodes]atomic.Uint64
	// sigCompared counts signature checks that compared a compiled spec with a
	// signature; sigReused, those that reused the comparison of an identical
	// (spec hash, signature hash) pair.
	sigCompared, sigReused atomic.Uint64
	// splitWarnings counts experiments turning lopsided (an arm with weight that is
	// not routable), once per change (splitWatch).
	splitWarnings atomic.Uint64
}

func (c *counters) stats() Stats {
	s := Stats{
		Reloads:           c.reloads.Load(),
		ReloadFailures:    c.reloadFailures.Load(),
		VersionMismatches: c.mismatches.Load(),
		SignatureFailures: c.sigFailures.Load(),
		SignatureCompared: c.sigCompared.Load(),
		SignatureReused:   c.sigReused.Load(),
		SplitWarnings:     c.splitWarnings.Load(),
		Requests:          map[codes.Code]uint64{},
	}
	for i := range c.requests {
		if n := c.requests[i].Load(); n > 0 {
			s.Requests[codes.Code(i)] = n
		}
	}
	return s
}

func (c *counters) request(code codes.Code) {
	if int(code) < numCodes {
		c.requests[code].Add(1)
	}
}

// register exports the counters through OpenTelemetry observable instruments, so
// the atomics stay the one source of truth.
func (c *counters) register(mp metric.MeterProvider) (metric.Registration, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	m := mp.Meter("github.com/tfgate/tfgate/gateway")
	reloads, err := m.Int64ObservableCounter("tfgate.gateway.config.reloads", metric.WithDescription("Successful routing config loads."))
	if err != nil {
		return nil, err
	}
	failures, err := m.Int64ObservableCounter("tfgate.gateway.config.reload_failures", metric.WithDescription("Routing config loads that failed; the last good config kept serving."))
	if err != nil {
		return nil, err
	}
	mism, err := m.Int64ObservableCounter("tfgate.gateway.version_mismatches", metric.WithDescription("Backend responses naming another version than the one pinned (answered INTERNAL)."))
	if err != nil {
		return nil, err
	}
	sig, err := m.Int64ObservableCounter("tfgate.gateway.signature_check_failures", metric.WithDescription("Preprocessing specs that do not match their version's signature."))
	if err != nil {
		return nil, err
	}
	sigChecks, err := m.Int64ObservableCounter("tfgate.gateway.signature_checks",
		metric.WithDescription("Finished signature checks by how (compared: spec compiled and compared; reused: an identical (spec hash, signature hash) pair's result)."))
	if err != nil {
		return nil, err
	}
	compared := metric.WithAttributeSet(attribute.NewSet(attribute.String("how", "compared")))
	reused := metric.WithAttributeSet(attribute.NewSet(attribute.String("how", "reused")))
	reqs, err := m.Int64ObservableCounter("tfgate.gateway.requests", metric.WithDescription("Predict calls by gRPC code."))
	if err != nil {
		return nil, err
	}
	split, err := m.Int64ObservableCounter("tfgate.gateway.experiment.split_warnings",
		metric.WithDescription("Times an experiment's split stopped following its weights (an arm with weight whose version is not routable gives its share away); see ListRoutes experiment.warning."))
	if err != nil {
		return nil, err
	}
	attrs := make([]metric.ObserveOption, numCodes)
	for i := range attrs {
		attrs[i] = metric.WithAttributeSet(attribute.NewSet(attribute.String("code", codes.Code(i).String())))
	}
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(reloads, int64(c.reloads.Load()))
		o.ObserveInt64(failures, int64(c.reloadFailures.Load()))
		o.ObserveInt64(mism, int64(c.mismatches.Load()))
		o.ObserveInt64(sig, int64(c.sigFailures.Load()))
		o.ObserveInt64(sigChecks, int64(c.sigCompared.Load()), compared)
		o.ObserveInt64(sigChecks, int64(c.sigReused.Load()), reused)
		o.ObserveInt64(split, int64(c.splitWarnings.Load()))
		for i := range c.requests {
			if n := c.requests[i].Load(); n > 0 {
				o.ObserveInt64(reqs, int64(n), attrs[i])
			}
		}
		return nil
	}, reloads, failures, mism, sig, sigChecks, reqs, split)
}
