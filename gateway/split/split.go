package split

import (
	"context"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/axiomhq/hyperloglog"
	"github.com/cespare/xxhash/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/tfgate/tfgate/gateway/exposure"
	"github.com/tfgate/tfgate/loadtest/stats"
)

// Defaults for [Options].
const (
	// DefaultWindow is the span of the sliding window the SRM test covers.
	DefaultWindow = 10 * time.Minute
	// DefaultSlots is how many slots the window is kept in.
	DefaultSlots = 10
	// DefaultSampleKeys bounds the sampled keys one slot of one experiment holds.
	DefaultSampleKeys = 8192
	// maxArms bounds the arms tracked per experiment (configs have a handful).
	maxArms = 64
)

// hllPrecision is the distinct-key sketches' precision: 2^12 registers, 4 KiB
// per arm, ~1.6% standard error. Dense, because the sparse representation
// costs ~0.9 us per insert while an arm has few keys that repeat (measured:
// a per-customer experiment); dense inserts are O(1) (~6 ns).
const hllPrecision = 12

func newSketch() *hyperloglog.Sketch {
	sk, err := hyperloglog.NewSketch(hllPrecision, false)
	if err != nil {
		panic(err) // hllPrecision is a valid constant
	}
	return sk
}

// Threshold is the SRM p-value below which a split is a mismatch (the load-test
// reports' threshold).
const Threshold = stats.SRMThreshold

// Expected returns the experiment a model currently runs and each arm's
// expected share of its traffic (ok false when the model runs none).
type Expected func(model string) (experiment string, shares map[string]float64, ok bool)

// Options configure a [Monitor]; all optional.
type Options struct {
	// Window is the span the SRM test covers. Default 10m.
	Window time.Duration
	// Slots is how many slots the window moves in. Default 10.
	Slots int
	// SampleKeys bounds the sampled distinct keys per slot and experiment.
	// Default 8192.
	SampleKeys int
	// Expected gives the expected shares; without it Check tests nothing.
	// (Also settable later with SetExpected.)
	Expected Expected
	// Now is the window's clock. Default time.Now.
	Now func() time.Time
	// MeterProvider; nil is a no-op.
	MeterProvider metric.MeterProvider
}

// Monitor counts experiment assignments and tests their split. See the package doc.
type Monitor struct {
	opts     Options
	slotDur  int64 // nanoseconds
	expected atomic.Pointer[Expected]
	mu       sync.RWMutex
	exps     map[expKey]*experiment
	reg      metric.Registration
}

var _ exposure.Sink = (*Monitor)(nil)

type expKey struct{ model, experiment string }

// experiment is one (model, experiment)'s counts, guarded by mu.
type experiment struct {
	key      expKey
	mu       sync.Mutex
	arms     []string
	armIdx   map[string]int
	requests []int64
	keys     []*hyperloglog.Sketch
	slots    []slot
	shares   map[string]float64 // the expected shares the window was kept for
}

// slot is one time slot of the window.
type slot struct {
	epoch   int64 // time / slot duration; 0: unused
	keyless []int64
	tau     uint64           // keys with hash <= tau are sampled
	sampled map[uint64]uint8 // key hash -> arm index
}

// New returns a Monitor exporting its metrics through opts.MeterProvider.
// Close unregisters them.
func New(opts Options) (*Monitor, error) {
	if opts.Window <= 0 {
		opts.Window = DefaultWindow
	}
	if opts.Slots <= 0 {
		opts.Slots = DefaultSlots
	}
	if opts.SampleKeys <= 0 {
		opts.SampleKeys = DefaultSampleKeys
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m := &Monitor{opts: opts, exps: map[expKey]*experiment{}}
	m.slotDur = max(int64(opts.Window)/int64(opts.Slots), 1)
	if opts.Expected != nil {
		m.SetExpected(opts.Expected)
	}
	reg, err := m.register(opts.MeterProvider)
	if err != nil {
		return nil, err
	}
	m.reg = reg
	return m, nil
}

// SetExpected sets where the expected shares come from.
func (m *Monitor) SetExpected(f Expected) { m.expected.Store(&f) }

// Close unregisters the metrics.
func (m *Monitor) Close() error { return m.reg.Unregister() }

// Expose counts r if it was routed by an experiment.
func (m *Monitor) Expose(r exposure.Record) {
	if r.Experiment == "" || r.Arm == "" {
		return
	}
	k := expKey{r.Model, r.Experiment}
	m.mu.RLock()
	e := m.exps[k]
	m.mu.RUnlock()
	if e == nil {
		m.mu.Lock()
		if e = m.exps[k]; e == nil {
			e = &experiment{key: k, armIdx: map[string]int{}, slots: make([]slot, m.opts.Slots)}
			m.exps[k] = e
		}
		m.mu.Unlock()
	}
	epoch := r.Time.UnixNano()/m.slotDur + 1 // + 1: epoch 0 means unused
	var h uint64
	if r.Key != "" {
		h = xxhash.Sum64String(r.Key)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	a, ok := e.armIdx[r.Arm]
	if !ok {
		if len(e.arms) >= maxArms {
			return
		}
		a = len(e.arms)
		e.armIdx[r.Arm] = a
		e.arms = append(e.arms, r.Arm)
		e.requests = append(e.requests, 0)
		e.keys = append(e.keys, newSketch())
	}
	e.requests[a]++
	if r.Key != "" {
		e.keys[a].InsertHash(h)
	}
	s := &e.slots[epoch%int64(len(e.slots))]
	switch {
	case s.epoch > epoch:
		return // a slot the window has moved past
	case s.epoch < epoch:
		s.epoch, s.tau = epoch, math.MaxUint64
		clear(s.keyless)
		clear(s.sampled)
	}
	if r.Key == "" {
		for len(s.keyless) <= a {
			s.keyless = append(s.keyless, 0)
		}
		s.keyless[a]++
		return
	}
	if h > s.tau {
		return
	}
	if s.sampled == nil {
		s.sampled = map[uint64]uint8{}
	}
	s.sampled[h] = uint8(a)
	for len(s.sampled) > m.opts.SampleKeys {
		s.tau /= 2
		for kh := range s.sampled {
			if kh > s.tau {
				delete(s.sampled, kh)
			}
		}
	}
}

// Arm is one arm's counts.
type Arm struct {
	Name string
	// Requests and Keys (estimated distinct keys) are cumulative.
	Requests, Keys int64
	// Expected is the arm's expected share; Units its randomization units in
	// the window (keyless requests plus sampled distinct keys).
	Expected float64
	Units    int64
}

// Result is one experiment's state.
type Result struct {
	Model, Experiment string
	Arms              []Arm
	// Tested is false when the model no longer runs this experiment, or the
	// window holds no units.
	Tested bool
	// N is the window's units; Chi2 and P the SRM test over them.
	N       int64
	Chi2, P float64
	// Mismatch is P < Threshold.
	Mismatch bool
}

// Check tests every experiment seen, sorted by model and experiment.
func (m *Monitor) Check() []Result {
	m.mu.RLock()
	exps := make([]*experiment, 0, len(m.exps))
	for _, e := range m.exps {
		exps = append(exps, e)
	}
	m.mu.RUnlock()
	slices.SortFunc(exps, func(a, b *experiment) int {
		if a.key.model != b.key.model {
			if a.key.model < b.key.model {
				return -1
			}
			return 1
		}
		if a.key.experiment < b.key.experiment {
			return -1
		}
		if a.key.experiment > b.key.experiment {
			return 1
		}
		return 0
	})
	var exp Expected
	if p := m.expected.Load(); p != nil {
		exp = *p
	}
	now := m.opts.Now().UnixNano()/m.slotDur + 1
	out := make([]Result, 0, len(exps))
	for _, e := range exps {
		out = append(out, e.check(exp, now))
	}
	return out
}

func (e *experiment) check(exp Expected, now int64) Result {
	res := Result{Model: e.key.model, Experiment: e.key.experiment}
	var shares map[string]float64
	if exp != nil {
		if name, sh, ok := exp(e.key.model); ok && name == e.key.experiment {
			shares = sh
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if shares != nil && !sameShares(shares, e.shares) {
		if e.shares != nil {
			// The expected split changed: restart the window on the new one
			// (the first check adopts the shares it finds).
			for i := range e.slots {
				e.slots[i] = slot{}
			}
		}
		e.shares = shares
	}
	units := make([]int64, len(e.arms))
	tau := uint64(math.MaxUint64)
	live := func(s *slot) bool { return s.epoch > now-int64(len(e.slots)) && s.epoch <= now }
	for i := range e.slots {
		if s := &e.slots[i]; live(s) && len(s.sampled) > 0 {
			tau = min(tau, s.tau)
		}
	}
	seen := map[uint64]struct{}{}
	for i := range e.slots {
		s := &e.slots[i]
		if !live(s) {
			continue
		}
		for a, n := range s.keyless {
			units[a] += n
		}
		for h, a := range s.sampled {
			if _, dup := seen[h]; h <= tau && !dup {
				seen[h] = struct{}{}
				units[a]++
			}
		}
	}
	names := slices.Clone(e.arms)
	for name := range shares {
		if _, ok := e.armIdx[name]; !ok {
			names = append(names, name)
		}
	}
	var obs []int64
	var ws []float64
	unexpected := false
	for _, name := range names {
		arm := Arm{Name: name, Expected: shares[name]}
		if i, ok := e.armIdx[name]; ok {
			arm.Requests, arm.Keys, arm.Units = e.requests[i], int64(e.keys[i].Estimate()), units[i]
		}
		res.Arms = append(res.Arms, arm)
		res.N += arm.Units
		switch {
		case arm.Expected > 0:
			obs, ws = append(obs, arm.Units), append(ws, arm.Expected)
		case arm.Units > 0:
			unexpected = true // traffic on an arm that should get none
		}
	}
	if shares == nil || res.N == 0 {
		return res
	}
	res.Tested = true
	if unexpected {
		res.Chi2, res.P, res.Mismatch = math.Inf(1), 0, true
		return res
	}
	if len(obs) < 2 {
		res.P = 1 // one arm: nothing to mismatch
		return res
	}
	chi2, p, err := stats.SRM(obs, ws)
	if err != nil {
		res.Tested = false
		return res
	}
	res.Chi2, res.P, res.Mismatch = chi2, p, p < Threshold
	return res
}

func sameShares(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || math.Abs(v-w) > 1e-9 {
			return false
		}
	}
	return true
}

func (m *Monitor) register(mp metric.MeterProvider) (metric.Registration, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	mt := mp.Meter("github.com/tfgate/tfgate/gateway/split")
	assign, err := mt.Int64ObservableCounter("tfgate.experiment.assignments", metric.WithDescription("Requests an experiment assigned to each arm (every outcome)."))
	if err != nil {
		return nil, err
	}
	keys, err := mt.Int64ObservableGauge("tfgate.experiment.keys", metric.WithDescription("Distinct routing keys assigned to each arm since the gateway started (HyperLogLog estimate, ~1.6% error)."))
	if err != nil {
		return nil, err
	}
	pval, err := mt.Float64ObservableGauge("tfgate.experiment.srm.p_value", metric.WithDescription("Chi-square SRM p-value of the arms' randomization units in the sliding window against their expected shares; below 0.001 the split is not what the config asks for."))
	if err != nil {
		return nil, err
	}
	units, err := mt.Int64ObservableGauge("tfgate.experiment.srm.units", metric.WithDescription("Randomization units (keyless requests plus sampled distinct keys) in the SRM window."))
	if err != nil {
		return nil, err
	}
	return mt.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, r := range m.Check() {
			base := []attribute.KeyValue{attribute.String("model", r.Model), attribute.String("experiment", r.Experiment)}
			for _, a := range r.Arms {
				set := metric.WithAttributeSet(attribute.NewSet(append(slices.Clip(base), attribute.String("arm", a.Name))...))
				o.ObserveInt64(assign, a.Requests, set)
				o.ObserveInt64(keys, a.Keys, set)
			}
			if r.Tested {
				set := metric.WithAttributeSet(attribute.NewSet(base...))
				o.ObserveFloat64(pval, r.P, set)
				o.ObserveInt64(units, r.N, set)
			}
		}
		return nil
	}, assign, keys, pval, units)
}
