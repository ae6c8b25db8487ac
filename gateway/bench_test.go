package gateway

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tfgate/tfgate/internal/servingsim/model"
	"github.com/tfgate/tfgate/internal/tensor"
	"github.com/tfgate/tfgate/preprocess"
	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// fakeBackends answers in process: every version is AVAILABLE on one host,
// GetModelMetadata returns the version's real servingsim signature, and Predict
// returns outputs of the right shape (scores [n,3], embedding [n,16]).
type fakeBackends struct {
	root    string
	changes chan struct{}
	scores  []float32
	emb     []float32
}

func newFakeBackends(root string) *fakeBackends {
	f := &fakeBackends{root: root, changes: make(chan struct{})}
	for i := range 64 * 3 {
		f.scores = append(f.scores, float32(i%3)/3)
	}
	f.emb = make([]float32, 64*16)
	return f
}

func (f *fakeBackends) Predict(ctx context.Context, pools []string, req *servingpb.PredictRequest) (*servingpb.PredictResponse, string, error) {
	dims, err := tensor.Dims(req.GetInputs()["input_ids"])
	if err != nil {
		return nil, "", err
	}
	n := dims[0]
	scores, _ := tensor.FromFloat32(f.scores[:n*3], n, 3)
	emb, _ := tensor.FromFloat32(f.emb[:n*16], n, 16)
	return &servingpb.PredictResponse{
		ModelSpec: &servingpb.ModelSpec{Name: req.GetModelSpec().GetName(), VersionChoice: &servingpb.ModelSpec_Version{Version: wrapperspb.Int64(req.GetModelSpec().GetVersion().GetValue())}},
		Outputs:   map[string]*tfpb.TensorProto{"scores": scores, "embedding": emb},
	}, "fake:1", nil
}

func (f *fakeBackends) GetModelMetadata(ctx context.Context, pools []string, req *servingpb.GetModelMetadataRequest) (*servingpb.GetModelMetadataResponse, string, error) {
	spec := req.GetModelSpec()
	m, err := model.Load(filepath.Join(f.root, spec.GetName(), strconv.FormatInt(spec.GetVersion().GetValue(), 10)))
	if err != nil {
		return nil, "", err
	}
	a, err := anypb.New(&servingpb.SignatureDefMap{SignatureDef: m.Signatures()})
	if err != nil {
		return nil, "", err
	}
	return &servingpb.GetModelMetadataResponse{ModelSpec: spec, Metadata: map[string]*anypb.Any{"signature_def": a}}, "fake:1", nil
}

func (f *fakeBackends) SetModels([]string)                              {}
func (f *fakeBackends) Want(string, int64)                              {}
func (f *fakeBackends) Changes() <-chan struct{}                        { return f.changes }
func (f *fakeBackends) AvailableHosts(string, int64, []string) []string { return []string{"fake:1"} }

// newInProcess builds a Server over fake backends and a real spec store.
func newInProcess(tb testing.TB) (*Server, *preprocess.Pipeline, func()) {
	tb.Helper()
	root := tb.TempDir()
	writeVersions(tb, root, "reviews", model.KindTextClassifier, model.Cost{}, 1)
	store := scannedStore(tb, root)
	cfg := filepath.Join(tb.TempDir(), "routes.yaml")
	writeModels(tb, cfg, "  reviews: {default: stable, labels: {stable: 1}}\n")
	srv, err := New(Options{ConfigPath: cfg, Backends: newFakeBackends(root), Specs: StoreSpecs{store}, WatchInterval: -1})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for srv.builder.current().pipes[vkey{"reviews", 1}] == nil {
		if time.Now().After(deadline) {
			tb.Fatal("signature check did not complete")
		}
		time.Sleep(time.Millisecond)
	}
	p, _ := store.Get("reviews", 1)
	return srv, p, func() {
		cancel()
		<-done
		_ = srv.Close(context.Background())
	}
}

func TestInProcessPredict(t *testing.T) {
	srv, _, stop := newInProcess(t)
	defer stop()
	resp, err := srv.Predict(context.Background(), &tfgatev1.PredictRequest{Model: "reviews", Instances: text("hello world"), TopK: 1})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetVersion() != 1 || len(resp.GetPredictions()) != 1 || len(resp.GetPredictions()[0].GetTopK()) != 1 {
		t.Errorf("Predict = %v, want version 1 with one prediction and its top class", resp)
	}
}

// BenchmarkPredictInProcess measures the gateway's request path without the
// network (validation, routing, preprocessing, backend request building, version
// check, decoding) against a baseline of the version's preprocessing alone
// (Encode + Decode), for 1 and 32 instances of 12-word text.
func BenchmarkPredictInProcess(b *testing.B) {
	srv, p, stop := newInProcess(b)
	defer stop()
	ctx := context.Background()
	for _, n := range []int{1, 32} {
		texts := make([]string, n)
		for i := range texts {
			texts[i] = "the delivery was late but the support team fixed everything quickly, thanks!"
		}
		req := &tfgatev1.PredictRequest{Model: "reviews", Instances: text(texts...)}
		fb := newFakeBackends("")
		b.Run("baseline-preprocess-only/n="+strconv.Itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				in, err := p.Encode(req.GetInstances())
				if err != nil {
					b.Fatal(err)
				}
				resp, _, _ := fb.Predict(ctx, nil, &servingpb.PredictRequest{ModelSpec: &servingpb.ModelSpec{Name: "reviews", VersionChoice: &servingpb.ModelSpec_Version{Version: wrapperspb.Int64(1)}}, Inputs: in})
				if _, err := p.Decode(resp.GetOutputs(), n, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("gateway/n="+strconv.Itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := srv.Predict(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
