package servingsim_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tfgate/tfgate/internal/servingsim"
	"github.com/tfgate/tfgate/internal/servingsim/model"
	"github.com/tfgate/tfgate/internal/testwait"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// exportSized writes a version whose servingsim.json declares resident_bytes.
func exportSized(t *testing.T, base string, v int64, seed, residentBytes int64) {
	t.Helper()
	dir := export(t, base, v, linearSpec(seed))
	p := filepath.Join(dir, model.SpecPath)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m["resident_bytes"] = residentBytes
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func reload(t *testing.T, c *clients, ctx context.Context, ms ...*servingpb.ModelConfig) error {
	t.Helper()
	_, err := c.model.HandleReloadConfigRequest(ctx, &servingpb.ReloadConfigRequest{Config: list(ms...)})
	return err
}

// TestMemoryLimit: versions count their declared resident bytes against
// --model_memory_limit_bytes; a load over it ends in END with RESOURCE_EXHAUSTED
// (as TF Serving's resource tracker refuses it) instead of being admitted, and
// memory freed by an unload is available to the next load.
func TestMemoryLimit(t *testing.T) {
	a, b, cc := t.TempDir(), t.TempDir(), t.TempDir()
	exportSized(t, a, 1, 1, 60)
	exportSized(t, b, 1, 2, 60)
	exportSized(t, cc, 1, 3, 30)
	c := start(t, func(cfg *servingsim.Config) {
		cfg.ModelName, cfg.ModelBasePath, cfg.ModelMemoryLimitBytes = "a", a, 100
	})
	waitState(t, c, "a", 1, servingpb.ModelVersionStatus_AVAILABLE)

	err := reload(t, c, ctxT(t), mc("a", a), mc("b", b))
	if status.Code(err) != codes.Unknown || !strings.Contains(status.Convert(err).Message(), "RESOURCE_EXHAUSTED: Insufficient resources to load servable {name: b version: 1}") {
		t.Fatalf("reload adding b over the limit: %v, want UNKNOWN naming b's RESOURCE_EXHAUSTED", err)
	}
	st := waitState(t, c, "b", 1, servingpb.ModelVersionStatus_END)
	if codes.Code(st.GetStatus().GetErrorCode()) != codes.ResourceExhausted || !strings.Contains(st.GetStatus().GetErrorMessage(), "60 bytes; 60 of the 100-byte") {
		t.Errorf("b@1 status %v, want RESOURCE_EXHAUSTED with the sizes", st.GetStatus())
	}
	// a is untouched.
	waitState(t, c, "a", 1, servingpb.ModelVersionStatus_AVAILABLE)

	// 30 more bytes fit.
	if err := reload(t, c, ctxT(t), mc("a", a), mc("c", cc)); err != nil {
		t.Fatalf("reload adding c (fits): %v", err)
	}
	// Remove a; once it has unloaded, b (re-added) fits.
	if err := reload(t, c, ctxT(t), mc("c", cc)); err != nil {
		t.Fatal(err)
	}
	waitState(t, c, "a", 1, servingpb.ModelVersionStatus_END)
	if err := reload(t, c, ctxT(t), mc("b", b), mc("c", cc)); err != nil {
		t.Fatalf("re-adding b after a unloaded: %v", err)
	}
	waitState(t, c, "b", 1, servingpb.ModelVersionStatus_AVAILABLE)
}

// TestLoadTimeFollowsSize: a load takes resident_bytes / --sim_load_bytes_per_second
// in LOADING; HandleReloadConfigRequest returns once the added model is AVAILABLE.
func TestLoadTimeFollowsSize(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	exportSized(t, a, 1, 1, 1)
	exportSized(t, b, 1, 2, 600)
	c := start(t, func(cfg *servingsim.Config) {
		cfg.ModelName, cfg.ModelBasePath, cfg.LoadBytesPerSecond = "a", a, 1000
	})
	waitState(t, c, "a", 1, servingpb.ModelVersionStatus_AVAILABLE)
	begin := time.Now()
	done := make(chan error, 1)
	go func() { done <- reload(t, c, ctxT(t), mc("a", a), mc("b", b)) }()
	waitState(t, c, "b", 1, servingpb.ModelVersionStatus_LOADING)
	if err := <-done; err != nil {
		t.Fatalf("reload: %v", err)
	}
	if el := time.Since(begin); el < 600*time.Millisecond {
		t.Errorf("600 bytes at 1000 B/s loaded in %v, want at least 600ms", el)
	}
	if got := versionsIn(t, c, "b"); len(got) != 1 || got[0] != "1:AVAILABLE" {
		t.Errorf("b right after the reload: %v, want 1:AVAILABLE", got)
	}
}

// TestReloadRemovesInBackground: a reload that removes a model still loading
// returns without waiting for it; the load is abandoned (END) and its memory is
// free for the next one.
func TestReloadRemovesInBackground(t *testing.T) {
	a, slow, b := t.TempDir(), t.TempDir(), t.TempDir()
	exportSized(t, a, 1, 1, 1)
	exportSized(t, slow, 1, 2, 90)
	exportSized(t, b, 1, 3, 90)
	c := start(t, func(cfg *servingsim.Config) {
		cfg.ModelName, cfg.ModelBasePath = "a", a
		cfg.LoadBytesPerSecond, cfg.ModelMemoryLimitBytes = 1, 100 // slow takes 90 s
	})
	waitState(t, c, "a", 1, servingpb.ModelVersionStatus_AVAILABLE)
	// The reload adding slow waits for it; its caller gives up.
	ctx, cancel := context.WithTimeout(ctxT(t), 300*time.Millisecond)
	defer cancel()
	if err := reload(t, c, ctx, mc("a", a), mc("slow", slow)); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("reload adding slow: %v, want DEADLINE_EXCEEDED", err)
	}
	waitState(t, c, "slow", 1, servingpb.ModelVersionStatus_LOADING)
	// Removing it returns at once; its load ends and its 90 bytes are freed.
	if err := reload(t, c, ctxT(t), mc("a", a)); err != nil {
		t.Fatal(err)
	}
	waitState(t, c, "slow", 1, servingpb.ModelVersionStatus_END)
	bctx, bcancel := context.WithTimeout(ctxT(t), 20*time.Second)
	defer bcancel()
	done := make(chan error, 1)
	go func() { done <- reload(t, c, bctx, mc("a", a), mc("b", b)) }()
	// b@1 (90 bytes) is admitted: LOADING, not refused.
	waitState(t, c, "b", 1, servingpb.ModelVersionStatus_LOADING)
	bcancel()
	<-done
}

// TestNumLoadThreads: --num_load_threads 1 loads one version at a time; the
// other waits in START.
func TestNumLoadThreads(t *testing.T) {
	a, x, y := t.TempDir(), t.TempDir(), t.TempDir()
	exportSized(t, a, 1, 1, 1)
	exportSized(t, x, 1, 2, 300)
	exportSized(t, y, 1, 3, 300)
	c := start(t, func(cfg *servingsim.Config) {
		cfg.ModelName, cfg.ModelBasePath = "a", a
		cfg.LoadBytesPerSecond, cfg.NumLoadThreads = 1000, 1
	})
	waitState(t, c, "a", 1, servingpb.ModelVersionStatus_AVAILABLE)
	done := make(chan error, 1)
	go func() { done <- reload(t, c, ctxT(t), mc("a", a), mc("x", x), mc("y", y)) }()
	testwait.Until(t, "one of x, y LOADING while the other waits in START", func() bool {
		pair := stateOf(c, "x") + " " + stateOf(c, "y")
		return pair == "1:LOADING 1:START" || pair == "1:START 1:LOADING"
	})
	if err := <-done; err != nil {
		t.Fatalf("reload: %v", err)
	}
}

// stateOf is version 1's state, or the error, without failing the test.
func stateOf(c *clients, name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.model.GetModelStatus(ctx, &servingpb.GetModelStatusRequest{ModelSpec: specV(name, 1)})
	if err != nil {
		return err.Error()
	}
	return "1:" + resp.GetModelVersionStatus()[0].GetState().String()
}
