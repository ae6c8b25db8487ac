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

	"github.com/tfgate/tfgate/internal/servingsim"
	"github.com/tfgate/tfgate/internal/servingsim/model"
	"github.com/tfgate/tfgate/internal/testenv"
	"github.com/tfgate/tfgate/internal/testwait"
	"github.com/tfgate/tfgate/placement"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// coldEnv is a gateway run with placement on, a real Consul agent and one
// in-process servingsim host with finite memory and a simulated load speed,
// registered in Consul with its capacity. The test plays the host's sidecar
// (modelsync -placement is exercised by its own tests): it watches the host's
// assignment in KV and applies exactly it with HandleReloadConfigRequest,
// counting every load it asks for.
type coldEnv struct {
	t      *testing.T
	client tfgatev1.GatewayServiceClient
	srv    *Server
	guard  *availableGuard
	loads  sync.Map // placement.Key -> *atomic.Int64: times the sidecar added the version
	cancel context.CancelFunc

	cfgPath, root string
	cl            *api.Client
}

// Sizes: a load takes resident_bytes / loadBytesPerSecond.
const (
	coldLoadBytesPerSecond = 1 << 20
	coldSmallBytes         = 64 << 10 // v1: ~60ms to load
	coldBigBytes           = 2 << 20  // v2, v3: ~2s to load
)

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
	consul := testenv.StartConsul(t)
	cl := consul.Client(t)
	root := t.TempDir()
	writeVersions(t, root, "reviews", model.KindTextClassifier, model.Cost{}, 1, 2, 3, 4, 5)
	// v4 is declared (in the catalog) larger than the host: unplaceable. v5 loads for 4s.
	sizes := map[int64]int64{1: coldSmallBytes, 2: coldBigBytes, 3: coldBigBytes, 4: coldSmallBytes, 5: 2 * coldBigBytes}
	for v, n := range sizes {
		setResident(t, filepath.Join(root, "reviews", fmt.Sprint(v)), n)
	}
	sc := servingsim.DefaultConfig()
	sc.ModelConfigFile = filepath.Join(root, "models.config")
	if err := os.WriteFile(sc.ModelConfigFile, []byte("model_config_list {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sc.FileSystemPollWait, sc.ModelMemoryLimitBytes, sc.LoadBytesPerSecond = 100*time.Millisecond, 64<<20, coldLoadBytesPerSecond
	simAddr, sim := testenv.StartServingsimInProcess(t, sc)
	host, port, _ := net.SplitHostPort(simAddr)
	pn, _ := strconv.Atoi(port)
	if err := cl.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "sim1", Name: "tfserving", Address: host, Port: pn,
		Meta: map[string]string{placement.MetaCapacityBytes: strconv.Itoa(64 << 20)},
	}); err != nil {
		t.Fatal(err)
	}
	store := placement.NewStore(cl, placement.StoreConfig{})
	var cat []placement.Version
	for v, n := range sizes {
		obj := n * 5 / 6
		if v == 4 {
			obj = 1 << 30
		}
		cat = append(cat, placement.Version{Key: placement.Key{Model: "reviews", Version: v}, ObjectBytes: obj})
	}
	if _, err := store.WriteCatalog(context.Background(), cat, placement.Written{}); err != nil {
		t.Fatal(err)
	}

	e := &coldEnv{t: t}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); e.sidecar(ctx, store, sim, filepath.Join(root, "reviews")) }()

	cfgPath := filepath.Join(t.TempDir(), "routes.yaml")
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
placement:
  demand_interval: 1s
  cold_start: %s
`, consul.HTTPAddr, coldStart)
	if err := os.WriteFile(cfgPath, []byte(routes), 0o644); err != nil {
		t.Fatal(err)
	}
	e.cfgPath, e.root, e.cl = cfgPath, root, cl
	t.Cleanup(func() { cancel(); wg.Wait() })
	g := e.startGateway("gw1")
	e.client, e.srv, e.guard = g.client, g.srv, g.guard
	return e
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

// sidecar keeps servingsim's models equal to sim1's assignment, as modelsync
// -placement does, and counts the loads it starts.
func (e *coldEnv) sidecar(ctx context.Context, store *placement.Store, sim *servingsim.Server, base string) {
	updates := make(chan placement.HostView)
	watchDone := make(chan struct{})
	go func() { defer close(watchDone); _ = store.WatchHost(ctx, "main", "sim1", updates) }()
	defer func() { <-watchDone }()
	have := map[placement.Key]bool{}
	for {
		var hv placement.HostView
		select {
		case <-ctx.Done():
			return
		case hv = <-updates:
		}
		var versions []int64
		want := map[placement.Key]bool{}
		for _, en := range hv.Assignment.Entries {
			want[en.Key] = true
			versions = append(versions, en.Version)
			if !have[en.Key] {
				n, _ := e.loads.LoadOrStore(en.Key, new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
			}
		}
		have = want
		cfg := &servingpb.ModelServerConfig{Config: &servingpb.ModelServerConfig_ModelConfigList{ModelConfigList: &servingpb.ModelConfigList{
			Config: []*servingpb.ModelConfig{{Name: "reviews", BasePath: base, ModelPlatform: "tensorflow",
				ModelVersionPolicy: &servingpb.FileSystemStoragePathSourceConfig_ServableVersionPolicy{PolicyChoice: &servingpb.FileSystemStoragePathSourceConfig_ServableVersionPolicy_Specific_{
					Specific: &servingpb.FileSystemStoragePathSourceConfig_ServableVersionPolicy_Specific{Versions: versions}}}}},
		}}}
		// HandleReloadConfigRequest blocks until added versions are AVAILABLE;
		// apply it in the background as a sidecar with a deadline would.
		go func() {
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			_ = sim.Reload(rctx, cfg)
		}()
	}
}

func (e *coldEnv) loadsOf(v int64) int64 {
	if n, ok := e.loads.Load(placement.Key{Model: "reviews", Version: v}); ok {
		return n.(*atomic.Int64).Load()
	}
	return 0
}

// availableGuard fails the test if a backend call is made for a version no host
// reports AVAILABLE, or a host answers that it does not have it.
type availableGuard struct {
	Backends
	t     *testing.T
	calls atomic.Int64
	bad   atomic.Int64
}

func (g *availableGuard) Predict(ctx context.Context, pools []string, req *servingpb.PredictRequest) (*servingpb.PredictResponse, string, error) {
	g.calls.Add(1)
	name, v := req.GetModelSpec().GetName(), req.GetModelSpec().GetVersion().GetValue()
	if len(g.Backends.AvailableHosts(name, v, pools)) == 0 {
		g.bad.Add(1)
		g.t.Errorf("backend call for %s@%d while no host reports it AVAILABLE", name, v)
	}
	resp, host, err := g.Backends.Predict(ctx, pools, req)
	if status.Code(err) == codes.NotFound {
		g.bad.Add(1)
		g.t.Errorf("host %s answered NOT_FOUND for %s@%d: %v", host, name, v, err)
	}
	return resp, host, err
}

func (e *coldEnv) predict(ctx context.Context, v int64, opts ...grpc.CallOption) (*tfgatev1.PredictResponse, error) {
	return e.client.Predict(ctx, &tfgatev1.PredictRequest{Model: "reviews", Target: &tfgatev1.PredictRequest_Version{Version: v}, Instances: text("a fine product")}, opts...)
}

// TestColdStartPlacement: with placement on, 100 concurrent first requests for a
// version no host has are all served after its load, which happens exactly once;
// a request whose deadline is shorter than the load gets the documented
// UNAVAILABLE with a retry pushback; and no backend call ever goes to a host
// without the version.
func TestColdStartPlacement(t *testing.T) {
	e := startColdEnv(t, "{max_wait: 20s, pushback: 700ms, max_queue: 150, deadline_margin: 300ms}")
	// v1 is the default route: required, placed by the first decision.
	testwait.UntilNil(t, "the default version (placed as required) to serve", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := e.client.Predict(ctx, &tfgatev1.PredictRequest{Model: "reviews", Instances: text("ok")})
		return err
	})

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
		if v := byV[1]; v == nil || v.GetRequired() != "default" || len(v.GetAssigned()) != 1 || v.GetAssigned()[0].GetHost() != "sim1" || len(v.GetResident()) != 1 {
			t.Errorf("reviews@1: %v, want required default, assigned to sim1, resident", v)
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
