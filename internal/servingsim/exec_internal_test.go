package servingsim

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tfgate/tfgate/internal/servingsim/model"
	"github.com/tfgate/tfgate/internal/testwait"
)

// TestExecutorConcurrencyLimits: at most cost.max_concurrent executions of one
// model and at most --sim_max_concurrent_executions across models run at once.
func TestExecutorConcurrencyLimits(t *testing.T) {
	tests := []struct {
		name      string
		own, gpu  int
		executors int
		want      int
	}{
		{"per model", 2, 0, 1, 2},
		{"per server across models", 3, 2, 2, 2},
		{"per model below server", 1, 5, 2, 2},
		{"unbounded", 0, 0, 1, 6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			var gpu chan struct{}
			if tc.gpu > 0 {
				gpu = make(chan struct{}, tc.gpu)
			}
			var xs []*executor
			for range tc.executors {
				xs = append(xs, newExecutor(model.Cost{MaxConcurrent: tc.own}, cfg, gpu, nil))
			}
			// Every call either gets in (and holds its slot until release) or, once
			// the limit is full and ctx is cancelled, is turned away while waiting
			// for a slot. So when all calls have done one or the other, the number
			// inside is exactly what the limits let in: no timing involved.
			var inside, peak, turnedAway atomic.Int64
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			release := make(chan struct{})
			var wg sync.WaitGroup
			const calls = 6
			for i := range calls {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, err := xs[i%len(xs)].run(ctx, 1, func() (*model.Result, error) {
						n := inside.Add(1)
						for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
						}
						<-release
						inside.Add(-1)
						return &model.Result{}, nil
					})
					switch {
					case errors.Is(err, context.Canceled):
						turnedAway.Add(1)
					case err != nil:
						t.Error(err)
					}
				}()
			}
			testwait.Until(t, fmt.Sprintf("%d executions inside", tc.want), func() bool { return inside.Load() >= int64(tc.want) })
			cancel()
			testwait.Until(t, "every call inside or turned away", func() bool { return inside.Load()+turnedAway.Load() == calls })
			if got := inside.Load(); got != int64(tc.want) {
				t.Errorf("%d executions inside at once, want %d (own %d, gpu %d)", got, tc.want, tc.own, tc.gpu)
			}
			close(release)
			wg.Wait()
			if peak.Load() > int64(tc.want) {
				t.Errorf("peak %d executions at once, limit %d", peak.Load(), tc.want)
			}
		})
	}
}

func TestExecutorCostHonoursContext(t *testing.T) {
	cfg := DefaultConfig()
	cfg.CostPerCall = time.Hour
	x := newExecutor(model.Cost{}, cfg, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ran := false
	_, err := x.run(ctx, 1, func() (*model.Result, error) { ran = true; return nil, nil })
	if err == nil || ran {
		t.Errorf("run with a cancelled context and an hour of cost: err %v, ran %v; want the context error and no run", err, ran)
	}
	// Flags override the spec; a negative flag keeps it.
	cfg = DefaultConfig()
	x = newExecutor(model.Cost{PerCallMicros: 7, PerRowMicros: 3, MaxConcurrent: 4}, cfg, nil, nil)
	if x.perCall != 7*time.Microsecond || x.perRow != 3*time.Microsecond || cap(x.own) != 4 {
		t.Errorf("spec cost not applied: %+v", x)
	}
	cfg.CostPerCall, cfg.CostPerRow, cfg.ModelMaxConcurrent = time.Millisecond, 0, 0
	x = newExecutor(model.Cost{PerCallMicros: 7, PerRowMicros: 3, MaxConcurrent: 4}, cfg, nil, nil)
	if x.perCall != time.Millisecond || x.perRow != 0 || x.own != nil {
		t.Errorf("flag overrides not applied: %+v", x)
	}
}
