package loadtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Arrival processes are checked on a simulated clock: the gaps are summed, no
// wall time passes, so the test is exact and cannot flake on a busy machine.
func TestArrivalRateAccuracy(t *testing.T) {
	tests := []struct {
		name   string
		kind   string
		rate   float64
		window time.Duration
		tol    float64 // relative
		// wantCV is the coefficient of variation of the gaps: 0 for fixed, 1 for
		// Poisson (exponential gaps).
		wantCV float64
	}{
		{name: "fixed 1000/s", kind: "fixed", rate: 1000, window: 100 * time.Second, tol: 1e-4, wantCV: 0},
		{name: "fixed 3/s non-integer period", kind: "fixed", rate: 3, window: 1000 * time.Second, tol: 1e-3, wantCV: 0},
		{name: "fixed 7777/s", kind: "fixed", rate: 7777, window: 30 * time.Second, tol: 1e-4, wantCV: 0},
		{name: "poisson 1000/s", kind: "poisson", rate: 1000, window: 100 * time.Second, tol: 0.01, wantCV: 1},
		{name: "poisson 50/s", kind: "poisson", rate: 50, window: 2000 * time.Second, tol: 0.01, wantCV: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := NewArrivals(tc.kind, tc.rate, rand.New(rand.NewPCG(42, 1)))
			if err != nil {
				t.Fatal(err)
			}
			var clock time.Duration
			var n, sum, sumSq float64
			for {
				gap := a.Next()
				if gap < 0 {
					t.Fatalf("negative gap %v", gap)
				}
				clock += gap
				if clock > tc.window {
					break
				}
				n++
				g := gap.Seconds()
				sum += g
				sumSq += g * g
			}
			want := tc.rate * tc.window.Seconds()
			if math.Abs(n-want) > tc.tol*want+1 {
				t.Errorf("%s at %v/s over %v: %v arrivals, want %v ± %.0f", tc.kind, tc.rate, tc.window, n, want, tc.tol*want)
			}
			mean := sum / n
			cv := math.Sqrt(math.Max(sumSq/n-mean*mean, 0)) / mean
			if math.Abs(cv-tc.wantCV) > 0.02 {
				t.Errorf("%s gaps: coefficient of variation %.3f, want %.1f", tc.kind, cv, tc.wantCV)
			}
		})
	}
}

func TestNewArrivalsRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		kind string
		rate float64
	}{{"zero rate", "fixed", 0}, {"NaN rate", "poisson", math.NaN()}, {"unknown kind", "bursty", 10}} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewArrivals(tc.kind, tc.rate, nil); !errors.Is(err, ErrConfig) {
				t.Errorf("NewArrivals(%q, %v) = %v, want ErrConfig", tc.kind, tc.rate, err)
			}
		})
	}
}

// fakeTarget answers from memory: arm by routing key parity, a failure for label
// "broken". It records the deadlines it saw.
type fakeTarget struct {
	calls   atomic.Int64
	mu      sync.Mutex
	maxSeen int
	inside  atomic.Int64
	hold    time.Duration
}

func (f *fakeTarget) Do(ctx context.Context, r *Request) Result {
	f.calls.Add(1)
	n := int(f.inside.Add(1))
	defer f.inside.Add(-1)
	f.mu.Lock()
	f.maxSeen = max(f.maxSeen, n)
	f.mu.Unlock()
	if f.hold > 0 {
		select {
		case <-time.After(f.hold):
		case <-ctx.Done():
			return Result{Err: status.FromContextError(ctx.Err()).Err()}
		}
	}
	if r.Label == "broken" {
		return Result{Err: status.Error(codes.NotFound, "no such label")}
	}
	arm := "control"
	if len(r.RoutingKey)%2 == 0 {
		arm = "treatment"
	}
	return Result{Model: r.Model, Version: 3, Arm: arm}
}

func testWorkload(t *testing.T, y string) *Workload {
	t.Helper()
	w, err := ParseWorkload(strings.NewReader(y))
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestRunCountsExactly(t *testing.T) {
	w := testWorkload(t, "models: [{name: m, routes: [{weight: 3}, {label: broken, weight: 1}]}]\n")
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "open fixed", cfg: Config{Mode: "open", Rate: 20000, Requests: 400}},
		{name: "open poisson", cfg: Config{Mode: "open", Arrival: "poisson", Rate: 20000, Requests: 400}},
		{name: "closed", cfg: Config{Mode: "closed", Concurrency: 4, Requests: 400}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ft := &fakeTarget{}
			var prog bytes.Buffer
			tc.cfg.Progress = &prog
			out, err := Run(context.Background(), tc.cfg, w, ft)
			if err != nil {
				t.Fatal(err)
			}
			rec := out.Recorder
			if got := rec.OK + rec.Failed; got != 400 {
				t.Errorf("recorded %d requests, want 400", got)
			}
			if out.Total != 400 {
				t.Errorf("total = %d, want 400", out.Total)
			}
			if got := ft.calls.Load(); got != 400 {
				t.Errorf("target saw %d calls, want 400", got)
			}
			if rec.Failed == 0 || rec.OK == 0 {
				t.Errorf("ok %d failed %d, want both (a quarter go to a broken label)", rec.OK, rec.Failed)
			}
			if rec.Errors["NotFound"] != "no such label" {
				t.Errorf("errors = %v, want NotFound example", rec.Errors)
			}
			if !strings.Contains(prog.String(), "done 400") {
				t.Errorf("final progress line %q does not say done 400", prog.String())
			}
		})
	}
}

func TestRunWarmupIsNotRecorded(t *testing.T) {
	w := testWorkload(t, "models: [{name: m}]\n")
	ft := &fakeTarget{}
	out, err := Run(context.Background(), Config{Mode: "open", Rate: 2000, Warmup: 100 * time.Millisecond, Requests: 50}, w, ft)
	if err != nil {
		t.Fatal(err)
	}
	if got := out.Recorder.OK; got != 50 {
		t.Errorf("recorded %d, want 50", got)
	}
	if calls := ft.calls.Load(); calls <= 50 {
		t.Errorf("target saw %d calls, want more than the 50 measured (warm-up traffic)", calls)
	}
}

func TestRunBoundsInFlight(t *testing.T) {
	w := testWorkload(t, "models: [{name: m}]\n")
	ft := &fakeTarget{hold: 20 * time.Millisecond}
	out, err := Run(context.Background(), Config{Mode: "open", Rate: 5000, MaxInFlight: 3, Requests: 30}, w, ft)
	if err != nil {
		t.Fatal(err)
	}
	if ft.maxSeen > 3 {
		t.Errorf("target saw %d concurrent requests, want at most 3", ft.maxSeen)
	}
	// 30 requests, 3 at a time, 20 ms each: the schedule (6 ms) cannot be kept, so
	// requests are late and the latency from intended send time shows the queueing.
	if out.Late == 0 {
		t.Errorf("late = 0, want the in-flight bound to delay sends")
	}
	if p := out.Recorder.All.Max(); p < 100_000 {
		t.Errorf("max latency %dµs, want >= 100ms of queueing counted (no coordinated omission)", p)
	}
	// Latency from the intended send time is never below latency from the actual send.
	svc := out.Recorder.Service
	if svc.TotalCount() != out.Recorder.All.TotalCount() || svc.Max() > out.Recorder.All.Max() {
		t.Errorf("service latency count %d max %dµs vs intended-time count %d max %dµs: want equal counts and service max <= intended max",
			svc.TotalCount(), svc.Max(), out.Recorder.All.TotalCount(), out.Recorder.All.Max())
	}
}

func TestRunCancelled(t *testing.T) {
	w := testWorkload(t, "models: [{name: m}]\n")
	ctx, cancel := context.WithCancel(context.Background())
	ft := &fakeTarget{hold: time.Millisecond}
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	_, err := Run(ctx, Config{Mode: "closed", Concurrency: 2, Duration: time.Hour}, w, ft)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run after cancel = %v, want context.Canceled", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{name: "open without rate", cfg: Config{Duration: time.Second}, want: "rate 0"},
		{name: "no end", cfg: Config{Mode: "closed"}, want: "set a duration or a request count"},
		{name: "bad mode", cfg: Config{Mode: "burst", Duration: time.Second}, want: `mode "burst"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate(%+v) = %v, want ErrConfig mentioning %q", tc.cfg, err, tc.want)
			}
		})
	}
}

// The trace has one line per request, warm-up included, and its models in
// sequence order are the generator's stream for the seed: a baseline computed
// offline from the trace sees exactly the requests the target saw.
func TestRunTrace(t *testing.T) {
	w := testWorkload(t, "seed: 7\nrouting_keys: {customers: 500, zipf_s: 1.1}\nmodels: [{name: 'cust-{n}', count: 500, routes: [{version: 1}]}]\n")
	ft := &fakeTarget{}
	var trace bytes.Buffer
	out, err := Run(context.Background(), Config{Mode: "open", Rate: 5000, Warmup: 20 * time.Millisecond, Requests: 200, Trace: &trace}, w, ft)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(trace.String(), "\n"), "\n")
	if lines[0] != TraceHeader {
		t.Fatalf("trace header %q, want %q", lines[0], TraceHeader)
	}
	lines = lines[1:]
	if int64(len(lines)) != out.Total {
		t.Fatalf("trace has %d lines, run completed %d requests", len(lines), out.Total)
	}
	models := make([]string, len(lines))
	warm := 0
	for _, l := range lines {
		f := strings.Split(l, "\t")
		if len(f) != 7 {
			t.Fatalf("trace line %q: %d fields, want 7", l, len(f))
		}
		var seq int
		if _, err := fmt.Sscan(f[0], &seq); err != nil || seq < 0 || seq >= len(lines) || models[seq] != "" {
			t.Fatalf("trace line %q: bad or repeated seq", l)
		}
		models[seq] = f[3]
		if f[2] == "1" {
			warm++
		}
		if f[4] != "1" || f[5] != "OK" {
			t.Errorf("trace line %q: want version 1, code OK", l)
		}
	}
	if warm == 0 || int64(len(lines)-warm) != out.Recorder.OK {
		t.Errorf("%d warm-up lines, %d measured; recorder has %d measured", warm, len(lines)-warm, out.Recorder.OK)
	}
	gen := NewGenerator(w, 0)
	for i, m := range models {
		if want := gen.Next().Model; m != want {
			t.Fatalf("trace request %d is for %s, the generator's stream has %s", i, m, want)
		}
	}
}
