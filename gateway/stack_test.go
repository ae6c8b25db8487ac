package gateway

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tfgate/tfgate/internal/modelgen"
	"github.com/tfgate/tfgate/internal/servingsim"
	"github.com/tfgate/tfgate/internal/servingsim/model"
	"github.com/tfgate/tfgate/internal/testenv"
	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// stack is a gateway in front of an in-process servingsim, both on loopback TCP,
// with real model version directories written by modelgen (each with its
// tfgate-preprocess.json) under one model root.
type stack struct {
	t        *testing.T
	root     string
	cfgPath  string
	simAddr  string
	addr     string
	srv      *Server
	client   tfgatev1.GatewayServiceClient
	conn     *grpc.ClientConn
	recorder *recorder
	cancel   context.CancelFunc
	done     chan error
}

type stackOpts struct {
	// versions of "reviews" (text-classifier) to write; servingsim serves servedVersions (all when nil).
	versions       []int64
	servedVersions []int64
	// textModels are more text-classifier models beside "reviews" (and
	// "churn"), each with the same versions, every one served.
	textModels    []string
	routes        string // the models: section
	maxRecv       int
	cost          model.Cost // simulated compute cost of every version
	wrap          func(Backends) Backends
	serverOptions []grpc.ServerOption     // added to the gateway's gRPC server's
	run           func(*RunConfig, *Deps) // last changes to what Run gets
}

// writeVersions exports model versions with modelgen; seeds differ per version so
// vocabularies and weights differ.
func writeVersions(t testing.TB, root, name, kind string, cost model.Cost, versions ...int64) {
	t.Helper()
	for _, v := range versions {
		spec := modelgen.Spec{Kind: kind, Seed: v * 7919, MaxLen: 16, Classes: 3, VocabSize: 600, Cost: cost}
		if kind != model.KindTextClassifier {
			spec = modelgen.Spec{Kind: kind, Seed: v * 7919, Features: 4, Cost: cost}
		}
		if err := modelgen.Export(filepath.Join(root, name, fmt.Sprint(v)), spec); err != nil {
			t.Fatalf("modelgen.Export %s/%d: %v", name, v, err)
		}
	}
}

// writeVersionsAt exports one text-classifier version (seeded like writeVersions)
// into dir.
func writeVersionsAt(t testing.TB, dir string, v int64) {
	t.Helper()
	if err := modelgen.Export(dir, modelgen.Spec{Kind: model.KindTextClassifier, Seed: v * 7919, MaxLen: 16, Classes: 3, VocabSize: 600}); err != nil {
		t.Fatalf("modelgen.Export %s: %v", dir, err)
	}
}

func servingConfig(root string, served []int64, textModels ...string) string {
	policy := "all {}"
	if served != nil {
		var vs []string
		for _, v := range served {
			vs = append(vs, fmt.Sprintf("versions: %d", v))
		}
		policy = "specific { " + strings.Join(vs, " ") + " }"
	}
	var more strings.Builder
	for _, m := range textModels {
		fmt.Fprintf(&more, "  config { name: %q base_path: %q model_platform: \"tensorflow\" model_version_policy { all {} } }\n", m, filepath.Join(root, m))
	}
	return fmt.Sprintf(`model_config_list {
  config { name: "reviews" base_path: %q model_platform: "tensorflow" model_version_policy { %s } }
  config { name: "churn" base_path: %q model_platform: "tensorflow" model_version_policy { all {} } }
%s}
`, filepath.Join(root, "reviews"), policy, filepath.Join(root, "churn"), more.String())
}

func routingConfig(simAddr, models string) string {
	return fmt.Sprintf(`backends:
  pools:
    main: {static: [%q]}
  readiness: {interval: 100ms}
defaults:
  pools: [main]
  timeout: 5s
limits:
  max_instances: 32
  max_text_bytes: 2048
  max_routing_key_bytes: 64
  max_features: 16
models:
%s`, simAddr, models)
}

const defaultRoutes = `  reviews:
    default: stable
    labels: {stable: 1, canary: 2}
  churn:
    default: "1"
`

func startStack(t *testing.T, o stackOpts) *stack {
	t.Helper()
	if o.versions == nil {
		o.versions = []int64{1, 2}
	}
	if o.routes == "" {
		o.routes = defaultRoutes
	}
	root := t.TempDir()
	writeVersions(t, root, "reviews", model.KindTextClassifier, o.cost, o.versions...)
	writeVersions(t, root, "churn", model.KindLinear, model.Cost{}, 1)
	for _, m := range o.textModels {
		writeVersions(t, root, m, model.KindTextClassifier, o.cost, o.versions...)
	}
	mcf := filepath.Join(root, "models.config")
	if err := os.WriteFile(mcf, []byte(servingConfig(root, o.servedVersions, o.textModels...)), 0o644); err != nil {
		t.Fatal(err)
	}
	sc := servingsim.DefaultConfig()
	sc.ModelConfigFile, sc.FileSystemPollWait = mcf, 100*time.Millisecond
	simAddr, _ := testenv.StartServingsimInProcess(t, sc)

	s := &stack{t: t, root: root, simAddr: simAddr, cfgPath: filepath.Join(t.TempDir(), "routes.yaml"), recorder: &recorder{}, done: make(chan error, 1)}
	s.writeRoutes(o.routes)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	wrap := func(b Backends) Backends {
		s.recorder.Backends = b
		if o.wrap != nil {
			return o.wrap(s.recorder)
		}
		return s.recorder
	}
	rc := RunConfig{
		ConfigPath:       s.cfgPath,
		ModelRoot:        root,
		SpecPollInterval: 100 * time.Millisecond,
		MaxRecvMsgSize:   o.maxRecv,
		ShutdownTimeout:  5 * time.Second,
		Server:           Options{WatchInterval: 20 * time.Millisecond},
	}
	deps := Deps{
		Listener:      lis,
		WrapBackends:  wrap,
		ServerOptions: o.serverOptions,
		Started:       func(addr net.Addr, srv *Server) { s.addr, s.srv = addr.String(), srv; close(started) },
	}
	if o.run != nil {
		o.run(&rc, &deps)
	}
	go func() { s.done <- Run(ctx, rc, deps) }()
	select {
	case <-started:
	case err := <-s.done:
		t.Fatalf("gateway.Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("gateway did not start in 30s")
	}
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(256<<20)))
	if err != nil {
		t.Fatal(err)
	}
	s.conn, s.client = conn, tfgatev1.NewGatewayServiceClient(conn)
	t.Cleanup(s.stop)
	s.waitRoutable("reviews", 1)
	return s
}

func (s *stack) stop() {
	if s.cancel == nil {
		return
	}
	s.conn.Close()
	s.cancel()
	s.cancel = nil
	if err := <-s.done; err != nil {
		s.t.Errorf("gateway.Run returned %v after shutdown, want nil", err)
	}
}

func (s *stack) writeRoutes(models string) {
	s.t.Helper()
	tmp := s.cfgPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(routingConfig(s.simAddr, models)), 0o644); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Rename(tmp, s.cfgPath); err != nil {
		s.t.Fatal(err)
	}
}

// waitRoutable waits until ListRoutes says the version is routable.
func (s *stack) waitRoutable(model string, v int64) {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := s.client.ListRoutes(context.Background(), &tfgatev1.ListRoutesRequest{Model: model})
		if err == nil {
			for _, vs := range resp.GetModels()[0].GetVersions() {
				if vs.GetVersion() == v && vs.GetRoutable() {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("model %s version %d not routable after 20s: %v %v", model, v, resp, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitGeneration waits until the server serves config generation >= gen.
func (s *stack) waitGeneration(gen uint64) {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.srv.Generation() < gen {
		if time.Now().After(deadline) {
			s.t.Fatalf("config generation %d not reached in 10s (at %d; stats %+v)", gen, s.srv.Generation(), s.srv.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recorder wraps the real backends and records every Predict's pinned version
// and deadline.
type recorder struct {
	Backends
	mu    sync.Mutex
	calls []call
}

type call struct {
	model    string
	version  int64
	label    string
	deadline time.Duration // remaining at the call; 0 without deadline
	inputs   map[string]*tfpb.TensorProto
	rows     int64
}

func (r *recorder) Predict(ctx context.Context, pools []string, req *servingpb.PredictRequest) (*servingpb.PredictResponse, string, error) {
	c := call{model: req.GetModelSpec().GetName(), version: req.GetModelSpec().GetVersion().GetValue(), label: req.GetModelSpec().GetVersionLabel()}
	if dl, ok := ctx.Deadline(); ok {
		c.deadline = time.Until(dl)
	}
	c.inputs = req.GetInputs()
	for _, t := range c.inputs {
		if d := t.GetTensorShape().GetDim(); len(d) > 0 {
			c.rows = d[0].GetSize()
		}
	}
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
	return r.Backends.Predict(ctx, pools, req)
}

func (r *recorder) all() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]call(nil), r.calls...)
}

func (r *recorder) last() call {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.calls) == 0 {
		return call{}
	}
	return r.calls[len(r.calls)-1]
}

func text(ss ...string) []*tfgatev1.Instance {
	out := make([]*tfgatev1.Instance, len(ss))
	for i, s := range ss {
		out[i] = &tfgatev1.Instance{Text: s}
	}
	return out
}
