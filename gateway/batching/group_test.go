package batching

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

func TestGroup(t *testing.T) {
	s := &backend{}
	inv := startBackend(t, s)
	var calls atomic.Int64
	var lastPools atomic.Value // []string
	g := NewGroup(func(ctx context.Context, pools []string, req *servingpb.PredictRequest) (*servingpb.PredictResponse, error) {
		calls.Add(1)
		lastPools.Store(pools)
		return inv(ctx, req)
	}, Options{})
	pools := []string{"gpu"}
	ctx := context.Background()
	on := DefaultConfig()
	on.Enabled = true
	on.BatchTimeout = 0

	t.Run("disabled goes straight to the backend", func(t *testing.T) {
		req := xReq(t, 2, 2, 0)
		resp, err := g.Do(ctx, DefaultConfig(), pools, req)
		wantSame(t, "disabled", outcome{resp, err}, req)
		if n := len(g.batchers); n != 0 {
			t.Errorf("disabled config created %d batchers", n)
		}
	})
	t.Run("enabled creates one batcher per version and signature", func(t *testing.T) {
		for _, v := range []int64{1, 1, 2} {
			req := xReq(t, 1, 2, 0)
			req.ModelSpec = spec(v)
			resp, err := g.Do(ctx, on, pools, req)
			wantSame(t, "enabled", outcome{resp, err}, req)
		}
		req := xReq(t, 1, 2, 0)
		req.ModelSpec.SignatureName = DefaultSignature // same key as ""
		if _, err := g.Do(ctx, on, pools, req); err != nil {
			t.Fatal(err)
		}
		if n := len(g.batchers); n != 2 {
			t.Errorf("batchers = %d, want 2 (versions 1 and 2; \"\" is serving_default)", n)
		}
	})
	t.Run("a config change replaces the batcher", func(t *testing.T) {
		before := g.batchers[Key{testModel, 1, DefaultSignature}]
		changed := on
		changed.MaxBatchSize = 8
		if _, err := g.Do(ctx, changed, pools, xReq(t, 1, 2, 0)); err != nil {
			t.Fatal(err)
		}
		after := g.batchers[Key{testModel, 1, DefaultSignature}]
		if after == before || after.Config().MaxBatchSize != 8 {
			t.Errorf("batcher not replaced after a config change")
		}
		// The new limit applies.
		_, err := g.Do(ctx, changed, pools, xReq(t, 9, 2, 0))
		if !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("9 rows with max_batch_size 8 = %v, want INVALID_ARGUMENT", err)
		}
	})
	t.Run("the pools reach the backend and a pools change replaces the batcher", func(t *testing.T) {
		if _, err := g.Do(ctx, on, pools, xReq(t, 1, 2, 0)); err != nil {
			t.Fatal(err)
		}
		if got := lastPools.Load().([]string); !slices.Equal(got, pools) {
			t.Errorf("backend called with pools %v, want %v", got, pools)
		}
		before := g.batchers[Key{testModel, 1, DefaultSignature}]
		moved := []string{"cpu"}
		if _, err := g.Do(ctx, on, moved, xReq(t, 1, 2, 0)); err != nil {
			t.Fatal(err)
		}
		if got := lastPools.Load().([]string); !slices.Equal(got, moved) {
			t.Errorf("after the model moved to %v the backend was called with pools %v", moved, got)
		}
		if after := g.batchers[Key{testModel, 1, DefaultSignature}]; after == before {
			t.Error("batcher not replaced after a pools change")
		}
		if _, err := g.Do(ctx, DefaultConfig(), []string{"edge"}, xReq(t, 1, 2, 0)); err != nil {
			t.Fatal(err)
		}
		if got := lastPools.Load().([]string); !slices.Equal(got, []string{"edge"}) {
			t.Errorf("unbatched call reached the backend with pools %v, want [edge]", got)
		}
	})
	t.Run("a label is refused", func(t *testing.T) {
		req := xReq(t, 1, 2, 0)
		req.ModelSpec = &servingpb.ModelSpec{Name: testModel, VersionChoice: &servingpb.ModelSpec_VersionLabel{VersionLabel: "stable"}}
		_, err := g.Do(ctx, on, pools, req)
		if !errors.Is(err, ErrInvalidRequest) || !strings.Contains(err.Error(), "explicit model_spec.version") {
			t.Errorf("Do with a label = %v, want INVALID_ARGUMENT asking for an explicit version", err)
		}
	})
	t.Run("stats list each batcher", func(t *testing.T) {
		// A batch's goroutine accounts for it after handing out the results, so the
		// callers may return a moment before the batcher looks idle.
		waitFor(t, "batchers idle", func() bool {
			for _, s := range g.Stats() {
				if s.InFlight != 0 {
					return false
				}
			}
			return true
		})
		st := g.Stats()
		if len(st) != 2 {
			t.Fatalf("Stats() = %+v, want 2 batchers", st)
		}
		for _, s := range st {
			if s.Key.Model != testModel || s.Queued != 0 || s.InFlight != 0 {
				t.Errorf("idle batcher stats = %+v, want model %q with nothing queued or in flight", s, testModel)
			}
			if s.ServiceTime <= 0 && s.LoneServiceTime <= 0 {
				t.Errorf("batcher %v measured no service time after serving requests", s.Key)
			}
		}
	})
	t.Run("retain drops the versions it rejects", func(t *testing.T) {
		n := len(g.batchers)
		if got := g.Retain(func(m string, v int64) bool { return v != 2 }); got < 1 {
			t.Errorf("Retain(all but version 2) dropped %d batchers, want at least 1", got)
		}
		if _, ok := g.batchers[Key{testModel, 2, DefaultSignature}]; ok {
			t.Error("version 2's batcher still present after Retain")
		}
		if got := g.Retain(func(string, int64) bool { return true }); got != 0 || len(g.batchers) == n {
			t.Errorf("Retain(all) dropped %d (want 0); batchers %d -> %d", got, n, len(g.batchers))
		}
	})
	if err := g.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_, err := g.Do(ctx, on, pools, xReq(t, 1, 2, 0))
	if !errors.Is(err, ErrClosed) {
		t.Errorf("Do after Close = %v, want UNAVAILABLE", err)
	}
	if calls.Load() == 0 {
		t.Error("backend never called")
	}
}
