package discovery

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tfgate/tfgate/internal/testenv"
	"github.com/tfgate/tfgate/internal/testwait"
)

// registerTTL registers instance id of service name at 127.0.0.1:port with a TTL
// check the test drives (check id "service:<id>").
func registerTTL(t *testing.T, cl *api.Client, name, id string, port int, tags []string, status string) {
	t.Helper()
	err := cl.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: name, Address: "127.0.0.1", Port: port, Tags: tags,
		Check: &api.AgentServiceCheck{TTL: "1h", Status: status},
	})
	if err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
}

// setCheck sets the TTL check of id. Only a new status moves the service's
// index at once: the agent syncs a new output alone later.
func setCheck(t *testing.T, cl *api.Client, id, status string) {
	t.Helper()
	if err := cl.Agent().UpdateTTL("service:"+id, "set by test", status); err != nil {
		t.Fatalf("update ttl %s -> %s: %v", id, status, err)
	}
}

func addrs(eps []Endpoint) []string {
	out := make([]string, 0, len(eps))
	for _, e := range eps {
		out = append(out, e.Addr)
	}
	return out
}

// expect waits for the next update and checks its addresses.
func expect(t *testing.T, ch <-chan []Endpoint, want ...string) []Endpoint {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	select {
	case eps := <-ch:
		if got := addrs(eps); !slices.Equal(got, want) {
			t.Fatalf("update = %q, want %q", got, want)
		}
		return eps
	case <-time.After(15 * time.Second):
		t.Fatalf("no update; want %q", want)
	}
	return nil
}

// expectEventually drains updates until one matches want.
func expectEventually(t *testing.T, ch <-chan []Endpoint, want ...string) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	var got []string
	for {
		select {
		case eps := <-ch:
			if got = addrs(eps); slices.Equal(got, want) {
				return
			}
		case <-deadline:
			t.Fatalf("last update %q, never %q", got, want)
		}
	}
}

// noUpdate fails if the watcher has an update waiting to be received. Updates is
// unbuffered, so a watcher that decided to send is blocked on it until then.
func noUpdate(t *testing.T, ch <-chan []Endpoint) {
	t.Helper()
	select {
	case eps := <-ch:
		t.Fatalf("unexpected update %q", addrs(eps))
	default:
	}
}

// queries records the index of every health query the watcher starts. The
// watcher asks again only after it has handled the previous answer, so a query at
// index i means every answer up to i has been handled: applied (then it is blocked
// sending on the unbuffered updates channel, and asks nothing), held, or skipped.
type queries struct {
	next http.RoundTripper
	mu   sync.Mutex
	seen []uint64 // index of each query, in order
}

func (q *queries) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasPrefix(r.URL.Path, "/v1/health/service/") {
		i, _ := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64)
		q.mu.Lock()
		q.seen = append(q.seen, i)
		q.mu.Unlock()
	}
	return q.next.RoundTrip(r)
}

func (q *queries) count() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.seen)
}

// handled reports whether the watcher's last n+1 queries were all at index i or
// later: it has handled every answer up to i, and n more at i or later (blocking
// queries that timed out unchanged). Only the latest queries count, because the
// index starts over when the agent restarts.
func (q *queries) handled(i uint64, n int) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.seen) < n+1 {
		return false
	}
	for _, s := range q.seen[len(q.seen)-n-1:] {
		if s < i {
			return false
		}
	}
	return true
}

// last is the index of the latest query; ok is false before the first one.
func (q *queries) last() (index uint64, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.seen) == 0 {
		return 0, false
	}
	return q.seen[len(q.seen)-1], true
}

// watch is a running Consul watcher and what a test observes of it.
type watch struct {
	d       *Consul
	ch      <-chan []Endpoint
	queries *queries
}

// quietUntil waits until cond holds, failing on any update meanwhile: the
// watcher handled what cond waits for and sent nothing.
func (w *watch) quietUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.Until(t, what, func() bool {
		noUpdate(t, w.ch)
		return cond()
	})
	noUpdate(t, w.ch)
}

// quietThrough waits, failing on any update meanwhile, until the watcher has
// handled every answer up to Consul's current index for service and tag, and
// then n more answers at that index (n > 0: blocking queries that timed out
// unchanged).
func (w *watch) quietThrough(t *testing.T, cl *api.Client, service, tag string, n int) {
	t.Helper()
	_, meta, err := cl.Health().Service(service, tag, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.quietUntil(t, "the watcher to handle index "+strconv.FormatUint(meta.LastIndex, 10),
		func() bool { return w.queries.handled(meta.LastIndex, n) })
}

// clock is the watcher's clock in tests that control it: real time plus an
// offset the test moves forward.
type clock struct{ offset atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) advance(d time.Duration) { c.offset.Add(int64(d)) }

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// logRecorder is a slog handler that keeps each message, so that a test can wait
// for the one that reports an event, and forwards the record to the test log.
type logRecorder struct {
	next slog.Handler
	mu   *sync.Mutex
	msgs *[]string
}

func newLogRecorder(t *testing.T) logRecorder {
	return logRecorder{next: slog.NewTextHandler(logWriter{t}, nil), mu: new(sync.Mutex), msgs: new([]string)}
}

func (l logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l logRecorder) Handle(ctx context.Context, r slog.Record) error {
	l.mu.Lock()
	*l.msgs = append(*l.msgs, r.Message)
	l.mu.Unlock()
	return l.next.Handle(ctx, r)
}
func (l logRecorder) WithAttrs(a []slog.Attr) slog.Handler {
	return logRecorder{next: l.next.WithAttrs(a), mu: l.mu, msgs: l.msgs}
}
func (l logRecorder) WithGroup(name string) slog.Handler {
	return logRecorder{next: l.next.WithGroup(name), mu: l.mu, msgs: l.msgs}
}

func (l logRecorder) seen(msg string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Contains(*l.msgs, msg)
}

func hp(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// startWatch runs a Consul watcher for cfg until the test ends. now, when not
// nil, replaces the watcher's clock.
func startWatch(t *testing.T, cfg ConsulConfig, mp *metric.MeterProvider, now func() time.Time) *watch {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var d *Consul
	var err error
	if mp != nil {
		d, err = NewConsul(cfg, logger, mp)
	} else {
		d, err = NewConsul(cfg, logger, nil)
	}
	if err != nil {
		t.Fatalf("NewConsul: %v", err)
	}
	// The same client, with its queries recorded.
	acfg, err := cfg.Client.APIConfig()
	if err != nil {
		t.Fatal(err)
	}
	q := &queries{next: acfg.Transport}
	acfg.HttpClient = &http.Client{Transport: q}
	if d.client, err = api.NewClient(acfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(acfg.Transport.CloseIdleConnections)
	if now != nil {
		d.now = now
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan []Endpoint)
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, ch) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return &watch{d: d, ch: ch, queries: q}
}

func TestConsulWatch(t *testing.T) {
	c := testenv.StartConsul(t)
	cl := c.Client(t)
	registerTTL(t, cl, "tfs", "a", 9001, []string{"gpu"}, api.HealthPassing)
	registerTTL(t, cl, "tfs", "b", 9002, []string{"cpu"}, api.HealthPassing)

	// EmptyGrace is huge: an empty set while Consul is healthy must apply at once.
	w := startWatch(t, ConsulConfig{Client: ClientConfig{Address: c.HTTPAddr}, Service: "tfs", Tag: "gpu",
		WaitTime: 2 * time.Second, EmptyGrace: time.Hour}, nil, nil)
	ch := w.ch
	eps := expect(t, ch, hp(9001))
	if eps[0].ID != "tfgate-test/a" || !slices.Equal(eps[0].Tags, []string{"gpu"}) {
		t.Errorf("endpoint = %+v, want id tfgate-test/a tags [gpu]", eps[0])
	}

	start := time.Now()
	setCheck(t, cl, "a", api.HealthCritical)
	expect(t, ch)
	t.Logf("consul check critical -> discovery update: %v", time.Since(start))

	setCheck(t, cl, "a", api.HealthWarning) // ?passing excludes warning
	w.quietThrough(t, cl, "tfs", "gpu", 0)
	setCheck(t, cl, "a", api.HealthPassing)
	expect(t, ch, hp(9001))

	registerTTL(t, cl, "tfs", "c", 9003, []string{"gpu", "v2"}, api.HealthPassing)
	expect(t, ch, hp(9001), hp(9003))

	// A change to an instance outside the tag moves the index but not the set:
	// nothing is sent, also not when blocking queries time out unchanged.
	setCheck(t, cl, "b", api.HealthCritical)
	w.quietThrough(t, cl, "tfs", "gpu", 1)

	if err := cl.Agent().ServiceDeregister("a"); err != nil {
		t.Fatal(err)
	}
	expect(t, ch, hp(9003))
}

func TestConsulOutageKeepsLastAndResets(t *testing.T) {
	c := testenv.StartConsul(t)
	cl := c.Client(t)
	registerTTL(t, cl, "tfs", "a", 9001, []string{"gpu"}, api.HealthPassing)
	reader := metric.NewManualReader()
	mp := metric.NewMeterProvider(metric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })

	// A long wait: unless the index is reset after the outage, the restarted agent (whose index
	// starts low again) would hold our query for the full 60 s.
	w := startWatch(t, ConsulConfig{
		Client: ClientConfig{Address: c.HTTPAddr}, Service: "tfs", Tag: "gpu",
		WaitTime: time.Minute, BackoffMin: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
	}, mp, nil)
	d, ch := w.d, w.ch
	expect(t, ch, hp(9001))
	// Push the index well above where a fresh agent starts.
	for i := 0; i < 20; i++ {
		registerTTL(t, cl, "other", "o"+strconv.Itoa(i), 1000+i, nil, api.HealthPassing)
		setCheck(t, cl, "a", api.HealthPassing)
	}
	if got := staleness(t, reader); got != 0 {
		t.Errorf("staleness while consul is up = %v, want 0", got)
	}

	c.Stop(t)
	// Two queries started after the stop: the second only once the first (or the
	// one in flight at the stop) failed and was handled. The last endpoints stay.
	n := w.queries.count()
	w.quietUntil(t, "a failed query handled", func() bool { return w.queries.count() >= n+2 })
	if d.Staleness() <= 0 {
		t.Errorf("Staleness() = %v with consul down, want > 0", d.Staleness())
	}
	if got := staleness(t, reader); got <= 0 {
		t.Errorf("staleness gauge = %v with consul down, want > 0", got)
	}

	c.Start(t) // a -dev agent comes back empty, with a low index
	registerTTL(t, cl, "tfs", "a", 9001, []string{"gpu"}, api.HealthPassing)
	registerTTL(t, cl, "tfs", "b", 9002, []string{"gpu"}, api.HealthPassing)
	expectEventually(t, ch, hp(9001), hp(9002))
	if d.Staleness() != 0 {
		t.Errorf("Staleness() = %v after recovery, want 0", d.Staleness())
	}
}

// An agent that comes back with no passing instance (restarted, checks not yet
// run) does not empty the pool at once: the last set is held for EmptyGrace. The
// test moves the watcher's clock, so the grace ends when the test says.
func TestConsulEmptyAfterRestartHeld(t *testing.T) {
	c := testenv.StartConsul(t)
	cl := c.Client(t)
	registerTTL(t, cl, "tfs", "a", 9001, nil, api.HealthPassing)
	clk := new(clock)
	w := startWatch(t, ConsulConfig{
		Client: ClientConfig{Address: c.HTTPAddr}, Service: "tfs", WaitTime: 10 * time.Second,
		BackoffMin: 50 * time.Millisecond, BackoffMax: 100 * time.Millisecond, EmptyGrace: time.Hour,
	}, nil, clk.now)
	expect(t, w.ch, hp(9001))
	c.Stop(t)
	// After a failed query the watcher asks without blocking (index 0).
	w.quietUntil(t, "the watcher to see the outage", func() bool { i, ok := w.queries.last(); return ok && i == 0 })
	c.Start(t) // -dev: comes back empty
	registerTTL(t, cl, "tfs", "b", 9002, nil, api.HealthCritical)
	// The watcher has seen the empty answer with b in it, and holds the last set.
	w.quietThrough(t, cl, "tfs", "", 0)
	setCheck(t, cl, "b", api.HealthWarning) // a new answer, still none passing, inside the grace
	w.quietThrough(t, cl, "tfs", "", 0)

	clk.advance(time.Hour + time.Second)
	setCheck(t, cl, "b", api.HealthCritical) // wakes the blocking query
	expect(t, w.ch)                          // grace over, still nothing passing: now it applies
	setCheck(t, cl, "b", api.HealthPassing)
	expect(t, w.ch, hp(9002))
}

func staleness(t *testing.T, r *metric.ManualReader) float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "tfgate.discovery.staleness" {
				continue
			}
			g := m.Data.(metricdata.Gauge[float64])
			if len(g.DataPoints) != 1 {
				t.Fatalf("staleness points = %d, want 1", len(g.DataPoints))
			}
			return g.DataPoints[0].Value
		}
	}
	t.Fatal("no tfgate.discovery.staleness metric")
	return 0
}

func TestRegister(t *testing.T) {
	c := testenv.StartConsul(t)
	cl := c.Client(t)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	ctx := context.Background()
	dereg, err := Register(ctx, Registration{
		Client: ClientConfig{Address: c.HTTPAddr}, Addr: lis.Addr().String(),
		Tags: []string{"gateway"}, CheckInterval: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	ch := startWatch(t, ConsulConfig{Client: ClientConfig{Address: c.HTTPAddr}, Service: "tfgate-gateway", WaitTime: 2 * time.Second}, nil, nil).ch
	expectEventually(t, ch, lis.Addr().String()) // check passed: the gateway is discoverable

	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	expectEventually(t, ch)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	expectEventually(t, ch, lis.Addr().String())

	if err := dereg(ctx); err != nil {
		t.Fatalf("deregister: %v", err)
	}
	expectEventually(t, ch)
	svcs, err := cl.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := svcs["tfgate-gateway-127.0.0.1-"+strconv.Itoa(lis.Addr().(*net.TCPAddr).Port)]; ok {
		t.Errorf("service still registered after deregister: %v", svcs)
	}
}

func TestRegisterBadAddr(t *testing.T) {
	for _, addr := range []string{"", "nohostport", "h:0", "h:99999", "h:x"} {
		if _, err := Register(context.Background(), Registration{Addr: addr}); err == nil {
			t.Errorf("Register(addr %q) = nil error, want one", addr)
		}
	}
}

// The service definitions in deploy/consul load into a real agent, and a pool
// watch selects the tagged TF Serving instance from them.
func TestDeployDefinitionsLoad(t *testing.T) {
	c := testenv.StartConsul(t, testenv.ConsulArgs("-config-dir", "../../deploy/consul"))
	svcs, err := c.Client(t).Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	for id, wantTag := range map[string]string{"tfserving-gpu": "gpu", "tfserving-cpu": "cpu", "tfgate-gateway": "grpc"} {
		s, ok := svcs[id]
		if !ok {
			t.Errorf("service %s not loaded from deploy/consul (have %v)", id, svcs)
			continue
		}
		if !slices.Contains(s.Tags, wantTag) {
			t.Errorf("service %s tags %v, want %q", id, s.Tags, wantTag)
		}
	}
	checks, err := c.Client(t).Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"tfserving-gpu-grpc", "tfserving-cpu-grpc", "tfgate-gateway-grpc"} {
		if ch, ok := checks[id]; !ok || ch.Type != "grpc" {
			t.Errorf("check %s = %+v, want a grpc check", id, ch)
		}
	}
}

// KeepRegistered retries until the agent is reachable, stays registered while ctx
// lives, and deregisters when it ends.
func TestKeepRegistered(t *testing.T) {
	c := testenv.StartConsul(t)
	cl := c.Client(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	c.Stop(t) // the agent is down when the gateway starts
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logs := newLogRecorder(t)
	go func() {
		done <- KeepRegistered(ctx, Registration{
			Client: ClientConfig{Address: c.HTTPAddr}, Name: "gw", ID: "gw-1", Addr: lis.Addr().String(),
			CheckInterval: 200 * time.Millisecond,
		}, slog.New(logs))
	}()
	testwait.Until(t, "a failed registration", func() bool { return logs.seen("consul registration failed; retrying") })
	c.Start(t)
	ch := startWatch(t, ConsulConfig{Client: ClientConfig{Address: c.HTTPAddr}, Service: "gw", WaitTime: 2 * time.Second}, nil, nil).ch
	expectEventually(t, ch, lis.Addr().String())
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("KeepRegistered: %v", err)
	}
	svcs, err := cl.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := svcs["gw-1"]; ok {
		t.Errorf("gw-1 still registered after ctx ended")
	}
	if err := KeepRegistered(context.Background(), Registration{Addr: "no-port"}, nil); !errors.Is(err, ErrConfig) {
		t.Errorf("KeepRegistered(bad addr) = %v, want ErrConfig", err)
	}
}
