package gateway

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/tfgate/tfgate/internal/servingsim/model"
	"github.com/tfgate/tfgate/preprocess"
	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// recordingBackends keeps every Predict's inputs by version.
type recordingBackends struct {
	*fakeBackends
	mu    sync.Mutex
	calls []recordedCall
}

type recordedCall struct {
	model   string
	version int64
	inputs  map[string]*tfpb.TensorProto
}

func (r *recordingBackends) Predict(ctx context.Context, pools []string, req *servingpb.PredictRequest) (*servingpb.PredictResponse, string, error) {
	r.mu.Lock()
	r.calls = append(r.calls, recordedCall{req.GetModelSpec().GetName(), req.GetModelSpec().GetVersion().GetValue(), req.GetInputs()})
	r.mu.Unlock()
	return r.fakeBackends.Predict(ctx, pools, req)
}

func (r *recordingBackends) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

func (r *recordingBackends) last() recordedCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[len(r.calls)-1]
}

// copyDir copies a version directory (cp -a), so that models are identical
// without being links.
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v: %s", from, to, err, out)
	}
}

// Six per-customer models with one spec and one graph, and one other: every
// version's signature is fetched, but each (spec, signature) pair is compiled
// and compared once, and every model is routable.
func TestSignatureComparedOncePerSpecAndSignature(t *testing.T) {
	root := t.TempDir()
	writeVersions(t, root, "cust-0", model.KindTextClassifier, model.Cost{}, 1)
	writeVersions(t, root, "other", model.KindTextClassifier, model.Cost{}, 2)
	models := "  cust-0: {default: \"1\"}\n  other: {default: \"2\"}\n"
	for i := 1; i < 6; i++ {
		copyDir(t, filepath.Join(root, "cust-0", "1"), filepath.Join(root, fmt.Sprintf("cust-%d", i), "1"))
		models += fmt.Sprintf("  cust-%d: {default: \"1\"}\n", i)
	}
	store := scannedStore(t, root)
	cfg := filepath.Join(t.TempDir(), "routes.yaml")
	writeModels(t, cfg, models)
	srv := runServer(t, Options{ConfigPath: cfg, Backends: newFakeBackends(root), Specs: StoreSpecs{store}, WatchInterval: -1})
	waitUntil(t, "every version routable", func() bool { return len(srv.builder.current().pipes) == 7 })
	if st := srv.Stats(); st.SignatureCompared != 2 || st.SignatureReused != 5 || st.SignatureFailures != 0 {
		t.Errorf("signature checks: %d compared, %d reused, %d failed; want 2, 5, 0 (one comparison per distinct spec)",
			st.SignatureCompared, st.SignatureReused, st.SignatureFailures)
	}
	if st := store.CacheStats(); st.Entries != 2 {
		t.Errorf("compiled pipelines cached: %d, want 2 (one per distinct spec)", st.Entries)
	}
	for i := range 6 {
		if _, err := srv.Predict(context.Background(), &tfgatev1.PredictRequest{Model: fmt.Sprintf("cust-%d", i), Instances: text("hello world")}); err != nil {
			t.Errorf("Predict cust-%d: %v", i, err)
		}
	}
}

// With a cache too small for more than one pipeline, versions stay routable
// (invariant 2: their specs compile on demand) and every request still reaches
// the backend with exactly the tensors its pinned version's own spec produces
// (invariant 1), each recompiled from disk.
func TestEvictedPipelinesCompileOnDemand(t *testing.T) {
	root := t.TempDir()
	writeVersions(t, root, "reviews", model.KindTextClassifier, model.Cost{}, 1, 2)
	store := preprocess.NewStore(root, preprocess.StoreOptions{CacheBytes: 1})
	if err := store.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "routes.yaml")
	writeModels(t, cfg, "  reviews: {default: \"2\"}\n")
	b := &recordingBackends{fakeBackends: newFakeBackends(root)}
	srv := runServer(t, Options{ConfigPath: cfg, Backends: b, Specs: StoreSpecs{store}, WatchInterval: -1})
	waitUntil(t, "both versions routable", func() bool { return len(srv.builder.current().pipes) == 2 })

	corpus := text("The service was GREAT!", "naïve café", "worst purchase ever...")
	want := map[int64]map[string]*tfpb.TensorProto{}
	for _, v := range []int64{1, 2} {
		p, err := preprocess.Load(filepath.Join(root, "reviews", fmt.Sprint(v)))
		if err != nil {
			t.Fatal(err)
		}
		if want[v], err = p.Encode(corpus); err != nil {
			t.Fatal(err)
		}
	}
	misses := store.CacheStats().Misses
	for i := range 6 {
		v := int64(1 + i%2)
		resp, err := srv.Predict(context.Background(), &tfgatev1.PredictRequest{Model: "reviews", Target: &tfgatev1.PredictRequest_Version{Version: v}, Instances: corpus})
		if err != nil {
			t.Fatalf("Predict version %d: %v", v, err)
		}
		c := b.last()
		if resp.GetVersion() != v || c.version != v {
			t.Fatalf("request for version %d: backend pinned %d, response names %d", v, c.version, resp.GetVersion())
		}
		for name, w := range want[v] {
			if !proto.Equal(c.inputs[name], w) {
				t.Errorf("version %d input %q differs from version %d's own preprocessing", v, name, v)
			}
		}
	}
	if got := store.CacheStats().Misses - misses; got < 5 {
		t.Errorf("alternating versions through a one-pipeline cache compiled %d times, want 5 or 6", got)
	}
}

// A version's spec rewritten in place after its check, while its pipeline is
// not cached: typed requests fail UNAVAILABLE (retry) and nothing is sent with
// another pipeline than the checked one.
func TestChangedSpecIsNotServedUnchecked(t *testing.T) {
	root := t.TempDir()
	writeVersions(t, root, "reviews", model.KindTextClassifier, model.Cost{}, 1, 2)
	store := preprocess.NewStore(root, preprocess.StoreOptions{CacheBytes: 1})
	if err := store.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "routes.yaml")
	writeModels(t, cfg, "  reviews: {default: \"1\"}\n")
	b := &recordingBackends{fakeBackends: newFakeBackends(root)}
	srv := runServer(t, Options{ConfigPath: cfg, Backends: b, Specs: StoreSpecs{store}, WatchInterval: -1})
	waitUntil(t, "both versions routable", func() bool { return len(srv.builder.current().pipes) == 2 })
	ctx := context.Background()
	if _, err := srv.Predict(ctx, &tfgatev1.PredictRequest{Model: "reviews", Target: &tfgatev1.PredictRequest_Version{Version: 2}, Instances: text("x")}); err != nil {
		t.Fatal(err) // version 2's pipeline evicts version 1's
	}
	// Version 1 now carries version 2's vocabulary, in place (no new stamp seen: no rescan).
	vocab, err := os.ReadFile(filepath.Join(root, "reviews", "2", "assets", "vocab.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "reviews", "1", "assets", "vocab.txt"), vocab, 0o644); err != nil {
		t.Fatal(err)
	}
	calls := b.count()
	_, err = srv.Predict(ctx, &tfgatev1.PredictRequest{Model: "reviews", Instances: text("hello world")})
	if status.Code(err) != codes.Unavailable || !contains(err, "changed on disk") {
		t.Errorf("Predict after version 1's spec changed in place = %v, want UNAVAILABLE saying it changed", err)
	}
	if b.count() != calls {
		t.Error("a request was sent to the backend with a pipeline that was not checked")
	}
}
