package gateway

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tfgate/tfgate/internal/modelgen"
	"github.com/tfgate/tfgate/internal/servingsim/model"
	"github.com/tfgate/tfgate/preprocess"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// BenchmarkCatalog50k measures the gateway's memory with a per-customer catalog:
// TFGATE_CATALOG_N models (default 50,000), one version each, whose specs are
// TFGATE_CATALOG_SPECS distinct text-classifier specs (default 50, 600-token
// vocabularies), the way per-customer models share a spec. Each model directory
// is a link to one of the spec's directories, so the spec store, the routing
// config, readiness (in-process fakes) and the signature checks all see 50,000
// versions.
//
// It reports the live heap once every version is routable (heap-MB: HeapInuse
// after a GC, less the heap before the store was made), then the cost of a
// typed Predict cycling over every model: warm (each spec's pipeline compiled
// and cached) and cold (a cache too small to hold any pipeline, so every request
// re-reads and re-compiles its spec). Run with -benchtime=2000x -run '^$'.
func BenchmarkCatalog50k(b *testing.B) {
	n := envInt("TFGATE_CATALOG_N", 50000)
	specs := envInt("TFGATE_CATALOG_SPECS", 50)
	base, root := b.TempDir(), b.TempDir()
	for s := range specs {
		spec := modelgen.Spec{Kind: model.KindTextClassifier, Seed: int64(s + 1), MaxLen: 16, Classes: 3, VocabSize: 600}
		if err := modelgen.Export(filepath.Join(base, strconv.Itoa(s), "1"), spec); err != nil {
			b.Fatal(err)
		}
	}
	var cfg strings.Builder
	for i := range n {
		name := "cust-" + strconv.Itoa(i)
		if err := os.Symlink(filepath.Join(base, strconv.Itoa(i%specs)), filepath.Join(root, name)); err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(&cfg, "  %s: {default: \"1\"}\n", name)
	}
	cfgPath := filepath.Join(b.TempDir(), "routes.yaml")
	writeModels(b, cfgPath, cfg.String())

	heap0 := liveHeap()
	start := time.Now()
	store := preprocess.NewStore(root, preprocess.StoreOptions{})
	if err := store.Scan(context.Background()); err != nil {
		b.Fatal(err)
	}
	srv := runServer(b, Options{ConfigPath: cfgPath, Backends: &sharedMetadata{fakeBackends: newFakeBackends(root)},
		Specs: StoreSpecs{store}, WatchInterval: -1})
	for deadline := time.Now().Add(10 * time.Minute); len(srv.builder.current().pipes) < n; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d versions routable after 10m", len(srv.builder.current().pipes), n)
		}
	}
	ready := time.Since(start)
	heap := liveHeap() - heap0
	if path := os.Getenv("TFGATE_CATALOG_HEAPPROFILE"); path != "" {
		writeHeapProfile(b, path)
	}
	b.Logf("%d models over %d specs: routable after %v, live heap %.1f MB", n, specs, ready.Round(time.Millisecond), float64(heap)/(1<<20))

	ctx := context.Background()
	reqs := make([]*tfgatev1.PredictRequest, n)
	for i := range reqs {
		reqs[i] = &tfgatev1.PredictRequest{Model: "cust-" + strconv.Itoa(i), Instances: text("the delivery was late but support fixed it")}
	}
	predict := func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := srv.Predict(ctx, reqs[i%n]); err != nil {
				b.Fatal(err)
			}
			i++
		}
		b.ReportMetric(float64(heap)/(1<<20), "heap-MB")
		b.ReportMetric(ready.Seconds(), "s-to-routable")
	}
	b.Run("warm", predict)
	b.Logf("cache after the warm run: %+v", store.CacheStats())
	store.SetCacheBytes(1) // keeps only the last pipeline compiled: every other request misses
	b.Run("cold", predict)
	b.Logf("cache after the cold run: %+v", store.CacheStats())
	runtime.KeepAlive(srv)
}

func writeHeapProfile(b *testing.B, path string) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		b.Fatal(err)
	}
}

// liveHeap is HeapInuse after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// sharedMetadata answers GetModelMetadata from one model.Load per linked spec
// directory, so that the benchmark measures the gateway rather than 50,000 reads
// of the fake backend's model files.
type sharedMetadata struct {
	*fakeBackends
	mu   sync.Mutex
	memo map[string]*servingpb.GetModelMetadataResponse
}

func (s *sharedMetadata) GetModelMetadata(ctx context.Context, pools []string, req *servingpb.GetModelMetadataRequest) (*servingpb.GetModelMetadataResponse, string, error) {
	target, err := os.Readlink(filepath.Join(s.root, req.GetModelSpec().GetName()))
	if err != nil {
		return nil, "", err
	}
	s.mu.Lock()
	resp, ok := s.memo[target]
	s.mu.Unlock()
	if !ok {
		if resp, _, err = s.fakeBackends.GetModelMetadata(ctx, pools, req); err != nil {
			return nil, "", err
		}
		s.mu.Lock()
		if s.memo == nil {
			s.memo = map[string]*servingpb.GetModelMetadataResponse{}
		}
		s.memo[target] = resp
		s.mu.Unlock()
	}
	return &servingpb.GetModelMetadataResponse{ModelSpec: req.GetModelSpec(), Metadata: resp.GetMetadata()}, "fake:1", nil
}
