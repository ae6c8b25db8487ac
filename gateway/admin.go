package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/tfgate/tfgate/internal/telemetry"
)

// errStarting is /readyz's answer before the gateway serves.
var errStarting = errors.New("gateway starting: waiting for the first spec scan and readiness poll")

// Readiness is the gateway's /readyz policy: not ready before srv serves (nil);
// then ready once start-up has settled ([Server.Settled]), or regardless once
// graceOver, while at least one model version is routable. Waiting for start-up
// to settle keeps a restarted gateway out of rotation while, at tens of
// thousands of models, most are still loading. The error says what is missing.
func Readiness(srv *Server, graceOver bool) error {
	if srv == nil {
		return errStarting
	}
	return readiness(srv, graceOver)
}

// readyState is what the policy reads of a Server.
type readyState interface {
	Settled() (ok bool, why string)
	AnyRoutable() (ok bool, models int)
}

func readiness(s readyState, graceOver bool) error {
	if ok, why := s.Settled(); !ok && !graceOver {
		return fmt.Errorf("gateway starting: %s (ready regardless after the start-up grace period)", why)
	}
	if ok, models := s.AnyRoutable(); !ok {
		return fmt.Errorf("no routable version among %d models: a version needs its preprocessing spec and a host reporting it AVAILABLE (ListRoutes says why)", models)
	}
	return nil
}

// runTelemetry is what Run takes from Deps.Telemetry.
type runTelemetry struct {
	mp         metric.MeterProvider
	tp         trace.TracerProvider
	gatherer   prometheus.Gatherer // nil: an empty registry
	serverOpts []grpc.ServerOption
	dialOpts   []grpc.DialOption
}

func newRunTelemetry(deps Deps, log *slog.Logger) runTelemetry {
	t := runTelemetry{mp: deps.MeterProvider, tp: deps.TracerProvider}
	p := deps.Telemetry
	if p == nil {
		return t
	}
	if t.mp == nil {
		t.mp = p.MeterProvider
	}
	if t.tp == nil {
		t.tp = p.TracerProvider
	}
	t.gatherer = p.Registry
	t.serverOpts = p.ServerOptions()
	if rm, err := telemetry.NewRequestMetrics(t.mp, 0); err == nil {
		t.serverOpts = append(t.serverOpts, grpc.ChainUnaryInterceptor(rm.UnaryServerInterceptor(), telemetry.AccessLog(log)))
	} else {
		log.Error("gateway: request metrics unavailable", "err", err)
		t.serverOpts = append(t.serverOpts, grpc.ChainUnaryInterceptor(telemetry.AccessLog(log)))
	}
	// Readiness polls (GetModelStatus every second per host) are left untraced.
	t.dialOpts = p.DialOptions(filters.Not(filters.MethodName("GetModelStatus")))
	return t
}

// startAdmin serves the admin server (RunConfig.AdminListen or
// Deps.AdminListener) until ctx ends, with the status page (/) and ListRoutes
// as JSON (/routes); the returned channel receives its result. Without either,
// there is no admin server and the channel holds nil.
func startAdmin(ctx context.Context, cfg RunConfig, deps Deps, tel runTelemetry, log *slog.Logger, ready func() error, page *statusPage) (<-chan error, error) {
	done := make(chan error, 1)
	ln := deps.AdminListener
	if ln == nil && cfg.AdminListen != "" {
		var lc net.ListenConfig
		var err error
		if ln, err = lc.Listen(ctx, "tcp", cfg.AdminListen); err != nil {
			return nil, fmt.Errorf("gateway: admin listen: %w", err)
		}
	}
	if ln == nil {
		done <- nil
		return done, nil
	}
	admin := telemetry.NewAdmin(telemetry.AdminOptions{Gatherer: tel.gatherer, Pprof: cfg.Pprof, Logger: log,
		Ready: func(context.Context) error { return ready() }, Routes: page.routes()})
	go func() { done <- admin.Serve(ctx, ln) }()
	return done, nil
}
