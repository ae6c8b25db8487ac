package preprocess

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// writeVersion writes a model version directory with a text spec and assets.
func writeVersion(t *testing.T, root, model, version, spec string, vocab []string) string {
	t.Helper()
	dir := filepath.Join(root, model, version)
	files := map[string]string{
		"saved_model.pb":    "model",
		"assets/vocab.txt":  strings.Join(vocab, "\n") + "\n",
		"assets/labels.txt": "neg\npos\n",
	}
	if spec != "" {
		files[SpecPath] = spec
	}
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestStoreScan(t *testing.T) {
	root := t.TempDir()
	ctx := context.Background()
	s := NewStore(root, StoreOptions{})
	good := textSpec(8, "")
	writeVersion(t, root, "intent", "1", good, testVocab)
	writeVersion(t, root, "intent", "2", `{"format": "tfgate-preprocess/v1", "text": {}}`, testVocab)
	writeVersion(t, root, "intent", "3", "", testVocab)
	writeVersion(t, root, "intent", "tmp-4.partial", good, testVocab) // sidecar temp name: ignored
	writeVersion(t, root, ".hidden", "1", good, testVocab)

	if err := s.Scan(ctx); err != nil {
		t.Fatalf("Scan: %v", err)
	}
	select {
	case <-s.Ready():
	default:
		t.Fatal("Ready not closed after a successful scan")
	}
	select {
	case <-s.Changes():
	default:
		t.Fatal("no change notification after the first scan")
	}
	snap := s.Snapshot()
	if got := snap.Models(); len(got) != 1 || got[0] != "intent" {
		t.Fatalf("Models() = %v, want [intent]", got)
	}
	if got := snap.Versions("intent"); len(got) != 3 {
		t.Fatalf("Versions(intent) = %v, want [1 2 3]", got)
	}
	tests := []struct {
		name    string
		version int64
		ok      bool
		errIs   error
	}{
		{"valid spec", 1, true, nil},
		{"invalid spec", 2, false, ErrSpec},
		{"no spec file", 3, false, ErrNoSpec},
		{"temp dir not a version", 4, false, ErrVersionNotFound},
		{"unknown version", 99, false, ErrVersionNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, ok := s.Get("intent", tc.version)
			if ok != tc.ok || (p != nil) != tc.ok {
				t.Fatalf("Get(intent, %d) ok=%v, want %v", tc.version, ok, tc.ok)
			}
			err := s.Err("intent", tc.version)
			if tc.errIs == nil && err != nil || tc.errIs != nil && !errors.Is(err, tc.errIs) {
				t.Fatalf("Err(intent, %d) = %v, want %v", tc.version, err, tc.errIs)
			}
		})
	}

	// A scan with nothing new changes nothing and keeps the same pipelines.
	p1, _ := s.Get("intent", 1)
	gen := s.Snapshot().Generation()
	if err := s.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if g := s.Snapshot().Generation(); g != gen {
		t.Fatalf("generation moved from %d to %d with no change", gen, g)
	}
	if p, _ := s.Get("intent", 1); p != p1 {
		t.Fatal("unchanged version was reloaded")
	}
	select {
	case <-s.Changes():
		t.Fatal("change notification without a change")
	default:
	}

	// Fix version 3, remove version 2, add version 5 with a different vocabulary.
	writeVersion(t, root, "intent", "3", good, testVocab)
	if err := os.RemoveAll(filepath.Join(root, "intent", "2")); err != nil {
		t.Fatal(err)
	}
	rev := append([]string(nil), testVocab...)
	rev[4], rev[5] = rev[5], rev[4]
	writeVersion(t, root, "intent", "5", good, rev)
	if err := s.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	<-s.Changes()
	if _, ok := s.Get("intent", 3); !ok {
		t.Errorf("version 3 not loaded after its spec appeared: %v", s.Err("intent", 3))
	}
	if err := s.Err("intent", 2); !errors.Is(err, ErrVersionNotFound) {
		t.Errorf("removed version 2: Err = %v, want ErrVersionNotFound", err)
	}
	p5, ok := s.Get("intent", 5)
	if !ok {
		t.Fatalf("version 5 not loaded: %v", s.Err("intent", 5))
	}
	if p5.Fingerprint() == p1.Fingerprint() {
		t.Error("versions with different vocabularies have the same fingerprint")
	}
	if p, _ := s.Get("intent", 1); p != p1 {
		t.Error("version 1 reloaded although untouched")
	}
	if g := s.Snapshot().Generation(); g != gen+1 {
		t.Errorf("generation %d, want %d", g, gen+1)
	}
}

func TestStoreRootMissingKeepsSnapshot(t *testing.T) {
	root := t.TempDir()
	writeVersion(t, root, "m", "1", textSpec(8, ""), testVocab)
	s := NewStore(root, StoreOptions{})
	if err := s.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(root, root+".moved"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root + ".moved") })
	if err := s.Scan(context.Background()); err == nil {
		t.Fatal("Scan of a missing root: no error")
	}
	if _, ok := s.Get("m", 1); !ok {
		t.Fatal("a failed scan dropped the last good snapshot")
	}
}

func TestStoreRun(t *testing.T) {
	root := t.TempDir()
	s := NewStore(root, StoreOptions{PollInterval: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	<-s.Ready()
	writeVersion(t, root, "m", "7", textSpec(8, ""), testVocab)
	deadline := time.After(10 * time.Second)
	for {
		if _, ok := s.Get("m", 7); ok {
			break
		}
		select {
		case <-s.Changes():
		case <-deadline:
			t.Fatal("Run did not pick up a new version")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v after cancel, want nil", err)
	}
}

func TestStoreSharesVocabularies(t *testing.T) {
	root := t.TempDir()
	spec := textSpec(8, "")
	for _, m := range []string{"cust-a", "cust-b", "cust-c"} {
		writeVersion(t, root, m, "1", spec, testVocab)
	}
	other := append([]string(nil), testVocab...)
	other = append(other, "extra")
	writeVersion(t, root, "cust-d", "1", spec, other)
	s := NewStore(root, StoreOptions{Concurrency: 2})
	ctx := context.Background()
	if err := s.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	pa, _ := s.Get("cust-a", 1)
	pb, _ := s.Get("cust-b", 1)
	pd, _ := s.Get("cust-d", 1)
	if pa == nil || pb == nil || pd == nil {
		t.Fatal("versions not loaded")
	}
	if pa.text.v != pb.text.v {
		t.Error("identical vocabulary files are compiled twice")
	}
	if pa.text.v == pd.text.v {
		t.Error("different vocabulary files share one compiled vocabulary")
	}
	if n := s.vocabs.len(); n != 2 {
		t.Errorf("cache holds %d vocabularies, want 2", n)
	}
	for _, m := range []string{"cust-a", "cust-b", "cust-c"} {
		if err := os.RemoveAll(filepath.Join(root, m)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if n := s.vocabs.len(); n != 1 {
		t.Errorf("after removing every user of a vocabulary the cache holds %d, want 1", n)
	}
}

func TestLoadConfinedToVersionDir(t *testing.T) {
	root := t.TempDir()
	secret := filepath.Join(root, "secret.txt")
	if err := os.WriteFile(secret, []byte("[PAD]\n[UNK]\nhello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := writeVersion(t, root, "m", "1", textSpec(8, ""), testVocab)
	vocab := filepath.Join(dir, "assets/vocab.txt")
	if err := os.Remove(vocab); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, vocab); err != nil {
		t.Fatal(err)
	}
	_, err := Load(dir)
	if !errors.Is(err, ErrSpec) || !strings.Contains(err.Error(), "text.wordpiece.vocab") {
		t.Fatalf("Load with a vocab symlink escaping the version dir: %v, want an ErrSpec naming text.wordpiece.vocab", err)
	}
	if _, err := Load(filepath.Join(root, "m", "404")); !errors.Is(err, ErrNoSpec) {
		t.Fatalf("Load of a missing dir: %v, want ErrNoSpec", err)
	}
}

func TestStoreMetrics(t *testing.T) {
	root := t.TempDir()
	writeVersion(t, root, "m", "1", textSpec(8, ""), testVocab)
	writeVersion(t, root, "m", "2", `{"format": "tfgate-preprocess/v1"}`, testVocab)
	writeVersion(t, root, "m", "3", "", testVocab)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	s := NewStore(root, StoreOptions{MeterProvider: mp})
	if err := s.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			var points []metricdata.DataPoint[int64]
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				points = d.DataPoints
			case metricdata.Gauge[int64]:
				points = d.DataPoints
			}
			for _, p := range points {
				key := m.Name
				for _, kv := range p.Attributes.ToSlice() {
					key += "," + kv.Value.AsString()
				}
				got[key] = p.Value
			}
		}
	}
	want := map[string]int64{
		"tfgate.preprocess.loads,ok": 1, "tfgate.preprocess.loads,error": 2,
		"tfgate.preprocess.versions,ready": 1, "tfgate.preprocess.versions,error": 2,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
}

// TestStoreSkipsUnchangedModelDirs: a model directory whose mtime has not moved
// (and was stable when read) is not re-read, which keeps scans of tens of
// thousands of models to one stat each; renaming a new version in is seen.
func TestStoreSkipsUnchangedModelDirs(t *testing.T) {
	root := t.TempDir()
	writeVersion(t, root, "m", "1", textSpec(8, ""), testVocab)
	mdir := filepath.Join(root, "m")
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(mdir, old, old); err != nil {
		t.Fatal(err)
	}
	s := NewStore(root, StoreOptions{})
	ctx := context.Background()
	if err := s.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	p1, ok := s.Get("m", 1)
	if !ok {
		t.Fatal(s.Err("m", 1))
	}
	// An in-place edit inside a version (not how versions change) is not looked at.
	if err := os.WriteFile(filepath.Join(mdir, "1", SpecPath), []byte("{broken"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(mdir, old, old); err != nil {
		t.Fatal(err)
	}
	if err := s.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if p, ok := s.Get("m", 1); !ok || p != p1 {
		t.Fatal("an unchanged model directory was re-read")
	}
	// A new version changes the model directory and is picked up.
	writeVersion(t, root, "m", "2", textSpec(8, ""), testVocab)
	if err := s.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Get("m", 2); !ok {
		t.Fatalf("new version not seen: %v", s.Err("m", 2))
	}
	// Now the directory is fresh (racy): version 1 is re-stat'ed, its replaced spec noticed.
	if _, ok := s.Get("m", 1); ok {
		t.Fatal("version 1's broken spec not noticed after the directory changed")
	}
}

func TestNextScanWait(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name           string
		interval, last time.Duration
		want           time.Duration
	}{
		{"fast scan keeps the interval", 2 * time.Second, 10 * ms, 1990 * ms},
		{"slow scan stretches the interval", 2 * time.Second, 500 * ms, 4 * time.Second},
		{"scan longer than the interval", 2 * time.Second, 3 * time.Second, 24 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := nextScanWait(tc.interval, tc.last); got != tc.want {
				t.Errorf("nextScanWait(%v, %v) = %v, want %v", tc.interval, tc.last, got, tc.want)
			}
		})
	}
}
