package hosts

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/grpc/connectivity"

	"github.com/tfgate/tfgate/gateway/discovery"
	"github.com/tfgate/tfgate/internal/testwait"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

func TestPoolPreferenceAndFallback(t *testing.T) {
	gpu := startFake(t, map[string][]int64{"m": {1}})
	cpu := startFake(t, map[string][]int64{"m": {1}})
	m := startManager(t, testConfig(map[string][]string{"gpu": {gpu.addr}, "cpu": {cpu.addr}}), Options{}, "m")
	ctx := context.Background()
	pools := []string{"gpu", "cpu"}

	for i := 0; i < 20; i++ {
		resp, h, err := m.Predict(ctx, pools, predictReq("m", 1))
		if err != nil {
			t.Fatalf("Predict: %v", err)
		}
		if h != gpu.addr || servedBy(resp) != gpu.addr {
			t.Fatalf("Predict(pools %v) served by %s (host %s), want gpu %s", pools, servedBy(resp), h, gpu.addr)
		}
	}
	// The gpu host unloads the model: readiness moves traffic to cpu.
	gpu.setVersions("m")
	testwait.Until(t, "gpu host without m v1", func() bool {
		return !m.Snapshot().Available("m", 1, []string{"gpu"})
	})
	if got := m.Snapshot().Hosts("m", 1); len(got) != 1 || got[0] != cpu.addr {
		t.Errorf("Hosts(m, 1) = %v, want [%s]", got, cpu.addr)
	}
	_, h, err := m.Predict(ctx, pools, predictReq("m", 1))
	if err != nil || h != cpu.addr {
		t.Fatalf("Predict after gpu unload: host %s err %v, want %s", h, err, cpu.addr)
	}
	md, h, err := m.GetModelMetadata(ctx, pools, &servingpb.GetModelMetadataRequest{ModelSpec: predictReq("m", 1).ModelSpec})
	if err != nil || h != cpu.addr || md.GetModelSpec().GetName() != "m" {
		t.Fatalf("GetModelMetadata: %v host %s err %v", md, h, err)
	}
}

func TestErrors(t *testing.T) {
	a := startFake(t, map[string][]int64{"m": {1, 2}})
	m := startManager(t, testConfig(map[string][]string{"gpu": {a.addr}, "cpu": {a.addr}}), Options{}, "m")
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		pools   []string
		req     *servingpb.PredictRequest
		wantErr error
		wantMsg []string
	}{
		{name: "version nowhere", pools: []string{"gpu", "cpu"}, req: predictReq("m", 7),
			wantErr: ErrVersionUnavailable, wantMsg: []string{`"m"`, "version 7", "gpu, cpu"}},
		{name: "unknown model", pools: []string{"gpu"}, req: predictReq("nope", 1),
			wantErr: ErrVersionUnavailable, wantMsg: []string{`"nope"`, "version 1"}},
		{name: "no version", pools: []string{"gpu"}, req: &servingpb.PredictRequest{ModelSpec: &servingpb.ModelSpec{Name: "m"}},
			wantErr: ErrNoVersion},
		{name: "label instead of version", pools: []string{"gpu"}, req: &servingpb.PredictRequest{ModelSpec: &servingpb.ModelSpec{
			Name: "m", VersionChoice: &servingpb.ModelSpec_VersionLabel{VersionLabel: "stable"}}},
			wantErr: ErrNoVersion},
		{name: "unknown pool", pools: []string{"tpu"}, req: predictReq("m", 1),
			wantErr: ErrUnknownPool, wantMsg: []string{"tpu"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := m.Predict(ctx, tc.pools, tc.req)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Predict(%v, %v) error = %v, want %v", tc.pools, tc.req, err, tc.wantErr)
			}
			for _, s := range tc.wantMsg {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

func TestVersionOnOneHostThenSpreads(t *testing.T) {
	a := startFake(t, map[string][]int64{"m": {1, 2}})
	b := startFake(t, map[string][]int64{"m": {1}})
	m := startManager(t, testConfig(map[string][]string{"p": {a.addr, b.addr}}), Options{}, "m")
	ctx := context.Background()
	for i := 0; i < 50; i++ {
		if _, h, err := m.Predict(ctx, []string{"p"}, predictReq("m", 2)); err != nil || h != a.addr {
			t.Fatalf("Predict v2 #%d: host %s err %v, want only %s", i, h, err, a.addr)
		}
	}
	if !m.Snapshot().Available("m", 2, []string{"p"}) {
		t.Fatal("m v2 not available")
	}
	select { // drain the notification of earlier changes
	case <-m.Changes():
	default:
	}
	b.setVersions("m", 1, 2)
	select {
	case <-m.Changes():
	case <-time.After(10 * time.Second):
		t.Fatal("no Changes notification after b loaded v2")
	}
	if got := m.Snapshot().Hosts("m", 2); len(got) != 2 {
		t.Fatalf("Hosts(m, 2) = %v, want both", got)
	}
	seen := map[string]int{}
	for i := 0; i < 100; i++ {
		_, h, err := m.Predict(ctx, []string{"p"}, predictReq("m", 2))
		if err != nil {
			t.Fatal(err)
		}
		seen[h]++
	}
	if seen[a.addr] == 0 || seen[b.addr] == 0 {
		t.Errorf("after b loaded v2, traffic = %v, want both hosts", seen)
	}
}

func TestRetryAndEjection(t *testing.T) {
	a := startFake(t, map[string][]int64{"m": {1}})
	b := startFake(t, map[string][]int64{"m": {1}})
	reader := metric.NewManualReader()
	mp := metric.NewMeterProvider(metric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	cfg := testConfig(map[string][]string{"p": {a.addr, b.addr}})
	cfg.Readiness.Interval = time.Hour // readiness must not be what saves us
	m := startManager(t, cfg, Options{MeterProvider: mp}, "m")

	a.srv.Stop() // the host dies: connections reset, then refused
	ctx := context.Background()
	for i := 0; i < 50; i++ {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, h, err := m.Predict(cctx, []string{"p"}, predictReq("m", 1))
		cancel()
		if err != nil || h != b.addr {
			t.Fatalf("Predict #%d with a dead: host %s err %v, want %s", i, h, err, b.addr)
		}
	}
	if n := counter(t, reader, "tfgate.hosts.ejections"); n < 1 {
		t.Errorf("ejections = %d, want >= 1", n)
	}
	if n := counter(t, reader, "tfgate.hosts.retries"); n < 1 {
		t.Errorf("retries = %d, want >= 1", n)
	}
	if hs := m.Snapshot().Hosts("m", 1); len(hs) != 1 || hs[0] != b.addr {
		t.Errorf("Hosts after ejection = %v, want [%s]", hs, b.addr)
	}
	if why := m.Snapshot().Explain("m", 1, []string{"nowhere"}); !strings.Contains(why, "unknown pool") {
		t.Errorf("Explain for an unknown pool = %q", why)
	}
}

func counter(t *testing.T, r *metric.ManualReader, name string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			if mt.Name != name {
				continue
			}
			switch d := mt.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					n += p.Value
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					n += p.Value
				}
			}
		}
	}
	return n
}

func TestRemovalClosesAfterInflight(t *testing.T) {
	a := startFake(t, map[string][]int64{"m": {1}})
	b := startFake(t, map[string][]int64{"m": {1}})
	d := &chanDiscoverer{in: make(chan []string, 1)}
	d.in <- []string{a.addr}
	cfg := testConfig(map[string][]string{"p": {"placeholder:1"}})
	m := startManager(t, cfg, Options{NewDiscoverer: func(string, PoolConfig) (discovery.Discoverer, error) { return d, nil }}, "m")

	a.delay.Store(int64(500 * time.Millisecond))
	a.started = make(chan struct{}, 1)
	var wg sync.WaitGroup
	var callErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _, callErr = m.Predict(context.Background(), []string{"p"}, predictReq("m", 1))
	}()
	<-a.started
	m.mu.Lock()
	ha := m.hosts[a.addr]
	m.mu.Unlock()
	d.in <- []string{b.addr} // a leaves discovery mid-call
	testwait.Until(t, "b in snapshot", func() bool {
		hs := m.Snapshot().Hosts("m", 1)
		return len(hs) == 1 && hs[0] == b.addr
	})
	if s := ha.conn.GetState(); s == connectivity.Shutdown {
		t.Fatalf("a's connection closed with a call in flight")
	}
	wg.Wait()
	if callErr != nil {
		t.Fatalf("in-flight call on removed host failed: %v", callErr)
	}
	if s := ha.conn.GetState(); s != connectivity.Shutdown {
		t.Errorf("a's connection state after its last call = %v, want Shutdown", s)
	}
	if _, h, err := m.Predict(context.Background(), []string{"p"}, predictReq("m", 1)); err != nil || h != b.addr {
		t.Errorf("Predict after removal: host %s err %v, want %s", h, err, b.addr)
	}
}

func TestHedging(t *testing.T) {
	slow := startFake(t, map[string][]int64{"m": {1}})
	fast := startFake(t, map[string][]int64{"m": {1}})
	slow.delay.Store(int64(2 * time.Second))
	reader := metric.NewManualReader()
	mp := metric.NewMeterProvider(metric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	cfg := testConfig(map[string][]string{"gpu": {slow.addr}, "cpu": {fast.addr}})
	cfg.Hedging = HedgingConfig{Enabled: true, Delay: 20 * time.Millisecond, BudgetPercent: 100}
	m := startManager(t, cfg, Options{MeterProvider: mp}, "m")
	// The gpu pool is preferred, so the first copy always goes to the slow host;
	// the hedge goes to the fast one and wins.
	_, h, err := m.Predict(context.Background(), []string{"gpu", "cpu"}, predictReq("m", 1))
	if err != nil || h != fast.addr {
		t.Fatalf("hedged Predict: host %s err %v, want %s", h, err, fast.addr)
	}
	if n := counter(t, reader, "tfgate.hosts.hedges"); n != 2 { // sent + won
		t.Errorf("hedges counted = %d, want 2 (sent, won)", n)
	}
	// With no budget left a slow call is not hedged.
	m.hedge.tokens = 0
	m.hedge.earn = 0
	slow.delay.Store(int64(100 * time.Millisecond))
	if _, h, err := m.Predict(context.Background(), []string{"gpu", "cpu"}, predictReq("m", 1)); err != nil || h != slow.addr {
		t.Fatalf("unbudgeted Predict: host %s err %v, want %s", h, err, slow.addr)
	}
}

func TestLargeResponse(t *testing.T) {
	a := startFake(t, map[string][]int64{"m": {1}})
	a.big.Store(20 << 20) // 20 MiB, well over grpc-go's 4 MiB default
	m := startManager(t, testConfig(map[string][]string{"p": {a.addr}}), Options{}, "m")
	resp, _, err := m.Predict(context.Background(), []string{"p"}, predictReq("m", 1))
	if err != nil {
		t.Fatalf("Predict with a 20 MiB response: %v", err)
	}
	if n := len(resp.GetOutputs()["host"].GetStringVal()[1]); n != 20<<20 {
		t.Errorf("response payload = %d bytes, want %d", n, 20<<20)
	}
}

// An ejected host leaves the readiness view at once and comes back when its
// ejection ends, without any other change.
func TestEjectionExpiryReadmits(t *testing.T) {
	a := startFake(t, map[string][]int64{"m": {1}})
	b := startFake(t, map[string][]int64{"m": {1}})
	var clockMu sync.Mutex
	now := time.Now()
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	m := startManager(t, testConfig(map[string][]string{"p": {a.addr, b.addr}}), Options{Now: clock}, "m")
	testwait.Until(t, "both hosts", func() bool { return len(m.Snapshot().Hosts("m", 1)) == 2 })

	m.mu.Lock()
	ha := m.hosts[a.addr]
	m.mu.Unlock()
	var d time.Duration
	for d == 0 {
		d = ha.failed(m.cfg.Ejection, clock())
	}
	m.rebuild()
	if hs := m.Snapshot().Hosts("m", 1); len(hs) != 1 || hs[0] != b.addr {
		t.Fatalf("Hosts after ejecting a = %v, want [%s]", hs, b.addr)
	}
	if why := m.Snapshot().Explain("m", 1, []string{"p"}); why != "" {
		t.Errorf("Explain with b healthy = %q, want routable", why)
	}
	for i := 0; i < 20; i++ { // a is not picked while ejected
		if _, h, err := m.Predict(context.Background(), []string{"p"}, predictReq("m", 1)); err != nil || h != b.addr {
			t.Fatalf("Predict while a ejected: host %s err %v", h, err)
		}
	}
	clockMu.Lock()
	now = now.Add(d + time.Millisecond)
	clockMu.Unlock()
	testwait.Until(t, "a back after its ejection", func() bool { return len(m.Snapshot().Hosts("m", 1)) == 2 })
}

func TestSetModels(t *testing.T) {
	a := startFake(t, map[string][]int64{"m": {1}, "n": {4, 5}})
	m := startManager(t, testConfig(map[string][]string{"p": {a.addr}}), Options{}, "m")
	if got := m.Snapshot().Versions("n"); len(got) != 0 {
		t.Errorf("Versions(n) before n is served = %v, want none (not polled)", got)
	}
	m.SetModels([]string{"n", "m", "n"})
	testwait.Until(t, "n polled", func() bool { return len(m.Snapshot().Versions("n")) == 2 })
	if got := m.Snapshot().Versions("n"); got[0] != 4 || got[1] != 5 {
		t.Errorf("Versions(n) = %v, want [4 5] (LOADING 999 excluded)", got)
	}
	m.SetModels([]string{"n"})
	if got := m.Snapshot().Versions("m"); len(got) != 0 {
		t.Errorf("Versions(m) after it was dropped = %v, want none", got)
	}
	if _, _, err := m.Predict(context.Background(), []string{"p"}, predictReq("m", 1)); !errors.Is(err, ErrVersionUnavailable) {
		t.Errorf("Predict for a dropped model = %v, want ErrVersionUnavailable", err)
	}
}

func TestClosedAfterRun(t *testing.T) {
	a := startFake(t, map[string][]int64{"m": {1}})
	m, err := New(testConfig(map[string][]string{"p": {a.addr}}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	m.SetModels([]string{"m"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	if err := m.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Predict(context.Background(), []string{"p"}, predictReq("m", 1)); err != nil {
		t.Fatalf("Predict while running: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, _, err := m.Predict(context.Background(), []string{"p"}, predictReq("m", 1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Predict after Run = %v, want ErrClosed (UNAVAILABLE per gateway.Code)", err)
	}
	if err := m.Run(context.Background()); err == nil {
		t.Error("second Run succeeded, want an error")
	}
}

// idDiscoverer reports fixed endpoints with Consul service IDs (placement's host IDs).
type idDiscoverer struct{ eps []discovery.Endpoint }

func (d idDiscoverer) Run(ctx context.Context, updates chan<- []discovery.Endpoint) error {
	select {
	case updates <- d.eps:
	case <-ctx.Done():
	}
	<-ctx.Done()
	return nil
}

// A version taken off a host, unloaded there and then assigned to it again is not
// routed on the AVAILABLE it reported before: the host would answer NOT_FOUND
// until its reload finishes. It is routable again once a poll finds it loaded.
func TestReassignedVersionWaitsForAPoll(t *testing.T) {
	a := startFake(t, map[string][]int64{"m": {1}})
	cfg := testConfig(map[string][]string{"p": {a.addr}})
	cfg.Readiness.Interval = time.Hour // polls only when kicked: the test controls staleness
	d := idDiscoverer{eps: []discovery.Endpoint{{Addr: a.addr, ID: "h1", ServiceID: "h1"}}}
	m := startManager(t, cfg, Options{NewDiscoverer: func(string, PoolConfig) (discovery.Discoverer, error) { return d, nil }}, "m")
	pools := []string{"p"}
	assign := func(vs ...int64) { m.SetPlacement(map[string]map[string][]int64{"h1": {"m": vs}}) }

	assign(1)
	if !m.Snapshot().Available("m", 1, pools) {
		t.Fatal("m v1 assigned and AVAILABLE: not routable")
	}
	assign() // taken off h1: not routed while it drains
	if m.Snapshot().Available("m", 1, pools) {
		t.Fatal("m v1 routable after placement took it off its only host")
	}
	a.setVersions("m") // the sidecar unloads it; no poll has seen that yet
	before := a.pollCounts()["m"]
	assign(1) // placed there again: the last poll (AVAILABLE) is stale
	if m.Snapshot().Available("m", 1, pools) {
		t.Fatal("m v1 routable on the AVAILABLE polled before it was unloaded")
	}
	if _, _, err := m.Predict(context.Background(), pools, predictReq("m", 1)); !errors.Is(err, ErrVersionUnavailable) {
		t.Fatalf("Predict while h1 reloads = %v, want ErrVersionUnavailable (never the host's NOT_FOUND)", err)
	}
	testwait.Until(t, "h1 re-polled for m", func() bool { return a.pollCounts()["m"] > before })
	updated := m.Updated()
	select {
	case <-updated:
		t.Fatal("Updated closed before the routing view changed")
	default:
	}
	a.setVersions("m", 1) // reloaded
	m.Want("m", 1)
	select {
	case <-updated: // the broadcast held requests wait on
	case <-time.After(10 * time.Second):
		t.Fatal("Updated not closed after m v1 became AVAILABLE")
	}
	if !m.Snapshot().Available("m", 1, pools) {
		t.Fatal("Updated closed but m v1 is not routable")
	}
	if _, h, err := m.Predict(context.Background(), pools, predictReq("m", 1)); err != nil || h != a.addr {
		t.Fatalf("Predict after the reload: host %s err %v", h, err)
	}
}
