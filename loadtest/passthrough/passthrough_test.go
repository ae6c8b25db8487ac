package passthrough_test

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tfgate/tfgate/internal/modelgen"
	"github.com/tfgate/tfgate/internal/servingsim"
	"github.com/tfgate/tfgate/internal/tensor"
	"github.com/tfgate/tfgate/internal/testenv"
	"github.com/tfgate/tfgate/loadtest/passthrough"
	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// start runs servingsim (model "m", version 3) and a proxy in front of it and
// returns clients for both.
func start(t *testing.T) (direct, proxied *grpc.ClientConn) {
	t.Helper()
	base := t.TempDir()
	if err := modelgen.Export(filepath.Join(base, "3"), modelgen.Spec{Kind: "linear", Features: 2}); err != nil {
		t.Fatal(err)
	}
	cfg := servingsim.DefaultConfig()
	cfg.ModelName, cfg.ModelBasePath = "m", base
	simAddr, _ := testenv.StartServingsimInProcess(t, cfg)

	p, err := passthrough.New(simAddr)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Serve(ctx, lis, 5*time.Second) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	dial := func(addr string) *grpc.ClientConn {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	return dial(simAddr), dial(lis.Addr().String())
}

func predictReq(t *testing.T, model string) *servingpb.PredictRequest {
	t.Helper()
	in, err := tensor.FromFloat32([]float32{1, 2}, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	return &servingpb.PredictRequest{
		ModelSpec: &servingpb.ModelSpec{Name: model},
		Inputs:    map[string]*tfpb.TensorProto{"features": in},
	}
}

func TestForwardsUnaryCallsUnchanged(t *testing.T) {
	direct, proxied := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	want, err := servingpb.NewPredictionServiceClient(direct).Predict(ctx, predictReq(t, "m"))
	if err != nil {
		t.Fatalf("direct Predict: %v", err)
	}
	got, err := servingpb.NewPredictionServiceClient(proxied).Predict(ctx, predictReq(t, "m"))
	if err != nil {
		t.Fatalf("proxied Predict: %v", err)
	}
	if !proto.Equal(got, want) {
		t.Errorf("proxied response differs from direct:\n got %v\nwant %v", got, want)
	}
	if v := got.GetModelSpec().GetVersion().GetValue(); v != 3 {
		t.Errorf("served version %d, want 3", v)
	}
	// Another service on the same connection: the proxy knows no method names.
	st, err := servingpb.NewModelServiceClient(proxied).GetModelStatus(ctx, &servingpb.GetModelStatusRequest{
		ModelSpec: &servingpb.ModelSpec{Name: "m", VersionChoice: &servingpb.ModelSpec_Version{Version: wrapperspb.Int64(3)}}})
	if err != nil {
		t.Fatalf("proxied GetModelStatus: %v", err)
	}
	if n := len(st.GetModelVersionStatus()); n != 1 {
		t.Errorf("GetModelStatus listed %d versions, want 1", n)
	}
}

func TestBackendStatusPassesThrough(t *testing.T) {
	direct, proxied := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, derr := servingpb.NewPredictionServiceClient(direct).Predict(ctx, predictReq(t, "nosuch"))
	_, perr := servingpb.NewPredictionServiceClient(proxied).Predict(ctx, predictReq(t, "nosuch"))
	ds, ps := status.Convert(derr), status.Convert(perr)
	if ds.Code() != codes.NotFound {
		t.Fatalf("direct call for an unknown model: %v, want NOT_FOUND", derr)
	}
	if ps.Code() != ds.Code() || ps.Message() != ds.Message() {
		t.Errorf("proxied status %v %q, want the backend's %v %q", ps.Code(), ps.Message(), ds.Code(), ds.Message())
	}
}

func TestNewRejectsBadAddress(t *testing.T) {
	if _, err := passthrough.New("%%%:bad"); err == nil {
		t.Error("New accepted an address grpc-go cannot parse")
	}
}
