package gateway

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tfgate/tfgate/internal/tensor"
	"github.com/tfgate/tfgate/preprocess"
	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// lying answers every Predict as if version 99 had served it.
type lying struct{ Backends }

func (l *lying) Predict(ctx context.Context, pools []string, req *servingpb.PredictRequest) (*servingpb.PredictResponse, string, error) {
	resp, host, err := l.Backends.Predict(ctx, pools, req)
	if err == nil {
		resp.ModelSpec.VersionChoice = &servingpb.ModelSpec_Version{Version: wrapperspb.Int64(99)}
	}
	return resp, host, err
}

func rawText(t testing.TB, ids, mask []int64) map[string]*tfpb.TensorProto {
	t.Helper()
	a, err := tensor.FromInt64(ids, 1, int64(len(ids)))
	if err != nil {
		t.Fatal(err)
	}
	b, err := tensor.FromInt64(mask, 1, int64(len(mask)))
	if err != nil {
		t.Fatal(err)
	}
	return map[string]*tfpb.TensorProto{"input_ids": a, "attention_mask": b}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func contains(err error, sub string) bool {
	if err == nil {
		return false
	}
	return strings.Contains(status.Convert(err).Message(), sub)
}

// rawCodec sends rawBytes as they are and decodes replies as protobuf.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	if b, ok := v.(rawBytes); ok {
		return b, nil
	}
	return proto.Marshal(v.(proto.Message))
}
func (rawCodec) Unmarshal(b []byte, v any) error { return proto.Unmarshal(b, v.(proto.Message)) }
func (rawCodec) Name() string                    { return "proto" }

func grpcRawCodec() grpc.CallOption { return grpc.ForceCodec(rawCodec{}) }

// runServer builds a Server from opts and runs it until the test ends; then it
// stops Run and closes the server.
func runServer(tb testing.TB, opts Options) *Server {
	tb.Helper()
	srv, err := New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("Run: %v", err)
		}
		_ = srv.Close(context.Background())
	})
	return srv
}

// scannedStore is a spec store over root after its first scan.
func scannedStore(tb testing.TB, root string) *preprocess.Store {
	tb.Helper()
	store := preprocess.NewStore(root, preprocess.StoreOptions{})
	if err := store.Scan(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return store
}

// writeModels writes to path a routing config with pool p as the default and
// models as the body of its models: section.
func writeModels(tb testing.TB, path, models string) {
	tb.Helper()
	if err := os.WriteFile(path, []byte("defaults: {pools: [p]}\nmodels:\n"+models), 0o644); err != nil {
		tb.Fatal(err)
	}
}
