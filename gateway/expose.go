package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"

	"github.com/tfgate/tfgate/gateway/exposure"
	"github.com/tfgate/tfgate/gateway/route"
	"github.com/tfgate/tfgate/gateway/split"
	"github.com/tfgate/tfgate/internal/telemetry"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// exposed follows one Predict for its exposure record (Options.Exposures): the
// arrival time and the route predict resolved. It lives on serve's stack.
type exposed struct {
	at    time.Time
	route route.Route
}

// start notes the arrival time when anyone listens.
func (x *exposed) start(s *Server) {
	if s.opts.Exposures != nil {
		x.at = time.Now()
	}
}

// done hands the record to Options.Exposures if the request resolved a version
// (one record per such request, whatever its outcome).
func (x *exposed) done(ctx context.Context, s *Server, req *tfgatev1.PredictRequest, code codes.Code) {
	if s.opts.Exposures == nil || x.route.Version == 0 {
		return
	}
	s.opts.Exposures.Expose(exposure.Record{
		Time:       x.at,
		RequestID:  telemetry.RequestID(ctx),
		TraceID:    trace.SpanContextFromContext(ctx).TraceID(),
		Model:      req.GetModel(),
		Experiment: x.route.Experiment,
		Arm:        x.route.Arm,
		Version:    x.route.Version,
		Route:      routeName(x.route.Kind),
		Label:      x.route.Label,
		Key:        req.GetRoutingKey(),
		Code:       code,
		Latency:    time.Since(x.at),
	})
}

// routeName is a route kind as the exposure log writes it.
func routeName(k route.Kind) string {
	switch k {
	case route.KindVersion:
		return "version"
	case route.KindLabel:
		return "label"
	case route.KindExperiment:
		return "experiment"
	case route.KindDefault:
		return "default"
	}
	return "unspecified"
}

// experiments is what Run adds to the request path for experiments: the
// exposure log (RunConfig.Exposure), the live split monitor, and whatever
// sinks the options already name.
type experiments struct {
	log *exposure.Log // nil without RunConfig.Exposure
	mon *split.Monitor
}

// startExperiments opens the exposure log (failing on an unwritable path),
// starts the split monitor and adds both to opts.Exposures.
func startExperiments(cfg RunConfig, opts *Options) (*experiments, error) {
	x := &experiments{}
	mon, err := split.New(split.Options{Window: cfg.SplitWindow, MeterProvider: opts.MeterProvider})
	if err != nil {
		return nil, fmt.Errorf("gateway: split metrics: %w", err)
	}
	x.mon = mon
	if cfg.Exposure != nil {
		l, err := exposure.New(*cfg.Exposure, exposure.Options{Logger: opts.Logger, MeterProvider: opts.MeterProvider})
		if err != nil {
			_ = mon.Close()
			return nil, fmt.Errorf("gateway: %w", err)
		}
		x.log = l
	}
	opts.Exposures = exposure.Tee(opts.Exposures, mon, nilIfNone(x.log))
	return x, nil
}

// serve points the split monitor at s's routing snapshots for the expected shares.
func (x *experiments) serve(s *Server) { x.mon.SetExpected(s.expectedShares) }

// close flushes the exposure log; call it after the last request finished.
func (x *experiments) close(timeout time.Duration) error {
	if x == nil {
		return nil
	}
	err := x.mon.Close()
	if x.log == nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return errors.Join(err, x.log.Close(ctx))
}

// expectedShares is the split monitor's view of the current snapshot: the
// experiment a model runs and its arms' effective shares.
func (s *Server) expectedShares(model string) (string, map[string]float64, bool) {
	m, ok := s.builder.current().routes.Model(model)
	if !ok || m.ExpName == "" {
		return "", nil, false
	}
	shares := map[string]float64{}
	for _, a := range m.Arms() {
		shares[a.Name] = a.EffectiveShare
	}
	return m.ExpName, shares, true
}

// nilIfNone keeps a nil *exposure.Log from becoming a non-nil Sink.
func nilIfNone(l *exposure.Log) exposure.Sink {
	if l == nil {
		return nil
	}
	return l
}
