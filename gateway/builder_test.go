package gateway

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/tfgate/tfgate/gateway/route"
	"github.com/tfgate/tfgate/internal/servingsim/model"
)

// The control plane stands alone: a builder loads the config, runs the
// signature check and publishes a new immutable snapshot, with no Server and no
// request path; a snapshot already handed out never changes.
func TestBuilderPublishesSnapshots(t *testing.T) {
	root := t.TempDir()
	writeVersions(t, root, "reviews", model.KindTextClassifier, model.Cost{}, 1)
	store := scannedStore(t, root)
	cfg := filepath.Join(t.TempDir(), "routes.yaml")
	writeModels(t, cfg, "  reviews: {default: \"1\"}\n")
	var stats counters
	b := newBuilder(Options{ConfigPath: cfg, Backends: newFakeBackends(root), Specs: StoreSpecs{store},
		Logger: slog.New(slog.DiscardHandler), SignatureConcurrency: 1, WatchInterval: -1}, &stats, nil)
	if err := b.reload(); err != nil {
		t.Fatal(err)
	}
	first := b.current()
	if _, _, err := first.routes.Resolve("reviews", route.Target{}, ""); !errors.Is(err, route.ErrNotRoutable) {
		t.Fatalf("before the signature check ran: Resolve = %v, want %v", err, route.ErrNotRoutable)
	}
	if first.sigPending != 1 || first.routes.Generation != 1 {
		t.Fatalf("first snapshot: %d checks pending, generation %d; want 1 and 1", first.sigPending, first.routes.Generation)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.run(ctx) }()
	waitUntil(t, "the signature check's snapshot", func() bool { return b.current().pipes[vkey{"reviews", 1}] != nil })
	rt, _, err := b.current().routes.Resolve("reviews", route.Target{}, "")
	if err != nil || rt.Version != 1 {
		t.Errorf("after the check: Resolve = %+v, %v; want version 1", rt, err)
	}
	if first.pipes[vkey{"reviews", 1}] != nil || first.sigPending != 1 {
		t.Error("the first snapshot changed after it was published")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
	if got := stats.reloads.Load(); got != 1 {
		t.Errorf("reloads counted = %d, want 1", got)
	}
}
