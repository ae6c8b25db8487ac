package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tfgate/tfgate/gateway/hosts"
	"github.com/tfgate/tfgate/internal/servingsim"
	"github.com/tfgate/tfgate/internal/servingsim/model"
	"github.com/tfgate/tfgate/internal/testenv"
	"github.com/tfgate/tfgate/internal/testwait"
	"github.com/tfgate/tfgate/placement"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// coldEnv is a gateway run with placement on, a real Consul agent and
// in-process servingsim hosts with finite memory and a simulated load speed,
// registered in Consul with their capacity. The test plays each host's sidecar
// (modelsync -placement is exercised by its own tests): it watches the host's
// assignment in KV and applies exactly it with HandleReloadConfigRequest,
// counting every load it asks for.
type coldEnv struct {
	t      *testing.T
	client tfgatev1.GatewayServiceClient
	srv    *Server
	guard  *availableGuard
	loads  sync.Map // coldLoad -> *atomic.Int64: times a host's sidecar added the version
	hosts  []*coldHost
	cancel context.CancelFunc

	cfgPath, root string
	cl            *api.Client
	store         *placement.Store
	models        []string // the models in the routing config and on disk, sorted
}

// coldHost is one servingsim host of the env, with its sidecar.
type coldHost struct {
	id, addr string
	sim      *servingsim.Server
	kill     func() // stops the server and its sidecar, as a dead machine (not deregistered)
}

// coldLoad is one load a sidecar started.
type coldLoad struct {
	host string
	key  placement.Key
}

// coldEnvConfig shapes an env; the zero value (and startColdEnv) is one host
// with 64 MiB and the reviews versions below.
type coldEnvConfig struct {
	coldStart string // placement.cold_start YAML
	policy    string // placement.default YAML (the pool policy); "" for the defaults
	hosts     int    // servingsim hosts sim1, sim2, ...; default 1
	capacity  int64  // each host's tfgate_capacity_bytes; default 64 MiB
	// memory is each servingsim's model memory limit; default capacity. A host
	// with memory == capacity can refuse a load while an evicted model of another
	// name is still unloading (TF Serving unloads a removed model in the
	// background); give it that headroom where the test evicts.
	memory int64
	// models are extra models (beyond reviews): name -> resident bytes of their
	// one version, 1. Listed in the routing config without a default: placed on
	// demand only.
	models map[string]int64
	// pins is placement.pins YAML ("" none).
	pins string
	// drain is how long a host's sidecar keeps a version it was unassigned in
	// TF Serving's config before unloading it (modelsync -placement-unload-delay);
	// default 300ms.
	drain time.Duration
}

// Sizes: a load takes resident_bytes / loadBytesPerSecond.
const (
	coldLoadBytesPerSecond = 1 << 20
	coldSmallBytes         = 64 << 10 // v1: ~60ms to load
	coldBigBytes           = 2 << 20  // v2, v3: ~2s to load
)

// coldLoadTime is the simulated load time of a version of n resident bytes.
func coldLoadTime(n int64) time.Duration {
	return time.Duration(float64(n) / coldLoadBytesPerSecond * float64(time.Second))
}

// setResident declares a version's resident_bytes in its servingsim.json.
func setResident(t *testing.T, dir string, bytes int64) {
	t.Helper()
	p := filepath.Join(dir, model.SpecPath)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m["resident_bytes"] = bytes
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func startColdEnv(t *testing.T, coldStart string) *coldEnv {
	t.Helper()
	return startColdEnvWith(t, coldEnvConfig{coldStart: coldStart})
}

func startColdEnvWith(t *testing.T, ec coldEnvConfig) *coldEnv {
	t.Helper()
	if ec.hosts == 0 {
		ec.hosts = 1
	}
	if ec.capacity == 0 {
		ec.capacity = 64 << 20
	}
	if ec.memory == 0 {
		ec.memory = ec.capacity
	}
	if ec.drain == 0 {
		ec.drain = 300 * time.Millisecond
	}
	consul := testenv.StartConsul(t)
	cl := consul.Client(t)
	root := t.TempDir()
	writeVersions(t, root, "reviews", model.KindTextClassifier, model.Cost{}, 1, 2, 3, 4, 5)
	// v4 is declared (in the catalog) larger than the host: unplaceable. v5 loads for 4s.
	sizes := map[placement.Key]int64{}
	for v, n := range map[int64]int64{1: coldSmallBytes, 2: coldBigBytes, 3: coldBigBytes, 4: coldSmallBytes, 5: 2 * coldBigBytes} {
		sizes[placement.Key{Model: "reviews", Version: v}] = n
	}
	models := []string{"reviews"}
	for name, n := range ec.models {
		writeVersions(t, root, name, model.KindTextClassifier, model.Cost{}, 1)
		sizes[placement.Key{Model: name, Version: 1}] = n
		models = append(models, name)
	}
	slices.Sort(models)
	for k, n := range sizes {
		setResident(t, filepath.Join(root, k.Model, fmt.Sprint(k.Version)), n)
	}
	store := placement.NewStore(cl, placement.StoreConfig{})
	var cat []placement.Version
	for k, n := range sizes {
		obj := n * 5 / 6 // x the default memory multiplier 1.2: n
		if k == (placement.Key{Model: "reviews", Version: 4}) {
			obj = 1 << 30
		}
		cat = append(cat, placement.Version{Key: k, ObjectBytes: obj})
	}
	if _, err := store.WriteCatalog(context.Background(), cat, placement.Written{}); err != nil {
		t.Fatal(err)
	}

	e := &coldEnv{t: t, cl: cl, root: root, store: store, models: models}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for i := range ec.hosts {
		e.hosts = append(e.hosts, e.startHost(ctx, &wg, fmt.Sprintf("sim%d", i+1), ec))
	}

	cfgPath := filepath.Join(t.TempDir(), "routes.yaml")
	var extra strings.Builder
	for _, name := range models {
		if name != "reviews" {
			fmt.Fprintf(&extra, "  %s: {}\n", name)
		}
	}
	policy := ""
	if ec.policy != "" {
		policy = "\n  default: " + ec.policy
	}
	if ec.pins != "" {
		policy += "\n  pins: " + ec.pins
	}
	routes := fmt.Sprintf(`backends:
  pools:
    main: {consul: {service: tfserving}}
  consul: {address: %q}
  consul_wait_time: 2s
  readiness: {interval: 100ms}
defaults:
  pools: [main]
  timeout: 5s
models:
  reviews:
    default: "1"
%splacement:
  demand_interval: 1s
  cold_start: %s%s
`, consul.HTTPAddr, extra.String(), ec.coldStart, policy)
	if err := os.WriteFile(cfgPath, []byte(routes), 0o644); err != nil {
		t.Fatal(err)
	}
	e.cfgPath = cfgPath
	g := e.startGateway("gw1")
	e.client, e.srv, e.guard = g.client, g.srv, g.guard
	return e
}

// startHost starts servingsim host id (its own server, so that the test can kill
// it), registers it in Consul with its capacity and runs its sidecar.
func (e *coldEnv) startHost(ctx context.Context, wg *sync.WaitGroup, id string, ec coldEnvConfig) *coldHost {
	t := e.t
	t.Helper()
	sc := servingsim.DefaultConfig()
	sc.ModelConfigFile = filepath.Join(t.TempDir(), "models.config")
	if err := os.WriteFile(sc.ModelConfigFile, []byte("model_config_list {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sc.FileSystemPollWait, sc.ModelMemoryLimitBytes, sc.LoadBytesPerSecond = 100*time.Millisecond, ec.memory, coldLoadBytesPerSecond
	sim, err := servingsim.New(sc)
	if err != nil {
		t.Fatalf("servingsim.New: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hctx, hcancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- sim.Serve(hctx, lis) }()
	select {
	case <-sim.Ready():
	case err := <-served:
		t.Fatalf("servingsim.Serve: %v", err)
	}
	h := &coldHost{id: id, addr: lis.Addr().String(), sim: sim}
	var sidecar sync.WaitGroup
	sidecar.Add(1)
	go func() { defer sidecar.Done(); e.sidecar(hctx, h, ec.drain) }()
	var once sync.Once
	h.kill = func() {
		once.Do(func() {
			hcancel()
			if err := <-served; err != nil {
				t.Errorf("servingsim %s: Serve: %v", id, err)
			}
			sidecar.Wait()
		})
	}
	wg.Add(1)
	go func() { defer wg.Done(); <-ctx.Done(); h.kill() }()

	host, port, _ := net.SplitHostPort(h.addr)
	pn, _ := strconv.Atoi(port)
	if err := e.cl.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: "tfserving", Address: host, Port: pn,
		Meta: map[string]string{placement.MetaCapacityBytes: strconv.FormatInt(ec.capacity, 10)},
	}); err != nil {
		t.Fatal(err)
	}
	return h
}

// host returns the env's host with ID id.
func (e *coldEnv) host(id string) *coldHost {
	for _, h := range e.hosts {
		if h.id == id {
			return h
		}
	}
	e.t.Fatalf("no host %q", id)
	return nil
}

// coldGW is one gateway of the env.
type coldGW struct {
	client tfgatev1.GatewayServiceClient
	srv    *Server
	guard  *availableGuard
	stop   func() // shuts the gateway down (also at cleanup)
}

// startGateway starts a gateway with placement on (ID id) over the env.
func (e *coldEnv) startGateway(id string) *coldGW {
	t := e.t
	t.Helper()
	g := &coldGW{}
	gctx, gcancel := context.WithCancel(context.Background())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Run(gctx, RunConfig{
			ConfigPath: e.cfgPath, ModelRoot: e.root, SpecPollInterval: 100 * time.Millisecond, ShutdownTimeout: 5 * time.Second,
			Server:    Options{WatchInterval: 50 * time.Millisecond},
			Placement: &PlacementConfig{ID: id, Client: e.cl, Store: placement.StoreConfig{WaitTime: 2 * time.Second}},
		}, Deps{
			Listener: lis,
			WrapBackends: func(b Backends) Backends {
				g.guard = &availableGuard{Backends: b, t: t}
				return g.guard
			},
			Started: func(_ net.Addr, s *Server) { g.srv = s; close(started) },
		})
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("gateway.Run: %v", err)
	}
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	g.client = tfgatev1.NewGatewayServiceClient(conn)
	var once sync.Once
	g.stop = func() {
		once.Do(func() {
			gcancel()
			if err := <-done; err != nil {
				t.Errorf("gateway.Run after shutdown: %v", err)
			}
			conn.Close()
		})
	}
	t.Cleanup(g.stop)
	return g
}

// sidecar keeps h's models equal to h's assignment, as modelsync -placement
// does, and counts the loads it starts. It applies configs in order, the
// latest pending one next (a reload that adds a model returns once the model is
// AVAILABLE, so a newer assignment may arrive meanwhile). A version taken off
// the host stays in the config for drain before it is unloaded, as modelsync's
// -placement-unload-delay keeps it, so that gateways stop routing it first.
func (e *coldEnv) sidecar(ctx context.Context, h *coldHost, drain time.Duration) {
	updates := make(chan placement.HostView)
	watchDone := make(chan struct{})
	go func() { defer close(watchDone); _ = e.store.WatchHost(ctx, "main", h.id, updates) }()
	defer func() { <-watchDone }()
	pending := make(chan *servingpb.ModelServerConfig, 1)
	applyDone := make(chan struct{})
	go func() {
		defer close(applyDone)
		for {
			select {
			case <-ctx.Done():
				return
			case cfg := <-pending:
				rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				_ = h.sim.Reload(rctx, cfg)
				cancel()
			}
		}
	}()
	defer func() { <-applyDone }()
	have := map[placement.Key]bool{}
	draining := map[placement.Key]time.Time{} // unassigned, in the config until then
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case hv := <-updates:
			want := map[placement.Key]bool{}
			for _, en := range hv.Assignment.Entries {
				want[en.Key] = true
				if _, kept := draining[en.Key]; !have[en.Key] && !kept {
					n, _ := e.loads.LoadOrStore(coldLoad{h.id, en.Key}, new(atomic.Int64))
					n.(*atomic.Int64).Add(1)
				}
				delete(draining, en.Key)
			}
			for k := range have {
				if !want[k] {
					draining[k] = time.Now().Add(drain)
				}
			}
			have = want
		case <-timer.C:
		}
		now := time.Now()
		versions := map[string][]int64{}
		for k := range have {
			versions[k.Model] = append(versions[k.Model], k.Version)
		}
		var next time.Time
		for k, until := range draining {
			if !now.Before(until) {
				delete(draining, k)
				continue
			}
			versions[k.Model] = append(versions[k.Model], k.Version)
			if next.IsZero() || until.Before(next) {
				next = until
			}
		}
		if !next.IsZero() {
			timer.Reset(next.Sub(now))
		}
		list := &servingpb.ModelConfigList{}
		for _, name := range e.models {
			if len(versions[name]) == 0 {
				continue // not assigned here: left out of the config, so unloaded
			}
			slices.Sort(versions[name])
			list.Config = append(list.Config, &servingpb.ModelConfig{Name: name, BasePath: filepath.Join(e.root, name), ModelPlatform: "tensorflow",
				ModelVersionPolicy: &servingpb.FileSystemStoragePathSourceConfig_ServableVersionPolicy{PolicyChoice: &servingpb.FileSystemStoragePathSourceConfig_ServableVersionPolicy_Specific_{
					Specific: &servingpb.FileSystemStoragePathSourceConfig_ServableVersionPolicy_Specific{Versions: versions[name]}}}})
		}
		cfg := &servingpb.ModelServerConfig{Config: &servingpb.ModelServerConfig_ModelConfigList{ModelConfigList: list}}
		select {
		case <-pending: // superseded
		default:
		}
		pending <- cfg
	}
}

// loadsOf counts the loads of reviews@v on every host.
func (e *coldEnv) loadsOf(v int64) int64 {
	return e.loadsOfKey(placement.Key{Model: "reviews", Version: v}, "")
}

// loadsOfKey counts the loads of k on host (every host when "").
func (e *coldEnv) loadsOfKey(k placement.Key, host string) int64 {
	var n int64
	e.loads.Range(func(key, c any) bool {
		if l := key.(coldLoad); l.key == k && (host == "" || l.host == host) {
			n += c.(*atomic.Int64).Load()
		}
		return true
	})
	return n
}

// availableGuard fails the test if a backend call is made for a version no host
// reports AVAILABLE, goes to a host that did not report it AVAILABLE (neither
// just before the call nor just after), or a host answers that it does not have
// it. It counts the calls each host served.
type availableGuard struct {
	Backends
	t     *testing.T
	calls atomic.Int64
	bad   atomic.Int64

	mu     sync.Mutex
	served map[guardCall]int // successful calls per (host address, model, version)
}

type guardCall struct {
	host    string
	model   string
	version int64
}

// Updated forwards the readiness broadcast, so held requests wake on it as
// they do behind the real HostBackends.
func (g *availableGuard) Updated() <-chan struct{} {
	return g.Backends.(interface{ Updated() <-chan struct{} }).Updated()
}

func (g *availableGuard) Predict(ctx context.Context, pools []string, req *servingpb.PredictRequest) (*servingpb.PredictResponse, string, error) {
	g.calls.Add(1)
	name, v := req.GetModelSpec().GetName(), req.GetModelSpec().GetVersion().GetValue()
	before := g.Backends.AvailableHosts(name, v, pools)
	if len(before) == 0 {
		g.bad.Add(1)
		g.t.Errorf("backend call for %s@%d while no host reports it AVAILABLE", name, v)
	}
	resp, host, err := g.Backends.Predict(ctx, pools, req)
	if host != "" && !slices.Contains(before, host) && !slices.Contains(g.Backends.AvailableHosts(name, v, pools), host) {
		g.bad.Add(1)
		g.t.Errorf("backend call for %s@%d went to %s, which did not report it AVAILABLE (hosts that did: %v)", name, v, host, before)
	}
	if status.Code(err) == codes.NotFound {
		g.bad.Add(1)
		g.t.Errorf("host %s answered NOT_FOUND for %s@%d: %v", host, name, v, err)
	}
	if err == nil {
		g.mu.Lock()
		if g.served == nil {
			g.served = map[guardCall]int{}
		}
		g.served[guardCall{host, name, v}]++
		g.mu.Unlock()
	}
	return resp, host, err
}

// servedBy counts the calls for model@v that host (an address) served.
func (g *availableGuard) servedBy(host, model string, v int64) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.served[guardCall{host, model, v}]
}

func (e *coldEnv) predict(ctx context.Context, v int64, opts ...grpc.CallOption) (*tfgatev1.PredictResponse, error) {
	return e.predictModel(ctx, "reviews", v, opts...)
}

func (e *coldEnv) predictModel(ctx context.Context, name string, v int64, opts ...grpc.CallOption) (*tfgatev1.PredictResponse, error) {
	return e.client.Predict(ctx, &tfgatev1.PredictRequest{Model: name, Target: &tfgatev1.PredictRequest_Version{Version: v}, Instances: text("a fine product")}, opts...)
}

// waitDefault waits for the default version (placed as required) to serve.
func (e *coldEnv) waitDefault() {
	e.t.Helper()
	testwait.UntilNil(e.t, "the default version (placed as required) to serve", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := e.client.Predict(ctx, &tfgatev1.PredictRequest{Model: "reviews", Instances: text("ok")})
		return err
	})
}

// TestColdStartPlacement: with placement on, 100 concurrent first requests for a
// version no host has are all served after its load, which happens exactly once;
// a request whose deadline is shorter than the load gets the documented
// UNAVAILABLE with a retry pushback; and no backend call ever goes to a host
// without the version.
func TestColdStartPlacement(t *testing.T) {
	e := startColdEnv(t, "{max_wait: 20s, pushback: 700ms, max_queue: 150, deadline_margin: 300ms}")
	// v1 is the default route: required, placed by the first decision.
	e.waitDefault()

	t.Run("100 first requests, one load", func(t *testing.T) {
		const n = 100
		var wg sync.WaitGroup
		errs := make([]error, n)
		waits := make([]time.Duration, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
				defer cancel()
				start := time.Now()
				resp, err := e.predict(ctx, 2)
				waits[i] = time.Since(start)
				if err == nil && resp.GetVersion() != 2 {
					err = fmt.Errorf("served by version %d", resp.GetVersion())
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		failed := 0
		for i, err := range errs {
			if err != nil {
				failed++
				if failed <= 3 {
					t.Errorf("request %d for cold reviews@2: %v", i, err)
				}
			}
		}
		if got := e.loadsOf(2); got != 1 {
			t.Errorf("reviews@2 was loaded %d times for %d concurrent first requests, want 1", got, n)
		}
		slices.Sort(waits)
		load := time.Duration(float64(coldBigBytes) / coldLoadBytesPerSecond * float64(time.Second))
		t.Logf("cold start of reviews@2 (simulated load %v): %d requests, wait p50 %v, max %v; %d waited in the cold path",
			load, n, waits[n/2].Round(time.Millisecond), waits[n-1].Round(time.Millisecond), e.srv.cold.started.Load())
	})

	t.Run("deadline shorter than the load", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
		defer cancel()
		var trailer metadata.MD
		_, err := e.predict(ctx, 3, grpc.Trailer(&trailer))
		st := status.Convert(err)
		if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "is being loaded") || !strings.Contains(st.Message(), "reviews") {
			t.Fatalf("request for cold reviews@3 with a 700ms deadline: %v, want UNAVAILABLE saying it is being loaded", err)
		}
		if got := trailer.Get("grpc-retry-pushback-ms"); !slices.Equal(got, []string{"700"}) {
			t.Errorf("grpc-retry-pushback-ms = %q, want [700]", got)
		}
		t.Logf("message: %s", st.Message())
		// The load goes on; a retry with time enough is served.
		testwait.UntilNil(t, "reviews@3 to be served once loaded", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := e.predict(ctx, 3)
			return err
		})
		if got := e.loadsOf(3); got != 1 {
			t.Errorf("reviews@3 loaded %d times, want 1", got)
		}
	})

	t.Run("unplaceable fails fast", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_, err := e.predict(ctx, 4)
		st := status.Convert(err)
		if st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "cannot be placed") || !strings.Contains(st.Message(), "largest host") {
			t.Fatalf("request for reviews@4 (larger than any host): %v, want FAILED_PRECONDITION naming why", err)
		}
		t.Logf("message: %s", st.Message())
	})

	t.Run("cold queue full", func(t *testing.T) {
		const n = 160 // max_queue 150
		var wg sync.WaitGroup
		var full, unavailable, other atomic.Int64
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				_, err := e.predict(ctx, 5)
				switch status.Code(err) {
				case codes.ResourceExhausted:
					full.Add(1)
				case codes.Unavailable:
					unavailable.Add(1)
				default:
					other.Add(1)
					t.Errorf("request for reviews@5 (4s load, 2s deadline): %v, want UNAVAILABLE or RESOURCE_EXHAUSTED", err)
				}
			}()
		}
		wg.Wait()
		if full.Load() == 0 || full.Load() > n-150 {
			t.Errorf("%d of %d requests were RESOURCE_EXHAUSTED with max_queue 150; want between 1 and %d", full.Load(), n, n-150)
		}
		t.Logf("reviews@5: %d UNAVAILABLE (load in progress), %d RESOURCE_EXHAUSTED", unavailable.Load(), full.Load())
	})

	t.Run("ListPlacement", func(t *testing.T) {
		// A host whose sidecar reports reviews@1 unloaded in its disk cache.
		if err := e.store.PutStatus(context.Background(), placement.HostStatus{Host: "sim9", Updated: time.Now(),
			Cached: []placement.StatusVersion{{Model: "reviews", Version: 1, Bytes: 123}}}); err != nil {
			t.Fatal(err)
		}
		resp, err := e.client.ListPlacement(context.Background(), &tfgatev1.ListPlacementRequest{Model: "reviews"})
		if err != nil {
			t.Fatal(err)
		}
		if !resp.GetEnabled() || !resp.GetThisGatewayLeads() {
			t.Errorf("enabled %v, leads %v; want both (one gateway)", resp.GetEnabled(), resp.GetThisGatewayLeads())
		}
		byV := map[int64]*tfgatev1.PlacedVersion{}
		for _, v := range resp.GetVersions() {
			byV[v.GetVersion()] = v
		}
		if v := byV[1]; v == nil || v.GetRequired() != "default" || len(v.GetAssigned()) != 1 || v.GetAssigned()[0].GetHost() != "sim1" || len(v.GetResident()) != 1 ||
			!slices.Equal(v.GetCached(), []string{"sim9"}) {
			t.Errorf("reviews@1: %v, want required default, assigned to sim1, resident, cached on sim9", v)
		}
		if v := byV[2]; v == nil || v.GetState() != "placed" || len(v.GetResident()) != 1 || v.GetLoading() || !strings.Contains(v.GetWhy(), "sim1") {
			t.Errorf("reviews@2: %v, want placed and resident on sim1, explained", v)
		}
		if v := byV[4]; v == nil || v.GetState() != "unplaceable" || !strings.Contains(v.GetWhy(), "largest host") {
			t.Errorf("reviews@4: %v, want unplaceable with the reason", v)
		}
		t.Logf("reviews@2: %s", byV[2].GetWhy())
	})

	if e.guard.calls.Load() == 0 || e.guard.bad.Load() != 0 {
		t.Errorf("backend calls %d, to hosts without the version %d; want some calls, none without", e.guard.calls.Load(), e.guard.bad.Load())
	}
}

// TestColdStartFollower: with two gateways, one leads; a cold request on the
// follower is served after one load: its demand write is what makes the leader
// place the version.
func TestColdStartFollower(t *testing.T) {
	e := startColdEnv(t, "{max_wait: 20s}")
	testwait.Until(t, "gw1 to lead", func() bool { return e.srv.placer.ctl.IsLeader() })
	g2 := e.startGateway("gw2")
	if g2.srv.placer.ctl.IsLeader() {
		t.Fatal("both gateways lead")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := g2.client.Predict(ctx, &tfgatev1.PredictRequest{Model: "reviews", Target: &tfgatev1.PredictRequest_Version{Version: 2}, Instances: text("cold on the follower")})
	if err != nil || resp.GetVersion() != 2 {
		t.Fatalf("cold reviews@2 on the follower: %v, %v; want served by version 2", resp, err)
	}
	if got := e.loadsOf(2); got != 1 {
		t.Errorf("reviews@2 loaded %d times, want 1", got)
	}
	lp, err := g2.client.ListPlacement(context.Background(), &tfgatev1.ListPlacementRequest{Model: "reviews"})
	if err != nil {
		t.Fatal(err)
	}
	if lp.GetThisGatewayLeads() || lp.GetLeader() != "gw1" {
		t.Errorf("follower's ListPlacement: leads %v, leader %q; want false, gw1", lp.GetThisGatewayLeads(), lp.GetLeader())
	}
	if g2.guard.bad.Load() != 0 || e.guard.bad.Load() != 0 {
		t.Error("a backend call went to a host without the version")
	}

	// Shutdown answers a held request at once instead of holding the graceful stop.
	held := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := g2.client.Predict(ctx, &tfgatev1.PredictRequest{Model: "reviews", Target: &tfgatev1.PredictRequest_Version{Version: 5}, Instances: text("held at shutdown")})
		held <- err
	}()
	testwait.Until(t, "the request for cold reviews@5 to be held", func() bool { return len(g2.srv.cold.waitingNow()) == 1 })
	g2.stop()
	if err := <-held; status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "shutting down") {
		t.Errorf("request held at shutdown: %v, want UNAVAILABLE saying the gateway is shutting down", err)
	}
}

// TestColdStartLost: which backend failures hold a request again for the
// version's re-placement (the hosts that had it went away or unloaded it), and
// which are answered as they are.
func TestColdStartLost(t *testing.T) {
	c := &coldStart{}
	he := func(code codes.Code) error {
		return fmt.Errorf("wrapped: %w", &hosts.HostError{Addr: "10.0.0.1:8500", Err: status.Error(code, "x")})
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name     string
		ctx      context.Context
		err      error
		host     string
		wantLost bool
	}{
		{"transport failure", context.Background(), he(codes.Unavailable), "10.0.0.1:8500", true},
		{"connection closed by discovery", context.Background(), he(codes.Canceled), "10.0.0.1:8500", true},
		{"servable not found (evicted)", context.Background(), he(codes.NotFound), "10.0.0.1:8500", true},
		{"readiness dropped the version", context.Background(), fmt.Errorf("x: %w", hosts.ErrVersionUnavailable), "", true},
		{"every host ejected", context.Background(), fmt.Errorf("x: %w", hosts.ErrNoHost), "", true},
		{"the model's own error", context.Background(), he(codes.InvalidArgument), "", false},
		{"deadline", context.Background(), he(codes.DeadlineExceeded), "", false},
		{"caller gone", canceled, he(codes.Unavailable), "", false},
	} {
		host, lost := c.lost(tc.ctx, tc.err)
		if lost != tc.wantLost || host != tc.host {
			t.Errorf("%s: lost(%v) = %q, %v; want %q, %v", tc.name, tc.err, host, lost, tc.host, tc.wantLost)
		}
	}
}
