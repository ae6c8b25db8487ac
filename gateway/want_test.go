package gateway

import (
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/tfgate/tfgate/internal/servingsim/model"
)

// wantRecorder is fakeBackends with only some versions on a host, recording Want.
type wantRecorder struct {
	*fakeBackends
	onHost map[int64]bool
	mu     sync.Mutex
	wants  []int64
}

func (w *wantRecorder) AvailableHosts(_ string, v int64, _ []string) []string {
	if w.onHost[v] {
		return []string{"fake:1"}
	}
	return nil
}

func (w *wantRecorder) Want(_ string, v int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !slices.Contains(w.wants, v) {
		w.wants = append(w.wants, v)
	}
}

// Readiness is asked to look for new versions (spec arrived, no host yet) and for
// the versions the config names, not for old versions TF Serving unloaded.
func TestWantsNewAndNamedVersions(t *testing.T) {
	root := t.TempDir()
	writeVersions(t, root, "reviews", model.KindTextClassifier, model.Cost{}, 1, 2, 3)
	store := scannedStore(t, root)
	for _, tc := range []struct {
		name   string
		routes string
		onHost []int64
		want   []int64
	}{
		{"newest version not loaded yet", `reviews: {default: "2"}`, []int64{2}, []int64{3}},
		{"old version named by a label", `reviews: {default: "2", labels: {old: "1"}}`, []int64{2}, []int64{1, 3}},
		{"nothing on a host yet", `reviews: {}`, nil, []int64{1, 2, 3}},
		{"newest loaded", `reviews: {}`, []int64{3}, nil},
		{"old version in an experiment arm", `reviews: {experiment: {name: e, arms: [{name: a, version: "1", weight: 1}, {name: b, version: "3", weight: 1}]}}`, []int64{3}, []int64{1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "routes.yaml")
			writeModels(t, cfg, "  "+tc.routes+"\n")
			b := &wantRecorder{fakeBackends: newFakeBackends(root), onHost: map[int64]bool{}}
			for _, v := range tc.onHost {
				b.onHost[v] = true
			}
			if _, err := New(Options{ConfigPath: cfg, Backends: b, Specs: StoreSpecs{store}, WatchInterval: -1}); err != nil {
				t.Fatal(err)
			}
			slices.Sort(b.wants)
			if !slices.Equal(b.wants, tc.want) {
				t.Errorf("routes %s, versions %v on a host: Want called for %v, want %v", tc.routes, tc.onHost, b.wants, tc.want)
			}
		})
	}
}
