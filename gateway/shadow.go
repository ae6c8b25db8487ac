package gateway

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tfgate/tfgate/gateway/route"
	"github.com/tfgate/tfgate/gateway/shadow"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// DefaultShadowConcurrency bounds the shadow calls in flight, all models
// together; a sampled request beyond it is shed (counted, not queued).
const DefaultShadowConcurrency = 16

// shadows runs a model's shadow traffic (route.Shadow): after the primary
// answered a routed, typed request, a sample of them is sent again, in the
// background, to the shadow version, through that version's own pipeline,
// and the two outputs are compared (package gateway/shadow).
//
// The caller's answer, error and latency never depend on it: the shadow starts
// only once the primary's response is complete, runs on its own goroutine
// with its own deadline (the model's timeout, detached from the caller's),
// bypasses the batcher (never queued ahead of, or counted in the deadline of,
// real traffic), and is shed first: when DefaultShadowConcurrency shadows are
// in flight a new one is dropped and counted. The shadow goroutine reads the
// request and the primary's response after the handler returned; neither is
// modified or reused after that.
type shadows struct {
	once    sync.Once
	tracker *shadow.Tracker // nil when its metrics failed to register
	sem     chan struct{}
	wg      sync.WaitGroup
	closed  atomic.Bool
}

func (x *shadows) init(s *Server) *shadow.Tracker {
	x.once.Do(func() {
		t, err := shadow.NewTracker(s.opts.MeterProvider)
		if err != nil {
			s.log.Error("gateway: shadow traffic disabled: its metrics could not be registered", "err", err)
			return
		}
		x.tracker, x.sem = t, make(chan struct{}, DefaultShadowConcurrency)
	})
	return x.tracker
}

// maybe starts the shadow of a request the primary answered with resp, when
// the model has a shadow, the request was routed (not pinned), typed, and
// sampled.
func (x *shadows) maybe(ctx context.Context, s *Server, snap *snapshot, m *route.ModelRoutes, rt route.Route, req *tfgatev1.PredictRequest, resp *tfgatev1.PredictResponse, sig string) {
	if rt.Kind == route.KindVersion || len(req.GetInstances()) == 0 {
		return
	}
	cm := snap.routes.Config.Models[m.Name]
	if cm == nil || cm.Shadow == nil || cm.Shadow.Version.N == rt.Version {
		return
	}
	sh := cm.Shadow
	if sh.Percent < 100 && float64(rand.Uint64()%1_000_000) >= sh.Percent*10_000 {
		return
	}
	t := x.init(s)
	if t == nil || x.closed.Load() {
		return
	}
	k := shadow.Key{Model: m.Name, Primary: rt.Version, Shadow: sh.Version.N}
	select {
	case x.sem <- struct{}{}:
	default:
		t.Shed(k)
		return
	}
	x.wg.Add(1)
	ctx = context.WithoutCancel(ctx) // the trace and request id, not the caller's deadline
	go func() {
		defer x.wg.Done()
		defer func() { <-x.sem }()
		start := time.Now()
		preds, err := x.call(ctx, s, snap, m, sh.Version.N, req, sig)
		if err != nil {
			t.Failed(k, time.Since(start))
			s.log.DebugContext(ctx, "gateway: shadow call failed", "model", m.Name, "shadow", sh.Version.N, "err", err)
			return
		}
		t.Compared(k, shadow.Compare(resp.GetPredictions(), preds), time.Since(start))
	}()
}

// call sends req's instances to version v through v's own pipeline.
func (x *shadows) call(ctx context.Context, s *Server, snap *snapshot, m *route.ModelRoutes, v int64, req *tfgatev1.PredictRequest, sig string) ([]*tfgatev1.Prediction, error) {
	ctx, cancel := context.WithTimeout(ctx, m.Timeout)
	defer cancel()
	pipe, err := s.pipeline(snap, m, v)
	if err != nil {
		return nil, err
	}
	inputs, err := pipe.Encode(req.GetInstances())
	if err != nil {
		return nil, err
	}
	breq := &servingpb.PredictRequest{
		ModelSpec: &servingpb.ModelSpec{Name: m.Name, VersionChoice: &servingpb.ModelSpec_Version{Version: wrapperspb.Int64(v)}, SignatureName: sig},
		Inputs:    inputs,
	}
	bresp, err := s.invokeDecoded(ctx, m.Pools, breq)
	if err != nil {
		return nil, err
	}
	if got := bresp.GetModelSpec().GetVersion(); got == nil || got.GetValue() != v {
		return nil, fmt.Errorf("%w: the shadow's response names version %d, pinned %d", ErrVersionMismatch, got.GetValue(), v)
	}
	return pipe.Decode(bresp.GetOutputs(), len(req.GetInstances()), 0)
}

// close waits for the shadows in flight (each bounded by its deadline) or ctx;
// call it once no request can start another.
func (x *shadows) close(ctx context.Context) error {
	x.closed.Store(true)
	x.once.Do(func() {}) // orders the read of x.tracker after init
	done := make(chan struct{})
	go func() { x.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("gateway: shadow calls still in flight: %w", ctx.Err())
	}
	if x.tracker != nil {
		return x.tracker.Close()
	}
	return nil
}

// describe is the model's shadow for ListRoutes (nil without one).
func (x *shadows) describe(s *Server, snap *snapshot, model string) *tfgatev1.Shadow {
	cm := snap.routes.Config.Models[model]
	if cm == nil || cm.Shadow == nil {
		return nil
	}
	out := &tfgatev1.Shadow{Version: cm.Shadow.Version.N, Percent: cm.Shadow.Percent}
	t := x.init(s)
	if t == nil {
		return out
	}
	for _, st := range t.Stats(model) {
		if st.Shadow != out.Version {
			continue
		}
		c := &tfgatev1.ShadowComparison{
			PrimaryVersion: st.Primary, Requests: st.Requests, Shed: st.Shed, Failed: st.Failed,
			Instances: st.Instances, MaxAbsDiff: st.MaxAbs,
		}
		if a := st.Agreement(); !math.IsNaN(a) {
			c.Top1Agreement = a
		}
		if mv := st.MeanAbs(); !math.IsNaN(mv) {
			c.MeanAbsDiff = mv
		}
		if n := st.Requests + st.Failed; n > 0 {
			c.MeanLatencyMs = float64(st.Latency.Microseconds()) / 1000 / float64(n)
		}
		out.Comparisons = append(out.Comparisons, c)
	}
	return out
}
