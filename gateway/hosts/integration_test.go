package hosts

// Integration tests: servingsim processes as TF Serving hosts and, where pools come
// from Consul, a real Consul agent, all on loopback. They need the servingsim build
// (go build, cached) and the consul binary from scripts/tools.sh.

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"go.opentelemetry.io/otel/sdk/metric"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tfgate/tfgate/gateway/discovery"
	"github.com/tfgate/tfgate/internal/modelgen"
	"github.com/tfgate/tfgate/internal/tensor"
	"github.com/tfgate/tfgate/internal/testenv"
	"github.com/tfgate/tfgate/internal/testwait"
	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// exportVersion writes version v of a small linear model under base atomically.
func exportVersion(t *testing.T, base string, v int64) {
	t.Helper()
	tmp := filepath.Join(base, ".tmp-"+strconv.FormatInt(v, 10))
	if err := modelgen.Export(tmp, modelgen.Spec{Kind: "linear", Features: 3, Classes: 2, Seed: v}); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(base, strconv.FormatInt(v, 10))); err != nil {
		t.Fatal(err)
	}
}

// startHost runs a servingsim process serving model "m" from a fresh base path
// holding versions vs (all loaded).
func startHost(t *testing.T, vs ...int64) (*testenv.Servingsim, string) {
	t.Helper()
	base := t.TempDir()
	for _, v := range vs {
		exportVersion(t, base, v)
	}
	cfg := filepath.Join(t.TempDir(), "models.config")
	conf := `model_config_list { config { name: "m" base_path: "` + base + `" model_platform: "tensorflow" model_version_policy { all {} } } }`
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	s := testenv.StartServingsim(t, "--model_config_file="+cfg, "--file_system_poll_wait_seconds=0.1")
	return s, base
}

func linearReq(t *testing.T, v int64) *servingpb.PredictRequest {
	t.Helper()
	in, err := tensor.FromFloat32([]float32{1, 2, 3}, 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	return &servingpb.PredictRequest{
		ModelSpec: &servingpb.ModelSpec{Name: "m", VersionChoice: &servingpb.ModelSpec_Version{Version: wrapperspb.Int64(v)}},
		Inputs:    map[string]*tfpb.TensorProto{"features": in},
	}
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// testLogger logs through t (shown for failing tests and with -v).
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type outcome struct {
	start time.Time
	host  string
	err   error
}

// load runs closed-loop workers calling Predict until stopped, recording every
// outcome.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	out    []outcome
	n      atomic.Int64
}

func startLoad(t *testing.T, m *Manager, workers int, pools []string, req *servingpb.PredictRequest) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel}
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				start := time.Now()
				cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
				resp, h, err := m.Predict(cctx, pools, req)
				ccancel()
				if err == nil && resp.GetModelSpec().GetVersion().GetValue() != req.GetModelSpec().GetVersion().GetValue() {
					t.Errorf("served version %d, asked %d", resp.GetModelSpec().GetVersion().GetValue(), req.GetModelSpec().GetVersion().GetValue())
				}
				l.mu.Lock()
				l.out = append(l.out, outcome{start, h, err})
				l.mu.Unlock()
				l.n.Add(1)
			}
		}()
	}
	t.Cleanup(l.stop)
	return l
}

func (l *load) stop() { l.cancel(); l.wg.Wait() }

// waitCalls lets at least n more calls complete.
func (l *load) waitCalls(t *testing.T, n int64) {
	t.Helper()
	target := l.n.Load() + n
	testwait.Until(t, "load progress", func() bool { return l.n.Load() >= target })
}

func (l *load) outcomes() []outcome {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]outcome(nil), l.out...)
}

func (l *load) failures(t *testing.T) int {
	n := 0
	for _, o := range l.outcomes() {
		if o.err != nil {
			n++
			if n <= 5 {
				t.Errorf("client-visible failure: %v", o.err)
			}
		}
	}
	return n
}

func registerHost(t *testing.T, cl *api.Client, id string, s *testenv.Servingsim, tags ...string) {
	t.Helper()
	err := cl.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: "tfs", Address: "127.0.0.1", Port: s.Port, Tags: tags,
		Check: &api.AgentServiceCheck{CheckID: "service:" + id, TTL: "1h", Status: api.HealthPassing},
	})
	if err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
}

func consulPools(addr string, tags ...string) Config {
	cfg := DefaultConfig()
	cfg.Pools = map[string]PoolConfig{}
	for _, tag := range tags {
		cfg.Pools[tag] = PoolConfig{Consul: &ConsulPool{Service: "tfs", Tag: tag}}
	}
	cfg.Consul = discovery.ClientConfig{Address: addr}
	cfg.ConsulWaitTime = 10 * time.Second
	cfg.Readiness.Interval = 200 * time.Millisecond
	return cfg
}

// A gpu-preferring model is served by the gpu host; when that host's check turns
// critical, traffic moves to the cpu host and no request fails.
func TestIntegrationConsulFailover(t *testing.T) {
	c := testenv.StartConsul(t)
	cl := c.Client(t)
	gpu, _ := startHost(t, 1)
	cpu, _ := startHost(t, 1)
	registerHost(t, cl, "gpu-1", gpu, "gpu")
	registerHost(t, cl, "cpu-1", cpu, "cpu")
	m := startManager(t, consulPools(c.HTTPAddr, "gpu", "cpu"), Options{}, "m")
	testwait.Until(t, "m v1 on both hosts", func() bool { return len(m.Snapshot().Hosts("m", 1)) == 2 })

	pools := []string{"gpu", "cpu"}
	l := startLoad(t, m, 8, pools, linearReq(t, 1))
	l.waitCalls(t, 200)
	for _, o := range l.outcomes() {
		if o.err == nil && o.host != gpu.Addr {
			t.Fatalf("before failover a request went to %s, want only gpu %s", o.host, gpu.Addr)
		}
	}

	t0 := time.Now()
	if err := cl.Agent().UpdateTTL("service:gpu-1", "failing", api.HealthCritical); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "gpu pool empty", func() bool { return !m.Snapshot().Available("m", 1, []string{"gpu"}) })
	acted := time.Since(t0)
	l.waitCalls(t, 200)
	l.stop()

	var lastGPU, firstCPU time.Time
	for _, o := range l.outcomes() {
		if o.err != nil {
			continue
		}
		if o.host == gpu.Addr && o.start.After(lastGPU) {
			lastGPU = o.start
		}
		if o.host == cpu.Addr && (firstCPU.IsZero() || o.start.Before(firstCPU)) {
			firstCPU = o.start
		}
	}
	if firstCPU.IsZero() {
		t.Fatal("no request reached the cpu host after the gpu check went critical")
	}
	t.Logf("consul check critical -> hosts.Manager dropped the gpu host: %v; last request sent to gpu %v after the change, first to cpu %v after",
		acted, lastGPU.Sub(t0), firstCPU.Sub(t0))
	if n := l.failures(t); n != 0 {
		t.Fatalf("%d of %d requests failed during failover, want 0", n, len(l.outcomes()))
	}
}

// One of two hosts is SIGKILLed under steady load: no caller sees a failure, the
// dead host is ejected and then not picked.
func TestIntegrationSIGKILLUnderLoad(t *testing.T) {
	a, _ := startHost(t, 1)
	b, _ := startHost(t, 1)
	reader := metric.NewManualReader()
	mp := metric.NewMeterProvider(metric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	cfg := testConfig(map[string][]string{"p": {a.Addr, b.Addr}})
	cfg.Readiness.Interval = 200 * time.Millisecond
	m := startManager(t, cfg, Options{MeterProvider: mp}, "m")
	testwait.Until(t, "m v1 on both hosts", func() bool { return len(m.Snapshot().Hosts("m", 1)) == 2 })

	l := startLoad(t, m, 8, []string{"p"}, linearReq(t, 1))
	l.waitCalls(t, 300)
	a.Kill()
	l.waitCalls(t, 500)
	if n := counter(t, reader, "tfgate.hosts.ejections"); n < 1 {
		t.Errorf("ejections after SIGKILL = %d, want >= 1", n)
	}
	testwait.Until(t, "dead host out of readiness", func() bool {
		hs := m.Snapshot().Hosts("m", 1)
		return len(hs) == 1 && hs[0] == b.Addr
	})
	// No longer picked: no further retries (each pick of the dead host would be one).
	r1 := counter(t, reader, "tfgate.hosts.retries")
	l.waitCalls(t, 300)
	if r2 := counter(t, reader, "tfgate.hosts.retries"); r2 != r1 {
		t.Errorf("retries grew from %d to %d after the dead host left readiness: it is still picked", r1, r2)
	}
	l.stop()
	if n := l.failures(t); n != 0 {
		t.Fatalf("%d of %d requests failed after SIGKILL, want 0", n, len(l.outcomes()))
	}
	t.Logf("%d requests, %d retries, 0 failures", len(l.outcomes()), r1)
}

// registerGRPC registers s with a gRPC health check (servingsim serves
// grpc.health.v1), as deploy/consul does.
func registerGRPC(t *testing.T, cl *api.Client, id string, s *testenv.Servingsim, tags ...string) {
	t.Helper()
	err := cl.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: "tfs", Address: "127.0.0.1", Port: s.Port, Tags: tags,
		Check: &api.AgentServiceCheck{CheckID: "service:" + id, GRPC: s.Addr, Interval: "500ms", Timeout: "1s"},
	})
	if err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
}

// With the Consul agent stopped, serving continues on the last known hosts; when
// it is back (its services' checks critical until they first run), nothing is
// dropped, and changes are picked up again.
func TestIntegrationConsulOutage(t *testing.T) {
	c := testenv.StartConsul(t, testenv.ConsulPersistent())
	cl := c.Client(t)
	a, _ := startHost(t, 1)
	b, _ := startHost(t, 1)
	registerGRPC(t, cl, "a", a, "cpu")
	registerGRPC(t, cl, "b", b, "cpu")
	cfg := consulPools(c.HTTPAddr, "cpu")
	m := startManager(t, cfg, Options{Logger: testLogger(t)}, "m")
	testwait.Until(t, "m v1 on both hosts", func() bool { return len(m.Snapshot().Hosts("m", 1)) == 2 })

	l := startLoad(t, m, 4, []string{"cpu"}, linearReq(t, 1))
	l.waitCalls(t, 100)
	c.Stop(t)
	l.waitCalls(t, 300) // Consul is down: the last known hosts keep serving
	if hs := m.Snapshot().Hosts("m", 1); len(hs) != 2 {
		t.Errorf("hosts with consul down = %v, want both kept", hs)
	}
	c.Start(t)
	l.waitCalls(t, 300)
	if err := cl.Agent().ServiceDeregister("b"); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "b dropped after consul came back", func() bool {
		hs := m.Snapshot().Hosts("m", 1)
		return len(hs) == 1 && hs[0] == a.Addr
	})
	l.waitCalls(t, 100)
	l.stop()
	if n := l.failures(t); n != 0 {
		t.Fatalf("%d of %d requests failed across the consul outage, want 0", n, len(l.outcomes()))
	}
}

// A version AVAILABLE on only one of two hosts gets its traffic only there; when
// the other host loads it, traffic spreads.
func TestIntegrationVersionSpreads(t *testing.T) {
	a, _ := startHost(t, 1, 2)
	b, baseB := startHost(t, 1)
	cfg := testConfig(map[string][]string{"p": {a.Addr, b.Addr}})
	cfg.Readiness.Interval = 200 * time.Millisecond
	m := startManager(t, cfg, Options{}, "m")
	testwait.Until(t, "v2 on a", func() bool { return m.Snapshot().Available("m", 2, []string{"p"}) })

	l := startLoad(t, m, 4, []string{"p"}, linearReq(t, 2))
	l.waitCalls(t, 200)
	for _, o := range l.outcomes() {
		if o.err == nil && o.host != a.Addr {
			t.Fatalf("v2 request served by %s before it loaded there; want only %s", o.host, a.Addr)
		}
	}
	exportVersion(t, baseB, 2)
	testwait.Until(t, "v2 on both", func() bool { return len(m.Snapshot().Hosts("m", 2)) == 2 })
	mark := len(l.outcomes())
	l.waitCalls(t, 300)
	l.stop()
	seen := map[string]int{}
	for _, o := range l.outcomes()[mark:] {
		seen[o.host]++
	}
	if seen[a.Addr] == 0 || seen[b.Addr] == 0 {
		t.Errorf("after b loaded v2, traffic = %v, want both hosts", seen)
	}
	if n := l.failures(t); n != 0 {
		t.Fatalf("%d requests failed, want 0", n)
	}
}
