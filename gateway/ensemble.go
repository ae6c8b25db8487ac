package gateway

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tfgate/tfgate/gateway/exposure"
	"github.com/tfgate/tfgate/gateway/route"
	"github.com/tfgate/tfgate/internal/telemetry"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// Ensembles (route.Ensemble): a Predict on an ensemble's name runs every member
// in parallel, each as a Predict on its own model would run (predict: the
// member's route with the request's routing key, so experiment arms stay
// sticky; its version's preprocessing; its batcher; the version check), then
// combines what they answered.
//
// Deadline. The whole call has one budget: the ensemble's timeout (default:
// the longest of its members' model timeouts), cut to the caller's remaining
// deadline. Members run in parallel inside it, so each member's share is the
// whole budget less the gateway's DeadlineMargin (kept back to combine and
// answer), capped by its own model's timeout:
//
//	member deadline = now + min(model timeout, min(ensemble timeout, caller's remaining) - margin)
//
// A member that overruns its share fails with DEADLINE_EXCEEDED, and the
// partial-failure policy decides the call: under require_all it fails, with
// min_members: N it answers, marked partial, once N members answered. When so
// many members failed that the call cannot succeed any more, the others are
// cancelled.
//
// Combined scores (mean, weighted_mean) are computed per instance and class in
// float64: over the members that answered, in the config's member order, each
// member's float32 score times its weight (1 under mean) is added to the sum,
// the sum is divided once by the sum of those members' weights (added in the
// same order), and the quotient is rounded to float32 once. Given the members'
// scores, the result is exactly reproducible.
//
// vote gives each instance to the class most answering members rank first
// (top-1 by score, ties by lower index); equal counts go to the larger summed
// weight of the members voting for it, then to the lower class index. Its
// scores are each class's share of the votes; top_k ranks classes by the same
// order.

// ensembleMetrics are the per-member instruments (docs/metrics.md):
//
//	tfgate.gateway.ensemble.member_calls{ensemble, member, code}  member calls by gRPC code
//	tfgate.gateway.ensemble.member_duration (s){ensemble, member}  member call durations
//	tfgate.gateway.ensemble.partial{ensemble}  answers marked partial
type ensembleMetrics struct {
	calls    metric.Int64Counter
	duration metric.Float64Histogram
	partial  metric.Int64Counter
}

func newEnsembleMetrics(mp metric.MeterProvider) (*ensembleMetrics, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	m := mp.Meter("github.com/tfgate/tfgate/gateway")
	em := &ensembleMetrics{}
	var err error
	if em.calls, err = m.Int64Counter("tfgate.gateway.ensemble.member_calls",
		metric.WithDescription("Calls an ensemble made to its members, by ensemble, member and gRPC code.")); err != nil {
		return nil, err
	}
	if em.duration, err = m.Float64Histogram("tfgate.gateway.ensemble.member_duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of each ensemble member's call in the gateway (route, preprocessing, batching, backend, decoding), by ensemble and member."),
		metric.WithExplicitBucketBoundaries(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)); err != nil {
		return nil, err
	}
	if em.partial, err = m.Int64Counter("tfgate.gateway.ensemble.partial",
		metric.WithDescription("Ensemble answers marked partial: some member failed and min_members let the others answer.")); err != nil {
		return nil, err
	}
	return em, nil
}

// memberCall is one member's call within an ensemble call.
type memberCall struct {
	m     *route.MemberRoutes
	route route.Route
	resp  *tfgatev1.PredictResponse
	err   error
	took  time.Duration
	// stopped: the member was cancelled because the call could no longer succeed.
	stopped bool
}

// serveEnsemble is serve for an ensemble's name.
func (s *Server) serveEnsemble(ctx context.Context, snap *snapshot, req *tfgatev1.PredictRequest, raw *wireTensors, e *route.EnsembleRoutes) (*tfgatev1.PredictResponse, error) {
	ctx, span := s.tracer.Start(ctx, "tfgate.ensemble", trace.WithAttributes(
		attribute.String("tfgate.ensemble", e.Name), attribute.String("tfgate.ensemble.combiner", string(e.Combiner)),
		attribute.Int("tfgate.ensemble.members", len(e.Members))))
	resp, err := s.ensemble(ctx, snap, req, raw, e)
	if err == nil && span.IsRecording() {
		span.SetAttributes(attribute.Bool("tfgate.ensemble.partial", resp.GetEnsemble().GetPartial()))
	}
	endSpan(span, err)
	if err != nil {
		st := toStatus(err)
		s.stats.request(status.Code(st))
		return nil, st
	}
	s.stats.request(codes.OK)
	return resp, nil
}

func (s *Server) ensemble(ctx context.Context, snap *snapshot, req *tfgatev1.PredictRequest, raw *wireTensors, e *route.EnsembleRoutes) (*tfgatev1.PredictResponse, error) {
	if err := checkEnsembleRequest(req, raw, e, snap.routes.Config.Limits); err != nil {
		return nil, err
	}
	budget := e.Timeout
	if dl, ok := ctx.Deadline(); ok {
		rem := time.Until(dl)
		if rem <= s.opts.DeadlineMargin {
			return nil, fmt.Errorf("ensemble %q: %w: %v left of the caller's deadline, which does not cover the gateway's %v margin; allow more time", e.Name, ErrDeadlineTooShort, rem.Round(time.Microsecond), s.opts.DeadlineMargin)
		}
		budget = min(budget, rem)
	}
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()

	calls := make([]memberCall, len(e.Members))
	tolerated := int32(len(e.Members) - e.Need)
	var failed atomic.Int32
	var stop atomic.Bool
	var wg sync.WaitGroup
	run := func(c *memberCall) {
		s.callMember(ctx, snap, req, e, c)
		if c.err == nil {
			return
		}
		if stop.Load() && Code(c.err) == codes.Canceled {
			c.stopped = true
			return
		}
		if failed.Add(1) > tolerated && !stop.Swap(true) {
			cancel() // the call fails anyway: stop the members still running
		}
	}
	for i := range calls {
		calls[i].m = &e.Members[i]
		if i == len(calls)-1 {
			run(&calls[i]) // the last member on this goroutine
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			run(&calls[i])
		}()
	}
	wg.Wait()

	ok := make([]*memberCall, 0, len(calls))
	for i := range calls {
		if calls[i].err == nil {
			ok = append(ok, &calls[i])
		}
	}
	if len(ok) < e.Need {
		return nil, newEnsembleError(e, calls, len(ok))
	}
	resp := &tfgatev1.PredictResponse{
		Model: e.Name,
		Route: tfgatev1.RouteKind_ROUTE_KIND_ENSEMBLE,
		Ensemble: &tfgatev1.EnsembleResult{
			Name:     e.Name,
			Combiner: string(e.Combiner),
			Partial:  len(ok) < len(calls),
			Members:  make([]*tfgatev1.MemberResult, len(calls)),
		},
	}
	for i := range calls {
		resp.Ensemble.Members[i] = memberResult(&calls[i])
	}
	if resp.Ensemble.Partial {
		s.ens.partial.Add(ctx, 1, metric.WithAttributes(attribute.String("ensemble", e.Name)))
	}
	preds, err := combine(e.Combiner, ok, len(req.GetInstances()), int(req.GetTopK()))
	if err != nil {
		return nil, fmt.Errorf("ensemble %q: %w", e.Name, err)
	}
	resp.Predictions = preds
	return resp, nil
}

// callMember runs one member's Predict, as a direct call to its model would
// run, and records its span, metrics and exposure.
func (s *Server) callMember(ctx context.Context, snap *snapshot, req *tfgatev1.PredictRequest, e *route.EnsembleRoutes, c *memberCall) {
	start := time.Now()
	ctx, span := s.tracer.Start(ctx, "tfgate.ensemble.member", trace.WithAttributes(
		attribute.String("tfgate.ensemble", e.Name), attribute.String("tfgate.ensemble.member", c.m.Name), attribute.String("tfgate.model", c.m.Model)))
	mreq := &tfgatev1.PredictRequest{
		Model:         c.m.Model,
		RoutingKey:    req.GetRoutingKey(),
		Instances:     req.GetInstances(),
		SignatureName: req.GetSignatureName(),
		TopK:          req.GetTopK(),
	}
	switch t := c.m.Target; {
	case t.Version > 0:
		mreq.Target = &tfgatev1.PredictRequest_Version{Version: t.Version}
	case t.Label != "":
		mreq.Target = &tfgatev1.PredictRequest_Label{Label: t.Label}
	}
	c.resp, c.err = s.predict(ctx, snap, mreq, nil, false, nil, &c.route)
	c.took = time.Since(start)
	if span.IsRecording() && c.route.Version != 0 {
		span.SetAttributes(attribute.Int64("tfgate.version", c.route.Version), attribute.String("tfgate.arm", c.route.Arm),
			attribute.String("tfgate.experiment", c.route.Experiment), attribute.String("tfgate.route", routeKind(c.route.Kind).String()))
	}
	endSpan(span, c.err)
	code := Code(c.err)
	member := attribute.String("member", c.m.Name)
	s.ens.calls.Add(ctx, 1, metric.WithAttributes(attribute.String("ensemble", e.Name), member, attribute.String("code", code.String())))
	s.ens.duration.Record(ctx, c.took.Seconds(), metric.WithAttributes(attribute.String("ensemble", e.Name), member))
	if s.opts.Exposures != nil && c.route.Version != 0 {
		s.opts.Exposures.Expose(exposure.Record{
			Time:       start,
			RequestID:  telemetry.RequestID(ctx),
			TraceID:    trace.SpanContextFromContext(ctx).TraceID(),
			Model:      c.m.Model,
			Ensemble:   e.Name,
			Experiment: c.route.Experiment,
			Arm:        c.route.Arm,
			Version:    c.route.Version,
			Route:      routeName(c.route.Kind),
			Label:      c.route.Label,
			Key:        req.GetRoutingKey(),
			Code:       code,
			Latency:    c.took,
		})
	}
}

// checkEnsembleRequest validates a request on an ensemble's name.
func checkEnsembleRequest(req *tfgatev1.PredictRequest, raw *wireTensors, e *route.EnsembleRoutes, lim route.Limits) error {
	if req.GetTarget() != nil {
		return badRequest("%q is an ensemble: version and label do not apply (each member's route is set in the routing config); leave the target unset", e.Name)
	}
	if len(req.GetRawInputs())+raw.len() > 0 {
		return badRequest("%q is an ensemble: send typed instances, which each member preprocesses with its own version's spec; raw_inputs cannot go to several models", e.Name)
	}
	return checkRequest(req, nil, lim)
}

func memberResult(c *memberCall) *tfgatev1.MemberResult {
	r := &tfgatev1.MemberResult{
		Member:     c.m.Name,
		Model:      c.m.Model,
		Version:    c.route.Version,
		Arm:        c.route.Arm,
		Experiment: c.route.Experiment,
		Route:      routeKind(c.route.Kind),
		Weight:     c.m.Weight,
		LatencyMs:  float64(c.took.Microseconds()) / 1000,
	}
	if c.err != nil {
		r.Code, r.Error = int32(Code(c.err)), message(c.err)
		return r
	}
	r.Predictions = c.resp.GetPredictions()
	return r
}

// ensembleError: fewer members answered than the ensemble needs. Its code is
// the first failed member's (in member order).
type ensembleError struct {
	ensemble       string
	answered, need int
	total          int
	failed         []*memberCall // in member order, the stopped ones last
}

func newEnsembleError(e *route.EnsembleRoutes, calls []memberCall, answered int) *ensembleError {
	ee := &ensembleError{ensemble: e.Name, answered: answered, need: e.Need, total: len(calls)}
	for i := range calls {
		if calls[i].err != nil && !calls[i].stopped {
			ee.failed = append(ee.failed, &calls[i])
		}
	}
	for i := range calls {
		if calls[i].stopped {
			ee.failed = append(ee.failed, &calls[i])
		}
	}
	return ee
}

func (e *ensembleError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ensemble %q: ", e.ensemble)
	var stopped []string
	n := 0
	for _, c := range e.failed {
		if c.stopped {
			stopped = append(stopped, strconv.Quote(c.m.Name))
			continue
		}
		if n > 0 {
			b.WriteString("; ")
		}
		n++
		fmt.Fprintf(&b, "member %q failed: %s", c.m.Name, message(c.err))
	}
	if e.need == e.total {
		fmt.Fprintf(&b, "; %d of %d members answered and the ensemble requires all", e.answered, e.total)
	} else {
		fmt.Fprintf(&b, "; %d of %d members answered, fewer than its min_members %d", e.answered, e.total, e.need)
	}
	if len(stopped) > 0 {
		fmt.Fprintf(&b, " (%s stopped once the call could not succeed)", strings.Join(stopped, ", "))
	}
	return b.String()
}

// Unwrap is the first failure, whose code the caller gets.
func (e *ensembleError) Unwrap() error { return e.failed[0].err }

// combine computes the combined predictions of the members that answered
// (ok, in member order) for n instances; see the comment at the top of the
// file for the arithmetic. "each" combines nothing.
func combine(c route.Combiner, ok []*memberCall, n, topK int) ([]*tfgatev1.Prediction, error) {
	if c == route.CombineEach || len(ok) == 0 {
		return nil, nil
	}
	ref := ok[0]
	for _, m := range ok {
		if got := len(m.resp.GetPredictions()); got != n {
			return nil, fmt.Errorf("%w: member %q returned %d predictions for %d instances", ErrBadBackendResponse, m.m.Name, got, n)
		}
	}
	out := make([]*tfgatev1.Prediction, n)
	for i := range out {
		base := ref.resp.GetPredictions()[i].GetScores()
		if len(base) == 0 {
			return nil, fmt.Errorf("%w: member %q (model %q version %d) returned no class scores; combiner %s needs them", ErrEnsembleClasses, ref.m.Name, ref.m.Model, ref.route.Version, c)
		}
		for _, m := range ok[1:] {
			if err := sameClasses(base, m.resp.GetPredictions()[i].GetScores()); err != nil {
				return nil, fmt.Errorf("%w: member %q (model %q version %d) and member %q (model %q version %d): %v; reload the routing config to have the class lists checked, or use combiner each",
					ErrEnsembleClasses, ref.m.Name, ref.m.Model, ref.route.Version, m.m.Name, m.m.Model, m.route.Version, err)
			}
		}
		scores := make([]tfgatev1.ClassScore, len(base)) // one allocation for the row
		var better func(a, b int) bool
		switch c {
		case route.CombineMean, route.CombineWeightedMean:
			acc := make([]float64, len(base))
			var wsum float64
			for _, m := range ok {
				w := 1.0
				if c == route.CombineWeightedMean {
					w = m.m.Weight
				}
				wsum += w
				for j, cs := range m.resp.GetPredictions()[i].GetScores() {
					acc[j] += w * float64(cs.GetScore())
				}
			}
			for j := range scores {
				scores[j].Score = float32(acc[j] / wsum)
			}
			better = func(a, b int) bool {
				as, bs := scores[a].Score, scores[b].Score
				switch an, bn := as != as, bs != bs; {
				case an != bn:
					return bn
				case !an && as != bs:
					return as > bs
				}
				return a < b
			}
		case route.CombineVote:
			votes := make([]int, len(base))
			weight := make([]float64, len(base))
			for _, m := range ok {
				j := top1(m.resp.GetPredictions()[i].GetScores())
				votes[j]++
				weight[j] += m.m.Weight
			}
			for j := range scores {
				scores[j].Score = float32(float64(votes[j]) / float64(len(ok)))
			}
			better = func(a, b int) bool {
				switch {
				case votes[a] != votes[b]:
					return votes[a] > votes[b]
				case weight[a] != weight[b]:
					return weight[a] > weight[b]
				}
				return a < b
			}
		default:
			return nil, fmt.Errorf("%w: combiner %q", ErrBadBackendResponse, c)
		}
		p := &tfgatev1.Prediction{Scores: make([]*tfgatev1.ClassScore, len(base))}
		for j := range scores {
			scores[j].Index, scores[j].Label = int32(j), base[j].GetLabel()
			p.Scores[j] = &scores[j]
		}
		if topK > 0 {
			idx := make([]int, len(base))
			for j := range idx {
				idx[j] = j
			}
			slices.SortFunc(idx, func(a, b int) int {
				if better(a, b) {
					return -1
				}
				if better(b, a) {
					return 1
				}
				return 0
			})
			p.TopK = make([]*tfgatev1.ClassScore, 0, min(topK, len(idx)))
			for _, j := range idx[:min(topK, len(idx))] {
				p.TopK = append(p.TopK, p.Scores[j])
			}
		}
		out[i] = p
	}
	return out, nil
}

// sameClasses is nil when b scores the same classes as a, in the same order.
func sameClasses(a, b []*tfgatev1.ClassScore) error {
	if len(a) != len(b) {
		return fmt.Errorf("%d classes against %d", len(a), len(b))
	}
	for j := range a {
		if a[j].GetLabel() != b[j].GetLabel() {
			return fmt.Errorf("class %d is %q against %q", j, a[j].GetLabel(), b[j].GetLabel())
		}
	}
	return nil
}

// top1 is the index of the best score (NaN never wins; ties go to the lower
// index), 0 for an all-NaN row.
func top1(scores []*tfgatev1.ClassScore) int {
	best := -1
	for j, cs := range scores {
		v := cs.GetScore()
		if v != v {
			continue
		}
		if best < 0 || v > scores[best].GetScore() {
			best = j
		}
	}
	return max(best, 0)
}

// describeEnsemble is an ensemble as ListRoutes shows it.
func describeEnsemble(e *route.EnsembleRoutes) *tfgatev1.EnsembleRoutes {
	out := &tfgatev1.EnsembleRoutes{
		Name:       e.Name,
		Combiner:   string(e.Combiner),
		MinMembers: uint32(e.Need),
		RequireAll: e.RequireAll,
		TimeoutMs:  float64(e.Timeout.Microseconds()) / 1000,
		Routable:   e.Routable,
	}
	for _, m := range e.Members {
		out.Members = append(out.Members, &tfgatev1.EnsembleMember{
			Member: m.Name, Model: m.Model, Route: m.Target.Describe(), Weight: m.Weight, Routable: m.Routable, Reason: m.Reason,
		})
	}
	return out
}
