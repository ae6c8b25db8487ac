// Package shadow compares a shadow version's predictions with the primary's
// and keeps the running comparison per (model, primary version, shadow
// version): top-1 agreement, maximum and mean absolute score difference, and
// the shadow call's latency, exported as metrics and read by ListRoutes.
//
// It holds no request state and does no I/O: the gateway (shadow.go) makes the
// shadow call and hands the two outputs to [Tracker.Compared], or reports a
// shed or failed shadow.
//
// # Concurrency
//
// A Tracker is safe for concurrent use; each (model, primary, shadow) has its
// own mutex.
package shadow

import (
	"context"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// Diff is the comparison of one request's predictions (one per instance).
type Diff struct {
	// Instances compared; Top1 of them have a top-1 class (classifiers), and
	// Agree of those agree on it.
	Instances, Top1, Agree int
	// Values is how many output values were compared (scores, regression
	// values, embedding entries); SumAbs their summed absolute difference and
	// MaxAbs the largest.
	Values         int
	SumAbs, MaxAbs float64
	// Mismatched counts instances whose outputs have different shapes (not
	// compared value by value).
	Mismatched int
}

// Compare compares the primary's and the shadow's predictions of the same
// instances.
func Compare(primary, shadow []*tfgatev1.Prediction) Diff {
	var d Diff
	n := min(len(primary), len(shadow))
	d.Mismatched = max(len(primary), len(shadow)) - n
	for i := 0; i < n; i++ {
		p, s := primary[i], shadow[i]
		d.Instances++
		ps, ss := p.GetScores(), s.GetScores()
		if len(ps) > 0 && len(ps) == len(ss) {
			d.Top1++
			if argmax(ps) == argmax(ss) {
				d.Agree++
			}
			for j := range ps {
				d.add(float64(ps[j].GetScore()), float64(ss[j].GetScore()))
			}
		} else if len(ps) > 0 || len(ss) > 0 {
			d.Mismatched++
			continue
		}
		pv, sv := p.GetValues(), s.GetValues()
		if len(pv) != len(sv) {
			d.Mismatched++
			continue
		}
		for j := range pv {
			d.add(pv[j], sv[j])
		}
		pe, se := p.GetEmbedding(), s.GetEmbedding()
		if len(pe) != len(se) {
			d.Mismatched++
			continue
		}
		for j := range pe {
			d.add(float64(pe[j]), float64(se[j]))
		}
	}
	return d
}

func (d *Diff) add(a, b float64) {
	x := math.Abs(a - b)
	d.Values++
	d.SumAbs += x
	d.MaxAbs = max(d.MaxAbs, x)
}

// argmax is the index of the best class (the first of equals).
func argmax(cs []*tfgatev1.ClassScore) int32 {
	best := 0
	for i, c := range cs {
		if c.GetScore() > cs[best].GetScore() {
			best = i
		}
	}
	return cs[best].GetIndex()
}

// Key names one comparison.
type Key struct {
	Model           string
	Primary, Shadow int64
}

// Stats is one comparison's running totals.
type Stats struct {
	Key
	// Requests compared; Shed were dropped before the call (too many shadows in
	// flight); Failed got no usable answer (error, deadline, version mismatch).
	Requests, Shed, Failed uint64
	// Instances, Top1 and Agree as in Diff, summed.
	Instances, Top1, Agree uint64
	// Values, SumAbs and MaxAbs as in Diff, over every compared request.
	Values         uint64
	SumAbs, MaxAbs float64
	Mismatched     uint64
	// Latency sums the shadow calls' durations (Requests + Failed of them).
	Latency time.Duration
}

// Agreement is the share of top-1 comparisons that agreed (NaN without any).
func (s Stats) Agreement() float64 {
	if s.Top1 == 0 {
		return math.NaN()
	}
	return float64(s.Agree) / float64(s.Top1)
}

// MeanAbs is the mean absolute difference over every compared value.
func (s Stats) MeanAbs() float64 {
	if s.Values == 0 {
		return math.NaN()
	}
	return s.SumAbs / float64(s.Values)
}

type entry struct {
	mu sync.Mutex
	s  Stats
}

// Tracker keeps every comparison's Stats and exports them.
type Tracker struct {
	mu      sync.RWMutex
	entries map[Key]*entry
	dur     metric.Float64Histogram
	reg     metric.Registration
}

// NewTracker returns a Tracker exporting through mp (nil: no-op). Close
// unregisters its metrics.
func NewTracker(mp metric.MeterProvider) (*Tracker, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	t := &Tracker{entries: map[Key]*entry{}}
	m := mp.Meter("github.com/tfgate/tfgate/gateway/shadow")
	var err error
	if t.dur, err = m.Float64Histogram("tfgate.shadow.duration", metric.WithUnit("s"), metric.WithDescription("Shadow calls' duration (preprocessing, backend call, decoding), by model, primary and shadow version."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)); err != nil {
		return nil, err
	}
	if t.reg, err = t.register(m); err != nil {
		return nil, err
	}
	return t, nil
}

// Close unregisters the metrics.
func (t *Tracker) Close() error { return t.reg.Unregister() }

func (t *Tracker) entry(k Key) *entry {
	t.mu.RLock()
	e := t.entries[k]
	t.mu.RUnlock()
	if e != nil {
		return e
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if e = t.entries[k]; e == nil {
		e = &entry{s: Stats{Key: k}}
		t.entries[k] = e
	}
	return e
}

func (k Key) attrs() metric.MeasurementOption {
	return metric.WithAttributeSet(attribute.NewSet(attribute.String("model", k.Model),
		attribute.String("primary", strconv.FormatInt(k.Primary, 10)), attribute.String("shadow", strconv.FormatInt(k.Shadow, 10))))
}

// Compared records one compared request.
func (t *Tracker) Compared(k Key, d Diff, latency time.Duration) {
	e := t.entry(k)
	e.mu.Lock()
	s := &e.s
	s.Requests++
	s.Instances += uint64(d.Instances)
	s.Top1 += uint64(d.Top1)
	s.Agree += uint64(d.Agree)
	s.Values += uint64(d.Values)
	s.SumAbs += d.SumAbs
	s.MaxAbs = max(s.MaxAbs, d.MaxAbs)
	s.Mismatched += uint64(d.Mismatched)
	s.Latency += latency
	e.mu.Unlock()
	t.dur.Record(context.Background(), latency.Seconds(), k.attrs())
}

// Shed records a shadow dropped before its call.
func (t *Tracker) Shed(k Key) {
	e := t.entry(k)
	e.mu.Lock()
	e.s.Shed++
	e.mu.Unlock()
}

// Failed records a shadow call without a usable answer.
func (t *Tracker) Failed(k Key, latency time.Duration) {
	e := t.entry(k)
	e.mu.Lock()
	e.s.Failed++
	e.s.Latency += latency
	e.mu.Unlock()
	t.dur.Record(context.Background(), latency.Seconds(), k.attrs())
}

// Stats returns every comparison of model ("" for all), by model, primary, shadow.
func (t *Tracker) Stats(model string) []Stats {
	t.mu.RLock()
	out := make([]Stats, 0, len(t.entries))
	for k, e := range t.entries {
		if model != "" && k.Model != model {
			continue
		}
		e.mu.Lock()
		out = append(out, e.s)
		e.mu.Unlock()
	}
	t.mu.RUnlock()
	slices.SortFunc(out, func(a, b Stats) int {
		switch {
		case a.Model != b.Model:
			if a.Model < b.Model {
				return -1
			}
			return 1
		case a.Primary != b.Primary:
			return int(a.Primary - b.Primary)
		}
		return int(a.Shadow - b.Shadow)
	})
	return out
}

func (t *Tracker) register(m metric.Meter) (metric.Registration, error) {
	reqs, err := m.Int64ObservableCounter("tfgate.shadow.requests", metric.WithDescription("Shadowed requests by outcome: compared, shed (too many shadows in flight), failed."))
	if err != nil {
		return nil, err
	}
	agree, err := m.Float64ObservableGauge("tfgate.shadow.top1_agreement", metric.WithDescription("Share of compared instances whose top-1 class agrees between primary and shadow, since start."))
	if err != nil {
		return nil, err
	}
	maxAbs, err := m.Float64ObservableGauge("tfgate.shadow.max_abs_diff", metric.WithDescription("Largest absolute difference of any output value between primary and shadow, since start."))
	if err != nil {
		return nil, err
	}
	meanAbs, err := m.Float64ObservableGauge("tfgate.shadow.mean_abs_diff", metric.WithDescription("Mean absolute difference of the output values between primary and shadow, since start."))
	if err != nil {
		return nil, err
	}
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, s := range t.Stats("") {
			base := []attribute.KeyValue{attribute.String("model", s.Model),
				attribute.String("primary", strconv.FormatInt(s.Primary, 10)), attribute.String("shadow", strconv.FormatInt(s.Shadow, 10))}
			for _, c := range []struct {
				outcome string
				n       uint64
			}{{"compared", s.Requests}, {"shed", s.Shed}, {"failed", s.Failed}} {
				o.ObserveInt64(reqs, int64(c.n), metric.WithAttributeSet(attribute.NewSet(append(slices.Clip(base), attribute.String("outcome", c.outcome))...)))
			}
			set := metric.WithAttributeSet(attribute.NewSet(base...))
			if a := s.Agreement(); !math.IsNaN(a) {
				o.ObserveFloat64(agree, a, set)
			}
			if s.Values > 0 {
				o.ObserveFloat64(maxAbs, s.MaxAbs, set)
				o.ObserveFloat64(meanAbs, s.MeanAbs(), set)
			}
		}
		return nil
	}, reqs, agree, maxAbs, meanAbs)
}
