package hosts

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tfgate/tfgate/gateway/discovery"
	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// fakeTFS is a minimal TF Serving on real loopback TCP for unit tests: it answers
// GetModelStatus from a settable version table and Predict with its own address.
type fakeTFS struct {
	servingpb.UnimplementedPredictionServiceServer
	servingpb.UnimplementedModelServiceServer
	addr  string
	srv   *grpc.Server
	hits  atomic.Int64
	delay atomic.Int64 // nanoseconds each Predict waits
	big   atomic.Int64 // extra output bytes

	mu       sync.Mutex
	versions map[string][]int64
	polls    map[string]int // GetModelStatus calls per model
	started  chan struct{}  // receives when a Predict starts (if non-nil)
}

func startFake(t *testing.T, versions map[string][]int64) *fakeTFS { return startFakeB(t, versions) }

func startFakeB(t testing.TB, versions map[string][]int64) *fakeTFS {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeTFS{addr: lis.Addr().String(), srv: grpc.NewServer(grpc.MaxSendMsgSize(1 << 30)), versions: versions}
	servingpb.RegisterPredictionServiceServer(f.srv, f)
	servingpb.RegisterModelServiceServer(f.srv, f)
	go func() { _ = f.srv.Serve(lis) }()
	t.Cleanup(f.srv.Stop)
	return f
}

func (f *fakeTFS) setVersions(model string, vs ...int64) {
	f.mu.Lock()
	f.versions[model] = vs
	f.mu.Unlock()
}

// pollCounts returns a copy of the GetModelStatus calls per model so far.
func (f *fakeTFS) pollCounts() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int, len(f.polls))
	for k, v := range f.polls {
		out[k] = v
	}
	return out
}

func (f *fakeTFS) has(model string, v int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Contains(f.versions[model], v)
}

func (f *fakeTFS) GetModelStatus(_ context.Context, req *servingpb.GetModelStatusRequest) (*servingpb.GetModelStatusResponse, error) {
	f.mu.Lock()
	vs, ok := f.versions[req.GetModelSpec().GetName()]
	if f.polls == nil {
		f.polls = map[string]int{}
	}
	f.polls[req.GetModelSpec().GetName()]++
	f.mu.Unlock()
	if !ok {
		return nil, status.Errorf(codes.NotFound, "Servable not found for request: Latest(%s)", req.GetModelSpec().GetName())
	}
	resp := &servingpb.GetModelStatusResponse{}
	for _, v := range vs {
		resp.ModelVersionStatus = append(resp.ModelVersionStatus, &servingpb.ModelVersionStatus{
			Version: v, State: servingpb.ModelVersionStatus_AVAILABLE})
	}
	resp.ModelVersionStatus = append(resp.ModelVersionStatus, &servingpb.ModelVersionStatus{
		Version: 999, State: servingpb.ModelVersionStatus_LOADING})
	return resp, nil
}

func (f *fakeTFS) Predict(ctx context.Context, req *servingpb.PredictRequest) (*servingpb.PredictResponse, error) {
	name := req.GetModelSpec().GetName()
	v := req.GetModelSpec().GetVersion().GetValue()
	if !f.has(name, v) {
		return nil, status.Errorf(codes.NotFound, "Servable not found for request: Specific(%s, %d)", name, v)
	}
	f.hits.Add(1)
	if f.started != nil {
		f.started <- struct{}{}
	}
	if d := time.Duration(f.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	out := &tfpb.TensorProto{Dtype: tfpb.DataType_DT_STRING, StringVal: [][]byte{[]byte(f.addr)}}
	if n := f.big.Load(); n > 0 {
		out.StringVal = append(out.StringVal, make([]byte, n))
	}
	return &servingpb.PredictResponse{
		Outputs:   map[string]*tfpb.TensorProto{"host": out},
		ModelSpec: &servingpb.ModelSpec{Name: name, VersionChoice: &servingpb.ModelSpec_Version{Version: wrapperspb.Int64(v)}},
	}, nil
}

func (f *fakeTFS) GetModelMetadata(_ context.Context, req *servingpb.GetModelMetadataRequest) (*servingpb.GetModelMetadataResponse, error) {
	return &servingpb.GetModelMetadataResponse{ModelSpec: req.GetModelSpec()}, nil
}

func predictReq(model string, v int64) *servingpb.PredictRequest {
	return &servingpb.PredictRequest{ModelSpec: &servingpb.ModelSpec{
		Name: model, VersionChoice: &servingpb.ModelSpec_Version{Version: wrapperspb.Int64(v)}}}
}

// chanDiscoverer is a discoverer the test drives.
type chanDiscoverer struct{ in chan []string }

func (d *chanDiscoverer) Run(ctx context.Context, updates chan<- []discovery.Endpoint) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case addrs := <-d.in:
			eps := make([]discovery.Endpoint, 0, len(addrs))
			for _, a := range addrs {
				eps = append(eps, discovery.Endpoint{Addr: a, ID: a})
			}
			select {
			case updates <- eps:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

func testConfig(pools map[string][]string) Config {
	cfg := DefaultConfig()
	cfg.Pools = map[string]PoolConfig{}
	for n, as := range pools {
		cfg.Pools[n] = PoolConfig{Static: as}
	}
	cfg.Readiness.Interval = 50 * time.Millisecond
	return cfg
}

// startManager runs m until the test ends and waits for its first readiness round.
func startManager(t *testing.T, cfg Config, opts Options, models ...string) *Manager {
	t.Helper()
	m, err := New(cfg, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	m.SetModels(models)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := m.WaitReady(wctx); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	return m
}

func servedBy(resp *servingpb.PredictResponse) string {
	return string(resp.GetOutputs()["host"].GetStringVal()[0])
}

var _ = fmt.Sprint
