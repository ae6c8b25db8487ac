package gateway

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/tfgate/tfgate/internal/servingsim/model"
	"github.com/tfgate/tfgate/internal/testwait"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// A version's batcher is closed once the version is gone from the config, the
// spec store and the hosts; versions still served keep theirs.
func TestBatchersOfGoneVersionsAreClosed(t *testing.T) {
	root := t.TempDir()
	writeVersions(t, root, "reviews", model.KindTextClassifier, model.Cost{}, 1)
	writeVersions(t, root, "intents", model.KindTextClassifier, model.Cost{}, 1)
	store := scannedStore(t, root)
	cfg := filepath.Join(t.TempDir(), "routes.yaml")
	write := func(models string) { t.Helper(); writeModels(t, cfg, models) }
	write("  reviews: {default: \"1\", batching: {enabled: true}}\n  intents: {default: \"1\", batching: {enabled: true}}\n")
	srv := runServer(t, Options{ConfigPath: cfg, Backends: newFakeBackends(root), Specs: StoreSpecs{store}, WatchInterval: -1})
	ctx := context.Background()
	for _, m := range []string{"reviews", "intents"} {
		waitUntil(t, m+" routable", func() bool { return srv.builder.current().pipes[vkey{m, 1}] != nil })
		if _, err := srv.Predict(ctx, &tfgatev1.PredictRequest{Model: m, Instances: text("hello world")}); err != nil {
			t.Fatalf("Predict %s: %v", m, err)
		}
	}
	if got := batcherModels(srv); len(got) != 2 {
		t.Fatalf("batchers after serving both models: %v, want reviews and intents", got)
	}
	write("  reviews: {default: \"1\", batching: {enabled: true}}\n")
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := batcherModels(srv); len(got) != 1 || got[0] != "reviews" {
		t.Errorf("batchers after intents left the config: %v, want [reviews]", got)
	}
}

func batcherModels(s *Server) []string {
	var out []string
	for _, st := range s.group.Stats() {
		out = append(out, st.Key.Model)
	}
	return out
}

// waitUntil is testwait.Until, named as these tests always called it.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.Until(t, what, cond)
}

// The signature checker keeps a result (holding the compiled pipeline) only for
// versions still in the spec store of a configured model: one removed from the
// model root, or whose model left the config, is dropped at the next rebuild.
func TestSignatureResultsOfGoneVersionsAreDropped(t *testing.T) {
	root := t.TempDir()
	writeVersions(t, root, "reviews", model.KindTextClassifier, model.Cost{}, 1, 2)
	writeVersions(t, root, "intents", model.KindTextClassifier, model.Cost{}, 1)
	store := scannedStore(t, root)
	cfg := filepath.Join(t.TempDir(), "routes.yaml")
	writeModels(t, cfg, "  reviews: {default: \"2\"}\n  intents: {default: \"1\"}\n")
	srv := runServer(t, Options{ConfigPath: cfg, Backends: newFakeBackends(root), Specs: StoreSpecs{store}, WatchInterval: -1})
	for _, k := range []vkey{{"reviews", 1}, {"reviews", 2}, {"intents", 1}} {
		waitUntil(t, fmt.Sprintf("%s version %d checked", k.model, k.version), func() bool { return srv.builder.current().pipes[k] != nil })
	}
	if got := srv.builder.sig.size(); got != 3 {
		t.Fatalf("signature results after checking 3 versions: %d, want 3", got)
	}

	// Version 1 of reviews leaves the model root.
	if err := os.RemoveAll(filepath.Join(root, "reviews", "1")); err != nil {
		t.Fatal(err)
	}
	if err := store.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv.builder.rebuild()
	if got := srv.builder.sig.size(); got != 2 {
		t.Errorf("signature results after reviews/1 was removed: %d, want 2", got)
	}

	// intents leaves the config.
	writeModels(t, cfg, "  reviews: {default: \"2\"}\n")
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := srv.builder.sig.size(); got != 1 {
		t.Errorf("signature results after intents left the config: %d, want 1 (reviews/2)", got)
	}
	if srv.builder.current().pipes[vkey{"reviews", 2}] == nil {
		t.Error("reviews/2 lost its checked pipeline")
	}
}
