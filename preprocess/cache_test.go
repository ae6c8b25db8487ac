package preprocess

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// featureSpecWithFiles reads a categorical vocab_file and a labels file, so the
// content hash covers assets of both kinds.
const featureSpecWithFiles = `{
  "format": "tfgate-preprocess/v1",
  "features": [{"input": "features",
    "numeric": [{"name": "age", "slot": 0}],
    "categorical": [{"name": "plan", "slot": 1, "vocab_file": "assets/plans.txt", "encoding": "index"}]}],
  "outputs": [{"output": "scores", "kind": "scores", "labels": "assets/labels.txt"}]
}`

func writeFeatureVersion(t *testing.T, root, model, version, plans string) string {
	t.Helper()
	dir := writeVersion(t, root, model, version, featureSpecWithFiles, testVocab)
	if err := os.WriteFile(filepath.Join(dir, "assets/plans.txt"), []byte(plans), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// contentKey, which reads a spec and its assets without compiling, must agree
// with the hash compilation computes, or identical specs would compile again.
func TestContentKeyIsTheCompiledHash(t *testing.T) {
	root := t.TempDir()
	dirs := map[string]string{
		"text":               writeVersion(t, root, "text", "1", textSpec(8, ""), testVocab),
		"features and files": writeFeatureVersion(t, root, "feat", "1", "free\npro\n"),
		"golden text model":  filepath.Join("testdata", "models", "textclf", "1"),
	}
	for name, dir := range dirs {
		t.Run(name, func(t *testing.T) {
			p, err := Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			k, ok := contentKey(dir)
			if !ok || k != p.SpecHash() {
				t.Errorf("contentKey(%s) = %v, %v; the compiled pipeline's hash is %v", dir, k, ok, p.SpecHash())
			}
		})
	}
	// An asset's bytes are part of the hash.
	a, _ := Load(writeFeatureVersion(t, root, "feat", "2", "free\npro\n"))
	b, _ := Load(writeFeatureVersion(t, root, "feat", "3", "free\nteam\n"))
	if a.SpecHash() != dirsHash(t, dirs["features and files"]) || a.SpecHash() == b.SpecHash() {
		t.Error("hash does not follow the vocab_file's bytes")
	}
}

func dirsHash(t *testing.T, dir string) SpecHash {
	p, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return p.SpecHash()
}

// 20 per-customer models over 2 distinct specs: each spec is compiled once,
// every model gets the one shared pipeline.
func TestStoreCompilesIdenticalSpecsOnce(t *testing.T) {
	root := t.TempDir()
	other := append(append([]string(nil), testVocab...), "extra")
	for i := range 20 {
		vocab := testVocab
		if i%2 == 1 {
			vocab = other
		}
		writeVersion(t, root, fmt.Sprintf("cust-%d", i), "1", textSpec(8, ""), vocab)
	}
	s := NewStore(root, StoreOptions{})
	if err := s.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := s.CacheStats()
	if st.Misses != 2 || st.Entries != 2 {
		t.Errorf("after scanning 20 versions of 2 specs: %d compiles, %d cached; want 2 and 2", st.Misses, st.Entries)
	}
	p0, _ := s.Get("cust-0", 1)
	p2, _ := s.Get("cust-2", 1)
	p1, _ := s.Get("cust-1", 1)
	if p0 == nil || p0 != p2 || p0 == p1 {
		t.Errorf("pipelines: cust-0 %p, cust-2 %p (same spec), cust-1 %p (other vocabulary)", p0, p2, p1)
	}
	if got := len(s.Snapshot().hashes); got != 2 {
		t.Errorf("distinct specs in the snapshot: %d, want 2", got)
	}
}

// With a budget below one pipeline the cache keeps only the last one; an evicted
// pipeline is compiled again from disk, identical, and concurrent misses for it
// compile once.
func TestCacheEvictsAndRecompilesFromDisk(t *testing.T) {
	root := t.TempDir()
	writeFeatureVersion(t, root, "a", "1", "free\npro\n")
	writeFeatureVersion(t, root, "b", "1", "free\nteam\n")
	s := NewStore(root, StoreOptions{CacheBytes: 1})
	if err := s.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	ha, _ := s.SpecHash("a", 1)
	hb, _ := s.SpecHash("b", 1)
	pa, err := s.Pipeline("a", 1, ha)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pipeline("b", 1, hb); err != nil {
		t.Fatal(err)
	}
	st := s.CacheStats()
	if st.Entries != 1 || st.Evictions == 0 {
		t.Fatalf("cache with a 1-byte budget: %+v; want one entry and evictions", st)
	}
	before := st.Misses
	var wg sync.WaitGroup
	got := make([]*Pipeline, 32)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], _ = s.Pipeline("a", 1, ha)
		}()
	}
	wg.Wait()
	if n := s.CacheStats().Misses - before; n != 1 {
		t.Errorf("32 concurrent requests for an evicted pipeline compiled it %d times, want 1", n)
	}
	for _, p := range got {
		if p == nil || p.SpecHash() != ha || p.Fingerprint() != pa.Fingerprint() {
			t.Fatalf("recompiled pipeline %v, want hash %v fingerprint %s", p, ha, pa.Fingerprint())
		}
	}
	in := []*tfgatev1.Instance{{Numeric: map[string]float64{"age": 3}, Categorical: map[string]string{"plan": "pro"}}}
	want, _ := pa.Encode(in)
	again, _ := got[0].Encode(in)
	if fmt.Sprint(want) != fmt.Sprint(again) {
		t.Errorf("recompiled pipeline encodes %v, the first one %v", again, want)
	}
}

// A spec rewritten in place (not how versions change) while its pipeline is not
// cached is not silently served under the old hash: the checked pipeline is
// gone, and asking for it says so.
func TestPipelineOfChangedSpecFails(t *testing.T) {
	root := t.TempDir()
	dir := writeFeatureVersion(t, root, "a", "1", "free\npro\n")
	writeFeatureVersion(t, root, "b", "1", "free\nteam\n")
	s := NewStore(root, StoreOptions{CacheBytes: 1})
	if err := s.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	ha, _ := s.SpecHash("a", 1)
	hb, _ := s.SpecHash("b", 1)
	if _, err := s.Pipeline("b", 1, hb); err != nil { // evicts a
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "assets/plans.txt"), []byte("free\nenterprise\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if p, err := s.Pipeline("a", 1, ha); !errors.Is(err, ErrSpecChanged) {
		t.Errorf("Pipeline after the spec's asset changed on disk = %v, %v; want ErrSpecChanged", p, err)
	}
	if _, err := s.Pipeline("gone", 1, ha); !errors.Is(err, ErrVersionNotFound) {
		t.Errorf("Pipeline of an unknown version = %v, want ErrVersionNotFound", err)
	}
}

// The byte estimate the budget counts stays within a factor of two of the heap
// compiled pipelines really hold.
func TestSizeEstimate(t *testing.T) {
	if testing.Short() {
		t.Skip("measures the heap")
	}
	vocab := append([]string(nil), testVocab...)
	for i := range 3000 {
		vocab = append(vocab, fmt.Sprintf("tok%d", i), fmt.Sprintf("##p%d", i))
	}
	labels := make([]string, 50)
	for i := range labels {
		labels[i] = fmt.Sprintf("class-%d", i)
	}
	assets := testAssets(vocab, labels...)
	spec := []byte(textSpec(32, ""))
	const n = 40
	ps := make([]*Pipeline, n)
	before := heapInuse()
	for i := range ps {
		p, err := Parse(spec, assets) // no vocabulary sharing: each has its own
		if err != nil {
			t.Fatal(err)
		}
		ps[i] = p
	}
	measured := float64(heapInuse()-before) / n
	estimate := float64(ps[0].size + ps[0].text.v.bytes)
	runtime.KeepAlive(ps)
	if r := estimate / measured; r < 0.5 || r > 2 {
		t.Errorf("estimated %.0f bytes per pipeline, measured %.0f (ratio %.2f), want within 2x", estimate, measured, r)
	}
	t.Logf("estimated %.0f bytes per pipeline, measured %.0f", estimate, measured)
}

func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// The cache's counters and sizes are exported (docs/metrics.md).
func TestCacheMetrics(t *testing.T) {
	root := t.TempDir()
	writeFeatureVersion(t, root, "a", "1", "free\npro\n")
	writeFeatureVersion(t, root, "b", "1", "free\nteam\n")
	writeFeatureVersion(t, root, "c", "1", "free\nteam\n") // b's spec
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	s := NewStore(root, StoreOptions{MeterProvider: mp, CacheBytes: 1, Concurrency: 1}) // a, b, c in order
	if err := s.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	ha, _ := s.SpecHash("a", 1)
	for range 3 { // b evicted a when the scan compiled it: one miss, two hits
		if _, err := s.Pipeline("a", 1, ha); err != nil {
			t.Fatal(err)
		}
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				got[m.Name] = d.DataPoints[0].Value
			case metricdata.Gauge[int64]:
				got[m.Name] = d.DataPoints[0].Value
			}
		}
	}
	st := s.CacheStats()
	want := map[string]int64{
		"tfgate.preprocess.specs":              2,
		"tfgate.preprocess.cache.misses":       3, // a and b by the scan, a again
		"tfgate.preprocess.cache.hits":         2,
		"tfgate.preprocess.cache.evictions":    2,
		"tfgate.preprocess.cache.entries":      1,
		"tfgate.preprocess.cache.budget_bytes": 1,
		"tfgate.preprocess.cache.bytes":        st.Bytes,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
	if st.Bytes <= 0 {
		t.Errorf("cache bytes %d with one pipeline cached", st.Bytes)
	}
}
