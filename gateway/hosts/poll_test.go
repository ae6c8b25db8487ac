package hosts

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tfgate/tfgate/gateway/discovery"
	"github.com/tfgate/tfgate/internal/testwait"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// modelNames returns n model names m0000, m0001, ... (sorted as strings).
func modelNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("m%04d", i)
	}
	return out
}

// fakeWith starts a fake serving version 1 of every model.
func fakeWith(t *testing.T, models []string) *fakeTFS {
	vs := make(map[string][]int64, len(models))
	for _, m := range models {
		vs[m] = []int64{1}
	}
	return startFake(t, vs)
}

// newPolled builds a Manager over addrs (pool "p") without Run: the test drives
// poll rounds itself with pollRound, so what each round sends is deterministic.
func newPolled(t *testing.T, rc ReadinessConfig, models []string, opts Options, addrs ...string) *Manager {
	t.Helper()
	cfg := testConfig(map[string][]string{"p": addrs})
	cfg.Readiness = rc
	m, err := New(cfg, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	m.SetModels(models)
	eps := make([]discovery.Endpoint, 0, len(addrs))
	for _, a := range addrs {
		eps = append(eps, discovery.Endpoint{Addr: a, ID: a})
	}
	m.setPool("p", eps)
	t.Cleanup(func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		for a, h := range m.hosts {
			h.remove()
			delete(m.hosts, a)
		}
	})
	return m
}

func readiness(interval time.Duration, perSecond int) ReadinessConfig {
	rc := DefaultConfig().Readiness
	rc.Interval, rc.MaxPollsPerSecond = interval, perSecond
	return rc
}

// diff returns after - before per model (models with no change left out).
func diff(before, after map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func drainKick(m *Manager) {
	select {
	case <-m.pollNow:
	default:
	}
}

func kicked(m *Manager) bool {
	select {
	case <-m.pollNow:
		return true
	default:
		return false
	}
}

func TestResyncQuota(t *testing.T) {
	for _, tc := range []struct {
		interval  time.Duration
		perSecond int
		want      int
	}{
		{time.Second, 1000, 1000},
		{50 * time.Millisecond, 10, 1}, // 0.5 rounds up
		{50 * time.Millisecond, 1, 1},  // at least one per tick
		{100 * time.Millisecond, 30, 3},
		{250 * time.Millisecond, 1000, 250},
	} {
		if got := resyncQuota(readiness(tc.interval, tc.perSecond)); got != tc.want {
			t.Errorf("resyncQuota(interval %v, %d/s) = %d, want %d", tc.interval, tc.perSecond, got, tc.want)
		}
	}
}

// A wanted version is polled on the next round even when the resync budget would
// take hundreds of rounds to reach its model.
func TestWantFastPath(t *testing.T) {
	for _, tc := range []struct {
		name      string
		models    int
		perSecond int // with a 50ms interval
		hosts     int
	}{
		{name: "1000 models, 10 polls/s", models: 1000, perSecond: 10, hosts: 1},
		{name: "1000 models, 10 polls/s, two hosts", models: 1000, perSecond: 10, hosts: 2},
		{name: "300 models, 100 polls/s", models: 300, perSecond: 100, hosts: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			models := modelNames(tc.models)
			target := models[tc.models/2]
			var fakes []*fakeTFS
			var addrs []string
			for i := 0; i < tc.hosts; i++ {
				f := fakeWith(t, models)
				fakes = append(fakes, f)
				addrs = append(addrs, f.addr)
			}
			m := newPolled(t, readiness(50*time.Millisecond, tc.perSecond), models, Options{}, addrs...)
			ctx := context.Background()
			quota := m.quota

			// Round 1: nothing answered yet, so every model is priority on every host.
			if !m.pollRound(ctx, true) {
				t.Fatal("first round incomplete")
			}
			for i, f := range fakes {
				c := f.pollCounts()
				for _, model := range models {
					if c[model] != 1 {
						t.Fatalf("host %d: %s polled %d times in the first round, want 1", i, model, c[model])
					}
				}
			}
			if got := m.Snapshot().Entries(); got != tc.models*tc.hosts {
				t.Fatalf("entries after the first round = %d, want %d", got, tc.models*tc.hosts)
			}

			// Version 2 appears; the resync alone does not reach it in two rounds.
			for _, f := range fakes {
				f.setVersions(target, 1, 2)
			}
			before := fakes[0].pollCounts()
			for i := 0; i < 2; i++ {
				m.pollRound(ctx, true)
			}
			if d := diff(before, fakes[0].pollCounts()); total(d) != 2*quota || d[target] != 0 {
				t.Fatalf("two resync rounds polled %v, want %d models, not %s", d, 2*quota, target)
			}
			if m.Snapshot().Available(target, 2, []string{"p"}) {
				t.Fatalf("%s v2 available before Want (resync reached it?)", target)
			}

			// Want: kicks a round, which polls it on every host.
			drainKick(m)
			m.Want(target, 2)
			m.Want(target, 2) // repeated: no second entry
			if !kicked(m) {
				t.Fatal("Want of a new key did not kick a poll round")
			}
			befores := make([]map[string]int, len(fakes))
			for i, f := range fakes {
				befores[i] = f.pollCounts()
			}
			m.pollRound(ctx, false) // the kicked round: priority only
			for i, f := range fakes {
				if d := diff(befores[i], f.pollCounts()); total(d) != 1 || d[target] != 1 {
					t.Errorf("host %d: kicked round polled %v, want only %s once", i, d, target)
				}
			}
			if got := m.Snapshot().Hosts(target, 2); len(got) != tc.hosts {
				t.Fatalf("Hosts(%s, 2) after the wanted round = %v, want all %d", target, got, tc.hosts)
			}
			m.wantMu.Lock()
			n := len(m.wants)
			m.wantMu.Unlock()
			if n != 0 {
				t.Errorf("wants after %s v2 became AVAILABLE = %d, want 0 (dropped)", target, n)
			}

			// Dropped: later rounds leave it to the resync again; wanting a
			// routable version neither adds nor kicks.
			before = fakes[0].pollCounts()
			m.pollRound(ctx, true)
			if d := diff(before, fakes[0].pollCounts()); d[target] != 0 {
				t.Errorf("round after the drop polled %s again: %v", target, d)
			}
			m.Want(target, 2)
			if kicked(m) {
				t.Error("Want of an AVAILABLE version kicked a poll round")
			}
		})
	}
}

// The resync polls at most interval x max_polls_per_second models per host per
// tick, round robin, so every model is polled equally often; kicked rounds with
// nothing pending poll nothing.
func TestResyncBudget(t *testing.T) {
	for _, tc := range []struct {
		name      string
		models    int
		interval  time.Duration
		perSecond int
		rounds    int
		perRound  int // polls per host per tick round
		each      int // polls of every model over rounds
	}{
		{name: "small scale: every model every round", models: 10, interval: 50 * time.Millisecond, perSecond: 1000, rounds: 3, perRound: 10, each: 3},
		{name: "100 models at 10 per round", models: 100, interval: 100 * time.Millisecond, perSecond: 100, rounds: 20, perRound: 10, each: 2},
		{name: "7 models at 3 per round wraps evenly", models: 7, interval: 100 * time.Millisecond, perSecond: 30, rounds: 7, perRound: 3, each: 3},
		{name: "one per round", models: 5, interval: 50 * time.Millisecond, perSecond: 1, rounds: 10, perRound: 1, each: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			models := modelNames(tc.models)
			a, b := fakeWith(t, models), fakeWith(t, models)
			m := newPolled(t, readiness(tc.interval, tc.perSecond), models, Options{}, a.addr, b.addr)
			ctx := context.Background()
			m.pollRound(ctx, true)
			startA, startB := a.pollCounts(), b.pollCounts()
			prevA := startA
			for r := 0; r < tc.rounds; r++ {
				m.pollRound(ctx, true)
				cur := a.pollCounts()
				if got := total(diff(prevA, cur)); got != tc.perRound {
					t.Fatalf("tick round %d sent %d polls to host a, want %d (budget)", r, got, tc.perRound)
				}
				prevA = cur
			}
			for name, f := range map[string]struct {
				start map[string]int
				f     *fakeTFS
			}{"a": {startA, a}, "b": {startB, b}} {
				d := diff(f.start, f.f.pollCounts())
				for _, model := range models {
					if d[model] != tc.each {
						t.Errorf("host %s: %s polled %d times in %d rounds, want %d (all: %v)", name, model, d[model], tc.rounds, tc.each, d)
					}
				}
			}
			before := a.pollCounts()
			m.pollRound(ctx, false)
			if d := diff(before, a.pollCounts()); len(d) != 0 {
				t.Errorf("kicked round with nothing pending polled %v, want nothing", d)
			}
		})
	}
}

// A call that gets NOT_FOUND from a host marks (host, model) for the next round,
// which drops the version the host no longer has.
func TestNotFoundMarksPending(t *testing.T) {
	models := modelNames(100)
	target := models[42]
	a := fakeWith(t, models)
	m := newPolled(t, readiness(50*time.Millisecond, 10), models, Options{}, a.addr)
	ctx := context.Background()
	m.pollRound(ctx, true)
	if !m.Snapshot().Available(target, 1, []string{"p"}) {
		t.Fatalf("%s v1 not available after the first round", target)
	}
	a.setVersions(target) // unloaded behind readiness's back
	drainKick(m)
	_, _, err := m.Predict(ctx, []string{"p"}, predictReq(target, 1))
	if status.Code(err) != codes.NotFound || !m.Snapshot().Available(target, 1, []string{"p"}) {
		t.Fatalf("Predict of an unloaded version: err %v (want the host's NOT_FOUND), still in snapshot: %v",
			err, m.Snapshot().Available(target, 1, []string{"p"}))
	}
	if !kicked(m) {
		t.Error("NOT_FOUND did not kick a poll round")
	}
	before := a.pollCounts()
	m.pollRound(ctx, false)
	if d := diff(before, a.pollCounts()); total(d) != 1 || d[target] != 1 {
		t.Errorf("round after NOT_FOUND polled %v, want only %s", d, target)
	}
	if m.Snapshot().Available(target, 1, []string{"p"}) {
		t.Errorf("%s v1 still available after the re-poll", target)
	}
	before = a.pollCounts()
	m.pollRound(ctx, false)
	if d := diff(before, a.pollCounts()); len(d) != 0 {
		t.Errorf("second kicked round polled %v, want nothing (mark consumed)", d)
	}
}

// A host that fails every poll at the transport level costs at most one
// concurrency's worth of polls per round, and loses all its versions after
// failure_threshold rounds (not model by model at the resync rate).
func TestDeadHost(t *testing.T) {
	models := modelNames(minPriorityBatch + 100) // more than one round's priority batch
	a := fakeWith(t, models)
	var sent atomic.Int64
	count := grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if method == servingpb.ModelService_GetModelStatus_FullMethodName {
			sent.Add(1)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	})
	rc := readiness(50*time.Millisecond, 1000) // quota 50 per tick
	rc.Concurrency = 4
	m := newPolled(t, rc, models, Options{DialOptions: []grpc.DialOption{count}}, a.addr)
	ctx := context.Background()
	for i := 0; !m.pollRound(ctx, true); i++ {
		if i > 2 {
			t.Fatalf("start-up of %d models took more than %d rounds", len(models), i+1)
		}
	}
	if got := m.Snapshot().Entries(); got != len(models) {
		t.Fatalf("entries = %d, want %d", got, len(models))
	}
	a.srv.Stop()
	for r := 1; r <= rc.FailureThreshold; r++ {
		before := sent.Load()
		m.pollRound(ctx, true)
		if n := sent.Load() - before; n < 1 || n > int64(rc.Concurrency) {
			t.Errorf("round %d to a dead host sent %d polls, want 1..%d", r, n, rc.Concurrency)
		}
		got := m.Snapshot().Entries()
		if r < rc.FailureThreshold && got != len(models) {
			t.Errorf("after %d failed rounds entries = %d, want %d (threshold %d)", r, got, len(models), rc.FailureThreshold)
		}
		if r == rc.FailureThreshold && got != 0 {
			t.Errorf("after %d failed rounds entries = %d, want 0", r, got)
		}
	}
	// Now every model is pending again, but the dead host still costs little.
	before := sent.Load()
	if !m.pollRound(ctx, false) {
		t.Error("round with only a dead host's pending models reported incomplete (would spin)")
	}
	if n := sent.Load() - before; n > int64(rc.Concurrency) {
		t.Errorf("round with %d pending on a dead host sent %d polls, want <= %d", len(models), n, rc.Concurrency)
	}
}

// Want's set is bounded by wantsPerModel x models, and forgets models no longer
// served.
func TestWantBounded(t *testing.T) {
	models := []string{"a", "b"}
	f := startFake(t, map[string][]int64{"a": {1}, "b": {1}})
	m := newPolled(t, readiness(50*time.Millisecond, 1000), models, Options{}, f.addr)
	ctx := context.Background()
	m.pollRound(ctx, true)
	wants := func() int {
		m.wantMu.Lock()
		defer m.wantMu.Unlock()
		return len(m.wants)
	}
	m.Want("gone", 1) // not served: dropped at the next round
	for v := int64(2); v < 30; v++ {
		m.Want("a", v)
	}
	if got, want := wants(), wantsPerModel*len(models); got != want {
		t.Fatalf("wants after 29 Want calls = %d, want the bound %d", got, want)
	}
	m.pollRound(ctx, false)
	if got, want := wants(), wantsPerModel*len(models)-1; got != want {
		t.Errorf("wants after a round = %d, want %d (the unserved model dropped)", got, want)
	}
	m.SetModels([]string{"b"})
	m.pollRound(ctx, false)
	if got := wants(); got != 0 {
		t.Errorf("wants after model a left SetModels = %d, want 0", got)
	}
}

// Through Run with ticks too far apart to matter: only Want's kick can make the
// new version routable.
func TestWantKicksRunningPoller(t *testing.T) {
	models := modelNames(50)
	a := fakeWith(t, models)
	cfg := testConfig(map[string][]string{"p": {a.addr}})
	cfg.Readiness.Interval = time.Hour
	m := startManager(t, cfg, Options{}, models...)
	if got := m.Snapshot().Entries(); got != len(models) {
		t.Fatalf("entries at Ready = %d, want %d (every model answered)", got, len(models))
	}
	a.setVersions(models[7], 1, 2)
	m.Want(models[7], 2)
	testwait.Until(t, "wanted version routable", func() bool { return m.Snapshot().Available(models[7], 2, []string{"p"}) })
}

// With more never-answered models than one round's priority batch, start-up is
// spread over back-to-back rounds and Ready waits for all of them.
func TestReadyAfterAllAnswered(t *testing.T) {
	models := modelNames(minPriorityBatch + 500)
	a := fakeWith(t, models)
	cfg := testConfig(map[string][]string{"p": {a.addr}})
	cfg.Readiness.Interval = time.Hour // no ticks: only the self-kicked rounds
	m := startManager(t, cfg, Options{}, models...)
	if got := m.Snapshot().Entries(); got != len(models) {
		t.Fatalf("entries at Ready = %d, want %d", got, len(models))
	}
	for model, n := range a.pollCounts() {
		if n != 1 {
			t.Fatalf("%s polled %d times during start-up, want 1", model, n)
		}
	}
}

// A version wanted before it exists (a cold start asks for it as it is placed)
// is polled again soon, not at the next interval tick: with an hour-long
// interval it still becomes routable once the host has it.
func TestWantPolledUntilAvailable(t *testing.T) {
	models := modelNames(50)
	a := fakeWith(t, models)
	cfg := testConfig(map[string][]string{"p": {a.addr}})
	cfg.Readiness.Interval = time.Hour
	m := startManager(t, cfg, Options{}, models...)
	before := a.pollCounts()[models[7]]
	m.Want(models[7], 2) // not on the host yet: the kicked round finds only v1
	testwait.Until(t, "the wanted model polled after the kicked round", func() bool { return a.pollCounts()[models[7]] >= before+2 })
	if m.Snapshot().Available(models[7], 2, []string{"p"}) {
		t.Fatal("v2 routable before the host has it")
	}
	a.setVersions(models[7], 1, 2) // its load finished
	testwait.Until(t, "wanted version routable without an interval tick", func() bool { return m.Snapshot().Available(models[7], 2, []string{"p"}) })
}
